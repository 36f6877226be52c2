package accesslog

import (
	"fmt"
	"strconv"
)

// FormatError is a rejected access-log format: it names what is wrong and where, so a
// person can fix meshConfig.accessLogFormat without guessing. Callers that need the
// details use errors.As.
type FormatError struct {
	// Key is the JSON key path ("a.b") whose value is wrong; empty for TEXT formats.
	Key string
	// Pos is the byte offset in the format string (or in the JSON value) where the
	// problem starts; -1 when it is about the document as a whole.
	Pos int
	// Operator is the command operator as written, e.g. "%FOO%"; empty if none.
	Operator string
	// Reason says what is wrong.
	Reason string
}

func (e *FormatError) Error() string {
	b := []byte("access log format: ")
	if e.Key != "" {
		b = append(b, "key "...)
		b = strconv.AppendQuote(b, e.Key)
		b = append(b, ": "...)
	}
	if e.Pos >= 0 {
		b = fmt.Appendf(b, "position %d: ", e.Pos)
	}
	if e.Operator != "" {
		b = append(b, "command operator "...)
		b = strconv.AppendQuote(b, e.Operator)
		b = append(b, ": "...)
	}
	return string(append(b, e.Reason...))
}
