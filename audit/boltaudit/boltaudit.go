// Package boltaudit is the single-node audit.Backend: entries and
// checkpoints in their own bucket of a bbolt file, which may be the
// keystore's file (bucket "audit" does not collide with boltstore's).
//
// Layout:
//
//	audit/entries/<u64be seq>      -> the entry's export line (audit.MarshalEntry)
//	audit/checkpoints/<u64be seq>  -> the checkpoint's export line
//
// Storing the export line means the bytes a SIEM receives are the bytes
// that were stored, and reading back goes through the same strict parser.
package boltaudit

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"iter"
	"time"

	bolt "go.etcd.io/bbolt"
	berrors "go.etcd.io/bbolt/errors"

	"github.com/attested-kms/attested-kms/audit"
)

var (
	bucketAudit       = []byte("audit")
	bucketEntries     = []byte("entries")
	bucketCheckpoints = []byte("checkpoints")
)

// rangeBatch is how many entries Range reads per read transaction. Yielding
// between transactions lets the caller append while iterating (bbolt would
// deadlock a writer waiting on a read transaction held in its own goroutine
// when the file must grow) and keeps long exports from pinning old pages.
const rangeBatch = 256

// Backend is an audit.Backend in a bbolt file. It is safe for concurrent
// use.
type Backend struct {
	db    *bolt.DB
	owned bool // Close closes db
}

var _ audit.Backend = (*Backend)(nil)

// New uses db, creating the audit buckets unless db is read-only. The
// caller keeps ownership of db.
func New(db *bolt.DB) (*Backend, error) {
	if db == nil {
		return nil, fmt.Errorf("boltaudit: no database: %w", audit.ErrInvalidArgument)
	}
	b := &Backend{db: db}
	if db.IsReadOnly() {
		return b, nil
	}
	err := db.Update(func(tx *bolt.Tx) error {
		root, err := tx.CreateBucketIfNotExists(bucketAudit)
		if err != nil {
			return err
		}
		for _, name := range [][]byte{bucketEntries, bucketCheckpoints} {
			if _, err := root.CreateBucketIfNotExists(name); err != nil {
				return err
			}
		}
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("boltaudit: create buckets: %w", err)
	}
	return b, nil
}

// Open opens or creates the bbolt file at path (mode 0600). Read-only
// opens share the file with other readers but wait at most a few seconds
// for a writer (a running server) to let go.
func Open(path string, readOnly bool) (*Backend, error) {
	db, err := bolt.Open(path, 0o600, &bolt.Options{Timeout: 2 * time.Second, ReadOnly: readOnly})
	if err != nil {
		if errors.Is(err, berrors.ErrTimeout) {
			err = fmt.Errorf("%w (is a server using the file? copy it or stop the server)", err)
		}
		return nil, fmt.Errorf("boltaudit: open %s: %w", path, err)
	}
	b, err := New(db)
	if err != nil {
		_ = db.Close()
		return nil, err
	}
	b.owned = true
	return b, nil
}

// Close closes the file if Open opened it.
func (b *Backend) Close() error {
	if !b.owned {
		return nil
	}
	if err := b.db.Close(); err != nil {
		return fmt.Errorf("boltaudit: close: %w", err)
	}
	return nil
}

func seqKey(seq uint64) []byte { return binary.BigEndian.AppendUint64(nil, seq) }

// sub returns the named bucket under "audit", or nil if a read-only file
// has none (an empty log).
func sub(tx *bolt.Tx, name []byte) *bolt.Bucket {
	root := tx.Bucket(bucketAudit)
	if root == nil {
		return nil
	}
	return root.Bucket(name)
}

// Append implements audit.Backend.
func (b *Backend) Append(ctx context.Context, e audit.Entry) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	line, err := audit.MarshalEntry(&e)
	if err != nil {
		return err
	}
	return b.update(func(tx *bolt.Tx) error {
		bk := sub(tx, bucketEntries)
		var last uint64
		if k, _ := bk.Cursor().Last(); k != nil {
			last = binary.BigEndian.Uint64(k)
		}
		if e.Seq != last+1 {
			return fmt.Errorf("boltaudit: append seq %d after seq %d: %w", e.Seq, last, audit.ErrConflict)
		}
		return bk.Put(seqKey(e.Seq), line)
	})
}

// Last implements audit.Backend.
func (b *Backend) Last(ctx context.Context) (audit.Entry, error) {
	if err := ctx.Err(); err != nil {
		return audit.Entry{}, err
	}
	var e audit.Entry
	err := b.view(func(tx *bolt.Tx) error {
		bk := sub(tx, bucketEntries)
		if bk == nil {
			return nil
		}
		k, v := bk.Cursor().Last()
		if k == nil {
			return nil
		}
		var err error
		e, err = decodeEntry(k, v)
		return err
	})
	return e, err
}

// Range implements audit.Backend.
func (b *Backend) Range(ctx context.Context, from, to uint64) iter.Seq2[audit.Entry, error] {
	return func(yield func(audit.Entry, error) bool) {
		for from <= to {
			if err := ctx.Err(); err != nil {
				yield(audit.Entry{}, err)
				return
			}
			batch := make([]audit.Entry, 0, rangeBatch)
			err := b.view(func(tx *bolt.Tx) error {
				bk := sub(tx, bucketEntries)
				if bk == nil {
					return nil
				}
				c := bk.Cursor()
				for k, v := c.Seek(seqKey(from)); k != nil && len(batch) < rangeBatch; k, v = c.Next() {
					if binary.BigEndian.Uint64(k) > to {
						break
					}
					e, err := decodeEntry(k, v)
					if err != nil {
						return err
					}
					batch = append(batch, e)
				}
				return nil
			})
			if err != nil {
				yield(audit.Entry{}, err)
				return
			}
			for _, e := range batch {
				if !yield(e, nil) {
					return
				}
			}
			// Stop on an empty batch only: entries appended while the
			// caller handled this batch are yielded too, as Memory does.
			if len(batch) == 0 {
				return
			}
			last := batch[len(batch)-1].Seq
			if last == ^uint64(0) {
				return
			}
			from = last + 1
		}
	}
}

// PutCheckpoint implements audit.Backend.
func (b *Backend) PutCheckpoint(ctx context.Context, c audit.Checkpoint) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	line, err := audit.MarshalCheckpoint(&c)
	if err != nil {
		return err
	}
	return b.update(func(tx *bolt.Tx) error {
		bk := sub(tx, bucketCheckpoints)
		if bk.Get(seqKey(c.Seq)) != nil {
			return fmt.Errorf("boltaudit: checkpoint at seq %d: %w", c.Seq, audit.ErrConflict)
		}
		return bk.Put(seqKey(c.Seq), line)
	})
}

// Checkpoints implements audit.Backend.
func (b *Backend) Checkpoints(ctx context.Context) ([]audit.Checkpoint, error) {
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	var out []audit.Checkpoint
	err := b.view(func(tx *bolt.Tx) error {
		bk := sub(tx, bucketCheckpoints)
		if bk == nil {
			return nil
		}
		return bk.ForEach(func(k, v []byte) error {
			rec, err := audit.ParseLine(v)
			if err != nil || rec.Checkpoint == nil || len(k) != 8 || rec.Checkpoint.Seq != binary.BigEndian.Uint64(k) {
				return fmt.Errorf("boltaudit: checkpoint record %x is corrupt: %w", k, errors.Join(audit.ErrMalformed, err))
			}
			out = append(out, *rec.Checkpoint)
			return nil
		})
	})
	return out, err
}

// decodeEntry parses a stored entry. A record whose key and Seq disagree
// is reported as it is, with the Seq it claims: the chain check in Verify
// will name it; only unreadable bytes are an error here.
func decodeEntry(k, v []byte) (audit.Entry, error) {
	rec, err := audit.ParseLine(v)
	if err != nil || rec.Entry == nil || len(k) != 8 {
		return audit.Entry{}, fmt.Errorf("boltaudit: entry record %x is corrupt: %w", k, errors.Join(audit.ErrMalformed, err))
	}
	return *rec.Entry, nil
}

// update runs fn in a write transaction; errors fn returns (ErrConflict)
// pass through unwrapped so callers can test for them.
func (b *Backend) update(fn func(tx *bolt.Tx) error) error {
	var inner error
	err := b.db.Update(func(tx *bolt.Tx) error {
		if tx.Bucket(bucketAudit) == nil {
			return errors.New("audit buckets missing (read-only file?)")
		}
		inner = fn(tx)
		return inner
	})
	if inner != nil {
		return inner
	}
	if err != nil {
		return fmt.Errorf("boltaudit: write: %w", err)
	}
	return nil
}

func (b *Backend) view(fn func(tx *bolt.Tx) error) error {
	if err := b.db.View(fn); err != nil {
		return fmt.Errorf("boltaudit: read: %w", err)
	}
	return nil
}
