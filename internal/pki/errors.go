package pki

import "errors"

// ErrNoPEM is returned when input that should hold PEM blocks holds none.
var ErrNoPEM = errors.New("no PEM data found")

// ErrUnsupportedKey is returned for a key type or size meshguard does not issue or accept:
// only ECDSA P-256, ECDSA P-384 and RSA of at least 2048 bits are.
var ErrUnsupportedKey = errors.New("unsupported key: want ECDSA P-256, ECDSA P-384 or RSA >= 2048 bits")
