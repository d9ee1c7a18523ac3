package policy

import (
	"os"
	"reflect"
	"strings"
	"testing"

	"github.com/attested-kms/attested-kms/attestation"
)

// FuzzParse checks that Parse never panics and that whatever it accepts
// evaluates without panicking (Explain agreeing with Evaluate) and
// survives a canonical round trip.
func FuzzParse(f *testing.F) {
	example, err := os.ReadFile("testdata/example.yaml")
	if err != nil {
		f.Fatal(err)
	}
	f.Add(example)
	for _, name := range []string{"tdx.yaml", "azure-sev-snp-vtpm.yaml", "azure-tdx-vtpm.yaml"} {
		b, err := os.ReadFile("testdata/" + name)
		if err != nil {
			f.Fatal(err)
		}
		f.Add(b)
	}
	f.Add([]byte(fullPolicy))
	f.Add([]byte(fullTDXPolicy))
	f.Add([]byte(azureSNPPolicy))
	f.Add([]byte(azureTDXPolicy))
	f.Add([]byte(agreementPolicy))
	f.Add([]byte("version: 1\nrules:\n  - name: r\n    azure_tdx_vtpm: {vtpm: {pcrs: {07: [ab], 7: [cd], 24: []}}, tdx: {tcb_statuses: [uptodate]}}\n"))
	f.Add([]byte("version: 1\nrules:\n  - name: r\n    tdx: {mrtd: [" + mrtdA + "], min_tee_tcb_svn: \"00\", forbidden_advisories: [INTEL-SA-0001]}\n"))
	f.Add([]byte("version: 1\nrules:\n  - name: r\n    sev_snp:\n      measurements: [" + measA + "]\n"))
	f.Add([]byte("version: 1\nrules:\n  - name: r\n    sev_snp: {measurements: [" + measA + "], vmpl: [0, 1], allow_debug: true, min_tcb: {snp: 3}}\n    token: {claims: {a: 1, b: true, c: x, d: 1.5}}\n"))
	f.Add([]byte("version: 1\nrules:\n  - &r {name: a, sev_snp: {measurements: [" + measA + "]}}\n  - *r\n"))
	f.Add([]byte("version: 1\nrules:\n  - name: r\n    token: {issuers: [x]}\n"))
	f.Add([]byte("version: 1\nrules: []\n"))
	f.Add([]byte("version: 2\n"))
	f.Add([]byte("a: &a [*a]\n"))
	f.Add([]byte{})

	inputs := func() []Input {
		g := grantInput()
		other := grantInput()
		other.Evidence.SEVSNP.Debug = true
		other.Token = map[string]any{"aud": 3.0, "appid": []any{}, "roles": map[string]any{}}
		return []Input{
			g, other, {}, tdxInput(), azureSNPInput(), azureTDXInput(),
			inputFrom([]byte{3, 20, 27}),
			{Evidence: &attestation.Claims{Platform: attestation.PlatformSEVSNP}},
			{Evidence: &attestation.Claims{Platform: attestation.PlatformTDX}},
			{Evidence: &attestation.Claims{Platform: attestation.PlatformAzureSNPVTPM}},
			{Evidence: &attestation.Claims{Platform: attestation.PlatformAzureTDXVTPM, AzureVTPM: &attestation.AzureVTPMClaims{}}},
		}
	}()

	f.Fuzz(func(t *testing.T, b []byte) {
		p, err := Parse(b)
		if err != nil {
			if p != nil {
				t.Fatal("policy returned with an error")
			}
			return
		}
		for _, in := range inputs {
			d := p.Evaluate(in)
			if d.Allowed == (len(d.Denials) > 0) {
				t.Fatalf("inconsistent decision %+v", d)
			}
			if strings.ContainsAny(d.Summary(), "\n\r") {
				t.Fatalf("multi-line summary %q", d.Summary())
			}
			checkAgreement(t, p, in)
		}
		if got, want := len(p.RuleNames()), len(p.rules); got != want {
			t.Fatalf("RuleNames lists %d of %d rules", got, want)
		}
		out, err := p.Marshal()
		if err != nil {
			t.Fatalf("Marshal: %v", err)
		}
		p2, err := Parse(out)
		if err != nil {
			t.Fatalf("canonical form rejected: %v\n%s", err, out)
		}
		for _, in := range inputs {
			if d1, d2 := p.Evaluate(in), p2.Evaluate(in); !reflect.DeepEqual(d1, d2) {
				t.Fatalf("canonical form decides differently: %q vs %q", d1.Summary(), d2.Summary())
			}
		}
		out2, err := p2.Marshal()
		if err != nil || string(out2) != string(out) {
			t.Fatalf("canonical form not a fixed point:\n%s\n---\n%s", out, out2)
		}
	})
}
