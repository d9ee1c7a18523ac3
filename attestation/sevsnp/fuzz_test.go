package sevsnp_test

import (
	"bytes"
	"context"
	"testing"

	"github.com/attested-kms/attested-kms/attestation"
	"github.com/attested-kms/attested-kms/attestation/sevsnp"
)

// FuzzParseReport checks that no input panics ParseReport and that every
// failure carries a reason.
func FuzzParseReport(f *testing.F) {
	report := fixture(f, "attestation.bin")
	f.Add(report)
	f.Add(report[:100])
	f.Add(withByte(report, 0, 3)) // version 3: reads the CPUID bytes
	f.Add([]byte{})
	f.Fuzz(func(t *testing.T, b []byte) {
		claims, err := sevsnp.ParseReport(b)
		if err != nil {
			if attestation.ReasonOf(err) == "" {
				t.Fatalf("error without reason: %v", err)
			}
			return
		}
		if len(b) != sevsnp.ReportSize || !bytes.Equal(claims.ReportData, b[0x50:0x90]) {
			t.Fatalf("parsed %d bytes, report data %x", len(b), claims.ReportData)
		}
	})
}

// FuzzVerify runs the whole verifier (genuine roots, fixed time, no
// getter) on arbitrary reports and certificate tables. Nothing may panic,
// every failure must carry a reason, and nothing but the genuine report
// may verify.
func FuzzVerify(f *testing.F) {
	report, table := genuineEvidence(f)
	f.Add(report, table)
	f.Add(report, []byte{})
	f.Add(report, table[:48])
	f.Add(withByte(report, 0x90, 1), table)
	v, err := sevsnp.NewVerifier(sevsnp.Options{Now: fixedNow(genuineTime)})
	if err != nil {
		f.Fatal(err)
	}
	ctx := context.Background()
	f.Fuzz(func(t *testing.T, r, tab []byte) {
		claims, err := v.VerifyReport(ctx, r, tab)
		if err != nil {
			if attestation.ReasonOf(err) == "" {
				t.Fatalf("error without reason: %v", err)
			}
			return
		}
		if !bytes.Equal(r, report) || claims.SEVSNP == nil {
			t.Fatalf("a report other than the recorded one verified")
		}
	})
}
