package main

import (
	"bytes"
	"context"
	"crypto/rand"
	"crypto/x509"
	"encoding/pem"
	"errors"
	"fmt"
	"os"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/spf13/cobra"
	"google.golang.org/protobuf/proto"

	"github.com/attested-kms/attested-kms/keystore/kek"
	"github.com/attested-kms/attested-kms/keystore/kek/pkcs11"
	"github.com/attested-kms/attested-kms/keystore/kek/providers"
	kmsv1 "github.com/attested-kms/attested-kms/proto/kms/v1"
)

// kekTestAAD is bound to the throwaway data key of `kms kek test`, so the
// test wrap can never be mistaken for a real one.
var kekTestAAD = []byte("attested-kms/v1 kek test")

func newKEKCmd() *cobra.Command {
	cmd := &cobra.Command{Use: "kek", Short: "Create, test, inspect and rotate the key-encryption key"}
	var uri string
	create := &cobra.Command{
		Use:   "create",
		Short: "Create the KEK named by --kek (local key file or PKCS#11 HSM key)",
		Long: `create makes a new key-encryption key where --kek points:

  local:///path      a random 32-byte key file, mode 0600 (development only)
  pkcs11:...         an AES-256 key in the HSM token (RFC 7512 URI), sensitive and
                     non-extractable, usable for encrypt/decrypt only

Cloud keys (aws-kms://, gcp-kms://, azure-kv://, azure-mhsm://, hcvault://)
are created by their owner in the cloud's console or CLI, with only the
wrap/unwrap or encrypt/decrypt permission granted to the KMS's identity; see
docs/kek-providers.md. It refuses to replace an existing key.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			switch {
			case strings.HasPrefix(uri, "local://"):
				path := strings.TrimPrefix(uri, "local://")
				if err := kek.CreateLocal(path); err != nil {
					return err
				}
			case strings.HasPrefix(uri, "pkcs11:"):
				if err := pkcs11.CreateKey(cmd.Context(), uri); err != nil {
					return err
				}
			default:
				return fmt.Errorf("kek create: %s keys are created by their owner, not by the KMS (docs/kek-providers.md)", scheme(uri))
			}
			fmt.Fprintf(cmd.OutOrStdout(), "kek: created %s\n", displayURI(uri))
			return nil
		},
	}
	test := &cobra.Command{
		Use:   "test",
		Short: "Wrap and unwrap a random data key with the KEK named by --kek",
		Long: `test wraps a random 32-byte data key under the KEK and unwraps it again,
through the same provider code kms serve uses. It prints "kek: ok" with the
URI, the key version and algorithm the provider reports, or the provider's
reason and exits 2. The data key is random and thrown away.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			ctx, cancel := context.WithTimeout(cmd.Context(), time.Minute)
			defer cancel()
			w, err := testKEK(ctx, uri)
			if err != nil {
				return &exitError{code: 2, err: oneLine(fmt.Errorf("kek: %s: %w", displayURI(uri), err))}
			}
			fmt.Fprintf(cmd.OutOrStdout(), "kek: ok %s (version %q, algorithm %s)\n", w.KEKURI, w.KEKVersion, w.Algorithm)
			return nil
		},
	}
	for _, c := range []*cobra.Command{create, test} {
		c.Flags().StringVar(&uri, "kek", "", "KEK URI (required), e.g. local:///srv/kms/kek.key or pkcs11:token=kms;object=kek?module-path=...&pin-source=file:...")
		_ = c.MarkFlagRequired("kek")
	}

	a := &adminFlags{}
	status := &cobra.Command{
		Use:   "status",
		Short: "Show each key set's KEK as last checked by the server (admin socket)",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			return a.run(cmd, func(ctx context.Context, c kmsv1.AdminClient) error {
				resp, err := c.GetKEKStatus(ctx, &kmsv1.GetKEKStatusRequest{})
				if err != nil {
					return err
				}
				return printKEKStatus(cmd, a, resp, resp.GetKeysets())
			})
		},
	}
	var to, keyset string
	rotate := &cobra.Command{
		Use:   "rotate",
		Short: "Re-wrap every key set's intermediate key under the KEK --to (admin socket)",
		Long: `rotate re-wraps each key set's intermediate key under the new KEK, one key
set at a time, each in one atomic store update. It is resumable: if it stops
(crash, provider outage), run it again and it continues with the key sets
still under the old KEK; every key stays readable throughout. The old KEK
must stay usable until it finishes. Then set "kek:" in the configuration to
the new URI, so that new key sets use it too.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			return a.run(cmd, func(ctx context.Context, c kmsv1.AdminClient) error {
				resp, err := c.RotateKEK(ctx, &kmsv1.RotateKEKRequest{ToUri: to})
				if err != nil {
					return err
				}
				if a.output != "json" {
					fmt.Fprintf(cmd.OutOrStdout(), "re-wrapped %d key set(s) under %s\n", len(resp.GetRewrapped()), displayURI(to))
				}
				return printKEKStatus(cmd, a, resp, resp.GetKeysets())
			})
		},
	}
	rotate.Flags().StringVar(&to, "to", "", "URI of the new KEK (required)")
	_ = rotate.MarkFlagRequired("to")
	intermediate := &cobra.Command{
		Use:   "rotate-intermediate",
		Short: "Give a key set a new intermediate key and re-wrap its keys' data keys (admin socket)",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			return a.run(cmd, func(ctx context.Context, c kmsv1.AdminClient) error {
				st, err := c.RotateIntermediateKey(ctx, &kmsv1.RotateIntermediateKeyRequest{Keyset: keyset})
				if err != nil {
					return err
				}
				return printKEKStatus(cmd, a, st, []*kmsv1.KEKStatus{st})
			})
		},
	}
	intermediate.Flags().StringVar(&keyset, "keyset", "default", "key set")
	for _, c := range []*cobra.Command{status, rotate, intermediate} {
		a.register(c)
	}
	cmd.AddCommand(create, test, status, rotate, intermediate)
	return cmd
}

// testKEK wraps and unwraps a random data key.
func testKEK(ctx context.Context, uri string) (kek.Wrapped, error) {
	p, err := providers.Open(ctx, uri, providers.Options{})
	if err != nil {
		return kek.Wrapped{}, err
	}
	defer kek.Close(p)
	dek := make([]byte, 32)
	defer clear(dek)
	if _, err := rand.Read(dek); err != nil {
		return kek.Wrapped{}, err
	}
	w, err := p.Wrap(ctx, dek, kekTestAAD)
	if err != nil {
		return kek.Wrapped{}, fmt.Errorf("wrap: %w", err)
	}
	got, err := p.Unwrap(ctx, w, kekTestAAD)
	if err != nil {
		return kek.Wrapped{}, fmt.Errorf("unwrap: %w", err)
	}
	defer clear(got)
	if !bytes.Equal(got, dek) {
		return kek.Wrapped{}, errors.New("unwrap returned a different key")
	}
	return w, nil
}

func printKEKStatus(cmd *cobra.Command, a *adminFlags, msg proto.Message, st []*kmsv1.KEKStatus) error {
	if a.output == "json" {
		return printJSON(cmd.OutOrStdout(), msg)
	}
	tw := tabwriter.NewWriter(cmd.OutOrStdout(), 0, 2, 2, ' ', 0)
	fmt.Fprintln(tw, "KEYSET\tSTATE\tKEK\tVERSION\tALGORITHM\tGENERATION\tLAST OK\tERROR")
	for _, s := range st {
		lastOK := "-"
		if s.GetLastOk() != nil {
			lastOK = ts(s.GetLastOk())
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%d\t%s\t%s\n", s.GetKeyset(), s.GetState(), s.GetKekUri(),
			orDash(s.GetKekVersion()), s.GetAlgorithm(), s.GetGeneration(), lastOK, orDash(s.GetError()))
	}
	return tw.Flush()
}

// displayURI is the URI as it may be shown: without a PIN.
func displayURI(uri string) string { return providers.DisplayURI(uri) }

func orDash(s string) string {
	if s == "" {
		return "-"
	}
	return s
}

func scheme(uri string) string {
	if s, _, ok := strings.Cut(uri, "://"); ok {
		return s
	}
	if s, _, ok := strings.Cut(uri, ":"); ok {
		return s
	}
	return uri
}

// importCommands are the BYOK commands under `kms keys`.
func importCommands(a *adminFlags, keyset *string) []*cobra.Command {
	var blobFile, out string
	importKey := &cobra.Command{
		Use:   "import-key",
		Short: "Print the KMS's RSA import public key (PEM) that BYOK blobs are wrapped to",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			return a.run(cmd, func(ctx context.Context, c kmsv1.AdminClient) error {
				resp, err := c.GetImportKey(ctx, &kmsv1.GetImportKeyRequest{})
				if err != nil {
					return err
				}
				pemBytes := pem.EncodeToMemory(&pem.Block{Type: "PUBLIC KEY", Bytes: resp.GetPublicKey()})
				if out != "" {
					return os.WriteFile(out, pemBytes, 0o644)
				}
				_, err = cmd.OutOrStdout().Write(pemBytes)
				return err
			})
		},
	}
	importKey.Flags().StringVar(&out, "out", "", "write the PEM here instead of stdout")
	imp := &cobra.Command{
		Use:   "import",
		Short: "Import an X25519 private key wrapped to the import key as a new active key version",
		Long: `import reads a CKM_RSA_AES_KEY_WRAP blob (RSA-OAEP-SHA256 of an AES-256 key,
then AES key wrap with padding of the 32-byte X25519 private key) made with
the public key of "kms keys import-key", for example by "kms keys
export-for-import" from an HSM, and adds the key to the key set as a new
version that is active now; the previously active keys retire. The KMS
unwraps and seals it under its key hierarchy in memory: the plaintext key
never touches disk.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			blob, err := readBounded(blobFile, 4<<10)
			if err != nil {
				return err
			}
			return a.run(cmd, func(ctx context.Context, c kmsv1.AdminClient) error {
				k, err := c.ImportKey(ctx, &kmsv1.ImportKeyRequest{Keyset: *keyset, WrappedKey: blob})
				if err != nil {
					return err
				}
				if a.output == "json" {
					return printJSON(cmd.OutOrStdout(), k)
				}
				printKeys(cmd.OutOrStdout(), []*kmsv1.KeyInfo{k})
				return nil
			})
		},
	}
	imp.Flags().StringVar(&blobFile, "blob", "", "wrapped key blob (required)")
	_ = imp.MarkFlagRequired("blob")

	var hsmKey, importPub, blobOut string
	var hostOAEP bool
	export := &cobra.Command{
		Use:   "export-for-import",
		Short: "Wrap an X25519 private key held in a PKCS#11 HSM to the KMS's import key (offline)",
		Long: `export-for-import runs where the HSM is: it wraps the 32-byte X25519 private
key named by --hsm-key (an RFC 7512 URI of a generic-secret object) for the
import public key (--import-key, the PEM of "kms keys import-key") and writes
the blob for "kms keys import". Inside the HSM, a one-time AES-256 key wraps
the private key (CKM_AES_KEY_WRAP_PAD) and is itself wrapped with
RSA-OAEP-SHA-256 under the import key: the CKM_RSA_AES_KEY_WRAP layout,
without the plaintext key leaving the HSM.

--host-oaep is for HSMs without RSA-OAEP-SHA-256 key wrapping (SoftHSM2):
the one-time AES key is then read out and OAEP-encrypted in this process, so
whoever controls the process at that moment could unwrap the export.
Development only.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			pemBytes, err := readBounded(importPub, 64<<10)
			if err != nil {
				return err
			}
			block, _ := pem.Decode(pemBytes)
			if block == nil || block.Type != "PUBLIC KEY" {
				return fmt.Errorf("%s: want a PEM PUBLIC KEY", importPub)
			}
			if _, err := x509.ParsePKIXPublicKey(block.Bytes); err != nil {
				return fmt.Errorf("%s: %w", importPub, err)
			}
			var opts []pkcs11.ExportOption
			if hostOAEP {
				opts = append(opts, pkcs11.WithHostOAEP())
			}
			blob, err := pkcs11.ExportForImport(cmd.Context(), hsmKey, block.Bytes, opts...)
			if err != nil {
				return err
			}
			if err := os.WriteFile(blobOut, blob, 0o600); err != nil {
				return err
			}
			fmt.Fprintf(cmd.OutOrStdout(), "wrapped key written to %s (%d bytes)\n", blobOut, len(blob))
			return nil
		},
	}
	export.Flags().StringVar(&hsmKey, "hsm-key", "", "PKCS#11 URI of the X25519 private key in the HSM (required)")
	export.Flags().StringVar(&importPub, "import-key", "", "PEM of the KMS's import public key (required)")
	export.Flags().StringVar(&blobOut, "out", "", "where to write the blob (required)")
	export.Flags().BoolVar(&hostOAEP, "host-oaep", false, "OAEP-encrypt the one-time AES key outside the HSM (HSMs without OAEP-SHA-256 wrapping; development only)")
	for _, f := range []string{"hsm-key", "import-key", "out"} {
		_ = export.MarkFlagRequired(f)
	}
	return []*cobra.Command{importKey, imp, export}
}
