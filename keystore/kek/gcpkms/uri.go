package gcpkms

import (
	"fmt"
	"strings"

	"github.com/attested-kms/attested-kms/keystore/kek"
)

// Scheme is the URI scheme of Cloud KMS KEKs. The URI form,
// gcp-kms://projects/<p>/locations/<l>/keyRings/<r>/cryptoKeys/<k>, is the
// one Tink's gcpkms integration uses, so the same string names the key in
// both.
const Scheme = "gcp-kms"

// KeyName identifies a Cloud KMS CryptoKey (not a CryptoKeyVersion: Encrypt
// uses the key's primary version and Decrypt finds the version from the
// ciphertext, so pinning a version in configuration would only break
// rotation).
type KeyName struct {
	Project   string
	Location  string
	KeyRing   string
	CryptoKey string
}

// ResourceName returns the API resource name,
// projects/<p>/locations/<l>/keyRings/<r>/cryptoKeys/<k>.
func (k KeyName) ResourceName() string {
	return "projects/" + k.Project + "/locations/" + k.Location + "/keyRings/" + k.KeyRing + "/cryptoKeys/" + k.CryptoKey
}

// URI returns gcp-kms://<resource name>.
func (k KeyName) URI() string { return Scheme + "://" + k.ResourceName() }

// versionPrefix is what every CryptoKeyVersion name of this key starts with.
func (k KeyName) versionPrefix() string { return k.ResourceName() + "/cryptoKeyVersions/" }

// ParseURI parses gcp-kms://projects/<p>/locations/<l>/keyRings/<r>/cryptoKeys/<k>.
// It is strict: no query, fragment, trailing slash, percent-encoding or
// version suffix, and each ID must use the characters Cloud KMS allows, so a
// URI that parses names exactly one key and prints back unchanged. Errors for
// a foreign scheme match kek.ErrUnsupported.
func ParseURI(uri string) (KeyName, error) {
	rest, ok := strings.CutPrefix(uri, Scheme+"://")
	if !ok {
		scheme, _, found := strings.Cut(uri, "://")
		if !found {
			return KeyName{}, fmt.Errorf("gcpkms: URI %q: want %s://projects/<p>/locations/<l>/keyRings/<r>/cryptoKeys/<k>", uri, Scheme)
		}
		return KeyName{}, fmt.Errorf("gcpkms: URI scheme %q is not %s: %w", scheme, Scheme, kek.ErrUnsupported)
	}
	parts := strings.Split(rest, "/")
	if len(parts) >= 10 && parts[8] == "cryptoKeyVersions" {
		return KeyName{}, fmt.Errorf("gcpkms: URI %q names a CryptoKeyVersion; name the CryptoKey (Cloud KMS picks the version)", uri)
	}
	if len(parts) != 8 || parts[0] != "projects" || parts[2] != "locations" || parts[4] != "keyRings" || parts[6] != "cryptoKeys" {
		return KeyName{}, fmt.Errorf("gcpkms: URI %q: want %s://projects/<p>/locations/<l>/keyRings/<r>/cryptoKeys/<k>", uri, Scheme)
	}
	k := KeyName{Project: parts[1], Location: parts[3], KeyRing: parts[5], CryptoKey: parts[7]}
	if !validProject(k.Project) {
		return KeyName{}, fmt.Errorf("gcpkms: URI %q: invalid project %q", uri, k.Project)
	}
	if !validLocation(k.Location) {
		return KeyName{}, fmt.Errorf("gcpkms: URI %q: invalid location %q", uri, k.Location)
	}
	if !validID(k.KeyRing) {
		return KeyName{}, fmt.Errorf("gcpkms: URI %q: invalid key ring ID %q (1-63 of [a-zA-Z0-9_-])", uri, k.KeyRing)
	}
	if !validID(k.CryptoKey) {
		return KeyName{}, fmt.Errorf("gcpkms: URI %q: invalid key ID %q (1-63 of [a-zA-Z0-9_-])", uri, k.CryptoKey)
	}
	return k, nil
}

// validProject accepts project IDs (lowercase letters, digits, hyphens),
// project numbers, and legacy domain-scoped IDs ("example.com:proj").
func validProject(s string) bool {
	if s == "" || len(s) > 100 {
		return false
	}
	for _, c := range []byte(s) {
		if !(c >= 'a' && c <= 'z' || c >= '0' && c <= '9' || c == '-' || c == '.' || c == ':') {
			return false
		}
	}
	return true
}

// validLocation accepts region and multi-region names ("global",
// "us-east1", "europe").
func validLocation(s string) bool {
	if s == "" || len(s) > 63 {
		return false
	}
	for _, c := range []byte(s) {
		if !(c >= 'a' && c <= 'z' || c >= '0' && c <= '9' || c == '-') {
			return false
		}
	}
	return true
}

// validID follows Cloud KMS's rule for key ring and key IDs.
func validID(s string) bool {
	if s == "" || len(s) > 63 {
		return false
	}
	for _, c := range []byte(s) {
		if !(c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '_' || c == '-') {
			return false
		}
	}
	return true
}
