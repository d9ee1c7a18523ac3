package evidencefile

import (
	"bytes"
	"encoding/json"
	"reflect"
	"strings"
	"testing"

	"github.com/attested-kms/attested-kms/attestation"
)

func TestDecodeRawSNP(t *testing.T) {
	raw := bytes.Repeat([]byte{7}, snpReportSize+100)
	ev, err := Decode(attestation.PlatformSEVSNP, raw)
	if err != nil {
		t.Fatal(err)
	}
	if len(ev.Report) != snpReportSize || len(ev.Certificates) != 100 {
		t.Fatalf("split %d + %d, want %d + 100", len(ev.Report), len(ev.Certificates), snpReportSize)
	}
	raw[0] = 9
	if ev.Report[0] != 7 {
		t.Fatal("decoded evidence aliases the input")
	}
	if _, err := Decode(attestation.PlatformSEVSNP, raw[:snpReportSize-1]); err == nil {
		t.Fatal("short report accepted")
	}
}

func TestRoundTrip(t *testing.T) {
	for _, ev := range []*attestation.Evidence{
		{Type: attestation.PlatformSEVSNP, Report: []byte{1, 2}, Certificates: []byte{3}},
		{Type: attestation.PlatformTDX, Report: []byte("quote")},
		{Type: attestation.PlatformAzureSNPVTPM, Report: []byte("hcl"), Certificates: []byte("vcek"),
			TPMQuote: &attestation.TPMQuote{Message: []byte("m"), Signature: []byte("s"), PCRs: [][]byte{{1}, {2}}}},
		{Type: attestation.PlatformAzureTDXVTPM, Report: []byte("hcl"), TDQuote: []byte("q"),
			TPMQuote: &attestation.TPMQuote{Message: []byte("m"), Signature: []byte("s")}},
	} {
		b, err := Encode(ev)
		if err != nil {
			t.Fatal(err)
		}
		got, err := Decode(ev.Type, b)
		if err != nil {
			t.Fatalf("%s: %v\n%s", ev.Type, err, b)
		}
		if !reflect.DeepEqual(got, ev) {
			t.Fatalf("%s: round trip\n got %+v\nwant %+v", ev.Type, got, ev)
		}
	}
}

func TestDecodeRefusals(t *testing.T) {
	for name, c := range map[string]struct {
		typ  attestation.Platform
		data string
		want string
	}{
		"empty":         {attestation.PlatformTDX, "", "empty"},
		"unknown type":  {"sgx", "x", "unknown evidence type"},
		"type mismatch": {attestation.PlatformTDX, `{"type":"sev-snp"}`, `want "tdx"`},
		"unknown field": {attestation.PlatformTDX, `{"type":"tdx","quote":"AA=="}`, "unknown field"},
		"trailing":      {attestation.PlatformTDX, `{"type":"tdx"} {}`, "evidence JSON"},
		"bad base64":    {attestation.PlatformTDX, `{"type":"tdx","report":"!"}`, "evidence JSON"},
		"raw azure":     {attestation.PlatformAzureSNPVTPM, "HCLA....", "must be JSON"},
		"coco for bare": {attestation.PlatformSEVSNP, `{"hcl_report":[1]}`, "not sev-snp evidence"},
		"not an object": {attestation.PlatformTDX, `{"type":`, "evidence JSON"},
		"too large":     {attestation.PlatformTDX, strings.Repeat("a", MaxSize+1), "limit"},
	} {
		t.Run(name, func(t *testing.T) {
			_, err := Decode(c.typ, []byte(c.data))
			if err == nil || !strings.Contains(err.Error(), c.want) {
				t.Fatalf("err = %v, want it to mention %q", err, c.want)
			}
		})
	}
}

func TestDecodeCoCoDocument(t *testing.T) {
	doc := []byte(` {"version":1,"hcl_report":[1,2],"tpm_quote":{},"vcek":""}`)
	ev, err := Decode(attestation.PlatformAzureSNPVTPM, doc)
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(ev.Document, bytes.TrimSpace(doc)) || ev.Report != nil {
		t.Fatalf("document not passed through: %+v", ev)
	}
}

func FuzzDecode(f *testing.F) {
	f.Add("sev-snp", bytes.Repeat([]byte{1}, snpReportSize+24))
	f.Add("tdx", []byte(`{"type":"tdx","report":"AAEC"}`))
	f.Add("azure-sev-snp-vtpm", []byte(`{"type":"azure-sev-snp-vtpm","report":"AA==","tpm_quote":{"message":"AA==","signature":"AA==","pcrs":["AA=="]}}`))
	f.Add("azure-tdx-vtpm", []byte(`{"version":2,"hcl_report":[1],"td_quote":[2],"tpm_quote":{}}`))
	f.Fuzz(func(t *testing.T, typ string, data []byte) {
		ev, err := Decode(attestation.Platform(typ), data)
		if err != nil {
			return
		}
		if ev.Type != attestation.Platform(typ) {
			t.Fatalf("type %q decoded as %q", typ, ev.Type)
		}
		b, err := Encode(ev)
		if err != nil {
			t.Fatalf("Encode after Decode: %v", err)
		}
		again, err := Decode(ev.Type, b)
		if err != nil {
			t.Fatalf("Decode(Encode(ev)): %v", err)
		}
		if len(ev.Document) == 0 && !json.Valid(b) {
			t.Fatal("Encode produced invalid JSON")
		}
		if !reflect.DeepEqual(normalize(again), normalize(ev)) {
			t.Fatalf("round trip changed the evidence")
		}
	})
}

// normalize maps empty slices to nil: JSON omits both alike.
func normalize(ev *attestation.Evidence) *attestation.Evidence {
	n := *ev
	for _, p := range []*[]byte{&n.Report, &n.Certificates, &n.TDQuote, &n.Document} {
		if len(*p) == 0 {
			*p = nil
		}
	}
	if n.TPMQuote != nil {
		q := *n.TPMQuote
		if len(q.Message) == 0 {
			q.Message = nil
		}
		if len(q.Signature) == 0 {
			q.Signature = nil
		}
		if len(q.PCRs) == 0 {
			q.PCRs = nil
		}
		for i := range q.PCRs {
			if len(q.PCRs[i]) == 0 {
				q.PCRs[i] = nil
			}
		}
		n.TPMQuote = &q
	}
	return &n
}

// A stray closing bracket after the object is trailing data too.
func TestDecodeRejectsStrayCloser(t *testing.T) {
	for _, tail := range []string{"}", "]"} {
		if _, err := Decode(attestation.PlatformTDX, []byte(`{"type":"tdx","report":"AA=="}`+tail)); err == nil {
			t.Errorf("trailing %q accepted", tail)
		}
	}
}
