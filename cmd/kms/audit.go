package main

import (
	"bufio"
	"context"
	"crypto/ed25519"
	"crypto/x509"
	"encoding/pem"
	"errors"
	"fmt"
	"io"
	"iter"
	"math"
	"os"
	"strings"
	"text/tabwriter"
	"time"
	"unicode"

	"github.com/spf13/cobra"

	"github.com/attested-kms/attested-kms/audit"
	"github.com/attested-kms/attested-kms/audit/boltaudit"
	"github.com/attested-kms/attested-kms/audit/etcdaudit"
	kmsv1 "github.com/attested-kms/attested-kms/proto/kms/v1"
)

func newAuditCmd() *cobra.Command {
	cmd := &cobra.Command{
		Use:   "audit",
		Short: "Verify, export and read the hash-chained audit log (offline)",
		Long: `audit reads the log without the server: an export (JSON lines), a bbolt
file, or the etcd cluster replicas share (etcd://host:port[,...][/prefix]).
A running single-node server holds its bbolt file locked: work on a backup
copy of it. Only public-key asks the server (admin API).`,
	}
	cmd.AddCommand(newAuditVerifyCmd(), newAuditExportCmd(), newAuditTailCmd(), newAuditPublicKeyCmd())
	return cmd
}

func newAuditVerifyCmd() *cobra.Command {
	var logPath, keyPath string
	c := &cobra.Command{
		Use:   "verify",
		Short: "Check the hash chain and checkpoint signatures of an audit log",
		Long: `verify reads an exported log (JSON lines) or a bbolt file and checks every
entry's hash, the chain of previous hashes, the sequence numbers and every
checkpoint's Ed25519 signature under --public-key (a PEM "PUBLIC KEY").

It prints "audit: ok N entries, last checkpoint at seq S" (S is 0 when the
log has no checkpoint) and exits 0, or prints one line naming the first bad
entry (altered, removed, reordered, truncated, or a bad checkpoint) and
exits 2. Entries after the last checkpoint can be cut off unseen: compare S
with the checkpoints your SIEM holds.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			pub, err := readEd25519PublicKey(keyPath)
			if err != nil {
				return err
			}
			res, err := verifyAuditFile(cmd, logPath, pub)
			var ve *audit.VerifyError
			if errors.As(err, &ve) || errors.Is(err, audit.ErrMalformed) {
				return &exitError{code: 2, err: oneLine(err)}
			}
			if err != nil {
				return err
			}
			fmt.Fprintf(cmd.OutOrStdout(), "audit: ok %d entries, last checkpoint at seq %d\n", res.Entries, res.LastCheckpoint)
			return nil
		},
	}
	c.Flags().StringVar(&logPath, "log", "", "exported log (JSON lines), bbolt file, or etcd://host:port[,...][/prefix] (required)")
	c.Flags().StringVar(&keyPath, "public-key", "", "PEM file with the audit key's Ed25519 public key (required)")
	_ = c.MarkFlagRequired("log")
	_ = c.MarkFlagRequired("public-key")
	return c
}

// verifyAuditFile tells an export from a bbolt file by its first byte: an
// export is empty or starts with '{', a bbolt file with its binary meta page.
func verifyAuditFile(cmd *cobra.Command, path string, pub ed25519.PublicKey) (audit.Result, error) {
	if isEtcdSource(path) {
		b, err := openAuditBackend(cmd.Context(), path)
		if err != nil {
			return audit.Result{}, err
		}
		defer b.Close()
		return audit.VerifyBackend(cmd.Context(), b, pub)
	}
	f, err := os.Open(path)
	if err != nil {
		return audit.Result{}, fmt.Errorf("audit: %w", err)
	}
	defer f.Close()
	first, err := bufio.NewReader(f).Peek(1)
	if err != nil && !errors.Is(err, io.EOF) {
		return audit.Result{}, fmt.Errorf("audit: read %s: %w", path, err)
	}
	if len(first) == 1 && first[0] != '{' {
		b, err := boltaudit.Open(path, true)
		if err != nil {
			return audit.Result{}, err
		}
		defer b.Close()
		return audit.VerifyBackend(cmd.Context(), b, pub)
	}
	// Two passes over the export: checkpoints first (few), then the
	// entries streamed, so a large log is never held in memory.
	cps, err := audit.ReadCheckpoints(io.NewSectionReader(f, 0, math.MaxInt64))
	if err != nil {
		return audit.Result{}, err
	}
	return audit.Verify(audit.Entries(io.NewSectionReader(f, 0, math.MaxInt64)), cps, pub)
}

// An etcd source is etcd://host:port[,host:port...][/prefix]: the log the
// replicas of a cluster share (plain connections: for a TLS cluster, take a
// snapshot or an export instead).
func isEtcdSource(s string) bool { return strings.HasPrefix(s, "etcd://") }

// auditBackend is a log source the commands read: a bbolt file or etcd.
type auditBackend interface {
	audit.Backend
	Close() error
}

func openAuditBackend(ctx context.Context, src string) (auditBackend, error) {
	if !isEtcdSource(src) {
		return boltaudit.Open(src, true)
	}
	rest := strings.TrimPrefix(src, "etcd://")
	hosts, prefix, _ := strings.Cut(rest, "/")
	if hosts == "" {
		return nil, fmt.Errorf("audit: %q names no etcd endpoint", src)
	}
	var endpoints []string
	for _, h := range strings.Split(hosts, ",") {
		endpoints = append(endpoints, "http://"+h)
	}
	if prefix != "" {
		prefix = "/" + prefix
	}
	return etcdaudit.Open(ctx, etcdaudit.Config{Endpoints: endpoints, Prefix: prefix})
}

func readEd25519PublicKey(path string) (ed25519.PublicKey, error) {
	data, err := readBounded(path, 64<<10)
	if err != nil {
		return nil, fmt.Errorf("audit: public key: %w", err)
	}
	block, _ := pem.Decode(data)
	if block == nil || block.Type != "PUBLIC KEY" {
		return nil, fmt.Errorf("audit: public key %s: no PEM \"PUBLIC KEY\" block", path)
	}
	k, err := x509.ParsePKIXPublicKey(block.Bytes)
	if err != nil {
		return nil, fmt.Errorf("audit: public key %s: %w", path, err)
	}
	pub, ok := k.(ed25519.PublicKey)
	if !ok {
		return nil, fmt.Errorf("audit: public key %s is %T, want Ed25519", path, k)
	}
	return pub, nil
}

func newAuditExportCmd() *cobra.Command {
	var dbPath, out string
	var from uint64
	c := &cobra.Command{
		Use:   "export",
		Short: "Write the audit log of a bbolt file as JSON lines (for a SIEM)",
		Long: `export writes one JSON object per line: the entries from --from on, and
the checkpoints among them, each after the entry it covers. The checkpoint
at --from minus 1, if there is one, comes first: it anchors a partial
export, so that "kms audit verify" can check it on its own. Field names are
stable; see the audit package documentation.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			b, err := openAuditBackend(cmd.Context(), dbPath)
			if err != nil {
				return err
			}
			defer b.Close()
			cps, err := b.Checkpoints(cmd.Context())
			if err != nil {
				return err
			}
			start := max(from, 1)
			kept := cps[:0]
			for _, c := range cps {
				if c.Seq+1 >= start {
					kept = append(kept, c)
				}
			}
			w := cmd.OutOrStdout()
			var f *os.File
			if out != "" && out != "-" {
				if f, err = os.OpenFile(out, os.O_WRONLY|os.O_CREATE|os.O_TRUNC, 0o600); err != nil {
					return fmt.Errorf("audit: %w", err)
				}
				defer f.Close()
				w = f
			}
			n, err := audit.Export(w, b.Range(cmd.Context(), start, math.MaxUint64), kept)
			if err != nil {
				return err
			}
			if f != nil {
				if err := f.Close(); err != nil {
					return fmt.Errorf("audit: %w", err)
				}
				fmt.Fprintf(cmd.OutOrStdout(), "audit: exported %d entries to %s\n", n, out)
			}
			return nil
		},
	}
	c.Flags().StringVar(&dbPath, "db", "", "bbolt file holding the audit log, or etcd://host:port[,...][/prefix] (required)")
	c.Flags().Uint64Var(&from, "from", 1, "first sequence number to export")
	c.Flags().StringVarP(&out, "output", "o", "", "output file (mode 0600); standard output when empty")
	_ = c.MarkFlagRequired("db")
	return c
}

func newAuditTailCmd() *cobra.Command {
	var dbPath, format string
	var n uint64
	c := &cobra.Command{
		Use:   "tail",
		Short: "Show the last entries of the audit log of a bbolt file",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if format != "table" && format != "json" {
				return fmt.Errorf("audit tail: -o %q: want table or json", format)
			}
			b, err := openAuditBackend(cmd.Context(), dbPath)
			if err != nil {
				return err
			}
			defer b.Close()
			last, err := b.Last(cmd.Context())
			if err != nil || last.Seq == 0 || n == 0 {
				return err
			}
			from := uint64(1)
			if last.Seq > n {
				from = last.Seq - n + 1
			}
			return printAuditEntries(cmd.OutOrStdout(), format, b.Range(cmd.Context(), from, last.Seq))
		},
	}
	c.Flags().StringVar(&dbPath, "db", "", "bbolt file holding the audit log, or etcd://host:port[,...][/prefix] (required)")
	c.Flags().Uint64VarP(&n, "lines", "n", 20, "number of entries")
	c.Flags().StringVarP(&format, "output", "o", "table", "output format: table or json (export lines)")
	_ = c.MarkFlagRequired("db")
	return c
}

func printAuditEntries(w io.Writer, format string, entries iter.Seq2[audit.Entry, error]) error {
	if format == "json" {
		for e, err := range entries {
			if err != nil {
				return err
			}
			line, err := audit.MarshalEntry(&e)
			if err != nil {
				return err
			}
			if _, err := fmt.Fprintf(w, "%s\n", line); err != nil {
				return err
			}
		}
		return nil
	}
	tw := tabwriter.NewWriter(w, 0, 2, 2, ' ', 0)
	fmt.Fprintln(tw, "SEQ\tTIME\tKIND\tACTOR\tKEYSET\tKID\tOUTCOME\tREASON")
	for e, err := range entries {
		if err != nil {
			return err
		}
		fmt.Fprintf(tw, "%d\t%s\t%s\t%s\t%s\t%s\t%s\t%s\n", e.Seq, e.Time.UTC().Format(time.RFC3339), e.Kind,
			orDash(printable(e.Actor)), orDash(printable(e.KeySet)), orDash(printable(e.KID)), e.Outcome, orDash(printable(e.Reason)))
	}
	return tw.Flush()
}

// printable replaces control characters: actors and reasons can carry
// text from a caller's token or evidence, which must not drive the
// operator's terminal or break the table's columns.
func printable(s string) string {
	return strings.Map(func(r rune) rune {
		// Cf covers bidirectional overrides that reorder what is shown.
		if unicode.In(r, unicode.Cc, unicode.Cf) || r == unicode.ReplacementChar {
			return '?'
		}
		return r
	}, s)
}

func newAuditPublicKeyCmd() *cobra.Command {
	a := &adminFlags{}
	var out string
	c := &cobra.Command{
		Use:   "public-key",
		Short: "Print the audit key's Ed25519 public key as PEM (admin API)",
		Long: `public-key fetches the public key that verifies the audit log's
checkpoints from the server and writes it as a PEM "PUBLIC KEY", the form
"kms audit verify --public-key" reads. Keep a copy outside the KMS.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			return a.run(cmd, func(ctx context.Context, c kmsv1.AdminClient) error {
				resp, err := c.GetAuditKey(ctx, &kmsv1.GetAuditKeyRequest{})
				if err != nil {
					return err
				}
				// Refuse anything verify would not accept, rather than
				// save a key that fails later.
				k, err := x509.ParsePKIXPublicKey(resp.GetPublicKey())
				if err != nil {
					return fmt.Errorf("audit public key: %w", err)
				}
				if _, ok := k.(ed25519.PublicKey); !ok {
					return fmt.Errorf("audit public key is %T, want Ed25519", k)
				}
				pemBytes := pem.EncodeToMemory(&pem.Block{Type: "PUBLIC KEY", Bytes: resp.GetPublicKey()})
				if out == "" || out == "-" {
					_, err = cmd.OutOrStdout().Write(pemBytes)
					return err
				}
				if err := os.WriteFile(out, pemBytes, 0o644); err != nil {
					return fmt.Errorf("audit public key: %w", err)
				}
				return nil
			})
		},
	}
	a.register(c)
	c.Flags().StringVar(&out, "out", "", "write the PEM to this file instead of standard output")
	return c
}
