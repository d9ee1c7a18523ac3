package hpke

import (
	"bytes"
	"errors"
	"testing"
)

// RFC 5649 section 6: both examples use this 192-bit KEK.
const rfc5649KEK = "5840df6e29b02af1ab493b705bf16ea1ae8338f4dcc176a8"

func TestKeyWrapPadRFC5649(t *testing.T) {
	kek := mustHex(t, rfc5649KEK)
	for _, v := range []struct{ key, wrap string }{
		{"c37b7e6492584340bed12207808941155068f738", "138bdeaa9b8fa7fc61f97742e72248ee5ae6ae5360d1ae6a5f54f373fa543b6a"},
		{"466f7250617369", "afbeb0f07dfbf5419200f2ccb50bb24f"},
	} {
		key, want := mustHex(t, v.key), mustHex(t, v.wrap)
		got, err := KeyWrapPad(kek, key)
		if err != nil || !bytes.Equal(got, want) {
			t.Fatalf("KeyWrapPad(%s) = %x, %v; want %x", v.key, got, err, want)
		}
		back, err := KeyUnwrapPad(kek, want)
		if err != nil || !bytes.Equal(back, key) {
			t.Fatalf("KeyUnwrapPad(%s) = %x, %v", v.wrap, back, err)
		}
		for i := range want {
			bad := bytes.Clone(want)
			bad[i] ^= 1
			if _, err := KeyUnwrapPad(kek, bad); !errors.Is(err, ErrDecrypt) {
				t.Fatalf("byte %d flipped: %v", i, err)
			}
		}
		wrongKEK := bytes.Clone(kek)
		wrongKEK[0] ^= 1
		if _, err := KeyUnwrapPad(wrongKEK, want); !errors.Is(err, ErrDecrypt) {
			t.Fatalf("wrong KEK: %v", err)
		}
	}
}

func TestKeyWrapPadRoundTrip(t *testing.T) {
	for _, kekLen := range []int{16, 24, 32} {
		kek := bytes.Repeat([]byte{byte(kekLen)}, kekLen)
		for n := 1; n <= 72; n++ {
			pt := bytes.Repeat([]byte{byte(n)}, n)
			w, err := KeyWrapPad(kek, pt)
			if err != nil {
				t.Fatal(err)
			}
			if want := 8 + (n+7)/8*8; len(w) != want {
				t.Fatalf("kek %d, %d bytes: wrapped to %d, want %d", kekLen, n, len(w), want)
			}
			got, err := KeyUnwrapPad(kek, w)
			if err != nil || !bytes.Equal(got, pt) {
				t.Fatalf("kek %d, %d bytes: round trip = %x, %v", kekLen, n, got, err)
			}
		}
	}
	if _, err := KeyWrapPad(make([]byte, 16), nil); err == nil {
		t.Error("empty plaintext accepted")
	}
	for _, n := range []int{0, 15, 20, 33} {
		if _, err := KeyWrapPad(make([]byte, n), []byte("x")); !errors.Is(err, ErrInvalidKey) {
			t.Errorf("%d-byte KEK: %v", n, err)
		}
	}
	for _, n := range []int{0, 8, 17, 23} {
		if _, err := KeyUnwrapPad(make([]byte, 16), make([]byte, n)); !errors.Is(err, ErrDecrypt) {
			t.Errorf("%d-byte input: %v", n, err)
		}
	}
}

// A plain RFC 3394 wrap (IV A6A6A6A6A6A6A6A6) must not unwrap as RFC 5649.
func TestKeyUnwrapPadRejectsRFC3394(t *testing.T) {
	// RFC 3394 section 4.1: 128-bit key data under a 128-bit KEK.
	kek := mustHex(t, "000102030405060708090A0B0C0D0E0F")
	w := mustHex(t, "1FA68B0A8112B447AEF34BD8FB5A7B829D3E862371D2CFE5")
	if _, err := KeyUnwrapPad(kek, w); !errors.Is(err, ErrDecrypt) {
		t.Fatalf("RFC 3394 output unwrapped: %v", err)
	}
	// And the RFC 3394 core is right: unwrap gives the default IV and key.
	b, _ := newKEK(kek)
	buf := bytes.Clone(w)
	unwrap(b, buf)
	if !bytes.Equal(buf, mustHex(t, "A6A6A6A6A6A6A6A600112233445566778899AABBCCDDEEFF")) {
		t.Fatalf("RFC 3394 unwrap = %x", buf)
	}
}

func FuzzKeyUnwrapPad(f *testing.F) {
	f.Add(mustHex(f, "138bdeaa9b8fa7fc61f97742e72248ee5ae6ae5360d1ae6a5f54f373fa543b6a"))
	f.Add(mustHex(f, "afbeb0f07dfbf5419200f2ccb50bb24f"))
	kek := mustHex(f, rfc5649KEK)
	f.Fuzz(func(t *testing.T, wrapped []byte) {
		pt, err := KeyUnwrapPad(kek, wrapped)
		if err != nil {
			return
		}
		// Anything that unwraps must wrap back to the same bytes.
		again, err := KeyWrapPad(kek, pt)
		if err != nil || !bytes.Equal(again, wrapped) {
			t.Fatalf("unwrap/wrap not inverse: %x -> %x -> %x (%v)", wrapped, pt, again, err)
		}
	})
}
