package authn_test

import (
	"context"
	"errors"
	"strings"
	"testing"

	"google.golang.org/grpc/metadata"

	"github.com/meshguard/meshguard/internal/authn"
	"github.com/meshguard/meshguard/internal/identity"
)

type fixed struct {
	caller authn.Caller
	err    error
}

func (f fixed) Authenticate(context.Context, authn.Credentials) (authn.Caller, error) {
	return f.caller, f.err
}

func TestChain(t *testing.T) {
	alice := authn.Caller{Identity: identity.Identity{TrustDomain: "td", Namespace: "a", ServiceAccount: "alice"}, Method: "x"}
	none := fixed{err: authn.ErrNoCredentials}
	bad := fixed{err: errors.New("token expired")}
	for _, tc := range []struct {
		name    string
		chain   authn.Chain
		want    authn.Caller
		wantErr string
		noCreds bool
	}{
		{"empty chain fails closed", nil, authn.Caller{}, "no credentials", true},
		{"nothing presented", authn.Chain{none, none}, authn.Caller{}, "authorization: Bearer", true},
		{"first success wins", authn.Chain{none, fixed{caller: alice}}, alice, "", false},
		{"refusal then success", authn.Chain{bad, fixed{caller: alice}}, alice, "", false},
		{"refusal reported", authn.Chain{none, bad}, authn.Caller{}, "token expired", false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got, err := tc.chain.Authenticate(context.Background(), authn.Credentials{})
			if tc.wantErr == "" {
				if err != nil || got != tc.want {
					t.Fatalf("Authenticate = %+v, %v; want %+v", got, err, tc.want)
				}
				return
			}
			if err == nil || !strings.Contains(err.Error(), tc.wantErr) || got != (authn.Caller{}) {
				t.Fatalf("Authenticate = %+v, %v; want error containing %q", got, err, tc.wantErr)
			}
			if errors.Is(err, authn.ErrNoCredentials) != tc.noCreds {
				t.Errorf("errors.Is(err, ErrNoCredentials) = %v, want %v", !tc.noCreds, tc.noCreds)
			}
		})
	}
}

func TestCredentialsFromGRPC(t *testing.T) {
	for _, tc := range []struct {
		name string
		md   metadata.MD
		want string
	}{
		{"istio agent", metadata.Pairs("authorization", "Bearer abc.def.ghi", "clusterid", "Kubernetes"), "abc.def.ghi"},
		{"lower-case scheme", metadata.Pairs("authorization", "bearer tok"), "tok"},
		{"basic auth ignored", metadata.Pairs("authorization", "Basic dXNlcg=="), ""},
		{"bare bearer", metadata.Pairs("authorization", "Bearer "), ""},
		{"none", metadata.MD{}, ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			ctx := metadata.NewIncomingContext(context.Background(), tc.md)
			if got := authn.CredentialsFromGRPC(ctx).BearerToken; got != tc.want {
				t.Errorf("BearerToken = %q, want %q", got, tc.want)
			}
		})
	}
}
