// Package guest talks to the vTPM of an Azure confidential VM from inside
// the guest: it writes the user data the paravisor copies into the HCL
// report, reads the HCL report, and quotes the PCRs with the attestation
// key the paravisor provisioned. It takes any go-tpm transport, so the
// same code runs against /dev/tpmrm0 and against the simulator in package
// simulate.
package guest

import (
	"bytes"
	"errors"
	"fmt"

	"github.com/google/go-tpm/tpm2"
	"github.com/google/go-tpm/tpm2/transport"

	"github.com/attested-kms/attested-kms/attestation"
)

// Handles the Azure paravisor uses (Azure confidential-computing CVM guest
// attestation; az-cvm-vtpm).
const (
	// HCLReportIndex is the NV index holding the HCL report.
	HCLReportIndex tpm2.TPMHandle = 0x01400001
	// UserDataIndex is the NV index the guest writes 64 bytes of user
	// data to; the paravisor copies them into the next HCL report.
	UserDataIndex tpm2.TPMHandle = 0x01400002
	// AKHandle is the persistent handle of the attestation key (HCLAkPub).
	AKHandle tpm2.TPMHandle = 0x81000003

	// UserDataSize is the size of the user data.
	UserDataSize = 64
	// NumPCRs is the number of PCRs quoted: all of a PC Client TPM.
	NumPCRs = 24

	// maxNVSize bounds NV reads: the HCL report index is 2600 bytes on
	// Azure, and no NV index of a TPM exceeds a few KiB.
	maxNVSize = 16 << 10
	// defaultNVChunk is used when the TPM does not report its NV buffer
	// size; every TPM 2.0 supports at least this much.
	defaultNVChunk = 512
	maxNVChunk     = 1024
)

// ownerAuth is the owner hierarchy with the empty password, as on Azure
// CVMs (the paravisor leaves owner auth empty for the guest).
func ownerAuth() tpm2.AuthHandle {
	return tpm2.AuthHandle{Handle: tpm2.TPMRHOwner, Auth: tpm2.PasswordAuth(nil)}
}

// nvPublic returns the public area and name of an NV index, or nil if the
// index is not defined.
func nvPublic(t transport.TPM, index tpm2.TPMHandle) (*tpm2.TPMSNVPublic, *tpm2.TPM2BName, error) {
	rsp, err := tpm2.NVReadPublic{NVIndex: index}.Execute(t)
	if err != nil {
		if errors.Is(err, tpm2.TPMRCHandle) {
			return nil, nil, nil
		}
		return nil, nil, fmt.Errorf("read public area of NV %#x: %w", uint32(index), err)
	}
	pub, err := rsp.NVPublic.Contents()
	if err != nil {
		return nil, nil, fmt.Errorf("NV %#x public area: %w", uint32(index), err)
	}
	return pub, &rsp.NVName, nil
}

// DefineUserDataIndex defines NV index UserDataIndex for UserDataSize
// bytes, owner readable and writable, as Azure guests do when it is
// missing (the paravisor does not define it). An index of another size is
// replaced.
func DefineUserDataIndex(t transport.TPM) error {
	pub, name, err := nvPublic(t, UserDataIndex)
	if err != nil {
		return err
	}
	if pub != nil && pub.DataSize == UserDataSize {
		return nil
	}
	if pub != nil {
		if _, err := (tpm2.NVUndefineSpace{
			AuthHandle: ownerAuth(),
			NVIndex:    tpm2.NamedHandle{Handle: UserDataIndex, Name: *name},
		}).Execute(t); err != nil {
			return fmt.Errorf("undefine NV %#x of %d bytes: %w", uint32(UserDataIndex), pub.DataSize, err)
		}
	}
	return DefineNV(t, UserDataIndex, UserDataSize)
}

// DefineNV defines an ordinary owner-readable and -writable NV index.
func DefineNV(t transport.TPM, index tpm2.TPMHandle, size uint16) error {
	_, err := tpm2.NVDefineSpace{
		AuthHandle: ownerAuth(),
		PublicInfo: tpm2.New2B(tpm2.TPMSNVPublic{
			NVIndex: index,
			NameAlg: tpm2.TPMAlgSHA256,
			Attributes: tpm2.TPMANV{
				OwnerWrite: true,
				OwnerRead:  true,
				AuthWrite:  true,
				AuthRead:   true,
				NoDA:       true,
				NT:         tpm2.TPMNTOrdinary,
			},
			DataSize: size,
		}),
	}.Execute(t)
	if err != nil {
		return fmt.Errorf("define NV %#x: %w", uint32(index), err)
	}
	return nil
}

// WriteUserData writes the 64 bytes of user data, defining the index if
// needed. The paravisor puts them into the HCL report it makes next.
func WriteUserData(t transport.TPM, data [UserDataSize]byte) error {
	if err := DefineUserDataIndex(t); err != nil {
		return err
	}
	return WriteNV(t, UserDataIndex, data[:])
}

// WriteNV writes b at offset 0 of an NV index with owner authorization,
// in chunks the TPM accepts.
func WriteNV(t transport.TPM, index tpm2.TPMHandle, b []byte) error {
	_, name, err := nvPublic(t, index)
	if err != nil {
		return err
	}
	if name == nil {
		return fmt.Errorf("NV %#x is not defined", uint32(index))
	}
	chunk := nvChunk(t)
	for off := 0; off < len(b); off += chunk {
		end := min(off+chunk, len(b))
		if _, err := (tpm2.NVWrite{
			AuthHandle: ownerAuth(),
			NVIndex:    tpm2.NamedHandle{Handle: index, Name: *name},
			Data:       tpm2.TPM2BMaxNVBuffer{Buffer: b[off:end]},
			Offset:     uint16(off),
		}).Execute(t); err != nil {
			return fmt.Errorf("write NV %#x: %w", uint32(index), err)
		}
	}
	return nil
}

// ReadHCLReport reads the HCL report (the whole NV index, padding
// included; azurevtpm.ParseHCLReport ignores the padding).
func ReadHCLReport(t transport.TPM) ([]byte, error) {
	return ReadNV(t, HCLReportIndex)
}

// ReadNV reads a whole NV index with owner authorization.
func ReadNV(t transport.TPM, index tpm2.TPMHandle) ([]byte, error) {
	pub, name, err := nvPublic(t, index)
	if err != nil {
		return nil, err
	}
	if pub == nil {
		return nil, fmt.Errorf("NV %#x is not defined", uint32(index))
	}
	if int(pub.DataSize) > maxNVSize {
		return nil, fmt.Errorf("NV %#x is %d bytes, limit %d", uint32(index), pub.DataSize, maxNVSize)
	}
	chunk := nvChunk(t)
	out := make([]byte, 0, pub.DataSize)
	for off := 0; off < int(pub.DataSize); off += chunk {
		n := min(chunk, int(pub.DataSize)-off)
		rsp, err := tpm2.NVRead{
			AuthHandle: ownerAuth(),
			NVIndex:    tpm2.NamedHandle{Handle: index, Name: *name},
			Size:       uint16(n),
			Offset:     uint16(off),
		}.Execute(t)
		if err != nil {
			return nil, fmt.Errorf("read NV %#x at %d: %w", uint32(index), off, err)
		}
		if len(rsp.Data.Buffer) != n {
			return nil, fmt.Errorf("read NV %#x at %d: got %d bytes, asked %d", uint32(index), off, len(rsp.Data.Buffer), n)
		}
		out = append(out, rsp.Data.Buffer...)
	}
	return out, nil
}

// nvChunk is the TPM's NV buffer size (TPM_PT_NV_BUFFER_MAX).
func nvChunk(t transport.TPM) int {
	rsp, err := tpm2.GetCapability{
		Capability:    tpm2.TPMCapTPMProperties,
		Property:      uint32(tpm2.TPMPTNVBufferMax),
		PropertyCount: 1,
	}.Execute(t)
	if err != nil {
		return defaultNVChunk
	}
	props, err := rsp.CapabilityData.Data.TPMProperties()
	if err != nil || len(props.TPMProperty) == 0 || props.TPMProperty[0].Property != tpm2.TPMPTNVBufferMax {
		return defaultNVChunk
	}
	v := int(props.TPMProperty[0].Value)
	if v < 64 {
		return defaultNVChunk
	}
	return min(v, maxNVChunk)
}

// pcrSelection selects the given PCRs of the SHA-256 bank.
func pcrSelection(pcrs ...uint) tpm2.TPMLPCRSelection {
	return tpm2.TPMLPCRSelection{PCRSelections: []tpm2.TPMSPCRSelection{{
		Hash:      tpm2.TPMAlgSHA256,
		PCRSelect: tpm2.PCClientCompatible.PCRs(pcrs...),
	}}}
}

// allPCRs lists PCRs 0-23.
func allPCRs() []uint {
	pcrs := make([]uint, NumPCRs)
	for i := range pcrs {
		pcrs[i] = uint(i)
	}
	return pcrs
}

// readPCRs reads the SHA-256 values of PCRs 0-23 (8 per command, the most
// a TPM returns at once) and the PCR update counter, failing if it moved
// between the commands.
func readPCRs(t transport.TPM) (values [][]byte, counter uint32, err error) {
	for first := 0; first < NumPCRs; first += 8 {
		batch := make([]uint, 8)
		for i := range batch {
			batch[i] = uint(first + i)
		}
		rsp, err := tpm2.PCRRead{PCRSelectionIn: pcrSelection(batch...)}.Execute(t)
		if err != nil {
			return nil, 0, fmt.Errorf("read PCRs %d-%d: %w", first, first+7, err)
		}
		if first > 0 && rsp.PCRUpdateCounter != counter {
			return nil, 0, errPCRsMoved
		}
		counter = rsp.PCRUpdateCounter
		if len(rsp.PCRValues.Digests) != len(batch) {
			return nil, 0, fmt.Errorf("read PCRs %d-%d: got %d values", first, first+7, len(rsp.PCRValues.Digests))
		}
		for _, d := range rsp.PCRValues.Digests {
			values = append(values, bytes.Clone(d.Buffer))
		}
	}
	return values, counter, nil
}

var errPCRsMoved = errors.New("PCRs were extended while being read")

// Quote quotes PCRs 0-23 of the SHA-256 bank with the attestation key,
// with qualifyingData as extra data, and reads the PCR values. The values
// are read before and after the quote and the quote is retried (a few
// times) if a PCR was extended meanwhile, so that they match the quoted
// digest.
func Quote(t transport.TPM, qualifyingData []byte) (*attestation.TPMQuote, error) {
	if len(qualifyingData) > 64 {
		return nil, fmt.Errorf("qualifying data is %d bytes, limit 64", len(qualifyingData))
	}
	ak, err := tpm2.ReadPublic{ObjectHandle: AKHandle}.Execute(t)
	if err != nil {
		return nil, fmt.Errorf("read attestation key %#x: %w", uint32(AKHandle), err)
	}
	const attempts = 3
	for range attempts {
		before, counter, err := readPCRs(t)
		if errors.Is(err, errPCRsMoved) {
			continue
		}
		if err != nil {
			return nil, err
		}
		rsp, err := tpm2.Quote{
			SignHandle:     tpm2.AuthHandle{Handle: AKHandle, Name: ak.Name, Auth: tpm2.PasswordAuth(nil)},
			QualifyingData: tpm2.TPM2BData{Buffer: qualifyingData},
			InScheme:       tpm2.TPMTSigScheme{Scheme: tpm2.TPMAlgNull},
			PCRSelect:      pcrSelection(allPCRs()...),
		}.Execute(t)
		if err != nil {
			return nil, fmt.Errorf("quote with attestation key %#x: %w", uint32(AKHandle), err)
		}
		_, after, err := readPCRs(t)
		if errors.Is(err, errPCRsMoved) || (err == nil && after != counter) {
			continue
		}
		if err != nil {
			return nil, err
		}
		return &attestation.TPMQuote{
			Message:   bytes.Clone(rsp.Quoted.Bytes()),
			Signature: tpm2.Marshal(rsp.Signature),
			PCRs:      before,
		}, nil
	}
	return nil, fmt.Errorf("PCRs kept changing during %d quote attempts", attempts)
}
