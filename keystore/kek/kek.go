// Package kek defines the key-encryption-key (KEK) provider interface through
// which the key store wraps the per-key data encryption keys (DEKs), and the
// local key-file provider used for development.
//
// Cloud and HSM providers (AWS KMS, GCP Cloud KMS, Azure Key Vault or Managed
// HSM, PKCS#11, HashiCorp Vault transit) implement the same interface in
// subpackages; keystore/kek/providers opens any of them by URI, so
// configuration stays a single string.
package kek

import (
	"context"
	"errors"
	"fmt"
	"net/url"
	"strings"
)

// Wrapped is a data key wrapped by a KEK, with what is needed to unwrap it
// again and to tell, later, which key and algorithm protect it.
type Wrapped struct {
	// KEKURI is the provider URI that wrapped the key (Provider.URI).
	KEKURI string `json:"kek_uri"`
	// KEKVersion is the provider's version of the key that wrapped it,
	// when the provider has versions (a Cloud KMS CryptoKeyVersion, a Key
	// Vault key version, a Vault transit key version, an AWS KMS key's
	// backing key is not exposed: ""); "" otherwise.
	KEKVersion string `json:"kek_version,omitempty"`
	// Algorithm names how Ciphertext was made, e.g. "AES-256-GCM",
	// "RSA-OAEP-256", "AWS-KMS-SYMMETRIC_DEFAULT".
	Algorithm string `json:"algorithm"`
	// Ciphertext is the provider's output, opaque to everyone else.
	Ciphertext []byte `json:"ciphertext"`
}

// Clone returns a deep copy.
func (w Wrapped) Clone() Wrapped {
	w.Ciphertext = append([]byte(nil), w.Ciphertext...)
	return w
}

// Provider wraps and unwraps data keys under a key-encryption key it never
// exposes. Implementations must be safe for concurrent use.
//
// aad is authenticated with the wrapped key. Providers whose service has no
// associated-data input (RSA key wrapping) bind it by other means (for
// example by wrapping dek || SHA-256(aad) and checking the digest on
// Unwrap); either way Unwrap with a different aad must fail with
// ErrAuthentication.
type Provider interface {
	// URI names the KEK, e.g. local:///etc/kms/kek.key.
	URI() string
	// Wrap encrypts dek and authenticates aad with it. The caller keeps
	// ownership of dek and may zero it after Wrap returns.
	Wrap(ctx context.Context, dek, aad []byte) (Wrapped, error)
	// Unwrap reverses Wrap. It fails with an error matching ErrAuthentication
	// if w was produced by another KEK, was modified, or aad differs; with
	// ErrKeyDisabled if the customer disabled, deleted or scheduled the KEK
	// for deletion, or revoked the KMS's permission to use it; with
	// ErrUnavailable on outages and throttling.
	Unwrap(ctx context.Context, w Wrapped, aad []byte) (dek []byte, err error)
}

// Error classes. Providers wrap one of these (with errors.Join or %w) so the
// server can map them without knowing the provider: ErrUnavailable to gRPC
// Unavailable (retryable: the provider is down, unreachable or throttling),
// ErrKeyDisabled to FailedPrecondition (the owner's off switch), and
// ErrAuthentication to an internal integrity failure (not retryable: wrong
// KEK or tampered ciphertext).
var (
	// ErrUnavailable: the provider could not be reached or its key material
	// could not be loaded. Retrying later may succeed.
	ErrUnavailable = errors.New("kek: provider unavailable")
	// ErrAuthentication: the wrapped key did not authenticate under this KEK
	// and AAD: wrong KEK, tampered data, or AAD mismatch.
	ErrAuthentication = errors.New("kek: wrapped key failed authentication")
	// ErrUnsupported: unknown URI scheme or unknown wrapped-key format.
	ErrUnsupported = errors.New("kek: unsupported")
	// ErrKeyDisabled: the KEK's owner switched it off: the key is disabled,
	// deleted or pending deletion, or the KMS's identity may no longer use
	// it. Not retryable until the owner acts; this is the customer's off
	// switch, and the key store stops releases when it sees it.
	ErrKeyDisabled = errors.New("kek: key disabled or access revoked by its owner")
	// ErrInsecureKeyFile: a local key file is readable or writable by group
	// or others, or is not a regular file.
	ErrInsecureKeyFile = errors.New("kek: insecure key file")
	// ErrInvalidKeyFile: a local key file does not hold exactly one key.
	ErrInvalidKeyFile = errors.New("kek: invalid key file")
)

// SchemeLocal is the URI scheme of the local key-file provider.
const SchemeLocal = "local"

// providerSchemes are the schemes of the providers in subpackages, which
// this package cannot import (they import it); keystore/kek/providers
// opens them.
var providerSchemes = []string{"aws-kms", "gcp-kms", "azure-kv", "azure-mhsm", "pkcs11", "hcvault"}

// Open returns the local provider named by uri: local:///abs/path or a bare
// file path. Other schemes are opened by keystore/kek/providers.Open.
func Open(ctx context.Context, uri string) (Provider, error) {
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	if uri == "" {
		return nil, fmt.Errorf("kek: empty provider URI")
	}
	scheme, _, hasScheme := strings.Cut(uri, "://")
	if !hasScheme {
		if strings.HasPrefix(uri, "pkcs11:") {
			// RFC 7512 PKCS#11 URIs have no "//".
			return nil, fmt.Errorf("kek: open %q KEKs through keystore/kek/providers: %w", "pkcs11", ErrUnsupported)
		}
		l, err := OpenLocal(uri)
		if err != nil {
			return nil, err
		}
		return l, nil
	}
	switch scheme {
	case SchemeLocal:
		u, err := url.Parse(uri)
		if err != nil {
			return nil, fmt.Errorf("kek: parse local URI: %w", err)
		}
		if u.Host != "" {
			return nil, fmt.Errorf("kek: local URI must have an empty host (local:///path), got host %q", u.Host)
		}
		if u.Path == "" {
			return nil, fmt.Errorf("kek: local URI has no path")
		}
		l, err := OpenLocal(u.Path)
		if err != nil {
			return nil, err
		}
		return l, nil
	default:
		for _, s := range providerSchemes {
			if s == scheme {
				return nil, fmt.Errorf("kek: open %q KEKs through keystore/kek/providers: %w", scheme, ErrUnsupported)
			}
		}
		return nil, fmt.Errorf("kek: unknown provider scheme %q (supported: %s://, bare file path): %w", scheme, SchemeLocal, ErrUnsupported)
	}
}

// Close releases p's resources (HSM sessions, connections) if it holds
// any: not every provider does, so Close is not part of Provider.
func Close(p Provider) error {
	if c, ok := p.(interface{ Close() error }); ok {
		return c.Close()
	}
	return nil
}
