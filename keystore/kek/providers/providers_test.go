package providers_test

import (
	"bytes"
	"cmp"
	"context"
	"crypto/ecdh"
	"crypto/rand"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/attested-kms/attested-kms/keystore"
	"github.com/attested-kms/attested-kms/keystore/boltstore"
	"github.com/attested-kms/attested-kms/keystore/kek"
	"github.com/attested-kms/attested-kms/keystore/kek/awskms/awskmstest"
	"github.com/attested-kms/attested-kms/keystore/kek/azurekv/azurekvtest"
	"github.com/attested-kms/attested-kms/keystore/kek/gcpkms"
	"github.com/attested-kms/attested-kms/keystore/kek/gcpkms/gcpkmstest"
	"github.com/attested-kms/attested-kms/keystore/kek/hcvault"
	"github.com/attested-kms/attested-kms/keystore/kek/hcvault/hcvaulttest"
	"github.com/attested-kms/attested-kms/keystore/kek/kektest"
	"github.com/attested-kms/attested-kms/keystore/kek/pkcs11/pkcs11test"
	"github.com/attested-kms/attested-kms/keystore/kek/providers"
)

// fixture is one provider's loopback service with a key on it: what a
// customer configures (URI and options) and the controls the customer and
// the network have over it.
type fixture struct {
	uri   string
	opts  providers.Options
	owner kektest.Owner
	// net is nil where calls do not leave the process (PKCS#11).
	net kektest.Network
	// unwraps counts the unwrap calls that reached the service; nil where
	// the fake does not count (PKCS#11: the counting decorator still does).
	unwraps func() int
}

type providerCase struct {
	name  string
	setup func(t *testing.T) fixture
}

// noEnv keeps VAULT_TOKEN and friends of the machine out of the tests.
func noEnv(string) string { return "" }

// cases builds every provider's fake. Retries and timeouts are bounded so
// outage checks cost milliseconds, not the production defaults' seconds.
var cases = []providerCase{
	{"pkcs11", func(t *testing.T) fixture {
		tk := pkcs11test.NewToken(t)
		k := tk.NewKEK(t, "kms-kek")
		return fixture{uri: k.URI(), owner: k}
	}},
	{"aws-kms", func(t *testing.T) fixture {
		s := awskmstest.NewServer(t)
		k := s.CreateKey(t)
		o := s.Options()
		o.MaxAttempts = 2
		return fixture{
			uri: k.URI(), opts: providers.Options{AWS: o}, owner: k, net: s,
			unwraps: func() int { return s.Calls("Decrypt") },
		}
	}},
	{"gcp-kms", func(t *testing.T) fixture {
		s := gcpkmstest.Start(t)
		k := s.CreateKey(t, "kms-kek")
		// Calls counts Encrypt and Decrypt together; the counts below are
		// taken where the KMS only decrypts.
		return fixture{
			uri: k.URI(), owner: k, net: s, unwraps: s.Calls,
			opts: providers.Options{GCP: gcpkms.Options{
				ClientOptions: s.ClientOptions(), Timeout: 10 * time.Second,
				AttemptTimeout: 3 * time.Second, MaxAttempts: 2,
			}},
		}
	}},
	{"azure-kv", func(t *testing.T) fixture {
		s := azurekvtest.NewServer(t)
		k := s.CreateKey(t, "kms.vault.azure.net", "kms-kek", azurekvtest.KeyTypeRSA)
		return fixture{
			uri: k.URI(), opts: providers.Options{Azure: s.Options()}, owner: k, net: s,
			unwraps: func() int { return s.Calls("unwrapkey") },
		}
	}},
	{"azure-mhsm", func(t *testing.T) fixture {
		s := azurekvtest.NewServer(t)
		k := s.CreateKey(t, "kms.managedhsm.azure.net", "kms-kek", azurekvtest.KeyTypeOctHSM)
		return fixture{
			uri: k.URI(), opts: providers.Options{Azure: s.Options()}, owner: k, net: s,
			unwraps: func() int { return s.Calls("unwrapkey") },
		}
	}},
	{"hcvault", func(t *testing.T) fixture {
		s := hcvaulttest.New(t)
		k := s.CreateKey("transit", "kms-kek")
		return fixture{
			uri: k.URI(), owner: k, net: s,
			unwraps: func() int { return s.Calls(k.DecryptPath()) },
			opts: providers.Options{Vault: hcvault.Options{
				CACertPEM: s.CACertPEM(), Token: s.IssueToken(k.KMSPolicy()),
				MinRetryWait: time.Millisecond, MaxRetryWait: 5 * time.Millisecond,
				Timeout: 10 * time.Second, Getenv: noEnv,
			}},
		}
	}},
}

// open opens uri through providers.Open and closes the provider (if it
// holds a client or a PKCS#11 session) when the test ends, before the
// fake it talks to goes away.
func open(t *testing.T, uri string, o providers.Options) kek.Provider {
	t.Helper()
	p, err := providers.Open(context.Background(), uri, o)
	if err != nil {
		t.Fatalf("providers.Open(%q): %v", uri, err)
	}
	closeAtEnd(t, p)
	return p
}

func closeAtEnd(t *testing.T, p kek.Provider) {
	if c, ok := p.(io.Closer); ok {
		t.Cleanup(func() { _ = c.Close() })
	}
}

// opener is providers.Opener(o) whose providers are closed at the end of
// the test.
func opener(t *testing.T, o providers.Options) func(context.Context, string) (kek.Provider, error) {
	open := providers.Opener(o)
	return func(ctx context.Context, uri string) (kek.Provider, error) {
		p, err := open(ctx, uri)
		if err == nil {
			closeAtEnd(t, p)
		}
		return p, err
	}
}

// counting counts the calls a Manager makes to its KEK: the outside calls
// whatever the provider (the fakes' own counters see retries too).
type counting struct {
	kek.Provider
	wraps, unwraps atomic.Int64
}

func (c *counting) Wrap(ctx context.Context, dek, aad []byte) (kek.Wrapped, error) {
	c.wraps.Add(1)
	return c.Provider.Wrap(ctx, dek, aad)
}

func (c *counting) Unwrap(ctx context.Context, w kek.Wrapped, aad []byte) ([]byte, error) {
	c.unwraps.Add(1)
	return c.Provider.Unwrap(ctx, w, aad)
}

// injectedOutage is a kektest.Network for providers whose calls do not
// leave the process: the providers it wraps fail with kek.ErrUnavailable
// while the outage is on.
type injectedOutage struct{ down atomic.Bool }

func (n *injectedOutage) Outage(_ testing.TB, on bool) { n.down.Store(on) }
func (n *injectedOutage) Throttle(testing.TB, int)     {}

func (n *injectedOutage) wrap(open func(context.Context, string) (kek.Provider, error)) func(context.Context, string) (kek.Provider, error) {
	return func(ctx context.Context, uri string) (kek.Provider, error) {
		p, err := open(ctx, uri)
		if err != nil {
			return nil, err
		}
		return &outageGated{Provider: p, down: &n.down}, nil
	}
}

type outageGated struct {
	kek.Provider
	down *atomic.Bool
}

var errInjectedOutage = fmt.Errorf("injected outage: %w", kek.ErrUnavailable)

func (g *outageGated) Wrap(ctx context.Context, dek, aad []byte) (kek.Wrapped, error) {
	if g.down.Load() {
		return kek.Wrapped{}, errInjectedOutage
	}
	return g.Provider.Wrap(ctx, dek, aad)
}

func (g *outageGated) Unwrap(ctx context.Context, w kek.Wrapped, aad []byte) ([]byte, error) {
	if g.down.Load() {
		return nil, errInjectedOutage
	}
	return g.Provider.Unwrap(ctx, w, aad)
}

type fakeClock struct {
	mu sync.Mutex
	t  time.Time
}

func (c *fakeClock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.t
}

func (c *fakeClock) advance(d time.Duration) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.t = c.t.Add(d)
}

// env is a real bbolt store and the fake clock every Manager on it shares.
type env struct {
	store *boltstore.Store
	clock *fakeClock
}

const checkInterval = 5 * time.Minute

var settings = keystore.KeySetSettings{
	RotationPeriod: 24 * time.Hour,
	KeyLifetime:    24 * time.Hour,
	PendingLead:    2 * time.Hour,
	Retention:      48 * time.Hour,
}

func newEnv(t *testing.T) *env {
	t.Helper()
	st, err := boltstore.Open(filepath.Join(t.TempDir(), "kms.db"))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = st.Close() })
	return &env{store: st, clock: &fakeClock{t: time.Date(2026, 3, 1, 12, 0, 0, 0, time.UTC)}}
}

// sleep advances the fake clock instead of waiting (check retries'
// backoff).
func (e *env) sleep(ctx context.Context, d time.Duration) error {
	e.clock.advance(d)
	return ctx.Err()
}

func (e *env) manager(root kek.Provider, openKEK func(context.Context, string) (kek.Provider, error)) *keystore.Manager {
	return keystore.NewManager(e.store, root, keystore.Options{
		Now: e.clock.Now, Sleep: e.sleep, OpenKEK: openKEK,
		KEKCheckInterval: checkInterval, KEKCheckAttempts: 2,
	})
}

// populate creates the named key sets with n keys each.
func populate(t *testing.T, m *keystore.Manager, n int, sets ...string) {
	t.Helper()
	ctx := context.Background()
	for _, s := range sets {
		if _, err := m.CreateKeySet(ctx, s, settings); err != nil {
			t.Fatalf("create key set %s: %v", s, err)
		}
		for range n - 1 {
			if _, err := m.Rotate(ctx, s); err != nil {
				t.Fatalf("rotate %s: %v", s, err)
			}
		}
	}
}

// openAll releases every sealed key of every set through m, checks each
// against its public key, and returns how many it released.
func openAll(t *testing.T, m *keystore.Manager) int {
	t.Helper()
	ctx := context.Background()
	sets, err := m.ListKeySets(ctx)
	if err != nil {
		t.Fatal(err)
	}
	n := 0
	for _, ks := range sets {
		keys, err := m.ListKeys(ctx, ks.Name)
		if err != nil {
			t.Fatal(err)
		}
		for _, k := range keys {
			if k.Sealed == nil {
				continue
			}
			priv, err := m.PrivateKey(ctx, ks.Name, k.KID)
			if err != nil {
				t.Fatalf("release %s/%s v%d: %v", ks.Name, k.KID, k.Version, err)
			}
			sk, err := ecdh.X25519().NewPrivateKey(priv)
			if err != nil || !bytes.Equal(sk.PublicKey().Bytes(), k.PublicKey) {
				t.Fatalf("%s/%s: released key does not match its public key (%v)", ks.Name, k.KID, err)
			}
			n++
		}
	}
	return n
}

func firstKID(t *testing.T, m *keystore.Manager, set string) string {
	t.Helper()
	keys, err := m.ListKeys(context.Background(), set)
	if err != nil || len(keys) == 0 {
		t.Fatalf("keys of %s: %v", set, err)
	}
	return keys[0].KID
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
	t.Fatalf("no KEK status for key set %s", set)
	return keystore.KEKStatus{}
}

func TestOpenRoundTrip(t *testing.T) {
	ctx := context.Background()
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			f := tc.setup(t)
			p := open(t, f.uri, f.opts)
			dek := make([]byte, 32)
			_, _ = rand.Read(dek)
			aad := []byte("keyset=default generation=1")
			w, err := p.Wrap(ctx, dek, aad)
			if err != nil {
				t.Fatal(err)
			}
			if w.KEKURI != p.URI() || w.Algorithm == "" {
				t.Fatalf("wrapped %+v: want KEKURI %q and an algorithm", w, p.URI())
			}
			// The URI a record carries reopens the same key: that is how a
			// fresh Manager (OpenKEK = Opener) finds a set's KEK.
			again, err := opener(t, f.opts)(ctx, w.KEKURI)
			if err != nil {
				t.Fatalf("reopen by the recorded URI %q: %v", w.KEKURI, err)
			}
			if again.URI() != p.URI() {
				t.Fatalf("reopened URI %q, want %q", again.URI(), p.URI())
			}
			got, err := again.Unwrap(ctx, w, aad)
			if err != nil || !bytes.Equal(got, dek) {
				t.Fatalf("unwrap through a second handle: %v", err)
			}
			if _, err := p.Unwrap(ctx, w, []byte("keyset=other generation=1")); !errors.Is(err, kek.ErrAuthentication) {
				t.Fatalf("unwrap with another AAD: %v, want ErrAuthentication", err)
			}
		})
	}
	t.Run("local", func(t *testing.T) {
		path := filepath.Join(t.TempDir(), "kek.key")
		if err := kek.CreateLocal(path); err != nil {
			t.Fatal(err)
		}
		for _, uri := range []string{"local://" + path, path} {
			p := open(t, uri, providers.Options{})
			if p.URI() != "local://"+path {
				t.Fatalf("Open(%q).URI() = %q", uri, p.URI())
			}
			w, err := p.Wrap(ctx, []byte("0123456789abcdef0123456789abcdef"), nil)
			if err != nil {
				t.Fatal(err)
			}
			if _, err := p.Unwrap(ctx, w, nil); err != nil {
				t.Fatal(err)
			}
		}
	})
}

func TestSchemesAllOpen(t *testing.T) {
	// Every scheme Schemes advertises is dispatched to a provider: a
	// malformed URI of that scheme is rejected by the provider's parser,
	// never as an unknown scheme.
	for _, s := range providers.Schemes() {
		uri := s + "://"
		if s == "pkcs11" {
			uri = "pkcs11:"
		}
		_, err := providers.Open(context.Background(), uri, providers.Options{})
		if err == nil {
			t.Errorf("Open(%q) succeeded", uri)
			continue
		}
		if strings.Contains(err.Error(), "unknown provider scheme") {
			t.Errorf("Open(%q): advertised scheme not dispatched: %v", uri, err)
		}
	}
}

func TestOpenRejects(t *testing.T) {
	ctx := context.Background()
	for _, tc := range []struct {
		uri         string
		unsupported bool   // must match kek.ErrUnsupported
		mention     string // the error must say this (what is wrong)
	}{
		{"ftp://example.com/kek", true, `"ftp"`},
		{"mem://root", true, `"mem"`},
		{"AWS-KMS://arn:aws:kms:eu-west-1:111122223333:key/x", true, `"AWS-KMS"`},
		{"s3://bucket/key", true, "supported: local, pkcs11, aws-kms"},
		{"://nothing", true, "unknown provider scheme"},
		{"", false, "empty"},
		{"local://host/etc/kek", false, "host"},
		{"local://", false, "path"},
		{"aws-kms://", false, "aws"},
		{"aws-kms://not-an-arn", false, "aws"},
		{"gcp-kms://", false, "gcp"},
		{"gcp-kms://projects/p/locations/l/keyRings/r", false, "gcp"},
		{"azure-kv://", false, "azure"},
		{"azure-kv://kms.example.com/keys/k", false, "azure"},
		{"azure-mhsm://kms.vault.azure.net/keys/k", false, "azure"},
		{"hcvault://", false, "hcvault"},
		{"hcvault://vault.example.com/transit", false, "hcvault"},
		{"pkcs11:", false, "pkcs11"},
		{"pkcs11:token=kms", false, "pkcs11"},
	} {
		t.Run(cmp.Or(tc.uri, "empty"), func(t *testing.T) {
			_, err := providers.Open(ctx, tc.uri, providers.Options{})
			if err == nil {
				t.Fatalf("Open(%q) succeeded, want an error", tc.uri)
			}
			if tc.unsupported && !errors.Is(err, kek.ErrUnsupported) {
				t.Errorf("Open(%q): %v, want kek.ErrUnsupported", tc.uri, err)
			}
			if !strings.Contains(strings.ToLower(err.Error()), strings.ToLower(tc.mention)) {
				t.Errorf("Open(%q): %v: the error should mention %q", tc.uri, err, tc.mention)
			}
			if errors.Is(err, kek.ErrKeyDisabled) || errors.Is(err, kek.ErrAuthentication) {
				t.Errorf("Open(%q): a bad URI classed as off switch or tampering: %v", tc.uri, err)
			}
		})
	}
}

// TestOpenErrorHasNoProvider: a failed Open returns a nil interface, not
// an interface holding a typed nil pointer, so "if p != nil" and
// "defer p.Close()" patterns stay safe.
func TestOpenErrorHasNoProvider(t *testing.T) {
	missing := filepath.Join(t.TempDir(), "missing.key")
	for _, uri := range []string{
		"ftp://x", "aws-kms://not-an-arn", "gcp-kms://projects/p", "azure-kv://kms.example.com/keys/k",
		"hcvault://", "pkcs11:token=kms", "local://" + missing, missing,
	} {
		p, err := providers.Open(context.Background(), uri, providers.Options{})
		if err == nil {
			t.Errorf("Open(%q) succeeded", uri)
		} else if p != nil {
			t.Errorf("Open(%q) failed (%v) but returned a non-nil kek.Provider (%T)", uri, err, p)
		}
	}
}

// FuzzOpenScheme checks the dispatch: a URI whose scheme is not one Open
// knows fails with kek.ErrUnsupported and no provider, whatever follows.
// Known schemes are left out: their parsers have their own fuzz targets,
// and a valid-looking one would reach a credential chain or load a
// PKCS#11 module.
func FuzzOpenScheme(f *testing.F) {
	for _, s := range []string{"ftp://x", "://", "mem://root", "AWS-KMS://arn", "gcp-kms:/x://y", "s3://b/k", "a://b://c", "local:x://y"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, uri string) {
		s, _, ok := strings.Cut(uri, "://")
		if !ok || strings.HasPrefix(uri, "pkcs11:") || slices.Contains(providers.Schemes(), s) {
			t.Skip()
		}
		p, err := providers.Open(context.Background(), uri, providers.Options{})
		if !errors.Is(err, kek.ErrUnsupported) || p != nil {
			t.Fatalf("Open(%q) = %v, %v; want kek.ErrUnsupported", uri, p, err)
		}
	})
}

// TestHierarchy: a Manager whose root KEK is the provider creates two key
// sets of several keys; a fresh Manager on the same store starts with one
// outside call per key set and releases every key.
func TestHierarchy(t *testing.T) {
	ctx := context.Background()
	const sets, keysPerSet = 2, 4
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			f := tc.setup(t)
			e := newEnv(t)
			root := &counting{Provider: open(t, f.uri, f.opts)}
			populate(t, e.manager(root, nil), keysPerSet, "alpha", "beta")
			// One wrap per set (its intermediate); keys are sealed locally.
			if n := root.wraps.Load(); n != sets {
				t.Fatalf("%d wraps to create %d sets of %d keys, want %d", n, sets, keysPerSet, sets)
			}

			fresh := &counting{Provider: open(t, f.uri, f.opts)}
			before := 0
			if f.unwraps != nil {
				before = f.unwraps()
			}
			m := e.manager(fresh, nil)
			if err := m.Warm(ctx); err != nil {
				t.Fatal(err)
			}
			if n := fresh.unwraps.Load(); n != sets {
				t.Fatalf("Warm made %d unwrap calls for %d key sets, want one per set", n, sets)
			}
			if f.unwraps != nil {
				if n := f.unwraps() - before; n != sets {
					t.Fatalf("the service saw %d unwraps while warming %d key sets, want %d", n, sets, sets)
				}
			}
			if n := openAll(t, m); n != sets*keysPerSet {
				t.Fatalf("released %d keys, want %d", n, sets*keysPerSet)
			}
			if n := fresh.unwraps.Load() + fresh.wraps.Load(); n != sets {
				t.Fatalf("releases after Warm made outside calls (%d in all)", n)
			}
			for _, set := range []string{"alpha", "beta"} {
				s := statusOf(t, m, set)
				if s.State != keystore.KEKStateOK || s.KEKURI != fresh.URI() || s.Generation != 1 || s.Algorithm == "" {
					t.Errorf("KEK status of %s: %+v", set, s)
				}
			}
		})
	}
}

// TestOffSwitch: the customer disables the key at the provider; the next
// check stops every release; re-enabling and the next check restore them.
// Where the network can fail, an outage shorter than the check interval
// does not stop releases, a longer one does, and recovery restores them.
func TestOffSwitch(t *testing.T) {
	ctx := context.Background()
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			f := tc.setup(t)
			e := newEnv(t)
			root := open(t, f.uri, f.opts)
			populate(t, e.manager(root, nil), 2, "default", "other")
			m := e.manager(root, nil) // start as a server does
			if err := m.Warm(ctx); err != nil {
				t.Fatal(err)
			}
			kid := firstKID(t, m, "default")
			release := func() error {
				_, err := m.PrivateKey(ctx, "default", kid)
				return err
			}
			if err := release(); err != nil {
				t.Fatal(err)
			}

			f.owner.Disable(t)
			e.clock.advance(checkInterval / 2)
			if err := m.CheckKEKs(ctx); !errors.Is(err, keystore.ErrKEKDisabled) {
				t.Fatalf("check after the owner disabled the key: %v, want ErrKEKDisabled", err)
			}
			for _, set := range []string{"default", "other"} {
				_, err := m.PrivateKey(ctx, set, firstKID(t, m, set))
				if !errors.Is(err, keystore.ErrKEKDisabled) || keystore.IsUnavailable(err) {
					t.Fatalf("release from %s after the off switch: %v, want ErrKEKDisabled", set, err)
				}
				if s := statusOf(t, m, set); s.State != keystore.KEKStateDisabled || s.KEKURI != root.URI() || s.Error == "" {
					t.Fatalf("KEK status of %s: %+v, want disabled", set, s)
				}
			}
			// A fresh start is refused too, not served from nowhere.
			if err := e.manager(root, nil).Warm(ctx); !errors.Is(err, keystore.ErrKEKDisabled) {
				t.Fatalf("Warm with the KEK disabled: %v", err)
			}

			f.owner.Enable(t)
			e.clock.advance(checkInterval / 2)
			if err := m.CheckKEKs(ctx); err != nil {
				t.Fatalf("check after re-enable: %v", err)
			}
			if n := openAll(t, m); n != 4 {
				t.Fatalf("%d keys released after re-enable, want 4", n)
			}
			if s := statusOf(t, m, "default"); s.State != keystore.KEKStateOK || s.Error != "" {
				t.Fatalf("KEK status after re-enable: %+v", s)
			}

			if f.net == nil {
				return
			}
			// An outage shorter than the interval: the check fails as
			// unavailable, releases go on from the cache.
			f.net.Outage(t, true)
			e.clock.advance(checkInterval / 2)
			if err := m.CheckKEKs(ctx); !errors.Is(err, keystore.ErrKEKUnavailable) || errors.Is(err, keystore.ErrKEKDisabled) {
				t.Fatalf("check during an outage: %v, want ErrKEKUnavailable", err)
			}
			if s := statusOf(t, m, "default"); s.State != keystore.KEKStateUnavailable || s.Error == "" {
				t.Fatalf("KEK status during an outage: %+v", s)
			}
			if err := release(); err != nil {
				t.Fatalf("release during an outage shorter than the interval: %v", err)
			}
			f.net.Outage(t, false)
			e.clock.advance(30 * time.Second)
			if err := m.CheckKEKs(ctx); err != nil {
				t.Fatalf("check after the outage: %v", err)
			}

			// An outage longer than the interval stops releases as
			// unavailable (retryable), not as the owner's off switch.
			f.net.Outage(t, true)
			for range 4 {
				e.clock.advance(90 * time.Second)
				_ = m.CheckKEKs(ctx)
			}
			err := release()
			if !errors.Is(err, keystore.ErrKEKUnavailable) || !keystore.IsUnavailable(err) || errors.Is(err, keystore.ErrKEKDisabled) {
				t.Fatalf("release after an outage longer than the interval: %v, want ErrKEKUnavailable", err)
			}
			f.net.Outage(t, false)
			if err := m.CheckKEKs(ctx); err != nil {
				t.Fatalf("check after recovery: %v", err)
			}
			if err := release(); err != nil {
				t.Fatalf("release after recovery: %v", err)
			}
		})
	}
}

// TestRewrapRootInterrupted moves four key sets from a local KEK to a
// cloud KEK; the cloud goes down after the first set. Every key stays
// readable, the rerun finishes the rest, the sets then depend on the
// cloud KEK alone, and its owner's off switch stops their releases.
func TestRewrapRootInterrupted(t *testing.T) {
	ctx := context.Background()
	names := []string{"s1", "s2", "s3", "s4"}
	const keysPerSet = 3
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			f := tc.setup(t)
			openKEK := opener(t, f.opts)
			if f.net == nil {
				// No network to cut (PKCS#11): the target KEK's handle
				// fails as an outage while the switch is on.
				in := &injectedOutage{}
				f.net, openKEK = in, in.wrap(openKEK)
			}
			e := newEnv(t)
			localPath := filepath.Join(t.TempDir(), "kek.key")
			if err := kek.CreateLocal(localPath); err != nil {
				t.Fatal(err)
			}
			local := open(t, "local://"+localPath, providers.Options{})
			m := e.manager(local, openKEK)
			populate(t, m, keysPerSet, names...)
			target := open(t, f.uri, f.opts).URI() // the URI records will carry

			under := func() map[string]string {
				t.Helper()
				out := map[string]string{}
				for _, n := range names {
					ks, err := e.store.KeySet(ctx, n)
					if err != nil {
						t.Fatal(err)
					}
					for _, in := range ks.Intermediates {
						if in.Wrapped.KEKURI != ks.KEKURI() {
							t.Fatalf("key set %s is under two KEKs", n)
						}
					}
					out[n] = ks.KEKURI()
				}
				return out
			}

			// The service goes down once the first set has moved.
			var done []string
			err := m.RewrapRoot(ctx, f.uri, func(s string) {
				if len(done) == 0 {
					f.net.Outage(t, true)
				}
				done = append(done, s)
			})
			if !errors.Is(err, kek.ErrUnavailable) || len(done) != 1 {
				t.Fatalf("interrupted rewrap: err = %v, moved %v; want ErrUnavailable after one set", err, done)
			}
			if m.RootKEKURI() != local.URI() {
				t.Fatalf("root switched to %s before the rewrap finished", m.RootKEKURI())
			}
			u := under()
			for _, n := range names {
				want := local.URI()
				if n == done[0] {
					want = target
				}
				if u[n] != want {
					t.Fatalf("after the interruption %s is under %s, want %s", n, u[n], want)
				}
			}
			f.net.Outage(t, false)
			// A fresh Manager, configured as before (local root, providers
			// by URI), reads every key of every set.
			if n := openAll(t, e.manager(open(t, "local://"+localPath, providers.Options{}), opener(t, f.opts))); n != len(names)*keysPerSet {
				t.Fatalf("%d keys readable mid-rotation, want %d", n, len(names)*keysPerSet)
			}

			// The rerun moves only the rest.
			var rest []string
			if err := m.RewrapRoot(ctx, f.uri, func(s string) { rest = append(rest, s) }); err != nil {
				t.Fatalf("resumed rewrap: %v", err)
			}
			if want := slices.DeleteFunc(slices.Clone(names), func(n string) bool { return n == done[0] }); !slices.Equal(rest, want) {
				t.Fatalf("resumed run moved %v, want %v", rest, want)
			}
			if m.RootKEKURI() != target {
				t.Fatalf("root is %s after the rewrap, want %s", m.RootKEKURI(), target)
			}
			for n, uri := range under() {
				if uri != target {
					t.Fatalf("%s still under %s", n, uri)
				}
			}
			for _, n := range names {
				if s := statusOf(t, m, n); s.KEKURI != target {
					t.Fatalf("KEK status of %s names %s, want %s", n, s.KEKURI, target)
				}
			}

			// The local KEK cannot be "disabled", but it can go: with its
			// file removed and no way to open other KEKs, a fresh Manager
			// rooted at the cloud KEK starts and releases everything.
			if err := os.Remove(localPath); err != nil {
				t.Fatal(err)
			}
			cloud := &counting{Provider: open(t, f.uri, f.opts)}
			fresh := e.manager(cloud, nil)
			if err := fresh.Warm(ctx); err != nil {
				t.Fatalf("warm under the new KEK alone: %v", err)
			}
			if n := cloud.unwraps.Load(); n != int64(len(names)) {
				t.Fatalf("warm made %d unwraps for %d sets", n, len(names))
			}
			if n := openAll(t, fresh); n != len(names)*keysPerSet {
				t.Fatalf("%d keys readable under the new KEK, want %d", n, len(names)*keysPerSet)
			}

			// The new KEK's owner has the off switch now.
			f.owner.Disable(t)
			e.clock.advance(checkInterval / 2)
			if err := fresh.CheckKEKs(ctx); !errors.Is(err, keystore.ErrKEKDisabled) {
				t.Fatalf("check after disabling the new KEK: %v", err)
			}
			for _, n := range names {
				if _, err := fresh.PrivateKey(ctx, n, firstKID(t, fresh, n)); !errors.Is(err, keystore.ErrKEKDisabled) {
					t.Fatalf("release from %s after the off switch: %v", n, err)
				}
				if s := statusOf(t, fresh, n); s.State != keystore.KEKStateDisabled || s.KEKURI != target {
					t.Fatalf("KEK status of %s: %+v", n, s)
				}
			}
		})
	}
}

// A known scheme without "//" is a typo, not a local file name: it must not
// come back as a retryable "file not found".
func TestSchemeWithoutSlashes(t *testing.T) {
	for _, uri := range []string{"aws-kms:arn:aws:kms:eu-west-1:111122223333:key/x", "gcp-kms:projects/p", "hcvault:vault/transit/keys/k"} {
		p, err := providers.Open(context.Background(), uri, providers.Options{})
		if p != nil || !errors.Is(err, kek.ErrUnsupported) || errors.Is(err, kek.ErrUnavailable) || !strings.Contains(err.Error(), "did you mean") {
			t.Errorf("%s: %v, %v; want ErrUnsupported suggesting the scheme", uri, p, err)
		}
	}
}
