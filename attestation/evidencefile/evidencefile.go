// Package evidencefile reads and writes evidence as files, for operators
// and tools (kms evidence verify, inference-client, fixtures): the raw
// forms the platforms produce, the project's JSON form, and the JSON
// documents of the Confidential Containers attesters.
//
// The project's JSON form is the protobuf Evidence message in protojson's
// proto-name layout, so `kms evidence verify` reads exactly what a release
// request carries:
//
//	{"type": "azure-sev-snp-vtpm", "report": "<base64>", "certificates": "<base64>",
//	 "tpm_quote": {"message": "<base64>", "signature": "<base64>", "pcrs": ["<base64>", ...]},
//	 "td_quote": "<base64>"}
package evidencefile

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"unicode"

	"github.com/attested-kms/attested-kms/attestation"
)

// MaxSize bounds an evidence file. The largest real evidence (an Azure TDX
// vTPM document with its quote and PCK chain) is under 32 KiB.
const MaxSize = 1 << 20

// snpReportSize is the size of an SEV-SNP attestation report (ABI 1.55).
const snpReportSize = 0x4A0

type jsonQuote struct {
	Message   []byte   `json:"message"`
	Signature []byte   `json:"signature"`
	PCRs      [][]byte `json:"pcrs"`
}

type jsonEvidence struct {
	Type         string     `json:"type"`
	Report       []byte     `json:"report,omitempty"`
	Certificates []byte     `json:"certificates,omitempty"`
	TPMQuote     *jsonQuote `json:"tpm_quote,omitempty"`
	TDQuote      []byte     `json:"td_quote,omitempty"`
}

// Decode reads an evidence file of type typ:
//   - the project's JSON form (any type; its "type" must agree with typ);
//   - for azure-*: a Confidential Containers JSON document (recognized by
//     its "hcl_report" member), handed to the verifier as Evidence.Document;
//   - for sev-snp: a raw report, optionally followed by the certificate
//     table of an extended report (what go-sev-guest and configfs-tsm give);
//   - for tdx: a raw TD quote.
func Decode(typ attestation.Platform, data []byte) (*attestation.Evidence, error) {
	if len(data) > MaxSize {
		return nil, fmt.Errorf("evidence file is %d bytes, limit %d", len(data), MaxSize)
	}
	if len(data) == 0 {
		return nil, errors.New("evidence file is empty")
	}
	if !known(typ) {
		return nil, fmt.Errorf("unknown evidence type %q", typ)
	}
	trimmed := bytes.TrimLeftFunc(data, unicode.IsSpace)
	if len(trimmed) > 0 && trimmed[0] == '{' {
		return decodeJSON(typ, trimmed)
	}
	switch typ {
	case attestation.PlatformSEVSNP:
		if len(data) < snpReportSize {
			return nil, fmt.Errorf("sev-snp evidence is %d bytes, shorter than a report (%d)", len(data), snpReportSize)
		}
		return &attestation.Evidence{
			Type:         typ,
			Report:       bytes.Clone(data[:snpReportSize]),
			Certificates: bytes.Clone(data[snpReportSize:]),
		}, nil
	case attestation.PlatformTDX:
		return &attestation.Evidence{Type: typ, Report: bytes.Clone(data)}, nil
	default:
		return nil, fmt.Errorf("%s evidence must be JSON (the project's form or a Confidential Containers document): an HCL report alone lacks the TPM quote", typ)
	}
}

func decodeJSON(typ attestation.Platform, data []byte) (*attestation.Evidence, error) {
	var probe map[string]json.RawMessage
	if err := json.Unmarshal(data, &probe); err != nil {
		return nil, fmt.Errorf("evidence JSON: %w", err)
	}
	if _, ok := probe["hcl_report"]; ok {
		if typ != attestation.PlatformAzureSNPVTPM && typ != attestation.PlatformAzureTDXVTPM {
			return nil, fmt.Errorf("a Confidential Containers vTPM document is not %s evidence", typ)
		}
		return &attestation.Evidence{Type: typ, Document: bytes.Clone(data)}, nil
	}
	dec := json.NewDecoder(bytes.NewReader(data))
	dec.DisallowUnknownFields()
	var j jsonEvidence
	if err := dec.Decode(&j); err != nil {
		return nil, fmt.Errorf("evidence JSON: %w", err)
	}
	if dec.More() || dec.Decode(&json.RawMessage{}) != io.EOF { // also a stray "}" or "]"
		return nil, errors.New("evidence JSON: trailing data after the object")
	}
	if attestation.Platform(j.Type) != typ {
		return nil, fmt.Errorf("evidence JSON has type %q, want %q", j.Type, typ)
	}
	ev := &attestation.Evidence{Type: typ, Report: j.Report, Certificates: j.Certificates, TDQuote: j.TDQuote}
	if j.TPMQuote != nil {
		ev.TPMQuote = &attestation.TPMQuote{Message: j.TPMQuote.Message, Signature: j.TPMQuote.Signature, PCRs: j.TPMQuote.PCRs}
	}
	return ev, nil
}

// Encode writes ev in the project's JSON form. Evidence holding a
// Confidential Containers document is written as that document.
func Encode(ev *attestation.Evidence) ([]byte, error) {
	if ev == nil || !known(ev.Type) {
		return nil, errors.New("evidencefile: evidence without a known type")
	}
	if len(ev.Document) > 0 {
		return bytes.Clone(ev.Document), nil
	}
	j := jsonEvidence{Type: string(ev.Type), Report: ev.Report, Certificates: ev.Certificates, TDQuote: ev.TDQuote}
	if q := ev.TPMQuote; q != nil {
		j.TPMQuote = &jsonQuote{Message: q.Message, Signature: q.Signature, PCRs: q.PCRs}
	}
	out, err := json.MarshalIndent(j, "", "  ")
	if err != nil {
		return nil, fmt.Errorf("evidencefile: %w", err)
	}
	return append(out, '\n'), nil
}

func known(p attestation.Platform) bool {
	for _, k := range attestation.Platforms() {
		if p == k {
			return true
		}
	}
	return false
}
