// Package kek defines the key-encryption-key (KEK) provider interface through
// which the key store wraps the per-key data encryption keys (DEKs), and the
// local key-file provider used for development.
//
// Cloud and HSM providers (AWS KMS, GCP Cloud KMS, Azure Key Vault or Managed
// HSM, PKCS#11, HashiCorp Vault transit) implement the same interface later;
// Open dispatches on the URI scheme so configuration stays a single string.
package kek

import (
	"context"
	"errors"
	"fmt"
	"net/url"
	"strings"
)

// Provider wraps and unwraps data keys under a key-encryption key it never
// exposes. Implementations must be safe for concurrent use.
type Provider interface {
	// URI names the KEK, e.g. local:///etc/kms/kek.key. It is recorded next to
	// every wrapped DEK so the store can tell which KEK a record needs.
	URI() string
	// Wrap encrypts dek and authenticates aad with it. The caller keeps
	// ownership of dek and may zero it after Wrap returns.
	Wrap(ctx context.Context, dek, aad []byte) (wrapped []byte, err error)
	// Unwrap reverses Wrap. It fails with an error matching ErrAuthentication
	// if wrapped was produced by another KEK, was modified, or aad differs.
	Unwrap(ctx context.Context, wrapped, aad []byte) (dek []byte, err error)
}

// Error classes. Providers wrap one of these (with errors.Join or %w) so the
// server can map them without knowing the provider: ErrUnavailable to gRPC
// Unavailable (retryable: the provider is down or unreachable), and
// ErrAuthentication to an internal integrity failure (not retryable: wrong KEK
// or tampered ciphertext).
var (
	// ErrUnavailable: the provider could not be reached or its key material
	// could not be loaded. Retrying later may succeed.
	ErrUnavailable = errors.New("kek: provider unavailable")
	// ErrAuthentication: the wrapped key did not authenticate under this KEK
	// and AAD: wrong KEK, tampered data, or AAD mismatch.
	ErrAuthentication = errors.New("kek: wrapped key failed authentication")
	// ErrUnsupported: unknown URI scheme or unknown wrapped-key format.
	ErrUnsupported = errors.New("kek: unsupported")
	// ErrInsecureKeyFile: a local key file is readable or writable by group
	// or others, or is not a regular file.
	ErrInsecureKeyFile = errors.New("kek: insecure key file")
	// ErrInvalidKeyFile: a local key file does not hold exactly one key.
	ErrInvalidKeyFile = errors.New("kek: invalid key file")
)

// SchemeLocal is the URI scheme of the local key-file provider.
const SchemeLocal = "local"

// plannedSchemes are provider schemes reserved for providers not built yet;
// naming them in the error tells operators the URI is well formed but the
// build lacks the provider, rather than that they mistyped it.
var plannedSchemes = []string{"aws-kms", "gcp-kms", "azure-kv", "azure-mhsm", "pkcs11", "hcvault"}

// Open returns the provider named by uri. Supported now: local:///abs/path
// and a bare file path (treated as a local key file).
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
			return nil, fmt.Errorf("kek: provider %q not available in this build: %w", "pkcs11", ErrUnsupported)
		}
		return OpenLocal(uri)
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
		return OpenLocal(u.Path)
	default:
		for _, s := range plannedSchemes {
			if s == scheme {
				return nil, fmt.Errorf("kek: provider %q not available in this build: %w", scheme, ErrUnsupported)
			}
		}
		return nil, fmt.Errorf("kek: unknown provider scheme %q (supported: %s://, bare file path): %w", scheme, SchemeLocal, ErrUnsupported)
	}
}
