package authz

import "fmt"

// InvalidRequestError says a request is malformed in a way Istio rejects before any
// policy runs (HTTP 400): a path with %00 or not absolute, a method not in upper case.
type InvalidRequestError struct {
	Field  string // "path" or "method"
	Reason string
}

func (e *InvalidRequestError) Error() string {
	return fmt.Sprintf("invalid request %s: %s", e.Field, e.Reason)
}

// CompileError names the policy, rule and field that could not be compiled. New fails
// with it rather than enforcing part of a policy.
type CompileError struct {
	Policy string // namespace/name
	Field  string // e.g. spec.rules[0].when[1].key
	Reason string
}

func (e *CompileError) Error() string {
	return fmt.Sprintf("AuthorizationPolicy %s: %s: %s", e.Policy, e.Field, e.Reason)
}
