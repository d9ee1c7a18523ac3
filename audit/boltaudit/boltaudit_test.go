package boltaudit_test

import (
	"context"
	"crypto/ed25519"
	"encoding/binary"
	"errors"
	"fmt"
	"path/filepath"
	"sync"
	"testing"

	bolt "go.etcd.io/bbolt"

	"github.com/attested-kms/attested-kms/audit"
	"github.com/attested-kms/attested-kms/audit/audittest"
	"github.com/attested-kms/attested-kms/audit/boltaudit"
)

func openTemp(t testing.TB) (*boltaudit.Backend, string) {
	t.Helper()
	path := filepath.Join(t.TempDir(), "audit.db")
	b, err := boltaudit.Open(path, false)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = b.Close() })
	return b, path
}

func key() ed25519.PrivateKey { return ed25519.NewKeyFromSeed(make([]byte, ed25519.SeedSize)) }

func entry(i int) audit.Entry {
	return audit.Entry{Kind: audit.KindRelease, Actor: fmt.Sprintf("sub-%d", i), KeySet: "default",
		KID: fmt.Sprintf("%016x", i), Outcome: audit.OutcomeGranted, Details: map[string]string{"i": fmt.Sprint(i)}}
}

func TestBackendContract(t *testing.T) {
	audittest.Run(t, func(t *testing.T) audit.Backend {
		b, _ := openTemp(t)
		return b
	})
}

// The audit bucket lives beside other buckets in a file the caller owns
// (the keystore's), and survives a reopen read-only.
func TestSharedFileAndReadOnlyReopen(t *testing.T) {
	ctx := context.Background()
	path := filepath.Join(t.TempDir(), "kms.db")
	db, err := bolt.Open(path, 0o600, nil)
	if err != nil {
		t.Fatal(err)
	}
	if err := db.Update(func(tx *bolt.Tx) error { _, err := tx.CreateBucket([]byte("keysets")); return err }); err != nil {
		t.Fatal(err)
	}
	b, err := boltaudit.New(db)
	if err != nil {
		t.Fatal(err)
	}
	l, err := audit.New(ctx, b, key(), audit.Options{CheckpointEvery: 5})
	if err != nil {
		t.Fatal(err)
	}
	for i := range 12 {
		if _, err := l.Append(ctx, entry(i)); err != nil {
			t.Fatal(err)
		}
	}
	if err := b.Close(); err != nil { // not owned: must leave db open
		t.Fatal(err)
	}
	if _, err := b.Last(ctx); err != nil {
		t.Fatalf("Close closed a database the backend does not own: %v", err)
	}
	if err := db.Close(); err != nil {
		t.Fatal(err)
	}

	ro, err := boltaudit.Open(path, true)
	if err != nil {
		t.Fatal(err)
	}
	defer ro.Close()
	res, err := audit.VerifyBackend(ctx, ro, key().Public().(ed25519.PublicKey))
	if err != nil || res.Entries != 12 || res.LastCheckpoint != 10 {
		t.Fatalf("VerifyBackend(read-only) = %+v, %v", res, err)
	}
	if err := ro.Append(ctx, audit.Entry{Seq: 13}); err == nil {
		t.Fatal("append to a read-only file succeeded")
	}
}

// A read-only open of a file without an audit bucket is an empty log.
func TestReadOnlyWithoutBucket(t *testing.T) {
	path := filepath.Join(t.TempDir(), "other.db")
	db, err := bolt.Open(path, 0o600, nil)
	if err != nil {
		t.Fatal(err)
	}
	_ = db.Close()
	b, err := boltaudit.Open(path, true)
	if err != nil {
		t.Fatal(err)
	}
	defer b.Close()
	if last, err := b.Last(context.Background()); err != nil || last.Seq != 0 {
		t.Fatalf("Last = %d, %v", last.Seq, err)
	}
	if cps, err := b.Checkpoints(context.Background()); err != nil || len(cps) != 0 {
		t.Fatalf("Checkpoints = %v, %v", cps, err)
	}
}

// Tampering with the file directly (someone with write access to it) is
// named by Verify.
func TestTamperedFile(t *testing.T) {
	ctx := context.Background()
	seqKey := func(seq uint64) []byte { return binary.BigEndian.AppendUint64(nil, seq) }
	entries := func(tx *bolt.Tx) *bolt.Bucket { return tx.Bucket([]byte("audit")).Bucket([]byte("entries")) }
	for name, c := range map[string]struct {
		tamper func(tx *bolt.Tx) error
		p      audit.Problem
		seq    uint64
	}{
		"delete": {func(tx *bolt.Tx) error { return entries(tx).Delete(seqKey(17)) }, audit.ProblemRemoved, 17},
		"swap": {func(tx *bolt.Tx) error {
			bk := entries(tx)
			a, b := append([]byte(nil), bk.Get(seqKey(17))...), append([]byte(nil), bk.Get(seqKey(18))...)
			if err := bk.Put(seqKey(17), b); err != nil {
				return err
			}
			return bk.Put(seqKey(18), a)
		}, audit.ProblemReordered, 18},
		"truncate": {func(tx *bolt.Tx) error {
			for seq := uint64(21); seq <= 30; seq++ {
				if err := entries(tx).Delete(seqKey(seq)); err != nil {
					return err
				}
			}
			return nil
		}, audit.ProblemTruncated, 21},
	} {
		t.Run(name, func(t *testing.T) {
			path := filepath.Join(t.TempDir(), "audit.db")
			db, err := bolt.Open(path, 0o600, nil)
			if err != nil {
				t.Fatal(err)
			}
			defer db.Close()
			b, err := boltaudit.New(db)
			if err != nil {
				t.Fatal(err)
			}
			l, err := audit.New(ctx, b, key(), audit.Options{CheckpointEvery: 25})
			if err != nil {
				t.Fatal(err)
			}
			for i := range 30 {
				if _, err := l.Append(ctx, entry(i)); err != nil {
					t.Fatal(err)
				}
			}
			if err := db.Update(c.tamper); err != nil {
				t.Fatal(err)
			}
			_, err = audit.VerifyBackend(ctx, b, key().Public().(ed25519.PublicKey))
			var ve *audit.VerifyError
			if !errors.As(err, &ve) || ve.Problem != c.p || ve.Seq != c.seq {
				t.Fatalf("VerifyBackend = %v, want %s at seq %d", err, c.p, c.seq)
			}
		})
	}
}

// 50 goroutines appending to a bbolt-backed Log leave a valid, dense chain.
func TestConcurrentAppend(t *testing.T) {
	ctx := context.Background()
	b, _ := openTemp(t)
	l, err := audit.New(ctx, b, key(), audit.Options{CheckpointEvery: 50})
	if err != nil {
		t.Fatal(err)
	}
	const workers, each = 50, 4
	var wg sync.WaitGroup
	errs := make(chan error, workers*each)
	for w := range workers {
		wg.Go(func() {
			for i := range each {
				if _, err := l.Append(ctx, entry(w*each+i)); err != nil {
					errs <- err
				}
			}
		})
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Fatal(err)
	}
	res, err := audit.VerifyBackend(ctx, b, key().Public().(ed25519.PublicKey))
	if err != nil || res.Entries != workers*each || res.Last != workers*each || res.LastCheckpoint != workers*each {
		t.Fatalf("VerifyBackend = %+v, %v", res, err)
	}
}

// BenchmarkAppend measures one durable append (one bbolt transaction with
// its fsync) including hashing and encoding.
func BenchmarkAppend(b *testing.B) {
	ctx := context.Background()
	be, _ := openTemp(b)
	l, err := audit.New(ctx, be, key(), audit.Options{})
	if err != nil {
		b.Fatal(err)
	}
	e := entry(1)
	b.ReportAllocs()
	for b.Loop() {
		if _, err := l.Append(ctx, e); err != nil {
			b.Fatal(err)
		}
	}
}
