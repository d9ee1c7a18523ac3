// Package attestation turns hardware evidence into verified, normalized
// claims. Platform-specific verification lives in subpackages (sevsnp, and
// later tdx and Azure vTPM); this package holds the shared claim types so
// that policy evaluation does not depend on any one platform's parser.
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
// evidence was encoded. Exactly one platform section is set.
type Claims struct {
	Platform Platform `json:"platform"`
	// ReportData is the 64 bytes the guest bound into its evidence; the
	// release service compares it with the binding digest.
	ReportData HexBytes   `json:"report_data"`
	SEVSNP     *SNPClaims `json:"sev_snp,omitempty"`
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
