package policy

import (
	"errors"
	"reflect"
	"regexp"
	"strconv"
	"strings"

	"gopkg.in/yaml.v3"

	"github.com/attested-kms/attested-kms/attestation"
)

// sectionTypes maps the Go types yaml.v3 names in its errors to grammar
// sections, so an operator reads "sev_snp", not "policy.rawSNP".
var sectionTypes = map[string]reflect.Type{
	"policy.rawPolicy":     reflect.TypeFor[rawPolicy](),
	"policy.rawRule":       reflect.TypeFor[rawRule](),
	"policy.rawSNP":        reflect.TypeFor[rawSNP](),
	"policy.rawTDX":        reflect.TypeFor[rawTDX](),
	"policy.rawAzureSNP":   reflect.TypeFor[rawAzureSNP](),
	"policy.rawAzureTDX":   reflect.TypeFor[rawAzureTDX](),
	"policy.rawVTPM":       reflect.TypeFor[rawVTPM](),
	"policy.rawToken":      reflect.TypeFor[rawToken](),
	"attestation.TCBParts": reflect.TypeFor[attestation.TCBParts](),
}

var (
	lineRE    = regexp.MustCompile(`^line (\d+): (.*)$`)
	unknownRE = regexp.MustCompile(`^field (\S+) not found in type (\S+)$`)
)

// explainDecodeError rewrites yaml.v3's type errors into grammar terms:
// each line gains the field path found at that line in doc and unknown
// fields list the fields that are allowed there.
func explainDecodeError(err error, doc *yaml.Node) error {
	var te *yaml.TypeError
	if !errors.As(err, &te) {
		return err
	}
	paths := map[int]string{}
	indexLines(doc, nil, paths)
	msgs := make([]string, 0, len(te.Errors))
	for _, m := range te.Errors {
		sub := lineRE.FindStringSubmatch(m)
		if sub == nil {
			msgs = append(msgs, m)
			continue
		}
		line, _ := strconv.Atoi(sub[1])
		rest := sub[2]
		if u := unknownRE.FindStringSubmatch(rest); u != nil {
			rest = "unknown field " + strconv.Quote(u[1])
			if t, ok := sectionTypes[u[2]]; ok {
				rest += "; allowed here: " + strings.Join(yamlFields(t), ", ")
			}
		}
		if p, ok := paths[line]; ok {
			rest = p + ": " + rest
		}
		msgs = append(msgs, "line "+sub[1]+": "+rest)
	}
	return errors.New(strings.Join(msgs, "\n"))
}

// indexLines records, for each line, the path of the last mapping key or
// sequence item on it: with flow style ({snp: 300}) the innermost, latest
// key is the one an error on that line is about.
func indexLines(n *yaml.Node, path []string, out map[int]string) {
	switch n.Kind {
	case yaml.MappingNode:
		for i := 0; i+1 < len(n.Content); i += 2 {
			k := n.Content[i]
			p := append(path[:len(path):len(path)], k.Value)
			out[k.Line] = fieldPath(p)
			indexLines(n.Content[i+1], p, out)
		}
	case yaml.SequenceNode:
		for i, c := range n.Content {
			p := append(path[:len(path):len(path)], "["+strconv.Itoa(i)+"]")
			out[c.Line] = fieldPath(p)
			indexLines(c, p, out)
		}
	}
}

func yamlFields(t reflect.Type) []string {
	var out []string
	for f := range t.Fields() {
		name, _, _ := strings.Cut(f.Tag.Get("yaml"), ",")
		if name != "" && name != "-" {
			out = append(out, name)
		}
	}
	return out
}
