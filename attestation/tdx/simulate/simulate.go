// Package simulate is a test Intel: it mints an SGX root CA, a PCK
// platform CA, PCK certificates with the SGX extensions, a TCB signing
// certificate, signed TDX TCB info and QE identity, CRLs, and TD quotes
// (version 4, and 5 with TDX 1.0 or 1.5 bodies) in the genuine formats, so
// that package tdx's verifier (and go-tdx-guest underneath) accepts them
// once the simulator's root is trusted.
//
// Every certificate carries tdx.TestRootMarker in its subject, and
// tdx.Verifier trusts the simulator only when the configuration passes
// Intel.RootsPEM as Options.TestRootsPEM.
//
// Output is deterministic: keys come from the reader given to New (or the
// persisted file given to Load), serial numbers and validity periods are
// fixed, and every signature is RFC 6979 deterministic ECDSA, so the same
// inputs always give byte-identical certificates, collateral and quotes.
package simulate

import (
	"bytes"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/sha256"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"errors"
	"fmt"
	"io"
	"math/big"
	"sync"
	"time"

	"github.com/attested-kms/attested-kms/attestation/tdx"
	"github.com/google/go-tdx-guest/pcs"
)

// Validity of the simulated certificates: fixed, so regenerated fixtures
// are identical, and long, so development setups keep working.
var (
	CertsNotBefore = time.Date(2025, 1, 1, 0, 0, 0, 0, time.UTC)
	CertsNotAfter  = time.Date(2049, 12, 31, 23, 59, 59, 0, time.UTC)
	// PCK certificates are valid for 7 years, as Intel's.
	PCKNotAfter = time.Date(2032, 1, 1, 0, 0, 0, 0, time.UTC)
)

// RootCRLURL is the CRL distribution point of the simulated root. The
// .invalid top-level domain never resolves, so a misconfigured KMS cannot
// reach out for it; tests serve it through a trust.HTTPSGetter.
const RootCRLURL = "https://tdx-simulator.attested-kms.invalid/IntelSGXRootCA.der"

const pemKeyType = "ATTESTED-KMS TDX SIMULATOR KEY"

// key roles, in the order New derives them from its reader.
var roles = []string{"root", "pck-ca", "tcb-signing", "pck", "attestation"}

// Intel is a simulated Intel: certificate authorities, the TCB signing
// key, a platform's PCK key and its quoting enclave's attestation key.
// It is safe for concurrent use.
type Intel struct {
	keys map[string]*signer

	root, pckCA, tcbSigning *x509.Certificate

	mu   sync.Mutex
	pcks map[[sha256.Size]byte]*x509.Certificate
}

// New creates a simulated Intel with keys derived from rand (use
// crypto/rand.Reader, or a fixed stream for reproducible keys).
func New(rand io.Reader) (*Intel, error) {
	keys := make(map[string]*signer)
	for _, role := range roles {
		for {
			var b [32]byte
			if _, err := io.ReadFull(rand, b[:]); err != nil {
				return nil, fmt.Errorf("simulate: %s key: %w", role, err)
			}
			priv, err := ecdsa.ParseRawPrivateKey(elliptic.P256(), b[:])
			if err != nil {
				continue // zero or not below the order: draw again
			}
			if keys[role], err = newSigner(priv); err != nil {
				return nil, err
			}
			break
		}
	}
	return fromKeys(keys)
}

// MarshalPEM returns the simulator's private keys. Certificates are not
// stored: they are recreated, byte for byte, from the keys. The file holds
// private keys: write it with mode 0600. They are test keys and protect
// nothing real, but a file that lets anyone mint "attestations" should
// still not be world-readable.
func (i *Intel) MarshalPEM() ([]byte, error) {
	var b bytes.Buffer
	for _, role := range roles {
		der, err := x509.MarshalPKCS8PrivateKey(i.keys[role].priv)
		if err != nil {
			return nil, fmt.Errorf("simulate: marshal %s key: %w", role, err)
		}
		if err := pem.Encode(&b, &pem.Block{Type: pemKeyType, Headers: map[string]string{"Role": role}, Bytes: der}); err != nil {
			return nil, fmt.Errorf("simulate: encode: %w", err)
		}
	}
	return b.Bytes(), nil
}

// Load restores an Intel from MarshalPEM output.
func Load(pemBytes []byte) (*Intel, error) {
	keys := make(map[string]*signer)
	rest := pemBytes
	for {
		var block *pem.Block
		block, rest = pem.Decode(rest)
		if block == nil {
			break
		}
		if block.Type != pemKeyType {
			return nil, fmt.Errorf("simulate: unexpected PEM block %q", block.Type)
		}
		role := block.Headers["Role"]
		if _, dup := keys[role]; dup {
			return nil, fmt.Errorf("simulate: two %q keys", role)
		}
		k, err := x509.ParsePKCS8PrivateKey(block.Bytes)
		if err != nil {
			return nil, fmt.Errorf("simulate: %s key: %w", role, err)
		}
		priv, ok := k.(*ecdsa.PrivateKey)
		if !ok || priv.Curve != elliptic.P256() {
			return nil, fmt.Errorf("simulate: %s key is not ECDSA P-256", role)
		}
		if keys[role], err = newSigner(priv); err != nil {
			return nil, err
		}
	}
	if len(bytes.TrimSpace(rest)) != 0 {
		return nil, errors.New("simulate: trailing data after the last PEM block")
	}
	for _, role := range roles {
		if keys[role] == nil {
			return nil, fmt.Errorf("simulate: no %s key", role)
		}
	}
	if len(keys) != len(roles) {
		return nil, errors.New("simulate: unknown key roles")
	}
	return fromKeys(keys)
}

func fromKeys(keys map[string]*signer) (*Intel, error) {
	i := &Intel{keys: keys}
	var err error
	rootTmpl := &x509.Certificate{
		SerialNumber:          big.NewInt(0x5100),
		Subject:               intelName("Intel SGX Root CA"),
		NotBefore:             CertsNotBefore,
		NotAfter:              CertsNotAfter,
		KeyUsage:              x509.KeyUsageCertSign | x509.KeyUsageCRLSign,
		BasicConstraintsValid: true,
		IsCA:                  true,
		MaxPathLen:            1,
		CRLDistributionPoints: []string{RootCRLURL},
	}
	if i.root, err = i.createCert(rootTmpl, rootTmpl, "root", "root"); err != nil {
		return nil, err
	}
	caTmpl := &x509.Certificate{
		SerialNumber:          big.NewInt(0x5101),
		Subject:               intelName("Intel SGX PCK Platform CA"),
		NotBefore:             CertsNotBefore,
		NotAfter:              CertsNotAfter,
		KeyUsage:              x509.KeyUsageCertSign | x509.KeyUsageCRLSign,
		BasicConstraintsValid: true,
		IsCA:                  true,
		MaxPathLenZero:        true,
		CRLDistributionPoints: []string{RootCRLURL},
	}
	if i.pckCA, err = i.createCert(caTmpl, i.root, "pck-ca", "root"); err != nil {
		return nil, err
	}
	tcbTmpl := &x509.Certificate{
		SerialNumber:          big.NewInt(0x5102),
		Subject:               intelName("Intel SGX TCB Signing"),
		NotBefore:             CertsNotBefore,
		NotAfter:              CertsNotAfter,
		KeyUsage:              x509.KeyUsageDigitalSignature | x509.KeyUsageContentCommitment,
		BasicConstraintsValid: true,
		SubjectKeyId:          keyID(&keys["tcb-signing"].priv.PublicKey),
		CRLDistributionPoints: []string{RootCRLURL},
	}
	if i.tcbSigning, err = i.createCert(tcbTmpl, i.root, "tcb-signing", "root"); err != nil {
		return nil, err
	}
	return i, nil
}

// intelName is the subject Intel uses, with the simulator marker added.
func intelName(cn string) pkix.Name {
	return pkix.Name{
		CommonName:   cn,
		Organization: []string{"Intel Corporation"},
		Locality:     []string{"Santa Clara"},
		Province:     []string{"CA"},
		Country:      []string{"US"},
		SerialNumber: tdx.TestRootMarker,
	}
}

func keyID(pub *ecdsa.PublicKey) []byte {
	b, _ := pub.Bytes()
	h := sha256.Sum256(b)
	return h[:20]
}

func (i *Intel) createCert(tmpl, parent *x509.Certificate, subjectRole, issuerRole string) (*x509.Certificate, error) {
	tmpl.SignatureAlgorithm = x509.ECDSAWithSHA256
	if tmpl.SubjectKeyId == nil {
		tmpl.SubjectKeyId = keyID(&i.keys[subjectRole].priv.PublicKey)
	}
	der, err := x509.CreateCertificate(nil, tmpl, parent, &i.keys[subjectRole].priv.PublicKey, i.keys[issuerRole])
	if err != nil {
		return nil, fmt.Errorf("simulate: %s certificate: %w", subjectRole, err)
	}
	return x509.ParseCertificate(der)
}

// Root returns the simulated Intel SGX Root CA certificate.
func (i *Intel) Root() *x509.Certificate { return i.root }

// PCKCA returns the simulated PCK platform CA certificate.
func (i *Intel) PCKCA() *x509.Certificate { return i.pckCA }

// TCBSigning returns the simulated TCB signing certificate.
func (i *Intel) TCBSigning() *x509.Certificate { return i.tcbSigning }

// RootsPEM returns the root certificate, for the KMS configuration's test
// roots (tdx.Options.TestRootsPEM).
func (i *Intel) RootsPEM() []byte {
	return pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: i.root.Raw})
}

// PCK describes the platform a PCK certificate is for. Zero fields take
// the defaults below.
type PCK struct {
	FMSPC  string // 12 hex digits; "" means DefaultFMSPC
	CPUSVN []byte // 16 SGX TCB component SVNs; nil means DefaultCPUSVN
	PCESVN uint16 // 0 means DefaultPCESVN
	PPID   []byte // 16 bytes; nil means a fixed PPID
}

// Platform defaults: they match the UpToDate level of DefaultTCBLevels.
const (
	DefaultFMSPC         = "5e1a70000000"
	DefaultPCESVN uint16 = 13
)

// DefaultCPUSVN returns the default SGX TCB component SVNs.
func DefaultCPUSVN() []byte { return []byte{4, 4, 2, 2, 4, 1, 0, 5, 0, 0, 0, 0, 0, 0, 0, 0} }

func (p PCK) withDefaults() (PCK, error) {
	if p.FMSPC == "" {
		p.FMSPC = DefaultFMSPC
	}
	if p.CPUSVN == nil {
		p.CPUSVN = DefaultCPUSVN()
	}
	if p.PCESVN == 0 {
		p.PCESVN = DefaultPCESVN
	}
	if p.PPID == nil {
		p.PPID = bytes.Repeat([]byte{0x5e}, 16)
	}
	if len(p.FMSPC) != 12 || len(p.CPUSVN) != 16 || len(p.PPID) != 16 {
		return p, errors.New("simulate: PCK wants a 6-byte FMSPC, 16 CPUSVN components and a 16-byte PPID")
	}
	return p, nil
}

// PCKCertificate returns the PCK certificate for platform p, minting it on
// first use. Its serial number is derived from p, so that a CRL can name
// it: see PCKSerial.
func (i *Intel) PCKCertificate(p PCK) (*x509.Certificate, error) {
	p, err := p.withDefaults()
	if err != nil {
		return nil, err
	}
	id := pckID(p)
	i.mu.Lock()
	defer i.mu.Unlock()
	if c := i.pcks[id]; c != nil {
		return c, nil
	}
	ext, err := sgxExtension(p)
	if err != nil {
		return nil, err
	}
	tmpl := &x509.Certificate{
		SerialNumber:          new(big.Int).SetBytes(id[:16]),
		Subject:               intelName("Intel SGX PCK Certificate"),
		NotBefore:             CertsNotBefore,
		NotAfter:              PCKNotAfter,
		KeyUsage:              x509.KeyUsageDigitalSignature | x509.KeyUsageContentCommitment,
		BasicConstraintsValid: true,
		CRLDistributionPoints: []string{pcs.PckCrlURL("platform")},
		// With the authority and subject key IDs, key usage, basic
		// constraints and CRL distribution point this makes the six
		// extensions go-tdx-guest requires of a PCK certificate.
		ExtraExtensions: []pkix.Extension{ext},
	}
	c, err := i.createCert(tmpl, i.pckCA, "pck", "pck-ca")
	if err != nil {
		return nil, err
	}
	if i.pcks == nil {
		i.pcks = make(map[[sha256.Size]byte]*x509.Certificate)
	}
	i.pcks[id] = c
	return c, nil
}

// PCKSerial returns the serial number of p's PCK certificate.
func PCKSerial(p PCK) (*big.Int, error) {
	p, err := p.withDefaults()
	if err != nil {
		return nil, err
	}
	id := pckID(p)
	return new(big.Int).SetBytes(id[:16]), nil
}

func pckID(p PCK) [sha256.Size]byte {
	h := sha256.New()
	fmt.Fprintf(h, "pck:%s:%x:%d:%x", p.FMSPC, p.CPUSVN, p.PCESVN, p.PPID)
	var id [sha256.Size]byte
	h.Sum(id[:0])
	id[0] &= 0x7f // positive serial
	id[0] |= 0x40 // and 16 bytes long
	return id
}

// pckChainPEM is what a quote carries: PCK, PCK CA, root.
func (i *Intel) pckChainPEM(pck *x509.Certificate) []byte {
	var b bytes.Buffer
	for _, c := range []*x509.Certificate{pck, i.pckCA, i.root} {
		_ = pem.Encode(&b, &pem.Block{Type: "CERTIFICATE", Bytes: c.Raw})
	}
	return b.Bytes()
}
