package verifiers_test

import (
	"context"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/attested-kms/attested-kms/attestation"
	"github.com/attested-kms/attested-kms/attestation/collateral"
	"github.com/attested-kms/attested-kms/attestation/evidencefile"
	snpsim "github.com/attested-kms/attested-kms/attestation/sevsnp/simulate"
	"github.com/attested-kms/attested-kms/attestation/verifiers"
)

const fixtures = "../../test/fixtures"

func read(t testing.TB, path string) []byte {
	t.Helper()
	b, err := os.ReadFile(filepath.Join(fixtures, path))
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// platformCase is one platform's recorded evidence, with what it takes to
// verify it: roots, collateral and the time at which the collateral is
// current (test/fixtures/*/README.md).
type platformCase struct {
	typ      attestation.Platform
	evidence *attestation.Evidence
	settings verifiers.Settings
}

func cases(t testing.TB) []platformCase {
	t.Helper()
	offline := func(dir string, at time.Time) *collateral.Store {
		s, err := collateral.New(collateral.Config{Dir: dir, Offline: true, Now: func() time.Time { return at }})
		if err != nil {
			t.Fatal(err)
		}
		return s
	}
	decode := func(typ attestation.Platform, path string) *attestation.Evidence {
		ev, err := evidencefile.Decode(typ, read(t, path))
		if err != nil {
			t.Fatal(err)
		}
		return ev
	}
	tdxAt := time.Date(2026, 1, 1, 1, 0, 0, 0, time.UTC)
	azureSNPAt := time.Date(2026, 11, 22, 1, 0, 0, 0, time.UTC)
	tdxRoots := read(t, "tdx/simulated/roots.pem")
	tdxCollateral := filepath.Join(fixtures, "tdx/simulated/collateral")

	// Bare SEV-SNP: a report from the simulator, its CRL written now.
	signer, err := snpsim.LoadSigner(read(t, "sevsnp/simulator-milan.pem"))
	if err != nil {
		t.Fatal(err)
	}
	now := time.Now()
	dir := t.TempDir()
	url, crl, err := signer.CRL(now, false)
	if err != nil {
		t.Fatal(err)
	}
	if err := collateral.WriteDocument(dir, url, nil, crl); err != nil {
		t.Fatal(err)
	}
	report, table, err := signer.Sign(snpsim.ReportFields{TCB: attestation.TCBParts{Bootloader: 4, SNP: 22, Microcode: 213}})
	if err != nil {
		t.Fatal(err)
	}
	at := func(ts time.Time) func() time.Time { return func() time.Time { return ts } }
	return []platformCase{
		{attestation.PlatformSEVSNP, &attestation.Evidence{Type: attestation.PlatformSEVSNP, Report: report, Certificates: table},
			verifiers.Settings{Collateral: offline(dir, now), Now: at(now), SNPTestRootsPEM: signer.RootsPEM(), SNPRevocation: true}},
		{attestation.PlatformTDX, &attestation.Evidence{Type: attestation.PlatformTDX, Report: read(t, "tdx/simulated/quote_v4.dat")},
			verifiers.Settings{Collateral: offline(tdxCollateral, tdxAt), Now: at(tdxAt), TDXTestRootsPEM: tdxRoots, TDXRevocation: true}},
		{attestation.PlatformAzureSNPVTPM, decode(attestation.PlatformAzureSNPVTPM, "azure/sev-snp-vtpm.json"),
			verifiers.Settings{Collateral: offline(filepath.Join(fixtures, "azure/collateral"), azureSNPAt), Now: at(azureSNPAt),
				SNPTestRootsPEM: read(t, "azure/snp-roots.pem"), SNPRevocation: true}},
		{attestation.PlatformAzureTDXVTPM, decode(attestation.PlatformAzureTDXVTPM, "azure/tdx-vtpm.json"),
			verifiers.Settings{Collateral: offline(tdxCollateral, tdxAt), Now: at(tdxAt), TDXTestRootsPEM: tdxRoots, TDXRevocation: true}},
	}
}

func TestEveryPlatformThroughOneSet(t *testing.T) {
	for _, c := range cases(t) {
		t.Run(string(c.typ), func(t *testing.T) {
			set, err := verifiers.New(c.settings)
			if err != nil {
				t.Fatal(err)
			}
			claims, err := set.Verify(context.Background(), c.evidence)
			if err != nil {
				t.Fatal(err)
			}
			if claims.Platform != c.typ || claims.Revocation != attestation.RevocationChecked {
				t.Fatalf("claims %q, revocation %q", claims.Platform, claims.Revocation)
			}
			if len(set.TestRoots()) == 0 {
				t.Fatal("simulator roots trusted but not reported")
			}
			// The same evidence under another type label is refused, not
			// misparsed: the label picks the verifier.
			other := *c.evidence
			other.Type = "sgx"
			if _, err := set.Verify(context.Background(), &other); attestation.ReasonOf(err) != attestation.ReasonUnsupported {
				t.Fatalf("unknown type: %v", err)
			}
		})
	}
}

func TestDisabledPlatformRefused(t *testing.T) {
	c := cases(t)[1] // tdx
	c.settings.Platforms = []attestation.Platform{attestation.PlatformAzureTDXVTPM}
	set, err := verifiers.New(c.settings)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := set.Verify(context.Background(), c.evidence); attestation.ReasonOf(err) != attestation.ReasonUnsupported {
		t.Fatalf("bare tdx evidence with only azure-tdx-vtpm enabled: %v", err)
	}
	if _, err := verifiers.New(verifiers.Settings{Platforms: []attestation.Platform{"sgx"}}); err == nil {
		t.Fatal("unknown platform accepted")
	}
	if _, err := set.Verify(context.Background(), nil); attestation.ReasonOf(err) != attestation.ReasonMalformed {
		t.Fatalf("nil evidence: %v", err)
	}
}

func TestRevocationNeedsCollateral(t *testing.T) {
	if _, err := verifiers.New(verifiers.Settings{SNPRevocation: true, TDXRevocation: true}); err == nil {
		t.Fatal("revocation checking without any collateral source accepted")
	}
}

// BenchmarkVerify is verification per platform with warm collateral: the
// chain and collateral caches are filled by the first iteration, as on a
// KMS that has served a release before.
func BenchmarkVerify(b *testing.B) {
	for _, c := range cases(b) {
		b.Run(string(c.typ), func(b *testing.B) {
			set, err := verifiers.New(c.settings)
			if err != nil {
				b.Fatal(err)
			}
			ctx := context.Background()
			if _, err := set.Verify(ctx, c.evidence); err != nil {
				b.Fatal(err)
			}
			b.ReportAllocs()
			for b.Loop() {
				if _, err := set.Verify(ctx, c.evidence); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}
