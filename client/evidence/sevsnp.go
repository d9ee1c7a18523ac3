// Package evidence provides the client's sources of hardware evidence:
// the guest's SEV-SNP firmware through go-sev-guest, and a simulator for
// development that only a KMS configured with its test roots accepts.
package evidence

import (
	"context"
	"fmt"

	"github.com/google/go-sev-guest/abi"
	sevclient "github.com/google/go-sev-guest/client"

	"github.com/attested-kms/attested-kms/attestation"
	kmsv1 "github.com/attested-kms/attested-kms/proto/kms/v1"
)

// SEVSNP obtains extended attestation reports from the SEV-SNP firmware:
// through configfs-tsm when the kernel offers it, else /dev/sev-guest.
type SEVSNP struct {
	qp sevclient.QuoteProvider
}

// NewSEVSNP finds a quote provider. It fails on machines that are not
// SEV-SNP guests, naming what was tried.
func NewSEVSNP() (*SEVSNP, error) {
	qp, err := sevclient.GetQuoteProvider()
	if err != nil {
		return nil, fmt.Errorf("evidence: no SEV-SNP guest interface (tried configfs-tsm at /sys/kernel/config/tsm/report and /dev/sev-guest): %w", err)
	}
	return &SEVSNP{qp: qp}, nil
}

// Evidence implements client.EvidenceProvider.
func (s *SEVSNP) Evidence(_ context.Context, reportData [64]byte) (*kmsv1.Evidence, error) {
	raw, err := s.qp.GetRawQuote(reportData)
	if err != nil {
		return nil, fmt.Errorf("evidence: SEV-SNP report: %w", err)
	}
	return splitQuote(raw)
}

// splitQuote separates go-sev-guest's raw quote, a report followed by its
// certificate table, into the two evidence fields.
func splitQuote(raw []byte) (*kmsv1.Evidence, error) {
	if len(raw) < abi.ReportSize {
		return nil, fmt.Errorf("evidence: SEV-SNP quote is %d bytes, shorter than a report (%d)", len(raw), abi.ReportSize)
	}
	return &kmsv1.Evidence{
		Type:         string(attestation.PlatformSEVSNP),
		Report:       raw[:abi.ReportSize],
		Certificates: raw[abi.ReportSize:],
	}, nil
}
