package ctl

import (
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"net/http/httptest"
	"net/netip"
	"strings"

	"github.com/spf13/cobra"

	"github.com/meshguard/meshguard/internal/authn/jwt"
	"github.com/meshguard/meshguard/internal/authz"
	"github.com/meshguard/meshguard/internal/cli/cmdenv"
	"github.com/meshguard/meshguard/internal/config"
	"github.com/meshguard/meshguard/internal/config/legacy"
	"github.com/meshguard/meshguard/internal/policy"
)

func newAuthzCmd(env *cmdenv.Env) *cobra.Command {
	c := &cobra.Command{
		Use:   "authz",
		Short: "Authorization tools: ask which policy allows or denies a request, and why",
	}
	c.AddCommand(newAuthzCheckCmd(env))
	return c
}

type authzCheckOptions struct {
	files            []string
	namespace        string
	labels           map[string]string
	principal        string
	sourceNamespace  string
	sourceIP         string
	port             uint32
	method           string
	path             string
	host             string
	headers          []string
	token            string
	requestPrincipal string
	claims           []string
	tcp              bool
	output           string
	trustDomain      string
}

func newAuthzCheckCmd(env *cmdenv.Env) *cobra.Command {
	var o authzCheckOptions
	c := &cobra.Command{
		Use:   "check -f DIR --namespace NS [flags]",
		Short: "Decide one request against the policies in a config directory, as the sidecar would",
		Long: `Check loads Istio configuration (-f, as ctl validate reads it), selects the
AuthorizationPolicies and RequestAuthentications that apply to the workload given by
--namespace and --labels, and evaluates one request: CUSTOM, then DENY, then ALLOW, with
the mesh's path normalization. It prints the decision (ALLOW or DENY), the policy and
rule that decided it, the action and the reason; with -o json, one object with the
fields decision, policy, rule, action and reason (rule is -1 and policy "" when no
policy decided).

The caller is described by --principal (the peer's SPIFFE ID; its namespace is
source.namespace), or --source-namespace for a peer without one. End-user identity
comes from --jwt, verified against the workload's RequestAuthentications (fetching
jwksUri keys), or is asserted with --request-principal ISS/SUB and --claim k=v (nested
claims as a.b=v; a repeated key makes a list). --tcp checks a plain TCP connection:
HTTP-only fields then make ALLOW rules not match and DENY rules match.

Exit status: 0 whatever the decision; 2 for bad flags or invalid configuration.`,
		Example: `  meshguard ctl authz check -f policies/ --namespace foo --labels app=httpbin \
      --principal spiffe://cluster.local/ns/default/sa/sleep --method GET --path /info
  meshguard ctl authz check -f policies/ --namespace foo --port 8080 --tcp -o json
  meshguard ctl authz check -f policies/ --namespace foo --path /admin \
      --request-principal https://issuer.example/alice --claim groups=admins`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			req, err := o.request()
			if err != nil {
				return cmdenv.Exit(2, err)
			}
			if len(o.files) == 0 {
				return cmdenv.Exit(2, errors.New("authz check: give at least one -f FILE_OR_DIR"))
			}
			if o.namespace == "" {
				return cmdenv.Exit(2, errors.New("authz check: --namespace is required (the workload's namespace)"))
			}
			if o.output != "" && o.output != "json" {
				return cmdenv.Exit(2, fmt.Errorf("authz check: -o %q: want json", o.output))
			}
			snap, warnings, err := (&config.Loader{Translator: legacy.Translator{}}).Load(cmd.Context(), o.files...)
			for _, w := range warnings {
				fmt.Fprintf(env.Stderr, "warning: %s\n", w)
			}
			if err != nil {
				var problems config.Problems
				if errors.As(err, &problems) {
					for _, p := range problems {
						fmt.Fprintln(env.Stderr, p)
					}
					return cmdenv.Exit(2, errors.New("authz check: the configuration is invalid (see above)"))
				}
				return cmdenv.Exit(2, err)
			}
			ix := policy.NewIndex(snap)
			w := policy.Workload{Namespace: o.namespace, Labels: o.labels}
			engine, err := authz.New(ix.AuthorizationPolicies(w), ix.Mesh(), authz.Options{Logger: env.Logger, TrustDomain: o.trustDomain})
			if err != nil {
				return cmdenv.Exit(2, err)
			}
			var d authz.Decision
			if o.token != "" {
				rejected, err := o.authenticate(cmd, env, ix, w, req)
				if err != nil {
					return cmdenv.Exit(2, err)
				}
				if rejected != nil {
					d = *rejected
				}
			}
			if d.Reason == "" {
				d = engine.Evaluate(cmd.Context(), req)
			}
			return printDecision(env, o.output, d)
		},
	}
	f := c.Flags()
	f.StringArrayVarP(&o.files, "filename", "f", nil, "file or directory of Istio YAML (repeatable)")
	f.StringVar(&o.namespace, "namespace", "", "namespace of the workload receiving the request (required)")
	f.StringVar(&o.trustDomain, "trust-domain", "", "the workload's trust domain, for trustDomainAliases (default: MeshConfig's trustDomain)")
	f.StringToStringVar(&o.labels, "labels", nil, "labels of the workload, k=v,k2=v2")
	f.StringVar(&o.principal, "principal", "", "peer identity (source.principal): spiffe://TD/ns/NS/sa/SA or TD/ns/NS/sa/SA")
	f.StringVar(&o.sourceNamespace, "source-namespace", "", "peer namespace when --principal does not give one")
	f.StringVar(&o.sourceIP, "source-ip", "", "peer IP address (source.ip)")
	f.Uint32Var(&o.port, "port", 0, "destination port")
	f.StringVar(&o.method, "method", "GET", "HTTP method")
	f.StringVar(&o.path, "path", "/", "HTTP request path, with an optional ?query")
	f.StringVar(&o.host, "host", "", "HTTP Host / :authority")
	f.StringArrayVar(&o.headers, "header", nil, "request header k=v (repeatable)")
	f.StringVar(&o.token, "jwt", "", "end-user JWT, sent as Authorization: Bearer and verified")
	f.StringVar(&o.requestPrincipal, "request-principal", "", "asserted request.auth.principal ISS/SUB (instead of --jwt)")
	f.StringArrayVar(&o.claims, "claim", nil, "asserted JWT claim k=v (repeatable; nested a.b=v)")
	f.BoolVar(&o.tcp, "tcp", false, "check a plain TCP connection instead of an HTTP request")
	f.StringVarP(&o.output, "output", "o", "", "output format: json")
	return c
}

// request turns the flags into authz attributes.
func (o *authzCheckOptions) request() (*authz.Request, error) {
	r := &authz.Request{
		TCP: o.tcp, DestinationPort: o.port, SourcePrincipal: o.principal, SourceNamespace: o.sourceNamespace,
		RequestPrincipal: o.requestPrincipal,
	}
	if o.principal != "" && !strings.Contains(strings.TrimPrefix(o.principal, "spiffe://"), "/ns/") {
		return nil, fmt.Errorf("--principal %q: want spiffe://TRUST_DOMAIN/ns/NAMESPACE/sa/SERVICE_ACCOUNT", o.principal)
	}
	if o.sourceIP != "" {
		ip, err := netip.ParseAddr(o.sourceIP)
		if err != nil {
			return nil, fmt.Errorf("--source-ip %q: not an IP address", o.sourceIP)
		}
		r.SourceIP = ip
	}
	if o.token != "" && (o.requestPrincipal != "" || len(o.claims) > 0) {
		return nil, errors.New("--jwt cannot be combined with --request-principal or --claim: the token's own claims are used")
	}
	if o.tcp {
		return r, nil
	}
	r.Method, r.Path, r.Host = o.method, o.path, o.host
	for _, h := range o.headers {
		k, v, ok := strings.Cut(h, "=")
		if !ok || k == "" {
			return nil, fmt.Errorf("--header %q: want name=value", h)
		}
		r.Headers = append(r.Headers, authz.Header{Name: k, Value: v})
	}
	if o.requestPrincipal != "" {
		i := strings.LastIndexByte(o.requestPrincipal, '/')
		if i <= 0 || i == len(o.requestPrincipal)-1 {
			return nil, fmt.Errorf("--request-principal %q: want ISSUER/SUBJECT", o.requestPrincipal)
		}
		r.Claims = map[string]any{"iss": o.requestPrincipal[:i], "sub": o.requestPrincipal[i+1:]}
	}
	for _, c := range o.claims {
		k, v, ok := strings.Cut(c, "=")
		if !ok || k == "" {
			return nil, fmt.Errorf("--claim %q: want name=value", c)
		}
		if r.Claims == nil {
			r.Claims = map[string]any{}
		}
		addClaim(r.Claims, strings.Split(k, "."), v)
		if k == "aud" {
			r.Audiences = append(r.Audiences, v)
		}
		if k == "azp" {
			r.Presenter = v
		}
	}
	return r, nil
}

// addClaim sets a (nested) claim; a second value for one key makes a list.
func addClaim(m map[string]any, path []string, v string) {
	for _, p := range path[:len(path)-1] {
		next, ok := m[p].(map[string]any)
		if !ok {
			next = map[string]any{}
			m[p] = next
		}
		m = next
	}
	last := path[len(path)-1]
	switch cur := m[last].(type) {
	case nil:
		m[last] = v
	case []any:
		m[last] = append(cur, v)
	default:
		m[last] = []any{cur, v}
	}
}

// authenticate verifies --jwt as the sidecar would. A rejected token is a decision (401),
// not bad input.
func (o *authzCheckOptions) authenticate(cmd *cobra.Command, env *cmdenv.Env, ix *policy.Index, w policy.Workload, req *authz.Request) (*authz.Decision, error) {
	ras := ix.RequestAuthentications(w)
	if len(ras) == 0 {
		fmt.Fprintln(env.Stderr, "warning: no RequestAuthentication applies to the workload; --jwt is ignored, as the sidecar would")
		return nil, nil
	}
	a, err := jwt.New(ras, jwt.Options{Logger: env.Logger})
	if err != nil {
		return nil, err
	}
	hr := httptest.NewRequest(http.MethodGet, "http://check.invalid/", nil)
	hr.Header.Set("Authorization", "Bearer "+o.token)
	res, err := a.Authenticate(cmd.Context(), hr)
	if err != nil {
		return &authz.Decision{Status: http.StatusUnauthorized, Rule: -1,
			Reason: "rejected by RequestAuthentication (401): " + err.Error()}, nil
	}
	req.RequestPrincipal, req.Audiences, req.Presenter, req.Claims = res.Principal, res.Audiences, res.Presenter, res.Claims
	return nil, nil
}

func printDecision(env *cmdenv.Env, output string, d authz.Decision) error {
	decision := "DENY"
	if d.Allow {
		decision = "ALLOW"
	}
	if output == "json" {
		b, err := json.Marshal(struct {
			Decision string `json:"decision"`
			Policy   string `json:"policy"`
			Rule     int    `json:"rule"`
			Action   string `json:"action"`
			Reason   string `json:"reason"`
		}{decision, d.Policy, d.Rule, d.Action.String(), d.Reason})
		if err != nil {
			return err
		}
		fmt.Fprintln(env.Stdout, string(b))
		return nil
	}
	policyName, rule, action := d.Policy, fmt.Sprint(d.Rule), d.Action.String()
	if policyName == "" {
		policyName, rule = "(none)", "-"
	}
	if action == "" {
		action = "(default)"
	}
	fmt.Fprintf(env.Stdout, "decision: %s\npolicy:   %s\nrule:     %s\naction:   %s\nreason:   %s\n", decision, policyName, rule, action, d.Reason)
	if d.Audit.Matched() {
		fmt.Fprintf(env.Stdout, "audit:    %s rule %d\n", d.Audit.Policy, d.Audit.Rule)
	}
	for _, dr := range []struct {
		name string
		r    authz.DryRun
	}{{"dry-run ALLOW", d.DryRunAllow}, {"dry-run DENY", d.DryRunDeny}} {
		if !dr.r.Evaluated {
			continue
		}
		would := "DENY"
		if dr.r.Allow {
			would = "ALLOW"
		}
		fmt.Fprintf(env.Stdout, "%s: would %s", dr.name, would)
		if dr.r.Policy != "" {
			fmt.Fprintf(env.Stdout, " (%s rule %d)", dr.r.Policy, dr.r.Rule)
		}
		fmt.Fprintln(env.Stdout)
	}
	return nil
}
