package policy

import (
	"bytes"
	"os"
	"strings"
	"testing"
)

// Test values. Measurements are 48 bytes, host data 32, family/image ids 16.
var (
	measA    = strings.Repeat("a1", 48)
	measB    = strings.Repeat("b2", 48)
	measC    = strings.Repeat("c3", 48)
	hostData = strings.Repeat("d4", 32)
	familyID = strings.Repeat("e5", 16)
	imageID  = strings.Repeat("f6", 16)
	tenant   = "72f988bf-86f1-41af-91ab-2d7cd011db47"
	objectID = "1a2b3c4d-5e6f-4a7b-8c9d-0e1f2a3b4c5d"
	appID    = "5e6f7a8b-9c0d-4e1f-a2b3-c4d5e6f7a8b9"
	issuer   = "https://sts.windows.net/" + tenant + "/"
	audience = "api://attested-kms"
	mirid    = "/subscriptions/0b9b1c0e/resourceGroups/depa/providers/Microsoft.ManagedIdentity/userAssignedIdentities/inference"
)

// fullPolicy uses every condition of the grammar, so each can be broken in
// isolation.
var fullPolicy = `version: 1
rules:
  - name: prod
    sev_snp:
      measurements: [` + measA + `, ` + measB + `]
      host_data: [` + hostData + `]
      family_ids: [` + familyID + `]
      image_ids: [` + imageID + `]
      min_tcb: {bootloader: 3, tee: 1, snp: 8, microcode: 115, fmc: 2}
      min_guest_svn: 2
    token:
      issuers: ["` + issuer + `"]
      audiences: ["` + audience + `"]
      tenant_ids: ["` + tenant + `"]
      object_ids: ["` + objectID + `"]
      app_ids: ["` + appID + `"]
      mi_resource_ids: ["` + mirid + `"]
      claims:
        idtyp: app
        ver: 1
        xms_cc: true
        roles: KeyRelease
`

func mustParse(t testing.TB, s string) *Policy {
	t.Helper()
	p, err := Parse([]byte(s))
	if err != nil {
		t.Fatalf("Parse: %v", err)
	}
	return p
}

func TestParseExample(t *testing.T) {
	b, err := os.ReadFile("testdata/example.yaml")
	if err != nil {
		t.Fatal(err)
	}
	p, err := Parse(b)
	if err != nil {
		t.Fatalf("example.yaml: %v", err)
	}
	if got := strings.Join(p.RuleNames(), ","); got != "prod-inference,canary-inference" {
		t.Errorf("rule names = %q", got)
	}
	if err := Validate(b); err != nil {
		t.Errorf("Validate: %v", err)
	}
}

func TestParseErrors(t *testing.T) {
	rule := func(snp string) string {
		return "version: 1\nrules:\n  - name: r\n    sev_snp:\n" + snp
	}
	meas := "      measurements: [" + measA + "]\n"
	tests := []struct {
		name string
		in   string
		want []string // substrings of the error
	}{
		{"empty input", "", []string{"empty policy"}},
		{"null document", "~\n", []string{"empty policy"}},
		{"not a mapping", "- 1\n", []string{"line 1", "must be a mapping"}},
		{"syntax", "version: 1\nrules: [\n", []string{"policy: yaml:"}},
		{"missing version", "rules: []\n", []string{"version is required"}},
		{"wrong version", "version: 2\nrules: []\n", []string{"line 1", "unsupported version 2"}},
		{"string version", "version: one\nrules: []\n", []string{"version: want an integer"}},
		{"empty rules", "version: 1\nrules: []\n", []string{"line 2", "at least one rule"}},
		{"no rules", "version: 1\n", []string{"at least one rule"}},
		{"unknown top field", "version: 1\nrulez: []\n", []string{"line 2", `unknown field "rulez"`, "allowed here: version, rules"}},
		{"unknown snp field", rule(meas + "      measurement: [x]\n"), []string{"line 6", "rules[0].sev_snp.measurement", `unknown field "measurement"`}},
		{"unknown tcb field", rule(meas + "      min_tcb: {snpp: 1}\n"), []string{"line 6", `unknown field "snpp"`, "bootloader"}},
		{"unknown rule field", "version: 1\nrules:\n  - name: r\n    sev-snp: {}\n", []string{"line 4", `unknown field "sev-snp"`}},
		{"tcb overflow", rule(meas + "      min_tcb: {snp: 300}\n"), []string{"line 6", "min_tcb.snp", "uint8"}},
		{"negative svn", rule(meas + "      min_guest_svn: -1\n"), []string{"line 6", "min_guest_svn"}},
		{"bad hex", rule("      measurements: [" + strings.Repeat("zz", 48) + "]\n"), []string{"line 5", "rules[0].sev_snp.measurements[0]", "not hex"}},
		{"short measurement", rule("      measurements: [" + measA[:94] + "]\n"), []string{"line 5", "measurements[0]", "want 96 hex digits (48 bytes), got 94"}},
		{"host data length", rule(meas + "      host_data: [" + measA + "]\n"), []string{"line 6", "host_data[0]", "want 64 hex digits"}},
		{"family id length", rule(meas + "      family_ids: [abcd]\n"), []string{"family_ids[0]", "want 32 hex digits"}},
		{"image id length", rule(meas + "      image_ids: [abcd]\n"), []string{"image_ids[0]", "want 32 hex digits"}},
		{"duplicate measurement", rule("      measurements:\n        - " + measA + "\n        - " + strings.ToUpper(measA) + "\n"), []string{"line 7", "measurements[1]", "listed twice"}},
		{"missing measurements", rule("      host_data: [" + hostData + "]\n"), []string{"line 4", "rules[0].sev_snp.measurements", "required"}},
		{"empty measurements", rule("      measurements: []\n"), []string{"line 5", "empty list"}},
		{"null host data", rule(meas + "      host_data:\n"), []string{"line 6", "rules[0].sev_snp.host_data has no value"}},
		{"empty host data", rule(meas + "      host_data: []\n"), []string{"line 6", "host_data", "empty list"}},
		{"null section", "version: 1\nrules:\n  - name: r\n    sev_snp:\n", []string{"line 4", "sev_snp has no value"}},
		{"token-only rule", "version: 1\nrules:\n  - name: r\n    token: {issuers: [x]}\n", []string{"line 3", `rule "r" has no evidence section`, "any token holder"}},
		{"name missing", "version: 1\nrules:\n  - sev_snp:\n" + meas, []string{"rules[0].name", "name is required"}},
		{"bad name", "version: 1\nrules:\n  - name: \"a b\"\n    sev_snp:\n" + meas, []string{"line 3", "must be 1-64"}},
		{"duplicate names", "version: 1\nrules:\n  - name: r\n    sev_snp:\n" + meas + "  - name: r\n    sev_snp:\n" + meas,
			[]string{"line 6", "rules[1].name", `duplicate rule name "r" (also rules[0])`}},
		{"duplicate key", "version: 1\nrules:\n  - name: r\n    name: s\n", []string{"line 4", "already defined at line 3"}},
		{"vmpl out of range", rule(meas + "      vmpl: [0, 4]\n"), []string{"line 6", "vmpl[1]", "VMPL 4 does not exist"}},
		{"vmpl empty", rule(meas + "      vmpl: []\n"), []string{"vmpl", "empty list"}},
		{"empty token", rule(meas + "    token: {}\n"), []string{"line 6", "token section has no conditions"}},
		{"bad guid", rule(meas + "    token: {tenant_ids: [not-a-guid]}\n"), []string{"line 6", "tenant_ids[0]", "not a GUID"}},
		{"empty issuer", rule(meas + "    token: {issuers: [\"\"]}\n"), []string{"issuers[0]", "empty string"}},
		{"claim list value", rule(meas + "    token:\n      claims: {roles: [a, b]}\n"), []string{"line 7", "token.claims.roles", "want a string, number or bool"}},
		{"claim map value", rule(meas + "    token:\n      claims: {x: {y: 1}}\n"), []string{"token.claims.x", "want a string, number or bool"}},
		{"claim nan", rule(meas + "    token:\n      claims: {x: .nan}\n"), []string{"token.claims.x", "not a finite number"}},
		{"two documents", rule(meas) + "---\nversion: 1\n", []string{"more than one YAML document"}},
		{"oversized", "version: 1\n#" + strings.Repeat("x", MaxSize), []string{"exceeds the 1048576-byte limit"}},
		{"huge mapping", "version: 1\nrules:\n  - name: r\n    token:\n      claims:\n" + manyKeys(300), []string{"more than 256 keys"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			p, err := Parse([]byte(tt.in))
			if err == nil {
				t.Fatalf("Parse accepted:\n%s", tt.in)
			}
			if p != nil {
				t.Errorf("Parse returned a policy with an error")
			}
			for _, w := range tt.want {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("error %q\ndoes not contain %q", err, w)
				}
			}
			if Validate([]byte(tt.in)) == nil {
				t.Errorf("Validate accepted what Parse rejected")
			}
		})
	}
}

func manyKeys(n int) string {
	var sb strings.Builder
	for i := range n {
		sb.WriteString("        k")
		sb.WriteString(strings.Repeat("x", i%7))
		sb.WriteString(string(rune('a'+i%26)) + string(rune('a'+i/26)))
		sb.WriteString(": 1\n")
	}
	return sb.String()
}

func TestParseCollectsSeveralErrors(t *testing.T) {
	in := "version: 1\nrules:\n  - name: r\n    sev_snp:\n      measurements: [abc, " + measA + "]\n      host_data: [xyz]\n"
	_, err := Parse([]byte(in))
	if err == nil {
		t.Fatal("accepted")
	}
	for _, w := range []string{"measurements[0]", "host_data[0]"} {
		if !strings.Contains(err.Error(), w) {
			t.Errorf("error %q lacks %q", err, w)
		}
	}
}

func TestParseDefaults(t *testing.T) {
	p := mustParse(t, "version: 1\nrules:\n  - name: r\n    sev_snp:\n      measurements: ["+measA+"]\n")
	snp := p.rules[0].evidence.(*snpConditions)
	if snp.allowDebug {
		t.Error("allow_debug defaults to true")
	}
	if len(snp.vmpl) != 1 || snp.vmpl[0] != 0 {
		t.Errorf("vmpl default = %v, want [0]", snp.vmpl)
	}
	if snp.hostData != nil || snp.minTCB != nil || snp.minGuestSVN != 0 || p.rules[0].token != nil {
		t.Error("optional conditions set by default")
	}
}

func TestMarshalCanonicalRoundTrip(t *testing.T) {
	for _, src := range []string{fullPolicy, readExample(t)} {
		p := mustParse(t, src)
		out, err := p.Marshal()
		if err != nil {
			t.Fatal(err)
		}
		p2 := mustParse(t, string(out))
		out2, err := p2.Marshal()
		if err != nil {
			t.Fatal(err)
		}
		if !bytes.Equal(out, out2) {
			t.Errorf("Marshal not a fixed point:\n%s\n---\n%s", out, out2)
		}
		// Defaults are written out so the canonical form is explicit.
		for _, w := range []string{"allow_debug: false", "vmpl:", "version: 1"} {
			if !bytes.Contains(out, []byte(w)) {
				t.Errorf("canonical form lacks %q:\n%s", w, out)
			}
		}
		if d1, d2 := p.Evaluate(grantInput()), p2.Evaluate(grantInput()); d1.Summary() != d2.Summary() {
			t.Errorf("round trip changed the decision: %q vs %q", d1.Summary(), d2.Summary())
		}
	}
	// Uppercase hex and list order are normalized.
	a := mustParse(t, "version: 1\nrules:\n  - name: r\n    sev_snp:\n      measurements: ["+strings.ToUpper(measB)+", "+measA+"]\n")
	b := mustParse(t, "version: 1\nrules:\n  - name: r\n    sev_snp:\n      measurements: ["+measA+", "+measB+"]\n")
	ma, _ := a.Marshal()
	mb, _ := b.Marshal()
	if !bytes.Equal(ma, mb) {
		t.Errorf("canonical forms differ:\n%s\n---\n%s", ma, mb)
	}
	if _, err := (*Policy)(nil).Marshal(); err == nil {
		t.Error("nil policy marshalled")
	}
}

func readExample(t *testing.T) string {
	t.Helper()
	b, err := os.ReadFile("testdata/example.yaml")
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}
