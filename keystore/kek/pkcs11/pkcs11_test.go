package pkcs11_test

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"os"
	"strings"
	"testing"
	"time"

	mp "github.com/miekg/pkcs11"

	"github.com/attested-kms/attested-kms/keystore/kek"
	"github.com/attested-kms/attested-kms/keystore/kek/kektest"
	"github.com/attested-kms/attested-kms/keystore/kek/pkcs11"
	"github.com/attested-kms/attested-kms/keystore/kek/pkcs11/pkcs11test"
)

func open(t testing.TB, uri string) *pkcs11.Provider {
	t.Helper()
	p, err := pkcs11.Open(context.Background(), uri)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = p.Close() })
	return p
}

func TestConformance(t *testing.T) {
	// A local library, so there is no network to fail: outage mapping is
	// covered by TestClassTable instead.
	tk := pkcs11test.NewToken(t)
	k := tk.NewKEK(t, "kek")
	kektest.Run(t, kektest.Config{
		New:        func(t testing.TB) kek.Provider { return open(t, k.URI()) },
		Owner:      k,
		Randomized: true,
	})
}

func TestCreateKey(t *testing.T) {
	tk := pkcs11test.NewToken(t)
	ctx := context.Background()
	uri := tk.URI("created")
	if err := pkcs11.CreateKey(ctx, uri); err != nil {
		t.Fatal(err)
	}
	err := pkcs11.CreateKey(ctx, uri)
	if !errors.Is(err, pkcs11.ErrKeyExists) {
		t.Fatalf("second CreateKey: err = %v, want ErrKeyExists", err)
	}

	// The key has the attributes a KEK must have.
	tk.Do(t, func(s pkcs11test.Session) error {
		if err := s.Ctx.FindObjectsInit(s.Handle, []*mp.Attribute{mp.NewAttribute(mp.CKA_LABEL, "created")}); err != nil {
			return err
		}
		hs, _, err := s.Ctx.FindObjects(s.Handle, 2)
		_ = s.Ctx.FindObjectsFinal(s.Handle)
		if err != nil || len(hs) != 1 {
			t.Fatalf("find created key: %d objects, %v", len(hs), err)
		}
		want := map[uint]bool{
			mp.CKA_TOKEN: true, mp.CKA_PRIVATE: true, mp.CKA_SENSITIVE: true, mp.CKA_EXTRACTABLE: false,
			mp.CKA_ENCRYPT: true, mp.CKA_DECRYPT: true, mp.CKA_WRAP: false, mp.CKA_UNWRAP: false,
			mp.CKA_SIGN: false, mp.CKA_DERIVE: false, mp.CKA_NEVER_EXTRACTABLE: true, mp.CKA_ALWAYS_SENSITIVE: true,
		}
		var tmpl []*mp.Attribute
		for a := range want {
			tmpl = append(tmpl, mp.NewAttribute(a, nil))
		}
		attrs, err := s.Ctx.GetAttributeValue(s.Handle, hs[0], tmpl)
		if err != nil {
			return err
		}
		for _, a := range attrs {
			if got := len(a.Value) == 1 && a.Value[0] == 1; got != want[a.Type] {
				t.Errorf("attribute %#x = %v, want %v", a.Type, got, want[a.Type])
			}
		}
		return nil
	})

	p := open(t, uri)
	dek := []byte("0123456789abcdef0123456789abcdef")
	w, err := p.Wrap(ctx, dek, []byte("aad"))
	if err != nil {
		t.Fatal(err)
	}
	if w.Algorithm != pkcs11.Algorithm || len(w.KEKVersion) != 16 {
		t.Fatalf("wrapped %+v: want algorithm %s and a 16-hex-digit KEK version (random 8-byte CKA_ID)", w, pkcs11.Algorithm)
	}
	if got, err := p.Unwrap(ctx, w, []byte("aad")); err != nil || !bytes.Equal(got, dek) {
		t.Fatalf("unwrap: %v", err)
	}

	if err := pkcs11.CreateKey(ctx, tk.URI("created")+"&x-vendor=1"); !errors.Is(err, pkcs11.ErrKeyExists) {
		t.Fatalf("CreateKey with a taken label: %v", err)
	}
	noObject := strings.Replace(uri, "object=created;", "", 1)
	if err := pkcs11.CreateKey(ctx, noObject); !errors.Is(err, kek.ErrUnsupported) {
		t.Fatalf("CreateKey without object=: err = %v, want ErrUnsupported", err)
	}
}

func TestKEKVersionIsCKAID(t *testing.T) {
	tk := pkcs11test.NewToken(t)
	k := tk.NewKEK(t, "kek")
	p := open(t, k.URI())
	w, err := p.Wrap(context.Background(), make([]byte, 32), nil)
	if err != nil {
		t.Fatal(err)
	}
	if w.KEKVersion != hex.EncodeToString(k.ID) {
		t.Fatalf("KEKVersion = %q, want %x", w.KEKVersion, k.ID)
	}
	if w.KEKURI != p.URI() || !strings.HasPrefix(w.KEKURI, "pkcs11:") {
		t.Fatalf("KEKURI = %q", w.KEKURI)
	}
}

func TestOtherKEKFailsAuthentication(t *testing.T) {
	tk := pkcs11test.NewToken(t)
	a := open(t, tk.NewKEK(t, "a").URI())
	b := open(t, tk.NewKEK(t, "b").URI())
	ctx := context.Background()
	w, err := a.Wrap(ctx, make([]byte, 32), []byte("aad"))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := b.Unwrap(ctx, w, []byte("aad")); !errors.Is(err, kek.ErrAuthentication) {
		t.Fatalf("unwrap under another KEK: err = %v, want ErrAuthentication", err)
	}
	w.Algorithm = "AES-256-GCM"
	if _, err := a.Unwrap(ctx, w, []byte("aad")); !errors.Is(err, kek.ErrUnsupported) {
		t.Fatalf("unwrap another provider's record: err = %v, want ErrUnsupported", err)
	}
}

func TestOpenErrors(t *testing.T) {
	tk := pkcs11test.NewToken(t)
	k := tk.NewKEK(t, "kek")
	tk.ImportSecret(t, "generic", []byte{1}, make([]byte, 32))
	ctx := context.Background()

	wrongPIN := t.TempDir() + "/wrong.pin"
	if err := os.WriteFile(wrongPIN, []byte("wrong-pin-12345\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		name string
		uri  string
		want error
	}{
		{"wrong PIN", strings.Replace(k.URI(), tk.PINFile, wrongPIN, 1), kek.ErrKeyDisabled},
		{"wrong pin-value", "pkcs11:token=" + tk.Label + ";object=kek?module-path=" + tk.Module + "&pin-value=wrong-pin-12345", kek.ErrKeyDisabled},
		{"key missing", tk.URI("nope"), kek.ErrKeyDisabled},
		{"not an AES key", tk.URI("generic"), kek.ErrUnsupported},
		{"no such token", strings.Replace(k.URI(), "token="+tk.Label, "token=absent", 1), kek.ErrUnavailable},
		{"no such module", strings.Replace(k.URI(), tk.Module, "/nonexistent/libpkcs11.so", 1), kek.ErrUnavailable},
		{"PIN file missing", strings.Replace(k.URI(), tk.PINFile, "/nonexistent/pin", 1), kek.ErrUnavailable},
		{"not a secret key", strings.Replace(k.URI(), "type=secret-key", "type=private", 1), kek.ErrUnsupported},
		{"no module", strings.Split(k.URI(), "?")[0] + "?pin-source=file:" + tk.PINFile, kek.ErrUnsupported},
	} {
		t.Run(tc.name, func(t *testing.T) {
			p, err := pkcs11.Open(ctx, tc.uri)
			if err == nil {
				_ = p.Close()
				t.Fatal("Open succeeded")
			}
			if !errors.Is(err, tc.want) {
				t.Fatalf("err = %v, want %v", err, tc.want)
			}
			for _, secret := range []string{tk.PIN, "wrong-pin-12345"} {
				if strings.Contains(err.Error(), secret) {
					t.Fatalf("error shows a PIN: %v", err)
				}
			}
		})
	}
}

func TestPINValue(t *testing.T) {
	tk := pkcs11test.NewToken(t)
	tk.NewKEK(t, "kek")
	uri := "pkcs11:token=" + tk.Label + ";object=kek?module-path=" + tk.Module + "&pin-value=" + tk.PIN
	p := open(t, uri)
	if strings.Contains(p.URI(), tk.PIN) || strings.Contains(p.URI(), "pin-value") {
		t.Fatalf("URI() = %q shows the PIN", p.URI())
	}
	w, err := p.Wrap(context.Background(), make([]byte, 32), nil)
	if err != nil {
		t.Fatal(err)
	}
	if strings.Contains(w.KEKURI, tk.PIN) {
		t.Fatal("KEKURI shows the PIN")
	}
}

func TestCanceledContext(t *testing.T) {
	tk := pkcs11test.NewToken(t)
	p := open(t, tk.NewKEK(t, "kek").URI())
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	if _, err := p.Wrap(ctx, make([]byte, 32), nil); !errors.Is(err, context.Canceled) {
		t.Fatalf("wrap with canceled context: %v", err)
	}
	ctx, cancel = context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	if _, err := p.Wrap(ctx, make([]byte, 32), nil); err != nil {
		t.Fatal(err)
	}
}

func TestConcurrentProviders(t *testing.T) {
	// Two providers on one token share the module and its login; closing
	// one must not log the other out.
	tk := pkcs11test.NewToken(t)
	k := tk.NewKEK(t, "kek")
	ctx := context.Background()
	a := open(t, k.URI())
	b, err := pkcs11.Open(ctx, k.URI())
	if err != nil {
		t.Fatal(err)
	}
	dek := make([]byte, 32)
	if _, err := rand.Read(dek); err != nil {
		t.Fatal(err)
	}
	w, err := b.Wrap(ctx, dek, nil)
	if err != nil {
		t.Fatal(err)
	}
	if err := b.Close(); err != nil {
		t.Fatal(err)
	}
	// A closed provider answers at once rather than waiting for a session.
	if _, err := b.Wrap(ctx, dek, nil); !errors.Is(err, kek.ErrUnavailable) {
		t.Fatalf("wrap after Close: err = %v, want ErrUnavailable", err)
	}
	if got, err := a.Unwrap(ctx, w, nil); err != nil || !bytes.Equal(got, dek) {
		t.Fatalf("unwrap after the other provider closed: %v", err)
	}
}

func TestAmbiguousToken(t *testing.T) {
	tks := pkcs11test.NewTokens(t, 2)
	tks[0].NewKEK(t, "kek")
	uri := strings.Replace(tks[0].URI("kek"), "token="+tks[0].Label+";", "", 1)
	_, err := pkcs11.Open(context.Background(), uri)
	if !errors.Is(err, kek.ErrUnsupported) || !strings.Contains(err.Error(), "several tokens") {
		t.Fatalf("URI matching two tokens: err = %v, want ErrUnsupported naming the ambiguity", err)
	}
	// The second token is reachable by its own label.
	tks[1].NewKEK(t, "kek")
	open(t, tks[1].URI("kek"))
}
