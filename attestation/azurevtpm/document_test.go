package azurevtpm_test

import (
	"bytes"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"strings"
	"testing"

	"github.com/attested-kms/attested-kms/attestation"
	"github.com/attested-kms/attested-kms/attestation/azurevtpm"
)

// docMap decodes a document for editing.
func docMap(t *testing.T, doc []byte) map[string]any {
	t.Helper()
	var m map[string]any
	if err := json.Unmarshal(doc, &m); err != nil {
		t.Fatal(err)
	}
	return m
}

func encode(t *testing.T, m map[string]any) []byte {
	t.Helper()
	b, err := json.Marshal(m)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func TestDocumentRoundTrip(t *testing.T) {
	for _, ev := range []*attestation.Evidence{
		evidence(t, tdxOpts(), binding("doc")),
	} {
		for _, version := range []int{1, 2} {
			doc, err := azurevtpm.MarshalDocument(ev, version)
			if err != nil {
				t.Fatal(err)
			}
			got, err := azurevtpm.ParseDocument(doc)
			if err != nil {
				t.Fatal(err)
			}
			if got.Type != ev.Type || !bytes.Equal(got.Report, ev.Report) || !bytes.Equal(got.TDQuote, ev.TDQuote) ||
				!bytes.Equal(got.TPMQuote.Message, ev.TPMQuote.Message) || !bytes.Equal(got.TPMQuote.Signature, ev.TPMQuote.Signature) ||
				len(got.TPMQuote.PCRs) != len(ev.TPMQuote.PCRs) {
				t.Errorf("v%d: round trip changed the evidence", version)
			}
			m := docMap(t, doc)
			if m["version"] != float64(version) {
				t.Errorf("version = %v", m["version"])
			}
			// Field encodings as serde_with writes them.
			q := m["tpm_quote"].(map[string]any)
			if _, err := hex.DecodeString(q["message"].(string)); err != nil {
				t.Errorf("message is not hex: %v", err)
			}
			if s := m["hcl_report"].(string); strings.ContainsAny(s, "+/") {
				t.Error("hcl_report is not URL-safe base64")
			}
		}
	}
}

func TestParseDocumentEncodings(t *testing.T) {
	ev := evidence(t, tdxOpts(), binding("enc"))
	doc, err := azurevtpm.MarshalDocument(ev, 2)
	if err != nil {
		t.Fatal(err)
	}
	m := docMap(t, doc)
	// Upper-case hex and unpadded base64url are what other serde
	// producers may send; both must decode to the same evidence.
	q := m["tpm_quote"].(map[string]any)
	q["signature"] = strings.ToUpper(q["signature"].(string))
	m["hcl_report"] = strings.TrimRight(m["hcl_report"].(string), "=")
	m["td_quote"] = base64.RawURLEncoding.EncodeToString(ev.TDQuote)
	got, err := azurevtpm.ParseDocument(encode(t, m))
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(got.Report, ev.Report) || !bytes.Equal(got.TPMQuote.Signature, ev.TPMQuote.Signature) {
		t.Error("alternative encodings decoded differently")
	}
}

func TestParseDocumentRejects(t *testing.T) {
	ev := evidence(t, tdxOpts(), binding("rej"))
	doc, err := azurevtpm.MarshalDocument(ev, 1)
	if err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		name string
		edit func(m map[string]any)
		want attestation.Reason
	}{
		{"version 3", func(m map[string]any) { m["version"] = 3 }, attestation.ReasonUnsupported},
		{"version as string", func(m map[string]any) { m["version"] = "1" }, attestation.ReasonUnsupported},
		{"legacy v0 layout", func(m map[string]any) {
			delete(m, "version")
			m["quote"] = m["tpm_quote"]
			delete(m, "tpm_quote")
		}, attestation.ReasonMalformed},
		{"no version", func(m map[string]any) { delete(m, "version") }, attestation.ReasonUnsupported},
		{"unknown field", func(m map[string]any) { m["extra"] = 1 }, attestation.ReasonMalformed},
		{"unknown quote field", func(m map[string]any) { m["tpm_quote"].(map[string]any)["nonce"] = "00" }, attestation.ReasonMalformed},
		{"both vcek and td_quote", func(m map[string]any) { m["vcek"] = "AA==" }, attestation.ReasonMalformed},
		{"no hcl_report", func(m map[string]any) { delete(m, "hcl_report") }, attestation.ReasonMalformed},
		{"null quote", func(m map[string]any) { m["tpm_quote"] = nil }, attestation.ReasonMalformed},
		{"standard base64", func(m map[string]any) { m["hcl_report"] = "ab+/" }, attestation.ReasonMalformed},
		{"bytes as number array", func(m map[string]any) { m["td_quote"] = []int{1, 2, 3} }, attestation.ReasonMalformed},
		{"odd hex", func(m map[string]any) { m["tpm_quote"].(map[string]any)["message"] = "abc" }, attestation.ReasonMalformed},
		{"25 PCRs", func(m map[string]any) {
			q := m["tpm_quote"].(map[string]any)
			q["pcrs"] = append(q["pcrs"].([]any), "00")
		}, attestation.ReasonMalformed},
	} {
		t.Run(tc.name, func(t *testing.T) {
			m := docMap(t, doc)
			tc.edit(m)
			_, err := azurevtpm.ParseDocument(encode(t, m))
			if err == nil {
				t.Fatal("parsed")
			}
			if got := attestation.ReasonOf(err); got != tc.want {
				t.Fatalf("reason %q (%v), want %q", got, err, tc.want)
			}
		})
	}
	for name, b := range map[string][]byte{
		"trailing data": append(bytes.Clone(doc), []byte(" {}")...),
		"not JSON":      []byte("hcl"),
		"too large":     bytes.Repeat([]byte(" "), azurevtpm.MaxDocumentSize+1),
	} {
		if _, err := azurevtpm.ParseDocument(b); attestation.ReasonOf(err) != attestation.ReasonMalformed {
			t.Errorf("%s: %v, want malformed", name, err)
		}
	}
}

func TestMarshalDocumentRejects(t *testing.T) {
	ev := evidence(t, tdxOpts(), binding("m"))
	if _, err := azurevtpm.MarshalDocument(ev, 0); err == nil {
		t.Error("version 0 accepted")
	}
	pss := cloneEvidence(ev)
	pss.TPMQuote.Signature[1] = 0x16
	if _, err := azurevtpm.MarshalDocument(pss, 2); err == nil {
		t.Error("RSAPSS signature written to a document, which can only carry RSASSA")
	}
	snp := cloneEvidence(ev)
	snp.Type = attestation.PlatformAzureSNPVTPM
	if _, err := azurevtpm.MarshalDocument(snp, 2); err == nil {
		t.Error("SNP document without a VCEK")
	}
}
