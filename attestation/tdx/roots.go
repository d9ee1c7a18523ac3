package tdx

import (
	"crypto/x509"
	"encoding/pem"
	"errors"
	"fmt"
	"strings"
)

// TestRootMarker is the subject serialNumber attribute of every certificate
// the simulator (package simulate) mints. Intel's certificates carry no
// such attribute and go-tdx-guest checks only common names and
// issuer/subject equality, so the marker does not disturb verification,
// while anyone (including `openssl x509 -subject`) can tell a simulated
// chain from a genuine one. Options.TestRootsPEM refuses certificates
// without it, so a genuine root can never be configured as a "test" root,
// nor a test root slip in as a genuine one.
const TestRootMarker = "attested-kms TDX simulator - TEST ONLY"

// IsTestCertificate reports whether cert was minted by the simulator.
func IsTestCertificate(cert *x509.Certificate) bool {
	return cert != nil && cert.Subject.SerialNumber == TestRootMarker
}

// intelRootPEM is Intel's SGX Root CA, the root of every PCK certificate
// chain and of the TCB signing chain (SHA-256 fingerprint
// 44:A0:19:6B:2B:99:F8:89:B8:E1:49:E9:5B:80:7A:35:0E:74:24:96:43:99:E8:85:A7:CB:B8:CC:FA:B6:74:D3,
// valid until 2049-12-31). go-tdx-guest embeds the same certificate but
// does not export it; having our own copy lets us always pass the roots to
// go-tdx-guest explicitly.
const intelRootPEM = `-----BEGIN CERTIFICATE-----
MIICjzCCAjSgAwIBAgIUImUM1lqdNInzg7SVUr9QGzknBqwwCgYIKoZIzj0EAwIw
aDEaMBgGA1UEAwwRSW50ZWwgU0dYIFJvb3QgQ0ExGjAYBgNVBAoMEUludGVsIENv
cnBvcmF0aW9uMRQwEgYDVQQHDAtTYW50YSBDbGFyYTELMAkGA1UECAwCQ0ExCzAJ
BgNVBAYTAlVTMB4XDTE4MDUyMTEwNDUxMFoXDTQ5MTIzMTIzNTk1OVowaDEaMBgG
A1UEAwwRSW50ZWwgU0dYIFJvb3QgQ0ExGjAYBgNVBAoMEUludGVsIENvcnBvcmF0
aW9uMRQwEgYDVQQHDAtTYW50YSBDbGFyYTELMAkGA1UECAwCQ0ExCzAJBgNVBAYT
AlVTMFkwEwYHKoZIzj0CAQYIKoZIzj0DAQcDQgAEC6nEwMDIYZOj/iPWsCzaEKi7
1OiOSLRFhWGjbnBVJfVnkY4u3IjkDYYL0MxO4mqsyYjlBalTVYxFP2sJBK5zlKOB
uzCBuDAfBgNVHSMEGDAWgBQiZQzWWp00ifODtJVSv1AbOScGrDBSBgNVHR8ESzBJ
MEegRaBDhkFodHRwczovL2NlcnRpZmljYXRlcy50cnVzdGVkc2VydmljZXMuaW50
ZWwuY29tL0ludGVsU0dYUm9vdENBLmRlcjAdBgNVHQ4EFgQUImUM1lqdNInzg7SV
Ur9QGzknBqwwDgYDVR0PAQH/BAQDAgEGMBIGA1UdEwEB/wQIMAYBAf8CAQEwCgYI
KoZIzj0EAwIDSQAwRgIhAOW/5QkR+S9CiSDcNoowLuPRLsWGf/Yi7GSX94BgwTwg
AiEA4J0lrHoMs+Xo5o/sX6O9QWxHRAvZUGOdRQ7cvqRXaqI=
-----END CERTIFICATE-----
`

// rootCommonName is the common name go-tdx-guest requires of the root of a
// PCK chain and of the collateral signing chains.
const rootCommonName = "Intel SGX Root CA"

// GenuineRoot returns a freshly parsed Intel SGX Root CA certificate.
func GenuineRoot() *x509.Certificate {
	block, _ := pem.Decode([]byte(intelRootPEM))
	cert, err := x509.ParseCertificate(block.Bytes)
	if err != nil {
		// The constant is fixed and tested; this cannot happen.
		panic("tdx: embedded Intel SGX Root CA: " + err.Error())
	}
	return cert
}

// ParseTestRoots parses simulator roots (simulate.Intel.RootsPEM): one or
// more self-signed root certificates, each carrying TestRootMarker.
func ParseTestRoots(pemBytes []byte) ([]*x509.Certificate, error) {
	var roots []*x509.Certificate
	rest := pemBytes
	for {
		var block *pem.Block
		block, rest = pem.Decode(rest)
		if block == nil {
			break
		}
		if block.Type != "CERTIFICATE" {
			return nil, fmt.Errorf("tdx: test roots: unexpected PEM block %q", block.Type)
		}
		cert, err := x509.ParseCertificate(block.Bytes)
		if err != nil {
			return nil, fmt.Errorf("tdx: test roots: %w", err)
		}
		if !IsTestCertificate(cert) {
			return nil, fmt.Errorf("tdx: test roots: certificate %q lacks the simulator marker; the genuine Intel root is built in and must not be configured as a test root", cert.Subject.CommonName)
		}
		if cert.Subject.CommonName != rootCommonName || !cert.IsCA {
			return nil, fmt.Errorf("tdx: test roots: %q is not a root CA certificate", cert.Subject.CommonName)
		}
		if err := cert.CheckSignatureFrom(cert); err != nil {
			return nil, fmt.Errorf("tdx: test roots: %q is not self-signed: %w", cert.Subject.CommonName, err)
		}
		roots = append(roots, cert)
	}
	if len(strings.TrimSpace(string(rest))) != 0 {
		return nil, errors.New("tdx: test roots: trailing data after the last PEM block")
	}
	if len(roots) == 0 {
		return nil, errors.New("tdx: test roots: no certificate")
	}
	return roots, nil
}
