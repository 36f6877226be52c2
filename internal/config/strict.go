package config

import (
	"encoding/json"
	"fmt"
	"strings"
	"time"

	"google.golang.org/protobuf/encoding/protojson"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/reflect/protoreflect"
)

// decodeSpec decodes the JSON value v (as produced by encoding/json with UseNumber) into
// msg, strictly. Before protojson sees it, a walk over the message descriptor reports
// every unknown field, wrongly typed value and unknown enum name with its path, because
// protojson stops at the first one and names no path. It returns the paths of lists and
// objects that were given but empty ("from: []"): decoding loses that distinction and
// Istio's validation rejects some of them.
func decodeSpec(r *reporter, path string, v any, msg proto.Message) (empty map[string]bool, ok bool) {
	w := walker{r: r, empty: map[string]bool{}}
	before := len(*r.problems)
	v = w.message(path, v, msg.ProtoReflect().Descriptor())
	if len(*r.problems) > before {
		return nil, false
	}
	raw, err := json.Marshal(v)
	if err != nil {
		r.errorf(path, "cannot re-encode as JSON: %v", err)
		return nil, false
	}
	if err := (protojson.UnmarshalOptions{DiscardUnknown: false}).Unmarshal(raw, msg); err != nil {
		r.errorf(path, "%s", strings.TrimPrefix(err.Error(), "proto: "))
		return nil, false
	}
	return w.empty, true
}

type walker struct {
	r     *reporter
	empty map[string]bool
}

func jsonType(v any) string {
	switch v.(type) {
	case nil:
		return "null"
	case string:
		return "a string"
	case bool:
		return "a boolean"
	case json.Number:
		return "a number"
	case []any:
		return "a list"
	case map[string]any:
		return "an object"
	}
	return fmt.Sprintf("%T", v)
}

// wellKnown are message types protojson encodes as something other than an object; the
// walker checks only their JSON shape and leaves the rest to protojson.
var wellKnown = map[protoreflect.FullName]string{
	"google.protobuf.Duration":    "string",
	"google.protobuf.Timestamp":   "string",
	"google.protobuf.FieldMask":   "string",
	"google.protobuf.BoolValue":   "bool",
	"google.protobuf.StringValue": "string",
	"google.protobuf.BytesValue":  "string",
	"google.protobuf.Int32Value":  "number",
	"google.protobuf.UInt32Value": "number",
	"google.protobuf.Int64Value":  "number",
	"google.protobuf.UInt64Value": "number",
	"google.protobuf.FloatValue":  "number",
	"google.protobuf.DoubleValue": "number",
	"google.protobuf.Struct":      "any",
	"google.protobuf.Value":       "any",
	"google.protobuf.ListValue":   "any",
	"google.protobuf.Any":         "any",
}

// message checks v against md. It returns v, or a replacement protojson accepts where
// Istio and protojson spell a value differently (durations).
func (w *walker) message(path string, v any, md protoreflect.MessageDescriptor) any {
	if md.FullName() == "google.protobuf.Duration" {
		return w.duration(path, v)
	}
	if shape, ok := wellKnown[md.FullName()]; ok {
		w.wellKnown(path, v, shape)
		return v
	}
	obj, ok := v.(map[string]any)
	if !ok {
		w.r.errorf(path, "got %s, want an object (%s)", jsonType(v), md.Name())
		return v
	}
	if len(obj) == 0 {
		w.empty[path] = true
	}
	keys := sortedKeys(obj)
	oneofs := map[protoreflect.FullName]string{}
	fields := md.Fields()
	for _, k := range keys {
		fd := fields.ByJSONName(k)
		if fd == nil {
			fd = fields.ByTextName(k)
		}
		sub := joinField(path, k)
		if fd == nil {
			w.r.errorf(sub, "unknown field %q in %s", k, md.Name())
			continue
		}
		val := obj[k]
		if val == nil {
			continue // null means unset, as in protojson
		}
		if od := fd.ContainingOneof(); od != nil && !od.IsSynthetic() {
			if prev, dup := oneofs[od.FullName()]; dup {
				w.r.errorf(sub, "only one of %s and %s may be set", prev, k)
			}
			oneofs[od.FullName()] = k
		}
		obj[k] = w.field(sub, val, fd)
	}
	return obj
}

// duration accepts what Istio's CRDs accept, Go-style durations such as "30ms", "1h"
// or "1.5s", and rewrites them in protojson's form (seconds with an "s" suffix).
func (w *walker) duration(path string, v any) any {
	s, ok := v.(string)
	if !ok {
		w.r.errorf(path, "got %s, want a duration such as \"10s\" or \"30ms\"", jsonType(v))
		return v
	}
	d, err := time.ParseDuration(s)
	if err != nil {
		w.r.errorf(path, "invalid duration %q: want a duration such as \"10s\" or \"30ms\"", s)
		return v
	}
	sign := ""
	if d < 0 {
		sign, d = "-", -d
	}
	return fmt.Sprintf("%s%d.%09ds", sign, d/time.Second, d%time.Second)
}

func (w *walker) wellKnown(path string, v any, shape string) {
	switch shape {
	case "string":
		if _, ok := v.(string); !ok {
			w.r.errorf(path, "got %s, want a string", jsonType(v))
		}
	case "bool":
		if _, ok := v.(bool); !ok {
			w.r.errorf(path, "got %s, want true or false", jsonType(v))
		}
	case "number":
		switch v.(type) {
		case json.Number, string:
		default:
			w.r.errorf(path, "got %s, want a number", jsonType(v))
		}
	}
}

func (w *walker) field(path string, v any, fd protoreflect.FieldDescriptor) any {
	switch {
	case fd.IsMap():
		obj, ok := v.(map[string]any)
		if !ok {
			w.r.errorf(path, "got %s, want an object", jsonType(v))
			return v
		}
		if len(obj) == 0 {
			w.empty[path] = true
		}
		keys := sortedKeys(obj)
		for _, k := range keys {
			obj[k] = w.single(path+"["+k+"]", obj[k], fd.MapValue())
		}
		return obj
	case fd.IsList():
		list, ok := v.([]any)
		if !ok {
			w.r.errorf(path, "got %s, want a list", jsonType(v))
			return v
		}
		if len(list) == 0 {
			w.empty[path] = true
		}
		for i, e := range list {
			list[i] = w.single(fmt.Sprintf("%s[%d]", path, i), e, fd)
		}
		return list
	default:
		return w.single(path, v, fd)
	}
}

func (w *walker) single(path string, v any, fd protoreflect.FieldDescriptor) any {
	switch fd.Kind() {
	case protoreflect.MessageKind, protoreflect.GroupKind:
		if v == nil {
			w.r.errorf(path, "got null, want an object (%s)", fd.Message().Name())
			return v
		}
		return w.message(path, v, fd.Message())
	case protoreflect.EnumKind:
		w.enum(path, v, fd.Enum())
	case protoreflect.StringKind:
		if _, ok := v.(string); !ok {
			w.r.errorf(path, "got %s, want a string", jsonType(v))
		}
	case protoreflect.BoolKind:
		if _, ok := v.(bool); !ok {
			w.r.errorf(path, "got %s, want true or false", jsonType(v))
		}
	case protoreflect.BytesKind:
		if _, ok := v.(string); !ok {
			w.r.errorf(path, "got %s, want a base64 string", jsonType(v))
		}
	default: // numbers: protojson accepts a JSON number or a string holding one
		switch v.(type) {
		case json.Number, string:
		default:
			w.r.errorf(path, "got %s, want a number", jsonType(v))
		}
	}
	return v
}

func (w *walker) enum(path string, v any, ed protoreflect.EnumDescriptor) {
	s, ok := v.(string)
	if !ok {
		// Istio's CRD schemas declare enums as strings; a number would be accepted by
		// protojson but rejected by the API server.
		w.r.errorf(path, "got %s, want one of %s", jsonType(v), enumNames(ed))
		return
	}
	if ed.Values().ByName(protoreflect.Name(s)) == nil {
		w.r.errorf(path, "unknown value %q, want one of %s", s, enumNames(ed))
	}
}

func enumNames(ed protoreflect.EnumDescriptor) string {
	var names []string
	for i := range ed.Values().Len() {
		names = append(names, string(ed.Values().Get(i).Name()))
	}
	return strings.Join(names, ", ")
}

func joinField(path, k string) string {
	if path == "" {
		return k
	}
	return path + "." + k
}
