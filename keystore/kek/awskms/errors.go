package awskms

import (
	"context"
	"errors"
	"fmt"
	"net/http"

	"github.com/attested-kms/attested-kms/keystore/kek"
)

// errorClasses maps AWS error codes (KMS, and STS for AssumeRole) to the kek
// error classes. Codes not listed are classified by their HTTP status.
var errorClasses = map[string]error{
	// The owner's off switch: key disabled, pending deletion (or another
	// state the owner put it in), deleted, or the KMS identity's permission
	// or role trust revoked.
	"DisabledException":        kek.ErrKeyDisabled,
	"KMSInvalidStateException": kek.ErrKeyDisabled,
	"NotFoundException":        kek.ErrKeyDisabled,
	"AccessDeniedException":    kek.ErrKeyDisabled,
	"AccessDenied":             kek.ErrKeyDisabled, // STS AssumeRole refused

	// The record does not open under this key and encryption context.
	"InvalidCiphertextException": kek.ErrAuthentication,
	"IncorrectKeyException":      kek.ErrAuthentication,

	// The key is not a symmetric encryption key, or the request is one the
	// service will never accept as sent: configuration, not availability.
	"InvalidKeyUsageException":      kek.ErrUnsupported,
	"ValidationException":           kek.ErrUnsupported,
	"UnsupportedOperationException": kek.ErrUnsupported,

	// Throttling, service faults and key stores that are temporarily
	// unreachable: retry later.
	"ThrottlingException":         kek.ErrUnavailable,
	"Throttling":                  kek.ErrUnavailable, // STS
	"LimitExceededException":      kek.ErrUnavailable,
	"RequestLimitExceeded":        kek.ErrUnavailable,
	"DependencyTimeoutException":  kek.ErrUnavailable,
	"KMSInternalException":        kek.ErrUnavailable,
	"KeyUnavailableException":     kek.ErrUnavailable,
	"ServiceUnavailable":          kek.ErrUnavailable,
	"ServiceUnavailableException": kek.ErrUnavailable,
	"InternalFailure":             kek.ErrUnavailable,
	"IDPCommunicationError":       kek.ErrUnavailable,

	// The KMS's own credentials were refused or have expired. That is the
	// operator's to fix (or a refresh away), not the key owner's decision,
	// so it must not read as the off switch.
	"UnrecognizedClientException": kek.ErrUnavailable,
	"InvalidClientTokenId":        kek.ErrUnavailable,
	"InvalidSignatureException":   kek.ErrUnavailable,
	"SignatureDoesNotMatch":       kek.ErrUnavailable,
	"IncompleteSignature":         kek.ErrUnavailable,
	"MissingAuthenticationToken":  kek.ErrUnavailable,
	"ExpiredTokenException":       kek.ErrUnavailable,
	"ExpiredToken":                kek.ErrUnavailable,
	"RequestExpired":              kek.ErrUnavailable,
	"RegionDisabledException":     kek.ErrUnavailable,
}

// apiError is the part of smithy.APIError needed here; matching on the
// method set keeps the SDK's error types out of this package's API.
type apiError interface {
	error
	ErrorCode() string
}

type httpStatusError interface {
	error
	HTTPStatusCode() int
}

// classify returns the kek error class of an SDK error. Everything that is
// not an answer from the service (connection refused or reset, TLS or DNS
// failures, timeouts, malformed responses) is ErrUnavailable.
func classify(err error) error {
	var ae apiError
	if errors.As(err, &ae) {
		if class, ok := errorClasses[ae.ErrorCode()]; ok {
			return class
		}
	}
	var he httpStatusError
	if errors.As(err, &he) {
		switch code := he.HTTPStatusCode(); {
		case code == http.StatusTooManyRequests || code >= 500:
			return kek.ErrUnavailable
		case code == http.StatusForbidden:
			// An unlisted code with 403 is still a refusal to let this
			// identity use the key.
			return kek.ErrKeyDisabled
		case code >= 400:
			return kek.ErrUnsupported
		}
	}
	return kek.ErrUnavailable
}

// callError wraps an SDK error with its class. The SDK's message names the
// operation, HTTP status, request id and the service's error code and
// message; none of them carries key material or credentials.
func (p *Provider) callError(ctx context.Context, op string, err error) error {
	class := classify(err)
	if class == kek.ErrKeyDisabled && p.roleCreds != nil {
		// The owner may have revoked the role's sessions; cached
		// credentials would stay refused until they expire even after the
		// owner restores access, so assume the role afresh next time.
		p.roleCreds.Invalidate()
	}
	if class == kek.ErrUnavailable && errors.Is(ctx.Err(), context.Canceled) {
		// The caller gave up; that is not the provider being down.
		return fmt.Errorf("awskms: %s under %s: %w", op, p.keyID, err)
	}
	return fmt.Errorf("awskms: %s under %s: %w: %w", op, p.keyID, class, err)
}
