package agent

import (
	"bytes"
	"context"
	"crypto"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"net"
	"time"

	"github.com/spiffe/go-spiffe/v2/bundle/x509bundle"
	"github.com/spiffe/go-spiffe/v2/svid/x509svid"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"
	pb "istio.io/api/security/v1alpha1"

	"github.com/meshguard/meshguard/internal/pki"
)

// credential is how one CSR request authenticates: a bootstrap token (first issuance, or
// when no valid certificate is left) or the current certificate as TLS client
// certificate (renewals).
type credential struct {
	token string
	cert  *tls.Certificate
}

// caClient sends one CSR to the CA and returns Istio's cert_chain: the leaf first, the
// root(s) last. The production client speaks gRPC; tests in this package substitute a
// real ca.Authority behind the same interface to run under testing/synctest.
type caClient interface {
	createCertificate(ctx context.Context, csrPEM []byte, ttl time.Duration, cred credential) ([]string, error)
}

// grpcCA is Istio's IstioCertificateService client, as pilot-agent uses it.
type grpcCA struct {
	addr       string
	serverName string
	// roots returns the pool that verifies the CA's serving certificate: the --ca-root
	// file plus the roots of the current bundle, so a CA whose serving certificate moved
	// to a new root during root rotation is still trusted.
	roots func() *x509.CertPool
}

// caServerName returns the name the CA's serving certificate is verified against:
// the host of its address, or istiod.istio-system.svc for localhost, as pilot-agent does.
func caServerName(addr string) (string, error) {
	host, _, err := net.SplitHostPort(addr)
	if err != nil {
		return "", fmt.Errorf("control plane address %q: want HOST:PORT: %w", addr, err)
	}
	if host == "localhost" {
		return "istiod.istio-system.svc", nil
	}
	return host, nil
}

func (g *grpcCA) createCertificate(ctx context.Context, csrPEM []byte, ttl time.Duration, cred credential) ([]string, error) {
	tcfg := &tls.Config{MinVersion: tls.VersionTLS12, RootCAs: g.roots(), ServerName: g.serverName}
	if cred.cert != nil {
		c := cred.cert
		tcfg.GetClientCertificate = func(*tls.CertificateRequestInfo) (*tls.Certificate, error) { return c, nil }
	}
	// A connection per request: rotations are hours apart, and the TLS handshake is what
	// carries the client certificate, so a cached connection would keep authenticating
	// with whatever it was opened with.
	cc, err := grpc.NewClient(g.addr, grpc.WithTransportCredentials(credentials.NewTLS(tcfg)))
	if err != nil {
		return nil, fmt.Errorf("connect to CA at %s: %w", g.addr, err)
	}
	defer cc.Close()
	if cred.token != "" {
		ctx = metadata.AppendToOutgoingContext(ctx, "authorization", "Bearer "+cred.token)
	}
	resp, err := pb.NewIstioCertificateServiceClient(cc).CreateCertificate(ctx, &pb.IstioCertificateRequest{
		Csr:              string(csrPEM),
		ValidityDuration: int64(ttl / time.Second),
	})
	if err != nil {
		return nil, classifyCAError(g.addr, err)
	}
	return resp.GetCertChain(), nil
}

func classifyCAError(addr string, err error) error {
	st, _ := status.FromError(err)
	switch st.Code() {
	case codes.Unauthenticated, codes.PermissionDenied:
		return fmt.Errorf("%w: CA at %s: %s: %s", ErrRejected, addr, st.Code(), st.Message())
	case codes.Unavailable, codes.DeadlineExceeded:
		return fmt.Errorf("CA at %s unreachable: %s", addr, st.Message())
	}
	return fmt.Errorf("CA at %s: CreateCertificate: %w", addr, err)
}

// parseCertChain turns Istio's cert_chain into an SVID for key and the trust bundle. The
// chain is untrusted input even over TLS, so everything is checked and the answer fails
// closed: each element is PEM and may hold several certificates (Istio puts the root
// bundle, possibly several roots, in the last one); self-signed CA certificates are
// roots, the others the leaf and its intermediates in order. The leaf must carry one
// SPIFFE ID, be for key, and verify against the roots at now.
func parseCertChain(chain []string, key crypto.Signer, now time.Time) (*x509svid.SVID, *x509bundle.Bundle, error) {
	if len(chain) < 2 {
		return nil, nil, fmt.Errorf("%w: cert_chain has %d entries, want the leaf first and the root last", ErrBadResponse, len(chain))
	}
	var path, roots []*x509.Certificate
	for i, p := range chain {
		certs, err := pki.ParseCertsPEM([]byte(p))
		if err != nil {
			return nil, nil, fmt.Errorf("%w: cert_chain[%d]: %w", ErrBadResponse, i, err)
		}
		for _, c := range certs {
			if i > 0 && isSelfSignedCA(c) {
				roots = append(roots, c)
			} else {
				path = append(path, c)
			}
		}
	}
	if len(roots) == 0 {
		return nil, nil, fmt.Errorf("%w: cert_chain holds no self-signed root", ErrBadResponse)
	}
	leaf := path[0]
	id, err := pki.SPIFFEIDFromCert(leaf)
	if err != nil {
		return nil, nil, fmt.Errorf("%w: leaf certificate: %w", ErrBadResponse, err)
	}
	if !pki.KeyMatchesCert(key, leaf) {
		return nil, nil, fmt.Errorf("%w: leaf certificate for %s is not for the key this agent sent in its CSR", ErrBadResponse, id)
	}
	if _, err := pki.VerifyChain(leaf, path[1:], roots, now); err != nil {
		return nil, nil, fmt.Errorf("%w: certificate for %s: %w", ErrBadResponse, id, err)
	}
	// go-spiffe's parser adds the X.509-SVID rules: a leaf that is not a CA and may sign.
	keyPEM, err := pki.EncodeKeyPEM(key)
	if err != nil {
		return nil, nil, err
	}
	svid, err := x509svid.Parse(pki.EncodeCertsPEM(path...), keyPEM)
	if err != nil {
		return nil, nil, fmt.Errorf("%w: certificate for %s is not an X.509-SVID: %w", ErrBadResponse, id, err)
	}
	svid.PrivateKey = key // keep the caller's Signer (it may not be exportable)
	return svid, x509bundle.FromX509Authorities(id.TrustDomain(), roots), nil
}

func isSelfSignedCA(c *x509.Certificate) bool {
	return c.IsCA && bytes.Equal(c.RawSubject, c.RawIssuer) && c.CheckSignatureFrom(c) == nil
}

// errorIsRejection reports whether err means the CA refused our credentials rather than
// being unreachable.
func errorIsRejection(err error) bool { return errors.Is(err, ErrRejected) }
