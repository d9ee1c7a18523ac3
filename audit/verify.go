package audit

import (
	"cmp"
	"context"
	"crypto/ed25519"
	"fmt"
	"iter"
	"math"
	"slices"
)

// Problem classifies what Verify found wrong.
type Problem int

// Problems, each named after what was done to the log.
const (
	// ProblemAltered: an entry's contents do not match its hash, or the
	// chain up to a checkpoint does not match the signed hash.
	ProblemAltered Problem = iota + 1
	// ProblemRemoved: a sequence number is missing.
	ProblemRemoved
	// ProblemReordered: an entry is out of sequence order, or its PrevHash
	// is not the hash of the entry before it.
	ProblemReordered
	// ProblemTruncated: a validly signed checkpoint covers entries beyond
	// the end of the log.
	ProblemTruncated
	// ProblemBadCheckpoint: a checkpoint's signature does not verify.
	ProblemBadCheckpoint
)

func (p Problem) String() string {
	switch p {
	case ProblemAltered:
		return "altered"
	case ProblemRemoved:
		return "removed"
	case ProblemReordered:
		return "reordered"
	case ProblemTruncated:
		return "truncated"
	case ProblemBadCheckpoint:
		return "bad checkpoint"
	}
	return fmt.Sprintf("problem(%d)", int(p))
}

// VerifyError names the first problem Verify found.
type VerifyError struct {
	Problem Problem
	// Seq is the sequence number at fault: the altered, missing or
	// misplaced entry, the first entry cut off, or the checkpoint's Seq.
	Seq    uint64
	Detail string
}

func (e *VerifyError) Error() string {
	return fmt.Sprintf("audit: seq %d %s: %s", e.Seq, e.Problem, e.Detail)
}

func problem(p Problem, seq uint64, format string, args ...any) *VerifyError {
	return &VerifyError{Problem: p, Seq: seq, Detail: fmt.Sprintf(format, args...)}
}

// Result summarises a verified log.
type Result struct {
	Entries        uint64 // number of entries verified
	First, Last    uint64 // Seq of the first and last entry (0 when empty)
	LastHash       Hash   // Hash of the last entry
	LastCheckpoint uint64 // Seq of the latest checkpoint verified (0 when none)
}

// Verify checks a chain of entries, in the order entries yields them,
// against checkpoints signed by pub, and returns a *VerifyError naming the
// first problem (in sequence order) or an error entries yielded.
//
// The chain must start at Seq 1, or at Seq S+1 where a validly signed
// checkpoint at S has the first entry's PrevHash (a partial export);
// anything else is reported as removed entries.
func Verify(entries iter.Seq2[Entry, error], checkpoints []Checkpoint, pub ed25519.PublicKey) (Result, error) {
	var res Result
	if len(pub) != ed25519.PublicKeySize {
		return res, fmt.Errorf("audit: verify: public key has %d bytes, want %d: %w", len(pub), ed25519.PublicKeySize, ErrInvalidArgument)
	}
	cps := slices.Clone(checkpoints)
	slices.SortStableFunc(cps, func(a, b Checkpoint) int { return cmp.Compare(a.Seq, b.Seq) })
	next := 0 // index of the first checkpoint not yet checked

	var prev Entry // last verified entry; Seq 0 before the first
	// A jump forward in Seq is a removal unless the skipped entries turn up
	// later (a reordering); gap holds the removal until the end proves it.
	var gap *VerifyError
	var gapAt uint64 // Seq of the entry found where the gap starts
	for e, err := range entries {
		if err != nil {
			return res, fmt.Errorf("audit: verify: read entries: %w", err)
		}
		if gap != nil {
			if e.Seq >= gap.Seq && e.Seq < gapAt {
				return res, problem(ProblemReordered, gapAt, "found before seq %d", e.Seq)
			}
			continue
		}
		expected, wantPrev := prev.Seq+1, prev.Hash
		if prev.Seq == 0 {
			expected, wantPrev = anchor(e, cps, pub)
		}
		if e.ComputeHash() != e.Hash {
			if e.Seq != expected {
				return res, problem(ProblemAltered, expected, "the entry in its place (claiming seq %d) does not match its hash", e.Seq)
			}
			return res, problem(ProblemAltered, expected, "contents do not match the entry's hash")
		}
		switch {
		case e.Seq < expected:
			return res, problem(ProblemReordered, e.Seq, "found after seq %d", prev.Seq)
		case e.Seq > expected:
			gap, gapAt = problem(ProblemRemoved, expected, "missing (the next entry is seq %d)", e.Seq), e.Seq
			continue
		case e.PrevHash != wantPrev:
			return res, problem(ProblemReordered, e.Seq, "prev_hash is not the hash of seq %d", e.Seq-1)
		}
		for ; next < len(cps) && cps[next].Seq <= e.Seq; next++ {
			c := &cps[next]
			if err := checkSignature(c, pub); err != nil {
				return res, err
			}
			if c.Seq == e.Seq && c.Hash != e.Hash {
				return res, problem(ProblemAltered, e.Seq, "the chain up to here does not match the signed checkpoint")
			}
			res.LastCheckpoint = c.Seq
		}
		if res.First == 0 {
			res.First = e.Seq
		}
		prev = e
		res.Entries++
		res.Last, res.LastHash = e.Seq, e.Hash
	}
	if gap != nil {
		return res, gap
	}
	// A checkpoint beyond the last entry: forged, or the log was cut.
	if next < len(cps) {
		if err := checkSignature(&cps[next], pub); err != nil {
			return res, err
		}
		return res, problem(ProblemTruncated, prev.Seq+1, "missing, yet the checkpoint at seq %d covers it (the log ends at seq %d)", cps[next].Seq, prev.Seq)
	}
	return res, nil
}

// anchor returns the Seq and PrevHash the first entry must have: seq 1
// after the zero hash, or, for a partial log, e's own Seq when a validly
// signed checkpoint at the seq before vouches for e's PrevHash.
func anchor(e Entry, cps []Checkpoint, pub ed25519.PublicKey) (uint64, Hash) {
	if e.Seq > 1 {
		for i := range cps {
			if c := &cps[i]; c.Seq == e.Seq-1 && c.Hash == e.PrevHash && c.VerifySignature(pub) {
				return e.Seq, c.Hash
			}
		}
	}
	return 1, Hash{}
}

func checkSignature(c *Checkpoint, pub ed25519.PublicKey) error {
	if c.Seq == 0 {
		return problem(ProblemBadCheckpoint, 0, "a checkpoint at seq 0 covers no entry")
	}
	if !c.VerifySignature(pub) {
		return problem(ProblemBadCheckpoint, c.Seq, "the checkpoint's signature does not verify")
	}
	return nil
}

// VerifyBackend verifies everything stored in b. It reads the checkpoints
// before the entries, so a log still being appended to verifies cleanly.
func VerifyBackend(ctx context.Context, b Backend, pub ed25519.PublicKey) (Result, error) {
	cps, err := b.Checkpoints(ctx)
	if err != nil {
		return Result{}, fmt.Errorf("audit: verify: read checkpoints: %w", err)
	}
	return Verify(b.Range(ctx, 1, math.MaxUint64), cps, pub)
}
