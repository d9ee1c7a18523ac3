package policy

import (
	"os"
	"strings"
	"testing"

	"github.com/attested-kms/attested-kms/attestation"
)

// Azure test values: SHA-256 PCR values (32 bytes) and a VM unique id.
var (
	pcr4  = strings.Repeat("04", 32)
	pcr7a = strings.Repeat("7a", 32)
	pcr7b = strings.Repeat("7b", 32)
	pcr11 = strings.Repeat("11", 32)
	vmID  = "B5D1F0A2-3C4E-4F6A-8B9C-0D1E2F3A4B5C"
)

const vtpmSection = `      vtpm:
        pcrs:
          4: [` + "%PCR4%" + `]
          7: [` + "%PCR7A%, %PCR7B%" + `]
          11: [` + "%PCR11%" + `]
        vm_unique_ids: ["` + "%VMID%" + `"]
`

func fillVTPM(s string) string {
	return strings.NewReplacer("%PCR4%", pcr4, "%PCR7A%", pcr7a, "%PCR7B%", pcr7b, "%PCR11%", pcr11,
		"%VMID%", strings.ToLower(vmID)).Replace(s)
}

// azureSNPPolicy pins the paravisor's measurement too, so the nested
// section's optional allow-list is exercised.
var azureSNPPolicy = fillVTPM(`version: 1
rules:
  - name: cvm
    azure_sev_snp_vtpm:
` + vtpmSection + `      sev_snp:
        measurements: [` + measB + `]
        min_tcb: {snp: 8}
    token:
      tenant_ids: ["` + tenant + `"]
`)

var azureTDXPolicy = fillVTPM(`version: 1
rules:
  - name: cvm
    azure_tdx_vtpm:
` + vtpmSection + `      tdx:
        mrseam: [` + mrSeam + `]
        tcb_statuses: [UpToDate, SWHardeningNeeded]
`)

func vtpmClaims() *attestation.AzureVTPMClaims {
	return &attestation.AzureVTPMClaims{
		AKPub:      []byte{0x30, 0x01},
		UserData:   make([]byte, 64),
		VMUniqueID: vmID,
		SecureBoot: true,
		TPMEnabled: true,
		PCRs: map[int]attestation.HexBytes{
			0: make([]byte, 32), 4: mustHex(pcr4), 7: mustHex(pcr7b), 11: mustHex(pcr11), 14: make([]byte, 32),
		},
	}
}

func azureSNPInput() Input {
	in := grantInput()
	in.Evidence.Platform = attestation.PlatformAzureSNPVTPM
	in.Evidence.AzureVTPM = vtpmClaims()
	in.Token = map[string]any{"tid": tenant}
	return in
}

func azureTDXInput() Input {
	in := tdxInput()
	in.Evidence.Platform = attestation.PlatformAzureTDXVTPM
	in.Evidence.AzureVTPM = vtpmClaims()
	return in
}

func TestAzureGrant(t *testing.T) {
	for _, tt := range []struct {
		name string
		pol  string
		in   Input
	}{
		{"snp", azureSNPPolicy, azureSNPInput()},
		{"tdx", azureTDXPolicy, azureTDXInput()},
	} {
		p := mustParse(t, tt.pol)
		if d := p.Evaluate(tt.in); !d.Allowed || d.Rule != "cvm" {
			t.Errorf("%s: %s", tt.name, d.Summary())
		}
		// The other allowed PCR 7 value; unpinned PCRs may be anything.
		in := tt.in
		in.Evidence.AzureVTPM.PCRs[7] = mustHex(pcr7a)
		in.Evidence.AzureVTPM.PCRs[0] = mustHex(pcr7a)
		if d := p.Evaluate(in); !d.Allowed {
			t.Errorf("%s: second PCR 7 value: %s", tt.name, d.Summary())
		}
	}
}

// TestAzureDenials breaks one condition at a time, for both platforms.
func TestAzureDenials(t *testing.T) {
	type test struct {
		name   string
		mutate func(in *Input)
		cond   string // without the section prefix
		reason string
	}
	vtpmTests := []test{
		{"secure boot off", func(in *Input) { in.Evidence.AzureVTPM.SecureBoot = false },
			"vtpm.secure_boot", "secure boot is off"},
		{"pcr mismatch", func(in *Input) { in.Evidence.AzureVTPM.PCRs[7] = mustHex(pcr4) },
			"vtpm.pcrs[7]", "PCR 7 value " + pcr4 + " is not among the 2 allowed values"},
		{"pcr missing", func(in *Input) { delete(in.Evidence.AzureVTPM.PCRs, 11) },
			"vtpm.pcrs[11]", "PCR 11 is not among the PCRs the verified quote covers"},
		{"pcr truncated", func(in *Input) { in.Evidence.AzureVTPM.PCRs[4] = mustHex(pcr4[:32]) },
			"vtpm.pcrs[4]", "is not among the 1 allowed value"},
		{"vm id", func(in *Input) { in.Evidence.AzureVTPM.VMUniqueID = tenant },
			"vtpm.vm_unique_ids", `VM unique id "` + tenant + `" is not among the 1 allowed VM unique id`},
		{"vm id missing", func(in *Input) { in.Evidence.AzureVTPM.VMUniqueID = "" },
			"vtpm.vm_unique_ids", "the evidence carries no VM unique id"},
		{"no vtpm claims", func(in *Input) { in.Evidence.AzureVTPM = nil },
			"vtpm", "the evidence carries no vTPM claims"},
	}
	snpTests := append(vtpmTests,
		test{"paravisor measurement", func(in *Input) { in.Evidence.SEVSNP.Measurement = mustHex(measA) },
			"sev_snp.measurements", "measurement " + measA + " is not among the 1 allowed measurement"},
		test{"tcb", func(in *Input) { in.Evidence.SEVSNP.ReportedTCB.SNP = 7 },
			"sev_snp.min_tcb.snp", "below the minimum 8"},
		test{"debug", func(in *Input) { in.Evidence.SEVSNP.Debug = true },
			"sev_snp.allow_debug", "debug guest refused"},
		test{"vmpl", func(in *Input) { in.Evidence.SEVSNP.VMPL = 2 },
			"sev_snp.vmpl", "report was requested at VMPL 2; allowed: 0"},
		test{"no snp claims", func(in *Input) { in.Evidence.SEVSNP = nil },
			"sev_snp", "azure-sev-snp-vtpm evidence carries no SEV-SNP claims"},
	)
	tdxTests := append(vtpmTests[:len(vtpmTests):len(vtpmTests)],
		test{"mrseam", func(in *Input) { in.Evidence.TDX.MRSeam = mustHex(mrtdA) }, "tdx.mrseam", "mrseam " + mrtdA},
		test{"debug", func(in *Input) { in.Evidence.TDX.Debug = true }, "tdx.allow_debug", "debug TD refused"},
		test{"status", func(in *Input) { in.Evidence.TDX.TCBStatus = "OutOfDate" }, "tdx.tcb_statuses", `"OutOfDate" is not acceptable`},
		test{"no tdx claims", func(in *Input) { in.Evidence.TDX = nil }, "tdx", "azure-tdx-vtpm evidence carries no TDX claims"},
	)
	for _, suite := range []struct {
		prefix string
		pol    string
		input  func() Input
		tests  []test
	}{
		{"azure_sev_snp_vtpm", azureSNPPolicy, azureSNPInput, snpTests},
		{"azure_tdx_vtpm", azureTDXPolicy, azureTDXInput, tdxTests},
	} {
		p := mustParse(t, suite.pol)
		for _, tt := range suite.tests {
			t.Run(suite.prefix+"/"+tt.name, func(t *testing.T) {
				in := suite.input()
				tt.mutate(&in)
				d := p.Evaluate(in)
				if d.Allowed || len(d.Denials) != 1 {
					t.Fatalf("decision = %+v, want exactly one denial", d)
				}
				dn := d.Denials[0]
				if want := suite.prefix + "." + tt.cond; dn.Condition != want {
					t.Errorf("condition %q, want %q", dn.Condition, want)
				}
				if !strings.Contains(dn.Reason, tt.reason) {
					t.Errorf("reason %q\ndoes not contain %q", dn.Reason, tt.reason)
				}
				if s := d.Summary(); !strings.HasPrefix(s, `denied: rule "cvm": `+dn.Condition+": ") {
					t.Errorf("Summary = %q", s)
				}
			})
		}
	}
}

// TestAzureDefaults: without a hardware section the hardware defaults
// still hold; the measurement is not required; secure boot is required
// unless turned off.
func TestAzureDefaults(t *testing.T) {
	snp := mustParse(t, "version: 1\nrules:\n  - name: a\n    azure_sev_snp_vtpm:\n      vtpm:\n        pcrs: {7: ["+pcr7b+"]}\n")
	tdx := mustParse(t, "version: 1\nrules:\n  - name: a\n    azure_tdx_vtpm:\n      vtpm:\n        pcrs: {7: ["+pcr7b+"]}\n")

	in := azureSNPInput()
	in.Evidence.SEVSNP.Measurement = mustHex(measC) // any paravisor measurement
	if d := snp.Evaluate(in); !d.Allowed {
		t.Fatalf("snp: %s", d.Summary())
	}
	// tdxIn suits the minimal policy: default statuses accept UpToDate only.
	tdxIn := func() Input {
		in := azureTDXInput()
		in.Evidence.TDX.MRTD = mustHex(measC)
		in.Evidence.TDX.TCBStatus = "UpToDate"
		return in
	}
	if d := tdx.Evaluate(tdxIn()); !d.Allowed {
		t.Fatalf("tdx: %s", d.Summary())
	}

	refusals := []struct {
		name string
		p    *Policy
		in   func() Input
		cond string
	}{
		{"snp debug", snp, func() Input { in := azureSNPInput(); in.Evidence.SEVSNP.Debug = true; return in }, "azure_sev_snp_vtpm.sev_snp.allow_debug"},
		{"snp vmpl", snp, func() Input { in := azureSNPInput(); in.Evidence.SEVSNP.VMPL = 1; return in }, "azure_sev_snp_vtpm.sev_snp.vmpl"},
		{"snp secure boot", snp, func() Input { in := azureSNPInput(); in.Evidence.AzureVTPM.SecureBoot = false; return in }, "azure_sev_snp_vtpm.vtpm.secure_boot"},
		{"tdx debug", tdx, func() Input { in := tdxIn(); in.Evidence.TDX.Debug = true; return in }, "azure_tdx_vtpm.tdx.allow_debug"},
		{"tdx out of date", tdx, func() Input { in := tdxIn(); in.Evidence.TDX.TCBStatus = "OutOfDate"; return in }, "azure_tdx_vtpm.tdx.tcb_statuses"},
		{"tdx secure boot", tdx, func() Input { in := tdxIn(); in.Evidence.AzureVTPM.SecureBoot = false; return in }, "azure_tdx_vtpm.vtpm.secure_boot"},
	}
	for _, tt := range refusals {
		d := tt.p.Evaluate(tt.in())
		if d.Allowed || len(d.Denials) != 1 || d.Denials[0].Condition != tt.cond {
			t.Errorf("%s: %+v, want one denial at %s", tt.name, d, tt.cond)
		}
	}

	off := mustParse(t, "version: 1\nrules:\n  - name: a\n    azure_sev_snp_vtpm:\n      vtpm:\n        secure_boot: false\n        pcrs: {7: ["+pcr7b+"]}\n")
	in = azureSNPInput()
	in.Evidence.AzureVTPM.SecureBoot = false
	if d := off.Evaluate(in); !d.Allowed {
		t.Errorf("secure_boot: false still requires secure boot: %s", d.Summary())
	}
}

func TestAzureParseErrors(t *testing.T) {
	snp := func(body string) string {
		return "version: 1\nrules:\n  - name: r\n    azure_sev_snp_vtpm:\n" + body
	}
	pcrs := "      vtpm:\n        pcrs: {7: [" + pcr7a + "]}\n"
	tests := []struct {
		name string
		in   string
		want []string
	}{
		{"no vtpm", snp("      sev_snp: {measurements: [" + measA + "]}\n"), []string{"line 4", "rules[0].azure_sev_snp_vtpm.vtpm", "required", "PCRs"}},
		{"no pcrs", snp("      vtpm: {secure_boot: true}\n"), []string{"line 5", "azure_sev_snp_vtpm.vtpm.pcrs", "required", "any Azure confidential VM"}},
		{"empty pcrs", snp("      vtpm: {pcrs: {}}\n"), []string{"line 5", "vtpm.pcrs", "empty mapping"}},
		{"null pcrs", snp("      vtpm:\n        pcrs:\n"), []string{"line 6", "vtpm.pcrs has no value"}},
		{"null pcr list", snp("      vtpm:\n        pcrs:\n          7:\n"), []string{"line 7", "vtpm.pcrs.7 has no value"}},
		{"empty pcr list", snp("      vtpm:\n        pcrs:\n          7: []\n"), []string{"line 7", "vtpm.pcrs[7]", "empty list"}},
		{"pcr out of range", snp("      vtpm:\n        pcrs:\n          24: [" + pcr7a + "]\n"), []string{"line 7", "vtpm.pcrs[24]", "PCR 24 does not exist (0-23)"}},
		{"pcr leading zero", snp("      vtpm:\n        pcrs:\n          07: [" + pcr7a + "]\n"), []string{"vtpm.pcrs[07]", "want a decimal number 0-23"}},
		{"pcr negative", snp("      vtpm:\n        pcrs:\n          -1: [" + pcr7a + "]\n"), []string{"vtpm.pcrs[-1]", "want a decimal number"}},
		{"pcr name", snp("      vtpm:\n        pcrs:\n          secureboot: [" + pcr7a + "]\n"), []string{`PCR index "secureboot"`}},
		{"duplicate pcr", snp("      vtpm:\n        pcrs:\n          7: [" + pcr7a + "]\n          7: [" + pcr7b + "]\n"), []string{"line 8", "already defined at line 7"}},
		{"pcr sha1 length", snp("      vtpm:\n        pcrs:\n          7: [" + strings.Repeat("ab", 20) + "]\n"), []string{"line 7", "vtpm.pcrs[7][0]", "want 64 hex digits (32 bytes), got 40"}},
		{"pcr sha384 length", snp("      vtpm:\n        pcrs:\n          7:\n            - " + pcr7a + "\n            - " + measA + "\n"), []string{"line 9", "vtpm.pcrs[7][1]", "want 64 hex digits"}},
		{"duplicate pcr value", snp("      vtpm:\n        pcrs:\n          7: [" + pcr7a + ", " + strings.ToUpper(pcr7a) + "]\n"), []string{"vtpm.pcrs[7][1]", "listed twice"}},
		{"pcr value not list", snp("      vtpm:\n        pcrs:\n          7: " + pcr7a + "\n"), []string{"line 7", "vtpm.pcrs.7"}},
		{"secure boot not bool", snp("      vtpm:\n        secure_boot: yes please\n        pcrs: {7: [" + pcr7a + "]}\n"), []string{"line 6", "secure_boot"}},
		{"bad vm id", snp(pcrs + "        vm_unique_ids: [vm-1]\n"), []string{"line 7", "vtpm.vm_unique_ids[0]", "not a GUID"}},
		{"duplicate vm id", snp(pcrs + "        vm_unique_ids: [\"" + vmID + "\", \"" + strings.ToLower(vmID) + "\"]\n"), []string{"vm_unique_ids[1]", "listed twice"}},
		{"unknown vtpm field", snp(pcrs + "        pcr: {}\n"), []string{"line 7", `unknown field "pcr"`, "secure_boot, pcrs, vm_unique_ids"}},
		{"unknown azure field", snp(pcrs + "      tdx: {}\n"), []string{"line 7", `unknown field "tdx"`, "vtpm, sev_snp"}},
		{"nested measurement length", snp(pcrs + "      sev_snp: {measurements: [" + hostData + "]}\n"), []string{"line 7", "azure_sev_snp_vtpm.sev_snp.measurements[0]", "want 96 hex digits"}},
		{"nested empty measurements", snp(pcrs + "      sev_snp: {measurements: []}\n"), []string{"azure_sev_snp_vtpm.sev_snp.measurements", "empty list"}},
		{"nested vmpl", snp(pcrs + "      sev_snp: {vmpl: [5]}\n"), []string{"azure_sev_snp_vtpm.sev_snp.vmpl[0]", "VMPL 5 does not exist"}},
		{"nested null", snp(pcrs + "      sev_snp:\n"), []string{"line 7", "azure_sev_snp_vtpm.sev_snp has no value"}},
		{"tdx nested status", "version: 1\nrules:\n  - name: r\n    azure_tdx_vtpm:\n" + pcrs + "      tdx: {tcb_statuses: [Fine]}\n",
			[]string{"line 7", "azure_tdx_vtpm.tdx.tcb_statuses[0]", "not a TCB status"}},
		{"tdx nested mrtd length", "version: 1\nrules:\n  - name: r\n    azure_tdx_vtpm:\n" + pcrs + "      tdx: {mrtd: [ab]}\n",
			[]string{"azure_tdx_vtpm.tdx.mrtd[0]", "want 96 hex digits"}},
		{"tdx nested in snp", "version: 1\nrules:\n  - name: r\n    azure_tdx_vtpm:\n" + pcrs + "      sev_snp: {}\n",
			[]string{`unknown field "sev_snp"`, "vtpm, tdx"}},
		{"bare and azure", "version: 1\nrules:\n  - name: r\n    sev_snp: {measurements: [" + measA + "]}\n    azure_sev_snp_vtpm:\n" + pcrs,
			[]string{"line 3", "2 evidence sections"}},
		{"both azure", "version: 1\nrules:\n  - name: r\n    azure_tdx_vtpm:\n" + pcrs + "    azure_sev_snp_vtpm:\n" + pcrs,
			[]string{"2 evidence sections"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			p, err := Parse([]byte(tt.in))
			if err == nil || p != nil {
				t.Fatalf("Parse accepted:\n%s", tt.in)
			}
			for _, w := range tt.want {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("error %q\ndoes not contain %q", err, w)
				}
			}
		})
	}
}

// TestPlatformIsolation: a section only matches evidence of its own
// platform, even when the evidence carries the claims it checks (Azure
// SNP evidence has an SNP report that a bare sev_snp rule would accept).
func TestPlatformIsolation(t *testing.T) {
	snp := "  - name: snp\n    sev_snp: {measurements: [" + measB + "]}\n"
	tdx := "  - name: tdx\n    tdx: {mrtd: [" + mrtdB + "], tcb_statuses: [SWHardeningNeeded]}\n"
	azSNP := "  - name: azsnp\n    azure_sev_snp_vtpm: {vtpm: {pcrs: {7: [" + pcr7b + "]}}}\n"
	azTDX := "  - name: aztdx\n    azure_tdx_vtpm: {vtpm: {pcrs: {7: [" + pcr7b + "]}}, tdx: {tcb_statuses: [SWHardeningNeeded]}}\n"
	rules := map[string]string{"snp": snp, "tdx": tdx, "azsnp": azSNP, "aztdx": azTDX}

	// One input per platform that carries every claim section, so only
	// the platform tells the rules apart.
	all := func(p attestation.Platform) Input {
		in := grantInput()
		in.Evidence.Platform = p
		in.Evidence.TDX = tdxClaims()
		in.Evidence.AzureVTPM = vtpmClaims()
		return in
	}
	inputs := map[string]Input{
		"snp":   all(attestation.PlatformSEVSNP),
		"tdx":   all(attestation.PlatformTDX),
		"azsnp": all(attestation.PlatformAzureSNPVTPM),
		"aztdx": all(attestation.PlatformAzureTDXVTPM),
	}
	for ruleName, r := range rules {
		p := mustParse(t, "version: 1\nrules:\n"+r)
		for evName, in := range inputs {
			d := p.Evaluate(in)
			if want := ruleName == evName; d.Allowed != want {
				t.Errorf("rule %s, evidence %s: allowed = %v, want %v (%s)", ruleName, evName, d.Allowed, want, d.Summary())
			}
			if ruleName != evName && (len(d.Denials) != 1 || d.Denials[0].Condition != "evidence.platform") {
				t.Errorf("rule %s, evidence %s: %+v, want a platform denial", ruleName, evName, d)
			}
		}
	}
	// All four rules together: each evidence is granted by its own rule.
	p := mustParse(t, "version: 1\nrules:\n"+snp+tdx+azSNP+azTDX)
	for evName, in := range inputs {
		if d := p.Evaluate(in); !d.Allowed || d.Rule != evName {
			t.Errorf("evidence %s: %s", evName, d.Summary())
		}
	}
	d := p.Evaluate(Input{Evidence: &attestation.Claims{Platform: "sgx"}})
	if d.Allowed || d.Denials[0].Reason != `no rule accepts "sgx" evidence; rules cover sev-snp, tdx, azure-sev-snp-vtpm, azure-tdx-vtpm` {
		t.Errorf("unknown platform: %+v", d)
	}
}

func TestParsePlatformExamples(t *testing.T) {
	for file, want := range map[string]string{
		"tdx.yaml":                "prod-inference-tdx",
		"azure-sev-snp-vtpm.yaml": "aks-inference-snp",
		"azure-tdx-vtpm.yaml":     "inference-tdx-cvm",
	} {
		src := readTestdata(t, file)
		p, err := Parse([]byte(src))
		if err != nil {
			t.Fatalf("%s: %v", file, err)
		}
		if got := strings.Join(p.RuleNames(), ","); got != want {
			t.Errorf("%s: rule names %q", file, got)
		}
		out, err := p.Marshal()
		if err != nil {
			t.Fatal(err)
		}
		out2, err := mustParse(t, string(out)).Marshal()
		if err != nil || string(out) != string(out2) {
			t.Errorf("%s: canonical form not a fixed point:\n%s\n---\n%s", file, out, out2)
		}
	}
}

// TestMarshalAzure: PCR indices are written as numbers in numeric order,
// and an omitted hardware section is written out with its defaults.
func TestMarshalAzure(t *testing.T) {
	p := mustParse(t, "version: 1\nrules:\n  - name: a\n    azure_sev_snp_vtpm:\n      vtpm:\n        pcrs: {11: ["+pcr11+"], 4: ["+pcr4+"], 7: ["+pcr7b+", "+pcr7a+"]}\n"+
		"  - name: b\n    azure_tdx_vtpm:\n      vtpm:\n        pcrs: {0: ["+pcr4+"]}\n")
	out, err := p.Marshal()
	if err != nil {
		t.Fatal(err)
	}
	got := string(out)
	var keys []string
	for line := range strings.Lines(got) {
		line = strings.TrimSpace(line)
		if k, ok := strings.CutSuffix(line, ":"); ok && k != "" && strings.Trim(k, "0123456789") == "" {
			keys = append(keys, k)
		}
	}
	if strings.Join(keys, ",") != "4,7,11,0" {
		t.Errorf("PCR keys written as %v, want 4,7,11,0:\n%s", keys, got)
	}
	for _, w := range []string{"secure_boot: true", "sev_snp:\n        allow_debug: false\n        vmpl:\n          - 0\n",
		"tdx:\n        allow_debug: false\n        tcb_statuses:\n          - UpToDate\n", "0:\n"} {
		if !strings.Contains(got, w) {
			t.Errorf("canonical form:\n%s\nlacks %q", got, w)
		}
	}
}

func BenchmarkEvaluateAzure(b *testing.B) {
	p := mustParse(b, azureSNPPolicy)
	in := azureSNPInput()
	b.ReportAllocs()
	for b.Loop() {
		if !p.Evaluate(in).Allowed {
			b.Fatal("denied")
		}
	}
}

func readTestdata(t *testing.T, name string) string {
	t.Helper()
	b, err := os.ReadFile("testdata/" + name)
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}
