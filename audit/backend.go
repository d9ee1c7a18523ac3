package audit

import (
	"context"
	"iter"
)

// Backend stores entries and checkpoints. Implementations must be safe for
// concurrent use; they store what they are given and check only ordering:
// the hash chain is the Log's business.
type Backend interface {
	// Append stores e if and only if the last stored entry has Seq
	// e.Seq-1 (0 for an empty log); otherwise it returns ErrConflict and
	// stores nothing. This compare-and-swap is what keeps the chain linear
	// when several Logs (processes, replicas) share one backend.
	Append(ctx context.Context, e Entry) error
	// Last returns the entry with the highest Seq, or a zero Entry (Seq 0)
	// when the log is empty.
	Last(ctx context.Context) (Entry, error)
	// Range yields the stored entries with from <= Seq <= to in ascending
	// order, including entries appended while it runs, and must not hold
	// locks while the caller handles an entry (the caller may append). An
	// error ends the sequence.
	Range(ctx context.Context, from, to uint64) iter.Seq2[Entry, error]
	// PutCheckpoint stores c, or returns ErrConflict if a checkpoint at
	// c.Seq is already stored.
	PutCheckpoint(ctx context.Context, c Checkpoint) error
	// Checkpoints returns every stored checkpoint in ascending Seq order.
	Checkpoints(ctx context.Context) ([]Checkpoint, error)
}
