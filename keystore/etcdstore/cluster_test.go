package etcdstore

import (
	"context"
	"errors"
	"fmt"
	"net/url"
	"testing"
	"time"

	"go.etcd.io/etcd/server/v3/embed"

	"github.com/attested-kms/attested-kms/keystore"
)

// startCluster starts a ready n-member cluster. Members talk to each other
// over unix sockets in a temporary working directory (etcd names a unix
// socket by the URL's host, relative to the working directory), so no TCP
// port has to be guessed free in advance; clients use 127.0.0.1:0.
func startCluster(t *testing.T, n int) []*member {
	t.Helper()
	t.Chdir(t.TempDir())
	cfgs := make([]*embed.Config, n)
	initial := ""
	for i := range cfgs {
		cfg := etcdConfig(t, fmt.Sprintf("m%d", i))
		peer := mustURL(t, fmt.Sprintf("unix://localhost:%d", i+1))
		cfg.ListenPeerUrls = []url.URL{peer}
		cfg.AdvertisePeerUrls = []url.URL{peer}
		if i > 0 {
			initial += ","
		}
		initial += cfg.Name + "=" + peer.String()
		cfgs[i] = cfg
	}
	members := make([]*member, n)
	for i, cfg := range cfgs {
		cfg.InitialCluster = initial
		members[i] = start(t, cfg)
	}
	for _, m := range members {
		ready(t, m)
	}
	return members
}

func TestThreeMemberClusterSurvivesOneMember(t *testing.T) {
	ctx := t.Context()
	members := startCluster(t, 3)
	var endpoints []string
	for _, m := range members {
		endpoints = append(endpoints, endpoint(m))
	}
	s := open(t, "/kms/", endpoints...)
	watcher := open(t, "/kms/", endpoint(members[1]))
	ch := watcher.Watch(ctx)
	ks, k1 := testSet(), testKey(kidN(1), 1)
	if err := s.CreateKeySet(ctx, ks, k1); err != nil {
		t.Fatal(err)
	}
	if c := recv(t, ch); c.Kind != ChangeKeySet {
		t.Fatalf("watch: %+v", c)
	}
	recv(t, ch) // the first key

	// Stop the leader: the harder case, since the rest must elect a new
	// one before writes go through again.
	var leader *member
	for _, m := range members {
		if m.Server.Leader() == m.Server.MemberID() {
			leader = m
		}
	}
	if leader == nil {
		t.Fatal("no leader")
	}
	leader.stop()

	// The watcher's member is switched to a survivor if it was the one
	// stopped, as an operator's endpoint list (or DNS) would; the watch
	// must resume where it was without losing writes made meanwhile.
	if leader == members[1] {
		watcher.cli.SetEndpoints(endpoint(members[2]))
	}

	k2 := testKey(kidN(2), 2)
	k1.State = keystore.StateRetired
	stopped := time.Now()
	attempts := 0
	retryUnavailable(t, "commit", func(ctx context.Context) error {
		attempts++
		err := s.Commit(ctx, "default", []*keystore.Key{k2}, []*keystore.Key{k1})
		if attempts > 1 && errors.Is(err, keystore.ErrAlreadyExists) {
			// An earlier attempt whose answer was lost did commit; the
			// read below checks it did all of it.
			return nil
		}
		return err
	})
	t.Logf("first write %v after the leader stopped (%d attempts)", time.Since(stopped), attempts)
	retryUnavailable(t, "read", func(ctx context.Context) error {
		keys, err := s.Keys(ctx, "default")
		if err == nil {
			if len(keys) != 2 || keys[0].State != keystore.StateRetired {
				t.Fatalf("keys after failover: %+v", keys)
			}
			k1, k2 = keys[0], keys[1]
		}
		return err
	})
	ks.PolicyVersion = 2
	retryUnavailable(t, "update key set", func(ctx context.Context) error { return s.UpdateKeySet(ctx, ks) })
	for _, want := range []Change{
		{Kind: ChangeKey, KeySet: "default", KID: kidN(2), Version: 2, Revision: int64(k2.Revision)},
		{Kind: ChangeKey, KeySet: "default", KID: kidN(1), Version: 1, Revision: int64(k1.Revision)},
		{Kind: ChangeKeySet, KeySet: "default", Revision: int64(ks.Revision)},
	} {
		if got := recv(t, ch); got != want {
			t.Fatalf("watch after failover: %+v, want %+v", got, want)
		}
	}
}
