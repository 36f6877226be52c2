package caservice_test

import (
	"context"
	"crypto/x509"
	"errors"
	"log/slog"
	"net"
	"strings"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"
	pb "istio.io/api/security/v1alpha1"

	"github.com/meshguard/meshguard/internal/authn"
	"github.com/meshguard/meshguard/internal/ca"
	"github.com/meshguard/meshguard/internal/caservice"
	"github.com/meshguard/meshguard/internal/identity"
	"github.com/meshguard/meshguard/internal/meshtest"
	"github.com/meshguard/meshguard/internal/pki"
)

var _ caservice.CertificateAuthority = (*ca.Authority)(nil)

// failingCA is a real Authority with error injection.
type failingCA struct {
	*ca.Authority
	err error
}

func (f failingCA) SignCSR(ctx context.Context, csr []byte, id identity.Identity, ttl time.Duration) ([]*x509.Certificate, error) {
	if f.err != nil {
		return nil, f.err
	}
	return f.Authority.SignCSR(ctx, csr, id, ttl)
}

// bearerIsIdentity authenticates a bearer token naming a service account in "default".
type bearerIsIdentity struct{}

func (bearerIsIdentity) Authenticate(_ context.Context, c authn.Credentials) (authn.Caller, error) {
	if c.BearerToken == "" {
		return authn.Caller{}, authn.ErrNoCredentials
	}
	return authn.Caller{Identity: identity.Identity{TrustDomain: "cluster.local", Namespace: "default", ServiceAccount: c.BearerToken}, Method: "test"}, nil
}

func serve(t *testing.T, c caservice.CertificateAuthority) pb.IstioCertificateServiceClient {
	t.Helper()
	return serveWith(t, caservice.Config{CA: c, Authenticator: bearerIsIdentity{}, Logger: slog.New(slog.DiscardHandler)})
}

func serveWith(t *testing.T, cfg caservice.Config) pb.IstioCertificateServiceClient {
	t.Helper()
	s, err := caservice.New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	gs := grpc.NewServer()
	s.Register(gs)
	go gs.Serve(lis)
	t.Cleanup(gs.Stop)
	conn, err := grpc.NewClient(lis.Addr().String(), grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close() })
	return pb.NewIstioCertificateServiceClient(conn)
}

func TestErrorMapping(t *testing.T) {
	mesh := meshtest.NewCA(t, "cluster.local")
	auth := mesh.Authority(t, time.Now())
	key, _ := pki.GenerateKey(pki.KeyECP256)
	csr, _ := pki.CreateCSR(key, mesh.ID("default", "web").SPIFFEID())
	for _, tc := range []struct {
		name    string
		err     error
		ttl     int64
		code    codes.Code
		message string
		leak    string
	}{
		{"success", nil, 3600, codes.OK, "", ""},
		{"internal error hides its cause", errors.New("open /secret/ca-key.pem: permission denied"), 3600, codes.Internal, "see its log", "/secret"},
		{"not permitted", ca.ErrNotPermitted, 3600, codes.PermissionDenied, "not permitted", ""},
		{"bad request", ca.ErrBadRequest, 3600, codes.InvalidArgument, "bad certificate request", ""},
		{"negative ttl", nil, -1, codes.InvalidArgument, "validity_duration -1", ""},
		{"huge ttl saturates, then caps", nil, 1 << 62, codes.OK, "", ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			client := serve(t, failingCA{auth, tc.err})
			ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
			defer cancel()
			ctx = metadata.AppendToOutgoingContext(ctx, "authorization", "Bearer web")
			resp, err := client.CreateCertificate(ctx, &pb.IstioCertificateRequest{Csr: string(csr), ValidityDuration: tc.ttl})
			st, _ := status.FromError(err)
			if st.Code() != tc.code || !strings.Contains(st.Message(), tc.message) {
				t.Fatalf("CreateCertificate = %v, want %v containing %q", err, tc.code, tc.message)
			}
			if tc.leak != "" && strings.Contains(st.Message(), tc.leak) {
				t.Errorf("message %q leaks the internal cause", st.Message())
			}
			if tc.code == codes.OK && len(resp.CertChain) != 2 {
				t.Errorf("cert_chain has %d entries, want leaf and root", len(resp.CertChain))
			}
		})
	}
}
