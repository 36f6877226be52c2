package proxy

import (
	"bufio"
	"bytes"
	"strings"
	"testing"

	"golang.org/x/net/http2"
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

// FuzzMuxHeaderBlock: whatever bytes a peer sends as a header block, split over
// HEADERS and CONTINUATION frames, the reader either fails the stream or the
// connection, or hands on a block that keeps the promises its users rely on: pseudo
// fields first, known and once each, valid lower-case names, valid values, within
// maxHeadBytes unless marked truncated.
func FuzzMuxHeaderBlock(f *testing.F) {
	enc := func(fields ...string) []byte {
		var b bytes.Buffer
		e := hpack.NewEncoder(&b)
		for i := 0; i+1 < len(fields); i += 2 {
			e.WriteField(hpack.HeaderField{Name: fields[i], Value: fields[i+1]}) //nolint:errcheck // bytes.Buffer
		}
		return b.Bytes()
	}
	f.Add(enc(":method", "GET", ":scheme", "http", ":authority", "a", ":path", "/", "x-a", "b"), uint8(0))
	f.Add(enc(":status", "200", "content-length", "3"), uint8(1))
	f.Add(enc("x-a", "b", ":path", "/"), uint8(2))
	f.Add(enc(":status", "200", ":path", "/"), uint8(0))
	f.Add(enc(":foo", "1"), uint8(0))
	f.Add(enc("X-Upper", "1"), uint8(3))
	f.Add(enc("x-a", "bad\x00value"), uint8(0))
	f.Add([]byte{0x3f, 0xe1, 0x1f}, uint8(0)) // dynamic table size update over the limit
	f.Fuzz(func(t *testing.T, block []byte, split uint8) {
		// The block goes out as HEADERS plus a CONTINUATION cut at split.
		var wire bytes.Buffer
		fw := http2.NewFramer(&wire, nil)
		cut := min(int(split), len(block))
		if err := fw.WriteHeaders(http2.HeadersFrameParam{StreamID: 1, BlockFragment: block[:cut], EndHeaders: cut == len(block), EndStream: true}); err != nil {
			t.Fatal(err)
		}
		if cut < len(block) {
			if err := fw.WriteContinuation(1, true, block[cut:]); err != nil {
				t.Fatal(err)
			}
		}
		var out bytes.Buffer
		mc := newMuxConn(nil, bufio.NewReader(&wire), bufio.NewWriter(&out), true)
		h, _, err := mc.nextFrame()
		if err != nil || h == nil {
			return // refused (a reset stream shows as the end of input: io.EOF)
		}
		if h.streamID != 1 || !h.endStream {
			t.Fatalf("stream %d endStream %v, want 1 true", h.streamID, h.endStream)
		}
		if !h.truncated && h.size > maxHeadBytes {
			t.Fatalf("%d bytes of fields accepted, limit %d", h.size, maxHeadBytes)
		}
		seen := map[string]bool{}
		for i, f := range h.fields {
			if f.IsPseudo() != (i < h.nPseudo) {
				t.Fatalf("field %d %q: pseudo fields must come first (%d of them)", i, f.Name, h.nPseudo)
			}
			if f.IsPseudo() {
				if seen[f.Name] {
					t.Fatalf("pseudo field %q twice", f.Name)
				}
				seen[f.Name] = true
				continue
			}
			if !validWireName(f.Name) || strings.ToLower(f.Name) != f.Name {
				t.Fatalf("invalid field name %q accepted", f.Name)
			}
			if strings.ContainsAny(f.Value, "\x00\r\n") {
				t.Fatalf("field %q: value %q with NUL, CR or LF accepted", f.Name, f.Value)
			}
		}
		if seen[":status"] && (seen[":method"] || seen[":path"]) {
			t.Fatalf("request and response pseudo fields mixed: %v", seen)
		}
	})
}
