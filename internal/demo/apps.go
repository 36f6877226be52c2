package demo

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"strings"
	"time"
)

// The bookinfo-like application: three small HTTP servers that know nothing of the mesh.
// Each calls its upstream at a plain http://127.0.0.1:PORT address, which is its sidecar's
// outbound listener, and reports the caller its own sidecar verified (the
// x-forwarded-client-cert header the sidecar sets), so the walkthrough can show who
// called whom.

// appResponse is every app's JSON answer.
type appResponse struct {
	Service string `json:"service"`
	// Caller is the SPIFFE ID of the peer, as the app's sidecar verified it; empty for
	// plaintext.
	Caller string `json:"caller,omitempty"`
	// Upstream is the answer of the service this one called, if any.
	Upstream *upstreamResult `json:"upstream,omitempty"`
	Ratings  map[string]int  `json:"ratings,omitempty"`
}

type upstreamResult struct {
	URL    string          `json:"url"`
	Status int             `json:"status,omitempty"`
	Error  string          `json:"error,omitempty"`
	Body   json.RawMessage `json:"body,omitempty"`
}

// app is one service: its HTTP server and where it calls its upstream.
type app struct {
	name     string
	upstream string // URL prefix of the upstream through the sidecar, "" for none
	path     string // the upstream path to call
	client   *http.Client
	srv      *http.Server
	lis      net.Listener
}

func newApp(name string, lis net.Listener, upstream, path string, log *slog.Logger) *app {
	a := &app{
		name: name, upstream: upstream, path: path, lis: lis,
		client: &http.Client{
			Timeout: 5 * time.Second,
			// Its own transport: no proxy from the environment, nothing shared.
			Transport: &http.Transport{MaxIdleConnsPerHost: 4, IdleConnTimeout: 30 * time.Second},
		},
	}
	mux := http.NewServeMux()
	mux.HandleFunc("/", a.serve)
	a.srv = &http.Server{Handler: mux, ReadHeaderTimeout: 5 * time.Second,
		ErrorLog: slog.NewLogLogger(log.Handler(), slog.LevelDebug)}
	return a
}

// Addr is where the app listens (its sidecar forwards inbound traffic here).
func (a *app) Addr() string { return a.lis.Addr().String() }

// run serves until ctx ends.
func (a *app) run(ctx context.Context) error {
	errc := make(chan error, 1)
	go func() { errc <- a.srv.Serve(a.lis) }()
	select {
	case err := <-errc:
		return fmt.Errorf("%s app: %w", a.name, err)
	case <-ctx.Done():
	}
	sctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	err := a.srv.Shutdown(sctx)
	a.client.CloseIdleConnections()
	if err != nil && !errors.Is(err, context.DeadlineExceeded) {
		return fmt.Errorf("%s app: shutdown: %w", a.name, err)
	}
	return nil
}

func (a *app) serve(w http.ResponseWriter, r *http.Request) {
	resp := appResponse{Service: a.name, Caller: callerFromXFCC(r.Header.Get("X-Forwarded-Client-Cert"))}
	if a.name == "ratings" {
		resp.Ratings = map[string]int{"Reviewer1": 5, "Reviewer2": 4}
	}
	if a.upstream != "" {
		resp.Upstream = a.callUpstream(r)
	}
	w.Header().Set("Content-Type", "application/json")
	_ = json.NewEncoder(w).Encode(resp)
}

// callUpstream calls the next service, passing the end-user's Authorization header on
// as bookinfo's services do, so that JWT rules see the user's token.
func (a *app) callUpstream(in *http.Request) *upstreamResult {
	u := a.upstream + a.path
	res := &upstreamResult{URL: u}
	req, err := http.NewRequestWithContext(in.Context(), http.MethodGet, u, nil)
	if err != nil {
		res.Error = err.Error()
		return res
	}
	if h := in.Header.Get("Authorization"); h != "" {
		req.Header.Set("Authorization", h)
	}
	resp, err := a.client.Do(req)
	if err != nil {
		res.Error = err.Error()
		return res
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(io.LimitReader(resp.Body, 64<<10))
	res.Status = resp.StatusCode
	switch {
	case err != nil:
		res.Error = err.Error()
	case json.Valid(body):
		res.Body = body
	default:
		res.Body, _ = json.Marshal(strings.TrimSpace(string(body)))
	}
	return res
}

// callerFromXFCC returns the URI= element of the first x-forwarded-client-cert element:
// the SPIFFE ID the sidecar verified. Envoy's format is `Key=Value;Key=Value`, with
// elements separated by commas.
func callerFromXFCC(v string) string {
	first, _, _ := strings.Cut(v, ",")
	for _, kv := range strings.Split(first, ";") {
		k, val, ok := strings.Cut(kv, "=")
		if ok && strings.EqualFold(strings.TrimSpace(k), "URI") {
			return strings.Trim(strings.TrimSpace(val), `"`)
		}
	}
	return ""
}
