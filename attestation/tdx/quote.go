package tdx

import (
	"bytes"
	"encoding/binary"
	"encoding/hex"
	"errors"
	"fmt"

	"github.com/attested-kms/attested-kms/attestation"
	"github.com/google/go-tdx-guest/abi"
	pb "github.com/google/go-tdx-guest/proto/tdx"
)

// MaxQuoteSize bounds the quotes this package parses. Genuine quotes are
// about 5 KiB (most of it the PEM PCK chain); the limit leaves room for
// large QE authentication data without letting a caller make us hash or
// copy megabytes.
const MaxQuoteSize = 64 << 10

// Layout of the Intel TDX DCAP quote (Intel TDX DCAP Quoting Library API,
// appendix "Quote format"); all integers little-endian.
const (
	headerSize          = 48
	bodySizeV4          = 584 // TD quote body, TDX 1.0
	bodySizeV5TDX15     = 648 // TD quote body, TDX 1.5
	bodyDescriptorSize  = 6   // v5: u16 body type, u32 body size
	bodyTypeTDX10       = 2
	bodyTypeTDX15       = 3
	sigSize             = 64 // ECDSA P-256 r||s
	attKeySize          = 64 // P-256 point X||Y
	certHeaderSize      = 6  // u16 type, u32 size
	qeReportSize        = 384
	qeAuthLenSize       = 2
	certTypeQEReport    = 6 // QE report certification data
	certTypePCKChain    = 5 // PEM PCK certificate chain
	attestationKeyECDSA = 2 // ECDSA-256-with-P-256
	teeTypeTDX          = 0x81
)

// quote is a TD quote split into the regions verification needs, as
// slices of the caller's bytes (never modified), plus go-tdx-guest's
// parse of the same bytes for field access and for its verifier.
type quote struct {
	version  uint32
	bodyType int   // 2 (TDX 1.0) or 3 (TDX 1.5); v4 quotes are TDX 1.0
	proto    any   // *pb.QuoteV4 or *pb.QuoteV5
	body     *body // the fields common to all body types

	signed   []byte // header and body (v5: with its descriptor): what the attestation key signed
	sig      []byte // quote signature, r||s
	attKey   []byte // attestation public key, X||Y
	qeReport []byte // QE report (SGX enclave report), signed by the PCK key
	qeSig    []byte // QE report signature, r||s
	qeAuth   []byte // QE authentication data
	pckChain []byte // PEM PCK leaf, PCK platform/processor CA, root
}

// body holds the TD quote body fields of any quote version.
type body struct {
	teeTCBSVN, mrSeam, mrSignerSeam, seamAttributes []byte
	tdAttributes, xfam, mrTD, mrConfigID            []byte
	mrOwner, mrOwnerConfig, reportData              []byte
	rtmrs                                           [][]byte
}

// parseQuote checks the layout of raw with explicit bounds (go-tdx-guest's
// abi parser slices without them and can panic on hostile input), then
// lets abi parse the same bytes. Bytes after the signed data are ignored
// as go-tdx-guest does: nothing in them is used.
func parseQuote(raw []byte) (*quote, error) {
	if len(raw) > MaxQuoteSize {
		return nil, attestation.Errorf(attestation.ReasonMalformed, fmt.Errorf("tdx: quote is %d bytes, limit %d", len(raw), MaxQuoteSize))
	}
	if len(raw) < headerSize {
		return nil, malformed("quote shorter than its header")
	}
	q := &quote{version: uint32(binary.LittleEndian.Uint16(raw[0:2]))}
	if q.version != 4 && q.version != 5 {
		return nil, attestation.Errorf(attestation.ReasonUnsupported, fmt.Errorf("tdx: quote version %d (want 4 or 5)", q.version))
	}
	if kt := binary.LittleEndian.Uint16(raw[2:4]); kt != attestationKeyECDSA {
		return nil, attestation.Errorf(attestation.ReasonUnsupported, fmt.Errorf("tdx: attestation key type %d (want 2, ECDSA-256-with-P-256)", kt))
	}
	if tee := binary.LittleEndian.Uint32(raw[4:8]); tee != teeTypeTDX {
		return nil, attestation.Errorf(attestation.ReasonUnsupported, fmt.Errorf("tdx: TEE type %#x is not TDX", tee))
	}
	off := headerSize
	q.bodyType = bodyTypeTDX10
	bodyLen := bodySizeV4
	if q.version == 5 {
		if len(raw) < off+bodyDescriptorSize {
			return nil, malformed("quote shorter than its body descriptor")
		}
		q.bodyType = int(binary.LittleEndian.Uint16(raw[off:]))
		size := binary.LittleEndian.Uint32(raw[off+2:])
		switch q.bodyType {
		case bodyTypeTDX10:
			bodyLen = bodySizeV4
		case bodyTypeTDX15:
			bodyLen = bodySizeV5TDX15
		default:
			return nil, attestation.Errorf(attestation.ReasonUnsupported, fmt.Errorf("tdx: v5 quote body type %d (want 2 or 3)", q.bodyType))
		}
		if size != uint32(bodyLen) {
			return nil, malformed(fmt.Sprintf("v5 body of type %d declares %d bytes, want %d", q.bodyType, size, bodyLen))
		}
		off += bodyDescriptorSize
	}
	off += bodyLen
	if len(raw) < off+4 {
		return nil, malformed("quote shorter than its body")
	}
	q.signed = raw[:off]
	sdLen := binary.LittleEndian.Uint32(raw[off:])
	off += 4
	if uint64(sdLen) > uint64(len(raw)-off) {
		return nil, malformed("signature data length exceeds the quote")
	}
	sd := raw[off : off+int(sdLen)]
	if len(sd) < sigSize+attKeySize+certHeaderSize {
		return nil, malformed("signature data too short")
	}
	q.sig = sd[:sigSize]
	q.attKey = sd[sigSize : sigSize+attKeySize]
	cd := sd[sigSize+attKeySize:]
	if t := binary.LittleEndian.Uint16(cd); t != certTypeQEReport {
		return nil, attestation.Errorf(attestation.ReasonUnsupported, fmt.Errorf("tdx: certification data type %d (want 6, QE report)", t))
	}
	if n := binary.LittleEndian.Uint32(cd[2:]); uint64(n) != uint64(len(cd)-certHeaderSize) {
		return nil, malformed("certification data size does not match the signature data")
	}
	cd = cd[certHeaderSize:]
	if len(cd) < qeReportSize+sigSize+qeAuthLenSize {
		return nil, malformed("QE report certification data too short")
	}
	q.qeReport = cd[:qeReportSize]
	q.qeSig = cd[qeReportSize : qeReportSize+sigSize]
	cd = cd[qeReportSize+sigSize:]
	authLen := int(binary.LittleEndian.Uint16(cd))
	cd = cd[qeAuthLenSize:]
	if len(cd) < authLen+certHeaderSize {
		return nil, malformed("QE authentication data exceeds the certification data")
	}
	q.qeAuth = cd[:authLen]
	cd = cd[authLen:]
	if t := binary.LittleEndian.Uint16(cd); t != certTypePCKChain {
		return nil, attestation.Errorf(attestation.ReasonUnsupported, fmt.Errorf("tdx: inner certification data type %d (want 5, PCK certificate chain)", t))
	}
	if n := binary.LittleEndian.Uint32(cd[2:]); uint64(n) != uint64(len(cd)-certHeaderSize) {
		return nil, malformed("PCK certificate chain size does not match the certification data")
	}
	q.pckChain = cd[certHeaderSize:]

	p, err := protoQuote(raw)
	if err != nil {
		return nil, malformed(err.Error())
	}
	q.proto = p
	switch p := p.(type) {
	case *pb.QuoteV4:
		q.body = bodyOf(p.GetTdQuoteBody())
	case *pb.QuoteV5:
		q.body = bodyOf(p.GetTdQuoteBodyDescriptor().GetTdQuoteBodyV5())
	default:
		return nil, malformed(fmt.Sprintf("unexpected quote type %T", p))
	}
	// Both parsers read the same bytes; insist they agree on what the
	// claims are taken from, so the two can never drift apart silently.
	if !bytes.Equal(q.body.reportData, raw[q.bodyOffset()+bodyReportDataOffset:q.bodyOffset()+bodyReportDataOffset+64]) {
		return nil, malformed("quote parsers disagree")
	}
	return q, nil
}

// bodyReportDataOffset is the offset of REPORTDATA in a TD quote body.
const bodyReportDataOffset = 520

// bodyOffset is where the TD quote body starts in the quote.
func (q *quote) bodyOffset() int {
	if q.version == 5 {
		return headerSize + bodyDescriptorSize
	}
	return headerSize
}

// protoQuote runs go-tdx-guest's parser, turning a panic (which the
// layout checks above should already rule out) into an error.
func protoQuote(raw []byte) (p any, err error) {
	defer func() {
		if r := recover(); r != nil {
			p, err = nil, errors.New("quote parser failed")
		}
	}()
	return abi.QuoteToProto(raw)
}

type quoteBody interface {
	GetTeeTcbSvn() []byte
	GetMrSeam() []byte
	GetMrSignerSeam() []byte
	GetSeamAttributes() []byte
	GetTdAttributes() []byte
	GetXfam() []byte
	GetMrTd() []byte
	GetMrConfigId() []byte
	GetMrOwner() []byte
	GetMrOwnerConfig() []byte
	GetRtmrs() [][]byte
	GetReportData() []byte
}

func bodyOf(b quoteBody) *body {
	return &body{
		teeTCBSVN: b.GetTeeTcbSvn(), mrSeam: b.GetMrSeam(), mrSignerSeam: b.GetMrSignerSeam(),
		seamAttributes: b.GetSeamAttributes(), tdAttributes: b.GetTdAttributes(), xfam: b.GetXfam(),
		mrTD: b.GetMrTd(), mrConfigID: b.GetMrConfigId(), mrOwner: b.GetMrOwner(),
		mrOwnerConfig: b.GetMrOwnerConfig(), reportData: b.GetReportData(), rtmrs: b.GetRtmrs(),
	}
}

func malformed(msg string) error {
	return attestation.Errorf(attestation.ReasonMalformed, errors.New("tdx: "+msg))
}

// ParseQuote parses a TD quote (version 4 or 5) WITHOUT verifying
// anything, for tooling and fuzzing. FMSPC is taken from the quote's PCK
// certificate when it parses; TCBStatus is empty.
func ParseQuote(raw []byte) (*attestation.TDXClaims, error) {
	q, err := parseQuote(raw)
	if err != nil {
		return nil, err
	}
	c := q.claims()
	if ch, err := splitChain(q.pckChain); err == nil {
		if ext, err := pckExtensions(ch.pck); err == nil {
			c.FMSPC, _ = hex.DecodeString(ext.FMSPC)
		}
	}
	return c, nil
}

// claims normalizes the quote body. The byte slices are copies, so claims
// never alias the caller's quote.
func (q *quote) claims() *attestation.TDXClaims {
	b := q.body
	c := &attestation.TDXClaims{
		QuoteVersion:  q.version,
		MRTD:          bytes.Clone(b.mrTD),
		MRConfigID:    bytes.Clone(b.mrConfigID),
		MROwner:       bytes.Clone(b.mrOwner),
		MROwnerConfig: bytes.Clone(b.mrOwnerConfig),
		MRSeam:        bytes.Clone(b.mrSeam),
		MRSignerSeam:  bytes.Clone(b.mrSignerSeam),
		TDAttributes:  bytes.Clone(b.tdAttributes),
		// TUD.DEBUG is bit 0 of the first (least significant) byte.
		Debug:      len(b.tdAttributes) > 0 && b.tdAttributes[0]&1 != 0,
		XFAM:       bytes.Clone(b.xfam),
		TEETCBSVN:  bytes.Clone(b.teeTCBSVN),
		ReportData: bytes.Clone(b.reportData),
	}
	for _, r := range b.rtmrs {
		c.RTMRs = append(c.RTMRs, bytes.Clone(r))
	}
	return c
}
