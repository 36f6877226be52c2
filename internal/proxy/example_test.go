package proxy_test

import (
	"crypto/tls"
	"fmt"

	meshv1alpha1 "istio.io/api/mesh/v1alpha1"

	"github.com/meshguard/meshguard/internal/proxy"
)

// The mesh-wide TLS settings come from meshConfig.meshMTLS, in Istio's names.
func ExampleTLSSettingsFromMesh() {
	s, err := proxy.TLSSettingsFromMesh(&meshv1alpha1.MeshConfig_TLSConfig{
		MinProtocolVersion: meshv1alpha1.MeshConfig_TLSConfig_TLSV1_3,
		EcdhCurves:         []string{"X25519MLKEM768", "P-256"},
	})
	fmt.Println(tls.VersionName(s.MinVersion), s.Curves, err)

	_, err = proxy.TLSSettingsFromMesh(&meshv1alpha1.MeshConfig_TLSConfig{CipherSuites: []string{"AES128-SHA"}})
	fmt.Println(err)
	// Output:
	// TLS 1.3 [X25519MLKEM768 CurveP256] <nil>
	// meshMTLS.cipherSuites[0]: unsupported cipher suite "AES128-SHA" (supported: ECDHE AES-GCM and CHACHA20-POLY1305 suites in OpenSSL naming)
}

// Without meshMTLS the proxy offers TLS 1.2 and up, the seeds' AES-GCM suites for
// TLS 1.2, and the hybrid post-quantum key exchange first.
func ExampleDefaultTLSSettings() {
	s := proxy.DefaultTLSSettings()
	fmt.Println(tls.VersionName(s.MinVersion))
	for _, c := range s.CipherSuites {
		fmt.Println(tls.CipherSuiteName(c))
	}
	fmt.Println(s.Curves[0])
	// Output:
	// TLS 1.2
	// TLS_ECDHE_ECDSA_WITH_AES_256_GCM_SHA384
	// TLS_ECDHE_RSA_WITH_AES_256_GCM_SHA384
	// TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256
	// TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256
	// X25519MLKEM768
}
