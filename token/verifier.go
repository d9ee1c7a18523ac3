// Package token verifies the Azure AD (Entra ID) access tokens that enclave
// services present to the KMS as "authorization: Bearer" metadata.
//
// Verification is fail-closed and ordered so that nothing from an
// unauthenticated token is trusted beyond picking a key set: the unverified
// iss selects the IssuerConfig, the header alg is checked against it, the
// signature is verified with the issuer's JWKS key named by kid, and only
// then are iss, aud, exp, nbf and iat checked on the verified claims, with
// one clock skew applied to all three times.
//
// Keys are fetched lazily on first use, not in NewVerifier, so the KMS can
// start (and serve public keys) while the identity provider is briefly
// unreachable; tokens fail with TOKEN_KEYS_UNAVAILABLE meanwhile. Call
// Verifier.Warm from a readiness probe to fetch them early.
//
// The JWS layer is github.com/go-jose/go-jose/v4, the same library go-oidc
// builds on. go-oidc itself is not used: its RemoteKeySet refetches the JWKS
// on every bad signature and every unknown kid without rate limit (an
// amplification vector), and its errors are not typed, so they cannot be
// mapped to reasons reliably.
package token

import (
	"bytes"
	"context"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math"
	"slices"
	"strconv"
	"strings"
	"time"

	jose "github.com/go-jose/go-jose/v4"
)

// maxTokenSize bounds the work an unauthenticated caller can cause. AAD
// access tokens are a few KiB (group lists overflow into a claim reference
// long before this), and gRPC's default metadata limit is 8 KiB anyway.
const maxTokenSize = 16 << 10

// Identity is the verified caller, as release policy sees it.
type Identity struct {
	Issuer   string
	Subject  string
	Audience []string
	// TenantID is tid, ObjectID oid, AppID appid (v1) or azp (v2), and
	// ManagedIdentityResourceID xms_mirid; empty when the token lacks them.
	TenantID                  string
	ObjectID                  string
	AppID                     string
	ManagedIdentityResourceID string
	Expiry                    time.Time
	// Claims holds every claim of the verified payload. Numbers are
	// json.Number, so large integers survive exactly.
	Claims map[string]any
}

// Verifier verifies access tokens. It is safe for concurrent use.
type Verifier struct {
	issuers map[string]*issuerVerifier
	algs    map[string]bool // union over issuers, checked before iss is even read
	skew    time.Duration
	now     func() time.Time
}

type issuerVerifier struct {
	issuer    string
	algs      []jose.SignatureAlgorithm
	audiences []string
	keys      *keySource
}

// NewVerifier validates cfg and returns a Verifier. It performs no network
// I/O: discovery and key sets are fetched on first use (see the package
// documentation).
func NewVerifier(ctx context.Context, cfg Config) (*Verifier, error) {
	_ = ctx // reserved: construction does no I/O today
	cfg, err := cfg.normalize()
	if err != nil {
		return nil, err
	}
	v := &Verifier{
		issuers: make(map[string]*issuerVerifier, len(cfg.Issuers)),
		algs:    make(map[string]bool),
		skew:    cfg.ClockSkew,
		now:     cfg.Now,
	}
	for _, ic := range cfg.Issuers {
		iv := &issuerVerifier{
			issuer:    ic.Issuer,
			audiences: ic.Audiences,
			keys:      newKeySource(ic, cfg.HTTPClient, cfg.Now),
		}
		for _, a := range ic.Algorithms {
			iv.algs = append(iv.algs, jose.SignatureAlgorithm(a))
			v.algs[a] = true
		}
		v.issuers[ic.Issuer] = iv
	}
	return v, nil
}

// Warm fetches every issuer's key set that is not cached yet. It is meant
// for readiness checks; Verify does not need it.
func (v *Verifier) Warm(ctx context.Context) error {
	var errs []error
	for iss, iv := range v.issuers {
		if err := iv.keys.warm(ctx); err != nil {
			errs = append(errs, fmt.Errorf("issuer %q: %w", iss, err))
		}
	}
	return errors.Join(errs...)
}

// BearerToken extracts the token from an authorization header value
// ("Bearer <token>", scheme case-insensitive per RFC 7235).
func BearerToken(authorization string) (string, error) {
	if authorization == "" {
		return "", newError(ReasonMissing, "no authorization header")
	}
	scheme, tok, ok := strings.Cut(authorization, " ")
	if !ok || !strings.EqualFold(scheme, "Bearer") {
		return "", newError(ReasonMalformed, "authorization header is not a Bearer credential")
	}
	tok = strings.TrimLeft(tok, " ")
	if tok == "" {
		return "", newError(ReasonMissing, "empty bearer token")
	}
	return tok, nil
}

// Verify verifies raw (a compact JWS, without "Bearer ") and returns the
// caller's identity. Every error is an *Error; messages never contain the
// token.
func (v *Verifier) Verify(ctx context.Context, raw string) (*Identity, error) {
	id, err := v.verify(ctx, raw)
	if err != nil {
		return nil, err // keep a nil interface for a nil *Error
	}
	return id, nil
}

func (v *Verifier) verify(ctx context.Context, raw string) (*Identity, *Error) {
	if raw == "" {
		return nil, newError(ReasonMissing, "no token")
	}
	if len(raw) > maxTokenSize {
		return nil, newError(ReasonMalformed, fmt.Sprintf("token exceeds %d bytes", maxTokenSize))
	}
	// Only the base64url alphabet and dots: this also rules out the CR/LF
	// that Go's base64 decoders skip, which would make tokens malleable.
	for i := 0; i < len(raw); i++ {
		if c := raw[i]; !(c >= 'A' && c <= 'Z' || c >= 'a' && c <= 'z' || c >= '0' && c <= '9' || c == '-' || c == '_' || c == '.') {
			return nil, newError(ReasonMalformed, "token has characters outside the base64url alphabet")
		}
	}
	parts := strings.Split(raw, ".")
	switch len(parts) {
	case 3:
	case 5:
		return nil, newError(ReasonMalformed, "encrypted tokens (JWE) are not accepted")
	default:
		return nil, newError(ReasonMalformed, fmt.Sprintf("token has %d segments, want 3", len(parts)))
	}

	hdr, err := parseHeader(parts[0])
	if err != nil {
		return nil, err
	}
	// Checked before anything else is read so "none" and HS* fail the same
	// way whatever the payload claims.
	if !v.algs[hdr.alg] {
		return nil, newError(ReasonAlgorithm, fmt.Sprintf("algorithm %s is not allowed", quoteShort(hdr.alg)))
	}
	if hdr.kid == "" {
		return nil, newError(ReasonMalformed, "token header has no kid")
	}
	payload, claims, err := parsePayload(parts[1])
	if err != nil {
		return nil, err
	}
	if parts[2] == "" {
		return nil, newError(ReasonMalformed, "token is not signed")
	}
	// go-jose decodes leniently (it ignores unused trailing bits), so check
	// the signature's encoding is canonical here: one token, one spelling.
	if _, err := base64.RawURLEncoding.Strict().DecodeString(parts[2]); err != nil {
		return nil, newError(ReasonMalformed, "signature is not canonical base64url")
	}

	// The unverified iss only selects which keys to trust; it is re-read from
	// the verified payload below (the same bytes, proven by bytes.Equal).
	iss, ok := claims["iss"].(string)
	if !ok || iss == "" {
		return nil, newError(ReasonMalformed, "token has no iss")
	}
	iv := v.issuers[iss]
	if iv == nil {
		return nil, newError(ReasonIssuer, fmt.Sprintf("issuer %s is not trusted", quoteShort(iss)))
	}
	if !slices.Contains(iv.algs, jose.SignatureAlgorithm(hdr.alg)) {
		return nil, newError(ReasonAlgorithm, fmt.Sprintf("algorithm %s is not allowed for this issuer", quoteShort(hdr.alg)))
	}

	jws, perr := jose.ParseSignedCompact(raw, iv.algs)
	if perr != nil {
		return nil, wrapError(ReasonMalformed, "parsing JWS", perr)
	}
	if len(jws.Signatures) != 1 {
		return nil, newError(ReasonMalformed, "token must carry exactly one signature")
	}
	// Guard against any parser differential between our header decoding and
	// go-jose's: both must agree on what is being verified.
	if h := jws.Signatures[0].Header; string(h.Algorithm) != hdr.alg || h.KeyID != hdr.kid {
		return nil, newError(ReasonMalformed, "inconsistent token header")
	}

	keys, err := iv.keys.lookup(ctx, hdr.kid)
	if err != nil {
		return nil, err
	}
	var verified []byte
	for _, k := range keys {
		if k.Algorithm != "" && k.Algorithm != hdr.alg {
			continue // the JWK pins its algorithm
		}
		if p, err := jws.Verify(k.Key); err == nil {
			verified = p
			break
		}
	}
	// A bad signature under a known kid does not refetch the JWKS: kids are
	// unique per key, so a refetch could not help, and it would hand forgers
	// an amplifier against the identity provider.
	if verified == nil {
		return nil, newError(ReasonSignature, "signature does not verify")
	}
	if !bytes.Equal(verified, payload) {
		return nil, newError(ReasonMalformed, "inconsistent token payload")
	}
	return v.checkClaims(iv, claims)
}

// checkClaims validates the claims of a payload whose signature verified.
func (v *Verifier) checkClaims(iv *issuerVerifier, claims map[string]any) (*Identity, *Error) {
	if iss, _ := claims["iss"].(string); iss != iv.issuer {
		return nil, newError(ReasonIssuer, "issuer mismatch")
	}

	aud, err := audiences(claims["aud"])
	if err != nil {
		return nil, err
	}
	if !slices.ContainsFunc(aud, func(a string) bool { return slices.Contains(iv.audiences, a) }) {
		return nil, newError(ReasonAudience, fmt.Sprintf("audience %s is not accepted", quoteShort(strings.Join(aud, ","))))
	}

	now := v.now()
	exp, present, err := numericDate(claims, "exp")
	if err != nil {
		return nil, err
	}
	if !present {
		return nil, newError(ReasonMalformed, "token has no exp")
	}
	// RFC 7519: valid only while now < exp; the skew extends that window.
	if !now.Before(exp.Add(v.skew)) {
		return nil, newError(ReasonExpired, fmt.Sprintf("token expired at %s", exp.UTC().Format(time.RFC3339)))
	}
	nbf, present, err := numericDate(claims, "nbf")
	if err != nil {
		return nil, err
	}
	if present && now.Add(v.skew).Before(nbf) {
		return nil, newError(ReasonNotYetValid, fmt.Sprintf("token not valid before %s", nbf.UTC().Format(time.RFC3339)))
	}
	iat, present, err := numericDate(claims, "iat")
	if err != nil {
		return nil, err
	}
	if present && now.Add(v.skew).Before(iat) {
		return nil, newError(ReasonNotYetValid, fmt.Sprintf("token issued in the future, at %s", iat.UTC().Format(time.RFC3339)))
	}

	id := &Identity{Issuer: iv.issuer, Audience: aud, Expiry: exp, Claims: claims}
	for _, f := range []struct {
		dst   *string
		names []string
	}{
		{&id.Subject, []string{"sub"}},
		{&id.TenantID, []string{"tid"}},
		{&id.ObjectID, []string{"oid"}},
		{&id.AppID, []string{"appid", "azp"}},
		{&id.ManagedIdentityResourceID, []string{"xms_mirid"}},
	} {
		for _, name := range f.names {
			val, ok := claims[name]
			if !ok {
				continue
			}
			s, ok := val.(string)
			if !ok {
				return nil, newError(ReasonMalformed, fmt.Sprintf("claim %s is not a string", name))
			}
			*f.dst = s
			break
		}
	}
	if id.Subject == "" {
		return nil, newError(ReasonMalformed, "token has no sub")
	}
	return id, nil
}

type header struct{ alg, kid string }

func parseHeader(seg string) (header, *Error) {
	b, err := base64.RawURLEncoding.Strict().DecodeString(seg)
	if err != nil {
		return header{}, newError(ReasonMalformed, "header is not canonical base64url")
	}
	var h map[string]json.RawMessage
	if err := decodeObject(b, &h); err != nil {
		return header{}, newError(ReasonMalformed, "header is not a JSON object")
	}
	// We understand no critical extensions, and b64=false (RFC 7797) would
	// change what the signature covers.
	for _, name := range []string{"crit", "b64"} {
		if _, ok := h[name]; ok {
			return header{}, newError(ReasonMalformed, fmt.Sprintf("header parameter %q is not supported", name))
		}
	}
	var out header
	for name, dst := range map[string]*string{"alg": &out.alg, "kid": &out.kid} {
		if raw, ok := h[name]; ok {
			if err := json.Unmarshal(raw, dst); err != nil {
				return header{}, newError(ReasonMalformed, fmt.Sprintf("header %s is not a string", name))
			}
		}
	}
	if out.alg == "" {
		return header{}, newError(ReasonMalformed, "header has no alg")
	}
	return out, nil
}

func parsePayload(seg string) ([]byte, map[string]any, *Error) {
	b, err := base64.RawURLEncoding.Strict().DecodeString(seg)
	if err != nil {
		return nil, nil, newError(ReasonMalformed, "payload is not canonical base64url")
	}
	var claims map[string]any
	if err := decodeObject(b, &claims); err != nil || claims == nil {
		return nil, nil, newError(ReasonMalformed, "payload is not a JSON object")
	}
	return b, claims, nil
}

// decodeObject decodes exactly one JSON value, numbers as json.Number, and
// rejects trailing data. Decoder errors are dropped by callers because they
// can quote input bytes.
func decodeObject(b []byte, v any) error {
	dec := json.NewDecoder(bytes.NewReader(b))
	dec.UseNumber()
	if err := dec.Decode(v); err != nil {
		return err
	}
	if _, err := dec.Token(); err != io.EOF {
		return errors.New("trailing data")
	}
	return nil
}

func audiences(v any) ([]string, *Error) {
	switch a := v.(type) {
	case nil:
		return nil, newError(ReasonAudience, "token has no aud")
	case string:
		return []string{a}, nil
	case []any:
		out := make([]string, 0, len(a))
		for _, e := range a {
			s, ok := e.(string)
			if !ok {
				return nil, newError(ReasonMalformed, "aud has a non-string entry")
			}
			out = append(out, s)
		}
		return out, nil
	default:
		return nil, newError(ReasonMalformed, "aud is neither a string nor an array")
	}
}

// maxNumericDate is year 9999; anything later is garbage, and bounding it
// keeps the float-to-time conversion exact and overflow-free.
const maxNumericDate = 253402300799

// numericDate reads an RFC 7519 NumericDate (seconds, fractions allowed).
func numericDate(claims map[string]any, name string) (time.Time, bool, *Error) {
	v, ok := claims[name]
	if !ok {
		return time.Time{}, false, nil
	}
	n, ok := v.(json.Number)
	if !ok {
		return time.Time{}, true, newError(ReasonMalformed, fmt.Sprintf("claim %s is not a number", name))
	}
	f, err := strconv.ParseFloat(string(n), 64)
	if err != nil || f < 0 || f > maxNumericDate {
		return time.Time{}, true, newError(ReasonMalformed, fmt.Sprintf("claim %s is out of range", name))
	}
	sec, frac := math.Modf(f)
	return time.Unix(int64(sec), int64(frac*1e9)), true, nil
}

// quoteShort quotes an attacker-supplied header or claim value for an error
// message, cut short so messages stay bounded. These values (alg, iss, aud)
// are not credentials; the token itself is never quoted.
func quoteShort(s string) string {
	const limit = 64
	if len(s) > limit {
		return strconv.Quote(s[:limit]) + "…"
	}
	return strconv.Quote(s)
}
