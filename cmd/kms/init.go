package main

import (
	"cmp"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/hex"
	"encoding/pem"
	"errors"
	"fmt"
	"math/big"
	"net"
	"os"
	"path/filepath"
	"strings"
	"text/template"
	"time"

	"github.com/spf13/cobra"

	"github.com/attested-kms/attested-kms/attestation/collateral"
	"github.com/attested-kms/attested-kms/attestation/sevsnp/simulate"
	"github.com/attested-kms/attested-kms/keystore"
	"github.com/attested-kms/attested-kms/keystore/boltstore"
	"github.com/attested-kms/attested-kms/keystore/kek"
	"github.com/attested-kms/attested-kms/policy"
	"github.com/attested-kms/attested-kms/server"
)

type initOptions struct {
	dir          string
	issuer       string
	discovery    string
	audience     string
	tenant       string
	measurements []string
	simulator    bool
	grpcAddr     string
	httpAddr     string
	hosts        []string
}

func newInitCmd() *cobra.Command {
	o := &initOptions{}
	cmd := &cobra.Command{
		Use:   "init",
		Short: "Create a development configuration, TLS certificate, local KEK and key set",
		Long: `init writes a complete development setup into --dir:

  config.yaml        the kms serve configuration
  tls.crt, tls.key   a self-signed ECDSA P-256 certificate for --host names
  kek.key            a local key-encryption key (0600; use an HSM or cloud KMS in production)
  nonce.sealed       the challenge secret, sealed under the KEK
  policy.yaml        the release policy of the "default" key set
  kms.db             the bbolt store with the "default" key set and its first key
  sim-snp.pem        with --simulator: a simulated AMD SEV-SNP signer (test chain, 0600)
  sim-snp-roots.pem  with --simulator: its ARK/ASK, trusted by this configuration only
  collateral/        the collateral cache; with --simulator it holds the simulated
                     ARK's CRL, current for 7 days (revocation stays checked)

It refuses to write into a directory that already holds a configuration.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error { return runInit(cmd, o) },
	}
	f := cmd.Flags()
	f.StringVar(&o.dir, "dir", ".", "directory to create the configuration in")
	f.StringVar(&o.issuer, "issuer", "", "accepted token issuer URL (required), e.g. https://sts.windows.net/<tenant>/")
	f.StringVar(&o.discovery, "discovery", "", "OIDC discovery base URL of the issuer (default: the issuer URL)")
	f.StringVar(&o.audience, "audience", "api://attested-kms", "accepted token audience (the KMS's application ID URI)")
	f.StringVar(&o.tenant, "tenant", "", "Azure AD tenant id required by the release policy (optional)")
	f.StringSliceVar(&o.measurements, "measurement", nil, "allowed SEV-SNP launch measurement, 96 hex characters (repeatable, required)")
	f.BoolVar(&o.simulator, "simulator", false, "create a simulated SEV-SNP signer and trust its test roots (development only)")
	f.StringVar(&o.grpcAddr, "grpc-addr", "127.0.0.1:8443", "gRPC listen address")
	f.StringVar(&o.httpAddr, "http-addr", "127.0.0.1:8080", "HTTP listen address")
	f.StringSliceVar(&o.hosts, "host", []string{"localhost", "127.0.0.1"}, "names and addresses for the TLS certificate")
	_ = cmd.MarkFlagRequired("issuer")
	_ = cmd.MarkFlagRequired("measurement")
	return cmd
}

const configTemplate = `# Attested KMS development configuration written by "kms init".
# See docs/configuration.md for every field.
listen:
  grpc: {{.GRPC}}
  http: {{.HTTP}}
  admin_socket: admin.sock
tls:
  cert: tls.crt
  key: tls.key
store:
  bbolt: kms.db
kek: local://kek.key
nonce:
  sealed_secret_file: nonce.sealed
  lifetime: 5m
tokens:
  clock_skew: 2m
  issuers:
    - issuer: {{.Issuer}}
      discovery: {{.Discovery}}
      audiences: [{{.Audience}}]
      algorithms: [RS256]
attestation:
  # VCEKs, CRLs, TCB info and QE identities are fetched from AMD and Intel
  # and cached here; see docs/collateral.md for a PCCS, Azure THIM or
  # offline use.
  collateral:
    dir: collateral
{{- if .Simulator}}
  sev_snp:
    # DEVELOPMENT ONLY: trusts the simulated SEV-SNP signer of sim-snp.pem.
    # Its CRL (current for a week) is in collateral/.
    test_roots_file: sim-snp-roots.pem
{{- end}}
limits:
  max_request_bytes: 65536
rotation:
  tick_interval: 1m
keysets:
  - name: default
    policy_file: policy.yaml
`

const policyTemplate = `# Release policy of the "default" key set written by "kms init".
# See docs/configuration.md, "Release policy".
version: 1
rules:
  - name: dev-workload
    sev_snp:
      measurements:
{{- range .Measurements}}
        - "{{.}}"
{{- end}}
      allow_debug: false
      vmpl: [0]
    token:
      issuers: ["{{.Issuer}}"]
      audiences: ["{{.Audience}}"]
{{- if .Tenant}}
      tenant_ids: ["{{.Tenant}}"]
{{- end}}
`

func runInit(cmd *cobra.Command, o *initOptions) error {
	ctx := cmd.Context()
	for _, m := range o.measurements {
		if b, err := hex.DecodeString(m); err != nil || len(b) != 48 {
			return fmt.Errorf("--measurement %q: want 96 hex characters", m)
		}
	}
	if err := os.MkdirAll(o.dir, 0o700); err != nil {
		return err
	}
	path := func(name string) string { return filepath.Join(o.dir, name) }
	if _, err := os.Stat(path("config.yaml")); err == nil {
		return fmt.Errorf("%s already exists; refusing to overwrite a configuration", path("config.yaml"))
	}
	data := map[string]any{
		"Discovery": cmp.Or(o.discovery, o.issuer), "GRPC": o.grpcAddr, "HTTP": o.httpAddr, "Issuer": o.issuer, "Audience": o.audience,
		"Tenant": o.tenant, "Measurements": lower(o.measurements), "Simulator": o.simulator,
	}
	pol, err := render(policyTemplate, data)
	if err != nil {
		return err
	}
	if _, err := policy.Parse(pol); err != nil {
		return fmt.Errorf("generated policy does not validate (a bug): %w", err)
	}
	if err := writeFile(path("policy.yaml"), pol, 0o644); err != nil {
		return err
	}
	cfg, err := render(configTemplate, data)
	if err != nil {
		return err
	}
	if err := writeTLS(path("tls.crt"), path("tls.key"), o.hosts); err != nil {
		return err
	}
	if err := kek.CreateLocal(path("kek.key")); err != nil {
		return fmt.Errorf("creating KEK: %w", err)
	}
	provider, err := kek.OpenLocal(path("kek.key"))
	if err != nil {
		return err
	}
	sealed, err := server.SealNonceSecret(ctx, provider)
	if err != nil {
		return err
	}
	if err := writeFile(path("nonce.sealed"), sealed, 0o600); err != nil {
		return err
	}
	if o.simulator {
		signer, err := simulate.NewSigner(rand.Reader, "Milan")
		if err != nil {
			return fmt.Errorf("creating simulated SEV-SNP signer: %w", err)
		}
		signerPEM, err := signer.MarshalPEM()
		if err != nil {
			return err
		}
		if err := writeFile(path("sim-snp.pem"), signerPEM, 0o600); err != nil {
			return err
		}
		if err := writeFile(path("sim-snp-roots.pem"), signer.RootsPEM(), 0o644); err != nil {
			return err
		}
		// Revocation stays on in development too: the simulated ARK's
		// CRL goes into the collateral directory, at its .invalid URL,
		// which only ever comes from there.
		crlURL, crl, err := signer.CRL(time.Now(), false)
		if err != nil {
			return err
		}
		if err := collateral.WriteDocument(path("collateral"), crlURL, nil, crl); err != nil {
			return err
		}
	}
	store, err := boltstore.Open(path("kms.db"))
	if err != nil {
		return err
	}
	mgr := keystore.NewManager(store, provider, keystore.Options{})
	ks, err := mgr.CreateKeySetWithPolicy(ctx, "default", keystore.DefaultKeySetSettings(), pol)
	if cerr := store.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		return fmt.Errorf("creating key set: %w", err)
	}
	// The configuration is written last: its presence marks a complete init.
	if err := writeFile(path("config.yaml"), cfg, 0o644); err != nil {
		return err
	}
	fmt.Fprintf(cmd.OutOrStdout(), "kms init: wrote %s (key set %q created)\nstart it with: kms serve --config %s\n",
		o.dir, ks.Name, path("config.yaml"))
	return nil
}

func lower(ss []string) []string {
	out := make([]string, len(ss))
	for i, s := range ss {
		out[i] = strings.ToLower(s)
	}
	return out
}

func render(tmpl string, data any) ([]byte, error) {
	t, err := template.New("").Parse(tmpl)
	if err != nil {
		return nil, err
	}
	var b strings.Builder
	if err := t.Execute(&b, data); err != nil {
		return nil, err
	}
	return []byte(b.String()), nil
}

// writeFile creates name exclusively: init never overwrites anything.
func writeFile(name string, data []byte, mode os.FileMode) error {
	f, err := os.OpenFile(name, os.O_WRONLY|os.O_CREATE|os.O_EXCL, mode)
	if err != nil {
		return err
	}
	_, err = f.Write(data)
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	return err
}

func writeTLS(certPath, keyPath string, hosts []string) error {
	if len(hosts) == 0 {
		return errors.New("at least one --host is required for the TLS certificate")
	}
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return err
	}
	serial, err := rand.Int(rand.Reader, new(big.Int).Lsh(big.NewInt(1), 128))
	if err != nil {
		return err
	}
	now := time.Now()
	tmpl := &x509.Certificate{
		SerialNumber:          serial,
		Subject:               pkix.Name{CommonName: hosts[0], Organization: []string{"Attested KMS development"}},
		NotBefore:             now.Add(-time.Minute),
		NotAfter:              now.Add(90 * 24 * time.Hour),
		KeyUsage:              x509.KeyUsageDigitalSignature | x509.KeyUsageCertSign,
		ExtKeyUsage:           []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
		BasicConstraintsValid: true,
		IsCA:                  true,
	}
	for _, h := range hosts {
		if ip := net.ParseIP(h); ip != nil {
			tmpl.IPAddresses = append(tmpl.IPAddresses, ip)
		} else {
			tmpl.DNSNames = append(tmpl.DNSNames, h)
		}
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		return err
	}
	keyDER, err := x509.MarshalPKCS8PrivateKey(key)
	if err != nil {
		return err
	}
	if err := writeFile(keyPath, pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: keyDER}), 0o600); err != nil {
		return err
	}
	return writeFile(certPath, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}), 0o644)
}
