package proxy

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"io"
	"net/http"
	"strconv"
)

// The lean HTTP/1.1 path: request and response heads are parsed into one reusable
// buffer per connection (no header maps), forwarded nearly verbatim, and bodies are
// streamed between pooled bufio buffers by their framing (Content-Length, chunked, or
// until close). This is what keeps a request's cost near nginx's: no goroutine per
// request, no per-header allocation.

const (
	maxHeadBytes = 64 << 10
	maxHeaders   = 128
	maxChunkLine = 4096
)

var (
	errHeadTooLarge = errors.New("HTTP head too large")
	errBadHead      = errors.New("malformed HTTP head")
	errBadChunk     = errors.New("malformed chunked body")
)

type span struct{ s, e int32 }

type hfield struct{ name, value span }

// head is one parsed HTTP/1.x request or response head. It implements HeaderGetter; the
// values it returns are only valid until the next readHead.
type head struct {
	buf   []byte
	first [3]span // request: method, target, proto; response: proto, status, reason
	hdrs  []hfield

	contentLength int64 // -1 when absent
	chunked       bool
	close         bool // the sender will close after this message
	upgrade       bool
	expect100     bool
	status        int
}

func (h *head) reset() {
	h.buf = h.buf[:0]
	h.hdrs = h.hdrs[:0]
	h.contentLength = -1
	h.chunked, h.close, h.upgrade, h.expect100 = false, false, false, false
	h.status = 0
}

func (h *head) b(s span) []byte { return h.buf[s.s:s.e] }

func (h *head) method() []byte { return h.b(h.first[0]) }
func (h *head) target() []byte { return h.b(h.first[1]) }

// Get implements HeaderGetter (first value, case-insensitive name).
func (h *head) Get(name string) string {
	if v, ok := h.lookup(name); ok {
		return string(v)
	}
	return ""
}

// Each implements HeaderGetter.
func (h *head) Each(fn func(name, value string)) {
	for _, f := range h.hdrs {
		fn(string(h.b(f.name)), string(h.b(f.value)))
	}
}

func (h *head) lookup(name string) ([]byte, bool) {
	for _, f := range h.hdrs {
		if equalFoldASCII(h.b(f.name), name) {
			return h.b(f.value), true
		}
	}
	return nil, false
}

func equalFoldASCII(b []byte, s string) bool {
	if len(b) != len(s) {
		return false
	}
	for i := 0; i < len(b); i++ {
		x, y := b[i], s[i]
		if x == y {
			continue
		}
		if 'A' <= x && x <= 'Z' {
			x += 'a' - 'A'
		}
		if 'A' <= y && y <= 'Z' {
			y += 'a' - 'A'
		}
		if x != y {
			return false
		}
	}
	return true
}

// readLine appends one line (without its CR LF) to h.buf and returns its span. Lines
// longer than the reader's buffer are accumulated.
func (h *head) readLine(br *bufio.Reader) (span, error) {
	start := len(h.buf)
	for {
		frag, err := br.ReadSlice('\n')
		h.buf = append(h.buf, frag...)
		if len(h.buf) > maxHeadBytes {
			return span{}, errHeadTooLarge
		}
		if err == nil {
			break
		}
		if errors.Is(err, bufio.ErrBufferFull) {
			continue
		}
		if errors.Is(err, io.EOF) && len(h.buf) > start {
			return span{}, io.ErrUnexpectedEOF
		}
		return span{}, err
	}
	end := len(h.buf) - 1 // drop '\n'
	if end > start && h.buf[end-1] == '\r' {
		end--
	}
	h.buf = h.buf[:end]
	return span{int32(start), int32(end)}, nil
}

// readHead reads and parses one message head. io.EOF means the peer closed cleanly
// before sending anything.
func readHead(br *bufio.Reader, h *head, isRequest bool) error {
	h.reset()
	first, err := h.readLine(br)
	if err != nil {
		return err
	}
	if first.s == first.e && isRequest {
		// RFC 9112 §2.2: ignore one empty line before a request line.
		h.reset()
		if first, err = h.readLine(br); err != nil {
			return err
		}
	}
	if err := h.parseFirst(first, isRequest); err != nil {
		return err
	}
	for {
		ln, err := h.readLine(br)
		if err != nil {
			if errors.Is(err, io.EOF) {
				return io.ErrUnexpectedEOF
			}
			return err
		}
		if ln.s == ln.e {
			break
		}
		if len(h.hdrs) == maxHeaders {
			return errHeadTooLarge
		}
		line := h.b(ln)
		if line[0] == ' ' || line[0] == '\t' {
			return fmt.Errorf("%w: obsolete header line folding", errBadHead)
		}
		colon := bytes.IndexByte(line, ':')
		if colon <= 0 || !isToken(line[:colon]) {
			return fmt.Errorf("%w: bad header name", errBadHead)
		}
		vs, ve := ln.s+int32(colon)+1, ln.e
		for vs < ve && (h.buf[vs] == ' ' || h.buf[vs] == '\t') {
			vs++
		}
		for ve > vs && (h.buf[ve-1] == ' ' || h.buf[ve-1] == '\t') {
			ve--
		}
		h.hdrs = append(h.hdrs, hfield{name: span{ln.s, ln.s + int32(colon)}, value: span{vs, ve}})
	}
	return h.parseFraming(isRequest)
}

func (h *head) parseFirst(ln span, isRequest bool) error {
	line := h.b(ln)
	sp1 := bytes.IndexByte(line, ' ')
	if sp1 <= 0 {
		return fmt.Errorf("%w: bad first line", errBadHead)
	}
	if isRequest {
		sp2 := bytes.LastIndexByte(line, ' ')
		if sp2 <= sp1+1 || !isToken(line[:sp1]) {
			return fmt.Errorf("%w: bad request line", errBadHead)
		}
		target, proto := line[sp1+1:sp2], line[sp2+1:]
		if bytes.ContainsAny(target, " \t\x00") {
			return fmt.Errorf("%w: bad request target", errBadHead)
		}
		switch string(proto) {
		case "HTTP/1.1":
		case "HTTP/1.0":
			h.close = true // unless keep-alive, below
		default:
			return fmt.Errorf("%w: unsupported protocol version", errBadHead)
		}
		h.first = [3]span{{ln.s, ln.s + int32(sp1)}, {ln.s + int32(sp1) + 1, ln.s + int32(sp2)}, {ln.s + int32(sp2) + 1, ln.e}}
		return nil
	}
	proto := line[:sp1]
	rest := line[sp1+1:]
	if len(rest) < 3 || (len(rest) > 3 && rest[3] != ' ') {
		return fmt.Errorf("%w: bad status line", errBadHead)
	}
	code, err := strconv.Atoi(string(rest[:3]))
	if err != nil || code < 100 || code > 999 {
		return fmt.Errorf("%w: bad status code", errBadHead)
	}
	switch string(proto) {
	case "HTTP/1.1":
	case "HTTP/1.0":
		h.close = true
	default:
		return fmt.Errorf("%w: unsupported protocol version", errBadHead)
	}
	h.status = code
	h.first = [3]span{{ln.s, ln.s + int32(sp1)}, {ln.s + int32(sp1) + 1, ln.s + int32(sp1) + 4}, {ln.s + int32(sp1) + 4, ln.e}}
	return nil
}

func (h *head) parseFraming(isRequest bool) error {
	teSeen := false
	for _, f := range h.hdrs {
		name, v := h.b(f.name), h.b(f.value)
		switch {
		case equalFoldASCII(name, "content-length"):
			n, err := parseContentLength(v)
			if err != nil || (h.contentLength >= 0 && n != h.contentLength) {
				return fmt.Errorf("%w: bad or conflicting Content-Length", errBadHead)
			}
			h.contentLength = n
		case equalFoldASCII(name, "transfer-encoding"):
			teSeen = true
			last := v
			if i := bytes.LastIndexByte(v, ','); i >= 0 {
				last = bytes.TrimSpace(v[i+1:])
			}
			h.chunked = equalFoldASCII(last, "chunked")
			if isRequest && !h.chunked {
				return fmt.Errorf("%w: request Transfer-Encoding must end in chunked", errBadHead)
			}
		case equalFoldASCII(name, "connection"):
			for tok := range bytes.SplitSeq(v, []byte{','}) {
				tok = bytes.TrimSpace(tok)
				switch {
				case equalFoldASCII(tok, "close"):
					h.close = true
				case equalFoldASCII(tok, "keep-alive"):
					h.close = false
				case equalFoldASCII(tok, "upgrade"):
					h.upgrade = true
				}
			}
		case isRequest && equalFoldASCII(name, "expect"):
			h.expect100 = equalFoldASCII(v, "100-continue")
		}
	}
	if teSeen {
		if isRequest && h.contentLength >= 0 {
			// Both framings at once is the request-smuggling shape: refuse it.
			return fmt.Errorf("%w: both Transfer-Encoding and Content-Length", errBadHead)
		}
		h.contentLength = -1
		if !h.chunked {
			h.close = true // response delimited by close
		}
	}
	return nil
}

func parseContentLength(v []byte) (int64, error) {
	if len(v) == 0 || len(v) > 18 {
		return 0, errBadHead
	}
	var n int64
	for _, c := range v {
		if c < '0' || c > '9' {
			return 0, errBadHead
		}
		n = n*10 + int64(c-'0')
	}
	return n, nil
}

// isToken reports whether b is an RFC 9110 token (method, header name).
func isToken(b []byte) bool {
	if len(b) == 0 {
		return false
	}
	for _, c := range b {
		if c <= ' ' || c >= 0x7f || bytes.IndexByte([]byte(`"(),/:;<=>?@[\]{}`), c) >= 0 {
			return false
		}
	}
	return true
}

// writeHead writes h's first line and headers to bw, leaving out headers skip matches
// and adding extra (pre-formatted "Name: value\r\n" lines).
func writeHead(bw *bufio.Writer, h *head, skip func(name []byte) bool, extra string) {
	bw.Write(h.buf[h.first[0].s:h.first[2].e]) //nolint:errcheck // bufio keeps the first error for Flush
	bw.WriteString("\r\n")                     //nolint:errcheck
	for _, f := range h.hdrs {
		if skip != nil && skip(h.b(f.name)) {
			continue
		}
		bw.Write(h.buf[f.name.s:f.value.e]) //nolint:errcheck
		bw.WriteString("\r\n")              //nolint:errcheck
	}
	bw.WriteString(extra)  //nolint:errcheck
	bw.WriteString("\r\n") //nolint:errcheck
}

// hasBody reports whether a request head announces a body.
func (h *head) hasBody() bool { return h.chunked || h.contentLength > 0 }

// responseHasBody implements RFC 9112 §6.3 for a response to a request with method m.
func (h *head) responseHasBody(reqMethod []byte) bool {
	if string(reqMethod) == "HEAD" || h.status == 204 || h.status == 304 || h.status < 200 {
		return false
	}
	return true
}

// copyN streams exactly n bytes, flushing dst whenever src would block so that a slow,
// streamed body is never held back in the buffer.
func copyN(dst *bufio.Writer, src *bufio.Reader, n int64) (int64, error) {
	var done int64
	for done < n {
		if src.Buffered() == 0 {
			if dst.Buffered() > 0 {
				if err := dst.Flush(); err != nil {
					return done, err
				}
			}
			if _, err := src.Peek(1); err != nil {
				if errors.Is(err, io.EOF) {
					err = io.ErrUnexpectedEOF
				}
				return done, err
			}
		}
		k := min(int64(src.Buffered()), n-done)
		b, _ := src.Peek(int(k))
		if _, err := dst.Write(b); err != nil {
			return done, err
		}
		src.Discard(int(k)) //nolint:errcheck // k bytes are buffered
		done += k
	}
	return done, nil
}

// copyUntilEOF streams a close-delimited body.
func copyUntilEOF(dst *bufio.Writer, src *bufio.Reader) (int64, error) {
	n, err := copyN(dst, src, 1<<62)
	if errors.Is(err, io.ErrUnexpectedEOF) {
		err = nil
	}
	return n, err
}

// copyChunked passes a chunked body through verbatim (sizes, extensions, trailers),
// parsing only enough to find its end. It returns the payload byte count.
func copyChunked(dst *bufio.Writer, src *bufio.Reader) (int64, error) {
	var total int64
	var line []byte
	for {
		var err error
		if line, err = readChunkLine(src, line[:0]); err != nil {
			return total, err
		}
		size, err := parseChunkSize(line)
		if err != nil {
			return total, err
		}
		if _, err := dst.Write(line); err != nil {
			return total, err
		}
		if size == 0 {
			// Trailer section, ended by an empty line.
			for {
				if line, err = readChunkLine(src, line[:0]); err != nil {
					return total, err
				}
				if _, err := dst.Write(line); err != nil {
					return total, err
				}
				if isEmptyLine(line) {
					return total, nil
				}
			}
		}
		n, err := copyN(dst, src, size)
		total += n
		if err != nil {
			return total, err
		}
		if line, err = readChunkLine(src, line[:0]); err != nil {
			return total, err
		}
		if !isEmptyLine(line) {
			return total, errBadChunk
		}
		if _, err := dst.Write(line); err != nil {
			return total, err
		}
	}
}

func isEmptyLine(l []byte) bool { return string(l) == "\r\n" || string(l) == "\n" }

func readChunkLine(src *bufio.Reader, buf []byte) ([]byte, error) {
	for {
		frag, err := src.ReadSlice('\n')
		buf = append(buf, frag...)
		if len(buf) > maxChunkLine {
			return nil, errBadChunk
		}
		if err == nil {
			return buf, nil
		}
		if !errors.Is(err, bufio.ErrBufferFull) {
			if errors.Is(err, io.EOF) {
				err = io.ErrUnexpectedEOF
			}
			return nil, err
		}
	}
}

// parseChunkSize reads the hex size at the start of a chunk line (extensions after ';'
// are passed through untouched).
func parseChunkSize(line []byte) (int64, error) {
	var n int64
	digits := 0
	for _, c := range line {
		var d byte
		switch {
		case '0' <= c && c <= '9':
			d = c - '0'
		case 'a' <= c && c <= 'f':
			d = c - 'a' + 10
		case 'A' <= c && c <= 'F':
			d = c - 'A' + 10
		default:
			if digits == 0 || (c != ';' && c != '\r' && c != '\n' && c != ' ' && c != '\t') {
				return 0, errBadChunk
			}
			return n, nil
		}
		digits++
		if digits > 15 {
			return 0, errBadChunk
		}
		n = n<<4 | int64(d)
	}
	return 0, errBadChunk
}

// writeInt writes n in decimal into bw's free space: strconv.Itoa allocates above 99,
// and every status code is.
func writeInt(bw *bufio.Writer, n int) {
	bw.Write(strconv.AppendInt(bw.AvailableBuffer(), int64(n), 10)) //nolint:errcheck // bufio keeps the first error for Flush
}

// simpleResponse writes a complete small response the proxy itself generates.
func simpleResponse(bw *bufio.Writer, status int, body string, closeConn bool) error {
	bw.WriteString("HTTP/1.1 ") //nolint:errcheck
	writeInt(bw, status)
	bw.WriteString(" ")                            //nolint:errcheck
	bw.WriteString(statusText(status))             //nolint:errcheck
	bw.WriteString("\r\ncontent-type: text/plain") //nolint:errcheck
	bw.WriteString("\r\ncontent-length: ")         //nolint:errcheck
	writeInt(bw, len(body))
	if closeConn {
		bw.WriteString("\r\nconnection: close") //nolint:errcheck
	}
	bw.WriteString("\r\n\r\n") //nolint:errcheck
	bw.WriteString(body)       //nolint:errcheck
	return bw.Flush()
}

func statusText(code int) string {
	switch code {
	case 400:
		return "Bad Request"
	case 401:
		return "Unauthorized"
	case 403:
		return "Forbidden"
	case 431:
		return "Request Header Fields Too Large"
	case 502:
		return "Bad Gateway"
	case 503:
		return "Service Unavailable"
	}
	return http.StatusText(code)
}
