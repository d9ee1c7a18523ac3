// Package simulate produces SEV-SNP attestation reports in the genuine
// format, signed by a TEST AMD chain (ARK -> ASK -> VCEK), for development
// and tests on machines without SEV-SNP.
//
// The chain looks like AMD's (subjects, KDS extensions, RSA-PSS and ECDSA
// P-384) so that go-sev-guest's verifier accepts it once its ARK and ASK are
// trusted, but every certificate carries sevsnp.TestRootMarker in its
// subject, and sevsnp.Verifier trusts the chain only when the
// configuration passes Signer.RootsPEM as Options.TestRootsPEM.
//
// The package does not use go-sev-guest's testing package: that one
// registers command-line flags and uses a fixed, published key set.
package simulate

import (
	"bytes"
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/rsa"
	"crypto/sha512"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/asn1"
	"encoding/hex"
	"encoding/pem"
	"errors"
	"fmt"
	"io"
	"math/big"
	"sync"
	"time"

	"github.com/attested-kms/attested-kms/attestation"
	"github.com/attested-kms/attested-kms/attestation/sevsnp"
	"github.com/google/go-sev-guest/abi"
	"github.com/google/go-sev-guest/kds"
	spb "github.com/google/go-sev-guest/proto/sevsnp"
)

// DefaultPolicy is the guest policy used when ReportFields.Policy is zero:
// ABI 0.0, SMT allowed (bit 16) and the must-be-one bit 17. Debug is off.
const DefaultPolicy uint64 = 0x30000

// products maps a product line to the CPUID_1_EAX signature of the model
// simulated (stepping B1 for Milan and Genoa, B0 for Turin).
var products = map[string]uint32{
	sevsnp.ProductMilan: 0x00a00f11,
	sevsnp.ProductGenoa: 0x00a10f11,
	sevsnp.ProductTurin: 0x00b00f20,
}

const (
	pemSimulatorType = "ATTESTED-KMS SEV-SNP SIMULATOR"
	arkYears         = 25 // as AMD's and go-sev-guest's fake ARK/ASK
	vcekYears        = 7  // as AMD's VCEKs
)

// ReportFields are the guest-chosen and launch-time values of a report.
// The TCB is used for the current, reported, committed and launch TCB.
type ReportFields struct {
	ReportData      [64]byte
	Measurement     [48]byte
	HostData        [32]byte
	FamilyID        [16]byte
	ImageID         [16]byte
	IDKeyDigest     [48]byte
	AuthorKeyDigest [48]byte
	Policy          uint64 // 0 means DefaultPolicy; set sevsnp.PolicyDebug for a debuggable guest
	VMPL            uint32
	GuestSVN        uint32
	TCB             attestation.TCBParts // FMC only on Turin
}

// Signer is a simulated AMD secure processor with its certificate chain.
// It is safe for concurrent use.
type Signer struct {
	line    string
	cpuid   uint32
	ark     *x509.Certificate
	ask     *x509.Certificate
	arkKey  *rsa.PrivateKey
	askKey  *rsa.PrivateKey
	vcekKey *ecdsa.PrivateKey
	chipID  [abi.ChipIDSize]byte

	mu    sync.Mutex
	vceks map[uint64]*x509.Certificate // by reported TCB: a VCEK is per TCB
}

// NewSigner creates a new test chain for productLine ("Milan", "Genoa" or
// "Turin"). rand supplies the chip ID and serial numbers; since Go 1.26 key
// generation always uses the system's secure source regardless. Generating
// the two RSA-4096 keys takes a second or two; persist the result with
// MarshalPEM.
func NewSigner(rand io.Reader, productLine string) (*Signer, error) {
	cpuid, ok := products[productLine]
	if !ok {
		return nil, fmt.Errorf("simulate: unknown product line %q", productLine)
	}
	s := &Signer{line: productLine, cpuid: cpuid}
	var err error
	if s.arkKey, err = rsa.GenerateKey(rand, 4096); err != nil {
		return nil, fmt.Errorf("simulate: ARK key: %w", err)
	}
	if s.askKey, err = rsa.GenerateKey(rand, 4096); err != nil {
		return nil, fmt.Errorf("simulate: ASK key: %w", err)
	}
	if s.vcekKey, err = ecdsa.GenerateKey(elliptic.P384(), rand); err != nil {
		return nil, fmt.Errorf("simulate: VCEK key: %w", err)
	}
	if _, err := io.ReadFull(rand, s.chipID[:]); err != nil {
		return nil, fmt.Errorf("simulate: chip ID: %w", err)
	}
	// Backdate by a day, as KDS does, so that clocks a little behind still accept the chain.
	notBefore := time.Now().UTC().Truncate(time.Second).Add(-24 * time.Hour)
	notAfter := notBefore.AddDate(arkYears, 0, 0)

	arkTmpl := &x509.Certificate{
		SerialNumber:          mustSerial(rand),
		Subject:               amdName("ARK-" + productLine),
		NotBefore:             notBefore,
		NotAfter:              notAfter,
		SignatureAlgorithm:    x509.SHA384WithRSAPSS,
		KeyUsage:              x509.KeyUsageCertSign | x509.KeyUsageCRLSign,
		BasicConstraintsValid: true,
		IsCA:                  true,
		CRLDistributionPoints: []string{s.CRLURL()},
	}
	if s.ark, err = createCert(rand, arkTmpl, arkTmpl, &s.arkKey.PublicKey, s.arkKey); err != nil {
		return nil, fmt.Errorf("simulate: ARK: %w", err)
	}
	askTmpl := &x509.Certificate{
		SerialNumber:          mustSerial(rand),
		Subject:               amdName("SEV-" + productLine),
		NotBefore:             notBefore,
		NotAfter:              notAfter,
		SignatureAlgorithm:    x509.SHA384WithRSAPSS,
		KeyUsage:              x509.KeyUsageCertSign,
		BasicConstraintsValid: true,
		IsCA:                  true,
		CRLDistributionPoints: []string{s.CRLURL()},
	}
	if s.ask, err = createCert(rand, askTmpl, s.ark, &s.askKey.PublicKey, s.arkKey); err != nil {
		return nil, fmt.Errorf("simulate: ASK: %w", err)
	}
	return s, nil
}

// mustSerial returns a random positive 127-bit serial number, or 1 if rand fails
// (serials of test certificates need not be unpredictable).
func mustSerial(rand io.Reader) *big.Int {
	var b [16]byte
	if _, err := io.ReadFull(rand, b[:]); err != nil {
		return big.NewInt(1)
	}
	b[0] &= 0x7f
	b[0] |= 0x40
	return new(big.Int).SetBytes(b[:])
}

// amdName is the subject AMD uses, with the simulator marker added.
func amdName(cn string) pkix.Name {
	return pkix.Name{
		Country:            []string{"US"},
		Locality:           []string{"Santa Clara"},
		Province:           []string{"CA"},
		Organization:       []string{"Advanced Micro Devices"},
		OrganizationalUnit: []string{"Engineering"},
		CommonName:         cn,
		SerialNumber:       sevsnp.TestRootMarker,
	}
}

func createCert(rand io.Reader, tmpl, parent *x509.Certificate, pub crypto.PublicKey, priv crypto.Signer) (*x509.Certificate, error) {
	der, err := x509.CreateCertificate(rand, tmpl, parent, pub, priv)
	if err != nil {
		return nil, err
	}
	return x509.ParseCertificate(der)
}

// CRLURL is the CRL distribution point of the simulated ARK and ASK. The
// .invalid top-level domain never resolves, so a misconfigured KMS cannot
// reach out for it; tests serve it through a fake trust.HTTPSGetter.
func (s *Signer) CRLURL() string {
	return "https://sevsnp-simulator.attested-kms.invalid/vcek/v1/" + s.line + "/crl"
}

// ProductLine returns the simulated product line.
func (s *Signer) ProductLine() string { return s.line }

// ChipID returns the simulated CHIP_ID.
func (s *Signer) ChipID() []byte { return bytes.Clone(s.chipID[:]) }

// ARK returns the simulated AMD root key certificate.
func (s *Signer) ARK() *x509.Certificate { return s.ark }

// ASK returns the simulated AMD signing key certificate.
func (s *Signer) ASK() *x509.Certificate { return s.ask }

// RootsPEM returns the ASK and ARK certificates in KDS cert_chain order,
// for the KMS configuration's test roots (sevsnp.Options.TestRootsPEM).
func (s *Signer) RootsPEM() []byte {
	var b bytes.Buffer
	_ = pem.Encode(&b, &pem.Block{Type: "CERTIFICATE", Bytes: s.ask.Raw})
	_ = pem.Encode(&b, &pem.Block{Type: "CERTIFICATE", Bytes: s.ark.Raw})
	return b.Bytes()
}

// MarshalPEM returns the chain and its private keys: the simulator block
// (product line and chip ID), the ASK and ARK certificates, and the ARK,
// ASK and VCEK keys as PKCS#8. It holds private keys: write it with mode
// 0600. The keys are test keys and protect nothing real, but a file that
// lets anyone mint "attestations" still should not be world-readable.
func (s *Signer) MarshalPEM() ([]byte, error) {
	var b bytes.Buffer
	meta := &pem.Block{Type: pemSimulatorType, Headers: map[string]string{
		"Product-Line": s.line,
		"Chip-Id":      hex.EncodeToString(s.chipID[:]),
	}}
	if err := pem.Encode(&b, meta); err != nil {
		return nil, fmt.Errorf("simulate: encode: %w", err)
	}
	b.Write(s.RootsPEM())
	for _, k := range []any{s.arkKey, s.askKey, s.vcekKey} {
		der, err := x509.MarshalPKCS8PrivateKey(k)
		if err != nil {
			return nil, fmt.Errorf("simulate: marshal key: %w", err)
		}
		if err := pem.Encode(&b, &pem.Block{Type: "PRIVATE KEY", Bytes: der}); err != nil {
			return nil, fmt.Errorf("simulate: encode: %w", err)
		}
	}
	return b.Bytes(), nil
}

// LoadSigner restores a Signer from MarshalPEM output. Keys are matched to
// certificates by their public keys, and the chain is checked.
func LoadSigner(pemBytes []byte) (*Signer, error) {
	s := &Signer{}
	var certs []*x509.Certificate
	var rsaKeys []*rsa.PrivateKey
	var haveMeta bool
	for rest := pemBytes; ; {
		var block *pem.Block
		block, rest = pem.Decode(rest)
		if block == nil {
			break
		}
		switch block.Type {
		case pemSimulatorType:
			if haveMeta {
				return nil, errors.New("simulate: two simulator blocks")
			}
			haveMeta = true
			s.line = block.Headers["Product-Line"]
			chip, err := hex.DecodeString(block.Headers["Chip-Id"])
			if err != nil || len(chip) != abi.ChipIDSize {
				return nil, errors.New("simulate: bad Chip-Id header")
			}
			copy(s.chipID[:], chip)
		case "CERTIFICATE":
			c, err := x509.ParseCertificate(block.Bytes)
			if err != nil {
				return nil, fmt.Errorf("simulate: certificate: %w", err)
			}
			certs = append(certs, c)
		case "PRIVATE KEY":
			k, err := x509.ParsePKCS8PrivateKey(block.Bytes)
			if err != nil {
				return nil, fmt.Errorf("simulate: private key: %w", err)
			}
			switch k := k.(type) {
			case *rsa.PrivateKey:
				rsaKeys = append(rsaKeys, k)
			case *ecdsa.PrivateKey:
				if s.vcekKey != nil || k.Curve != elliptic.P384() {
					return nil, errors.New("simulate: want exactly one P-384 VCEK key")
				}
				s.vcekKey = k
			default:
				return nil, fmt.Errorf("simulate: unexpected key type %T", k)
			}
		default:
			return nil, fmt.Errorf("simulate: unexpected PEM block %q", block.Type)
		}
	}
	if !haveMeta {
		return nil, errors.New("simulate: not a simulator file (no " + pemSimulatorType + " block)")
	}
	var ok bool
	if s.cpuid, ok = products[s.line]; !ok {
		return nil, fmt.Errorf("simulate: unknown product line %q", s.line)
	}
	if s.vcekKey == nil {
		return nil, errors.New("simulate: no VCEK key")
	}
	for _, c := range certs {
		switch c.Subject.CommonName {
		case "ARK-" + s.line:
			s.ark = c
		case "SEV-" + s.line:
			s.ask = c
		default:
			return nil, fmt.Errorf("simulate: unexpected certificate %q", c.Subject.CommonName)
		}
	}
	if s.ark == nil || s.ask == nil || len(certs) != 2 {
		return nil, errors.New("simulate: want one ARK and one ASK certificate")
	}
	for _, k := range rsaKeys {
		switch {
		case k.PublicKey.Equal(s.ark.PublicKey):
			s.arkKey = k
		case k.PublicKey.Equal(s.ask.PublicKey):
			s.askKey = k
		}
	}
	if s.arkKey == nil || s.askKey == nil || len(rsaKeys) != 2 {
		return nil, errors.New("simulate: want the ARK and ASK private keys")
	}
	if err := s.ask.CheckSignatureFrom(s.ark); err != nil {
		return nil, fmt.Errorf("simulate: ASK not signed by ARK: %w", err)
	}
	if !sevsnp.IsTestCertificate(s.ark) || !sevsnp.IsTestCertificate(s.ask) {
		return nil, errors.New("simulate: certificates lack the simulator marker")
	}
	return s, nil
}

// VCEK returns the VCEK certificate for the given TCB, minting it on first
// use. Real VCEKs are derived per TCB; the simulator reuses one key and
// only the certificate's TCB extensions change.
func (s *Signer) VCEK(tcb attestation.TCBParts) (*x509.Certificate, error) {
	word, err := sevsnp.ComposeTCB(s.line, tcb)
	if err != nil {
		return nil, err
	}
	return s.vcek(word, tcb)
}

func (s *Signer) vcek(word uint64, tcb attestation.TCBParts) (*x509.Certificate, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if c, ok := s.vceks[word]; ok {
		return c, nil
	}
	exts, err := kdsExtensions(kds.ProductName(abi.SevProductFromCpuid1Eax(s.cpuid)), tcb, s.chipID[:])
	if err != nil {
		return nil, err
	}
	tmpl := &x509.Certificate{
		SerialNumber:       mustSerial(rand.Reader),
		Subject:            amdName("SEV-VCEK"),
		NotBefore:          s.ask.NotBefore,
		NotAfter:           s.ask.NotBefore.AddDate(vcekYears, 0, 0),
		SignatureAlgorithm: x509.SHA384WithRSAPSS,
		// No key usage or basic constraints: go-sev-guest rejects any
		// extension on a VCEK other than KDS's and the authority key ID.
		ExtraExtensions: exts,
	}
	c, err := createCert(rand.Reader, tmpl, s.ask, &s.vcekKey.PublicKey, s.askKey)
	if err != nil {
		return nil, fmt.Errorf("simulate: VCEK: %w", err)
	}
	if s.vceks == nil {
		s.vceks = make(map[uint64]*x509.Certificate)
	}
	s.vceks[word] = c
	return c, nil
}

// kdsExtensions builds the VCEK extensions of AMD's KDS specification.
// go-sev-guest v0.15.0 has no FMC extension, so a Turin VCEK omits it.
func kdsExtensions(productName string, tcb attestation.TCBParts, hwid []byte) ([]pkix.Extension, error) {
	var exts []pkix.Extension
	add := func(id asn1.ObjectIdentifier, v any, params string) error {
		b, err := asn1.MarshalWithParams(v, params)
		if err != nil {
			return fmt.Errorf("simulate: VCEK extension %v: %w", id, err)
		}
		exts = append(exts, pkix.Extension{Id: id, Value: b})
		return nil
	}
	for _, e := range []struct {
		id     asn1.ObjectIdentifier
		v      any
		params string
	}{
		{kds.OidStructVersion, 1, ""},
		{kds.OidProductName1, productName, "ia5"},
		{kds.OidBlSpl, int(tcb.Bootloader), ""},
		{kds.OidTeeSpl, int(tcb.TEE), ""},
		{kds.OidSnpSpl, int(tcb.SNP), ""},
		{kds.OidSpl4, 0, ""},
		{kds.OidSpl5, 0, ""},
		{kds.OidSpl6, 0, ""},
		{kds.OidSpl7, 0, ""},
		{kds.OidUcodeSpl, int(tcb.Microcode), ""},
		{kds.OidHwid, hwid, ""},
	} {
		if err := add(e.id, e.v, e.params); err != nil {
			return nil, err
		}
	}
	return exts, nil
}

// Sign returns a version 3 attestation report with the given fields,
// signed by the VCEK for f.TCB, and the certificate table (ARK, ASK, VCEK)
// a host would return with it.
func (s *Signer) Sign(f ReportFields) (report, certTable []byte, err error) {
	policy := f.Policy
	if policy == 0 {
		policy = DefaultPolicy
	}
	if _, err := abi.ParseSnpPolicy(policy); err != nil {
		return nil, nil, fmt.Errorf("simulate: policy %#x: %w", policy, err)
	}
	if f.VMPL > 3 {
		return nil, nil, fmt.Errorf("simulate: VMPL %d, want 0-3", f.VMPL)
	}
	tcb, err := sevsnp.ComposeTCB(s.line, f.TCB)
	if err != nil {
		return nil, nil, err
	}
	vcek, err := s.vcek(tcb, f.TCB)
	if err != nil {
		return nil, nil, err
	}
	reportID := make([]byte, abi.ReportIDSize)
	if _, err := io.ReadFull(rand.Reader, reportID); err != nil {
		return nil, nil, fmt.Errorf("simulate: report ID: %w", err)
	}
	rep := &spb.Report{
		Version:         abi.ReportVersion3,
		GuestSvn:        f.GuestSVN,
		Policy:          policy,
		FamilyId:        f.FamilyID[:],
		ImageId:         f.ImageID[:],
		Vmpl:            f.VMPL,
		SignatureAlgo:   abi.SignEcdsaP384Sha384,
		CurrentTcb:      tcb,
		PlatformInfo:    1, // SMT enabled
		SignerInfo:      abi.ComposeSignerInfo(abi.SignerInfo{SigningKey: abi.VcekReportSigner}),
		ReportData:      f.ReportData[:],
		Measurement:     f.Measurement[:],
		HostData:        f.HostData[:],
		IdKeyDigest:     f.IDKeyDigest[:],
		AuthorKeyDigest: f.AuthorKeyDigest[:],
		ReportId:        reportID,
		ReportIdMa:      bytes.Repeat([]byte{0xff}, abi.ReportIDMASize), // no migration agent
		ReportedTcb:     tcb,
		Cpuid1EaxFms:    abi.MaskedCpuid1EaxFromSevProduct(abi.SevProductFromCpuid1Eax(s.cpuid)),
		ChipId:          s.chipID[:],
		CommittedTcb:    tcb,
		CurrentMajor:    1,
		CurrentMinor:    55,
		CommittedMajor:  1,
		CommittedMinor:  55,
		LaunchTcb:       tcb,
		Signature:       make([]byte, abi.SignatureSize),
	}
	raw, err := abi.ReportToAbiBytes(rep)
	if err != nil {
		return nil, nil, fmt.Errorf("simulate: encode report: %w", err)
	}
	digest := sha512.Sum384(abi.SignedComponent(raw))
	r, sig, err := ecdsa.Sign(rand.Reader, s.vcekKey, digest[:])
	if err != nil {
		return nil, nil, fmt.Errorf("simulate: sign report: %w", err)
	}
	if err := abi.SetSignature(r, sig, raw); err != nil {
		return nil, nil, fmt.Errorf("simulate: set signature: %w", err)
	}
	return raw, CertTable(s.ark.Raw, s.ask.Raw, vcek.Raw), nil
}

// GUIDs of the certificate table (GHCB specification, SNP_GET_EXT_REPORT).
var (
	guidARK  = mustGUID(abi.ArkGUID)
	guidASK  = mustGUID(abi.AskGUID)
	guidVCEK = mustGUID(abi.VcekGUID)
)

func mustGUID(s string) [abi.GUIDSize]byte {
	var g [abi.GUIDSize]byte
	b, err := hex.DecodeString(string(bytes.ReplaceAll([]byte(s), []byte("-"), nil)))
	if err != nil || len(b) != len(g) {
		panic("simulate: bad GUID constant " + s)
	}
	copy(g[:], b)
	return g
}

// CertTable encodes DER certificates as an extended-report certificate
// table; a nil certificate is left out. Tests use it to assemble tables
// around recorded certificates.
func CertTable(ark, ask, vcek []byte) []byte {
	var t abi.CertTable
	for _, e := range []struct {
		guid [abi.GUIDSize]byte
		der  []byte
	}{{guidARK, ark}, {guidASK, ask}, {guidVCEK, vcek}} {
		if e.der == nil {
			continue
		}
		var entry abi.CertTableEntry
		copy(entry.GUID[:], e.guid[:])
		entry.RawCert = e.der
		t.Entries = append(t.Entries, entry)
	}
	return t.Marshal()
}

// CRL returns a CRL for the simulated ARK, valid from now for a week,
// revoking the ASK if revokeASK, and the URL it is expected at.
func (s *Signer) CRL(now time.Time, revokeASK bool) (url string, der []byte, err error) {
	tmpl := &x509.RevocationList{
		Number:             big.NewInt(now.Unix()),
		ThisUpdate:         now.Add(-time.Minute),
		NextUpdate:         now.Add(7 * 24 * time.Hour),
		SignatureAlgorithm: x509.SHA384WithRSAPSS,
	}
	if revokeASK {
		tmpl.RevokedCertificateEntries = []x509.RevocationListEntry{{SerialNumber: s.ask.SerialNumber, RevocationTime: now.Add(-time.Minute)}}
	}
	der, err = x509.CreateRevocationList(rand.Reader, tmpl, s.ark, s.arkKey)
	if err != nil {
		return "", nil, fmt.Errorf("simulate: CRL: %w", err)
	}
	return s.CRLURL(), der, nil
}
