package collateral

import (
	"bytes"
	"crypto/x509"
	"encoding/json"
	"encoding/pem"
	"errors"
	"fmt"
	"strings"
	"time"
)

// kind is what a canonical URL is expected to hold; it decides how the
// document's next-update time is read and which bodies are malformed.
type kind int

const (
	kindUnknown    kind = iota // sniffed: CRL, JSON, certificate(s), else default TTL
	kindCRL                    // DER or PEM X.509 CRL: NextUpdate
	kindTCBInfo                // Intel {"tcbInfo":{"nextUpdate":...}}
	kindQEIdentity             // Intel {"enclaveIdentity":{"nextUpdate":...}}
	kindCert                   // one DER or PEM certificate (VCEK, VLEK): NotAfter
	kindCertChain              // PEM certificates (KDS cert_chain): earliest NotAfter
)

func (k kind) String() string {
	switch k {
	case kindCRL:
		return "CRL"
	case kindTCBInfo:
		return "TCB info"
	case kindQEIdentity:
		return "enclave identity"
	case kindCert:
		return "certificate"
	case kindCertChain:
		return "certificate chain"
	}
	return "document"
}

// maxChainCerts bounds the PEM blocks parsed from a certificate chain.
const maxChainCerts = 8

// kindOf classifies a canonical URL by host and path.
func kindOf(host, path string) kind {
	last := path[strings.LastIndexByte(path, '/')+1:]
	switch host {
	case HostAMDKDS:
		switch last {
		case "crl":
			return kindCRL
		case "cert_chain":
			return kindCertChain
		}
		// /vcek/v1/<line>/<hwid> and /vlek/v1/<line>/cert
		if strings.Count(path, "/") == 4 {
			return kindCert
		}
	case HostIntelPCS:
		switch {
		case last == "pckcrl":
			return kindCRL
		case last == "tcb":
			return kindTCBInfo
		case last == "identity":
			return kindQEIdentity
		}
	case HostIntelCerts:
		if strings.HasSuffix(last, ".der") || strings.HasSuffix(last, ".crl") {
			return kindCRL
		}
	}
	return kindUnknown
}

// nextUpdate reads the time after which the document should be refetched.
// A zero time with a nil error means the document states none (the store
// then applies its default TTL). An error means body is not a well-formed
// document of kind k and must not be cached.
func nextUpdate(k kind, body []byte) (time.Time, error) {
	switch k {
	case kindCRL:
		return crlNextUpdate(body)
	case kindTCBInfo:
		return jsonNextUpdate(body, "tcbInfo")
	case kindQEIdentity:
		return jsonNextUpdate(body, "enclaveIdentity")
	case kindCert, kindCertChain:
		return certsNotAfter(body, k == kindCert)
	}
	for _, k := range []kind{kindCRL, kindTCBInfo, kindQEIdentity, kindCertChain, kindCert} {
		if t, err := nextUpdate(k, body); err == nil {
			return t, nil
		}
	}
	return time.Time{}, nil
}

func crlNextUpdate(body []byte) (time.Time, error) {
	der := body
	if b, rest := pem.Decode(body); b != nil {
		if b.Type != "X509 CRL" || len(bytes.TrimSpace(rest)) != 0 {
			return time.Time{}, fmt.Errorf("collateral: CRL: PEM block %q or trailing data", b.Type)
		}
		der = b.Bytes
	}
	crl, err := x509.ParseRevocationList(der)
	if err != nil {
		return time.Time{}, fmt.Errorf("collateral: CRL: %w", err)
	}
	return crl.NextUpdate.UTC(), nil
}

// jsonNextUpdate reads body[field].nextUpdate, an RFC 3339 time, as Intel
// PCS writes it in TCB info and enclave identity responses.
func jsonNextUpdate(body []byte, field string) (time.Time, error) {
	var outer map[string]json.RawMessage
	if err := json.Unmarshal(body, &outer); err != nil {
		return time.Time{}, fmt.Errorf("collateral: %s: %w", field, err)
	}
	inner, ok := outer[field]
	if !ok {
		return time.Time{}, fmt.Errorf("collateral: no %q object", field)
	}
	var v struct {
		NextUpdate *string `json:"nextUpdate"`
	}
	if err := json.Unmarshal(inner, &v); err != nil {
		return time.Time{}, fmt.Errorf("collateral: %s: %w", field, err)
	}
	if v.NextUpdate == nil {
		return time.Time{}, fmt.Errorf("collateral: %s has no nextUpdate", field)
	}
	t, err := time.Parse(time.RFC3339, *v.NextUpdate)
	if err != nil {
		return time.Time{}, fmt.Errorf("collateral: %s.nextUpdate: %w", field, err)
	}
	return t.UTC(), nil
}

// certsNotAfter returns the earliest NotAfter of the certificates in body:
// one DER or PEM certificate when single, else one to maxChainCerts PEM
// certificates. A certificate never changes for a given URL, so it can be
// cached for as long as it is valid.
func certsNotAfter(body []byte, single bool) (time.Time, error) {
	if single && len(body) > 0 && body[0] == 0x30 { // DER SEQUENCE
		c, err := x509.ParseCertificate(body)
		if err != nil {
			return time.Time{}, fmt.Errorf("collateral: certificate: %w", err)
		}
		return c.NotAfter.UTC(), nil
	}
	limit := maxChainCerts
	if single {
		limit = 1
	}
	var earliest time.Time
	n := 0
	for rest := body; len(bytes.TrimSpace(rest)) > 0; {
		var b *pem.Block
		b, rest = pem.Decode(rest)
		if b == nil {
			return time.Time{}, errors.New("collateral: certificates: trailing data after PEM")
		}
		if b.Type != "CERTIFICATE" {
			return time.Time{}, fmt.Errorf("collateral: certificates: PEM block %q", b.Type)
		}
		if n++; n > limit {
			return time.Time{}, fmt.Errorf("collateral: certificates: more than %d", limit)
		}
		c, err := x509.ParseCertificate(b.Bytes)
		if err != nil {
			return time.Time{}, fmt.Errorf("collateral: certificate %d: %w", n, err)
		}
		if earliest.IsZero() || c.NotAfter.Before(earliest) {
			earliest = c.NotAfter
		}
	}
	if n == 0 {
		return time.Time{}, errors.New("collateral: no certificate")
	}
	return earliest.UTC(), nil
}
