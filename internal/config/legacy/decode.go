package legacy

import (
	"encoding/json"
	"fmt"
	"reflect"
	"sort"
	"strconv"
	"strings"
	"unicode"
)

// fieldError is one problem at a path inside a document, e.g. spec.peers[0].mtls.mode.
type fieldError struct {
	field, reason string
}

func (e fieldError) String() string { return e.field + ": " + e.reason }

// decodeStrict decodes v (a JSON value as encoding/json decodes it with UseNumber) into
// dst, a pointer to one of this package's spec structs, and returns every problem with
// its path: unknown fields, wrong JSON types, a field given in both spellings, numbers
// out of range. encoding/json's DisallowUnknownFields stops at the first problem and
// names no path, which is not enough to fix a file by.
func decodeStrict(path string, v any, dst any) []fieldError {
	var errs []fieldError
	decodeValue(path, v, reflect.ValueOf(dst).Elem(), &errs)
	return errs
}

func decodeValue(path string, v any, dst reflect.Value, errs *[]fieldError) {
	bad := func(format string, args ...any) {
		*errs = append(*errs, fieldError{path, fmt.Sprintf(format, args...)})
	}
	switch dst.Kind() {
	case reflect.Pointer:
		// Present, even as null, means set: `- mtls:` selects mTLS with its defaults.
		dst.Set(reflect.New(dst.Type().Elem()))
		if v != nil {
			decodeValue(path, v, dst.Elem(), errs)
		}
	case reflect.Struct:
		if v == nil {
			return
		}
		obj, ok := v.(map[string]any)
		if !ok {
			bad("got %s, want an object", jsonType(v))
			return
		}
		decodeStruct(path, obj, dst, errs)
	case reflect.Slice:
		if v == nil {
			return
		}
		list, ok := v.([]any)
		if !ok {
			bad("got %s, want a list", jsonType(v))
			return
		}
		out := reflect.MakeSlice(dst.Type(), len(list), len(list))
		for i, e := range list {
			decodeValue(fmt.Sprintf("%s[%d]", path, i), e, out.Index(i), errs)
		}
		dst.Set(out)
	case reflect.Map: // map[string]string
		if v == nil {
			return
		}
		obj, ok := v.(map[string]any)
		if !ok {
			bad("got %s, want a map of strings", jsonType(v))
			return
		}
		out := reflect.MakeMapWithSize(dst.Type(), len(obj))
		for _, k := range sortedKeys(obj) {
			s, ok := obj[k].(string)
			if !ok {
				*errs = append(*errs, fieldError{path + "[" + k + "]", fmt.Sprintf("got %s, want a string (quote it)", jsonType(obj[k]))})
				continue
			}
			out.SetMapIndex(reflect.ValueOf(k), reflect.ValueOf(s))
		}
		dst.Set(out)
	case reflect.String:
		if v == nil {
			return
		}
		s, ok := v.(string)
		if !ok {
			bad("got %s, want a string", jsonType(v))
			return
		}
		dst.SetString(s)
	case reflect.Bool:
		if v == nil {
			return
		}
		b, ok := v.(bool)
		if !ok {
			bad("got %s, want true or false", jsonType(v))
			return
		}
		dst.SetBool(b)
	case reflect.Uint32:
		if v == nil {
			return
		}
		n, ok := v.(json.Number)
		if !ok {
			bad("got %s, want a number", jsonType(v))
			return
		}
		u, err := strconv.ParseUint(n.String(), 10, 32)
		if err != nil {
			bad("%s is not a whole number from 0 to 4294967295", n)
			return
		}
		dst.SetUint(u)
	default:
		// Only the kinds above appear in types.go; reaching this is a bug in this package.
		panic(fmt.Sprintf("legacy: cannot decode into %s", dst.Type()))
	}
}

func decodeStruct(path string, obj map[string]any, dst reflect.Value, errs *[]fieldError) {
	t := dst.Type()
	byName := map[string]int{}
	var names []string
	for i := range t.NumField() {
		name, _, _ := strings.Cut(t.Field(i).Tag.Get("json"), ",")
		byName[name] = i
		byName[snakeCase(name)] = i
		names = append(names, name)
	}
	given := map[int]string{}
	for _, k := range sortedKeys(obj) {
		p := joinField(path, k)
		i, ok := byName[k]
		if !ok {
			*errs = append(*errs, fieldError{p, fmt.Sprintf("unknown field %q; want one of %s", k, strings.Join(names, ", "))})
			continue
		}
		if prev, dup := given[i]; dup {
			*errs = append(*errs, fieldError{p, fmt.Sprintf("given twice, also as %q", prev)})
			continue
		}
		given[i] = k
		decodeValue(p, obj[k], dst.Field(i), errs)
	}
}

func joinField(path, k string) string {
	if path == "" {
		return k
	}
	return path + "." + k
}

// snakeCase turns a JSON name into the proto field name: jwksUri → jwks_uri.
func snakeCase(s string) string {
	var b strings.Builder
	for _, r := range s {
		if unicode.IsUpper(r) {
			b.WriteByte('_')
			r = unicode.ToLower(r)
		}
		b.WriteRune(r)
	}
	return b.String()
}

func sortedKeys[V any](m map[string]V) []string {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	return keys
}

func jsonType(v any) string {
	switch v.(type) {
	case nil:
		return "null"
	case string:
		return "a string"
	case bool:
		return "a boolean"
	case json.Number, float64:
		return "a number"
	case []any:
		return "a list"
	case map[string]any:
		return "an object"
	}
	return fmt.Sprintf("%T", v)
}
