package server_test

import (
	"bufio"
	"bytes"
	"context"
	"crypto/tls"
	"crypto/x509"
	"fmt"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"go.etcd.io/etcd/server/v3/embed"
	"go.uber.org/zap"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/attested-kms/attested-kms/hpke"
	"github.com/attested-kms/attested-kms/internal/oidcissuer"
	"github.com/attested-kms/attested-kms/keystore/kek"
	kmsv1 "github.com/attested-kms/attested-kms/proto/kms/v1"
)

// Replica test schedule: short enough that two periods fit in a few
// seconds, and valid for keystore.KeySetSettings.Validate (lead < period,
// lifetime >= period).
const (
	replicaPeriod    = 3 * time.Second
	replicaLeaderTTL = 2 * time.Second
	// replicaWait bounds every wait, so a broken replica fails the test
	// with a message instead of hanging until go test's timeout.
	replicaWait = 15 * time.Second
)

// etcdMember is an embedded etcd server of the test cluster.
type etcdMember struct {
	*embed.Etcd
	once sync.Once
}

func (m *etcdMember) stop() { m.once.Do(m.Close) }

// startEtcdCluster starts a ready n-member etcd cluster in this process:
// no fsync and short raft ticks (elections in well under a second). Peers
// talk over unix sockets named relative to the working directory, which
// is changed to a temporary one, so no TCP port has to be guessed free;
// clients listen on 127.0.0.1:0.
func startEtcdCluster(t *testing.T, n int) []*etcdMember {
	t.Helper()
	t.Chdir(t.TempDir())
	mustURL := func(s string) url.URL {
		u, err := url.Parse(s)
		if err != nil {
			t.Fatal(err)
		}
		return *u
	}
	cfgs := make([]*embed.Config, n)
	var initial []string
	for i := range cfgs {
		cfg := embed.NewConfig()
		cfg.Name = fmt.Sprintf("m%d", i)
		cfg.Dir = filepath.Join(t.TempDir(), cfg.Name)
		cfg.ZapLoggerBuilder = embed.NewZapLoggerBuilder(zap.NewNop())
		cfg.SnapshotCount = 64
		cfg.SnapshotCatchUpEntries = 64
		cfg.TickMs = 20
		cfg.ElectionMs = 200
		cfg.UnsafeNoFsync = true
		client := mustURL("http://127.0.0.1:0")
		cfg.ListenClientUrls = []url.URL{client}
		cfg.AdvertiseClientUrls = []url.URL{client}
		peer := mustURL(fmt.Sprintf("unix://localhost:%d", i+1))
		cfg.ListenPeerUrls = []url.URL{peer}
		cfg.AdvertisePeerUrls = []url.URL{peer}
		initial = append(initial, cfg.Name+"="+peer.String())
		cfgs[i] = cfg
	}
	members := make([]*etcdMember, n)
	for i, cfg := range cfgs {
		cfg.InitialCluster = strings.Join(initial, ",")
		e, err := embed.StartEtcd(cfg)
		if err != nil {
			t.Fatalf("start etcd %s: %v", cfg.Name, err)
		}
		members[i] = &etcdMember{Etcd: e}
		t.Cleanup(members[i].stop)
	}
	for _, m := range members {
		select {
		case <-m.Server.ReadyNotify():
		case err := <-m.Err():
			t.Fatalf("etcd: %v", err)
		case <-time.After(replicaWait):
			t.Fatal("etcd cluster not ready")
		}
	}
	return members
}

// replica is one `kms serve` on the shared etcd cluster.
type replica struct {
	*env
	name   string
	cancel context.CancelFunc
}

// replicaSet starts replicas that share everything a deployment shares
// (etcd cluster, local KEK file, sealed nonce secret file, token issuer,
// key set settings) and nothing else (own directory, audit file, admin
// socket, TLS certificate, listeners).
type replicaSet struct {
	t         *testing.T
	endpoints []string
	kekURI    string
	nonceFile string
	issuer    *oidcissuer.Issuer
	n         int
}

func (rs *replicaSet) start() *replica {
	t := rs.t
	t.Helper()
	rs.n++
	name := fmt.Sprintf("r%d", rs.n)
	ctx, cancel := context.WithCancel(context.Background())
	t.Cleanup(cancel)
	eps := make([]string, len(rs.endpoints))
	for i, ep := range rs.endpoints {
		eps[i] = fmt.Sprintf("%q", ep)
	}
	store := fmt.Sprintf(`{etcd: {endpoints: [%s], prefix: "/kms-replicas/", leader_ttl: %s, replica_id: %s}}`,
		strings.Join(eps, ", "), replicaLeaderTTL, name)
	e := newEnvWith(t, envOptions{
		parent: ctx, store: store, kekURI: rs.kekURI, nonceFile: rs.nonceFile, issuer: rs.issuer,
		extraYAML: "rotation: {tick_interval: 100ms}\n",
		keySetYAML: fmt.Sprintf("    rotation_period: %s\n    pending_lead: 1s\n    key_lifetime: %s\n    retention: %s\n",
			replicaPeriod, replicaPeriod, replicaPeriod),
	})
	r := &replica{env: e, name: name, cancel: cancel}
	t.Cleanup(r.stop)
	return r
}

// stop ends a replica as `kms serve` does on SIGTERM: its context ends
// (background jobs stop), then the server shuts down.
func (r *replica) stop() {
	r.cancel()
	r.srv.Stop()
}

// isLeader reads the kms_leader gauge from the replica's /metrics.
func (r *replica) isLeader(t *testing.T) bool {
	t.Helper()
	pemBytes, err := os.ReadFile(r.cfg.TLS.Cert)
	if err != nil {
		t.Fatal(err)
	}
	pool := x509.NewCertPool()
	pool.AppendCertsFromPEM(pemBytes)
	c := &http.Client{Timeout: 5 * time.Second, Transport: &http.Transport{TLSClientConfig: &tls.Config{RootCAs: pool}}}
	defer c.CloseIdleConnections()
	resp, err := c.Get("https://" + r.srv.HTTPAddr + "/metrics")
	if err != nil {
		t.Fatalf("%s metrics: %v", r.name, err)
	}
	defer resp.Body.Close()
	sc := bufio.NewScanner(resp.Body)
	sc.Buffer(nil, 1<<20)
	for sc.Scan() {
		if v, ok := strings.CutPrefix(sc.Text(), "kms_leader "); ok {
			return v == "1"
		}
	}
	t.Fatalf("%s: no kms_leader gauge in /metrics (%v)", r.name, sc.Err())
	return false
}

// count is how many log lines of the replica have message msg.
func (r *replica) count(msg string) int {
	return strings.Count(r.logText(), fmt.Sprintf(`"msg":%q`, msg))
}

// keys lists the default key set through the replica's admin API.
func (r *replica) keys(t *testing.T) []*kmsv1.KeyInfo {
	t.Helper()
	resp, err := r.admin.ListKeys(t.Context(), &kmsv1.ListKeysRequest{Keyset: "default"})
	if err != nil {
		t.Fatalf("%s ListKeys: %v", r.name, err)
	}
	return resp.GetKeys()
}

// releaseKid releases kid on r with a nonce issued by issuer (any replica:
// they share the nonce secret) and returns the unwrapped private key.
func (r *replica) releaseKid(t *testing.T, kid string, issuer *replica) []byte {
	t.Helper()
	ch, err := issuer.rel.GetChallenge(withToken(t.Context(), issuer.token()), &kmsv1.GetChallengeRequest{})
	if err != nil {
		t.Fatalf("%s GetChallenge: %v", issuer.name, err)
	}
	resp, a, err := r.release(attempt{kid: kid, nonce: ch.GetNonce()})
	if err != nil {
		t.Fatalf("%s release %s (nonce from %s): %v", r.name, kid, issuer.name, err)
	}
	priv, err := hpke.UnwrapX25519(a.wrapPriv, resp.GetKid(), a.nonce, resp.GetWrappedKey())
	if err != nil {
		t.Fatalf("%s unwrap: %v", r.name, err)
	}
	return priv
}

// eventually polls cond until it holds or replicaWait passes.
func replicaEventually(t *testing.T, what string, cond func() bool) time.Duration {
	t.Helper()
	start := time.Now()
	for !cond() {
		if time.Since(start) > replicaWait {
			t.Fatalf("%s: not within %s", what, replicaWait)
		}
		time.Sleep(50 * time.Millisecond)
	}
	return time.Since(start)
}

// leaders are the replicas whose kms_leader gauge is 1.
func leadersOf(t *testing.T, rs ...*replica) []*replica {
	var out []*replica
	for _, r := range rs {
		if r.isLeader(t) {
			out = append(out, r)
		}
	}
	return out
}

// checkKeySequence fails unless versions are 1..n without gap or
// duplicate, kids are distinct, and no two keys share an activation time:
// a rotation done twice for one period would create two keys scheduled at
// the same instant. (Times need not increase with versions: a manual
// rotation activates at once, before a pending key the tick made earlier.)
func checkKeySequence(t *testing.T, keys []*kmsv1.KeyInfo) {
	t.Helper()
	kids := map[string]bool{}
	activations := map[time.Time]uint64{}
	for i, k := range keys {
		if k.GetVersion() != uint64(i+1) {
			t.Fatalf("versions not gapless at %d: %v", i, keyVersions(keys))
		}
		if kids[k.GetKid()] {
			t.Fatalf("kid %s appears twice", k.GetKid())
		}
		kids[k.GetKid()] = true
		at := k.GetActivatesAt().AsTime()
		if v, ok := activations[at]; ok {
			t.Fatalf("versions %d and %d both activate at %v: one period rotated twice", v, k.GetVersion(), at)
		}
		activations[at] = k.GetVersion()
	}
}

func keyVersions(keys []*kmsv1.KeyInfo) []uint64 {
	var v []uint64
	for _, k := range keys {
		v = append(v, k.GetVersion())
	}
	return v
}

// newest is the highest-version key that can still be released.
func newestReleasable(t *testing.T, keys []*kmsv1.KeyInfo) string {
	t.Helper()
	for _, k := range slices.Backward(keys) {
		switch k.GetState() {
		case kmsv1.KeyState_KEY_STATE_PENDING, kmsv1.KeyState_KEY_STATE_ACTIVE, kmsv1.KeyState_KEY_STATE_RETIRED:
			return k.GetKid()
		}
	}
	t.Fatal("no releasable key")
	return ""
}

// retryUnavailable repeats op while it fails with Unavailable or Aborted
// (an etcd election, a lost compare-and-swap), up to replicaWait.
func replicaRetry(t *testing.T, what string, op func() error) int {
	t.Helper()
	start := time.Now()
	for attempts := 1; ; attempts++ {
		err := op()
		if err == nil {
			return attempts
		}
		if c := status.Code(err); (c != codes.Unavailable && c != codes.Aborted) || time.Since(start) > replicaWait {
			t.Fatalf("%s (attempt %d): %v", what, attempts, err)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// TestReplicasOnEtcd runs three KMS replicas on a three-member etcd
// cluster: any replica releases, exactly one rotates, rotation survives
// the leader replica stopping, service survives an etcd member stopping,
// and a replica started afterwards catches up.
func TestReplicasOnEtcd(t *testing.T) {
	testSigners(t) // loads the fixture before the working directory changes
	members := startEtcdCluster(t, 3)
	var endpoints []string
	for _, m := range members {
		endpoints = append(endpoints, "http://"+m.Clients[0].Addr().String())
	}
	shared := t.TempDir()
	kekPath := filepath.Join(shared, "kek.key")
	if err := kek.CreateLocal(kekPath); err != nil {
		t.Fatal(err)
	}
	iss, err := oidcissuer.Start(t.Context(), oidcissuer.Options{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { iss.Close() })
	// The nonce file does not exist yet: the first replica seals one and
	// the others open it.
	rs := &replicaSet{t: t, endpoints: endpoints, kekURI: "local://" + kekPath,
		nonceFile: filepath.Join(shared, "nonce.sealed"), issuer: iss}
	all := []*replica{rs.start(), rs.start(), rs.start()}
	began := time.Now()

	// 1. Any replica serves releases, of the same key, with a nonce any
	// replica issued.
	kid := all[0].kid
	var first []byte
	for i, r := range all {
		priv := r.releaseKid(t, kid, all[(i+1)%len(all)])
		if first == nil {
			first = priv
		} else if !bytes.Equal(priv, first) {
			t.Fatalf("%s released a different private key for %s", r.name, kid)
		}
	}

	// 2. Exactly one replica leads, and over two periods it alone creates
	// one key per period.
	var leader *replica
	replicaEventually(t, "one leader", func() bool {
		l := leadersOf(t, all...)
		if len(l) == 1 {
			leader = l[0]
		}
		return len(l) == 1
	})
	replicaEventually(t, "two rotations", func() bool { return len(all[1].keys(t)) >= 3 })
	keys := all[2].keys(t)
	checkKeySequence(t, keys)
	for i := 1; i < len(keys); i++ { // each successor activates one period after its predecessor
		if d := keys[i].GetActivatesAt().AsTime().Sub(keys[i-1].GetActivatesAt().AsTime()); d != replicaPeriod {
			t.Fatalf("versions %d and %d activate %v apart, want %v", i, i+1, d, replicaPeriod)
		}
	}
	created := 0
	for _, r := range all {
		n := r.count("key created")
		if r != leader && n != 0 {
			t.Fatalf("%s is not the leader but created %d keys", r.name, n)
		}
		created += n + r.count("key set created")
	}
	if l := leadersOf(t, all...); len(l) != 1 || l[0] != leader {
		t.Fatalf("leadership moved without cause: %v", l)
	}
	// Every version was made once: by the key set's creation or a tick.
	// The store may already hold a version logged a moment later.
	if now := len(all[0].keys(t)); created != len(keys) && created != now {
		t.Fatalf("%d keys created in logs, %d versions in the store", created, len(keys))
	}
	t.Logf("%s leads; %d versions after %v", leader.name, len(keys), time.Since(began).Round(time.Millisecond))

	// 3. The leader stops: another replica takes rotation over within the
	// leader TTL, keys keep coming, and the survivors keep releasing.
	var survivors []*replica
	for _, r := range all {
		if r != leader {
			survivors = append(survivors, r)
		}
	}
	before := len(all[0].keys(t))
	stopped := time.Now()
	leader.stop()
	var next *replica
	replicaEventually(t, "a new leader", func() bool {
		l := leadersOf(t, survivors...)
		if len(l) == 1 {
			next = l[0]
		}
		return len(l) == 1
	})
	if handover := time.Since(stopped); handover > replicaLeaderTTL {
		t.Fatalf("leadership handed over after %v, more than the TTL %v", handover, replicaLeaderTTL)
	} else {
		t.Logf("%s leads %v after %s stopped", next.name, handover.Round(time.Millisecond), leader.name)
	}
	replicaEventually(t, "a key from the new leader", func() bool {
		return next.count("key created") > 0 && len(survivors[0].keys(t)) > before
	})
	for _, r := range survivors {
		if r != next && r.count("key created") != 0 {
			t.Fatalf("%s created keys while %s leads", r.name, next.name)
		}
	}
	keys = survivors[0].keys(t)
	checkKeySequence(t, keys)
	kid = newestReleasable(t, keys)
	if a, b := survivors[0].releaseKid(t, kid, survivors[1]), survivors[1].releaseKid(t, kid, survivors[0]); !bytes.Equal(a, b) {
		t.Fatalf("survivors released different keys for %s", kid)
	}

	// 4. An etcd member stops (the raft leader, the harder case): releases
	// and an admin rotation still work on the replicas.
	for _, m := range members {
		if m.Server.Leader() == m.Server.MemberID() {
			m.stop()
			t.Logf("stopped etcd member %s (the raft leader)", m.Config().Name)
			break
		}
	}
	var rotated *kmsv1.KeyInfo
	attempts := replicaRetry(t, "admin rotation", func() error {
		var err error
		rotated, err = survivors[0].admin.RotateKeys(t.Context(), &kmsv1.RotateKeysRequest{Keyset: "default"})
		return err
	})
	t.Logf("admin rotation after the etcd member stopped: version %d, %d attempt(s)", rotated.GetVersion(), attempts)
	var fromSurvivors [][]byte
	for i, r := range survivors {
		replicaEventually(t, r.name+" sees the rotated key", func() bool {
			return slices.ContainsFunc(r.keys(t), func(k *kmsv1.KeyInfo) bool { return k.GetKid() == rotated.GetKid() })
		})
		fromSurvivors = append(fromSurvivors, r.releaseKid(t, rotated.GetKid(), survivors[1-i]))
	}
	if !bytes.Equal(fromSurvivors[0], fromSurvivors[1]) {
		t.Fatal("survivors released different keys for the rotated kid")
	}

	// 5. A replica started from nothing catches up: the same keys, and it
	// releases the newest.
	late := rs.start()
	var want, got []*kmsv1.KeyInfo
	replicaEventually(t, "the late replica lists the same keys", func() bool {
		want, got = survivors[0].keys(t), late.keys(t)
		return slices.Equal(keyVersions(want), keyVersions(got)) &&
			slices.EqualFunc(want, got, func(a, b *kmsv1.KeyInfo) bool {
				return a.GetKid() == b.GetKid() && bytes.Equal(a.GetPublicKey(), b.GetPublicKey())
			})
	})
	checkKeySequence(t, got)
	kid = newestReleasable(t, got)
	if a, b := late.releaseKid(t, kid, survivors[0]), survivors[1].releaseKid(t, kid, late); !bytes.Equal(a, b) {
		t.Fatalf("the late replica released a different key for %s", kid)
	}
	if late.isLeader(t) {
		t.Fatalf("the late replica %s took the leadership from %s", late.name, next.name)
	}
	t.Logf("%d versions, all replicas agree, after %v", len(got), time.Since(began).Round(time.Millisecond))
}
