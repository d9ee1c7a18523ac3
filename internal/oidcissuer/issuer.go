// Package oidcissuer is a small but real OIDC issuer for tests and the demo:
// discovery, a JWKS, a minting API with knobs for hostile tokens, and an
// Azure IMDS-compatible managed-identity token endpoint. It serves plain
// HTTP and refuses to listen anywhere but loopback, because it hands a
// signed token to anyone who asks.
package oidcissuer

import (
	"context"
	"crypto/rand"
	"crypto/rsa"
	"crypto/sha256"
	"crypto/x509"
	"encoding/base64"
	"encoding/json"
	"encoding/pem"
	"errors"
	"fmt"
	"math/big"
	"net"
	"net/http"
	"regexp"
	"strings"
	"sync"
	"sync/atomic"
	"time"
)

// IssuerForm chooses the shape of the iss URL, to emulate AAD token versions.
type IssuerForm int

const (
	// FormV1 is <base>/<tenant>/, like https://sts.windows.net/<tid>/.
	FormV1 IssuerForm = iota
	// FormV2 is <base>/<tenant>/v2.0, like https://login.microsoftonline.com/<tid>/v2.0.
	FormV2
)

// Options configures an Issuer. Zero values get defaults.
type Options struct {
	// Addr is the listen address; default 127.0.0.1:0. Must be loopback.
	Addr string
	// Form is the iss shape; default FormV1.
	Form IssuerForm
	// Issuer, if set, is the exact iss (and discovery issuer) instead of the
	// Form-derived loopback URL, e.g. "https://sts.windows.net/<tid>/", so
	// tokens look exactly like AAD's while keys are served on loopback. It
	// also makes iss independent of the port, which fuzz workers need.
	Issuer string
	// TenantID, ObjectID, AppID and ManagedIdentityResourceID describe the
	// one managed identity the IMDS endpoint issues tokens for.
	TenantID                  string
	ObjectID                  string
	AppID                     string
	ManagedIdentityResourceID string
	// TokenLifetime of minted tokens; default 1h.
	TokenLifetime time.Duration
	// Now is the issuer's clock; default time.Now.
	Now func() time.Time
	// Key is the initial signing key; default a fresh RSA 2048 key.
	Key *rsa.PrivateKey
	// UnpublishedKey signs WithUnknownKey tokens; default a fresh RSA 2048
	// key, generated on first use.
	UnpublishedKey *rsa.PrivateKey
}

const (
	defaultTenantID = "72f988bf-86f1-41af-91ab-2d7cd011db47"
	defaultObjectID = "5c1d8e7a-3b9f-4e2a-9d61-0f4b2c8a7e13"
	defaultAppID    = "9e2b4f61-7c3a-4d58-8b0e-1a6f3d9c2e75"
)

// ManagedIdentity is the identity the IMDS endpoint issues tokens for.
type ManagedIdentity struct {
	TenantID, ObjectID, AppID, ResourceID string
}

// Issuer is a running issuer. Its methods are safe for concurrent use.
type Issuer struct {
	opts   Options
	srv    *http.Server
	served chan struct{}
	base   string
	issuer string

	mu       sync.Mutex
	keys     []signingKey    // published in the JWKS; the last one signs
	rogueKey *rsa.PrivateKey // never published; for WithUnknownKey

	jwksFetches      atomic.Int64
	discoveryFetches atomic.Int64
	keysUnavailable  atomic.Bool

	stopAfter func() bool
	closeOnce sync.Once
}

type signingKey struct {
	kid  string
	priv *rsa.PrivateKey
}

// safeSegment keeps configured IDs usable verbatim in URL paths and
// ServeMux patterns.
var safeSegment = regexp.MustCompile(`^[A-Za-z0-9._-]+$`)

// Start listens on opts.Addr and serves until Close is called or ctx is done.
func Start(ctx context.Context, opts Options) (*Issuer, error) {
	if opts.Addr == "" {
		opts.Addr = "127.0.0.1:0"
	}
	host, _, err := net.SplitHostPort(opts.Addr)
	if err != nil {
		return nil, fmt.Errorf("oidcissuer: address %q: %w", opts.Addr, err)
	}
	if ip := net.ParseIP(host); host != "localhost" && (ip == nil || !ip.IsLoopback()) {
		return nil, fmt.Errorf("oidcissuer: address %q is not loopback; this issuer signs tokens for anyone who asks", opts.Addr)
	}
	if opts.TenantID == "" {
		opts.TenantID = defaultTenantID
	}
	if opts.ObjectID == "" {
		opts.ObjectID = defaultObjectID
	}
	if opts.AppID == "" {
		opts.AppID = defaultAppID
	}
	for name, v := range map[string]string{"tenant": opts.TenantID, "object": opts.ObjectID, "app": opts.AppID} {
		if !safeSegment.MatchString(v) {
			return nil, fmt.Errorf("oidcissuer: %s ID %q has characters outside [A-Za-z0-9._-]", name, v)
		}
	}
	if opts.ManagedIdentityResourceID == "" {
		opts.ManagedIdentityResourceID = "/subscriptions/00000000-0000-0000-0000-000000000000/resourcegroups/attested-kms-dev" +
			"/providers/Microsoft.ManagedIdentity/userAssignedIdentities/enclave-service"
	}
	if opts.TokenLifetime <= 0 {
		opts.TokenLifetime = time.Hour
	}
	if opts.Now == nil {
		opts.Now = time.Now
	}
	if opts.Form != FormV1 && opts.Form != FormV2 {
		return nil, fmt.Errorf("oidcissuer: unknown issuer form %d", opts.Form)
	}
	if opts.Key == nil {
		if opts.Key, err = rsa.GenerateKey(rand.Reader, 2048); err != nil {
			return nil, fmt.Errorf("oidcissuer: generating key: %w", err)
		}
	}

	var lc net.ListenConfig
	ln, err := lc.Listen(ctx, "tcp", opts.Addr)
	if err != nil {
		return nil, fmt.Errorf("oidcissuer: listen: %w", err)
	}
	i := &Issuer{
		opts:   opts,
		served: make(chan struct{}),
		base:   "http://" + ln.Addr().String(),
		keys:   []signingKey{{kid: thumbprint(&opts.Key.PublicKey), priv: opts.Key}},
	}
	i.rogueKey = opts.UnpublishedKey
	issuerPath := "/" + opts.TenantID + "/"
	if opts.Form == FormV2 {
		issuerPath += "v2.0"
	}
	i.issuer = i.base + issuerPath
	if opts.Issuer != "" {
		i.issuer = opts.Issuer
	}

	mux := http.NewServeMux()
	mux.HandleFunc("GET /.well-known/openid-configuration", i.handleDiscovery)
	// Also under the loopback issuer path, where OIDC discovery (issuer +
	// well-known) looks.
	mux.HandleFunc("GET "+strings.TrimSuffix(issuerPath, "/")+"/.well-known/openid-configuration", i.handleDiscovery)
	mux.HandleFunc("GET /keys", i.handleKeys)
	mux.HandleFunc("/metadata/identity/oauth2/token", i.handleIMDS)
	i.srv = &http.Server{Handler: mux, ReadHeaderTimeout: 5 * time.Second}
	go func() {
		defer close(i.served)
		_ = i.srv.Serve(ln) // returns http.ErrServerClosed after Close
	}()
	i.stopAfter = context.AfterFunc(ctx, func() { _ = i.Close() })
	return i, nil
}

// URL is the base URL, e.g. http://127.0.0.1:41234.
func (i *Issuer) URL() string { return i.base }

// IssuerURL is the iss of minted tokens: Options.Issuer, or the loopback
// URL shaped by Options.Form.
func (i *Issuer) IssuerURL() string { return i.issuer }

// DiscoveryURL is the root discovery document. Its issuer is IssuerURL,
// which differs from the discovery base, as with AAD v1.
func (i *Issuer) DiscoveryURL() string { return i.base + "/.well-known/openid-configuration" }

// JWKSURL is the key set URL.
func (i *Issuer) JWKSURL() string { return i.base + "/keys" }

// Identity is the managed identity the IMDS endpoint issues tokens for.
func (i *Issuer) Identity() ManagedIdentity {
	return ManagedIdentity{
		TenantID: i.opts.TenantID, ObjectID: i.opts.ObjectID,
		AppID: i.opts.AppID, ResourceID: i.opts.ManagedIdentityResourceID,
	}
}

// KeyID is the kid of the current signing key.
func (i *Issuer) KeyID() string {
	i.mu.Lock()
	defer i.mu.Unlock()
	return i.keys[len(i.keys)-1].kid
}

// PublicKeyPEM is the current signing key's public key, PKIX PEM: the bytes
// an HS256 key-confusion attacker would use as the HMAC secret.
func (i *Issuer) PublicKeyPEM() []byte {
	i.mu.Lock()
	defer i.mu.Unlock()
	return publicPEM(&i.keys[len(i.keys)-1].priv.PublicKey)
}

// RotateKey publishes a fresh RSA 2048 key and signs with it from now on;
// old keys stay published. It returns the new kid.
func (i *Issuer) RotateKey() (string, error) {
	k, err := rsa.GenerateKey(rand.Reader, 2048)
	if err != nil {
		return "", fmt.Errorf("oidcissuer: generating key: %w", err)
	}
	kid := thumbprint(&k.PublicKey)
	i.mu.Lock()
	defer i.mu.Unlock()
	i.keys = append(i.keys, signingKey{kid: kid, priv: k})
	return kid, nil
}

// JWKSFetches counts GET /keys requests, so tests can bound refetches.
func (i *Issuer) JWKSFetches() int64 { return i.jwksFetches.Load() }

// DiscoveryFetches counts discovery document requests.
func (i *Issuer) DiscoveryFetches() int64 { return i.discoveryFetches.Load() }

// SetKeysUnavailable makes /keys answer 503, to emulate an IdP outage.
func (i *Issuer) SetKeysUnavailable(down bool) { i.keysUnavailable.Store(down) }

// Close stops the server and waits for it to finish. It is idempotent.
func (i *Issuer) Close() error {
	var err error
	i.closeOnce.Do(func() {
		i.stopAfter()
		err = i.srv.Close()
		<-i.served
	})
	if err != nil {
		return fmt.Errorf("oidcissuer: close: %w", err)
	}
	return nil
}

func (i *Issuer) handleDiscovery(w http.ResponseWriter, _ *http.Request) {
	i.discoveryFetches.Add(1)
	writeJSON(w, http.StatusOK, map[string]any{
		"issuer":                                i.issuer,
		"jwks_uri":                              i.JWKSURL(),
		"token_endpoint":                        i.base + "/" + i.opts.TenantID + "/oauth2/token",
		"authorization_endpoint":                i.base + "/" + i.opts.TenantID + "/oauth2/authorize",
		"response_types_supported":              []string{"code", "id_token", "code id_token", "token id_token", "token"},
		"subject_types_supported":               []string{"pairwise"},
		"id_token_signing_alg_values_supported": []string{"RS256"},
	})
}

func (i *Issuer) handleKeys(w http.ResponseWriter, _ *http.Request) {
	i.jwksFetches.Add(1)
	if i.keysUnavailable.Load() {
		http.Error(w, "keys unavailable", http.StatusServiceUnavailable)
		return
	}
	i.mu.Lock()
	keys := make([]map[string]string, 0, len(i.keys))
	for _, k := range i.keys {
		// Like AAD: no "alg" member, so the verifier's own allow-list decides.
		keys = append(keys, map[string]string{
			"kty": "RSA",
			"use": "sig",
			"kid": k.kid,
			"n":   b64(k.priv.N.Bytes()),
			"e":   b64(big.NewInt(int64(k.priv.E)).Bytes()),
		})
	}
	i.mu.Unlock()
	writeJSON(w, http.StatusOK, map[string]any{"keys": keys})
}

func writeJSON(w http.ResponseWriter, status int, v any) {
	w.Header().Set("Content-Type", "application/json; charset=utf-8")
	w.Header().Set("Cache-Control", "no-store")
	w.WriteHeader(status)
	_ = json.NewEncoder(w).Encode(v) // the client went away; nothing to do
}

func b64(b []byte) string { return base64.RawURLEncoding.EncodeToString(b) }

// thumbprint is the RFC 7638 JWK thumbprint, a stable kid for a key.
func thumbprint(pub *rsa.PublicKey) string {
	canon := fmt.Sprintf(`{"e":%q,"kty":"RSA","n":%q}`, b64(big.NewInt(int64(pub.E)).Bytes()), b64(pub.N.Bytes()))
	sum := sha256.Sum256([]byte(canon))
	return b64(sum[:])
}

func publicPEM(pub *rsa.PublicKey) []byte {
	der, err := x509.MarshalPKIXPublicKey(pub)
	if err != nil {
		panic(errors.New("oidcissuer: marshaling an RSA public key cannot fail")) // would be a stdlib bug
	}
	return pem.EncodeToMemory(&pem.Block{Type: "PUBLIC KEY", Bytes: der})
}
