package tdx_test

import (
	"context"
	"testing"

	"github.com/attested-kms/attested-kms/attestation/tdx/simulate"
)

// BenchmarkVerifyQuote measures a release with warm caches: chain and
// collateral verified before, so only the per-quote signatures, the
// content hashes of the served collateral and the TCB matching run.
// The cold sub-benchmarks use a new Verifier for every quote.
func BenchmarkVerifyQuote(b *testing.B) {
	intel := fixtureIntel(b)
	col := collateral(b, intel, simulate.CollateralOptions{})
	for _, tc := range []struct {
		name string
		f    simulate.QuoteFields
	}{
		{"v4", simulate.QuoteFields{Version: 4}},
		{"v5", simulate.QuoteFields{Version: 5, BodyType: 3, TEETCBSVN: []byte{6, 1, 3, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0}}},
	} {
		q := quote(b, intel, tc.f)
		b.Run(tc.name+"/warm", func(b *testing.B) {
			v := simVerifier(b, intel, col, simTime)
			if _, err := v.VerifyQuote(context.Background(), q); err != nil {
				b.Fatal(err)
			}
			b.ReportAllocs()
			for b.Loop() {
				if _, err := v.VerifyQuote(context.Background(), q); err != nil {
					b.Fatal(err)
				}
			}
		})
		b.Run(tc.name+"/cold", func(b *testing.B) {
			b.ReportAllocs()
			for b.Loop() {
				v := simVerifier(b, intel, col, simTime)
				if _, err := v.VerifyQuote(context.Background(), q); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}
