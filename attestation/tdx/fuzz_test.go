package tdx_test

import (
	"bytes"
	"context"
	"testing"

	"github.com/attested-kms/attested-kms/attestation"
	"github.com/attested-kms/attested-kms/attestation/tdx"
	"github.com/attested-kms/attested-kms/attestation/tdx/simulate"
)

// The seeds are 5 KiB quotes: run the fuzzers with a bounded
// minimization, e.g. -fuzztime=10s -fuzzminimizetime=100x, or the default
// 60 s minimization of every new input stalls the run.
func quoteSeeds(f *testing.F) {
	for _, name := range []string{
		"genuine/quote_v4.dat", "genuine/quote_v5.dat",
		"simulated/quote_v4.dat", "simulated/quote_v5_tdx10.dat", "simulated/quote_v5_tdx15.dat",
	} {
		f.Add(readFixture(f, name))
	}
	f.Add([]byte{})
	f.Add([]byte{4, 0, 2, 0, 0x81, 0, 0, 0})
}

// FuzzParseQuote: no panic; a parsed quote has fields of the right sizes,
// its claims do not alias the input, and bytes after the quote do not
// change them.
func FuzzParseQuote(f *testing.F) {
	quoteSeeds(f)
	f.Fuzz(func(t *testing.T, in []byte) {
		raw := bytes.Clone(in) // mutated below; the fuzzer's input must not be
		c, err := tdx.ParseQuote(raw)
		if err != nil {
			if attestation.ReasonOf(err) == "" {
				t.Fatalf("error without a reason: %v", err)
			}
			return
		}
		if c.QuoteVersion != 4 && c.QuoteVersion != 5 {
			t.Fatalf("version %d", c.QuoteVersion)
		}
		for _, f := range []struct {
			b []byte
			n int
		}{{c.MRTD, 48}, {c.MRSeam, 48}, {c.MRSignerSeam, 48}, {c.MRConfigID, 48}, {c.MROwner, 48}, {c.MROwnerConfig, 48},
			{c.TDAttributes, 8}, {c.XFAM, 8}, {c.TEETCBSVN, 16}, {c.ReportData, 64}} {
			if len(f.b) != f.n {
				t.Fatalf("field of %d bytes, want %d", len(f.b), f.n)
			}
		}
		if len(c.RTMRs) != 4 || c.Debug != (c.TDAttributes[0]&1 == 1) {
			t.Fatal("RTMRs or debug bit")
		}
		before := bytes.Clone(c.ReportData)
		padded := append(bytes.Clone(raw), 0xff, 0xee)
		c2, err := tdx.ParseQuote(padded)
		if err != nil || !bytes.Equal(c2.ReportData, c.ReportData) || !bytes.Equal(c2.MRTD, c.MRTD) {
			t.Fatalf("trailing bytes changed the parse: %v", err)
		}
		for i := range raw {
			raw[i] ^= 0xff
		}
		if !bytes.Equal(c.ReportData, before) {
			t.Fatal("claims alias the input")
		}
	})
}

// FuzzVerifyQuote: no panic; every failure carries a reason; a quote that
// verifies has the report data ParseQuote sees.
func FuzzVerifyQuote(f *testing.F) {
	quoteSeeds(f)
	intel := fixtureIntel(f)
	v := simVerifier(f, intel, collateral(f, intel, simulate.CollateralOptions{}), simTime)
	f.Fuzz(func(t *testing.T, raw []byte) {
		c, err := v.VerifyQuote(context.Background(), raw)
		if err != nil {
			if attestation.ReasonOf(err) == "" {
				t.Fatalf("error without a reason: %v", err)
			}
			return
		}
		p, err := tdx.ParseQuote(raw)
		if err != nil {
			t.Fatalf("verified but does not parse: %v", err)
		}
		if !bytes.Equal(p.ReportData, c.ReportData) || c.TDX.TCBStatus == "" {
			t.Fatal("verified claims disagree with the parse")
		}
	})
}
