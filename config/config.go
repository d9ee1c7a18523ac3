// Package config loads the `kms serve` configuration file. It only parses
// and checks the document; turning it into running components is the
// server package's job.
package config

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"net/url"
	"os"
	"path/filepath"
	"time"

	"gopkg.in/yaml.v3"
)

// MaxFileSize bounds the configuration file; a larger one is a mistake.
const MaxFileSize = 1 << 20

// Config is the whole `kms serve` configuration. Relative paths are
// resolved against the directory of the configuration file.
type Config struct {
	Listen Listen `yaml:"listen"`
	TLS    TLS    `yaml:"tls"`
	Store  Store  `yaml:"store"`
	KEK    string `yaml:"kek"`
	// KEKCheckInterval is how often each key set's KEK is re-checked; a
	// KEK its owner disabled stops releases within it. Default 5m.
	KEKCheckInterval Duration    `yaml:"kek_check_interval"`
	Nonce            Nonce       `yaml:"nonce"`
	Tokens           Tokens      `yaml:"tokens"`
	Attestation      Attestation `yaml:"attestation"`
	AdminAuth        AdminAuth   `yaml:"admin_auth"`
	Limits           Limits      `yaml:"limits"`
	Rotation         Rotation    `yaml:"rotation"`
	KeySets          []KeySet    `yaml:"keysets"`
}

// Listen holds the addresses the server binds.
type Listen struct {
	// GRPC serves the key-release API (TLS).
	GRPC string `yaml:"grpc"`
	// HTTP serves public keys and health endpoints (TLS unless disabled).
	HTTP string `yaml:"http"`
	// AdminSocket is the Unix socket of the admin API, created with mode 0600.
	AdminSocket string `yaml:"admin_socket"`
	// Admin serves the admin API over the network (TLS, with client
	// certificates and/or bearer tokens mapped to roles). Empty: off.
	Admin string `yaml:"admin"`
}

// AdminAuth authenticates callers of the network admin listener.
type AdminAuth struct {
	// ClientCAFile is the PEM operator CA. Client certificates carry their
	// roles as URI SANs attested-kms:role:<admin|operator|auditor>.
	ClientCAFile string `yaml:"client_ca_file"`
	// RoleClaims maps app-role values in an access token's "roles" claim
	// to KMS roles. Tokens are verified against tokens.issuers, and must be
	// for one of Audiences.
	RoleClaims map[string]string `yaml:"role_claims"`
	Audiences  []string          `yaml:"audiences"`
}

// TLS configures the server certificate. TLS is on unless Disabled is set,
// which is meant only for tests behind a TLS-terminating proxy.
type TLS struct {
	Cert     string `yaml:"cert"`
	Key      string `yaml:"key"`
	Disabled bool   `yaml:"disabled"`
}

// Store selects the storage backend.
type Store struct {
	// Bolt is a bbolt file: one node, which is then always the rotation
	// leader.
	Bolt string `yaml:"bbolt"`
	// Etcd is a shared etcd cluster: several replicas, one elected leader
	// rotating keys, watches keeping every replica's caches current.
	Etcd *Etcd `yaml:"etcd"`
}

// Etcd connects to the etcd cluster replicas share.
type Etcd struct {
	Endpoints []string `yaml:"endpoints"`
	// Prefix separates this KMS's keys from other users of the cluster.
	Prefix string `yaml:"prefix"`
	// mTLS to etcd: the cluster's CA and this replica's client certificate.
	CAFile   string `yaml:"ca_file"`
	CertFile string `yaml:"cert_file"`
	KeyFile  string `yaml:"key_file"`
	// LeaderTTL bounds how long rotation pauses when the leader dies.
	// Default 10s.
	LeaderTTL Duration `yaml:"leader_ttl"`
	// ReplicaID names this replica in the election (default: host name).
	ReplicaID string `yaml:"replica_id"`
}

// Nonce configures the challenge secret. The secret is kept sealed under
// the KEK, never in plaintext on disk.
type Nonce struct {
	SealedSecretFile string   `yaml:"sealed_secret_file"`
	Lifetime         Duration `yaml:"lifetime"`
}

// Tokens lists the identity providers whose access tokens are accepted.
type Tokens struct {
	ClockSkew Duration `yaml:"clock_skew"`
	Issuers   []Issuer `yaml:"issuers"`
}

// Issuer is one accepted token issuer.
type Issuer struct {
	Issuer     string   `yaml:"issuer"`
	Discovery  string   `yaml:"discovery"`
	JWKSURL    string   `yaml:"jwks_url"`
	Audiences  []string `yaml:"audiences"`
	Algorithms []string `yaml:"algorithms"`
}

// Attestation configures evidence verification.
type Attestation struct {
	// Platforms lists the evidence types accepted; empty means all
	// (attestation.Platforms). Azure vTPM types verify their hardware
	// report with the sev_snp or tdx settings.
	Platforms  []string   `yaml:"platforms"`
	Collateral Collateral `yaml:"collateral"`
	SEVSNP     SEVSNP     `yaml:"sev_snp"`
	TDX        TDX        `yaml:"tdx"`
}

// Collateral configures where certificates, CRLs, TCB info and QE
// identities come from (attestation/collateral).
type Collateral struct {
	// Dir caches fetched documents; with Offline it is the only source.
	// Default: "collateral" next to the configuration file.
	Dir string `yaml:"dir"`
	// Offline never reaches the network: Dir must have been prepared with
	// `kms collateral fetch`. Documents past their next-update time then
	// make verification fail until Dir is refreshed.
	Offline bool `yaml:"offline"`
	// Base URLs, for a PCCS or Azure's THIM cache. Empty means the vendor's.
	AMDKDSURL      string   `yaml:"amd_kds_url"`
	IntelPCSURL    string   `yaml:"intel_pcs_url"`
	IntelCertsURL  string   `yaml:"intel_certs_url"`
	AllowPlainHTTP bool     `yaml:"allow_plain_http"`
	RequestTimeout Duration `yaml:"request_timeout"`
}

// SEVSNP configures SEV-SNP verification (bare and under Azure's vTPM).
type SEVSNP struct {
	// TestRootsFile names a PEM file of test ARK/ASK certificates (the
	// simulator's). Development only: with it set, the KMS accepts
	// simulated evidence. Genuine AMD roots are always trusted.
	TestRootsFile string `yaml:"test_roots_file"`
	// CheckRevocation checks the ASK/ASVK against AMD's CRL. Default true;
	// only an explicit false turns it off.
	CheckRevocation *bool `yaml:"check_revocation"`
}

// TDX configures Intel TDX verification (bare and under Azure's vTPM).
type TDX struct {
	// TestRootsFile names a PEM file of the TDX simulator's root CA.
	// Development only, like sev_snp.test_roots_file.
	TestRootsFile string `yaml:"test_roots_file"`
	// CheckRevocation checks the PCK chain against Intel's PCK and root CA
	// CRLs. Default true; only an explicit false turns it off.
	CheckRevocation *bool `yaml:"check_revocation"`
}

// Revocation reports whether revocation checking is on: unless set false.
func Revocation(flag *bool) bool { return flag == nil || *flag }

// Limits bound what one request may cost.
type Limits struct {
	MaxRequestBytes int `yaml:"max_request_bytes"`
}

// Rotation configures the single-node rotation timer.
type Rotation struct {
	TickInterval Duration `yaml:"tick_interval"`
}

// KeySet is a key set the server makes sure exists at start.
type KeySet struct {
	Name           string   `yaml:"name"`
	PolicyFile     string   `yaml:"policy_file"`
	RotationPeriod Duration `yaml:"rotation_period"`
	KeyLifetime    Duration `yaml:"key_lifetime"`
	PendingLead    Duration `yaml:"pending_lead"`
	Retention      Duration `yaml:"retention"`
}

// Duration is a time.Duration written as "5m" in YAML.
type Duration time.Duration

// UnmarshalYAML implements yaml.Unmarshaler.
func (d *Duration) UnmarshalYAML(n *yaml.Node) error {
	var s string
	if err := n.Decode(&s); err != nil {
		return err
	}
	v, err := time.ParseDuration(s)
	if err != nil {
		return fmt.Errorf("line %d: %w", n.Line, err)
	}
	if v < 0 {
		return fmt.Errorf("line %d: negative duration %s", n.Line, s)
	}
	*d = Duration(v)
	return nil
}

// MarshalYAML implements yaml.Marshaler.
func (d Duration) MarshalYAML() (any, error) { return time.Duration(d).String(), nil }

// Defaults applied by Load.
const (
	DefaultGRPC            = "127.0.0.1:8443"
	DefaultHTTP            = "127.0.0.1:8080"
	DefaultMaxRequestBytes = 64 << 10
	DefaultTickInterval    = time.Minute
	// DefaultCollateralDir is relative to the configuration file.
	DefaultCollateralDir     = "collateral"
	DefaultCollateralTimeout = 30 * time.Second
)

// Load reads, defaults and validates a configuration file.
func Load(path string) (*Config, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("config: %w", err)
	}
	c, err := Parse(b)
	if err != nil {
		return nil, fmt.Errorf("config %s: %w", path, err)
	}
	abs, err := filepath.Abs(filepath.Dir(path))
	if err != nil {
		return nil, fmt.Errorf("config: %w", err)
	}
	c.resolve(abs)
	return c, nil
}

// Parse decodes and validates a configuration document.
func Parse(b []byte) (*Config, error) {
	if len(b) > MaxFileSize {
		return nil, fmt.Errorf("larger than %d bytes", MaxFileSize)
	}
	dec := yaml.NewDecoder(bytes.NewReader(b))
	dec.KnownFields(true)
	var c Config
	if err := dec.Decode(&c); err != nil {
		return nil, fmt.Errorf("parsing: %w", err)
	}
	// A second document would be ignored silently, with its settings.
	var extra yaml.Node
	if err := dec.Decode(&extra); !errors.Is(err, io.EOF) {
		return nil, errors.New("more than one YAML document; a configuration file holds exactly one")
	}
	c.setDefaults()
	if err := c.Validate(); err != nil {
		return nil, err
	}
	return &c, nil
}

func (c *Config) setDefaults() {
	if c.Listen.GRPC == "" {
		c.Listen.GRPC = DefaultGRPC
	}
	if c.Listen.HTTP == "" {
		c.Listen.HTTP = DefaultHTTP
	}
	if c.Limits.MaxRequestBytes == 0 {
		c.Limits.MaxRequestBytes = DefaultMaxRequestBytes
	}
	if c.Rotation.TickInterval == 0 {
		c.Rotation.TickInterval = Duration(DefaultTickInterval)
	}
	if c.Attestation.Collateral.Dir == "" {
		c.Attestation.Collateral.Dir = DefaultCollateralDir
	}
	if c.Attestation.Collateral.RequestTimeout == 0 {
		c.Attestation.Collateral.RequestTimeout = Duration(DefaultCollateralTimeout)
	}
	if len(c.Attestation.Platforms) == 0 {
		c.Attestation.Platforms = []string{"azure-sev-snp-vtpm", "azure-tdx-vtpm", "sev-snp", "tdx"}
	}
}

// Validate checks the fields that have no safe default.
func (c *Config) Validate() error {
	var errs []error
	if !c.TLS.Disabled && (c.TLS.Cert == "" || c.TLS.Key == "") {
		errs = append(errs, errors.New("tls.cert and tls.key are required unless tls.disabled is true"))
	}
	switch {
	case c.Store.Bolt == "" && c.Store.Etcd == nil:
		errs = append(errs, errors.New("store: set bbolt (one node) or etcd (replicas)"))
	case c.Store.Bolt != "" && c.Store.Etcd != nil:
		errs = append(errs, errors.New("store: set bbolt or etcd, not both"))
	case c.Store.Etcd != nil:
		e := c.Store.Etcd
		if len(e.Endpoints) == 0 {
			errs = append(errs, errors.New("store.etcd.endpoints: at least one endpoint is required"))
		}
		if (e.CertFile == "") != (e.KeyFile == "") {
			errs = append(errs, errors.New("store.etcd: cert_file and key_file go together"))
		}
	}
	if c.KEK == "" {
		errs = append(errs, errors.New("kek is required"))
	}
	if c.Nonce.SealedSecretFile == "" {
		errs = append(errs, errors.New("nonce.sealed_secret_file is required"))
	}
	if c.Listen.AdminSocket == "" {
		errs = append(errs, errors.New("listen.admin_socket is required"))
	}
	if len(c.Tokens.Issuers) == 0 {
		errs = append(errs, errors.New("tokens.issuers: at least one issuer is required"))
	}
	for i, is := range c.Tokens.Issuers {
		if is.Issuer == "" {
			errs = append(errs, fmt.Errorf("tokens.issuers[%d].issuer is required", i))
		}
		if (is.Discovery == "") == (is.JWKSURL == "") {
			errs = append(errs, fmt.Errorf("tokens.issuers[%d]: set exactly one of discovery and jwks_url", i))
		}
		if len(is.Audiences) == 0 {
			errs = append(errs, fmt.Errorf("tokens.issuers[%d].audiences: at least one audience is required", i))
		}
	}
	if c.Limits.MaxRequestBytes < 4096 {
		errs = append(errs, fmt.Errorf("limits.max_request_bytes %d is too small for a report and its certificates", c.Limits.MaxRequestBytes))
	}
	if c.Listen.Admin != "" {
		if c.TLS.Disabled {
			errs = append(errs, errors.New("listen.admin needs TLS: the network admin API is never served in the clear"))
		}
		if c.AdminAuth.ClientCAFile == "" && len(c.AdminAuth.RoleClaims) == 0 {
			errs = append(errs, errors.New("listen.admin needs admin_auth.client_ca_file, admin_auth.role_claims, or both"))
		}
		if len(c.AdminAuth.RoleClaims) > 0 && len(c.AdminAuth.Audiences) == 0 {
			errs = append(errs, errors.New("admin_auth.role_claims needs admin_auth.audiences (the admin API's own token audience)"))
		}
	}
	platforms := map[string]bool{}
	for i, p := range c.Attestation.Platforms {
		switch p {
		case "sev-snp", "tdx", "azure-sev-snp-vtpm", "azure-tdx-vtpm":
		default:
			errs = append(errs, fmt.Errorf("attestation.platforms[%d]: unknown evidence type %q (sev-snp, tdx, azure-sev-snp-vtpm, azure-tdx-vtpm)", i, p))
		}
		if platforms[p] {
			errs = append(errs, fmt.Errorf("attestation.platforms[%d]: %q listed twice", i, p))
		}
		platforms[p] = true
	}
	for name, u := range map[string]string{
		"amd_kds_url": c.Attestation.Collateral.AMDKDSURL, "intel_pcs_url": c.Attestation.Collateral.IntelPCSURL,
		"intel_certs_url": c.Attestation.Collateral.IntelCertsURL,
	} {
		if u == "" {
			continue
		}
		pu, err := url.Parse(u)
		switch {
		case err != nil || pu.Host == "" || (pu.Scheme != "https" && pu.Scheme != "http"):
			errs = append(errs, fmt.Errorf("attestation.collateral.%s: %q is not an http(s) URL", name, u))
		case pu.Scheme == "http" && !c.Attestation.Collateral.AllowPlainHTTP:
			errs = append(errs, fmt.Errorf("attestation.collateral.%s: plain http needs allow_plain_http: true", name))
		}
	}
	seen := map[string]bool{}
	for i, ks := range c.KeySets {
		if ks.Name == "" {
			errs = append(errs, fmt.Errorf("keysets[%d].name is required", i))
		}
		if seen[ks.Name] {
			errs = append(errs, fmt.Errorf("keysets[%d]: duplicate name %q", i, ks.Name))
		}
		seen[ks.Name] = true
	}
	return errors.Join(errs...)
}

func (c *Config) resolve(dir string) {
	abs := func(p *string) {
		if *p != "" && !filepath.IsAbs(*p) {
			*p = filepath.Join(dir, *p)
		}
	}
	abs(&c.TLS.Cert)
	abs(&c.TLS.Key)
	abs(&c.Store.Bolt)
	if e := c.Store.Etcd; e != nil {
		abs(&e.CAFile)
		abs(&e.CertFile)
		abs(&e.KeyFile)
	}
	abs(&c.Nonce.SealedSecretFile)
	abs(&c.Listen.AdminSocket)
	abs(&c.Attestation.SEVSNP.TestRootsFile)
	abs(&c.Attestation.TDX.TestRootsFile)
	abs(&c.Attestation.Collateral.Dir)
	abs(&c.AdminAuth.ClientCAFile)
	for i := range c.KeySets {
		abs(&c.KeySets[i].PolicyFile)
	}
	if p, ok := localKEKPath(c.KEK); ok && !filepath.IsAbs(p) {
		c.KEK = "local://" + filepath.Join(dir, p)
	}
}

// localKEKPath returns the path of a local:// KEK URI.
func localKEKPath(uri string) (string, bool) {
	const scheme = "local://"
	if len(uri) > len(scheme) && uri[:len(scheme)] == scheme {
		return uri[len(scheme):], true
	}
	return "", false
}
