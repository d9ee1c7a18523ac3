package keystore_test

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/attested-kms/attested-kms/keystore"
	"github.com/attested-kms/attested-kms/keystore/kek"
)

// switchKEK is a KEK its owner can disable (kek.ErrKeyDisabled) or that
// can be unreachable (kek.ErrUnavailable).
type switchKEK struct {
	kek.Provider
	disabled, down atomic.Bool
}

func (s *switchKEK) fail() error {
	switch {
	case s.disabled.Load():
		return fmt.Errorf("owner says no (secret detail): %w", kek.ErrKeyDisabled)
	case s.down.Load():
		return fmt.Errorf("dial: %w", kek.ErrUnavailable)
	}
	return nil
}

func (s *switchKEK) Wrap(ctx context.Context, dek, aad []byte) (kek.Wrapped, error) {
	if err := s.fail(); err != nil {
		return kek.Wrapped{}, err
	}
	return s.Provider.Wrap(ctx, dek, aad)
}

func (s *switchKEK) Unwrap(ctx context.Context, w kek.Wrapped, aad []byte) ([]byte, error) {
	if err := s.fail(); err != nil {
		return nil, err
	}
	return s.Provider.Unwrap(ctx, w, aad)
}

// eventLog collects events; probe, if set, runs inside the handler.
type eventLog struct {
	mu     sync.Mutex
	events []keystore.Event
	probe  func()
}

func (l *eventLog) handle(ev keystore.Event) {
	if l.probe != nil {
		l.probe()
	}
	l.mu.Lock()
	l.events = append(l.events, ev)
	l.mu.Unlock()
}

// take returns the events since the last take.
func (l *eventLog) take() []keystore.Event {
	l.mu.Lock()
	defer l.mu.Unlock()
	out := l.events
	l.events = nil
	return out
}

// eventManager is a Manager over e's store reporting to a new eventLog.
func (e *env) eventManager(p kek.Provider) (*keystore.Manager, *eventLog) {
	l := &eventLog{}
	m := keystore.NewManager(e.store, p, keystore.Options{
		Now: e.clock.Now, OnEvent: l.handle, KEKCheckAttempts: 1,
		Sleep: func(ctx context.Context, _ time.Duration) error { return ctx.Err() },
	})
	return m, l
}

// short renders an event's identifying fields; kid and time are checked
// separately.
func short(ev keystore.Event) string {
	return fmt.Sprintf("%s/%s %s v%d %s->%s", ev.Kind, ev.Source, ev.KeySet, ev.Version, ev.From, ev.To)
}

func TestEventsFullLifecycleOnce(t *testing.T) {
	ctx := context.Background()
	e := newEnv(t)
	m, l := e.eventManager(e.kek)
	if _, err := m.CreateKeySet(ctx, "default", testSettings); err != nil {
		t.Fatal(err)
	}
	steps := []struct {
		at   time.Duration
		want []string
	}{
		{0, nil},
		{22 * time.Hour, []string{"key_created/tick default v2 ->pending"}},
		{24 * time.Hour, []string{"key_state_changed/tick default v1 active->retired", "key_state_changed/tick default v2 pending->active"}},
		{46 * time.Hour, []string{"key_created/tick default v3 ->pending"}},
		{48 * time.Hour, []string{"key_state_changed/tick default v2 active->retired", "key_state_changed/tick default v3 pending->active"}},
		{70 * time.Hour, []string{"key_created/tick default v4 ->pending"}},
		{72 * time.Hour, []string{
			"key_state_changed/tick default v1 retired->destroyed",
			"key_state_changed/tick default v3 active->retired",
			"key_state_changed/tick default v4 pending->active",
		}},
	}
	kids := map[uint64]string{}
	for _, k := range mustKeys(t, m, "default") {
		kids[k.Version] = k.KID
	}
	for _, st := range steps {
		now := t0.Add(st.at)
		e.clock.Set(now)
		if err := m.Tick(ctx); err != nil {
			t.Fatal(err)
		}
		got := l.take()
		if len(got) != len(st.want) {
			t.Fatalf("at +%s: %d events %v, want %v", st.at, len(got), got, st.want)
		}
		for i, ev := range got {
			if short(ev) != st.want[i] {
				t.Errorf("at +%s event %d = %q, want %q", st.at, i, short(ev), st.want[i])
			}
			if !ev.Time.Equal(now) || ev.Err != nil || ev.Reason == "" {
				t.Errorf("at +%s event %d: time %v err %v reason %q", st.at, i, ev.Time, ev.Err, ev.Reason)
			}
			if ev.Kind == keystore.EventKeyCreated {
				kids[ev.Version] = ev.KID
			}
			if ev.KID == "" || ev.KID != kids[ev.Version] {
				t.Errorf("at +%s event %d: kid %q, want v%d's %q", st.at, i, ev.KID, ev.Version, kids[ev.Version])
			}
		}
		// The same tick again changes nothing and reports nothing.
		if err := m.Tick(ctx); err != nil {
			t.Fatal(err)
		}
		if again := l.take(); len(again) != 0 {
			t.Fatalf("second tick at +%s reported %v", st.at, again)
		}
	}
	// Operator calls are not tick events: the admin API audits them.
	if _, err := m.Rotate(ctx, "default"); err != nil {
		t.Fatal(err)
	}
	for _, ev := range l.take() {
		if ev.Source == keystore.SourceTick {
			t.Errorf("manual rotation reported as a tick: %v", short(ev))
		}
	}
}

func TestEventsKEKOffSwitchOnce(t *testing.T) {
	ctx := context.Background()
	e := newEnv(t)
	p := &switchKEK{Provider: e.kek.Provider}
	m, l := e.eventManager(p)
	if _, err := m.CreateKeySet(ctx, "default", testSettings); err != nil {
		t.Fatal(err)
	}
	check := func(what string, wantErr bool, want ...string) {
		t.Helper()
		if err := m.CheckKEKs(ctx); (err != nil) != wantErr {
			t.Fatalf("%s: CheckKEKs error %v, want error %v", what, err, wantErr)
		}
		got := l.take()
		var s []string
		for _, ev := range got {
			s = append(s, short(ev))
			if ev.Source != keystore.SourceCheck || ev.KID != "" || !ev.Time.Equal(t0) {
				t.Errorf("%s: event %+v", what, ev)
			}
		}
		if fmt.Sprint(s) != fmt.Sprint(want) {
			t.Errorf("%s: events %q, want %q", what, s, want)
		}
		for _, ev := range got {
			if ev.Kind == keystore.EventKEKError && ev.Err != kek.ErrKeyDisabled && ev.Err != kek.ErrUnavailable {
				t.Errorf("%s: error class %v is not a sentinel", what, ev.Err)
			}
		}
	}
	check("first check", false) // unchecked -> ok is no change worth reporting

	p.disabled.Store(true)
	check("disabled", true, "kek_error/check default v0 ->", "kek_state_changed/check default v0 ok->disabled")
	check("still disabled", true, "kek_error/check default v0 ->")
	p.disabled.Store(false)
	check("enabled", false, "kek_state_changed/check default v0 disabled->ok")
	check("still enabled", false)

	p.down.Store(true)
	check("outage", true, "kek_error/check default v0 ->", "kek_state_changed/check default v0 ok->unavailable")
	check("still down", true, "kek_error/check default v0 ->")
	p.down.Store(false)
	check("back", false, "kek_state_changed/check default v0 unavailable->ok")
}

// TestEventsNeverUnderLock: a KEK failure met inside Tick (with the
// Manager's lock held) is delivered after the lock is released, so a
// handler calling back into the Manager does not deadlock.
func TestEventsNeverUnderLock(t *testing.T) {
	ctx := context.Background()
	e := newEnv(t)
	if _, err := e.m.CreateKeySet(ctx, "default", testSettings); err != nil {
		t.Fatal(err)
	}
	p := &switchKEK{Provider: e.kek.Provider}
	p.disabled.Store(true)
	m, l := e.eventManager(p) // empty cache: the tick must ask the KEK
	var probes atomic.Int64
	l.probe = func() {
		// Takes the Manager's lock: would never return under it.
		if _, err := m.SetState(ctx, "default", "0000000000000000", keystore.StateDisabled); !errors.Is(err, keystore.ErrKeyNotFound) {
			t.Errorf("probe: %v", err)
		}
		probes.Add(1)
	}
	e.clock.Set(t0.Add(22 * time.Hour)) // the next key is due
	if err := m.Tick(ctx); !errors.Is(err, keystore.ErrKEKDisabled) {
		t.Fatalf("tick with the KEK disabled: %v", err)
	}
	var kinds []keystore.EventKind
	for _, ev := range l.take() {
		kinds = append(kinds, ev.Kind)
	}
	if fmt.Sprint(kinds) != fmt.Sprint([]keystore.EventKind{keystore.EventKEKError, keystore.EventKEKStateChanged}) || probes.Load() != 2 {
		t.Fatalf("events %v (%d probes), want the KEK error and the switch-off", kinds, probes.Load())
	}
}

func BenchmarkTickNoChange(b *testing.B) {
	ctx := context.Background()
	e := newEnv(b)
	m, _ := e.eventManager(e.kek)
	if _, err := m.CreateKeySet(ctx, "default", testSettings); err != nil {
		b.Fatal(err)
	}
	for b.Loop() {
		if err := m.Tick(ctx); err != nil {
			b.Fatal(err)
		}
	}
}
