package policy

import (
	"maps"
	"regexp"
	"slices"
	"strconv"

	"gopkg.in/yaml.v3"

	"github.com/attested-kms/attested-kms/attestation"
)

const (
	pcrDigestLen = 32 // SHA-256 bank
	maxPCR       = 23
)

// rawAzureSNP is an azure_sev_snp_vtpm section.
type rawAzureSNP struct {
	VTPM   *rawVTPM `yaml:"vtpm"`
	SEVSNP *rawSNP  `yaml:"sev_snp"`
}

// rawAzureTDX is an azure_tdx_vtpm section.
type rawAzureTDX struct {
	VTPM *rawVTPM `yaml:"vtpm"`
	TDX  *rawTDX  `yaml:"tdx"`
}

// rawVTPM is the vtpm part of an Azure section.
type rawVTPM struct {
	SecureBoot  *bool    `yaml:"secure_boot"`
	PCRs        pcrMap   `yaml:"pcrs"`
	VMUniqueIDs []string `yaml:"vm_unique_ids,omitempty"`
}

// pcrMap is the pcrs mapping. Keys are decoded as text and parsed here, so
// that "7" and "07" cannot both decode to PCR 7 with one silently
// replacing the other.
type pcrMap map[string][]string

// MarshalYAML writes the PCR indices as integers in numeric order.
func (m pcrMap) MarshalYAML() (any, error) {
	keys := make([]int, 0, len(m))
	for k := range m {
		i, err := strconv.Atoi(k)
		if err != nil {
			return nil, err
		}
		keys = append(keys, i)
	}
	slices.Sort(keys)
	n := &yaml.Node{Kind: yaml.MappingNode}
	for _, k := range keys {
		var val yaml.Node
		if err := val.Encode(m[strconv.Itoa(k)]); err != nil {
			return nil, err
		}
		n.Content = append(n.Content, &yaml.Node{Kind: yaml.ScalarNode, Tag: "!!int", Value: strconv.Itoa(k)}, &val)
	}
	return n, nil
}

var pcrIndexPattern = regexp.MustCompile(`^(0|[1-9][0-9]?)$`)

// vtpmConditions is a compiled vtpm part.
type vtpmConditions struct {
	secureBoot  bool
	pcrs        []pcrCondition      // sorted by index; never empty
	vmUniqueIDs map[string]struct{} // lowercased; nil: any
}

type pcrCondition struct {
	index   int
	cond    string // "azure_...vtpm.vtpm.pcrs[7]"
	allowed map[string]struct{}
}

// azureConditions is a compiled azure_sev_snp_vtpm or azure_tdx_vtpm
// section: the vTPM conditions plus the hardware section's, which always
// exists so that its defaults (no debug guest, VMPL 0, TCB UpToDate) hold
// even when the policy does not write it.
type azureConditions struct {
	plat     attestation.Platform
	at       condPaths
	vtpm     *vtpmConditions
	hardware evidenceConditions // *snpConditions or *tdxConditions
}

func (v *validator) compileAzureSNP(ra *rawAzureSNP, path []any) (*azureConditions, *rawAzureSNP) {
	const prefix = "azure_sev_snp_vtpm"
	c := &azureConditions{plat: attestation.PlatformAzureSNPVTPM, at: newCondPaths(prefix, vtpmFields...)}
	out := &rawAzureSNP{}
	c.vtpm, out.VTPM = v.compileVTPM(ra.VTPM, path, c.at)
	hw := ra.SEVSNP
	if hw == nil {
		hw = &rawSNP{}
	}
	c.hardware, out.SEVSNP = v.compileSNP(hw, append(slices.Clip(path), "sev_snp"), prefix+".sev_snp", false)
	return c, out
}

func (v *validator) compileAzureTDX(ra *rawAzureTDX, path []any) (*azureConditions, *rawAzureTDX) {
	const prefix = "azure_tdx_vtpm"
	c := &azureConditions{plat: attestation.PlatformAzureTDXVTPM, at: newCondPaths(prefix, vtpmFields...)}
	out := &rawAzureTDX{}
	c.vtpm, out.VTPM = v.compileVTPM(ra.VTPM, path, c.at)
	hw := ra.TDX
	if hw == nil {
		hw = &rawTDX{}
	}
	c.hardware, out.TDX = v.compileTDX(hw, append(slices.Clip(path), "tdx"), prefix+".tdx", false)
	return c, out
}

// vtpmFields are the fixed condition names of a vtpm part.
var vtpmFields = []string{"vtpm", "vtpm.secure_boot", "vtpm.pcrs", "vtpm.vm_unique_ids"}

func (v *validator) compileVTPM(rv *rawVTPM, sectionPath []any, at condPaths) (*vtpmConditions, *rawVTPM) {
	path := append(slices.Clip(sectionPath), "vtpm")
	c := &vtpmConditions{secureBoot: true}
	out := &rawVTPM{}
	if rv == nil {
		v.errorf(path, "required: on Azure the vTPM's PCRs, not the paravisor's hardware measurement, identify the workload")
		return c, out
	}
	if rv.SecureBoot != nil {
		c.secureBoot = *rv.SecureBoot
	}
	out.SecureBoot = &c.secureBoot

	pp := append(slices.Clip(path), "pcrs")
	switch {
	case rv.PCRs == nil:
		v.errorf(pp, "required: map the PCRs that identify the workload (0-23) to their allowed SHA-256 values; without them this rule would release to any Azure confidential VM")
	case len(rv.PCRs) == 0:
		v.errorf(pp, "empty mapping; without PCRs this rule would release to any Azure confidential VM")
	}
	seen := make(map[int]bool, len(rv.PCRs))
	out.PCRs = make(pcrMap, len(rv.PCRs))
	// Sorted, so errors come in a stable order.
	for _, key := range slices.Sorted(maps.Keys(rv.PCRs)) {
		list := rv.PCRs[key]
		kp := append(slices.Clip(pp), mapKey(key))
		if !pcrIndexPattern.MatchString(key) {
			v.errorf(kp, "PCR index %s: want a decimal number 0-%d", quote(key), maxPCR)
			continue
		}
		i, _ := strconv.Atoi(key)
		if i > maxPCR {
			v.errorf(kp, "PCR %d does not exist (0-%d)", i, maxPCR)
			continue
		}
		if seen[i] {
			v.errorf(kp, "PCR %d is listed twice", i)
			continue
		}
		seen[i] = true
		set, canon := v.hexList(list, pcrDigestLen, pp, mapKey(key), true)
		if set == nil {
			continue
		}
		c.pcrs = append(c.pcrs, pcrCondition{index: i, cond: at.of("vtpm.pcrs") + "[" + key + "]", allowed: set})
		out.PCRs[key] = canon
	}
	slices.SortFunc(c.pcrs, func(a, b pcrCondition) int { return a.index - b.index })

	c.vmUniqueIDs, out.VMUniqueIDs = v.stringList(rv.VMUniqueIDs, path, "vm_unique_ids", true, checkGUID)
	return c, out
}

func (c *azureConditions) platform() attestation.Platform { return c.plat }

func (c *azureConditions) check(ev *attestation.Claims, r *recorder) {
	c.vtpm.check(ev.AzureVTPM, c.at, r)
	c.hardware.check(ev, r)
}

func (c *vtpmConditions) check(a *attestation.AzureVTPMClaims, at condPaths, r *recorder) {
	if a == nil {
		r.fail(at.of("vtpm"), "the evidence carries no vTPM claims")
		return
	}
	if c.secureBoot {
		if a.SecureBoot {
			r.hold(at.of("vtpm.secure_boot"), func() string { return "secure boot is on" })
		} else {
			r.fail(at.of("vtpm.secure_boot"), "secure boot is off: the VM's boot chain was not verified (secure_boot is required)")
		}
	}
	for i := range c.pcrs {
		p := &c.pcrs[i]
		got, ok := a.PCRs[p.index]
		switch {
		case !ok:
			r.fail(p.cond, "PCR "+strconv.Itoa(p.index)+" is not among the PCRs the verified quote covers")
		case isIn(p.allowed, got):
			r.hold(p.cond, func() string { return "PCR " + strconv.Itoa(p.index) + " value " + hexOrEmpty(got) + " is allowed" })
		default:
			r.fail(p.cond, "PCR "+strconv.Itoa(p.index)+" value "+hexOrEmpty(got)+" is not among the "+
				count(len(p.allowed), "allowed value"))
		}
	}
	if c.vmUniqueIDs != nil {
		cond := at.of("vtpm.vm_unique_ids")
		switch {
		case a.VMUniqueID == "":
			r.fail(cond, "the evidence carries no VM unique id")
		case inSet(c.vmUniqueIDs, a.VMUniqueID, true):
			r.hold(cond, func() string { return "VM unique id " + quote(a.VMUniqueID) + " is allowed" })
		default:
			r.fail(cond, "VM unique id "+quote(a.VMUniqueID)+" is not among the "+count(len(c.vmUniqueIDs), "allowed VM unique id"))
		}
	}
}

func isIn(set map[string]struct{}, b []byte) bool {
	_, ok := set[string(b)]
	return ok
}
