package azurevtpm

import (
	"bytes"
	"errors"
	"fmt"

	"github.com/attested-kms/attested-kms/attestation"
)

// TD report layout (Intel TDX Module ABI, TDREPORT_STRUCT, 1024 bytes):
//
//	0    REPORTMACSTRUCT (256): REPORTTYPE (4), reserved (12), CPUSVN (16),
//	     TEE_TCB_INFO_HASH (48), TEE_INFO_HASH (48), REPORTDATA (64),
//	     reserved (32), MAC (32)
//	256  TEE_TCB_INFO (239): VALID (8), TEE_TCB_SVN (16), MRSEAM (48),
//	     MRSIGNERSEAM (48), ATTRIBUTES (8), ...
//	495  reserved (17)
//	512  TDINFO (512): ATTRIBUTES (8), XFAM (8), MRTD (48), MRCONFIGID (48),
//	     MROWNER (48), MROWNERCONFIG (48), RTMR0-3 (4 x 48), ...
const (
	tdReportTypeTDX   = 0x81 // REPORTTYPE.TYPE of a TD report
	tdReportDataOff   = 128
	teeTCBInfoOff     = 256
	tdInfoOff         = 512
	measurementSize   = 48
	tdReportDataSize  = 64
	tdAttributesSize  = 8
	teeTCBSVNSize     = 16
	tdNumRTMRs        = 4
	teeTCBSVNOff      = teeTCBInfoOff + 8
	mrSeamOff         = teeTCBSVNOff + teeTCBSVNSize
	mrSignerSeamOff   = mrSeamOff + measurementSize
	tdAttributesOff   = tdInfoOff
	xfamOff           = tdAttributesOff + tdAttributesSize
	mrtdOff           = xfamOff + 8
	mrConfigIDOff     = mrtdOff + measurementSize
	mrOwnerOff        = mrConfigIDOff + measurementSize
	mrOwnerConfigOff  = mrOwnerOff + measurementSize
	rtmrOff           = mrOwnerConfigOff + measurementSize
	tdReportTypeIndex = 0
)

// TDReport holds the fields of a TD report that its TD quote must repeat.
type TDReport struct {
	ReportData    []byte
	TEETCBSVN     []byte
	MRSeam        []byte
	MRSignerSeam  []byte
	TDAttributes  []byte
	XFAM          []byte
	MRTD          []byte
	MRConfigID    []byte
	MROwner       []byte
	MROwnerConfig []byte
	RTMRs         [][]byte
}

// ParseTDReport parses a 1024-byte TD report.
func ParseTDReport(b []byte) (*TDReport, error) {
	if len(b) != tdReportSize {
		return nil, fmt.Errorf("azurevtpm: TD report is %d bytes, want %d", len(b), tdReportSize)
	}
	if b[tdReportTypeIndex] != tdReportTypeTDX {
		return nil, fmt.Errorf("azurevtpm: hardware report type %#02x is not a TD report", b[tdReportTypeIndex])
	}
	field := func(off, n int) []byte { return bytes.Clone(b[off : off+n]) }
	r := &TDReport{
		ReportData:    field(tdReportDataOff, tdReportDataSize),
		TEETCBSVN:     field(teeTCBSVNOff, teeTCBSVNSize),
		MRSeam:        field(mrSeamOff, measurementSize),
		MRSignerSeam:  field(mrSignerSeamOff, measurementSize),
		TDAttributes:  field(tdAttributesOff, tdAttributesSize),
		XFAM:          field(xfamOff, 8),
		MRTD:          field(mrtdOff, measurementSize),
		MRConfigID:    field(mrConfigIDOff, measurementSize),
		MROwner:       field(mrOwnerOff, measurementSize),
		MROwnerConfig: field(mrOwnerConfigOff, measurementSize),
	}
	for i := range tdNumRTMRs {
		r.RTMRs = append(r.RTMRs, field(rtmrOff+i*measurementSize, measurementSize))
	}
	return r, nil
}

// MarshalTDReport encodes r as a TD report, for the simulator. CPUSVN,
// the hashes and the MAC are left zero: nothing off-platform can check
// them (see matchTDQuote).
func MarshalTDReport(r *TDReport) ([]byte, error) {
	b := make([]byte, tdReportSize)
	b[tdReportTypeIndex] = tdReportTypeTDX
	put := func(name string, off int, v []byte, n int) error {
		if len(v) != n {
			return fmt.Errorf("azurevtpm: TD report %s is %d bytes, want %d", name, len(v), n)
		}
		copy(b[off:], v)
		return nil
	}
	if len(r.RTMRs) != tdNumRTMRs {
		return nil, fmt.Errorf("azurevtpm: TD report has %d RTMRs, want %d", len(r.RTMRs), tdNumRTMRs)
	}
	errs := []error{
		put("REPORTDATA", tdReportDataOff, r.ReportData, tdReportDataSize),
		put("TEE_TCB_SVN", teeTCBSVNOff, r.TEETCBSVN, teeTCBSVNSize),
		put("MRSEAM", mrSeamOff, r.MRSeam, measurementSize),
		put("MRSIGNERSEAM", mrSignerSeamOff, r.MRSignerSeam, measurementSize),
		put("ATTRIBUTES", tdAttributesOff, r.TDAttributes, tdAttributesSize),
		put("XFAM", xfamOff, r.XFAM, 8),
		put("MRTD", mrtdOff, r.MRTD, measurementSize),
		put("MRCONFIGID", mrConfigIDOff, r.MRConfigID, measurementSize),
		put("MROWNER", mrOwnerOff, r.MROwner, measurementSize),
		put("MROWNERCONFIG", mrOwnerConfigOff, r.MROwnerConfig, measurementSize),
	}
	for i, rtmr := range r.RTMRs {
		errs = append(errs, put(fmt.Sprintf("RTMR%d", i), rtmrOff+i*measurementSize, rtmr, measurementSize))
	}
	if err := errors.Join(errs...); err != nil {
		return nil, err
	}
	return b, nil
}

// matchTDQuote checks that the verified TD quote was made for this TD
// report: every field the quote body repeats from the report must be
// equal.
//
// A TD report is authenticated only by its MAC, which is keyed with a
// secret of the CPU that made it: only that platform (the TDX module, or
// the quoting enclave when it turns the report into a quote) can check
// it. Off the platform, the quote is the QE's statement that it checked
// the MAC, so what the KMS can and must do is require the report it parses
// to be the one that was quoted. Equal REPORTDATA alone would already bind
// the runtime data; the measurements are compared too so that no claim
// can come from an unquoted report.
func matchTDQuote(r *TDReport, q *attestation.TDXClaims) error {
	if q == nil {
		return errors.New("azurevtpm: TDX verifier returned no TDX claims")
	}
	pairs := []struct {
		name         string
		report, body []byte
	}{
		{"REPORTDATA", r.ReportData, q.ReportData},
		{"TEE_TCB_SVN", r.TEETCBSVN, q.TEETCBSVN},
		{"MRSEAM", r.MRSeam, q.MRSeam},
		{"MRSIGNERSEAM", r.MRSignerSeam, q.MRSignerSeam},
		{"TD ATTRIBUTES", r.TDAttributes, q.TDAttributes},
		{"XFAM", r.XFAM, q.XFAM},
		{"MRTD", r.MRTD, q.MRTD},
		{"MRCONFIGID", r.MRConfigID, q.MRConfigID},
		{"MROWNER", r.MROwner, q.MROwner},
		{"MROWNERCONFIG", r.MROwnerConfig, q.MROwnerConfig},
	}
	if len(q.RTMRs) != tdNumRTMRs {
		return fmt.Errorf("azurevtpm: TD quote has %d RTMRs, want %d", len(q.RTMRs), tdNumRTMRs)
	}
	for i := range tdNumRTMRs {
		pairs = append(pairs, struct {
			name         string
			report, body []byte
		}{fmt.Sprintf("RTMR%d", i), r.RTMRs[i], q.RTMRs[i]})
	}
	for _, p := range pairs {
		if !bytes.Equal(p.report, p.body) {
			return fmt.Errorf("azurevtpm: %s of the TD report differs from the TD quote's", p.name)
		}
	}
	return nil
}
