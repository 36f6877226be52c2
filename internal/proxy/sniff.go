package proxy

import (
	"bufio"
	"errors"
	"io"
	"net"
	"os"
	"strconv"
	"strings"
	"time"
)

// protocol is what a connection carries, decided once per connection.
type protocol uint8

const (
	protoUnknown protocol = iota // need more bytes
	protoTCP
	protoHTTP1
	protoH2
	protoTLS
)

func (p protocol) String() string {
	switch p {
	case protoTCP:
		return "tcp"
	case protoHTTP1:
		return "http/1.1"
	case protoH2:
		return "h2"
	case protoTLS:
		return "tls"
	}
	return "unknown"
}

const h2Preface = "PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"

// httpMethods are the request methods the sniffer recognises (Envoy's HTTP inspector
// recognises the same registered methods); each is followed by a space.
var httpMethods = []string{
	"GET ", "HEAD ", "POST ", "PUT ", "DELETE ", "CONNECT ", "OPTIONS ", "TRACE ", "PATCH ",
	"PROPFIND ", "PROPPATCH ", "MKCOL ", "COPY ", "MOVE ", "LOCK ", "UNLOCK ",
}

// classifyPlain decides between HTTP/2 prior knowledge, HTTP/1.x and opaque TCP from
// the first bytes of a plaintext stream. It returns protoUnknown while b is still a
// proper prefix of something recognisable; once it returns a protocol, appending bytes
// never changes the answer.
func classifyPlain(b []byte) protocol {
	if len(b) == 0 {
		return protoUnknown
	}
	if n := min(len(b), len(h2Preface)); string(b[:n]) == h2Preface[:n] {
		if n == len(h2Preface) {
			return protoH2
		}
		return protoUnknown
	}
	undecided := false
	for _, m := range httpMethods {
		n := min(len(b), len(m))
		if string(b[:n]) != m[:n] {
			continue
		}
		if n == len(m) {
			return protoHTTP1
		}
		undecided = true
	}
	if undecided {
		return protoUnknown
	}
	return protoTCP
}

// classifyFirst adds TLS detection: a TLS handshake record (0x16 0x03) is a
// ClientHello. Used where PERMISSIVE accepts both mTLS and plaintext.
func classifyFirst(b []byte) protocol {
	if len(b) == 0 {
		return protoUnknown
	}
	if b[0] == 0x16 {
		if len(b) < 2 {
			return protoUnknown
		}
		if b[1] == 0x03 {
			return protoTLS
		}
	}
	return classifyPlain(b)
}

// sniff peeks at br until classify decides, the stream ends, or timeout passes (0:
// wait without limit). Bytes stay buffered in br. A stream that sends too little
// before the timeout or EOF counts as opaque TCP: server-first protocols then work.
func sniff(c net.Conn, br *bufio.Reader, timeout time.Duration, classify func([]byte) protocol) (protocol, error) {
	if timeout > 0 {
		if err := c.SetReadDeadline(time.Now().Add(timeout)); err != nil {
			return protoUnknown, err
		}
		defer c.SetReadDeadline(time.Time{}) //nolint:errcheck // best effort reset
	}
	for n := 1; ; n++ {
		// Classify everything already buffered before waiting for more: a client that
		// sent its whole request in one segment must not wait for the timeout.
		if bn := br.Buffered(); bn > n {
			n = min(bn, br.Size())
		}
		b, err := br.Peek(n)
		if p := classify(b); p != protoUnknown {
			return p, nil
		}
		if err != nil {
			// A short first message followed by EOF or silence is opaque TCP; nothing
			// at all is a closed connection.
			if len(b) > 0 && (errors.Is(err, io.EOF) || errors.Is(err, os.ErrDeadlineExceeded)) {
				return protoTCP, nil
			}
			if len(b) == 0 && errors.Is(err, os.ErrDeadlineExceeded) {
				return protoTCP, nil
			}
			return protoUnknown, err
		}
		// Undecided on everything buffered: wait for one byte more. classify decides
		// within len(h2Preface) bytes, so this ends.
	}
}

// Istio's SNI for a sidecar-to-sidecar connection: outbound_.PORT_._.HOST
// (direction, port, subset, host).
const sniPrefix = "outbound_."

func istioSNI(host string, port uint32) string {
	return sniPrefix + strconv.FormatUint(uint64(port), 10) + "_._." + host
}

// parseIstioSNI parses outbound_.PORT_SUBSET_.HOST forms: "outbound_.9080_._.reviews.default.svc.cluster.local"
// or with a subset "outbound_.9080_v1_.reviews…". ok is false for anything else.
func parseIstioSNI(sni string) (host string, port uint32, ok bool) {
	rest, found := strings.CutPrefix(sni, sniPrefix)
	if !found {
		return "", 0, false
	}
	ps, rest, found := strings.Cut(rest, "_")
	if !found {
		return "", 0, false
	}
	n, err := strconv.ParseUint(ps, 10, 16)
	if err != nil || n == 0 || ps[0] == '+' || ps[0] == '0' {
		return "", 0, false
	}
	// rest is "SUBSET_.HOST"; the subset may be empty or ".".
	i := strings.Index(rest, "_.")
	if i < 0 {
		return "", 0, false
	}
	host = rest[i+2:]
	if host == "" || strings.ContainsAny(host, " /_") {
		return "", 0, false
	}
	return host, uint32(n), true
}
