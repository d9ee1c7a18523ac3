package policy

import (
	"bytes"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"math"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"unicode"

	"gopkg.in/yaml.v3"

	"github.com/attested-kms/attested-kms/attestation"
)

const (
	// Version is the only policy grammar version this package understands.
	Version = 1

	// MaxSize bounds the policy text. Real policies are a few kilobytes; the
	// bound keeps a hostile or mistaken file from costing memory and CPU.
	MaxSize = 1 << 20

	// maxMappingKeys bounds every YAML mapping. yaml.v3 checks duplicate keys
	// pairwise, so an unbounded mapping would make Parse quadratic.
	maxMappingKeys = 256

	// maxErrors bounds how many validation problems one Parse reports.
	maxErrors = 20
)

// Byte lengths of the SEV-SNP report fields that policies pin.
const (
	measurementLen = 48
	hostDataLen    = 32
	familyIDLen    = 16
	imageIDLen     = 16
)

// Policy is a parsed, validated release policy. The zero value and a nil
// *Policy deny everything.
type Policy struct {
	rules []*rule
}

// rule is one any-of alternative of a policy.
type rule struct {
	name     string
	evidence evidenceConditions
	token    *tokenConditions // nil: no token conditions
	raw      rawRule          // normalized form, for Marshal
}

// platform returns the platform of the rule's evidence section, or "" for
// a rule that failed to compile.
func (r *rule) platform() attestation.Platform {
	if r.evidence == nil {
		return ""
	}
	return r.evidence.platform()
}

// evidenceConditions is one platform section of a rule. Adding a platform
// means a raw section in rawRule, a compile function and an implementation
// of this interface; Evaluate does not change.
type evidenceConditions interface {
	platform() attestation.Platform
	// check records every condition of the section as held or failed. c
	// is non-nil and c.Platform == platform().
	check(c *attestation.Claims, r *recorder)
}

// rawPolicy mirrors the YAML document. Field order here is the order
// Marshal writes.
type rawPolicy struct {
	Version int       `yaml:"version"`
	Rules   []rawRule `yaml:"rules"`
}

type rawRule struct {
	Name     string       `yaml:"name"`
	SEVSNP   *rawSNP      `yaml:"sev_snp,omitempty"`
	TDX      *rawTDX      `yaml:"tdx,omitempty"`
	AzureSNP *rawAzureSNP `yaml:"azure_sev_snp_vtpm,omitempty"`
	AzureTDX *rawAzureTDX `yaml:"azure_tdx_vtpm,omitempty"`
	Token    *rawToken    `yaml:"token,omitempty"`
}

type rawSNP struct {
	Measurements []string              `yaml:"measurements,omitempty"`
	HostData     []string              `yaml:"host_data,omitempty"`
	FamilyIDs    []string              `yaml:"family_ids,omitempty"`
	ImageIDs     []string              `yaml:"image_ids,omitempty"`
	MinTCB       *attestation.TCBParts `yaml:"min_tcb,omitempty"`
	AllowDebug   bool                  `yaml:"allow_debug"`
	VMPL         []uint32              `yaml:"vmpl,omitempty"`
	MinGuestSVN  *uint32               `yaml:"min_guest_svn,omitempty"`
}

type rawToken struct {
	Issuers       []string       `yaml:"issuers,omitempty"`
	Audiences     []string       `yaml:"audiences,omitempty"`
	TenantIDs     []string       `yaml:"tenant_ids,omitempty"`
	ObjectIDs     []string       `yaml:"object_ids,omitempty"`
	AppIDs        []string       `yaml:"app_ids,omitempty"`
	MIResourceIDs []string       `yaml:"mi_resource_ids,omitempty"`
	Claims        map[string]any `yaml:"claims,omitempty"`
}

// Validate reports whether b is a valid policy. It backs
// `kms policy validate FILE`.
func Validate(b []byte) error {
	_, err := Parse(b)
	return err
}

// Parse parses and validates a YAML release policy. See the package
// documentation for the grammar. Errors name the line and field; several
// problems are joined into one error.
func Parse(b []byte) (*Policy, error) {
	if len(b) > MaxSize {
		return nil, fmt.Errorf("policy: %d bytes exceeds the %d-byte limit", len(b), MaxSize)
	}
	// First pass: the node tree, for syntax errors, structural limits,
	// version and line numbers. Decoding into a Node does no pairwise key
	// checks, so it is linear.
	var root yaml.Node
	if err := yaml.Unmarshal(b, &root); err != nil {
		return nil, fmt.Errorf("policy: %w", err)
	}
	doc := documentBody(&root)
	if doc == nil || doc.Kind == 0 || isNull(doc) {
		return nil, errors.New("policy: empty policy")
	}
	if doc.Kind != yaml.MappingNode {
		return nil, fmt.Errorf("policy: line %d: the policy must be a mapping with version and rules", doc.Line)
	}
	if err := checkStructure(doc, nil); err != nil {
		return nil, fmt.Errorf("policy: %w", err)
	}
	// Check the version before strict decoding, so a file written for a
	// newer grammar fails with "unsupported version" rather than with
	// "unknown field".
	if err := checkVersion(doc); err != nil {
		return nil, fmt.Errorf("policy: %w", err)
	}

	// Second pass: strict decode into the raw types.
	dec := yaml.NewDecoder(bytes.NewReader(b))
	dec.KnownFields(true)
	var raw rawPolicy
	if err := dec.Decode(&raw); err != nil {
		return nil, fmt.Errorf("policy: %w", explainDecodeError(err, doc))
	}
	var extra yaml.Node
	if err := dec.Decode(&extra); !errors.Is(err, io.EOF) {
		return nil, errors.New("policy: more than one YAML document; a policy file holds exactly one")
	}

	v := &validator{root: doc}
	p := v.compile(&raw)
	if len(v.errs) > 0 {
		return nil, fmt.Errorf("policy: invalid: %w", errors.Join(v.errs...))
	}
	return p, nil
}

// Marshal returns the policy in canonical YAML: fields in grammar order,
// hex in lowercase, allow-lists sorted, defaults (allow_debug, vmpl)
// written out. Rules keep their order because it decides which rule is
// reported as granting. Parse(Marshal(p)) yields an equivalent policy.
func (p *Policy) Marshal() ([]byte, error) {
	if p == nil {
		return nil, errors.New("policy: marshal of a nil policy")
	}
	raw := rawPolicy{Version: Version}
	for _, r := range p.rules {
		raw.Rules = append(raw.Rules, r.raw)
	}
	var buf bytes.Buffer
	enc := yaml.NewEncoder(&buf)
	enc.SetIndent(2)
	if err := enc.Encode(&raw); err != nil {
		return nil, fmt.Errorf("policy: marshal: %w", err)
	}
	if err := enc.Close(); err != nil {
		return nil, fmt.Errorf("policy: marshal: %w", err)
	}
	return buf.Bytes(), nil
}

// RuleNames returns the rule names in evaluation order.
func (p *Policy) RuleNames() []string {
	if p == nil {
		return nil
	}
	names := make([]string, len(p.rules))
	for i, r := range p.rules {
		names[i] = r.name
	}
	return names
}

// documentBody returns the content of a document node.
func documentBody(n *yaml.Node) *yaml.Node {
	if n.Kind == yaml.DocumentNode {
		if len(n.Content) == 0 {
			return nil
		}
		return n.Content[0]
	}
	return n
}

// resolveAlias follows alias nodes to their anchored node.
func resolveAlias(n *yaml.Node) *yaml.Node {
	// An anchor cannot itself be an alias, but bound the walk anyway.
	for i := 0; n != nil && n.Kind == yaml.AliasNode && i < 8; i++ {
		n = n.Alias
	}
	return n
}

func isNull(n *yaml.Node) bool {
	n = resolveAlias(n)
	return n == nil || (n.Kind == yaml.ScalarNode && n.ShortTag() == "!!null")
}

// checkStructure walks the node tree (not following aliases, which may form
// cycles) and rejects oversized mappings and explicit nulls. A null where a
// list or section is expected would decode as "absent", which for an
// allow-list means "allow any": the opposite of what "host_data:" suggests.
func checkStructure(n *yaml.Node, path []string) error {
	switch n.Kind {
	case yaml.MappingNode:
		if len(n.Content)/2 > maxMappingKeys {
			return fmt.Errorf("line %d: %s: mapping has more than %d keys", n.Line, fieldPath(path), maxMappingKeys)
		}
		for i := 0; i+1 < len(n.Content); i += 2 {
			k, val := n.Content[i], n.Content[i+1]
			p := append(slices.Clip(path), k.Value)
			if isNull(val) {
				return fmt.Errorf("line %d: %s has no value; give a value or omit the field", k.Line, fieldPath(p))
			}
			if err := checkStructure(val, p); err != nil {
				return err
			}
		}
	case yaml.SequenceNode:
		for i, c := range n.Content {
			p := append(slices.Clip(path), "["+strconv.Itoa(i)+"]")
			if isNull(c) {
				return fmt.Errorf("line %d: %s is null", c.Line, fieldPath(p))
			}
			if err := checkStructure(c, p); err != nil {
				return err
			}
		}
	}
	return nil
}

func fieldPath(path []string) string {
	if len(path) == 0 {
		return "policy"
	}
	var sb strings.Builder
	for i, s := range path {
		if i > 0 && !strings.HasPrefix(s, "[") {
			sb.WriteByte('.')
		}
		sb.WriteString(s)
	}
	return sb.String()
}

func checkVersion(doc *yaml.Node) error {
	_, vn := lookup(doc, "version")
	if vn == nil {
		return fmt.Errorf("line %d: version is required (version: %d)", doc.Line, Version)
	}
	var v int
	if err := vn.Decode(&v); err != nil {
		return fmt.Errorf("line %d: version: want an integer, got %q", vn.Line, vn.Value)
	}
	if v != Version {
		return fmt.Errorf("line %d: unsupported version %d; this KMS understands version %d", vn.Line, v, Version)
	}
	return nil
}

// lookup returns the key and value nodes of key in mapping n, or nils.
func lookup(n *yaml.Node, key string) (k, v *yaml.Node) {
	n = resolveAlias(n)
	if n == nil || n.Kind != yaml.MappingNode {
		return nil, nil
	}
	for i := 0; i+1 < len(n.Content); i += 2 {
		if n.Content[i].Value == key {
			return n.Content[i], resolveAlias(n.Content[i+1])
		}
	}
	return nil, nil
}

// mapKey is a path element that names an entry of a mapping whose keys are
// data (pcrs: {7: ...}); it prints as pcrs[7] rather than pcrs.7.
type mapKey string

// lineAt follows path (string keys, int indices) from n and returns the
// line of the deepest key or item reached: the field itself when it exists,
// else its closest written ancestor (a missing field, or a path through a
// merge key that lookup does not follow).
func lineAt(n *yaml.Node, path ...any) int {
	cur, line := n, n.Line
	for _, p := range path {
		var at, next *yaml.Node
		switch p := p.(type) {
		case string:
			at, next = lookup(cur, p)
		case mapKey:
			at, next = lookup(cur, string(p))
		case int:
			c := resolveAlias(cur)
			if c != nil && c.Kind == yaml.SequenceNode && p >= 0 && p < len(c.Content) {
				at = c.Content[p]
				next = resolveAlias(at)
			}
		}
		if next == nil {
			break
		}
		cur, line = next, at.Line
	}
	return line
}

// validator compiles a rawPolicy and collects errors with line numbers.
type validator struct {
	root *yaml.Node
	errs []error
}

func (v *validator) errorf(path []any, format string, args ...any) {
	if len(v.errs) == maxErrors {
		v.errs = append(v.errs, errors.New("too many errors; stopping"))
	}
	if len(v.errs) > maxErrors {
		return
	}
	var sb strings.Builder
	for i, p := range path {
		switch p := p.(type) {
		case int:
			fmt.Fprintf(&sb, "[%d]", p)
		case mapKey:
			fmt.Fprintf(&sb, "[%s]", string(p))
		default:
			if i > 0 {
				sb.WriteByte('.')
			}
			fmt.Fprint(&sb, p)
		}
	}
	line := lineAt(v.root, path...)
	v.errs = append(v.errs, fmt.Errorf("line %d: %s: %s", line, sb.String(), fmt.Sprintf(format, args...)))
}

// evidenceSections lists the evidence sections a rule may carry.
const evidenceSections = "sev_snp, tdx, azure_sev_snp_vtpm, azure_tdx_vtpm"

var namePattern = regexp.MustCompile(`^[A-Za-z0-9._-]{1,64}$`)

func (v *validator) compile(raw *rawPolicy) *Policy {
	if len(raw.Rules) == 0 {
		v.errorf([]any{"rules"}, "at least one rule is required")
		return nil
	}
	p := &Policy{}
	seen := make(map[string]int, len(raw.Rules))
	for i := range raw.Rules {
		rr := &raw.Rules[i]
		path := []any{"rules", i}
		r := &rule{name: rr.Name}
		switch {
		case rr.Name == "":
			v.errorf(append(path, "name"), "name is required")
		case !namePattern.MatchString(rr.Name):
			v.errorf(append(path, "name"), "name %q must be 1-64 of A-Z a-z 0-9 . _ -", rr.Name)
		default:
			if j, dup := seen[rr.Name]; dup {
				v.errorf(append(path, "name"), "duplicate rule name %q (also rules[%d])", rr.Name, j)
			}
			seen[rr.Name] = i
		}

		// Exactly one evidence section: keys must never be released on a
		// token alone, and a rule naming two platforms could never match
		// (evidence has one platform), which is surely a mistake.
		sections := 0
		r.raw.Name = rr.Name
		if rr.SEVSNP != nil {
			sections++
			r.evidence, r.raw.SEVSNP = v.compileSNP(rr.SEVSNP, append(path, "sev_snp"), "sev_snp", true)
		}
		if rr.TDX != nil {
			sections++
			r.evidence, r.raw.TDX = v.compileTDX(rr.TDX, append(path, "tdx"), "tdx", true)
		}
		if rr.AzureSNP != nil {
			sections++
			r.evidence, r.raw.AzureSNP = v.compileAzureSNP(rr.AzureSNP, append(path, "azure_sev_snp_vtpm"))
		}
		if rr.AzureTDX != nil {
			sections++
			r.evidence, r.raw.AzureTDX = v.compileAzureTDX(rr.AzureTDX, append(path, "azure_tdx_vtpm"))
		}
		switch sections {
		case 0:
			v.errorf(path, "rule %q has no evidence section (%s); a rule without attestation would release keys to any token holder", rr.Name, evidenceSections)
		case 1:
		default:
			v.errorf(path, "rule %q has %d evidence sections; give each platform its own rule", rr.Name, sections)
		}
		if rr.Token != nil {
			r.token, r.raw.Token = v.compileToken(rr.Token, append(path, "token"))
		}
		p.rules = append(p.rules, r)
	}
	return p
}

// hexList validates an allow-list of fixed-length hex strings and returns
// the set (keyed by raw bytes) and its canonical form (lowercase, sorted).
func (v *validator) hexList(list []string, size int, path []any, field any, required bool) (map[string]struct{}, []string) {
	fp := append(slices.Clip(path), field)
	if list == nil {
		if required {
			v.errorf(fp, "required: a non-empty list of %d-hex-digit values", 2*size)
		}
		return nil, nil
	}
	if len(list) == 0 {
		v.errorf(fp, "empty list; list the allowed values or omit the field to allow any")
		return nil, nil
	}
	set := make(map[string]struct{}, len(list))
	canon := make([]string, 0, len(list))
	for i, s := range list {
		ip := append(slices.Clip(fp), i)
		b, err := hex.DecodeString(s)
		switch {
		case len(s) != 2*size:
			v.errorf(ip, "want %d hex digits (%d bytes), got %d characters", 2*size, size, len(s))
			continue
		case err != nil:
			v.errorf(ip, "not hex: %v", err)
			continue
		}
		if _, dup := set[string(b)]; dup {
			v.errorf(ip, "%s is listed twice", strings.ToLower(s))
			continue
		}
		set[string(b)] = struct{}{}
		canon = append(canon, hex.EncodeToString(b))
	}
	slices.Sort(canon)
	return set, canon
}

// stringList validates an allow-list of strings. fold makes the set
// case-insensitive (keys are lowercased); check validates each entry.
func (v *validator) stringList(list []string, path []any, field string, fold bool, check func(string) error) (map[string]struct{}, []string) {
	fp := append(slices.Clip(path), field)
	if list == nil {
		return nil, nil
	}
	if len(list) == 0 {
		v.errorf(fp, "empty list; list the allowed values or omit the field to allow any")
		return nil, nil
	}
	set := make(map[string]struct{}, len(list))
	canon := make([]string, 0, len(list))
	for i, s := range list {
		ip := append(slices.Clip(fp), i)
		if err := checkText(s); err != nil {
			v.errorf(ip, "%v", err)
			continue
		}
		if check != nil {
			if err := check(s); err != nil {
				v.errorf(ip, "%v", err)
				continue
			}
		}
		key := s
		if fold {
			key = strings.ToLower(s)
		}
		if _, dup := set[key]; dup {
			v.errorf(ip, "%q is listed twice", s)
			continue
		}
		set[key] = struct{}{}
		canon = append(canon, s)
	}
	slices.Sort(canon)
	return set, canon
}

// checkText rejects empty, oversized and unprintable strings: policy values
// appear in denial reasons and logs, which must stay one line.
func checkText(s string) error {
	if s == "" {
		return errors.New("empty string")
	}
	if len(s) > 1024 {
		return fmt.Errorf("longer than 1024 bytes (%d)", len(s))
	}
	for _, r := range s {
		if r == unicode.ReplacementChar || !unicode.IsPrint(r) {
			return fmt.Errorf("%q contains an unprintable character", s)
		}
	}
	return nil
}

var guidPattern = regexp.MustCompile(`^[0-9A-Fa-f]{8}-[0-9A-Fa-f]{4}-[0-9A-Fa-f]{4}-[0-9A-Fa-f]{4}-[0-9A-Fa-f]{12}$`)

// checkGUID catches typos in Entra ids, which are always GUIDs.
func checkGUID(s string) error {
	if !guidPattern.MatchString(s) {
		return fmt.Errorf("%q is not a GUID (xxxxxxxx-xxxx-xxxx-xxxx-xxxxxxxxxxxx)", s)
	}
	return nil
}

// checkClaimValue accepts the scalar types a YAML policy can pin and
// normalizes numbers. Lists and maps are rejected: "exact match" on a
// structure has no single obvious meaning.
func checkClaimValue(val any) (any, error) {
	switch x := val.(type) {
	case string:
		if err := checkText(x); err != nil {
			return nil, err
		}
		return x, nil
	case bool:
		return x, nil
	case int:
		return int64(x), nil
	case int64, uint64:
		return x, nil
	case float64:
		if math.IsNaN(x) || math.IsInf(x, 0) {
			return nil, fmt.Errorf("%v is not a finite number", x)
		}
		return x, nil
	case nil:
		return nil, errors.New("null is not a claim value")
	default:
		return nil, fmt.Errorf("want a string, number or bool, got %T", val)
	}
}
