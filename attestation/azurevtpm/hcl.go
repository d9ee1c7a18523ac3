package azurevtpm

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
)

// Layout of the HCL report the paravisor keeps in vTPM NV index
// 0x01400001 (little-endian throughout):
//
//	0     header: signature "HCLA", version, report size, request type,
//	      status, 3 reserved words                          (32 bytes)
//	32    hardware report slot: an SEV-SNP attestation report (1184
//	      bytes) or a TD report (1024 bytes, rest of the slot unused)
//	1216  IGVM request data: data size, version, report type, report
//	      data hash type, variable data size                (20 bytes)
//	1236  variable data: the runtime data JSON
//
// The NV index is larger than the report; the rest is zero padding.
const (
	hclHeaderSize      = 32
	hwReportSlotSize   = 1184
	requestDataOffset  = hclHeaderSize + hwReportSlotSize
	requestHeaderSize  = 20
	runtimeDataOffset  = requestDataOffset + requestHeaderSize
	snpReportSize      = 1184
	tdReportSize       = 1024
	hclSignature       = "HCLA"
	hclVersion         = 1
	hclRequestTypeAK   = 2 // the request type the paravisor uses for its own report
	igvmRequestVersion = 1

	// MaxHCLReportSize bounds the HCL report accepted by ParseHCLReport.
	// Azure's NV index is 2600 bytes; the bound leaves room for growth
	// without letting a caller make the verifier copy megabytes.
	MaxHCLReportSize = 16 << 10
	// MaxRuntimeDataSize bounds the runtime data JSON (about 1.1 KiB on
	// Azure: two RSA JWKs, the VM configuration and the user-data).
	MaxRuntimeDataSize = 8 << 10
)

// ReportType is the kind of hardware report inside an HCL report, as the
// IGVM request data names it.
type ReportType uint32

const (
	ReportTypeSNP ReportType = 2
	ReportTypeTDX ReportType = 4
)

func (t ReportType) String() string {
	switch t {
	case ReportTypeSNP:
		return "SEV-SNP"
	case ReportTypeTDX:
		return "TDX"
	}
	return fmt.Sprintf("report type %d", uint32(t))
}

// hardwareReportSize is the length of the report inside the slot.
func (t ReportType) hardwareReportSize() int {
	if t == ReportTypeTDX {
		return tdReportSize
	}
	return snpReportSize
}

// HashType is the hash the paravisor applied to the runtime data to form
// the hardware report's report data.
type HashType uint32

const (
	HashSHA256 HashType = 1
	HashSHA384 HashType = 2
	HashSHA512 HashType = 3
)

// Size returns the digest length, or 0 for an unknown hash type.
func (h HashType) Size() int {
	switch h {
	case HashSHA256:
		return 32
	case HashSHA384:
		return 48
	case HashSHA512:
		return 64
	}
	return 0
}

// HCLReport is a parsed HCL report. Its byte slices are copies and never
// alias the input.
type HCLReport struct {
	Version     uint32
	ReportSize  uint32 // as the header states it; not relied upon
	RequestType uint32
	Status      uint32
	// ReportType says which hardware report HardwareReport holds.
	ReportType ReportType
	// RequestVersion is the IGVM request data version.
	RequestVersion uint32
	HashType       HashType
	// HardwareReport is the SEV-SNP report (1184 bytes) or TD report
	// (1024 bytes).
	HardwareReport []byte
	// RuntimeData is the variable data exactly as in the report: the
	// bytes the hardware report's report data is a hash of.
	RuntimeData []byte
}

// ParseHCLReport parses the content of NV index 0x01400001. It checks the
// structure only; Verifier.Verify checks what the report claims.
func ParseHCLReport(b []byte) (*HCLReport, error) {
	if len(b) > MaxHCLReportSize {
		return nil, fmt.Errorf("azurevtpm: HCL report is %d bytes, limit %d", len(b), MaxHCLReportSize)
	}
	if len(b) < runtimeDataOffset {
		return nil, fmt.Errorf("azurevtpm: HCL report is %d bytes, shorter than its fixed part (%d)", len(b), runtimeDataOffset)
	}
	if string(b[:4]) != hclSignature {
		return nil, errors.New("azurevtpm: HCL report does not start with the HCLA signature")
	}
	le := binary.LittleEndian
	r := &HCLReport{
		Version:        le.Uint32(b[4:]),
		ReportSize:     le.Uint32(b[8:]),
		RequestType:    le.Uint32(b[12:]),
		Status:         le.Uint32(b[16:]),
		RequestVersion: le.Uint32(b[requestDataOffset+4:]),
		ReportType:     ReportType(le.Uint32(b[requestDataOffset+8:])),
		HashType:       HashType(le.Uint32(b[requestDataOffset+12:])),
	}
	if r.ReportType != ReportTypeSNP && r.ReportType != ReportTypeTDX {
		return nil, fmt.Errorf("azurevtpm: HCL report holds unknown %v", r.ReportType)
	}
	if r.HashType.Size() == 0 {
		return nil, fmt.Errorf("azurevtpm: HCL report names unknown report data hash type %d", uint32(r.HashType))
	}
	varSize := uint64(le.Uint32(b[requestDataOffset+16:]))
	if varSize > MaxRuntimeDataSize {
		return nil, fmt.Errorf("azurevtpm: HCL runtime data is %d bytes, limit %d", varSize, MaxRuntimeDataSize)
	}
	if runtimeDataOffset+varSize > uint64(len(b)) {
		return nil, fmt.Errorf("azurevtpm: HCL runtime data (%d bytes) exceeds the report (%d bytes)", varSize, len(b))
	}
	r.HardwareReport = bytes.Clone(b[hclHeaderSize : hclHeaderSize+r.ReportType.hardwareReportSize()])
	r.RuntimeData = bytes.Clone(b[runtimeDataOffset : runtimeDataOffset+varSize])
	return r, nil
}

// MarshalHCLReport encodes an HCL report as the paravisor writes it (no NV
// padding): header, hardware report in its slot, IGVM request data and
// runtime data. The simulator uses it; ParseHCLReport inverts it.
func MarshalHCLReport(t ReportType, hash HashType, hardwareReport, runtimeData []byte) ([]byte, error) {
	if t != ReportTypeSNP && t != ReportTypeTDX {
		return nil, fmt.Errorf("azurevtpm: unknown %v", t)
	}
	if len(hardwareReport) != t.hardwareReportSize() {
		return nil, fmt.Errorf("azurevtpm: %v hardware report is %d bytes, want %d", t, len(hardwareReport), t.hardwareReportSize())
	}
	if hash.Size() == 0 {
		return nil, fmt.Errorf("azurevtpm: unknown hash type %d", uint32(hash))
	}
	if len(runtimeData) > MaxRuntimeDataSize {
		return nil, fmt.Errorf("azurevtpm: runtime data is %d bytes, limit %d", len(runtimeData), MaxRuntimeDataSize)
	}
	le := binary.LittleEndian
	b := make([]byte, runtimeDataOffset+len(runtimeData))
	copy(b, hclSignature)
	le.PutUint32(b[4:], hclVersion)
	le.PutUint32(b[8:], uint32(len(b)))
	le.PutUint32(b[12:], hclRequestTypeAK)
	copy(b[hclHeaderSize:], hardwareReport)
	le.PutUint32(b[requestDataOffset:], uint32(requestHeaderSize+len(runtimeData)))
	le.PutUint32(b[requestDataOffset+4:], igvmRequestVersion)
	le.PutUint32(b[requestDataOffset+8:], uint32(t))
	le.PutUint32(b[requestDataOffset+12:], uint32(hash))
	le.PutUint32(b[requestDataOffset+16:], uint32(len(runtimeData)))
	copy(b[runtimeDataOffset:], runtimeData)
	return b, nil
}
