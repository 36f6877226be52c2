package ca

import "errors"

// ErrBadRequest marks a request the CA cannot sign as given: an unsupported public key, a
// CSR whose signature fails. The requester must fix the request. Transports map it to
// "invalid argument".
var ErrBadRequest = errors.New("bad certificate request")

// ErrNotPermitted marks a request the signing policy refuses for the identity, such as an
// identity outside the CA's trust domain. Transports map it to "permission denied".
var ErrNotPermitted = errors.New("certificate request not permitted")
