package hcvault

import (
	"fmt"
	"net/url"
	"regexp"
	"strings"
)

// Scheme is the URI scheme of Vault transit keys.
const Scheme = "hcvault"

// KeyURI is a parsed hcvault:// key URI. The form follows tink-go-hcvault:
//
//	hcvault://<host>[:<port>]/<mount path>/keys/<key name>[?<auth parameters>]
//
// The mount path may have several segments (a transit engine mounted at
// "kms/transit", or a Vault Enterprise namespace written as a path prefix,
// "ns1/transit"). The optional query selects how the KMS authenticates; it
// says nothing about which key is used, so String leaves it out and the
// KEKURI recorded on wrapped keys stays the same when credentials change.
type KeyURI struct {
	// Host is the Vault server's host[:port]; requests go to https://Host.
	Host string
	// Mount is the transit engine's mount path, without surrounding slashes.
	Mount string
	// Name is the transit key's name.
	Name string

	// Role, if set, selects Kubernetes auth with this Vault role (query
	// parameter "role").
	Role string
	// AuthMount is the Kubernetes auth method's mount path (query parameter
	// "auth_mount"; default "kubernetes").
	AuthMount string
	// TokenFile, if set, is a file holding a Vault token, such as a Vault
	// Agent sink (query parameter "token_file").
	TokenFile string
}

// keyNamePattern is Vault's framework.GenericNameRegex, which transit uses
// for key names: anything else would be routed to another endpoint or
// rejected by Vault, so it is refused here with a clear message instead.
var keyNamePattern = regexp.MustCompile(`^\w(([\w.@-]+)?\w)?$`)

// mountSegmentPattern restricts mount path segments to the characters Vault
// allows in mount paths and namespace names, so a segment can never carry
// URL syntax ("?", "#", "%") into the request path.
var mountSegmentPattern = regexp.MustCompile(`^[\w.@-]+$`)

// ParseURI parses and validates an hcvault:// key URI.
func ParseURI(raw string) (KeyURI, error) {
	u, err := url.Parse(raw)
	if err != nil {
		// url.Error quotes the whole URI; it holds no secret (userinfo is
		// refused below, and query values are paths and role names).
		return KeyURI{}, fmt.Errorf("hcvault: parse key URI: %w", err)
	}
	if u.Scheme != Scheme {
		return KeyURI{}, fmt.Errorf("hcvault: key URI scheme is %q, want %q", u.Scheme, Scheme)
	}
	if u.Opaque != "" {
		return KeyURI{}, fmt.Errorf("hcvault: key URI must be hcvault://<host>/<mount>/keys/<name>")
	}
	if u.User != nil {
		// Never accept credentials in the URI: it is stored on every
		// wrapped key and shows up in logs and configuration dumps.
		return KeyURI{}, fmt.Errorf("hcvault: key URI must not carry user information; pass credentials through a token, token file or Kubernetes auth")
	}
	if u.Host == "" || u.Hostname() == "" {
		return KeyURI{}, fmt.Errorf("hcvault: key URI has no Vault host")
	}
	if u.Fragment != "" || strings.Contains(raw, "#") {
		return KeyURI{}, fmt.Errorf("hcvault: key URI must not have a fragment")
	}
	if u.RawPath != "" || strings.Contains(u.EscapedPath(), "%") {
		return KeyURI{}, fmt.Errorf("hcvault: key URI path must not contain escaped characters")
	}
	parts := strings.Split(u.Path, "/")
	// parts[0] is the empty string before the leading slash; then at least
	// one mount segment, "keys" and the name.
	if len(parts) < 4 || parts[0] != "" || parts[len(parts)-2] != "keys" {
		return KeyURI{}, fmt.Errorf("hcvault: key URI path must be /<mount>/keys/<name>")
	}
	mount := parts[1 : len(parts)-2]
	for _, seg := range mount {
		if seg == "" || seg == "." || seg == ".." || !mountSegmentPattern.MatchString(seg) {
			return KeyURI{}, fmt.Errorf("hcvault: key URI mount path has an invalid segment %q", seg)
		}
	}
	name := parts[len(parts)-1]
	if !keyNamePattern.MatchString(name) {
		return KeyURI{}, fmt.Errorf("hcvault: invalid transit key name %q", name)
	}
	k := KeyURI{Host: u.Host, Mount: strings.Join(mount, "/"), Name: name}
	if err := k.parseQuery(u.RawQuery); err != nil {
		return KeyURI{}, err
	}
	return k, nil
}

func (k *KeyURI) parseQuery(raw string) error {
	if raw == "" {
		return nil
	}
	q, err := url.ParseQuery(raw)
	if err != nil {
		return fmt.Errorf("hcvault: parse key URI query: %w", err)
	}
	for key, vals := range q {
		if len(vals) != 1 || vals[0] == "" {
			return fmt.Errorf("hcvault: key URI query parameter %q must appear once with a value", key)
		}
		v := vals[0]
		switch key {
		case "role":
			k.Role = v
		case "auth_mount":
			for seg := range strings.SplitSeq(v, "/") {
				if !mountSegmentPattern.MatchString(seg) || seg == "." || seg == ".." {
					return fmt.Errorf("hcvault: invalid auth_mount %q", v)
				}
			}
			k.AuthMount = v
		case "token_file":
			k.TokenFile = v
		default:
			// Refuse unknown parameters: a mistyped one would otherwise
			// silently fall back to another credential source.
			return fmt.Errorf("hcvault: unknown key URI query parameter %q (known: role, auth_mount, token_file)", key)
		}
	}
	if k.AuthMount != "" && k.Role == "" {
		return fmt.Errorf("hcvault: auth_mount needs role (Kubernetes auth)")
	}
	if k.Role != "" && k.TokenFile != "" {
		return fmt.Errorf("hcvault: role (Kubernetes auth) and token_file are mutually exclusive")
	}
	return nil
}

// String returns the canonical key URI, without the authentication query:
// hcvault://<host>/<mount>/keys/<name>.
func (k KeyURI) String() string {
	return Scheme + "://" + k.Host + "/" + k.Mount + "/keys/" + k.Name
}

// encryptPath and decryptPath are the transit endpoints, relative to /v1/.
func (k KeyURI) encryptPath() string { return k.Mount + "/encrypt/" + k.Name }
func (k KeyURI) decryptPath() string { return k.Mount + "/decrypt/" + k.Name }
