package policy

import (
	"encoding/hex"
	"slices"
	"strconv"
	"strings"

	"github.com/attested-kms/attested-kms/attestation"
)

// snpConditions is a compiled sev_snp section, bare or nested in
// azure_sev_snp_vtpm. Nil sets mean "any".
type snpConditions struct {
	// at names conditions: "sev_snp.vmpl" or "azure_sev_snp_vtpm.sev_snp.vmpl".
	at           condPaths
	measurements map[string]struct{} // keyed by raw bytes; nil only when nested
	hostData     map[string]struct{}
	familyIDs    map[string]struct{}
	imageIDs     map[string]struct{}
	minTCB       *attestation.TCBParts
	allowDebug   bool
	vmpl         []uint32 // never empty: defaults to [0]
	minGuestSVN  uint32   // 0 is no constraint
}

// compileSNP compiles a sev_snp section. requireMeasurement is false
// inside azure_sev_snp_vtpm, where the measurement is the paravisor's.
func (v *validator) compileSNP(rs *rawSNP, path []any, prefix string, requireMeasurement bool) (*snpConditions, *rawSNP) {
	c := &snpConditions{at: newCondPaths(prefix, snpFields...), allowDebug: rs.AllowDebug, minTCB: rs.MinTCB}
	out := &rawSNP{AllowDebug: rs.AllowDebug, MinTCB: rs.MinTCB, MinGuestSVN: rs.MinGuestSVN}
	c.measurements, out.Measurements = v.hexList(rs.Measurements, measurementLen, path, "measurements", requireMeasurement)
	c.hostData, out.HostData = v.hexList(rs.HostData, hostDataLen, path, "host_data", false)
	c.familyIDs, out.FamilyIDs = v.hexList(rs.FamilyIDs, familyIDLen, path, "family_ids", false)
	c.imageIDs, out.ImageIDs = v.hexList(rs.ImageIDs, imageIDLen, path, "image_ids", false)
	if rs.MinGuestSVN != nil {
		c.minGuestSVN = *rs.MinGuestSVN
	}

	switch {
	case rs.VMPL == nil:
		c.vmpl = []uint32{0}
	case len(rs.VMPL) == 0:
		v.errorf(append(slices.Clip(path), "vmpl"), "empty list; omit the field for the default [0]")
	default:
		for i, l := range rs.VMPL {
			if l > 3 {
				v.errorf(append(slices.Clip(path), "vmpl", i), "VMPL %d does not exist (0-3)", l)
				continue
			}
			if slices.Contains(c.vmpl, l) {
				v.errorf(append(slices.Clip(path), "vmpl", i), "VMPL %d is listed twice", l)
				continue
			}
			c.vmpl = append(c.vmpl, l)
		}
		slices.Sort(c.vmpl)
	}
	out.VMPL = slices.Clone(c.vmpl)
	return c, out
}

// snpFields are the condition names of a sev_snp section.
var snpFields = []string{"measurements", "host_data", "family_ids", "image_ids",
	"min_tcb.bootloader", "min_tcb.tee", "min_tcb.snp", "min_tcb.microcode", "min_tcb.fmc",
	"allow_debug", "vmpl", "min_guest_svn"}

func (c *snpConditions) platform() attestation.Platform { return attestation.PlatformSEVSNP }

func (c *snpConditions) check(ev *attestation.Claims, r *recorder) {
	s := ev.SEVSNP
	if s == nil {
		r.fail(c.at.prefix, string(ev.Platform)+" evidence carries no SEV-SNP claims")
		return
	}
	at := c.at.of
	r.hexIn(at("measurements"), "measurement", "allowed measurement", c.measurements, s.Measurement)
	r.hexIn(at("host_data"), "host data", "allowed host data value", c.hostData, s.HostData)
	r.hexIn(at("family_ids"), "family id", "allowed family id", c.familyIDs, s.FamilyID)
	r.hexIn(at("image_ids"), "image id", "allowed image id", c.imageIDs, s.ImageID)
	if m := c.minTCB; m != nil {
		t := s.ReportedTCB
		checkTCBPart(r, at("min_tcb.bootloader"), "bootloader", t.Bootloader, m.Bootloader)
		checkTCBPart(r, at("min_tcb.tee"), "tee", t.TEE, m.TEE)
		checkTCBPart(r, at("min_tcb.snp"), "snp", t.SNP, m.SNP)
		checkTCBPart(r, at("min_tcb.microcode"), "microcode", t.Microcode, m.Microcode)
		checkTCBPart(r, at("min_tcb.fmc"), "fmc", t.FMC, m.FMC)
	}
	checkDebug(r, at("allow_debug"), s.Debug, c.allowDebug,
		"debug guest refused: its guest policy lets the host read and write guest memory (allow_debug is false)")
	vmpl := func() string {
		return "report was requested at VMPL " + strconv.FormatUint(uint64(s.VMPL), 10) + "; allowed: " + joinUints(c.vmpl)
	}
	if slices.Contains(c.vmpl, s.VMPL) {
		r.hold(at("vmpl"), vmpl)
	} else {
		r.fail(at("vmpl"), vmpl())
	}
	if c.minGuestSVN > 0 {
		svn := func(rel string) string {
			return "guest SVN " + strconv.FormatUint(uint64(s.GuestSVN), 10) + rel + strconv.FormatUint(uint64(c.minGuestSVN), 10)
		}
		if s.GuestSVN >= c.minGuestSVN {
			r.hold(at("min_guest_svn"), func() string { return svn(" meets the minimum ") })
		} else {
			r.fail(at("min_guest_svn"), svn(" is below the minimum "))
		}
	}
}

func checkTCBPart(r *recorder, cond, part string, reported, minimum uint8) {
	if reported >= minimum {
		r.hold(cond, func() string {
			return "reported TCB " + part + " is " + strconv.Itoa(int(reported)) + ", at least the minimum " + strconv.Itoa(int(minimum))
		})
		return
	}
	r.fail(cond, "reported TCB "+part+" is "+strconv.Itoa(int(reported))+", below the minimum "+strconv.Itoa(int(minimum)))
}

// checkDebug is the allow_debug condition of every hardware section.
func checkDebug(r *recorder, cond string, debug, allowed bool, refusal string) {
	switch {
	case !debug:
		r.hold(cond, func() string { return "not a debug guest" })
	case allowed:
		r.hold(cond, func() string { return "debug guest accepted (allow_debug is true)" })
	default:
		r.fail(cond, refusal)
	}
}

func hexOrEmpty(b []byte) string {
	if len(b) == 0 {
		return "(empty)"
	}
	return hex.EncodeToString(b)
}

// count renders "2 allowed measurements" / "1 allowed measurement".
func count(n int, noun string) string {
	s := strconv.Itoa(n) + " " + noun
	if n != 1 {
		s += "s"
	}
	return s
}

func joinUints(v []uint32) string {
	parts := make([]string, len(v))
	for i, x := range v {
		parts[i] = strconv.FormatUint(uint64(x), 10)
	}
	return strings.Join(parts, ", ")
}
