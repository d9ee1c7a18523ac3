// Package hcvault is the KEK provider for HashiCorp Vault's transit secrets
// engine (and API-compatible servers such as OpenBao).
//
// Data keys are wrapped with transit's encrypt endpoint and unwrapped with
// its decrypt endpoint. The caller's AAD is sent as transit's
// "associated_data" parameter, which Vault (1.13 and later) feeds to the
// AEAD of aes128-gcm96, aes256-gcm96 and chacha20-poly1305 keys, so a
// different AAD fails Vault's own authentication check. The "context"
// parameter that tink-go-hcvault sends by default is not used: Vault ignores
// it unless the key is derived, so it would bind nothing.
//
// The key is named by hcvault://<host>[:port]/<mount>/keys/<name> (see
// ParseURI); wrapped keys record the key version from Vault's
// "vault:v<N>:" ciphertext prefix as KEKVersion.
package hcvault

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/base64"
	"errors"
	"fmt"
	"net/http"
	"net/url"
	"os"
	"strings"
	"sync"
	"time"

	"github.com/hashicorp/vault/api"

	"github.com/attested-kms/attested-kms/keystore/kek"
)

// Algorithm is the Algorithm of this provider's Wrapped values: Vault
// transit encryption under an AEAD key with the AAD as associated_data.
// Ciphertext is Vault's ciphertext string ("vault:v<N>:<base64>") as bytes.
const Algorithm = "VAULT-TRANSIT-AEAD"

// Defaults for Options.
const (
	DefaultTimeout      = 30 * time.Second
	DefaultMaxRetries   = 2
	DefaultMinRetryWait = 500 * time.Millisecond
	DefaultMaxRetryWait = 1500 * time.Millisecond
)

// Options configures a Provider. The zero value uses the credential chain
// described on Open and verifies Vault's certificate against the system
// roots (or VAULT_CACERT).
type Options struct {
	// Address overrides the Vault address derived from the URI
	// (https://<host>). Tests point it at a loopback server.
	Address string
	// CACertPEM holds the CA certificates that sign Vault's TLS
	// certificate, replacing the system roots. CACertFile names a file
	// with the same; if neither is set, the VAULT_CACERT file is used if
	// that variable is set.
	CACertPEM  []byte
	CACertFile string
	// HTTPClient replaces the HTTP client (and with it every TLS setting
	// above). It should not follow redirects itself: the Vault client
	// follows one redirect (standby to active node) on its own.
	HTTPClient *http.Client

	// Token is a Vault token. It takes precedence over every other
	// credential source.
	Token string
	// Kubernetes selects Kubernetes auth (also selected by the URI's
	// "role" query parameter).
	Kubernetes *KubernetesAuth
	// TokenFile is a file holding a Vault token, e.g. a Vault Agent sink
	// (also the URI's "token_file" query parameter). It is re-read when
	// Vault refuses the token it held.
	TokenFile string

	// Timeout bounds each Wrap and Unwrap, retries and a Kubernetes login
	// included; a shorter ctx deadline wins. Default DefaultTimeout.
	Timeout time.Duration
	// MaxRetries is how often the client retries a request that failed
	// with a connection error, 429, 412 or a 5xx (0: DefaultMaxRetries;
	// negative: never).
	MaxRetries int
	// MinRetryWait and MaxRetryWait bound the wait between retries
	// (0: defaults).
	MinRetryWait, MaxRetryWait time.Duration

	// Getenv reads environment variables (VAULT_TOKEN, VAULT_CACERT);
	// default os.Getenv. Tests replace it.
	Getenv func(string) string
	// Now is the clock for token lease bookkeeping; default time.Now.
	Now func() time.Time
}

// Provider wraps data keys with one Vault transit key. It is safe for
// concurrent use.
type Provider struct {
	key     KeyURI
	uri     string
	creds   tokenSource
	timeout time.Duration

	// base is configured once and never used for requests itself; each
	// token gets a shallow clone that sets it on every request, so the
	// token actually sent is known when Vault refuses it.
	base *api.Client

	mu     sync.Mutex
	tok    string
	client *api.Client
}

var _ kek.Provider = (*Provider)(nil)

// Open returns a provider for the transit key named by uri. It does no
// network I/O: Vault may be unreachable when the KMS starts, and the first
// Wrap or Unwrap reports that as kek.ErrUnavailable.
//
// Credentials, first match wins:
//  1. Options.Token;
//  2. Kubernetes auth: Options.Kubernetes, or the URI's role (and
//     auth_mount) query parameters, logging in with the pod's service
//     account token and logging in again before the lease ends;
//  3. a token file: Options.TokenFile or the URI's token_file parameter
//     (a Vault Agent sink), re-read when Vault refuses the token;
//  4. the VAULT_TOKEN environment variable.
//
// VAULT_NAMESPACE is honoured by the Vault client as usual; a namespace
// may also be written as a prefix of the mount path in the URI.
func Open(ctx context.Context, uri string, opts Options) (*Provider, error) {
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	key, err := ParseURI(uri)
	if err != nil {
		return nil, err
	}
	getenv := opts.Getenv
	if getenv == nil {
		getenv = os.Getenv
	}
	now := opts.Now
	if now == nil {
		now = time.Now
	}

	cfg, err := clientConfig(key, opts, getenv)
	if err != nil {
		return nil, err
	}
	base, err := api.NewClient(cfg)
	if err != nil {
		return nil, fmt.Errorf("hcvault: create Vault client: %w", err)
	}
	// api.NewClient picks up VAULT_TOKEN on its own; tokens are set per
	// request instead, from the credential chain.
	base.ClearToken()

	creds, err := credentials(key, opts, getenv, now, base)
	if err != nil {
		return nil, err
	}
	return &Provider{key: key, uri: key.String(), creds: creds, timeout: cfg.Timeout, base: base}, nil
}

func clientConfig(key KeyURI, opts Options, getenv func(string) string) (*api.Config, error) {
	addr := "https://" + key.Host
	if opts.Address != "" {
		u, err := url.Parse(opts.Address)
		if err != nil || (u.Scheme != "https" && u.Scheme != "http") || u.Host == "" {
			return nil, fmt.Errorf("hcvault: invalid Vault address %q: want https://host[:port]", opts.Address)
		}
		addr = opts.Address
	}
	hc := opts.HTTPClient
	if hc == nil {
		tlsCfg := &tls.Config{MinVersion: tls.VersionTLS12}
		pem := opts.CACertPEM
		caFile := opts.CACertFile
		if len(pem) == 0 && caFile == "" {
			caFile = getenv(api.EnvVaultCACert)
		}
		if len(pem) == 0 && caFile != "" {
			b, err := os.ReadFile(caFile)
			if err != nil {
				return nil, fmt.Errorf("hcvault: read CA file: %w", err)
			}
			pem = b
		}
		if len(pem) != 0 {
			pool := x509.NewCertPool()
			if !pool.AppendCertsFromPEM(pem) {
				return nil, fmt.Errorf("hcvault: no PEM certificates in the Vault CA bundle")
			}
			tlsCfg.RootCAs = pool
		}
		tr := http.DefaultTransport.(*http.Transport).Clone()
		tr.TLSClientConfig = tlsCfg
		tr.TLSHandshakeTimeout = 10 * time.Second
		hc = &http.Client{
			Transport: tr,
			// The Vault client handles redirects itself (one hop, no
			// https -> http downgrade).
			CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse },
		}
	}
	timeout := opts.Timeout
	if timeout <= 0 {
		timeout = DefaultTimeout
	}
	retries := opts.MaxRetries
	switch {
	case retries == 0:
		retries = DefaultMaxRetries
	case retries < 0:
		retries = 0
	}
	minWait, maxWait := opts.MinRetryWait, opts.MaxRetryWait
	if minWait <= 0 {
		minWait = DefaultMinRetryWait
	}
	if maxWait < minWait {
		maxWait = max(minWait, DefaultMaxRetryWait)
	}
	return &api.Config{
		Address:      addr,
		HttpClient:   hc,
		Timeout:      timeout,
		MaxRetries:   retries,
		MinRetryWait: minWait,
		MaxRetryWait: maxWait,
	}, nil
}

func credentials(key KeyURI, opts Options, getenv func(string) string, now func() time.Time, base *api.Client) (tokenSource, error) {
	switch {
	case opts.Token != "":
		return staticToken(opts.Token), nil
	case opts.Kubernetes != nil || key.Role != "":
		k := KubernetesAuth{Role: key.Role, Mount: key.AuthMount}
		if opts.Kubernetes != nil {
			k = *opts.Kubernetes
		}
		if k.Role == "" {
			return nil, fmt.Errorf("hcvault: Kubernetes auth needs a role")
		}
		if k.Mount == "" {
			k.Mount = DefaultKubernetesAuthMount
		}
		k.Mount = strings.Trim(k.Mount, "/")
		if k.JWTFile == "" {
			k.JWTFile = DefaultServiceAccountTokenFile
		}
		// A clone with no token and no callbacks, so logins never carry
		// a stale token and never share a lock with request clones.
		return &kubernetesLogin{client: base.WithRequestCallbacks(), cfg: k, now: now}, nil
	case opts.TokenFile != "" || key.TokenFile != "":
		path := opts.TokenFile
		if path == "" {
			path = key.TokenFile
		}
		return &fileToken{path: path}, nil
	case getenv(api.EnvVaultToken) != "":
		return staticToken(getenv(api.EnvVaultToken)), nil
	default:
		return nil, fmt.Errorf("hcvault: no Vault credentials: set a token, a token file (token_file=), Kubernetes auth (role=) or VAULT_TOKEN")
	}
}

// URI returns the canonical key URI, hcvault://<host>/<mount>/keys/<name>.
func (p *Provider) URI() string { return p.uri }

// Wrap encrypts dek with the transit key, binding aad as associated data.
func (p *Provider) Wrap(ctx context.Context, dek, aad []byte) (kek.Wrapped, error) {
	if err := ctx.Err(); err != nil {
		return kek.Wrapped{}, err
	}
	if len(dek) == 0 {
		return kek.Wrapped{}, fmt.Errorf("hcvault: empty data key")
	}
	path := p.key.encryptPath()
	secret, err := p.call(ctx, opEncrypt, path, map[string]any{
		"plaintext":       base64.StdEncoding.EncodeToString(dek),
		"associated_data": base64.StdEncoding.EncodeToString(aad),
	})
	if err != nil {
		return kek.Wrapped{}, err
	}
	ct, _ := secret.Data["ciphertext"].(string)
	version, ok := ciphertextVersion(ct)
	if !ok {
		return kek.Wrapped{}, fmt.Errorf("hcvault: encrypt %s: response has no Vault ciphertext: %w", path, kek.ErrUnavailable)
	}
	return kek.Wrapped{
		KEKURI:     p.uri,
		KEKVersion: version,
		Algorithm:  Algorithm,
		Ciphertext: []byte(ct),
	}, nil
}

// Unwrap decrypts a value produced by Wrap with the same key and aad.
func (p *Provider) Unwrap(ctx context.Context, w kek.Wrapped, aad []byte) ([]byte, error) {
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	if w.Algorithm != Algorithm {
		return nil, fmt.Errorf("hcvault: algorithm %q not supported by the Vault transit provider: %w", w.Algorithm, kek.ErrUnsupported)
	}
	ct := string(w.Ciphertext)
	version, ok := ciphertextVersion(ct)
	if !ok {
		return nil, fmt.Errorf("hcvault: wrapped key is not a Vault transit ciphertext: %w", kek.ErrAuthentication)
	}
	if w.KEKVersion != "" && w.KEKVersion != version {
		// The recorded version and the ciphertext disagree: one of them
		// was altered.
		return nil, fmt.Errorf("hcvault: wrapped key version %q does not match its ciphertext: %w", w.KEKVersion, kek.ErrAuthentication)
	}
	path := p.key.decryptPath()
	secret, err := p.call(ctx, opDecrypt, path, map[string]any{
		"ciphertext":      ct,
		"associated_data": base64.StdEncoding.EncodeToString(aad),
	})
	if err != nil {
		return nil, err
	}
	pt, _ := secret.Data["plaintext"].(string)
	dek, err := base64.StdEncoding.DecodeString(pt)
	if err != nil || len(dek) == 0 {
		clear(dek)
		return nil, fmt.Errorf("hcvault: decrypt %s: response has no plaintext: %w", path, kek.ErrUnavailable)
	}
	return dek, nil
}

// call writes body to a transit path with the current token. If Vault
// refuses a token that can be refreshed (a token file or a Kubernetes
// login), it refreshes once and retries; a second refusal is the owner's
// off switch.
func (p *Provider) call(ctx context.Context, o op, path string, body map[string]any) (*api.Secret, error) {
	what := string(o) + " " + path
	// One deadline for the whole call: a refused token, a fresh login and
	// the retried request together stay within Options.Timeout.
	ctx, cancel := context.WithTimeout(ctx, p.timeout)
	defer cancel()
	tok, err := p.creds.token(ctx, "")
	if err != nil {
		return nil, err
	}
	secret, err := p.clientFor(tok).Logical().WriteWithContext(ctx, path, body)
	if err != nil && p.creds.refreshable() && denied(err) {
		fresh, ferr := p.creds.token(ctx, tok)
		if ferr != nil {
			return nil, ferr
		}
		if fresh != tok {
			secret, err = p.clientFor(fresh).Logical().WriteWithContext(ctx, path, body)
		}
	}
	if err != nil {
		return nil, classify(ctx, o, what, err)
	}
	if secret == nil {
		// The client returns no secret and no error for a 404 with an
		// empty body: the mount or key is gone.
		return nil, fmt.Errorf("hcvault: %s: HTTP 404: %w", what, kek.ErrKeyDisabled)
	}
	for _, w := range secret.Warnings {
		if strings.Contains(w, "associated_data") {
			// Vault before 1.13 ignores associated_data with a warning:
			// the AAD would not be bound, so refuse rather than degrade.
			return nil, fmt.Errorf("hcvault: %s: Vault ignored associated_data (transit needs Vault 1.13 or later): %w", what, kek.ErrUnsupported)
		}
	}
	return secret, nil
}

// clientFor returns a client that sends tok on every request.
func (p *Provider) clientFor(tok string) *api.Client {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.client == nil || p.tok != tok {
		p.tok = tok
		p.client = p.base.WithRequestCallbacks(func(r *api.Request) { r.ClientToken = tok })
	}
	return p.client
}

func denied(err error) bool {
	var re *api.ResponseError
	return errors.As(err, &re) && (re.StatusCode == http.StatusForbidden || re.StatusCode == http.StatusUnauthorized)
}

// ciphertextVersion returns N from a "vault:v<N>:<base64>" ciphertext.
func ciphertextVersion(ct string) (string, bool) {
	rest, ok := strings.CutPrefix(ct, "vault:v")
	if !ok {
		return "", false
	}
	version, payload, ok := strings.Cut(rest, ":")
	if !ok || version == "" || len(version) > 10 || payload == "" {
		return "", false
	}
	for _, c := range version {
		if c < '0' || c > '9' {
			return "", false
		}
	}
	return version, true
}
