package tdx

import (
	"bytes"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/sha256"
	"errors"
	"math/big"

	"github.com/attested-kms/attested-kms/attestation"
)

// checkSignatures checks what changes with every quote: the attestation
// key's signature over header and body, the PCK key's signature over the
// QE report, and that the QE report data binds the attestation key and QE
// authentication data (SHA-256(key || auth data) || 32 zero bytes). These
// are the same checks go-tdx-guest makes; they run on the raw quote bytes
// so that the cached path needs no re-serialization.
func checkSignatures(q *quote, pckKey *ecdsa.PublicKey) error {
	attKey, err := ecdsa.ParseUncompressedPublicKey(elliptic.P256(), append([]byte{4}, q.attKey...))
	if err != nil {
		return attestation.Errorf(attestation.ReasonSignature, errors.New("tdx: attestation key is not a P-256 point"))
	}
	if !verifyRS(attKey, q.signed, q.sig) {
		return attestation.Errorf(attestation.ReasonSignature, errors.New("tdx: quote signature does not verify with the attestation key"))
	}
	if !verifyRS(pckKey, q.qeReport, q.qeSig) {
		return attestation.Errorf(attestation.ReasonSignature, errors.New("tdx: QE report signature does not verify with the PCK certificate's key"))
	}
	h := sha256.New()
	h.Write(q.attKey)
	h.Write(q.qeAuth)
	want := make([]byte, 64)
	h.Sum(want[:0])
	if !bytes.Equal(q.qeReport[qeReportDataOffset:qeReportDataOffset+64], want) {
		return attestation.Errorf(attestation.ReasonSignature, errors.New("tdx: QE report data does not bind the attestation key"))
	}
	return nil
}

// qeReportDataOffset is the offset of REPORTDATA in an SGX enclave report.
const qeReportDataOffset = 320

// verifyRS verifies an ECDSA P-256/SHA-256 signature given as r||s.
func verifyRS(pub *ecdsa.PublicKey, msg, sig []byte) bool {
	if len(sig) != 64 {
		return false
	}
	d := sha256.Sum256(msg)
	r := new(big.Int).SetBytes(sig[:32])
	s := new(big.Int).SetBytes(sig[32:])
	return ecdsa.Verify(pub, d[:], r, s)
}
