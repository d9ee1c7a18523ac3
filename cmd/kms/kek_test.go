package main

import (
	"bytes"
	"crypto/ecdh"
	"crypto/rand"
	"crypto/rsa"
	"crypto/x509"
	"encoding/pem"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/attested-kms/attested-kms/hpke"
	"github.com/attested-kms/attested-kms/keystore/kek/pkcs11/pkcs11test"
)

// kekOK checks the one line `kms kek test` prints on success.
func kekOK(t *testing.T, out, uri string) {
	t.Helper()
	want := "kek: ok " + displayURI(uri) + " (version "
	if !strings.HasPrefix(out, want) || !strings.Contains(out, "algorithm ") || strings.Count(out, "\n") != 1 {
		t.Fatalf("kek test printed %q, want one line starting %q", out, want)
	}
}

// A PKCS#11 KEK made by `kms kek create` passes `kms kek test`; creating it
// again is refused and leaves the first key working.
func TestKEKCreateAndTestPKCS11(t *testing.T) {
	tk := pkcs11test.NewToken(t)
	uri := tk.URI("kms-kek")

	out, errText, code := run(t, "kek", "create", "--kek", uri)
	if code != 0 {
		t.Fatalf("create: exit %d: %s", code, errText)
	}
	if out != "kek: created "+displayURI(uri)+"\n" {
		t.Fatalf("create printed %q", out)
	}
	out, errText, code = run(t, "kek", "test", "--kek", uri)
	if code != 0 {
		t.Fatalf("test: exit %d: %s", code, errText)
	}
	kekOK(t, out, uri)

	_, errText, code = run(t, "kek", "create", "--kek", uri)
	if code == 0 || !strings.Contains(errText, "already exists") {
		t.Fatalf("second create: exit %d: %q, want a refusal saying the key exists", code, errText)
	}
	if _, errText, code = run(t, "kek", "test", "--kek", uri); code != 0 {
		t.Fatalf("test after refused create: exit %d: %s", code, errText)
	}
}

// `kms kek test` on a key that is not in the token exits 2 with the
// provider's reason on one line, and never shows the PIN, whether the URI
// names a PIN file or carries the PIN itself.
func TestKEKTestMissingObject(t *testing.T) {
	tk := pkcs11test.NewToken(t)
	tk.NewKEK(t, "present")
	for name, uri := range map[string]string{
		"pin-source": tk.URI("absent"),
		"pin-value":  "pkcs11:token=" + tk.Label + ";object=absent;type=secret-key?module-path=" + tk.Module + "&pin-value=" + tk.PIN,
	} {
		t.Run(name, func(t *testing.T) {
			out, errText, code := run(t, "kek", "test", "--kek", uri)
			if code != 2 {
				t.Fatalf("exit %d (%q), want 2", code, errText)
			}
			if out != "" {
				t.Fatalf("printed %q on failure", out)
			}
			if errText == "" || strings.Contains(errText, "\n") {
				t.Fatalf("reason %q is not one line", errText)
			}
			if !strings.Contains(errText, "absent") {
				t.Fatalf("reason %q does not name the missing object", errText)
			}
			if strings.Contains(errText, tk.PIN) {
				t.Fatalf("reason %q contains the PIN", errText)
			}
		})
	}
}

func TestKEKCreateAndTestLocal(t *testing.T) {
	path := filepath.Join(t.TempDir(), "kek.key")
	uri := "local://" + path
	if _, errText, code := run(t, "kek", "create", "--kek", uri); code != 0 {
		t.Fatalf("create: exit %d: %s", code, errText)
	}
	fi, err := os.Stat(path)
	if err != nil {
		t.Fatal(err)
	}
	if fi.Mode().Perm() != 0o600 {
		t.Fatalf("key file mode %v, want 0600", fi.Mode().Perm())
	}
	before, _ := os.ReadFile(path)
	out, errText, code := run(t, "kek", "test", "--kek", uri)
	if code != 0 {
		t.Fatalf("test: exit %d: %s", code, errText)
	}
	kekOK(t, out, uri)

	if _, _, code := run(t, "kek", "create", "--kek", uri); code == 0 {
		t.Fatal("create over an existing key file succeeded")
	}
	if after, _ := os.ReadFile(path); string(after) != string(before) {
		t.Fatal("refused create changed the key file")
	}

	// A key file that is not there: exit 2 with the reason.
	_, errText, code = run(t, "kek", "test", "--kek", "local://"+filepath.Join(t.TempDir(), "missing.key"))
	if code != 2 || errText == "" || strings.Contains(errText, "\n") {
		t.Fatalf("test of a missing key file: exit %d: %q", code, errText)
	}
}

// Cloud keys are created by their owner: create refuses and says where the
// setup is described, without calling anything.
func TestKEKCreateCloudRefused(t *testing.T) {
	for _, uri := range []string{
		"aws-kms://arn:aws:kms:us-east-1:111122223333:key/1234abcd-12ab-34cd-56ef-1234567890ab",
		"gcp-kms://projects/p/locations/global/keyRings/r/cryptoKeys/k",
		"hcvault://vault.example:8200/transit/keys/kms",
	} {
		_, errText, code := run(t, "kek", "create", "--kek", uri)
		if code == 0 {
			t.Fatalf("%s: create succeeded", uri)
		}
		if !strings.Contains(errText, "docs/kek-providers.md") || !strings.Contains(errText, "owner") {
			t.Fatalf("%s: refusal %q does not point to docs/kek-providers.md", uri, errText)
		}
	}
}

// The URI is echoed in `kms kek test` output; a PIN given inline
// (pin-value) must not be echoed with it, on success or failure.
func TestKEKTestHidesPINValue(t *testing.T) {
	tk := pkcs11test.NewToken(t)
	tk.NewKEK(t, "kek")
	base := "pkcs11:token=" + tk.Label + ";object=%s;type=secret-key?module-path=" + tk.Module + "&pin-value=" + tk.PIN
	out, errText, code := run(t, "kek", "test", "--kek", strings.Replace(base, "%s", "kek", 1))
	if code != 0 {
		t.Fatalf("exit %d: %s", code, errText)
	}
	if !strings.HasPrefix(out, "kek: ok ") || strings.Contains(out, tk.PIN) {
		t.Fatalf("output %q shows the PIN", out)
	}
	_, errText, code = run(t, "kek", "test", "--kek", strings.Replace(base, "%s", "absent", 1))
	if code != 2 || strings.Contains(errText, tk.PIN) {
		t.Fatalf("exit %d, reason %q shows the PIN", code, errText)
	}
}

// `kms keys export-for-import --host-oaep` wraps the X25519 key held in
// SoftHSM2 to the import key's PEM; the blob opens with the import private
// key to exactly that key. Without --host-oaep SoftHSM2 (no OAEP-SHA-256
// wrapping) is refused with a reason, and nothing is written.
func TestExportForImportCLI(t *testing.T) {
	tk := pkcs11test.NewToken(t)
	dir := t.TempDir()
	x, err := ecdh.X25519().GenerateKey(rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tk.ImportSecret(t, "byok", []byte{0xb1}, x.Bytes())
	rsaKey, err := rsa.GenerateKey(rand.Reader, 3072)
	if err != nil {
		t.Fatal(err)
	}
	der, _ := x509.MarshalPKIXPublicKey(&rsaKey.PublicKey)
	pemPath := filepath.Join(dir, "import.pem")
	if err := os.WriteFile(pemPath, pem.EncodeToMemory(&pem.Block{Type: "PUBLIC KEY", Bytes: der}), 0o644); err != nil {
		t.Fatal(err)
	}
	blobPath := filepath.Join(dir, "blob")
	args := []string{"keys", "export-for-import", "--hsm-key", tk.URI("byok"), "--import-key", pemPath, "--out", blobPath}

	_, errText, code := run(t, args...)
	switch {
	case code == 0:
		t.Log("token wraps with RSA-OAEP-SHA-256 itself")
	case strings.Contains(errText, "RSA-OAEP-SHA-256"):
		if _, err := os.Stat(blobPath); err == nil {
			t.Fatal("refused export wrote a blob")
		}
	default:
		t.Fatalf("export without --host-oaep: exit %d: %s", code, errText)
	}

	out, errText, code := run(t, append(args, "--host-oaep")...)
	if code != 0 {
		t.Fatalf("export --host-oaep: exit %d: %s", code, errText)
	}
	if !strings.Contains(out, blobPath) {
		t.Fatalf("output %q does not name the blob", out)
	}
	blob, err := os.ReadFile(blobPath)
	if err != nil {
		t.Fatal(err)
	}
	if fi, _ := os.Stat(blobPath); fi.Mode().Perm() != 0o600 {
		t.Fatalf("blob mode %v", fi.Mode().Perm())
	}
	got, err := hpke.UnwrapRSA(rsaKey, blob)
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(got, x.Bytes()) {
		t.Fatal("blob does not unwrap to the key in the HSM")
	}
	if bytes.Contains(blob, x.Bytes()) {
		t.Fatal("blob contains the private key")
	}
}
