package tdx

import (
	"bytes"
	"encoding/binary"
	"encoding/hex"
	"errors"
	"fmt"
	"slices"
	"strings"

	"github.com/attested-kms/attested-kms/attestation"
	"github.com/google/go-tdx-guest/pcs"
)

// tcbResult is the outcome of matching a quote against Intel's TCB info
// and QE identity.
type tcbResult struct {
	status     pcs.TcbComponentStatus
	advisories []string
}

// evaluateTCB finds the platform's TCB level and the QE's, as Intel's
// TDX TCB info and QE identity specify (and go-tdx-guest implements):
//
//   - The TDX module must be the one the TCB info describes (MRSIGNERSEAM,
//     SEAM attributes under the mask) and the PCK certificate must be for
//     the TCB info's FMSPC and PCE ID.
//   - Platform level: the first level (levels are sorted, best first) whose
//     16 SGX component SVNs and PCESVN are <= the PCK certificate's and
//     whose TDX component SVNs are <= the quote's TEE_TCB_SVN (from index
//     2 when TEE_TCB_SVN[1], the TDX module major version, is not 0).
//   - With a module version, the TDX module identity "TDX_<version>" and
//     its first level with ISVSVN <= TEE_TCB_SVN[0].
//   - QE: MRSIGNER, ISVPRODID, MISCSELECT and ATTRIBUTES under their masks
//     must match; the level is the first with ISVSVN <= the QE's.
//
// go-tdx-guest rejects every status but UpToDate (checkTcbInfoTcbStatus,
// checkQeTcbStatus), and its exported SupportedTcbLevelsFromCollateral
// needs collateral that only a full TdxQuoteContext run (which would stop
// at that rejection, before checking the QE identity) installs. A known
// but out-of-date level is not a verification failure here but a claim
// the release policy judges, so the matching is done in this package, and
// the statuses are converged as Intel's quote verification library does:
// an out-of-date TDX module or QE makes the result OutOfDate (or
// OutOfDateConfigurationNeeded). Unlike go-tdx-guest, the platform
// level's status is not dropped when a TDX module identity applies.
//
// Failures: ReasonTCB (no match, identity mismatch), ReasonRevoked (a
// level Intel marks Revoked: the platform's keys are compromised).
func evaluateTCB(q *quote, ext *pcs.PckExtensions, ti *pcs.TcbInfo, qe *pcs.EnclaveIdentity) (*tcbResult, error) {
	b := q.body
	fail := func(format string, a ...any) (*tcbResult, error) {
		return nil, attestation.Errorf(attestation.ReasonTCB, fmt.Errorf("tdx: "+format, a...))
	}
	if !strings.EqualFold(ext.FMSPC, ti.Fmspc) {
		return fail("TCB info is for FMSPC %s, the PCK certificate for %s", ti.Fmspc, ext.FMSPC)
	}
	if !strings.EqualFold(ext.PCEID, ti.PceID) {
		return fail("TCB info is for PCE ID %s, the PCK certificate for %s", ti.PceID, ext.PCEID)
	}
	svn := b.teeTCBSVN
	moduleMrSigner, moduleAttrs, moduleMask := ti.TdxModule.Mrsigner.Bytes, ti.TdxModule.Attributes.Bytes, ti.TdxModule.AttributesMask.Bytes
	var module *pcs.TcbLevel
	if svn[1] > 0 {
		id := "TDX_" + hex.EncodeToString(svn[1:2])
		i := slices.IndexFunc(ti.TdxModuleIdentities, func(m pcs.TdxModuleIdentity) bool { return strings.EqualFold(m.ID, id) })
		if i < 0 {
			return fail("TCB info has no TDX module identity %s", id)
		}
		mi := &ti.TdxModuleIdentities[i]
		moduleMrSigner, moduleAttrs, moduleMask = mi.Mrsigner.Bytes, mi.Attributes.Bytes, mi.AttributesMask.Bytes
		for j := range mi.TcbLevels {
			if uint32(svn[0]) >= mi.TcbLevels[j].Tcb.Isvsvn {
				module = &mi.TcbLevels[j]
				break
			}
		}
		if module == nil {
			return fail("no TCB level of TDX module identity %s matches module SVN %d", id, svn[0])
		}
	}
	if !bytes.Equal(moduleMrSigner, b.mrSignerSeam) {
		return fail("MRSIGNERSEAM is not the TDX module signer in the TCB info")
	}
	if len(moduleMask) != len(b.seamAttributes) || len(moduleAttrs) != len(b.seamAttributes) || !bytes.Equal(masked(b.seamAttributes, moduleMask), moduleAttrs) {
		return fail("SEAM attributes do not match the TCB info")
	}

	var platform *pcs.TcbLevel
	for i := range ti.TcbLevels {
		if levelMatches(&ti.TcbLevels[i], ext, svn) {
			platform = &ti.TcbLevels[i]
			break
		}
	}
	if platform == nil {
		return fail("no TCB level of FMSPC %s matches the platform", ext.FMSPC)
	}

	qeLevel, err := matchQE(q.qeReport, qe)
	if err != nil {
		return nil, attestation.Errorf(attestation.ReasonTCB, fmt.Errorf("tdx: %w", err))
	}

	status := platform.TcbStatus
	advisories := slices.Clone(platform.AdvisoryIDs)
	for _, other := range []*pcs.TcbLevel{module, qeLevel} {
		if other == nil {
			continue
		}
		status = converge(status, other.TcbStatus)
		advisories = append(advisories, other.AdvisoryIDs...)
	}
	if status == pcs.TcbComponentStatusRevoked {
		return nil, attestation.Errorf(attestation.ReasonRevoked, errors.New("tdx: Intel has revoked the platform's TCB level"))
	}
	slices.Sort(advisories)
	return &tcbResult{status: status, advisories: slices.Compact(advisories)}, nil
}

func levelMatches(l *pcs.TcbLevel, ext *pcs.PckExtensions, teeTCBSVN []byte) bool {
	sgx, tdx := l.Tcb.SgxTcbcomponents, l.Tcb.TdxTcbcomponents
	if len(sgx) != len(ext.TCB.CPUSvnComponents) || len(tdx) != len(teeTCBSVN) {
		return false
	}
	for i, c := range sgx {
		if ext.TCB.CPUSvnComponents[i] < c.Svn {
			return false
		}
	}
	if ext.TCB.PCESvn < l.Tcb.Pcesvn {
		return false
	}
	start := 0
	if teeTCBSVN[1] > 0 {
		// Indexes 0 and 1 are the module SVN and version, judged by the
		// TDX module identity instead.
		start = 2
	}
	for i := start; i < len(tdx); i++ {
		if teeTCBSVN[i] < tdx[i].Svn {
			return false
		}
	}
	return true
}

// SGX enclave report offsets used for the QE identity.
const (
	qeMiscSelectOffset = 16
	qeAttributesOffset = 48
	qeMrSignerOffset   = 128
	qeIsvProdIDOffset  = 256
	qeIsvSvnOffset     = 258
)

func matchQE(report []byte, qe *pcs.EnclaveIdentity) (*pcs.TcbLevel, error) {
	misc := report[qeMiscSelectOffset : qeMiscSelectOffset+4]
	attrs := report[qeAttributesOffset : qeAttributesOffset+16]
	if !bytes.Equal(report[qeMrSignerOffset:qeMrSignerOffset+32], qe.Mrsigner.Bytes) {
		return nil, errors.New("QE MRSIGNER does not match the QE identity")
	}
	if binary.LittleEndian.Uint16(report[qeIsvProdIDOffset:]) != qe.IsvProdID {
		return nil, errors.New("QE ISVPRODID does not match the QE identity")
	}
	if !bytes.Equal(masked(misc, qe.MiscselectMask.Bytes), qe.Miscselect.Bytes) {
		return nil, errors.New("QE MISCSELECT does not match the QE identity")
	}
	if !bytes.Equal(masked(attrs, qe.AttributesMask.Bytes), qe.Attributes.Bytes) {
		return nil, errors.New("QE ATTRIBUTES do not match the QE identity")
	}
	isvsvn := uint32(binary.LittleEndian.Uint16(report[qeIsvSvnOffset:]))
	for i := range qe.TcbLevels {
		if qe.TcbLevels[i].Tcb.Isvsvn <= isvsvn {
			return &qe.TcbLevels[i], nil
		}
	}
	return nil, fmt.Errorf("no QE identity TCB level matches QE ISVSVN %d", isvsvn)
}

// masked returns v & mask; mask must be as long as v.
func masked(v, mask []byte) []byte {
	if len(v) != len(mask) {
		return nil
	}
	out := make([]byte, len(v))
	for i := range v {
		out[i] = v[i] & mask[i]
	}
	return out
}

// converge combines the platform status with a component's (TDX module
// or QE): Revoked dominates; an out-of-date component makes an otherwise
// current platform OutOfDate, or OutOfDateConfigurationNeeded when the
// platform needs configuration.
func converge(platform, component pcs.TcbComponentStatus) pcs.TcbComponentStatus {
	if platform == pcs.TcbComponentStatusRevoked || component == pcs.TcbComponentStatusRevoked {
		return pcs.TcbComponentStatusRevoked
	}
	if component != pcs.TcbComponentStatusOutOfDate && component != pcs.TcbComponentStatusOutOfDateConfigurationNeeded {
		return platform
	}
	switch platform {
	case pcs.TcbComponentStatusUpToDate, pcs.TcbComponentStatusSwHardeningNeeded:
		return pcs.TcbComponentStatusOutOfDate
	case pcs.TcbComponentStatusConfigurationNeeded, pcs.TcbComponentStatusConfigurationAndSWHardeningNeeded:
		return pcs.TcbComponentStatusOutOfDateConfigurationNeeded
	}
	return platform
}
