// Package audittest checks that an audit.Backend keeps the contract the Log
// relies on, so every backend (memory, bbolt, later etcd) runs the same
// tests.
package audittest

import (
	"context"
	"errors"
	"math"
	"reflect"
	"testing"
	"time"

	"github.com/attested-kms/attested-kms/audit"
)

// Run checks the Backend contract; newBackend must return an empty backend.
func Run(t *testing.T, newBackend func(t *testing.T) audit.Backend) {
	ctx := context.Background()

	t.Run("AppendIsCompareAndSwap", func(t *testing.T) {
		b := newBackend(t)
		if last, err := b.Last(ctx); err != nil || last.Seq != 0 {
			t.Fatalf("empty backend: Last = seq %d, %v; want seq 0", last.Seq, err)
		}
		for _, seq := range []uint64{0, 2} {
			if err := b.Append(ctx, entry(seq)); !errors.Is(err, audit.ErrConflict) {
				t.Fatalf("append seq %d to an empty log: %v, want ErrConflict", seq, err)
			}
		}
		mustAppend(t, b, 1)
		for _, seq := range []uint64{1, 3} {
			if err := b.Append(ctx, entry(seq)); !errors.Is(err, audit.ErrConflict) {
				t.Fatalf("append seq %d after seq 1: %v, want ErrConflict", seq, err)
			}
		}
		mustAppend(t, b, 2)
		last, err := b.Last(ctx)
		if err != nil || !reflect.DeepEqual(last, entry(2)) {
			t.Fatalf("Last = %+v, %v; want %+v", last, err, entry(2))
		}
	})

	t.Run("RangeBoundsAndRoundTrip", func(t *testing.T) {
		b := newBackend(t)
		const n = 600 // more than one bbolt read batch
		for seq := uint64(1); seq <= n; seq++ {
			mustAppend(t, b, seq)
		}
		for _, r := range []struct{ from, to, first, count uint64 }{
			{1, math.MaxUint64, 1, n}, {0, 10, 1, 10}, {257, 513, 257, 257}, {n, n, n, 1}, {n + 1, math.MaxUint64, 0, 0}, {5, 4, 0, 0},
		} {
			var got uint64
			for e, err := range b.Range(ctx, r.from, r.to) {
				if err != nil {
					t.Fatalf("Range(%d, %d): %v", r.from, r.to, err)
				}
				if want := entry(r.first + got); !reflect.DeepEqual(e, want) {
					t.Fatalf("Range(%d, %d) item %d = %+v, want %+v", r.from, r.to, got, e, want)
				}
				got++
			}
			if got != r.count {
				t.Fatalf("Range(%d, %d) yielded %d entries, want %d", r.from, r.to, got, r.count)
			}
		}
	})

	// The Log may append while a verifier or exporter iterates.
	t.Run("AppendWhileRanging", func(t *testing.T) {
		b := newBackend(t)
		mustAppend(t, b, 1)
		seen := 0
		for e, err := range b.Range(ctx, 1, 600) {
			if err != nil {
				t.Fatal(err)
			}
			seen++
			mustAppend(t, b, e.Seq+1)
		}
		if seen != 600 {
			t.Fatalf("saw %d entries while appending, want 600", seen)
		}
	})

	t.Run("Checkpoints", func(t *testing.T) {
		b := newBackend(t)
		if cps, err := b.Checkpoints(ctx); err != nil || len(cps) != 0 {
			t.Fatalf("empty backend: %d checkpoints, %v", len(cps), err)
		}
		for _, seq := range []uint64{20, 10, 30} {
			if err := b.PutCheckpoint(ctx, checkpoint(seq)); err != nil {
				t.Fatalf("put checkpoint %d: %v", seq, err)
			}
		}
		other := checkpoint(20)
		other.Signature[0] ^= 1
		if err := b.PutCheckpoint(ctx, other); !errors.Is(err, audit.ErrConflict) {
			t.Fatalf("second checkpoint at seq 20: %v, want ErrConflict", err)
		}
		cps, err := b.Checkpoints(ctx)
		if err != nil {
			t.Fatal(err)
		}
		want := []audit.Checkpoint{checkpoint(10), checkpoint(20), checkpoint(30)}
		if !reflect.DeepEqual(cps, want) {
			t.Fatalf("Checkpoints = %+v, want %+v", cps, want)
		}
	})
}

func mustAppend(t *testing.T, b audit.Backend, seq uint64) {
	t.Helper()
	if err := b.Append(context.Background(), entry(seq)); err != nil {
		t.Fatalf("append seq %d: %v", seq, err)
	}
}

// entry is a deterministic entry with every field set. Backends store what
// they are given, so its hash need not be right.
func entry(seq uint64) audit.Entry {
	e := audit.Entry{
		Seq: seq, Time: time.Unix(1700000000+int64(seq), int64(seq)).UTC(), Kind: audit.KindRelease,
		Actor: "sub-1", KeySet: "default", KID: "0123456789abcdef", Outcome: audit.OutcomeDenied,
		Reason:  "policy: measurement not allowed",
		Details: map[string]string{"platform": "sev-snp", "n": time.Duration(seq).String()},
	}
	// PrevHash and Hash differ per seq, so a mixed-up read shows.
	e.PrevHash[0], e.PrevHash[31] = byte(seq), byte(seq>>8)
	e.Hash[1] = byte(seq)
	return e
}

func checkpoint(seq uint64) audit.Checkpoint {
	c := audit.Checkpoint{Seq: seq, Time: time.Unix(1700000000+int64(seq), 0).UTC(), Signature: make([]byte, 64)}
	c.Hash[0] = byte(seq)
	c.Signature[0] = byte(seq)
	return c
}
