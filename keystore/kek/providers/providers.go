// Package providers opens a KEK provider by its URI: the one place that
// knows every provider, so configuration stays a single string and the
// key store depends only on the kek.Provider interface.
//
//	local:///path, or a bare path       key file (development)
//	pkcs11:token=...;object=...?...     PKCS#11 HSM (RFC 7512)
//	aws-kms://arn:aws:kms:...           AWS KMS
//	gcp-kms://projects/.../cryptoKeys/k Google Cloud KMS
//	azure-kv://<vault>.vault.azure.net/keys/<name>[/<version>]
//	azure-mhsm://<hsm>.managedhsm.azure.net/keys/<name>[/<version>]
//	hcvault://<host>[:port]/<mount>/keys/<name>
package providers

import (
	"context"
	"fmt"
	"strings"

	"github.com/attested-kms/attested-kms/keystore/kek"
	"github.com/attested-kms/attested-kms/keystore/kek/awskms"
	"github.com/attested-kms/attested-kms/keystore/kek/azurekv"
	"github.com/attested-kms/attested-kms/keystore/kek/gcpkms"
	"github.com/attested-kms/attested-kms/keystore/kek/hcvault"
	"github.com/attested-kms/attested-kms/keystore/kek/pkcs11"
)

// Options carry what a URI cannot: endpoint overrides and credentials for
// tests, or settings from the configuration file. The zero value uses each
// cloud's standard credential chain and public endpoints.
type Options struct {
	AWS   awskms.Options
	GCP   gcpkms.Options
	Azure *azurekv.Options
	Vault hcvault.Options
}

// Schemes lists the URI schemes Open understands.
func Schemes() []string {
	return []string{"local", "pkcs11", "aws-kms", "gcp-kms", "azure-kv", "azure-mhsm", "hcvault"}
}

// Open returns the provider for uri.
func Open(ctx context.Context, uri string, o Options) (kek.Provider, error) {
	switch s := scheme(uri); s {
	case "", kek.SchemeLocal:
		if typo := missingSlashes(uri); typo != "" {
			return nil, fmt.Errorf("kek: %q is not a KEK URI: did you mean %s://...? %w", truncate(uri, 40), typo, kek.ErrUnsupported)
		}
		return kek.Open(ctx, uri)
	case "pkcs11":
		return provider(pkcs11.Open(ctx, uri))
	case "aws-kms":
		return provider(awskms.Open(ctx, uri, o.AWS))
	case "gcp-kms":
		return provider(gcpkms.New(ctx, uri, o.GCP))
	case "azure-kv", "azure-mhsm":
		return provider(azurekv.Open(ctx, uri, o.Azure))
	case "hcvault":
		return provider(hcvault.Open(ctx, uri, o.Vault))
	default:
		return nil, fmt.Errorf("kek: unknown provider scheme %q (supported: %s): %w", s, strings.Join(Schemes(), ", "), kek.ErrUnsupported)
	}
}

// provider returns a nil interface with an error: a typed nil pointer
// would pass a caller's "p != nil" check.
func provider[P kek.Provider](p P, err error) (kek.Provider, error) {
	if err != nil {
		return nil, err
	}
	return p, nil
}

// missingSlashes returns the scheme of a known provider that uri begins
// with but without "//" ("aws-kms:arn:..."), which would otherwise be
// read as a local file name and fail as a retryable "file not found".
func missingSlashes(uri string) string {
	for _, s := range Schemes() {
		if s != "pkcs11" && strings.HasPrefix(uri, s+":") && !strings.HasPrefix(uri, s+"://") {
			return s
		}
	}
	return ""
}

func truncate(s string, n int) string {
	if len(s) > n {
		return s[:n] + "..."
	}
	return s
}

// scheme returns the URI scheme, "pkcs11" for RFC 7512 URIs (which have no
// "//"), and "" for a bare path.
func scheme(uri string) string {
	if strings.HasPrefix(uri, "pkcs11:") {
		return "pkcs11"
	}
	if s, _, ok := strings.Cut(uri, "://"); ok {
		return s
	}
	return ""
}

// DisplayURI is uri without secrets, for logs, errors, audit entries and
// terminals: a PKCS#11 URI may carry its PIN in pin-value.
func DisplayURI(uri string) string {
	if scheme(uri) != "pkcs11" {
		return uri
	}
	u, err := pkcs11.ParseURI(uri)
	if err != nil {
		return "pkcs11:<unparsable URI>"
	}
	return u.String()
}

// HasInlineSecret reports whether uri carries a secret itself (a PKCS#11
// pin-value), which must not travel through admin calls or be recorded.
func HasInlineSecret(uri string) bool {
	if scheme(uri) != "pkcs11" {
		return false
	}
	return DisplayURI(uri) != uri && strings.Contains(uri, "pin-value")
}

// Opener returns an Open bound to o, in the shape keystore.Options.OpenKEK
// takes.
func Opener(o Options) func(ctx context.Context, uri string) (kek.Provider, error) {
	return func(ctx context.Context, uri string) (kek.Provider, error) { return Open(ctx, uri, o) }
}
