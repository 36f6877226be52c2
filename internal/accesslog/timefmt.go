package accesslog

import (
	"strconv"
	"time"
)

// timeFormat is a compiled strftime-style START_TIME format. Envoy formats with
// absl::FormatTime in UTC and adds %s (epoch seconds) and %f / %1f…%9f (fractional
// seconds, 9 digits by default, truncated); this supports the specifiers people use in
// access logs and rejects the rest at compile time rather than printing garbage.
type timeFormat []timeItem

type timeItem struct {
	lit  string // literal text when verb == 0
	verb byte
	n    int // digits for 'f' and the E<n>S form
}

// parseTimeFormat compiles f. Error positions are offsets into f.
func parseTimeFormat(f string) (timeFormat, error) {
	var tf timeFormat
	lit := []byte{}
	flush := func() {
		if len(lit) > 0 {
			tf = append(tf, timeItem{lit: string(lit)})
			lit = lit[:0]
		}
	}
	for i := 0; i < len(f); i++ {
		if f[i] != '%' {
			lit = append(lit, f[i])
			continue
		}
		start := i
		i++
		if i >= len(f) {
			return nil, &FormatError{Pos: start, Reason: "START_TIME format ends with a lone '%'"}
		}
		c := f[i]
		switch {
		case c == '%':
			lit = append(lit, '%')
			continue
		case c == 'n':
			lit = append(lit, '\n')
			continue
		case c == 't':
			lit = append(lit, '\t')
			continue
		case c == 'f':
			flush()
			tf = append(tf, timeItem{verb: 'f', n: 9})
			continue
		case c >= '1' && c <= '9' && i+1 < len(f) && f[i+1] == 'f':
			flush()
			tf = append(tf, timeItem{verb: 'f', n: int(c - '0')})
			i++
			continue
		case c == 'E' && i+2 < len(f) && f[i+1] >= '0' && f[i+1] <= '9' && f[i+2] == 'S':
			// absl's %E<n>S: seconds with n fractional digits.
			flush()
			tf = append(tf, timeItem{verb: 'S', n: int(f[i+1] - '0')})
			i += 2
			continue
		case c == 'E' && i+1 < len(f) && f[i+1] == 'z':
			flush()
			tf = append(tf, timeItem{verb: 'Z' + 1}) // "+00:00", see appendTime
			i++
			continue
		}
		if !isTimeVerb(c) {
			return nil, &FormatError{Pos: start, Reason: "unsupported START_TIME specifier " + strconv.Quote(f[start:i+1])}
		}
		flush()
		tf = append(tf, timeItem{verb: c})
	}
	flush()
	return tf, nil
}

func isTimeVerb(c byte) bool {
	switch c {
	case 'Y', 'y', 'm', 'd', 'e', 'H', 'I', 'M', 'S', 'p', 'j', 'a', 'A', 'b', 'h', 'B',
		'Z', 'z', 's', 'T', 'D', 'F', 'R', 'u', 'w':
		return true
	}
	return false
}

func appendPad(dst []byte, v, width int) []byte {
	var buf [20]byte
	b := strconv.AppendInt(buf[:0], int64(v), 10)
	for i := len(b); i < width; i++ {
		dst = append(dst, '0')
	}
	return append(dst, b...)
}

func appendFrac(dst []byte, ns, digits int) []byte {
	var buf [9]byte
	for i := 8; i >= 0; i-- {
		buf[i] = byte('0' + ns%10)
		ns /= 10
	}
	return append(dst, buf[:digits]...)
}

// appendTime formats t in UTC, as Envoy does for access logs.
func (tf timeFormat) appendTime(dst []byte, t time.Time) []byte {
	t = t.UTC()
	for _, it := range tf {
		switch it.verb {
		case 0:
			dst = append(dst, it.lit...)
		case 'Y':
			dst = appendPad(dst, t.Year(), 4)
		case 'y':
			dst = appendPad(dst, t.Year()%100, 2)
		case 'm':
			dst = appendPad(dst, int(t.Month()), 2)
		case 'd':
			dst = appendPad(dst, t.Day(), 2)
		case 'e':
			if t.Day() < 10 {
				dst = append(dst, ' ')
			}
			dst = strconv.AppendInt(dst, int64(t.Day()), 10)
		case 'H':
			dst = appendPad(dst, t.Hour(), 2)
		case 'I':
			h := t.Hour() % 12
			if h == 0 {
				h = 12
			}
			dst = appendPad(dst, h, 2)
		case 'M':
			dst = appendPad(dst, t.Minute(), 2)
		case 'S':
			dst = appendPad(dst, t.Second(), 2)
			if it.n > 0 {
				dst = append(dst, '.')
				dst = appendFrac(dst, t.Nanosecond(), it.n)
			}
		case 'p':
			if t.Hour() < 12 {
				dst = append(dst, "AM"...)
			} else {
				dst = append(dst, "PM"...)
			}
		case 'j':
			dst = appendPad(dst, t.YearDay(), 3)
		case 'a':
			dst = append(dst, t.Weekday().String()[:3]...)
		case 'A':
			dst = append(dst, t.Weekday().String()...)
		case 'b', 'h':
			dst = append(dst, t.Month().String()[:3]...)
		case 'B':
			dst = append(dst, t.Month().String()...)
		case 'Z':
			dst = append(dst, "UTC"...)
		case 'z':
			dst = append(dst, "+0000"...)
		case 'Z' + 1:
			dst = append(dst, "+00:00"...)
		case 's':
			dst = strconv.AppendInt(dst, t.Unix(), 10)
		case 'f':
			dst = appendFrac(dst, t.Nanosecond(), it.n)
		case 'T':
			dst = t.AppendFormat(dst, "15:04:05")
		case 'D':
			dst = t.AppendFormat(dst, "01/02/06")
		case 'F':
			dst = appendPad(dst, t.Year(), 4)
			dst = t.AppendFormat(dst, "-01-02")
		case 'R':
			dst = t.AppendFormat(dst, "15:04")
		case 'u':
			wd := int(t.Weekday())
			if wd == 0 {
				wd = 7
			}
			dst = strconv.AppendInt(dst, int64(wd), 10)
		case 'w':
			dst = strconv.AppendInt(dst, int64(t.Weekday()), 10)
		}
	}
	return dst
}
