package ca_test

import (
	"context"
	"errors"
	"testing"

	"github.com/meshguard/meshguard/internal/ca"
	"github.com/meshguard/meshguard/internal/pki"
)

// FuzzSignCSR feeds arbitrary CSR bytes to the Authority: each input is either refused as
// a bad request with no certificate, or yields a leaf whose only name is the identity the
// Authority was told, never anything the CSR asked for.
func FuzzSignCSR(f *testing.F) {
	a, _, _ := newRootAuthority(f, nil)
	f.Add(mustCSR(f, pki.KeyECP256, "spiffe://cluster.local/ns/kube-system/sa/admin"))
	f.Add(mustCSR(f, pki.KeyECP384, ""))
	f.Add([]byte("-----BEGIN CERTIFICATE REQUEST-----\nAAAA\n-----END CERTIFICATE REQUEST-----\n"))
	f.Add([]byte{})
	f.Fuzz(func(t *testing.T, csr []byte) {
		chain, err := a.SignCSR(context.Background(), csr, web, 0)
		if err != nil {
			if !errors.Is(err, ca.ErrBadRequest) || chain != nil {
				t.Fatalf("SignCSR refused with %v (chain %d), want ErrBadRequest and no chain", err, len(chain))
			}
			return
		}
		leaf := chain[0]
		if len(leaf.URIs) != 1 || leaf.URIs[0].String() != web.String() || len(leaf.DNSNames)+len(leaf.IPAddresses)+len(leaf.EmailAddresses) != 0 || leaf.IsCA {
			t.Fatalf("leaf names %v %v %v (CA %v), want only %s", leaf.URIs, leaf.DNSNames, leaf.IPAddresses, leaf.IsCA, web)
		}
	})
}
