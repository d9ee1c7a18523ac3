package simulate

import (
	"bytes"
	"crypto/sha256"
	"encoding/binary"
	"errors"
	"fmt"
)

// QuoteFields are the contents of a simulated quote. Zero values take
// defaults that verify as UpToDate against Collateral with default
// options.
type QuoteFields struct {
	Version  int // 4 or 5; 0 means 4
	BodyType int // version 5 only: 2 (TDX 1.0) or 3 (TDX 1.5); 0 means 2

	// TEETCBSVN is the TDX module and microcode SVNs (16 bytes); nil
	// means DefaultTEETCBSVN.
	TEETCBSVN      []byte
	MRSeam         [48]byte
	MRSignerSeam   [48]byte // Intel's modules: zero, as the default TCB info says
	SeamAttributes [8]byte
	TDAttributes   [8]byte
	Debug          bool // sets TUD.DEBUG (bit 0 of TDAttributes)
	XFAM           [8]byte
	MRTD           [48]byte
	MRConfigID     [48]byte
	MROwner        [48]byte
	MROwnerConfig  [48]byte
	RTMRs          [4][48]byte
	ReportData     [64]byte
	TEETCBSVN2     [16]byte // TDX 1.5 bodies only
	MRServiceTD    [48]byte // TDX 1.5 bodies only

	PCK        PCK    // platform of the PCK certificate
	QESVN      uint16 // QE ISVSVN; 0 means DefaultQESVN
	QEAuthData []byte // nil means 32 bytes 00..1f, as Intel's QE sends
}

// DefaultQESVN is the QE ISVSVN of simulated quotes: the UpToDate level
// of the simulated QE identity.
const DefaultQESVN uint16 = 8

// DefaultTEETCBSVN returns the default TEE_TCB_SVN: module SVN 5, major
// version 0 (TDX 1.0 rules), late microcode 3.
func DefaultTEETCBSVN() []byte { return []byte{5, 0, 3, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0} }

// QE identity values of the simulated quoting enclave.
var (
	qeMRSigner   = bytes.Repeat([]byte{0xdc}, 32)
	qeMREnclave  = bytes.Repeat([]byte{0xe1}, 32)
	qeVendorID   = []byte{0x93, 0x9a, 0x72, 0x33, 0xf7, 0x9c, 0x4c, 0xa9, 0x94, 0x0a, 0x0d, 0xb3, 0x95, 0x7f, 0x06, 0x07}
	qeAttributes = []byte{0x15, 0, 0, 0, 0, 0, 0, 0, 0xe7, 0, 0, 0, 0, 0, 0, 0}
)

const qeProdID = 2

// Quote builds and signs a TD quote.
func (i *Intel) Quote(f QuoteFields) ([]byte, error) {
	version := f.Version
	if version == 0 {
		version = 4
	}
	bodyType := f.BodyType
	switch {
	case version == 4 && bodyType == 0:
	case version == 5 && bodyType == 0:
		bodyType = 2
	case version == 5 && (bodyType == 2 || bodyType == 3):
	default:
		return nil, fmt.Errorf("simulate: quote version %d body type %d not supported", version, bodyType)
	}
	svn := f.TEETCBSVN
	if svn == nil {
		svn = DefaultTEETCBSVN()
	}
	if len(svn) != 16 {
		return nil, errors.New("simulate: TEETCBSVN must be 16 bytes")
	}
	pck, err := i.PCKCertificate(f.PCK)
	if err != nil {
		return nil, err
	}
	p, _ := f.PCK.withDefaults()

	var q bytes.Buffer
	le16 := func(v int) { _ = binary.Write(&q, binary.LittleEndian, uint16(v)) }
	le32 := func(v int) { _ = binary.Write(&q, binary.LittleEndian, uint32(v)) }

	// Header.
	le16(version)
	le16(2)    // attestation key type: ECDSA-256-with-P-256
	le32(0x81) // TEE type: TDX
	q.Write([]byte{0, 0, 0, 0})
	q.Write(qeVendorID)
	q.Write(make([]byte, 20)) // user data

	// Body.
	if version == 5 {
		le16(bodyType)
		if bodyType == 3 {
			le32(648)
		} else {
			le32(584)
		}
	}
	attrs := f.TDAttributes
	if f.Debug {
		attrs[0] |= 1
	}
	q.Write(svn)
	q.Write(f.MRSeam[:])
	q.Write(f.MRSignerSeam[:])
	q.Write(f.SeamAttributes[:])
	q.Write(attrs[:])
	q.Write(f.XFAM[:])
	q.Write(f.MRTD[:])
	q.Write(f.MRConfigID[:])
	q.Write(f.MROwner[:])
	q.Write(f.MROwnerConfig[:])
	for _, r := range f.RTMRs {
		q.Write(r[:])
	}
	q.Write(f.ReportData[:])
	if bodyType == 3 {
		q.Write(f.TEETCBSVN2[:])
		q.Write(f.MRServiceTD[:])
	}
	signed := bytes.Clone(q.Bytes())

	// Signature data.
	attKey, err := i.keys["attestation"].priv.PublicKey.Bytes() // 0x04 || X || Y
	if err != nil {
		return nil, err
	}
	attKey = attKey[1:]
	sig, err := i.keys["attestation"].signRaw(signed)
	if err != nil {
		return nil, err
	}
	auth := f.QEAuthData
	if auth == nil {
		auth = make([]byte, 32)
		for n := range auth {
			auth[n] = byte(n)
		}
	}
	if len(auth) > 0xffff {
		return nil, errors.New("simulate: QE authentication data too long")
	}
	qeSVN := f.QESVN
	if qeSVN == 0 {
		qeSVN = DefaultQESVN
	}
	report := qeReport(p.CPUSVN, qeSVN, attKey, auth)
	qeSig, err := i.keys["pck"].signRaw(report)
	if err != nil {
		return nil, err
	}
	chain := i.pckChainPEM(pck)

	var cd bytes.Buffer // QE report certification data
	cd.Write(report)
	cd.Write(qeSig)
	_ = binary.Write(&cd, binary.LittleEndian, uint16(len(auth)))
	cd.Write(auth)
	_ = binary.Write(&cd, binary.LittleEndian, uint16(5)) // PEM PCK chain
	_ = binary.Write(&cd, binary.LittleEndian, uint32(len(chain)))
	cd.Write(chain)

	sigData := len(sig) + len(attKey) + 6 + cd.Len()
	le32(sigData)
	q.Write(sig)
	q.Write(attKey)
	le16(6) // QE report certification data
	le32(cd.Len())
	q.Write(cd.Bytes())
	return q.Bytes(), nil
}

// qeReport builds the QE's SGX enclave report (384 bytes). Its report
// data binds the attestation key and the QE authentication data.
func qeReport(cpuSVN []byte, isvSVN uint16, attKey, auth []byte) []byte {
	r := make([]byte, 384)
	copy(r[0:16], cpuSVN)
	// MISCSELECT (16..20) and reserved bytes stay zero.
	copy(r[48:64], qeAttributes)
	copy(r[64:96], qeMREnclave)
	copy(r[128:160], qeMRSigner)
	binary.LittleEndian.PutUint16(r[256:], qeProdID)
	binary.LittleEndian.PutUint16(r[258:], isvSVN)
	h := sha256.New()
	h.Write(attKey)
	h.Write(auth)
	h.Sum(r[320:320])
	return r
}
