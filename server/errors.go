package server

import (
	"errors"
	"fmt"

	"google.golang.org/genproto/googleapis/rpc/errdetails"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
)

// ErrorDomain is the google.rpc.ErrorInfo domain of every error the KMS
// returns, so clients can tell the KMS's reasons from a proxy's.
const ErrorDomain = "attested-kms.v1"

// Reasons that are not produced by a leaf package.
const (
	ReasonBadRequest       = "BAD_REQUEST"
	ReasonWrappingKey      = "WRAPPING_KEY_INVALID"
	ReasonBinding          = "BINDING_MISMATCH"
	ReasonPolicy           = "POLICY_DENIED"
	ReasonKeySetNotFound   = "KEYSET_NOT_FOUND"
	ReasonKeyNotFound      = "KEY_NOT_FOUND"
	ReasonKeyDisabled      = "KEY_DISABLED"
	ReasonKeyNotReleasable = "KEY_NOT_RELEASABLE"
	ReasonUnavailable      = "UNAVAILABLE"
	// ReasonKEKDisabled: the key set's root KEK was disabled or deleted, or
	// the KMS's access to it revoked, by its owner.
	ReasonKEKDisabled = "KEK_DISABLED"
	// ReasonKEKUnavailable: the KEK could not be reached for longer than
	// the revalidation interval.
	ReasonKEKUnavailable = "KEK_UNAVAILABLE"
	ReasonInternal       = "INTERNAL"
)

// decisionError is a refusal with everything the log line, the audit
// record and the gRPC status need. Message is safe to send to the caller:
// it never contains tokens, nonces or key material.
type decisionError struct {
	code    codes.Code
	reason  string
	message string
	cause   error
}

func (e *decisionError) Error() string { return e.reason + ": " + e.message }
func (e *decisionError) Unwrap() error { return e.cause }

func refuse(code codes.Code, reason string, format string, args ...any) *decisionError {
	return &decisionError{code: code, reason: reason, message: fmt.Sprintf(format, args...)}
}

func refuseErr(code codes.Code, reason string, err error) *decisionError {
	return &decisionError{code: code, reason: reason, message: err.Error(), cause: err}
}

// grpcStatus converts a decision error to a status carrying ErrorInfo.
func grpcStatus(err error) error {
	var d *decisionError
	if !errors.As(err, &d) {
		d = &decisionError{code: codes.Internal, reason: ReasonInternal, message: "internal error"}
	}
	st := status.New(d.code, d.message)
	if withInfo, err := st.WithDetails(&errdetails.ErrorInfo{Reason: d.reason, Domain: ErrorDomain}); err == nil {
		st = withInfo
	}
	return st.Err()
}
