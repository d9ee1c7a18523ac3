// Package azurekv is the KEK provider for keys held in Azure Key Vault or
// Azure Key Vault Managed HSM, reached through the Azure SDK's azkeys client
// (wrapkey / unwrapkey).
//
// URIs:
//
//	azure-kv://<vault>.vault.azure.net/keys/<name>[/<version>]
//	azure-mhsm://<hsm>.managedhsm.azure.net/keys/<name>[/<version>]
//
// with an optional ?alg=RSA-OAEP-256 or (Managed HSM only) ?alg=A256KW.
// Without a version, Wrap uses the key's current version and records the
// version the service reports in Wrapped.KEKVersion; Unwrap always uses the
// recorded version, so rotating the key in Azure does not strand data keys.
//
// Algorithm: Key Vault keys are RSA: RSA-OAEP-256. A Managed HSM may hold
// RSA or AES (oct-HSM) keys; for AES keys the provider uses A256KW (RFC 3394
// AES key wrap). Without ?alg= a vault key is assumed to be RSA and a
// Managed HSM key's type is read once with a get-key call.
//
// Neither algorithm takes associated data, so the provider wraps
//
//	dek || SHA-256(aad)
//
// and Unwrap compares the digest in constant time, failing with
// kek.ErrAuthentication on mismatch. Wrapped.Ciphertext is the service's
// output, unchanged.
//
// Wrap checks its result by unwrapping it again before returning. This
// proves the new record can be opened (the KMS identity holds unwrapKey, the
// key permits it) and makes Wrap honour a disabled key whatever the service
// does with wrapKey: an RSA wrap is a public-key operation, which Key Vault
// is reported to serve for a disabled key, while it refuses unwrapKey.
//
// Credentials: azidentity.DefaultAzureCredential unless Options.Credential
// is set (environment service principal, AKS workload identity, managed
// identity, then developer tools; AZURE_TOKEN_CREDENTIALS=prod limits the
// chain to the first three). The tenant and token audience come from the
// vault's bearer challenge, which the SDK checks against the vault's host.
package azurekv

import (
	"context"
	"crypto/sha256"
	"crypto/subtle"
	"errors"
	"fmt"
	"strings"
	"sync"
	"time"

	"github.com/Azure/azure-sdk-for-go/sdk/azcore"
	"github.com/Azure/azure-sdk-for-go/sdk/azidentity"
	"github.com/Azure/azure-sdk-for-go/sdk/security/keyvault/azkeys"

	"github.com/attested-kms/attested-kms/keystore/kek"
)

// DefaultTimeout bounds one Wrap or Unwrap, retries included, when the
// caller's context has no earlier deadline.
const DefaultTimeout = 30 * time.Second

// Retry defaults, used for the fields of Options.ClientOptions.Retry left
// zero. The SDK retries 408, 429, 5xx and transport errors and honours
// Retry-After only up to MaxRetryDelay: a longer Retry-After fails the call
// at once (as ErrUnavailable) rather than stall a key release.
const (
	defaultMaxRetries    = 3
	defaultRetryDelay    = 500 * time.Millisecond
	defaultMaxRetryDelay = 8 * time.Second
	defaultTryTimeout    = 10 * time.Second
)

// maxCiphertext bounds what Unwrap sends to the service: an RSA-4096 OAEP
// block is 512 bytes and an A256KW result here is 72; anything far larger
// cannot be one of ours.
const maxCiphertext = 1024

// Options configures a Provider. The zero value uses DefaultAzureCredential
// and the SDK's transport.
type Options struct {
	// Credential authenticates the KMS's identity. Nil means
	// azidentity.NewDefaultAzureCredential(nil).
	Credential azcore.TokenCredential
	// ClientOptions are passed to the azkeys client: Transport (for tests:
	// an *http.Client trusting a test CA), Retry, Logging, Cloud. Zero Retry
	// fields get this package's defaults.
	ClientOptions azcore.ClientOptions
	// Timeout bounds each Wrap or Unwrap; 0 means DefaultTimeout.
	Timeout time.Duration
}

// Provider wraps data keys under a Key Vault or Managed HSM key. It is safe
// for concurrent use.
type Provider struct {
	uri     string
	key     KeyURI
	client  *azkeys.Client
	timeout time.Duration

	// algMu guards alg, the wrapping algorithm learnt from the key type
	// when the URI does not pin one; "" until the first successful lookup.
	algMu sync.Mutex
	alg   string
}

var _ kek.Provider = (*Provider)(nil)

// Open returns a provider for the key named by uri. It does no network
// I/O: the vault is first contacted by Wrap or Unwrap, so a KMS can start
// while the vault is unreachable and report ErrUnavailable per call.
func Open(ctx context.Context, uri string, opts *Options) (*Provider, error) {
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	key, err := ParseURI(uri)
	if err != nil {
		return nil, err
	}
	var o Options
	if opts != nil {
		o = *opts
	}
	if o.Credential == nil {
		cred, err := azidentity.NewDefaultAzureCredential(nil)
		if err != nil {
			return nil, fmt.Errorf("azurekv: default Azure credential: %w", err)
		}
		o.Credential = cred
	}
	if o.Timeout <= 0 {
		o.Timeout = DefaultTimeout
	}
	co := o.ClientOptions
	if co.Retry.MaxRetries == 0 {
		co.Retry.MaxRetries = defaultMaxRetries
	}
	if co.Retry.RetryDelay == 0 {
		co.Retry.RetryDelay = defaultRetryDelay
	}
	if co.Retry.MaxRetryDelay == 0 {
		co.Retry.MaxRetryDelay = defaultMaxRetryDelay
	}
	if co.Retry.TryTimeout == 0 {
		co.Retry.TryTimeout = defaultTryTimeout
	}
	client, err := azkeys.NewClient(key.VaultURL(), o.Credential, &azkeys.ClientOptions{ClientOptions: co})
	if err != nil {
		return nil, fmt.Errorf("azurekv: create Key Vault client for %s: %w", key.Host, err)
	}
	return &Provider{uri: key.String(), key: key, client: client, timeout: o.Timeout, alg: key.Algorithm}, nil
}

// URI returns the canonical provider URI.
func (p *Provider) URI() string { return p.uri }

// Wrap wraps dek || SHA-256(aad) under the key, then unwraps the result to
// check it before handing it out.
func (p *Provider) Wrap(ctx context.Context, dek, aad []byte) (kek.Wrapped, error) {
	if err := ctx.Err(); err != nil {
		return kek.Wrapped{}, err
	}
	if len(dek) == 0 {
		return kek.Wrapped{}, errors.New("azurekv: empty data key")
	}
	ctx, cancel := p.bound(ctx)
	defer cancel()

	alg, err := p.algorithm(ctx)
	if err != nil {
		return kek.Wrapped{}, err
	}
	if alg == AlgA256KW && len(dek)%8 != 0 {
		return kek.Wrapped{}, fmt.Errorf("azurekv: %s needs a data key whose length is a multiple of 8 bytes, got %d", AlgA256KW, len(dek))
	}
	payload := seal(dek, aad)
	defer clear(payload)

	ea := azkeys.EncryptionAlgorithm(alg)
	res, err := p.client.WrapKey(ctx, p.key.Name, p.key.Version, azkeys.KeyOperationParameters{Algorithm: &ea, Value: payload}, nil)
	if err != nil {
		return kek.Wrapped{}, p.classify(opWrap, p.key.Version, err)
	}
	version, err := p.versionOf(res.KID)
	if err != nil {
		return kek.Wrapped{}, err
	}
	if len(res.Result) == 0 {
		return kek.Wrapped{}, fmt.Errorf("azurekv: wrapkey %s: service returned no ciphertext: %w", p.uri, kek.ErrUnavailable)
	}
	w := kek.Wrapped{KEKURI: p.uri, KEKVersion: version, Algorithm: alg, Ciphertext: res.Result}

	// Round-trip check; see the package comment.
	got, err := p.unwrap(ctx, w, aad)
	if err != nil {
		// Whatever the class (an ErrAuthentication here means the service
		// wrapped something it cannot unwrap), the record is not handed
		// to the key store.
		return kek.Wrapped{}, fmt.Errorf("azurekv: wrap: checking the new record: %w", err)
	}
	defer clear(got)
	if subtle.ConstantTimeCompare(got, dek) != 1 {
		return kek.Wrapped{}, fmt.Errorf("azurekv: wrapkey %s: verification unwrap returned a different key: %w", p.uri, kek.ErrAuthentication)
	}
	return w, nil
}

// Unwrap unwraps w with the key version recorded in it and checks that it
// was wrapped with aad.
func (p *Provider) Unwrap(ctx context.Context, w kek.Wrapped, aad []byte) ([]byte, error) {
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	ctx, cancel := p.bound(ctx)
	defer cancel()
	return p.unwrap(ctx, w, aad)
}

func (p *Provider) unwrap(ctx context.Context, w kek.Wrapped, aad []byte) ([]byte, error) {
	switch w.Algorithm {
	case AlgRSAOAEP256, AlgA256KW:
	default:
		return nil, fmt.Errorf("azurekv: algorithm %q not supported by the Azure Key Vault provider: %w", w.Algorithm, kek.ErrUnsupported)
	}
	if len(w.Ciphertext) == 0 || len(w.Ciphertext) > maxCiphertext {
		return nil, fmt.Errorf("azurekv: wrapped key has %d bytes: %w", len(w.Ciphertext), kek.ErrAuthentication)
	}
	version := w.KEKVersion
	if version == "" {
		version = p.key.Version
	}
	if version != "" && !keyVersionRE.MatchString(version) {
		return nil, fmt.Errorf("azurekv: wrapped key names a malformed key version: %w", kek.ErrAuthentication)
	}
	ea := azkeys.EncryptionAlgorithm(w.Algorithm)
	res, err := p.client.UnwrapKey(ctx, p.key.Name, version, azkeys.KeyOperationParameters{Algorithm: &ea, Value: w.Ciphertext}, nil)
	if err != nil {
		return nil, p.classify(opUnwrap, version, err)
	}
	dek, ok := open(res.Result, aad)
	clear(res.Result)
	if !ok {
		return nil, fmt.Errorf("azurekv: unwrapkey %s: associated data does not match: %w", p.uri, kek.ErrAuthentication)
	}
	return dek, nil
}

// algorithm returns the wrapping algorithm: the URI's, RSA-OAEP-256 for a
// vault (vaults hold no symmetric keys), or the one fitting the Managed HSM
// key's type, looked up once.
func (p *Provider) algorithm(ctx context.Context) (string, error) {
	p.algMu.Lock()
	defer p.algMu.Unlock()
	if p.alg != "" {
		return p.alg, nil
	}
	if p.key.Scheme == SchemeKeyVault {
		p.alg = AlgRSAOAEP256
		return p.alg, nil
	}
	res, err := p.client.GetKey(ctx, p.key.Name, p.key.Version, nil)
	if err != nil {
		return "", p.classify(opGet, p.key.Version, err)
	}
	if a := res.Attributes; a != nil && a.Enabled != nil && !*a.Enabled {
		return "", fmt.Errorf("azurekv: key %s is disabled: %w", p.uri, kek.ErrKeyDisabled)
	}
	if res.Key == nil || res.Key.Kty == nil {
		return "", fmt.Errorf("azurekv: get key %s: response has no key type: %w", p.uri, kek.ErrUnavailable)
	}
	switch *res.Key.Kty {
	case azkeys.KeyTypeRSA, azkeys.KeyTypeRSAHSM:
		p.alg = AlgRSAOAEP256
	case azkeys.KeyTypeOct, azkeys.KeyTypeOctHSM:
		p.alg = AlgA256KW
	default:
		return "", fmt.Errorf("azurekv: key %s has type %s; want an RSA or AES key: %w", p.uri, *res.Key.Kty, kek.ErrUnsupported)
	}
	return p.alg, nil
}

// versionOf extracts the key version from the kid the service returned,
// checking it names our key.
func (p *Provider) versionOf(kid *azkeys.ID) (string, error) {
	if kid == nil {
		return "", fmt.Errorf("azurekv: wrapkey %s: response has no key id: %w", p.uri, kek.ErrUnavailable)
	}
	name, version := kid.Name(), kid.Version()
	if !strings.EqualFold(name, p.key.Name) || !keyVersionRE.MatchString(version) ||
		(p.key.Version != "" && !strings.EqualFold(version, p.key.Version)) {
		return "", fmt.Errorf("azurekv: wrapkey %s: response names key %q version %q: %w", p.uri, name, version, kek.ErrUnavailable)
	}
	return version, nil
}

// bound applies the per-call timeout unless ctx already ends sooner.
func (p *Provider) bound(ctx context.Context) (context.Context, context.CancelFunc) {
	if d, ok := ctx.Deadline(); ok && time.Until(d) <= p.timeout {
		return context.WithCancel(ctx)
	}
	return context.WithTimeout(ctx, p.timeout)
}

// seal returns dek || SHA-256(aad).
func seal(dek, aad []byte) []byte {
	digest := sha256.Sum256(aad)
	out := make([]byte, 0, len(dek)+len(digest))
	return append(append(out, dek...), digest[:]...)
}

// open splits dek || SHA-256(aad) and checks the digest in constant time.
// It returns a copy of the data key.
func open(payload, aad []byte) ([]byte, bool) {
	if len(payload) <= sha256.Size {
		return nil, false
	}
	n := len(payload) - sha256.Size
	digest := sha256.Sum256(aad)
	if subtle.ConstantTimeCompare(payload[n:], digest[:]) != 1 {
		return nil, false
	}
	return append([]byte(nil), payload[:n]...), true
}
