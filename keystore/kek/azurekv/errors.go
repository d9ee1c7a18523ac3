package azurekv

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"strings"
	"unicode"

	"github.com/Azure/azure-sdk-for-go/sdk/azcore"
	"github.com/Azure/azure-sdk-for-go/sdk/azcore/runtime"
	"github.com/Azure/azure-sdk-for-go/sdk/azidentity"

	"github.com/attested-kms/attested-kms/keystore/kek"
)

// Operation names, as in the service's REST paths.
const (
	opWrap   = "wrapkey"
	opUnwrap = "unwrapkey"
	opGet    = "get key"
)

// callError is a failed service call. Its message is short and holds no
// key material or token; errors.Is/As reach both the kek error class and
// the SDK's error (an *azcore.ResponseError for HTTP errors).
type callError struct {
	msg   string
	class error
	cause error
}

func (e *callError) Error() string   { return e.msg }
func (e *callError) Unwrap() []error { return []error{e.class, e.cause} }

// classify maps an azkeys error to exactly one kek class:
//
//   - 400 Bad Request: on unwrap, the ciphertext does not decrypt under this
//     key version (OAEP decoding or AES key wrap integrity failed):
//     ErrAuthentication; on wrap or get, the key cannot do what was asked
//     (wrong key type or algorithm): ErrUnsupported.
//   - 401 Unauthorized, 403 Forbidden (disabled or expired key, operation
//     not permitted on the key, access policy / RBAC denies the identity,
//     vault firewall), 404 Not Found (key deleted, soft-deleted or purged):
//     ErrKeyDisabled, the owner's off switch.
//   - everything else (408, 409 while a key is being deleted or recovered,
//     429, 5xx, transport and TLS errors, credential errors, timeouts):
//     ErrUnavailable.
func (p *Provider) classify(op, version string, err error) error {
	where := op + " " + p.uri
	if version != "" && version != p.key.Version {
		where += " (version " + version + ")"
	}
	var re *azcore.ResponseError
	if errors.As(err, &re) {
		class := kek.ErrUnavailable
		switch re.StatusCode {
		case http.StatusBadRequest:
			class = kek.ErrUnsupported
			if op == opUnwrap {
				class = kek.ErrAuthentication
			}
		case http.StatusUnauthorized, http.StatusForbidden, http.StatusNotFound:
			class = kek.ErrKeyDisabled
		}
		return &callError{
			msg:   fmt.Sprintf("azurekv: %s: %s: %v", where, describe(re), class),
			class: class,
			cause: err,
		}
	}
	if errors.Is(err, context.DeadlineExceeded) || errors.Is(err, context.Canceled) {
		return &callError{msg: fmt.Sprintf("azurekv: %s: %v: %v", where, err, kek.ErrUnavailable), class: kek.ErrUnavailable, cause: err}
	}
	var authErr *azidentity.AuthenticationFailedError
	what := "request failed"
	if errors.As(err, &authErr) {
		what = "getting a token failed"
	}
	// Transport, TLS and credential errors carry no key material; their
	// text helps operators (connection refused, unknown authority, IMDS
	// unreachable) and is kept.
	return &callError{msg: fmt.Sprintf("azurekv: %s: %s: %s: %v", where, what, oneLine(err.Error(), 300), kek.ErrUnavailable), class: kek.ErrUnavailable, cause: err}
}

// describe renders a service error as "HTTP 403 Forbidden/KeyDisabled:
// Operation unwrapKey is not allowed on a disabled key." from the Key Vault
// error body {"error":{"code","message","innererror":{"code"}}}.
func describe(re *azcore.ResponseError) string {
	s := fmt.Sprintf("HTTP %d", re.StatusCode)
	var body struct {
		Error struct {
			Code       string `json:"code"`
			Message    string `json:"message"`
			InnerError *struct {
				Code string `json:"code"`
			} `json:"innererror"`
		} `json:"error"`
	}
	code := re.ErrorCode
	var msg string
	if re.RawResponse != nil {
		if b, err := runtime.Payload(re.RawResponse); err == nil && json.Unmarshal(b, &body) == nil {
			if body.Error.Code != "" {
				code = body.Error.Code
			}
			if ie := body.Error.InnerError; ie != nil && ie.Code != "" {
				code += "/" + ie.Code
			}
			msg = body.Error.Message
		}
	}
	if code != "" {
		s += " " + oneLine(code, 80)
	}
	if msg = strings.TrimRight(msg, ". "); msg != "" {
		s += ": " + oneLine(msg, 200)
	}
	return s
}

// oneLine keeps log lines single and bounded whatever a server sends.
func oneLine(s string, limit int) string {
	s = strings.Map(func(r rune) rune {
		if unicode.IsControl(r) {
			return ' '
		}
		return r
	}, s)
	if len(s) > limit {
		s = strings.ToValidUTF8(s[:limit], "") + "..."
	}
	return s
}
