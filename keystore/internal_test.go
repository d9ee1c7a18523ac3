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

func TestSealUnsealRoundTrip(t *testing.T) {
	ctx := context.Background()
	p := newLocalKEK(t)
	k, priv := testKeyPair(t, "0123456789abcdef", 3)
	sealed, err := seal(ctx, p, rand.Reader, k, priv)
	if err != nil {
		t.Fatal(err)
	}
	if sealed.Format != SealFormatV1 || sealed.KEKURI != p.URI() {
		t.Errorf("sealed header = %q %q", sealed.Format, sealed.KEKURI)
	}
	if bytes.Contains(sealed.Ciphertext, priv) || bytes.Contains(sealed.WrappedDEK, priv) {
		t.Fatal("sealed form contains the plaintext private key")
	}
	k.Sealed = sealed
	got, err := unseal(ctx, p, k)
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(got, priv) {
		t.Fatal("round trip mismatch")
	}
}

func TestUnsealRejectsRebinding(t *testing.T) {
	ctx := context.Background()
	p := newLocalKEK(t)
	k, priv := testKeyPair(t, "0123456789abcdef", 3)
	var err error
	if k.Sealed, err = seal(ctx, p, rand.Reader, k, priv); err != nil {
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
		"format":     func(k *Key) { k.Sealed.Format = "v0" },
		"kek uri":    func(k *Key) { k.Sealed.KEKURI = "local:///elsewhere" },
	}
	for name, mutate := range mutations {
		c := k.Clone()
		mutate(c)
		if _, err := unseal(ctx, p, c); !errors.Is(err, ErrSealedKeyInvalid) {
			t.Errorf("%s changed: err = %v, want ErrSealedKeyInvalid", name, err)
		}
	}
	if _, err := unseal(ctx, p, k); err != nil {
		t.Fatalf("original no longer opens: %v", err)
	}
}

func BenchmarkSealUnseal(b *testing.B) {
	ctx := context.Background()
	p := newLocalKEK(b)
	k, priv := testKeyPair(b, "0123456789abcdef", 1)
	b.ReportAllocs()
	for b.Loop() {
		s, err := seal(ctx, p, rand.Reader, k, priv)
		if err != nil {
			b.Fatal(err)
		}
		k.Sealed = s
		out, err := unseal(ctx, p, k)
		if err != nil {
			b.Fatal(err)
		}
		clear(out)
	}
}
