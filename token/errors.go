package token

import (
	"errors"
	"fmt"
)

// Reason is a machine-readable cause of a token verification failure. The
// release service copies it into google.rpc.ErrorInfo and the audit record so
// callers and operators can act on it without parsing English.
type Reason string

const (
	// ReasonMissing: no token was presented. Maps to Unauthenticated.
	ReasonMissing Reason = "TOKEN_MISSING"
	// ReasonMalformed: the token is not a well-formed compact JWS/JWT or a
	// required claim is missing or has the wrong type.
	ReasonMalformed Reason = "TOKEN_MALFORMED"
	// ReasonExpired: exp (plus clock skew) is in the past.
	ReasonExpired Reason = "TOKEN_EXPIRED"
	// ReasonNotYetValid: nbf or iat (minus clock skew) is in the future.
	ReasonNotYetValid Reason = "TOKEN_NOT_YET_VALID"
	// ReasonIssuer: iss is not one of the configured issuers.
	ReasonIssuer Reason = "TOKEN_ISSUER"
	// ReasonAudience: no aud value matches the issuer's configured audiences.
	ReasonAudience Reason = "TOKEN_AUDIENCE"
	// ReasonAlgorithm: the header alg is not allowed (none, HS*, or not in
	// the issuer's Algorithms).
	ReasonAlgorithm Reason = "TOKEN_ALGORITHM"
	// ReasonSignature: the kid is known but the signature does not verify.
	ReasonSignature Reason = "TOKEN_SIGNATURE"
	// ReasonUnknownKey: the kid is not in the issuer's key set, even after
	// the one refresh a verification may trigger.
	ReasonUnknownKey Reason = "TOKEN_UNKNOWN_KEY"
	// ReasonKeysUnavailable: the issuer's discovery document or JWKS could
	// not be fetched. This is the only retryable reason; map it to
	// Unavailable rather than Unauthenticated.
	ReasonKeysUnavailable Reason = "TOKEN_KEYS_UNAVAILABLE"
)

// Error is a token verification failure. Its message is written by this
// package and never contains the token or any segment of it; Err, when set,
// is an underlying cause that likewise carries no token material (network
// errors, configuration values, decoding errors without input echo).
type Error struct {
	Reason Reason
	Msg    string
	Err    error
}

func (e *Error) Error() string {
	if e.Err != nil {
		return fmt.Sprintf("%s: %s: %v", e.Reason, e.Msg, e.Err)
	}
	return fmt.Sprintf("%s: %s", e.Reason, e.Msg)
}

func (e *Error) Unwrap() error { return e.Err }

// Retryable reports whether the failure may go away without a new token:
// only an unreachable key source qualifies.
func (e *Error) Retryable() bool { return e.Reason == ReasonKeysUnavailable }

// ReasonOf returns the Reason carried by err, or "" when there is none.
func ReasonOf(err error) Reason {
	var e *Error
	if errors.As(err, &e) {
		return e.Reason
	}
	return ""
}

func newError(r Reason, msg string) *Error { return &Error{Reason: r, Msg: msg} }

func wrapError(r Reason, msg string, err error) *Error { return &Error{Reason: r, Msg: msg, Err: err} }
