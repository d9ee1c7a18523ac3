package audit_test

import (
	"crypto/ed25519"
	"errors"
	"maps"
	"slices"
	"testing"
	"time"

	"github.com/attested-kms/attested-kms/audit"
)

func wantProblem(t *testing.T, err error, p audit.Problem, seq uint64) {
	t.Helper()
	var ve *audit.VerifyError
	if !errors.As(err, &ve) {
		t.Fatalf("Verify = %v, want %s at seq %d", err, p, seq)
	}
	if ve.Problem != p || ve.Seq != seq {
		t.Fatalf("Verify = %q, want %s at seq %d", err, p, seq)
	}
}

func TestChainOf1000Verifies(t *testing.T) {
	m, key := buildLog(t, 1000, 100)
	es, cps := contents(t, m)
	if len(es) != 1000 || len(cps) != 10 {
		t.Fatalf("%d entries, %d checkpoints; want 1000, 10", len(es), len(cps))
	}
	res, err := audit.Verify(seqOf(es), cps, key.Public().(ed25519.PublicKey))
	if err != nil {
		t.Fatal(err)
	}
	want := audit.Result{Entries: 1000, First: 1, Last: 1000, LastHash: es[999].Hash, LastCheckpoint: 1000}
	if res != want {
		t.Fatalf("Result = %+v, want %+v", res, want)
	}
}

// Changing one byte of any field of entry 500 is reported as entry 500
// altered, whichever field it is.
func TestVerifyAlteredEachField(t *testing.T) {
	m, key := buildLog(t, 1000, 100)
	es, cps := contents(t, m)
	flipStr := func(s string) string { b := []byte(s); b[len(b)/2] ^= 0x01; return string(b) }
	const at = 500
	for name, alter := range map[string]func(e *audit.Entry){
		"seq":           func(e *audit.Entry) { e.Seq ^= 1 << 40 },
		"time":          func(e *audit.Entry) { e.Time = e.Time.Add(time.Nanosecond) },
		"kind":          func(e *audit.Entry) { e.Kind = audit.Kind(flipStr(string(e.Kind))) },
		"actor":         func(e *audit.Entry) { e.Actor = flipStr(e.Actor) },
		"keyset":        func(e *audit.Entry) { e.KeySet = flipStr(e.KeySet) },
		"kid":           func(e *audit.Entry) { e.KID = flipStr(e.KID) },
		"outcome":       func(e *audit.Entry) { e.Outcome = audit.Outcome(flipStr(string(e.Outcome))) },
		"reason":        func(e *audit.Entry) { e.Reason = flipStr(e.Reason) },
		"claims_digest": func(e *audit.Entry) { e.ClaimsDigest = flipStr(e.ClaimsDigest) },
		"details value": func(e *audit.Entry) { e.Details["platform"] = flipStr(e.Details["platform"]) },
		"details key":   func(e *audit.Entry) { e.Details["platforn"] = e.Details["platform"]; delete(e.Details, "platform") },
		"details added": func(e *audit.Entry) { e.Details["extra"] = "" },
		"prev_hash":     func(e *audit.Entry) { e.PrevHash[7] ^= 0x80 },
		"hash":          func(e *audit.Entry) { e.Hash[31] ^= 0x01 },
	} {
		t.Run(name, func(t *testing.T) {
			tampered := slices.Clone(es)
			e := tampered[at-1]
			e.Details = maps.Clone(e.Details)
			alter(&e)
			tampered[at-1] = e
			_, err := audit.Verify(seqOf(tampered), cps, key.Public().(ed25519.PublicKey))
			wantProblem(t, err, audit.ProblemAltered, at)
		})
	}
}

func TestVerifyRemoved(t *testing.T) {
	m, key := buildLog(t, 1000, 100)
	es, cps := contents(t, m)
	for _, seq := range []uint64{1, 2, 437, 999} {
		tampered := slices.Delete(slices.Clone(es), int(seq-1), int(seq))
		_, err := audit.Verify(seqOf(tampered), cps, key.Public().(ed25519.PublicKey))
		wantProblem(t, err, audit.ProblemRemoved, seq)
	}
}

func TestVerifyReordered(t *testing.T) {
	m, key := buildLog(t, 1000, 100)
	es, cps := contents(t, m)
	pub := key.Public().(ed25519.PublicKey)

	swapped := slices.Clone(es)
	swapped[436], swapped[437] = swapped[437], swapped[436] // seq 437 and 438
	_, err := audit.Verify(seqOf(swapped), cps, pub)
	wantProblem(t, err, audit.ProblemReordered, 438)

	// Moved far back: seq 10 found after seq 600.
	moved := slices.Clone(es)
	e := moved[9]
	moved = slices.Insert(slices.Delete(moved, 9, 10), 599, e)
	_, err = audit.Verify(seqOf(moved), cps, pub)
	wantProblem(t, err, audit.ProblemReordered, 11)

	dup := slices.Insert(slices.Clone(es), 300, es[298])
	_, err = audit.Verify(seqOf(dup), cps, pub)
	wantProblem(t, err, audit.ProblemReordered, 299)
}

// An insider who rewrites entry 438 (a denial) and recomputes its hash
// breaks the link from 439; one who recomputes the whole rest of the chain is caught
// by the next signed checkpoint.
func TestVerifyRewrittenChain(t *testing.T) {
	m, key := buildLog(t, 1000, 100)
	es, cps := contents(t, m)
	pub := key.Public().(ed25519.PublicKey)

	one := slices.Clone(es)
	one[437].Outcome = audit.OutcomeGranted // was denied
	one[437].Hash = one[437].ComputeHash()
	_, err := audit.Verify(seqOf(one), cps, pub)
	wantProblem(t, err, audit.ProblemReordered, 439)

	all := slices.Clone(es)
	all[437].Outcome = audit.OutcomeGranted
	for i := 437; i < len(all); i++ {
		if i > 437 {
			all[i].PrevHash = all[i-1].Hash
		}
		all[i].Hash = all[i].ComputeHash()
	}
	_, err = audit.Verify(seqOf(all), cps, pub)
	wantProblem(t, err, audit.ProblemAltered, 500)
}

func TestVerifyTruncatedAfterCheckpoint(t *testing.T) {
	m, key := buildLog(t, 1000, 100)
	es, cps := contents(t, m)
	pub := key.Public().(ed25519.PublicKey)
	_, err := audit.Verify(seqOf(es[:950]), cps, pub)
	wantProblem(t, err, audit.ProblemTruncated, 951)
	_, err = audit.Verify(seqOf(nil), cps, pub)
	wantProblem(t, err, audit.ProblemTruncated, 1)

	// Cutting after the last checkpoint cannot be seen (doc.go says so);
	// the result tells the caller how far checkpoints vouch.
	res, err := audit.Verify(seqOf(es[:950]), cps[:9], pub)
	if err != nil || res.Last != 950 || res.LastCheckpoint != 900 {
		t.Fatalf("Verify = %+v, %v; want last 950, checkpoint 900", res, err)
	}
}

func TestVerifyForgedCheckpoint(t *testing.T) {
	m, key := buildLog(t, 1000, 100)
	es, cps := contents(t, m)
	pub := key.Public().(ed25519.PublicKey)
	for name, forge := range map[string]func(c *audit.Checkpoint){
		"signature byte": func(c *audit.Checkpoint) { c.Signature[10] ^= 1 },
		"hash":           func(c *audit.Checkpoint) { c.Hash[0] ^= 1 },
		"time":           func(c *audit.Checkpoint) { c.Time = c.Time.Add(time.Second) },
		"other key": func(c *audit.Checkpoint) {
			c.Signature = ed25519.Sign(testKey(2), c.SignedMessage())
		},
		"empty signature": func(c *audit.Checkpoint) { c.Signature = nil },
	} {
		t.Run(name, func(t *testing.T) {
			forged := slices.Clone(cps)
			c := forged[4] // seq 500
			c.Signature = slices.Clone(c.Signature)
			forge(&c)
			forged[4] = c
			_, err := audit.Verify(seqOf(es), forged, pub)
			wantProblem(t, err, audit.ProblemBadCheckpoint, 500)
		})
	}
	// A forged checkpoint beyond the end is a bad checkpoint, not a
	// truncation: only the audit key's holder can claim entries exist.
	extra := append(slices.Clone(cps), audit.Checkpoint{Seq: 1100, Time: time.Now(), Signature: make([]byte, 64)})
	_, err := audit.Verify(seqOf(es), extra, pub)
	wantProblem(t, err, audit.ProblemBadCheckpoint, 1100)
	// Verifying under the wrong key rejects the first checkpoint.
	_, err = audit.Verify(seqOf(es), cps, testKey(2).Public().(ed25519.PublicKey))
	wantProblem(t, err, audit.ProblemBadCheckpoint, 100)
}

// A partial log verifies when a signed checkpoint anchors its first entry,
// and otherwise reports the entries before it as removed.
func TestVerifyPartial(t *testing.T) {
	m, key := buildLog(t, 1000, 100)
	es, cps := contents(t, m)
	pub := key.Public().(ed25519.PublicKey)
	res, err := audit.Verify(seqOf(es[300:]), cps, pub)
	if err != nil || res.First != 301 || res.Entries != 700 || res.LastCheckpoint != 1000 {
		t.Fatalf("Verify from 301 = %+v, %v", res, err)
	}
	_, err = audit.Verify(seqOf(es[301:]), cps, pub)
	wantProblem(t, err, audit.ProblemRemoved, 1)
}

func TestVerifyBadKey(t *testing.T) {
	if _, err := audit.Verify(seqOf(nil), nil, nil); !errors.Is(err, audit.ErrInvalidArgument) {
		t.Fatalf("Verify with no key = %v, want ErrInvalidArgument", err)
	}
}
