// Package simulate models an Azure confidential VM's vTPM for development
// and tests: the go-tpm-tools TPM simulator (Microsoft's reference TPM)
// provisioned the way Azure's paravisor provisions the guest's vTPM, with
// a test-signed hardware report behind it.
//
// The model: an RSA-2048 restricted signing attestation key persisted at
// 0x81000003; NV index 0x01400001 holding the HCL report; NV index
// 0x01400002 for the guest's 64 bytes of user data. When the guest writes
// user data and then reads the HCL report, the VM makes a new HCL report
// the way the paravisor does: runtime data JSON (HCLAkPub, VM
// configuration, user-data), its SHA-256 as the hardware report's report
// data, and a hardware report — an SEV-SNP report signed by a simulated
// AMD chain (attestation/sevsnp/simulate), or a TD report built around a
// TD quote from an injected quote function.
//
// The TPM simulator is a process-wide C library: only one VM can be open
// at a time, and NewVM blocks until the previous one is closed.
package simulate

import (
	"bytes"
	"crypto/rand"
	"crypto/rsa"
	"crypto/sha256"
	"encoding/binary"
	"encoding/hex"
	"encoding/json"
	"encoding/pem"
	"errors"
	"fmt"
	"strings"
	"sync"

	"github.com/google/go-tpm-tools/simulator"
	"github.com/google/go-tpm/tpm2"
	"github.com/google/go-tpm/tpm2/transport"

	"github.com/attested-kms/attested-kms/attestation"
	"github.com/attested-kms/attested-kms/attestation/azurevtpm"
	"github.com/attested-kms/attested-kms/attestation/azurevtpm/guest"
	snpsim "github.com/attested-kms/attested-kms/attestation/sevsnp/simulate"
)

// hclNVSize is the size of the simulated HCL report NV index. Azure's is
// 2600 bytes; the reference TPM caps an NV index at 2048 (MAX_NV_INDEX_SIZE),
// which still holds a report with one RSA-2048 key.
const hclNVSize = 2048

// Options configure a VM. Exactly one of SNP and TDXQuote is set.
type Options struct {
	// Seed makes the TPM's hierarchy seeds, and so the attestation key,
	// deterministic. 0 means 1.
	Seed int64
	// SNP makes an azure-sev-snp-vtpm VM whose reports this signer signs.
	SNP *snpsim.Signer
	// SNPFields are the report's launch values; ReportData is replaced.
	// Set VMPL to other than 0 to model a report not from the paravisor.
	SNPFields snpsim.ReportFields
	// TDXQuote makes an azure-tdx-vtpm VM: it returns a TD quote (version
	// 4 or 5) with the given report data, e.g. from a TDX quote simulator.
	// The VM builds its TD report from the quote's body.
	TDXQuote func(reportData [64]byte) (quote []byte, err error)

	VMUniqueID     string // "" means a fixed test ID
	ConsoleEnabled bool
	SecureBootOff  bool // report secure-boot false (a verifiable but policy-relevant fact)

	// RefreshLag is the number of HCL report reads after a user-data
	// write that still return the previous report, as the paravisor is
	// not instantaneous.
	RefreshLag int

	// Corruptions, for negative tests.
	WrongAK          bool // runtime data lists a key other than the one that signs quotes
	AlterRuntimeData bool // runtime data changed after its hash went into the hardware report
	WrongPCRs        bool // Evidence's PCR values differ from the quoted ones
}

// VM is a simulated Azure confidential VM's vTPM. It is safe for
// concurrent use.
type VM struct {
	opts   Options
	sim    *simulator.Simulator
	raw    transport.TPM
	akPub  *rsa.PublicKey
	listed *rsa.PublicKey // the key the runtime data lists

	mu           sync.Mutex
	closed       bool
	pending      bool // user data written since the last report
	lag          int
	lastTDReport []byte
	lastTDQuote  []byte
}

// NewVM starts the TPM simulator and provisions it as Azure's paravisor
// does. Close the VM to release the simulator.
func NewVM(opts Options) (*VM, error) {
	if (opts.SNP == nil) == (opts.TDXQuote == nil) {
		return nil, errors.New("simulate: set exactly one of Options.SNP and Options.TDXQuote")
	}
	if opts.Seed == 0 {
		opts.Seed = 1
	}
	if opts.VMUniqueID == "" {
		opts.VMUniqueID = "5A1A7E57-0000-4000-8000-00000000A2E0"
	}
	sim, err := simulator.GetWithFixedSeedInsecure(opts.Seed)
	if err != nil {
		return nil, fmt.Errorf("simulate: start TPM simulator: %w", err)
	}
	vm := &VM{opts: opts, sim: sim, raw: transport.FromReadWriter(sim)}
	if err := vm.provision(); err != nil {
		_ = sim.Close()
		return nil, err
	}
	return vm, nil
}

// akTemplate is an RSA-2048 restricted signing key with RSASSA-SHA256, the
// kind of attestation key Azure's paravisor provisions.
var akTemplate = tpm2.TPMTPublic{
	Type:    tpm2.TPMAlgRSA,
	NameAlg: tpm2.TPMAlgSHA256,
	ObjectAttributes: tpm2.TPMAObject{
		FixedTPM:            true,
		FixedParent:         true,
		SensitiveDataOrigin: true,
		UserWithAuth:        true,
		NoDA:                true,
		Restricted:          true,
		SignEncrypt:         true,
	},
	Parameters: tpm2.NewTPMUPublicParms(tpm2.TPMAlgRSA, &tpm2.TPMSRSAParms{
		Scheme: tpm2.TPMTRSAScheme{
			Scheme:  tpm2.TPMAlgRSASSA,
			Details: tpm2.NewTPMUAsymScheme(tpm2.TPMAlgRSASSA, &tpm2.TPMSSigSchemeRSASSA{HashAlg: tpm2.TPMAlgSHA256}),
		},
		KeyBits: 2048,
	}),
	Unique: tpm2.NewTPMUPublicID(tpm2.TPMAlgRSA, &tpm2.TPM2BPublicKeyRSA{Buffer: make([]byte, 256)}),
}

func (vm *VM) provision() error {
	owner := tpm2.AuthHandle{Handle: tpm2.TPMRHOwner, Auth: tpm2.PasswordAuth(nil)}
	created, err := tpm2.CreatePrimary{PrimaryHandle: owner, InPublic: tpm2.New2B(akTemplate)}.Execute(vm.raw)
	if err != nil {
		return fmt.Errorf("simulate: create attestation key: %w", err)
	}
	if _, err := (tpm2.EvictControl{
		Auth:             owner,
		ObjectHandle:     tpm2.NamedHandle{Handle: created.ObjectHandle, Name: created.Name},
		PersistentHandle: guest.AKHandle,
	}).Execute(vm.raw); err != nil {
		return fmt.Errorf("simulate: persist attestation key: %w", err)
	}
	_, _ = tpm2.FlushContext{FlushHandle: created.ObjectHandle}.Execute(vm.raw)
	pub, err := created.OutPublic.Contents()
	if err != nil {
		return fmt.Errorf("simulate: attestation key public area: %w", err)
	}
	if vm.akPub, err = rsaPublic(pub); err != nil {
		return err
	}
	vm.listed = vm.akPub
	if vm.opts.WrongAK {
		other, err := rsa.GenerateKey(rand.Reader, 2048)
		if err != nil {
			return fmt.Errorf("simulate: wrong AK: %w", err)
		}
		vm.listed = &other.PublicKey
	}
	// Firmware and boot loader measurements, so that the quoted PCRs are
	// not all zero; PCRs 17-22 stay as the simulator starts them.
	for pcr := range 8 {
		if err := vm.ExtendPCR(pcr, sha256.Sum256(fmt.Appendf(nil, "simulated boot component %d", pcr))); err != nil {
			return err
		}
	}
	if err := guest.DefineNV(vm.raw, guest.HCLReportIndex, hclNVSize); err != nil {
		return fmt.Errorf("simulate: %w", err)
	}
	// The report made at boot, before the guest wrote any user data.
	return vm.regenerate()
}

func rsaPublic(pub *tpm2.TPMTPublic) (*rsa.PublicKey, error) {
	params, err := pub.Parameters.RSADetail()
	if err != nil {
		return nil, fmt.Errorf("simulate: attestation key parameters: %w", err)
	}
	n, err := pub.Unique.RSA()
	if err != nil {
		return nil, fmt.Errorf("simulate: attestation key modulus: %w", err)
	}
	return tpm2.RSAPub(params, n)
}

// Platform returns the evidence type the VM produces.
func (vm *VM) Platform() attestation.Platform {
	if vm.opts.SNP != nil {
		return attestation.PlatformAzureSNPVTPM
	}
	return attestation.PlatformAzureTDXVTPM
}

// AttestationKey returns the public attestation key at 0x81000003.
func (vm *VM) AttestationKey() *rsa.PublicKey { return vm.akPub }

// TPM returns the guest's view of the vTPM, like /dev/tpmrm0: writing the
// user data index and then reading the HCL report from offset 0 makes the
// paravisor refresh the report (after Options.RefreshLag reads).
func (vm *VM) TPM() transport.TPM { return (*guestTPM)(vm) }

type guestTPM VM

// TPM command codes and offsets the paravisor model watches for.
const (
	ccNVWrite      = 0x00000137
	ccNVRead       = 0x0000014e
	cmdHeaderSize  = 10
	nvIndexHandle  = cmdHeaderSize + 4 // the second handle: authHandle, nvIndex
	authSizeOffset = cmdHeaderSize + 8
)

// Send implements transport.TPM.
func (t *guestTPM) Send(cmd []byte) ([]byte, error) {
	vm := (*VM)(t)
	vm.mu.Lock()
	defer vm.mu.Unlock()
	if vm.closed {
		return nil, errors.New("simulate: VM is closed")
	}
	cc, index, ok := nvCommand(cmd)
	if ok && cc == ccNVRead && index == uint32(guest.HCLReportIndex) && vm.pending && nvReadOffset(cmd) == 0 {
		if vm.lag > 0 {
			vm.lag--
		} else if err := vm.regenerate(); err != nil {
			return nil, err
		}
	}
	rsp, err := vm.raw.Send(cmd)
	if err == nil && ok && cc == ccNVWrite && index == uint32(guest.UserDataIndex) {
		vm.pending = true
		vm.lag = vm.opts.RefreshLag
	}
	return rsp, err
}

// nvCommand returns the command code and NV index of an NV command.
func nvCommand(cmd []byte) (cc, index uint32, ok bool) {
	if len(cmd) < authSizeOffset {
		return 0, 0, false
	}
	cc = binary.BigEndian.Uint32(cmd[6:])
	if cc != ccNVRead && cc != ccNVWrite {
		return 0, 0, false
	}
	return cc, binary.BigEndian.Uint32(cmd[nvIndexHandle:]), true
}

// nvReadOffset returns the offset parameter of TPM2_NV_Read, or -1.
func nvReadOffset(cmd []byte) int {
	if len(cmd) < authSizeOffset+4 {
		return -1
	}
	params := authSizeOffset + 4 + int(binary.BigEndian.Uint32(cmd[authSizeOffset:]))
	if params < 0 || len(cmd) < params+4 {
		return -1
	}
	return int(binary.BigEndian.Uint16(cmd[params+2:]))
}

// Refresh makes a new HCL report from the current user data now, as the
// paravisor does when the guest reads the report after writing user data.
func (vm *VM) Refresh() error {
	vm.mu.Lock()
	defer vm.mu.Unlock()
	if vm.closed {
		return errors.New("simulate: VM is closed")
	}
	return vm.regenerate()
}

// ExtendPCR extends a SHA-256 PCR, as a measured component would.
func (vm *VM) ExtendPCR(pcr int, digest [32]byte) error {
	if pcr < 0 || pcr >= guest.NumPCRs {
		return fmt.Errorf("simulate: PCR %d out of range", pcr)
	}
	_, err := tpm2.PCRExtend{
		PCRHandle: tpm2.AuthHandle{Handle: tpm2.TPMHandle(pcr), Auth: tpm2.PasswordAuth(nil)},
		Digests: tpm2.TPMLDigestValues{Digests: []tpm2.TPMTHA{{
			HashAlg: tpm2.TPMAlgSHA256, Digest: digest[:],
		}}},
	}.Execute(vm.raw)
	if err != nil {
		return fmt.Errorf("simulate: extend PCR %d: %w", pcr, err)
	}
	return nil
}

// regenerate makes the HCL report from the user data now in NV and writes
// it to the report index. Callers hold vm.mu.
func (vm *VM) regenerate() error {
	userData, err := vm.userData()
	if err != nil {
		return err
	}
	rd := azurevtpm.RuntimeData{
		Keys: []azurevtpm.JWK{azurevtpm.NewRSAJWK(azurevtpm.AKKeyID, vm.listed, "sign")},
		VMConfiguration: azurevtpm.VMConfiguration{
			ConsoleEnabled: vm.opts.ConsoleEnabled,
			SecureBoot:     !vm.opts.SecureBootOff,
			TPMEnabled:     true,
			VMUniqueID:     vm.opts.VMUniqueID,
		},
	}
	if userData != nil {
		rd.UserData = strings.ToUpper(hex.EncodeToString(userData))
	}
	runtime, err := json.Marshal(rd)
	if err != nil {
		return fmt.Errorf("simulate: runtime data: %w", err)
	}
	var reportData [64]byte
	digest := sha256.Sum256(runtime)
	copy(reportData[:], digest[:])
	if vm.opts.AlterRuntimeData {
		rd.VMConfiguration.ConsoleEnabled = !rd.VMConfiguration.ConsoleEnabled
		if runtime, err = json.Marshal(rd); err != nil {
			return fmt.Errorf("simulate: runtime data: %w", err)
		}
	}

	var hcl []byte
	if vm.opts.SNP != nil {
		fields := vm.opts.SNPFields
		fields.ReportData = reportData
		report, _, err := vm.opts.SNP.Sign(fields)
		if err != nil {
			return err
		}
		hcl, err = azurevtpm.MarshalHCLReport(azurevtpm.ReportTypeSNP, azurevtpm.HashSHA256, report, runtime)
		if err != nil {
			return err
		}
	} else {
		quote, err := vm.opts.TDXQuote(reportData)
		if err != nil {
			return fmt.Errorf("simulate: TD quote: %w", err)
		}
		fields, err := TDReportFromQuote(quote)
		if err != nil {
			return err
		}
		report, err := azurevtpm.MarshalTDReport(fields)
		if err != nil {
			return fmt.Errorf("simulate: TD report from the quote: %w", err)
		}
		if hcl, err = azurevtpm.MarshalHCLReport(azurevtpm.ReportTypeTDX, azurevtpm.HashSHA256, report, runtime); err != nil {
			return err
		}
		vm.lastTDReport, vm.lastTDQuote = report, quote
	}
	if len(hcl) > hclNVSize {
		return fmt.Errorf("simulate: HCL report is %d bytes, NV index holds %d", len(hcl), hclNVSize)
	}
	padded := make([]byte, hclNVSize)
	copy(padded, hcl)
	if err := guest.WriteNV(vm.raw, guest.HCLReportIndex, padded); err != nil {
		return fmt.Errorf("simulate: %w", err)
	}
	vm.pending = false
	return nil
}

// userData reads NV 0x01400002, or returns nil if the guest has not
// defined it yet.
func (vm *VM) userData() ([]byte, error) {
	rsp, err := tpm2.NVReadPublic{NVIndex: guest.UserDataIndex}.Execute(vm.raw)
	if errors.Is(err, tpm2.TPMRCHandle) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("simulate: user data index: %w", err)
	}
	pub, err := rsp.NVPublic.Contents()
	if err != nil {
		return nil, fmt.Errorf("simulate: user data index: %w", err)
	}
	if !pub.Attributes.Written {
		return nil, nil
	}
	b, err := guest.ReadNV(vm.raw, guest.UserDataIndex)
	if err != nil {
		return nil, fmt.Errorf("simulate: %w", err)
	}
	// The paravisor reports 64 bytes whatever the index size.
	out := make([]byte, azurevtpm.UserDataSize)
	copy(out, b)
	return out, nil
}

// Evidence writes userData, refreshes the HCL report and returns complete
// evidence: HCL report, TPM quote over PCRs 0-23 with userData as
// qualifying data, and the VCEK with its chain (SNP, as Azure's THIM
// serves it) or the TD quote (TDX).
func (vm *VM) Evidence(userData [64]byte) (*attestation.Evidence, error) {
	vm.mu.Lock()
	defer vm.mu.Unlock()
	if vm.closed {
		return nil, errors.New("simulate: VM is closed")
	}
	if err := guest.WriteUserData(vm.raw, userData); err != nil {
		return nil, fmt.Errorf("simulate: %w", err)
	}
	if err := vm.regenerate(); err != nil {
		return nil, err
	}
	report, err := guest.ReadHCLReport(vm.raw)
	if err != nil {
		return nil, fmt.Errorf("simulate: %w", err)
	}
	quote, err := guest.Quote(vm.raw, userData[:])
	if err != nil {
		return nil, fmt.Errorf("simulate: %w", err)
	}
	if vm.opts.WrongPCRs {
		quote.PCRs[0][0] ^= 0x01
	}
	ev := &attestation.Evidence{Type: vm.Platform(), Report: report, TPMQuote: quote}
	if vm.opts.SNP != nil {
		if ev.Certificates, err = vm.certificatesPEM(); err != nil {
			return nil, err
		}
	} else {
		ev.TDQuote = bytes.Clone(vm.lastTDQuote)
	}
	return ev, nil
}

// Document returns Evidence(userData) as a Confidential Containers JSON
// document of the given version (1 or 2).
func (vm *VM) Document(userData [64]byte, version int) ([]byte, error) {
	ev, err := vm.Evidence(userData)
	if err != nil {
		return nil, err
	}
	return azurevtpm.MarshalDocument(ev, version)
}

// certificatesPEM is the VCEK followed by the ASK and ARK, in PEM.
func (vm *VM) certificatesPEM() ([]byte, error) {
	vcek, chain, err := vm.thim()
	if err != nil {
		return nil, err
	}
	return append(vcek, chain...), nil
}

func (vm *VM) thim() (vcek, chain []byte, err error) {
	s := vm.opts.SNP
	if s == nil {
		return nil, nil, errors.New("simulate: not an SEV-SNP VM")
	}
	cert, err := s.VCEK(vm.opts.SNPFields.TCB)
	if err != nil {
		return nil, nil, err
	}
	return pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: cert.Raw}), s.RootsPEM(), nil
}

// THIMResponse is what Azure IMDS answers at
// /metadata/THIM/amd/certification on this VM: the VCEK and the ASK/ARK
// chain in PEM.
func (vm *VM) THIMResponse() ([]byte, error) {
	vcek, chain, err := vm.thim()
	if err != nil {
		return nil, err
	}
	return json.Marshal(map[string]string{
		"vcekCert":         string(vcek),
		"certificateChain": string(chain),
		"cacheControl":     "86400",
	})
}

// TDQuote is what Azure IMDS's /acc/tdquote answers for a TD report: the
// quote of the VM's latest TD report. Other reports are refused.
func (vm *VM) TDQuote(tdReport []byte) ([]byte, error) {
	vm.mu.Lock()
	defer vm.mu.Unlock()
	if vm.lastTDReport == nil || !bytes.Equal(tdReport, vm.lastTDReport) {
		return nil, errors.New("simulate: not the TD report of this VM's latest HCL report")
	}
	return bytes.Clone(vm.lastTDQuote), nil
}

// Close releases the TPM simulator.
func (vm *VM) Close() error {
	vm.mu.Lock()
	defer vm.mu.Unlock()
	if vm.closed {
		return nil
	}
	vm.closed = true
	return vm.sim.Close()
}
