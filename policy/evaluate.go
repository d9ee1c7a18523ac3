package policy

import (
	"slices"
	"strconv"
	"strings"

	"github.com/attested-kms/attested-kms/attestation"
)

// Input is what a release decision is made from. Both parts must already be
// verified: Evidence by the attestation package (signature chain,
// revocation, binding), Token by the token verifier (signature, expiry).
type Input struct {
	Evidence *attestation.Claims
	// Token holds the verified access token's claims as decoded from JSON
	// (strings, float64 or json.Number, bool, []any, map[string]any).
	Token map[string]any
}

// Decision is the outcome of Evaluate.
type Decision struct {
	Allowed bool
	// Rule names the granting rule when Allowed.
	Rule string
	// Denials lists why each applicable rule did not grant: every failing
	// condition of every rule covering the evidence's platform, in rule
	// order. Empty when Allowed.
	Denials []Denial
}

// Denial is one unmet condition.
type Denial struct {
	// Rule is the rule the condition belongs to, or "" for a denial of the
	// whole policy (no evidence, no rule for the evidence's platform).
	Rule string
	// Condition is the grammar path of the condition, e.g.
	// "sev_snp.measurements", "sev_snp.min_tcb.snp", "tdx.tcb_statuses",
	// "azure_sev_snp_vtpm.vtpm.pcrs[7]", "token.claims.xms_az_rid".
	Condition string
	// Reason explains the failure in operator words. It quotes measurements
	// and identity claims (not secrets) but never the token itself nor the
	// values of arbitrary claims.
	Reason string
}

// Evaluate decides whether in satisfies the policy. Rules are tried in
// order; the first whose conditions all hold grants. It never panics on
// missing or partial input: those are denials.
func (p *Policy) Evaluate(in Input) Decision {
	d, _ := p.run(in, false)
	return d
}

// run is the one implementation behind Evaluate and Explain, so the two
// cannot disagree: explaining only adds the record of the conditions that
// held and goes on through the rules after the granting one.
func (p *Policy) run(in Input, explain bool) (Decision, []RuleExplanation) {
	if p == nil || len(p.rules) == 0 {
		return deny(Denial{Condition: "policy", Reason: "no release policy is configured"}), nil
	}
	var rules []RuleExplanation
	if explain {
		rules = make([]RuleExplanation, 0, len(p.rules))
	}
	ev := in.Evidence
	if ev == nil {
		if explain {
			for _, r := range p.rules {
				rules = append(rules, RuleExplanation{Name: r.name, Platform: r.platform()})
			}
		}
		return deny(Denial{Condition: "evidence", Reason: "no verified evidence was presented; every rule requires attestation"}), rules
	}
	rec := recorder{explain: explain}
	covered := false
	granted := ""
	for _, r := range p.rules {
		// A rule for another platform is irrelevant to this workload;
		// listing its failures would bury the denials that matter.
		if r.evidence == nil || r.evidence.platform() != ev.Platform {
			if explain {
				rules = append(rules, RuleExplanation{Name: r.name, Platform: r.platform()})
			}
			continue
		}
		covered = true
		rec.rule = r.name
		rec.results = nil
		before := len(rec.failures)
		r.evidence.check(ev, &rec)
		if r.token != nil {
			r.token.check(in.Token, &rec)
		}
		if explain {
			rules = append(rules, RuleExplanation{Name: r.name, Platform: r.platform(), Applies: true, Conditions: rec.results})
		}
		if len(rec.failures) == before && granted == "" {
			granted = r.name
			if !explain {
				break
			}
		}
	}
	switch {
	case granted != "":
		return Decision{Allowed: true, Rule: granted}, rules
	case !covered:
		return deny(Denial{Condition: "evidence.platform", Reason: "no rule accepts " +
			quote(string(ev.Platform)) + " evidence; rules cover " + p.platforms()}), rules
	}
	return Decision{Denials: rec.failures}, rules
}

// recorder collects the outcome of every condition of the rule being
// checked: failures always, conditions that held only when explaining, so
// Evaluate pays nothing for Explain.
type recorder struct {
	rule     string
	explain  bool
	failures []Denial
	results  []ConditionResult // the current rule's, when explaining
}

// fail records an unmet condition.
func (r *recorder) fail(condition, reason string) {
	r.failures = append(r.failures, Denial{Rule: r.rule, Condition: condition, Reason: reason})
	if r.explain {
		r.results = append(r.results, ConditionResult{Condition: condition, Reason: reason})
	}
}

// hold records a condition that held. msg says what matched; it runs only
// when explaining.
func (r *recorder) hold(condition string, msg func() string) {
	if r.explain {
		r.results = append(r.results, ConditionResult{Condition: condition, Held: true, Reason: msg()})
	}
}

// hexIn checks an optional allow-list of byte strings; a nil set is no
// condition. what names the value ("mrtd"), noun the list's entries
// ("allowed mrtd value").
func (r *recorder) hexIn(condition, what, noun string, set map[string]struct{}, got []byte) {
	if set == nil {
		return
	}
	if _, ok := set[string(got)]; ok {
		r.hold(condition, func() string { return what + " " + hexOrEmpty(got) + " is allowed" })
		return
	}
	r.fail(condition, what+" "+hexOrEmpty(got)+" is not among the "+count(len(set), noun))
}

// condPaths holds a section's condition names, joined once at compile time
// so that evaluation does not allocate them.
type condPaths struct {
	prefix string
	m      map[string]string
}

func newCondPaths(prefix string, fields ...string) condPaths {
	m := make(map[string]string, len(fields))
	for _, f := range fields {
		m[f] = prefix + "." + f
	}
	return condPaths{prefix: prefix, m: m}
}

// of returns prefix.field. Fields missing from the table are joined on the
// spot, which costs an allocation but is never wrong.
func (c condPaths) of(field string) string {
	if s, ok := c.m[field]; ok {
		return s
	}
	return c.prefix + "." + field
}

func deny(d Denial) Decision { return Decision{Denials: []Denial{d}} }

func (p *Policy) platforms() string {
	var out []string
	for _, r := range p.rules {
		if r.evidence == nil {
			continue
		}
		if s := string(r.evidence.platform()); !slices.Contains(out, s) {
			out = append(out, s)
		}
	}
	return strings.Join(out, ", ")
}

// maxSummaryDenials bounds Summary so a policy with many rules cannot blow
// up a log line or a gRPC status message.
const maxSummaryDenials = 8

// Summary renders the decision on one line for logs and gRPC status
// messages, e.g.
//
//	denied: rule "prod": sev_snp.vmpl: report was requested at VMPL 2; allowed: 0
//
// It contains rule names, conditions and reasons only, which by
// construction hold no token and no secret.
func (d Decision) Summary() string {
	if d.Allowed {
		return "granted by rule " + strconv.Quote(d.Rule)
	}
	if len(d.Denials) == 0 {
		return "denied"
	}
	var sb strings.Builder
	sb.WriteString("denied: ")
	prev := "\x00"
	for i, dn := range d.Denials {
		if i == maxSummaryDenials {
			sb.WriteString("; and " + strconv.Itoa(len(d.Denials)-i) + " more")
			break
		}
		if i > 0 {
			sb.WriteString("; ")
		}
		if dn.Rule != prev && dn.Rule != "" {
			sb.WriteString("rule " + strconv.Quote(dn.Rule) + ": ")
		}
		prev = dn.Rule
		sb.WriteString(dn.Condition + ": " + dn.Reason)
	}
	// Reasons are built from escaped values; this is a last guard for the
	// one-line promise.
	return strings.Map(func(r rune) rune {
		if r == '\n' || r == '\r' {
			return ' '
		}
		return r
	}, sb.String())
}
