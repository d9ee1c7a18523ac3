// Package boltstore is the single-node keystore.Store: one bbolt file holding
// key sets and keys as JSON records. Private keys are only ever stored
// sealed (keystore.SealedKey); this package never sees plaintext.
//
// Layout (schema 1):
//
//	meta/schema                      -> "1"
//	keysets/<name>                   -> key set record (JSON, package record)
//	keys/<name>/v/<u64be version>    -> key record (JSON, package record)
//	keys/<name>/kid/<kid><u64be ver> -> "" (index for lookups by kid)
//	metadata/<name>                  -> metadata record (JSON, package record)
//
// Fields added since schema 1 was first written (a key set's intermediate
// keys, a sealed key's generation and algorithm, the metadata bucket, a key
// set's earlier policy versions) are
// optional in the JSON, so older files open unchanged.
package boltstore

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"time"

	bolt "go.etcd.io/bbolt"

	"github.com/attested-kms/attested-kms/keystore"
	"github.com/attested-kms/attested-kms/keystore/internal/record"
)

const schemaVersion = "1"

var (
	bucketMeta     = []byte("meta")
	bucketKeySets  = []byte("keysets")
	bucketKeys     = []byte("keys")
	bucketVersion  = []byte("v")
	bucketKID      = []byte("kid")
	bucketMetadata = []byte("metadata")
	keySchema      = []byte("schema")
)

// Store is a keystore.Store backed by a bbolt file. It is safe for
// concurrent use.
type Store struct {
	db *bolt.DB
}

var _ keystore.Store = (*Store)(nil)

// Open opens or creates the store file at path with mode 0600. It refuses an
// existing file that group or others can access: records are ciphertext, but
// their metadata and policy are the service's integrity, and a loose mode
// usually means the file was copied carelessly.
func Open(path string) (*Store, error) {
	if fi, err := os.Stat(path); err == nil {
		if perm := fi.Mode().Perm(); perm&0o077 != 0 {
			return nil, fmt.Errorf("boltstore: %s has mode %#o, want no group/other access (chmod 600): %w", path, perm, keystore.ErrInvalidArgument)
		}
	} else if !errors.Is(err, fs.ErrNotExist) {
		return nil, fmt.Errorf("boltstore: stat %s: %w", path, errors.Join(keystore.ErrStoreUnavailable, err))
	}
	// The timeout turns a second process holding the file lock into an
	// error instead of a hang.
	db, err := bolt.Open(path, 0o600, &bolt.Options{Timeout: 2 * time.Second})
	if err != nil {
		return nil, fmt.Errorf("boltstore: open %s: %w", path, errors.Join(keystore.ErrStoreUnavailable, err))
	}
	s := &Store{db: db}
	if err := s.init(); err != nil {
		_ = db.Close()
		return nil, err
	}
	return s, nil
}

func (s *Store) init() error {
	return s.update(func(tx *bolt.Tx) error {
		for _, b := range [][]byte{bucketMeta, bucketKeySets, bucketKeys, bucketMetadata} {
			if _, err := tx.CreateBucketIfNotExists(b); err != nil {
				return fmt.Errorf("boltstore: create bucket %s: %w", b, errors.Join(keystore.ErrStoreUnavailable, err))
			}
		}
		meta := tx.Bucket(bucketMeta)
		switch v := meta.Get(keySchema); {
		case v == nil:
			return meta.Put(keySchema, []byte(schemaVersion))
		case string(v) != schemaVersion:
			return fmt.Errorf("boltstore: file has schema %q, this build reads %q", v, schemaVersion)
		}
		return nil
	})
}

// DB is the open bbolt file, for components that keep their own buckets
// beside the store's (the audit log). The Store still owns it: do not
// close it.
func (s *Store) DB() *bolt.DB { return s.db }

// Close closes the file.
func (s *Store) Close() error {
	if err := s.db.Close(); err != nil {
		return fmt.Errorf("boltstore: close: %w", err)
	}
	return nil
}

// update runs fn in a write transaction. Errors fn returns are passed
// through as they are (they carry keystore sentinels); errors of bbolt
// itself (I/O, closed database) are marked ErrStoreUnavailable.
func (s *Store) update(fn func(tx *bolt.Tx) error) error {
	return run(s.db.Update, "write", fn)
}

// view is update for a read transaction.
func (s *Store) view(fn func(tx *bolt.Tx) error) error {
	return run(s.db.View, "read", fn)
}

func run(txn func(func(*bolt.Tx) error) error, op string, fn func(tx *bolt.Tx) error) error {
	var inner error
	err := txn(func(tx *bolt.Tx) error {
		inner = fn(tx)
		return inner
	})
	if inner != nil {
		return inner
	}
	if err != nil {
		return fmt.Errorf("boltstore: %s: %w", op, errors.Join(keystore.ErrStoreUnavailable, err))
	}
	return nil
}

// CreateKeySet implements keystore.Store.
func (s *Store) CreateKeySet(ctx context.Context, ks *keystore.KeySet, first *keystore.Key) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	if !keystore.ValidKeySetName(ks.Name) {
		return fmt.Errorf("boltstore: key set name %q: %w", ks.Name, keystore.ErrInvalidArgument)
	}
	err := s.update(func(tx *bolt.Tx) error {
		sets := tx.Bucket(bucketKeySets)
		if sets.Get([]byte(ks.Name)) != nil {
			return fmt.Errorf("boltstore: key set %q: %w", ks.Name, keystore.ErrAlreadyExists)
		}
		rec, err := encodeKeySet(ks, 1)
		if err != nil {
			return err
		}
		if err := sets.Put([]byte(ks.Name), rec); err != nil {
			return err
		}
		kb, err := tx.Bucket(bucketKeys).CreateBucketIfNotExists([]byte(ks.Name))
		if err != nil {
			return err
		}
		for _, name := range [][]byte{bucketVersion, bucketKID} {
			if _, err := kb.CreateBucketIfNotExists(name); err != nil {
				return err
			}
		}
		if first != nil {
			return createKey(kb, ks.Name, first)
		}
		return nil
	})
	if err != nil {
		return err
	}
	ks.Revision = 1
	if first != nil {
		first.Revision = 1
	}
	return nil
}

// KeySet implements keystore.Store.
func (s *Store) KeySet(ctx context.Context, name string) (*keystore.KeySet, error) {
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	var ks *keystore.KeySet
	err := s.view(func(tx *bolt.Tx) error {
		v := tx.Bucket(bucketKeySets).Get([]byte(name))
		if v == nil {
			return fmt.Errorf("boltstore: key set %q: %w", name, keystore.ErrKeySetNotFound)
		}
		var err error
		ks, err = decodeKeySet(v)
		return err
	})
	return ks, err
}

// KeySets implements keystore.Store.
func (s *Store) KeySets(ctx context.Context) ([]*keystore.KeySet, error) {
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	var out []*keystore.KeySet
	err := s.view(func(tx *bolt.Tx) error {
		return tx.Bucket(bucketKeySets).ForEach(func(_, v []byte) error {
			ks, err := decodeKeySet(v)
			if err != nil {
				return err
			}
			out = append(out, ks)
			return nil
		})
	})
	return out, err
}

// UpdateKeySet implements keystore.Store.
func (s *Store) UpdateKeySet(ctx context.Context, ks *keystore.KeySet) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	rev := ks.Revision + 1
	err := s.update(func(tx *bolt.Tx) error {
		sets := tx.Bucket(bucketKeySets)
		v := sets.Get([]byte(ks.Name))
		if v == nil {
			return fmt.Errorf("boltstore: key set %q: %w", ks.Name, keystore.ErrKeySetNotFound)
		}
		cur, err := decodeKeySet(v)
		if err != nil {
			return err
		}
		if cur.Revision != ks.Revision {
			return fmt.Errorf("boltstore: key set %q revision %d, stored %d: %w", ks.Name, ks.Revision, cur.Revision, keystore.ErrConflict)
		}
		rec, err := encodeKeySet(ks, rev)
		if err != nil {
			return err
		}
		return sets.Put([]byte(ks.Name), rec)
	})
	if err != nil {
		return err
	}
	ks.Revision = rev
	return nil
}

// keysBucket returns keys/<name>, or ErrKeySetNotFound.
func keysBucket(tx *bolt.Tx, keyset string) (*bolt.Bucket, error) {
	if tx.Bucket(bucketKeySets).Get([]byte(keyset)) == nil {
		return nil, fmt.Errorf("boltstore: key set %q: %w", keyset, keystore.ErrKeySetNotFound)
	}
	kb := tx.Bucket(bucketKeys).Bucket([]byte(keyset))
	if kb == nil || kb.Bucket(bucketVersion) == nil || kb.Bucket(bucketKID) == nil {
		return nil, fmt.Errorf("boltstore: key set %q has no key buckets (corrupt file)", keyset)
	}
	return kb, nil
}

// Keys implements keystore.Store.
func (s *Store) Keys(ctx context.Context, keyset string) ([]*keystore.Key, error) {
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	var out []*keystore.Key
	err := s.view(func(tx *bolt.Tx) error {
		kb, err := keysBucket(tx, keyset)
		if err != nil {
			return err
		}
		// Big-endian version keys iterate in version order.
		return kb.Bucket(bucketVersion).ForEach(func(_, v []byte) error {
			k, err := decodeKey(v)
			if err != nil {
				return err
			}
			out = append(out, k)
			return nil
		})
	})
	return out, err
}

// KeysByKID implements keystore.Store.
func (s *Store) KeysByKID(ctx context.Context, keyset, kid string) ([]*keystore.Key, error) {
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	var out []*keystore.Key
	err := s.view(func(tx *bolt.Tx) error {
		kb, err := keysBucket(tx, keyset)
		if err != nil {
			return err
		}
		versions := kb.Bucket(bucketVersion)
		c := kb.Bucket(bucketKID).Cursor()
		prefix := []byte(kid)
		for ik, _ := c.Seek(prefix); ik != nil && len(ik) == len(kid)+8 && string(ik[:len(kid)]) == kid; ik, _ = c.Next() {
			v := versions.Get(ik[len(kid):])
			if v == nil {
				return fmt.Errorf("boltstore: kid index of %q points to missing version (corrupt file)", keyset)
			}
			k, err := decodeKey(v)
			if err != nil {
				return err
			}
			out = append(out, k)
		}
		return nil
	})
	return out, err
}

// Commit implements keystore.Store.
func (s *Store) Commit(ctx context.Context, keyset string, create, update []*keystore.Key) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	newRev := make([]uint64, len(update))
	err := s.update(func(tx *bolt.Tx) error {
		kb, err := keysBucket(tx, keyset)
		if err != nil {
			return err
		}
		for _, k := range create {
			if err := createKey(kb, keyset, k); err != nil {
				return err
			}
		}
		versions := kb.Bucket(bucketVersion)
		for i, k := range update {
			if k.KeySet != keyset {
				return fmt.Errorf("boltstore: key of set %q committed to %q: %w", k.KeySet, keyset, keystore.ErrInvalidArgument)
			}
			vk := versionKey(k.Version)
			v := versions.Get(vk)
			if v == nil {
				return fmt.Errorf("boltstore: key %s/%s v%d: %w", keyset, k.KID, k.Version, keystore.ErrKeyNotFound)
			}
			cur, err := decodeKey(v)
			if err != nil {
				return err
			}
			if cur.Revision != k.Revision {
				return fmt.Errorf("boltstore: key %s/%s v%d revision %d, stored %d: %w", keyset, k.KID, k.Version, k.Revision, cur.Revision, keystore.ErrConflict)
			}
			// The kid index and the AAD of the sealed key depend on these.
			if cur.KID != k.KID || cur.Suite != k.Suite {
				return fmt.Errorf("boltstore: key %s v%d: kid and suite are immutable: %w", keyset, k.Version, keystore.ErrInvalidArgument)
			}
			newRev[i] = cur.Revision + 1
			rec, err := encodeKey(k, newRev[i])
			if err != nil {
				return err
			}
			if err := versions.Put(vk, rec); err != nil {
				return err
			}
		}
		return nil
	})
	if err != nil {
		return err
	}
	for _, k := range create {
		k.Revision = 1
	}
	for i, k := range update {
		k.Revision = newRev[i]
	}
	return nil
}

// createKey stores k in kb unless its version exists (create-once).
func createKey(kb *bolt.Bucket, keyset string, k *keystore.Key) error {
	if k.KeySet != keyset {
		return fmt.Errorf("boltstore: key of set %q created in %q: %w", k.KeySet, keyset, keystore.ErrInvalidArgument)
	}
	if !keystore.ValidKID(k.KID) || k.Version == 0 {
		return fmt.Errorf("boltstore: key %q v%d: malformed kid or version: %w", k.KID, k.Version, keystore.ErrInvalidArgument)
	}
	versions := kb.Bucket(bucketVersion)
	vk := versionKey(k.Version)
	if versions.Get(vk) != nil {
		return fmt.Errorf("boltstore: key %s v%d: %w", keyset, k.Version, keystore.ErrAlreadyExists)
	}
	rec, err := encodeKey(k, 1)
	if err != nil {
		return err
	}
	if err := versions.Put(vk, rec); err != nil {
		return err
	}
	return kb.Bucket(bucketKID).Put(append([]byte(k.KID), vk...), nil)
}

// Metadata implements keystore.Store.
func (s *Store) Metadata(ctx context.Context, name string) ([]byte, uint64, error) {
	if err := ctx.Err(); err != nil {
		return nil, 0, err
	}
	var (
		value []byte
		rev   uint64
	)
	err := s.view(func(tx *bolt.Tx) error {
		v := tx.Bucket(bucketMetadata).Get([]byte(name))
		if v == nil {
			return fmt.Errorf("boltstore: metadata %q: %w", name, keystore.ErrMetadataNotFound)
		}
		var err error
		if value, rev, err = record.DecodeMetadata(v); err != nil {
			return fmt.Errorf("boltstore: metadata %q: %w", name, err)
		}
		return nil
	})
	if err != nil {
		return nil, 0, err
	}
	return value, rev, nil
}

// PutMetadata implements keystore.Store.
func (s *Store) PutMetadata(ctx context.Context, name string, value []byte, revision uint64) (uint64, error) {
	if err := ctx.Err(); err != nil {
		return 0, err
	}
	if name == "" {
		return 0, fmt.Errorf("boltstore: empty metadata name: %w", keystore.ErrInvalidArgument)
	}
	err := s.update(func(tx *bolt.Tx) error {
		b := tx.Bucket(bucketMetadata)
		v := b.Get([]byte(name))
		switch {
		case v == nil && revision != 0:
			return fmt.Errorf("boltstore: metadata %q: %w", name, keystore.ErrMetadataNotFound)
		case v != nil && revision == 0:
			return fmt.Errorf("boltstore: metadata %q: %w", name, keystore.ErrAlreadyExists)
		case v != nil:
			_, cur, err := record.DecodeMetadata(v)
			if err != nil {
				return fmt.Errorf("boltstore: metadata %q: %w", name, err)
			}
			if cur != revision {
				return fmt.Errorf("boltstore: metadata %q revision %d, stored %d: %w", name, revision, cur, keystore.ErrConflict)
			}
		}
		rec, err := record.EncodeMetadata(value, revision+1, true)
		if err != nil {
			return fmt.Errorf("boltstore: metadata %q: %w", name, err)
		}
		return b.Put([]byte(name), rec)
	})
	if err != nil {
		return 0, err
	}
	return revision + 1, nil
}

func versionKey(v uint64) []byte { return binary.BigEndian.AppendUint64(nil, v) }

// Records are the JSON layout of package record, each carrying its own
// revision; these wrappers fill Revision from it and name this package in
// errors.

func encodeKeySet(ks *keystore.KeySet, rev uint64) ([]byte, error) {
	b, err := record.EncodeKeySet(ks, rev, true)
	if err != nil {
		return nil, fmt.Errorf("boltstore: %w", err)
	}
	return b, nil
}

func decodeKeySet(b []byte) (*keystore.KeySet, error) {
	ks, rev, err := record.DecodeKeySet(b)
	if err != nil {
		return nil, fmt.Errorf("boltstore: %w", err)
	}
	ks.Revision = rev
	return ks, nil
}

func encodeKey(k *keystore.Key, rev uint64) ([]byte, error) {
	b, err := record.EncodeKey(k, rev, true)
	if err != nil {
		return nil, fmt.Errorf("boltstore: %w", err)
	}
	return b, nil
}

func decodeKey(b []byte) (*keystore.Key, error) {
	k, rev, err := record.DecodeKey(b)
	if err != nil {
		return nil, fmt.Errorf("boltstore: %w", err)
	}
	k.Revision = rev
	return k, nil
}
