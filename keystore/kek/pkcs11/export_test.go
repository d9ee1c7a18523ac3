package pkcs11_test

import (
	"bytes"
	"context"
	"crypto/ecdh"
	"crypto/rand"
	"crypto/rsa"
	"crypto/x509"
	"errors"
	"strings"
	"testing"

	mp "github.com/miekg/pkcs11"

	"github.com/attested-kms/attested-kms/hpke"
	"github.com/attested-kms/attested-kms/keystore/kek"
	"github.com/attested-kms/attested-kms/keystore/kek/pkcs11"
	"github.com/attested-kms/attested-kms/keystore/kek/pkcs11/pkcs11test"
)

func rsaKey(t *testing.T, bits int) (*rsa.PrivateKey, []byte) {
	t.Helper()
	priv, err := rsa.GenerateKey(rand.Reader, bits)
	if err != nil {
		t.Fatal(err)
	}
	der, err := x509.MarshalPKIXPublicKey(&priv.PublicKey)
	if err != nil {
		t.Fatal(err)
	}
	return priv, der
}

func TestExportForImport(t *testing.T) {
	tk := pkcs11test.NewToken(t)
	ctx := context.Background()
	x, err := ecdh.X25519().GenerateKey(rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	secret := x.Bytes()
	tk.ImportSecret(t, "byok", []byte{0xb1}, secret)
	priv, der := rsaKey(t, 3072)
	uri := tk.URI("byok")

	// In-token OAEP: SoftHSM2 2.6 wraps with OAEP-SHA-1 only and must say
	// so as ErrUnsupported; a token that can do it must produce a blob
	// the KMS opens.
	blob, err := pkcs11.ExportForImport(ctx, uri, der)
	switch {
	case err == nil:
		got, err := hpke.UnwrapRSA(priv, blob)
		if err != nil || !bytes.Equal(got, secret) {
			t.Fatalf("token OAEP export does not unwrap to the key: %v", err)
		}
	case errors.Is(err, kek.ErrUnsupported):
		if !strings.Contains(err.Error(), "RSA-OAEP-SHA-256") {
			t.Fatalf("unsupported error does not say what is missing: %v", err)
		}
		t.Logf("token cannot RSA-OAEP-SHA-256 wrap (expected with SoftHSM2 2.6): %v", err)
	default:
		t.Fatalf("export: %v", err)
	}

	blob, err = pkcs11.ExportForImport(ctx, uri, der, pkcs11.WithHostOAEP())
	if err != nil {
		t.Fatal(err)
	}
	if bytes.Contains(blob, secret) {
		t.Fatal("blob contains the private key")
	}
	if len(blob) != priv.Size()+40 {
		t.Fatalf("blob is %d bytes, want RSA block %d + RFC 5649 wrap 40", len(blob), priv.Size())
	}
	got, err := hpke.UnwrapRSA(priv, blob)
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(got, secret) {
		t.Fatal("exported key differs from the key in the token")
	}
	if k, err := ecdh.X25519().NewPrivateKey(got); err != nil || !k.PublicKey().Equal(x.PublicKey()) {
		t.Fatalf("exported key is not the X25519 key: %v", err)
	}
	// Randomized: a fresh ephemeral key every time.
	blob2, err := pkcs11.ExportForImport(ctx, uri, der, pkcs11.WithHostOAEP())
	if err != nil {
		t.Fatal(err)
	}
	if bytes.Equal(blob[priv.Size():], blob2[priv.Size():]) {
		t.Fatal("two exports share the ephemeral AES key")
	}
	// The ephemeral key is a session object and is gone afterwards: only
	// the imported key is left on the token.
	tk.Do(t, func(s pkcs11test.Session) error {
		if err := s.Ctx.FindObjectsInit(s.Handle, nil); err != nil {
			return err
		}
		hs, _, err := s.Ctx.FindObjects(s.Handle, 10)
		_ = s.Ctx.FindObjectsFinal(s.Handle)
		if len(hs) != 1 {
			t.Errorf("%d objects on the token after export, want 1", len(hs))
		}
		return err
	})
}

func TestExportForImportErrors(t *testing.T) {
	tk := pkcs11test.NewToken(t)
	ctx := context.Background()
	tk.ImportSecret(t, "byok", []byte{1}, make([]byte, 32))
	tk.ImportSecret(t, "short", []byte{2}, make([]byte, 16))
	tk.NewKEK(t, "kek")
	tk.Do(t, func(s pkcs11test.Session) error {
		// A generic secret its owner made non-extractable.
		_, err := s.Ctx.CreateObject(s.Handle, []*mp.Attribute{
			mp.NewAttribute(mp.CKA_CLASS, mp.CKO_SECRET_KEY),
			mp.NewAttribute(mp.CKA_KEY_TYPE, mp.CKK_GENERIC_SECRET),
			mp.NewAttribute(mp.CKA_TOKEN, true),
			mp.NewAttribute(mp.CKA_PRIVATE, true),
			mp.NewAttribute(mp.CKA_SENSITIVE, true),
			mp.NewAttribute(mp.CKA_EXTRACTABLE, false),
			mp.NewAttribute(mp.CKA_LABEL, "locked"),
			mp.NewAttribute(mp.CKA_VALUE, make([]byte, 32)),
		})
		return err
	})
	_, der := rsaKey(t, 3072)
	_, small := rsaKey(t, 2048)

	for _, tc := range []struct {
		name string
		uri  string
		der  []byte
		want error
	}{
		{"missing key", tk.URI("nope"), der, kek.ErrKeyDisabled},
		{"not extractable", tk.URI("locked"), der, kek.ErrKeyDisabled},
		{"AES KEK", tk.URI("kek"), der, kek.ErrUnsupported},
		{"16-byte secret", tk.URI("short"), der, kek.ErrUnsupported},
		{"RSA 2048", tk.URI("byok"), small, hpke.ErrRSAKeyTooSmall},
		{"not DER", tk.URI("byok"), []byte("nope"), hpke.ErrInvalidKey},
		{"bad URI", "pkcs11:object=byok;bogus=1", der, kek.ErrUnsupported},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := pkcs11.ExportForImport(ctx, tc.uri, tc.der, pkcs11.WithHostOAEP())
			if !errors.Is(err, tc.want) {
				t.Fatalf("err = %v, want %v", err, tc.want)
			}
		})
	}
}
