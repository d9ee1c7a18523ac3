package azurevtpm_test

import (
	"bytes"
	"context"
	"encoding/base64"
	"encoding/json"
	"reflect"
	"sync"
	"testing"

	"github.com/attested-kms/attested-kms/attestation"
	"github.com/attested-kms/attested-kms/attestation/azurevtpm"
	"github.com/attested-kms/attested-kms/attestation/azurevtpm/simulate"
)

// Seeds from the simulator, made once per test binary. Fuzz targets use
// azure-tdx-vtpm evidence only: fuzzing instruments every package, which
// makes the simulated AMD chain's two RSA-4096 keys take longer to
// generate than a fuzzing run lasts. The SNP hardware path is covered by
// the unit tests and package sevsnp's own fuzzing.
var (
	seedOnce     sync.Once
	seedTDX      *attestation.Evidence
	seedDocs     [][]byte
	seedUserData = binding("fuzz seed")

	snpSeedOnce sync.Once
	seedSNP     *attestation.Evidence
)

func seeds(t testing.TB) {
	t.Helper()
	seedOnce.Do(func() {
		withVM(t, tdxOpts(), func(vm *simulate.VM) {
			var err error
			if seedTDX, err = vm.Evidence(seedUserData); err != nil {
				t.Fatal(err)
			}
			for _, v := range []int{1, 2} {
				d, err := azurevtpm.MarshalDocument(seedTDX, v)
				if err != nil {
					t.Fatal(err)
				}
				seedDocs = append(seedDocs, d)
			}
		})
		// An az-snp-vtpm document: the same parts with a vcek member.
		var m map[string]any
		if err := json.Unmarshal(seedDocs[1], &m); err != nil {
			t.Fatal(err)
		}
		delete(m, "td_quote")
		m["vcek"] = base64.URLEncoding.EncodeToString([]byte{0x30, 0x03, 0x02, 0x01, 0x01})
		d, err := json.Marshal(m)
		if err != nil {
			t.Fatal(err)
		}
		seedDocs = append(seedDocs, d)
	})
	if seedTDX == nil {
		t.Fatal("seed evidence unavailable")
	}
}

func snpSeed(t testing.TB) *attestation.Evidence {
	t.Helper()
	snpSeedOnce.Do(func() { seedSNP = evidence(t, simulate.Options{}, seedUserData) })
	if seedSNP == nil {
		t.Fatal("SNP seed evidence unavailable")
	}
	return seedSNP
}

func FuzzParseHCLReport(f *testing.F) {
	seeds(f)
	f.Add(seedTDX.Report)
	f.Add(seedTDX.Report[:1300])
	f.Add([]byte("HCLA"))
	f.Fuzz(func(t *testing.T, b []byte) {
		r, err := azurevtpm.ParseHCLReport(b)
		if err != nil {
			return
		}
		// Round trip: what was parsed encodes back to a report that
		// parses to the same thing, and is a prefix-compatible encoding.
		enc, err := azurevtpm.MarshalHCLReport(r.ReportType, r.HashType, r.HardwareReport, r.RuntimeData)
		if err != nil {
			t.Fatalf("MarshalHCLReport of a parsed report: %v", err)
		}
		r2, err := azurevtpm.ParseHCLReport(enc)
		if err != nil {
			t.Fatalf("re-parse: %v", err)
		}
		if r2.ReportType != r.ReportType || r2.HashType != r.HashType ||
			!bytes.Equal(r2.HardwareReport, r.HardwareReport) || !bytes.Equal(r2.RuntimeData, r.RuntimeData) {
			t.Fatal("round trip changed the report")
		}
		if rd, err := azurevtpm.ParseRuntimeData(r.RuntimeData); err == nil {
			_, _ = rd.AttestationKey()
			_, _ = rd.UserDataBytes()
		}
	})
}

func FuzzParseDocument(f *testing.F) {
	seeds(f)
	for _, d := range seedDocs {
		f.Add(d)
	}
	f.Add([]byte(`{"version":2,"tpm_quote":{"signature":"","message":"","pcrs":[]},"hcl_report":"","td_quote":""}`))
	f.Add([]byte(`{"quote":{},"report":[1,2],"vcek":"x"}`))
	f.Fuzz(func(t *testing.T, b []byte) {
		ev, err := azurevtpm.ParseDocument(b)
		if err != nil {
			if attestation.ReasonOf(err) == "" {
				t.Fatalf("error without a reason: %v", err)
			}
			return
		}
		if ev.Type != attestation.PlatformAzureSNPVTPM && ev.Type != attestation.PlatformAzureTDXVTPM {
			t.Fatalf("type %q", ev.Type)
		}
		// Round trip through the canonical encoding.
		enc, err := azurevtpm.MarshalDocument(ev, 2)
		if err != nil {
			return // e.g. an SNP document whose vcek is not a certificate
		}
		ev2, err := azurevtpm.ParseDocument(enc)
		if err != nil {
			t.Fatalf("re-parse: %v", err)
		}
		if !reflect.DeepEqual(normalize(ev), normalize(ev2)) {
			t.Fatal("round trip changed the evidence")
		}
	})
}

// normalize makes empty and nil slices compare equal.
func normalize(ev *attestation.Evidence) *attestation.Evidence {
	c := cloneEvidence(ev)
	for _, p := range []*[]byte{&c.Report, &c.Certificates, &c.TDQuote, &c.Document, &c.TPMQuote.Message} {
		if len(*p) == 0 {
			*p = nil
		}
	}
	for i, p := range c.TPMQuote.PCRs {
		if len(p) == 0 {
			c.TPMQuote.PCRs[i] = nil
		}
	}
	return c
}

func FuzzVerify(f *testing.F) {
	seeds(f)
	v, _ := newVerifier(f)
	q := seedTDX.TPMQuote
	f.Add(seedTDX.Report, q.Message, q.Signature, q.PCRs[0], seedTDX.TDQuote)
	f.Fuzz(func(t *testing.T, report, message, signature, pcr0, tdQuote []byte) {
		ev := cloneEvidence(seedTDX)
		ev.Report, ev.TPMQuote.Message, ev.TPMQuote.Signature, ev.TPMQuote.PCRs[0], ev.TDQuote = report, message, signature, pcr0, tdQuote
		claims, err := v.Verify(context.Background(), ev)
		if err != nil {
			if attestation.ReasonOf(err) == "" {
				t.Fatalf("error without a reason: %v", err)
			}
			return
		}
		// Only genuine parts verify, and then the claims are the seed's.
		if !bytes.Equal(claims.ReportData, seedUserData[:]) || claims.AzureVTPM == nil {
			t.Fatalf("verified claims with report data %x", claims.ReportData)
		}
	})
}

func BenchmarkVerifySNP(b *testing.B) {
	ev := snpSeed(b)
	v, _ := newVerifier(b)
	ctx := context.Background()
	if _, err := v.Verify(ctx, ev); err != nil { // warm the VCEK chain cache
		b.Fatal(err)
	}
	b.ReportAllocs()
	for b.Loop() {
		if _, err := v.Verify(ctx, ev); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkVerifyTDX measures this package's share of azure-tdx-vtpm
// verification: the fake TDX verifier parses the quote but checks no
// signature or collateral, which a real one adds.
func BenchmarkVerifyTDX(b *testing.B) {
	seeds(b)
	v, _ := newVerifier(b)
	ctx := context.Background()
	b.ReportAllocs()
	for b.Loop() {
		if _, err := v.Verify(ctx, seedTDX); err != nil {
			b.Fatal(err)
		}
	}
}

func BenchmarkParseDocument(b *testing.B) {
	seeds(b)
	b.ReportAllocs()
	for b.Loop() {
		if _, err := azurevtpm.ParseDocument(seedDocs[1]); err != nil {
			b.Fatal(err)
		}
	}
}
