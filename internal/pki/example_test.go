package pki_test

import (
	"crypto/x509"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/meshguard/meshguard/internal/pki"
)

// LoadCADir checks an Istio plug-in CA directory before anything signs with it, and a
// refusal names the directory, the file and the problem.
func ExampleLoadCADir() {
	now := time.Date(2026, 3, 1, 12, 0, 0, 0, time.UTC)
	rootKey, _ := pki.GenerateKey(pki.KeyECP256)
	root, _ := pki.CreateRoot(rootKey, pki.CAOptions{CommonName: "example root", TTL: 24 * time.Hour, Now: now})
	interKey, _ := pki.GenerateKey(pki.KeyECP256)
	inter, _ := pki.CreateIntermediate(root, rootKey, interKey.Public(), pki.CAOptions{CommonName: "example intermediate", TTL: time.Hour, Now: now})

	dir, _ := os.MkdirTemp("", "cacerts")
	defer os.RemoveAll(dir)
	_ = pki.WriteCADir(dir, &pki.CADir{Cert: inter, Key: interKey, Chain: []*x509.Certificate{inter, root}, Roots: []*x509.Certificate{root}})

	d, err := pki.LoadCADir(dir, now)
	if err != nil {
		fmt.Println(err)
		return
	}
	for _, c := range d.Chain {
		fmt.Println(c.Subject.CommonName)
	}

	// Another key in ca-key.pem: refused, before any certificate is signed with it.
	other, _ := pki.GenerateKey(pki.KeyECP256)
	b, _ := pki.EncodeKeyPEM(other)
	_ = pki.WriteFileAtomic(filepath.Join(dir, pki.CAKeyFile), b, 0o600)
	_, err = pki.LoadCADir(dir, now)
	fmt.Println(strings.ReplaceAll(err.Error(), dir, "DIR"))
	// Output:
	// example intermediate
	// example root
	// CA directory DIR: ca-key.pem does not match the public key of ca-cert.pem ("CN=example intermediate")
}
