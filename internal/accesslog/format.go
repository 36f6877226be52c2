package accesslog

import (
	"strconv"
	"strings"
)

// Formatter renders one Entry. Both encodings implement it; both are immutable after
// compilation and safe for concurrent use.
type Formatter interface {
	// Append appends the rendered entry, including its trailing newline if the format
	// has one, to dst and returns the extended slice. It allocates nothing once dst has
	// grown to the line's size.
	Append(dst []byte, e *Entry) []byte
	// String returns the format in canonical form: parsing it again yields a Formatter
	// with the same output.
	String() string
}

// appendFunc appends an operator's value for e to dst. ok=false means the value is
// unset (Envoy's "-" in TEXT, null in JSON). Appending nothing with ok=true is treated
// the same as unset.
type appendFunc func(dst []byte, e *Entry) (out []byte, ok bool)

// segment is one piece of a compiled format string: literal text, or one command
// operator.
type segment struct {
	lit string // literal text when fn is nil

	name    string // operator name, e.g. "REQ"
	arg     string // text between the parentheses
	hasArg  bool
	max     int // truncation (the ":Z" suffix); 0 = none
	numeric bool
	fn      appendFunc
}

// template is a compiled format string.
type template []segment

// TextFormat is a compiled TEXT access-log format.
type TextFormat struct {
	tmpl template
}

var _ Formatter = (*TextFormat)(nil)

// ParseText compiles a format string in Envoy's format language. It does not add a
// trailing newline (Envoy does not either; FormatterFor applies Istio's rule). On error
// it returns a *FormatError and no Formatter.
func ParseText(format string) (*TextFormat, error) {
	t, err := parseTemplate(format)
	if err != nil {
		return nil, err
	}
	return &TextFormat{tmpl: t}, nil
}

// Append implements Formatter.
func (f *TextFormat) Append(dst []byte, e *Entry) []byte {
	return f.tmpl.appendText(dst, e, true)
}

// String implements Formatter.
func (f *TextFormat) String() string { return f.tmpl.String() }

// parseTemplate implements Envoy's grammar: '%%' is a literal '%'; otherwise a '%'
// starts a command operator matching %NAME(ARGS):Z% where NAME is [A-Z0-9_]+, ARGS has
// no ')', and both the parenthesised part and the :Z part are optional. Any other '%'
// is an error, as in Envoy.
func parseTemplate(format string) (template, error) {
	var t template
	var lit strings.Builder
	flush := func() {
		if lit.Len() > 0 {
			t = append(t, segment{lit: lit.String()})
			lit.Reset()
		}
	}
	for i := 0; i < len(format); {
		c := format[i]
		if c != '%' {
			j := strings.IndexByte(format[i:], '%')
			if j < 0 {
				j = len(format) - i
			}
			lit.WriteString(format[i : i+j])
			i += j
			continue
		}
		if i+1 < len(format) && format[i+1] == '%' {
			lit.WriteByte('%')
			i += 2
			continue
		}
		seg, n, err := parseOperator(format, i)
		if err != nil {
			return nil, err
		}
		flush()
		t = append(t, seg)
		i += n
	}
	flush()
	return t, nil
}

// parseOperator parses the command operator starting at format[pos] == '%' and returns
// it with the number of bytes it spans.
func parseOperator(format string, pos int) (segment, int, error) {
	i := pos + 1
	for i < len(format) && isNameByte(format[i]) {
		i++
	}
	name := format[pos+1 : i]
	written := func(end int) string {
		if end > len(format) {
			end = len(format)
		}
		// Quote at most a readable prefix of a runaway operator.
		if end-pos > 64 {
			end = pos + 64
		}
		return format[pos:end]
	}
	if name == "" {
		return segment{}, 0, &FormatError{Pos: pos, Reason: "'%' must start a command operator such as %START_TIME% (write %% for a literal '%')"}
	}
	seg := segment{name: name}
	if i < len(format) && format[i] == '(' {
		j := strings.IndexByte(format[i+1:], ')')
		if j < 0 {
			return segment{}, 0, &FormatError{Pos: pos, Operator: written(len(format)), Reason: "missing ')' after the operator's argument"}
		}
		seg.arg, seg.hasArg = format[i+1:i+1+j], true
		i += j + 2
	}
	if i < len(format) && format[i] == ':' {
		j := i + 1
		for j < len(format) && format[j] >= '0' && format[j] <= '9' {
			j++
		}
		n, err := strconv.Atoi(format[i+1 : j])
		if err != nil || n <= 0 {
			return segment{}, 0, &FormatError{Pos: pos, Operator: written(j + 1), Reason: "truncation length after ':' must be a positive integer"}
		}
		seg.max = n
		i = j
	}
	if i >= len(format) || format[i] != '%' {
		return segment{}, 0, &FormatError{Pos: pos, Operator: written(i + 1), Reason: "missing closing '%'"}
	}
	i++
	op := written(i)
	spec, ok := operators[name]
	if !ok {
		return segment{}, 0, &FormatError{Pos: pos, Operator: op, Reason: "unknown command operator"}
	}
	switch {
	case spec.arg == argNone && seg.hasArg:
		return segment{}, 0, &FormatError{Pos: pos, Operator: op, Reason: name + " takes no argument"}
	case spec.arg == argRequired && (!seg.hasArg || seg.arg == ""):
		return segment{}, 0, &FormatError{Pos: pos, Operator: op, Reason: name + " needs an argument in parentheses, e.g. " + spec.example}
	}
	fn, err := spec.build(seg.arg, seg.hasArg)
	if err != nil {
		// The builder reports positions relative to the argument.
		var fe *FormatError
		if asFormatError(err, &fe) {
			fe.Pos += pos + len(name) + 2
			fe.Operator = op
			return segment{}, 0, fe
		}
		return segment{}, 0, &FormatError{Pos: pos, Operator: op, Reason: err.Error()}
	}
	seg.fn, seg.numeric = fn, spec.numeric
	return seg, i - pos, nil
}

func isNameByte(c byte) bool {
	return c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '_'
}

// String renders the template back into format-language text: '%' in literals is
// doubled and operators are written as NAME(ARG):Z.
func (t template) String() string {
	var b strings.Builder
	for i := range t {
		s := &t[i]
		if s.fn == nil {
			b.WriteString(strings.ReplaceAll(s.lit, "%", "%%"))
			continue
		}
		b.WriteByte('%')
		b.WriteString(s.name)
		if s.hasArg {
			b.WriteByte('(')
			b.WriteString(s.arg)
			b.WriteByte(')')
		}
		if s.max > 0 {
			b.WriteByte(':')
			b.WriteString(strconv.Itoa(s.max))
		}
		b.WriteByte('%')
	}
	return b.String()
}

// appendValue appends one operator's value, truncated to its :Z length. ok=false when
// unset or empty.
func (s *segment) appendValue(dst []byte, e *Entry) ([]byte, bool) {
	start := len(dst)
	dst, ok := s.fn(dst, e)
	if !ok || len(dst) == start {
		return dst[:start], false
	}
	if s.max > 0 && len(dst)-start > s.max {
		dst = dst[:start+s.max]
	}
	return dst, true
}

// appendText renders the template as TEXT. sanitize replaces control bytes inside
// operator values with '?' so a crafted header or SNI cannot forge log lines; literal
// text (including the format's own newline) is written as configured.
func (t template) appendText(dst []byte, e *Entry, sanitize bool) []byte {
	for i := range t {
		s := &t[i]
		if s.fn == nil {
			dst = append(dst, s.lit...)
			continue
		}
		start := len(dst)
		var ok bool
		dst, ok = s.appendValue(dst, e)
		if !ok {
			dst = append(dst, '-')
			continue
		}
		if sanitize {
			for j := start; j < len(dst); j++ {
				if c := dst[j]; c < 0x20 || c == 0x7f {
					dst[j] = '?'
				}
			}
		}
	}
	return dst
}
