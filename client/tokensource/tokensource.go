// Package tokensource obtains the Azure AD (Entra ID) access token an
// enclave service sends to the KMS as "authorization: Bearer".
//
// Three sources are provided: ManagedIdentity (Azure IMDS, for confidential
// VMs), WorkloadIdentity (AKS workload identity federation) and StaticFile
// (a file kept fresh by something else). Cached wraps any of them so a
// token is reused until shortly before it expires.
//
// Tokens are bearer credentials: nothing in this package puts a token, or
// the federated client assertion, into an error message. The KMS verifies
// every token; this package only reads a token's exp claim to decide how
// long to cache it.
package tokensource

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"regexp"
	"strings"
	"time"
	"unicode"
	"unicode/utf8"
)

// Source returns an access token for the KMS. Implementations are safe for
// concurrent use.
type Source interface {
	Token(ctx context.Context) (string, error)
}

const (
	// maxResponseBytes bounds how much of a token endpoint's answer is read,
	// so a misbehaving endpoint cannot make the client buffer without limit.
	// Real token responses are a few kilobytes.
	maxResponseBytes = 1 << 20

	// defaultRequestTimeout applies only when the caller's context has no
	// deadline: a token fetch that hangs forever would stall every key
	// release behind it.
	defaultRequestTimeout = 30 * time.Second

	// maxDescriptionBytes bounds the IdP-supplied text copied into errors.
	maxDescriptionBytes = 1024
)

// HTTPError reports that a token endpoint refused to issue a token. It
// carries the OAuth 2.0 error fields (RFC 6749 section 5.2) when the
// endpoint sent them, so callers can tell configuration mistakes (400
// "Identity not found", 401 invalid_client) from transient failures (429,
// 5xx) and decide whether to retry.
type HTTPError struct {
	// Source names the endpoint: "managed identity" or "workload identity".
	Source string
	// StatusCode is the HTTP status the endpoint answered with.
	StatusCode int
	// Code is the OAuth "error" field, empty if absent.
	Code string
	// Description is the OAuth "error_description" field, truncated,
	// stripped of control characters and with anything that looks like a
	// JWT redacted. Empty if absent.
	Description string
}

func (e *HTTPError) Error() string {
	var b strings.Builder
	fmt.Fprintf(&b, "tokensource: %s: token endpoint answered HTTP %d", e.Source, e.StatusCode)
	if t := http.StatusText(e.StatusCode); t != "" {
		b.WriteString(" " + t)
	}
	if e.Code != "" {
		b.WriteString(": " + e.Code)
	}
	if e.Description != "" {
		b.WriteString(": " + e.Description)
	}
	return b.String()
}

// tokenResponse is the part of a successful token response this package
// uses. expires_in and expires_on are deliberately not decoded: IMDS sends
// them as strings, Entra ID and IMDS look-alikes as numbers, and the
// authoritative expiry is the JWT's exp claim, which is what the KMS checks
// and what Cached reads. Leaving them out means neither shape can fail
// decoding.
type tokenResponse struct {
	AccessToken string `json:"access_token"`
	TokenType   string `json:"token_type"`
}

// errorResponse is the OAuth 2.0 error body both IMDS and Entra ID send.
type errorResponse struct {
	Error       string `json:"error"`
	Description string `json:"error_description"`
}

// requestToken sends req with client and returns the access token from a
// 200 answer. secrets are values the request carried (the client
// assertion) that must not come back in an error even if the endpoint
// echoes them.
func requestToken(client *http.Client, req *http.Request, source string, secrets ...string) (string, error) {
	resp, err := client.Do(req)
	if err != nil {
		// *url.Error names the method and URL; neither carries a secret
		// because secrets only ever travel in request bodies.
		return "", fmt.Errorf("tokensource: %s: %w", source, err)
	}
	defer resp.Body.Close()

	body, err := io.ReadAll(io.LimitReader(resp.Body, maxResponseBytes+1))
	if err != nil {
		return "", fmt.Errorf("tokensource: %s: reading response (HTTP %d): %w", source, resp.StatusCode, err)
	}
	if len(body) > maxResponseBytes {
		return "", fmt.Errorf("tokensource: %s: response (HTTP %d) exceeds %d bytes", source, resp.StatusCode, maxResponseBytes)
	}

	if resp.StatusCode != http.StatusOK {
		herr := &HTTPError{Source: source, StatusCode: resp.StatusCode}
		var e errorResponse
		// A non-JSON body (an HTML page from a proxy, say) is not quoted:
		// it is unbounded in shape and could echo anything.
		if json.Unmarshal(body, &e) == nil {
			herr.Code = sanitize(e.Error, secrets)
			herr.Description = sanitize(e.Description, secrets)
		}
		return "", herr
	}

	var tr tokenResponse
	if err := json.Unmarshal(body, &tr); err != nil {
		// json errors describe types and offsets, never values, so the
		// token in a malformed body does not leak through them.
		return "", fmt.Errorf("tokensource: %s: decoding token response: %w", source, err)
	}
	if tr.TokenType != "" && !strings.EqualFold(tr.TokenType, "Bearer") {
		return "", fmt.Errorf("tokensource: %s: token type %q is not Bearer", source, sanitize(tr.TokenType, nil))
	}
	if err := checkToken(tr.AccessToken); err != nil {
		return "", fmt.Errorf("tokensource: %s: %w", source, err)
	}
	return tr.AccessToken, nil
}

// checkToken rejects values that cannot be sent as a bearer token. It
// never quotes the token.
func checkToken(tok string) error {
	if tok == "" {
		return errors.New("empty access token")
	}
	// RFC 6750 b64token is a subset of visible ASCII. Anything else (a
	// newline, a space) would corrupt the authorization header or be
	// rejected by gRPC far from the cause.
	for i := 0; i < len(tok); i++ {
		if c := tok[i]; c < 0x21 || c > 0x7e {
			return fmt.Errorf("access token has an invalid byte at offset %d", i)
		}
	}
	return nil
}

// jwtLike matches compact JWS/JWE strings: a base64url JSON header always
// begins "eyJ". Used to redact tokens an IdP echoes in error text.
var jwtLike = regexp.MustCompile(`eyJ[A-Za-z0-9_-]*(\.[A-Za-z0-9_-]*)+`)

// sanitize makes IdP-supplied text safe to put in an error: secrets and
// JWT-looking strings are redacted, control characters (log injection)
// dropped, and the result bounded.
func sanitize(s string, secrets []string) string {
	for _, sec := range secrets {
		if sec != "" {
			s = strings.ReplaceAll(s, sec, "[redacted]")
		}
	}
	s = jwtLike.ReplaceAllString(s, "[redacted]")
	s = strings.Map(func(r rune) rune {
		if unicode.IsControl(r) {
			return ' '
		}
		return r
	}, s)
	s = strings.TrimSpace(s)
	if len(s) > maxDescriptionBytes {
		cut := maxDescriptionBytes
		for cut > 0 && !utf8.RuneStart(s[cut]) {
			cut--
		}
		s = s[:cut] + "…"
	}
	return s
}

// withDefaultTimeout bounds a request whose context has no deadline.
func withDefaultTimeout(ctx context.Context) (context.Context, context.CancelFunc) {
	if _, ok := ctx.Deadline(); ok {
		return context.WithCancel(ctx)
	}
	return context.WithTimeout(ctx, defaultRequestTimeout)
}

// clientWithoutRedirects returns a shallow copy of c (or of def() when c is
// nil) that does not follow redirects. A token endpoint has no reason to
// redirect, and following one would re-send the request (for workload
// identity, a POST body holding the client assertion; for IMDS, the
// Metadata header) to wherever the redirect points.
func clientWithoutRedirects(c *http.Client, def func() *http.Client) *http.Client {
	var cc http.Client
	if c != nil {
		cc = *c
	} else {
		cc = *def()
	}
	cc.CheckRedirect = func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }
	return &cc
}

// cloneDefaultTransport copies http.DefaultTransport so per-source settings
// never modify the process-wide one.
func cloneDefaultTransport() *http.Transport {
	if t, ok := http.DefaultTransport.(*http.Transport); ok {
		return t.Clone()
	}
	return &http.Transport{}
}
