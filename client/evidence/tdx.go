package evidence

import (
	"context"
	"fmt"

	tdxclient "github.com/google/go-tdx-guest/client"

	"github.com/attested-kms/attested-kms/attestation"
	kmsv1 "github.com/attested-kms/attested-kms/proto/kms/v1"
)

// TDX obtains TD quotes from the guest's TDX module through configfs-tsm
// (Linux 6.7 and later), which asks the host's quoting enclave to sign.
type TDX struct {
	qp tdxclient.QuoteProvider
}

// NewTDX checks that configfs-tsm is present and backed by tdx_guest. It
// fails on machines that are not TDX guests, naming what was tried.
func NewTDX() (*TDX, error) {
	qp, err := tdxclient.GetQuoteProvider()
	if err == nil {
		err = qp.IsSupported()
	}
	if err != nil {
		return nil, fmt.Errorf("evidence: no TDX guest interface (tried configfs-tsm at /sys/kernel/config/tsm/report with provider tdx_guest): %w", err)
	}
	return &TDX{qp: qp}, nil
}

// Evidence implements client.EvidenceProvider.
func (t *TDX) Evidence(_ context.Context, reportData [64]byte) (*kmsv1.Evidence, error) {
	quote, err := t.qp.GetRawQuote(reportData)
	if err != nil {
		return nil, fmt.Errorf("evidence: TD quote: %w", err)
	}
	if len(quote) == 0 {
		return nil, fmt.Errorf("evidence: TD quote: configfs-tsm returned an empty quote")
	}
	return &kmsv1.Evidence{Type: string(attestation.PlatformTDX), Report: quote}, nil
}
