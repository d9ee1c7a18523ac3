// Package azurevtpm verifies the evidence of Azure confidential VMs (and
// AKS confidential-VM node pools), whose guests see no SEV-SNP or TDX
// guest device but a vTPM run by the paravisor (HCL).
//
// The chain of trust: the hardware report (an SEV-SNP report signed by
// the VCEK, or a TD report quoted by Intel's QE) carries in its report
// data a hash of the HCL runtime data; the runtime data lists the vTPM's
// attestation key (HCLAkPub) and the 64 bytes of user data the guest
// wrote to NV index 0x01400002; the AK signs a TPM quote over the PCRs
// whose qualifying data is the same 64 bytes. The KMS's binding digest is
// both the user data and the qualifying data.
//
// Like package sevsnp, this package verifies (signatures, hashes,
// consistency) and leaves acceptance of measurements, TCB levels, PCR
// values and VM configuration to the release policy. The hardware report
// is verified through injected verifiers so that this package depends on
// no particular implementation; it does no I/O of its own.
package azurevtpm

import (
	"bytes"
	"context"
	"crypto/sha256"
	"crypto/sha512"
	"crypto/x509"
	"errors"
	"fmt"
	"hash"

	"github.com/attested-kms/attested-kms/attestation"
	"github.com/attested-kms/attested-kms/attestation/sevsnp"
)

// SNPVerifier verifies an SEV-SNP report with the certificate table of an
// extended report; *sevsnp.Verifier implements it.
type SNPVerifier interface {
	VerifyReport(ctx context.Context, report, certTable []byte) (*attestation.Claims, error)
}

// TDXVerifier verifies a TD quote; the tdx package's Verifier implements it.
type TDXVerifier interface {
	VerifyQuote(ctx context.Context, quote []byte) (*attestation.Claims, error)
}

// Options configure a Verifier. At least one hardware verifier is needed;
// evidence of a platform without one is rejected as unsupported.
type Options struct {
	SNP SNPVerifier
	TDX TDXVerifier
}

// Verifier verifies azure-sev-snp-vtpm and azure-tdx-vtpm evidence. It is
// safe for concurrent use if its hardware verifiers are.
type Verifier struct {
	snp SNPVerifier
	tdx TDXVerifier
}

// NewVerifier returns a Verifier for opts.
func NewVerifier(opts Options) (*Verifier, error) {
	if opts.SNP == nil && opts.TDX == nil {
		return nil, errors.New("azurevtpm: no SNP or TDX verifier configured")
	}
	return &Verifier{snp: opts.SNP, tdx: opts.TDX}, nil
}

// hclVMPL is the VMPL the paravisor runs at. Only a report it requested
// vouches for the runtime data: a report from a higher VMPL (the guest's)
// could carry the hash of anything.
const hclVMPL = 0

// Verify implements attestation.Verifier for azure-sev-snp-vtpm and
// azure-tdx-vtpm evidence, given as fields or as a Confidential
// Containers document (Evidence.Document, which then must be the only
// field besides Type).
//
// All structures are parsed first, so malformed evidence is rejected
// before any signature work. Then, failing closed, in this order: the
// hardware report (through the injected verifier; its errors pass
// through unchanged; for TDX also the TD report against its quote); the
// hardware report's report data against the hash of the runtime data; the
// runtime data and its attestation key; the TPM quote's signature with
// that key; its qualifying data against the runtime data's user-data; the
// PCR values against the quoted digest.
//
// Failures are *attestation.Error values: ReasonMalformed, ReasonUnsupported
// (evidence type, document version, PCR bank, missing hardware verifier),
// ReasonInconsistent (runtime data hash, SNP report not from the
// paravisor's VMPL 0, TD report vs. quote, user-data vs. qualifying data,
// PCR values vs. digest), ReasonSignature (TPM quote not signed by
// HCLAkPub), and whatever the hardware verifier returns.
func (v *Verifier) Verify(ctx context.Context, ev *attestation.Evidence) (*attestation.Claims, error) {
	if ev == nil || (ev.Type != attestation.PlatformAzureSNPVTPM && ev.Type != attestation.PlatformAzureTDXVTPM) {
		return nil, attestation.Errorf(attestation.ReasonUnsupported, errors.New("azurevtpm: not azure-sev-snp-vtpm or azure-tdx-vtpm evidence"))
	}
	if len(ev.Document) > 0 {
		if len(ev.Report) > 0 || len(ev.Certificates) > 0 || ev.TPMQuote != nil || len(ev.TDQuote) > 0 {
			return nil, malformed(errors.New("azurevtpm: evidence has both a document and separate fields"))
		}
		doc, err := ParseDocument(ev.Document)
		if err != nil {
			return nil, err
		}
		if doc.Type != ev.Type {
			return nil, malformed(fmt.Errorf("azurevtpm: document holds %s evidence, not %s", doc.Type, ev.Type))
		}
		ev = doc
	}
	p, err := parse(ev)
	if err != nil {
		return nil, malformed(err)
	}

	// 1. The hardware report.
	var hw *attestation.Claims
	var hwReportData []byte
	switch ev.Type {
	case attestation.PlatformAzureSNPVTPM:
		if hw, err = v.verifySNP(ctx, p.hcl.HardwareReport, ev.Certificates); err != nil {
			return nil, err
		}
		hwReportData = hw.SEVSNP.ReportData
	case attestation.PlatformAzureTDXVTPM:
		if hw, err = v.verifyTDX(ctx, p.tdReport, ev.TDQuote); err != nil {
			return nil, err
		}
		hwReportData = p.tdReport.ReportData
	}

	// 2. The hardware report vouches for exactly these runtime data bytes.
	if err := checkRuntimeDataHash(p.hcl, hwReportData); err != nil {
		return nil, attestation.Errorf(attestation.ReasonInconsistent, err)
	}

	// 3. The runtime data and the attestation key it lists.
	rd, err := ParseRuntimeData(p.hcl.RuntimeData)
	if err != nil {
		return nil, malformed(err)
	}
	ak, err := rd.AttestationKey()
	if err != nil {
		return nil, malformed(err)
	}
	userData, err := rd.UserDataBytes()
	if err != nil {
		return nil, malformed(err)
	}

	// 4. The TPM quote: signed by the AK, over the user data, over these PCRs.
	if err := p.sig.verify(ak, ev.TPMQuote.Message); err != nil {
		return nil, attestation.Errorf(attestation.ReasonSignature, fmt.Errorf("azurevtpm: TPM quote not signed by %s: %w", AKKeyID, err))
	}
	if err := checkUserData(userData, p.quote.extraData); err != nil {
		return nil, attestation.Errorf(attestation.ReasonInconsistent, err)
	}
	pcrs, err := quotedPCRs(p.quote, ev.TPMQuote.PCRs)
	if errors.Is(err, errPCRDigest) {
		return nil, attestation.Errorf(attestation.ReasonInconsistent, err)
	} else if err != nil {
		return nil, malformed(err)
	}

	akDER, err := x509.MarshalPKIXPublicKey(ak)
	if err != nil {
		return nil, malformed(fmt.Errorf("azurevtpm: encode %s: %w", AKKeyID, err))
	}
	claims := &attestation.Claims{
		Platform:   ev.Type,
		ReportData: userData,
		Revocation: hw.Revocation,
		SEVSNP:     hw.SEVSNP,
		TDX:        hw.TDX,
		AzureVTPM: &attestation.AzureVTPMClaims{
			AKPub:          akDER,
			UserData:       userData,
			VMUniqueID:     rd.VMConfiguration.VMUniqueID,
			SecureBoot:     rd.VMConfiguration.SecureBoot,
			TPMEnabled:     rd.VMConfiguration.TPMEnabled,
			ConsoleEnabled: rd.VMConfiguration.ConsoleEnabled,
			PCRs:           make(map[int]attestation.HexBytes, len(pcrs)),
		},
	}
	if ev.Type == attestation.PlatformAzureSNPVTPM {
		claims.TDX = nil
	} else {
		claims.SEVSNP = nil
	}
	for i, val := range pcrs {
		claims.AzureVTPM.PCRs[i] = val
	}
	return claims, nil
}

// parsed is the structure of azure-* evidence.
type parsed struct {
	hcl      *HCLReport
	tdReport *TDReport // azure-tdx-vtpm only
	quote    *quoteInfo
	sig      *tpmSignature
}

func parse(ev *attestation.Evidence) (*parsed, error) {
	hcl, err := ParseHCLReport(ev.Report)
	if err != nil {
		return nil, err
	}
	p := &parsed{hcl: hcl}
	switch ev.Type {
	case attestation.PlatformAzureSNPVTPM:
		if hcl.ReportType != ReportTypeSNP {
			return nil, fmt.Errorf("azurevtpm: %s evidence, but the HCL report holds a %v report", ev.Type, hcl.ReportType)
		}
		if len(ev.TDQuote) > 0 {
			return nil, errors.New("azurevtpm: azure-sev-snp-vtpm evidence with a TD quote")
		}
		if len(ev.Certificates) > sevsnp.MaxCertTableSize {
			return nil, fmt.Errorf("azurevtpm: certificates are %d bytes, limit %d", len(ev.Certificates), sevsnp.MaxCertTableSize)
		}
	case attestation.PlatformAzureTDXVTPM:
		if hcl.ReportType != ReportTypeTDX {
			return nil, fmt.Errorf("azurevtpm: %s evidence, but the HCL report holds a %v report", ev.Type, hcl.ReportType)
		}
		if len(ev.Certificates) > 0 {
			return nil, errors.New("azurevtpm: azure-tdx-vtpm evidence with certificates (the TD quote carries its own)")
		}
		if len(ev.TDQuote) == 0 {
			return nil, errors.New("azurevtpm: azure-tdx-vtpm evidence without the TD quote")
		}
		if len(ev.TDQuote) > MaxTDQuoteSize {
			return nil, fmt.Errorf("azurevtpm: TD quote is %d bytes, limit %d", len(ev.TDQuote), MaxTDQuoteSize)
		}
		if p.tdReport, err = ParseTDReport(hcl.HardwareReport); err != nil {
			return nil, err
		}
	}
	if ev.TPMQuote == nil {
		return nil, errors.New("azurevtpm: evidence without a TPM quote")
	}
	if len(ev.TPMQuote.PCRs) > NumPCRs {
		return nil, fmt.Errorf("azurevtpm: %d PCR values, limit %d", len(ev.TPMQuote.PCRs), NumPCRs)
	}
	if p.quote, err = parseQuoteAttest(ev.TPMQuote.Message); err != nil {
		return nil, err
	}
	if p.sig, err = parseSignature(ev.TPMQuote.Signature); err != nil {
		return nil, err
	}
	return p, nil
}

func (v *Verifier) verifySNP(ctx context.Context, report, certs []byte) (*attestation.Claims, error) {
	if v.snp == nil {
		return nil, attestation.Errorf(attestation.ReasonUnsupported, errors.New("azurevtpm: no SEV-SNP verifier configured"))
	}
	var table []byte
	if len(certs) > 0 {
		der, err := firstCertificateDER(certs)
		if err != nil {
			return nil, malformed(err)
		}
		if table, err = sevsnp.CertTableFromVCEK(der); err != nil {
			return nil, malformed(fmt.Errorf("azurevtpm: %w", err))
		}
	}
	// An empty table lets the SNP verifier fetch the VCEK from AMD's KDS.
	claims, err := v.snp.VerifyReport(ctx, report, table)
	if err != nil {
		return nil, err
	}
	if claims == nil || claims.SEVSNP == nil {
		return nil, malformed(errors.New("azurevtpm: SEV-SNP verifier returned no SEV-SNP claims"))
	}
	if claims.SEVSNP.VMPL != hclVMPL {
		return nil, attestation.Errorf(attestation.ReasonInconsistent,
			fmt.Errorf("azurevtpm: SEV-SNP report is from VMPL %d, not the paravisor's VMPL %d", claims.SEVSNP.VMPL, hclVMPL))
	}
	return claims, nil
}

func (v *Verifier) verifyTDX(ctx context.Context, td *TDReport, quote []byte) (*attestation.Claims, error) {
	if v.tdx == nil {
		return nil, attestation.Errorf(attestation.ReasonUnsupported, errors.New("azurevtpm: no TDX verifier configured"))
	}
	claims, err := v.tdx.VerifyQuote(ctx, quote)
	if err != nil {
		return nil, err
	}
	if claims == nil {
		return nil, malformed(errors.New("azurevtpm: TDX verifier returned no claims"))
	}
	if err := matchTDQuote(td, claims.TDX); err != nil {
		return nil, attestation.Errorf(attestation.ReasonInconsistent, err)
	}
	return claims, nil
}

// checkRuntimeDataHash checks that the hardware report data is the hash
// of the runtime data (of the HCL report's hash type), followed by zeros.
func checkRuntimeDataHash(hcl *HCLReport, reportData []byte) error {
	var h hash.Hash
	switch hcl.HashType {
	case HashSHA256:
		h = sha256.New()
	case HashSHA384:
		h = sha512.New384()
	case HashSHA512:
		h = sha512.New()
	default:
		return fmt.Errorf("azurevtpm: unknown hash type %d", uint32(hcl.HashType))
	}
	h.Write(hcl.RuntimeData)
	want := make([]byte, 64)
	copy(want, h.Sum(nil))
	if !bytes.Equal(reportData, want) {
		return errors.New("azurevtpm: hardware report data is not the hash of the HCL runtime data")
	}
	return nil
}

// checkUserData checks that the quote's qualifying data is the HCL
// user-data. The Confidential Containers attester passes a shorter nonce
// (48 bytes) as qualifying data and the paravisor pads it with zeros to
// the 64 bytes of user-data, so a shorter qualifying data matches its
// zero-padded form; the claims then carry the padded 64 bytes.
func checkUserData(userData, extraData []byte) error {
	if userData == nil {
		return errors.New("azurevtpm: HCL runtime data has no user-data; the report predates the guest's write to NV 0x01400002")
	}
	if len(extraData) == 0 {
		return errors.New("azurevtpm: TPM quote has no qualifying data")
	}
	padded := make([]byte, UserDataSize)
	copy(padded, extraData)
	if !bytes.Equal(userData, padded) {
		return errors.New("azurevtpm: TPM quote's qualifying data differs from the HCL user-data")
	}
	return nil
}

func malformed(err error) error {
	if attestation.ReasonOf(err) != "" {
		return err
	}
	return attestation.Errorf(attestation.ReasonMalformed, err)
}
