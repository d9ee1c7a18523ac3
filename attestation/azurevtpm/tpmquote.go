package azurevtpm

import (
	"bytes"
	"crypto"
	"crypto/rsa"
	"crypto/sha256"
	"encoding/binary"
	"errors"
	"fmt"
)

// TPM 2.0 constants (TCG TPM 2.0 Library, Part 2: Structures).
const (
	tpmGeneratedValue = 0xff544347 // TPM_GENERATED_VALUE, "\xffTCG"
	tpmSTAttestQuote  = 0x8018     // TPM_ST_ATTEST_QUOTE
	tpmAlgSHA256      = 0x000b
	tpmAlgRSASSA      = 0x0014
	tpmAlgRSAPSS      = 0x0016

	// NumPCRs is the number of PCRs of a PC Client TPM, all of which the
	// Azure attesters quote.
	NumPCRs = 24

	// Bounds on the TPM quote parts (a quote of 24 SHA-256 PCRs is 161
	// bytes of TPMS_ATTEST and 262 bytes of RSA-2048 TPMT_SIGNATURE).
	maxAttestSize    = 1024
	maxSignatureSize = 1024
	maxNameSize      = 2 + 64 // TPM2B_NAME: algorithm + digest
	maxExtraDataSize = 64     // TPM2B_DATA is at most sizeof(TPMT_HA)
	maxPCRSelections = 16
)

// quoteInfo is the part of a TPMS_ATTEST of type quote that verification
// uses.
type quoteInfo struct {
	extraData []byte
	// pcrs are the selected PCR indices of the only (SHA-256) bank, ascending.
	pcrs      []int
	pcrDigest []byte
}

// reader reads big-endian TPM structures with bounds checks.
type reader struct {
	b   []byte
	err error
}

func (r *reader) take(n int) []byte {
	if r.err != nil {
		return nil
	}
	if n < 0 || n > len(r.b) {
		r.err = errors.New("truncated")
		return nil
	}
	v := r.b[:n]
	r.b = r.b[n:]
	return v
}

func (r *reader) u8() uint8 {
	if v := r.take(1); v != nil {
		return v[0]
	}
	return 0
}

func (r *reader) u16() uint16 {
	if v := r.take(2); v != nil {
		return binary.BigEndian.Uint16(v)
	}
	return 0
}

func (r *reader) u32() uint32 {
	if v := r.take(4); v != nil {
		return binary.BigEndian.Uint32(v)
	}
	return 0
}

// sized reads a TPM2B of at most limit bytes.
func (r *reader) sized(what string, limit int) []byte {
	n := int(r.u16())
	if r.err == nil && n > limit {
		r.err = fmt.Errorf("%s is %d bytes, limit %d", what, n, limit)
		return nil
	}
	return r.take(n)
}

// parseQuoteAttest parses a marshalled TPMS_ATTEST that must be a quote
// over SHA-256 PCRs only.
func parseQuoteAttest(msg []byte) (*quoteInfo, error) {
	if len(msg) > maxAttestSize {
		return nil, fmt.Errorf("azurevtpm: TPM quote message is %d bytes, limit %d", len(msg), maxAttestSize)
	}
	r := &reader{b: msg}
	magic := r.u32()
	typ := r.u16()
	if r.err == nil && magic != tpmGeneratedValue {
		return nil, errors.New("azurevtpm: TPM quote message lacks TPM_GENERATED_VALUE")
	}
	if r.err == nil && typ != tpmSTAttestQuote {
		return nil, fmt.Errorf("azurevtpm: TPM attestation is of type %#04x, not a quote", typ)
	}
	r.sized("qualified signer name", maxNameSize)
	q := &quoteInfo{extraData: bytes.Clone(r.sized("qualifying data", maxExtraDataSize))}
	r.take(8 + 4 + 4 + 1) // TPMS_CLOCK_INFO
	r.take(8)             // firmwareVersion
	count := r.u32()
	if r.err == nil && count > maxPCRSelections {
		return nil, fmt.Errorf("azurevtpm: TPM quote selects %d PCR banks, limit %d", count, maxPCRSelections)
	}
	var banks int
	for i := uint32(0); i < count && r.err == nil; i++ {
		alg := r.u16()
		size := int(r.u8())
		bitmap := r.take(size)
		if r.err != nil {
			break
		}
		var selected []int
		for idx, bits := range bitmap {
			for bit := 0; bit < 8; bit++ {
				if bits&(1<<bit) != 0 {
					selected = append(selected, 8*idx+bit)
				}
			}
		}
		if len(selected) == 0 {
			continue // an empty selection selects nothing
		}
		if alg != tpmAlgSHA256 {
			return nil, fmt.Errorf("azurevtpm: TPM quote covers PCR bank %#04x; only SHA-256 is supported", alg)
		}
		banks++
		q.pcrs = selected
	}
	q.pcrDigest = bytes.Clone(r.sized("PCR digest", sha256.Size))
	if r.err != nil {
		return nil, fmt.Errorf("azurevtpm: TPM quote message: %w", r.err)
	}
	if len(r.b) != 0 {
		return nil, fmt.Errorf("azurevtpm: TPM quote message has %d trailing bytes", len(r.b))
	}
	if banks != 1 {
		return nil, fmt.Errorf("azurevtpm: TPM quote selects %d SHA-256 PCR banks, want 1", banks)
	}
	if last := q.pcrs[len(q.pcrs)-1]; last >= NumPCRs {
		return nil, fmt.Errorf("azurevtpm: TPM quote selects PCR %d; only PCRs 0-%d are supported", last, NumPCRs-1)
	}
	if len(q.pcrDigest) != sha256.Size {
		return nil, fmt.Errorf("azurevtpm: TPM quote PCR digest is %d bytes, want %d", len(q.pcrDigest), sha256.Size)
	}
	return q, nil
}

// tpmSignature is a parsed TPMT_SIGNATURE of an RSA key.
type tpmSignature struct {
	pss bool
	sig []byte
}

// parseSignature parses a marshalled TPMT_SIGNATURE: RSASSA or RSAPSS
// with SHA-256, the schemes an RSA attestation key can sign quotes with.
func parseSignature(b []byte) (*tpmSignature, error) {
	if len(b) > maxSignatureSize {
		return nil, fmt.Errorf("azurevtpm: TPM signature is %d bytes, limit %d", len(b), maxSignatureSize)
	}
	r := &reader{b: b}
	alg := r.u16()
	hash := r.u16()
	sig := r.sized("signature", 512)
	if r.err != nil {
		return nil, fmt.Errorf("azurevtpm: TPM signature: %w", r.err)
	}
	if len(r.b) != 0 {
		return nil, fmt.Errorf("azurevtpm: TPM signature has %d trailing bytes", len(r.b))
	}
	if alg != tpmAlgRSASSA && alg != tpmAlgRSAPSS {
		return nil, fmt.Errorf("azurevtpm: TPM signature scheme %#04x; want RSASSA or RSAPSS", alg)
	}
	if hash != tpmAlgSHA256 {
		return nil, fmt.Errorf("azurevtpm: TPM signature hash %#04x; want SHA-256", hash)
	}
	return &tpmSignature{pss: alg == tpmAlgRSAPSS, sig: bytes.Clone(sig)}, nil
}

// verify checks the signature over msg with key.
func (s *tpmSignature) verify(key *rsa.PublicKey, msg []byte) error {
	digest := sha256.Sum256(msg)
	if s.pss {
		return rsa.VerifyPSS(key, crypto.SHA256, digest[:], s.sig, &rsa.PSSOptions{SaltLength: rsa.PSSSaltLengthAuto})
	}
	return rsa.VerifyPKCS1v15(key, crypto.SHA256, digest[:], s.sig)
}

// MarshalRSASSASignature encodes a raw RSASSA-PKCS1-v1_5 SHA-256
// signature as a TPMT_SIGNATURE. The Confidential Containers attesters
// send only the raw signature bytes.
func MarshalRSASSASignature(sig []byte) []byte {
	b := make([]byte, 6, 6+len(sig))
	binary.BigEndian.PutUint16(b, tpmAlgRSASSA)
	binary.BigEndian.PutUint16(b[2:], tpmAlgSHA256)
	binary.BigEndian.PutUint16(b[4:], uint16(len(sig)))
	return append(b, sig...)
}

// quotedPCRs maps the evidence's PCR values to the quoted indices: either
// exactly the selected PCRs in ascending order, or all NumPCRs (index =
// PCR number). It checks their SHA-256 digest against the quote's.
func quotedPCRs(q *quoteInfo, values [][]byte) (map[int][]byte, error) {
	var pick func(i, pcr int) []byte
	switch len(values) {
	case len(q.pcrs):
		pick = func(i, _ int) []byte { return values[i] }
	case NumPCRs:
		pick = func(_, pcr int) []byte { return values[pcr] }
	default:
		return nil, fmt.Errorf("azurevtpm: evidence has %d PCR values; the quote selects %d (send those or all %d)", len(values), len(q.pcrs), NumPCRs)
	}
	for i, v := range values {
		if len(v) != sha256.Size {
			return nil, fmt.Errorf("azurevtpm: PCR value %d is %d bytes, want %d", i, len(v), sha256.Size)
		}
	}
	h := sha256.New()
	out := make(map[int][]byte, len(q.pcrs))
	for i, pcr := range q.pcrs {
		v := pick(i, pcr)
		h.Write(v)
		out[pcr] = bytes.Clone(v)
	}
	if !bytes.Equal(h.Sum(nil), q.pcrDigest) {
		return nil, errPCRDigest
	}
	return out, nil
}

var errPCRDigest = errors.New("azurevtpm: PCR values do not match the quoted PCR digest")
