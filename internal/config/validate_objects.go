package config

import (
	"fmt"

	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/reflect/protoreflect"
	meshv1alpha1 "istio.io/api/mesh/v1alpha1"
)

// ValidateObjects validates objects that arrive already decoded — from the control
// plane's push rather than from YAML — with the checks the Loader applies after
// decoding: metadata names, each kind's webhook validation, references into mesh (nil
// means Istio's defaults) and duplicates. What decoding checks in YAML it checks on the
// messages: every enum value must be one the API defines and no field may be unknown
// to this build (a newer control plane's field could narrow a policy; ignoring it
// would widen it, so it fails closed). Lists given empty cannot be told from absent
// ones in a message and are not reported. The error is Problems, each naming the
// object's Source, kind, name and field; mesh itself is not validated.
func ValidateObjects(objs []*Object, mesh *meshv1alpha1.MeshConfig) error {
	if mesh == nil {
		mesh = DefaultMeshConfig()
	}
	var problems, warnings []Problem
	first := map[string]*Object{}
	for _, o := range objs {
		r := &reporter{base: Problem{Source: o.Source, Kind: string(o.Kind), Namespace: o.Namespace, Name: o.Name}, problems: &problems, warnings: &warnings}
		if !validateEnvelope(r, o) {
			continue
		}
		before := len(problems)
		checkMessage(r, "spec", o.Spec.ProtoReflect())
		if len(problems) > before {
			// The webhook checks assume values the API defines.
			continue
		}
		validateObject(r, o, nil, mesh)
		key := string(o.Kind) + " " + o.Key()
		if prev, dup := first[key]; dup {
			r.errorf("metadata.name", "duplicate %s %s: already defined at %s", o.Kind, o.Key(), prev.Source)
			continue
		}
		first[key] = o
	}
	if len(problems) > 0 {
		return Problems(problems)
	}
	return nil
}

// validateEnvelope checks what the Loader's envelope checks give a decoded object:
// a known kind with a spec of its type, and valid names.
func validateEnvelope(r *reporter, o *Object) bool {
	var want protoreflect.FullName
	for _, ki := range kinds {
		if ki.kind == o.Kind {
			want = proto.MessageName(ki.new())
			break
		}
	}
	ok := true
	switch {
	case want == "":
		r.errorf("kind", "%q is not a kind meshguard reads", o.Kind)
		return false
	case o.Spec == nil || !o.Spec.ProtoReflect().IsValid():
		r.errorf("spec", "missing")
		return false
	case proto.MessageName(o.Spec) != want:
		r.errorf("spec", "is a %s, want %s", proto.MessageName(o.Spec), want)
		return false
	}
	if o.Name == "" {
		r.errorf("metadata.name", "missing; every object needs a name")
		ok = false
	} else if !isDNS1123Subdomain(o.Name) {
		r.errorf("metadata.name", "%q is not a valid name: lower-case letters, digits, '-' and '.', at most 253 characters", o.Name)
		ok = false
	}
	if o.Namespace == "" {
		r.errorf("metadata.namespace", "missing; a decoded object must name its namespace")
		ok = false
	} else if !isDNS1123Label(o.Namespace) {
		r.errorf("metadata.namespace", "%q is not a valid namespace: lower-case letters, digits and '-', at most 63 characters", o.Namespace)
		ok = false
	}
	return ok
}

// checkMessage reports unknown fields and enum values the API does not define, with
// the path of each, as the strict YAML decoder reports them.
func checkMessage(r *reporter, path string, m protoreflect.Message) {
	if len(m.GetUnknown()) > 0 {
		r.errorf(path, "has fields this meshguard does not know (a newer API?); refusing rather than ignoring them")
	}
	m.Range(func(fd protoreflect.FieldDescriptor, v protoreflect.Value) bool {
		p := path + "." + fd.JSONName()
		switch {
		case fd.IsList():
			l := v.List()
			for i := range l.Len() {
				checkValue(r, idx(p, i), fd, l.Get(i))
			}
		case fd.IsMap():
			v.Map().Range(func(k protoreflect.MapKey, mv protoreflect.Value) bool {
				checkValue(r, fmt.Sprintf("%s[%v]", p, k.Interface()), fd.MapValue(), mv)
				return true
			})
		default:
			checkValue(r, p, fd, v)
		}
		return true
	})
}

func checkValue(r *reporter, path string, fd protoreflect.FieldDescriptor, v protoreflect.Value) {
	switch fd.Kind() {
	case protoreflect.EnumKind:
		if fd.Enum().Values().ByNumber(v.Enum()) == nil {
			r.errorf(path, "enum value %d is not one %s defines", v.Enum(), fd.Enum().FullName())
		}
	case protoreflect.MessageKind, protoreflect.GroupKind:
		checkMessage(r, path, v.Message())
	}
}
