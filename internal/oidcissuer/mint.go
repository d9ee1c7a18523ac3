package oidcissuer

import (
	"crypto"
	"crypto/hmac"
	"crypto/rand"
	"crypto/rsa"
	"crypto/sha256"
	"crypto/sha512"
	"encoding/json"
	"fmt"
	"maps"
	"time"
)

// MintOption adjusts one minted token.
type MintOption func(*mintConfig)

type mintConfig struct {
	alg        string
	kid        string
	unknownKey bool
	expired    bool
	header     map[string]any
}

// WithAlg signs with alg using the issuer's RSA key: RS256 (default), RS384,
// RS512, PS256, PS384 or PS512.
func WithAlg(alg string) MintOption { return func(c *mintConfig) { c.alg = alg } }

// WithAlgNone produces an unsigned token (alg "none", empty signature).
func WithAlgNone() MintOption { return func(c *mintConfig) { c.alg = "none" } }

// WithHS256PublicKey signs with HMAC-SHA256 keyed by the PEM public key: the
// classic algorithm-confusion forgery.
func WithHS256PublicKey() MintOption { return func(c *mintConfig) { c.alg = "HS256" } }

// WithUnknownKey signs with an RSA key that is never published, under a kid
// that is not in the JWKS.
func WithUnknownKey() MintOption { return func(c *mintConfig) { c.unknownKey = true } }

// WithKeyID overrides the header kid (the current key still signs).
func WithKeyID(kid string) MintOption { return func(c *mintConfig) { c.kid = kid } }

// WithExpired sets iat and nbf two hours ago and exp one hour ago,
// overriding the claims.
func WithExpired() MintOption { return func(c *mintConfig) { c.expired = true } }

// WithHeader adds or overrides a header parameter.
func WithHeader(name string, value any) MintOption {
	return func(c *mintConfig) {
		if c.header == nil {
			c.header = map[string]any{}
		}
		c.header[name] = value
	}
}

// Mint signs claims into a compact JWT. Missing iss, iat, nbf and exp get
// defaults (IssuerURL, now, now, now+TokenLifetime); claims given win,
// except under WithExpired.
func (i *Issuer) Mint(claims map[string]any, opts ...MintOption) (string, error) {
	cfg := mintConfig{alg: "RS256"}
	for _, o := range opts {
		o(&cfg)
	}
	now := i.opts.Now()
	c := map[string]any{
		"iss": i.issuer,
		"iat": now.Unix(),
		"nbf": now.Unix(),
		"exp": now.Add(i.opts.TokenLifetime).Unix(),
	}
	maps.Copy(c, claims)
	if cfg.expired {
		c["iat"] = now.Add(-2 * time.Hour).Unix()
		c["nbf"] = now.Add(-2 * time.Hour).Unix()
		c["exp"] = now.Add(-time.Hour).Unix()
	}

	i.mu.Lock()
	key := i.keys[len(i.keys)-1]
	if cfg.unknownKey {
		if i.rogueKey == nil {
			k, err := rsa.GenerateKey(rand.Reader, 2048)
			if err != nil {
				i.mu.Unlock()
				return "", fmt.Errorf("oidcissuer: generating key: %w", err)
			}
			i.rogueKey = k
		}
		key = signingKey{kid: thumbprint(&i.rogueKey.PublicKey), priv: i.rogueKey}
	}
	i.mu.Unlock()
	if cfg.kid != "" {
		key.kid = cfg.kid
	}

	h := map[string]any{"alg": cfg.alg, "typ": "JWT", "kid": key.kid}
	maps.Copy(h, cfg.header)
	hb, err := json.Marshal(h)
	if err != nil {
		return "", fmt.Errorf("oidcissuer: encoding header: %w", err)
	}
	pb, err := json.Marshal(c)
	if err != nil {
		return "", fmt.Errorf("oidcissuer: encoding claims: %w", err)
	}
	input := b64(hb) + "." + b64(pb)
	sig, err := sign(cfg.alg, key.priv, []byte(input))
	if err != nil {
		return "", err
	}
	return input + "." + b64(sig), nil
}

// sign is written against the standard library rather than a JOSE package,
// so tests exercise the verifier against an independent implementation.
func sign(alg string, priv *rsa.PrivateKey, input []byte) ([]byte, error) {
	var h crypto.Hash
	pss := false
	switch alg {
	case "none":
		return nil, nil
	case "HS256":
		mac := hmac.New(sha256.New, publicPEM(&priv.PublicKey))
		mac.Write(input)
		return mac.Sum(nil), nil
	case "RS256":
		h = crypto.SHA256
	case "RS384":
		h = crypto.SHA384
	case "RS512":
		h = crypto.SHA512
	case "PS256":
		h, pss = crypto.SHA256, true
	case "PS384":
		h, pss = crypto.SHA384, true
	case "PS512":
		h, pss = crypto.SHA512, true
	default:
		return nil, fmt.Errorf("oidcissuer: unsupported alg %q", alg)
	}
	var digest []byte
	switch h {
	case crypto.SHA256:
		d := sha256.Sum256(input)
		digest = d[:]
	case crypto.SHA384:
		d := sha512.Sum384(input)
		digest = d[:]
	default:
		d := sha512.Sum512(input)
		digest = d[:]
	}
	var sig []byte
	var err error
	if pss {
		// RFC 7518 3.5: salt length equals the hash length.
		sig, err = rsa.SignPSS(rand.Reader, priv, h, digest, &rsa.PSSOptions{SaltLength: rsa.PSSSaltLengthEqualsHash})
	} else {
		sig, err = rsa.SignPKCS1v15(nil, priv, h, digest)
	}
	if err != nil {
		return nil, fmt.Errorf("oidcissuer: signing %s: %w", alg, err)
	}
	return sig, nil
}
