package main

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/attested-kms/attested-kms/attestation"
)

const fixtures = "../../test/fixtures"

// run executes the kms command line and returns stdout, the error text
// main would print, and the exit code main would use.
func run(t *testing.T, args ...string) (stdout, errText string, code int) {
	t.Helper()
	cmd := newRootCmd()
	var out, errb bytes.Buffer
	cmd.SetOut(&out)
	cmd.SetErr(&errb)
	cmd.SetArgs(args)
	err := cmd.ExecuteContext(context.Background())
	if err == nil {
		return out.String(), "", 0
	}
	code = 1
	var ee *exitError
	if errors.As(err, &ee) {
		code = ee.code
	}
	return out.String(), err.Error(), code
}

func decodeClaims(t *testing.T, out string) *attestation.Claims {
	t.Helper()
	var c attestation.Claims
	if err := json.Unmarshal([]byte(out), &c); err != nil {
		t.Fatalf("output is not claims JSON: %v\n%s", err, out)
	}
	return &c
}

// The genuine Milan recording verifies at its time with its VCEK; with
// --offline and no CRL at hand the claims say revocation was not checked.
func TestEvidenceVerifyGenuineSNP(t *testing.T) {
	report := filepath.Join(fixtures, "sevsnp/attestation.bin")
	vcek := filepath.Join(fixtures, "sevsnp/vcek.testcer")
	out, errText, code := run(t, "evidence", "verify", "--type", "sev-snp", "--evidence", report,
		"--vcek", vcek, "--at", "2023-06-01T00:00:00Z", "--offline")
	if code != 0 {
		t.Fatalf("exit %d: %s", code, errText)
	}
	c := decodeClaims(t, out)
	if c.Platform != attestation.PlatformSEVSNP || c.SEVSNP == nil || c.SEVSNP.Product != "Milan" {
		t.Fatalf("claims %+v", c)
	}
	if c.Revocation != attestation.RevocationNotChecked {
		t.Fatalf("revocation %q without a CRL offline", c.Revocation)
	}

	// --report-data must match exactly.
	rd := c.ReportData.String()
	if _, errText, code = run(t, "evidence", "verify", "--type", "sev-snp", "--evidence", report, "--vcek", vcek,
		"--at", "2023-06-01T00:00:00Z", "--offline", "--report-data", rd); code != 0 {
		t.Fatalf("matching --report-data: exit %d: %s", code, errText)
	}
	other := strings.Repeat("00", 64)
	_, errText, code = run(t, "evidence", "verify", "--type", "sev-snp", "--evidence", report, "--vcek", vcek,
		"--at", "2023-06-01T00:00:00Z", "--offline", "--report-data", other)
	if code != exitRejected || !strings.Contains(errText, "does not match --report-data") {
		t.Fatalf("mismatching --report-data: exit %d: %s", code, errText)
	}

	// Long after the VCEK expired, the chain is not valid.
	_, errText, code = run(t, "evidence", "verify", "--type", "sev-snp", "--evidence", report, "--vcek", vcek,
		"--at", "2035-01-01T00:00:00Z", "--offline")
	if code != exitRejected || !strings.Contains(errText, string(attestation.ReasonUntrustedRoot)) {
		t.Fatalf("expired chain: exit %d: %s", code, errText)
	}
}

// Every altered copy is rejected with one line naming a reason.
func TestEvidenceVerifyRejectsAlteredSNP(t *testing.T) {
	raw, err := os.ReadFile(filepath.Join(fixtures, "sevsnp/attestation.bin"))
	if err != nil {
		t.Fatal(err)
	}
	vcek := filepath.Join(fixtures, "sevsnp/vcek.testcer")
	dir := t.TempDir()
	// One flip in each signed region: header fields, measurement, report
	// data, chip id, and in the signature itself.
	for _, off := range []int{0x00, 0x08, 0x50, 0x90, 0x1A0, 0x2A0} {
		altered := bytes.Clone(raw)
		altered[off] ^= 0x01
		p := filepath.Join(dir, "altered.bin")
		if err := os.WriteFile(p, altered, 0o600); err != nil {
			t.Fatal(err)
		}
		out, errText, code := run(t, "evidence", "verify", "--type", "sev-snp", "--evidence", p, "--vcek", vcek,
			"--at", "2023-06-01T00:00:00Z", "--offline")
		if code != exitRejected || out != "" || strings.Contains(errText, "\n") || !strings.Contains(errText, "EVIDENCE_") {
			t.Errorf("flip at %#x: exit %d, stdout %q, error %q", off, code, out, errText)
		}
	}
}

func TestEvidenceVerifyUsage(t *testing.T) {
	report := filepath.Join(fixtures, "sevsnp/attestation.bin")
	for name, args := range map[string][]string{
		"no type":        {"evidence", "verify", "--evidence", report},
		"unknown type":   {"evidence", "verify", "--type", "sgx", "--evidence", report},
		"bad time":       {"evidence", "verify", "--type", "sev-snp", "--evidence", report, "--at", "yesterday"},
		"bad hex":        {"evidence", "verify", "--type", "sev-snp", "--evidence", report, "--report-data", "zz"},
		"missing file":   {"evidence", "verify", "--type", "sev-snp", "--evidence", filepath.Join(t.TempDir(), "none")},
		"vcek for tdx":   {"evidence", "verify", "--type", "tdx", "--evidence", report, "--vcek", report},
		"azure raw file": {"evidence", "verify", "--type", "azure-sev-snp-vtpm", "--evidence", report},
	} {
		t.Run(name, func(t *testing.T) {
			if _, errText, code := run(t, args...); code != 1 || errText == "" {
				t.Fatalf("exit %d (%q), want a usage error (1)", code, errText)
			}
		})
	}
}

func TestPolicyExplain(t *testing.T) {
	dir := t.TempDir()
	out, errText, code := run(t, "evidence", "verify", "--type", "sev-snp",
		"--evidence", filepath.Join(fixtures, "sevsnp/attestation.bin"),
		"--vcek", filepath.Join(fixtures, "sevsnp/vcek.testcer"), "--at", "2023-06-01T00:00:00Z", "--offline")
	if code != 0 {
		t.Fatalf("exit %d: %s", code, errText)
	}
	claims := filepath.Join(dir, "claims.json")
	write := func(name, s string) string {
		p := filepath.Join(dir, name)
		if err := os.WriteFile(p, []byte(s), 0o600); err != nil {
			t.Fatal(err)
		}
		return p
	}
	write("claims.json", out)
	c := decodeClaims(t, out)
	grant := write("grant.yaml", `version: 1
rules:
  - name: genuine-milan
    sev_snp:
      measurements: ["`+c.SEVSNP.Measurement.String()+`"]
      allow_debug: true
    token:
      tenant_ids: ["72f988bf-86f1-41af-91ab-2d7cd011db47"]
`)
	tok := write("token.json", `{"tid":"72f988bf-86f1-41af-91ab-2d7cd011db47","oid":"x"}`)
	out, errText, code = run(t, "policy", "explain", "--policy", grant, "--evidence", claims, "--token", tok)
	if code != 0 || !strings.Contains(out, "held    sev_snp.measurements") || !strings.Contains(out, `granted by rule "genuine-milan"`) {
		t.Fatalf("grant: exit %d (%s)\n%s", code, errText, out)
	}
	// A JWT's payload works as well as JSON claims; this one names
	// another tenant, so the token condition fails.
	jwt := write("token.jwt", "eyJhbGciOiJSUzI1NiJ9.eyJ0aWQiOiIwMDAwMDAwMC0wMDAwLTAwMDAtMDAwMC0wMDAwMDAwMDAwMDAifQ.c2ln")
	out, _, code = run(t, "policy", "explain", "--policy", grant, "--evidence", claims, "--token", jwt)
	if code != 3 || !strings.Contains(out, "FAILED  token.tenant_ids") || !strings.Contains(out, "decision: denied") {
		t.Fatalf("deny: exit %d\n%s", code, out)
	}
	// Raw evidence is verified first; without --type it is refused.
	if _, errText, code = run(t, "policy", "explain", "--policy", grant,
		"--evidence", filepath.Join(fixtures, "sevsnp/attestation.bin")); code != 1 || !strings.Contains(errText, "--type") {
		t.Fatalf("raw evidence without --type: exit %d: %s", code, errText)
	}
}
