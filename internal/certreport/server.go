package certreport

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"slices"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/types/known/emptypb"
	"google.golang.org/protobuf/types/known/structpb"

	"github.com/meshguard/meshguard/internal/authn"
	"github.com/meshguard/meshguard/internal/identity"
)

// Source lists the certificates the mesh depends on, as of now.
type Source interface {
	Certificates() []Cert
}

// SourceFunc adapts a function to Source.
type SourceFunc func() []Cert

// Certificates calls f.
func (f SourceFunc) Certificates() []Cert { return f() }

// ServerConfig configures a Server. Source and Authenticator are required.
type ServerConfig struct {
	Source Source
	// Authenticator verifies the caller's mesh client certificate (authn/peercert); it is
	// never shown a bearer token.
	Authenticator authn.Authenticator
	// Operators may list certificates. Empty means nobody.
	Operators []identity.Identity
	Logger    *slog.Logger
}

// Server serves the certificate inventory to operators.
type Server struct {
	cfg ServerConfig
	log *slog.Logger
}

// NewServer checks cfg and returns a Server.
func NewServer(cfg ServerConfig) (*Server, error) {
	if cfg.Source == nil || cfg.Authenticator == nil {
		return nil, errors.New("certreport: server needs a certificate source and an authenticator")
	}
	log := cfg.Logger
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	return &Server{cfg: cfg, log: log}, nil
}

// The gRPC names. The response is a google.protobuf.Struct holding the JSON of
// wireList, so that no generated code is needed for one read-only call.
const (
	serviceName = "meshguard.operator.v1.CertificateInventory"
	listMethod  = "/" + serviceName + "/List"
)

// wireList is the response body. Version lets a newer ctl refuse an older layout.
type wireList struct {
	Version      int    `json:"version"`
	Certificates []Cert `json:"certificates"`
}

const wireVersion = 1

type inventoryServer interface {
	list(ctx context.Context) (*structpb.Struct, error)
}

var serviceDesc = grpc.ServiceDesc{
	ServiceName: serviceName,
	HandlerType: (*inventoryServer)(nil),
	Methods: []grpc.MethodDesc{{
		MethodName: "List",
		Handler: func(srv any, ctx context.Context, dec func(any) error, _ grpc.UnaryServerInterceptor) (any, error) {
			if err := dec(new(emptypb.Empty)); err != nil {
				return nil, err
			}
			return srv.(inventoryServer).list(ctx)
		},
	}},
	Metadata: "meshguard/operator/v1/certificates",
}

// Register adds the inventory service to a gRPC server.
func (s *Server) Register(r grpc.ServiceRegistrar) { r.RegisterService(&serviceDesc, s) }

func (s *Server) list(ctx context.Context) (*structpb.Struct, error) {
	cred := authn.CredentialsFromGRPC(ctx)
	cred.BearerToken = ""
	caller, err := s.cfg.Authenticator.Authenticate(ctx, cred)
	if err != nil {
		s.log.Warn("certificate inventory refused", "remote", cred.RemoteAddr, "err", err)
		return nil, status.Errorf(codes.Unauthenticated, "certificate inventory: a mesh client certificate is required: %v", err)
	}
	if !slices.Contains(s.cfg.Operators, caller.Identity) {
		s.log.Warn("certificate inventory refused: not an operator", "identity", caller.Identity.String())
		return nil, status.Errorf(codes.PermissionDenied, "certificate inventory: %s is not an operator identity; it needs a certificate for one of the control plane's operators", caller.Identity)
	}
	b, err := json.Marshal(wireList{Version: wireVersion, Certificates: s.cfg.Source.Certificates()})
	if err != nil {
		return nil, status.Errorf(codes.Internal, "certificate inventory: encode: %v", err)
	}
	out := new(structpb.Struct)
	if err := out.UnmarshalJSON(b); err != nil {
		return nil, status.Errorf(codes.Internal, "certificate inventory: encode: %v", err)
	}
	return out, nil
}

// Fetch asks the control plane on cc (authenticated as an operator) for its certificate
// inventory.
func Fetch(ctx context.Context, cc grpc.ClientConnInterface) ([]Cert, error) {
	out := new(structpb.Struct)
	if err := cc.Invoke(ctx, listMethod, new(emptypb.Empty), out); err != nil {
		return nil, fmt.Errorf("list certificates: %w", err)
	}
	b, err := out.MarshalJSON()
	if err != nil {
		return nil, fmt.Errorf("list certificates: %w", err)
	}
	var l wireList
	if err := json.Unmarshal(b, &l); err != nil {
		return nil, fmt.Errorf("list certificates: decode response: %w", err)
	}
	if l.Version != wireVersion {
		return nil, fmt.Errorf("list certificates: the control plane answers in layout version %d; this ctl reads version %d", l.Version, wireVersion)
	}
	return l.Certificates, nil
}
