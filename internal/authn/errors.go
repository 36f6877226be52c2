package authn

import "errors"

// ErrNoCredentials means the caller presented nothing this authenticator handles (no
// bearer token, no client certificate). Chain moves on to the next authenticator; any
// other error means a credential was presented and refused.
var ErrNoCredentials = errors.New("no credentials")
