package audit

import (
	"cmp"
	"context"
	"fmt"
	"iter"
	"slices"
	"sync"
)

// Memory is a Backend in process memory, for tests and for tools that
// verify a log they have loaded. The zero value is an empty log.
type Memory struct {
	mu          sync.Mutex
	entries     []Entry // entries[i].Seq == i+1
	checkpoints []Checkpoint
}

var _ Backend = (*Memory)(nil)

// NewMemory returns an empty in-memory backend.
func NewMemory() *Memory { return &Memory{} }

// Append implements Backend.
func (m *Memory) Append(ctx context.Context, e Entry) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	if e.Seq != uint64(len(m.entries))+1 {
		return fmt.Errorf("audit: append seq %d after seq %d: %w", e.Seq, len(m.entries), ErrConflict)
	}
	m.entries = append(m.entries, e.clone())
	return nil
}

// Last implements Backend.
func (m *Memory) Last(ctx context.Context) (Entry, error) {
	if err := ctx.Err(); err != nil {
		return Entry{}, err
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	if len(m.entries) == 0 {
		return Entry{}, nil
	}
	return m.entries[len(m.entries)-1].clone(), nil
}

// Range implements Backend. It copies the entries it yields under the lock
// and yields outside it, so the caller may append while iterating.
func (m *Memory) Range(ctx context.Context, from, to uint64) iter.Seq2[Entry, error] {
	return func(yield func(Entry, error) bool) {
		for seq := max(from, 1); seq <= to; seq++ {
			if err := ctx.Err(); err != nil {
				yield(Entry{}, err)
				return
			}
			m.mu.Lock()
			if seq > uint64(len(m.entries)) {
				m.mu.Unlock()
				return
			}
			e := m.entries[seq-1].clone()
			m.mu.Unlock()
			if !yield(e, nil) {
				return
			}
		}
	}
}

// PutCheckpoint implements Backend.
func (m *Memory) PutCheckpoint(ctx context.Context, c Checkpoint) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	i, found := slices.BinarySearchFunc(m.checkpoints, c.Seq, func(c Checkpoint, seq uint64) int {
		return cmp.Compare(c.Seq, seq)
	})
	if found {
		return fmt.Errorf("audit: checkpoint at seq %d: %w", c.Seq, ErrConflict)
	}
	c.Signature = slices.Clone(c.Signature)
	m.checkpoints = slices.Insert(m.checkpoints, i, c)
	return nil
}

// Checkpoints implements Backend.
func (m *Memory) Checkpoints(ctx context.Context) ([]Checkpoint, error) {
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	out := make([]Checkpoint, len(m.checkpoints))
	for i, c := range m.checkpoints {
		c.Signature = slices.Clone(c.Signature)
		out[i] = c
	}
	return out, nil
}
