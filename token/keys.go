package token

import (
	"context"
	"crypto/ecdsa"
	"crypto/rsa"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"sync"
	"time"

	jose "github.com/go-jose/go-jose/v4"
)

const (
	// fetchTimeout bounds one discovery+JWKS fetch, independent of the
	// caller's context so a cancelled request does not waste a refresh slot.
	fetchTimeout = 10 * time.Second
	// minRefreshInterval spaces fetches after a success. Unknown kids are
	// attacker-chosen, so without it every forged token would cost an
	// outbound request to the identity provider.
	minRefreshInterval = 30 * time.Second
	// retryAfterFailure spaces fetches after a failure: short, so the KMS
	// recovers quickly once the identity provider is back.
	retryAfterFailure = 5 * time.Second
	// keySoftAge: older key sets are refreshed in the background so keys the
	// issuer removed (for example after a compromise) stop being trusted.
	keySoftAge = time.Hour
	// keyHardAge: older key sets are no longer used at all; verification
	// fails closed with TOKEN_KEYS_UNAVAILABLE until a fetch succeeds.
	keyHardAge = 24 * time.Hour
	// maxDocumentSize caps discovery and JWKS bodies (AAD's are a few KiB).
	maxDocumentSize = 1 << 20
)

// keySource caches one issuer's signing keys, fetched lazily through
// discovery or a fixed JWKS URL. Fetches are single-flight and rate limited.
type keySource struct {
	discoveryURL string // "" when jwksURL is configured
	client       *http.Client
	now          func() time.Time

	mu          sync.Mutex
	jwksURL     string // resolved; written only by the (single) fetch goroutine
	keys        map[string][]jose.JSONWebKey
	fetchedAt   time.Time // last successful fetch; zero if none
	nextAttempt time.Time // no fetch starts before this
	lastErr     error
	inflight    *fetchCall
}

type fetchCall struct {
	done chan struct{}
	err  error // set before done is closed
}

func newKeySource(ic IssuerConfig, client *http.Client, now func() time.Time) *keySource {
	return &keySource{discoveryURL: ic.Discovery, jwksURL: ic.JWKSURL, client: client, now: now}
}

// lookup returns the keys published under kid. A miss triggers at most one
// fetch (shared with concurrent callers and rate limited); a miss after that
// is TOKEN_UNKNOWN_KEY, a failed or refused fetch with no usable cache is
// TOKEN_KEYS_UNAVAILABLE.
func (s *keySource) lookup(ctx context.Context, kid string) ([]jose.JSONWebKey, *Error) {
	s.mu.Lock()
	now := s.now()
	usable := !s.fetchedAt.IsZero() && now.Sub(s.fetchedAt) < keyHardAge
	if keys, ok := s.keys[kid]; ok && usable {
		if now.Sub(s.fetchedAt) >= keySoftAge {
			// Refresh in the background: the cached key is still good and
			// the caller should not pay for the round trip.
			s.startFetchLocked(ctx, now)
		}
		s.mu.Unlock()
		return keys, nil
	}
	call := s.startFetchLocked(ctx, now)
	lastErr := s.lastErr
	s.mu.Unlock()

	if call == nil { // rate limited
		if !usable {
			return nil, wrapError(ReasonKeysUnavailable, "signing keys unavailable; waiting before the next fetch", lastErr)
		}
		return nil, newError(ReasonUnknownKey, "kid not in the issuer's key set")
	}
	select {
	case <-ctx.Done():
		return nil, wrapError(ReasonKeysUnavailable, "waiting for signing keys", ctx.Err())
	case <-call.done:
	}
	if call.err != nil {
		return nil, wrapError(ReasonKeysUnavailable, "fetching signing keys", call.err)
	}
	s.mu.Lock()
	keys, ok := s.keys[kid]
	s.mu.Unlock()
	if !ok {
		return nil, newError(ReasonUnknownKey, "kid not in the issuer's key set after refresh")
	}
	return keys, nil
}

// warm fetches the key set unless one is cached, for readiness checks.
func (s *keySource) warm(ctx context.Context) error {
	s.mu.Lock()
	if !s.fetchedAt.IsZero() && s.now().Sub(s.fetchedAt) < keyHardAge {
		s.mu.Unlock()
		return nil
	}
	call := s.startFetchLocked(ctx, s.now())
	lastErr := s.lastErr
	s.mu.Unlock()
	if call == nil {
		return wrapError(ReasonKeysUnavailable, "signing keys unavailable; waiting before the next fetch", lastErr)
	}
	select {
	case <-ctx.Done():
		return wrapError(ReasonKeysUnavailable, "waiting for signing keys", ctx.Err())
	case <-call.done:
	}
	if call.err != nil {
		return wrapError(ReasonKeysUnavailable, "fetching signing keys", call.err)
	}
	return nil
}

// startFetchLocked joins the in-flight fetch or starts one, unless rate
// limited (then it returns nil). s.mu must be held.
func (s *keySource) startFetchLocked(ctx context.Context, now time.Time) *fetchCall {
	if s.inflight != nil {
		return s.inflight
	}
	if now.Before(s.nextAttempt) {
		return nil
	}
	call := &fetchCall{done: make(chan struct{})}
	s.inflight = call
	s.nextAttempt = now.Add(minRefreshInterval) // until this fetch ends
	// WithoutCancel keeps the caller's values (tracing) but not its deadline:
	// one impatient caller must not abort the fetch others are waiting on.
	fctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), fetchTimeout)
	go func() {
		defer cancel()
		keys, err := s.fetch(fctx)
		s.mu.Lock()
		if err == nil {
			s.keys = keys
			s.fetchedAt = s.now()
			s.lastErr = nil
		} else {
			s.lastErr = err
			s.nextAttempt = now.Add(retryAfterFailure)
		}
		s.inflight = nil
		s.mu.Unlock()
		call.err = err
		close(call.done)
	}()
	return call
}

// fetch resolves jwks_uri (once) and downloads the key set. Only the fetch
// goroutine, of which at most one runs, touches s.jwksURL outside s.mu.
func (s *keySource) fetch(ctx context.Context) (map[string][]jose.JSONWebKey, error) {
	s.mu.Lock()
	jwksURL := s.jwksURL
	s.mu.Unlock()
	if jwksURL == "" {
		var doc struct {
			JWKSURI string `json:"jwks_uri"`
		}
		if err := s.getJSON(ctx, s.discoveryURL, &doc); err != nil {
			return nil, fmt.Errorf("discovery: %w", err)
		}
		if doc.JWKSURI == "" {
			return nil, fmt.Errorf("discovery %s: no jwks_uri", s.discoveryURL)
		}
		if err := checkFetchURL(doc.JWKSURI); err != nil {
			return nil, fmt.Errorf("discovery %s: jwks_uri: %w", s.discoveryURL, err)
		}
		jwksURL = doc.JWKSURI
		s.mu.Lock()
		s.jwksURL = jwksURL
		s.mu.Unlock()
	}
	var set struct {
		Keys []json.RawMessage `json:"keys"`
	}
	if err := s.getJSON(ctx, jwksURL, &set); err != nil {
		if s.discoveryURL != "" {
			// Rediscover next time, in case jwks_uri moved.
			s.mu.Lock()
			s.jwksURL = ""
			s.mu.Unlock()
		}
		return nil, fmt.Errorf("JWKS: %w", err)
	}
	keys := make(map[string][]jose.JSONWebKey)
	for _, raw := range set.Keys {
		if k, ok := usableKey(raw); ok {
			keys[k.KeyID] = append(keys[k.KeyID], k)
		}
	}
	if len(keys) == 0 {
		return nil, fmt.Errorf("JWKS %s: no usable signing keys", jwksURL)
	}
	return keys, nil
}

// usableKey parses one JWK and keeps it only if it is a public RSA (>= 2048
// bits) or ECDSA signing key with a kid. Per RFC 7517 section 5, keys that do
// not qualify are skipped, not fatal, so one odd entry cannot take the whole
// set down.
func usableKey(raw json.RawMessage) (jose.JSONWebKey, bool) {
	var k jose.JSONWebKey
	if err := k.UnmarshalJSON(raw); err != nil {
		return k, false
	}
	if k.KeyID == "" || (k.Use != "" && k.Use != "sig") {
		return k, false
	}
	k = k.Public() // never keep private material, should a JWKS carry it
	if !k.Valid() {
		return k, false
	}
	switch pub := k.Key.(type) {
	case *rsa.PublicKey:
		if pub.N.BitLen() < 2048 {
			return k, false
		}
	case *ecdsa.PublicKey:
	default:
		return k, false
	}
	return k, true
}

func (s *keySource) getJSON(ctx context.Context, url string, v any) error {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	if err != nil {
		return fmt.Errorf("GET %s: %w", url, err)
	}
	req.Header.Set("Accept", "application/json")
	resp, err := s.client.Do(req)
	if err != nil {
		return fmt.Errorf("GET %s: %w", url, err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		// The body is not echoed: it is the IdP's, of unknown size and content.
		return fmt.Errorf("GET %s: status %s", url, resp.Status)
	}
	body, err := io.ReadAll(io.LimitReader(resp.Body, maxDocumentSize+1))
	if err != nil {
		return fmt.Errorf("GET %s: reading body: %w", url, err)
	}
	if len(body) > maxDocumentSize {
		return fmt.Errorf("GET %s: body exceeds %d bytes", url, maxDocumentSize)
	}
	if err := json.Unmarshal(body, v); err != nil {
		return fmt.Errorf("GET %s: decoding: %w", url, err)
	}
	return nil
}
