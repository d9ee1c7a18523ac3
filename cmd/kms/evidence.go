package main

import (
	"bytes"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"strings"
	"time"

	"github.com/spf13/cobra"

	"github.com/attested-kms/attested-kms/attestation"
	"github.com/attested-kms/attested-kms/attestation/collateral"
	"github.com/attested-kms/attested-kms/attestation/evidencefile"
	"github.com/attested-kms/attested-kms/attestation/sevsnp"
	"github.com/attested-kms/attested-kms/attestation/verifiers"
)

// exitRejected is the exit code for evidence that does not verify, so
// scripts can tell it from a usage or I/O error (1).
const exitRejected = 2

// evidenceInput are the flags that name evidence and how to judge it,
// shared by `evidence verify` and `collateral fetch`.
type evidenceInput struct {
	typ, file, vcek, testRoots, at string
}

func (in *evidenceInput) register(cmd *cobra.Command, required bool) {
	f := cmd.Flags()
	f.StringVar(&in.typ, "type", "", "evidence type: sev-snp, tdx, azure-sev-snp-vtpm or azure-tdx-vtpm (required)")
	f.StringVar(&in.file, "evidence", "", "evidence file: raw report or quote, report + certificate table, the project's JSON, or a Confidential Containers vTPM document (required)")
	f.StringVar(&in.vcek, "vcek", "", "VCEK certificate (DER or PEM) for sev-snp and azure-sev-snp-vtpm evidence that lacks it")
	f.StringVar(&in.testRoots, "test-roots", "", "PEM file of simulator roots to trust (development evidence only)")
	f.StringVar(&in.at, "at", "", "verify as of this RFC 3339 time (for recorded evidence); default now")
	if required {
		_ = cmd.MarkFlagRequired("type")
		_ = cmd.MarkFlagRequired("evidence")
	}
}

// load reads the evidence and returns it with the verification time.
func (in *evidenceInput) load() (*attestation.Evidence, func() time.Time, error) {
	typ := attestation.Platform(in.typ)
	data, err := readBounded(in.file, evidencefile.MaxSize)
	if err != nil {
		return nil, nil, err
	}
	ev, err := evidencefile.Decode(typ, data)
	if err != nil {
		return nil, nil, fmt.Errorf("%s: %w", in.file, err)
	}
	if in.vcek != "" {
		cert, err := readBounded(in.vcek, 64<<10)
		if err != nil {
			return nil, nil, err
		}
		switch typ {
		case attestation.PlatformSEVSNP:
			if ev.Certificates, err = sevsnp.CertTableFromVCEK(cert); err != nil {
				return nil, nil, fmt.Errorf("--vcek: %w", err)
			}
		case attestation.PlatformAzureSNPVTPM:
			if len(ev.Document) > 0 {
				return nil, nil, errors.New("--vcek: a Confidential Containers document carries its own VCEK")
			}
			ev.Certificates = cert
		default:
			return nil, nil, fmt.Errorf("--vcek applies to sev-snp and azure-sev-snp-vtpm evidence, not %s", typ)
		}
	}
	now := time.Now
	if in.at != "" {
		at, err := time.Parse(time.RFC3339, in.at)
		if err != nil {
			return nil, nil, fmt.Errorf("--at: %w", err)
		}
		now = func() time.Time { return at }
	}
	return ev, now, nil
}

// settings returns verifier settings trusting --test-roots for the
// evidence's vendor.
func (in *evidenceInput) settings(now func() time.Time) (verifiers.Settings, error) {
	typ := attestation.Platform(in.typ)
	s := verifiers.Settings{
		Platforms:     []attestation.Platform{typ},
		Now:           now,
		SNPRevocation: true,
		TDXRevocation: true,
	}
	if in.testRoots != "" {
		pem, err := readBounded(in.testRoots, 1<<20)
		if err != nil {
			return s, err
		}
		switch typ {
		case attestation.PlatformSEVSNP, attestation.PlatformAzureSNPVTPM:
			s.SNPTestRootsPEM = pem
		default:
			s.TDXTestRootsPEM = pem
		}
	}
	return s, nil
}

func readBounded(path string, limit int64) ([]byte, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	var buf bytes.Buffer
	if _, err := buf.ReadFrom(io.LimitReader(f, limit+1)); err != nil {
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	if int64(buf.Len()) > limit {
		return nil, fmt.Errorf("%s: larger than %d bytes", path, limit)
	}
	return buf.Bytes(), nil
}

func newEvidenceCmd() *cobra.Command {
	cmd := &cobra.Command{Use: "evidence", Short: "Verify attestation evidence offline or online"}
	var in evidenceInput
	var collateralDir, reportData string
	var offline bool
	verify := &cobra.Command{
		Use:   "verify",
		Short: "Verify evidence and print its normalized claims as JSON",
		Long: `verify checks evidence the way the release path does (signature chain to
the vendor root, revocation, TCB, the composite checks of Azure vTPM
evidence) and prints the verified, normalized claims as JSON. It exits 0 when
the evidence verifies, 2 with one line saying why when it does not, and 1 on
usage or I/O errors.

Collateral (VCEKs, CRLs, TCB info, QE identities) is fetched from the
vendors and cached in --collateral DIR if given. With --offline nothing is
fetched: only what the evidence carries and what DIR holds are used, and
where no CRL is at hand everything else is verified and the claims say
"revocation": "not checked". A CRL that is at hand but expired still fails.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			ev, now, err := in.load()
			if err != nil {
				return err
			}
			var want []byte
			if reportData != "" {
				if want, err = hex.DecodeString(reportData); err != nil || len(want) != 64 {
					return errors.New("--report-data: want 128 hex characters (64 bytes)")
				}
			}
			s, err := in.settings(now)
			if err != nil {
				return err
			}
			if offline {
				s.RevocationOptional = true
				if collateralDir != "" {
					if s.Collateral, err = collateral.New(collateral.Config{Dir: collateralDir, Offline: true, Now: now}); err != nil {
						return err
					}
				}
			} else if s.Collateral, err = collateral.New(collateral.Config{Dir: collateralDir, Now: now}); err != nil {
				return err
			}
			set, err := verifiers.New(s)
			if err != nil {
				return err
			}
			claims, err := set.Verify(cmd.Context(), ev)
			if err != nil {
				return &exitError{code: exitRejected, err: oneLine(fmt.Errorf("evidence rejected: %w", err))}
			}
			if want != nil && !bytes.Equal(claims.ReportData, want) {
				return &exitError{code: exitRejected, err: fmt.Errorf("evidence rejected: report data %x does not match --report-data", []byte(claims.ReportData))}
			}
			out, err := json.MarshalIndent(claims, "", "  ")
			if err != nil {
				return err
			}
			_, err = fmt.Fprintf(cmd.OutOrStdout(), "%s\n", out)
			return err
		},
	}
	in.register(verify, true)
	verify.Flags().StringVar(&collateralDir, "collateral", "", "collateral directory: cache when online, the only source with --offline")
	verify.Flags().BoolVar(&offline, "offline", false, "fetch nothing; use only the evidence and --collateral")
	verify.Flags().StringVar(&reportData, "report-data", "", "require this report data (128 hex characters), e.g. the binding digest")
	cmd.AddCommand(verify)
	return cmd
}

// oneLine keeps a multi-error message on one line, as the command
// promises one line per rejection.
func oneLine(err error) error {
	msg := strings.Join(strings.Fields(strings.ReplaceAll(err.Error(), "\n", "; ")), " ")
	return errors.New(msg)
}
