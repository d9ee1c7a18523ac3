package collateral

import (
	"errors"
	"fmt"
	"net/url"
	"strings"
)

// Vendor hosts. Verifiers (go-sev-guest, go-tdx-guest and this project's
// own code) ask for collateral by these canonical URLs; the store maps
// them onto the configured base URLs and caches under the canonical form.
const (
	HostAMDKDS      = "kdsintf.amd.com"
	HostIntelPCS    = "api.trustedservices.intel.com"
	HostIntelCerts  = "certificates.trustedservices.intel.com"
	maxURLLen       = 1024
	headersSuffix   = ".headers.json"
	tempFilePrefix  = ".tmp-"
	defaultAMDBase  = "https://" + HostAMDKDS
	defaultPCSBase  = "https://" + HostIntelPCS
	defaultCertBase = "https://" + HostIntelCerts
)

// ErrURLNotAllowed is returned for a URL the store will not fetch: another
// host, another scheme, a path outside the vendor's collateral API, or a
// name that would escape the collateral directory. A verifier asking for
// such a URL is a bug or an attack, so the store refuses instead of
// dialling out.
var ErrURLNotAllowed = errors.New("collateral: URL not allowed")

// pathPrefixes lists, per canonical host, the paths that hold collateral.
var pathPrefixes = map[string][]string{
	HostAMDKDS:     {"/vcek/v1/", "/vlek/v1/"},
	HostIntelPCS:   {"/sgx/certification/v4/", "/tdx/certification/v4/"},
	HostIntelCerts: {"/"},
}

// docURL is a validated canonical collateral URL.
type docURL struct {
	canonical string // https://host/path[?query]
	host      string
	path      string // begins with "/"
	rawQuery  string
	rel       string // slash-separated name under the collateral directory
	kind      kind
	// localOnly marks a document of a simulator host: served from the
	// directory, never fetched.
	localOnly bool
}

// localOnlySuffix: hosts under the .invalid TLD (RFC 6761), which never
// resolves, name simulator collateral (the SEV-SNP simulator's ASK points
// its CRL distribution point there). Such documents can only come from the
// directory, where `kms init --simulator` or a test put them, so allowing
// them lets nothing reach the network.
const localOnlySuffix = ".invalid"

// parseDocURL validates raw as a canonical collateral URL.
func parseDocURL(raw string) (*docURL, error) {
	if len(raw) > maxURLLen {
		return nil, fmt.Errorf("%w: longer than %d bytes", ErrURLNotAllowed, maxURLLen)
	}
	u, err := url.Parse(raw)
	if err != nil {
		return nil, fmt.Errorf("%w: %v", ErrURLNotAllowed, err)
	}
	switch {
	case u.Scheme != "https":
		return nil, fmt.Errorf("%w: scheme %q, want https", ErrURLNotAllowed, u.Scheme)
	case u.User != nil || u.Opaque != "" || u.Fragment != "" || u.ForceQuery:
		return nil, fmt.Errorf("%w: %q has user info, fragment or an empty query", ErrURLNotAllowed, u.Redacted())
	case u.RawPath != "":
		// Percent-escapes in the path would let two spellings name one
		// file; the vendors' APIs never need them.
		return nil, fmt.Errorf("%w: escaped path in %q", ErrURLNotAllowed, raw)
	}
	host := u.Host
	prefixes, ok := pathPrefixes[host]
	localOnly := false
	if !ok && strings.HasSuffix(host, localOnlySuffix) && validLocalHost(host) {
		prefixes, ok, localOnly = []string{"/"}, true, true
	}
	if !ok {
		return nil, fmt.Errorf("%w: host %q is not a collateral service", ErrURLNotAllowed, host)
	}
	if !hasAnyPrefix(u.Path, prefixes) {
		return nil, fmt.Errorf("%w: path %q is outside the %s collateral API", ErrURLNotAllowed, u.Path, host)
	}
	if err := checkPath(u.Path); err != nil {
		return nil, err
	}
	if err := checkQuery(u.RawQuery); err != nil {
		return nil, err
	}
	rel := host + u.Path
	canonical := "https://" + host + u.Path
	if u.RawQuery != "" {
		rel += "@" + strings.ReplaceAll(u.RawQuery, "&", ",")
		canonical += "?" + u.RawQuery
	}
	return &docURL{
		canonical: canonical,
		host:      host,
		path:      u.Path,
		rawQuery:  u.RawQuery,
		rel:       rel,
		kind:      kindOf(kindHost(host, u.Path, localOnly), u.Path),
		localOnly: localOnly,
	}, nil
}

// kindHost classifies simulator documents like the vendor's whose paths
// they imitate.
func kindHost(host, path string, localOnly bool) string {
	if !localOnly {
		return host
	}
	for _, h := range []string{HostAMDKDS, HostIntelPCS} {
		if hasAnyPrefix(path, pathPrefixes[h]) {
			return h
		}
	}
	return HostIntelCerts
}

// validLocalHost accepts DNS-like names only, so the host is a safe
// directory name.
func validLocalHost(h string) bool {
	for _, label := range strings.Split(h, ".") {
		if label == "" || label[0] == '-' {
			return false
		}
		for i := 0; i < len(label); i++ {
			c := label[i]
			if !(c >= 'a' && c <= 'z' || c >= '0' && c <= '9' || c == '-') {
				return false
			}
		}
	}
	return true
}

func hasAnyPrefix(s string, prefixes []string) bool {
	for _, p := range prefixes {
		if strings.HasPrefix(s, p) {
			return true
		}
	}
	return false
}

// checkPath accepts only plain segments of [A-Za-z0-9._-] that do not
// begin with a dot, so that a path can never name "..", a hidden file, the
// store's temporary files, or another document's headers file.
func checkPath(p string) error {
	segs := strings.Split(strings.TrimPrefix(p, "/"), "/")
	for i, seg := range segs {
		if seg == "" || seg[0] == '.' {
			return fmt.Errorf("%w: empty or dot segment in path %q", ErrURLNotAllowed, p)
		}
		for j := 0; j < len(seg); j++ {
			if !isNameByte(seg[j]) {
				return fmt.Errorf("%w: byte %q in path %q", ErrURLNotAllowed, seg[j], p)
			}
		}
		if i == len(segs)-1 && strings.HasSuffix(seg, headersSuffix) {
			return fmt.Errorf("%w: path %q collides with a headers file", ErrURLNotAllowed, p)
		}
	}
	return nil
}

// checkQuery accepts key=value pairs of name bytes separated by '&'. ','
// is refused because the directory format maps '&' to ','.
func checkQuery(q string) error {
	if q == "" {
		return nil
	}
	for _, pair := range strings.Split(q, "&") {
		k, v, ok := strings.Cut(pair, "=")
		if !ok || k == "" || v == "" {
			return fmt.Errorf("%w: malformed query %q", ErrURLNotAllowed, q)
		}
		for _, s := range []string{k, v} {
			for j := 0; j < len(s); j++ {
				if !isNameByte(s[j]) {
					return fmt.Errorf("%w: byte %q in query %q", ErrURLNotAllowed, s[j], q)
				}
			}
		}
	}
	return nil
}

func isNameByte(c byte) bool {
	return 'a' <= c && c <= 'z' || 'A' <= c && c <= 'Z' || '0' <= c && c <= '9' || c == '.' || c == '_' || c == '-'
}

// PathFor returns the name, relative to a collateral directory and
// slash-separated, under which the document at canonical URL u is stored:
// "<host><path>", plus "@<query>" with '&' replaced by ',' when u has a
// query. Its response headers, if any, go next to it with ".headers.json"
// appended. URLs the store would refuse to fetch are refused here too.
func PathFor(u string) (string, error) {
	d, err := parseDocURL(u)
	if err != nil {
		return "", err
	}
	return d.rel, nil
}

// base is a configured replacement for a canonical host.
type base struct {
	scheme string
	host   string
	prefix string // path prefix without a trailing slash
}

// parseBase validates a configured base URL. Plain http is accepted only
// when allowHTTP is set (loopback tests, a PCCS on the same host).
func parseBase(name, raw, def string, allowHTTP bool) (base, error) {
	if raw == "" {
		raw = def
	}
	u, err := url.Parse(raw)
	if err != nil {
		return base{}, fmt.Errorf("collateral: %s: %v", name, err)
	}
	switch {
	case u.Scheme != "https" && !(u.Scheme == "http" && allowHTTP):
		return base{}, fmt.Errorf("collateral: %s: scheme %q not allowed (http needs AllowHTTP)", name, u.Scheme)
	case u.Host == "":
		return base{}, fmt.Errorf("collateral: %s: no host in %q", name, raw)
	case u.User != nil || u.RawQuery != "" || u.Fragment != "" || u.Opaque != "":
		return base{}, fmt.Errorf("collateral: %s: user info, query or fragment in %q", name, u.Redacted())
	}
	return base{scheme: u.Scheme, host: u.Host, prefix: strings.TrimSuffix(u.EscapedPath(), "/")}, nil
}

// fetchURL maps d onto b: scheme and host replaced, b's path prefixed.
func (b base) fetchURL(d *docURL) string {
	s := b.scheme + "://" + b.host + b.prefix + d.path
	if d.rawQuery != "" {
		s += "?" + d.rawQuery
	}
	return s
}
