package attestation

import "context"

// Evidence is what a workload presents, in the form the wire protocol
// carries it (proto Evidence). Which fields are used depends on Type.
type Evidence struct {
	Type Platform
	// Report is the SEV-SNP attestation report (sev-snp), the TD quote
	// (tdx) or the HCL report read from the vTPM (azure-*).
	Report []byte
	// Certificates is the certificate table of an extended SNP report
	// (sev-snp), or the VCEK certificate, DER or PEM, optionally followed
	// by its chain (azure-sev-snp-vtpm). May be empty when the KMS can
	// fetch the VCEK itself.
	Certificates []byte
	// TPMQuote is the vTPM quote (azure-*).
	TPMQuote *TPMQuote
	// TDQuote is the TD quote over the HCL report's TD report
	// (azure-tdx-vtpm).
	TDQuote []byte
	// Document is evidence in the JSON layout of the Confidential
	// Containers attesters (azure-*). When set, it replaces Report,
	// Certificates, TPMQuote and TDQuote.
	Document []byte
}

// TPMQuote is a TPM2_Quote result.
type TPMQuote struct {
	// Message is the marshalled TPMS_ATTEST structure that was signed.
	Message []byte
	// Signature is the marshalled TPMT_SIGNATURE over Message.
	Signature []byte
	// PCRs are the SHA-256 PCR values. Either exactly the PCRs the quote
	// selects, in ascending index order, or all 24 PCRs (index = PCR
	// number), as the Confidential Containers attesters send them.
	PCRs [][]byte
}

// Verifier turns evidence of one platform into verified claims. Failures
// are *Error values carrying a Reason.
type Verifier interface {
	Verify(ctx context.Context, ev *Evidence) (*Claims, error)
}
