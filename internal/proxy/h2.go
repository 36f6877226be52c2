package proxy

import (
	"context"
	"errors"
	"net"
	"net/http"
	"net/http/httputil"
	"sync"

	"golang.org/x/net/http2"
)

type ctxKey struct{}

// serveH2 serves one HTTP/2 connection (h2 over mTLS, or h2c prior knowledge) in the
// calling goroutine. Requests are forwarded with httputil.ReverseProxy over pooled,
// multiplexed HTTP/2 upstream connections, which keeps gRPC trailers and streaming
// intact.
func (p *Proxy) serveH2(ctx context.Context, cs *connState, c net.Conn) {
	p.h2srv.ServeConn(c, &http2.ServeConnOpts{
		Context:    context.WithValue(ctx, ctxKey{}, cs),
		BaseConfig: p.h2base,
		Handler:    http.HandlerFunc(p.serveH2Request),
	})
}

// h2Exchange carries one HTTP/2 request's record through ReverseProxy's hooks.
type h2Exchange struct {
	rec Record
	req Request
	app *appTarget // inbound: the app this request goes to
}

type h2ExKey struct{}

var h2ExPool = sync.Pool{New: func() any { return new(h2Exchange) }}

func (p *Proxy) serveH2Request(w http.ResponseWriter, r *http.Request) {
	cs, _ := r.Context().Value(ctxKey{}).(*connState)
	if cs == nil {
		http.Error(w, "internal error", http.StatusInternalServerError)
		return
	}
	cs.requests.Add(1)
	st := p.state.Load()
	ex := h2ExPool.Get().(*h2Exchange)
	defer h2ExPool.Put(ex)
	rec := &ex.rec
	*rec = cs.record("h2", p.now())
	rec.Method, rec.Path, rec.Authority, rec.Headers = r.Method, r.URL.RequestURI(), r.Host, HTTPHeader(r.Header)
	defer p.observeTimed(rec)
	if cs.dir == Inbound {
		r.Header.Del("X-Forwarded-Client-Cert")
		ex.req = cs.request()
		ar := &ex.req
		ar.HTTP, ar.Method, ar.Path, ar.Host, ar.Headers = true, r.Method, r.URL.RequestURI(), r.Host, HTTPHeader(r.Header)
		status := p.admit(r.Context(), cs, st, ar, r.URL.RequestURI(), rec)
		ar.Headers = nil
		if status != 0 {
			rec.Status = status
			body := denyBody(status)
			if status == 401 {
				rec.Flags = "UAEX"
			} else {
				rec.Denied = true
			}
			w.Header().Set("Content-Type", "text/plain")
			w.WriteHeader(status)
			w.Write([]byte(body)) //nolint:errcheck // peer may be gone
			return
		}
		if cs.xfcc != "" {
			r.Header.Set("X-Forwarded-Client-Cert", cs.xfcc)
		}
		ex.app = cs.app
		if cs.hostRouted {
			var ok bool
			if ex.app, rec.Port, ok = p.appForHost(cs, st, r.Host); !ok {
				p.handshakeFailed(Inbound, "plaintext_to_strict", "peer", cs.src.String(), "host", r.Host)
				rec.Status = 403
				http.Error(w, bodyDenied, http.StatusForbidden)
				return
			}
		}
	} else {
		if cs.route.err != nil {
			rec.Status, rec.Flags = 503, "UF"
			p.log.Warn("upstream connect failed", "direction", "outbound", "err", cs.route.err)
			http.Error(w, "upstream connect error or disconnect/reset before headers. reset reason: connection failure", 503)
			return
		}
	}
	p.reverseProxy().ServeHTTP(w, r.WithContext(context.WithValue(r.Context(), h2ExKey{}, ex)))
}

func (p *Proxy) reverseProxy() *httputil.ReverseProxy {
	p.rpOnce.Do(func() {
		p.rp = &httputil.ReverseProxy{
			Director: func(r *http.Request) {
				cs := r.Context().Value(ctxKey{}).(*connState)
				r.URL.Scheme = "http"
				if cs.dir == Inbound {
					app := cs.app
					if ex, ok := r.Context().Value(h2ExKey{}).(*h2Exchange); ok && ex.app != nil {
						app = ex.app
					}
					r.URL.Host = app.addr.String()
				} else {
					if ep, err := cs.route.pick(); err == nil {
						r.URL.Host = ep.addr
					}
					if cs.route.tlsH2 != nil {
						r.URL.Scheme = "https"
					}
				}
				if _, ok := r.Header["X-Forwarded-For"]; !ok {
					r.Header["X-Forwarded-For"] = nil // the proxy is transparent: add none
				}
			},
			Transport: roundTripFunc(p.h2RoundTrip),
			// No FlushInterval: ReverseProxy already flushes every write of a response
			// of unknown length (gRPC, SSE, any stream). A non-zero interval also arms
			// a timer that flushes the head at once from another goroutine, racing the
			// handler's return: when a trailers-only response (a gRPC error: HEADERS
			// with END_STREAM carrying grpc-status) lost that race, the head went out
			// without END_STREAM and the stream ended with an empty DATA frame, so the
			// client saw headers, no trailers and no status.
			BufferPool: &p.rpBufs,
			ModifyResponse: func(resp *http.Response) error {
				if ex, ok := resp.Request.Context().Value(h2ExKey{}).(*h2Exchange); ok {
					ex.rec.Status = resp.StatusCode
				}
				if trailersOnly(resp) {
					// Keep it one HEADERS frame with END_STREAM downstream: with
					// length 0, ReverseProxy flushes nothing before the handler returns.
					resp.ContentLength = 0
				}
				return nil
			},
			ErrorHandler: func(w http.ResponseWriter, r *http.Request, err error) {
				if ex, ok := r.Context().Value(h2ExKey{}).(*h2Exchange); ok {
					ex.rec.Status, ex.rec.Flags = 503, "UF"
				}
				if !errors.Is(err, context.Canceled) {
					p.log.Warn("HTTP/2 upstream request failed", "err", err)
				}
				w.WriteHeader(http.StatusServiceUnavailable)
			},
		}
	})
	return p.rp
}

// trailersOnly reports whether resp is a gRPC trailers-only response: grpc-status in
// the response head means the stream carries no messages and no separate trailers
// (gRPC over HTTP/2, "Trailers-Only").
func trailersOnly(resp *http.Response) bool {
	_, ok := resp.Header["Grpc-Status"]
	return ok
}

type roundTripFunc func(*http.Request) (*http.Response, error)

func (f roundTripFunc) RoundTrip(r *http.Request) (*http.Response, error) { return f(r) }

func (p *Proxy) h2RoundTrip(r *http.Request) (*http.Response, error) {
	cs := r.Context().Value(ctxKey{}).(*connState)
	if cs.dir == Inbound {
		return p.appH2.RoundTrip(r)
	}
	return cs.route.h2.RoundTrip(r)
}

// rpBufferPool implements httputil.BufferPool over sync.Pool.
type rpBufferPool struct{ p sync.Pool }

func (b *rpBufferPool) Get() []byte {
	if v, ok := b.p.Get().(*[]byte); ok {
		return *v
	}
	return make([]byte, 32<<10)
}

func (b *rpBufferPool) Put(v []byte) { b.p.Put(&v) }
