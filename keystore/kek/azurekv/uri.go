package azurekv

import (
	"fmt"
	"net/url"
	"regexp"
	"strings"
)

// URI schemes of this provider.
const (
	// SchemeKeyVault names a key in an Azure Key Vault (standard or premium).
	SchemeKeyVault = "azure-kv"
	// SchemeManagedHSM names a key in an Azure Key Vault Managed HSM.
	SchemeManagedHSM = "azure-mhsm"
)

// Wrapping algorithms, by their Key Vault names. They are also the
// Algorithm of the kek.Wrapped values this provider makes.
const (
	// AlgRSAOAEP256 is RSAES-OAEP with SHA-256 and MGF1-SHA-256, for RSA
	// and RSA-HSM keys in a vault or a Managed HSM.
	AlgRSAOAEP256 = "RSA-OAEP-256"
	// AlgA256KW is AES-256 key wrap (RFC 3394), for oct-HSM keys, which
	// only a Managed HSM holds.
	AlgA256KW = "A256KW"
)

// DNS suffixes of vaults and Managed HSMs in the public and sovereign
// clouds. Only these hosts are accepted so a mistyped or hostile URI cannot
// point the KMS's identity (and its bearer tokens) at an arbitrary server.
var (
	keyVaultSuffixes   = []string{".vault.azure.net", ".vault.azure.cn", ".vault.usgovcloudapi.net"}
	managedHSMSuffixes = []string{".managedhsm.azure.net", ".managedhsm.azure.cn", ".managedhsm.usgovcloudapi.net"}
)

var (
	// Vault and Managed HSM names: 3-24 characters, letters, digits and
	// hyphens, starting with a letter, not ending with a hyphen (the
	// consecutive-hyphen rule is checked separately).
	resourceNameRE = regexp.MustCompile(`^[a-z][a-z0-9-]{1,22}[a-z0-9]$`)
	// Key names: 1-127 letters, digits and hyphens.
	keyNameRE = regexp.MustCompile(`^[A-Za-z0-9-]{1,127}$`)
	// Key versions are 32 hexadecimal characters today; accept any short
	// alphanumeric string so the value is always safe in a URL path.
	keyVersionRE = regexp.MustCompile(`^[A-Za-z0-9]{1,64}$`)
)

// KeyURI is a parsed provider URI:
//
//	azure-kv://<vault>.vault.azure.net/keys/<name>[/<version>][?alg=RSA-OAEP-256]
//	azure-mhsm://<hsm>.managedhsm.azure.net/keys/<name>[/<version>][?alg=RSA-OAEP-256|A256KW]
type KeyURI struct {
	// Scheme is SchemeKeyVault or SchemeManagedHSM.
	Scheme string
	// Host is the vault or Managed HSM DNS name, lower case.
	Host string
	// Name is the key name.
	Name string
	// Version pins a key version; "" wraps under the key's current version.
	Version string
	// Algorithm pins the wrapping algorithm; "" picks it from the key type.
	Algorithm string
}

// ParseURI parses and validates a provider URI.
func ParseURI(raw string) (KeyURI, error) {
	u, err := url.Parse(raw)
	if err != nil {
		// url.Error quotes the input, which holds no secret; keep it short.
		return KeyURI{}, fmt.Errorf("azurekv: malformed URI: %w", err)
	}
	k := KeyURI{Scheme: u.Scheme}
	var suffixes []string
	switch u.Scheme {
	case SchemeKeyVault:
		suffixes = keyVaultSuffixes
	case SchemeManagedHSM:
		suffixes = managedHSMSuffixes
	default:
		return KeyURI{}, fmt.Errorf("azurekv: URI scheme %q, want %s:// or %s://", u.Scheme, SchemeKeyVault, SchemeManagedHSM)
	}
	if u.Opaque != "" || u.User != nil || u.Fragment != "" || u.RawFragment != "" {
		return KeyURI{}, fmt.Errorf("azurekv: URI must be %s://<host>/keys/<name>[/<version>] without user info or fragment", u.Scheme)
	}
	if u.Port() != "" {
		return KeyURI{}, fmt.Errorf("azurekv: URI must not carry a port")
	}
	host := strings.ToLower(u.Hostname())
	resource := ""
	for _, s := range suffixes {
		if name, ok := strings.CutSuffix(host, s); ok {
			resource = name
			break
		}
	}
	if resource == "" || !resourceNameRE.MatchString(resource) || strings.Contains(resource, "--") {
		return KeyURI{}, fmt.Errorf("azurekv: host %q is not a %s name (<name>%s)", host, kindOf(u.Scheme), suffixes[0])
	}
	k.Host = host

	// EscapedPath keeps percent-encoding visible so "%2F" cannot smuggle
	// an extra path segment past the checks below.
	parts := strings.Split(u.EscapedPath(), "/")
	if len(parts) < 3 || len(parts) > 4 || parts[0] != "" || parts[1] != "keys" {
		return KeyURI{}, fmt.Errorf("azurekv: URI path %q, want /keys/<name>[/<version>]", u.EscapedPath())
	}
	if !keyNameRE.MatchString(parts[2]) {
		return KeyURI{}, fmt.Errorf("azurekv: key name %q: want 1-127 letters, digits or hyphens", parts[2])
	}
	k.Name = parts[2]
	if len(parts) == 4 {
		if !keyVersionRE.MatchString(parts[3]) {
			return KeyURI{}, fmt.Errorf("azurekv: key version %q: want letters and digits", parts[3])
		}
		k.Version = parts[3]
	}

	q, err := url.ParseQuery(u.RawQuery)
	if err != nil {
		return KeyURI{}, fmt.Errorf("azurekv: malformed URI query: %w", err)
	}
	for name, vals := range q {
		if name != "alg" || len(vals) != 1 {
			return KeyURI{}, fmt.Errorf("azurekv: unknown or repeated URI query parameter %q (only one alg= is accepted)", name)
		}
	}
	if q.Has("alg") {
		k.Algorithm = q.Get("alg")
		switch {
		case k.Algorithm == AlgRSAOAEP256:
		case k.Algorithm == AlgA256KW && k.Scheme == SchemeManagedHSM:
		default:
			want := AlgRSAOAEP256
			if k.Scheme == SchemeManagedHSM {
				want += " or " + AlgA256KW
			}
			return KeyURI{}, fmt.Errorf("azurekv: alg %q not supported for %s keys (want %s)", k.Algorithm, kindOf(k.Scheme), want)
		}
	}
	return k, nil
}

// String returns the canonical form of the URI; ParseURI(k.String())
// returns k.
func (k KeyURI) String() string {
	s := k.Scheme + "://" + k.Host + "/keys/" + k.Name
	if k.Version != "" {
		s += "/" + k.Version
	}
	if k.Algorithm != "" {
		s += "?alg=" + k.Algorithm
	}
	return s
}

// VaultURL is the base URL the azkeys client talks to.
func (k KeyURI) VaultURL() string { return "https://" + k.Host + "/" }

func kindOf(scheme string) string {
	if scheme == SchemeManagedHSM {
		return "Managed HSM"
	}
	return "Key Vault"
}
