package boltstore

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"reflect"
	"testing"
	"time"

	"github.com/attested-kms/attested-kms/keystore"
)

var t0 = time.Date(2026, 3, 1, 12, 0, 0, 0, time.UTC)

func openTemp(t *testing.T) (*Store, string) {
	t.Helper()
	path := filepath.Join(t.TempDir(), "kms.db")
	s, err := Open(path)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = s.Close() })
	return s, path
}

func testKey(kid string, version uint64) *keystore.Key {
	return &keystore.Key{
		KeySet: "default", KID: kid, Version: version, Suite: keystore.SuiteX25519,
		PublicKey: make([]byte, 32), State: keystore.StateActive,
		Sealed:  &keystore.SealedKey{Format: keystore.SealFormatV1, KEKURI: "local:///k", WrappedDEK: []byte{1, 2}, Nonce: []byte{3}, Ciphertext: []byte{4, 5}},
		Created: t0, Activates: t0, Expires: t0.Add(time.Hour), DestroyAfter: t0.Add(2 * time.Hour),
	}
}

func testSet() *keystore.KeySet {
	return &keystore.KeySet{Name: "default", Settings: keystore.DefaultKeySetSettings(), Created: t0,
		Policy: []byte("a: b\n"), PolicyVersion: 1, PolicyUpdated: t0}
}

func TestCreateOnce(t *testing.T) {
	ctx := context.Background()
	s, _ := openTemp(t)
	ks, k1 := testSet(), testKey("0123456789abcdef", 1)
	if err := s.CreateKeySet(ctx, ks, k1); err != nil {
		t.Fatal(err)
	}
	if ks.Revision != 1 || k1.Revision != 1 {
		t.Fatalf("revisions %d %d, want 1", ks.Revision, k1.Revision)
	}
	if err := s.CreateKeySet(ctx, testSet(), testKey("1123456789abcdef", 1)); !errors.Is(err, keystore.ErrAlreadyExists) {
		t.Fatalf("second CreateKeySet: err = %v", err)
	}
	// The same version again, even with another kid, is refused.
	if err := s.Commit(ctx, "default", []*keystore.Key{testKey("2123456789abcdef", 1)}, nil); !errors.Is(err, keystore.ErrAlreadyExists) {
		t.Fatalf("second create of v1: err = %v", err)
	}
	// All or nothing: a batch with a valid v2 and a duplicate v1 writes
	// neither.
	err := s.Commit(ctx, "default", []*keystore.Key{testKey("3123456789abcdef", 2), testKey("4123456789abcdef", 1)}, nil)
	if !errors.Is(err, keystore.ErrAlreadyExists) {
		t.Fatalf("mixed batch: err = %v", err)
	}
	keys, err := s.Keys(ctx, "default")
	if err != nil || len(keys) != 1 {
		t.Fatalf("after failed batch: %d keys, %v", len(keys), err)
	}
	if byKID, _ := s.KeysByKID(ctx, "default", "3123456789abcdef"); len(byKID) != 0 {
		t.Fatal("failed batch left a kid index entry")
	}
	if err := s.Commit(ctx, "nope", []*keystore.Key{testKey("3123456789abcdef", 2)}, nil); !errors.Is(err, keystore.ErrKeySetNotFound) {
		t.Fatalf("commit to missing set: err = %v", err)
	}
}

func TestCompareAndSwap(t *testing.T) {
	ctx := context.Background()
	s, _ := openTemp(t)
	ks, k1 := testSet(), testKey("0123456789abcdef", 1)
	if err := s.CreateKeySet(ctx, ks, k1); err != nil {
		t.Fatal(err)
	}
	stale := k1.Clone()
	k1.State = keystore.StateRetired
	if err := s.Commit(ctx, "default", nil, []*keystore.Key{k1}); err != nil {
		t.Fatal(err)
	}
	if k1.Revision != 2 {
		t.Fatalf("revision = %d, want 2", k1.Revision)
	}
	stale.State = keystore.StateDisabled
	if err := s.Commit(ctx, "default", nil, []*keystore.Key{stale}); !errors.Is(err, keystore.ErrConflict) {
		t.Fatalf("stale update: err = %v", err)
	}
	if stale.Revision != 1 {
		t.Fatal("failed commit changed the caller's revision")
	}
	moved := k1.Clone()
	moved.KID = "fedcba9876543210"
	if err := s.Commit(ctx, "default", nil, []*keystore.Key{moved}); !errors.Is(err, keystore.ErrInvalidArgument) {
		t.Fatalf("kid change: err = %v", err)
	}
	staleSet := ks.Clone()
	ks.PolicyVersion = 2
	if err := s.UpdateKeySet(ctx, ks); err != nil {
		t.Fatal(err)
	}
	if err := s.UpdateKeySet(ctx, staleSet); !errors.Is(err, keystore.ErrConflict) {
		t.Fatalf("stale key set update: err = %v", err)
	}
	if _, err := s.KeySet(ctx, "nope"); !errors.Is(err, keystore.ErrKeySetNotFound) {
		t.Fatalf("missing set: err = %v", err)
	}
}

func TestPersistsAcrossReopen(t *testing.T) {
	ctx := context.Background()
	s, path := openTemp(t)
	ks, k1 := testSet(), testKey("0123456789abcdef", 1)
	if err := s.CreateKeySet(ctx, ks, k1); err != nil {
		t.Fatal(err)
	}
	k2 := testKey("0123456789abcdef", 2) // same kid after a destroy
	k1.State, k1.Sealed, k1.Destroyed = keystore.StateDestroyed, nil, t0.Add(time.Hour)
	if err := s.Commit(ctx, "default", []*keystore.Key{k2}, []*keystore.Key{k1}); err != nil {
		t.Fatal(err)
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	s2, err := Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer s2.Close()
	gotSet, err := s2.KeySet(ctx, "default")
	if err != nil || !reflect.DeepEqual(gotSet, ks) {
		t.Fatalf("key set after reopen:\n%+v\nwant\n%+v (%v)", gotSet, ks, err)
	}
	keys, err := s2.KeysByKID(ctx, "default", "0123456789abcdef")
	if err != nil || len(keys) != 2 {
		t.Fatalf("KeysByKID: %d, %v", len(keys), err)
	}
	if !reflect.DeepEqual(keys[0], k1) || !reflect.DeepEqual(keys[1], k2) {
		t.Fatalf("keys after reopen:\n%+v\n%+v\nwant\n%+v\n%+v", keys[0], keys[1], k1, k2)
	}
	sets, err := s2.KeySets(ctx)
	if err != nil || len(sets) != 1 {
		t.Fatalf("KeySets: %v %v", sets, err)
	}
}

func TestFileMode(t *testing.T) {
	s, path := openTemp(t)
	fi, err := os.Stat(path)
	if err != nil {
		t.Fatal(err)
	}
	if fi.Mode().Perm() != 0o600 {
		t.Fatalf("mode %#o, want 0600", fi.Mode().Perm())
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	if err := os.Chmod(path, 0o644); err != nil {
		t.Fatal(err)
	}
	if _, err := Open(path); !errors.Is(err, keystore.ErrInvalidArgument) {
		t.Fatalf("open 0644 file: err = %v", err)
	}
}

func TestClosedStoreUnavailable(t *testing.T) {
	ctx := context.Background()
	s, _ := openTemp(t)
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	if _, err := s.KeySets(ctx); !errors.Is(err, keystore.ErrStoreUnavailable) {
		t.Fatalf("closed store: err = %v, want ErrStoreUnavailable", err)
	}
}
