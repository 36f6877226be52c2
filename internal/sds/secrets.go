package sds

import (
	"crypto/sha256"
	"encoding/hex"
	"encoding/pem"
	"fmt"
	"slices"

	core "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	tlsv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/transport_sockets/tls/v3"
	discovery "github.com/envoyproxy/go-control-plane/envoy/service/discovery/v3"
	"github.com/spiffe/go-spiffe/v2/bundle/x509bundle"
	"github.com/spiffe/go-spiffe/v2/svid/x509svid"
	"google.golang.org/protobuf/types/known/anypb"
)

// Resource names, as Envoy's Istio bootstrap and Istio's agent spell them.
const (
	// WorkloadResource is the workload's own certificate chain and private key.
	WorkloadResource = "default"
	// RootResource is the trust bundle used to validate peers.
	RootResource = "ROOTCA"
)

// SecretTypeURL is the type URL of every resource this server sends
// (envoy.extensions.transport_sockets.tls.v3.Secret).
const SecretTypeURL = "type.googleapis.com/envoy.extensions.transport_sockets.tls.v3.Secret"

// snapshot is one consistent view of the Source: the SVID and the bundle of its trust
// domain, already PEM-encoded, plus a version derived from their content.
type snapshot struct {
	chainPEM []byte
	keyPEM   []byte
	rootsPEM []byte
	// digests per resource, so that a response's version depends only on what it carries.
	chainDigest, rootsDigest []byte
}

func newSnapshot(svid *x509svid.SVID, bundle *x509bundle.Bundle) (*snapshot, error) {
	chain, key, err := svid.Marshal()
	if err != nil {
		return nil, fmt.Errorf("encode SVID %s: %w", svid.ID, err)
	}
	roots := bundle.X509Authorities()
	if len(roots) == 0 {
		return nil, fmt.Errorf("trust bundle for %s holds no root certificates", bundle.TrustDomain())
	}
	var rootsPEM []byte
	rh := sha256.New()
	for _, r := range roots {
		rootsPEM = append(rootsPEM, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: r.Raw})...)
		rh.Write(r.Raw)
	}
	ch := sha256.New()
	for _, c := range svid.Certificates {
		ch.Write(c.Raw)
	}
	return &snapshot{
		chainPEM: chain, keyPEM: key, rootsPEM: rootsPEM,
		chainDigest: ch.Sum(nil), rootsDigest: rh.Sum(nil),
	}, nil
}

// version names the content of the given resources: it changes exactly when one of them
// changes, so a client that reconnects, or a second client, sees the same version for the
// same secrets. The certificate (not the key) identifies the key pair, so the key never
// feeds anything that is sent in clear text besides the secret itself.
func (s *snapshot) version(names []string) string {
	h := sha256.New()
	for _, n := range sortedUnique(names) {
		h.Write([]byte(n))
		h.Write([]byte{0})
		switch n {
		case WorkloadResource:
			h.Write(s.chainDigest)
		case RootResource:
			h.Write(s.rootsDigest)
		}
	}
	return hex.EncodeToString(h.Sum(nil)[:8])
}

// secret builds the Envoy Secret for one known resource name.
func (s *snapshot) secret(name string) *tlsv3.Secret {
	inline := func(b []byte) *core.DataSource {
		return &core.DataSource{Specifier: &core.DataSource_InlineBytes{InlineBytes: b}}
	}
	if name == RootResource {
		return &tlsv3.Secret{Name: name, Type: &tlsv3.Secret_ValidationContext{
			ValidationContext: &tlsv3.CertificateValidationContext{TrustedCa: inline(s.rootsPEM)},
		}}
	}
	return &tlsv3.Secret{Name: name, Type: &tlsv3.Secret_TlsCertificate{
		TlsCertificate: &tlsv3.TlsCertificate{
			CertificateChain: inline(s.chainPEM),
			PrivateKey:       inline(s.keyPEM),
		},
	}}
}

// response builds a DiscoveryResponse carrying the named resources, in the order given.
func (s *snapshot) response(names []string, nonce string) (*discovery.DiscoveryResponse, error) {
	resp := &discovery.DiscoveryResponse{
		VersionInfo: s.version(names),
		TypeUrl:     SecretTypeURL,
		Nonce:       nonce,
	}
	for _, n := range sortedUnique(names) {
		a, err := anypb.New(s.secret(n))
		if err != nil {
			return nil, fmt.Errorf("encode SDS secret %q: %w", n, err)
		}
		resp.Resources = append(resp.Resources, a)
	}
	return resp, nil
}

// checkNames rejects resource names this server does not serve. Istio's agent also
// serves file-backed names ("file-cert:…", "file-root:…"); meshguard does not, and says so
// instead of leaving the client waiting for a resource that will never come.
func checkNames(names []string) error {
	for _, n := range names {
		if n != WorkloadResource && n != RootResource {
			return fmt.Errorf("unknown SDS resource %q: this agent serves only %q (workload certificate) and %q (trust bundle)",
				n, WorkloadResource, RootResource)
		}
	}
	return nil
}

func sortedUnique(names []string) []string {
	out := slices.Clone(names)
	slices.Sort(out)
	return slices.Compact(out)
}
