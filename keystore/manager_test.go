package keystore_test

import (
	"bytes"
	"context"
	"crypto/ecdh"
	"crypto/rand"
	"encoding/base64"
	"encoding/hex"
	"errors"
	"io"
	"os"
	"path/filepath"
	"reflect"
	"regexp"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/attested-kms/attested-kms/keystore"
	"github.com/attested-kms/attested-kms/keystore/boltstore"
	"github.com/attested-kms/attested-kms/keystore/kek"
)

var t0 = time.Date(2026, 3, 1, 12, 0, 0, 0, time.UTC)

type fakeClock struct {
	mu sync.Mutex
	t  time.Time
}

func (c *fakeClock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.t
}

func (c *fakeClock) Set(t time.Time) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.t = t
}

// countingKEK counts Unwrap calls and can be made unavailable.
type countingKEK struct {
	kek.Provider
	unwraps atomic.Int64
	down    atomic.Bool
}

func (c *countingKEK) Wrap(ctx context.Context, dek, aad []byte) (kek.Wrapped, error) {
	if c.down.Load() {
		return kek.Wrapped{}, kek.ErrUnavailable
	}
	return c.Provider.Wrap(ctx, dek, aad)
}

func (c *countingKEK) Unwrap(ctx context.Context, w kek.Wrapped, aad []byte) ([]byte, error) {
	if c.down.Load() {
		return nil, kek.ErrUnavailable
	}
	c.unwraps.Add(1)
	return c.Provider.Unwrap(ctx, w, aad)
}

type env struct {
	dir     string
	dbPath  string
	kekPath string
	store   *boltstore.Store
	kek     *countingKEK
	clock   *fakeClock
	m       *keystore.Manager
}

func newEnv(tb testing.TB) *env {
	return newEnvRand(tb, nil)
}

func newEnvRand(tb testing.TB, r io.Reader) *env {
	tb.Helper()
	e := &env{dir: tb.TempDir(), clock: &fakeClock{t: t0}}
	e.kekPath = filepath.Join(e.dir, "kek.key")
	e.dbPath = filepath.Join(e.dir, "kms.db")
	if err := kek.CreateLocal(e.kekPath); err != nil {
		tb.Fatal(err)
	}
	l, err := kek.OpenLocal(e.kekPath)
	if err != nil {
		tb.Fatal(err)
	}
	e.kek = &countingKEK{Provider: l}
	e.store, err = boltstore.Open(e.dbPath)
	if err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(func() { _ = e.store.Close() })
	e.m = keystore.NewManager(e.store, e.kek, keystore.Options{Now: e.clock.Now, Rand: r})
	return e
}

// manager returns a fresh Manager (empty cache) over the same store.
func (e *env) manager(p kek.Provider) *keystore.Manager {
	return keystore.NewManager(e.store, p, keystore.Options{Now: e.clock.Now})
}

func mustKeys(tb testing.TB, m *keystore.Manager, set string) []*keystore.Key {
	tb.Helper()
	keys, err := m.ListKeys(context.Background(), set)
	if err != nil {
		tb.Fatal(err)
	}
	return keys
}

func states(keys []*keystore.Key) []keystore.State {
	var out []keystore.State
	for _, k := range keys {
		out = append(out, k.State)
	}
	return out
}

var testSettings = keystore.KeySetSettings{
	RotationPeriod: 24 * time.Hour,
	KeyLifetime:    24 * time.Hour,
	PendingLead:    2 * time.Hour,
	Retention:      48 * time.Hour,
}

var kidRE = regexp.MustCompile(`^[0-9a-f]{16}$`)

func TestCreateKeySet(t *testing.T) {
	ctx := context.Background()
	e := newEnv(t)
	ks, err := e.m.CreateKeySet(ctx, "default", testSettings)
	if err != nil {
		t.Fatal(err)
	}
	if ks.Name != "default" || ks.Settings != testSettings || ks.PolicyVersion != 0 || !ks.Created.Equal(t0) {
		t.Errorf("key set = %+v", ks)
	}
	keys := mustKeys(t, e.m, "default")
	if len(keys) != 1 {
		t.Fatalf("%d keys, want 1", len(keys))
	}
	k := keys[0]
	if !kidRE.MatchString(k.KID) {
		t.Errorf("kid %q not 16 lowercase hex", k.KID)
	}
	if id := k.OHTTPKeyID(); hex.EncodeToString([]byte{id}) != k.KID[:2] {
		t.Errorf("OHTTPKeyID = %#x for kid %s", id, k.KID)
	}
	if k.KEKURI() != e.kek.URI() {
		t.Errorf("KEKURI = %q", k.KEKURI())
	}
	want := keystore.Key{KeySet: "default", KID: k.KID, Version: 1, Suite: keystore.SuiteX25519, State: keystore.StateActive,
		Created: t0, Activates: t0, Expires: t0.Add(24 * time.Hour), DestroyAfter: t0.Add(72 * time.Hour)}
	got := *k
	got.PublicKey, got.Sealed, got.Revision = nil, nil, 0
	if !reflect.DeepEqual(got, want) {
		t.Errorf("key =\n%+v\nwant\n%+v", got, want)
	}
	if len(k.PublicKey) != 32 || k.Sealed == nil {
		t.Errorf("public key %d bytes, sealed %v", len(k.PublicKey), k.Sealed != nil)
	}

	if _, err := e.m.CreateKeySet(ctx, "default", testSettings); !errors.Is(err, keystore.ErrAlreadyExists) {
		t.Errorf("duplicate: err = %v, want ErrAlreadyExists", err)
	}
	if _, err := e.m.CreateKeySet(ctx, "Bad_Name", testSettings); !errors.Is(err, keystore.ErrInvalidArgument) {
		t.Errorf("bad name: err = %v", err)
	}
	if _, err := e.m.KeySet(ctx, "nope"); !errors.Is(err, keystore.ErrKeySetNotFound) {
		t.Errorf("missing set: err = %v", err)
	}
	if _, err := e.m.Key(ctx, "default", "0000000000000000"); !errors.Is(err, keystore.ErrKeyNotFound) && k.KID != "0000000000000000" {
		t.Errorf("missing key: err = %v", err)
	}
	if _, err := e.m.Key(ctx, "nope", k.KID); !errors.Is(err, keystore.ErrKeySetNotFound) {
		t.Errorf("missing set for key: err = %v", err)
	}
	// Zero settings take defaults.
	ks2, err := e.m.CreateKeySet(ctx, "other", keystore.KeySetSettings{})
	if err != nil {
		t.Fatal(err)
	}
	if ks2.Settings != keystore.DefaultKeySetSettings() {
		t.Errorf("defaults = %+v", ks2.Settings)
	}
	sets, err := e.m.ListKeySets(ctx)
	if err != nil || len(sets) != 2 || sets[0].Name != "default" || sets[1].Name != "other" {
		t.Errorf("ListKeySets = %v, %v", sets, err)
	}
}

// scriptedRand returns the scripted bytes first, then crypto/rand.
type scriptedRand struct{ script []byte }

func (s *scriptedRand) Read(p []byte) (int, error) {
	n := copy(p, s.script)
	s.script = s.script[n:]
	if n < len(p) {
		if _, err := rand.Read(p[n:]); err != nil {
			return n, err
		}
	}
	return len(p), nil
}

func TestKIDCollisionRetry(t *testing.T) {
	ctx := context.Background()
	inter := make([]byte, 32)           // the set's intermediate key
	filler := make([]byte, 32+32+12+12) // private key, DEK, two nonces of one key
	kid1 := []byte{0xab, 1, 2, 3, 4, 5, 6, 7}
	collide1 := []byte{0xab, 9, 9, 9, 9, 9, 9, 9} // same key id, different kid
	collide2 := []byte{0xab, 8, 8, 8, 8, 8, 8, 8}
	fresh := []byte{0xcd, 1, 2, 3, 4, 5, 6, 7}
	var script []byte
	script = append(script, inter...)
	script = append(script, kid1...)
	script = append(script, filler...)
	script = append(script, collide1...)
	script = append(script, collide2...)
	script = append(script, fresh...)
	e := newEnvRand(t, &scriptedRand{script: script})

	if _, err := e.m.CreateKeySet(ctx, "default", testSettings); err != nil {
		t.Fatal(err)
	}
	k2, err := e.m.Rotate(ctx, "default")
	if err != nil {
		t.Fatal(err)
	}
	keys := mustKeys(t, e.m, "default")
	if keys[0].KID != hex.EncodeToString(kid1) {
		t.Fatalf("first kid = %s, want %x", keys[0].KID, kid1)
	}
	// The two draws whose first byte collided with the retired (still
	// releasable) key were discarded.
	if k2.KID != hex.EncodeToString(fresh) {
		t.Fatalf("second kid = %s, want %x after two collisions", k2.KID, fresh)
	}
}

func TestKeyIDReusableAfterDestroy(t *testing.T) {
	ctx := context.Background()
	kid1 := []byte{0xab, 1, 2, 3, 4, 5, 6, 7}
	const first = 32 + 8 + 32 + 32 + 12 + 12 // intermediate, kid, private key, DEK, nonces
	var script []byte
	script = append(script, make([]byte, 32)...)
	script = append(script, kid1...)
	script = append(script, make([]byte, 32+32+12+12)...)
	script = append(script, kid1...) // the very same kid again
	r := &scriptedRand{}
	e := newEnvRand(t, r)
	r.script = script[:first]
	if _, err := e.m.CreateKeySet(ctx, "default", testSettings); err != nil {
		t.Fatal(err)
	}
	kid := hex.EncodeToString(kid1)
	if _, err := e.m.SetState(ctx, "default", kid, keystore.StateDestroyed); err != nil {
		t.Fatal(err)
	}
	r.script = script[first:]
	k2, err := e.m.Rotate(ctx, "default")
	if err != nil {
		t.Fatal(err)
	}
	if k2.KID != kid || k2.Version != 2 {
		t.Fatalf("new key %s v%d, want %s v2 (destroyed keys free their id)", k2.KID, k2.Version, kid)
	}
	// Lookups by kid find the live key, not the destroyed one.
	got, err := e.m.Key(ctx, "default", kid)
	if err != nil || got.Version != 2 {
		t.Fatalf("Key(%s) = v%d, %v; want v2", kid, got.Version, err)
	}
	if _, err := e.m.PrivateKey(ctx, "default", kid); err != nil {
		t.Fatalf("PrivateKey of reused kid: %v", err)
	}
}

func TestKeyIDsUniqueAmongReleasable(t *testing.T) {
	ctx := context.Background()
	e := newEnv(t)
	long := keystore.KeySetSettings{RotationPeriod: time.Hour, KeyLifetime: time.Hour, PendingLead: time.Minute, Retention: 365 * 24 * time.Hour}
	if _, err := e.m.CreateKeySet(ctx, "default", long); err != nil {
		t.Fatal(err)
	}
	for range 99 {
		if _, err := e.m.Rotate(ctx, "default"); err != nil {
			t.Fatal(err)
		}
	}
	seen := map[string]bool{}
	for _, k := range mustKeys(t, e.m, "default") {
		if !k.Releasable(e.clock.Now()) {
			t.Fatalf("%s v%d not releasable", k.KID, k.Version)
		}
		if seen[k.KID[:2]] {
			t.Fatalf("key id %s used twice among releasable keys", k.KID[:2])
		}
		seen[k.KID[:2]] = true
	}
	if len(seen) != 100 {
		t.Fatalf("%d ids, want 100", len(seen))
	}
}

func TestPrivateKeyRoundTripAndCache(t *testing.T) {
	ctx := context.Background()
	e := newEnv(t)
	if _, err := e.m.CreateKeySet(ctx, "default", testSettings); err != nil {
		t.Fatal(err)
	}
	k := mustKeys(t, e.m, "default")[0]
	priv, err := e.m.PrivateKey(ctx, "default", k.KID)
	if err != nil {
		t.Fatal(err)
	}
	sk, err := ecdh.X25519().NewPrivateKey(priv)
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(sk.PublicKey().Bytes(), k.PublicKey) {
		t.Fatal("unsealed private key does not match public key")
	}
	clear(priv) // callers may wipe their copy without harming the cache
	for range 5 {
		p, err := e.m.PrivateKey(ctx, "default", k.KID)
		if err != nil {
			t.Fatal(err)
		}
		if !bytes.Equal(p, sk.Bytes()) {
			t.Fatal("cached key differs")
		}
	}
	// The creating Manager keeps the intermediate it made: no unwrap at
	// all. A fresh one unwraps the set's intermediate once, however many
	// keys and releases follow.
	if n := e.kek.unwraps.Load(); n != 0 {
		t.Fatalf("%d KEK unwraps for 6 releases, want 0", n)
	}
	if _, err := e.m.Rotate(ctx, "default"); err != nil {
		t.Fatal(err)
	}
	fresh := e.manager(e.kek)
	for range 3 {
		for _, k := range mustKeys(t, fresh, "default") {
			p, err := fresh.PrivateKey(ctx, "default", k.KID)
			if err != nil {
				t.Fatal(err)
			}
			clear(p)
		}
	}
	if n := e.kek.unwraps.Load(); n != 1 {
		t.Fatalf("%d KEK unwraps for 6 releases of 2 keys by a fresh Manager, want 1", n)
	}
	// Once cached, releases survive a KEK outage.
	e.kek.down.Store(true)
	if _, err := e.m.PrivateKey(ctx, "default", k.KID); err != nil {
		t.Fatalf("cached release during KEK outage: %v", err)
	}
	// But an uncached one reports the outage as such.
	_, err = e.manager(e.kek).PrivateKey(ctx, "default", k.KID)
	if !errors.Is(err, keystore.ErrKEKUnavailable) || !keystore.IsUnavailable(err) || errors.Is(err, keystore.ErrSealedKeyInvalid) {
		t.Fatalf("KEK down: err = %v, want ErrKEKUnavailable only", err)
	}
	// Key creation by a Manager that has not unwrapped the set's
	// intermediate needs the KEK too, and must not leave a key behind.
	if _, err := e.manager(e.kek).Rotate(ctx, "default"); !errors.Is(err, keystore.ErrKEKUnavailable) {
		t.Fatalf("rotate with KEK down: err = %v", err)
	}
	if n := len(mustKeys(t, e.m, "default")); n != 2 {
		t.Fatalf("%d keys after failed rotation, want 2", n)
	}
}

func TestTamperedAndSwappedSealedKeys(t *testing.T) {
	ctx := context.Background()
	e := newEnv(t)
	if _, err := e.m.CreateKeySet(ctx, "default", testSettings); err != nil {
		t.Fatal(err)
	}
	if _, err := e.m.Rotate(ctx, "default"); err != nil {
		t.Fatal(err)
	}
	keys := mustKeys(t, e.m, "default")
	a, b := keys[0], keys[1]
	check := func(name string, want error) {
		t.Helper()
		// A fresh manager: no cached plaintext to hide the damage.
		for _, k := range []*keystore.Key{a, b} {
			_, err := e.manager(e.kek).PrivateKey(ctx, "default", k.KID)
			if want == nil && err != nil {
				t.Errorf("%s: %s: %v", name, k.KID, err)
			}
		}
		_, err := e.manager(e.kek).PrivateKey(ctx, "default", a.KID)
		if want != nil && !errors.Is(err, want) {
			t.Errorf("%s: err = %v, want %v", name, err, want)
		}
	}
	check("untouched", nil)

	// Swap the sealed records of a and b: each now carries the other's
	// ciphertext, which was bound to another kid and version.
	a.Sealed, b.Sealed = b.Sealed, a.Sealed
	if err := e.store.Commit(ctx, "default", nil, []*keystore.Key{a, b}); err != nil {
		t.Fatal(err)
	}
	check("swapped", keystore.ErrSealedKeyInvalid)
	a.Sealed, b.Sealed = b.Sealed, a.Sealed
	if err := e.store.Commit(ctx, "default", nil, []*keystore.Key{a, b}); err != nil {
		t.Fatal(err)
	}
	check("swapped back", nil)

	orig := a.Sealed.Clone()
	a.Sealed.Ciphertext[3] ^= 0x80
	if err := e.store.Commit(ctx, "default", nil, []*keystore.Key{a}); err != nil {
		t.Fatal(err)
	}
	check("ciphertext", keystore.ErrSealedKeyInvalid)

	a.Sealed = orig.Clone()
	a.Sealed.WrappedDEK[20] ^= 0x01
	if err := e.store.Commit(ctx, "default", nil, []*keystore.Key{a}); err != nil {
		t.Fatal(err)
	}
	check("wrapped DEK", kek.ErrAuthentication)

	a.Sealed = orig.Clone()
	a.PublicKey[0] ^= 0x01 // an attacker substituting the advertised key
	if err := e.store.Commit(ctx, "default", nil, []*keystore.Key{a}); err != nil {
		t.Fatal(err)
	}
	check("public key", keystore.ErrSealedKeyInvalid)
}

func TestWrongKEK(t *testing.T) {
	ctx := context.Background()
	e := newEnv(t)
	if _, err := e.m.CreateKeySet(ctx, "default", testSettings); err != nil {
		t.Fatal(err)
	}
	kid := mustKeys(t, e.m, "default")[0].KID

	// Another KEK file: the record names a different KEK.
	otherPath := filepath.Join(e.dir, "other.key")
	if err := kek.CreateLocal(otherPath); err != nil {
		t.Fatal(err)
	}
	other, err := kek.OpenLocal(otherPath)
	if err != nil {
		t.Fatal(err)
	}
	// The set's intermediate names the original KEK, which this Manager
	// has no provider for (no Options.OpenKEK): refused, not tried.
	if _, err := e.manager(other).PrivateKey(ctx, "default", kid); !errors.Is(err, kek.ErrUnsupported) || errors.Is(err, keystore.ErrKEKUnavailable) {
		t.Errorf("other KEK: err = %v", err)
	}

	// Same URI, different key material (file replaced).
	if err := os.Remove(e.kekPath); err != nil {
		t.Fatal(err)
	}
	if err := kek.CreateLocal(e.kekPath); err != nil {
		t.Fatal(err)
	}
	replaced, err := kek.OpenLocal(e.kekPath)
	if err != nil {
		t.Fatal(err)
	}
	_, err = e.manager(replaced).PrivateKey(ctx, "default", kid)
	if !errors.Is(err, keystore.ErrSealedKeyInvalid) || !errors.Is(err, kek.ErrAuthentication) || errors.Is(err, keystore.ErrKEKUnavailable) {
		t.Errorf("replaced KEK: err = %v, want authentication failure", err)
	}
}

func TestStoreFileHoldsNoPlaintext(t *testing.T) {
	ctx := context.Background()
	e := newEnv(t)
	if _, err := e.m.CreateKeySet(ctx, "default", testSettings); err != nil {
		t.Fatal(err)
	}
	if _, err := e.m.CreateKeySet(ctx, "second", testSettings); err != nil {
		t.Fatal(err)
	}
	for range 3 {
		if _, err := e.m.Rotate(ctx, "default"); err != nil {
			t.Fatal(err)
		}
	}
	e.clock.Set(t0.Add(23 * time.Hour))
	if err := e.m.Tick(ctx); err != nil {
		t.Fatal(err)
	}
	var privs [][]byte
	for _, set := range []string{"default", "second"} {
		for _, k := range mustKeys(t, e.m, set) {
			p, err := e.m.PrivateKey(ctx, set, k.KID)
			if err != nil {
				t.Fatal(err)
			}
			privs = append(privs, p)
		}
	}
	if len(privs) != 7 {
		t.Fatalf("%d keys, want 7", len(privs))
	}
	if err := e.store.Close(); err != nil {
		t.Fatal(err)
	}
	raw, err := os.ReadFile(e.dbPath)
	if err != nil {
		t.Fatal(err)
	}
	for _, p := range privs {
		for _, enc := range [][]byte{
			p,
			[]byte(hex.EncodeToString(p)),
			[]byte(base64.StdEncoding.EncodeToString(p)),
			[]byte(base64.RawURLEncoding.EncodeToString(p)),
			p[:16], // a partial leak counts too
		} {
			if bytes.Contains(raw, enc) {
				t.Fatalf("store file contains private key bytes (%d-byte form)", len(enc))
			}
		}
	}
	fi, err := os.Stat(e.dbPath)
	if err != nil {
		t.Fatal(err)
	}
	if fi.Mode().Perm() != 0o600 {
		t.Errorf("store file mode %#o, want 0600", fi.Mode().Perm())
	}
}

func TestLifecycle(t *testing.T) {
	ctx := context.Background()
	e := newEnv(t)
	if _, err := e.m.CreateKeySet(ctx, "default", testSettings); err != nil {
		t.Fatal(err)
	}
	at := func(h int) {
		t.Helper()
		e.clock.Set(t0.Add(time.Duration(h) * time.Hour))
		if err := e.m.Tick(ctx); err != nil {
			t.Fatalf("Tick at +%dh: %v", h, err)
		}
		// Tick is idempotent: a second call at the same time changes nothing,
		// not even a revision.
		before := mustKeys(t, e.m, "default")
		if err := e.m.Tick(ctx); err != nil {
			t.Fatal(err)
		}
		if after := mustKeys(t, e.m, "default"); !reflect.DeepEqual(before, after) {
			t.Fatalf("second Tick at +%dh changed keys", h)
		}
	}
	expect := func(want ...keystore.State) []*keystore.Key {
		t.Helper()
		keys := mustKeys(t, e.m, "default")
		if got := states(keys); !reflect.DeepEqual(got, want) {
			t.Fatalf("at %s states = %v, want %v", e.clock.Now().Sub(t0), got, want)
		}
		return keys
	}
	active := func(wantKID string) {
		t.Helper()
		pub, err := e.m.ActivePublicKeys(ctx)
		if err != nil {
			t.Fatal(err)
		}
		if len(pub) != 1 || pub[0].KID != wantKID || pub[0].Sealed != nil {
			t.Fatalf("active public keys = %v, want only %s", pub, wantKID)
		}
	}

	at(0)
	k1 := expect(keystore.StateActive)[0]
	active(k1.KID)
	at(21) // lead window opens at +22h
	expect(keystore.StateActive)

	at(22)
	keys := expect(keystore.StateActive, keystore.StatePending)
	k2 := keys[1]
	if k2.Version != 2 || !k2.Created.Equal(t0.Add(22*time.Hour)) || !k2.Activates.Equal(t0.Add(24*time.Hour)) ||
		!k2.Expires.Equal(t0.Add(48*time.Hour)) || !k2.DestroyAfter.Equal(t0.Add(96*time.Hour)) {
		t.Fatalf("pending key times: %+v", k2)
	}
	active(k1.KID) // pending keys are not advertised...
	if _, err := e.m.PrivateKey(ctx, "default", k2.KID); err != nil {
		t.Fatalf("...but are releasable for prefetch: %v", err)
	}

	at(24)
	expect(keystore.StateRetired, keystore.StateActive)
	active(k2.KID)
	if _, err := e.m.PrivateKey(ctx, "default", k1.KID); err != nil {
		t.Fatalf("retired key within retention: %v", err)
	}

	at(46)
	expect(keystore.StateRetired, keystore.StateActive, keystore.StatePending)
	at(48)
	expect(keystore.StateRetired, keystore.StateRetired, keystore.StateActive)
	at(70)
	expect(keystore.StateRetired, keystore.StateRetired, keystore.StateActive, keystore.StatePending)

	// Retention of k1 ends at +72h: the key is destroyed, its metadata kept.
	e.clock.Set(t0.Add(72*time.Hour - time.Nanosecond))
	if _, err := e.m.PrivateKey(ctx, "default", k1.KID); err != nil {
		t.Fatalf("k1 just before destroy_after: %v", err)
	}
	at(72)
	keys = expect(keystore.StateDestroyed, keystore.StateRetired, keystore.StateRetired, keystore.StateActive)
	d := keys[0]
	if d.Sealed != nil {
		t.Fatal("destroyed key still has its sealed private key")
	}
	if d.KID != k1.KID || !bytes.Equal(d.PublicKey, k1.PublicKey) || !d.Created.Equal(k1.Created) ||
		!d.Expires.Equal(k1.Expires) || !d.DestroyAfter.Equal(k1.DestroyAfter) || !d.Destroyed.Equal(t0.Add(72*time.Hour)) {
		t.Fatalf("destroyed key metadata lost: %+v", d)
	}
	if _, err := e.m.PrivateKey(ctx, "default", k1.KID); !errors.Is(err, keystore.ErrKeyDestroyed) {
		t.Fatalf("destroyed key release: err = %v", err)
	}
	// The stored times of k2 were fixed at creation.
	if got := keys[1]; !got.Activates.Equal(k2.Activates) || !got.Expires.Equal(k2.Expires) || !got.DestroyAfter.Equal(k2.DestroyAfter) {
		t.Fatalf("k2 times changed: %+v", got)
	}

	// Nobody ran Tick for a month: everything lapsed, and the next Tick
	// must still leave exactly one active key, effective now.
	e.clock.Set(t0.Add(30 * 24 * time.Hour))
	if pub, err := e.m.ActivePublicKeys(ctx); err != nil || len(pub) != 0 {
		t.Fatalf("expired keys advertised before Tick: %v %v", pub, err)
	}
	at(30 * 24)
	keys = expect(keystore.StateDestroyed, keystore.StateDestroyed, keystore.StateDestroyed, keystore.StateDestroyed, keystore.StateActive)
	if !keys[4].Activates.Equal(t0.Add(30 * 24 * time.Hour)) {
		t.Fatalf("catch-up key activates %v", keys[4].Activates)
	}
	active(keys[4].KID)
}

func TestRetiredWithoutTickNotReleasablePastRetention(t *testing.T) {
	ctx := context.Background()
	e := newEnv(t)
	if _, err := e.m.CreateKeySet(ctx, "default", testSettings); err != nil {
		t.Fatal(err)
	}
	kid := mustKeys(t, e.m, "default")[0].KID
	e.clock.Set(t0.Add(72 * time.Hour)) // no Tick: state still says active
	if _, err := e.m.PrivateKey(ctx, "default", kid); !errors.Is(err, keystore.ErrKeyNotReleasable) {
		t.Fatalf("err = %v, want ErrKeyNotReleasable", err)
	}
}

func TestManualRotate(t *testing.T) {
	ctx := context.Background()
	e := newEnv(t)
	if _, err := e.m.CreateKeySet(ctx, "default", testSettings); err != nil {
		t.Fatal(err)
	}
	k1 := mustKeys(t, e.m, "default")[0]
	t1 := t0.Add(5 * time.Hour)
	e.clock.Set(t1)
	k2, err := e.m.Rotate(ctx, "default")
	if err != nil {
		t.Fatal(err)
	}
	if k2.State != keystore.StateActive || k2.Version != 2 || !k2.Activates.Equal(t1) || !k2.Expires.Equal(t1.Add(24*time.Hour)) {
		t.Fatalf("new key: %+v", k2)
	}
	keys := mustKeys(t, e.m, "default")
	old := keys[0]
	if old.KID != k1.KID || old.State != keystore.StateRetired || !old.Expires.Equal(t1) || !old.DestroyAfter.Equal(t1.Add(48*time.Hour)) {
		t.Fatalf("previous key after rotation: %+v", old)
	}
	pub, err := e.m.ActivePublicKeys(ctx, "default")
	if err != nil || len(pub) != 1 || pub[0].KID != k2.KID {
		t.Fatalf("active keys = %v, %v", pub, err)
	}
	// A Tick right after the rotation has nothing to do.
	if err := e.m.Tick(ctx); err != nil {
		t.Fatal(err)
	}
	if after := mustKeys(t, e.m, "default"); !reflect.DeepEqual(after, keys) {
		t.Fatal("Tick after rotation changed keys")
	}
	// The schedule now follows the new key: next pending at t1+22h.
	e.clock.Set(t1.Add(22 * time.Hour))
	if err := e.m.Tick(ctx); err != nil {
		t.Fatal(err)
	}
	keys = mustKeys(t, e.m, "default")
	if len(keys) != 3 || keys[2].State != keystore.StatePending || !keys[2].Activates.Equal(t1.Add(24*time.Hour)) {
		t.Fatalf("after rotation schedule: %v", states(keys))
	}
	if _, err := e.m.Rotate(ctx, "nope"); !errors.Is(err, keystore.ErrKeySetNotFound) {
		t.Fatalf("rotate missing set: %v", err)
	}
}

func TestDisableEnable(t *testing.T) {
	ctx := context.Background()
	e := newEnv(t)
	if _, err := e.m.CreateKeySet(ctx, "default", testSettings); err != nil {
		t.Fatal(err)
	}
	k1 := mustKeys(t, e.m, "default")[0]
	if _, err := e.m.PrivateKey(ctx, "default", k1.KID); err != nil { // now cached
		t.Fatal(err)
	}

	d, err := e.m.SetState(ctx, "default", k1.KID, keystore.StateDisabled)
	if err != nil {
		t.Fatal(err)
	}
	if d.State != keystore.StateDisabled || d.HeldState != keystore.StateActive {
		t.Fatalf("disabled: %s held %s", d.State, d.HeldState)
	}
	if _, err := e.m.PrivateKey(ctx, "default", k1.KID); !errors.Is(err, keystore.ErrKeyDisabled) {
		t.Fatalf("release of disabled (previously cached) key: err = %v", err)
	}
	if pub, _ := e.m.ActivePublicKeys(ctx); len(pub) != 0 {
		t.Fatal("disabled key advertised")
	}
	if again, err := e.m.SetState(ctx, "default", k1.KID, keystore.StateDisabled); err != nil || again.HeldState != keystore.StateActive {
		t.Fatalf("disable twice: %v %v", again, err)
	}
	// With the only key on hold, Tick provides a usable one.
	if err := e.m.Tick(ctx); err != nil {
		t.Fatal(err)
	}
	if got := states(mustKeys(t, e.m, "default")); !reflect.DeepEqual(got, []keystore.State{keystore.StateDisabled, keystore.StateActive}) {
		t.Fatalf("after Tick with held key: %v", got)
	}

	en, err := e.m.Enable(ctx, "default", k1.KID)
	if err != nil {
		t.Fatal(err)
	}
	if en.State != keystore.StateActive || en.HeldState != "" {
		t.Fatalf("enabled: %s held %q", en.State, en.HeldState)
	}
	if _, err := e.m.PrivateKey(ctx, "default", k1.KID); err != nil {
		t.Fatalf("release after enable: %v", err)
	}

	// Disabled while active, enabled after its expiry: comes back retired.
	if _, err := e.m.SetState(ctx, "default", k1.KID, keystore.StateDisabled); err != nil {
		t.Fatal(err)
	}
	e.clock.Set(t0.Add(30 * time.Hour))
	if err := e.m.Tick(ctx); err != nil {
		t.Fatal(err)
	}
	if k, _ := e.m.Key(ctx, "default", k1.KID); k.State != keystore.StateDisabled {
		t.Fatalf("Tick changed a held key to %s", k.State)
	}
	en, err = e.m.SetState(ctx, "default", k1.KID, keystore.StateActive)
	if err != nil || en.State != keystore.StateRetired {
		t.Fatalf("enable after expiry: %v, %v; want retired", en, err)
	}

	// Invalid transitions.
	for _, s := range []keystore.State{keystore.StatePending, keystore.StateRetired, keystore.StateActive} {
		if _, err := e.m.SetState(ctx, "default", k1.KID, s); !errors.Is(err, keystore.ErrInvalidTransition) {
			t.Errorf("retired -> %s: err = %v", s, err)
		}
	}
	if _, err := e.m.SetState(ctx, "default", k1.KID, "bogus"); !errors.Is(err, keystore.ErrInvalidArgument) {
		t.Errorf("bogus state: err = %v", err)
	}

	// A held key is still destroyed on schedule: holds do not extend
	// retention.
	if _, err := e.m.SetState(ctx, "default", k1.KID, keystore.StateDisabled); err != nil {
		t.Fatal(err)
	}
	e.clock.Set(t0.Add(72 * time.Hour))
	if err := e.m.Tick(ctx); err != nil {
		t.Fatal(err)
	}
	k, err := e.m.Key(ctx, "default", k1.KID)
	if err != nil || k.State != keystore.StateDestroyed || k.Sealed != nil {
		t.Fatalf("held key past destroy_after: %+v %v", k, err)
	}
	for _, s := range []keystore.State{keystore.StateDisabled, keystore.StateActive} {
		if _, err := e.m.SetState(ctx, "default", k1.KID, s); !errors.Is(err, keystore.ErrKeyDestroyed) {
			t.Errorf("destroyed -> %s: err = %v", s, err)
		}
	}
	if _, err := e.m.SetState(ctx, "default", k1.KID, keystore.StateDestroyed); err != nil {
		t.Errorf("destroy twice: %v", err)
	}
}

func TestDisablePendingEnableAfterActivation(t *testing.T) {
	ctx := context.Background()
	e := newEnv(t)
	if _, err := e.m.CreateKeySet(ctx, "default", testSettings); err != nil {
		t.Fatal(err)
	}
	e.clock.Set(t0.Add(22 * time.Hour))
	if err := e.m.Tick(ctx); err != nil {
		t.Fatal(err)
	}
	p := mustKeys(t, e.m, "default")[1]
	d, err := e.m.SetState(ctx, "default", p.KID, keystore.StateDisabled)
	if err != nil || d.HeldState != keystore.StatePending {
		t.Fatalf("disable pending: %v %v", d, err)
	}
	e.clock.Set(t0.Add(25 * time.Hour))
	en, err := e.m.SetState(ctx, "default", p.KID, keystore.StateActive)
	if err != nil || en.State != keystore.StateActive {
		t.Fatalf("enable after activation time: %v %v", en, err)
	}
}

func TestManualDestroy(t *testing.T) {
	ctx := context.Background()
	e := newEnv(t)
	if _, err := e.m.CreateKeySet(ctx, "default", testSettings); err != nil {
		t.Fatal(err)
	}
	k := mustKeys(t, e.m, "default")[0]
	if _, err := e.m.PrivateKey(ctx, "default", k.KID); err != nil {
		t.Fatal(err)
	}
	d, err := e.m.SetState(ctx, "default", k.KID, keystore.StateDestroyed)
	if err != nil || d.State != keystore.StateDestroyed || d.Sealed != nil || !d.Destroyed.Equal(t0) {
		t.Fatalf("destroy: %+v %v", d, err)
	}
	if _, err := e.m.PrivateKey(ctx, "default", k.KID); !errors.Is(err, keystore.ErrKeyDestroyed) {
		t.Fatalf("release after destroy: %v", err)
	}
	if d.KEKURI() != "" {
		t.Fatalf("destroyed key still names a KEK: %q", d.KEKURI())
	}
}

func TestSetPolicy(t *testing.T) {
	ctx := context.Background()
	e := newEnv(t)
	ks, err := e.m.CreateKeySetWithPolicy(ctx, "default", testSettings, []byte("rules: []\n"))
	if err != nil || ks.PolicyVersion != 1 {
		t.Fatalf("create with policy: %+v %v", ks, err)
	}
	v, err := e.m.SetPolicy(ctx, "default", []byte("rules: [x]\n"))
	if err != nil || v != 2 {
		t.Fatalf("SetPolicy = %d, %v", v, err)
	}
	got, err := e.m.KeySet(ctx, "default")
	if err != nil || got.PolicyVersion != 2 || string(got.Policy) != "rules: [x]\n" || !got.PolicyUpdated.Equal(t0) {
		t.Fatalf("stored policy: %+v %v", got, err)
	}
	if _, err := e.m.SetPolicy(ctx, "default", nil); !errors.Is(err, keystore.ErrInvalidArgument) {
		t.Errorf("empty policy: %v", err)
	}
	if _, err := e.m.SetPolicy(ctx, "default", make([]byte, keystore.MaxPolicySize+1)); !errors.Is(err, keystore.ErrInvalidArgument) {
		t.Errorf("huge policy: %v", err)
	}
	if _, err := e.m.SetPolicy(ctx, "nope", []byte("x")); !errors.Is(err, keystore.ErrKeySetNotFound) {
		t.Errorf("missing set: %v", err)
	}
}

func TestRunRotation(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	e := newEnv(t)
	if _, err := e.m.CreateKeySet(ctx, "default", testSettings); err != nil {
		t.Fatal(err)
	}
	e.clock.Set(t0.Add(23 * time.Hour))
	done := make(chan struct{})
	go func() {
		e.m.RunRotation(ctx, 5*time.Millisecond)
		close(done)
	}()
	deadline := time.Now().Add(5 * time.Second)
	for len(mustKeys(t, e.m, "default")) < 2 {
		if time.Now().After(deadline) {
			t.Fatal("RunRotation did not create the pending key")
		}
		time.Sleep(5 * time.Millisecond)
	}
	cancel()
	select {
	case <-done:
	case <-time.After(5 * time.Second):
		t.Fatal("RunRotation did not stop after cancel")
	}
	if n := len(mustKeys(t, e.m, "default")); n != 2 {
		t.Fatalf("%d keys after repeated ticks, want 2", n)
	}
}

func BenchmarkPrivateKeyCached(b *testing.B) {
	ctx := context.Background()
	e := newEnv(b)
	if _, err := e.m.CreateKeySet(ctx, "default", testSettings); err != nil {
		b.Fatal(err)
	}
	kid := mustKeys(b, e.m, "default")[0].KID
	m := e.manager(e.kek) // a Manager that must unwrap the intermediate once
	if _, err := m.PrivateKey(ctx, "default", kid); err != nil {
		b.Fatal(err)
	}
	b.ReportAllocs()
	for b.Loop() {
		p, err := m.PrivateKey(ctx, "default", kid)
		if err != nil {
			b.Fatal(err)
		}
		clear(p)
	}
	if n := e.kek.unwraps.Load(); n != 1 {
		b.Fatalf("%d unwraps, want 1", n)
	}
}
