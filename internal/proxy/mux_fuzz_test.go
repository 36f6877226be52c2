package proxy

import (
	"bufio"
	"bytes"
	"strings"
	"testing"

	"golang.org/x/net/http2/hpack"
)

// muxFields decodes the fuzz input: fields as "name\x00value" separated by '\n'.
func muxFields(in string) []hpack.HeaderField {
	var out []hpack.HeaderField
	for line := range strings.SplitSeq(in, "\n") {
		name, value, _ := strings.Cut(line, "\x00")
		out = append(out, hpack.HeaderField{Name: name, Value: value})
	}
	return out
}

// FuzzBuildMuxHead: whatever a peer sidecar sends in a HEADERS frame, an accepted
// request becomes an HTTP/1.1 head that parses back to the same request line, with
// exactly the fields it was given (and Host from :authority): no request-line or
// header injection, no framing the app would read differently.
func FuzzBuildMuxHead(f *testing.F) {
	for _, s := range []string{
		":method\x00GET\n:scheme\x00https\n:authority\x00echo\n:path\x00/a?b=c\nx-a\x00v",
		":method\x00POST\n:scheme\x00https\n:path\x00/\ncontent-length\x0010",
		":method\x00GET\n:scheme\x00https\n:path\x00/a b\n",
		":method\x00CONNECT\n:authority\x00x:1",
		":method\x00OPTIONS\n:scheme\x00http\n:path\x00*\nte\x00trailers\nhost\x00h",
		":method\x00GET\n:scheme\x00http\n:path\x00/\ntransfer-encoding\x00chunked",
	} {
		f.Add(s, false)
		f.Add(s, true)
	}
	f.Fuzz(func(t *testing.T, in string, hasBody bool) {
		fields := muxFields(in)
		var h head
		h.reset()
		if err := buildMuxHead(&h, fields, hasBody); err != nil {
			return
		}
		var buf bytes.Buffer
		bw := bufio.NewWriter(&buf)
		extra := ""
		if h.chunked {
			extra = "transfer-encoding: chunked\r\n"
		}
		writeHead(bw, &h, nil, extra)
		bw.Flush() //nolint:errcheck // bytes.Buffer
		var back head
		back.reset()
		if err := readHead(bufio.NewReader(bytes.NewReader(buf.Bytes())), &back, true); err != nil {
			t.Fatalf("accepted fields %q became an HTTP/1.1 head that does not parse: %v\n%s", in, err, buf.String())
		}
		if string(back.method()) != string(h.method()) || string(back.target()) != string(h.target()) {
			t.Fatalf("request line %q %q came back as %q %q", h.method(), h.target(), back.method(), back.target())
		}
		want := len(h.hdrs)
		if extra != "" {
			want++
		}
		if len(back.hdrs) != want {
			t.Fatalf("%d fields written, %d read back from %q", want, len(back.hdrs), buf.String())
		}
		for i, f := range h.hdrs {
			b := back.hdrs[i]
			if string(back.b(b.name)) != string(h.b(f.name)) || string(back.b(b.value)) != strings.Trim(string(h.b(f.value)), " \t") {
				t.Fatalf("field %q: %q came back as %q: %q", h.b(f.name), h.b(f.value), back.b(b.name), back.b(b.value))
			}
		}
		if back.contentLength != h.contentLength || back.chunked != h.chunked {
			t.Fatalf("framing changed: length %d→%d chunked %v→%v", h.contentLength, back.contentLength, h.chunked, back.chunked)
		}
		if !hasBody && (back.chunked || back.contentLength > 0) {
			t.Fatalf("a request without a body announces one: %q", buf.String())
		}
	})
}
