package proxy

import (
	"bufio"
	"bytes"
	"errors"
	"net"
	"strings"
	"testing"
	"time"
)

var headCases = []struct {
	name    string
	in      string
	wantErr error
	cl      int64
	chunked bool
	close   bool
}{
	{"simple GET", "GET / HTTP/1.1\r\nHost: a\r\n\r\n", nil, -1, false, false},
	{"content-length", "POST /x HTTP/1.1\r\nHost: a\r\nContent-Length: 5\r\n\r\nhello", nil, 5, false, false},
	{"chunked", "POST /x HTTP/1.1\r\nTransfer-Encoding: gzip, chunked\r\n\r\n", nil, -1, true, false},
	{"http/1.0 closes", "GET / HTTP/1.0\r\n\r\n", nil, -1, false, true},
	{"http/1.0 keep-alive", "GET / HTTP/1.0\r\nConnection: keep-alive\r\n\r\n", nil, -1, false, false},
	{"connection close", "GET / HTTP/1.1\r\nConnection: Close\r\n\r\n", nil, -1, false, true},
	{"bare LF", "GET / HTTP/1.1\nHost: a\n\n", nil, -1, false, false},
	{"leading empty line", "\r\nGET / HTTP/1.1\r\n\r\n", nil, -1, false, false},
	{"TE and CL smuggling", "POST / HTTP/1.1\r\nContent-Length: 3\r\nTransfer-Encoding: chunked\r\n\r\n", errBadHead, 0, false, false},
	{"conflicting CL", "POST / HTTP/1.1\r\nContent-Length: 3\r\nContent-Length: 4\r\n\r\n", errBadHead, 0, false, false},
	{"non-chunked TE", "POST / HTTP/1.1\r\nTransfer-Encoding: gzip\r\n\r\n", errBadHead, 0, false, false},
	{"negative CL", "POST / HTTP/1.1\r\nContent-Length: -1\r\n\r\n", errBadHead, 0, false, false},
	{"space before colon", "GET / HTTP/1.1\r\nHost : a\r\n\r\n", errBadHead, 0, false, false},
	{"obs-fold", "GET / HTTP/1.1\r\nX: a\r\n b\r\n\r\n", errBadHead, 0, false, false},
	{"HTTP/2 version", "GET / HTTP/2.0\r\n\r\n", errBadHead, 0, false, false},
	{"no target", "GET HTTP/1.1\r\n\r\n", errBadHead, 0, false, false},
	{"too large", "GET / HTTP/1.1\r\nX: " + strings.Repeat("a", maxHeadBytes) + "\r\n\r\n", errHeadTooLarge, 0, false, false},
}

func TestReadHead(t *testing.T) {
	for _, tc := range headCases {
		t.Run(tc.name, func(t *testing.T) {
			var h head
			err := readHead(bufio.NewReaderSize(strings.NewReader(tc.in), 64), &h, true)
			if !errors.Is(err, tc.wantErr) {
				t.Fatalf("readHead(%q) err = %v, want %v", tc.in, err, tc.wantErr)
			}
			if err != nil {
				return
			}
			if h.contentLength != tc.cl || h.chunked != tc.chunked || h.close != tc.close {
				t.Errorf("readHead(%q) = cl %d chunked %v close %v, want %d %v %v", tc.in, h.contentLength, h.chunked, h.close, tc.cl, tc.chunked, tc.close)
			}
		})
	}
}

// FuzzReadHead: a head that parses is re-serialised by writeHead into a head that
// parses to the same framing (what the proxy forwards means what it understood), and
// a rejected head never leaves a half-parsed framing behind that a caller could use.
func FuzzReadHead(f *testing.F) {
	for _, tc := range headCases {
		if tc.wantErr != errHeadTooLarge {
			f.Add([]byte(tc.in))
		}
	}
	f.Fuzz(func(t *testing.T, in []byte) {
		var h head
		if err := readHead(bufio.NewReader(bytes.NewReader(in)), &h, true); err != nil {
			return
		}
		var out bytes.Buffer
		bw := bufio.NewWriter(&out)
		writeHead(bw, &h, nil, "")
		bw.Flush()
		var h2 head
		if err := readHead(bufio.NewReader(&out), &h2, true); err != nil {
			t.Fatalf("re-serialised head %q does not parse: %v", out.String(), err)
		}
		if h2.contentLength != h.contentLength || h2.chunked != h.chunked || h2.close != h.close ||
			string(h2.method()) != string(h.method()) || string(h2.target()) != string(h.target()) {
			t.Fatalf("framing changed through writeHead: %+v vs %+v", h, h2)
		}
	})
}

func TestCopyChunked(t *testing.T) {
	cases := []struct {
		in, payload string
		ok          bool
	}{
		{"5\r\nhello\r\n0\r\n\r\n", "hello", true},
		{"5;ext=1\r\nhello\r\n6\r\n world\r\n0\r\nTrailer: x\r\n\r\n", "hello world", true},
		{"z\r\n", "", false},
		{"5\r\nhelloXX0\r\n\r\n", "", false},
		{"fffffffffffffffff\r\n", "", false},
	}
	for _, tc := range cases {
		var out bytes.Buffer
		bw := bufio.NewWriter(&out)
		n, err := copyChunked(bw, bufio.NewReader(strings.NewReader(tc.in)))
		bw.Flush()
		if (err == nil) != tc.ok {
			t.Errorf("copyChunked(%q) err = %v, want ok=%v", tc.in, err, tc.ok)
			continue
		}
		if tc.ok && (out.String() != tc.in || n != int64(len(tc.payload))) {
			t.Errorf("copyChunked(%q) = %q (%d payload bytes), want verbatim and %d", tc.in, out.String(), n, len(tc.payload))
		}
	}
}

var sniffCases = []struct {
	in   string
	want protocol
}{
	{"GET / HTTP/1.1\r\n", protoHTTP1},
	{"PROPFIND /", protoHTTP1},
	{h2Preface, protoH2},
	{"PRI * HTTP/2.0", protoUnknown},
	{"P", protoUnknown},
	{"\x16\x03\x01\x02\x00", protoTLS},
	{"\x16", protoUnknown},
	{"SSH-2.0-OpenSSH", protoTCP},
	{"GETX", protoTCP},
	{"\x00\x01", protoTCP},
}

func TestClassify(t *testing.T) {
	for _, tc := range sniffCases {
		if got := classifyFirst([]byte(tc.in)); got != tc.want {
			t.Errorf("classifyFirst(%q) = %v, want %v", tc.in, got, tc.want)
		}
	}
}

// TestSniffDecidesOnBufferedBytes: a client that sends its whole request in one
// segment and then waits for the answer must be classified from what arrived, without
// the sniffer waiting for a byte that never comes (it once did, for the whole
// detection timeout, on every new connection).
func TestSniffDecidesOnBufferedBytes(t *testing.T) {
	for _, tc := range []struct {
		in   string
		want protocol
	}{
		{"GET /echo?size=1024 HTTP/1.1\r\nHost: a\r\n\r\n", protoHTTP1},
		{h2Preface + "\x00\x00\x12\x04\x00", protoH2},
		{"\x16\x03\x01\x02\x00\x01", protoTLS},
	} {
		t.Run(tc.in[:4], func(t *testing.T) {
			a, b := net.Pipe()
			defer a.Close()
			defer b.Close()
			go b.Write([]byte(tc.in)) //nolint:errcheck // the pipe is closed by the test
			br := bufio.NewReaderSize(a, 4096)
			br.Peek(len(tc.in)) //nolint:errcheck // all of it is buffered before sniffing
			got := make(chan protocol, 1)
			// Timeout 0 waits without limit: sniffing must decide on what is buffered.
			go func() { p, _ := sniff(a, br, 0, classifyFirst); got <- p }()
			select {
			case p := <-got:
				if p != tc.want {
					t.Errorf("sniff(%q) = %v, want %v", tc.in, p, tc.want)
				}
			case <-time.After(10 * time.Second):
				t.Fatalf("sniff(%q) still waiting for more bytes after 10s", tc.in)
			}
		})
	}
}

// FuzzClassify: once the sniffer decides, more bytes never change its mind, and TLS
// is only ever reported for a handshake record.
func FuzzClassify(f *testing.F) {
	for _, tc := range sniffCases {
		f.Add([]byte(tc.in), []byte("more"))
	}
	f.Fuzz(func(t *testing.T, a, more []byte) {
		p := classifyFirst(a)
		if p == protoUnknown {
			return
		}
		if q := classifyFirst(append(append([]byte(nil), a...), more...)); q != p {
			t.Fatalf("classifyFirst(%q) = %v but with %q appended = %v", a, p, more, q)
		}
		if p == protoTLS && (a[0] != 0x16 || a[1] != 0x03) {
			t.Fatalf("classifyFirst(%q) = TLS for a non-handshake record", a)
		}
	})
}

var sniCases = []struct {
	sni  string
	host string
	port uint32
	ok   bool
}{
	{"outbound_.9080_._.reviews.default.svc.cluster.local", "reviews.default.svc.cluster.local", 9080, true},
	{"outbound_.80_v1_.echo.ns.svc", "echo.ns.svc", 80, true},
	{"outbound_.0_._.x", "", 0, false},
	{"outbound_.099_._.x", "", 0, false},
	{"outbound_.70000_._.x", "", 0, false},
	{"inbound_.80_._.x", "", 0, false},
	{"reviews.default.svc", "", 0, false},
	{"outbound_.80_._.", "", 0, false},
}

func TestParseIstioSNI(t *testing.T) {
	for _, tc := range sniCases {
		host, port, ok := parseIstioSNI(tc.sni)
		if host != tc.host || port != tc.port || ok != tc.ok {
			t.Errorf("parseIstioSNI(%q) = %q, %d, %v; want %q, %d, %v", tc.sni, host, port, ok, tc.host, tc.port, tc.ok)
		}
	}
}

// FuzzParseIstioSNI: whatever parses formats back to an SNI that parses the same.
func FuzzParseIstioSNI(f *testing.F) {
	for _, tc := range sniCases {
		f.Add(tc.sni)
	}
	f.Fuzz(func(t *testing.T, sni string) {
		host, port, ok := parseIstioSNI(sni)
		if !ok {
			if host != "" || port != 0 {
				t.Fatalf("rejected %q but returned %q, %d", sni, host, port)
			}
			return
		}
		h2, p2, ok2 := parseIstioSNI(istioSNI(host, port))
		if !ok2 || h2 != host || p2 != port {
			t.Fatalf("round trip of %q: %q %d → %q %d %v", sni, host, port, h2, p2, ok2)
		}
	})
}
