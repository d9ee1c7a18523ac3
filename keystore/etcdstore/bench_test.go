package etcdstore

import (
	"testing"

	"github.com/attested-kms/attested-kms/keystore"
)

// KeysByKID is on the release path (every ReleaseKey reads the key).
func BenchmarkKeysByKID(b *testing.B) {
	ctx := b.Context()
	s := benchStore(b)
	if err := s.CreateKeySet(ctx, testSet(), testKey(kidN(0), 1)); err != nil {
		b.Fatal(err)
	}
	var create []*keystore.Key
	for v := 2; v <= 50; v++ {
		create = append(create, testKey(kidN(v), uint64(v)))
	}
	if err := s.Commit(ctx, "default", create, nil); err != nil {
		b.Fatal(err)
	}
	b.ResetTimer()
	for b.Loop() {
		if keys, err := s.KeysByKID(ctx, "default", kidN(25)); err != nil || len(keys) != 1 {
			b.Fatal(keys, err)
		}
	}
}

// Commit of one new key and one update: a rotation step.
func BenchmarkCommit(b *testing.B) {
	ctx := b.Context()
	s := benchStore(b)
	k := testKey(kidN(0), 1)
	if err := s.CreateKeySet(ctx, testSet(), k); err != nil {
		b.Fatal(err)
	}
	v := uint64(1)
	for b.Loop() {
		v++
		if err := s.Commit(ctx, "default", []*keystore.Key{testKey(kidN(int(v)), v)}, []*keystore.Key{k}); err != nil {
			b.Fatal(err)
		}
	}
}

func benchStore(b *testing.B) *Store {
	b.Helper()
	return open(b, "/kms/", endpoint(startEtcd(b)))
}
