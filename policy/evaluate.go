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
	// "sev_snp.measurements", "sev_snp.min_tcb.snp", "token.claims.xms_az_rid".
	Condition string
	// Reason explains the failure in operator words. It quotes measurements
	// and identity claims (not secrets) but never the token itself nor the
	// values of arbitrary claims.
	Reason string
}

// denials collects the Denials of one rule.
type denials struct {
	rule string
	list []Denial
}

func (d *denials) add(condition, reason string) {
	d.list = append(d.list, Denial{Rule: d.rule, Condition: condition, Reason: reason})
}

// Evaluate decides whether in satisfies the policy. Rules are tried in
// order; the first whose conditions all hold grants. It never panics on
// missing or partial input: those are denials.
func (p *Policy) Evaluate(in Input) Decision {
	if p == nil || len(p.rules) == 0 {
		return deny(Denial{Condition: "policy", Reason: "no release policy is configured"})
	}
	ev := in.Evidence
	if ev == nil {
		return deny(Denial{Condition: "evidence", Reason: "no verified evidence was presented; every rule requires attestation"})
	}
	d := denials{}
	covered := false
	for _, r := range p.rules {
		// A rule for another platform is irrelevant to this workload;
		// listing it would bury the denials that matter.
		if r.evidence == nil || r.evidence.platform() != ev.Platform {
			continue
		}
		covered = true
		d.rule = r.name
		before := len(d.list)
		r.evidence.check(ev, &d)
		if r.token != nil {
			r.token.check(in.Token, &d)
		}
		if len(d.list) == before {
			return Decision{Allowed: true, Rule: r.name}
		}
	}
	if !covered {
		return deny(Denial{Condition: "evidence.platform", Reason: "no rule accepts " +
			quote(string(ev.Platform)) + " evidence; rules cover " + p.platforms()})
	}
	return Decision{Denials: d.list}
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
