package hpke

import (
	"bytes"
	"crypto/ecdh"
	stdhpke "crypto/hpke"
	"encoding/hex"
	"errors"
	"fmt"
	"strings"
	"testing"
)

func mustHex(tb testing.TB, s string) []byte {
	tb.Helper()
	b, err := hex.DecodeString(strings.ReplaceAll(s, " ", ""))
	if err != nil {
		tb.Fatalf("bad hex %q: %v", s, err)
	}
	return b
}

// RFC 9180 Appendix A.6.1 (DHKEM(X25519, HKDF-SHA256), HKDF-SHA256,
// AES-256-GCM, mode_base), copied from the published test-vectors JSON.
const (
	v9180Info = "4f6465206f6e2061204772656369616e2055726e"
	v9180IkmE = "2cd7c601cefb3d42a62b04b7a9041494c06c7843818e0ce28a8f704ae7ab20f9"
	v9180SkRm = "497b4502664cfea5d5af0b39934dac72242a74f8480451e1aee7d6a53320333d"
	v9180PkRm = "430f4b9859665145a6b1ba274024487bd66f03a2dd577d7753c68d7d7d00c00c"
	v9180Enc  = "6c93e09869df3402d7bf231bf540fadd35cd56be14f97178f0954db94b7fc256"
	v9180Pt   = "4265617574792069732074727574682c20747275746820626561757479"
	v9180Aad0 = "436f756e742d30"
	v9180Ct0  = "e5d84cd531cfb583096e7cfa9641bd3079cf3a91cda813c52deb5f512be9931980a41de125a925cdad859d5b7a"
	v9180SkEm = "179d4b53b6365c45b600c4163b61d95cbc2f4d9e36f1695558dce265ab8bab11"
	v9180PkEm = v9180Enc
)

func TestRFC9180Vector(t *testing.T) {
	skR, pkR := mustHex(t, v9180SkRm), mustHex(t, v9180PkRm)
	info, aad, pt := mustHex(t, v9180Info), mustHex(t, v9180Aad0), mustHex(t, v9180Pt)
	want := append(mustHex(t, v9180Enc), mustHex(t, v9180Ct0)...)

	if got, err := PublicFromPrivate(skR); err != nil || !bytes.Equal(got, pkR) {
		t.Fatalf("PublicFromPrivate(skRm) = %x, %v; want %x", got, err, pkR)
	}
	if got, _ := PublicFromPrivate(mustHex(t, v9180SkEm)); !bytes.Equal(got, mustHex(t, v9180PkEm)) {
		t.Fatalf("PublicFromPrivate(skEm) = %x, want pkEm", got)
	}
	if err := ValidateX25519PublicKey(pkR); err != nil {
		t.Fatalf("ValidateX25519PublicKey(pkRm): %v", err)
	}
	// The vector's ikmE seeds the ephemeral key exactly as Setup reads it.
	rnd := bytes.NewReader(mustHex(t, v9180IkmE))
	got, err := sealBase(rnd, pkR, info, aad, pt)
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(got, want) {
		t.Fatalf("sealBase = %x\nwant       %x", got, want)
	}
	if rnd.Len() != 0 {
		t.Fatalf("sealBase left %d bytes of ikmE unread", rnd.Len())
	}
	opened, err := openBase(skR, info, aad, want)
	if err != nil || !bytes.Equal(opened, pt) {
		t.Fatalf("openBase = %x, %v; want %x", opened, err, pt)
	}
	if _, err := openBase(skR, info, mustHex(t, "436f756e742d31"), want); !errors.Is(err, ErrDecrypt) {
		t.Fatalf("openBase with the sequence-1 aad: err = %v, want ErrDecrypt", err)
	}
}

func TestGenerateKeyPair(t *testing.T) {
	kp, err := GenerateKeyPair(nil)
	if err != nil {
		t.Fatal(err)
	}
	if len(kp.Public) != 32 || len(kp.Private) != 32 {
		t.Fatalf("key sizes %d/%d", len(kp.Public), len(kp.Private))
	}
	// crypto/ecdh is an independent X25519: it must agree on the public key.
	sk, err := ecdh.X25519().NewPrivateKey(kp.Private)
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(sk.PublicKey().Bytes(), kp.Public) {
		t.Fatal("public key disagrees with crypto/ecdh")
	}
	kp2, _ := GenerateKeyPair(nil)
	if bytes.Equal(kp.Private, kp2.Private) {
		t.Fatal("two generated private keys are equal")
	}
	if _, err := GenerateKeyPair(bytes.NewReader(make([]byte, 31))); err == nil {
		t.Fatal("short random source accepted")
	}
	if s := fmt.Sprintf("%v %+v %#v %s", kp, *kp, kp, kp); strings.Contains(s, hex.EncodeToString(kp.Private)) {
		t.Fatalf("formatting leaks the private key: %s", s)
	}
	if _, err := PublicFromPrivate(make([]byte, 31)); !errors.Is(err, ErrInvalidKey) {
		t.Fatalf("31-byte private key: %v", err)
	}
}

// lowOrderEncodings is the published list of X25519 small-order points (as in
// libsodium and Bernstein's list), in canonical and non-canonical form, each
// also with bit 255 set.
func lowOrderEncodings(t *testing.T) map[string][]byte {
	base := map[string]string{
		"zero":     "0000000000000000000000000000000000000000000000000000000000000000",
		"one":      "0100000000000000000000000000000000000000000000000000000000000000",
		"order8a":  "e0eb7a7c3b41b8ae1656e3faf19fc46ada098deb9c32b1fd866205165f49b800",
		"order8b":  "5f9c95bca3508c24b1d0b1559c83ef5b04445cc4581c8e86d8224eddd09f1157",
		"p-1":      "ecffffffffffffffffffffffffffffffffffffffffffffffffffffffffffff7f",
		"p (=0)":   "edffffffffffffffffffffffffffffffffffffffffffffffffffffffffffff7f",
		"p+1 (=1)": "eeffffffffffffffffffffffffffffffffffffffffffffffffffffffffffff7f",
	}
	out := make(map[string][]byte)
	for name, h := range base {
		b := mustHex(t, h)
		out[name] = b
		hi := bytes.Clone(b)
		hi[31] |= 0x80
		out[name+" high bit"] = hi
	}
	return out
}

func TestValidateX25519PublicKeyRejectsLowOrder(t *testing.T) {
	// An independent X25519 (crypto/ecdh) confirms each entry really gives
	// an all-zero shared secret, so the table is not a list of arbitrary bytes.
	probe, err := ecdh.X25519().GenerateKey(nil)
	if err != nil {
		t.Fatal(err)
	}
	for name, pub := range lowOrderEncodings(t) {
		if err := ValidateX25519PublicKey(pub); !errors.Is(err, ErrLowOrderKey) {
			t.Errorf("%s: ValidateX25519PublicKey = %v, want ErrLowOrderKey", name, err)
		}
		if pk, err := ecdh.X25519().NewPublicKey(pub); err == nil {
			if _, err := probe.ECDH(pk); err == nil {
				t.Errorf("%s: crypto/ecdh computes a non-zero secret; not low order", name)
			}
		}
		if _, err := WrapX25519(nil, pub, "0123456789abcdef", []byte("nonce"), []byte("secret")); !errors.Is(err, ErrLowOrderKey) {
			t.Errorf("%s: WrapX25519 = %v, want ErrLowOrderKey", name, err)
		}
	}
	for _, n := range []int{0, 1, 31, 33, 64} {
		if err := ValidateX25519PublicKey(make([]byte, n)); !errors.Is(err, ErrInvalidKey) {
			t.Errorf("%d-byte key: %v, want ErrInvalidKey", n, err)
		}
	}
	for _, ok := range []string{
		v9180PkRm,
		"ffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffff7f", // p+18, reduces to 18
		"0900000000000000000000000000000000000000000000000000000000000000", // the base point
	} {
		if err := ValidateX25519PublicKey(mustHex(t, ok)); err != nil {
			t.Errorf("%s rejected: %v", ok, err)
		}
	}
}

func TestBindingDigest(t *testing.T) {
	nonce := make([]byte, 32)
	for i := range nonce {
		nonce[i] = byte(i)
	}
	// Expected values computed independently (Python hashlib) from the
	// formula in DESIGN.md, "Key release protocol" step 3.
	d, err := BindingDigest(nonce, mustHex(t, v9180PkRm))
	if err != nil {
		t.Fatal(err)
	}
	const want = "686be6289d0a709aaf0855f7c037fa8e3775cb25a26c893ad82b2d3788c15206ed4733f8018674570c34585659c93b69228a9eaa66af1262dec217df7dc421e8"
	if hex.EncodeToString(d[:]) != want {
		t.Fatalf("BindingDigest = %x, want %s", d, want)
	}
	d, _ = BindingDigest(nil, nil)
	if hex.EncodeToString(d[:]) != "a718a773827cef2fe629ff95ac5e7e24be5699347002f4d62803393817187a858f5fcff2ab35c0333e93bf5ea6084ec6c0f27abcee4115d239a89007e5388ac9" {
		t.Fatalf("BindingDigest(empty) = %x", d)
	}
	// The length prefixes keep the boundary between nonce and key.
	a, _ := BindingDigest([]byte("ab"), []byte("c"))
	b, _ := BindingDigest([]byte("a"), []byte("bc"))
	if a == b {
		t.Fatal("digest is not injective across the nonce/key boundary")
	}
	if _, err := BindingDigest(make([]byte, 65536), nil); err == nil {
		t.Fatal("65536-byte nonce accepted")
	}
	if _, err := BindingDigest(nil, make([]byte, 65536)); err == nil {
		t.Fatal("65536-byte key accepted")
	}
	if _, err := BindingDigest(make([]byte, 65535), make([]byte, 65535)); err != nil {
		t.Fatalf("65535-byte inputs rejected: %v", err)
	}
}

func TestWrapX25519(t *testing.T) {
	kp, _ := GenerateKeyPair(nil)
	other, _ := GenerateKeyPair(nil)
	secret := bytes.Repeat([]byte{0x5a}, 32)
	kid, nonce := "0123456789abcdef", bytes.Repeat([]byte{7}, 32)

	wrapped, err := WrapX25519(nil, kp.Public, kid, nonce, secret)
	if err != nil {
		t.Fatal(err)
	}
	if len(wrapped) != 32+len(secret)+16 {
		t.Fatalf("wrapped is %d bytes", len(wrapped))
	}
	got, err := UnwrapX25519(kp.Private, kid, nonce, wrapped)
	if err != nil || !bytes.Equal(got, secret) {
		t.Fatalf("UnwrapX25519 = %x, %v", got, err)
	}
	again, _ := WrapX25519(nil, kp.Public, kid, nonce, secret)
	if bytes.Equal(again[:32], wrapped[:32]) {
		t.Fatal("two wraps share an ephemeral key")
	}

	for i := range wrapped {
		bad := bytes.Clone(wrapped)
		bad[i] ^= 0x01
		if _, err := UnwrapX25519(kp.Private, kid, nonce, bad); !errors.Is(err, ErrDecrypt) {
			t.Fatalf("byte %d flipped: err = %v, want ErrDecrypt", i, err)
		}
	}
	cases := []struct {
		name        string
		priv        []byte
		kid         string
		nonce, data []byte
	}{
		{"wrong kid", kp.Private, "0123456789abcdee", nonce, wrapped},
		{"wrong nonce", kp.Private, kid, bytes.Repeat([]byte{8}, 32), wrapped},
		{"wrong key", other.Private, kid, nonce, wrapped},
		{"truncated", kp.Private, kid, nonce, wrapped[:len(wrapped)-1]},
		{"too short", kp.Private, kid, nonce, wrapped[:47]},
		{"low-order enc", kp.Private, kid, nonce, append(make([]byte, 32), wrapped[32:]...)},
	}
	for _, c := range cases {
		if _, err := UnwrapX25519(c.priv, c.kid, c.nonce, c.data); !errors.Is(err, ErrDecrypt) {
			t.Errorf("%s: err = %v, want ErrDecrypt", c.name, err)
		}
	}
	if _, err := WrapX25519(nil, kp.Public, "", nonce, secret); err == nil {
		t.Error("empty kid accepted")
	}
	if _, err := WrapX25519(nil, kp.Public, kid, nil, secret); err == nil {
		t.Error("empty nonce accepted")
	}
	if _, err := UnwrapX25519(kp.Private[:31], kid, nonce, wrapped); !errors.Is(err, ErrInvalidKey) {
		t.Errorf("short private key: %v", err)
	}
}

// Go's crypto/hpke is an independent implementation of RFC 9180; wrapping
// must interoperate with it both ways.
func TestWrapX25519StdlibInterop(t *testing.T) {
	kem := stdhpke.DHKEM(ecdh.X25519())
	sk, err := kem.GenerateKey()
	if err != nil {
		t.Fatal(err)
	}
	priv, err := sk.Bytes()
	if err != nil {
		t.Fatal(err)
	}
	pub := sk.PublicKey().Bytes()
	kid, nonce, secret := "00aa11bb22cc33dd", []byte("challenge-nonce-0123456789abcdef"), bytes.Repeat([]byte{0xc3}, 32)
	info, _ := wrapInfo(kid)
	if !bytes.Equal(info, []byte("attested-kms/v1 key-wrap\x0000aa11bb22cc33dd")) {
		t.Fatalf("info = %q", info)
	}

	t.Run("ours to stdlib", func(t *testing.T) {
		wrapped, err := WrapX25519(nil, pub, kid, nonce, secret)
		if err != nil {
			t.Fatal(err)
		}
		r, err := stdhpke.NewRecipient(wrapped[:32], sk, stdhpke.HKDFSHA256(), stdhpke.AES256GCM(), info)
		if err != nil {
			t.Fatal(err)
		}
		got, err := r.Open(nonce, wrapped[32:])
		if err != nil || !bytes.Equal(got, secret) {
			t.Fatalf("stdlib Open = %x, %v", got, err)
		}
	})
	t.Run("stdlib to ours", func(t *testing.T) {
		enc, s, err := stdhpke.NewSender(sk.PublicKey(), stdhpke.HKDFSHA256(), stdhpke.AES256GCM(), info)
		if err != nil {
			t.Fatal(err)
		}
		ct, err := s.Seal(nonce, secret)
		if err != nil {
			t.Fatal(err)
		}
		got, err := UnwrapX25519(priv, kid, nonce, append(enc, ct...))
		if err != nil || !bytes.Equal(got, secret) {
			t.Fatalf("UnwrapX25519 = %x, %v", got, err)
		}
	})
}

func FuzzUnwrapX25519(f *testing.F) {
	// Deterministic key and seed: every fuzz worker process reruns this setup
	// and must agree with the coordinator on them.
	kp, _ := GenerateKeyPair(bytes.NewReader(bytes.Repeat([]byte{1}, 32)))
	seed, err := WrapX25519(bytes.NewReader(bytes.Repeat([]byte{2}, 32)), kp.Public, "kid", []byte("nonce"), []byte("secret"))
	if err != nil {
		f.Fatal(err)
	}
	f.Add(seed, "kid", []byte("nonce"))
	f.Add([]byte{}, "", []byte{})
	f.Fuzz(func(t *testing.T, wrapped []byte, kid string, nonce []byte) {
		got, err := UnwrapX25519(kp.Private, kid, nonce, wrapped)
		if err == nil && (!bytes.Equal(wrapped, seed) || kid != "kid" || string(nonce) != "nonce" || string(got) != "secret") {
			t.Fatalf("forged input opened: %x", wrapped)
		}
	})
}

func BenchmarkWrapX25519(b *testing.B) {
	kp, _ := GenerateKeyPair(nil)
	secret, nonce := make([]byte, 32), make([]byte, 32)
	for b.Loop() {
		if _, err := WrapX25519(nil, kp.Public, "0123456789abcdef", nonce, secret); err != nil {
			b.Fatal(err)
		}
	}
}

func BenchmarkUnwrapX25519(b *testing.B) {
	kp, _ := GenerateKeyPair(nil)
	secret, nonce := make([]byte, 32), make([]byte, 32)
	wrapped, _ := WrapX25519(nil, kp.Public, "0123456789abcdef", nonce, secret)
	for b.Loop() {
		if _, err := UnwrapX25519(kp.Private, "0123456789abcdef", nonce, wrapped); err != nil {
			b.Fatal(err)
		}
	}
}
