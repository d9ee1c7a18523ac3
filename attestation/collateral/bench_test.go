package collateral

import (
	"context"
	"testing"
	"time"

	"github.com/google/go-tdx-guest/testing/testdata"
)

// BenchmarkFetchWarm is the hot path: a verification asking for a document
// that is in memory and fresh.
func BenchmarkFetchWarm(b *testing.B) {
	v := newVendor(b)
	v.serve(pcsPrefix+"/tdx/certification/v4/tcb?fmspc=50806f000000", nil, testdata.TcbInfoBody)
	s := newStore(b, v.config(newClock(tdxSampleTime), &sleepRecorder{}))
	ctx := context.Background()
	if _, err := s.Fetch(ctx, urlTCB); err != nil {
		b.Fatal(err)
	}
	b.ReportAllocs()
	for b.Loop() {
		if _, _, err := s.TDX().GetContext(ctx, urlTCB); err != nil {
			b.Fatal(err)
		}
	}
	if v.total() != 1 {
		b.Fatalf("%d requests", v.total())
	}
}

// BenchmarkFetchDisk is a restart: the document is fresh in the directory
// but not yet in memory (measured on a new store each time).
func BenchmarkFetchDisk(b *testing.B) {
	dir := b.TempDir()
	if err := WriteDocument(dir, urlTCB, nil, testdata.TcbInfoBody); err != nil {
		b.Fatal(err)
	}
	clk := newClock(time.Date(2023, time.July, 1, 0, 0, 0, 0, time.UTC))
	ctx := context.Background()
	b.ReportAllocs()
	for b.Loop() {
		s := newStore(b, Config{Dir: dir, Offline: true, Now: clk.Now})
		if _, err := s.Fetch(ctx, urlTCB); err != nil {
			b.Fatal(err)
		}
	}
}
