package simulate

import (
	"fmt"

	"github.com/attested-kms/attested-kms/attestation/azurevtpm"
	"github.com/attested-kms/attested-kms/attestation/tdx"
)

// TDReportFromQuote returns the TD report a TD quote (version 4 or 5) was
// made from, as far as the quote body tells: the simulator builds the HCL
// report's TD report from the quote its injected quote function returns,
// so that the two agree the way a genuine pair does. The quote's
// signature is not checked.
func TDReportFromQuote(quote []byte) (*azurevtpm.TDReport, error) {
	b, err := tdx.ParseQuote(quote)
	if err != nil {
		return nil, fmt.Errorf("simulate: parse TD quote: %w", err)
	}
	rtmrs := make([][]byte, len(b.RTMRs))
	for i, r := range b.RTMRs {
		rtmrs[i] = r // HexBytes is a []byte
	}
	return &azurevtpm.TDReport{
		ReportData:    b.ReportData,
		TEETCBSVN:     b.TEETCBSVN,
		MRSeam:        b.MRSeam,
		MRSignerSeam:  b.MRSignerSeam,
		TDAttributes:  b.TDAttributes,
		XFAM:          b.XFAM,
		MRTD:          b.MRTD,
		MRConfigID:    b.MRConfigID,
		MROwner:       b.MROwner,
		MROwnerConfig: b.MROwnerConfig,
		RTMRs:         rtmrs,
	}, nil
}
