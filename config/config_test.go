package config

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

const minimal = `
tls: {cert: tls.crt, key: tls.key}
store: {bbolt: kms.db}
kek: local://kek.key
nonce: {sealed_secret_file: nonce.sealed, lifetime: 3m}
listen: {admin_socket: admin.sock}
tokens:
  issuers:
    - issuer: https://sts.windows.net/t/
      discovery: https://login.microsoftonline.com/t
      audiences: [api://kms]
`

func TestLoadDefaultsAndResolvesPaths(t *testing.T) {
	dir := t.TempDir()
	p := filepath.Join(dir, "config.yaml")
	if err := os.WriteFile(p, []byte(minimal), 0o600); err != nil {
		t.Fatal(err)
	}
	c, err := Load(p)
	if err != nil {
		t.Fatal(err)
	}
	if c.Listen.GRPC != DefaultGRPC || c.Limits.MaxRequestBytes != DefaultMaxRequestBytes || time.Duration(c.Rotation.TickInterval) != DefaultTickInterval {
		t.Fatalf("defaults not applied: %+v", c)
	}
	if time.Duration(c.Nonce.Lifetime) != 3*time.Minute {
		t.Fatalf("nonce lifetime %v", c.Nonce.Lifetime)
	}
	if c.Store.Bolt != filepath.Join(dir, "kms.db") || c.KEK != "local://"+filepath.Join(dir, "kek.key") {
		t.Fatalf("paths not resolved against the config directory: %q %q", c.Store.Bolt, c.KEK)
	}
	if c.Attestation.Collateral.Dir != filepath.Join(dir, DefaultCollateralDir) || c.Attestation.Collateral.Offline {
		t.Fatalf("collateral defaults: %+v", c.Attestation.Collateral)
	}
	if len(c.Attestation.Platforms) != 4 {
		t.Fatalf("all platforms should be enabled by default, got %v", c.Attestation.Platforms)
	}
	// Revocation is on unless switched off explicitly.
	if !Revocation(c.Attestation.SEVSNP.CheckRevocation) || !Revocation(c.Attestation.TDX.CheckRevocation) {
		t.Fatal("revocation checking is off by default")
	}
	off, err := Parse([]byte(minimal + "attestation: {tdx: {check_revocation: false}}\n"))
	if err != nil {
		t.Fatal(err)
	}
	if Revocation(off.Attestation.TDX.CheckRevocation) || !Revocation(off.Attestation.SEVSNP.CheckRevocation) {
		t.Fatal("check_revocation: false on tdx did not switch off exactly tdx")
	}
}

func TestParseRejects(t *testing.T) {
	cases := map[string]struct{ doc, want string }{
		"unknown field":      {minimal + "surprise: 1\n", "surprise"},
		"no tls":             {strings.Replace(minimal, "tls: {cert: tls.crt, key: tls.key}", "", 1), "tls.cert"},
		"no issuers":         {strings.Split(minimal, "tokens:")[0], "issuer"},
		"bad duration":       {strings.Replace(minimal, "lifetime: 3m", "lifetime: soon", 1), "soon"},
		"negative duration":  {strings.Replace(minimal, "lifetime: 3m", "lifetime: -3m", 1), "negative"},
		"both key sources":   {strings.Replace(minimal, "audiences:", "jwks_url: https://x/keys\n      audiences:", 1), "exactly one"},
		"tiny request limit": {minimal + "limits: {max_request_bytes: 100}\n", "too small"},
		"duplicate key set":  {minimal + "keysets: [{name: a}, {name: a}]\n", "duplicate"},
		"unknown platform":   {minimal + "attestation: {platforms: [sgx]}\n", "unknown evidence type"},
		"platform twice":     {minimal + "attestation: {platforms: [tdx, tdx]}\n", "listed twice"},
		"plain http PCCS":    {minimal + "attestation: {collateral: {intel_pcs_url: 'http://pccs:8081'}}\n", "allow_plain_http"},
		"not a URL":          {minimal + "attestation: {collateral: {amd_kds_url: 'kds'}}\n", "not an http(s) URL"},
		"oversized":          {strings.Repeat("#", MaxFileSize+1), "larger"},
	}
	for name, c := range cases {
		t.Run(name, func(t *testing.T) {
			_, err := Parse([]byte(c.doc))
			if err == nil || !strings.Contains(err.Error(), c.want) {
				t.Fatalf("error %v, want one mentioning %q", err, c.want)
			}
		})
	}
}

func FuzzParse(f *testing.F) {
	f.Add([]byte(minimal))
	f.Add([]byte("listen: [1, 2]"))
	f.Fuzz(func(t *testing.T, b []byte) {
		c, err := Parse(b)
		if err == nil && c.Validate() != nil {
			t.Fatal("Parse accepted a configuration that does not validate")
		}
	})
}

func TestParseRejectsSecondDocument(t *testing.T) {
	if _, err := Parse([]byte(minimal + "---\nlimits: {max_request_bytes: 100}\n")); err == nil || !strings.Contains(err.Error(), "more than one YAML document") {
		t.Fatalf("second document: %v", err)
	}
}
