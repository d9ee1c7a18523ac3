package policy

import (
	"encoding/hex"
	"encoding/json"
	"strings"
	"testing"

	"github.com/attested-kms/attested-kms/attestation"
)

func mustHex(s string) attestation.HexBytes {
	b, err := hex.DecodeString(s)
	if err != nil {
		panic(err)
	}
	return b
}

// grantInput satisfies every condition of fullPolicy.
func grantInput() Input {
	return Input{
		Evidence: &attestation.Claims{
			Platform:   attestation.PlatformSEVSNP,
			ReportData: make([]byte, 64),
			SEVSNP: &attestation.SNPClaims{
				Product:     "Genoa",
				Measurement: mustHex(measB),
				HostData:    mustHex(hostData),
				FamilyID:    mustHex(familyID),
				ImageID:     mustHex(imageID),
				VMPL:        0,
				GuestSVN:    2,
				ReportedTCB: attestation.TCBParts{Bootloader: 3, TEE: 1, SNP: 8, Microcode: 115, FMC: 2},
				// Current and committed TCB are higher: the policy must
				// look at the reported TCB only.
				CurrentTCB:   attestation.TCBParts{Bootloader: 9, TEE: 9, SNP: 22, Microcode: 255, FMC: 9},
				CommittedTCB: attestation.TCBParts{Bootloader: 9, TEE: 9, SNP: 22, Microcode: 255, FMC: 9},
			},
		},
		Token: map[string]any{
			"iss":       issuer,
			"aud":       audience,
			"tid":       tenant,
			"oid":       objectID,
			"appid":     appID,
			"xms_mirid": mirid,
			"idtyp":     "app",
			"ver":       float64(1),
			"xms_cc":    true,
			"roles":     []any{"Reader", "KeyRelease"},
		},
	}
}

func TestEvaluateGrant(t *testing.T) {
	p := mustParse(t, fullPolicy)
	d := p.Evaluate(grantInput())
	if !d.Allowed || d.Rule != "prod" || len(d.Denials) != 0 {
		t.Fatalf("decision = %+v, want grant by prod", d)
	}
	if got := d.Summary(); got != `granted by rule "prod"` {
		t.Errorf("Summary = %q", got)
	}
}

// TestEvaluateDenials breaks one condition at a time and checks that
// exactly that condition is reported, with a readable reason.
func TestEvaluateDenials(t *testing.T) {
	p := mustParse(t, fullPolicy)
	tests := []struct {
		name   string
		mutate func(in *Input)
		cond   string
		reason string
	}{
		{"measurement", func(in *Input) { in.Evidence.SEVSNP.Measurement = mustHex(measC) },
			"sev_snp.measurements", "measurement " + measC + " is not among the 2 allowed measurements"},
		{"host data", func(in *Input) { in.Evidence.SEVSNP.HostData = make([]byte, 32) },
			"sev_snp.host_data", "host data " + strings.Repeat("00", 32) + " is not among the 1 allowed host data value"},
		{"family id", func(in *Input) { in.Evidence.SEVSNP.FamilyID = make([]byte, 16) },
			"sev_snp.family_ids", "family id " + strings.Repeat("00", 16) + " is not among"},
		{"image id", func(in *Input) { in.Evidence.SEVSNP.ImageID = nil },
			"sev_snp.image_ids", "image id (empty) is not among"},
		{"tcb bootloader", func(in *Input) { in.Evidence.SEVSNP.ReportedTCB.Bootloader = 2 },
			"sev_snp.min_tcb.bootloader", "reported TCB bootloader is 2, below the minimum 3"},
		{"tcb tee", func(in *Input) { in.Evidence.SEVSNP.ReportedTCB.TEE = 0 },
			"sev_snp.min_tcb.tee", "reported TCB tee is 0, below the minimum 1"},
		{"tcb snp", func(in *Input) { in.Evidence.SEVSNP.ReportedTCB.SNP = 7 },
			"sev_snp.min_tcb.snp", "reported TCB snp is 7, below the minimum 8"},
		{"tcb microcode", func(in *Input) { in.Evidence.SEVSNP.ReportedTCB.Microcode = 114 },
			"sev_snp.min_tcb.microcode", "reported TCB microcode is 114, below the minimum 115"},
		{"tcb fmc", func(in *Input) { in.Evidence.SEVSNP.ReportedTCB.FMC = 1 },
			"sev_snp.min_tcb.fmc", "reported TCB fmc is 1, below the minimum 2"},
		{"debug", func(in *Input) { in.Evidence.SEVSNP.Debug = true },
			"sev_snp.allow_debug", "debug guest refused"},
		{"vmpl", func(in *Input) { in.Evidence.SEVSNP.VMPL = 2 },
			"sev_snp.vmpl", "report was requested at VMPL 2; allowed: 0"},
		{"guest svn", func(in *Input) { in.Evidence.SEVSNP.GuestSVN = 1 },
			"sev_snp.min_guest_svn", "guest SVN 1 is below the minimum 2"},
		{"issuer", func(in *Input) { in.Token["iss"] = "https://login.microsoftonline.com/" + tenant + "/v2.0" },
			"token.issuers", `issuer "https://login.microsoftonline.com/` + tenant + `/v2.0" is not among the 1 allowed value`},
		{"issuer missing", func(in *Input) { delete(in.Token, "iss") },
			"token.issuers", "token has no iss claim"},
		{"issuer not string", func(in *Input) { in.Token["iss"] = 7.0 },
			"token.issuers", "token iss claim is not a string"},
		{"audience", func(in *Input) { in.Token["aud"] = "api://other" },
			"token.audiences", `audience "api://other" is not among the 1 allowed audience`},
		{"audience array", func(in *Input) { in.Token["aud"] = []any{"a", "b"} },
			"token.audiences", "none of the token's 2 audiences is among"},
		{"tid", func(in *Input) { in.Token["tid"] = "00000000-0000-0000-0000-000000000000" },
			"token.tenant_ids", `tenant id (tid) "00000000-0000-0000-0000-000000000000" is not among`},
		{"oid", func(in *Input) { in.Token["oid"] = "00000000-0000-0000-0000-000000000001" },
			"token.object_ids", `object id (oid) "00000000-0000-0000-0000-000000000001" is not among`},
		{"appid", func(in *Input) { in.Token["appid"] = "00000000-0000-0000-0000-000000000002" },
			"token.app_ids", `application id "00000000-0000-0000-0000-000000000002" is not among`},
		{"appid and azp differ", func(in *Input) { in.Token["azp"] = "00000000-0000-0000-0000-000000000002" },
			"token.app_ids", "appid and azp claims that differ"},
		{"no appid nor azp", func(in *Input) { delete(in.Token, "appid") },
			"token.app_ids", "neither an appid nor an azp claim"},
		{"xms_mirid", func(in *Input) { in.Token["xms_mirid"] = strings.Replace(mirid, "inference", "frontend", 1) },
			"token.mi_resource_ids", "managed identity resource id (xms_mirid)"},
		{"claim string", func(in *Input) { in.Token["idtyp"] = "user" },
			"token.claims.idtyp", `token claim "idtyp" does not equal the required value "app"`},
		{"claim missing", func(in *Input) { delete(in.Token, "idtyp") },
			"token.claims.idtyp", `token has no "idtyp" claim`},
		{"claim number", func(in *Input) { in.Token["ver"] = 2.0 },
			"token.claims.ver", `token claim "ver" does not equal the required value 1`},
		{"claim number as string", func(in *Input) { in.Token["ver"] = "1" },
			"token.claims.ver", "does not equal the required value 1"},
		{"claim bool", func(in *Input) { in.Token["xms_cc"] = false },
			"token.claims.xms_cc", "does not equal the required value true"},
		{"claim bool as string", func(in *Input) { in.Token["xms_cc"] = "true" },
			"token.claims.xms_cc", "does not equal the required value true"},
		{"claim array", func(in *Input) { in.Token["roles"] = []any{"Reader"} },
			"token.claims.roles", `token claim "roles" (an array of 1) does not contain the required value "KeyRelease"`},
		{"claim string array", func(in *Input) { in.Token["roles"] = []string{"Reader", "Writer"} },
			"token.claims.roles", "(an array of 2) does not contain"},
		{"no token", func(in *Input) { in.Token = nil },
			"token", "no verified token claims were presented"},
		{"no snp claims", func(in *Input) { in.Evidence.SEVSNP = nil },
			"sev_snp", "sev-snp evidence carries no SEV-SNP claims"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			in := grantInput()
			tt.mutate(&in)
			d := p.Evaluate(in)
			if d.Allowed {
				t.Fatalf("granted: %+v", d)
			}
			if len(d.Denials) != 1 {
				t.Fatalf("denials = %+v, want exactly one", d.Denials)
			}
			dn := d.Denials[0]
			if dn.Rule != "prod" || dn.Condition != tt.cond {
				t.Errorf("denial at %q/%q, want prod/%q", dn.Rule, dn.Condition, tt.cond)
			}
			if !strings.Contains(dn.Reason, tt.reason) {
				t.Errorf("reason %q\ndoes not contain %q", dn.Reason, tt.reason)
			}
			s := d.Summary()
			if !strings.HasPrefix(s, `denied: rule "prod": `+tt.cond+": ") || strings.ContainsAny(s, "\n\r") {
				t.Errorf("Summary = %q", s)
			}
		})
	}
}

func TestEvaluateReportsAllFailuresOfARule(t *testing.T) {
	p := mustParse(t, fullPolicy)
	in := grantInput()
	in.Evidence.SEVSNP.Measurement = mustHex(measC)
	in.Evidence.SEVSNP.VMPL = 1
	in.Token["iss"] = "x"
	d := p.Evaluate(in)
	var conds []string
	for _, dn := range d.Denials {
		conds = append(conds, dn.Condition)
	}
	if got := strings.Join(conds, ","); got != "sev_snp.measurements,sev_snp.vmpl,token.issuers" {
		t.Errorf("conditions = %s", got)
	}
}

func TestEvaluateAccepts(t *testing.T) {
	p := mustParse(t, fullPolicy)
	tests := []struct {
		name   string
		mutate func(in *Input)
	}{
		{"xms_mirid case-insensitive", func(in *Input) { in.Token["xms_mirid"] = strings.ToLower(mirid) }},
		{"tid uppercase", func(in *Input) { in.Token["tid"] = strings.ToUpper(tenant) }},
		{"azp instead of appid", func(in *Input) { delete(in.Token, "appid"); in.Token["azp"] = appID }},
		{"appid and azp agree", func(in *Input) { in.Token["azp"] = strings.ToUpper(appID) }},
		{"audience in array", func(in *Input) { in.Token["aud"] = []any{"other", audience} }},
		{"number as json.Number", func(in *Input) { in.Token["ver"] = json.Number("1") }},
		{"number as int", func(in *Input) { in.Token["ver"] = 1 }},
		{"number as 1.0e0", func(in *Input) { in.Token["ver"] = json.Number("1.0e0") }},
		{"string claim in array", func(in *Input) { in.Token["idtyp"] = []any{"app"} }},
		{"first measurement", func(in *Input) { in.Evidence.SEVSNP.Measurement = mustHex(measA) }},
		{"higher tcb", func(in *Input) {
			in.Evidence.SEVSNP.ReportedTCB = attestation.TCBParts{Bootloader: 4, TEE: 2, SNP: 9, Microcode: 200, FMC: 3}
		}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			in := grantInput()
			tt.mutate(&in)
			if d := p.Evaluate(in); !d.Allowed {
				t.Errorf("denied: %s", d.Summary())
			}
		})
	}
}

func TestEvaluateDebugAllowed(t *testing.T) {
	p := mustParse(t, "version: 1\nrules:\n  - name: test\n    sev_snp:\n      measurements: ["+measB+"]\n      allow_debug: true\n      vmpl: [0, 2]\n")
	in := grantInput()
	in.Evidence.SEVSNP.Debug = true
	in.Evidence.SEVSNP.VMPL = 2
	if d := p.Evaluate(in); !d.Allowed || d.Rule != "test" {
		t.Errorf("debug guest at VMPL 2 refused with allow_debug and vmpl [0, 2]: %s", d.Summary())
	}
	in.Evidence.SEVSNP.VMPL = 1
	d := p.Evaluate(in)
	if d.Allowed || d.Denials[0].Reason != "report was requested at VMPL 1; allowed: 0, 2" {
		t.Errorf("decision = %+v", d)
	}
}

func TestEvaluateAnyOf(t *testing.T) {
	p := mustParse(t, `version: 1
rules:
  - name: first
    sev_snp:
      measurements: [`+measA+`]
    token:
      tenant_ids: ["`+tenant+`"]
  - name: second
    sev_snp:
      measurements: [`+measB+`]
`)
	in := grantInput()

	in.Evidence.SEVSNP.Measurement = mustHex(measB)
	if d := p.Evaluate(in); !d.Allowed || d.Rule != "second" {
		t.Errorf("measB: %+v, want grant by second", d)
	}
	in.Evidence.SEVSNP.Measurement = mustHex(measA)
	if d := p.Evaluate(in); !d.Allowed || d.Rule != "first" {
		t.Errorf("measA: %+v, want grant by first", d)
	}
	// First rule's token condition fails and second rule's measurement
	// fails: denied, one denial per rule, in rule order.
	in.Token["tid"] = "00000000-0000-0000-0000-000000000000"
	d := p.Evaluate(in)
	if d.Allowed || len(d.Denials) != 2 ||
		d.Denials[0].Rule != "first" || d.Denials[0].Condition != "token.tenant_ids" ||
		d.Denials[1].Rule != "second" || d.Denials[1].Condition != "sev_snp.measurements" {
		t.Fatalf("decision = %+v", d)
	}
	want := `denied: rule "first": token.tenant_ids: tenant id (tid) "00000000-0000-0000-0000-000000000000" is not among the 1 allowed value; ` +
		`rule "second": sev_snp.measurements: measurement ` + measA + ` is not among the 1 allowed measurement`
	if got := d.Summary(); got != want {
		t.Errorf("Summary =\n%s\nwant\n%s", got, want)
	}
}

func TestEvaluateWithoutUsableEvidence(t *testing.T) {
	p := mustParse(t, fullPolicy)
	tests := []struct {
		name   string
		p      *Policy
		in     Input
		cond   string
		reason string
	}{
		{"nil evidence", p, Input{Token: grantInput().Token}, "evidence", "no verified evidence was presented"},
		{"other platform", p, Input{Evidence: &attestation.Claims{Platform: "tdx"}}, "evidence.platform", `no rule accepts "tdx" evidence; rules cover sev-snp`},
		{"empty platform", p, Input{Evidence: &attestation.Claims{}}, "evidence.platform", `no rule accepts "" evidence`},
		{"nil policy", nil, grantInput(), "policy", "no release policy is configured"},
		{"zero policy", &Policy{}, grantInput(), "policy", "no release policy is configured"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			d := tt.p.Evaluate(tt.in)
			if d.Allowed || len(d.Denials) != 1 {
				t.Fatalf("decision = %+v", d)
			}
			dn := d.Denials[0]
			if dn.Rule != "" || dn.Condition != tt.cond || !strings.Contains(dn.Reason, tt.reason) {
				t.Errorf("denial = %+v, want %s: %s", dn, tt.cond, tt.reason)
			}
			if s := d.Summary(); s != "denied: "+dn.Condition+": "+dn.Reason {
				t.Errorf("Summary = %q", s)
			}
		})
	}
}

func TestSummaryHidesClaimValuesAndStaysShort(t *testing.T) {
	p := mustParse(t, fullPolicy)
	in := grantInput()
	const secret = "eyJhbGciOiJSUzI1NiJ9.secret-looking-value"
	in.Token["idtyp"] = secret
	in.Token["roles"] = []any{secret}
	d := p.Evaluate(in)
	if s := d.Summary(); strings.Contains(s, secret) {
		t.Errorf("Summary echoes an arbitrary claim value: %q", s)
	}

	// A hostile identity value is escaped and truncated.
	in = grantInput()
	in.Token["iss"] = "evil\nlog-injection" + strings.Repeat("x", 1000)
	s := p.Evaluate(in).Summary()
	if strings.ContainsAny(s, "\n\r") || len(s) > 400 {
		t.Errorf("Summary not one bounded line: %q", s)
	}

	// Many denials are capped.
	many := Decision{}
	for range 20 {
		many.Denials = append(many.Denials, Denial{Rule: "r", Condition: "c", Reason: "x"})
	}
	if s := many.Summary(); !strings.HasSuffix(s, "; and 12 more") {
		t.Errorf("Summary = %q", s)
	}
}

func BenchmarkEvaluate(b *testing.B) {
	p := mustParse(b, fullPolicy)
	grant := grantInput()
	denied := grantInput()
	denied.Evidence.SEVSNP.Measurement = mustHex(measC)
	b.Run("grant", func(b *testing.B) {
		b.ReportAllocs()
		for b.Loop() {
			if !p.Evaluate(grant).Allowed {
				b.Fatal("denied")
			}
		}
	})
	b.Run("deny", func(b *testing.B) {
		b.ReportAllocs()
		for b.Loop() {
			if p.Evaluate(denied).Allowed {
				b.Fatal("granted")
			}
		}
	})
}

func TestClaimNumbersCompareExactly(t *testing.T) {
	p := mustParse(t, "version: 1\nrules:\n  - name: r\n    sev_snp:\n      measurements: ["+measB+"]\n    token:\n      claims: {n: 9007199254740993, f: 1.5}\n")
	tests := []struct {
		n, f any
		want bool
	}{
		{json.Number("9007199254740993"), 1.5, true},
		{uint64(9007199254740993), json.Number("1.5"), true},
		{float64(9007199254740992), 1.5, false}, // 2^53+1 is not a float64
		{json.Number("9007199254740993"), json.Number("1.50000000000000001"), false},
		{json.Number("1e999999999"), 1.5, false},
	}
	for _, tt := range tests {
		in := grantInput()
		in.Token = map[string]any{"n": tt.n, "f": tt.f}
		if d := p.Evaluate(in); d.Allowed != tt.want {
			t.Errorf("n=%v f=%v: %s", tt.n, tt.f, d.Summary())
		}
	}
}
