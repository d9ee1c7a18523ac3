package policy

import (
	"encoding/json"
	"fmt"
	"math/big"
	"slices"
	"strconv"
	"strings"
)

// tokenConditions is a compiled token section. Nil sets mean "any".
// Case-insensitive sets hold lowercased keys.
type tokenConditions struct {
	issuers       map[string]struct{}
	audiences     map[string]struct{}
	tenantIDs     map[string]struct{} // lowercased
	objectIDs     map[string]struct{} // lowercased
	appIDs        map[string]struct{} // lowercased
	miResourceIDs map[string]struct{} // lowercased
	claims        []claimCondition    // sorted by name for stable reasons
}

type claimCondition struct {
	name  string
	cond  string   // "token.claims." + name, joined once
	value any      // string, bool, int64, uint64 or float64
	num   *big.Rat // exact value when value is a number
}

func (v *validator) compileToken(rt *rawToken, path []any) (*tokenConditions, *rawToken) {
	t := &tokenConditions{}
	out := &rawToken{}
	t.issuers, out.Issuers = v.stringList(rt.Issuers, path, "issuers", false, nil)
	t.audiences, out.Audiences = v.stringList(rt.Audiences, path, "audiences", false, nil)
	t.tenantIDs, out.TenantIDs = v.stringList(rt.TenantIDs, path, "tenant_ids", true, checkGUID)
	t.objectIDs, out.ObjectIDs = v.stringList(rt.ObjectIDs, path, "object_ids", true, checkGUID)
	t.appIDs, out.AppIDs = v.stringList(rt.AppIDs, path, "app_ids", true, checkGUID)
	t.miResourceIDs, out.MIResourceIDs = v.stringList(rt.MIResourceIDs, path, "mi_resource_ids", true, nil)

	if rt.Claims != nil {
		if len(rt.Claims) == 0 {
			v.errorf(append(slices.Clip(path), "claims"), "empty mapping; omit the field")
		}
		out.Claims = make(map[string]any, len(rt.Claims))
		for name, raw := range rt.Claims {
			cp := append(slices.Clip(path), "claims", name)
			if err := checkText(name); err != nil {
				v.errorf(cp, "claim name: %v", err)
				continue
			}
			val, err := checkClaimValue(raw)
			if err != nil {
				v.errorf(cp, "%v", err)
				continue
			}
			cc := claimCondition{name: name, cond: "token.claims." + name, value: val, num: ratOf(val)}
			t.claims = append(t.claims, cc)
			out.Claims[name] = val
		}
		slices.SortFunc(t.claims, func(a, b claimCondition) int { return strings.Compare(a.name, b.name) })
	}
	if t.issuers == nil && t.audiences == nil && t.tenantIDs == nil && t.objectIDs == nil &&
		t.appIDs == nil && t.miResourceIDs == nil && len(t.claims) == 0 && rt.Claims == nil {
		v.errorf(path, "token section has no conditions; omit it")
	}
	return t, out
}

func (t *tokenConditions) check(tok map[string]any, d *recorder) {
	if tok == nil {
		d.fail("token", "no verified token claims were presented")
		return
	}
	if t.issuers != nil {
		checkStringClaim(d, tok, "iss", "token.issuers", "issuer", t.issuers, false)
	}
	if t.audiences != nil {
		checkAudience(d, tok, t.audiences)
	}
	if t.tenantIDs != nil {
		checkStringClaim(d, tok, "tid", "token.tenant_ids", "tenant id (tid)", t.tenantIDs, true)
	}
	if t.objectIDs != nil {
		checkStringClaim(d, tok, "oid", "token.object_ids", "object id (oid)", t.objectIDs, true)
	}
	if t.appIDs != nil {
		checkAppID(d, tok, t.appIDs)
	}
	if t.miResourceIDs != nil {
		checkStringClaim(d, tok, "xms_mirid", "token.mi_resource_ids", "managed identity resource id (xms_mirid)", t.miResourceIDs, true)
	}
	for i := range t.claims {
		t.claims[i].check(tok, d)
	}
}

// stringClaim returns a string claim; present reports whether the claim
// exists at all, so a non-string value is not mistaken for an absent one.
func stringClaim(tok map[string]any, name string) (s string, present, ok bool) {
	v, present := tok[name]
	if !present {
		return "", false, false
	}
	s, ok = v.(string)
	return s, true, ok
}

func checkStringClaim(d *recorder, tok map[string]any, claim, cond, what string, allowed map[string]struct{}, fold bool) {
	s, present, ok := stringClaim(tok, claim)
	switch {
	case !present:
		d.fail(cond, "token has no "+claim+" claim")
	case !ok:
		d.fail(cond, "token "+claim+" claim is not a string")
	case inSet(allowed, s, fold):
		d.hold(cond, func() string { return what + " " + quote(s) + " is allowed" })
	default:
		d.fail(cond, what+" "+quote(s)+" is not among the "+count(len(allowed), "allowed value"))
	}
}

func inSet(set map[string]struct{}, s string, fold bool) bool {
	if fold {
		s = strings.ToLower(s)
	}
	_, ok := set[s]
	return ok
}

// checkAudience accepts aud as a string or an array; per RFC 7519 the token
// is for every audience it lists, so one allowed entry suffices.
func checkAudience(d *recorder, tok map[string]any, allowed map[string]struct{}) {
	const cond = "token.audiences"
	v, present := tok["aud"]
	if !present {
		d.fail(cond, "token has no aud claim")
		return
	}
	var auds []string
	switch a := v.(type) {
	case string:
		auds = []string{a}
	case []string:
		auds = a
	case []any:
		for _, e := range a {
			if s, ok := e.(string); ok {
				auds = append(auds, s)
			}
		}
	default:
		d.fail(cond, "token aud claim is neither a string nor an array")
		return
	}
	for _, a := range auds {
		if _, ok := allowed[a]; ok {
			d.hold(cond, func() string { return "audience " + quote(a) + " is allowed" })
			return
		}
	}
	if len(auds) == 1 {
		d.fail(cond, "audience "+quote(auds[0])+" is not among the "+count(len(allowed), "allowed audience"))
		return
	}
	d.fail(cond, "none of the token's "+strconv.Itoa(len(auds))+" audiences is among the "+count(len(allowed), "allowed audience"))
}

// checkAppID reads appid (v1 tokens) or azp (v2 tokens). A token carrying
// both with different values is refused rather than letting either win.
func checkAppID(d *recorder, tok map[string]any, allowed map[string]struct{}) {
	const cond = "token.app_ids"
	appid, hasAppid, appidOK := stringClaim(tok, "appid")
	azp, hasAzp, azpOK := stringClaim(tok, "azp")
	if (hasAppid && !appidOK) || (hasAzp && !azpOK) {
		d.fail(cond, "token appid or azp claim is not a string")
		return
	}
	var id string
	switch {
	case hasAppid && hasAzp && !strings.EqualFold(appid, azp):
		d.fail(cond, "token carries appid and azp claims that differ")
		return
	case hasAppid:
		id = appid
	case hasAzp:
		id = azp
	default:
		d.fail(cond, "token has neither an appid nor an azp claim")
		return
	}
	if !inSet(allowed, id, true) {
		d.fail(cond, "application id "+quote(id)+" is not among the "+count(len(allowed), "allowed application id"))
		return
	}
	d.hold(cond, func() string { return "application id " + quote(id) + " is allowed" })
}

func (c *claimCondition) check(tok map[string]any, d *recorder) {
	cond := c.cond
	v, present := tok[c.name]
	if !present {
		d.fail(cond, "token has no "+quote(c.name)+" claim")
		return
	}
	// The token's own value is not echoed: arbitrary claims may hold
	// personal data (upn, email) that does not belong in logs.
	contains := func() string {
		return "token claim " + quote(c.name) + " contains the required value " + c.show()
	}
	switch a := v.(type) {
	case []any:
		if slices.ContainsFunc(a, c.matches) {
			d.hold(cond, contains)
			return
		}
		d.fail(cond, "token claim "+quote(c.name)+" (an array of "+strconv.Itoa(len(a))+") does not contain the required value "+c.show())
	case []string:
		for _, e := range a {
			if c.matches(e) {
				d.hold(cond, contains)
				return
			}
		}
		d.fail(cond, "token claim "+quote(c.name)+" (an array of "+strconv.Itoa(len(a))+") does not contain the required value "+c.show())
	default:
		if c.matches(v) {
			d.hold(cond, func() string { return "token claim " + quote(c.name) + " equals the required value " + c.show() })
			return
		}
		d.fail(cond, "token claim "+quote(c.name)+" does not equal the required value "+c.show())
	}
}

// matches compares with types kept apart: the string "1" never equals the
// number 1, and numbers compare exactly whatever their Go type.
func (c *claimCondition) matches(v any) bool {
	switch want := c.value.(type) {
	case string:
		s, ok := v.(string)
		return ok && s == want
	case bool:
		b, ok := v.(bool)
		return ok && b == want
	default:
		// Fast path for the common case, a JSON float64 against a policy
		// integer both exactly representable; everything else compares
		// exactly as rationals.
		if f, ok := v.(float64); ok {
			if w, ok := c.value.(int64); ok && w >= -1<<53 && w <= 1<<53 {
				return f == float64(w)
			}
		}
		r := ratOf(v)
		return r != nil && c.num != nil && r.Cmp(c.num) == 0
	}
}

func (c *claimCondition) show() string {
	if s, ok := c.value.(string); ok {
		return quote(s)
	}
	return fmt.Sprint(c.value)
}

// ratOf returns the exact value of a number of any type a JSON or YAML
// decoder produces, or nil for non-numbers and non-finite floats.
func ratOf(v any) *big.Rat {
	switch n := v.(type) {
	case int:
		return new(big.Rat).SetInt64(int64(n))
	case int32:
		return new(big.Rat).SetInt64(int64(n))
	case int64:
		return new(big.Rat).SetInt64(n)
	case uint32:
		return new(big.Rat).SetUint64(uint64(n))
	case uint64:
		return new(big.Rat).SetUint64(n)
	case float32:
		return new(big.Rat).SetFloat64(float64(n)) // nil for NaN and Inf
	case float64:
		return new(big.Rat).SetFloat64(n)
	case json.Number:
		return ratOfDecimal(string(n))
	}
	return nil
}

// quote renders a token-supplied string for a one-line reason: quoted,
// escaped and truncated.
func quote(s string) string {
	const maxLen = 200
	if len(s) > maxLen {
		s = strings.ToValidUTF8(s[:maxLen], "") + "…"
	}
	return strconv.Quote(s)
}

// ratOfDecimal parses a JSON number exactly. Rat.SetString's cost grows with
// the exponent ("1e999999999"), so long inputs and large exponents are
// refused: no real claim needs them, and refusing means "not equal".
func ratOfDecimal(s string) *big.Rat {
	if len(s) > 128 {
		return nil
	}
	if i := strings.IndexAny(s, "eE"); i >= 0 {
		exp, err := strconv.Atoi(s[i+1:])
		if err != nil || exp < -400 || exp > 400 {
			return nil
		}
	}
	r, ok := new(big.Rat).SetString(s)
	if !ok {
		return nil
	}
	return r
}
