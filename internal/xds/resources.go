package xds

import (
	"fmt"
	"strings"
	"time"

	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/anypb"
	"google.golang.org/protobuf/types/known/timestamppb"
	mcp "istio.io/api/mcp/v1alpha1"
	meshv1alpha1 "istio.io/api/mesh/v1alpha1"
	networking "istio.io/api/networking/v1alpha3"
	security "istio.io/api/security/v1beta1"

	"github.com/meshguard/meshguard/internal/config"
)

// Type URLs: Istio's MCP-over-xDS names each collection by its group/version/kind, and
// the MeshConfig, which has no API group, by "core/v1alpha1/MeshConfig".
const (
	TypeMeshConfig            = "core/v1alpha1/MeshConfig"
	TypeServiceEntry          = "networking.istio.io/v1/ServiceEntry"
	TypeWorkloadEntry         = "networking.istio.io/v1/WorkloadEntry"
	TypeDestinationRule       = "networking.istio.io/v1/DestinationRule"
	TypePeerAuthentication    = "security.istio.io/v1/PeerAuthentication"
	TypeRequestAuthentication = "security.istio.io/v1/RequestAuthentication"
	TypeAuthorizationPolicy   = "security.istio.io/v1/AuthorizationPolicy"
)

// Debug type URLs an operator may request over the same stream, as istioctl does with
// istiod: the fleet's sync status, and one workload's config in force.
const (
	TypeDebugSyncz      = "istio.io/debug/syncz"
	TypeDebugConfigDump = "istio.io/debug/config_dump"
)

// MeshConfigName is the MCP name of the one MeshConfig resource: cluster-scoped
// resources are "/<name>" in MCP.
const MeshConfigName = "/mesh"

// Types lists the config type URLs in push order: the MeshConfig first (objects are
// validated against it), then the registry, then policies.
var Types = []string{
	TypeMeshConfig, TypeServiceEntry, TypeWorkloadEntry, TypeDestinationRule,
	TypePeerAuthentication, TypeRequestAuthentication, TypeAuthorizationPolicy,
}

type kindInfo struct {
	kind config.Kind
	new  func() proto.Message
}

var byType = map[string]kindInfo{
	TypeServiceEntry:          {config.KindServiceEntry, func() proto.Message { return new(networking.ServiceEntry) }},
	TypeWorkloadEntry:         {config.KindWorkloadEntry, func() proto.Message { return new(networking.WorkloadEntry) }},
	TypeDestinationRule:       {config.KindDestinationRule, func() proto.Message { return new(networking.DestinationRule) }},
	TypePeerAuthentication:    {config.KindPeerAuthentication, func() proto.Message { return new(security.PeerAuthentication) }},
	TypeRequestAuthentication: {config.KindRequestAuthentication, func() proto.Message { return new(security.RequestAuthentication) }},
	TypeAuthorizationPolicy:   {config.KindAuthorizationPolicy, func() proto.Message { return new(security.AuthorizationPolicy) }},
}

// TypeOf returns the type URL for a kind, or "" for a kind meshguard does not push.
func TypeOf(k config.Kind) string {
	for t, ki := range byType {
		if ki.kind == k {
			return t
		}
	}
	return ""
}

// EncodeObject wraps o as an MCP Resource (metadata name "namespace/name", version
// o.ResourceVersion, creation time, labels and annotations; body an Any of the Istio
// spec) in an Any, as it travels in DiscoveryResponse.resources. The creation time
// travels because Istio settles competing objects by age.
func EncodeObject(o *config.Object) (*anypb.Any, error) {
	body, err := anypb.New(o.Spec)
	if err != nil {
		return nil, fmt.Errorf("encode %s %s: %w", o.Kind, o.Key(), err)
	}
	r := &mcp.Resource{
		Metadata: &mcp.Metadata{Name: o.Key(), Version: o.ResourceVersion, Labels: o.Labels, Annotations: o.Annotations},
		Body:     body,
	}
	if !o.CreationTime.IsZero() {
		r.Metadata.CreateTime = timestamppb.New(o.CreationTime)
	}
	a, err := anypb.New(r)
	if err != nil {
		return nil, fmt.Errorf("encode %s %s: %w", o.Kind, o.Key(), err)
	}
	return a, nil
}

// EncodeMesh wraps the MeshConfig as the MCP Resource MeshConfigName.
func EncodeMesh(m *meshv1alpha1.MeshConfig, version string) (*anypb.Any, error) {
	body, err := anypb.New(m)
	if err != nil {
		return nil, fmt.Errorf("encode mesh config: %w", err)
	}
	a, err := anypb.New(&mcp.Resource{Metadata: &mcp.Metadata{Name: MeshConfigName, Version: version}, Body: body})
	if err != nil {
		return nil, fmt.Errorf("encode mesh config: %w", err)
	}
	return a, nil
}

// unwrap checks that a is an MCP Resource whose body is a want and returns both.
func unwrap(a *anypb.Any, want proto.Message) (*mcp.Resource, error) {
	r := new(mcp.Resource)
	if !a.MessageIs(r) {
		return nil, fmt.Errorf("resource is a %q, want an %s", a.GetTypeUrl(), proto.MessageName(r))
	}
	if err := a.UnmarshalTo(r); err != nil {
		return nil, fmt.Errorf("resource: %w", err)
	}
	if r.GetMetadata() == nil {
		return nil, fmt.Errorf("resource has no metadata")
	}
	if r.GetBody() == nil {
		return nil, fmt.Errorf("resource %q has no body", r.GetMetadata().GetName())
	}
	if !r.GetBody().MessageIs(want) {
		return nil, fmt.Errorf("resource %q: body is a %q, want %s", r.GetMetadata().GetName(), r.GetBody().GetTypeUrl(), proto.MessageName(want))
	}
	if err := r.GetBody().UnmarshalTo(want); err != nil {
		return nil, fmt.Errorf("resource %q: body: %w", r.GetMetadata().GetName(), err)
	}
	return r, nil
}

// DecodeObject is the inverse of EncodeObject for a resource received under typeURL.
// The object's Source names the type URL, so that validation messages say where it
// came from.
func DecodeObject(typeURL string, a *anypb.Any) (*config.Object, error) {
	ki, ok := byType[typeURL]
	if !ok {
		return nil, fmt.Errorf("type URL %q is not one meshguard pushes", typeURL)
	}
	spec := ki.new()
	r, err := unwrap(a, spec)
	if err != nil {
		return nil, err
	}
	md := r.GetMetadata()
	ns, name, ok := strings.Cut(md.GetName(), "/")
	if !ok || ns == "" || name == "" || strings.Contains(name, "/") {
		return nil, fmt.Errorf("resource name %q is not namespace/name", md.GetName())
	}
	var created time.Time
	if ct := md.GetCreateTime(); ct != nil {
		if err := ct.CheckValid(); err != nil {
			return nil, fmt.Errorf("resource %q: create_time: %w", md.GetName(), err)
		}
		created = ct.AsTime()
	}
	return &config.Object{Kind: ki.kind, Meta: config.Meta{
		Namespace: ns, Name: name, Labels: md.GetLabels(), Annotations: md.GetAnnotations(),
		ResourceVersion: md.GetVersion(), CreationTime: created, Source: config.Source{File: typeURL},
	}, Spec: spec}, nil
}

// DecodeMesh is the inverse of EncodeMesh.
func DecodeMesh(a *anypb.Any) (*meshv1alpha1.MeshConfig, error) {
	m, _, err := decodeMeshVersion(a)
	return m, err
}

func decodeMeshVersion(a *anypb.Any) (*meshv1alpha1.MeshConfig, string, error) {
	m := new(meshv1alpha1.MeshConfig)
	r, err := unwrap(a, m)
	if err != nil {
		return nil, "", err
	}
	if n := r.GetMetadata().GetName(); n != MeshConfigName {
		return nil, "", fmt.Errorf("mesh config resource is named %q, want %q", n, MeshConfigName)
	}
	return m, r.GetMetadata().GetVersion(), nil
}

// typeOfBody finds the type URL of a resource from its body's message type; config
// dumps carry several types in one response.
func typeOfBody(a *anypb.Any) (string, error) {
	r := new(mcp.Resource)
	if err := a.UnmarshalTo(r); err != nil {
		return "", fmt.Errorf("resource: %w", err)
	}
	if r.GetBody().MessageIs(new(meshv1alpha1.MeshConfig)) {
		return TypeMeshConfig, nil
	}
	for t, ki := range byType {
		if r.GetBody().MessageIs(ki.new()) {
			return t, nil
		}
	}
	return "", fmt.Errorf("resource %q: body type %q is not one meshguard pushes", r.GetMetadata().GetName(), r.GetBody().GetTypeUrl())
}
