package token

import (
	"errors"
	"fmt"
	"net"
	"net/http"
	"net/url"
	"strings"
	"time"
)

// IssuerConfig trusts one token issuer.
type IssuerConfig struct {
	// Issuer is the exact iss value, e.g. https://sts.windows.net/<tid>/
	// (AAD v1 tokens) or https://login.microsoftonline.com/<tid>/v2.0 (v2).
	// It is compared byte for byte: a trailing slash matters.
	Issuer string
	// Discovery is an OIDC discovery base; <Discovery>/.well-known/openid-configuration
	// is fetched (a URL that already ends in that path is used as is). Only
	// jwks_uri is taken from the document: AAD v1 and multi-tenant discovery
	// documents report an issuer different from (or a template of) the iss in
	// tokens, so Issuer above stays authoritative. When both Discovery and
	// JWKSURL are empty, Discovery defaults to Issuer.
	Discovery string
	// JWKSURL is the key set URL, an alternative to Discovery (not both).
	JWKSURL string
	// Audiences lists accepted aud values; at least one is required and the
	// token must carry one of them.
	Audiences []string
	// Algorithms lists accepted JWS algorithms; default ["RS256"]. Only
	// asymmetric algorithms (RS*, PS*, ES*) are accepted: "none" and HS*
	// would let anyone who knows the public key mint tokens.
	Algorithms []string
}

// Config configures a Verifier.
type Config struct {
	Issuers []IssuerConfig
	// ClockSkew is tolerated on exp, nbf and iat alike; default 2m, at most
	// 10m (beyond that expiry stops meaning much).
	ClockSkew time.Duration
	// Now returns the current time; default time.Now. It drives both claim
	// checks and key-cache ageing, so tests can drive either.
	Now func() time.Time
	// HTTPClient fetches discovery documents and key sets; default a client
	// with a 10s timeout (never http.DefaultClient, which has none) that follows
	// redirects only to URLs Discovery and JWKSURL would accept.
	HTTPClient *http.Client
}

const (
	defaultClockSkew = 2 * time.Minute
	maxClockSkew     = 10 * time.Minute
	wellKnownPath    = "/.well-known/openid-configuration"
)

// isAsymmetricAlg reports whether an IssuerConfig may allow alg. The list is
// closed on purpose: an unknown name is a configuration error, not a silently
// ignored entry.
func isAsymmetricAlg(alg string) bool {
	switch alg {
	case "RS256", "RS384", "RS512", "PS256", "PS384", "PS512", "ES256", "ES384", "ES512":
		return true
	}
	return false
}

// normalize validates cfg and returns a copy with defaults applied. It does
// no I/O, so a KMS can start while its identity provider is unreachable.
func (cfg Config) normalize() (Config, error) {
	if len(cfg.Issuers) == 0 {
		return cfg, errors.New("token: at least one issuer is required")
	}
	switch {
	case cfg.ClockSkew == 0:
		cfg.ClockSkew = defaultClockSkew
	case cfg.ClockSkew < 0:
		return cfg, fmt.Errorf("token: clock skew %v is negative", cfg.ClockSkew)
	case cfg.ClockSkew > maxClockSkew:
		return cfg, fmt.Errorf("token: clock skew %v exceeds the maximum %v", cfg.ClockSkew, maxClockSkew)
	}
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	if cfg.HTTPClient == nil {
		cfg.HTTPClient = &http.Client{
			Timeout: fetchTimeout,
			// The default policy would follow a redirect from https to
			// plain http; hold redirects to the same rule as configured URLs.
			CheckRedirect: func(req *http.Request, via []*http.Request) error {
				if len(via) >= 3 {
					return errors.New("too many redirects")
				}
				return checkFetchURL(req.URL.String())
			},
		}
	}
	seen := make(map[string]bool, len(cfg.Issuers))
	issuers := make([]IssuerConfig, 0, len(cfg.Issuers))
	for i, ic := range cfg.Issuers {
		nic, err := ic.normalize()
		if err != nil {
			return cfg, fmt.Errorf("token: issuer %d: %w", i, err)
		}
		if seen[nic.Issuer] {
			return cfg, fmt.Errorf("token: issuer %d: %q is configured twice", i, nic.Issuer)
		}
		seen[nic.Issuer] = true
		issuers = append(issuers, nic)
	}
	cfg.Issuers = issuers
	return cfg, nil
}

func (ic IssuerConfig) normalize() (IssuerConfig, error) {
	if ic.Issuer == "" {
		return ic, errors.New("issuer is empty")
	}
	if ic.Discovery != "" && ic.JWKSURL != "" {
		return ic, fmt.Errorf("issuer %q: set Discovery or JWKSURL, not both", ic.Issuer)
	}
	if ic.Discovery == "" && ic.JWKSURL == "" {
		ic.Discovery = ic.Issuer
	}
	if ic.Discovery != "" {
		d := ic.Discovery
		if !strings.HasSuffix(d, wellKnownPath) {
			d = strings.TrimSuffix(d, "/") + wellKnownPath
		}
		if err := checkFetchURL(d); err != nil {
			return ic, fmt.Errorf("issuer %q: discovery: %w", ic.Issuer, err)
		}
		ic.Discovery = d
	}
	if ic.JWKSURL != "" {
		if err := checkFetchURL(ic.JWKSURL); err != nil {
			return ic, fmt.Errorf("issuer %q: JWKS URL: %w", ic.Issuer, err)
		}
	}
	if len(ic.Audiences) == 0 {
		return ic, fmt.Errorf("issuer %q: at least one audience is required", ic.Issuer)
	}
	for _, a := range ic.Audiences {
		if a == "" {
			return ic, fmt.Errorf("issuer %q: empty audience", ic.Issuer)
		}
	}
	ic.Audiences = append([]string(nil), ic.Audiences...)
	if len(ic.Algorithms) == 0 {
		ic.Algorithms = []string{"RS256"}
	}
	for _, a := range ic.Algorithms {
		if !isAsymmetricAlg(a) {
			return ic, fmt.Errorf("issuer %q: algorithm %q is not allowed (asymmetric RS*, PS*, ES* only)", ic.Issuer, a)
		}
	}
	ic.Algorithms = append([]string(nil), ic.Algorithms...)
	return ic, nil
}

// checkFetchURL accepts https URLs, and plain http only to loopback hosts
// (tests and the dev issuer): keys fetched in clear text from elsewhere could
// be swapped by anyone on the path.
func checkFetchURL(raw string) error {
	u, err := url.Parse(raw)
	if err != nil {
		return fmt.Errorf("invalid URL: %w", err)
	}
	if u.Host == "" || u.User != nil || u.Fragment != "" {
		return fmt.Errorf("URL %q must be absolute, without user info or fragment", raw)
	}
	switch u.Scheme {
	case "https":
		return nil
	case "http":
		if isLoopbackHost(u.Hostname()) {
			return nil
		}
		return fmt.Errorf("URL %q: plain http is allowed only to loopback hosts", raw)
	default:
		return fmt.Errorf("URL %q: scheme must be https", raw)
	}
}

func isLoopbackHost(h string) bool {
	if h == "localhost" {
		return true
	}
	ip := net.ParseIP(h)
	return ip != nil && ip.IsLoopback()
}
