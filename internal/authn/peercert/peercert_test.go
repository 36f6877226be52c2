package peercert_test

import (
	"context"
	"crypto/x509"
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/meshguard/meshguard/internal/authn"
	"github.com/meshguard/meshguard/internal/authn/peercert"
	"github.com/meshguard/meshguard/internal/meshtest"
)

func TestAuthenticate(t *testing.T) {
	mesh := meshtest.NewCA(t, "cluster.local")
	other := meshtest.NewCA(t, "other.example")
	web := mesh.ID("default", "web")
	valid := mesh.Issue(t, web, time.Hour)
	expired := mesh.IssueExpired(t, web)
	foreignTD := other.Issue(t, other.ID("default", "web"), time.Hour)
	noURI := *valid.Leaf
	noURI.URIs = nil

	a := peercert.New("cluster.local", nil)
	for _, tc := range []struct {
		name    string
		chains  [][]*x509.Certificate
		wantErr string
		noCreds bool
	}{
		{"valid", [][]*x509.Certificate{valid.Chain}, "", false},
		{"no certificate", nil, "no credentials", true},
		{"empty chain", [][]*x509.Certificate{{}}, "no credentials", true},
		{"expired since handshake", [][]*x509.Certificate{expired.Chain}, "expired", false},
		{"other trust domain", [][]*x509.Certificate{foreignTD.Chain}, "outside trust domain", false},
		{"no SPIFFE ID", [][]*x509.Certificate{{&noURI}}, "no URI SAN", false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got, err := a.Authenticate(context.Background(), authn.Credentials{VerifiedChains: tc.chains})
			if tc.wantErr == "" {
				if err != nil || got.Identity != web || got.Method != peercert.Method {
					t.Fatalf("Authenticate = %+v, %v; want %v", got, err, web)
				}
				return
			}
			if err == nil || !strings.Contains(err.Error(), tc.wantErr) || !got.Identity.IsZero() {
				t.Fatalf("Authenticate = %+v, %v; want error containing %q", got, err, tc.wantErr)
			}
			if errors.Is(err, authn.ErrNoCredentials) != tc.noCreds {
				t.Errorf("ErrNoCredentials = %v, want %v", !tc.noCreds, tc.noCreds)
			}
		})
	}
}
