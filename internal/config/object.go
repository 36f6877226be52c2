package config

import (
	"fmt"
	"time"

	"google.golang.org/protobuf/proto"
	meshv1alpha1 "istio.io/api/mesh/v1alpha1"
	networking "istio.io/api/networking/v1alpha3"
	security "istio.io/api/security/v1beta1"
)

// Kind names an Istio resource kind meshguard understands. Objects of the v1, v1beta1
// and v1alpha3 API versions of one kind share one Kind: istio.io/api aliases their Go
// types, so the version only matters while decoding.
type Kind string

// The kinds meshguard reads.
const (
	KindPeerAuthentication    Kind = "PeerAuthentication"
	KindAuthorizationPolicy   Kind = "AuthorizationPolicy"
	KindRequestAuthentication Kind = "RequestAuthentication"
	KindDestinationRule       Kind = "DestinationRule"
	KindServiceEntry          Kind = "ServiceEntry"
	KindWorkloadEntry         Kind = "WorkloadEntry"
)

// Source says where an object came from, for error messages and status:
// FILE:DOC_INDEX (DOC_INDEX counts YAML documents in the file from 0).
type Source struct {
	File string
	Doc  int
}

func (s Source) String() string {
	if s.File == "" {
		return "<unknown>"
	}
	return fmt.Sprintf("%s:%d", s.File, s.Doc)
}

// Meta is the Kubernetes-style metadata meshguard keeps for an object.
type Meta struct {
	Namespace   string
	Name        string
	Labels      map[string]string
	Annotations map[string]string
	// ResourceVersion changes whenever the object's content changes; stores set it.
	ResourceVersion string
	// CreationTime is metadata.creationTimestamp; zero when the source does not give
	// one. Istio settles competing objects (two namespace-wide PeerAuthentications, two
	// DestinationRules for one host) by age, oldest first, then by name and namespace.
	CreationTime time.Time
	Source       Source
}

// Older reports whether m sorts before o in Istio's order for competing objects:
// creation time, then name, then namespace.
func (m *Meta) Older(o *Meta) bool {
	if c := m.CreationTime.Compare(o.CreationTime); c != 0 {
		return c < 0
	}
	if m.Name != o.Name {
		return m.Name < o.Name
	}
	return m.Namespace < o.Namespace
}

// Key is the object's identity within its kind: "namespace/name".
func (m Meta) Key() string { return m.Namespace + "/" + m.Name }

// Object is one decoded, validated Istio object. Spec holds the istio.io/api message for
// Kind: *security.PeerAuthentication, *security.AuthorizationPolicy,
// *security.RequestAuthentication, *networking.DestinationRule,
// *networking.ServiceEntry or *networking.WorkloadEntry. Objects are immutable once
// built: consumers share them across goroutines without copying.
type Object struct {
	Kind Kind
	Meta
	Spec proto.Message

	// sum caches the content hash NewSnapshot computes, so that rebuilding a snapshot
	// around unchanged objects (a reload of one file among thousands, a push that
	// changes a few resources) does not re-marshal them. Copies of an Object keep it;
	// an Object must not be changed after it has been in a Snapshot.
	sum [32]byte
}

// PeerAuthentication returns the object's spec, or nil when it is another kind.
func (o *Object) PeerAuthentication() *security.PeerAuthentication {
	s, _ := o.Spec.(*security.PeerAuthentication)
	return s
}

// AuthorizationPolicy returns the object's spec, or nil when it is another kind.
func (o *Object) AuthorizationPolicy() *security.AuthorizationPolicy {
	s, _ := o.Spec.(*security.AuthorizationPolicy)
	return s
}

// RequestAuthentication returns the object's spec, or nil when it is another kind.
func (o *Object) RequestAuthentication() *security.RequestAuthentication {
	s, _ := o.Spec.(*security.RequestAuthentication)
	return s
}

// DestinationRule returns the object's spec, or nil when it is another kind.
func (o *Object) DestinationRule() *networking.DestinationRule {
	s, _ := o.Spec.(*networking.DestinationRule)
	return s
}

// ServiceEntry returns the object's spec, or nil when it is another kind.
func (o *Object) ServiceEntry() *networking.ServiceEntry {
	s, _ := o.Spec.(*networking.ServiceEntry)
	return s
}

// WorkloadEntry returns the object's spec, or nil when it is another kind.
func (o *Object) WorkloadEntry() *networking.WorkloadEntry {
	s, _ := o.Spec.(*networking.WorkloadEntry)
	return s
}

// Snapshot is a complete, validated configuration at one moment: every object plus the
// effective MeshConfig (Istio's defaults merged with what the user gave). A Snapshot is
// never modified after it is built; a reload builds a new one.
type Snapshot struct {
	Objects []*Object
	Mesh    *meshv1alpha1.MeshConfig
	// Version identifies the snapshot's content; equal content gives an equal version.
	Version string

	defaultMesh bool // Mesh is DefaultMeshConfig: none was given
}

// GivenMesh returns the mesh config the snapshot was built from, nil when it has the
// defaults: what to pass NewSnapshot to build another snapshot with the same one.
func (s *Snapshot) GivenMesh() *meshv1alpha1.MeshConfig {
	if s.defaultMesh {
		return nil
	}
	return s.Mesh
}

// OfKind returns the snapshot's objects of kind k, in the snapshot's order.
func (s *Snapshot) OfKind(k Kind) []*Object {
	var out []*Object
	for _, o := range s.Objects {
		if o.Kind == k {
			out = append(out, o)
		}
	}
	return out
}
