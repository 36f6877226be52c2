package agent

import "errors"

// ErrNoCertificate means the agent has not obtained a certificate yet.
var ErrNoCertificate = errors.New("no workload certificate yet")

// ErrExpired means the held certificate has expired and is no longer served; the agent
// keeps trying to renew it.
var ErrExpired = errors.New("workload certificate expired")

// ErrRejected means the CA refused the agent's credentials: the bootstrap token (expired,
// for another identity, badly signed) or the client certificate.
var ErrRejected = errors.New("CA rejected the credentials")

// ErrBadResponse means the CA's answer could not be used: a chain that does not parse,
// does not verify against the roots it came with, or is not for the key the agent holds.
var ErrBadResponse = errors.New("unusable CA response")
