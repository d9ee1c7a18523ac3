package sevsnp

import (
	"bytes"
	"errors"
	"fmt"

	"github.com/attested-kms/attested-kms/attestation"
	"github.com/google/go-sev-guest/abi"
	"github.com/google/go-sev-guest/kds"
	spb "github.com/google/go-sev-guest/proto/sevsnp"
)

// Product lines this package knows the report layout of.
const (
	ProductMilan = "Milan"
	ProductGenoa = "Genoa"
	ProductTurin = "Turin"
)

// PolicyDebug is the guest policy bit that allows the host to debug the
// guest (read and write its memory). A guest launched with it set has no
// confidentiality; policy normally denies it.
const PolicyDebug uint64 = 1 << 19

// ReportSize is the size in bytes of a raw SEV-SNP attestation report.
const ReportSize = abi.ReportSize

// ParseReport decodes a raw attestation report without verifying anything.
// It is meant for tools and fuzzing; never base a release decision on its
// result. Product is set only for report version 3 and later, which carry
// the CPUID family/model/stepping; for version 2 it is "" and the TCB
// values are split in the Milan/Genoa layout (Turin never emits version 2).
func ParseReport(report []byte) (*attestation.SNPClaims, error) {
	rep, err := parseReport(report)
	if err != nil {
		return nil, err
	}
	info, err := abi.ParseSignerInfo(rep.GetSignerInfo())
	if err != nil {
		// Unreachable: abi.ReportToProto validated SIGNER_INFO already.
		return nil, attestation.Errorf(attestation.ReasonMalformed, fmt.Errorf("sevsnp: signer info: %w", err))
	}
	return normalize(rep, productLineOfReport(rep), info.SigningKey), nil
}

// parseReport checks the size, the structure (reserved fields must be
// zero) and the version of a raw report.
func parseReport(report []byte) (*spb.Report, error) {
	if len(report) != abi.ReportSize {
		return nil, attestation.Errorf(attestation.ReasonMalformed,
			fmt.Errorf("sevsnp: report is %d bytes, want %d", len(report), abi.ReportSize))
	}
	// Structure first, so random bytes are reported as malformed rather
	// than as an unsupported version.
	rep, err := abi.ReportToProto(report)
	if err != nil {
		return nil, attestation.Errorf(attestation.ReasonMalformed, fmt.Errorf("sevsnp: parse report: %w", err))
	}
	if v := rep.GetVersion(); v < abi.MinSupportedReportVersion || v > abi.MaxSupportedReportVersion {
		return nil, attestation.Errorf(attestation.ReasonUnsupported,
			fmt.Errorf("sevsnp: report version %d not in [%d, %d]", v, abi.MinSupportedReportVersion, abi.MaxSupportedReportVersion))
	}
	if rep.GetSignatureAlgo() != abi.SignEcdsaP384Sha384 {
		return nil, attestation.Errorf(attestation.ReasonUnsupported,
			fmt.Errorf("sevsnp: signature algorithm %d, want ECDSA P-384 SHA-384", rep.GetSignatureAlgo()))
	}
	return rep, nil
}

// productLineOfReport returns the product line named by the report's
// CPUID fields (version 3 and later), or "" when the report does not say.
func productLineOfReport(rep *spb.Report) string {
	fms := rep.GetCpuid1EaxFms()
	if fms == 0 {
		return ""
	}
	line := kds.ProductLineFromFms(fms)
	if line == "Unknown" {
		return ""
	}
	return line
}

// DecomposeTCB splits a TCB_VERSION word into its security patch levels.
// The layout depends on the product line: Milan and Genoa put the
// bootloader, TEE, SNP and microcode levels in bytes 0, 1, 6 and 7; Turin
// adds the FMC level in byte 0 and moves bootloader, TEE and SNP to bytes
// 1, 2 and 3 (SEV-SNP ABI 1.57, TCB_VERSION). An unknown or empty product
// line gets the Milan/Genoa layout.
func DecomposeTCB(productLine string, tcb uint64) attestation.TCBParts {
	p := kds.DecomposeTCBVersion(kds.TCBVersion(tcb))
	if productLine == ProductTurin {
		// kds names the bytes after the Milan layout; rename by position.
		return attestation.TCBParts{
			FMC:        p.BlSpl,  // byte 0
			Bootloader: p.TeeSpl, // byte 1
			TEE:        p.Spl4,   // byte 2
			SNP:        p.Spl5,   // byte 3
			Microcode:  p.UcodeSpl,
		}
	}
	return attestation.TCBParts{
		Bootloader: p.BlSpl,
		TEE:        p.TeeSpl,
		SNP:        p.SnpSpl,
		Microcode:  p.UcodeSpl,
	}
}

// ComposeTCB is the inverse of DecomposeTCB. FMC must be zero before Turin.
func ComposeTCB(productLine string, parts attestation.TCBParts) (uint64, error) {
	var p kds.TCBParts
	if productLine == ProductTurin {
		p = kds.TCBParts{BlSpl: parts.FMC, TeeSpl: parts.Bootloader, Spl4: parts.TEE, Spl5: parts.SNP, UcodeSpl: parts.Microcode}
	} else {
		if parts.FMC != 0 {
			return 0, fmt.Errorf("sevsnp: %s TCB has no FMC level (got %d)", productLine, parts.FMC)
		}
		p = kds.TCBParts{BlSpl: parts.Bootloader, TeeSpl: parts.TEE, SnpSpl: parts.SNP, UcodeSpl: parts.Microcode}
	}
	v, err := kds.ComposeTCBParts(p)
	if err != nil {
		return 0, fmt.Errorf("sevsnp: compose TCB: %w", err)
	}
	return uint64(v), nil
}

// normalize copies a parsed report into the platform-neutral claim type.
// Byte fields are cloned by abi.ReportToProto already, so the claims do not
// alias the caller's buffer.
func normalize(rep *spb.Report, productLine string, signer abi.ReportSigner) *attestation.SNPClaims {
	return &attestation.SNPClaims{
		Version:         rep.GetVersion(),
		Product:         productLine,
		Signer:          signer.String(),
		Measurement:     rep.GetMeasurement(),
		HostData:        rep.GetHostData(),
		ReportData:      rep.GetReportData(),
		Policy:          rep.GetPolicy(),
		Debug:           rep.GetPolicy()&PolicyDebug != 0,
		VMPL:            rep.GetVmpl(),
		GuestSVN:        rep.GetGuestSvn(),
		CurrentTCB:      DecomposeTCB(productLine, rep.GetCurrentTcb()),
		ReportedTCB:     DecomposeTCB(productLine, rep.GetReportedTcb()),
		CommittedTCB:    DecomposeTCB(productLine, rep.GetCommittedTcb()),
		LaunchTCB:       DecomposeTCB(productLine, rep.GetLaunchTcb()),
		ChipID:          rep.GetChipId(),
		FamilyID:        rep.GetFamilyId(),
		ImageID:         rep.GetImageId(),
		IDKeyDigest:     rep.GetIdKeyDigest(),
		AuthorKeyDigest: rep.GetAuthorKeyDigest(),
	}
}

// checkBinding checks that the endorsement key certificate speaks for the
// report: the key is derived for one TCB (and, for a VCEK, one chip), so a
// report claiming a TCB other than the certificate's was not produced by
// firmware at that TCB. go-sev-guest leaves this to its validate package;
// it lives here because the policy layer only sees claims, never the
// certificate.
func checkBinding(rep *spb.Report, productLine string, exts *kds.Extensions, signer abi.ReportSigner) error {
	// Compare by meaning, not by word: kds composes the certificate's
	// levels in the Milan layout whatever the product.
	cert := kds.DecomposeTCBVersion(exts.TCBVersion)
	got := DecomposeTCB(productLine, rep.GetReportedTcb())
	want := attestation.TCBParts{Bootloader: cert.BlSpl, TEE: cert.TeeSpl, SNP: cert.SnpSpl, Microcode: cert.UcodeSpl}
	got.FMC = 0 // go-sev-guest v0.15.0 does not read the certificate's FMC level.
	if got != want {
		return fmt.Errorf("sevsnp: reported TCB %+v differs from the %v certificate's TCB %+v", got, signer, want)
	}
	// A host may mask CHIP_ID (all zeros); otherwise it must be the VCEK's HWID.
	if signer == abi.VcekReportSigner {
		chip := rep.GetChipId()
		if !bytes.Equal(chip, make([]byte, len(chip))) && !bytes.Equal(chip, exts.HWID) {
			return errors.New("sevsnp: report CHIP_ID differs from the VCEK certificate's HWID")
		}
	}
	return nil
}
