package keystore

import (
	"context"
	"errors"
	"sync"
	"time"

	"github.com/attested-kms/attested-kms/keystore/kek"
)

// EventKind says what an Event reports.
type EventKind string

// Event kinds.
const (
	// EventKeyCreated: a key was created (KID, Version; To is its state).
	EventKeyCreated EventKind = "key_created"
	// EventKeyStateChanged: a key moved From one state To another.
	EventKeyStateChanged EventKind = "key_state_changed"
	// EventKEKStateChanged: a key set's KEK status moved From one
	// KEKState To another (switched off, restored, unavailable).
	EventKEKStateChanged EventKind = "kek_state_changed"
	// EventKEKError: a call to a key set's KEK failed; Err holds its class.
	EventKEKError EventKind = "kek_error"
)

// Event sources: what made the change.
const (
	// SourceTick: the rotation scheduler (Tick), which only the elected
	// leader runs.
	SourceTick = "tick"
	// SourceAdmin: an operator's call. The admin API audits those calls
	// itself, so consumers that audit events should skip this source.
	SourceAdmin = "admin"
	// SourceCheck: a KEK check, or a KEK call made for a release or a
	// lifecycle step that found the KEK's status changed.
	SourceCheck = "check"
)

// Event is a lifecycle or KEK change, for auditing and metrics. It never
// carries key material, KEK URIs or provider error text.
type Event struct {
	Kind   EventKind
	Source string
	KeySet string
	// KID and Version identify the key (key events only).
	KID     string
	Version uint64
	// From and To are key States (key events) or KEKState values (KEK
	// events); From is empty for a created key.
	From, To string
	// Reason is a short fixed phrase saying why, e.g. "scheduled".
	Reason string
	// Err is the class of a KEK failure, one of kek.ErrKeyDisabled,
	// kek.ErrUnavailable, kek.ErrAuthentication, context.DeadlineExceeded
	// or ErrKEKCallFailed; nil for other events. It is a sentinel, never
	// the provider's error, which may name keys or accounts.
	Err  error
	Time time.Time
}

// ErrKEKCallFailed is the Event.Err class of a KEK failure that matches no
// more specific sentinel.
var ErrKEKCallFailed = errors.New("keystore: KEK call failed")

// kekErrClass reduces err to the sentinel of its class.
func kekErrClass(err error) error {
	for _, c := range []error{kek.ErrKeyDisabled, kek.ErrUnavailable, kek.ErrAuthentication, context.DeadlineExceeded} {
		if errors.Is(err, c) {
			return c
		}
	}
	return ErrKEKCallFailed
}

// maxPendingEvents bounds events queued between two deliveries; only a
// long run of KEK failures with no Tick or check to deliver them could
// reach it.
const maxPendingEvents = 4096

// eventQueue is the outbox between the code that notices a change (often
// with the Manager's mu held, e.g. a KEK unwrap inside tickSet) and
// Options.OnEvent, which must never run under the Manager's locks: the
// handler may be slow (an audit append) or call back into the Manager.
// Changes are queued under evMu and delivered by flush, in order, from a
// point where the caller holds no Manager lock.
type eventQueue struct {
	onEvent func(Event)

	evMu       sync.Mutex
	pending    []Event
	delivering bool
	dropped    int
}

// queue appends ev for the next flush; a no-op without a handler.
func (m *Manager) queue(ev Event) {
	if m.events.onEvent == nil {
		return
	}
	m.events.evMu.Lock()
	defer m.events.evMu.Unlock()
	if len(m.events.pending) >= maxPendingEvents {
		m.events.dropped++
		return
	}
	m.events.pending = append(m.events.pending, ev)
}

// flush delivers the queued events. Callers must hold none of the
// Manager's locks. If another goroutine is delivering, it takes these
// events too (so order is kept and nobody waits on a slow handler twice).
func (m *Manager) flush() {
	q := &m.events
	if q.onEvent == nil {
		return
	}
	q.evMu.Lock()
	if q.delivering {
		q.evMu.Unlock()
		return
	}
	q.delivering = true
	defer func() {
		// Also on a panicking handler: later flushes must still deliver.
		q.evMu.Lock()
		q.delivering = false
		q.evMu.Unlock()
	}()
	for len(q.pending) > 0 || q.dropped > 0 {
		batch, dropped := q.pending, q.dropped
		q.pending, q.dropped = nil, 0
		q.evMu.Unlock()
		if dropped > 0 {
			m.log.Error("keystore events dropped: handler fell behind", "dropped", dropped)
		}
		for _, ev := range batch {
			q.onEvent(ev)
		}
		q.evMu.Lock()
	}
	q.evMu.Unlock()
}

// flushIfIdle delivers queued events unless m.mu is held, by this
// goroutine (a KEK call inside tickSet, rotate or RewrapRoot) or another
// one; the holder's own flush, or the next Tick or KEK check, delivers
// them then. It lets a release that finds its KEK switched off report it
// at once without ever calling the handler under m.mu.
func (m *Manager) flushIfIdle() {
	if m.events.onEvent == nil {
		return
	}
	if !m.mu.TryLock() {
		return
	}
	m.mu.Unlock()
	m.flush()
}
