package sevsnp

import (
	"bytes"
	"crypto/x509"
	"encoding/pem"
	"errors"
	"fmt"
	"strings"

	"github.com/google/go-sev-guest/abi"
	"github.com/google/go-sev-guest/verify/trust"
)

// TestRootMarker is the subject serialNumber attribute of every certificate
// the simulator mints (ARK, ASK and VCEK). AMD's certificates carry no such
// attribute, and go-sev-guest checks only country, locality, state,
// organization, unit and common name, so the marker does not disturb
// verification while letting anyone (including `openssl x509 -subject`)
// tell a simulated chain from a genuine one. Options.TestRootsPEM refuses
// certificates without it, so a genuine root can never be configured as a
// "test" root, nor a test root slip in as a genuine one.
const TestRootMarker = "attested-kms SEV-SNP simulator - TEST ONLY"

// genuineBundles are AMD's KDS cert_chain bundles (ASK or ASVK, then ARK)
// as embedded in go-sev-guest verify/trust. The byte slices are not
// modified; they are only parsed.
var genuineBundles = []struct {
	line   string
	signer abi.ReportSigner
	pem    []byte
}{
	{ProductMilan, abi.VcekReportSigner, trust.AskArkMilanVcekBytes},
	{ProductMilan, abi.VlekReportSigner, trust.AskArkMilanVlekBytes},
	{ProductGenoa, abi.VcekReportSigner, trust.AskArkGenoaVcekBytes},
	{ProductGenoa, abi.VlekReportSigner, trust.AskArkGenoaVlekBytes},
	{ProductTurin, abi.VcekReportSigner, trust.AskArkTurinVcekBytes},
	{ProductTurin, abi.VlekReportSigner, trust.AskArkTurinVlekBytes},
}

// GenuineRoots returns AMD's ARK/ASK (VCEK) and ARK/ASVK (VLEK) roots for
// Milan, Genoa and Turin, freshly parsed from the bundles embedded in
// go-sev-guest. Each call returns new values, so a verifier's CRL state is
// never shared with go-sev-guest's package-level DefaultRootCerts.
func GenuineRoots() (map[string][]*trust.AMDRootCerts, error) {
	roots := make(map[string][]*trust.AMDRootCerts)
	for _, b := range genuineBundles {
		r := trust.AMDRootCertsProduct(b.line)
		// The Turin VLEK bundle ends in an extra CRLF, which
		// kds.ParseProductCertChain rejects as trailing data.
		if err := r.FromKDSCertBytes(bytes.TrimSpace(b.pem)); err != nil {
			return nil, fmt.Errorf("sevsnp: embedded %s %v roots: %w", b.line, b.signer, err)
		}
		pc := r.ProductCerts
		// trust.ProductCerts.Decode only logs an unparsable ARK; insist on it.
		if pc.Ark == nil {
			return nil, fmt.Errorf("sevsnp: embedded %s %v roots: no ARK", b.line, b.signer)
		}
		if (b.signer == abi.VcekReportSigner && pc.Ask == nil) || (b.signer == abi.VlekReportSigner && pc.Asvk == nil) {
			return nil, fmt.Errorf("sevsnp: embedded %s %v roots: no intermediate", b.line, b.signer)
		}
		roots[b.line] = append(roots[b.line], r)
	}
	return roots, nil
}

// ParseTestRoots parses simulator roots (simulate.Signer.RootsPEM): one or
// more ARKs with their ASKs or ASVKs, in any order. Every certificate must
// carry TestRootMarker.
func ParseTestRoots(pemBytes []byte) (map[string][]*trust.AMDRootCerts, error) {
	var arks, icas []*x509.Certificate
	rest := pemBytes
	for {
		var block *pem.Block
		block, rest = pem.Decode(rest)
		if block == nil {
			break
		}
		if block.Type != "CERTIFICATE" {
			return nil, fmt.Errorf("sevsnp: test roots: unexpected PEM block %q", block.Type)
		}
		cert, err := x509.ParseCertificate(block.Bytes)
		if err != nil {
			return nil, fmt.Errorf("sevsnp: test roots: %w", err)
		}
		if cert.Subject.SerialNumber != TestRootMarker {
			return nil, fmt.Errorf("sevsnp: test roots: certificate %q lacks the simulator marker; genuine AMD roots are built in and must not be configured as test roots", cert.Subject.CommonName)
		}
		if strings.HasPrefix(cert.Subject.CommonName, "ARK-") {
			arks = append(arks, cert)
		} else {
			icas = append(icas, cert)
		}
	}
	if len(strings.TrimSpace(string(rest))) != 0 {
		return nil, errors.New("sevsnp: test roots: trailing data after the last PEM block")
	}
	if len(arks) == 0 || len(icas) == 0 {
		return nil, fmt.Errorf("sevsnp: test roots: want ARK and ASK certificates, got %d ARK and %d others", len(arks), len(icas))
	}
	for _, ark := range arks {
		if err := ark.CheckSignatureFrom(ark); err != nil {
			return nil, fmt.Errorf("sevsnp: test roots: %s is not self-signed: %w", ark.Subject.CommonName, err)
		}
	}
	roots := make(map[string][]*trust.AMDRootCerts)
	for _, ica := range icas {
		line, vlek := strings.CutPrefix(ica.Subject.CommonName, "SEV-VLEK-")
		if !vlek {
			var ok bool
			if line, ok = strings.CutPrefix(ica.Subject.CommonName, "SEV-"); !ok {
				return nil, fmt.Errorf("sevsnp: test roots: unexpected common name %q", ica.Subject.CommonName)
			}
		}
		if line != ProductMilan && line != ProductGenoa && line != ProductTurin {
			return nil, fmt.Errorf("sevsnp: test roots: unknown product line %q", line)
		}
		var parent *x509.Certificate
		for _, ark := range arks {
			if ark.Subject.CommonName == "ARK-"+line && ica.CheckSignatureFrom(ark) == nil {
				parent = ark
				break
			}
		}
		if parent == nil {
			return nil, fmt.Errorf("sevsnp: test roots: no ARK-%s signed %q", line, ica.Subject.CommonName)
		}
		r := trust.AMDRootCertsProduct(line)
		r.ProductCerts = &trust.ProductCerts{Ark: parent}
		if vlek {
			r.ProductCerts.Asvk = ica
		} else {
			r.ProductCerts.Ask = ica
		}
		roots[line] = append(roots[line], r)
	}
	return roots, nil
}

// IsTestCertificate reports whether cert was minted by the simulator.
func IsTestCertificate(cert *x509.Certificate) bool {
	return cert != nil && cert.Subject.SerialNumber == TestRootMarker
}
