package ctl

import (
	"testing"

	"github.com/meshguard/meshguard/internal/ca"
	"github.com/meshguard/meshguard/internal/identity"
	"github.com/meshguard/meshguard/internal/meshtest"
	"github.com/meshguard/meshguard/internal/pki"
)

func intermediateAuthority(t *testing.T, d *pki.CADir) *ca.Authority {
	t.Helper()
	s, roots := ca.SignerFromCADir(d)
	a, err := ca.New(ca.Config{TrustDomain: "cluster.local", Signer: s, Bundle: roots})
	if err != nil {
		t.Fatal(err)
	}
	return a
}

func requestFor(c *meshtest.Cert, id identity.Identity) ca.Request {
	return ca.Request{PublicKey: c.Key.Public(), Identity: id, DNSNames: c.Leaf.DNSNames}
}
