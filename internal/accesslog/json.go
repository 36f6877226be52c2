package accesslog

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"slices"
	"strconv"
	"strings"
	"unicode/utf8"
)

// JSONFormat is a compiled JSON access-log format: an object whose string values are
// format strings. As with Envoy's json_format, a value that is exactly one command
// operator keeps its type (numbers stay numbers, unset values are null); any other
// value renders as a string with "-" for unset operators. Keys are written sorted, as
// Istio's JSON logs are; each entry is one line.
//
// meshguard adds keys of its own when they have something to say and the format does
// not define them itself: "policy" (the deciding policy of a denied request, "none"
// when no ALLOW policy matched), "audit_policy" and "dry_run_policy".
type JSONFormat struct {
	fields []jsonField
}

var _ Formatter = (*JSONFormat)(nil)

type jsonField struct {
	key    string
	prefix string      // `"key":` pre-encoded
	tmpl   template    // string value
	nested []jsonField // object value
	raw    []byte      // literal non-string JSON value (number, bool, null)
	kind   int
	// cond, when set, decides per entry whether the field is written (meshguard's
	// authorization keys).
	cond func(e *Entry) bool
}

const (
	jsonTemplate = iota
	jsonObject
	jsonRaw
)

// ParseJSON compiles a JSON format: a JSON object mapping keys to format strings, nested
// objects, or literal scalars. On error it returns a *FormatError naming the key and no
// Formatter.
func ParseJSON(format string) (*JSONFormat, error) {
	dec := json.NewDecoder(strings.NewReader(format))
	dec.UseNumber()
	tok, err := dec.Token()
	if err != nil {
		return nil, &FormatError{Pos: -1, Reason: "JSON format is not valid JSON: " + err.Error()}
	}
	if d, ok := tok.(json.Delim); !ok || d != '{' {
		return nil, &FormatError{Pos: -1, Reason: "JSON format must be a JSON object of key: format string"}
	}
	fields, err := parseJSONObject(dec, "")
	if err != nil {
		return nil, err
	}
	if _, err := dec.Token(); !errors.Is(err, io.EOF) {
		return nil, &FormatError{Pos: -1, Reason: "JSON format has data after its closing '}'"}
	}
	have := func(k string) bool {
		return slices.ContainsFunc(fields, func(f jsonField) bool { return f.key == k })
	}
	for _, x := range authzFields {
		if !have(x.key) {
			fields = append(fields, x)
		}
	}
	sortFields(fields)
	return &JSONFormat{fields: fields}, nil
}

// authzFields are meshguard's additions; see JSONFormat.
var authzFields = []jsonField{
	authzField("policy", "AUTHZ_POLICY", func(e *Entry) bool { return e.Authz.Denied }),
	authzField("audit_policy", "AUTHZ_AUDIT_POLICY", func(e *Entry) bool { return e.Authz.AuditPolicy != "" }),
	authzField("dry_run_policy", "AUTHZ_DRY_RUN_POLICY", func(e *Entry) bool { return e.Authz.DryRunPolicy != "" }),
}

func authzField(key, op string, cond func(e *Entry) bool) jsonField {
	fn, _ := operators[op].build("", false)
	return jsonField{key: key, prefix: jsonKey(key), kind: jsonTemplate, cond: cond,
		tmpl: template{{name: op, fn: fn}}}
}

func jsonKey(k string) string {
	return string(appendJSONString(nil, []byte(k))) + ":"
}

func sortFields(fs []jsonField) {
	slices.SortFunc(fs, func(a, b jsonField) int { return strings.Compare(a.key, b.key) })
}

func parseJSONObject(dec *json.Decoder, path string) ([]jsonField, error) {
	var fields []jsonField
	seen := map[string]bool{}
	for dec.More() {
		tok, err := dec.Token()
		if err != nil {
			return nil, &FormatError{Key: path, Pos: -1, Reason: "JSON format is not valid JSON: " + err.Error()}
		}
		key := tok.(string) // object keys are always strings
		kp := key
		if path != "" {
			kp = path + "." + key
		}
		if seen[key] {
			return nil, &FormatError{Key: kp, Pos: -1, Reason: "duplicate key"}
		}
		seen[key] = true
		f := jsonField{key: key, prefix: jsonKey(key)}
		tok, err = dec.Token()
		if err != nil {
			return nil, &FormatError{Key: kp, Pos: -1, Reason: "JSON format is not valid JSON: " + err.Error()}
		}
		switch v := tok.(type) {
		case string:
			t, err := parseTemplate(v)
			if err != nil {
				var fe *FormatError
				if errors.As(err, &fe) {
					fe.Key = kp
				}
				return nil, err
			}
			f.kind, f.tmpl = jsonTemplate, t
		case json.Delim:
			if v != '{' {
				return nil, &FormatError{Key: kp, Pos: -1, Reason: "lists are not supported; use a format string or an object"}
			}
			nested, err := parseJSONObject(dec, kp)
			if err != nil {
				return nil, err
			}
			sortFields(nested)
			f.kind, f.nested = jsonObject, nested
		case json.Number:
			f.kind, f.raw = jsonRaw, []byte(v.String())
		case bool:
			f.kind, f.raw = jsonRaw, strconv.AppendBool(nil, v)
		case nil:
			f.kind, f.raw = jsonRaw, []byte("null")
		default:
			return nil, &FormatError{Key: kp, Pos: -1, Reason: fmt.Sprintf("unsupported JSON value %v", v)}
		}
		fields = append(fields, f)
	}
	if _, err := dec.Token(); err != nil { // the closing '}'
		return nil, &FormatError{Key: path, Pos: -1, Reason: "JSON format is not valid JSON: " + err.Error()}
	}
	return fields, nil
}

// Append implements Formatter.
func (f *JSONFormat) Append(dst []byte, e *Entry) []byte {
	dst = appendJSONObject(dst, f.fields, e)
	return append(dst, '\n')
}

func appendJSONObject(dst []byte, fields []jsonField, e *Entry) []byte {
	dst = append(dst, '{')
	first := true
	for i := range fields {
		f := &fields[i]
		if f.cond != nil && !f.cond(e) {
			continue
		}
		if !first {
			dst = append(dst, ',')
		}
		first = false
		dst = append(dst, f.prefix...)
		switch f.kind {
		case jsonRaw:
			dst = append(dst, f.raw...)
		case jsonObject:
			dst = appendJSONObject(dst, f.nested, e)
		default:
			dst = appendJSONValue(dst, f.tmpl, e)
		}
	}
	return append(dst, '}')
}

// appendJSONValue renders one template value. Both paths first append the raw text to
// dst, then its escaped form after it, and move the escaped form back: no scratch
// buffer, no allocation once dst is large enough.
func appendJSONValue(dst []byte, t template, e *Entry) []byte {
	start := len(dst)
	if len(t) == 1 && t[0].fn != nil {
		s := &t[0]
		var ok bool
		dst, ok = s.appendValue(dst, e)
		switch {
		case !ok:
			return append(dst[:start], "null"...)
		case s.numeric:
			return dst
		}
	} else {
		dst = t.appendText(dst, e, false)
	}
	end := len(dst)
	dst = appendJSONString(dst, dst[start:end])
	n := copy(dst[start:], dst[end:])
	return dst[:start+n]
}

const hexDigits = "0123456789abcdef"

// appendJSONString appends s as a JSON string. Invalid UTF-8 (from byte truncation or
// hostile headers) becomes U+FFFD so every line stays valid JSON.
func appendJSONString(dst, s []byte) []byte {
	dst = append(dst, '"')
	for i := 0; i < len(s); {
		c := s[i]
		if c < utf8.RuneSelf {
			switch {
			case c == '"' || c == '\\':
				dst = append(dst, '\\', c)
			case c == '\n':
				dst = append(dst, '\\', 'n')
			case c == '\r':
				dst = append(dst, '\\', 'r')
			case c == '\t':
				dst = append(dst, '\\', 't')
			case c < 0x20 || c == 0x7f:
				dst = append(dst, '\\', 'u', '0', '0', hexDigits[c>>4], hexDigits[c&0xf])
			default:
				dst = append(dst, c)
			}
			i++
			continue
		}
		r, size := utf8.DecodeRune(s[i:])
		if r == utf8.RuneError && size == 1 {
			dst = append(dst, `\ufffd`...)
		} else {
			dst = append(dst, s[i:i+size]...)
		}
		i += size
	}
	return append(dst, '"')
}

// String implements Formatter: the format as a compact JSON object with sorted keys,
// without meshguard's implicit authorization keys.
func (f *JSONFormat) String() string {
	var b bytes.Buffer
	writeJSONFormat(&b, f.fields)
	return b.String()
}

func writeJSONFormat(b *bytes.Buffer, fields []jsonField) {
	b.WriteByte('{')
	first := true
	for i := range fields {
		f := &fields[i]
		if f.cond != nil {
			continue
		}
		if !first {
			b.WriteByte(',')
		}
		first = false
		b.WriteString(f.prefix)
		switch f.kind {
		case jsonRaw:
			b.Write(f.raw)
		case jsonObject:
			writeJSONFormat(b, f.nested)
		default:
			b.Write(appendJSONString(nil, []byte(f.tmpl.String())))
		}
	}
	b.WriteByte('}')
}
