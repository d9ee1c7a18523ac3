package keystore

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/attested-kms/attested-kms/keystore/kek"
)

// KEK states reported by KEKStatus.
const (
	// KEKStateOK: the last check (or unwrap) through the KEK succeeded.
	KEKStateOK = "ok"
	// KEKStateDisabled: the KEK's owner disabled or deleted it, or revoked
	// the KMS's access: the set releases nothing until a check succeeds.
	KEKStateDisabled = "disabled"
	// KEKStateUnavailable: the last check failed for another reason
	// (outage, throttling). Releases continue from the cache until the last
	// successful check is older than the check interval.
	KEKStateUnavailable = "unavailable"
	// KEKStateUnchecked: this process has not used the set's KEK yet.
	KEKStateUnchecked = "unchecked"
)

// KEKStatus is what this process knows about one key set's root KEK.
type KEKStatus struct {
	KeySet string
	// KEKURI, KEKVersion and Algorithm describe how the set's current
	// intermediate key is wrapped; Generation is its generation (0 and
	// empty if the set has no intermediate yet).
	KEKURI     string
	KEKVersion string
	Algorithm  string
	Generation uint64
	// State is one of the KEKState constants.
	State string
	// LastChecked is when the KEK was last asked; LastOK when it last
	// answered successfully. Zero if never.
	LastChecked time.Time
	LastOK      time.Time
	// Error is the last failure, for operators; empty when State is ok.
	Error string
}

// recordOK notes a successful unwrap (or wrap) through in's KEK.
func (m *Manager) recordOK(keyset string, in *Intermediate) {
	now := m.clock()
	m.kekMu.Lock()
	st := m.statusLocked(keyset)
	was := st.State
	if was == KEKStateDisabled {
		m.log.Info("key set's KEK usable again; releases resume", "keyset", keyset, "kek", in.Wrapped.KEKURI)
	}
	st.KEKURI, st.KEKVersion, st.Algorithm, st.Generation = in.Wrapped.KEKURI, in.Wrapped.KEKVersion, in.Wrapped.Algorithm, in.Generation
	st.State, st.LastChecked, st.LastOK, st.Error = KEKStateOK, now, now, ""
	m.kekMu.Unlock()
	// The first use of a KEK (unchecked -> ok) is not a change worth
	// reporting; recovering from a failure is.
	if was == KEKStateDisabled || was == KEKStateUnavailable {
		m.queue(Event{Kind: EventKEKStateChanged, Source: SourceCheck, KeySet: keyset, From: was, To: KEKStateOK,
			Reason: "KEK answered again; releases resume", Time: now})
		m.flushIfIdle()
	}
}

func (m *Manager) statusLocked(keyset string) *KEKStatus {
	st := m.status[keyset]
	if st == nil {
		st = &KEKStatus{KeySet: keyset, State: KEKStateUnchecked}
		m.status[keyset] = st
	}
	return st
}

// switchOff is the customer's off switch: keyset's KEK answered
// kek.ErrKeyDisabled, so its cached intermediates and private keys are
// zeroed and dropped at once and releases stop until a check succeeds.
func (m *Manager) switchOff(keyset string, in *Intermediate, cause error) {
	now := m.clock()
	m.kekMu.Lock()
	st := m.statusLocked(keyset)
	was := st.State
	st.KEKURI = in.Wrapped.KEKURI
	if in.Generation != 0 {
		st.KEKVersion, st.Algorithm, st.Generation = in.Wrapped.KEKVersion, in.Wrapped.Algorithm, in.Generation
	}
	st.State, st.LastChecked, st.Error = KEKStateDisabled, now, cause.Error()
	m.kekMu.Unlock()
	m.dropIntermediates(keyset, nil)
	m.evictSet(keyset)
	m.queue(Event{Kind: EventKEKError, Source: SourceCheck, KeySet: keyset, Reason: "KEK call failed",
		Err: kekErrClass(cause), Time: now})
	if was != KEKStateDisabled {
		m.log.Warn("key set's KEK disabled or access revoked by its owner; releases stopped", "keyset", keyset, "kek", in.Wrapped.KEKURI, "err", cause)
		m.queue(Event{Kind: EventKEKStateChanged, Source: SourceCheck, KeySet: keyset, From: was, To: KEKStateDisabled,
			Reason: "KEK disabled or access revoked by its owner; releases stopped", Time: now})
	}
	m.flushIfIdle()
}

// recordUnavailable notes a failed check that was not the off switch.
func (m *Manager) recordUnavailable(keyset string, in *Intermediate, cause error) {
	now := m.clock()
	m.kekMu.Lock()
	st := m.statusLocked(keyset)
	was := st.State
	st.KEKURI, st.KEKVersion, st.Algorithm, st.Generation = in.Wrapped.KEKURI, in.Wrapped.KEKVersion, in.Wrapped.Algorithm, in.Generation
	if st.State != KEKStateDisabled {
		// An outage does not lift the off switch; only a success does.
		st.State = KEKStateUnavailable
	}
	st.LastChecked, st.Error = now, cause.Error()
	m.kekMu.Unlock()
	m.queue(Event{Kind: EventKEKError, Source: SourceCheck, KeySet: keyset, Reason: "KEK call failed",
		Err: kekErrClass(cause), Time: now})
	if was != KEKStateDisabled && was != KEKStateUnavailable {
		m.queue(Event{Kind: EventKEKStateChanged, Source: SourceCheck, KeySet: keyset, From: was, To: KEKStateUnavailable,
			Reason: "KEK check failed; releases continue until the check interval passes", Time: now})
	}
	m.flushIfIdle()
}

// kekGate refuses releases of keyset while its KEK is switched off, or has
// been unreachable for longer than the check interval.
func (m *Manager) kekGate(keyset string) error {
	now := m.clock()
	m.kekMu.Lock()
	defer m.kekMu.Unlock()
	st := m.status[keyset]
	if st == nil {
		return nil
	}
	switch st.State {
	case KEKStateDisabled:
		return fmt.Errorf("the key set's KEK %s was disabled or access to it revoked by its owner: %w", st.KEKURI, ErrKEKDisabled)
	case KEKStateUnavailable:
		if age := now.Sub(st.LastOK); st.LastOK.IsZero() || age > m.interval {
			return fmt.Errorf("the key set's KEK %s has not answered a check for %s (limit %s): %w", st.KEKURI, age.Round(time.Second), m.interval, ErrKEKUnavailable)
		}
	}
	return nil
}

// KEKStatus reports every key set's root KEK as this process last saw it.
func (m *Manager) KEKStatus(ctx context.Context) ([]KEKStatus, error) {
	sets, err := m.ListKeySets(ctx)
	if err != nil {
		return nil, fmt.Errorf("kek status: %w", err)
	}
	m.kekMu.Lock()
	defer m.kekMu.Unlock()
	out := make([]KEKStatus, 0, len(sets))
	for _, ks := range sets {
		st := KEKStatus{KeySet: ks.Name, State: KEKStateUnchecked}
		if cur := m.status[ks.Name]; cur != nil {
			st = *cur
		}
		// The stored record is the truth about how the set is wrapped now
		// (RewrapRoot or another replica may have moved it since the last
		// check).
		if cur := ks.CurrentIntermediate(); cur != nil {
			st.KEKURI, st.KEKVersion, st.Algorithm, st.Generation = cur.Wrapped.KEKURI, cur.Wrapped.KEKVersion, cur.Wrapped.Algorithm, cur.Generation
		}
		out = append(out, st)
	}
	return out, nil
}

// CheckKEKs checks every key set's root KEK once: it unwraps the set's
// current intermediate key through its KEK (bypassing the cache; one
// outside call per set, more on retries). kek.ErrKeyDisabled switches the
// set off at once; other failures are retried with exponential backoff up
// to Options.KEKCheckAttempts and then recorded as unavailable; a success
// restores a set that was switched off. A set without an intermediate gets
// one (it is what the check asks the KEK for). The returned error joins the
// sets that did not check out.
func (m *Manager) CheckKEKs(ctx context.Context) error {
	sets, err := m.ListKeySets(ctx)
	if err != nil {
		return fmt.Errorf("check KEKs: %w", err)
	}
	var errs []error
	for _, ks := range sets {
		if err := ctx.Err(); err != nil {
			return err
		}
		err := m.checkSet(ctx, ks)
		// Deliver what the check queued while m.mu was held (creating a
		// missing intermediate).
		m.flush()
		if err != nil {
			errs = append(errs, fmt.Errorf("key set %q: %w", ks.Name, err))
		}
	}
	return errors.Join(errs...)
}

func (m *Manager) checkSet(ctx context.Context, ks *KeySet) error {
	cur := ks.CurrentIntermediate()
	if cur == nil {
		m.mu.Lock()
		fresh, err := m.store.KeySet(ctx, ks.Name)
		if err == nil {
			_, err = m.sealingIntermediate(ctx, fresh)
		}
		m.mu.Unlock()
		if err != nil {
			if errors.Is(err, kek.ErrKeyDisabled) {
				m.switchOff(ks.Name, &Intermediate{Wrapped: kek.Wrapped{KEKURI: m.RootKEKURI()}}, err)
			} else {
				m.recordUnavailable(ks.Name, &Intermediate{Wrapped: kek.Wrapped{KEKURI: m.RootKEKURI()}}, err)
			}
		}
		return err
	}
	backoff := time.Second
	// A hung provider call (an HSM that stopped answering) must fail the
	// check, not freeze it with the set still marked ok.
	limit := min(m.interval/4, 30*time.Second)
	for attempt := 1; ; attempt++ {
		actx, cancel := context.WithTimeout(ctx, limit)
		in, err := m.unwrapIntermediate(actx, ks.Name, cur)
		cancel()
		if err == nil {
			m.cacheIntermediate(ks.Name, in) // a restored set needs it back
			return nil
		}
		if errors.Is(err, kek.ErrKeyDisabled) || ctx.Err() != nil {
			return err // unwrapIntermediate switched the set off
		}
		m.recordUnavailable(ks.Name, cur, err)
		if attempt >= m.attempts {
			m.log.Warn("key set's KEK check failed", "keyset", ks.Name, "kek", cur.Wrapped.KEKURI, "attempts", attempt, "err", err)
			return err
		}
		if serr := m.sleep(ctx, backoff); serr != nil {
			return serr
		}
		backoff = min(2*backoff, 30*time.Second)
	}
}

// RunRevalidation runs CheckKEKs now and then every half check interval
// until ctx is done, so a disabled KEK stops releases within one interval
// and a failed check leaves half an interval for retries before releases
// stop. After a pass with failures it checks again sooner (after 30s at
// most). Every replica runs it: each has its own cache to drop.
func (m *Manager) RunRevalidation(ctx context.Context) {
	for {
		err := m.CheckKEKs(ctx)
		if ctx.Err() != nil {
			return
		}
		wait := m.interval / 2
		if err != nil {
			wait = min(wait, 30*time.Second)
		}
		if m.sleep(ctx, wait) != nil {
			return
		}
	}
}

func sleepCtx(ctx context.Context, d time.Duration) error {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
		return ctx.Err()
	case <-t.C:
		return nil
	}
}
