package identity

import (
	"fmt"
	"strings"

	"github.com/spiffe/go-spiffe/v2/spiffeid"
)

// Identity is a workload's identity: the service account it runs as, in a namespace of a
// trust domain. The zero value is not a valid identity; build one with New, Parse or
// FromSPIFFEID, or fill the fields and call Validate.
type Identity struct {
	TrustDomain    string // e.g. "cluster.local"
	Namespace      string // e.g. "default"
	ServiceAccount string // e.g. "bookinfo-productpage"
}

// New returns the identity for trustDomain, namespace and serviceAccount, or an error
// naming the part that cannot appear in a SPIFFE ID.
func New(trustDomain, namespace, serviceAccount string) (Identity, error) {
	id := Identity{TrustDomain: trustDomain, Namespace: namespace, ServiceAccount: serviceAccount}
	if err := id.Validate(); err != nil {
		return Identity{}, err
	}
	return id, nil
}

// Validate reports whether every part is present and legal in a SPIFFE ID. The error
// names the offending part.
func (i Identity) Validate() error {
	if i.TrustDomain == "" {
		return fmt.Errorf("identity: trust domain is empty")
	}
	if _, err := spiffeid.TrustDomainFromString(i.TrustDomain); err != nil || strings.Contains(i.TrustDomain, ":") {
		if err == nil {
			err = fmt.Errorf("must be a bare name, not a URI")
		}
		return fmt.Errorf("identity: trust domain %q: %w", i.TrustDomain, err)
	}
	if err := validSegment("namespace", i.Namespace); err != nil {
		return err
	}
	return validSegment("service account", i.ServiceAccount)
}

func validSegment(what, s string) error {
	if s == "" {
		return fmt.Errorf("identity: %s is empty", what)
	}
	// "." and ".." are legal characters but illegal segments: they would change the path's meaning.
	if err := spiffeid.ValidatePathSegment(s); err != nil {
		return fmt.Errorf("identity: %s %q: %w", what, s, err)
	}
	return nil
}

// SPIFFEID returns spiffe://<trust-domain>/ns/<namespace>/sa/<service-account>, or the
// zero spiffeid.ID when i is not valid (check with Validate or build with New).
func (i Identity) SPIFFEID() spiffeid.ID {
	if i.Validate() != nil {
		return spiffeid.ID{}
	}
	td, err := spiffeid.TrustDomainFromString(i.TrustDomain)
	if err != nil {
		return spiffeid.ID{}
	}
	id, err := spiffeid.FromSegments(td, "ns", i.Namespace, "sa", i.ServiceAccount)
	if err != nil {
		return spiffeid.ID{}
	}
	return id
}

// String returns the SPIFFE ID as text. For an invalid identity it still shows the parts,
// so that log lines and error messages stay readable.
func (i Identity) String() string {
	return "spiffe://" + i.Principal()
}

// Principal returns the identity in Istio's principal form, the SPIFFE ID without its
// scheme: "<trust-domain>/ns/<namespace>/sa/<service-account>". AuthorizationPolicy
// `principals` and the `source.principal` attribute use this form.
func (i Identity) Principal() string {
	return i.TrustDomain + "/ns/" + i.Namespace + "/sa/" + i.ServiceAccount
}

// IsZero reports whether i is the zero Identity.
func (i Identity) IsZero() bool { return i == Identity{} }

// FromSPIFFEID extracts the identity from a SPIFFE ID whose path is exactly
// /ns/<namespace>/sa/<service-account>.
func FromSPIFFEID(id spiffeid.ID) (Identity, error) {
	if id.IsZero() {
		return Identity{}, fmt.Errorf("identity: SPIFFE ID is empty")
	}
	segs := strings.Split(strings.TrimPrefix(id.Path(), "/"), "/")
	if len(segs) != 4 || segs[0] != "ns" || segs[2] != "sa" {
		return Identity{}, fmt.Errorf("identity: SPIFFE ID %q: path %q is not /ns/<namespace>/sa/<service-account>", id, id.Path())
	}
	return New(id.TrustDomain().Name(), segs[1], segs[3])
}

// Parse parses a SPIFFE ID of the form spiffe://<trust-domain>/ns/<ns>/sa/<sa>.
func Parse(s string) (Identity, error) {
	id, err := spiffeid.FromString(s)
	if err != nil {
		return Identity{}, fmt.Errorf("identity: parse %q: %w", s, err)
	}
	return FromSPIFFEID(id)
}
