package config

import (
	"fmt"
	"strings"
)

// Problem is one thing wrong (or, as a warning, worth saying) about one YAML document.
// Its String form is the line `meshguard ctl validate` prints:
//
//	FILE:DOC_INDEX: KIND NAMESPACE/NAME: FIELD: reason
//
// Parts that are not known (a document that is not even YAML has no kind or name) are
// printed as "-" so that the line always has the same shape for tools that split it.
type Problem struct {
	Source    Source
	Kind      string // the document's kind as written, e.g. "AuthorizationPolicy"
	Namespace string
	Name      string
	// Field is a path into the document, e.g. spec.rules[0].from[1].source.principals[2].
	Field  string
	Reason string
}

func dash(s string) string {
	if s == "" {
		return "-"
	}
	return s
}

func (p Problem) String() string {
	return fmt.Sprintf("%s: %s %s/%s: %s: %s", p.Source, dash(p.Kind), dash(p.Namespace), dash(p.Name), dash(p.Field), p.Reason)
}

// Problems is the error a Loader returns when the configuration is invalid: every
// problem found, in file and document order. Callers show each with String (one line
// each) or branch on it with errors.As.
type Problems []Problem

func (ps Problems) Error() string {
	lines := make([]string, len(ps))
	for i, p := range ps {
		lines[i] = p.String()
	}
	switch len(ps) {
	case 0:
		return "invalid configuration"
	case 1:
		return "invalid configuration: " + lines[0]
	}
	return fmt.Sprintf("invalid configuration: %d problems:\n%s", len(ps), strings.Join(lines, "\n"))
}

// Warnings are Problems that do not make the configuration invalid: skipped kinds,
// ignored fields, settings Istio also only warns about.
type Warnings []Problem

// reporter collects problems and warnings for one document, filling in the document's
// identity so that validators only name the field and the reason.
type reporter struct {
	base     Problem
	problems *[]Problem
	warnings *[]Problem
}

// oneLine keeps a reason on one line (YAML parser errors span several), so that each
// problem is exactly one line of output.
func oneLine(s string) string { return strings.Join(strings.Fields(s), " ") }

func (r *reporter) errorf(field, format string, args ...any) {
	p := r.base
	p.Field, p.Reason = field, oneLine(fmt.Sprintf(format, args...))
	*r.problems = append(*r.problems, p)
}

func (r *reporter) warnf(field, format string, args ...any) {
	p := r.base
	p.Field, p.Reason = field, oneLine(fmt.Sprintf(format, args...))
	*r.warnings = append(*r.warnings, p)
}
