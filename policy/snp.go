package policy

import (
	"encoding/hex"
	"slices"
	"strconv"
	"strings"

	"github.com/attested-kms/attested-kms/attestation"
)

// snpConditions is a compiled sev_snp section. Nil sets mean "any".
type snpConditions struct {
	measurements map[string]struct{} // keyed by raw bytes
	hostData     map[string]struct{}
	familyIDs    map[string]struct{}
	imageIDs     map[string]struct{}
	minTCB       *attestation.TCBParts
	allowDebug   bool
	vmpl         []uint32 // never empty: defaults to [0]
	minGuestSVN  uint32   // 0 is no constraint
}

func (v *validator) compileSNP(rs *rawSNP, path []any) (*snpConditions, *rawSNP) {
	c := &snpConditions{allowDebug: rs.AllowDebug, minTCB: rs.MinTCB}
	out := &rawSNP{AllowDebug: rs.AllowDebug, MinTCB: rs.MinTCB, MinGuestSVN: rs.MinGuestSVN}
	c.measurements, out.Measurements = v.hexList(rs.Measurements, measurementLen, path, "measurements", true)
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

func (c *snpConditions) platform() attestation.Platform { return attestation.PlatformSEVSNP }

func (c *snpConditions) check(ev *attestation.Claims, d *denials) {
	s := ev.SEVSNP
	if s == nil {
		d.add("sev_snp", "sev-snp evidence carries no SEV-SNP claims")
		return
	}
	if _, ok := c.measurements[string(s.Measurement)]; !ok {
		d.add("sev_snp.measurements", "measurement "+hexOrEmpty(s.Measurement)+
			" is not among the "+count(len(c.measurements), "allowed measurement"))
	}
	if c.hostData != nil {
		if _, ok := c.hostData[string(s.HostData)]; !ok {
			d.add("sev_snp.host_data", "host data "+hexOrEmpty(s.HostData)+
				" is not among the "+count(len(c.hostData), "allowed host data value"))
		}
	}
	if c.familyIDs != nil {
		if _, ok := c.familyIDs[string(s.FamilyID)]; !ok {
			d.add("sev_snp.family_ids", "family id "+hexOrEmpty(s.FamilyID)+
				" is not among the "+count(len(c.familyIDs), "allowed family id"))
		}
	}
	if c.imageIDs != nil {
		if _, ok := c.imageIDs[string(s.ImageID)]; !ok {
			d.add("sev_snp.image_ids", "image id "+hexOrEmpty(s.ImageID)+
				" is not among the "+count(len(c.imageIDs), "allowed image id"))
		}
	}
	if m := c.minTCB; m != nil {
		r := s.ReportedTCB
		checkTCBPart(d, "bootloader", r.Bootloader, m.Bootloader)
		checkTCBPart(d, "tee", r.TEE, m.TEE)
		checkTCBPart(d, "snp", r.SNP, m.SNP)
		checkTCBPart(d, "microcode", r.Microcode, m.Microcode)
		checkTCBPart(d, "fmc", r.FMC, m.FMC)
	}
	if s.Debug && !c.allowDebug {
		d.add("sev_snp.allow_debug", "debug guest refused: its guest policy lets the host read and write guest memory (allow_debug is false)")
	}
	if !slices.Contains(c.vmpl, s.VMPL) {
		d.add("sev_snp.vmpl", "report was requested at VMPL "+strconv.FormatUint(uint64(s.VMPL), 10)+
			"; allowed: "+joinUints(c.vmpl))
	}
	if s.GuestSVN < c.minGuestSVN {
		d.add("sev_snp.min_guest_svn", "guest SVN "+strconv.FormatUint(uint64(s.GuestSVN), 10)+
			" is below the minimum "+strconv.FormatUint(uint64(c.minGuestSVN), 10))
	}
}

func checkTCBPart(d *denials, part string, reported, minimum uint8) {
	if reported < minimum {
		d.add("sev_snp.min_tcb."+part, "reported TCB "+part+" is "+strconv.Itoa(int(reported))+
			", below the minimum "+strconv.Itoa(int(minimum)))
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
