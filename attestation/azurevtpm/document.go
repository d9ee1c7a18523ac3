package azurevtpm

import (
	"bytes"
	"encoding/asn1"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"encoding/pem"
	"errors"
	"fmt"
	"io"
	"slices"
	"strings"

	"github.com/attested-kms/attested-kms/attestation"
)

// The Confidential Containers attesters (guest-components az-snp-vtpm and
// az-tdx-vtpm; verified by trustee) send JSON documents:
//
//	{"version": 1|2,
//	 "tpm_quote": {"signature": hex, "message": hex, "pcrs": [hex, ...]},
//	 "hcl_report": base64url,
//	 "vcek": base64url}          (az-snp-vtpm: the VCEK, DER)
//	 "td_quote": base64url}      (az-tdx-vtpm: the TD quote)
//
// signature is the raw RSASSA-PKCS1-v1_5 SHA-256 signature (not a
// TPMT_SIGNATURE), message the TPMS_ATTEST, pcrs all 24 SHA-256 PCRs.
// base64url is serde_with's URL-safe alphabet, padded on output and
// accepted with or without padding. Version 2 has the same layout as
// version 1; it promises that the HCL report's user-data holds the report
// data (version 1 reports may predate it, and then fail verification
// here). The version-less legacy layout (bincode byte arrays) is not
// accepted.

// MaxDocumentSize bounds a JSON evidence document: about 3.5 KiB of HCL
// report, 2 KiB of VCEK or up to 16 KiB of TD quote, in base64, plus the
// quote in hex.
const MaxDocumentSize = 256 << 10

// MaxTDQuoteSize bounds a TD quote (about 5 KiB with its PCK chain).
const MaxTDQuoteSize = 64 << 10

var documentFields = []string{"version", "tpm_quote", "hcl_report", "vcek", "td_quote"}

type documentQuote struct {
	Signature hexBytes   `json:"signature"`
	Message   hexBytes   `json:"message"`
	PCRs      []hexBytes `json:"pcrs"`
}

type document struct {
	Version   int            `json:"version"`
	TPMQuote  *documentQuote `json:"tpm_quote"`
	HCLReport b64URL         `json:"hcl_report"`
	VCEK      b64URL         `json:"vcek,omitempty"`
	TDQuote   b64URL         `json:"td_quote,omitempty"`
}

// ParseDocument converts a Confidential Containers JSON evidence document
// into Evidence: az-snp-vtpm documents become azure-sev-snp-vtpm evidence
// with the VCEK in Certificates, az-tdx-vtpm documents azure-tdx-vtpm
// evidence with TDQuote; the raw quote signature becomes a TPMT_SIGNATURE.
func ParseDocument(b []byte) (*attestation.Evidence, error) {
	ev, _, err := parseDocument(b)
	return ev, err
}

func parseDocument(b []byte) (*attestation.Evidence, int, error) {
	malformed := func(format string, args ...any) error {
		return attestation.Errorf(attestation.ReasonMalformed, fmt.Errorf("azurevtpm: evidence document: "+format, args...))
	}
	if len(b) > MaxDocumentSize {
		return nil, 0, malformed("%d bytes, limit %d", len(b), MaxDocumentSize)
	}
	// First pass: which members are there, so that unknown ones and the
	// legacy layout get errors that say what is wrong.
	var members map[string]json.RawMessage
	if err := decodeStrict(b, &members); err != nil {
		return nil, 0, malformed("%v", err)
	}
	for name := range members {
		if !slices.Contains(documentFields, name) {
			return nil, 0, malformed("unknown field %q", name)
		}
	}
	rawVersion, ok := members["version"]
	if !ok {
		return nil, 0, attestation.Errorf(attestation.ReasonUnsupported,
			errors.New("azurevtpm: evidence document has no version (the legacy version 0 layout is not supported)"))
	}
	var version int
	if err := json.Unmarshal(rawVersion, &version); err != nil || (version != 1 && version != 2) {
		return nil, 0, attestation.Errorf(attestation.ReasonUnsupported,
			fmt.Errorf("azurevtpm: evidence document version %s is not supported (want 1 or 2)", truncate(rawVersion)))
	}
	_, hasVCEK := members["vcek"]
	_, hasTDQuote := members["td_quote"]
	var typ attestation.Platform
	switch {
	case hasVCEK && !hasTDQuote:
		typ = attestation.PlatformAzureSNPVTPM
	case hasTDQuote && !hasVCEK:
		typ = attestation.PlatformAzureTDXVTPM
	default:
		return nil, 0, malformed("want exactly one of vcek (az-snp-vtpm) and td_quote (az-tdx-vtpm)")
	}
	for _, name := range []string{"tpm_quote", "hcl_report"} {
		if _, ok := members[name]; !ok {
			return nil, 0, malformed("missing %s", name)
		}
	}

	var doc document
	if err := decodeStrict(b, &doc); err != nil {
		return nil, 0, malformed("%v", err)
	}
	q := doc.TPMQuote
	if q == nil {
		return nil, 0, malformed("tpm_quote is null")
	}
	if len(q.PCRs) > NumPCRs {
		return nil, 0, malformed("%d PCR values, limit %d", len(q.PCRs), NumPCRs)
	}
	if len(q.Signature) > 512 {
		return nil, 0, malformed("TPM quote signature is %d bytes, limit 512", len(q.Signature))
	}
	ev := &attestation.Evidence{
		Type:   typ,
		Report: doc.HCLReport,
		TPMQuote: &attestation.TPMQuote{
			Message:   q.Message,
			Signature: MarshalRSASSASignature(q.Signature),
		},
	}
	for _, p := range q.PCRs {
		ev.TPMQuote.PCRs = append(ev.TPMQuote.PCRs, p)
	}
	if typ == attestation.PlatformAzureSNPVTPM {
		ev.Certificates = doc.VCEK
	} else {
		ev.TDQuote = doc.TDQuote
	}
	return ev, version, nil
}

// MarshalDocument encodes azure-* evidence as a Confidential Containers
// JSON document of the given version (1 or 2). The quote signature must
// be RSASSA with SHA-256, the only kind the document can carry; an SNP
// VCEK may be DER or PEM and is written as DER.
func MarshalDocument(ev *attestation.Evidence, version int) ([]byte, error) {
	if version != 1 && version != 2 {
		return nil, fmt.Errorf("azurevtpm: document version %d, want 1 or 2", version)
	}
	if ev == nil || ev.TPMQuote == nil {
		return nil, errors.New("azurevtpm: evidence without a TPM quote")
	}
	sig, err := parseSignature(ev.TPMQuote.Signature)
	if err != nil {
		return nil, err
	}
	if sig.pss {
		return nil, errors.New("azurevtpm: an RSAPSS quote signature cannot be written to a document")
	}
	doc := document{
		Version:   version,
		TPMQuote:  &documentQuote{Signature: sig.sig, Message: ev.TPMQuote.Message, PCRs: []hexBytes{}},
		HCLReport: ev.Report,
	}
	for _, p := range ev.TPMQuote.PCRs {
		doc.TPMQuote.PCRs = append(doc.TPMQuote.PCRs, p)
	}
	switch ev.Type {
	case attestation.PlatformAzureSNPVTPM:
		der, err := firstCertificateDER(ev.Certificates)
		if err != nil {
			return nil, err
		}
		doc.VCEK = der
	case attestation.PlatformAzureTDXVTPM:
		if len(ev.TDQuote) == 0 {
			return nil, errors.New("azurevtpm: azure-tdx-vtpm evidence without a TD quote")
		}
		doc.TDQuote = ev.TDQuote
	default:
		return nil, fmt.Errorf("azurevtpm: %q evidence has no document form", ev.Type)
	}
	return json.Marshal(doc)
}

// firstCertificateDER returns the DER of the first certificate in b: PEM
// (first CERTIFICATE block) or DER, possibly followed by more
// certificates (Azure THIM returns the VCEK then its chain). The
// certificate itself is not parsed here.
func firstCertificateDER(b []byte) ([]byte, error) {
	if len(b) == 0 {
		return nil, errors.New("azurevtpm: no VCEK certificate")
	}
	if bytes.HasPrefix(bytes.TrimSpace(b), []byte("-----BEGIN")) {
		block, _ := pem.Decode(b)
		if block == nil || block.Type != "CERTIFICATE" {
			return nil, errors.New("azurevtpm: VCEK PEM does not start with a CERTIFICATE block")
		}
		return block.Bytes, nil
	}
	var raw asn1.RawValue
	if _, err := asn1.Unmarshal(b, &raw); err != nil {
		return nil, fmt.Errorf("azurevtpm: VCEK is neither PEM nor DER: %w", err)
	}
	return raw.FullBytes, nil
}

// decodeStrict decodes one JSON value, rejecting unknown fields and
// trailing data.
func decodeStrict(b []byte, v any) error {
	dec := json.NewDecoder(bytes.NewReader(b))
	dec.DisallowUnknownFields()
	if err := dec.Decode(v); err != nil {
		return err
	}
	if dec.More() || dec.Decode(&json.RawMessage{}) != io.EOF { // also a stray "}" or "]"
		return errors.New("trailing data after the JSON value")
	}
	return nil
}

// truncate shortens a JSON fragment for an error message.
func truncate(b []byte) string {
	s := string(b)
	if len(s) > 16 {
		s = s[:16] + "..."
	}
	return s
}

// hexBytes is serde_with's Hex: a string of hex digits, either case.
type hexBytes []byte

func (h hexBytes) MarshalJSON() ([]byte, error) { return json.Marshal(hex.EncodeToString(h)) }

func (h *hexBytes) UnmarshalJSON(b []byte) error {
	var s string
	if err := json.Unmarshal(b, &s); err != nil {
		return err
	}
	v, err := hex.DecodeString(s)
	if err != nil {
		return fmt.Errorf("not hex: %w", err)
	}
	*h = v
	return nil
}

// b64URL is serde_with's Base64<UrlSafe>: padded on output, padding
// optional on input.
type b64URL []byte

func (b b64URL) MarshalJSON() ([]byte, error) {
	return json.Marshal(base64.URLEncoding.EncodeToString(b))
}

func (b *b64URL) UnmarshalJSON(data []byte) error {
	var s string
	if err := json.Unmarshal(data, &s); err != nil {
		return err
	}
	if strings.ContainsAny(s, "\r\n") {
		return errors.New("line breaks in base64url")
	}
	v, err := decodeB64URL(s)
	if err != nil {
		return fmt.Errorf("not base64url: %w", err)
	}
	*b = v
	return nil
}
