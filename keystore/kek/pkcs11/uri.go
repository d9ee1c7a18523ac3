package pkcs11

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"

	"github.com/attested-kms/attested-kms/keystore/kek"
)

// Scheme is the RFC 7512 URI scheme. PKCS#11 URIs have no "//".
const Scheme = "pkcs11"

// URI is a parsed RFC 7512 PKCS#11 URI naming a key object. Path attributes
// select the token and the object; query attributes say how to reach them.
type URI struct {
	// Token selection (path attributes). Empty means "any".
	Token               string // token: CK_TOKEN_INFO label
	Manufacturer        string // manufacturer: CK_TOKEN_INFO manufacturerID
	Serial              string // serial: CK_TOKEN_INFO serialNumber
	Model               string // model: CK_TOKEN_INFO model
	SlotDescription     string // slot-description
	SlotManufacturer    string // slot-manufacturer
	SlotID              *uint  // slot-id (decimal)
	LibraryManufacturer string // library-manufacturer: CK_INFO manufacturerID
	LibraryDescription  string // library-description
	LibraryVersion      string // library-version: "M" or "M.N"

	// Object selection (path attributes).
	Object string // object: CKA_LABEL
	ID     []byte // id: CKA_ID (raw bytes, percent-encoded in the URI)
	Type   string // type: public, private, cert, secret-key or data

	// Query attributes.
	ModulePath string // module-path: absolute path of the PKCS#11 library
	ModuleName string // module-name: library name without "lib" prefix and suffix
	PINSource  string // pin-source: file:/path or /path holding the user PIN
	// PINValue is the pin-value attribute. It is accepted because RFC 7512
	// defines it, but a PIN inside a URI ends up in configuration files and
	// process listings: prefer PINSource. String never includes it.
	PINValue string
}

// Path attributes defined by RFC 7512, in the order String writes them.
var pathAttrs = []string{
	"library-manufacturer", "library-description", "library-version",
	"slot-manufacturer", "slot-description", "slot-id",
	"manufacturer", "model", "serial", "token",
	"type", "object", "id",
}

// Object types defined by RFC 7512 (pk11-type).
var objectTypes = map[string]bool{"public": true, "private": true, "cert": true, "secret-key": true, "data": true}

// errURI marks a malformed URI. It is joined with kek.ErrUnsupported so
// the server reports a configuration problem, never an outage.
func errURI(format string, args ...any) error {
	return fmt.Errorf("pkcs11: invalid URI: %s: %w", fmt.Sprintf(format, args...), kek.ErrUnsupported)
}

// ParseURI parses an RFC 7512 PKCS#11 URI. It refuses what it cannot honour
// rather than guess: unknown standard attributes, vendor path attributes
// (x-...) which would narrow the selection in ways it cannot apply,
// repeated attributes, both pin-source and pin-value, and characters the
// grammar does not allow unencoded. Unknown vendor query attributes are
// ignored, as RFC 7512 asks. Error messages never contain pin-value.
func ParseURI(s string) (*URI, error) {
	scheme, rest, ok := strings.Cut(s, ":")
	if !ok || !strings.EqualFold(scheme, Scheme) {
		return nil, errURI("scheme is not %q", Scheme+":")
	}
	path, query, _ := strings.Cut(rest, "?")
	if strings.Contains(query, "#") || strings.Contains(path, "#") {
		return nil, errURI("fragments are not allowed")
	}
	u := &URI{}
	seen := map[string]bool{}
	if path != "" {
		for attr := range strings.SplitSeq(path, ";") {
			name, raw, ok := strings.Cut(attr, "=")
			if !ok || name == "" {
				return nil, errURI("path attribute %q is not name=value", truncate(attr))
			}
			if seen[name] {
				return nil, errURI("path attribute %q repeated", name)
			}
			seen[name] = true
			val, err := unescape(raw, isPathChar)
			if err != nil {
				return nil, errURI("path attribute %q: %v", name, err)
			}
			if err := u.setPath(name, val); err != nil {
				return nil, err
			}
		}
	}
	if query != "" {
		for attr := range strings.SplitSeq(query, "&") {
			name, raw, ok := strings.Cut(attr, "=")
			if !ok || name == "" {
				// Do not echo the attribute: it may be a mangled pin-value.
				return nil, errURI("query attribute is not name=value")
			}
			if seen["?"+name] {
				return nil, errURI("query attribute %q repeated", name)
			}
			seen["?"+name] = true
			val, err := unescape(raw, isQueryChar)
			if err != nil {
				if name == "pin-value" {
					return nil, errURI("query attribute %q is not correctly encoded", name)
				}
				return nil, errURI("query attribute %q: %v", name, err)
			}
			switch name {
			case "module-path":
				u.ModulePath = string(val)
			case "module-name":
				u.ModuleName = string(val)
			case "pin-source":
				u.PINSource = string(val)
			case "pin-value":
				u.PINValue = string(val)
			default:
				if !strings.HasPrefix(name, "x-") {
					return nil, errURI("unknown query attribute %q", truncate(name))
				}
			}
		}
	}
	if u.PINSource != "" && u.PINValue != "" {
		return nil, errURI("pin-source and pin-value are mutually exclusive")
	}
	if u.ModulePath != "" && u.ModuleName != "" {
		return nil, errURI("module-path and module-name are mutually exclusive")
	}
	if u.ModulePath != "" && !filepath.IsAbs(u.ModulePath) {
		return nil, errURI("module-path must be absolute")
	}
	if strings.ContainsAny(u.ModuleName, `/\`) || u.ModuleName == "." || u.ModuleName == ".." {
		return nil, errURI("module-name must be a bare library name (use module-path for a path)")
	}
	return u, nil
}

func (u *URI) setPath(name string, val []byte) error {
	v := string(val)
	switch name {
	case "token":
		u.Token = v
	case "manufacturer":
		u.Manufacturer = v
	case "serial":
		u.Serial = v
	case "model":
		u.Model = v
	case "slot-description":
		u.SlotDescription = v
	case "slot-manufacturer":
		u.SlotManufacturer = v
	case "slot-id":
		id, err := strconv.ParseUint(v, 10, strconv.IntSize)
		if err != nil {
			return errURI("slot-id %q is not a decimal number", truncate(v))
		}
		uid := uint(id)
		u.SlotID = &uid
	case "library-manufacturer":
		u.LibraryManufacturer = v
	case "library-description":
		u.LibraryDescription = v
	case "library-version":
		if !validVersion(v) {
			return errURI("library-version %q is not M or M.N", truncate(v))
		}
		u.LibraryVersion = v
	case "object":
		u.Object = v
	case "id":
		u.ID = val
	case "type":
		if !objectTypes[v] {
			return errURI("type %q is not one of public, private, cert, secret-key, data", truncate(v))
		}
		u.Type = v
	default:
		// Vendor (x-...) path attributes narrow the selection in ways this
		// consumer cannot apply, so honouring the URI is impossible.
		return errURI("unsupported path attribute %q", truncate(name))
	}
	return nil
}

func validVersion(v string) bool {
	major, minor, hasMinor := strings.Cut(v, ".")
	isNum := func(s string) bool {
		_, err := strconv.ParseUint(s, 10, 8)
		return err == nil
	}
	return isNum(major) && (!hasMinor || isNum(minor))
}

// String returns the URI in canonical form: path attributes in a fixed
// order, values percent-encoded where the grammar requires it, id fully
// percent-encoded, and pin-value left out (a PIN must not end up in the
// key store's records or in logs).
func (u *URI) String() string {
	var b strings.Builder
	b.WriteString(Scheme + ":")
	first := true
	add := func(name, val string, escape func(string) string) {
		if !first {
			b.WriteByte(';')
		}
		first = false
		b.WriteString(name + "=" + escape(val))
	}
	for _, name := range pathAttrs {
		switch name {
		case "id":
			if u.ID != nil {
				add(name, string(u.ID), escapeAll)
			}
		case "slot-id":
			if u.SlotID != nil {
				add(name, strconv.FormatUint(uint64(*u.SlotID), 10), escapePath)
			}
		default:
			if v := u.pathValue(name); v != "" {
				add(name, v, escapePath)
			}
		}
	}
	sep := byte('?')
	for _, q := range [][2]string{{"module-name", u.ModuleName}, {"module-path", u.ModulePath}, {"pin-source", u.PINSource}} {
		if q[1] != "" {
			b.WriteByte(sep)
			sep = '&'
			b.WriteString(q[0] + "=" + escapeQuery(q[1]))
		}
	}
	return b.String()
}

func (u *URI) pathValue(name string) string {
	switch name {
	case "token":
		return u.Token
	case "manufacturer":
		return u.Manufacturer
	case "serial":
		return u.Serial
	case "model":
		return u.Model
	case "slot-description":
		return u.SlotDescription
	case "slot-manufacturer":
		return u.SlotManufacturer
	case "library-manufacturer":
		return u.LibraryManufacturer
	case "library-description":
		return u.LibraryDescription
	case "library-version":
		return u.LibraryVersion
	case "object":
		return u.Object
	case "type":
		return u.Type
	}
	return ""
}

// moduleDirs are searched for module-name, in order. RFC 7512 leaves the
// search to the platform; these are where distributions install modules.
var moduleDirs = []string{
	"/usr/lib/pkcs11", "/usr/lib64/pkcs11", "/usr/lib/x86_64-linux-gnu/pkcs11", "/usr/lib/aarch64-linux-gnu/pkcs11",
	"/usr/lib/softhsm", "/usr/lib64/softhsm", "/usr/lib/x86_64-linux-gnu/softhsm", "/usr/lib/aarch64-linux-gnu/softhsm",
	"/usr/local/lib", "/usr/local/lib/softhsm", "/usr/lib64", "/usr/lib", "/usr/lib/x86_64-linux-gnu", "/usr/lib/aarch64-linux-gnu",
}

// modulePath resolves module-path or module-name to a library file.
func (u *URI) modulePath() (string, error) {
	if u.ModulePath != "" {
		return u.ModulePath, nil
	}
	if u.ModuleName == "" {
		return "", errURI("module-path or module-name is required")
	}
	for _, dir := range moduleDirs {
		for _, name := range []string{"lib" + u.ModuleName + ".so", u.ModuleName + ".so"} {
			p := filepath.Join(dir, name)
			if fi, err := os.Stat(p); err == nil && fi.Mode().IsRegular() {
				return p, nil
			}
		}
	}
	return "", fmt.Errorf("pkcs11: module %q not found in %s: %w", u.ModuleName, strings.Join(moduleDirs, ", "), kek.ErrUnavailable)
}

// pinFunc returns how to obtain the PIN at login time. The source is read
// at every login so a rotated PIN file takes effect without a restart.
func (u *URI) pinFunc() (func() (string, error), error) {
	switch {
	case u.PINValue != "":
		pin := u.PINValue
		return func() (string, error) { return pin, nil }, nil
	case u.PINSource != "":
		path, err := pinSourcePath(u.PINSource)
		if err != nil {
			return nil, err
		}
		return func() (string, error) {
			b, err := os.ReadFile(path)
			if err != nil {
				// A missing secret volume is an availability problem.
				return "", fmt.Errorf("pkcs11: read pin-source %s: %w", path, errors.Join(kek.ErrUnavailable, err))
			}
			defer clear(b)
			// One trailing newline is what editors and `echo` add.
			pin := strings.TrimSuffix(strings.TrimSuffix(string(b), "\n"), "\r")
			if pin == "" {
				return "", fmt.Errorf("pkcs11: pin-source %s is empty: %w", path, kek.ErrUnavailable)
			}
			return pin, nil
		}, nil
	default:
		// Tokens with a protected authentication path, or no login.
		return nil, nil
	}
}

// pinSourcePath accepts "file:/abs", "file:///abs" and "/abs".
func pinSourcePath(src string) (string, error) {
	p := src
	if rest, ok := strings.CutPrefix(src, "file:"); ok {
		p = rest
		if strings.HasPrefix(p, "//") {
			host, path, _ := strings.Cut(p[2:], "/")
			if host != "" && host != "localhost" {
				return "", errURI("pin-source must be a local file")
			}
			p = "/" + path
		}
	} else if strings.Contains(src, ":") && !filepath.IsAbs(src) {
		return "", errURI("pin-source supports only file: URIs and absolute paths")
	}
	if !filepath.IsAbs(p) {
		return "", errURI("pin-source must be an absolute path")
	}
	return filepath.Clean(p), nil
}

// Character classes of RFC 7512's grammar.
func isUnreserved(c byte) bool {
	return 'a' <= c && c <= 'z' || 'A' <= c && c <= 'Z' || '0' <= c && c <= '9' || strings.IndexByte("-._~", c) >= 0
}
func isResAvail(c byte) bool { return strings.IndexByte(":[]@!$'()*+,=", c) >= 0 }
func isPathChar(c byte) bool { return isUnreserved(c) || isResAvail(c) || c == '&' }
func isQueryChar(c byte) bool {
	return isUnreserved(c) || isResAvail(c) || strings.IndexByte("/?|", c) >= 0
}
func escapePath(s string) string  { return escape(s, isPathChar) }
func escapeQuery(s string) string { return escape(s, isQueryChar) }
func escapeAll(s string) string   { return escape(s, func(byte) bool { return false }) }

func escape(s string, allowed func(byte) bool) string {
	const hex = "0123456789ABCDEF"
	var b strings.Builder
	for i := 0; i < len(s); i++ {
		c := s[i]
		if allowed(c) {
			b.WriteByte(c)
			continue
		}
		b.WriteByte('%')
		b.WriteByte(hex[c>>4])
		b.WriteByte(hex[c&15])
	}
	return b.String()
}

// unescape decodes percent-encoding, refusing characters outside allowed.
// Errors name the offending position, never the value.
func unescape(s string, allowed func(byte) bool) ([]byte, error) {
	out := make([]byte, 0, len(s))
	for i := 0; i < len(s); i++ {
		c := s[i]
		switch {
		case c == '%':
			if i+2 >= len(s) || !isHex(s[i+1]) || !isHex(s[i+2]) {
				return nil, fmt.Errorf("bad percent-encoding at offset %d", i)
			}
			out = append(out, unhex(s[i+1])<<4|unhex(s[i+2]))
			i += 2
		case allowed(c):
			out = append(out, c)
		default:
			return nil, fmt.Errorf("character at offset %d must be percent-encoded", i)
		}
	}
	return out, nil
}

func isHex(c byte) bool {
	return '0' <= c && c <= '9' || 'a' <= c && c <= 'f' || 'A' <= c && c <= 'F'
}

func unhex(c byte) byte {
	switch {
	case c <= '9':
		return c - '0'
	case c <= 'F':
		return c - 'A' + 10
	default:
		return c - 'a' + 10
	}
}

// truncate bounds attacker- or typo-controlled text echoed in errors.
func truncate(s string) string {
	if len(s) > 40 {
		return s[:40] + "..."
	}
	return s
}
