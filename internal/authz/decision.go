package authz

import (
	"fmt"
	"strings"
)

// Action is an AuthorizationPolicy action; ActionNone marks a decision taken by default
// (no policy decided it).
type Action int

// The actions, in evaluation order after ActionNone.
const (
	ActionNone Action = iota
	ActionCustom
	ActionDeny
	ActionAllow
	ActionAudit
)

func (a Action) String() string {
	switch a {
	case ActionNone:
		return ""
	case ActionCustom:
		return "CUSTOM"
	case ActionDeny:
		return "DENY"
	case ActionAllow:
		return "ALLOW"
	case ActionAudit:
		return "AUDIT"
	}
	return fmt.Sprintf("Action(%d)", int(a))
}

// Decision is the engine's answer and its explanation: which policy and rule decided,
// and why, in words an operator can act on. It is a value with no maps or slices on the
// common path, so returning it costs no allocation.
type Decision struct {
	// Allow is the enforced outcome.
	Allow bool
	// Invalid marks a malformed request rejected before any policy (HTTP 400).
	Invalid bool
	// Status is the HTTP status a proxy sends when Allow is false: 403 for RBAC denials,
	// 400 for invalid requests, or what a CUSTOM authorizer asked for. 0 when allowed.
	Status int
	// Action is the action of the policy that decided; ActionNone for defaults.
	Action Action
	// Policy is the deciding policy as "namespace/name"; "" when no policy decided.
	Policy string
	// Rule is the index of the deciding rule in spec.rules; -1 when none.
	Rule int
	// Reason explains the decision for logs and `ctl authz check`.
	Reason string
	// Path is the normalized request target (path and query) the proxy must forward.
	Path string

	// Audit is set when an AUDIT policy matched: the request should be audit-logged.
	Audit Mark
	// DryRunAllow and DryRunDeny are the would-be results of the policies annotated
	// istio.io/dry-run: "true" (Istio's shadow ALLOW and DENY engines). Never enforced.
	DryRunAllow, DryRunDeny DryRun

	// UpstreamHeaders are headers a CUSTOM authorizer asked to add to the request on
	// allow (headersToUpstreamOnAllow). Nil in the common case.
	UpstreamHeaders []Header
}

// Mark names a policy rule that matched without deciding (AUDIT).
type Mark struct {
	Policy string // "" when nothing matched
	Rule   int
}

// Matched reports whether the mark is set.
func (m Mark) Matched() bool { return m.Policy != "" }

// DryRun is the shadow result of dry-run policies of one action.
type DryRun struct {
	// Evaluated is true when dry-run policies of this action apply to the workload.
	Evaluated bool
	// Allow is what would have happened had they been enforced (on their own).
	Allow bool
	// Policy and Rule name the dry-run policy rule that matched, if any.
	Policy string
	Rule   int
}

// String renders the decision on one line, for logs and examples.
func (d Decision) String() string {
	var b strings.Builder
	if d.Allow {
		b.WriteString("ALLOW")
	} else {
		b.WriteString("DENY")
	}
	if d.Policy != "" {
		fmt.Fprintf(&b, " policy=%s rule=%d action=%s", d.Policy, d.Rule, d.Action)
	}
	fmt.Fprintf(&b, " reason=%q", d.Reason)
	return b.String()
}
