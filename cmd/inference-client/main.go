// Command inference-client is the enclave-side tool of Attested KMS: it
// releases keys from the KMS with attestation evidence, and encrypts (as an
// end user would) and decrypts RFC 9458 requests.
package main

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/signal"
	"strings"
	"syscall"
	"text/tabwriter"
	"time"

	"github.com/spf13/cobra"
	"google.golang.org/genproto/googleapis/rpc/errdetails"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/status"

	"github.com/attested-kms/attested-kms/attestation"
	"github.com/attested-kms/attested-kms/attestation/sevsnp"
	"github.com/attested-kms/attested-kms/attestation/sevsnp/simulate"
	"github.com/attested-kms/attested-kms/client"
	"github.com/attested-kms/attested-kms/client/evidence"
	"github.com/attested-kms/attested-kms/client/tokensource"
	"github.com/attested-kms/attested-kms/hpke/ohttp"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	err := newRootCmd().ExecuteContext(ctx)
	stop()
	if err != nil {
		fmt.Fprintln(os.Stderr, "inference-client:", describe(err))
		os.Exit(1)
	}
}

// describe adds the KMS's machine-readable reason to a gRPC error.
func describe(err error) string {
	// FromError finds a status anywhere in the chain, including inside
	// errors.Join, and keeps its details.
	st, ok := status.FromError(err)
	if !ok {
		return err.Error()
	}
	for _, d := range st.Details() {
		if info, ok := d.(*errdetails.ErrorInfo); ok {
			return fmt.Sprintf("%s (code %s, reason %s)", err, st.Code(), info.GetReason())
		}
	}
	return err.Error()
}

func newRootCmd() *cobra.Command {
	root := &cobra.Command{
		Use:           "inference-client",
		Short:         "Enclave-side client of Attested KMS: release keys, encrypt and decrypt RFC 9458 requests",
		SilenceUsage:  true,
		SilenceErrors: true,
	}
	root.AddCommand(newKeysCmd(), newEncryptCmd(), newDecryptCmd())
	return root
}

// kmsFlags are the settings for talking to the KMS as an enclave.
type kmsFlags struct {
	addr, ca, keyset                 string
	evidence, simSigner, simMeasure  string
	simDebug                         bool
	tokenSource, tokenFile, resource string
	imdsEndpoint, clientID           string
	timeout                          time.Duration
}

func (f *kmsFlags) register(cmd *cobra.Command) {
	fl := cmd.Flags()
	fl.StringVar(&f.addr, "kms", "127.0.0.1:8443", "KMS gRPC address")
	fl.StringVar(&f.ca, "ca", "", "PEM CA certificate for the KMS's TLS certificate (default: system roots)")
	fl.StringVar(&f.keyset, "keyset", "default", "key set")
	fl.StringVar(&f.evidence, "evidence", "auto", "evidence source: auto (detect: Azure vTPM, then TDX, then SEV-SNP), sev-snp, tdx, azure-sev-snp-vtpm, azure-tdx-vtpm, or simulated (SEV-SNP simulator)")
	fl.StringVar(&f.simSigner, "sim-signer", "", "simulated: signer PEM written by kms init --simulator")
	fl.StringVar(&f.simMeasure, "sim-measurement", "", "simulated: launch measurement, 96 hex characters")
	fl.BoolVar(&f.simDebug, "sim-debug", false, "simulated: report a debuggable guest")
	fl.StringVar(&f.tokenSource, "token-source", "imds", "access token source: imds (managed identity), workload-identity (AKS) or file")
	fl.StringVar(&f.tokenFile, "token-file", "", "file: path of a file holding the token")
	fl.StringVar(&f.resource, "resource", "api://attested-kms", "imds, workload-identity: the KMS's application ID URI")
	fl.StringVar(&f.imdsEndpoint, "imds-endpoint", "", "imds: endpoint base URL (default: Azure IMDS)")
	fl.StringVar(&f.clientID, "client-id", "", "imds: client id of a user-assigned identity")
	fl.DurationVar(&f.timeout, "timeout", 30*time.Second, "time limit for the whole operation")
}

func (f *kmsFlags) tlsConfig() (*tls.Config, error) {
	cfg := &tls.Config{MinVersion: tls.VersionTLS12}
	if f.ca != "" {
		pem, err := os.ReadFile(f.ca)
		if err != nil {
			return nil, err
		}
		pool := x509.NewCertPool()
		if !pool.AppendCertsFromPEM(pem) {
			return nil, fmt.Errorf("--ca %s: no PEM certificate found", f.ca)
		}
		cfg.RootCAs = pool
	}
	return cfg, nil
}

func (f *kmsFlags) evidenceProvider() (client.EvidenceProvider, error) {
	switch f.evidence {
	case "auto":
		return evidence.Detect(evidence.DetectOptions{})
	case "sev-snp":
		return evidence.NewSEVSNP()
	case "tdx":
		return evidence.NewTDX()
	case "azure-sev-snp-vtpm", "azure-tdx-vtpm":
		return evidence.NewAzureVTPM(evidence.AzureVTPMOptions{Platform: attestation.Platform(f.evidence)})
	case "simulated":
		if f.simSigner == "" || f.simMeasure == "" {
			return nil, errors.New("--evidence simulated needs --sim-signer and --sim-measurement")
		}
		pem, err := os.ReadFile(f.simSigner)
		if err != nil {
			return nil, err
		}
		signer, err := simulate.LoadSigner(pem)
		if err != nil {
			return nil, err
		}
		m, err := hex.DecodeString(f.simMeasure)
		if err != nil || len(m) != 48 {
			return nil, errors.New("--sim-measurement: want 96 hex characters")
		}
		var fields simulate.ReportFields
		copy(fields.Measurement[:], m)
		if f.simDebug {
			fields.Policy = simulate.DefaultPolicy | sevsnp.PolicyDebug
		}
		return evidence.NewSimulated(signer, fields), nil
	}
	return nil, fmt.Errorf("--evidence %q: want auto, sev-snp, tdx, azure-sev-snp-vtpm, azure-tdx-vtpm or simulated", f.evidence)
}

func (f *kmsFlags) tokens() (client.TokenSource, error) {
	var src tokensource.Source
	switch f.tokenSource {
	case "imds":
		mi, err := tokensource.NewManagedIdentity(tokensource.ManagedIdentityOptions{
			Resource: f.resource, ClientID: f.clientID, Endpoint: f.imdsEndpoint,
		})
		if err != nil {
			return nil, err
		}
		src = mi
	case "workload-identity":
		wi, err := tokensource.WorkloadIdentityFromEnv(f.resource)
		if err != nil {
			return nil, err
		}
		src = wi
	case "file":
		if f.tokenFile == "" {
			return nil, errors.New("--token-source file needs --token-file")
		}
		src = tokensource.NewStaticFile(f.tokenFile)
	default:
		return nil, fmt.Errorf("--token-source %q: want imds, workload-identity or file", f.tokenSource)
	}
	return tokensource.Cached(src, tokensource.CacheOptions{}), nil
}

func (f *kmsFlags) client() (*client.Client, func(), error) {
	tlsCfg, err := f.tlsConfig()
	if err != nil {
		return nil, nil, err
	}
	ev, err := f.evidenceProvider()
	if err != nil {
		return nil, nil, err
	}
	toks, err := f.tokens()
	if err != nil {
		return nil, nil, err
	}
	conn, err := grpc.NewClient(f.addr, grpc.WithTransportCredentials(credentials.NewTLS(tlsCfg)))
	if err != nil {
		return nil, nil, fmt.Errorf("connecting to %s: %w", f.addr, err)
	}
	c, err := client.New(client.Config{Conn: conn, Evidence: ev, Tokens: toks, KeySet: f.keyset})
	if err != nil {
		conn.Close()
		return nil, nil, err
	}
	return c, func() { conn.Close() }, nil
}

func newKeysCmd() *cobra.Command {
	cmd := &cobra.Command{Use: "keys", Short: "Release keys from the KMS"}
	f := &kmsFlags{}
	var kid, output string
	fetch := &cobra.Command{
		Use:   "fetch",
		Short: "Release keys with attestation and print their metadata (never the keys)",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			ctx, cancel := context.WithTimeout(cmd.Context(), f.timeout)
			defer cancel()
			c, done, err := f.client()
			if err != nil {
				return err
			}
			defer done()
			var keys []*client.Key
			if kid != "" {
				k, err := c.Key(ctx, kid)
				if err != nil {
					return err
				}
				keys = []*client.Key{k}
			} else if keys, err = c.Prefetch(ctx); err != nil {
				return err
			}
			return printKeys(cmd.OutOrStdout(), keys, output)
		},
	}
	f.register(fetch)
	fetch.Flags().StringVar(&kid, "kid", "", "release only this kid (default: every pending and active key)")
	fetch.Flags().StringVarP(&output, "output", "o", "table", "output format: table or json")
	cmd.AddCommand(fetch)
	return cmd
}

func printKeys(w io.Writer, keys []*client.Key, output string) error {
	if output == "json" {
		type keyJSON struct {
			KeySet     string    `json:"keyset"`
			KID        string    `json:"kid"`
			OHTTPKeyID uint8     `json:"ohttp_key_id"`
			Suite      string    `json:"suite"`
			PublicKey  []byte    `json:"public_key"`
			NotBefore  time.Time `json:"not_before"`
			NotAfter   time.Time `json:"not_after"`
		}
		enc := json.NewEncoder(w)
		for _, k := range keys {
			if err := enc.Encode(keyJSON{k.KeySet, k.KID, k.OHTTPKeyID, k.Suite, k.PublicKey, k.NotBefore, k.NotAfter}); err != nil {
				return err
			}
		}
		return nil
	}
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "released\tKEYSET\tKID\tKEY ID\tNOT BEFORE\tNOT AFTER")
	for _, k := range keys {
		fmt.Fprintf(tw, "released\t%s\t%s\t%d\t%s\t%s\n", k.KeySet, k.KID, k.OHTTPKeyID,
			k.NotBefore.UTC().Format(time.RFC3339), k.NotAfter.UTC().Format(time.RFC3339))
	}
	return tw.Flush()
}

func readInput(path string) ([]byte, error) {
	if path == "-" {
		return io.ReadAll(io.LimitReader(os.Stdin, 16<<20))
	}
	return os.ReadFile(path)
}

func writeOutput(path string, b []byte) error {
	if path == "-" {
		_, err := os.Stdout.Write(b)
		return err
	}
	return os.WriteFile(path, b, 0o600)
}

func newEncryptCmd() *cobra.Command {
	var url, ca, in, out string
	var keyID int
	cmd := &cobra.Command{
		Use:   "encrypt",
		Short: "End-user side: fetch the KMS's key configurations over HTTPS and encapsulate a request (RFC 9458)",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			tlsCfg := &tls.Config{MinVersion: tls.VersionTLS12}
			if ca != "" {
				pem, err := os.ReadFile(ca)
				if err != nil {
					return err
				}
				pool := x509.NewCertPool()
				if !pool.AppendCertsFromPEM(pem) {
					return fmt.Errorf("--ca %s: no PEM certificate found", ca)
				}
				tlsCfg.RootCAs = pool
			}
			hc := &http.Client{Timeout: 15 * time.Second, Transport: &http.Transport{TLSClientConfig: tlsCfg}}
			cfgs, err := fetchKeyConfigs(cmd.Context(), hc, strings.TrimRight(url, "/")+"/.well-known/ohttp-keys")
			if err != nil {
				return err
			}
			cfg := cfgs[0]
			if keyID >= 0 {
				found := false
				for _, c := range cfgs {
					if int(c.KeyID) == keyID {
						cfg, found = c, true
					}
				}
				if !found {
					return fmt.Errorf("no key configuration with key id %d", keyID)
				}
			}
			req, err := readInput(in)
			if err != nil {
				return err
			}
			enc, _, err := ohttp.EncapsulateRequest(nil, cfg, req)
			if err != nil {
				return err
			}
			fmt.Fprintf(cmd.ErrOrStderr(), "encrypted %d bytes to key id %d\n", len(req), cfg.KeyID)
			return writeOutput(out, enc)
		},
	}
	cmd.Flags().StringVar(&url, "url", "https://127.0.0.1:8080", "KMS HTTP base URL")
	cmd.Flags().StringVar(&ca, "ca", "", "PEM CA certificate for the KMS's TLS certificate")
	cmd.Flags().StringVar(&in, "in", "-", "request to encrypt (- for stdin)")
	cmd.Flags().StringVar(&out, "out", "-", "where to write the encapsulated request (- for stdout)")
	cmd.Flags().IntVar(&keyID, "key-id", -1, "use this RFC 9458 key id (default: the first configuration)")
	return cmd
}

func fetchKeyConfigs(ctx context.Context, hc *http.Client, url string) ([]ohttp.KeyConfig, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	if err != nil {
		return nil, err
	}
	resp, err := hc.Do(req)
	if err != nil {
		return nil, fmt.Errorf("fetching key configurations: %w", err)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(io.LimitReader(resp.Body, 1<<20))
	if err != nil {
		return nil, fmt.Errorf("fetching key configurations: %w", err)
	}
	if resp.StatusCode != http.StatusOK {
		return nil, fmt.Errorf("fetching key configurations: %s: %s", resp.Status, strings.TrimSpace(string(body)))
	}
	if ct := resp.Header.Get("Content-Type"); ct != "application/ohttp-keys" {
		return nil, fmt.Errorf("fetching key configurations: content type %q, want application/ohttp-keys", ct)
	}
	cfgs, err := ohttp.ParseKeyConfigs(body)
	if err != nil {
		return nil, err
	}
	if len(cfgs) == 0 {
		return nil, errors.New("the KMS publishes no active key")
	}
	return cfgs, nil
}

func newDecryptCmd() *cobra.Command {
	f := &kmsFlags{}
	var in, out string
	cmd := &cobra.Command{
		Use:   "decrypt",
		Short: "Enclave side: release the key set's keys with attestation and decapsulate a request (RFC 9458)",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			ctx, cancel := context.WithTimeout(cmd.Context(), f.timeout)
			defer cancel()
			enc, err := readInput(in)
			if err != nil {
				return err
			}
			c, done, err := f.client()
			if err != nil {
				return err
			}
			defer done()
			if _, err := c.Prefetch(ctx); err != nil {
				return err
			}
			req, _, err := c.DecryptRequest(enc)
			if err != nil {
				return err
			}
			return writeOutput(out, req)
		},
	}
	f.register(cmd)
	cmd.Flags().StringVar(&in, "in", "-", "encapsulated request (- for stdin)")
	cmd.Flags().StringVar(&out, "out", "-", "where to write the decrypted request (- for stdout)")
	return cmd
}
