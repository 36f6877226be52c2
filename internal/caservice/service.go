package caservice

import (
	"context"
	"crypto/x509"
	"errors"
	"fmt"
	"log/slog"
	"math"
	"slices"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"
	pb "istio.io/api/security/v1alpha1"

	"github.com/meshguard/meshguard/internal/authn"
	"github.com/meshguard/meshguard/internal/ca"
	"github.com/meshguard/meshguard/internal/identity"
	"github.com/meshguard/meshguard/internal/metrics"
	"github.com/meshguard/meshguard/internal/pki"
)

// CertificateAuthority signs a CSR for an identity.
type CertificateAuthority interface {
	// SignCSR returns the leaf for id and the intermediates after it, never the root.
	// Refusals wrap ca.ErrBadRequest or ca.ErrNotPermitted.
	SignCSR(ctx context.Context, csrPEM []byte, id identity.Identity, ttl time.Duration) ([]*x509.Certificate, error)
	// TrustBundle returns every root workloads should trust.
	TrustBundle() []*x509.Certificate
}

// Metrics counts the outcome of every request; *metrics.ControlPlane implements it.
type Metrics interface {
	CertIssued()
	// CertRefused counts a refusal; reason is one of the metrics.Refused* values.
	CertRefused(reason string)
}

// Config configures a Server.
type Config struct {
	CA            CertificateAuthority
	Authenticator authn.Authenticator
	// Metrics, when set, counts issued certificates and refusals by reason.
	Metrics Metrics
	Logger  *slog.Logger
}

// Server implements IstioCertificateService.
type Server struct {
	pb.UnimplementedIstioCertificateServiceServer
	ca      CertificateAuthority
	auth    authn.Authenticator
	metrics Metrics
	log     *slog.Logger
}

// New returns a Server. CA and Authenticator are required.
func New(cfg Config) (*Server, error) {
	if cfg.CA == nil || cfg.Authenticator == nil {
		return nil, errors.New("caservice: CA and Authenticator are required")
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	if cfg.Metrics == nil {
		cfg.Metrics = nopMetrics{}
	}
	return &Server{ca: cfg.CA, auth: cfg.Authenticator, metrics: cfg.Metrics, log: cfg.Logger}, nil
}

type nopMetrics struct{}

func (nopMetrics) CertIssued()        {}
func (nopMetrics) CertRefused(string) {}

// reasonCancelled labels requests that ended because the caller went away: not the
// CA's refusal, but counted so that issued + refused covers every request.
const reasonCancelled = "cancelled"

// Register adds the service to gs.
func (s *Server) Register(gs grpc.ServiceRegistrar) {
	pb.RegisterIstioCertificateServiceServer(gs, s)
}

// Metadata keys Istio's agents send that meshguard reads but does not act on.
const (
	// clusterIDKey carries the agent's cluster ID ("ClusterID", lower-cased by gRPC). A
	// single-cluster CA has nothing to do with it.
	clusterIDKey = "clusterid"
	// impersonatedIdentityKey is the request metadata field a node agent (ztunnel) sets to
	// ask for another workload's certificate. meshguard does not delegate identities.
	impersonatedIdentityKey = "ImpersonatedIdentity"
)

// CreateCertificate implements IstioCertificateService.
func (s *Server) CreateCertificate(ctx context.Context, req *pb.IstioCertificateRequest) (*pb.IstioCertificateResponse, error) {
	cred := authn.CredentialsFromGRPC(ctx)
	attrs := []any{slog.String("caller", cred.RemoteAddr)}
	if md, ok := metadata.FromIncomingContext(ctx); ok {
		if v := md.Get(clusterIDKey); len(v) > 0 {
			attrs = append(attrs, slog.String("cluster_id", v[0]))
		}
	}
	refuse := func(reason string, code codes.Code, public string, cause error, extra ...any) error {
		s.metrics.CertRefused(reason)
		args := slices.Concat(attrs, extra, []any{slog.String("reason", reason), slog.String("code", code.String()), slog.Any("error", cause)})
		s.log.WarnContext(ctx, "certificate request refused", args...)
		return status.Error(code, public)
	}

	caller, err := s.auth.Authenticate(ctx, cred)
	if err != nil {
		// Authenticator errors are written to be shown to the caller.
		return nil, refuse(metrics.RefusedAuthentication, codes.Unauthenticated, "authentication failed: "+err.Error(), err)
	}
	attrs = append(attrs, slog.String("identity", caller.Identity.String()), slog.String("auth", caller.Method))

	if imp := req.GetMetadata().GetFields()[impersonatedIdentityKey].GetStringValue(); imp != "" && imp != caller.Identity.String() {
		return nil, refuse(metrics.RefusedIdentity, codes.PermissionDenied,
			fmt.Sprintf("%s may not request a certificate for %q: meshguard issues only the caller's own identity", caller.Identity, imp),
			errors.New("impersonation requested"), slog.String("impersonated", imp))
	}
	if req.GetCsr() == "" {
		return nil, refuse(metrics.RefusedCSRInvalid, codes.InvalidArgument, "csr is empty: send a PEM CERTIFICATE REQUEST", errors.New("empty CSR"))
	}
	if req.GetValidityDuration() < 0 {
		return nil, refuse(metrics.RefusedTTL, codes.InvalidArgument, fmt.Sprintf("validity_duration %d is negative: send seconds, or 0 for the default", req.GetValidityDuration()), errors.New("negative TTL"))
	}
	ttl := ttlFromSeconds(req.GetValidityDuration())

	chain, err := s.ca.SignCSR(ctx, []byte(req.GetCsr()), caller.Identity, ttl)
	switch {
	case err == nil:
	case errors.Is(err, ca.ErrBadRequest):
		return nil, refuse(metrics.RefusedCSRInvalid, codes.InvalidArgument, err.Error(), err)
	case errors.Is(err, ca.ErrNotPermitted):
		return nil, refuse(metrics.RefusedIdentity, codes.PermissionDenied, err.Error(), err)
	case ctx.Err() != nil:
		return nil, refuse(reasonCancelled, status.FromContextError(ctx.Err()).Code(), "request cancelled", err)
	default:
		// The cause may name files or keys: log it, tell the caller only where to look.
		return nil, refuse(metrics.RefusedSigning, codes.Internal, "certificate signing failed on the control plane; see its log", err)
	}
	leaf := chain[0]
	resp := &pb.IstioCertificateResponse{CertChain: make([]string, 0, len(chain)+1)}
	for _, c := range chain {
		resp.CertChain = append(resp.CertChain, string(pki.EncodeCertsPEM(c)))
	}
	// The last entry is the whole trust bundle: Istio's agent takes it as its roots, so a
	// second root during rotation reaches every workload.
	resp.CertChain = append(resp.CertChain, string(pki.EncodeCertsPEM(s.ca.TrustBundle()...)))
	s.metrics.CertIssued()
	s.log.InfoContext(ctx, "certificate issued", append(attrs,
		slog.String("serial", leaf.SerialNumber.Text(16)),
		slog.Time("not_after", leaf.NotAfter),
		slog.Duration("requested_ttl", ttl),
	)...)
	return resp, nil
}

// ttlFromSeconds converts validity_duration, saturating instead of overflowing; the CA caps it.
func ttlFromSeconds(sec int64) time.Duration {
	if sec > math.MaxInt64/int64(time.Second) {
		return time.Duration(math.MaxInt64)
	}
	return time.Duration(sec) * time.Second
}
