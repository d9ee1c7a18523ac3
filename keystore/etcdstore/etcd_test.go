package etcdstore

import (
	"context"
	"errors"
	"fmt"
	"net/url"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"go.etcd.io/etcd/server/v3/embed"
	"go.uber.org/zap"

	"github.com/attested-kms/attested-kms/keystore"
)

// Test infrastructure: real etcd servers embedded in the test process,
// data in t.TempDir(), clients on 127.0.0.1 with kernel-chosen ports.

var t0 = time.Date(2026, 3, 1, 12, 0, 0, 0, time.UTC)

// etcdConfig is a fast single-node configuration: no fsync, small
// snapshot counts, short raft ticks (elections and lease expiry in well
// under a second instead of seconds).
func etcdConfig(t testing.TB, name string) *embed.Config {
	t.Helper()
	cfg := embed.NewConfig()
	cfg.Name = name
	cfg.Dir = filepath.Join(t.TempDir(), name)
	cfg.ZapLoggerBuilder = embed.NewZapLoggerBuilder(zap.NewNop())
	cfg.SnapshotCount = 64
	cfg.SnapshotCatchUpEntries = 64
	cfg.TickMs = 20
	cfg.ElectionMs = 200
	cfg.UnsafeNoFsync = true
	client := mustURL(t, "http://127.0.0.1:0")
	cfg.ListenClientUrls = []url.URL{client}
	cfg.AdvertiseClientUrls = []url.URL{client}
	peer := mustURL(t, "http://127.0.0.1:0")
	cfg.ListenPeerUrls = []url.URL{peer}
	cfg.AdvertisePeerUrls = []url.URL{peer}
	cfg.InitialCluster = cfg.InitialClusterFromName(name)
	return cfg
}

func mustURL(t testing.TB, s string) url.URL {
	t.Helper()
	u, err := url.Parse(s)
	if err != nil {
		t.Fatal(err)
	}
	return *u
}

// member is a running embedded etcd server.
type member struct {
	*embed.Etcd
	once sync.Once
}

// stop shuts the member down; later calls do nothing.
func (m *member) stop() { m.once.Do(m.Close) }

// start starts one member and registers its shutdown. It does not wait
// for the member to be ready (members of a cluster only become ready
// together); see ready.
func start(t testing.TB, cfg *embed.Config) *member {
	t.Helper()
	e, err := embed.StartEtcd(cfg)
	if err != nil {
		t.Fatalf("start etcd %s: %v", cfg.Name, err)
	}
	m := &member{Etcd: e}
	t.Cleanup(m.stop)
	return m
}

func ready(t testing.TB, e *member) {
	t.Helper()
	select {
	case <-e.Server.ReadyNotify():
	case err := <-e.Err():
		t.Fatalf("etcd: %v", err)
	}
}

// endpoint is the client URL a member actually listens on.
func endpoint(e *member) string {
	scheme := "http"
	if strings.HasPrefix(e.Config().ListenClientUrls[0].Scheme, "https") {
		scheme = "https"
	}
	return scheme + "://" + e.Clients[0].Addr().String()
}

// startEtcd starts a ready single-member cluster.
func startEtcd(t testing.TB) *member {
	t.Helper()
	e := start(t, etcdConfig(t, "solo"))
	ready(t, e)
	return e
}

// open opens a store on endpoints and closes it at cleanup.
func open(t testing.TB, prefix string, endpoints ...string) *Store {
	t.Helper()
	s, err := Open(t.Context(), Config{Endpoints: endpoints, Prefix: prefix, DialTimeout: 5 * time.Second})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = s.Close() })
	return s
}

// within bounds a wait that should end promptly, so a broken test fails
// with a message instead of hanging until go test's timeout.
const within = 30 * time.Second

// recv returns the next change, failing the test if none arrives.
func recv(t *testing.T, ch <-chan Change) Change {
	t.Helper()
	select {
	case c, ok := <-ch:
		if !ok {
			t.Fatal("watch channel closed")
		}
		return c
	case <-time.After(within):
		t.Fatal("no change arrived")
	}
	panic("unreachable")
}

// retryUnavailable repeats op while the store reports itself unavailable
// (an election in progress after a member stopped), up to within.
func retryUnavailable(t *testing.T, what string, op func(ctx context.Context) error) {
	t.Helper()
	ctx, cancel := context.WithTimeout(t.Context(), within)
	defer cancel()
	for {
		octx, ocancel := context.WithTimeout(ctx, 2*time.Second)
		err := op(octx)
		ocancel()
		if err == nil {
			return
		}
		if !errors.Is(err, keystore.ErrStoreUnavailable) || ctx.Err() != nil {
			t.Fatalf("%s: %v", what, err)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

func testKey(kid string, version uint64) *keystore.Key {
	return &keystore.Key{
		KeySet: "default", KID: kid, Version: version, Suite: keystore.SuiteX25519,
		PublicKey: make([]byte, 32), State: keystore.StateActive,
		Sealed:  &keystore.SealedKey{Format: keystore.SealFormatV1, KEKURI: "local:///k", WrappedDEK: []byte{1, 2}, Nonce: []byte{3}, Ciphertext: []byte{4, 5}},
		Created: t0, Activates: t0, Expires: t0.Add(time.Hour), DestroyAfter: t0.Add(2 * time.Hour),
	}
}

func testSet() *keystore.KeySet {
	return &keystore.KeySet{Name: "default", Settings: keystore.DefaultKeySetSettings(), Created: t0,
		Policy: []byte("a: b\n"), PolicyVersion: 1, PolicyUpdated: t0}
}

// kidN is a valid kid distinct for each n.
func kidN(n int) string { return fmt.Sprintf("%016x", 0xa000000000000000+uint64(n)) }
