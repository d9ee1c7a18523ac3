package token_test

import (
	"context"
	"encoding/base64"
	"encoding/json"
	"errors"
	"net/http"
	"net/url"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/attested-kms/attested-kms/internal/oidcissuer"
	"github.com/attested-kms/attested-kms/token"
)

const (
	audV1 = "api://attested-kms"
	audV2 = "0b7f3e2a-6c1d-4f8e-9a5b-3d2c1e0f9a8b"
)

var epoch = time.Date(2026, 3, 1, 12, 0, 0, 0, time.UTC)

// clock is a settable time source shared by the issuers and the verifier.
type clock struct {
	mu  sync.Mutex
	now time.Time
}

func (c *clock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.now
}

func (c *clock) Advance(d time.Duration) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.now = c.now.Add(d)
}

type env struct {
	clock  *clock
	v1, v2 *oidcissuer.Issuer
	ver    *token.Verifier
}

// newEnv starts an AAD-v1-shaped issuer (configured through root discovery,
// whose base differs from its iss, as with AAD v1) and an AAD-v2-shaped one
// (configured through its JWKS URL), and a verifier trusting both.
func newEnv(tb testing.TB) *env {
	tb.Helper()
	e := &env{clock: &clock{now: epoch}}
	e.v1 = startIssuer(tb, oidcissuer.Options{Form: oidcissuer.FormV1, Now: e.clock.Now})
	e.v2 = startIssuer(tb, oidcissuer.Options{Form: oidcissuer.FormV2, Now: e.clock.Now,
		TenantID: "0d1e2f3a-4b5c-6d7e-8f90-a1b2c3d4e5f6"})
	e.ver = newVerifier(tb, token.Config{
		Issuers: []token.IssuerConfig{
			{Issuer: e.v1.IssuerURL(), Discovery: e.v1.URL(), Audiences: []string{"api://other", audV1}},
			{Issuer: e.v2.IssuerURL(), JWKSURL: e.v2.JWKSURL(), Audiences: []string{audV2}},
		},
		Now: e.clock.Now,
	})
	return e
}

func startIssuer(tb testing.TB, opts oidcissuer.Options) *oidcissuer.Issuer {
	tb.Helper()
	iss, err := oidcissuer.Start(tb.Context(), opts)
	if err != nil {
		tb.Fatalf("starting issuer: %v", err)
	}
	tb.Cleanup(func() { _ = iss.Close() })
	return iss
}

func newVerifier(tb testing.TB, cfg token.Config) *token.Verifier {
	tb.Helper()
	v, err := token.NewVerifier(tb.Context(), cfg)
	if err != nil {
		tb.Fatalf("NewVerifier: %v", err)
	}
	return v
}

func mint(tb testing.TB, iss *oidcissuer.Issuer, claims map[string]any, opts ...oidcissuer.MintOption) string {
	tb.Helper()
	tok, err := iss.Mint(claims, opts...)
	if err != nil {
		tb.Fatalf("Mint: %v", err)
	}
	return tok
}

func mintMI(tb testing.TB, iss *oidcissuer.Issuer, aud string, opts ...oidcissuer.MintOption) string {
	tb.Helper()
	tok, err := iss.MintManagedIdentity(aud, opts...)
	if err != nil {
		tb.Fatalf("MintManagedIdentity: %v", err)
	}
	return tok
}

// imdsToken fetches a token the way an enclave service on Azure does.
func imdsToken(t *testing.T, iss *oidcissuer.Issuer, resource string) string {
	t.Helper()
	u := iss.URL() + "/metadata/identity/oauth2/token?api-version=2018-02-01&resource=" + url.QueryEscape(resource)
	req, err := http.NewRequestWithContext(t.Context(), http.MethodGet, u, nil)
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set("Metadata", "true")
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatalf("IMDS request: %v", err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("IMDS status %s", resp.Status)
	}
	var body struct {
		AccessToken string `json:"access_token"`
		TokenType   string `json:"token_type"`
	}
	if err := json.NewDecoder(resp.Body).Decode(&body); err != nil {
		t.Fatalf("IMDS body: %v", err)
	}
	if body.TokenType != "Bearer" || body.AccessToken == "" {
		t.Fatalf("IMDS answer: token_type %q, token empty %v", body.TokenType, body.AccessToken == "")
	}
	return body.AccessToken
}

// checkReason asserts err carries want and that its message leaks no token
// material.
func checkReason(t *testing.T, err error, want token.Reason, tok string) {
	t.Helper()
	if err == nil {
		t.Fatalf("Verify succeeded, want %s", want)
	}
	if got := token.ReasonOf(err); got != want {
		t.Fatalf("reason %q, want %q (error: %v)", got, want, err)
	}
	checkNoLeak(t, err, tok)
}

func checkNoLeak(t testing.TB, err error, tok string) {
	t.Helper()
	msg := err.Error()
	if len(tok) >= 16 && strings.Contains(msg, tok) {
		t.Fatalf("error message contains the token")
	}
	for _, seg := range strings.Split(tok, ".") {
		if len(seg) >= 16 && strings.Contains(msg, seg) {
			t.Fatalf("error message contains a token segment: %q", msg)
		}
	}
}

func TestVerifyV1ManagedIdentityFromIMDS(t *testing.T) {
	e := newEnv(t)
	tok := imdsToken(t, e.v1, audV1)
	id, err := e.ver.Verify(t.Context(), tok)
	if err != nil {
		t.Fatalf("Verify: %v", err)
	}
	mi := e.v1.Identity()
	want := token.Identity{
		Issuer: e.v1.IssuerURL(), Subject: mi.ObjectID, Audience: []string{audV1},
		TenantID: mi.TenantID, ObjectID: mi.ObjectID, AppID: mi.AppID,
		ManagedIdentityResourceID: mi.ResourceID, Expiry: epoch.Add(time.Hour),
	}
	checkIdentity(t, id, want)
	if id.Claims["ver"] != "1.0" || id.Claims["idtyp"] != "app" {
		t.Errorf("claims ver=%v idtyp=%v", id.Claims["ver"], id.Claims["idtyp"])
	}
	if n, ok := id.Claims["exp"].(json.Number); !ok || n.String() != "1772370000" {
		t.Errorf("claims exp = %#v, want json.Number 1772370000", id.Claims["exp"])
	}
	if !strings.HasSuffix(e.v1.IssuerURL(), "/"+mi.TenantID+"/") {
		t.Errorf("v1 issuer %q lacks the /<tid>/ shape", e.v1.IssuerURL())
	}
}

func TestVerifyV2(t *testing.T) {
	e := newEnv(t)
	tok := mintMI(t, e.v2, audV2)
	id, err := e.ver.Verify(t.Context(), tok)
	if err != nil {
		t.Fatalf("Verify: %v", err)
	}
	mi := e.v2.Identity()
	checkIdentity(t, id, token.Identity{
		Issuer: e.v2.IssuerURL(), Subject: mi.ObjectID, Audience: []string{audV2},
		TenantID: mi.TenantID, ObjectID: mi.ObjectID, AppID: mi.AppID, // from azp
		ManagedIdentityResourceID: mi.ResourceID, Expiry: epoch.Add(time.Hour),
	})
	if _, ok := id.Claims["appid"]; ok {
		t.Error("v2 token unexpectedly has appid")
	}
	if !strings.HasSuffix(e.v2.IssuerURL(), "/"+mi.TenantID+"/v2.0") {
		t.Errorf("v2 issuer %q lacks the /<tid>/v2.0 shape", e.v2.IssuerURL())
	}
}

func checkIdentity(t *testing.T, got *token.Identity, want token.Identity) {
	t.Helper()
	if got.Issuer != want.Issuer || got.Subject != want.Subject || got.TenantID != want.TenantID ||
		got.ObjectID != want.ObjectID || got.AppID != want.AppID ||
		got.ManagedIdentityResourceID != want.ManagedIdentityResourceID || !got.Expiry.Equal(want.Expiry) ||
		strings.Join(got.Audience, " ") != strings.Join(want.Audience, " ") {
		t.Errorf("identity mismatch\n got %+v\nwant %+v", *got, want)
	}
	if got.Claims["tid"] != want.TenantID {
		t.Errorf("Claims[tid] = %v", got.Claims["tid"])
	}
}

func TestVerifyAudienceArray(t *testing.T) {
	e := newEnv(t)
	tok := mint(t, e.v1, map[string]any{"sub": "s", "aud": []string{"api://nope", audV1}})
	id, err := e.ver.Verify(t.Context(), tok)
	if err != nil {
		t.Fatalf("Verify: %v", err)
	}
	if len(id.Audience) != 2 {
		t.Errorf("Audience = %v", id.Audience)
	}
}

func TestClockSkew(t *testing.T) {
	e := newEnv(t) // default skew 2m
	now := epoch.Unix()
	base := func(extra map[string]any) map[string]any {
		c := map[string]any{"sub": "s", "aud": audV1}
		for k, v := range extra {
			c[k] = v
		}
		return c
	}
	tests := []struct {
		name   string
		claims map[string]any
		want   token.Reason // "" = accepted
	}{
		{"expired within skew", base(map[string]any{"iat": now - 3600, "nbf": now - 3600, "exp": now - 60}), ""},
		{"expired at skew edge", base(map[string]any{"iat": now - 3600, "nbf": now - 3600, "exp": now - 120}), token.ReasonExpired},
		{"expired beyond skew", base(map[string]any{"iat": now - 3600, "nbf": now - 3600, "exp": now - 121}), token.ReasonExpired},
		{"nbf within skew", base(map[string]any{"nbf": now + 60, "iat": now}), ""},
		// go-oidc's own nbf check allows 5 minutes; the configured skew rules.
		{"nbf beyond skew", base(map[string]any{"nbf": now + 180, "iat": now}), token.ReasonNotYetValid},
		{"iat within skew", base(map[string]any{"iat": now + 60}), ""},
		{"iat beyond skew", base(map[string]any{"iat": now + 180}), token.ReasonNotYetValid},
		{"fractional exp", base(map[string]any{"exp": float64(now) + 0.5}), ""},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			tok := mint(t, e.v1, tc.claims)
			_, err := e.ver.Verify(t.Context(), tok)
			if tc.want == "" {
				if err != nil {
					t.Fatalf("Verify: %v", err)
				}
				return
			}
			checkReason(t, err, tc.want, tok)
		})
	}

	t.Run("configured skew is authoritative", func(t *testing.T) {
		v := newVerifier(t, token.Config{
			Issuers:   []token.IssuerConfig{{Issuer: e.v1.IssuerURL(), JWKSURL: e.v1.JWKSURL(), Audiences: []string{audV1}}},
			ClockSkew: 10 * time.Second,
			Now:       e.clock.Now,
		})
		for _, c := range []struct {
			claims map[string]any
			want   token.Reason
		}{
			{base(map[string]any{"exp": now - 11}), token.ReasonExpired},
			{base(map[string]any{"exp": now - 9}), ""},
			{base(map[string]any{"nbf": now + 11}), token.ReasonNotYetValid},
			{base(map[string]any{"iat": now + 11}), token.ReasonNotYetValid},
			{base(map[string]any{"nbf": now + 9, "iat": now + 9}), ""},
		} {
			tok := mint(t, e.v1, c.claims)
			_, err := v.Verify(t.Context(), tok)
			if token.ReasonOf(err) != c.want || (c.want == "") != (err == nil) {
				t.Errorf("claims %v: got %v, want %q", c.claims, err, c.want)
			}
		}
	})
}

func TestVerifyRejects(t *testing.T) {
	e := newEnv(t)
	mi := func(opts ...oidcissuer.MintOption) func(t *testing.T) string {
		return func(t *testing.T) string { return mintMI(t, e.v1, audV1, opts...) }
	}
	claims := func(c map[string]any, opts ...oidcissuer.MintOption) func(t *testing.T) string {
		return func(t *testing.T) string { return mint(t, e.v1, c, opts...) }
	}
	lit := func(s string) func(*testing.T) string { return func(*testing.T) string { return s } }
	b64 := func(s string) string { return base64.RawURLEncoding.EncodeToString([]byte(s)) }
	// modify re-encodes one segment of a valid token, keeping the signature.
	modify := func(seg int, f func(string) string) func(t *testing.T) string {
		return func(t *testing.T) string {
			parts := strings.Split(mintMI(t, e.v1, audV1), ".")
			raw, err := base64.RawURLEncoding.DecodeString(parts[seg])
			if err != nil {
				t.Fatal(err)
			}
			parts[seg] = b64(f(string(raw)))
			return strings.Join(parts, ".")
		}
	}
	// flipSig changes one byte in the middle of the signature.
	flipSig := func(t *testing.T) string {
		parts := strings.Split(mintMI(t, e.v1, audV1), ".")
		sig, _ := base64.RawURLEncoding.DecodeString(parts[2])
		sig[len(sig)/2] ^= 0x01
		parts[2] = base64.RawURLEncoding.EncodeToString(sig)
		return strings.Join(parts, ".")
	}

	tests := []struct {
		name string
		tok  func(t *testing.T) string
		want token.Reason
	}{
		{"empty", lit(""), token.ReasonMissing},
		{"garbage", lit("this is not a token"), token.ReasonMalformed},
		{"garbage segments", lit("a.b.c"), token.ReasonMalformed},
		{"two segments", lit(b64(`{"alg":"RS256","kid":"k"}`) + "." + b64(`{}`)), token.ReasonMalformed},
		{"JWE", lit("eyJhbGciOiJSU0EtT0FFUCJ9.a.b.c.d"), token.ReasonMalformed},
		{"oversized", lit(strings.Repeat("A", 20000) + ".A.A"), token.ReasonMalformed},
		{"header not JSON", modify(0, func(string) string { return "not json" }), token.ReasonMalformed},
		{"payload not JSON", modify(1, func(string) string { return "[1,2]" }), token.ReasonMalformed},
		{"newline inside", func(t *testing.T) string {
			tok := mintMI(t, e.v1, audV1)
			return tok[:40] + "\n" + tok[40:]
		}, token.ReasonMalformed},
		{"non-canonical base64", func(t *testing.T) string {
			// Flip the unused low bits of the last signature character:
			// lenient decoders yield the same bytes, so this would be a
			// second encoding of a valid token.
			tok := mintMI(t, e.v1, audV1)
			last := tok[len(tok)-1]
			const alphabet = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_"
			idx := strings.IndexByte(alphabet, last)
			return tok[:len(tok)-1] + string(alphabet[idx^1])
		}, token.ReasonMalformed},
		{"expired", mi(oidcissuer.WithExpired()), token.ReasonExpired},
		{"not yet valid", claims(map[string]any{"sub": "s", "aud": audV1, "nbf": epoch.Add(time.Hour).Unix()}), token.ReasonNotYetValid},
		{"wrong audience", mintAud(e, e.v1, "api://someone-else"), token.ReasonAudience},
		{"v2 audience at v1 issuer", mintAud(e, e.v1, audV2), token.ReasonAudience},
		{"no audience", claims(map[string]any{"sub": "s"}), token.ReasonAudience},
		{"wrong issuer", claims(map[string]any{"sub": "s", "aud": audV1, "iss": "https://sts.windows.net/evil/"}), token.ReasonIssuer},
		{"issuer without trailing slash", claims(map[string]any{"sub": "s", "aud": audV1, "iss": strings.TrimSuffix(e.v1.IssuerURL(), "/")}), token.ReasonIssuer},
		{"no issuer", claims(map[string]any{"sub": "s", "aud": audV1, "iss": nil}), token.ReasonMalformed},
		{"other issuer's key claiming v1", func(t *testing.T) string {
			return mint(t, e.v2, map[string]any{"sub": "s", "aud": audV1, "iss": e.v1.IssuerURL()})
		}, token.ReasonUnknownKey},
		{"alg none", mi(oidcissuer.WithAlgNone()), token.ReasonAlgorithm},
		{"alg none uppercase", mi(oidcissuer.WithAlgNone(), oidcissuer.WithHeader("alg", "NONE")), token.ReasonAlgorithm},
		{"HS256 with public key", mi(oidcissuer.WithHS256PublicKey()), token.ReasonAlgorithm},
		{"RS384 not allowed", mi(oidcissuer.WithAlg("RS384")), token.ReasonAlgorithm},
		{"PS256 not allowed", mi(oidcissuer.WithAlg("PS256")), token.ReasonAlgorithm},
		{"unknown kid", mi(oidcissuer.WithUnknownKey()), token.ReasonUnknownKey},
		{"no kid", mi(oidcissuer.WithHeader("kid", nil)), token.ReasonMalformed},
		{"crit header", mi(oidcissuer.WithHeader("crit", []string{"exp"})), token.ReasonMalformed},
		{"b64 false", mi(oidcissuer.WithHeader("b64", false)), token.ReasonMalformed},
		{"tampered signature", flipSig, token.ReasonSignature},
		{"truncated signature", func(t *testing.T) string {
			parts := strings.Split(mintMI(t, e.v1, audV1), ".")
			sig, _ := base64.RawURLEncoding.DecodeString(parts[2])
			parts[2] = base64.RawURLEncoding.EncodeToString(sig[:len(sig)-6])
			return strings.Join(parts, ".")
		}, token.ReasonSignature},
		{"empty signature", func(t *testing.T) string {
			tok := mintMI(t, e.v1, audV1)
			return tok[:strings.LastIndexByte(tok, '.')+1]
		}, token.ReasonMalformed},
		{"tampered payload", modify(1, func(p string) string {
			return strings.Replace(p, `"oid":"`, `"oid":"x`, 1)
		}), token.ReasonSignature},
		{"alg swapped in header", modify(0, func(h string) string {
			return strings.Replace(h, `"RS256"`, `"RS384"`, 1)
		}), token.ReasonAlgorithm},
		{"no exp", claims(map[string]any{"sub": "s", "aud": audV1, "exp": nil}), token.ReasonMalformed},
		{"exp as string", claims(map[string]any{"sub": "s", "aud": audV1, "exp": "2030-01-01"}), token.ReasonMalformed},
		{"exp huge", claims(map[string]any{"sub": "s", "aud": audV1, "exp": 1e300}), token.ReasonMalformed},
		{"no sub", claims(map[string]any{"aud": audV1}), token.ReasonMalformed},
		{"tid not a string", claims(map[string]any{"sub": "s", "aud": audV1, "tid": 7}), token.ReasonMalformed},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			tok := tc.tok(t)
			id, err := e.ver.Verify(t.Context(), tok)
			if id != nil {
				t.Fatalf("Verify returned an identity alongside %v", err)
			}
			checkReason(t, err, tc.want, tok)
			var te *token.Error
			if !errors.As(err, &te) || te.Retryable() {
				t.Errorf("error %T retryable=%v", err, te != nil && te.Retryable())
			}
		})
	}
}

func mintAud(e *env, iss *oidcissuer.Issuer, aud string) func(t *testing.T) string {
	return func(t *testing.T) string { return mintMI(t, iss, aud) }
}

func TestUnknownKidBoundedRefetch(t *testing.T) {
	e := newEnv(t)
	ctx := t.Context()
	if _, err := e.ver.Verify(ctx, mintMI(t, e.v1, audV1)); err != nil {
		t.Fatalf("warm-up Verify: %v", err)
	}
	if got := e.v1.JWKSFetches(); got != 1 {
		t.Fatalf("JWKS fetches after warm-up = %d, want 1", got)
	}
	forged := mintMI(t, e.v1, audV1, oidcissuer.WithUnknownKey())

	// Right after a fetch, an unknown kid does not refetch at all.
	for range 5 {
		_, err := e.ver.Verify(ctx, forged)
		checkReason(t, err, token.ReasonUnknownKey, forged)
	}
	if got := e.v1.JWKSFetches(); got != 1 {
		t.Fatalf("JWKS fetches after unknown kids within the refresh interval = %d, want 1", got)
	}

	// Later, a burst of concurrent unknown kids costs exactly one refetch.
	e.clock.Advance(31 * time.Second)
	var wg sync.WaitGroup
	for range 32 {
		wg.Go(func() {
			_, err := e.ver.Verify(ctx, forged)
			if token.ReasonOf(err) != token.ReasonUnknownKey {
				t.Errorf("concurrent Verify: %v", err)
			}
		})
	}
	wg.Wait()
	if got := e.v1.JWKSFetches(); got != 2 {
		t.Fatalf("JWKS fetches after a concurrent burst = %d, want 2", got)
	}

	// Bad signatures under a known kid never refetch.
	e.clock.Advance(31 * time.Second)
	tok := mintMI(t, e.v1, audV1)
	bad := tok[:len(tok)-4] + "AAAA"
	for range 5 {
		_, err := e.ver.Verify(ctx, bad)
		checkReason(t, err, token.ReasonSignature, bad)
	}
	if got := e.v1.JWKSFetches(); got != 2 {
		t.Fatalf("JWKS fetches after bad signatures = %d, want 2", got)
	}
}

func TestKeyRotation(t *testing.T) {
	e := newEnv(t)
	ctx := t.Context()
	if _, err := e.ver.Verify(ctx, mintMI(t, e.v1, audV1)); err != nil {
		t.Fatalf("warm-up Verify: %v", err)
	}
	if _, err := e.v1.RotateKey(); err != nil {
		t.Fatal(err)
	}
	tok := mintMI(t, e.v1, audV1)
	e.clock.Advance(31 * time.Second)
	if _, err := e.ver.Verify(ctx, tok); err != nil {
		t.Fatalf("Verify with rotated key: %v", err)
	}
	if got := e.v1.JWKSFetches(); got != 2 {
		t.Errorf("JWKS fetches = %d, want 2", got)
	}
}

func TestKeysUnavailable(t *testing.T) {
	e := newEnv(t)
	ctx := t.Context()
	e.v1.SetKeysUnavailable(true)
	tok := mintMI(t, e.v1, audV1)
	_, err := e.ver.Verify(ctx, tok)
	checkReason(t, err, token.ReasonKeysUnavailable, tok)
	var te *token.Error
	if !errors.As(err, &te) || !te.Retryable() {
		t.Fatalf("keys-unavailable error is not retryable: %v", err)
	}
	// Rate limited: no new fetch right away.
	_, err = e.ver.Verify(ctx, tok)
	checkReason(t, err, token.ReasonKeysUnavailable, tok)
	if got := e.v1.JWKSFetches(); got != 1 {
		t.Fatalf("JWKS fetches during outage = %d, want 1", got)
	}
	if err := e.ver.Warm(ctx); token.ReasonOf(err) != token.ReasonKeysUnavailable {
		t.Fatalf("Warm during outage: %v", err)
	}

	e.v1.SetKeysUnavailable(false)
	e.clock.Advance(6 * time.Second)
	if _, err := e.ver.Verify(ctx, tok); err != nil {
		t.Fatalf("Verify after recovery: %v", err)
	}
}

func TestKeyCacheAgeing(t *testing.T) {
	e := newEnv(t)
	ctx := t.Context()
	e.v1.SetKeysUnavailable(false)
	if err := e.ver.Warm(ctx); err != nil {
		t.Fatalf("Warm: %v", err)
	}
	if a, b := e.v1.JWKSFetches(), e.v2.JWKSFetches(); a != 1 || b != 1 {
		t.Fatalf("fetches after Warm = %d, %d", a, b)
	}

	// Past the soft age the cached key still verifies, and a background
	// refresh happens.
	e.clock.Advance(61 * time.Minute)
	if _, err := e.ver.Verify(ctx, mintMI(t, e.v1, audV1)); err != nil {
		t.Fatalf("Verify past soft age: %v", err)
	}
	deadline := time.Now().Add(5 * time.Second)
	for e.v1.JWKSFetches() < 2 && time.Now().Before(deadline) {
		time.Sleep(5 * time.Millisecond)
	}
	if got := e.v1.JWKSFetches(); got != 2 {
		t.Fatalf("JWKS fetches after soft age = %d, want 2", got)
	}

	// Past the hard age with the IdP down, verification fails closed.
	e.v1.SetKeysUnavailable(true)
	e.clock.Advance(25 * time.Hour)
	tok := mintMI(t, e.v1, audV1)
	_, err := e.ver.Verify(ctx, tok)
	checkReason(t, err, token.ReasonKeysUnavailable, tok)
}

func TestDiscoveryDefaultsToIssuer(t *testing.T) {
	c := &clock{now: epoch}
	iss := startIssuer(t, oidcissuer.Options{Form: oidcissuer.FormV2, Now: c.Now})
	v := newVerifier(t, token.Config{
		Issuers: []token.IssuerConfig{{Issuer: iss.IssuerURL(), Audiences: []string{audV2}}},
		Now:     c.Now,
	})
	if _, err := v.Verify(t.Context(), mintMI(t, iss, audV2)); err != nil {
		t.Fatalf("Verify: %v", err)
	}
	if got := iss.DiscoveryFetches(); got != 1 {
		t.Errorf("discovery fetches = %d, want 1", got)
	}
}

func TestAllowedAlternativeAlgorithm(t *testing.T) {
	c := &clock{now: epoch}
	iss := startIssuer(t, oidcissuer.Options{Now: c.Now})
	v := newVerifier(t, token.Config{
		Issuers: []token.IssuerConfig{{Issuer: iss.IssuerURL(), JWKSURL: iss.JWKSURL(), Audiences: []string{audV1},
			Algorithms: []string{"RS256", "PS256"}}},
		Now: c.Now,
	})
	for _, alg := range []string{"RS256", "PS256"} {
		if _, err := v.Verify(t.Context(), mintMI(t, iss, audV1, oidcissuer.WithAlg(alg))); err != nil {
			t.Errorf("%s: %v", alg, err)
		}
	}
	tok := mintMI(t, iss, audV1, oidcissuer.WithAlg("RS512"))
	_, err := v.Verify(t.Context(), tok)
	checkReason(t, err, token.ReasonAlgorithm, tok)
}

func TestNewVerifierRejectsBadConfig(t *testing.T) {
	ok := token.IssuerConfig{Issuer: "https://sts.windows.net/t/", Audiences: []string{"a"}}
	with := func(f func(*token.IssuerConfig)) []token.IssuerConfig {
		c := ok
		f(&c)
		return []token.IssuerConfig{c}
	}
	tests := []struct {
		name string
		cfg  token.Config
	}{
		{"no issuers", token.Config{}},
		{"empty issuer", token.Config{Issuers: with(func(c *token.IssuerConfig) { c.Issuer = "" })}},
		{"no audience", token.Config{Issuers: with(func(c *token.IssuerConfig) { c.Audiences = nil })}},
		{"empty audience", token.Config{Issuers: with(func(c *token.IssuerConfig) { c.Audiences = []string{""} })}},
		{"alg none", token.Config{Issuers: with(func(c *token.IssuerConfig) { c.Algorithms = []string{"none"} })}},
		{"alg HS256", token.Config{Issuers: with(func(c *token.IssuerConfig) { c.Algorithms = []string{"RS256", "HS256"} })}},
		{"alg unknown", token.Config{Issuers: with(func(c *token.IssuerConfig) { c.Algorithms = []string{"rs256"} })}},
		{"discovery and JWKS", token.Config{Issuers: with(func(c *token.IssuerConfig) {
			c.Discovery, c.JWKSURL = "https://login.microsoftonline.com/t", "https://login.microsoftonline.com/t/keys"
		})}},
		{"plain http JWKS", token.Config{Issuers: with(func(c *token.IssuerConfig) { c.JWKSURL = "http://example.com/keys" })}},
		{"relative discovery", token.Config{Issuers: with(func(c *token.IssuerConfig) { c.Discovery = "/t/v2.0" })}},
		{"duplicate issuer", token.Config{Issuers: []token.IssuerConfig{ok, ok}}},
		{"negative skew", token.Config{Issuers: []token.IssuerConfig{ok}, ClockSkew: -time.Second}},
		{"huge skew", token.Config{Issuers: []token.IssuerConfig{ok}, ClockSkew: time.Hour}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			if _, err := token.NewVerifier(t.Context(), tc.cfg); err == nil {
				t.Fatal("NewVerifier accepted a bad config")
			}
		})
	}
	// No I/O at construction: an unreachable https IdP is fine until use.
	if _, err := token.NewVerifier(t.Context(), token.Config{Issuers: []token.IssuerConfig{ok}}); err != nil {
		t.Fatalf("NewVerifier(valid): %v", err)
	}
}

func TestVerifyRespectsContext(t *testing.T) {
	e := newEnv(t)
	ctx, cancel := context.WithCancel(t.Context())
	cancel()
	tok := mintMI(t, e.v1, audV1)
	// The fetch itself survives the cancellation (others may wait on it),
	// but this caller gives up or gets the keys; either way no panic, and
	// a failure is KEYS_UNAVAILABLE.
	if _, err := e.ver.Verify(ctx, tok); err != nil {
		checkReason(t, err, token.ReasonKeysUnavailable, tok)
	}
}

func TestBearerToken(t *testing.T) {
	for _, tc := range []struct {
		in, tok string
		want    token.Reason
	}{
		{"Bearer abc.def.ghi", "abc.def.ghi", ""},
		{"bearer  abc.def.ghi", "abc.def.ghi", ""},
		{"", "", token.ReasonMissing},
		{"Bearer ", "", token.ReasonMissing},
		{"Basic dXNlcjpwYXNz", "", token.ReasonMalformed},
		{"abc.def.ghi", "", token.ReasonMalformed},
	} {
		got, err := token.BearerToken(tc.in)
		if got != tc.tok || token.ReasonOf(err) != tc.want {
			t.Errorf("BearerToken(%q) = %q, %v; want %q, %q", tc.in, got, err, tc.tok, tc.want)
		}
	}
}

func BenchmarkVerify(b *testing.B) {
	e := newEnv(b)
	ctx := b.Context()
	tok := mintMI(b, e.v1, audV1)
	if _, err := e.ver.Verify(ctx, tok); err != nil { // warm the JWKS
		b.Fatalf("Verify: %v", err)
	}
	b.ReportAllocs()
	for b.Loop() {
		if _, err := e.ver.Verify(ctx, tok); err != nil {
			b.Fatal(err)
		}
	}
}

func BenchmarkVerifyParallel(b *testing.B) {
	e := newEnv(b)
	ctx := b.Context()
	tok := mintMI(b, e.v1, audV1)
	if _, err := e.ver.Verify(ctx, tok); err != nil {
		b.Fatalf("Verify: %v", err)
	}
	b.ReportAllocs()
	b.ResetTimer() // issuer start-up generates RSA keys
	b.RunParallel(func(pb *testing.PB) {
		for pb.Next() {
			if _, err := e.ver.Verify(ctx, tok); err != nil {
				b.Error(err)
				return
			}
		}
	})
}
