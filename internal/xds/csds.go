package xds

// Operator status (istio.io/debug/syncz) answers with Envoy's CSDS message
// envoy.service.status.v3.ClientConfig, so that CSDS clients can decode it. Envoy's
// generated Go packages for it (envoy/service/status/v3 and envoy/admin/v3) import about
// twenty more (bootstrap, cluster, listener, route, tap, …) whose protobuf registration
// runs before main in every process of the binary, sidecars included, and cost about
// 2.6 MiB of a sidecar's start-up peak (docs/performance.md). So the few messages used are described here instead, with
// the names, numbers and types of Envoy's .proto files (csds.proto and
// config_dump_shared.proto), built into descriptors at first use and never registered
// globally, and encoded with dynamicpb. Only ClientConfig.xds_config (field 2, the
// deprecated per-type dumps) is left out: it would need Envoy's config dump messages,
// and a decoder keeps it as unknown fields.

import (
	"fmt"
	"strconv"
	"sync"

	core "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	"google.golang.org/protobuf/encoding/protowire"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/reflect/protodesc"
	"google.golang.org/protobuf/reflect/protoreflect"
	"google.golang.org/protobuf/reflect/protoregistry"
	"google.golang.org/protobuf/types/descriptorpb"
	"google.golang.org/protobuf/types/dynamicpb"
	"google.golang.org/protobuf/types/known/anypb"
	"google.golang.org/protobuf/types/known/timestamppb"
)

// configStatus is envoy.service.status.v3.ConfigStatus: the control plane's view of a
// type on a client.
type configStatus int32

const (
	configUnknown configStatus = iota
	configSynced
	configNotSent
	configStale
	configError
)

var configStatusNames = []string{"UNKNOWN", "SYNCED", "NOT_SENT", "STALE", "ERROR"}

// String is the enum value's name, or its number if it has none (as generated enums).
func (s configStatus) String() string { return enumName(configStatusNames, int32(s)) }

// clientResourceStatus is envoy.admin.v3.ClientResourceStatus: the client's view of a
// type.
type clientResourceStatus int32

const (
	clientUnknown clientResourceStatus = iota
	clientRequested
	clientDoesNotExist
	clientAcked
	clientNacked
	clientReceivedError
	clientTimeout
)

var clientResourceStatusNames = []string{"UNKNOWN", "REQUESTED", "DOES_NOT_EXIST", "ACKED", "NACKED", "RECEIVED_ERROR", "TIMEOUT"}

func (s clientResourceStatus) String() string { return enumName(clientResourceStatusNames, int32(s)) }

func enumName(names []string, n int32) string {
	if n >= 0 && int(n) < len(names) {
		return names[n]
	}
	return strconv.Itoa(int(n))
}

// clientConfig is envoy.service.status.v3.ClientConfig without the deprecated
// xds_config. Nil pointers are absent fields.
type clientConfig struct {
	Node        *core.Node
	Generic     []genericXdsConfig // generic_xds_configs
	ClientScope string
}

// genericXdsConfig is envoy.service.status.v3.ClientConfig.GenericXdsConfig.
type genericXdsConfig struct {
	TypeURL          string
	Name             string
	VersionInfo      string
	XdsConfig        *anypb.Any
	LastUpdated      *timestamppb.Timestamp
	ConfigStatus     configStatus
	ClientStatus     clientResourceStatus
	ErrorState       *updateFailureState
	IsStaticResource bool
}

// updateFailureState is envoy.admin.v3.UpdateFailureState.
type updateFailureState struct {
	FailedConfiguration *anypb.Any
	LastUpdateAttempt   *timestamppb.Timestamp
	Details             string
	VersionInfo         string
}

// csdsDescriptors are the message descriptors clientConfig is encoded with.
type csdsDescriptors struct {
	clientConfig, generic, failure protoreflect.MessageDescriptor
}

// loadCSDS builds the descriptors once per process, on the first status request or
// answer: nothing of it runs in a sidecar.
var loadCSDS = sync.OnceValues(buildCSDS)

func buildCSDS() (*csdsDescriptors, error) {
	node := (*core.Node)(nil).ProtoReflect().Descriptor()
	anyDesc := (*anypb.Any)(nil).ProtoReflect().Descriptor()
	tsDesc := (*timestamppb.Timestamp)(nil).ProtoReflect().Descriptor()

	const (
		str     = descriptorpb.FieldDescriptorProto_TYPE_STRING
		msg     = descriptorpb.FieldDescriptorProto_TYPE_MESSAGE
		enum    = descriptorpb.FieldDescriptorProto_TYPE_ENUM
		boolean = descriptorpb.FieldDescriptorProto_TYPE_BOOL
		rep     = descriptorpb.FieldDescriptorProto_LABEL_REPEATED
		opt     = descriptorpb.FieldDescriptorProto_LABEL_OPTIONAL
	)
	field := func(name string, num int32, typ descriptorpb.FieldDescriptorProto_Type, typeName protoreflect.FullName) *descriptorpb.FieldDescriptorProto {
		f := &descriptorpb.FieldDescriptorProto{Name: &name, Number: &num, Type: typ.Enum(), Label: opt.Enum()}
		if typeName != "" {
			f.TypeName = proto.String("." + string(typeName))
		}
		return f
	}
	enumOf := func(name string, values []string) *descriptorpb.EnumDescriptorProto {
		e := &descriptorpb.EnumDescriptorProto{Name: &name}
		for i, v := range values {
			e.Value = append(e.Value, &descriptorpb.EnumValueDescriptorProto{Name: proto.String(v), Number: proto.Int32(int32(i))})
		}
		return e
	}
	file := func(path, pkg string, deps ...protoreflect.FileDescriptor) *descriptorpb.FileDescriptorProto {
		f := &descriptorpb.FileDescriptorProto{Name: &path, Package: &pkg, Syntax: proto.String("proto3")}
		for _, d := range deps {
			f.Dependency = append(f.Dependency, d.Path())
		}
		return f
	}

	// envoy/admin/v3/config_dump_shared.proto, the two declarations CSDS uses.
	adminProto := file("envoy/admin/v3/config_dump_shared.proto", "envoy.admin.v3", anyDesc.ParentFile(), tsDesc.ParentFile())
	adminProto.EnumType = []*descriptorpb.EnumDescriptorProto{enumOf("ClientResourceStatus", clientResourceStatusNames)}
	adminProto.MessageType = []*descriptorpb.DescriptorProto{{
		Name: proto.String("UpdateFailureState"),
		Field: []*descriptorpb.FieldDescriptorProto{
			field("failed_configuration", 1, msg, anyDesc.FullName()),
			field("last_update_attempt", 2, msg, tsDesc.FullName()),
			field("details", 3, str, ""),
			field("version_info", 4, str, ""),
		},
	}}
	admin, err := protodesc.NewFile(adminProto, protoregistry.GlobalFiles)
	if err != nil {
		return nil, fmt.Errorf("build CSDS descriptor %s: %w", adminProto.GetName(), err)
	}

	// envoy/service/status/v3/csds.proto, ClientConfig and what it refers to.
	statusProto := file("envoy/service/status/v3/csds.proto", "envoy.service.status.v3", admin, node.ParentFile(), anyDesc.ParentFile(), tsDesc.ParentFile())
	statusProto.EnumType = []*descriptorpb.EnumDescriptorProto{enumOf("ConfigStatus", configStatusNames)}
	generics := field("generic_xds_configs", 3, msg, "envoy.service.status.v3.ClientConfig.GenericXdsConfig")
	generics.Label = rep.Enum()
	statusProto.MessageType = []*descriptorpb.DescriptorProto{{
		Name: proto.String("ClientConfig"),
		Field: []*descriptorpb.FieldDescriptorProto{
			field("node", 1, msg, node.FullName()),
			generics,
			field("client_scope", 4, str, ""),
		},
		NestedType: []*descriptorpb.DescriptorProto{{
			Name: proto.String("GenericXdsConfig"),
			Field: []*descriptorpb.FieldDescriptorProto{
				field("type_url", 1, str, ""),
				field("name", 2, str, ""),
				field("version_info", 3, str, ""),
				field("xds_config", 4, msg, anyDesc.FullName()),
				field("last_updated", 5, msg, tsDesc.FullName()),
				field("config_status", 6, enum, "envoy.service.status.v3.ConfigStatus"),
				field("client_status", 7, enum, "envoy.admin.v3.ClientResourceStatus"),
				field("error_state", 8, msg, "envoy.admin.v3.UpdateFailureState"),
				field("is_static_resource", 9, boolean, ""),
			},
		}},
	}}
	status, err := protodesc.NewFile(statusProto, withFile{admin})
	if err != nil {
		return nil, fmt.Errorf("build CSDS descriptor %s: %w", statusProto.GetName(), err)
	}
	cc := status.Messages().ByName("ClientConfig")
	return &csdsDescriptors{clientConfig: cc, generic: cc.Messages().ByName("GenericXdsConfig"), failure: admin.Messages().ByName("UpdateFailureState")}, nil
}

// withFile resolves from one file first, then the global registry, which has the
// well-known types and Envoy's core types that the binary links anyway.
type withFile struct{ f protoreflect.FileDescriptor }

func (w withFile) FindFileByPath(path string) (protoreflect.FileDescriptor, error) {
	if path == w.f.Path() {
		return w.f, nil
	}
	return protoregistry.GlobalFiles.FindFileByPath(path)
}

func (w withFile) FindDescriptorByName(name protoreflect.FullName) (protoreflect.Descriptor, error) {
	if d := w.f.Enums().ByName(name.Name()); d != nil && d.FullName() == name {
		return d, nil
	}
	if d := w.f.Messages().ByName(name.Name()); d != nil && d.FullName() == name {
		return d, nil
	}
	return protoregistry.GlobalFiles.FindDescriptorByName(name)
}

// message is c as a dynamic envoy.service.status.v3.ClientConfig.
func (c *clientConfig) message() (proto.Message, error) {
	d, err := loadCSDS()
	if err != nil {
		return nil, err
	}
	m := dynamicpb.NewMessage(d.clientConfig)
	setMessage(m, "node", c.Node)
	list := m.Mutable(d.clientConfig.Fields().ByName("generic_xds_configs")).List()
	for _, g := range c.Generic {
		gm := dynamicpb.NewMessage(d.generic)
		setString(gm, "type_url", g.TypeURL)
		setString(gm, "name", g.Name)
		setString(gm, "version_info", g.VersionInfo)
		setMessage(gm, "xds_config", g.XdsConfig)
		setMessage(gm, "last_updated", g.LastUpdated)
		gm.Set(d.generic.Fields().ByName("config_status"), protoreflect.ValueOfEnum(protoreflect.EnumNumber(g.ConfigStatus)))
		gm.Set(d.generic.Fields().ByName("client_status"), protoreflect.ValueOfEnum(protoreflect.EnumNumber(g.ClientStatus)))
		if e := g.ErrorState; e != nil {
			em := dynamicpb.NewMessage(d.failure)
			setMessage(em, "failed_configuration", e.FailedConfiguration)
			setMessage(em, "last_update_attempt", e.LastUpdateAttempt)
			setString(em, "details", e.Details)
			setString(em, "version_info", e.VersionInfo)
			gm.Set(d.generic.Fields().ByName("error_state"), protoreflect.ValueOfMessage(em))
		}
		gm.Set(d.generic.Fields().ByName("is_static_resource"), protoreflect.ValueOfBool(g.IsStaticResource))
		list.Append(protoreflect.ValueOfMessage(gm))
	}
	setString(m, "client_scope", c.ClientScope)
	return m, nil
}

// toAny is c packed as Envoy packs it: type URL
// type.googleapis.com/envoy.service.status.v3.ClientConfig.
func (c *clientConfig) toAny() (*anypb.Any, error) {
	m, err := c.message()
	if err != nil {
		return nil, err
	}
	return anypb.New(m)
}

// parseClientConfig decodes an Any holding an envoy.service.status.v3.ClientConfig.
func parseClientConfig(a *anypb.Any) (*clientConfig, error) {
	d, err := loadCSDS()
	if err != nil {
		return nil, err
	}
	m := dynamicpb.NewMessage(d.clientConfig)
	// The node is decoded by its generated type, not dynamically: protobuf's reflective
	// decoder panics on some malformed map entries, and the node's metadata is a Struct,
	// made of maps. Other fields hold no maps. Merge keeps the generated node in place.
	node, nodeField := new(core.Node), d.clientConfig.Fields().ByName("node")
	m.Set(nodeField, protoreflect.ValueOfMessage(node.ProtoReflect()))
	// UnmarshalTo refuses an Any of any other type, as it would for Envoy's own type.
	if err := anypb.UnmarshalTo(a, m, proto.UnmarshalOptions{Merge: true}); err != nil {
		return nil, fmt.Errorf("decode %s: %w", d.clientConfig.FullName(), err)
	}
	c := &clientConfig{ClientScope: getString(m, "client_scope")}
	if hasField(a.GetValue(), nodeField.Number()) {
		c.Node = node
	}
	list := m.Get(d.clientConfig.Fields().ByName("generic_xds_configs")).List()
	for i := range list.Len() {
		gm := list.Get(i).Message()
		g := genericXdsConfig{
			TypeURL:          getString(gm, "type_url"),
			Name:             getString(gm, "name"),
			VersionInfo:      getString(gm, "version_info"),
			XdsConfig:        getMessage(gm, "xds_config", new(anypb.Any)),
			LastUpdated:      getMessage(gm, "last_updated", new(timestamppb.Timestamp)),
			ConfigStatus:     configStatus(gm.Get(d.generic.Fields().ByName("config_status")).Enum()),
			ClientStatus:     clientResourceStatus(gm.Get(d.generic.Fields().ByName("client_status")).Enum()),
			IsStaticResource: gm.Get(d.generic.Fields().ByName("is_static_resource")).Bool(),
		}
		if fd := d.generic.Fields().ByName("error_state"); gm.Has(fd) {
			em := gm.Get(fd).Message()
			g.ErrorState = &updateFailureState{
				FailedConfiguration: getMessage(em, "failed_configuration", new(anypb.Any)),
				LastUpdateAttempt:   getMessage(em, "last_update_attempt", new(timestamppb.Timestamp)),
				Details:             getString(em, "details"),
				VersionInfo:         getString(em, "version_info"),
			}
		}
		c.Generic = append(c.Generic, g)
	}
	return c, nil
}

// hasField reports whether the top level of the encoded message b has field num as a
// length-delimited value (a message), as a decoder that sets it would find it.
func hasField(b []byte, num protowire.Number) bool {
	for len(b) > 0 {
		n, typ, l := protowire.ConsumeTag(b)
		if l < 0 {
			return false
		}
		if n == num && typ == protowire.BytesType {
			return true
		}
		b = b[l:]
		if l = protowire.ConsumeFieldValue(n, typ, b); l < 0 {
			return false
		}
		b = b[l:]
	}
	return false
}

// The field names below are the descriptors' own, so a lookup cannot miss.

func setString(m protoreflect.Message, name protoreflect.Name, v string) {
	m.Set(m.Descriptor().Fields().ByName(name), protoreflect.ValueOfString(v))
}

// setMessage sets a message field to v, a generated message of the field's type; a
// nil v leaves the field absent.
func setMessage(m protoreflect.Message, name protoreflect.Name, v proto.Message) {
	if v == nil || !v.ProtoReflect().IsValid() {
		return
	}
	m.Set(m.Descriptor().Fields().ByName(name), protoreflect.ValueOfMessage(v.ProtoReflect()))
}

func getString(m protoreflect.Message, name protoreflect.Name) string {
	return m.Get(m.Descriptor().Fields().ByName(name)).String()
}

// getMessage copies a message field into dst, a generated message of the same type, or
// returns nil if the field is absent. The field's descriptor is the generated type's
// own (resolved from the global registry), so proto.Merge copies it field by field.
func getMessage[T proto.Message](m protoreflect.Message, name protoreflect.Name, dst T) T {
	fd := m.Descriptor().Fields().ByName(name)
	if !m.Has(fd) {
		var none T
		return none
	}
	proto.Merge(dst, m.Get(fd).Message().Interface())
	return dst
}
