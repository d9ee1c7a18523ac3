package audit_test

import (
	"context"
	"crypto/ed25519"
	"fmt"
	"math"
	"testing"
	"time"

	"github.com/attested-kms/attested-kms/audit"
)

// testKey is a fixed audit key, so failures reproduce.
func testKey(seed byte) ed25519.PrivateKey {
	s := make([]byte, ed25519.SeedSize)
	s[0] = seed
	return ed25519.NewKeyFromSeed(s)
}

// stepClock returns a clock that advances 1ms per call from a fixed start.
func stepClock() func() time.Time {
	t := time.Date(2026, 3, 1, 12, 0, 0, 123456789, time.UTC)
	return func() time.Time {
		t = t.Add(time.Millisecond)
		return t
	}
}

// sample is a realistic entry varying with i; every field is non-empty.
func sample(i int) audit.Entry {
	kinds := []audit.Kind{audit.KindRelease, audit.KindRotation, audit.KindStateChange, audit.KindPolicyChange, audit.KindAdminCall, audit.KindKEK}
	outcomes := []audit.Outcome{audit.OutcomeGranted, audit.OutcomeDenied, audit.OutcomeOK, audit.OutcomeError}
	digest, _ := audit.DigestClaims(map[string]any{"measurement": fmt.Sprintf("%064x", i)})
	return audit.Entry{
		Kind: kinds[i%len(kinds)], Actor: fmt.Sprintf("spiffe-or-oid-%d", i%7), KeySet: "default",
		KID: fmt.Sprintf("%016x", i), Outcome: outcomes[i%len(outcomes)], Reason: fmt.Sprintf("reason %d", i),
		ClaimsDigest: digest, Details: map[string]string{"platform": "sev-snp", "request": fmt.Sprint(i)},
	}
}

// buildLog appends n sample entries with a checkpoint every `every` and
// returns the backend and the key.
func buildLog(t testing.TB, n int, every uint64) (*audit.Memory, ed25519.PrivateKey) {
	t.Helper()
	m := audit.NewMemory()
	key := testKey(1)
	l, err := audit.New(context.Background(), m, key, audit.Options{CheckpointEvery: every, Now: stepClock()})
	if err != nil {
		t.Fatal(err)
	}
	for i := range n {
		if _, err := l.Append(context.Background(), sample(i)); err != nil {
			t.Fatalf("append %d: %v", i, err)
		}
	}
	return m, key
}

// contents returns the stored entries and checkpoints as slices to tamper
// with.
func contents(t testing.TB, b audit.Backend) ([]audit.Entry, []audit.Checkpoint) {
	t.Helper()
	var es []audit.Entry
	for e, err := range b.Range(context.Background(), 1, math.MaxUint64) {
		if err != nil {
			t.Fatal(err)
		}
		es = append(es, e)
	}
	cps, err := b.Checkpoints(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	return es, cps
}

func seqOf(es []audit.Entry) func(func(audit.Entry, error) bool) {
	return func(yield func(audit.Entry, error) bool) {
		for _, e := range es {
			if !yield(e, nil) {
				return
			}
		}
	}
}
