package demo

import (
	"bufio"
	"bytes"
	"context"
	"crypto/x509"
	"encoding/json"
	"encoding/pem"
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"time"

	"github.com/meshguard/meshguard/examples"
)

type step struct {
	title string
	run   func(ctx context.Context)
}

// walkthrough runs the seeds' scenarios against the running mesh.
type walkthrough struct {
	m   *mesh
	rep *report
	// token is a valid end-user JWT once step 4 has run.
	token string
}

func (w *walkthrough) steps() []step {
	return []step{
		{"workload certificates issued by the mesh CA", w.certificates},
		{"PeerAuthentication STRICT + DestinationRule ISTIO_MUTUAL: mutual TLS between unchanged apps", w.mtls},
		{"AuthorizationPolicy reviews-access: only productpage may call reviews", w.authz},
		{"RequestAuthentication + a policy requiring a JWT on reviews", w.jwt},
		{"access log in the seeds' format: who called what, and when", w.accessLog},
	}
}

// needSidecars reports a check failure when sidecars are missing, so that no step
// pretends to show what it cannot.
func (w *walkthrough) needSidecars() bool {
	var missing []string
	var why error
	for _, s := range services() {
		if err := w.m.sidecars[s.name]; err != nil {
			missing = append(missing, s.name)
			why = err
		}
	}
	if len(missing) > 0 {
		w.rep.check(false, "needs the sidecars of "+strings.Join(missing, ", "), why.Error())
		return false
	}
	return true
}

// result is one real request's outcome.
type result struct {
	status int
	body   []byte
	err    error
}

func (r result) String() string {
	if r.err != nil {
		return "error: " + shortErr(r.err)
	}
	b := strings.TrimSpace(string(r.body))
	if r.status == 0 {
		return b
	}
	if len(b) > 120 {
		b = b[:120] + "…"
	}
	return fmt.Sprintf("%d %s", r.status, b)
}

func shortErr(err error) string {
	s := err.Error()
	if i := strings.LastIndex(s, ": "); i >= 0 && strings.Contains(s, "Get ") {
		return s[i+2:]
	}
	return s
}

// get makes one request on a new connection, as a fresh client would.
func get(ctx context.Context, url string, header ...string) result {
	ctx, cancel := context.WithTimeout(ctx, 3*time.Second)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	if err != nil {
		return result{err: err}
	}
	for i := 0; i+1 < len(header); i += 2 {
		req.Header.Set(header[i], header[i+1])
	}
	c := &http.Client{Transport: &http.Transport{DisableKeepAlives: true}}
	resp, err := c.Do(req)
	if err != nil {
		return result{err: err}
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(io.LimitReader(resp.Body, 64<<10))
	return result{status: resp.StatusCode, body: body, err: err}
}

// until repeats probe until ok says so or the policy timeout passes — a policy change
// takes effect when the control plane has pushed it, so the demo watches real requests
// change instead of sleeping. It says when it is waiting so nothing sits silent.
func (w *walkthrough) until(ctx context.Context, what string, probe func() result, ok func(result) bool) (result, bool) {
	deadline := time.Now().Add(w.m.cfg.PolicyTimeout)
	said := false
	start := time.Now()
	for {
		r := probe()
		if ok(r) {
			return r, true
		}
		if time.Now().After(deadline) || ctx.Err() != nil {
			return r, false
		}
		if !said && time.Since(start) > time.Second {
			w.rep.info("… waiting for %s (last: %s)", what, r)
			said = true
		}
		select {
		case <-ctx.Done():
		case <-time.After(100 * time.Millisecond):
		}
	}
}

func status(code int) func(result) bool {
	return func(r result) bool { return r.err == nil && r.status == code }
}

func (w *walkthrough) via(caller, target, path string) string {
	return "http://" + w.m.outbounds[caller][target] + path
}

func callerOf(r result) string {
	var resp appResponse
	if json.Unmarshal(r.body, &resp) != nil {
		return ""
	}
	return resp.Caller
}

func (w *walkthrough) spiffe(sa string) string {
	return "spiffe://" + w.m.cp.td + "/ns/" + namespace + "/sa/" + sa
}

// Step 1.
func (w *walkthrough) certificates(ctx context.Context) {
	if !w.needSidecars() {
		return
	}
	rootPEM, err := os.ReadFile(w.m.cp.rootFile)
	roots := x509.NewCertPool()
	if err != nil || !roots.AppendCertsFromPEM(rootPEM) {
		w.rep.check(false, "read the mesh root certificate", fmt.Sprint(err))
		return
	}
	for _, s := range services() {
		path := filepath.Join(w.m.certDirs[s.name], "cert-chain.pem")
		chain, err := readChain(path)
		if err != nil {
			w.rep.check(false, s.name+": certificate", err.Error())
			continue
		}
		leaf := chain[0]
		inter := x509.NewCertPool()
		for _, c := range chain[1:] {
			inter.AddCert(c)
		}
		_, verr := leaf.Verify(x509.VerifyOptions{Roots: roots, Intermediates: inter, KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageAny}})
		id := ""
		if len(leaf.URIs) == 1 {
			id = leaf.URIs[0].String()
		}
		left := leaf.NotAfter.Sub(w.m.cfg.Now()).Round(time.Minute)
		detail := fmt.Sprintf("%s, expires %s (in %s)", id, leaf.NotAfter.UTC().Format(time.RFC3339), left)
		switch {
		case verr != nil:
			w.rep.check(false, s.name+": certificate chains to the mesh root", verr.Error())
		case id != w.spiffe(s.name):
			w.rep.check(false, s.name+": identity is its service account", fmt.Sprintf("got %q, want %q", id, w.spiffe(s.name)))
		default:
			w.rep.check(true, s.name, detail)
		}
	}
}

func readChain(path string) ([]*x509.Certificate, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("read %s: %w", path, err)
	}
	var chain []*x509.Certificate
	for {
		var b *pem.Block
		b, data = pem.Decode(data)
		if b == nil {
			break
		}
		c, err := x509.ParseCertificate(b.Bytes)
		if err != nil {
			return nil, fmt.Errorf("parse %s: %w", path, err)
		}
		chain = append(chain, c)
	}
	if len(chain) == 0 {
		return nil, fmt.Errorf("%s: no certificate", path)
	}
	return chain, nil
}

// Step 2.
func (w *walkthrough) mtls(ctx context.Context) {
	if !w.needSidecars() {
		return
	}
	plain := "http://" + w.m.inbound["reviews"] + "/reviews/1"
	r := get(ctx, plain)
	w.rep.info("before: a plaintext client straight at reviews' sidecar gets %s (PERMISSIVE, Istio's default)", r)
	if err := w.m.conf.applyExample(ctx, examples.DestinationRuleIstioMutual); err != nil {
		w.rep.check(false, "apply the DestinationRule", err.Error())
		return
	}
	if err := w.m.conf.applyExample(ctx, examples.PeerAuthenticationStrict); err != nil {
		w.rep.check(false, "apply the PeerAuthentication", err.Error())
		return
	}
	r, ok := w.until(ctx, "STRICT to refuse plaintext", func() result { return get(ctx, plain) }, func(r result) bool { return r.err != nil })
	detail := r.String()
	if ok {
		detail = "the sidecar closed the connection without answering (" + detail + ")"
	}
	w.rep.check(ok, "plaintext client → reviews' sidecar is refused", detail)

	r, ok = w.until(ctx, "productpage → reviews", func() result { return get(ctx, w.via("productpage", "reviews", "/reviews/1")) }, status(200))
	caller := callerOf(r)
	w.rep.check(ok && caller == w.spiffe("productpage"), "productpage → reviews over mTLS: 200",
		fmt.Sprintf("reviews' sidecar verified the peer as %s", orNone(caller)))

	r = get(ctx, "http://"+w.m.apps["productpage"].Addr()+"/productpage")
	w.rep.check(chainOK(r, w), "the whole chain: productpage → reviews → ratings", chainString(r))
}

func orNone(s string) string {
	if s == "" {
		return "(none)"
	}
	return s
}

// chainOK checks productpage's answer: reviews answered 200 and saw productpage; ratings
// answered 200 and saw reviews.
func chainOK(r result, w *walkthrough) bool {
	var pp appResponse
	if r.err != nil || r.status != 200 || json.Unmarshal(r.body, &pp) != nil || pp.Upstream == nil || pp.Upstream.Status != 200 {
		return false
	}
	var rv appResponse
	if json.Unmarshal(pp.Upstream.Body, &rv) != nil || rv.Caller != w.spiffe("productpage") || rv.Upstream == nil || rv.Upstream.Status != 200 {
		return false
	}
	var rt appResponse
	return json.Unmarshal(rv.Upstream.Body, &rt) == nil && rt.Caller == w.spiffe("reviews")
}

func chainString(r result) string {
	var pp, rv, rt appResponse
	if r.err != nil || json.Unmarshal(r.body, &pp) != nil {
		return r.String()
	}
	s := fmt.Sprintf("productpage %d", r.status)
	if pp.Upstream == nil {
		return s
	}
	if pp.Upstream.Error != "" {
		return s + "; reviews: " + pp.Upstream.Error
	}
	_ = json.Unmarshal(pp.Upstream.Body, &rv)
	s += fmt.Sprintf("; reviews %d (caller %s)", pp.Upstream.Status, orNone(rv.Caller))
	if rv.Upstream == nil {
		return s
	}
	if rv.Upstream.Error != "" {
		return s + "; ratings: " + rv.Upstream.Error
	}
	_ = json.Unmarshal(rv.Upstream.Body, &rt)
	return s + fmt.Sprintf("; ratings %d (caller %s)", rv.Upstream.Status, orNone(rt.Caller))
}

// Step 3.
func (w *walkthrough) authz(ctx context.Context) {
	if !w.needSidecars() {
		return
	}
	if err := w.m.conf.applyExample(ctx, examples.ReviewsAccess); err != nil {
		w.rep.check(false, "apply reviews-access", err.Error())
		return
	}
	r, ok := w.until(ctx, "reviews-access to deny ratings", func() result { return get(ctx, w.via("ratings", "reviews", "/reviews/1")) }, status(403))
	ok = ok && strings.TrimSpace(string(r.body)) == "RBAC: access denied"
	detail := "reviews' sidecar answered with Istio's RBAC denial"
	if !ok {
		detail = r.String()
	}
	w.rep.check(ok, "ratings → reviews: 403 RBAC: access denied", detail)
	r, ok = w.until(ctx, "productpage → reviews", func() result { return get(ctx, w.via("productpage", "reviews", "/reviews/1")) }, status(200))
	w.rep.check(ok, "productpage → reviews: 200", "caller "+orNone(callerOf(r)))
}

// Step 4.
func (w *walkthrough) jwt(ctx context.Context) {
	if !w.needSidecars() {
		return
	}
	jwksAddr := strings.TrimPrefix(strings.TrimSuffix(w.m.jwt.JWKSURI(), "/jwks.json"), "http://")
	if err := w.m.conf.applyExample(ctx, examples.RequestAuthentication, examples.JWKSAddr, jwksAddr); err != nil {
		w.rep.check(false, "apply the RequestAuthentication", err.Error())
		return
	}
	if err := w.m.conf.applyExample(ctx, examples.RequireJWT); err != nil {
		w.rep.check(false, "apply the JWT requirement", err.Error())
		return
	}
	valid, err := w.m.jwt.token("alice", time.Hour, false)
	if err != nil {
		w.rep.check(false, "mint a token", err.Error())
		return
	}
	forged, err := w.m.jwt.token("mallory", time.Hour, true)
	if err != nil {
		w.rep.check(false, "mint a token", err.Error())
		return
	}
	w.token = valid
	url := w.via("productpage", "reviews", "/reviews/1")
	r, ok := w.until(ctx, "the JWT requirement", func() result { return get(ctx, url) }, status(403))
	w.rep.check(ok, "productpage → reviews without a token: 403", r.String())
	r, ok = w.until(ctx, "the RequestAuthentication", func() result { return get(ctx, url, "Authorization", "Bearer "+forged) }, status(401))
	w.rep.check(ok, "with a token signed by a key the issuer never published: 401", r.String())
	r, ok = w.until(ctx, "a valid token to pass", func() result { return get(ctx, url, "Authorization", "Bearer "+valid) }, status(200))
	w.rep.check(ok, "with alice's valid token: 200", "caller "+orNone(callerOf(r)))
	r = get(ctx, "http://"+w.m.apps["productpage"].Addr()+"/productpage", "Authorization", "Bearer "+valid)
	w.rep.check(chainOK(r, w), "alice at the front door: productpage → reviews → ratings", chainString(r))
}

// seedsLine is one access-log entry in the seeds' format.
var seedsLine = regexp.MustCompile(`^\[(\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z)\] (GET|POST|PUT|DELETE|HEAD) (\S+) -> (\d{3})$`)

// Step 5.
func (w *walkthrough) accessLog(ctx context.Context) {
	if !w.needSidecars() {
		return
	}
	if err := w.m.conf.applyExample(ctx, examples.AccessLog, examples.AccessLogFile, w.m.accessLog); err != nil {
		w.rep.check(false, "apply the access log config", err.Error())
		return
	}
	// Requests until the log shows both an allowed and a denied call to reviews: the
	// mesh config reaches the sidecars by push, like any policy.
	var lines []string
	_, ok := w.until(ctx, "the access log", func() result {
		get(ctx, w.via("productpage", "reviews", "/reviews/1"), "Authorization", "Bearer "+w.token)
		get(ctx, w.via("ratings", "reviews", "/reviews/1"))
		lines = readLines(w.m.accessLog)
		return result{body: []byte(fmt.Sprintf("%d entries in %s", len(lines), filepath.Base(w.m.accessLog)))}
	}, func(result) bool {
		return hasEntry(lines, "GET", "/reviews/1", "200") && hasEntry(lines, "GET", "/reviews/1", "403")
	})
	w.rep.info("the last entries (a call passes two sidecars and both log it: the caller's outbound, the callee's inbound):")
	for _, l := range lastN(lines, 8) {
		w.rep.info("  %s", l)
	}
	w.rep.check(ok, "allowed and denied calls to reviews are logged", w.m.accessLog)
	bad := ""
	for _, l := range lines {
		if !seedsLine.MatchString(l) {
			bad = l
			break
		}
	}
	detail := fmt.Sprintf("%d entries", len(lines))
	if bad != "" {
		detail = "not in the format: " + bad
	}
	w.rep.check(len(lines) > 0 && bad == "", "every entry is in the seeds' format [%START_TIME%] METHOD PATH -> CODE", detail)
}

func readLines(path string) []string {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil
	}
	var out []string
	sc := bufio.NewScanner(bytes.NewReader(data))
	for sc.Scan() {
		if l := strings.TrimSpace(sc.Text()); l != "" {
			out = append(out, l)
		}
	}
	return out
}

func hasEntry(lines []string, method, path, code string) bool {
	for _, l := range lines {
		if m := seedsLine.FindStringSubmatch(l); m != nil && m[2] == method && m[3] == path && m[4] == code {
			return true
		}
	}
	return false
}

func lastN(s []string, n int) []string {
	if len(s) > n {
		return s[len(s)-n:]
	}
	return s
}
