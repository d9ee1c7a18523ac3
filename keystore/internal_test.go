package keystore

import (
	"bytes"
	"context"
	"crypto/ecdh"
	"crypto/rand"
	"errors"
	"path/filepath"
	"regexp"
	"testing"
	"time"

	"github.com/attested-kms/attested-kms/keystore/kek"
)

var kidRE = regexp.MustCompile(`^[0-9a-f]{16}$`)

// constReader yields an endless run of one byte.
type constReader byte

func (c constReader) Read(p []byte) (int, error) {
	for i := range p {
		p[i] = byte(c)
	}
	return len(p), nil
}

func TestNewKIDFormatAndUniqueness(t *testing.T) {
	var used [256]bool
	for i := 0; i < 256; i++ {
		kid, err := newKID(rand.Reader, &used)
		if err != nil {
			t.Fatalf("kid %d: %v", i, err)
		}
		if !kidRE.MatchString(kid) {
			t.Fatalf("kid %q is not 16 lowercase hex characters", kid)
		}
		id, err := ParseKeyID(kid)
		if err != nil {
			t.Fatal(err)
		}
		if used[id] {
			t.Fatalf("kid %q reuses key id %#x", kid, id)
		}
		used[id] = true
	}
	// All 256 identifiers taken: the 257th key cannot get one.
	if _, err := newKID(rand.Reader, &used); !errors.Is(err, ErrKeyIDExhausted) {
		t.Fatalf("exhausted: err = %v, want ErrKeyIDExhausted", err)
	}
}

func TestNewKIDFallsBackToFreeID(t *testing.T) {
	// Every random draw starts with 0x42, which is taken; the only free id
	// is 0x07, and the fallback must find it instead of failing.
	var used [256]bool
	for i := range used {
		used[i] = i != 0x07
	}
	kid, err := newKID(constReader(0x42), &used)
	if err != nil {
		t.Fatal(err)
	}
	if kid[:2] != "07" {
		t.Fatalf("kid = %s, want key id 07", kid)
	}
}

func TestParseKeyID(t *testing.T) {
	id, err := ParseKeyID("a1b2c3d4e5f60718")
	if err != nil || id != 0xa1 {
		t.Fatalf("ParseKeyID = %#x, %v", id, err)
	}
	for _, bad := range []string{"", "A1B2C3D4E5F60718", "a1b2c3d4e5f6071", "a1b2c3d4e5f607189", "g1b2c3d4e5f60718"} {
		if _, err := ParseKeyID(bad); !errors.Is(err, ErrInvalidArgument) {
			t.Errorf("ParseKeyID(%q): err = %v", bad, err)
		}
	}
}

func TestValidKeySetName(t *testing.T) {
	for _, ok := range []string{"default", "a", "kv-service-2", "0abc"} {
		if !ValidKeySetName(ok) {
			t.Errorf("%q rejected", ok)
		}
	}
	for _, bad := range []string{"", "-a", "a-", "Default", "a_b", "a.b", "a/b", string(make([]byte, 64))} {
		if ValidKeySetName(bad) {
			t.Errorf("%q accepted", bad)
		}
	}
}

func TestSettingsDefaultsAndValidation(t *testing.T) {
	d := KeySetSettings{}.WithDefaults()
	if d != DefaultKeySetSettings() {
		t.Errorf("zero settings -> %+v, want defaults", d)
	}
	if err := d.Validate(); err != nil {
		t.Errorf("defaults invalid: %v", err)
	}
	s := KeySetSettings{RotationPeriod: time.Hour}.WithDefaults()
	if s.KeyLifetime != time.Hour || s.PendingLead != 30*time.Minute {
		t.Errorf("partial defaults: %+v", s)
	}
	bad := []KeySetSettings{
		{RotationPeriod: -time.Hour, KeyLifetime: time.Hour},
		{RotationPeriod: 2 * time.Hour, KeyLifetime: time.Hour},
		{RotationPeriod: time.Hour, KeyLifetime: time.Hour, PendingLead: time.Hour},
		{RotationPeriod: time.Hour, KeyLifetime: time.Hour, PendingLead: -1},
		{RotationPeriod: time.Hour, KeyLifetime: time.Hour, Retention: -1},
	}
	for _, b := range bad {
		if err := b.Validate(); !errors.Is(err, ErrInvalidArgument) {
			t.Errorf("%+v: err = %v", b, err)
		}
	}
}

func TestReleasable(t *testing.T) {
	t0 := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	k := &Key{Activates: t0, Expires: t0.Add(time.Hour), DestroyAfter: t0.Add(2 * time.Hour)}
	cases := []struct {
		state State
		at    time.Duration
		want  bool
	}{
		{StatePending, -time.Minute, true},
		{StateActive, 0, true},
		{StateRetired, 90 * time.Minute, true},
		{StateRetired, 2 * time.Hour, false}, // retention ended
		{StateActive, 3 * time.Hour, false},  // Tick late: times still rule
		{StateDisabled, 0, false},
		{StateDestroyed, 0, false},
	}
	for _, c := range cases {
		k.State = c.state
		if got := k.Releasable(t0.Add(c.at)); got != c.want {
			t.Errorf("%s at %s: Releasable = %v, want %v", c.state, c.at, got, c.want)
		}
	}
}

func newLocalKEK(tb testing.TB) *kek.Local {
	tb.Helper()
	path := filepath.Join(tb.TempDir(), "kek.key")
	if err := kek.CreateLocal(path); err != nil {
		tb.Fatal(err)
	}
	l, err := kek.OpenLocal(path)
	if err != nil {
		tb.Fatal(err)
	}
	return l
}

func testKeyPair(tb testing.TB, kid string, version uint64) (*Key, []byte) {
	tb.Helper()
	sk, err := ecdh.X25519().GenerateKey(rand.Reader)
	if err != nil {
		tb.Fatal(err)
	}
	k := &Key{KeySet: "default", KID: kid, Version: version, Suite: SuiteX25519, PublicKey: sk.PublicKey().Bytes()}
	return k, sk.Bytes()
}

// sealV1 writes a legacy v1 record (DEK wrapped by the KEK directly), as
// releases before the key hierarchy did, so tests can check such stores
// still open.
func sealV1(ctx context.Context, provider kek.Provider, k *Key, priv []byte) (*SealedKey, error) {
	dek := make([]byte, dekSize)
	if _, err := rand.Read(dek); err != nil {
		return nil, err
	}
	aead, err := newGCM(dek)
	if err != nil {
		return nil, err
	}
	nonce := make([]byte, aead.NonceSize())
	if _, err := rand.Read(nonce); err != nil {
		return nil, err
	}
	aad := sealAAD(SealFormatV1, k.KeySet, k.KID, k.Version, k.Suite, k.PublicKey)
	w, err := provider.Wrap(ctx, dek, aad)
	if err != nil {
		return nil, err
	}
	// Old records had no algorithm field: leave it empty.
	return &SealedKey{Format: SealFormatV1, KEKURI: w.KEKURI, WrappedDEK: w.Ciphertext, Nonce: nonce, Ciphertext: aead.Seal(nil, nonce, priv, aad)}, nil
}

func testIntermediate(tb testing.TB, gen uint64) *intermediateKey {
	tb.Helper()
	raw := make([]byte, intermediateSize)
	if _, err := rand.Read(raw); err != nil {
		tb.Fatal(err)
	}
	in, err := newIntermediateKey(gen, raw)
	if err != nil {
		tb.Fatal(err)
	}
	return in
}

func TestSealUnsealRoundTrip(t *testing.T) {
	in := testIntermediate(t, 7)
	k, priv := testKeyPair(t, "0123456789abcdef", 3)
	sealed, err := sealV2(rand.Reader, in, k, priv)
	if err != nil {
		t.Fatal(err)
	}
	if sealed.Format != SealFormatV2 || sealed.Generation != 7 || sealed.Algorithm != IntermediateAlgorithm || sealed.KEKURI != "" {
		t.Errorf("sealed header = %q gen %d alg %q uri %q", sealed.Format, sealed.Generation, sealed.Algorithm, sealed.KEKURI)
	}
	if bytes.Contains(sealed.Ciphertext, priv) || bytes.Contains(sealed.WrappedDEK, priv) {
		t.Fatal("sealed form contains the plaintext private key")
	}
	k.Sealed = sealed
	got, err := unsealV2(in, k)
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(got, priv) {
		t.Fatal("round trip mismatch")
	}
	// Another intermediate of the same generation does not open it.
	if _, err := unsealV2(testIntermediate(t, 7), k); !errors.Is(err, ErrSealedKeyInvalid) || !errors.Is(err, kek.ErrAuthentication) {
		t.Fatalf("other intermediate: err = %v", err)
	}
}

func TestUnsealV1StillReads(t *testing.T) {
	ctx := context.Background()
	p := newLocalKEK(t)
	k, priv := testKeyPair(t, "0123456789abcdef", 3)
	var err error
	if k.Sealed, err = sealV1(ctx, p, k, priv); err != nil {
		t.Fatal(err)
	}
	got, err := unsealV1(ctx, p, k)
	if err != nil || !bytes.Equal(got, priv) {
		t.Fatalf("v1 round trip: %v", err)
	}
	c := k.Clone()
	c.Version++
	if _, err := unsealV1(ctx, p, c); !errors.Is(err, ErrSealedKeyInvalid) {
		t.Fatalf("v1 rebound: err = %v", err)
	}
}

func TestUnsealRejectsRebinding(t *testing.T) {
	in := testIntermediate(t, 2)
	k, priv := testKeyPair(t, "0123456789abcdef", 3)
	var err error
	if k.Sealed, err = sealV2(rand.Reader, in, k, priv); err != nil {
		t.Fatal(err)
	}
	other, _ := testKeyPair(t, "fedcba9876543210", 4)
	mutations := map[string]func(k *Key){
		"kid":        func(k *Key) { k.KID = "0123456789abcdee" },
		"version":    func(k *Key) { k.Version++ },
		"keyset":     func(k *Key) { k.KeySet = "other" },
		"suite":      func(k *Key) { k.Suite = "other" },
		"public key": func(k *Key) { k.PublicKey = other.PublicKey },
		"ciphertext": func(k *Key) { k.Sealed.Ciphertext[0] ^= 1 },
		"nonce":      func(k *Key) { k.Sealed.Nonce[0] ^= 1 },
		"wrapped":    func(k *Key) { k.Sealed.WrappedDEK[len(k.Sealed.WrappedDEK)-1] ^= 1 },
		"wrap nonce": func(k *Key) { k.Sealed.WrappedDEK[0] ^= 1 },
		"generation": func(k *Key) { k.Sealed.Generation = 1 },
		"algorithm":  func(k *Key) { k.Sealed.Algorithm = "AES-128-GCM" },
	}
	for name, mutate := range mutations {
		c := k.Clone()
		mutate(c)
		if _, err := unsealV2(in, c); !errors.Is(err, ErrSealedKeyInvalid) {
			t.Errorf("%s changed: err = %v, want ErrSealedKeyInvalid", name, err)
		}
	}
	// The generation is bound into the AAD, not only checked: the same
	// key under generation 1 does not open a record made under 2.
	in1 := &intermediateKey{gen: 1, raw: in.raw, aead: in.aead}
	c := k.Clone()
	c.Sealed.Generation = 1
	if _, err := unsealV2(in1, c); !errors.Is(err, ErrSealedKeyInvalid) {
		t.Errorf("generation relabelled: err = %v", err)
	}
	if _, err := unsealV2(in, k); err != nil {
		t.Fatalf("original no longer opens: %v", err)
	}
}

func BenchmarkSeal(b *testing.B) {
	in := testIntermediate(b, 1)
	k, priv := testKeyPair(b, "0123456789abcdef", 1)
	b.ReportAllocs()
	for b.Loop() {
		if _, err := sealV2(rand.Reader, in, k, priv); err != nil {
			b.Fatal(err)
		}
	}
}

func BenchmarkUnseal(b *testing.B) {
	in := testIntermediate(b, 1)
	k, priv := testKeyPair(b, "0123456789abcdef", 1)
	var err error
	if k.Sealed, err = sealV2(rand.Reader, in, k, priv); err != nil {
		b.Fatal(err)
	}
	b.ReportAllocs()
	for b.Loop() {
		out, err := unsealV2(in, k)
		if err != nil {
			b.Fatal(err)
		}
		clear(out)
	}
}
