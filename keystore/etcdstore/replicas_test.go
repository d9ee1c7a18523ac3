package etcdstore

import (
	"context"
	"errors"
	"sync"
	"testing"
	"time"

	"github.com/attested-kms/attested-kms/keystore"
)

// Two replicas (two clients) racing on one store.
func TestConcurrentReplicas(t *testing.T) {
	ctx := t.Context()
	e := startEtcd(t)
	a, b := open(t, "/kms/", endpoint(e)), open(t, "/kms/", endpoint(e))
	k1 := testKey(kidN(0), 1)
	if err := a.CreateKeySet(ctx, testSet(), k1); err != nil {
		t.Fatal(err)
	}
	race := func(fa, fb func() error) (errA, errB error) {
		var wg sync.WaitGroup
		wg.Go(func() { errA = fa() })
		wg.Go(func() { errB = fb() })
		wg.Wait()
		return errA, errB
	}
	for round := 1; round <= 20; round++ {
		// Both read the same revision of v1 and update it: one wins.
		ka, err := a.KeysByKID(ctx, "default", k1.KID)
		if err != nil {
			t.Fatal(err)
		}
		kb, err := b.KeysByKID(ctx, "default", k1.KID)
		if err != nil {
			t.Fatal(err)
		}
		ka[0].State, kb[0].State = keystore.StateRetired, keystore.StateDisabled
		errA, errB := race(
			func() error { return a.Commit(ctx, "default", nil, ka) },
			func() error { return b.Commit(ctx, "default", nil, kb) })
		if (errA == nil) == (errB == nil) || !errors.Is(errors.Join(errA, errB), keystore.ErrConflict) {
			t.Fatalf("round %d update race: %v / %v, want exactly one ErrConflict", round, errA, errB)
		}

		// Both pick the same next version with different kids: it is
		// created exactly once, and the loser leaves no trace.
		v := uint64(round + 1)
		ca, cb := testKey(kidN(2*round), v), testKey(kidN(2*round+1), v)
		errA, errB = race(
			func() error { return a.Commit(ctx, "default", []*keystore.Key{ca}, nil) },
			func() error { return b.Commit(ctx, "default", []*keystore.Key{cb}, nil) })
		if (errA == nil) == (errB == nil) || !errors.Is(errors.Join(errA, errB), keystore.ErrAlreadyExists) {
			t.Fatalf("round %d create race: %v / %v, want exactly one ErrAlreadyExists", round, errA, errB)
		}
		winner, loser := ca, cb
		if errA != nil {
			winner, loser = cb, ca
		}
		if got, err := b.KeysByKID(ctx, "default", loser.KID); err != nil || len(got) != 0 {
			t.Fatalf("round %d: loser's kid indexed: %v %v", round, got, err)
		}
		if got, err := a.KeysByKID(ctx, "default", winner.KID); err != nil || len(got) != 1 || got[0].Version != v {
			t.Fatalf("round %d: winner's key: %v %v", round, got, err)
		}
	}
	keys, err := a.Keys(ctx, "default")
	if err != nil || len(keys) != 21 {
		t.Fatalf("%d keys after 20 rounds, want 21 (%v)", len(keys), err)
	}
}

func TestWatchSeesOtherReplica(t *testing.T) {
	ctx := t.Context()
	e := startEtcd(t)
	watcher, writer := open(t, "/kms/", endpoint(e)), open(t, "/kms/", endpoint(e))
	// Writes under another prefix are another deployment's business.
	foreign := open(t, "/elsewhere/", endpoint(e))
	ch := watcher.Watch(ctx)

	ks, k1 := testSet(), testKey(kidN(1), 1)
	if err := foreign.CreateKeySet(ctx, testSet(), testKey(kidN(9), 1)); err != nil {
		t.Fatal(err)
	}
	if err := writer.CreateKeySet(ctx, ks, k1); err != nil {
		t.Fatal(err)
	}
	created := int64(ks.Revision)
	k1.State = keystore.StateRetired
	k2 := testKey(kidN(2), 2)
	if err := writer.Commit(ctx, "default", []*keystore.Key{k2}, []*keystore.Key{k1}); err != nil {
		t.Fatal(err)
	}
	ks.PolicyVersion = 2
	if err := writer.UpdateKeySet(ctx, ks); err != nil {
		t.Fatal(err)
	}
	mrev, err := writer.PutMetadata(ctx, "import-key", []byte("x"), 0)
	if err != nil {
		t.Fatal(err)
	}
	// Election keys live under the prefix but are not store records.
	l, err := writer.Campaign(ctx, "rotation", time.Second)
	if err != nil {
		t.Fatal(err)
	}
	defer l.Resign(ctx)

	// A transaction's records share its revision.
	want := []Change{
		{Kind: ChangeKeySet, KeySet: "default", Revision: created},
		{Kind: ChangeKey, KeySet: "default", KID: kidN(1), Version: 1, Revision: created},
		{Kind: ChangeKey, KeySet: "default", KID: kidN(2), Version: 2, Revision: int64(k2.Revision)},
		{Kind: ChangeKey, KeySet: "default", KID: kidN(1), Version: 1, Revision: int64(k1.Revision)},
		{Kind: ChangeKeySet, KeySet: "default", Revision: int64(ks.Revision)},
		{Kind: ChangeMetadata, Name: "import-key", Revision: int64(mrev)},
	}
	for i := range want {
		if got := recv(t, ch); got != want[i] {
			t.Fatalf("change %d = %+v, want %+v", i, got, want[i])
		}
	}
	// The election key was not reported: the next change is this marker.
	mrev, err = writer.PutMetadata(ctx, "marker", nil, 0)
	if err != nil {
		t.Fatal(err)
	}
	if got := recv(t, ch); got != (Change{Kind: ChangeMetadata, Name: "marker", Revision: int64(mrev)}) {
		t.Fatalf("after the election: %+v", got)
	}
}

func TestWatchResyncsAfterCompaction(t *testing.T) {
	ctx := t.Context()
	e := startEtcd(t)
	s := open(t, "/kms/", endpoint(e))
	ks := testSet()
	if err := s.CreateKeySet(ctx, ks, testKey(kidN(1), 1)); err != nil {
		t.Fatal(err)
	}
	missed := ks.Revision
	for range 3 {
		if err := s.UpdateKeySet(ctx, ks); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := s.cli.Compact(ctx, int64(ks.Revision)); err != nil {
		t.Fatal(err)
	}
	// A watcher that had only seen up to before the create (as after a
	// long disconnect) cannot get the compacted events back.
	wctx, cancel := context.WithCancel(ctx)
	ch := s.watchFrom(wctx, int64(missed), false)
	c := recv(t, ch)
	if c.Kind != ChangeResync || c.Revision != int64(ks.Revision) {
		t.Fatalf("first change %+v, want resync at %d", c, ks.Revision)
	}
	// It goes on from the oldest kept revision, losing nothing after it.
	if c := recv(t, ch); c.Kind != ChangeKeySet || c.Revision != int64(ks.Revision) {
		t.Fatalf("after resync: %+v", c)
	}
	if err := s.UpdateKeySet(ctx, ks); err != nil {
		t.Fatal(err)
	}
	if c := recv(t, ch); c.Kind != ChangeKeySet || c.Revision != int64(ks.Revision) {
		t.Fatalf("new write: %+v", c)
	}
	cancel()
	for range ch { // closed once ctx ends
	}
}

func TestElection(t *testing.T) {
	ctx := t.Context()
	e := startEtcd(t)
	a := open(t, "/kms/", endpoint(e))
	b := open(t, "/kms/", endpoint(e))
	c := open(t, "/kms/", endpoint(e))
	const ttl = time.Second

	la, err := a.Campaign(ctx, "rotation", ttl)
	if err != nil {
		t.Fatal(err)
	}
	type result struct {
		l   *Leadership
		err error
	}
	won := make(chan result, 1)
	go func() {
		l, err := b.Campaign(ctx, "rotation", ttl)
		won <- result{l, err}
	}()
	// A third campaigner whose ctx ends gives up without leading.
	cctx, ccancel := context.WithCancel(ctx)
	ccancel()
	if _, err := c.Campaign(cctx, "rotation", ttl); !errors.Is(err, context.Canceled) {
		t.Fatalf("cancelled campaign: err = %v", err)
	}
	select {
	case r := <-won:
		t.Fatalf("second campaigner won while the first leads: %+v", r)
	case <-la.Done():
		t.Fatal("leadership lost while the client is alive")
	default:
	}

	// The leader's process dies: its client goes away without resigning.
	// Its lease expires after the TTL and the other campaigner takes over.
	if err := a.cli.Close(); err != nil {
		t.Fatal(err)
	}
	closed := time.Now()
	var r result
	select {
	case r = <-won:
	case <-time.After(within):
		t.Fatal("leadership not handed over")
	}
	if r.err != nil {
		t.Fatal(r.err)
	}
	t.Logf("handed over %v after the leader's client closed (TTL %v)", time.Since(closed), ttl)
	<-la.Done()
	lb := r.l
	if lb.Revision() <= la.Revision() {
		t.Fatalf("new leadership revision %d, not after %d", lb.Revision(), la.Revision())
	}

	// Resigning hands over at once, and ends the leadership.
	go func() {
		l, err := c.Campaign(ctx, "rotation", ttl)
		won <- result{l, err}
	}()
	if err := lb.Resign(ctx); err != nil {
		t.Fatal(err)
	}
	<-lb.Done()
	if r := <-won; r.err != nil {
		t.Fatal(r.err)
	} else if err := c.Close(); err != nil { // Close resigns too
		t.Fatal(err)
	} else {
		<-r.l.Done()
	}
	if _, err := b.Campaign(ctx, "bad/name", ttl); !errors.Is(err, keystore.ErrInvalidArgument) {
		t.Fatalf("bad election name: err = %v", err)
	}
}
