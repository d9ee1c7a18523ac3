package boltstore

import (
	"context"
	"errors"
	"reflect"
	"testing"
	"time"

	"github.com/attested-kms/attested-kms/keystore"
)

// withPolicyHistory is testSet at policy version 3 (a rollback to 1 by
// bob) with versions 1 and 2 kept.
func withPolicyHistory() *keystore.KeySet {
	ks := testSet()
	ks.PolicyHistory = []keystore.PolicyRevision{
		{Version: 1, YAML: []byte("a: b\n"), Set: t0},
		{Version: 2, YAML: []byte("a: c\n"), Set: t0.Add(time.Hour), SetBy: "CN=alice"},
	}
	ks.Policy, ks.PolicyVersion, ks.PolicyUpdated = []byte("a: b\n"), 3, t0.Add(2*time.Hour)
	ks.PolicySetBy, ks.PolicyRollbackOf = "CN=bob", 1
	return ks
}

// Every policy version survives closing and reopening the file.
func TestPolicyHistoryRoundTrip(t *testing.T) {
	ctx := context.Background()
	s, path := openTemp(t)
	if err := s.CreateKeySet(ctx, testSet(), testKey("0123456789abcdef", 1)); err != nil {
		t.Fatal(err)
	}
	want := withPolicyHistory()
	want.Revision = 1
	if err := s.UpdateKeySet(ctx, want); err != nil {
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
	got, err := s2.KeySet(ctx, "default")
	if err != nil {
		t.Fatal(err)
	}
	if !reflect.DeepEqual(got, want) {
		t.Fatalf("read back\n%+v\nwant\n%+v", got, want)
	}
}

func TestPolicyHistoryDecode(t *testing.T) {
	// A record written before the history existed reads as a set with no
	// earlier versions.
	old := `{"schema":1,"name":"default","settings":{},"policy":{"version":2,"yaml":"YTogYgo="},"created":"2026-03-01T12:00:00Z","revision":4}`
	ks, err := decodeKeySet([]byte(old))
	if err != nil || ks.PolicyVersion != 2 || string(ks.Policy) != "a: b\n" || ks.PolicyHistory != nil {
		t.Fatalf("old record: %+v, %v", ks, err)
	}
	// A history that does not precede the current version is corrupt.
	bad := withPolicyHistory()
	bad.PolicyVersion = 2
	b, err := encodeKeySet(bad, 1)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := decodeKeySet(b); !errors.Is(err, keystore.ErrInvalidArgument) {
		t.Fatalf("corrupt history: %v", err)
	}
}
