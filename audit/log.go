package audit

import (
	"context"
	"crypto"
	"crypto/ed25519"
	"errors"
	"fmt"
	"sync"
	"time"
)

// DefaultCheckpointEvery is how many entries a Log appends between
// automatic checkpoints unless Options says otherwise.
const DefaultCheckpointEvery = 100

// maxConflicts bounds how often Append re-reads the head after losing a
// compare-and-swap to another writer before it gives up.
const maxConflicts = 16

// Options tune a Log.
type Options struct {
	// CheckpointEvery is the number of entries between automatic
	// checkpoints (a checkpoint is signed when Seq is a multiple of it).
	// Zero means DefaultCheckpointEvery.
	CheckpointEvery uint64
	// Now is the clock for entry and checkpoint times; nil means time.Now.
	Now func() time.Time
}

// Log appends entries to a Backend, chaining their hashes and signing
// checkpoints. It is safe for concurrent use: appends are serialised in
// the Log, and the backend's compare-and-swap serialises Logs that share a
// backend.
type Log struct {
	backend Backend
	signer  crypto.Signer
	pub     ed25519.PublicKey
	every   uint64
	now     func() time.Time

	mu             sync.Mutex
	head           Entry // last appended entry (Seq 0 when empty)
	lastCheckpoint Checkpoint
}

// New opens a Log on b, signing checkpoints with signer, whose Public must
// be an ed25519.PublicKey. It reads the chain's head and latest checkpoint
// from b.
func New(ctx context.Context, b Backend, signer crypto.Signer, o Options) (*Log, error) {
	if b == nil {
		return nil, fmt.Errorf("audit: no backend: %w", ErrInvalidArgument)
	}
	pub, err := signerKey(signer)
	if err != nil {
		return nil, err
	}
	l := &Log{backend: b, signer: signer, pub: pub, every: o.CheckpointEvery, now: o.Now}
	if l.every == 0 {
		l.every = DefaultCheckpointEvery
	}
	if l.now == nil {
		l.now = time.Now
	}
	if l.head, err = b.Last(ctx); err != nil {
		return nil, fmt.Errorf("audit: read head: %w", err)
	}
	cps, err := b.Checkpoints(ctx)
	if err != nil {
		return nil, fmt.Errorf("audit: read checkpoints: %w", err)
	}
	if len(cps) > 0 {
		l.lastCheckpoint = cps[len(cps)-1]
	}
	return l, nil
}

// PublicKey is the key that verifies this Log's checkpoints.
func (l *Log) PublicKey() ed25519.PublicKey { return l.pub }

// Append records e and returns it as stored, with Seq, PrevHash and Hash
// set (and Time, if e's was zero). The caller's Seq, PrevHash and Hash are
// ignored. When the entry completes a checkpoint interval a checkpoint is
// signed too; if that fails the entry is still stored and returned, with an
// error wrapping ErrCheckpoint.
func (l *Log) Append(ctx context.Context, e Entry) (Entry, error) {
	if err := e.validate(); err != nil {
		return Entry{}, fmt.Errorf("audit: append: %w", err)
	}
	e = e.clone()
	l.mu.Lock()
	defer l.mu.Unlock()
	if e.Time.IsZero() {
		e.Time = l.now()
	}
	// Round(0) drops the monotonic reading: the stored time is wall clock.
	e.Time = e.Time.UTC().Round(0)
	for attempt := 0; ; attempt++ {
		e.Seq = l.head.Seq + 1
		e.PrevHash = l.head.Hash
		e.Hash = e.ComputeHash()
		err := l.backend.Append(ctx, e)
		if err == nil {
			break
		}
		if !errors.Is(err, ErrConflict) || attempt == maxConflicts {
			return Entry{}, fmt.Errorf("audit: append seq %d: %w", e.Seq, err)
		}
		// Another writer appended: continue the chain from its head.
		if l.head, err = l.backend.Last(ctx); err != nil {
			return Entry{}, fmt.Errorf("audit: re-read head: %w", err)
		}
	}
	l.head = e
	if e.Seq%l.every == 0 {
		if _, err := l.checkpointLocked(ctx); err != nil {
			return e.clone(), errors.Join(ErrCheckpoint, err)
		}
	}
	return e.clone(), nil
}

// Checkpoint signs and stores a checkpoint at the current head (for
// example before a shutdown or an export) and returns it. If the head
// already has one, that one is returned.
func (l *Log) Checkpoint(ctx context.Context) (Checkpoint, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.checkpointLocked(ctx)
}

func (l *Log) checkpointLocked(ctx context.Context) (Checkpoint, error) {
	if l.head.Seq == 0 {
		return Checkpoint{}, ErrEmpty
	}
	if l.lastCheckpoint.Seq == l.head.Seq {
		return l.lastCheckpoint, nil
	}
	c := Checkpoint{Seq: l.head.Seq, Hash: l.head.Hash, Time: l.now().UTC().Round(0)}
	if err := c.sign(l.signer); err != nil {
		return Checkpoint{}, err
	}
	// A signer that is not the key it claims to be would make every later
	// verification fail; catch it while the cause is still at hand.
	if !c.VerifySignature(l.pub) {
		return Checkpoint{}, fmt.Errorf("audit: checkpoint at seq %d: signer's signature does not verify under its public key", c.Seq)
	}
	if err := l.backend.PutCheckpoint(ctx, c); err != nil {
		return Checkpoint{}, fmt.Errorf("audit: store checkpoint at seq %d: %w", c.Seq, err)
	}
	l.lastCheckpoint = c
	return c, nil
}
