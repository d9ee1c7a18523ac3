package hpke

import (
	"bytes"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/rsa"
	"crypto/sha256"
	"crypto/x509"
	"encoding/pem"
	"errors"
	"math/big"
	"os"
	"testing"
)

// testRSAKey loads a fixed 3072-bit test key (openssl genpkey, PKCS#8). A
// fixed key keeps the tests fast and lets fuzz workers share the seed corpus:
// each worker process runs the fuzz setup again.
func testRSAKey(tb testing.TB) (*rsa.PrivateKey, []byte) {
	tb.Helper()
	p, err := os.ReadFile("testdata/rsa3072-test-key.pem")
	if err != nil {
		tb.Fatal(err)
	}
	block, _ := pem.Decode(p)
	if block == nil {
		tb.Fatal("testdata/rsa3072-test-key.pem: no PEM block")
	}
	parsed, err := x509.ParsePKCS8PrivateKey(block.Bytes)
	if err != nil {
		tb.Fatal(err)
	}
	k, ok := parsed.(*rsa.PrivateKey)
	if !ok || k.N.BitLen() != 3072 {
		tb.Fatalf("test key is %T, not a 3072-bit RSA key", parsed)
	}
	der, err := x509.MarshalPKIXPublicKey(&k.PublicKey)
	if err != nil {
		tb.Fatal(err)
	}
	return k, der
}

func TestWrapRSA(t *testing.T) {
	priv, der := testRSAKey(t)
	secret := bytes.Repeat([]byte{0x42}, 32)
	wrapped, err := WrapRSA(nil, der, secret)
	if err != nil {
		t.Fatal(err)
	}
	k := priv.Size()
	if len(wrapped) != k+8+32 {
		t.Fatalf("wrapped is %d bytes, want %d (OAEP block || RFC 5649 output)", len(wrapped), k+40)
	}
	got, err := UnwrapRSA(priv, wrapped)
	if err != nil || !bytes.Equal(got, secret) {
		t.Fatalf("UnwrapRSA = %x, %v", got, err)
	}

	// The layout, checked with the standard library directly: the first
	// block is RSA-OAEP-SHA256 (no label) of an AES-256 key, the rest is
	// RFC 5649 of the secret under that key.
	aesKey, err := rsa.DecryptOAEP(sha256.New(), nil, priv, wrapped[:k], nil)
	if err != nil || len(aesKey) != 32 {
		t.Fatalf("first block is not OAEP-SHA256 of a 32-byte key: %d bytes, %v", len(aesKey), err)
	}
	if inner, err := KeyUnwrapPad(aesKey, wrapped[k:]); err != nil || !bytes.Equal(inner, secret) {
		t.Fatalf("second part is not RFC 5649 of the secret: %v", err)
	}

	for _, i := range []int{0, k / 2, k - 1, k, k + 8, len(wrapped) - 1} {
		bad := bytes.Clone(wrapped)
		bad[i] ^= 0x80
		if _, err := UnwrapRSA(priv, bad); !errors.Is(err, ErrDecrypt) {
			t.Errorf("byte %d flipped: err = %v, want ErrDecrypt", i, err)
		}
	}
	if _, err := UnwrapRSA(priv, wrapped[:k+15]); !errors.Is(err, ErrDecrypt) {
		t.Errorf("truncated: %v", err)
	}
	if _, err := UnwrapRSA(nil, wrapped); !errors.Is(err, ErrInvalidKey) {
		t.Errorf("nil key: %v", err)
	}
}

func TestParseRSAWrappingKey(t *testing.T) {
	_, der3072 := testRSAKey(t)
	if pub, err := ParseRSAWrappingKey(der3072); err != nil || pub.N.BitLen() != 3072 {
		t.Fatalf("3072-bit key: %v", err)
	}

	// Size policy looks at the modulus only, so the out-of-range keys need not
	// be real keys (which keeps a slow key generation out of the test).
	modulus := func(bits uint) *big.Int {
		n := new(big.Int).Lsh(big.NewInt(1), bits-1)
		return n.Or(n, big.NewInt(1))
	}
	der2048, err := x509.MarshalPKIXPublicKey(&rsa.PublicKey{N: modulus(2048), E: 65537})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := ParseRSAWrappingKey(der2048); !errors.Is(err, ErrRSAKeyTooSmall) {
		t.Errorf("2048-bit key: %v, want ErrRSAKeyTooSmall", err)
	}
	if _, err := WrapRSA(nil, der2048, []byte("secret")); !errors.Is(err, ErrRSAKeyTooSmall) {
		t.Errorf("WrapRSA to 2048-bit key: %v, want ErrRSAKeyTooSmall", err)
	}

	der3071, _ := x509.MarshalPKIXPublicKey(&rsa.PublicKey{N: modulus(3071), E: 65537})
	if _, err := ParseRSAWrappingKey(der3071); !errors.Is(err, ErrRSAKeyTooSmall) {
		t.Errorf("3071-bit key: %v, want ErrRSAKeyTooSmall", err)
	}
	der8192, _ := x509.MarshalPKIXPublicKey(&rsa.PublicKey{N: modulus(8192), E: 65537})
	if _, err := ParseRSAWrappingKey(der8192); err != nil {
		t.Errorf("8192-bit key: %v", err)
	}
	der8193, _ := x509.MarshalPKIXPublicKey(&rsa.PublicKey{N: modulus(8193), E: 65537})
	if _, err := ParseRSAWrappingKey(der8193); !errors.Is(err, ErrRSAKeyTooLarge) {
		t.Errorf("8193-bit key: %v, want ErrRSAKeyTooLarge", err)
	}

	ec, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	derEC, _ := x509.MarshalPKIXPublicKey(&ec.PublicKey)
	if _, err := ParseRSAWrappingKey(derEC); !errors.Is(err, ErrNotRSAKey) {
		t.Errorf("P-256 key: %v, want ErrNotRSAKey", err)
	}
	kp, _ := GenerateKeyPair(nil)
	if _, err := ParseRSAWrappingKey(kp.Public); !errors.Is(err, ErrInvalidKey) {
		t.Errorf("raw X25519 bytes: %v, want ErrInvalidKey", err)
	}
}

func FuzzUnwrapRSA(f *testing.F) {
	priv, der := testRSAKey(f)
	secret := []byte("0123456789abcdef0123456789abcdef")
	seed, err := WrapRSA(nil, der, secret)
	if err != nil {
		f.Fatal(err)
	}
	f.Add(seed)
	f.Add(seed[:priv.Size()+16])
	f.Add([]byte{})
	f.Fuzz(func(t *testing.T, wrapped []byte) {
		// RSA wrapping authenticates no sender, so anyone can make a valid
		// input; what mutation must not do is make one open to other bytes.
		got, err := UnwrapRSA(priv, wrapped)
		if err == nil && !bytes.Equal(got, secret) {
			t.Fatalf("mutated input unwrapped to %x", got)
		}
	})
}
