package hcvault

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"strings"

	"github.com/hashicorp/vault/api"

	"github.com/attested-kms/attested-kms/keystore/kek"
)

// maxDetail bounds how much of Vault's error text goes into our errors:
// enough to diagnose, never a whole response body.
const maxDetail = 200

// op names the transit operation for error messages.
type op string

const (
	opEncrypt op = "encrypt"
	opDecrypt op = "decrypt"
	opLogin   op = "login"
)

// classify maps an error from the Vault client to exactly one kek error
// class. what says which call failed (e.g. "decrypt transit/decrypt/kek").
//
// Vault answers every refusal with an HTTP status and a list of messages
// ({"errors":[...]}); transit reports all request problems as 400 and tells
// them apart only by message, so 400s are classified by Vault's wording.
func classify(ctx context.Context, o op, what string, err error) error {
	var re *api.ResponseError
	if !errors.As(err, &re) {
		// No HTTP answer: connection refused or reset, TLS failure, DNS,
		// or the deadline expired while retrying. All are outages from
		// the KMS's point of view.
		if ctxErr := ctx.Err(); ctxErr != nil {
			if errors.Is(ctxErr, context.Canceled) {
				// The caller gave up; that is not a provider failure.
				return fmt.Errorf("hcvault: %s: %w", what, ctxErr)
			}
			return fmt.Errorf("hcvault: %s: %w: %w", what, kek.ErrUnavailable, ctxErr)
		}
		return fmt.Errorf("hcvault: %s: %w: %w", what, kek.ErrUnavailable, err)
	}
	detail := summary(re)
	class := classifyStatus(o, re.StatusCode, re.Errors)
	return fmt.Errorf("hcvault: %s: HTTP %d: %s: %w", what, re.StatusCode, detail, class)
}

// classifyStatus is the status and message table behind classify.
func classifyStatus(o op, status int, msgs []string) error {
	switch {
	case status == http.StatusForbidden || status == http.StatusUnauthorized:
		// The KMS's token lacks the capability (the owner revoked the
		// policy), or the token itself was revoked or expired. Vault says
		// "permission denied" for all of these.
		return kek.ErrKeyDisabled
	case status == http.StatusNotFound:
		// The transit mount (or the key, on some Vault versions) is gone.
		return kek.ErrKeyDisabled
	case status == http.StatusBadRequest:
		return classifyBadRequest(o, msgs)
	case status == http.StatusTooManyRequests:
		// A rate limit quota. The client already retried.
		return kek.ErrUnavailable
	case status >= 500:
		// 503 sealed or standby without forwarding, 500 internal, 502/504
		// from a load balancer.
		return kek.ErrUnavailable
	default:
		// 405, 412 (replication not caught up) and other oddities: the
		// service is not answering as it should; retry later.
		return kek.ErrUnavailable
	}
}

func classifyBadRequest(o op, msgs []string) error {
	for _, m := range msgs {
		m = strings.ToLower(m)
		if o == opLogin {
			// Kubernetes auth answers 400 for an unknown role and for a
			// service account the role no longer binds: the owner has
			// withdrawn the KMS's identity.
			if strings.Contains(m, "invalid role name") || strings.Contains(m, "not authorized") ||
				strings.Contains(m, "permission denied") {
				return kek.ErrKeyDisabled
			}
			continue
		}
		switch {
		case strings.Contains(m, "encryption key not found"):
			// Decrypt under a deleted key.
			return kek.ErrKeyDisabled
		case strings.Contains(m, "disallowed by policy (too old)"):
			// The owner raised min_decryption_version above the version
			// that wrapped this key: an off switch for old records.
			return kek.ErrKeyDisabled
		case strings.Contains(m, "non-aead cipher suite"), strings.Contains(m, "not supported for key type"):
			// The key cannot bind associated data (an RSA or other
			// non-AEAD key): a configuration error, not an outage.
			return kek.ErrUnsupported
		case o == opDecrypt && (strings.HasPrefix(m, "invalid ciphertext") ||
			strings.Contains(m, "message authentication failed") ||
			strings.Contains(m, "invalid convergent nonce") ||
			strings.Contains(m, "missing ciphertext")):
			// Tampered, truncated or foreign ciphertext, or an AAD
			// mismatch ("cipher: message authentication failed").
			return kek.ErrAuthentication
		}
	}
	// Any other 400 is a request Vault did not expect from us; it is
	// neither the owner's off switch nor proof of tampering, so report it
	// as retryable unavailability, with Vault's message for the operator.
	return kek.ErrUnavailable
}

// summary renders Vault's error messages for our error strings, bounded in
// length. Vault's messages describe the failure; they never echo request
// bodies, so no plaintext or token can appear here.
func summary(re *api.ResponseError) string {
	if re.RawError {
		// Not Vault's JSON: a proxy page or garbage; do not copy it.
		return "non-Vault error response"
	}
	s := strings.Join(re.Errors, "; ")
	if s == "" {
		s = http.StatusText(re.StatusCode)
	}
	if len(s) > maxDetail {
		s = s[:maxDetail] + "..."
	}
	return s
}
