package collateral

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"testing"
	"time"
)

// lookups records Config.OnLookup calls as "hit"/"miss".
type lookups struct {
	mu  sync.Mutex
	got []string
}

func (l *lookups) record(hit bool) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.got = append(l.got, map[bool]string{true: "hit", false: "miss"}[hit])
}

func (l *lookups) take() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	s := fmt.Sprint(l.got)
	l.got = nil
	return s
}

func TestOnLookupOffline(t *testing.T) {
	dir := t.TempDir()
	if err := WriteDocument(dir, urlTCB, nil, tcbInfo(t0.Add(time.Hour))); err != nil {
		t.Fatal(err)
	}
	l := &lookups{}
	clk := newClock(t0)
	s := newStore(t, Config{Dir: dir, Offline: true, Now: clk.Now, Client: failingClient(t), OnLookup: l.record})
	ctx := context.Background()
	for range 3 {
		if _, err := s.Fetch(ctx, urlTCB); err != nil {
			t.Fatal(err)
		}
	}
	if got := l.take(); got != "[miss hit hit]" {
		t.Errorf("fresh document: lookups %s, want the directory once, then memory", got)
	}
	// Offline, a missing document is looked for in the directory each time.
	for range 2 {
		if _, err := s.Fetch(ctx, urlQEID); !errors.Is(err, ErrNotFound) {
			t.Fatalf("missing document: %v", err)
		}
	}
	if got := l.take(); got != "[miss miss]" {
		t.Errorf("missing document: lookups %s, want two misses", got)
	}
	// A URL the store refuses is no lookup at all.
	if _, err := s.Fetch(ctx, "https://example.com/x"); err == nil {
		t.Fatal("foreign URL served")
	}
	if got := l.take(); got != "[]" {
		t.Errorf("refused URL: lookups %s, want none", got)
	}
}

func TestOnLookupNetwork(t *testing.T) {
	ca := newTestCA(t)
	v := newVendor(t) // 404 for anything unrouted
	v.serve(amdPrefix+"/vcek/v1/Milan/crl", nil, ca.crl(t, 1, t0, t0.Add(24*time.Hour)))
	l := &lookups{}
	clk := newClock(t0)
	cfg := v.config(clk, &sleepRecorder{})
	cfg.OnLookup = l.record
	s := newStore(t, cfg)
	ctx := context.Background()
	const missing = "https://kdsintf.amd.com/vcek/v1/Milan/00ff?blSPL=1&teeSPL=0&snpSPL=2&ucodeSPL=3"
	for range 2 {
		if _, err := s.Fetch(ctx, urlMilanCRL); err != nil {
			t.Fatal(err)
		}
		if _, err := s.Fetch(ctx, missing); !errors.Is(err, ErrNotFound) {
			t.Fatalf("unknown chip: %v", err)
		}
	}
	// The 404 is remembered, so its second lookup is served from memory.
	if got := l.take(); got != "[miss miss hit hit]" {
		t.Errorf("lookups %s, want [miss miss hit hit]", got)
	}
	clk.Advance(24 * time.Hour) // past the CRL's next update: fetched again
	if _, err := s.Fetch(ctx, urlMilanCRL); err != nil {
		t.Fatal(err)
	}
	if got := l.take(); got != "[miss]" {
		t.Errorf("expired document: lookups %s, want a miss", got)
	}
}
