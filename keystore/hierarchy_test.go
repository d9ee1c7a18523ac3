package keystore_test

import (
	"bytes"
	"context"
	"crypto/aes"
	"crypto/cipher"
	"crypto/ecdh"
	"crypto/rand"
	"crypto/x509"
	"errors"
	"fmt"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/attested-kms/attested-kms/hpke"
	"github.com/attested-kms/attested-kms/keystore"
	"github.com/attested-kms/attested-kms/keystore/boltstore"
	"github.com/attested-kms/attested-kms/keystore/kek"
)

// memKEK is a controllable in-memory KEK provider (test only): AES-256-GCM
// under a per-provider secret, with the owner's off switch, outages, a
// wrap failure after N wraps, and call counters.
type memKEK struct {
	uri       string
	aead      cipher.AEAD
	disabled  atomic.Bool
	down      atomic.Bool
	hang      atomic.Bool  // Unwrap blocks until its context ends
	wrapsLeft atomic.Int64 // < 0: unlimited
	wraps     atomic.Int64
	unwraps   atomic.Int64
}

func newMemKEK(tb testing.TB, name string) *memKEK {
	tb.Helper()
	key := make([]byte, 32)
	if _, err := rand.Read(key); err != nil {
		tb.Fatal(err)
	}
	block, err := aes.NewCipher(key)
	if err != nil {
		tb.Fatal(err)
	}
	aead, err := cipher.NewGCM(block)
	if err != nil {
		tb.Fatal(err)
	}
	m := &memKEK{uri: "mem://" + name, aead: aead}
	m.wrapsLeft.Store(-1)
	return m
}

func (m *memKEK) URI() string { return m.uri }

func (m *memKEK) gate() error {
	switch {
	case m.disabled.Load():
		return fmt.Errorf("mem %s: key disabled: %w", m.uri, kek.ErrKeyDisabled)
	case m.down.Load():
		return fmt.Errorf("mem %s: 503: %w", m.uri, kek.ErrUnavailable)
	}
	return nil
}

func (m *memKEK) Wrap(_ context.Context, dek, aad []byte) (kek.Wrapped, error) {
	if err := m.gate(); err != nil {
		return kek.Wrapped{}, err
	}
	if m.wrapsLeft.Load() == 0 {
		return kek.Wrapped{}, fmt.Errorf("mem %s: injected failure: %w", m.uri, kek.ErrUnavailable)
	}
	m.wrapsLeft.Add(-1)
	m.wraps.Add(1)
	nonce := make([]byte, 12)
	if _, err := rand.Read(nonce); err != nil {
		return kek.Wrapped{}, err
	}
	return kek.Wrapped{KEKURI: m.uri, KEKVersion: "1", Algorithm: "MEM-AES-256-GCM", Ciphertext: m.aead.Seal(nonce, nonce, dek, aad)}, nil
}

func (m *memKEK) Unwrap(ctx context.Context, w kek.Wrapped, aad []byte) ([]byte, error) {
	if m.hang.Load() {
		<-ctx.Done()
		return nil, fmt.Errorf("mem %s: %w", m.uri, errors.Join(kek.ErrUnavailable, ctx.Err()))
	}
	if err := m.gate(); err != nil {
		return nil, err
	}
	m.unwraps.Add(1)
	if w.KEKURI != m.uri || len(w.Ciphertext) < 12 {
		return nil, kek.ErrAuthentication
	}
	dek, err := m.aead.Open(nil, w.Ciphertext[:12], w.Ciphertext[12:], aad)
	if err != nil {
		return nil, kek.ErrAuthentication
	}
	return dek, nil
}

// resolver opens the memKEKs it knows by URI (Options.OpenKEK).
func resolver(ps ...*memKEK) func(context.Context, string) (kek.Provider, error) {
	return func(_ context.Context, uri string) (kek.Provider, error) {
		for _, p := range ps {
			if p.uri == uri {
				return p, nil
			}
		}
		return nil, fmt.Errorf("unknown KEK %s: %w", uri, kek.ErrUnsupported)
	}
}

type hEnv struct {
	store *boltstore.Store
	clock *fakeClock
	slept atomic.Int64
}

func newHEnv(tb testing.TB) *hEnv {
	tb.Helper()
	st, err := boltstore.Open(filepath.Join(tb.TempDir(), "kms.db"))
	if err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(func() { _ = st.Close() })
	return &hEnv{store: st, clock: &fakeClock{t: t0}}
}

// sleep advances the fake clock instead of waiting.
func (h *hEnv) sleep(ctx context.Context, d time.Duration) error {
	h.slept.Add(1)
	h.clock.Set(h.clock.Now().Add(d))
	return ctx.Err()
}

func (h *hEnv) manager(root kek.Provider, others ...*memKEK) *keystore.Manager {
	return keystore.NewManager(h.store, root, keystore.Options{
		Now: h.clock.Now, OpenKEK: resolver(others...), Sleep: h.sleep,
		KEKCheckInterval: 5 * time.Minute,
	})
}

func (h *hEnv) advance(d time.Duration) { h.clock.Set(h.clock.Now().Add(d)) }

// openAll checks that every sealed key of every set opens with m and
// returns how many did.
func openAll(t *testing.T, m *keystore.Manager) int {
	t.Helper()
	ctx := context.Background()
	sets, err := m.ListKeySets(ctx)
	if err != nil {
		t.Fatal(err)
	}
	n := 0
	for _, ks := range sets {
		for _, k := range mustKeys(t, m, ks.Name) {
			if k.Sealed == nil {
				continue
			}
			p, err := m.PrivateKey(ctx, ks.Name, k.KID)
			if err != nil {
				t.Fatalf("%s/%s v%d: %v", ks.Name, k.KID, k.Version, err)
			}
			checkPair(t, p, k.PublicKey)
			n++
		}
	}
	return n
}

func checkPair(t *testing.T, priv, pub []byte) {
	t.Helper()
	sk, err := ecdh.X25519().NewPrivateKey(priv)
	if err != nil || !bytes.Equal(sk.PublicKey().Bytes(), pub) {
		t.Fatalf("private key does not match public key (%v)", err)
	}
}

func TestHierarchyRecords(t *testing.T) {
	ctx := context.Background()
	h := newHEnv(t)
	root := newMemKEK(t, "root")
	m := h.manager(root)
	ks, err := m.CreateKeySet(ctx, "default", testSettings)
	if err != nil {
		t.Fatal(err)
	}
	if len(ks.Intermediates) != 1 {
		t.Fatalf("%d intermediates, want 1", len(ks.Intermediates))
	}
	in := ks.Intermediates[0]
	if in.Generation != 1 || in.Wrapped.KEKURI != root.URI() || in.Wrapped.KEKVersion != "1" || in.Wrapped.Algorithm != "MEM-AES-256-GCM" {
		t.Fatalf("intermediate = %+v", in)
	}
	k := mustKeys(t, m, "default")[0]
	s := k.Sealed
	if s.Format != keystore.SealFormatV2 || s.Generation != 1 || s.Algorithm != keystore.IntermediateAlgorithm {
		t.Fatalf("sealed = %q gen %d alg %q", s.Format, s.Generation, s.Algorithm)
	}
	if k.KEKURI() != root.URI() {
		t.Fatalf("KEKURI = %q, want the set's root", k.KEKURI())
	}
	// The intermediate is bound to its set: copied onto another set it
	// does not open.
	if _, err := m.CreateKeySet(ctx, "other", testSettings); err != nil {
		t.Fatal(err)
	}
	other, err := h.store.KeySet(ctx, "other")
	if err != nil {
		t.Fatal(err)
	}
	stored, err := h.store.KeySet(ctx, "default")
	if err != nil {
		t.Fatal(err)
	}
	other.Intermediates = stored.Clone().Intermediates
	if err := h.store.UpdateKeySet(ctx, other); err != nil {
		t.Fatal(err)
	}
	kid := mustKeys(t, m, "other")[0].KID
	if _, err := h.manager(root).PrivateKey(ctx, "other", kid); !errors.Is(err, keystore.ErrSealedKeyInvalid) {
		t.Fatalf("intermediate moved between sets: err = %v", err)
	}
}

func TestWarmOneOutsideCallPerSet(t *testing.T) {
	ctx := context.Background()
	h := newHEnv(t)
	root := newMemKEK(t, "root")
	m := h.manager(root)
	for _, name := range []string{"a", "b", "c"} {
		if _, err := m.CreateKeySet(ctx, name, testSettings); err != nil {
			t.Fatal(err)
		}
		for range 4 {
			if _, err := m.Rotate(ctx, name); err != nil {
				t.Fatal(err)
			}
		}
	}
	root.unwraps.Store(0)
	fresh := h.manager(root)
	if err := fresh.Warm(ctx); err != nil {
		t.Fatal(err)
	}
	if n := openAll(t, fresh); n != 15 {
		t.Fatalf("%d keys opened, want 15", n)
	}
	if n := root.unwraps.Load(); n != 3 {
		t.Fatalf("%d outside calls to start 3 key sets of 15 keys, want 3", n)
	}
	st, err := fresh.KEKStatus(ctx)
	if err != nil || len(st) != 3 {
		t.Fatalf("KEKStatus = %v, %v", st, err)
	}
	for _, s := range st {
		if s.State != keystore.KEKStateOK || s.KEKURI != root.URI() || s.Generation != 1 || s.LastOK.IsZero() {
			t.Errorf("status %+v", s)
		}
	}

	// A KEK that cannot be used stops the start, naming set and KEK.
	root.down.Store(true)
	err = h.manager(root).Warm(ctx)
	if err == nil || !errors.Is(err, keystore.ErrKEKUnavailable) || !strings.Contains(err.Error(), `key set "b"`) || !strings.Contains(err.Error(), root.URI()) {
		t.Fatalf("warm with KEK down: %v", err)
	}
	root.down.Store(false)
	root.disabled.Store(true)
	if err := h.manager(root).Warm(ctx); !errors.Is(err, keystore.ErrKEKDisabled) {
		t.Fatalf("warm with KEK disabled: %v", err)
	}
}

// legacyStore turns the set into a pre-hierarchy one: no intermediate, and
// every key re-sealed as v1 directly under p.
func legacyStore(t *testing.T, h *hEnv, m *keystore.Manager, p kek.Provider, set string) {
	t.Helper()
	ctx := context.Background()
	ks, err := h.store.KeySet(ctx, set)
	if err != nil {
		t.Fatal(err)
	}
	keys := mustKeys(t, m, set)
	for _, k := range keys {
		priv, err := m.PrivateKey(ctx, set, k.KID)
		if err != nil {
			t.Fatal(err)
		}
		if k.Sealed, err = keystore.SealV1ForTest(ctx, p, k, priv); err != nil {
			t.Fatal(err)
		}
	}
	if err := h.store.Commit(ctx, set, nil, keys); err != nil {
		t.Fatal(err)
	}
	ks.Intermediates = nil
	if err := h.store.UpdateKeySet(ctx, ks); err != nil {
		t.Fatal(err)
	}
}

func TestV1StoreStillOpensAndMigrates(t *testing.T) {
	ctx := context.Background()
	h := newHEnv(t)
	root := newMemKEK(t, "root")
	m := h.manager(root)
	if _, err := m.CreateKeySet(ctx, "default", testSettings); err != nil {
		t.Fatal(err)
	}
	if _, err := m.Rotate(ctx, "default"); err != nil {
		t.Fatal(err)
	}
	legacyStore(t, h, m, root, "default")

	fresh := h.manager(root)
	if err := fresh.Warm(ctx); err != nil {
		t.Fatal(err)
	}
	for _, k := range mustKeys(t, fresh, "default") {
		if k.Sealed.Format != keystore.SealFormatV1 || k.KEKURI() != root.URI() {
			t.Fatalf("not a v1 record: %q %q", k.Sealed.Format, k.KEKURI())
		}
	}
	if n := openAll(t, fresh); n != 2 {
		t.Fatalf("%d v1 keys opened", n)
	}
	// The first new key gives the set an intermediate; new keys are v2.
	nk, err := fresh.Rotate(ctx, "default")
	if err != nil {
		t.Fatal(err)
	}
	ks, _ := h.store.KeySet(ctx, "default")
	if nk.Sealed.Format != keystore.SealFormatV2 || len(ks.Intermediates) != 1 {
		t.Fatalf("new key %q, %d intermediates", nk.Sealed.Format, len(ks.Intermediates))
	}
	// Rotating the intermediate converts the v1 keys.
	if err := fresh.RotateIntermediate(ctx, "default"); err != nil {
		t.Fatal(err)
	}
	for _, k := range mustKeys(t, fresh, "default") {
		if k.Sealed.Format != keystore.SealFormatV2 || k.Sealed.Generation != 2 {
			t.Fatalf("after rotation: %q gen %d", k.Sealed.Format, k.Sealed.Generation)
		}
	}
	if n := openAll(t, h.manager(root)); n != 3 {
		t.Fatalf("%d keys open after migration", n)
	}
}

// failingStore fails the Nth Commit or key set update (counting from 1).
type failingStore struct {
	keystore.Store
	commitFail, updateFail int
	commits, updates       int
}

var errInjected = errors.New("injected store failure")

func (f *failingStore) Commit(ctx context.Context, set string, c, u []*keystore.Key) error {
	f.commits++
	if f.commits == f.commitFail {
		return errInjected
	}
	return f.Store.Commit(ctx, set, c, u)
}

func (f *failingStore) UpdateKeySet(ctx context.Context, ks *keystore.KeySet) error {
	f.updates++
	if f.updates == f.updateFail {
		return errInjected
	}
	return f.Store.UpdateKeySet(ctx, ks)
}

func TestRotateIntermediateCrashSafe(t *testing.T) {
	ctx := context.Background()
	h := newHEnv(t)
	root := newMemKEK(t, "root")
	m := h.manager(root)
	if _, err := m.CreateKeySet(ctx, "default", testSettings); err != nil {
		t.Fatal(err)
	}
	for range 3 {
		if _, err := m.Rotate(ctx, "default"); err != nil {
			t.Fatal(err)
		}
	}
	gens := func() []uint64 {
		ks, err := h.store.KeySet(ctx, "default")
		if err != nil {
			t.Fatal(err)
		}
		var g []uint64
		for _, in := range ks.Intermediates {
			g = append(g, in.Generation)
		}
		return g
	}
	// Crash while re-sealing keys: the new generation is on the set, the
	// keys still on the old one; everything opens.
	fs := &failingStore{Store: h.store, commitFail: 1}
	crash := keystore.NewManager(fs, root, keystore.Options{Now: h.clock.Now})
	if err := crash.RotateIntermediate(ctx, "default"); !errors.Is(err, errInjected) {
		t.Fatalf("err = %v", err)
	}
	if g := gens(); len(g) != 2 {
		t.Fatalf("generations %v after crash while re-sealing", g)
	}
	if n := openAll(t, h.manager(root)); n != 4 {
		t.Fatalf("%d keys open", n)
	}
	// Crash before dropping the old generations: keys on the new one.
	fs = &failingStore{Store: h.store, updateFail: 2}
	crash = keystore.NewManager(fs, root, keystore.Options{Now: h.clock.Now})
	if err := crash.RotateIntermediate(ctx, "default"); !errors.Is(err, errInjected) {
		t.Fatalf("err = %v", err)
	}
	if g := gens(); len(g) != 3 {
		t.Fatalf("generations %v after crash before drop", g)
	}
	if n := openAll(t, h.manager(root)); n != 4 {
		t.Fatalf("%d keys open", n)
	}
	// A clean run finishes: one generation, every key on it.
	if err := m.RotateIntermediate(ctx, "default"); err != nil {
		t.Fatal(err)
	}
	if g := gens(); len(g) != 1 || g[0] != 4 {
		t.Fatalf("generations %v, want [4]", g)
	}
	for _, k := range mustKeys(t, m, "default") {
		if k.Sealed.Generation != 4 {
			t.Fatalf("key %s on generation %d", k.KID, k.Sealed.Generation)
		}
	}
	if n := openAll(t, h.manager(root)); n != 4 {
		t.Fatalf("%d keys open", n)
	}
	if n := openAll(t, m); n != 4 { // the rotating Manager's cache too
		t.Fatalf("%d keys open", n)
	}
}

func TestRewrapRootResumable(t *testing.T) {
	ctx := context.Background()
	h := newHEnv(t)
	oldK, newK := newMemKEK(t, "old"), newMemKEK(t, "new")
	m := h.manager(oldK, newK)
	names := []string{"s1", "s2", "s3", "s4", "s5"}
	for _, n := range names {
		if _, err := m.CreateKeySet(ctx, n, testSettings); err != nil {
			t.Fatal(err)
		}
		if _, err := m.Rotate(ctx, n); err != nil {
			t.Fatal(err)
		}
	}
	legacyStore(t, h, m, oldK, "s5") // a pre-hierarchy set moves too
	if _, err := m.ImportPublicKey(ctx); err != nil {
		t.Fatal(err)
	}
	under := func() map[string]string {
		out := map[string]string{}
		for _, n := range names {
			ks, err := h.store.KeySet(ctx, n)
			if err != nil {
				t.Fatal(err)
			}
			uris := map[string]bool{}
			for _, in := range ks.Intermediates {
				uris[in.Wrapped.KEKURI] = true
			}
			if len(uris) > 1 {
				t.Fatalf("set %s under several KEKs: %v", n, uris)
			}
			out[n] = ks.KEKURI()
		}
		return out
	}

	// The new KEK fails after two wraps: two sets move, then it stops.
	newK.wrapsLeft.Store(2)
	var done []string
	err := m.RewrapRoot(ctx, newK.URI(), func(s string) { done = append(done, s) })
	if !errors.Is(err, kek.ErrUnavailable) || len(done) != 2 {
		t.Fatalf("interrupted rewrap: err = %v, done %v", err, done)
	}
	u := under()
	if u["s1"] != newK.URI() || u["s2"] != newK.URI() || u["s3"] != oldK.URI() || u["s4"] != oldK.URI() {
		t.Fatalf("after interruption: %v", u)
	}
	if m.RootKEKURI() != oldK.URI() {
		t.Fatal("root switched before the rewrap finished")
	}
	// Every key readable by a fresh Manager either way.
	if n := openAll(t, h.manager(oldK, newK)); n != 10 {
		t.Fatalf("%d keys open mid-rotation", n)
	}

	newK.wrapsLeft.Store(-1)
	done = nil
	if err := m.RewrapRoot(ctx, newK.URI(), func(s string) { done = append(done, s) }); err != nil {
		t.Fatal(err)
	}
	if strings.Join(done, ",") != "s3,s4,s5" {
		t.Fatalf("resumed run moved %v, want s3,s4,s5", done)
	}
	for n, uri := range under() {
		if uri != newK.URI() {
			t.Fatalf("%s still under %s", n, uri)
		}
	}
	if m.RootKEKURI() != newK.URI() {
		t.Fatalf("root = %s after rewrap", m.RootKEKURI())
	}
	// The old KEK can go: everything opens through the new one alone.
	oldK.disabled.Store(true)
	fresh := h.manager(newK)
	if err := fresh.Warm(ctx); err != nil {
		t.Fatal(err)
	}
	if n := openAll(t, fresh); n != 10 {
		t.Fatalf("%d keys open under the new KEK", n)
	}
	for _, k := range mustKeys(t, fresh, "s5") {
		if k.Sealed.Format != keystore.SealFormatV2 {
			t.Fatalf("v1 key left under the old KEK")
		}
	}
	// The import key moved too.
	pub, err := fresh.ImportPublicKey(ctx)
	if err != nil {
		t.Fatal(err)
	}
	priv := make([]byte, 32)
	_, _ = rand.Read(priv)
	blob, err := hpke.WrapRSA(nil, pub, priv)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := fresh.ImportWrapped(ctx, "s1", blob); err != nil {
		t.Fatalf("import after KEK rotation: %v", err)
	}
	// A second run is a no-op.
	done = nil
	if err := m.RewrapRoot(ctx, newK.URI(), func(s string) { done = append(done, s) }); err != nil || len(done) != 0 {
		t.Fatalf("repeat: %v, %v", done, err)
	}
}

func offSwitchEnv(t *testing.T) (*hEnv, *memKEK, *keystore.Manager, string) {
	t.Helper()
	ctx := context.Background()
	h := newHEnv(t)
	root := newMemKEK(t, "customer")
	m := h.manager(root)
	if _, err := m.CreateKeySet(ctx, "default", testSettings); err != nil {
		t.Fatal(err)
	}
	if _, err := m.CreateKeySet(ctx, "other", testSettings); err != nil {
		t.Fatal(err)
	}
	m = h.manager(root) // start as a server does
	if err := m.Warm(ctx); err != nil {
		t.Fatal(err)
	}
	kid := mustKeys(t, m, "default")[0].KID
	if _, err := m.PrivateKey(ctx, "default", kid); err != nil {
		t.Fatal(err)
	}
	return h, root, m, kid
}

func statusOf(t *testing.T, m *keystore.Manager, set string) keystore.KEKStatus {
	t.Helper()
	st, err := m.KEKStatus(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	for _, s := range st {
		if s.KeySet == set {
			return s
		}
	}
	t.Fatalf("no status for %s", set)
	return keystore.KEKStatus{}
}

func TestOffSwitchDisabledStopsReleasesWithinInterval(t *testing.T) {
	ctx := context.Background()
	h, root, m, kid := offSwitchEnv(t)
	root.disabled.Store(true)
	// Cached: releases continue until the next check...
	if _, err := m.PrivateKey(ctx, "default", kid); err != nil {
		t.Fatalf("before the check: %v", err)
	}
	// ...which comes within half an interval and stops them at once.
	h.advance(150 * time.Second)
	if err := m.CheckKEKs(ctx); !errors.Is(err, keystore.ErrKEKDisabled) {
		t.Fatalf("check: %v", err)
	}
	_, err := m.PrivateKey(ctx, "default", kid)
	if !errors.Is(err, keystore.ErrKEKDisabled) || !strings.Contains(err.Error(), root.URI()) || !strings.Contains(err.Error(), "disabled or access to it revoked by its owner") {
		t.Fatalf("after the off switch: err = %v", err)
	}
	if keystore.IsUnavailable(err) {
		t.Fatal("disabled KEK reported as retryable")
	}
	s := statusOf(t, m, "default")
	if s.State != keystore.KEKStateDisabled || s.Error == "" || s.KEKURI != root.URI() {
		t.Fatalf("status %+v", s)
	}
	if h.slept.Load() != 0 {
		t.Fatal("the off switch was retried instead of obeyed")
	}
	// Re-enabled: the next check restores releases.
	root.disabled.Store(false)
	h.advance(150 * time.Second)
	if err := m.CheckKEKs(ctx); err != nil {
		t.Fatal(err)
	}
	if n := openAll(t, m); n != 2 {
		t.Fatalf("%d keys after re-enable", n)
	}
	if s := statusOf(t, m, "default"); s.State != keystore.KEKStateOK || s.Error != "" {
		t.Fatalf("status after re-enable %+v", s)
	}
}

func TestOffSwitchSeenOnFirstUnwrap(t *testing.T) {
	ctx := context.Background()
	h, root, _, kid := offSwitchEnv(t)
	root.disabled.Store(true)
	m := h.manager(root)
	if _, err := m.PrivateKey(ctx, "default", kid); !errors.Is(err, keystore.ErrKEKDisabled) {
		t.Fatalf("err = %v", err)
	}
	if s := statusOf(t, m, "default"); s.State != keystore.KEKStateDisabled {
		t.Fatalf("status %+v", s)
	}
}

func TestTransientOutageDoesNotStopReleases(t *testing.T) {
	ctx := context.Background()
	h, root, m, kid := offSwitchEnv(t)
	// Throttled for a few seconds: the check's retries ride it out.
	root.down.Store(true)
	var once sync.Once
	mgr := keystore.NewManager(h.store, root, keystore.Options{
		Now: h.clock.Now, KEKCheckInterval: 5 * time.Minute,
		Sleep: func(ctx context.Context, d time.Duration) error {
			once.Do(func() { root.down.Store(false) })
			return h.sleep(ctx, d)
		},
	})
	if err := mgr.CheckKEKs(ctx); err != nil {
		t.Fatalf("check across a short outage: %v", err)
	}
	if h.slept.Load() == 0 {
		t.Fatal("no retry")
	}

	// A longer outage (2 minutes, less than the interval) starting after a
	// good check: releases continue throughout.
	h.advance(150 * time.Second)
	if err := m.CheckKEKs(ctx); err != nil {
		t.Fatal(err)
	}
	root.down.Store(true)
	h.advance(150 * time.Second)
	if err := m.CheckKEKs(ctx); !errors.Is(err, kek.ErrUnavailable) {
		t.Fatalf("check during outage: %v", err)
	}
	if s := statusOf(t, m, "default"); s.State != keystore.KEKStateUnavailable || s.Error == "" {
		t.Fatalf("status %+v", s)
	}
	if _, err := m.PrivateKey(ctx, "default", kid); err != nil {
		t.Fatalf("release during a short outage: %v", err)
	}
	root.down.Store(false)
	h.advance(30 * time.Second)
	if err := m.CheckKEKs(ctx); err != nil {
		t.Fatal(err)
	}
	if _, err := m.PrivateKey(ctx, "default", kid); err != nil {
		t.Fatal(err)
	}

	// An outage longer than the interval stops releases once the last
	// good check is older than the interval, and recovery restores them.
	root.down.Store(true)
	for range 4 {
		h.advance(90 * time.Second)
		_ = m.CheckKEKs(ctx)
	}
	_, err := m.PrivateKey(ctx, "default", kid)
	if !errors.Is(err, keystore.ErrKEKUnavailable) || !keystore.IsUnavailable(err) || errors.Is(err, keystore.ErrKEKDisabled) {
		t.Fatalf("after a long outage: err = %v", err)
	}
	root.down.Store(false)
	if err := m.CheckKEKs(ctx); err != nil {
		t.Fatal(err)
	}
	if _, err := m.PrivateKey(ctx, "default", kid); err != nil {
		t.Fatalf("after recovery: %v", err)
	}
}

func TestRunRevalidation(t *testing.T) {
	h, root, _, kid := offSwitchEnv(t)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	checks := make(chan struct{}, 100)
	m := keystore.NewManager(h.store, root, keystore.Options{
		Now: h.clock.Now, KEKCheckInterval: 5 * time.Minute,
		Sleep: func(ctx context.Context, d time.Duration) error {
			checks <- struct{}{}
			select {
			case <-ctx.Done():
				return ctx.Err()
			case <-time.After(time.Millisecond):
				return nil
			}
		},
	})
	if err := m.Warm(context.Background()); err != nil {
		t.Fatal(err)
	}
	done := make(chan struct{})
	go func() { m.RunRevalidation(ctx); close(done) }()
	<-checks
	root.disabled.Store(true)
	deadline := time.Now().Add(5 * time.Second)
	for {
		_, err := m.PrivateKey(context.Background(), "default", kid)
		if errors.Is(err, keystore.ErrKEKDisabled) {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("releases not stopped: %v", err)
		}
		time.Sleep(time.Millisecond)
	}
	cancel()
	select {
	case <-done:
	case <-time.After(5 * time.Second):
		t.Fatal("RunRevalidation did not stop")
	}
}

func TestImportKey(t *testing.T) {
	ctx := context.Background()
	h := newHEnv(t)
	root := newMemKEK(t, "root")
	m := h.manager(root)
	if _, err := m.CreateKeySet(ctx, "default", testSettings); err != nil {
		t.Fatal(err)
	}
	before := mustKeys(t, m, "default")[0]
	kp, err := hpke.GenerateKeyPair(nil)
	if err != nil {
		t.Fatal(err)
	}
	k, err := m.ImportKey(ctx, "default", kp.Private)
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(k.PublicKey, kp.Public) || k.State != keystore.StateActive || k.Sealed.Format != keystore.SealFormatV2 || k.Version != 2 {
		t.Fatalf("imported key %+v", k)
	}
	keys := mustKeys(t, m, "default")
	if keys[0].KID != before.KID || keys[0].State != keystore.StateRetired {
		t.Fatalf("previous active key is %s", keys[0].State)
	}
	got, err := h.manager(root).PrivateKey(ctx, "default", k.KID)
	if err != nil || !bytes.Equal(got, kp.Private) {
		t.Fatalf("imported key not releasable: %v", err)
	}
	if _, err := m.ImportKey(ctx, "default", kp.Private); !errors.Is(err, keystore.ErrAlreadyExists) {
		t.Fatalf("duplicate import: %v", err)
	}
	for _, bad := range [][]byte{nil, make([]byte, 31), make([]byte, 33)} {
		if _, err := m.ImportKey(ctx, "default", bad); !errors.Is(err, keystore.ErrInvalidArgument) {
			t.Errorf("%d-byte key: %v", len(bad), err)
		}
	}
	if _, err := m.ImportKey(ctx, "nope", kp.Private); !errors.Is(err, keystore.ErrKeySetNotFound) {
		t.Errorf("missing set: %v", err)
	}
}

func TestImportWrapped(t *testing.T) {
	ctx := context.Background()
	h := newHEnv(t)
	root := newMemKEK(t, "root")
	m := h.manager(root)
	if _, err := m.CreateKeySet(ctx, "default", testSettings); err != nil {
		t.Fatal(err)
	}
	if _, err := m.ImportWrapped(ctx, "default", []byte("x")); !errors.Is(err, keystore.ErrInvalidArgument) {
		t.Fatalf("import before an import key exists: %v", err)
	}
	pub, err := m.ImportPublicKey(ctx)
	if err != nil {
		t.Fatal(err)
	}
	rsaPub, err := hpke.ParseRSAWrappingKey(pub)
	if err != nil || rsaPub.N.BitLen() != 3072 {
		t.Fatalf("import key: %v", err)
	}
	if _, err := x509.ParsePKIXPublicKey(pub); err != nil {
		t.Fatal(err)
	}
	// Stable across calls and Managers (stored, not regenerated).
	again, err := h.manager(root).ImportPublicKey(ctx)
	if err != nil || !bytes.Equal(again, pub) {
		t.Fatalf("import key changed: %v", err)
	}
	kp, err := hpke.GenerateKeyPair(nil)
	if err != nil {
		t.Fatal(err)
	}
	blob, err := hpke.WrapRSA(nil, pub, kp.Private)
	if err != nil {
		t.Fatal(err)
	}
	fresh := h.manager(root)
	k, err := fresh.ImportWrapped(ctx, "default", blob)
	if err != nil {
		t.Fatal(err)
	}
	got, err := fresh.PrivateKey(ctx, "default", k.KID)
	if err != nil || !bytes.Equal(got, kp.Private) || !bytes.Equal(k.PublicKey, kp.Public) {
		t.Fatalf("imported key not releasable: %v", err)
	}
	tampered := bytes.Clone(blob)
	tampered[len(tampered)-1] ^= 1
	if _, err := fresh.ImportWrapped(ctx, "default", tampered); !errors.Is(err, keystore.ErrInvalidArgument) {
		t.Fatalf("tampered blob: %v", err)
	}
	// The customer's off switch covers imports too.
	root.disabled.Store(true)
	blob2, _ := hpke.WrapRSA(nil, pub, make([]byte, 32))
	if _, err := fresh.ImportWrapped(ctx, "default", blob2); !errors.Is(err, keystore.ErrKEKDisabled) {
		t.Fatalf("import with KEK disabled: %v", err)
	}
}

// BenchmarkStartup opens a real bbolt store of 10,000 keys in 10 key sets
// and warms it (every releasable key unsealed into the cache): ten outside
// calls in all, one per key set.
func BenchmarkStartup(b *testing.B) {
	ctx := context.Background()
	dir := b.TempDir()
	path := filepath.Join(dir, "kms.db")
	root := newMemKEK(b, "root")
	st, err := boltstore.Open(path)
	if err != nil {
		b.Fatal(err)
	}
	m := keystore.NewManager(st, root, keystore.Options{})
	for s := range 10 {
		name := fmt.Sprintf("set-%d", s)
		if _, err := m.CreateKeySet(ctx, name, keystore.KeySetSettings{}); err != nil {
			b.Fatal(err)
		}
		ks, err := st.KeySet(ctx, name)
		if err != nil {
			b.Fatal(err)
		}
		var batch []*keystore.Key
		for v := uint64(2); v <= 1000; v++ {
			// Kids need not be unique here: Warm walks keys by version.
			k, err := m.NewKeyForTest(ctx, ks, fmt.Sprintf("%02x%014x", v%256, v), v)
			if err != nil {
				b.Fatal(err)
			}
			batch = append(batch, k)
		}
		if err := st.Commit(ctx, name, batch, nil); err != nil {
			b.Fatal(err)
		}
	}
	if err := st.Close(); err != nil {
		b.Fatal(err)
	}
	var calls int64
	for b.Loop() {
		root.unwraps.Store(0)
		st, err := boltstore.Open(path)
		if err != nil {
			b.Fatal(err)
		}
		m := keystore.NewManager(st, root, keystore.Options{})
		if err := m.Warm(ctx); err != nil {
			b.Fatal(err)
		}
		calls = root.unwraps.Load()
		if calls != 10 {
			b.Fatalf("%d outside calls to start 10 key sets, want 10", calls)
		}
		m.ClearCache()
		_ = st.Close()
	}
	b.ReportMetric(float64(calls), "kek-calls/op")
}

// A provider that stops answering fails the check within a bound instead
// of freezing it with the set still "ok".
func TestHungKEKFailsTheCheck(t *testing.T) {
	ctx := context.Background()
	h, root, _, _ := offSwitchEnv(t)
	m := keystore.NewManager(h.store, root, keystore.Options{
		Now: h.clock.Now, Sleep: h.sleep, KEKCheckInterval: 200 * time.Millisecond, KEKCheckAttempts: 2,
	})
	root.hang.Store(true)
	start := time.Now()
	err := m.CheckKEKs(ctx)
	if !errors.Is(err, kek.ErrUnavailable) {
		t.Fatalf("check against a hung KEK: %v", err)
	}
	if took := time.Since(start); took > 5*time.Second {
		t.Fatalf("check took %v against a hung KEK", took)
	}
	if s := statusOf(t, m, "default"); s.State != keystore.KEKStateUnavailable {
		t.Fatalf("status %+v, want unavailable", s)
	}
}

// Invalidate (driven by a store watch on a replicated store) drops what
// this process caches: afterwards the key set's intermediate is unwrapped
// again, once, and other sets keep their cache.
func TestInvalidateDropsCaches(t *testing.T) {
	ctx := context.Background()
	h := newHEnv(t)
	root := newMemKEK(t, "root")
	m := h.manager(root)
	for _, name := range []string{"a", "b"} {
		if _, err := m.CreateKeySet(ctx, name, testSettings); err != nil {
			t.Fatal(err)
		}
	}
	if err := m.Warm(ctx); err != nil {
		t.Fatal(err)
	}
	openAll(t, m)
	root.unwraps.Store(0)
	openAll(t, m)
	if n := root.unwraps.Load(); n != 0 {
		t.Fatalf("%d outside calls with everything cached", n)
	}
	m.Invalidate("a", "")
	openAll(t, m)
	if n := root.unwraps.Load(); n != 1 {
		t.Fatalf("%d outside calls after invalidating one key set, want 1", n)
	}
	// A single kid: its private key is unsealed again from the cached
	// intermediate, at no outside cost.
	keys, err := m.ListKeys(ctx, "b")
	if err != nil {
		t.Fatal(err)
	}
	m.Invalidate("b", keys[0].KID)
	openAll(t, m)
	if n := root.unwraps.Load(); n != 1 {
		t.Fatalf("%d outside calls after invalidating one key, want still 1", n)
	}
}
