package etcdstore

import (
	"context"
	"errors"
	"reflect"
	"testing"
	"time"

	"github.com/attested-kms/attested-kms/keystore"
	"github.com/attested-kms/attested-kms/keystore/kek"
)

// The behaviour boltstore's tests pin down, against etcd.

func TestCreateOnce(t *testing.T) {
	ctx := t.Context()
	s := open(t, "/kms/", endpoint(startEtcd(t)))
	ks, k1 := testSet(), testKey("0123456789abcdef", 1)
	if err := s.CreateKeySet(ctx, ks, k1); err != nil {
		t.Fatal(err)
	}
	if ks.Revision == 0 || k1.Revision != ks.Revision {
		t.Fatalf("revisions %d %d, want one non-zero revision for the one transaction", ks.Revision, k1.Revision)
	}
	if err := s.CreateKeySet(ctx, testSet(), testKey("1123456789abcdef", 1)); !errors.Is(err, keystore.ErrAlreadyExists) {
		t.Fatalf("second CreateKeySet: err = %v", err)
	}
	if byKID, _ := s.KeysByKID(ctx, "default", "1123456789abcdef"); len(byKID) != 0 {
		t.Fatal("refused CreateKeySet wrote its key")
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
	// A batch naming one version twice is refused before anything is sent.
	if err := s.Commit(ctx, "default", []*keystore.Key{testKey("3123456789abcdef", 2), testKey("4123456789abcdef", 2)}, nil); !errors.Is(err, keystore.ErrAlreadyExists) {
		t.Fatalf("batch creating v2 twice: err = %v", err)
	}
}

func TestCompareAndSwap(t *testing.T) {
	ctx := t.Context()
	s := open(t, "/kms/", endpoint(startEtcd(t)))
	ks, k1 := testSet(), testKey("0123456789abcdef", 1)
	if err := s.CreateKeySet(ctx, ks, k1); err != nil {
		t.Fatal(err)
	}
	stale := k1.Clone()
	created := k1.Revision
	k1.State = keystore.StateRetired
	if err := s.Commit(ctx, "default", nil, []*keystore.Key{k1}); err != nil {
		t.Fatal(err)
	}
	if k1.Revision <= created {
		t.Fatalf("revision %d after update, want > %d", k1.Revision, created)
	}
	stale.State = keystore.StateDisabled
	if err := s.Commit(ctx, "default", nil, []*keystore.Key{stale}); !errors.Is(err, keystore.ErrConflict) {
		t.Fatalf("stale update: err = %v", err)
	}
	if stale.Revision != created {
		t.Fatal("failed commit changed the caller's revision")
	}
	moved := k1.Clone()
	moved.KID = "fedcba9876543210"
	if err := s.Commit(ctx, "default", nil, []*keystore.Key{moved}); !errors.Is(err, keystore.ErrInvalidArgument) {
		t.Fatalf("kid change: err = %v", err)
	}
	ghost := testKey("fedcba9876543210", 9)
	ghost.Revision = k1.Revision
	if err := s.Commit(ctx, "default", nil, []*keystore.Key{ghost}); !errors.Is(err, keystore.ErrKeyNotFound) {
		t.Fatalf("update of a missing version: err = %v", err)
	}
	got, err := s.KeysByKID(ctx, "default", k1.KID)
	if err != nil || len(got) != 1 || !reflect.DeepEqual(got[0], k1) {
		t.Fatalf("after refused updates: %+v, %v; want %+v", got, err, k1)
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
	// An update must not create: a set that does not exist stays absent
	// whatever revision the caller claims (0 is what etcd reports for an
	// absent key's ModRevision).
	for _, rev := range []uint64{0, ks.Revision} {
		ghostSet := testSet()
		ghostSet.Name, ghostSet.Revision = "ghost", rev
		if err := s.UpdateKeySet(ctx, ghostSet); !errors.Is(err, keystore.ErrKeySetNotFound) {
			t.Fatalf("update of a missing set at revision %d: err = %v", rev, err)
		}
	}
}

func TestRoundTripAndOrder(t *testing.T) {
	ctx := t.Context()
	e := startEtcd(t)
	s := open(t, "/kms/", endpoint(e))
	ks, k1 := testSet(), testKey("0123456789abcdef", 1)
	ks.Intermediates = []keystore.Intermediate{{Generation: 1, Created: t0,
		Wrapped: kek.Wrapped{KEKURI: "local:///k", KEKVersion: "3", Algorithm: "AES-256-GCM", Ciphertext: []byte{9, 9}}}}
	if err := s.CreateKeySet(ctx, ks, k1); err != nil {
		t.Fatal(err)
	}
	// Versions past 9 and 15 check the index sorts numerically.
	var create []*keystore.Key
	for v := uint64(2); v <= 17; v++ {
		create = append(create, testKey(kidN(int(v)), v))
	}
	k17 := create[len(create)-1]
	k17.KID = "0123456789abcdef" // same kid after a destroy
	k1.State, k1.Sealed, k1.Destroyed = keystore.StateDestroyed, nil, t0.Add(time.Hour)
	if err := s.Commit(ctx, "default", create, []*keystore.Key{k1}); err != nil {
		t.Fatal(err)
	}
	for _, name := range []string{"zeta", "alpha"} {
		other := testSet()
		other.Name = name
		if err := s.CreateKeySet(ctx, other, nil); err != nil {
			t.Fatal(err)
		}
	}

	// A second client (another replica) reads exactly what was written.
	s2 := open(t, "/kms/", endpoint(e))
	gotSet, err := s2.KeySet(ctx, "default")
	if err != nil || !reflect.DeepEqual(gotSet, ks) {
		t.Fatalf("key set:\n%+v\nwant\n%+v (%v)", gotSet, ks, err)
	}
	keys, err := s2.Keys(ctx, "default")
	if err != nil || len(keys) != 17 {
		t.Fatalf("Keys: %d, %v", len(keys), err)
	}
	for i, k := range keys {
		if k.Version != uint64(i+1) {
			t.Fatalf("Keys not in version order: position %d holds v%d", i, k.Version)
		}
	}
	byKID, err := s2.KeysByKID(ctx, "default", "0123456789abcdef")
	if err != nil || len(byKID) != 2 {
		t.Fatalf("KeysByKID: %d, %v", len(byKID), err)
	}
	if !reflect.DeepEqual(byKID[0], k1) || !reflect.DeepEqual(byKID[1], k17) {
		t.Fatalf("KeysByKID:\n%+v\n%+v\nwant\n%+v\n%+v", byKID[0], byKID[1], k1, k17)
	}
	if none, err := s2.KeysByKID(ctx, "default", "ffffffffffffffff"); err != nil || len(none) != 0 {
		t.Fatalf("unknown kid: %v, %v", none, err)
	}
	if _, err := s2.KeysByKID(ctx, "nope", "0123456789abcdef"); !errors.Is(err, keystore.ErrKeySetNotFound) {
		t.Fatalf("KeysByKID of a missing set: err = %v", err)
	}
	if _, err := s2.Keys(ctx, "nope"); !errors.Is(err, keystore.ErrKeySetNotFound) {
		t.Fatalf("Keys of a missing set: err = %v", err)
	}
	sets, err := s2.KeySets(ctx)
	if err != nil || len(sets) != 3 || sets[0].Name != "alpha" || sets[1].Name != "default" || sets[2].Name != "zeta" {
		t.Fatalf("KeySets not ordered by name: %v %v", sets, err)
	}

	// Another prefix is another store on the same cluster.
	if sets, err := open(t, "/other", endpoint(e)).KeySets(ctx); err != nil || len(sets) != 0 {
		t.Fatalf("store under another prefix sees %d sets, %v", len(sets), err)
	}
}

func TestPersistsAcrossRestart(t *testing.T) {
	ctx := t.Context()
	cfg := etcdConfig(t, "solo")
	e := start(t, cfg)
	ready(t, e)
	s := open(t, "/kms/", endpoint(e))
	ks, k1 := testSet(), testKey("0123456789abcdef", 1)
	if err := s.CreateKeySet(ctx, ks, k1); err != nil {
		t.Fatal(err)
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	e.stop()

	e2 := start(t, cfg) // same data directory
	ready(t, e2)
	s2 := open(t, "/kms/", endpoint(e2))
	got, err := s2.KeysByKID(ctx, "default", k1.KID)
	if err != nil || len(got) != 1 || !reflect.DeepEqual(got[0], k1) {
		t.Fatalf("after restart: %+v, %v; want %+v", got, err, k1)
	}
	// Revisions survive too, so a CAS prepared before the restart works.
	k1.State = keystore.StateRetired
	if err := s2.Commit(ctx, "default", nil, []*keystore.Key{k1}); err != nil {
		t.Fatal(err)
	}
}

func TestMetadata(t *testing.T) {
	ctx := t.Context()
	s := open(t, "/kms/", endpoint(startEtcd(t)))
	if _, _, err := s.Metadata(ctx, "import-key"); !errors.Is(err, keystore.ErrMetadataNotFound) {
		t.Fatalf("missing record: err = %v", err)
	}
	if _, err := s.PutMetadata(ctx, "import-key", []byte("x"), 7); !errors.Is(err, keystore.ErrMetadataNotFound) {
		t.Fatalf("update of a missing record: err = %v", err)
	}
	rev, err := s.PutMetadata(ctx, "import-key", []byte("sealed-1"), 0)
	if err != nil || rev == 0 {
		t.Fatalf("create: %d, %v", rev, err)
	}
	if _, err := s.PutMetadata(ctx, "import-key", []byte("other"), 0); !errors.Is(err, keystore.ErrAlreadyExists) {
		t.Fatalf("second create: err = %v", err)
	}
	rev2, err := s.PutMetadata(ctx, "import-key", []byte("sealed-2"), rev)
	if err != nil || rev2 <= rev {
		t.Fatalf("update: %d, %v", rev2, err)
	}
	if _, err := s.PutMetadata(ctx, "import-key", []byte("stale"), rev); !errors.Is(err, keystore.ErrConflict) {
		t.Fatalf("stale update: err = %v", err)
	}
	v, gotRev, err := s.Metadata(ctx, "import-key")
	if err != nil || string(v) != "sealed-2" || gotRev != rev2 {
		t.Fatalf("read: %q %d %v, want sealed-2 %d", v, gotRev, err, rev2)
	}
	if _, err := s.PutMetadata(ctx, "", nil, 0); !errors.Is(err, keystore.ErrInvalidArgument) {
		t.Fatalf("empty name: err = %v", err)
	}
}

func TestInvalidArguments(t *testing.T) {
	ctx := t.Context()
	s := open(t, "/kms/", endpoint(startEtcd(t)))
	bad := testSet()
	bad.Name = "a/b"
	if err := s.CreateKeySet(ctx, bad, nil); !errors.Is(err, keystore.ErrInvalidArgument) {
		t.Fatalf("name with a slash: err = %v", err)
	}
	if err := s.CreateKeySet(ctx, testSet(), testKey("NOT-A-KID", 1)); !errors.Is(err, keystore.ErrInvalidArgument) {
		t.Fatalf("malformed kid: err = %v", err)
	}
	if _, err := s.KeySet(ctx, "default"); !errors.Is(err, keystore.ErrKeySetNotFound) {
		t.Fatalf("refused create left a set: err = %v", err)
	}
	if err := s.CreateKeySet(ctx, testSet(), nil); err != nil {
		t.Fatal(err)
	}
	wrongSet := testKey("0123456789abcdef", 1)
	wrongSet.KeySet = "other"
	if err := s.Commit(ctx, "default", []*keystore.Key{wrongSet}, nil); !errors.Is(err, keystore.ErrInvalidArgument) {
		t.Fatalf("key of another set: err = %v", err)
	}
	badState := testKey("0123456789abcdef", 1)
	badState.State = "bogus"
	if err := s.Commit(ctx, "default", []*keystore.Key{badState}, nil); !errors.Is(err, keystore.ErrInvalidArgument) {
		t.Fatalf("invalid state: err = %v", err)
	}
	// A batch beyond etcd's transaction limit is the caller's to split;
	// it is not reported as an outage to retry.
	var many []*keystore.Key
	for v := 1; v <= 130; v++ {
		many = append(many, testKey(kidN(v), uint64(v)))
	}
	if err := s.Commit(ctx, "default", many, nil); !errors.Is(err, keystore.ErrInvalidArgument) || keystore.IsUnavailable(err) {
		t.Fatalf("oversized batch: err = %v", err)
	}
	if keys, err := s.Keys(ctx, "default"); err != nil || len(keys) != 0 {
		t.Fatalf("oversized batch wrote %d keys, %v", len(keys), err)
	}
}

func TestUnavailable(t *testing.T) {
	ctx := t.Context()
	e := startEtcd(t)
	s := open(t, "/kms/", endpoint(e))
	e.stop()
	dctx, cancel := context.WithTimeout(ctx, time.Second)
	defer cancel()
	if _, err := s.KeySets(dctx); !errors.Is(err, keystore.ErrStoreUnavailable) {
		t.Fatalf("server down: err = %v, want ErrStoreUnavailable", err)
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	if _, err := s.KeySets(ctx); !errors.Is(err, keystore.ErrStoreUnavailable) {
		t.Fatalf("closed store: err = %v, want ErrStoreUnavailable", err)
	}
	if _, err := Open(ctx, Config{Endpoints: []string{endpoint(e)}, DialTimeout: 500 * time.Millisecond}); !errors.Is(err, keystore.ErrStoreUnavailable) {
		t.Fatalf("open with the server down: err = %v", err)
	}
	if _, err := Open(ctx, Config{}); !errors.Is(err, keystore.ErrInvalidArgument) {
		t.Fatalf("open without endpoints: err = %v", err)
	}
	// Cancelling is the caller's doing, not an outage.
	cctx, ccancel := context.WithCancel(ctx)
	ccancel()
	if _, err := s.KeySets(cctx); !errors.Is(err, context.Canceled) || keystore.IsUnavailable(err) {
		t.Fatalf("cancelled: err = %v", err)
	}
}
