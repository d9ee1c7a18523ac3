package main

import (
	"bytes"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/attested-kms/attested-kms/attestation"
	"github.com/attested-kms/attested-kms/attestation/evidencefile"
)

// Times at which the generated fixtures verify (test/fixtures/*/README.md).
const (
	tdxFixtureAt      = "2026-01-01T01:00:00Z"
	azureSNPFixtureAt = "2026-11-22T01:00:00Z"
)

var (
	tdxSim        = filepath.Join(fixtures, "tdx/simulated")
	tdxSimArgs    = []string{"--test-roots", filepath.Join(tdxSim, "roots.pem"), "--collateral", filepath.Join(tdxSim, "collateral"), "--offline"}
	azureSNPArgs  = []string{"--test-roots", filepath.Join(fixtures, "azure/snp-roots.pem"), "--collateral", filepath.Join(fixtures, "azure/collateral"), "--offline", "--at", azureSNPFixtureAt}
	azureTDXArgs  = append([]string{"--at", tdxFixtureAt}, tdxSimArgs...)
	tdxSimQuoteAt = append([]string{"--at", tdxFixtureAt}, tdxSimArgs...)
)

func verifyArgs(typ, file string, extra []string) []string {
	return append([]string{"evidence", "verify", "--type", typ, "--evidence", file}, extra...)
}

// Every generated fixture verifies at its time, with revocation checked.
func TestEvidenceVerifyGeneratedFixtures(t *testing.T) {
	for _, c := range []struct {
		typ   attestation.Platform
		file  string
		extra []string
	}{
		{attestation.PlatformTDX, filepath.Join(tdxSim, "quote_v4.dat"), tdxSimQuoteAt},
		{attestation.PlatformTDX, filepath.Join(tdxSim, "quote_v5_tdx10.dat"), tdxSimQuoteAt},
		{attestation.PlatformTDX, filepath.Join(tdxSim, "quote_v5_tdx15.dat"), tdxSimQuoteAt},
		{attestation.PlatformAzureSNPVTPM, filepath.Join(fixtures, "azure/sev-snp-vtpm.json"), azureSNPArgs},
		{attestation.PlatformAzureSNPVTPM, filepath.Join(fixtures, "azure/sev-snp-vtpm.coco.json"), azureSNPArgs},
		{attestation.PlatformAzureTDXVTPM, filepath.Join(fixtures, "azure/tdx-vtpm.json"), azureTDXArgs},
		{attestation.PlatformAzureTDXVTPM, filepath.Join(fixtures, "azure/tdx-vtpm.coco.json"), azureTDXArgs},
	} {
		t.Run(filepath.Base(c.file), func(t *testing.T) {
			out, errText, code := run(t, verifyArgs(string(c.typ), c.file, c.extra)...)
			if code != 0 {
				t.Fatalf("exit %d: %s", code, errText)
			}
			claims := decodeClaims(t, out)
			if claims.Platform != c.typ || claims.Revocation != attestation.RevocationChecked {
				t.Fatalf("platform %q revocation %q", claims.Platform, claims.Revocation)
			}
			if strings.HasPrefix(string(c.typ), "azure") && (claims.AzureVTPM == nil || len(claims.AzureVTPM.PCRs) != 24) {
				t.Fatalf("azure claims %+v", claims.AzureVTPM)
			}
		})
	}
}

// The genuine Intel samples that go-tdx-guest ships do not fully verify
// with the collateral shipped beside them (test/fixtures/tdx/README.md):
// everything up to TCB matching holds for v4, and v5's only TCB signing
// certificate expired before its TCB info was issued. The command must say
// exactly that, not accept them.
func TestEvidenceVerifyGenuineTDX(t *testing.T) {
	genuine := filepath.Join(fixtures, "tdx/genuine")
	args := []string{"--collateral", filepath.Join(genuine, "collateral"), "--offline"}
	_, errText, code := run(t, verifyArgs("tdx", filepath.Join(genuine, "quote_v4.dat"), append(args, "--at", "2023-07-01T01:00:00Z"))...)
	if code != exitRejected || !strings.Contains(errText, string(attestation.ReasonTCB)) {
		t.Fatalf("v4: exit %d: %s", code, errText)
	}
	_, errText, code = run(t, verifyArgs("tdx", filepath.Join(genuine, "quote_v5.dat"), append(args, "--at", "2026-02-03T01:00:00Z"))...)
	if code != exitRejected || !strings.Contains(errText, string(attestation.ReasonUntrustedRoot)) {
		t.Fatalf("v5: exit %d: %s", code, errText)
	}
}

// Altered copies of the generated fixtures are rejected with a reason.
func TestEvidenceVerifyRejectsAlteredFixtures(t *testing.T) {
	dir := t.TempDir()
	write := func(name string, b []byte) string {
		p := filepath.Join(dir, name)
		if err := os.WriteFile(p, b, 0o600); err != nil {
			t.Fatal(err)
		}
		return p
	}
	quote, err := os.ReadFile(filepath.Join(tdxSim, "quote_v4.dat"))
	if err != nil {
		t.Fatal(err)
	}
	// Header, TD body (MRTD, report data), signature, QE report.
	for _, off := range []int{2, 48 + 136, 48 + 520, 636, 636 + 64 + 64 + 10} {
		altered := bytes.Clone(quote)
		altered[off] ^= 0x01
		_, errText, code := run(t, verifyArgs("tdx", write("q.dat", altered), tdxSimQuoteAt)...)
		if code != exitRejected || !strings.Contains(errText, "EVIDENCE_") {
			t.Errorf("tdx flip at %d: exit %d: %s", off, code, errText)
		}
	}

	load := func(name string, typ attestation.Platform) *attestation.Evidence {
		b, err := os.ReadFile(filepath.Join(fixtures, "azure", name))
		if err != nil {
			t.Fatal(err)
		}
		ev, err := evidencefile.Decode(typ, b)
		if err != nil {
			t.Fatal(err)
		}
		return ev
	}
	for name, c := range map[string]struct {
		alter func(*attestation.Evidence)
		want  attestation.Reason
	}{
		"runtime data": {func(ev *attestation.Evidence) {
			i := bytes.Index(ev.Report, []byte(`"vmUniqueId"`))
			ev.Report[i+2] ^= 0x20
		}, attestation.ReasonInconsistent},
		"quote signature": {func(ev *attestation.Evidence) { ev.TPMQuote.Signature[len(ev.TPMQuote.Signature)-1] ^= 1 }, attestation.ReasonSignature},
		"quote message":   {func(ev *attestation.Evidence) { ev.TPMQuote.Message[len(ev.TPMQuote.Message)-1] ^= 1 }, attestation.ReasonSignature},
		"PCR value":       {func(ev *attestation.Evidence) { ev.TPMQuote.PCRs[7][0] ^= 1 }, attestation.ReasonInconsistent},
		"hardware report": {func(ev *attestation.Evidence) { ev.Report[32+0x90] ^= 1 }, attestation.ReasonSignature},
	} {
		for _, typ := range []attestation.Platform{attestation.PlatformAzureSNPVTPM, attestation.PlatformAzureTDXVTPM} {
			file, args := "sev-snp-vtpm.json", azureSNPArgs
			if typ == attestation.PlatformAzureTDXVTPM {
				file, args = "tdx-vtpm.json", azureTDXArgs
			}
			if typ == attestation.PlatformAzureTDXVTPM && name == "hardware report" {
				continue // a TD report is unsigned; its consistency with the quote is checked in azurevtpm
			}
			ev := load(file, typ)
			c.alter(ev)
			b, err := evidencefile.Encode(ev)
			if err != nil {
				t.Fatal(err)
			}
			_, errText, code := run(t, verifyArgs(string(typ), write("ev.json", b), args)...)
			if code != exitRejected || !strings.Contains(errText, string(c.want)) {
				t.Errorf("%s, %s: exit %d: %s (want %s)", typ, name, code, errText, c.want)
			}
		}
	}
}

// Offline collateral past its next update fails; without it at hand,
// revocation is reported as not checked.
func TestEvidenceVerifyStaleOfflineCollateral(t *testing.T) {
	_, errText, code := run(t, verifyArgs("tdx", filepath.Join(tdxSim, "quote_v4.dat"), append([]string{"--at", "2026-03-01T00:00:00Z"}, tdxSimArgs...))...)
	if code != exitRejected || !strings.Contains(errText, string(attestation.ReasonCollateralExpired)) {
		t.Fatalf("tdx: exit %d: %s", code, errText)
	}
	args := []string{"--test-roots", filepath.Join(fixtures, "azure/snp-roots.pem"), "--collateral", filepath.Join(fixtures, "azure/collateral"), "--offline", "--at", "2026-12-22T00:00:00Z"}
	_, errText, code = run(t, verifyArgs("azure-sev-snp-vtpm", filepath.Join(fixtures, "azure/sev-snp-vtpm.json"), args)...)
	if code != exitRejected || !strings.Contains(errText, string(attestation.ReasonCollateralExpired)) {
		t.Fatalf("azure snp: exit %d: %s", code, errText)
	}
	out, errText, code := run(t, verifyArgs("azure-sev-snp-vtpm", filepath.Join(fixtures, "azure/sev-snp-vtpm.json"),
		[]string{"--test-roots", filepath.Join(fixtures, "azure/snp-roots.pem"), "--offline", "--at", "2026-12-22T00:00:00Z"})...)
	if code != 0 || decodeClaims(t, out).Revocation != attestation.RevocationNotChecked {
		t.Fatalf("no CRL offline: exit %d: %s\n%s", code, errText, out)
	}
}
