package main

import (
	"slices"
	"strings"
	"testing"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"
)

// TestClusterOutlivesItsLeader starts a real three-member cluster, writes
// through one endpoint, stops the raft leader and reads the write back
// from the survivors, which must have elected a new leader among them.
func TestClusterOutlivesItsLeader(t *testing.T) {
	t.Chdir(t.TempDir()) // startCluster changes directory; restore it after.
	ctx := t.Context()
	c, err := startCluster(ctx, clusterConfig{Dir: t.TempDir(), Members: 3, NamePrefix: "t", StartTimeout: 30 * time.Second})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(c.Close)
	endpoints := c.Endpoints()
	if len(endpoints) != 3 {
		t.Fatalf("endpoints %v, want 3", endpoints)
	}
	cli := newClient(t, endpoints)
	if _, err := cli.Put(ctx, "k", "v"); err != nil {
		t.Fatal(err)
	}

	stopped, err := c.StopLeader()
	if err != nil {
		t.Fatal(err)
	}
	if c.Running() != 2 {
		t.Fatalf("running %d after one stop, want 2", c.Running())
	}
	next, err := c.WaitLeader(ctx, 30*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	if next == stopped || !strings.HasPrefix(next, "t") {
		t.Fatalf("new leader %q (stopped %q)", next, stopped)
	}
	if name, err := c.StopLeader(); err == nil {
		t.Fatalf("stopped %s too, leaving 1 of 3 members: want a refusal (no quorum)", name)
	}
	if c.Running() != 2 {
		t.Fatalf("running %d after a refused stop, want 2", c.Running())
	}
	survivors := c.Endpoints()
	if len(survivors) != 2 {
		t.Fatalf("endpoints after stop %v, want 2", survivors)
	}
	for _, ep := range survivors {
		if !slices.Contains(endpoints, ep) {
			t.Fatalf("survivor endpoint %s not among the original %v", ep, endpoints)
		}
		// A linearizable read through each survivor alone: it needs the
		// quorum the two survivors still form.
		got, err := newClient(t, []string{ep}).Get(ctx, "k")
		if err != nil {
			t.Fatalf("read through %s: %v", ep, err)
		}
		if len(got.Kvs) != 1 || string(got.Kvs[0].Value) != "v" {
			t.Fatalf("read through %s: %v", ep, got.Kvs)
		}
	}
}

func newClient(t *testing.T, endpoints []string) *clientv3.Client {
	t.Helper()
	cli, err := clientv3.New(clientv3.Config{Endpoints: endpoints, DialTimeout: 5 * time.Second})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = cli.Close() })
	return cli
}
