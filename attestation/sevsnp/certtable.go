package sevsnp

import (
	"bytes"
	"crypto/x509"
	"encoding/binary"
	"encoding/hex"
	"encoding/pem"
	"fmt"
	"strings"

	"github.com/google/go-sev-guest/abi"
	spb "github.com/google/go-sev-guest/proto/sevsnp"
)

// MaxCertTableSize bounds the certificate table accepted by Verify. Hosts
// return ARK, ASK and VCEK (about 5 KiB) plus optional extras; the Linux
// sev-guest driver caps the table at 16 KiB. The bound keeps a hostile
// caller from making the verifier copy and parse megabytes.
const MaxCertTableSize = 64 << 10

// parseCertTable decodes the GUID table of an extended report (GHCB
// specification, SNP_GET_EXT_REPORT; configfs-tsm auxblob): 24-byte
// entries {GUID, offset u32le, length u32le} ended by an all-zero entry,
// followed by the blobs. An empty table is allowed.
//
// abi.CertTable.Unmarshal is not used because it adds offset and length in
// 32 bits, so a crafted entry wraps around the bounds check and panics on
// the slice expression; here the sum is done in 64 bits.
func parseCertTable(table []byte) (*spb.CertificateChain, error) {
	const entrySize = abi.CertTableEntrySize
	var entries []abi.CertTableEntry
	var offsets []uint64
	if len(table) == 0 || bytes.Equal(table, make([]byte, len(table))) {
		// Empty, or an all-zero buffer as returned when the host has no certificates.
		return &spb.CertificateChain{Extras: map[string][]byte{}}, nil
	}
	headerEnd := -1
	for off := 0; off+entrySize <= len(table); off += entrySize {
		e := table[off : off+entrySize]
		if bytes.Equal(e, make([]byte, entrySize)) {
			headerEnd = off + entrySize
			break
		}
		var entry abi.CertTableEntry
		copy(entry.GUID[:], e[:abi.GUIDSize])
		offset := uint64(binary.LittleEndian.Uint32(e[abi.GUIDSize:]))
		length := uint64(binary.LittleEndian.Uint32(e[abi.GUIDSize+4:]))
		if offset+length > uint64(len(table)) {
			return nil, fmt.Errorf("sevsnp: certificate table entry %d (%v) exceeds the table: offset %d, length %d, table %d bytes",
				len(entries), entry.GUID, offset, length, len(table))
		}
		for _, prev := range entries {
			if prev.GUID == entry.GUID {
				// Two different VCEKs under one GUID would make "which one was checked" ambiguous.
				return nil, fmt.Errorf("sevsnp: certificate table has GUID %v twice", entry.GUID)
			}
		}
		entry.RawCert = table[offset : offset+length]
		entries = append(entries, entry)
		offsets = append(offsets, offset)
	}
	if headerEnd < 0 {
		return nil, fmt.Errorf("sevsnp: certificate table (%d bytes) has no terminating entry", len(table))
	}
	for i, e := range entries {
		// Blobs must not overlap the header, like abi.ParseSnpCertTableHeader demands.
		if offsets[i] < uint64(headerEnd) && len(e.RawCert) > 0 {
			return nil, fmt.Errorf("sevsnp: certificate table entry %d points into the header", i)
		}
		// Copy so the claims and certificates never alias the caller's buffer.
		entries[i].RawCert = bytes.Clone(e.RawCert)
	}
	return chainOf(entries), nil
}

// GUIDs of the certificate table entries this package reads.
var (
	guidARK  = mustGUID(abi.ArkGUID)
	guidASK  = mustGUID(abi.AskGUID)
	guidVCEK = mustGUID(abi.VcekGUID)
	guidVLEK = mustGUID(abi.VlekGUID)
)

func mustGUID(s string) [abi.GUIDSize]byte {
	var g [abi.GUIDSize]byte
	b, err := hex.DecodeString(strings.ReplaceAll(s, "-", ""))
	if err != nil || len(b) != len(g) {
		panic("sevsnp: bad GUID constant " + s)
	}
	copy(g[:], b)
	return g
}

// chainOf sorts table entries into go-sev-guest's chain type. It does what
// abi.CertTable.Proto does, minus that function's warning through the
// global google/logger when there is no VCEK, which would end up in the
// KMS's stderr for every report verified through a Getter.
func chainOf(entries []abi.CertTableEntry) *spb.CertificateChain {
	chain := &spb.CertificateChain{Extras: map[string][]byte{}}
	for _, e := range entries {
		switch [abi.GUIDSize]byte(e.GUID) {
		case guidVCEK:
			chain.VcekCert = e.RawCert
		case guidVLEK:
			chain.VlekCert = e.RawCert
		case guidASK:
			chain.AskCert = e.RawCert
		case guidARK:
			chain.ArkCert = e.RawCert
		default:
			chain.Extras[e.GUID.String()] = e.RawCert
		}
	}
	return chain
}

// CertTableFromVCEK encodes an endorsement key certificate as a certificate
// table holding only a VCEK entry, for evidence that carries the VCEK
// outside an extended report (Azure's THIM, Confidential Containers'
// "vcek" field). cert may be DER or PEM; with PEM the first CERTIFICATE
// block is the VCEK and any following ones (ASK, ARK) are ignored, because
// the chain comes from the configured roots. The certificate is not
// verified here.
func CertTableFromVCEK(cert []byte) ([]byte, error) {
	der := cert
	if block, _ := pem.Decode(cert); block != nil {
		if block.Type != "CERTIFICATE" {
			return nil, fmt.Errorf("sevsnp: VCEK PEM block is %q, want CERTIFICATE", block.Type)
		}
		der = block.Bytes
	}
	if _, err := x509.ParseCertificate(der); err != nil {
		return nil, fmt.Errorf("sevsnp: parse VCEK certificate: %w", err)
	}
	var t abi.CertTable
	var e abi.CertTableEntry
	copy(e.GUID[:], guidVCEK[:])
	e.RawCert = bytes.Clone(der)
	t.Entries = append(t.Entries, e)
	return t.Marshal(), nil
}
