package policy

import (
	"encoding/hex"
	"regexp"
	"slices"
	"strconv"
	"strings"

	"github.com/attested-kms/attested-kms/attestation"
)

// Byte lengths of the TDX quote fields that policies pin.
const (
	tdxMeasurementLen = 48 // MRTD, RTMRs, MRCONFIGID, MROWNER, MROWNERCONFIG, MRSEAM
	teeTCBSVNLen      = 16
)

// tcbStatuses are Intel's names for the status of a TCB level (TCB info
// and QE identity), the values TDXClaims.TCBStatus takes. "Revoked" is
// left out on purpose: verification refuses a revoked level outright.
var tcbStatuses = []string{
	"UpToDate",
	"SWHardeningNeeded",
	"ConfigurationNeeded",
	"ConfigurationAndSWHardeningNeeded",
	"OutOfDate",
	"OutOfDateConfigurationNeeded",
}

// defaultTCBStatus is the only status accepted unless the policy lists others.
const defaultTCBStatus = "UpToDate"

var advisoryPattern = regexp.MustCompile(`^(?i)INTEL-SA-[0-9]{5}$`)

// rawTDX is a tdx section, bare or nested in azure_tdx_vtpm.
type rawTDX struct {
	MRTD                []string `yaml:"mrtd,omitempty"`
	RTMR0               []string `yaml:"rtmr0,omitempty"`
	RTMR1               []string `yaml:"rtmr1,omitempty"`
	RTMR2               []string `yaml:"rtmr2,omitempty"`
	RTMR3               []string `yaml:"rtmr3,omitempty"`
	MRConfigID          []string `yaml:"mrconfigid,omitempty"`
	MROwner             []string `yaml:"mrowner,omitempty"`
	MROwnerConfig       []string `yaml:"mrownerconfig,omitempty"`
	MRSeam              []string `yaml:"mrseam,omitempty"`
	AllowDebug          bool     `yaml:"allow_debug"`
	MinTEETCBSVN        *string  `yaml:"min_tee_tcb_svn,omitempty"`
	TCBStatuses         []string `yaml:"tcb_statuses,omitempty"`
	ForbiddenAdvisories []string `yaml:"forbidden_advisories,omitempty"`
}

// tdxConditions is a compiled tdx section. Nil sets mean "any".
type tdxConditions struct {
	at            condPaths
	mrtd          map[string]struct{} // nil only when nested
	rtmrs         [4]map[string]struct{}
	mrConfigID    map[string]struct{}
	mrOwner       map[string]struct{}
	mrOwnerConfig map[string]struct{}
	mrSeam        map[string]struct{}
	allowDebug    bool
	minTEETCBSVN  []byte              // nil: no constraint; else 16 bytes
	tcbStatuses   []string            // never empty: defaults to [UpToDate]
	forbidden     map[string]struct{} // upper-case advisory ids
}

// tdxFields are the condition names of a tdx section.
var tdxFields = []string{"mrtd", "rtmr0", "rtmr1", "rtmr2", "rtmr3", "mrconfigid", "mrowner",
	"mrownerconfig", "mrseam", "allow_debug", "min_tee_tcb_svn", "tcb_statuses", "forbidden_advisories"}

// compileTDX compiles a tdx section. requireMRTD is false inside
// azure_tdx_vtpm, where the TD is Microsoft's paravisor.
func (v *validator) compileTDX(rt *rawTDX, path []any, prefix string, requireMRTD bool) (*tdxConditions, *rawTDX) {
	c := &tdxConditions{at: newCondPaths(prefix, tdxFields...), allowDebug: rt.AllowDebug}
	out := &rawTDX{AllowDebug: rt.AllowDebug}
	c.mrtd, out.MRTD = v.hexList(rt.MRTD, tdxMeasurementLen, path, "mrtd", requireMRTD)
	c.rtmrs[0], out.RTMR0 = v.hexList(rt.RTMR0, tdxMeasurementLen, path, "rtmr0", false)
	c.rtmrs[1], out.RTMR1 = v.hexList(rt.RTMR1, tdxMeasurementLen, path, "rtmr1", false)
	c.rtmrs[2], out.RTMR2 = v.hexList(rt.RTMR2, tdxMeasurementLen, path, "rtmr2", false)
	c.rtmrs[3], out.RTMR3 = v.hexList(rt.RTMR3, tdxMeasurementLen, path, "rtmr3", false)
	c.mrConfigID, out.MRConfigID = v.hexList(rt.MRConfigID, tdxMeasurementLen, path, "mrconfigid", false)
	c.mrOwner, out.MROwner = v.hexList(rt.MROwner, tdxMeasurementLen, path, "mrowner", false)
	c.mrOwnerConfig, out.MROwnerConfig = v.hexList(rt.MROwnerConfig, tdxMeasurementLen, path, "mrownerconfig", false)
	c.mrSeam, out.MRSeam = v.hexList(rt.MRSeam, tdxMeasurementLen, path, "mrseam", false)

	if rt.MinTEETCBSVN != nil {
		fp := append(slices.Clip(path), "min_tee_tcb_svn")
		s := *rt.MinTEETCBSVN
		b, err := hex.DecodeString(s)
		switch {
		case len(s) != 2*teeTCBSVNLen:
			v.errorf(fp, "want %d hex digits (%d bytes), got %d characters", 2*teeTCBSVNLen, teeTCBSVNLen, len(s))
		case err != nil:
			v.errorf(fp, "not hex: %v", err)
		default:
			c.minTEETCBSVN = b
			h := hex.EncodeToString(b)
			out.MinTEETCBSVN = &h
		}
	}

	c.tcbStatuses = v.tcbStatusList(rt.TCBStatuses, path)
	out.TCBStatuses = slices.Clone(c.tcbStatuses)

	if rt.ForbiddenAdvisories != nil {
		fp := append(slices.Clip(path), "forbidden_advisories")
		if len(rt.ForbiddenAdvisories) == 0 {
			v.errorf(fp, "empty list; list the advisories to refuse or omit the field")
		}
		for i, a := range rt.ForbiddenAdvisories {
			if !advisoryPattern.MatchString(a) {
				v.errorf(append(slices.Clip(fp), i), "%s is not an Intel advisory id (INTEL-SA-nnnnn)", quote(a))
				continue
			}
			a = strings.ToUpper(a)
			if _, dup := c.forbidden[a]; dup {
				v.errorf(append(slices.Clip(fp), i), "%s is listed twice", a)
				continue
			}
			if c.forbidden == nil {
				c.forbidden = make(map[string]struct{}, len(rt.ForbiddenAdvisories))
			}
			c.forbidden[a] = struct{}{}
			out.ForbiddenAdvisories = append(out.ForbiddenAdvisories, a)
		}
		slices.Sort(out.ForbiddenAdvisories)
	}
	return c, out
}

// tcbStatusList validates tcb_statuses and returns it sorted, or the
// default.
func (v *validator) tcbStatusList(list []string, path []any) []string {
	fp := append(slices.Clip(path), "tcb_statuses")
	switch {
	case list == nil:
		return []string{defaultTCBStatus}
	case len(list) == 0:
		v.errorf(fp, "empty list; omit the field for the default [%s]", defaultTCBStatus)
		return nil
	}
	var out []string
	for i, s := range list {
		ip := append(slices.Clip(fp), i)
		if !slices.Contains(tcbStatuses, s) {
			hint := "; Intel's statuses: " + strings.Join(tcbStatuses, ", ")
			if j := slices.IndexFunc(tcbStatuses, func(t string) bool { return strings.EqualFold(s, t) }); j >= 0 {
				hint = "; did you mean " + tcbStatuses[j] + "?"
			}
			v.errorf(ip, "%s is not a TCB status%s", quote(s), hint)
			continue
		}
		if slices.Contains(out, s) {
			v.errorf(ip, "%s is listed twice", s)
			continue
		}
		out = append(out, s)
	}
	slices.Sort(out)
	return out
}

func (c *tdxConditions) platform() attestation.Platform { return attestation.PlatformTDX }

func (c *tdxConditions) check(ev *attestation.Claims, r *recorder) {
	t := ev.TDX
	if t == nil {
		r.fail(c.at.prefix, string(ev.Platform)+" evidence carries no TDX claims")
		return
	}
	at := c.at.of
	r.hexIn(at("mrtd"), "mrtd", "allowed mrtd value", c.mrtd, t.MRTD)
	for i, set := range c.rtmrs {
		if set == nil {
			continue
		}
		var got []byte
		if i < len(t.RTMRs) {
			got = t.RTMRs[i]
		}
		name := tdxFields[1+i]
		r.hexIn(at(name), name, "allowed "+name+" value", set, got)
	}
	r.hexIn(at("mrconfigid"), "mrconfigid", "allowed mrconfigid value", c.mrConfigID, t.MRConfigID)
	r.hexIn(at("mrowner"), "mrowner", "allowed mrowner value", c.mrOwner, t.MROwner)
	r.hexIn(at("mrownerconfig"), "mrownerconfig", "allowed mrownerconfig value", c.mrOwnerConfig, t.MROwnerConfig)
	r.hexIn(at("mrseam"), "mrseam", "allowed mrseam value", c.mrSeam, t.MRSeam)
	checkDebug(r, at("allow_debug"), t.Debug, c.allowDebug,
		"debug TD refused: its TD attributes let the host read and write TD memory (allow_debug is false)")
	if c.minTEETCBSVN != nil {
		checkTEETCBSVN(r, at("min_tee_tcb_svn"), t.TEETCBSVN, c.minTEETCBSVN)
	}
	if slices.Contains(c.tcbStatuses, t.TCBStatus) {
		r.hold(at("tcb_statuses"), func() string { return "TCB status " + t.TCBStatus + " is acceptable" })
	} else {
		status := "(none)"
		if t.TCBStatus != "" {
			status = quote(t.TCBStatus)
		}
		r.fail(at("tcb_statuses"), "TCB status "+status+" is not acceptable; acceptable: "+strings.Join(c.tcbStatuses, ", "))
	}
	if c.forbidden != nil {
		var hit []string
		for _, a := range t.AdvisoryIDs {
			a = strings.ToUpper(a)
			if _, bad := c.forbidden[a]; bad && !slices.Contains(hit, a) {
				hit = append(hit, a)
			}
		}
		if len(hit) == 0 {
			r.hold(at("forbidden_advisories"), func() string {
				n := len(c.forbidden)
				return "none of the " + strconv.Itoa(n) + " forbidden " + plural(n, "advisory", "advisories") + " applies (the platform lists " +
					strconv.Itoa(len(t.AdvisoryIDs)) + ")"
			})
		} else {
			r.fail(at("forbidden_advisories"), "the platform's TCB level is affected by forbidden "+
				plural(len(hit), "advisory", "advisories")+" "+strings.Join(hit, ", "))
		}
	}
}

// checkTEETCBSVN compares the TEE TCB SVN byte by byte, as Intel's TCB
// levels do: the 16 bytes are independent components (SEAM module, ...),
// not one number.
func checkTEETCBSVN(r *recorder, cond string, got, minimum []byte) {
	if len(got) != len(minimum) {
		r.fail(cond, "evidence carries a "+strconv.Itoa(len(got))+"-byte TEE TCB SVN; want "+strconv.Itoa(len(minimum)))
		return
	}
	var below []string
	for i := range minimum {
		if got[i] < minimum[i] {
			below = append(below, "byte "+strconv.Itoa(i)+" is "+strconv.Itoa(int(got[i]))+" < "+strconv.Itoa(int(minimum[i])))
		}
	}
	if len(below) == 0 {
		r.hold(cond, func() string {
			return "TEE TCB SVN " + hex.EncodeToString(got) + " meets the minimum " + hex.EncodeToString(minimum) + " in every component"
		})
		return
	}
	r.fail(cond, "TEE TCB SVN "+hex.EncodeToString(got)+" is below the minimum "+hex.EncodeToString(minimum)+": "+strings.Join(below, ", "))
}

// plural picks the singular form for n == 1.
func plural(n int, one, many string) string {
	if n == 1 {
		return one
	}
	return many
}
