package proxy

import (
	"crypto/sha256"
	"crypto/tls"
	"crypto/x509"
	"encoding/hex"
	"errors"
	"fmt"
	"slices"
	"strings"

	"github.com/spiffe/go-spiffe/v2/bundle/x509bundle"
	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"github.com/spiffe/go-spiffe/v2/svid/x509svid"
	meshv1alpha1 "istio.io/api/mesh/v1alpha1"
)

// ALPN protocol IDs between sidecars. They are Istio's, so the server learns the
// client's protocol from the handshake without sniffing decrypted bytes; plain "h2" and
// "http/1.1" are accepted too for mTLS clients that are not sidecars.
const (
	alpnIstioH2    = "istio-h2"
	alpnIstioHTTP1 = "istio-http/1.1"
	alpnIstioTCP   = "istio"
	alpnH2         = "h2"
	alpnHTTP1      = "http/1.1"
)

// TLSSettings tunes every TLS handshake the proxy makes or accepts with the mesh
// certificate (meshConfig.meshMTLS).
type TLSSettings struct {
	// MinVersion is tls.VersionTLS12 (default) or tls.VersionTLS13. TLS 1.3 is always
	// preferred when both sides support it.
	MinVersion uint16
	// CipherSuites apply to TLS 1.2 only (TLS 1.3 suites are not configurable in Go).
	CipherSuites []uint16
	// Curves is the key-exchange preference order; the hybrid post-quantum
	// X25519MLKEM768 is first by default.
	Curves []tls.CurveID
}

// DefaultTLSSettings returns TLS 1.2 minimum, the ECDHE-ECDSA/RSA AES-GCM suites for
// TLS 1.2 and X25519MLKEM768 offered first.
func DefaultTLSSettings() TLSSettings {
	return TLSSettings{
		MinVersion: tls.VersionTLS12,
		CipherSuites: []uint16{
			tls.TLS_ECDHE_ECDSA_WITH_AES_256_GCM_SHA384,
			tls.TLS_ECDHE_RSA_WITH_AES_256_GCM_SHA384,
			tls.TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256,
			tls.TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256,
		},
		Curves: []tls.CurveID{tls.X25519MLKEM768, tls.X25519, tls.CurveP256},
	}
}

// opensslCipherNames maps the OpenSSL-style names Istio's meshMTLS.cipherSuites uses to
// Go's TLS 1.2 suite IDs. Only AEAD ECDHE suites are offered: the rest are weak.
var opensslCipherNames = map[string]uint16{
	"ECDHE-ECDSA-AES256-GCM-SHA384": tls.TLS_ECDHE_ECDSA_WITH_AES_256_GCM_SHA384,
	"ECDHE-RSA-AES256-GCM-SHA384":   tls.TLS_ECDHE_RSA_WITH_AES_256_GCM_SHA384,
	"ECDHE-ECDSA-AES128-GCM-SHA256": tls.TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256,
	"ECDHE-RSA-AES128-GCM-SHA256":   tls.TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256,
	"ECDHE-ECDSA-CHACHA20-POLY1305": tls.TLS_ECDHE_ECDSA_WITH_CHACHA20_POLY1305_SHA256,
	"ECDHE-RSA-CHACHA20-POLY1305":   tls.TLS_ECDHE_RSA_WITH_CHACHA20_POLY1305_SHA256,
}

var curveNames = map[string]tls.CurveID{
	"X25519MLKEM768": tls.X25519MLKEM768,
	"X25519":         tls.X25519,
	"P-256":          tls.CurveP256,
	"P-384":          tls.CurveP384,
	"P-521":          tls.CurveP521,
}

// TLSSettingsFromMesh converts meshConfig.meshMTLS; nil gives the defaults. Unknown
// cipher or curve names are errors naming the field.
func TLSSettingsFromMesh(m *meshv1alpha1.MeshConfig_TLSConfig) (TLSSettings, error) {
	s := DefaultTLSSettings()
	if m == nil {
		return s, nil
	}
	switch m.GetMinProtocolVersion() {
	case meshv1alpha1.MeshConfig_TLSConfig_TLS_AUTO, meshv1alpha1.MeshConfig_TLSConfig_TLSV1_2:
	case meshv1alpha1.MeshConfig_TLSConfig_TLSV1_3:
		s.MinVersion = tls.VersionTLS13
	default:
		return s, fmt.Errorf("meshMTLS.minProtocolVersion: %v is not supported (want TLSV1_2 or TLSV1_3)", m.GetMinProtocolVersion())
	}
	if len(m.GetCipherSuites()) > 0 {
		s.CipherSuites = nil
		for i, n := range m.GetCipherSuites() {
			id, ok := opensslCipherNames[n]
			if !ok {
				return s, fmt.Errorf("meshMTLS.cipherSuites[%d]: unsupported cipher suite %q (supported: ECDHE AES-GCM and CHACHA20-POLY1305 suites in OpenSSL naming)", i, n)
			}
			s.CipherSuites = append(s.CipherSuites, id)
		}
	}
	if len(m.GetEcdhCurves()) > 0 {
		s.Curves = nil
		for i, n := range m.GetEcdhCurves() {
			id, ok := curveNames[n]
			if !ok {
				return s, fmt.Errorf("meshMTLS.ecdhCurves[%d]: unsupported curve %q (want X25519MLKEM768, X25519, P-256, P-384 or P-521)", i, n)
			}
			s.Curves = append(s.Curves, id)
		}
	}
	return s, nil
}

// key identifies the settings in route keys, so a change rebuilds the routes.
func (s TLSSettings) key() string { return fmt.Sprint(s.MinVersion, s.CipherSuites, s.Curves) }

func (s TLSSettings) apply(c *tls.Config) {
	c.MinVersion = s.MinVersion
	if c.MinVersion == 0 {
		c.MinVersion = tls.VersionTLS12
	}
	c.CipherSuites = s.CipherSuites
	c.CurvePreferences = s.Curves
}

// identity is the workload's current certificate, rebuilt on rotation and read by
// every handshake through an atomic.Pointer.
type identity struct {
	cert      *tls.Certificate
	id        spiffeid.ID
	principal string
}

func newIdentity(src x509svid.Source) (*identity, error) {
	svid, err := src.GetX509SVID()
	if err != nil {
		return nil, fmt.Errorf("get workload certificate: %w", err)
	}
	if len(svid.Certificates) == 0 {
		return nil, errors.New("get workload certificate: the source returned an empty chain")
	}
	c := &tls.Certificate{PrivateKey: svid.PrivateKey, Leaf: svid.Certificates[0]}
	for _, x := range svid.Certificates {
		c.Certificate = append(c.Certificate, x.Raw)
	}
	return &identity{cert: c, id: svid.ID, principal: principalOf(svid.ID)}, nil
}

// principalOf returns Istio's principal form of a SPIFFE ID: the ID without "spiffe://".
func principalOf(id spiffeid.ID) string {
	if id.IsZero() {
		return ""
	}
	return strings.TrimPrefix(id.String(), "spiffe://")
}

// verifyPeer checks the peer's chain against the mesh trust bundle at the proxy's
// clock, then lets allow decide on the identity. It runs from VerifyConnection, so it
// also runs for resumed sessions. Peers are accepted in the workload's own trust domain
// and in aliases (meshBundles).
func (p *Proxy) verifyPeer(cs tls.ConnectionState, aliases []spiffeid.TrustDomain, allow func(spiffeid.ID) error) error {
	if len(cs.PeerCertificates) == 0 {
		return errNoPeerCertificate
	}
	id, _, err := x509svid.Verify(cs.PeerCertificates, meshBundles{p, aliases}, x509svid.WithTime(p.now()))
	if err != nil {
		return fmt.Errorf("verify peer certificate: %w", err)
	}
	if allow != nil {
		return allow(id)
	}
	return nil
}

// meshBundles serves the mesh trust bundle for the workload's own trust domain and, as
// the same bundle, for its aliases (meshConfig.trustDomainAliases): a mesh that moves to
// a new trust domain keeps its root, and its workloads hold certificates of both names
// for a while. Any other trust domain has no bundle, so its peers fail verification
// with a TrustDomainError, as Istio's sidecars refuse them (with
// PILOT_SKIP_VALIDATE_TRUST_DOMAIN off, its default).
type meshBundles struct {
	p       *Proxy
	aliases []spiffeid.TrustDomain
}

func (b meshBundles) GetX509BundleForTrustDomain(td spiffeid.TrustDomain) (*x509bundle.Bundle, error) {
	own := b.p.ident.Load()
	if own == nil {
		return nil, errNoCertificate
	}
	ownTD := own.id.TrustDomain()
	if td != ownTD && !slices.Contains(b.aliases, td) {
		want := []string{ownTD.Name()}
		for _, a := range b.aliases {
			want = append(want, a.Name())
		}
		return nil, &TrustDomainError{Peer: td.Name(), Want: want}
	}
	return b.p.cfg.Certs.GetX509BundleForTrustDomain(ownTD)
}

// newServerTLS is the inbound listener's config. Peers are admitted in VerifyConnection:
// chained to the mesh bundle and named in the workload's own trust domain or one of
// aliases. Which peer may do what is authorization's job.
func (p *Proxy) newServerTLS(ts TLSSettings, aliases []spiffeid.TrustDomain) *tls.Config {
	c := &tls.Config{
		GetCertificate: func(*tls.ClientHelloInfo) (*tls.Certificate, error) {
			id := p.ident.Load()
			if id == nil {
				return nil, errNoCertificate
			}
			return id.cert, nil
		},
		ClientAuth:       tls.RequireAnyClientCert,
		VerifyConnection: func(cs tls.ConnectionState) error { return p.verifyPeer(cs, aliases, nil) },
		NextProtos:       []string{alpnMux, alpnIstioH2, alpnIstioHTTP1, alpnIstioTCP, alpnH2, alpnHTTP1},
		Time:             p.now,
	}
	ts.apply(c)
	return c
}

// newMeshClientTLS is the ISTIO_MUTUAL client config for one destination: mesh
// certificate, Istio's SNI, and secure naming (the server must be one of ids, which
// the caller has widened to the trust-domain aliases).
func (p *Proxy) newMeshClientTLS(sni string, ids []spiffeid.ID, host string, ts TLSSettings, aliases []spiffeid.TrustDomain) *tls.Config {
	c := &tls.Config{
		ServerName: sni,
		GetClientCertificate: func(*tls.CertificateRequestInfo) (*tls.Certificate, error) {
			id := p.ident.Load()
			if id == nil {
				return nil, errNoCertificate
			}
			return id.cert, nil
		},
		// The chain and the identity are checked in VerifyConnection against the mesh
		// bundle and the registry's identities; Go's hostname check does not apply to
		// SPIFFE certificates.
		InsecureSkipVerify: true,
		VerifyConnection: func(cs tls.ConnectionState) error {
			return p.verifyPeer(cs, aliases, func(got spiffeid.ID) error {
				if len(ids) == 0 {
					return nil // chain only, as Istio with no SAN to match (see buildRoute)
				}
				for _, want := range ids {
					if got == want {
						return nil
					}
				}
				return &SecureNamingError{Host: host, Got: got.String(), Want: idStrings(ids)}
			})
		},
		ClientSessionCache: p.sessions,
		Time:               p.now,
	}
	ts.apply(c)
	return c
}

func idStrings(ids []spiffeid.ID) []string {
	out := make([]string, len(ids))
	for i, id := range ids {
		out[i] = id.String()
	}
	return out
}

// xfccValue formats Envoy's x-forwarded-client-cert for a verified peer:
// By=<local URI>;Hash=<hex SHA-256 of the peer leaf>;Subject="<peer subject>";URI=<peer URI>.
func xfccValue(local spiffeid.ID, peerLeaf *x509.Certificate, peer spiffeid.ID) string {
	sum := sha256.Sum256(peerLeaf.Raw)
	var b strings.Builder
	b.WriteString("By=")
	b.WriteString(local.String())
	b.WriteString(";Hash=")
	b.WriteString(hex.EncodeToString(sum[:]))
	b.WriteString(`;Subject="`)
	b.WriteString(strings.ReplaceAll(peerLeaf.Subject.String(), `"`, `\"`))
	b.WriteString(`";URI=`)
	b.WriteString(peer.String())
	return b.String()
}
