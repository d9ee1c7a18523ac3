package etcdaudit

import (
	"context"
	"errors"
	"math"
	"sync"
	"testing"

	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/attested-kms/attested-kms/audit"
)

// countingKV records the size of every range response, to check that
// Range reads in bounded pages and no further than it must.
type countingKV struct {
	clientv3.KV
	mu    sync.Mutex
	pages []int
}

func (c *countingKV) Get(ctx context.Context, key string, opts ...clientv3.OpOption) (*clientv3.GetResponse, error) {
	resp, err := c.KV.Get(ctx, key, opts...)
	if err == nil {
		c.mu.Lock()
		c.pages = append(c.pages, len(resp.Kvs))
		c.mu.Unlock()
	}
	return resp, err
}

func (c *countingKV) take() []int {
	c.mu.Lock()
	defer c.mu.Unlock()
	p := c.pages
	c.pages = nil
	return p
}

// TestRangePaging checks every (from, to) pair around a small log with
// page sizes that divide it, do not, and exceed it: the right entries in
// order, in ceil(count/size) full-or-last pages plus the one empty read
// that ends the iteration, and nothing transferred beyond `to`.
func TestRangePaging(t *testing.T) {
	cli := newClient(t, startEtcd(t))
	ctx := t.Context()
	const n = 12
	b := New(cli, "/paging")
	for seq := uint64(1); seq <= n; seq++ {
		if err := b.Append(ctx, testEntry(seq)); err != nil {
			t.Fatal(err)
		}
	}
	bounds := []uint64{math.MaxUint64}
	for s := uint64(0); s <= n+1; s++ {
		bounds = append(bounds, s)
	}
	for _, size := range []int64{1, 2, 3, 4, 5, 12, 13, DefaultPageSize} {
		kv := &countingKV{KV: cli.KV}
		pb := &Backend{kv: kv, l: b.l, pageSize: size}
		for _, from := range bounds {
			for _, to := range bounds {
				want := uint64(0) // entries in [max(from,1), min(to,n)]
				lo, hi := max(from, 1), min(to, n)
				if lo <= hi {
					want = hi - lo + 1
				}
				var got uint64
				for e, err := range pb.Range(ctx, from, to) {
					if err != nil {
						t.Fatalf("size %d Range(%d, %d): %v", size, from, to, err)
					}
					if e.Seq != lo+got || e.Details["seq"] != testEntry(lo + got).Details["seq"] {
						t.Fatalf("size %d Range(%d, %d) item %d is seq %d, want %d", size, from, to, got, e.Seq, lo+got)
					}
					got++
				}
				if got != want {
					t.Fatalf("size %d Range(%d, %d) yielded %d entries, want %d", size, from, to, got, want)
				}
				// from > to reads nothing at all.
				checkPages(t, kv.take(), size, want, from <= to)
			}
		}

		// Stopping early reads only the pages holding what was taken.
		for stop := uint64(1); stop <= n; stop++ {
			var got uint64
			for _, err := range pb.Range(ctx, 1, math.MaxUint64) {
				if err != nil {
					t.Fatal(err)
				}
				if got++; got == stop {
					break
				}
			}
			// Pages are read whole, so the last one may hold more than
			// was taken; what matters is that no further page is read.
			pages := kv.take()
			if reads := (stop + uint64(size) - 1) / uint64(size); uint64(len(pages)) != reads {
				t.Fatalf("page size %d, stop after %d: pages %v, want %d reads", size, stop, pages, reads)
			}
		}
	}
}

// checkPages checks that pages is the shortest sequence of reads of at
// most size keys covering count entries, followed by an empty read if the
// iteration ran to its end.
func checkPages(t *testing.T, pages []int, size int64, count uint64, ranToEnd bool) {
	t.Helper()
	full := int(count / uint64(size))
	var want []int
	for range full {
		want = append(want, int(size))
	}
	if rest := int(count % uint64(size)); rest > 0 {
		want = append(want, rest)
	}
	if ranToEnd {
		want = append(want, 0)
	}
	if len(pages) != len(want) {
		t.Fatalf("page size %d, %d entries: pages %v, want %v", size, count, pages, want)
	}
	for i := range want {
		if pages[i] != want[i] {
			t.Fatalf("page size %d, %d entries: pages %v, want %v", size, count, pages, want)
		}
	}
}

// TestRangeCheckpointsPaging reads more checkpoints than fit in a page.
func TestCheckpointsPaging(t *testing.T) {
	cli := newClient(t, startEtcd(t))
	ctx := t.Context()
	kv := &countingKV{KV: cli.KV}
	b := &Backend{kv: kv, l: layout{prefix: "/cps/"}, pageSize: 3}
	for seq := uint64(1); seq <= 10; seq++ {
		if err := b.PutCheckpoint(ctx, audit.Checkpoint{Seq: seq * 7, Signature: []byte{byte(seq)}}); err != nil {
			t.Fatal(err)
		}
	}
	cps, err := b.Checkpoints(ctx)
	if err != nil || len(cps) != 10 {
		t.Fatalf("Checkpoints: %d, %v; want 10", len(cps), err)
	}
	for i, c := range cps {
		if c.Seq != uint64(i+1)*7 {
			t.Fatalf("checkpoint %d has seq %d, want %d", i, c.Seq, (i+1)*7)
		}
	}
	checkPages(t, kv.take(), 3, 10, false)
}

// TestRangeStrayKey: a key under entries/ that this package did not write
// is reported as malformed, not skipped or looped on.
func TestRangeStrayKey(t *testing.T) {
	cli := newClient(t, startEtcd(t))
	ctx := t.Context()
	b := New(cli, "/stray")
	b.pageSize = 2
	for seq := uint64(1); seq <= 3; seq++ {
		if err := b.Append(ctx, testEntry(seq)); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := cli.Put(ctx, b.l.entries()+"00000000000000000002x", "junk"); err != nil {
		t.Fatal(err)
	}
	var seqs []uint64
	var rangeErr error
	for e, err := range b.Range(ctx, 1, math.MaxUint64) {
		if err != nil {
			rangeErr = err
			continue
		}
		seqs = append(seqs, e.Seq)
	}
	if !errors.Is(rangeErr, audit.ErrMalformed) || len(seqs) != 2 {
		t.Fatalf("Range over a stray key: entries %v, err %v; want seqs 1 and 2, then ErrMalformed", seqs, rangeErr)
	}
}
