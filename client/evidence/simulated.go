package evidence

import (
	"context"
	"fmt"

	"github.com/attested-kms/attested-kms/attestation"
	"github.com/attested-kms/attested-kms/attestation/sevsnp/simulate"
	kmsv1 "github.com/attested-kms/attested-kms/proto/kms/v1"
)

// Simulated produces SEV-SNP reports signed by a simulated AMD chain. A
// KMS accepts them only when its configuration names the simulator's test
// roots, so this is safe to ship but useful only in development and tests.
type Simulated struct {
	signer *simulate.Signer
	fields simulate.ReportFields
}

// NewSimulated returns a provider whose reports carry fields (report data
// is filled in per call).
func NewSimulated(signer *simulate.Signer, fields simulate.ReportFields) *Simulated {
	return &Simulated{signer: signer, fields: fields}
}

// Evidence implements client.EvidenceProvider.
func (s *Simulated) Evidence(_ context.Context, reportData [64]byte) (*kmsv1.Evidence, error) {
	f := s.fields
	f.ReportData = reportData
	report, certs, err := s.signer.Sign(f)
	if err != nil {
		return nil, fmt.Errorf("evidence: simulated SEV-SNP report: %w", err)
	}
	return &kmsv1.Evidence{Type: string(attestation.PlatformSEVSNP), Report: report, Certificates: certs}, nil
}
