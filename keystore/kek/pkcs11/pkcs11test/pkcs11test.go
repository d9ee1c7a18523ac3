// Package pkcs11test creates SoftHSM2 tokens for tests and acts as the
// owner of keys in them (disable, enable, delete, restore), so the PKCS#11
// provider's tests and those of its users (the CLI, the key store's
// off-switch tests) run against a real PKCS#11 module.
//
// SoftHSM2 reads its configuration (SOFTHSM2_CONF) when the module is
// initialized, and sees only tokens that existed then. NewToken therefore
// sets SOFTHSM2_CONF for the test (so tests using it cannot be parallel)
// and must be called while no provider of this process has the module
// open; create every token a test needs first (NewTokens), then open
// providers, and Close them (t.Cleanup) before the next test.
package pkcs11test

import (
	"context"
	"crypto/rand"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"testing"

	"github.com/miekg/pkcs11"

	"github.com/attested-kms/attested-kms/keystore/kek/pkcs11/internal/hsm"
)

// Module is where Debian and Ubuntu install SoftHSM2.
const Module = "/usr/lib/softhsm/libsofthsm2.so"

// Token is a fresh SoftHSM2 token in a test's temporary directory.
type Token struct {
	Label   string
	PIN     string
	SOPIN   string
	Module  string
	Dir     string // SoftHSM2 token directory
	PINFile string // file holding PIN, mode 0600
}

// NewToken creates one token. It skips the test if SoftHSM2 is missing.
func NewToken(t testing.TB) *Token {
	t.Helper()
	return NewTokens(t, 1)[0]
}

// NewTokens creates n tokens in one SoftHSM2 configuration, labelled
// kms-test-0, kms-test-1, ...
func NewTokens(t testing.TB, n int) []*Token {
	t.Helper()
	util, err := exec.LookPath("softhsm2-util")
	if err != nil {
		t.Skip("softhsm2-util not installed")
	}
	if _, err := os.Stat(Module); err != nil {
		t.Skipf("SoftHSM2 module not installed: %v", err)
	}
	if hsm.Loaded(Module) {
		t.Fatal("pkcs11test: SoftHSM2 is already loaded in this process and would not see a new token; create tokens before opening providers and close providers at the end of each test")
	}
	dir := t.TempDir()
	tokens := filepath.Join(dir, "tokens")
	if err := os.Mkdir(tokens, 0o700); err != nil {
		t.Fatal(err)
	}
	conf := filepath.Join(dir, "softhsm2.conf")
	body := fmt.Sprintf("directories.tokendir = %s\nobjectstore.backend = file\nlog.level = ERROR\nslots.removable = false\n", tokens)
	if err := os.WriteFile(conf, []byte(body), 0o600); err != nil {
		t.Fatal(err)
	}
	t.Setenv("SOFTHSM2_CONF", conf)
	out := make([]*Token, n)
	for i := range out {
		tk := &Token{
			Label:   fmt.Sprintf("kms-test-%d", i),
			PIN:     randomPIN(t),
			SOPIN:   randomPIN(t),
			Module:  Module,
			Dir:     tokens,
			PINFile: filepath.Join(dir, fmt.Sprintf("pin-%d", i)),
		}
		cmd := exec.Command(util, "--init-token", "--free", "--label", tk.Label, "--pin", tk.PIN, "--so-pin", tk.SOPIN)
		if b, err := cmd.CombinedOutput(); err != nil {
			t.Fatalf("softhsm2-util --init-token: %v\n%s", err, b)
		}
		if err := os.WriteFile(tk.PINFile, []byte(tk.PIN+"\n"), 0o600); err != nil {
			t.Fatal(err)
		}
		out[i] = tk
	}
	return out
}

func randomPIN(t testing.TB) string {
	b := make([]byte, 8)
	if _, err := rand.Read(b); err != nil {
		t.Fatal(err)
	}
	return fmt.Sprintf("%x", b)
}

// URI returns the RFC 7512 URI of the secret key labelled object, with the
// PIN read from PINFile.
func (tk *Token) URI(object string) string {
	return fmt.Sprintf("pkcs11:token=%s;object=%s;type=secret-key?module-path=%s&pin-source=file:%s",
		tk.Label, object, tk.Module, tk.PINFile)
}

// Session is a logged-in PKCS#11 session lent to Do's callback.
type Session = hsm.Session

// Do runs f with a logged-in session on the token.
func (tk *Token) Do(t testing.TB, f func(Session) error) {
	t.Helper()
	if err := tk.do(f); err != nil {
		t.Fatal(err)
	}
}

func (tk *Token) do(f func(Session) error) error {
	ctx := context.Background()
	pin := tk.PIN
	h, err := hsm.Open(ctx, hsm.Config{
		ModulePath:  tk.Module,
		Select:      hsm.Selector{Label: tk.Label},
		PIN:         func() (string, error) { return pin, nil },
		MaxSessions: 2,
	})
	if err != nil {
		return fmt.Errorf("pkcs11test: open token %s: %w", tk.Label, err)
	}
	defer h.Close()
	return h.Do(ctx, f)
}

// ImportAES stores value (16, 24 or 32 bytes) as a sensitive,
// non-extractable AES token key usable to encrypt and decrypt: what
// pkcs11.CreateKey makes, but with a value the test knows (so Restore can
// bring the very same key back).
func (tk *Token) ImportAES(t testing.TB, label string, id, value []byte) {
	t.Helper()
	tk.Do(t, func(s Session) error {
		_, err := s.Ctx.CreateObject(s.Handle, aesTemplate(label, id, value))
		return err
	})
}

func aesTemplate(label string, id, value []byte) []*pkcs11.Attribute {
	return []*pkcs11.Attribute{
		pkcs11.NewAttribute(pkcs11.CKA_CLASS, pkcs11.CKO_SECRET_KEY),
		pkcs11.NewAttribute(pkcs11.CKA_KEY_TYPE, pkcs11.CKK_AES),
		pkcs11.NewAttribute(pkcs11.CKA_TOKEN, true),
		pkcs11.NewAttribute(pkcs11.CKA_PRIVATE, true),
		pkcs11.NewAttribute(pkcs11.CKA_SENSITIVE, true),
		pkcs11.NewAttribute(pkcs11.CKA_EXTRACTABLE, false),
		pkcs11.NewAttribute(pkcs11.CKA_ENCRYPT, true),
		pkcs11.NewAttribute(pkcs11.CKA_DECRYPT, true),
		pkcs11.NewAttribute(pkcs11.CKA_LABEL, label),
		pkcs11.NewAttribute(pkcs11.CKA_ID, id),
		pkcs11.NewAttribute(pkcs11.CKA_VALUE, value),
	}
}

// ImportSecret stores value as a CKK_GENERIC_SECRET token key that can
// leave the token only wrapped (CKA_SENSITIVE and CKA_EXTRACTABLE true):
// how an X25519 private key for pkcs11.ExportForImport is held.
func (tk *Token) ImportSecret(t testing.TB, label string, id, value []byte) {
	t.Helper()
	tk.Do(t, func(s Session) error {
		_, err := s.Ctx.CreateObject(s.Handle, []*pkcs11.Attribute{
			pkcs11.NewAttribute(pkcs11.CKA_CLASS, pkcs11.CKO_SECRET_KEY),
			pkcs11.NewAttribute(pkcs11.CKA_KEY_TYPE, pkcs11.CKK_GENERIC_SECRET),
			pkcs11.NewAttribute(pkcs11.CKA_TOKEN, true),
			pkcs11.NewAttribute(pkcs11.CKA_PRIVATE, true),
			pkcs11.NewAttribute(pkcs11.CKA_SENSITIVE, true),
			pkcs11.NewAttribute(pkcs11.CKA_EXTRACTABLE, true),
			pkcs11.NewAttribute(pkcs11.CKA_ENCRYPT, false),
			pkcs11.NewAttribute(pkcs11.CKA_DECRYPT, false),
			pkcs11.NewAttribute(pkcs11.CKA_SIGN, false),
			pkcs11.NewAttribute(pkcs11.CKA_DERIVE, false),
			pkcs11.NewAttribute(pkcs11.CKA_LABEL, label),
			pkcs11.NewAttribute(pkcs11.CKA_ID, id),
			pkcs11.NewAttribute(pkcs11.CKA_VALUE, value),
		})
		return err
	})
}

// SetAttributes sets attributes on the one secret key labelled label.
func (tk *Token) SetAttributes(t testing.TB, label string, attrs ...*pkcs11.Attribute) {
	t.Helper()
	tk.Do(t, func(s Session) error {
		h, err := findSecret(s, label)
		if err != nil {
			return err
		}
		return s.Ctx.SetAttributeValue(s.Handle, h, attrs)
	})
}

// Destroy destroys the secret key labelled label.
func (tk *Token) Destroy(t testing.TB, label string) {
	t.Helper()
	tk.Do(t, func(s Session) error {
		h, err := findSecret(s, label)
		if err != nil {
			return err
		}
		return s.Ctx.DestroyObject(s.Handle, h)
	})
}

// Exists reports whether a secret key labelled label exists.
func (tk *Token) Exists(t testing.TB, label string) bool {
	t.Helper()
	var found bool
	tk.Do(t, func(s Session) error {
		_, err := findSecret(s, label)
		found = err == nil
		if errors.Is(err, errNotFound) {
			return nil
		}
		return err
	})
	return found
}

var errNotFound = errors.New("pkcs11test: no such key")

func findSecret(s Session, label string) (pkcs11.ObjectHandle, error) {
	if err := s.Ctx.FindObjectsInit(s.Handle, []*pkcs11.Attribute{
		pkcs11.NewAttribute(pkcs11.CKA_CLASS, pkcs11.CKO_SECRET_KEY),
		pkcs11.NewAttribute(pkcs11.CKA_LABEL, label),
	}); err != nil {
		return 0, err
	}
	hs, _, err := s.Ctx.FindObjects(s.Handle, 2)
	_ = s.Ctx.FindObjectsFinal(s.Handle)
	switch {
	case err != nil:
		return 0, err
	case len(hs) == 0:
		return 0, fmt.Errorf("%w labelled %q", errNotFound, label)
	case len(hs) > 1:
		return 0, fmt.Errorf("pkcs11test: several keys labelled %q", label)
	}
	return hs[0], nil
}

// KEK is an AES-256 KEK the test imported, with its owner's controls: it
// implements kektest.Owner (Disable clears CKA_ENCRYPT and CKA_DECRYPT,
// the usage an HSM administrator revokes) and kektest.Deleter (Delete
// destroys the object; Restore imports the same value under the same label
// and ID, as restoring an HSM backup does).
type KEK struct {
	tk    *Token
	Label string
	ID    []byte
	value []byte
}

// NewKEK imports a random AES-256 KEK labelled label.
func (tk *Token) NewKEK(t testing.TB, label string) *KEK {
	t.Helper()
	k := &KEK{tk: tk, Label: label, ID: make([]byte, 8), value: make([]byte, 32)}
	if _, err := rand.Read(k.ID); err != nil {
		t.Fatal(err)
	}
	if _, err := rand.Read(k.value); err != nil {
		t.Fatal(err)
	}
	tk.ImportAES(t, label, k.ID, k.value)
	return k
}

// URI is the KEK's provider URI.
func (k *KEK) URI() string { return k.tk.URI(k.Label) }

// Disable revokes the key's encrypt and decrypt usage.
func (k *KEK) Disable(t testing.TB) { k.setUsage(t, false) }

// Enable restores it.
func (k *KEK) Enable(t testing.TB) { k.setUsage(t, true) }

func (k *KEK) setUsage(t testing.TB, on bool) {
	t.Helper()
	k.tk.SetAttributes(t, k.Label, pkcs11.NewAttribute(pkcs11.CKA_ENCRYPT, on), pkcs11.NewAttribute(pkcs11.CKA_DECRYPT, on))
}

// Delete destroys the key object.
func (k *KEK) Delete(t testing.TB) { k.tk.Destroy(t, k.Label) }

// Restore imports the same key again.
func (k *KEK) Restore(t testing.TB) { k.tk.ImportAES(t, k.Label, k.ID, k.value) }
