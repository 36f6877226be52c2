// Package caservice serves Istio's certificate protocol,
// istio.v1.auth.IstioCertificateService/CreateCertificate (istio.io/api/security/v1alpha1):
// authenticate the caller (authn.Authenticator), take its identity, have the
// CertificateAuthority sign the CSR for that identity, and answer with the chain leaf
// first and the trust bundle last, as Istio's agents expect. It translates failures into
// gRPC status codes with messages a person can act on, and logs every issuance and
// refusal.
//
// It defines CertificateAuthority, what it needs from a CA (implemented by *ca.Authority),
// and imports ca only for its error sentinels. A Server is safe for concurrent use.
package caservice
