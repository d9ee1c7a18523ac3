package policy

import (
	"io"
	"strconv"
	"strings"

	"github.com/attested-kms/attested-kms/attestation"
)

// Explanation is the condition-by-condition account of a decision, for
// operators (`kms policy explain`). It holds no more than a Decision does:
// rule names, condition paths and reasons.
type Explanation struct {
	// Decision is exactly what Evaluate returns for the same input.
	Decision Decision
	// Evidence is the platform of the evidence explained, "" when none
	// was presented.
	Evidence attestation.Platform
	// Rules lists every rule of the policy in file order, including those
	// after the granting one.
	Rules []RuleExplanation
}

// RuleExplanation is one rule's part of an Explanation.
type RuleExplanation struct {
	Name string
	// Platform is the evidence type the rule covers.
	Platform attestation.Platform
	// Applies reports whether the rule covers the evidence's platform.
	// Conditions of a rule that does not apply are not checked.
	Applies bool
	// Conditions lists each checked condition in grammar order.
	Conditions []ConditionResult
}

// Holds reports whether the rule applies and all its conditions held, i.e.
// whether it would grant were it the first such rule.
func (r RuleExplanation) Holds() bool {
	if !r.Applies {
		return false
	}
	for _, c := range r.Conditions {
		if !c.Held {
			return false
		}
	}
	return true
}

// ConditionResult is the outcome of one condition.
type ConditionResult struct {
	// Condition is the grammar path, e.g. "tdx.mrtd",
	// "azure_sev_snp_vtpm.vtpm.pcrs[7]", "token.tenant_ids".
	Condition string
	Held      bool
	// Reason says what matched when Held, and otherwise is the Reason of
	// the corresponding Denial.
	Reason string
}

// Explain evaluates in against every rule and reports each condition,
// held or failed, beside the decision. The decision is the one Evaluate
// gives: both run the same code.
func (p *Policy) Explain(in Input) Explanation {
	d, rules := p.run(in, true)
	e := Explanation{Decision: d, Rules: rules}
	if in.Evidence != nil {
		e.Evidence = in.Evidence.Platform
	}
	return e
}

// String renders the explanation as `kms policy explain` prints it: a
// header per rule, one line per condition marked "held" or "FAILED", and
// the decision last, e.g.
//
//	rule "prod" (sev-snp): applies; 1 condition FAILED
//	  held    sev_snp.measurements: measurement a1a1... is allowed
//	  FAILED  sev_snp.vmpl: report was requested at VMPL 2; allowed: 0
//	rule "tdx-prod" (tdx): skipped: the evidence is "sev-snp"
//	decision: denied: no rule holds
func (e Explanation) String() string {
	var sb strings.Builder
	_, _ = e.WriteTo(&sb)
	return sb.String()
}

// WriteTo writes String's text to w.
func (e Explanation) WriteTo(w io.Writer) (int64, error) {
	var sb strings.Builder
	for _, r := range e.Rules {
		sb.WriteString("rule " + strconv.Quote(r.Name) + " (" + string(r.Platform) + "): ")
		switch {
		case !r.Applies && e.Evidence == "":
			sb.WriteString("skipped")
		case !r.Applies:
			sb.WriteString("skipped: the evidence is " + strconv.Quote(string(e.Evidence)))
		case r.Holds() && e.Decision.Allowed && e.Decision.Rule == r.Name:
			sb.WriteString("applies; all conditions held; grants")
		case r.Holds():
			sb.WriteString("applies; all conditions held; an earlier rule grants")
		default:
			failed := 0
			for _, c := range r.Conditions {
				if !c.Held {
					failed++
				}
			}
			sb.WriteString("applies; " + count(failed, "condition") + " FAILED")
		}
		sb.WriteByte('\n')
		for _, c := range r.Conditions {
			mark := "  FAILED  "
			if c.Held {
				mark = "  held    "
			}
			sb.WriteString(mark + oneLine(c.Condition) + ": " + oneLine(c.Reason) + "\n")
		}
	}
	d := e.Decision
	switch {
	case d.Allowed:
		sb.WriteString("decision: granted by rule " + strconv.Quote(d.Rule) + "\n")
	case len(d.Denials) == 1 && d.Denials[0].Rule == "":
		// A policy-level denial: no rule was checked, so say why here.
		sb.WriteString("decision: denied: " + oneLine(d.Denials[0].Condition) + ": " + oneLine(d.Denials[0].Reason) + "\n")
	default:
		sb.WriteString("decision: denied: no rule holds\n")
	}
	n, err := io.WriteString(w, sb.String())
	return int64(n), err
}

// oneLine keeps a reason on its line. Reasons are built from escaped
// values already; this is the last guard.
func oneLine(s string) string {
	return strings.Map(func(r rune) rune {
		if r == '\n' || r == '\r' {
			return ' '
		}
		return r
	}, s)
}
