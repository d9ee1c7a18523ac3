// Package etcdaudit is the replicated audit.Backend: entries and
// checkpoints as export lines in etcd v3 under a key prefix shared by every
// KMS replica (see layout.go). Append is a single compare-and-swap
// transaction on the head key, so when replicas append at once exactly one
// wins each sequence number and the others get audit.ErrConflict, which
// audit.Log answers by re-reading the head and chaining onto it.
package etcdaudit

import (
	"context"
	"errors"
	"fmt"
	"iter"
	"math"

	"go.etcd.io/etcd/api/v3/mvccpb"
	"go.etcd.io/etcd/api/v3/v3rpc/rpctypes"
	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/attested-kms/attested-kms/audit"
)

// ErrUnavailable marks a failure to reach etcd or to get an answer from it
// (connection refused, no leader, deadline exceeded, closed client). The
// operation may or may not have taken effect; retrying an Append is safe
// because its compare-and-swap cannot store a sequence number twice.
var ErrUnavailable = errors.New("etcdaudit: etcd unavailable")

// DefaultPrefix is the key prefix used when none is given; it is the key
// store's (keystore/etcdstore), whose layout has no "audit/" directory.
const DefaultPrefix = "/attested-kms/"

// DefaultPageSize is how many records Range and Checkpoints read per etcd
// request. It bounds one response: an entry is typically well under a
// kilobyte, and audit's field limits keep even a maximal one under a
// megabyte.
const DefaultPageSize = 128

// Backend is an audit.Backend in etcd. It is safe for concurrent use.
type Backend struct {
	kv       clientv3.KV
	l        layout
	pageSize int64
	client   *clientv3.Client // for its lifetime; nil only in tests
	owned    bool             // Close closes client (Open made it)
}

var _ audit.Backend = (*Backend)(nil)

// New stores the log under prefix using client, which must not be nil and
// stays the caller's to close. An empty prefix means DefaultPrefix; a
// trailing "/" is added if missing, as keystore/etcdstore does, so both
// agree on where a given prefix puts keys.
func New(client *clientv3.Client, prefix string) *Backend {
	return &Backend{kv: client.KV, client: client, l: layout{prefix: normalizePrefix(prefix)}, pageSize: DefaultPageSize}
}

func normalizePrefix(p string) string {
	if p == "" {
		return DefaultPrefix
	}
	if p[len(p)-1] != '/' {
		p += "/"
	}
	return p
}

// Append implements audit.Backend: one transaction that stores e and moves
// the head to e.Seq if the head is at e.Seq-1 (absent for e.Seq 1) and no
// entry e.Seq exists yet.
func (b *Backend) Append(ctx context.Context, e audit.Entry) error {
	if err := b.begin(ctx); err != nil {
		return err
	}
	if e.Seq == 0 {
		return fmt.Errorf("etcdaudit: append seq 0: no entry precedes seq 1: %w", audit.ErrConflict)
	}
	line, err := audit.MarshalEntry(&e)
	if err != nil {
		return err
	}
	head, key := b.l.head(), b.l.entry(e.Seq)
	prev := clientv3.Compare(clientv3.Value(head), "=", formatSeq(e.Seq-1))
	if e.Seq == 1 {
		prev = clientv3.Compare(clientv3.CreateRevision(head), "=", 0)
	}
	resp, err := b.kv.Txn(ctx).
		If(prev, clientv3.Compare(clientv3.CreateRevision(key), "=", 0)).
		Then(clientv3.OpPut(key, string(line)), clientv3.OpPut(head, formatSeq(e.Seq))).
		Else(clientv3.OpGet(head)).
		Commit()
	if err != nil {
		return fail(ctx, fmt.Sprintf("append seq %d", e.Seq), err)
	}
	if !resp.Succeeded {
		return fmt.Errorf("etcdaudit: append seq %d after %s: %w", e.Seq, describeHead(resp), audit.ErrConflict)
	}
	return nil
}

// describeHead names the head a failed Append found, for its error.
func describeHead(resp *clientv3.TxnResponse) string {
	if len(resp.Responses) == 1 {
		if kvs := resp.Responses[0].GetResponseRange().GetKvs(); len(kvs) == 1 {
			if seq, ok := parseSeq(string(kvs[0].Value)); ok {
				return fmt.Sprintf("seq %d", seq)
			}
			return "an unreadable head"
		}
	}
	return "seq 0 (no head) or an existing entry at that seq"
}

// Last implements audit.Backend. It reads the head and the entry with the
// highest key in one transaction and insists that they agree: a store
// where they do not was edited by hand, and guessing which one is right
// would either hide the edit or make every Append conflict.
func (b *Backend) Last(ctx context.Context) (audit.Entry, error) {
	if err := b.begin(ctx); err != nil {
		return audit.Entry{}, err
	}
	entries := b.l.entries()
	resp, err := b.kv.Txn(ctx).Then(
		clientv3.OpGet(b.l.head()),
		clientv3.OpGet(entries, clientv3.WithPrefix(), clientv3.WithSort(clientv3.SortByKey, clientv3.SortDescend), clientv3.WithLimit(1)),
	).Commit()
	if err != nil {
		return audit.Entry{}, fail(ctx, "read head", err)
	}
	headKVs := resp.Responses[0].GetResponseRange().GetKvs()
	lastKVs := resp.Responses[1].GetResponseRange().GetKvs()
	if len(headKVs) == 0 && len(lastKVs) == 0 {
		return audit.Entry{}, nil
	}
	if len(headKVs) == 0 || len(lastKVs) == 0 {
		return audit.Entry{}, fmt.Errorf("etcdaudit: head and entries disagree (one is missing): %w", audit.ErrMalformed)
	}
	headSeq, ok := parseSeq(string(headKVs[0].Value))
	keySeq, ok2 := seqOf(lastKVs[0].Key, entries)
	if !ok || !ok2 || headSeq != keySeq {
		return audit.Entry{}, fmt.Errorf("etcdaudit: head %q does not name the last entry key %q: %w",
			headKVs[0].Value, lastKVs[0].Key, audit.ErrMalformed)
	}
	return decodeEntry(lastKVs[0].Key, lastKVs[0].Value, entries)
}

// Range implements audit.Backend. Each page is its own request at the
// latest revision, so entries appended while the caller handles a page
// are read too, and nothing is held between pages.
func (b *Backend) Range(ctx context.Context, from, to uint64) iter.Seq2[audit.Entry, error] {
	return func(yield func(audit.Entry, error) bool) {
		if from > to {
			return
		}
		entries := b.l.entries()
		end := clientv3.GetPrefixRangeEnd(entries)
		if to < math.MaxUint64 {
			end = b.l.entry(to + 1)
		}
		for start := b.l.entry(from); ; {
			kvs, _, err := b.page(ctx, start, end, 0)
			if err != nil {
				yield(audit.Entry{}, fmt.Errorf("etcdaudit: read entries: %w", err))
				return
			}
			// Stop on an empty page only: a short page may have been
			// followed by appends while the caller handled it.
			if len(kvs) == 0 {
				return
			}
			for _, kv := range kvs {
				e, err := decodeEntry(kv.Key, kv.Value, entries)
				if err != nil {
					yield(audit.Entry{}, err)
					return
				}
				if !yield(e, nil) {
					return
				}
			}
			// The next page starts just after the last key read (a key
			// with a zero byte appended is the next possible key), so a
			// stray key that does not parse cannot stall the loop.
			start = string(kvs[len(kvs)-1].Key) + "\x00"
		}
	}
}

// page reads at most b.pageSize keys in [start, end) in key order, at
// revision rev (0: the latest), and returns the revision it read at.
func (b *Backend) page(ctx context.Context, start, end string, rev int64) ([]*mvccpb.KeyValue, int64, error) {
	if err := b.begin(ctx); err != nil {
		return nil, 0, err
	}
	resp, err := b.kv.Get(ctx, start, clientv3.WithRange(end), clientv3.WithLimit(b.pageSize),
		clientv3.WithSort(clientv3.SortByKey, clientv3.SortAscend), clientv3.WithRev(rev))
	if err != nil {
		return nil, 0, fail(ctx, "range", err)
	}
	return resp.Kvs, resp.Header.Revision, nil
}

// PutCheckpoint implements audit.Backend.
func (b *Backend) PutCheckpoint(ctx context.Context, c audit.Checkpoint) error {
	if err := b.begin(ctx); err != nil {
		return err
	}
	line, err := audit.MarshalCheckpoint(&c)
	if err != nil {
		return err
	}
	key := b.l.checkpoint(c.Seq)
	resp, err := b.kv.Txn(ctx).
		If(clientv3.Compare(clientv3.CreateRevision(key), "=", 0)).
		Then(clientv3.OpPut(key, string(line))).
		Commit()
	if err != nil {
		return fail(ctx, fmt.Sprintf("store checkpoint at seq %d", c.Seq), err)
	}
	if !resp.Succeeded {
		return fmt.Errorf("etcdaudit: checkpoint at seq %d: %w", c.Seq, audit.ErrConflict)
	}
	return nil
}

// Checkpoints implements audit.Backend, reading page by page (a long-lived
// log has one checkpoint per CheckpointEvery entries), every page at the
// first page's revision so the list is one consistent snapshot.
func (b *Backend) Checkpoints(ctx context.Context) ([]audit.Checkpoint, error) {
	dir := b.l.checkpoints()
	end := clientv3.GetPrefixRangeEnd(dir)
	var (
		out []audit.Checkpoint
		rev int64
	)
	for start := dir; ; {
		kvs, r, err := b.page(ctx, start, end, rev)
		if err != nil {
			return nil, fmt.Errorf("etcdaudit: read checkpoints: %w", err)
		}
		for _, kv := range kvs {
			seq, ok := seqOf(kv.Key, dir)
			rec, err := audit.ParseLine(kv.Value)
			if !ok || err != nil || rec.Checkpoint == nil || rec.Checkpoint.Seq != seq {
				return nil, fmt.Errorf("etcdaudit: checkpoint record %q is corrupt: %w", kv.Key, errors.Join(audit.ErrMalformed, err))
			}
			out = append(out, *rec.Checkpoint)
		}
		if int64(len(kvs)) < b.pageSize {
			return out, nil
		}
		rev = r
		start = string(kvs[len(kvs)-1].Key) + "\x00"
	}
}

// decodeEntry parses a stored entry. A record whose key and Seq disagree
// is returned as it is, with the Seq it claims, for Verify to name (as
// boltaudit does); only an unreadable record or key is an error here.
func decodeEntry(key, value []byte, dir string) (audit.Entry, error) {
	_, ok := seqOf(key, dir)
	rec, err := audit.ParseLine(value)
	if !ok || err != nil || rec.Entry == nil {
		return audit.Entry{}, fmt.Errorf("etcdaudit: entry record %q is corrupt: %w", key, errors.Join(audit.ErrMalformed, err))
	}
	return *rec.Entry, nil
}

// begin is the common prologue of every request: a closed client would
// otherwise spend seconds in the client's retry loop before failing.
func (b *Backend) begin(ctx context.Context) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	if b.client != nil && b.client.Ctx().Err() != nil {
		return fmt.Errorf("etcdaudit: client closed: %w", ErrUnavailable)
	}
	return nil
}

// fail classifies an error from etcd. A caller's cancellation is reported
// as such; requests etcd refuses for their size are the entry's fault, not
// the store's; everything else means etcd could not be reached or did not
// answer in time.
func fail(ctx context.Context, op string, err error) error {
	if cerr := ctx.Err(); errors.Is(cerr, context.Canceled) {
		return fmt.Errorf("etcdaudit: %s: %w", op, cerr)
	}
	if errors.Is(err, rpctypes.ErrRequestTooLarge) || errors.Is(err, rpctypes.ErrTooManyOps) {
		return fmt.Errorf("etcdaudit: %s: %w", op, errors.Join(audit.ErrInvalidEntry, err))
	}
	return fmt.Errorf("etcdaudit: %s: %w", op, errors.Join(ErrUnavailable, err, ctx.Err()))
}
