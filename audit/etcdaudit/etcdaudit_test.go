package etcdaudit

import (
	"context"
	"crypto/ed25519"
	"errors"
	"fmt"
	"math"
	"net"
	"strconv"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/attested-kms/attested-kms/audit"
	"github.com/attested-kms/attested-kms/audit/audittest"
)

func TestConformance(t *testing.T) {
	cli := newClient(t, startEtcd(t))
	var n atomic.Int64
	newBackend := func(pageSize int64) func(t *testing.T) audit.Backend {
		return func(t *testing.T) audit.Backend {
			// Each backend gets its own prefix: an empty log on a shared server.
			b := New(cli, fmt.Sprintf("/conformance-%d", n.Add(1)))
			b.pageSize = pageSize
			return b
		}
	}
	t.Run("DefaultPages", func(t *testing.T) { audittest.Run(t, newBackend(DefaultPageSize)) })
	// Seven does not divide the suite's range bounds, so every range ends
	// mid-page and appends while ranging land on both sides of a boundary.
	t.Run("SmallPages", func(t *testing.T) { audittest.Run(t, newBackend(7)) })
}

// TestAppendExactlyOneWinner races writers on two clients for each seq:
// one stores its entry, every other gets ErrConflict.
func TestAppendExactlyOneWinner(t *testing.T) {
	ep := startEtcd(t)
	replicas := []*Backend{New(newClient(t, ep), "/race"), New(newClient(t, ep), "/race")}
	ctx := t.Context()
	const writers = 6
	for seq := uint64(1); seq <= 20; seq++ {
		var wg sync.WaitGroup
		errs := make([]error, writers)
		for w := range writers {
			wg.Go(func() {
				e := testEntry(seq)
				e.Actor = "writer-" + strconv.Itoa(w)
				errs[w] = replicas[w%2].Append(ctx, e)
			})
		}
		wg.Wait()
		winner := -1
		for w, err := range errs {
			switch {
			case err == nil && winner >= 0:
				t.Fatalf("seq %d: writers %d and %d both won", seq, winner, w)
			case err == nil:
				winner = w
			case !errors.Is(err, audit.ErrConflict):
				t.Fatalf("seq %d writer %d: %v, want ErrConflict", seq, w, err)
			}
		}
		if winner < 0 {
			t.Fatalf("seq %d: no writer won", seq)
		}
		last, err := replicas[0].Last(ctx)
		if err != nil || last.Seq != seq || last.Actor != "writer-"+strconv.Itoa(winner) {
			t.Fatalf("seq %d: Last = seq %d actor %q, %v; want the winner, writer-%d", seq, last.Seq, last.Actor, err, winner)
		}
	}
}

// TestReplicasShareOneChain runs two Logs on two clients, as two KMS
// replicas would, appending concurrently: the result is one dense chain
// that verifies, holding every acknowledged entry exactly once.
func TestReplicasShareOneChain(t *testing.T) {
	ep := startEtcd(t)
	ctx := t.Context()
	pub, signer, err := ed25519.GenerateKey(nil)
	if err != nil {
		t.Fatal(err)
	}
	const total, perLog, goroutines = 200, 100, 4
	var (
		logs [2]*audit.Log
		lost atomic.Int64 // compare-and-swaps lost inside the Logs
	)
	for i := range logs {
		b := conflictCounter{New(newClient(t, ep), "/replicas"), &lost}
		if logs[i], err = audit.New(ctx, b, signer, audit.Options{CheckpointEvery: 10}); err != nil {
			t.Fatal(err)
		}
	}
	var (
		wg        sync.WaitGroup
		conflicts atomic.Int64
		failed    = make(chan error, total)
	)
	for r, l := range logs {
		for g := range goroutines {
			wg.Go(func() {
				for i := g; i < perLog; i += goroutines {
					e := audit.Entry{Kind: audit.KindAdminCall, Outcome: audit.OutcomeOK, Actor: fmt.Sprintf("replica-%d", r),
						Details: map[string]string{"id": fmt.Sprintf("%d-%d", r, i)}}
					// The Log gives up after a bounded run of lost races; a
					// caller with a request to record would try again.
					for {
						_, err := l.Append(ctx, e)
						if errors.Is(err, audit.ErrConflict) {
							conflicts.Add(1)
							continue
						}
						if err != nil {
							failed <- err
						}
						break
					}
				}
			})
		}
	}
	wg.Wait()
	close(failed)
	for err := range failed {
		t.Fatalf("append: %v", err)
	}
	// Contention depends on scheduling, so it is reported, not asserted.
	t.Logf("%d compare-and-swaps lost to the other replica; %d appends retried by the caller", lost.Load(), conflicts.Load())

	// A third client reads back what both replicas wrote.
	reader := New(newClient(t, ep), "/replicas")
	res, err := audit.VerifyBackend(ctx, reader, pub)
	if err != nil {
		t.Fatalf("VerifyBackend: %v", err)
	}
	if res.Entries != total || res.First != 1 || res.Last != total || res.LastCheckpoint != total {
		t.Fatalf("VerifyBackend = %+v; want %d entries from seq 1 with a checkpoint at %d", res, total, total)
	}
	seen := map[string]bool{}
	for e, err := range reader.Range(ctx, 1, math.MaxUint64) {
		if err != nil {
			t.Fatal(err)
		}
		id := e.Details["id"]
		if seen[id] {
			t.Fatalf("entry %s stored twice (second at seq %d)", id, e.Seq)
		}
		seen[id] = true
	}
	if len(seen) != total {
		t.Fatalf("%d distinct entries stored, want %d", len(seen), total)
	}
	cps, err := reader.Checkpoints(ctx)
	if err != nil || len(cps) != total/10 {
		t.Fatalf("%d checkpoints, %v; want %d", len(cps), err, total/10)
	}
}

// conflictCounter counts the ErrConflicts its Backend's Append returns.
type conflictCounter struct {
	*Backend
	n *atomic.Int64
}

func (c conflictCounter) Append(ctx context.Context, e audit.Entry) error {
	err := c.Backend.Append(ctx, e)
	if errors.Is(err, audit.ErrConflict) {
		c.n.Add(1)
	}
	return err
}

// TestTamperingIsDetected edits stored records behind the Backend's back,
// as someone with write access to etcd could, and checks what Verify and
// Last make of it.
func TestTamperingIsDetected(t *testing.T) {
	ep := startEtcd(t)
	ctx := t.Context()
	pub, signer, err := ed25519.GenerateKey(nil)
	if err != nil {
		t.Fatal(err)
	}
	cli := newClient(t, ep)
	newLog := func(prefix string) *Backend {
		b := New(cli, prefix)
		l, err := audit.New(ctx, b, signer, audit.Options{CheckpointEvery: 10})
		if err != nil {
			t.Fatal(err)
		}
		for i := range 30 {
			if _, err := l.Append(ctx, audit.Entry{Kind: audit.KindRelease, Outcome: audit.OutcomeDenied, KID: strconv.Itoa(i)}); err != nil {
				t.Fatal(err)
			}
		}
		if _, err := audit.VerifyBackend(ctx, b, pub); err != nil {
			t.Fatalf("untouched log: %v", err)
		}
		return b
	}
	wantProblem := func(b *Backend, p audit.Problem, seq uint64) {
		t.Helper()
		_, err := audit.VerifyBackend(ctx, b, pub)
		var ve *audit.VerifyError
		if !errors.As(err, &ve) || ve.Problem != p || ve.Seq != seq {
			t.Fatalf("VerifyBackend = %v; want %s at seq %d", err, p, seq)
		}
	}

	t.Run("AlteredValue", func(t *testing.T) {
		b := newLog("/tamper-value")
		// A denial rewritten as a grant, in canonical form so that only
		// the hash chain can tell.
		e := mustGet(t, cli, b.l.entry(17))
		e.Outcome = audit.OutcomeGranted
		line, err := audit.MarshalEntry(&e)
		if err != nil {
			t.Fatal(err)
		}
		if _, err := cli.Put(ctx, b.l.entry(17), string(line)); err != nil {
			t.Fatal(err)
		}
		wantProblem(b, audit.ProblemAltered, 17)
	})

	t.Run("DeletedEntry", func(t *testing.T) {
		b := newLog("/tamper-delete")
		if _, err := cli.Delete(ctx, b.l.entry(12)); err != nil {
			t.Fatal(err)
		}
		wantProblem(b, audit.ProblemRemoved, 12)
	})

	t.Run("UnparsableValue", func(t *testing.T) {
		b := newLog("/tamper-garbage")
		if _, err := cli.Put(ctx, b.l.entry(5), `{"record":"entry"}`); err != nil {
			t.Fatal(err)
		}
		if _, err := audit.VerifyBackend(ctx, b, pub); !errors.Is(err, audit.ErrMalformed) {
			t.Fatalf("VerifyBackend = %v, want ErrMalformed", err)
		}
	})

	t.Run("HeadMovedBack", func(t *testing.T) {
		b := newLog("/tamper-head")
		if _, err := cli.Put(ctx, b.l.head(), formatSeq(20)); err != nil {
			t.Fatal(err)
		}
		if _, err := b.Last(ctx); !errors.Is(err, audit.ErrMalformed) {
			t.Fatalf("Last with the head behind the entries = %v, want ErrMalformed", err)
		}
		// The compare-and-swap follows the head, but the entry key must
		// also be free, so the edit cannot be used to overwrite seq 21.
		if err := b.Append(ctx, testEntry(21)); !errors.Is(err, audit.ErrConflict) {
			t.Fatalf("Append over an existing entry = %v, want ErrConflict", err)
		}
		if _, err := audit.New(ctx, b, signer, audit.Options{}); !errors.Is(err, audit.ErrMalformed) {
			t.Fatalf("audit.New on a store with a bad head = %v, want ErrMalformed", err)
		}
	})
}

func mustGet(t *testing.T, cli *clientv3.Client, key string) audit.Entry {
	t.Helper()
	resp, err := cli.Get(t.Context(), key)
	if err != nil || len(resp.Kvs) != 1 {
		t.Fatalf("get %s: %d keys, %v", key, len(resp.Kvs), err)
	}
	rec, err := audit.ParseLine(resp.Kvs[0].Value)
	if err != nil || rec.Entry == nil {
		t.Fatalf("parse %s: %v", key, err)
	}
	return *rec.Entry
}

func TestUnavailable(t *testing.T) {
	ep := startEtcd(t)
	ctx := t.Context()

	t.Run("ClosedClient", func(t *testing.T) {
		cli := newClient(t, ep)
		b := New(cli, "/closed")
		if err := cli.Close(); err != nil {
			t.Fatal(err)
		}
		_, errRange := first(b.Range(ctx, 1, 10))
		_, errLast := b.Last(ctx)
		_, errCps := b.Checkpoints(ctx)
		for what, err := range map[string]error{
			"Append": b.Append(ctx, testEntry(1)), "Last": errLast, "Range": errRange,
			"PutCheckpoint": b.PutCheckpoint(ctx, audit.Checkpoint{Seq: 1}), "Checkpoints": errCps,
		} {
			if !errors.Is(err, ErrUnavailable) || errors.Is(err, audit.ErrConflict) {
				t.Errorf("%s on a closed client = %v, want ErrUnavailable", what, err)
			}
		}
	})

	t.Run("CanceledIsNotUnavailable", func(t *testing.T) {
		b := New(newClient(t, ep), "/canceled")
		cctx, cancel := context.WithCancel(ctx)
		cancel()
		_, errRange := first(b.Range(cctx, 1, 10))
		_, errLast := b.Last(cctx)
		for what, err := range map[string]error{"Append": b.Append(cctx, testEntry(1)), "Last": errLast, "Range": errRange} {
			if !errors.Is(err, context.Canceled) || errors.Is(err, ErrUnavailable) {
				t.Errorf("%s with a canceled context = %v, want context.Canceled only", what, err)
			}
		}
	})

	t.Run("OpenNothingListening", func(t *testing.T) {
		l, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		dead := "http://" + l.Addr().String()
		_ = l.Close()
		if _, err := Open(ctx, Config{Endpoints: []string{dead}, DialTimeout: 300 * time.Millisecond}); !errors.Is(err, ErrUnavailable) {
			t.Fatalf("Open with nothing listening = %v, want ErrUnavailable", err)
		}
	})
}

func TestOpen(t *testing.T) {
	ep := startEtcd(t)
	ctx := t.Context()
	if _, err := Open(ctx, Config{}); !errors.Is(err, audit.ErrInvalidArgument) {
		t.Fatalf("Open without endpoints = %v, want ErrInvalidArgument", err)
	}
	b, err := Open(ctx, Config{Endpoints: []string{ep}, Prefix: "/opened"})
	if err != nil {
		t.Fatal(err)
	}
	if err := b.Append(ctx, testEntry(1)); err != nil {
		t.Fatal(err)
	}
	if err := b.Close(); err != nil {
		t.Fatal(err)
	}
	// The prefix gained its "/": a Backend from New on "/opened/" sees
	// the entry at /opened/audit/entries/00000000000000000001.
	cli := newClient(t, ep)
	if e := mustGet(t, cli, "/opened/audit/entries/00000000000000000001"); e.Seq != 1 {
		t.Fatalf("stored entry has seq %d", e.Seq)
	}
	if last, err := New(cli, "/opened/").Last(ctx); err != nil || last.Seq != 1 {
		t.Fatalf("Last through New = seq %d, %v", last.Seq, err)
	}
	if last, err := New(cli, "").Last(ctx); err != nil || last.Seq != 0 {
		t.Fatalf("DefaultPrefix sees seq %d, %v; want an empty log", last.Seq, err)
	}
}

func first(seq func(func(audit.Entry, error) bool)) (audit.Entry, error) {
	for e, err := range seq {
		return e, err
	}
	return audit.Entry{}, nil
}

// testEntry is a valid entry with a right hash for its position only by
// accident: backends store what they are given.
func testEntry(seq uint64) audit.Entry {
	return audit.Entry{Seq: seq, Time: time.Unix(1700000000+int64(seq), 0).UTC(), Kind: audit.KindKEK,
		Outcome: audit.OutcomeOK, Details: map[string]string{"seq": strconv.FormatUint(seq, 10)}}
}
