package simulate

import (
	"errors"
	"fmt"

	"github.com/google/go-tdx-guest/abi"
	tdxpb "github.com/google/go-tdx-guest/proto/tdx"

	"github.com/attested-kms/attested-kms/attestation/azurevtpm"
)

// quoteBody is the part of a TD quote body that repeats the TD report.
type quoteBody interface {
	GetTeeTcbSvn() []byte
	GetMrSeam() []byte
	GetMrSignerSeam() []byte
	GetTdAttributes() []byte
	GetXfam() []byte
	GetMrTd() []byte
	GetMrConfigId() []byte
	GetMrOwner() []byte
	GetMrOwnerConfig() []byte
	GetRtmrs() [][]byte
	GetReportData() []byte
}

// TDReportFromQuote returns the TD report a TD quote (version 4 or 5) was
// made from, as far as the quote body tells: the simulator builds the HCL
// report's TD report from the quote its injected quote function returns,
// so that the two agree the way a genuine pair does. The quote's
// signature is not checked.
func TDReportFromQuote(quote []byte) (*azurevtpm.TDReport, error) {
	q, err := abi.QuoteToProto(quote)
	if err != nil {
		return nil, fmt.Errorf("simulate: parse TD quote: %w", err)
	}
	var body quoteBody
	switch q := q.(type) {
	case *tdxpb.QuoteV4:
		body = q.GetTdQuoteBody()
	case *tdxpb.QuoteV5:
		if b := q.GetTdQuoteBodyDescriptor().GetTdQuoteBodyV5(); b != nil {
			body = b
		}
	}
	if body == nil {
		return nil, errors.New("simulate: TD quote has no TD quote body")
	}
	return &azurevtpm.TDReport{
		ReportData:    body.GetReportData(),
		TEETCBSVN:     body.GetTeeTcbSvn(),
		MRSeam:        body.GetMrSeam(),
		MRSignerSeam:  body.GetMrSignerSeam(),
		TDAttributes:  body.GetTdAttributes(),
		XFAM:          body.GetXfam(),
		MRTD:          body.GetMrTd(),
		MRConfigID:    body.GetMrConfigId(),
		MROwner:       body.GetMrOwner(),
		MROwnerConfig: body.GetMrOwnerConfig(),
		RTMRs:         body.GetRtmrs(),
	}, nil
}
