package policy

import (
	"encoding/json"
	"math/rand/v2"
	"reflect"
	"strings"
	"testing"

	"github.com/attested-kms/attested-kms/attestation"
)

func conditionNames(cs []ConditionResult) string {
	names := make([]string, len(cs))
	for i, c := range cs {
		names[i] = c.Condition
	}
	return strings.Join(names, ",")
}

// TestExplainGrantListsEveryCondition: for a grant, every condition of the
// grammar appears once, held, in grammar order, saying what matched.
func TestExplainGrantListsEveryCondition(t *testing.T) {
	tests := []struct {
		name  string
		pol   string
		in    Input
		conds string
		held  map[string]string // condition -> reason
	}{
		{"sev-snp", fullPolicy, grantInput(),
			"sev_snp.measurements,sev_snp.host_data,sev_snp.family_ids,sev_snp.image_ids," +
				"sev_snp.min_tcb.bootloader,sev_snp.min_tcb.tee,sev_snp.min_tcb.snp,sev_snp.min_tcb.microcode,sev_snp.min_tcb.fmc," +
				"sev_snp.allow_debug,sev_snp.vmpl,sev_snp.min_guest_svn," +
				"token.issuers,token.audiences,token.tenant_ids,token.object_ids,token.app_ids,token.mi_resource_ids," +
				"token.claims.idtyp,token.claims.roles,token.claims.ver,token.claims.xms_cc",
			map[string]string{
				"sev_snp.measurements":       "measurement " + measB + " is allowed",
				"sev_snp.min_tcb.snp":        "reported TCB snp is 8, at least the minimum 8",
				"sev_snp.allow_debug":        "not a debug guest",
				"sev_snp.vmpl":               "report was requested at VMPL 0; allowed: 0",
				"sev_snp.min_guest_svn":      "guest SVN 2 meets the minimum 2",
				"token.issuers":              `issuer "` + issuer + `" is allowed`,
				"token.audiences":            `audience "` + audience + `" is allowed`,
				"token.tenant_ids":           `tenant id (tid) "` + tenant + `" is allowed`,
				"token.app_ids":              `application id "` + appID + `" is allowed`,
				"token.claims.idtyp":         `token claim "idtyp" equals the required value "app"`,
				"token.claims.roles":         `token claim "roles" contains the required value "KeyRelease"`,
				"token.claims.ver":           `token claim "ver" equals the required value 1`,
				"token.mi_resource_ids":      `managed identity resource id (xms_mirid) "` + mirid + `" is allowed`,
				"sev_snp.min_tcb.fmc":        "reported TCB fmc is 2, at least the minimum 2",
				"sev_snp.host_data":          "host data " + hostData + " is allowed",
				"sev_snp.family_ids":         "family id " + familyID + " is allowed",
				"sev_snp.image_ids":          "image id " + imageID + " is allowed",
				"sev_snp.min_tcb.tee":        "reported TCB tee is 1, at least the minimum 1",
				"token.claims.xms_cc":        `token claim "xms_cc" equals the required value true`,
				"sev_snp.min_tcb.bootloader": "reported TCB bootloader is 3, at least the minimum 3",
			}},
		{"tdx", fullTDXPolicy, tdxInput(),
			"tdx.mrtd,tdx.rtmr0,tdx.rtmr1,tdx.rtmr2,tdx.rtmr3,tdx.mrconfigid,tdx.mrowner,tdx.mrownerconfig,tdx.mrseam," +
				"tdx.allow_debug,tdx.min_tee_tcb_svn,tdx.tcb_statuses,tdx.forbidden_advisories,token.tenant_ids",
			map[string]string{
				"tdx.mrtd":                 "mrtd " + mrtdB + " is allowed",
				"tdx.rtmr2":                "rtmr2 " + rtmrVals[2] + " is allowed",
				"tdx.allow_debug":          "not a debug guest",
				"tdx.min_tee_tcb_svn":      "TEE TCB SVN 03010500000000000000000000000002 meets the minimum " + minTEESVN + " in every component",
				"tdx.tcb_statuses":         "TCB status SWHardeningNeeded is acceptable",
				"tdx.forbidden_advisories": "none of the 2 forbidden advisories applies (the platform lists 2)",
			}},
		{"azure-sev-snp-vtpm", azureSNPPolicy, azureSNPInput(),
			"azure_sev_snp_vtpm.vtpm.secure_boot,azure_sev_snp_vtpm.vtpm.pcrs[4],azure_sev_snp_vtpm.vtpm.pcrs[7]," +
				"azure_sev_snp_vtpm.vtpm.pcrs[11],azure_sev_snp_vtpm.vtpm.vm_unique_ids," +
				"azure_sev_snp_vtpm.sev_snp.measurements,azure_sev_snp_vtpm.sev_snp.min_tcb.bootloader," +
				"azure_sev_snp_vtpm.sev_snp.min_tcb.tee,azure_sev_snp_vtpm.sev_snp.min_tcb.snp," +
				"azure_sev_snp_vtpm.sev_snp.min_tcb.microcode,azure_sev_snp_vtpm.sev_snp.min_tcb.fmc," +
				"azure_sev_snp_vtpm.sev_snp.allow_debug,azure_sev_snp_vtpm.sev_snp.vmpl,token.tenant_ids",
			map[string]string{
				"azure_sev_snp_vtpm.vtpm.secure_boot":   "secure boot is on",
				"azure_sev_snp_vtpm.vtpm.pcrs[7]":       "PCR 7 value " + pcr7b + " is allowed",
				"azure_sev_snp_vtpm.vtpm.vm_unique_ids": `VM unique id "` + vmID + `" is allowed`,
			}},
		{"azure-tdx-vtpm", azureTDXPolicy, azureTDXInput(),
			"azure_tdx_vtpm.vtpm.secure_boot,azure_tdx_vtpm.vtpm.pcrs[4],azure_tdx_vtpm.vtpm.pcrs[7]," +
				"azure_tdx_vtpm.vtpm.pcrs[11],azure_tdx_vtpm.vtpm.vm_unique_ids," +
				"azure_tdx_vtpm.tdx.mrseam,azure_tdx_vtpm.tdx.allow_debug,azure_tdx_vtpm.tdx.tcb_statuses",
			map[string]string{"azure_tdx_vtpm.tdx.mrseam": "mrseam " + mrSeam + " is allowed"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			p := mustParse(t, tt.pol)
			e := p.Explain(tt.in)
			if !e.Decision.Allowed || len(e.Rules) != 1 || !e.Rules[0].Applies || !e.Rules[0].Holds() {
				t.Fatalf("explanation = %+v", e)
			}
			if got := conditionNames(e.Rules[0].Conditions); got != tt.conds {
				t.Errorf("conditions\n%s\nwant\n%s", got, tt.conds)
			}
			for _, c := range e.Rules[0].Conditions {
				if !c.Held {
					t.Errorf("%s failed: %s", c.Condition, c.Reason)
				}
				if want, ok := tt.held[c.Condition]; ok && c.Reason != want {
					t.Errorf("%s: reason %q, want %q", c.Condition, c.Reason, want)
				}
			}
		})
	}
}

// TestExplainString checks the text `kms policy explain` prints: rules in
// file order, skipped rules for other platforms, a failing rule, the
// granting rule and a later rule that also holds.
func TestExplainString(t *testing.T) {
	p := mustParse(t, `version: 1
rules:
  - name: old-image
    sev_snp:
      measurements: [`+measA+`]
      vmpl: [0, 2]
  - name: td
    tdx:
      mrtd: [`+mrtdA+`]
  - name: current
    sev_snp:
      measurements: [`+measB+`]
  - name: any-debug
    sev_snp:
      measurements: [`+measB+`]
      allow_debug: true
`)
	in := grantInput()
	in.Evidence.SEVSNP.Debug = true
	// Debug guest: "current" fails on allow_debug, "any-debug" grants.
	want := `rule "old-image" (sev-snp): applies; 2 conditions FAILED
  FAILED  sev_snp.measurements: measurement ` + measB + ` is not among the 1 allowed measurement
  FAILED  sev_snp.allow_debug: debug guest refused: its guest policy lets the host read and write guest memory (allow_debug is false)
  held    sev_snp.vmpl: report was requested at VMPL 0; allowed: 0, 2
rule "td" (tdx): skipped: the evidence is "sev-snp"
rule "current" (sev-snp): applies; 1 condition FAILED
  held    sev_snp.measurements: measurement ` + measB + ` is allowed
  FAILED  sev_snp.allow_debug: debug guest refused: its guest policy lets the host read and write guest memory (allow_debug is false)
  held    sev_snp.vmpl: report was requested at VMPL 0; allowed: 0
rule "any-debug" (sev-snp): applies; all conditions held; grants
  held    sev_snp.measurements: measurement ` + measB + ` is allowed
  held    sev_snp.allow_debug: debug guest accepted (allow_debug is true)
  held    sev_snp.vmpl: report was requested at VMPL 0; allowed: 0
decision: granted by rule "any-debug"
`
	e := p.Explain(in)
	if got := e.String(); got != want {
		t.Errorf("String() =\n%s\nwant\n%s", got, want)
	}

	// Not a debug guest: "current" grants, "any-debug" still shown.
	in.Evidence.SEVSNP.Debug = false
	got := p.Explain(in).String()
	for _, w := range []string{
		`rule "current" (sev-snp): applies; all conditions held; grants`,
		`rule "any-debug" (sev-snp): applies; all conditions held; an earlier rule grants`,
		"decision: granted by rule \"current\"\n",
	} {
		if !strings.Contains(got, w) {
			t.Errorf("String() =\n%s\nlacks %q", got, w)
		}
	}

	// Denied: the decision line says so.
	in.Evidence.SEVSNP.Measurement = mustHex(measC)
	if got := p.Explain(in).String(); !strings.HasSuffix(got, "\ndecision: denied: no rule holds\n") {
		t.Errorf("String() =\n%s", got)
	}
}

func TestExplainWithoutUsableEvidence(t *testing.T) {
	p := mustParse(t, fullPolicy)
	tests := []struct {
		name string
		p    *Policy
		in   Input
		want string
	}{
		{"nil policy", nil, grantInput(), "decision: denied: policy: no release policy is configured\n"},
		{"nil evidence", p, Input{}, "rule \"prod\" (sev-snp): skipped\ndecision: denied: evidence: no verified evidence was presented; every rule requires attestation\n"},
		{"other platform", p, tdxInput(), "rule \"prod\" (sev-snp): skipped: the evidence is \"tdx\"\n" +
			"decision: denied: evidence.platform: no rule accepts \"tdx\" evidence; rules cover sev-snp\n"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			e := tt.p.Explain(tt.in)
			if !reflect.DeepEqual(e.Decision, tt.p.Evaluate(tt.in)) {
				t.Errorf("Explain decision %+v differs from Evaluate", e.Decision)
			}
			if got := e.String(); got != tt.want {
				t.Errorf("String() =\n%q\nwant\n%q", got, tt.want)
			}
		})
	}
}

// TestExplainEscapesTokenValues: a hostile issuer cannot add lines.
func TestExplainEscapesTokenValues(t *testing.T) {
	p := mustParse(t, fullPolicy)
	in := grantInput()
	in.Token["iss"] = "evil\nFAILED  fake: line"
	s := p.Explain(in).String()
	if n := strings.Count(s, "\n"); n != 1+22+1 {
		t.Errorf("%d lines, want 24:\n%s", n, s)
	}
}

// agreementPolicy covers every platform, with rules that overlap so that
// grants, first-rule-wins and denials all occur.
var agreementPolicy = func() string {
	body := func(pol string) string {
		_, rules, _ := strings.Cut(pol, "rules:\n")
		return rules
	}
	return "version: 1\nrules:\n" + body(fullPolicy) + body(fullTDXPolicy) + body(azureSNPPolicy) +
		strings.Replace(body(azureTDXPolicy), "name: cvm", "name: cvm-tdx", 1) + `  - name: lenient-snp
    sev_snp:
      measurements: [` + measB + `, ` + measC + `]
      allow_debug: true
      vmpl: [0, 1, 2, 3]
  - name: lenient-tdx
    tdx:
      mrtd: [` + mrtdA + `]
      tcb_statuses: [OutOfDate, UpToDate]
  - name: lenient-azure
    azure_sev_snp_vtpm:
      vtpm: {secure_boot: false, pcrs: {7: [` + pcr7a + `]}}
`
}()

// mutations perturb an input; inputsFrom applies the ones data selects.
var mutations = []func(in *Input){
	func(in *Input) { setPlatform(in, attestation.PlatformSEVSNP) },
	func(in *Input) { setPlatform(in, attestation.PlatformTDX) },
	func(in *Input) { setPlatform(in, attestation.PlatformAzureSNPVTPM) },
	func(in *Input) { setPlatform(in, attestation.PlatformAzureTDXVTPM) },
	func(in *Input) { setPlatform(in, "") },
	func(in *Input) { in.Evidence = nil },
	func(in *Input) { in.Token = nil },
	func(in *Input) { in.Token = map[string]any{"tid": tenant} },
	func(in *Input) { setClaim(in, "tid", 3.0) },
	func(in *Input) { setClaim(in, "aud", []any{audience, 1.0}) },
	func(in *Input) { setClaim(in, "roles", "KeyRelease") },
	func(in *Input) { setClaim(in, "ver", json.Number("1e999")) },
	func(in *Input) { setClaim(in, "azp", appID) },
	func(in *Input) { setSNP(in, func(s *attestation.SNPClaims) { s.Measurement = mustHex(measC) }) },
	func(in *Input) { setSNP(in, func(s *attestation.SNPClaims) { s.Debug = !s.Debug }) },
	func(in *Input) { setSNP(in, func(s *attestation.SNPClaims) { s.VMPL = (s.VMPL + 1) % 5 }) },
	func(in *Input) { setSNP(in, func(s *attestation.SNPClaims) { s.ReportedTCB.SNP-- }) },
	func(in *Input) { setSNP(in, func(s *attestation.SNPClaims) { s.GuestSVN = 0; s.HostData = nil }) },
	func(in *Input) { setSNP(in, func(*attestation.SNPClaims) { in.Evidence.SEVSNP = nil }) },
	func(in *Input) { setTDX(in, func(c *attestation.TDXClaims) { c.MRTD = mustHex(mrtdA) }) },
	func(in *Input) { setTDX(in, func(c *attestation.TDXClaims) { c.Debug = !c.Debug }) },
	func(in *Input) { setTDX(in, func(c *attestation.TDXClaims) { c.TCBStatus = "OutOfDate" }) },
	func(in *Input) { setTDX(in, func(c *attestation.TDXClaims) { c.TCBStatus = "UpToDate" }) },
	func(in *Input) { setTDX(in, func(c *attestation.TDXClaims) { c.RTMRs = c.RTMRs[:len(c.RTMRs)/2] }) },
	func(in *Input) {
		setTDX(in, func(c *attestation.TDXClaims) { c.TEETCBSVN = c.TEETCBSVN[min(1, len(c.TEETCBSVN)):] })
	},
	func(in *Input) {
		setTDX(in, func(c *attestation.TDXClaims) { c.AdvisoryIDs = append(c.AdvisoryIDs, "INTEL-SA-00837") })
	},
	func(in *Input) { setTDX(in, func(*attestation.TDXClaims) { in.Evidence.TDX = nil }) },
	func(in *Input) { setVTPM(in, func(a *attestation.AzureVTPMClaims) { a.SecureBoot = !a.SecureBoot }) },
	func(in *Input) { setVTPM(in, func(a *attestation.AzureVTPMClaims) { a.PCRs[7] = mustHex(pcr7a) }) },
	func(in *Input) { setVTPM(in, func(a *attestation.AzureVTPMClaims) { delete(a.PCRs, 4) }) },
	func(in *Input) { setVTPM(in, func(a *attestation.AzureVTPMClaims) { a.VMUniqueID = "" }) },
	func(in *Input) { setVTPM(in, func(*attestation.AzureVTPMClaims) { in.Evidence.AzureVTPM = nil }) },
}

func setPlatform(in *Input, p attestation.Platform) {
	if in.Evidence != nil {
		in.Evidence.Platform = p
	}
}

func setClaim(in *Input, name string, v any) {
	if in.Token != nil {
		in.Token[name] = v
	}
}

func setSNP(in *Input, f func(*attestation.SNPClaims)) {
	if in.Evidence != nil && in.Evidence.SEVSNP != nil {
		f(in.Evidence.SEVSNP)
	}
}

func setTDX(in *Input, f func(*attestation.TDXClaims)) {
	if in.Evidence != nil && in.Evidence.TDX != nil {
		f(in.Evidence.TDX)
	}
}

func setVTPM(in *Input, f func(*attestation.AzureVTPMClaims)) {
	if in.Evidence != nil && in.Evidence.AzureVTPM != nil {
		f(in.Evidence.AzureVTPM)
	}
}

// inputFrom builds an input: data[0] picks a base, each further byte a
// mutation. Mutations that need a missing part do nothing.
func inputFrom(data []byte) Input {
	bases := []func() Input{grantInput, tdxInput, azureSNPInput, azureTDXInput}
	if len(data) == 0 {
		return grantInput()
	}
	in := bases[int(data[0])%len(bases)]()
	for _, b := range data[1:] {
		mutations[int(b)%len(mutations)](&in)
	}
	return in
}

// checkAgreement asserts what Explain promises about Evaluate.
func checkAgreement(t testing.TB, p *Policy, in Input) {
	t.Helper()
	d := p.Evaluate(in)
	e := p.Explain(in)
	if !reflect.DeepEqual(d, e.Decision) {
		t.Fatalf("Explain decision %+v, Evaluate %+v", e.Decision, d)
	}
	if p == nil {
		return
	}
	if len(e.Rules) != len(p.rules) {
		t.Fatalf("%d rules explained, policy has %d", len(e.Rules), len(p.rules))
	}
	var failed []Denial
	first := ""
	for i, r := range e.Rules {
		if r.Name != p.rules[i].name {
			t.Fatalf("rule %d is %q, want %q", i, r.Name, p.rules[i].name)
		}
		if want := in.Evidence != nil && p.rules[i].platform() == in.Evidence.Platform; r.Applies != want {
			t.Fatalf("rule %q applies = %v, want %v", r.Name, r.Applies, want)
		}
		if !r.Applies && len(r.Conditions) != 0 {
			t.Fatalf("rule %q does not apply but lists conditions", r.Name)
		}
		if r.Holds() && first == "" {
			first = r.Name
		}
		for _, c := range r.Conditions {
			if c.Condition == "" || c.Reason == "" {
				t.Fatalf("rule %q: empty condition result %+v", r.Name, c)
			}
			if !c.Held {
				failed = append(failed, Denial{Rule: r.Name, Condition: c.Condition, Reason: c.Reason})
			}
		}
	}
	switch {
	case d.Allowed:
		if d.Rule != first {
			t.Fatalf("granted by %q, but the first rule that holds is %q", d.Rule, first)
		}
	case first != "":
		t.Fatalf("denied although rule %q holds", first)
	case len(d.Denials) == 1 && d.Denials[0].Rule == "":
		if len(failed) != 0 {
			t.Fatalf("policy-level denial, yet conditions failed: %+v", failed)
		}
	default:
		if !reflect.DeepEqual(failed, d.Denials) {
			t.Fatalf("failed conditions %+v\ndiffer from denials %+v", failed, d.Denials)
		}
	}
	s := e.String()
	lines := 1
	for _, r := range e.Rules {
		lines += 1 + len(r.Conditions)
	}
	if strings.Count(s, "\n") != lines || strings.Contains(s, "\r") {
		t.Fatalf("String() has %d lines, want %d:\n%s", strings.Count(s, "\n"), lines, s)
	}
}

// TestExplainAgreesWithEvaluate runs many generated inputs through both.
func TestExplainAgreesWithEvaluate(t *testing.T) {
	p := mustParse(t, agreementPolicy)
	rng := rand.New(rand.NewPCG(1, 2))
	granted := map[string]int{}
	denied := 0
	for range 3000 {
		data := make([]byte, 1+rng.IntN(5))
		for i := range data {
			data[i] = byte(rng.UintN(256))
		}
		in := inputFrom(data)
		checkAgreement(t, p, in)
		if d := p.Evaluate(in); d.Allowed {
			granted[d.Rule]++
		} else {
			denied++
		}
	}
	// The generator must reach every rule and denials, or the test proves
	// little.
	for _, name := range p.RuleNames() {
		if granted[name] == 0 {
			t.Errorf("no generated input was granted by rule %q (grants: %v)", name, granted)
		}
	}
	if denied == 0 {
		t.Error("no generated input was denied")
	}
	checkAgreement(t, nil, grantInput())
	checkAgreement(t, &Policy{}, grantInput())
}

// FuzzExplain: for inputs built from fuzz data, Explain and Evaluate agree
// and the explanation is internally consistent.
func FuzzExplain(f *testing.F) {
	f.Add([]byte{0})
	f.Add([]byte{1, 21})
	f.Add([]byte{2, 27, 28})
	f.Add([]byte{3, 22})
	f.Add([]byte{0, 14, 15, 15})
	f.Add([]byte{1, 5})
	f.Add([]byte{2, 1, 6})
	p := mustParse(f, agreementPolicy)
	f.Fuzz(func(t *testing.T, data []byte) {
		if len(data) > 64 {
			return
		}
		checkAgreement(t, p, inputFrom(data))
	})
}

func BenchmarkExplain(b *testing.B) {
	p := mustParse(b, agreementPolicy)
	in := azureTDXInput()
	b.ReportAllocs()
	for b.Loop() {
		if !p.Explain(in).Decision.Allowed {
			b.Fatal("denied")
		}
	}
}
