package policy

import (
	"strings"
	"testing"

	"github.com/attested-kms/attested-kms/attestation"
)

// TDX test values, 48 bytes each unless noted.
var (
	mrtdA      = strings.Repeat("1a", 48)
	mrtdB      = strings.Repeat("1b", 48)
	rtmrVals   = [4]string{strings.Repeat("20", 48), strings.Repeat("21", 48), strings.Repeat("22", 48), strings.Repeat("23", 48)}
	mrConfigID = strings.Repeat("3c", 48)
	mrOwner    = strings.Repeat("4d", 48)
	mrOwnerCfg = strings.Repeat("5e", 48)
	mrSeam     = strings.Repeat("6f", 48)
	minTEESVN  = "03000500000000000000000000000001" // 16 bytes
)

// fullTDXPolicy uses every condition of the tdx section.
var fullTDXPolicy = `version: 1
rules:
  - name: td
    tdx:
      mrtd: [` + mrtdA + `, ` + mrtdB + `]
      rtmr0: [` + rtmrVals[0] + `]
      rtmr1: [` + rtmrVals[1] + `]
      rtmr2: [` + rtmrVals[2] + `]
      rtmr3: [` + rtmrVals[3] + `]
      mrconfigid: [` + mrConfigID + `]
      mrowner: [` + mrOwner + `]
      mrownerconfig: [` + mrOwnerCfg + `]
      mrseam: [` + mrSeam + `]
      min_tee_tcb_svn: "` + minTEESVN + `"
      tcb_statuses: [UpToDate, SWHardeningNeeded]
      forbidden_advisories: [INTEL-SA-00837, intel-sa-00960]
    token:
      tenant_ids: ["` + tenant + `"]
`

// tdxClaims satisfies every hardware condition of fullTDXPolicy.
func tdxClaims() *attestation.TDXClaims {
	return &attestation.TDXClaims{
		QuoteVersion:  4,
		MRTD:          mustHex(mrtdB),
		RTMRs:         []attestation.HexBytes{mustHex(rtmrVals[0]), mustHex(rtmrVals[1]), mustHex(rtmrVals[2]), mustHex(rtmrVals[3])},
		MRConfigID:    mustHex(mrConfigID),
		MROwner:       mustHex(mrOwner),
		MROwnerConfig: mustHex(mrOwnerCfg),
		MRSeam:        mustHex(mrSeam),
		MRSignerSeam:  make([]byte, 48),
		TDAttributes:  make([]byte, 8),
		XFAM:          mustHex("e702060000000000"),
		// Every component at or above the minimum, two strictly above.
		TEETCBSVN:   mustHex("03010500000000000000000000000002"),
		ReportData:  make([]byte, 64),
		FMSPC:       mustHex("00806f050000"),
		TCBStatus:   "SWHardeningNeeded",
		AdvisoryIDs: []string{"INTEL-SA-00615", "INTEL-SA-00828"},
	}
}

func tdxInput() Input {
	return Input{
		Evidence: &attestation.Claims{Platform: attestation.PlatformTDX, ReportData: make([]byte, 64), TDX: tdxClaims()},
		Token:    map[string]any{"tid": tenant},
	}
}

func TestTDXGrant(t *testing.T) {
	p := mustParse(t, fullTDXPolicy)
	if d := p.Evaluate(tdxInput()); !d.Allowed || d.Rule != "td" {
		t.Fatalf("decision = %s", d.Summary())
	}
	for name, mutate := range map[string]func(*attestation.TDXClaims){
		"first mrtd":             func(c *attestation.TDXClaims) { c.MRTD = mustHex(mrtdA) },
		"status UpToDate":        func(c *attestation.TDXClaims) { c.TCBStatus = "UpToDate" },
		"svn equal to minimum":   func(c *attestation.TDXClaims) { c.TEETCBSVN = mustHex(minTEESVN) },
		"no advisories":          func(c *attestation.TDXClaims) { c.AdvisoryIDs = nil },
		"quote v5":               func(c *attestation.TDXClaims) { c.QuoteVersion = 5 },
		"other non-pinned field": func(c *attestation.TDXClaims) { c.MRSignerSeam = mustHex(mrSeam) },
	} {
		in := tdxInput()
		mutate(in.Evidence.TDX)
		if d := p.Evaluate(in); !d.Allowed {
			t.Errorf("%s: denied: %s", name, d.Summary())
		}
	}
}

// TestTDXDenials breaks one condition at a time and checks that exactly
// that condition is reported.
func TestTDXDenials(t *testing.T) {
	p := mustParse(t, fullTDXPolicy)
	tests := []struct {
		name   string
		mutate func(c *attestation.TDXClaims)
		cond   string
		reason string
	}{
		{"mrtd", func(c *attestation.TDXClaims) { c.MRTD = mustHex(measC) },
			"tdx.mrtd", "mrtd " + measC + " is not among the 2 allowed mrtd values"},
		{"rtmr0", func(c *attestation.TDXClaims) { c.RTMRs[0] = mustHex(measC) }, "tdx.rtmr0", "rtmr0 " + measC + " is not among the 1 allowed rtmr0 value"},
		{"rtmr1", func(c *attestation.TDXClaims) { c.RTMRs[1] = mustHex(measC) }, "tdx.rtmr1", "rtmr1 " + measC},
		{"rtmr2", func(c *attestation.TDXClaims) { c.RTMRs[2] = mustHex(measC) }, "tdx.rtmr2", "rtmr2 " + measC},
		{"rtmr3", func(c *attestation.TDXClaims) { c.RTMRs[3] = mustHex(measC) }, "tdx.rtmr3", "rtmr3 " + measC},
		{"rtmr3 missing", func(c *attestation.TDXClaims) { c.RTMRs = c.RTMRs[:3] }, "tdx.rtmr3", "rtmr3 (empty) is not among"},
		{"mrconfigid", func(c *attestation.TDXClaims) { c.MRConfigID = make([]byte, 48) }, "tdx.mrconfigid", "mrconfigid " + strings.Repeat("00", 48)},
		{"mrowner", func(c *attestation.TDXClaims) { c.MROwner = nil }, "tdx.mrowner", "mrowner (empty) is not among"},
		{"mrownerconfig", func(c *attestation.TDXClaims) { c.MROwnerConfig = mustHex(mrOwner) }, "tdx.mrownerconfig", "mrownerconfig " + mrOwner},
		{"mrseam", func(c *attestation.TDXClaims) { c.MRSeam = mustHex(mrOwner) }, "tdx.mrseam", "mrseam " + mrOwner},
		{"debug", func(c *attestation.TDXClaims) { c.Debug = true }, "tdx.allow_debug", "debug TD refused"},
		{"svn one component below", func(c *attestation.TDXClaims) { c.TEETCBSVN = mustHex("03010400000000000000000000000002") },
			"tdx.min_tee_tcb_svn", "TEE TCB SVN 03010400000000000000000000000002 is below the minimum " + minTEESVN + ": byte 2 is 4 < 5"},
		// A larger packed value must not hide a lower component.
		{"svn higher as a number", func(c *attestation.TDXClaims) { c.TEETCBSVN = mustHex("ff000000000000000000000000000000") },
			"tdx.min_tee_tcb_svn", "byte 2 is 0 < 5, byte 15 is 0 < 1"},
		{"svn short", func(c *attestation.TDXClaims) { c.TEETCBSVN = mustHex("0301") },
			"tdx.min_tee_tcb_svn", "evidence carries a 2-byte TEE TCB SVN; want 16"},
		{"status out of date", func(c *attestation.TDXClaims) { c.TCBStatus = "OutOfDate" },
			"tdx.tcb_statuses", `TCB status "OutOfDate" is not acceptable; acceptable: SWHardeningNeeded, UpToDate`},
		{"status empty", func(c *attestation.TDXClaims) { c.TCBStatus = "" }, "tdx.tcb_statuses", "TCB status (none) is not acceptable"},
		{"status case", func(c *attestation.TDXClaims) { c.TCBStatus = "uptodate" }, "tdx.tcb_statuses", `TCB status "uptodate" is not acceptable`},
		{"forbidden advisory", func(c *attestation.TDXClaims) { c.AdvisoryIDs = append(c.AdvisoryIDs, "INTEL-SA-00960") },
			"tdx.forbidden_advisories", "affected by forbidden advisory INTEL-SA-00960"},
		{"forbidden advisories lower case", func(c *attestation.TDXClaims) {
			c.AdvisoryIDs = []string{"intel-sa-00837", "INTEL-SA-00960", "INTEL-SA-00837"}
		}, "tdx.forbidden_advisories", "affected by forbidden advisories INTEL-SA-00837, INTEL-SA-00960"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			in := tdxInput()
			tt.mutate(in.Evidence.TDX)
			d := p.Evaluate(in)
			if d.Allowed || len(d.Denials) != 1 {
				t.Fatalf("decision = %+v, want exactly one denial", d)
			}
			dn := d.Denials[0]
			if dn.Rule != "td" || dn.Condition != tt.cond {
				t.Errorf("denial at %q/%q, want td/%q", dn.Rule, dn.Condition, tt.cond)
			}
			if !strings.Contains(dn.Reason, tt.reason) {
				t.Errorf("reason %q\ndoes not contain %q", dn.Reason, tt.reason)
			}
		})
	}

	in := tdxInput()
	in.Evidence.TDX = nil
	if d := p.Evaluate(in); d.Allowed || d.Denials[0].Condition != "tdx" || d.Denials[0].Reason != "tdx evidence carries no TDX claims" {
		t.Errorf("no TDX claims: %+v", d)
	}
}

// TestTDXDefaults: a minimal tdx section refuses debug TDs and any TCB
// status but UpToDate; listing a status accepts it.
func TestTDXDefaults(t *testing.T) {
	minimal := mustParse(t, "version: 1\nrules:\n  - name: m\n    tdx:\n      mrtd: ["+mrtdB+"]\n")
	c := minimal.rules[0].evidence.(*tdxConditions)
	if c.allowDebug || c.minTEETCBSVN != nil || c.forbidden != nil || c.mrConfigID != nil || c.rtmrs[0] != nil || c.rtmrs[3] != nil {
		t.Errorf("optional conditions set by default: %+v", c)
	}
	in := tdxInput()
	in.Evidence.TDX.TCBStatus = "UpToDate"
	if d := minimal.Evaluate(in); !d.Allowed {
		t.Fatalf("UpToDate TD refused: %s", d.Summary())
	}
	for _, status := range []string{"OutOfDate", "SWHardeningNeeded", "ConfigurationNeeded", "OutOfDateConfigurationNeeded", "ConfigurationAndSWHardeningNeeded", "Revoked"} {
		in.Evidence.TDX.TCBStatus = status
		d := minimal.Evaluate(in)
		if d.Allowed || d.Denials[0].Condition != "tdx.tcb_statuses" || !strings.HasSuffix(d.Denials[0].Reason, "acceptable: UpToDate") {
			t.Errorf("%s accepted by default: %+v", status, d)
		}
	}
	in.Evidence.TDX.TCBStatus = "UpToDate"
	in.Evidence.TDX.Debug = true
	if d := minimal.Evaluate(in); d.Allowed || d.Denials[0].Condition != "tdx.allow_debug" {
		t.Errorf("debug TD accepted by default: %+v", d)
	}

	listed := mustParse(t, "version: 1\nrules:\n  - name: m\n    tdx:\n      mrtd: ["+mrtdB+"]\n      tcb_statuses: [OutOfDate, UpToDate]\n      allow_debug: true\n")
	in = tdxInput()
	in.Evidence.TDX.TCBStatus = "OutOfDate"
	in.Evidence.TDX.Debug = true
	if d := listed.Evaluate(in); !d.Allowed {
		t.Errorf("listed OutOfDate status and allowed debug refused: %s", d.Summary())
	}
	in.Evidence.TDX.TCBStatus = "OutOfDateConfigurationNeeded"
	if d := listed.Evaluate(in); d.Allowed {
		t.Error("unlisted status accepted")
	}
}

func TestTDXParseErrors(t *testing.T) {
	rule := func(body string) string {
		return "version: 1\nrules:\n  - name: r\n    tdx:\n" + body
	}
	mrtd := "      mrtd: [" + mrtdA + "]\n"
	tests := []struct {
		name string
		in   string
		want []string
	}{
		{"missing mrtd", rule("      allow_debug: false\n"), []string{"line 4", "rules[0].tdx.mrtd", "required"}},
		{"empty mrtd", rule("      mrtd: []\n"), []string{"line 5", "tdx.mrtd", "empty list"}},
		{"short mrtd", rule("      mrtd: [" + mrtdA[:94] + "]\n"), []string{"line 5", "tdx.mrtd[0]", "want 96 hex digits (48 bytes), got 94"}},
		{"mrtd not hex", rule("      mrtd: [" + strings.Repeat("zz", 48) + "]\n"), []string{"tdx.mrtd[0]", "not hex"}},
		{"duplicate mrtd", rule("      mrtd: [" + mrtdA + ", " + strings.ToUpper(mrtdA) + "]\n"), []string{"tdx.mrtd[1]", "listed twice"}},
		{"rtmr length", rule(mrtd + "      rtmr2: [abcd]\n"), []string{"line 6", "tdx.rtmr2[0]", "want 96 hex digits"}},
		{"null rtmr", rule(mrtd + "      rtmr1:\n"), []string{"line 6", "tdx.rtmr1 has no value"}},
		{"empty mrseam", rule(mrtd + "      mrseam: []\n"), []string{"tdx.mrseam", "empty list"}},
		{"mrowner length", rule(mrtd + "      mrowner: [" + hostData + "]\n"), []string{"tdx.mrowner[0]", "want 96 hex digits"}},
		{"rtmr4", rule(mrtd + "      rtmr4: [" + mrtdA + "]\n"), []string{"line 6", `unknown field "rtmr4"`, "rtmr3", "forbidden_advisories"}},
		{"svn length", rule(mrtd + "      min_tee_tcb_svn: \"0300\"\n"), []string{"line 6", "tdx.min_tee_tcb_svn", "want 32 hex digits (16 bytes), got 4"}},
		{"svn not hex", rule(mrtd + "      min_tee_tcb_svn: \"" + strings.Repeat("g", 32) + "\"\n"), []string{"tdx.min_tee_tcb_svn", "not hex"}},
		{"svn empty", rule(mrtd + "      min_tee_tcb_svn: \"\"\n"), []string{"tdx.min_tee_tcb_svn", "got 0 characters"}},
		{"svn list", rule(mrtd + "      min_tee_tcb_svn: [1]\n"), []string{"line 6", "min_tee_tcb_svn"}},
		{"unknown status", rule(mrtd + "      tcb_statuses: [UpToDate, Fine]\n"), []string{"line 6", "tdx.tcb_statuses[1]", `"Fine" is not a TCB status`, "OutOfDateConfigurationNeeded"}},
		{"status case", rule(mrtd + "      tcb_statuses: [outofdate]\n"), []string{"tcb_statuses[0]", "did you mean OutOfDate?"}},
		{"revoked status", rule(mrtd + "      tcb_statuses: [Revoked]\n"), []string{"tcb_statuses[0]", "not a TCB status"}},
		{"duplicate status", rule(mrtd + "      tcb_statuses: [UpToDate, UpToDate]\n"), []string{"tcb_statuses[1]", "listed twice"}},
		{"empty statuses", rule(mrtd + "      tcb_statuses: []\n"), []string{"tcb_statuses", "empty list", "default [UpToDate]"}},
		{"bad advisory", rule(mrtd + "      forbidden_advisories: [CVE-2023-1234]\n"), []string{"line 6", "forbidden_advisories[0]", "not an Intel advisory id"}},
		{"short advisory", rule(mrtd + "      forbidden_advisories: [INTEL-SA-1]\n"), []string{"forbidden_advisories[0]", "INTEL-SA-nnnnn"}},
		{"duplicate advisory", rule(mrtd + "      forbidden_advisories: [INTEL-SA-00837, intel-sa-00837]\n"), []string{"forbidden_advisories[1]", "INTEL-SA-00837 is listed twice"}},
		{"empty advisories", rule(mrtd + "      forbidden_advisories: []\n"), []string{"forbidden_advisories", "empty list"}},
		{"debug not bool", rule(mrtd + "      allow_debug: maybe\n"), []string{"line 6", "allow_debug"}},
		{"two sections", "version: 1\nrules:\n  - name: r\n    sev_snp: {measurements: [" + measA + "]}\n    tdx:\n" + mrtd,
			[]string{"line 3", "2 evidence sections"}},
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

func BenchmarkEvaluateTDX(b *testing.B) {
	p := mustParse(b, fullTDXPolicy)
	in := tdxInput()
	b.ReportAllocs()
	for b.Loop() {
		if !p.Evaluate(in).Allowed {
			b.Fatal("denied")
		}
	}
}
