package pki

import (
	"bytes"
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/rsa"
	"crypto/x509"
	"encoding/pem"
	"fmt"
)

// KeyType names a private key algorithm and size meshguard generates.
type KeyType int

// The key types meshguard generates. ECDSA P-256 is the default for workloads.
const (
	KeyECP256 KeyType = iota + 1
	KeyECP384
	KeyRSA2048
)

// String returns the flag spelling of kt: "ec-p256", "ec-p384" or "rsa-2048".
func (kt KeyType) String() string {
	switch kt {
	case KeyECP256:
		return "ec-p256"
	case KeyECP384:
		return "ec-p384"
	case KeyRSA2048:
		return "rsa-2048"
	}
	return fmt.Sprintf("KeyType(%d)", int(kt))
}

// ParseKeyType parses "ec-p256", "ec-p384" or "rsa-2048".
func ParseKeyType(s string) (KeyType, error) {
	switch s {
	case "ec-p256":
		return KeyECP256, nil
	case "ec-p384":
		return KeyECP384, nil
	case "rsa-2048":
		return KeyRSA2048, nil
	}
	return 0, fmt.Errorf("key type %q: want ec-p256, ec-p384 or rsa-2048", s)
}

// GenerateKey returns a new private key of type kt.
func GenerateKey(kt KeyType) (crypto.Signer, error) {
	switch kt {
	case KeyECP256:
		return ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	case KeyECP384:
		return ecdsa.GenerateKey(elliptic.P384(), rand.Reader)
	case KeyRSA2048:
		return rsa.GenerateKey(rand.Reader, 2048)
	}
	return nil, fmt.Errorf("generate key: %v: %w", kt, ErrUnsupportedKey)
}

// CheckPublicKey accepts ECDSA P-256 and P-384 and RSA keys of at least 2048 bits, the
// keys meshguard's CA signs for; anything else wraps ErrUnsupportedKey.
func CheckPublicKey(pub crypto.PublicKey) error {
	switch k := pub.(type) {
	case *ecdsa.PublicKey:
		if k.Curve == elliptic.P256() || k.Curve == elliptic.P384() {
			return nil
		}
		return fmt.Errorf("ECDSA curve %s: %w", k.Curve.Params().Name, ErrUnsupportedKey)
	case *rsa.PublicKey:
		if k.N.BitLen() >= 2048 {
			return nil
		}
		return fmt.Errorf("RSA %d bits: %w", k.N.BitLen(), ErrUnsupportedKey)
	}
	return fmt.Errorf("%s: %w", DescribePublicKey(pub), ErrUnsupportedKey)
}

// DescribePublicKey returns a short human description such as "ECDSA P-256" or "RSA 2048".
func DescribePublicKey(pub crypto.PublicKey) string {
	switch k := pub.(type) {
	case *ecdsa.PublicKey:
		return "ECDSA " + k.Curve.Params().Name
	case *rsa.PublicKey:
		return fmt.Sprintf("RSA %d", k.N.BitLen())
	case nil:
		return "no key"
	}
	return fmt.Sprintf("%T", pub)
}

// EncodeKeyPEM encodes key as a PKCS#8 "PRIVATE KEY" PEM block.
func EncodeKeyPEM(key crypto.Signer) ([]byte, error) {
	der, err := x509.MarshalPKCS8PrivateKey(key)
	if err != nil {
		return nil, fmt.Errorf("encode private key: %w", err)
	}
	return pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: der}), nil
}

// ParseKeyPEM parses the first private key in b. PKCS#8 ("PRIVATE KEY") is what meshguard
// writes; SEC 1 ("EC PRIVATE KEY") and PKCS#1 ("RSA PRIVATE KEY") are also accepted
// because Istio's and openssl's tooling write them into plug-in CA directories.
func ParseKeyPEM(b []byte) (crypto.Signer, error) {
	rest := b
	for n := 1; ; n++ {
		var block *pem.Block
		block, rest = pem.Decode(rest)
		if block == nil {
			return nil, fmt.Errorf("parse private key: %w", ErrNoPEM)
		}
		var (
			key any
			err error
		)
		switch block.Type {
		case "PRIVATE KEY":
			key, err = x509.ParsePKCS8PrivateKey(block.Bytes)
		case "EC PRIVATE KEY":
			key, err = x509.ParseECPrivateKey(block.Bytes)
		case "RSA PRIVATE KEY":
			key, err = x509.ParsePKCS1PrivateKey(block.Bytes)
		case "EC PARAMETERS":
			continue // openssl ecparam writes these before the key
		default:
			return nil, fmt.Errorf("parse private key: PEM block %d: type %q is not a private key", n, block.Type)
		}
		if err != nil {
			return nil, fmt.Errorf("parse private key: PEM block %d (%s): %w", n, block.Type, err)
		}
		s, ok := key.(crypto.Signer)
		if !ok {
			return nil, fmt.Errorf("parse private key: PEM block %d: %T cannot sign", n, key)
		}
		if err := CheckPublicKey(s.Public()); err != nil {
			return nil, fmt.Errorf("parse private key: PEM block %d: %w", n, err)
		}
		return s, nil
	}
}

// KeyMatchesCert reports whether key is the private key for cert's public key.
func KeyMatchesCert(key crypto.Signer, cert *x509.Certificate) bool {
	type equaler interface{ Equal(crypto.PublicKey) bool }
	pub, ok := key.Public().(equaler)
	if ok && pub.Equal(cert.PublicKey) {
		return true
	}
	// Fall back to comparing encodings for key types without Equal.
	a, err1 := x509.MarshalPKIXPublicKey(key.Public())
	b, err2 := x509.MarshalPKIXPublicKey(cert.PublicKey)
	return err1 == nil && err2 == nil && bytes.Equal(a, b)
}
