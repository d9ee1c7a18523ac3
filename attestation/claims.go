// Package attestation turns hardware evidence into verified, normalized
// claims. Platform-specific verification lives in subpackages (sevsnp, tdx,
// azurevtpm) and collateral fetching in collateral; this package holds the
// shared evidence and claim types so that the release service and policy
// evaluation do not depend on any one platform's parser.
package attestation

import (
	"encoding/hex"
	"encoding/json"
	"fmt"
)

// Platform names the kind of evidence that produced a set of claims.
type Platform string

// Evidence types understood by the KMS. The strings are part of the wire
// protocol (ReleaseKeyRequest.evidence.type) and of release policies.
const (
	PlatformSEVSNP Platform = "sev-snp"
	PlatformTDX    Platform = "tdx"
	// Azure confidential VMs: the guest sees a vTPM and an HCL report
	// whose hardware report (SNP report or TD report) vouches for the
	// vTPM's attestation key.
	PlatformAzureSNPVTPM Platform = "azure-sev-snp-vtpm"
	PlatformAzureTDXVTPM Platform = "azure-tdx-vtpm"
)

// Platforms lists every evidence type the KMS understands, sorted.
func Platforms() []Platform {
	return []Platform{PlatformAzureSNPVTPM, PlatformAzureTDXVTPM, PlatformSEVSNP, PlatformTDX}
}

// Revocation says whether certificate revocation was checked. Only an
// explicit offline verification (kms evidence verify --offline without
// CRLs at hand) may produce RevocationNotChecked; the release path fails
// instead.
type Revocation string

const (
	RevocationChecked    Revocation = "checked"
	RevocationNotChecked Revocation = "not checked"
)

// HexBytes is a byte string that marshals to lowercase hex in JSON, the
// form operators compare against policy files and vendor tools.
type HexBytes []byte

// MarshalJSON implements json.Marshaler.
func (h HexBytes) MarshalJSON() ([]byte, error) {
	return json.Marshal(hex.EncodeToString(h))
}

// UnmarshalJSON implements json.Unmarshaler.
func (h *HexBytes) UnmarshalJSON(b []byte) error {
	var s string
	if err := json.Unmarshal(b, &s); err != nil {
		return err
	}
	v, err := hex.DecodeString(s)
	if err != nil {
		return fmt.Errorf("attestation: hex bytes: %w", err)
	}
	*h = v
	return nil
}

// String returns the lowercase hex encoding.
func (h HexBytes) String() string { return hex.EncodeToString(h) }

// Claims are the verified facts about a workload, independent of how the
// evidence was encoded.
//
// Bare platforms set one hardware section (SEVSNP or TDX). Azure vTPM
// evidence sets AzureVTPM and the hardware section of the report that
// vouches for the vTPM (SEVSNP for azure-sev-snp-vtpm, TDX for
// azure-tdx-vtpm); that section's own ReportData is then the hash of the
// HCL runtime data, not the binding.
type Claims struct {
	Platform Platform `json:"platform"`
	// ReportData is the 64 bytes the guest bound into its evidence; the
	// release service compares it with the binding digest. On Azure vTPM
	// evidence it is the HCL user-data, which verification has checked
	// equals the TPM quote's qualifying data.
	ReportData HexBytes `json:"report_data"`
	// Revocation is RevocationChecked unless an offline verification was
	// explicitly allowed to proceed without CRLs.
	Revocation Revocation       `json:"revocation"`
	SEVSNP     *SNPClaims       `json:"sev_snp,omitempty"`
	TDX        *TDXClaims       `json:"tdx,omitempty"`
	AzureVTPM  *AzureVTPMClaims `json:"azure_vtpm,omitempty"`
}

// TCBParts is an AMD TCB version split into its security patch levels.
// FMC is zero on products before Turin.
type TCBParts struct {
	Bootloader uint8 `json:"bootloader" yaml:"bootloader"`
	TEE        uint8 `json:"tee" yaml:"tee"`
	SNP        uint8 `json:"snp" yaml:"snp"`
	Microcode  uint8 `json:"microcode" yaml:"microcode"`
	FMC        uint8 `json:"fmc,omitempty" yaml:"fmc,omitempty"`
}

// SNPClaims are the normalized contents of a verified SEV-SNP report.
type SNPClaims struct {
	Version         uint32   `json:"version"`
	Product         string   `json:"product"`     // "Milan", "Genoa", "Turin"
	Signer          string   `json:"signer"`      // "VCEK" or "VLEK"
	Measurement     HexBytes `json:"measurement"` // 48 bytes
	HostData        HexBytes `json:"host_data"`   // 32 bytes
	ReportData      HexBytes `json:"report_data"` // 64 bytes
	Policy          uint64   `json:"policy"`      // guest policy word
	Debug           bool     `json:"debug"`       // policy bit 19
	VMPL            uint32   `json:"vmpl"`
	GuestSVN        uint32   `json:"guest_svn"`
	CurrentTCB      TCBParts `json:"current_tcb"`
	ReportedTCB     TCBParts `json:"reported_tcb"`
	CommittedTCB    TCBParts `json:"committed_tcb"`
	LaunchTCB       TCBParts `json:"launch_tcb"`
	ChipID          HexBytes `json:"chip_id"`   // 64 bytes
	FamilyID        HexBytes `json:"family_id"` // 16 bytes
	ImageID         HexBytes `json:"image_id"`  // 16 bytes
	IDKeyDigest     HexBytes `json:"id_key_digest"`
	AuthorKeyDigest HexBytes `json:"author_key_digest"`
}

// TDXClaims are the normalized contents of a verified Intel TDX quote.
type TDXClaims struct {
	QuoteVersion  uint32     `json:"quote_version"` // 4 or 5
	MRTD          HexBytes   `json:"mrtd"`          // 48 bytes
	RTMRs         []HexBytes `json:"rtmrs"`         // RTMR0..3, 48 bytes each
	MRConfigID    HexBytes   `json:"mrconfigid"`    // 48 bytes
	MROwner       HexBytes   `json:"mrowner"`       // 48 bytes
	MROwnerConfig HexBytes   `json:"mrownerconfig"` // 48 bytes
	MRSeam        HexBytes   `json:"mrseam"`        // 48 bytes
	MRSignerSeam  HexBytes   `json:"mrsignerseam"`  // 48 bytes
	// TDAttributes is the 8-byte TD attributes field as in the quote;
	// Debug is its bit 0 (TUD.DEBUG).
	TDAttributes HexBytes `json:"td_attributes"`
	Debug        bool     `json:"debug"`
	XFAM         HexBytes `json:"xfam"`        // 8 bytes
	TEETCBSVN    HexBytes `json:"tee_tcb_svn"` // 16 bytes
	ReportData   HexBytes `json:"report_data"` // 64 bytes
	// FMSPC identifies the platform family whose TCB info was applied.
	FMSPC HexBytes `json:"fmspc"`
	// TCBStatus is the status of the platform's TCB level from Intel's TCB
	// info ("UpToDate", "SWHardeningNeeded", "ConfigurationNeeded",
	// "ConfigurationAndSWHardeningNeeded", "OutOfDate",
	// "OutOfDateConfigurationNeeded"), combined with the QE's; the release
	// policy decides which are acceptable.
	TCBStatus   string   `json:"tcb_status"`
	AdvisoryIDs []string `json:"advisory_ids,omitempty"`
}

// AzureVTPMClaims are the facts an Azure confidential VM's HCL report and
// vTPM quote establish, beside the hardware section of the Claims.
type AzureVTPMClaims struct {
	// AKPub is the PKIX DER of the vTPM attestation key (HCLAkPub) that
	// signed the TPM quote and that the hardware report vouches for.
	AKPub HexBytes `json:"ak_pub"`
	// UserData is the HCL report's user-data (64 bytes), equal to the TPM
	// quote's qualifying data.
	UserData       HexBytes `json:"user_data"`
	VMUniqueID     string   `json:"vm_unique_id,omitempty"`
	SecureBoot     bool     `json:"secure_boot"`
	TPMEnabled     bool     `json:"tpm_enabled"`
	ConsoleEnabled bool     `json:"console_enabled"`
	// PCRs are the SHA-256 bank values covered by the verified quote,
	// keyed by PCR index.
	PCRs map[int]HexBytes `json:"pcrs"`
}
