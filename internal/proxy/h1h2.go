package proxy

import (
	"bufio"
	"context"
	"errors"
	"io"
	"net/http"
	"net/http/httputil"
	"net/url"
	"strconv"
	"strings"

	"github.com/spiffe/go-spiffe/v2/svid/x509svid"
	networking "istio.io/api/networking/v1alpha3"
)

// HTTP/1.1 multiplexed over HTTP/2 between sidecars (Config.H2Upstream): the client
// sidecar turns each HTTP/1.1 request of the lean path into a stream on the route's
// shared HTTP/2 connections, marked with hdrOriginH1 so that the server sidecar sends
// it to the app as HTTP/1.1 again. Upgrades (101) cannot ride an HTTP/2 stream and
// keep using pooled HTTP/1.1 connections.

// hdrOriginH1 marks a request that arrived as HTTP/1.1 at the client sidecar. It only
// chooses the protocol toward the app, so a forged one changes nothing that matters;
// the server sidecar removes it either way.
const hdrOriginH1 = "X-Meshguard-Origin-Protocol"

// hopByHop are the connection-specific headers that do not cross a protocol change.
var hopByHop = []string{"connection", "keep-alive", "proxy-connection", "transfer-encoding", "upgrade", "te", "host", "expect"}

func isHopByHop(name []byte) bool {
	for _, h := range hopByHop {
		if equalFoldASCII(name, h) {
			return true
		}
	}
	return false
}

// useH2 reports whether this outbound request goes over the route's HTTP/2
// connections.
func (ex *h1Exchange) useH2(rt *route) bool {
	return ex.p.cfg.H2Upstream && rt.mode == networking.ClientTLSSettings_ISTIO_MUTUAL && rt.err == nil && !ex.req.upgrade
}

// exchangeH2 forwards the current request over HTTP/2 and writes the answer back as
// HTTP/1.1; it reports whether the downstream connection may carry another request.
func (ex *h1Exchange) exchangeH2(ctx context.Context, rt *route, hasBody bool) bool {
	req, rec, bw := &ex.req, &ex.rec, ex.bw
	ep, err := rt.pick()
	if err != nil {
		rec.Status, rec.Flags = 503, "UF"
		simpleResponse(bw, 503, "upstream connect error or disconnect/reset before headers. reset reason: connection failure", true) //nolint:errcheck // closing anyway
		return false
	}
	u, err := url.ParseRequestURI(string(req.target()))
	if err != nil {
		rec.Status = 400
		simpleResponse(bw, 400, "", true) //nolint:errcheck // closing anyway
		return false
	}
	u.Scheme, u.Host = "https", ep.addr
	if req.expect100 {
		// As on the HTTP/1.1 path: answer 100-continue here, do not forward Expect.
		bw.WriteString("HTTP/1.1 100 Continue\r\n\r\n") //nolint:errcheck
		if bw.Flush() != nil {
			return false
		}
	}
	r := &http.Request{Method: rec.Method, URL: u, Proto: "HTTP/2.0", ProtoMajor: 2, Header: make(http.Header, len(req.hdrs)+1)}
	for _, f := range req.hdrs {
		name := req.b(f.name)
		if equalFoldASCII(name, "host") {
			r.Host = string(req.b(f.value))
			continue
		}
		if isHopByHop(name) {
			continue
		}
		k := http.CanonicalHeaderKey(string(name))
		r.Header[k] = append(r.Header[k], string(req.b(f.value)))
	}
	r.Header.Set(hdrOriginH1, "HTTP/1.1")
	counted := &countingReader{}
	switch {
	case !hasBody:
		r.Body = http.NoBody
	case req.chunked:
		counted.r = httputil.NewChunkedReader(ex.br)
		r.Body, r.ContentLength = io.NopCloser(counted), -1
	default:
		counted.r = io.LimitReader(ex.br, req.contentLength)
		r.Body, r.ContentLength = io.NopCloser(counted), req.contentLength
	}
	resp, err := rt.h2.RoundTrip(r.WithContext(ctx))
	rec.BytesReceived = counted.n
	if err != nil {
		ex.p.log.Debug("upstream request failed", "direction", "outbound", "err", err)
		rec.Status, rec.Flags = 503, "URX"
		simpleResponse(bw, 503, "upstream connect error or disconnect/reset before headers. reset reason: connection termination", true) //nolint:errcheck // closing anyway
		return false
	}
	defer resp.Body.Close()
	if resp.TLS != nil && len(resp.TLS.PeerCertificates) > 0 {
		if id, err := x509svid.IDFromCert(resp.TLS.PeerCertificates[0]); err == nil {
			rec.PeerPrincipal = principalOf(id)
		}
	}
	rec.Status = resp.StatusCode
	keep := !req.close && !(hasBody && counted.n < req.contentLength)
	buf := ex.p.rpBufs.Get()
	defer ex.p.rpBufs.Put(buf)
	n, err := writeH1Response(bw, resp, req.method(), keep, buf)
	rec.BytesSent = n
	if err != nil {
		return false
	}
	return keep
}

type countingReader struct {
	r io.Reader
	n int64
}

func (c *countingReader) Read(b []byte) (int, error) {
	n, err := c.r.Read(b)
	c.n += int64(n)
	return n, err
}

// writeH1Response writes an HTTP/2 response as HTTP/1.1: Content-Length framing when
// the length is known and there are no trailers, chunked otherwise.
func writeH1Response(bw *bufio.Writer, resp *http.Response, method []byte, keep bool, buf []byte) (int64, error) {
	bw.WriteString("HTTP/1.1 ")                   //nolint:errcheck // bufio keeps the first error for Flush
	bw.WriteString(strconv.Itoa(resp.StatusCode)) //nolint:errcheck
	bw.WriteString(" ")                           //nolint:errcheck
	bw.WriteString(statusText(resp.StatusCode))   //nolint:errcheck
	bw.WriteString("\r\n")                        //nolint:errcheck
	for k, vs := range resp.Header {
		if isHopByHop([]byte(k)) || strings.EqualFold(k, "content-length") {
			continue
		}
		for _, v := range vs {
			bw.WriteString(k)      //nolint:errcheck
			bw.WriteString(": ")   //nolint:errcheck
			bw.WriteString(v)      //nolint:errcheck
			bw.WriteString("\r\n") //nolint:errcheck
		}
	}
	noBody := string(method) == "HEAD" || resp.StatusCode == 204 || resp.StatusCode == 304
	chunked := !noBody && (resp.ContentLength < 0 || len(resp.Trailer) > 0)
	switch {
	case noBody:
		if resp.ContentLength >= 0 {
			bw.WriteString("Content-Length: " + strconv.FormatInt(resp.ContentLength, 10) + "\r\n") //nolint:errcheck
		}
	case chunked:
		bw.WriteString("Transfer-Encoding: chunked\r\n") //nolint:errcheck
	default:
		bw.WriteString("Content-Length: " + strconv.FormatInt(resp.ContentLength, 10) + "\r\n") //nolint:errcheck
	}
	if !keep {
		bw.WriteString("Connection: close\r\n") //nolint:errcheck
	}
	bw.WriteString("\r\n") //nolint:errcheck
	if noBody {
		return 0, bw.Flush()
	}
	var total int64
	for {
		n, rerr := resp.Body.Read(buf)
		if n > 0 {
			total += int64(n)
			if chunked {
				bw.WriteString(strconv.FormatInt(int64(n), 16)) //nolint:errcheck
				bw.WriteString("\r\n")                          //nolint:errcheck
			}
			bw.Write(buf[:n]) //nolint:errcheck
			if chunked {
				bw.WriteString("\r\n") //nolint:errcheck
			}
			// Stream: push what we have when the upstream has nothing more buffered.
			if err := bw.Flush(); err != nil {
				return total, err
			}
		}
		if errors.Is(rerr, io.EOF) {
			break
		}
		if rerr != nil {
			return total, rerr
		}
	}
	if chunked {
		bw.WriteString("0\r\n") //nolint:errcheck
		for k, vs := range resp.Trailer {
			for _, v := range vs {
				bw.WriteString(k + ": " + v + "\r\n") //nolint:errcheck
			}
		}
		bw.WriteString("\r\n") //nolint:errcheck
	}
	return total, bw.Flush()
}
