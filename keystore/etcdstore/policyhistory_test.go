package etcdstore

import (
	"errors"
	"reflect"
	"testing"
	"time"

	"github.com/attested-kms/attested-kms/keystore"
)

// Every policy version written through one client is read back by
// another (another replica), exactly.
func TestPolicyHistoryRoundTrip(t *testing.T) {
	ctx := t.Context()
	ep := endpoint(startEtcd(t))
	s := open(t, "/kms/", ep)
	ks := testSet()
	if err := s.CreateKeySet(ctx, ks, testKey("0123456789abcdef", 1)); err != nil {
		t.Fatal(err)
	}
	ks.PolicyHistory = []keystore.PolicyRevision{
		{Version: 1, YAML: []byte("a: b\n"), Set: t0},
		{Version: 2, YAML: []byte("a: c\n"), Set: t0.Add(time.Hour), SetBy: "CN=alice"},
	}
	ks.Policy, ks.PolicyVersion, ks.PolicyUpdated = []byte("a: b\n"), 3, t0.Add(2*time.Hour)
	ks.PolicySetBy, ks.PolicyRollbackOf = "CN=bob", 1
	if err := s.UpdateKeySet(ctx, ks); err != nil {
		t.Fatal(err)
	}
	got, err := open(t, "/kms/", ep).KeySet(ctx, "default")
	if err != nil {
		t.Fatal(err)
	}
	if !reflect.DeepEqual(got, ks) {
		t.Fatalf("read back\n%+v\nwant\n%+v", got, ks)
	}

	// A record whose history does not precede its current version (as
	// anyone with write access to the prefix could put) is refused.
	ks.PolicyVersion = 2
	b, err := encodeKeySet(ks)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := decodeKeySet(b); !errors.Is(err, keystore.ErrInvalidArgument) {
		t.Fatalf("corrupt history: %v", err)
	}
}
