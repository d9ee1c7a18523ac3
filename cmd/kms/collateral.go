package main

import (
	"errors"
	"fmt"
	"regexp"
	"time"

	"github.com/google/go-sev-guest/abi"
	"github.com/google/go-sev-guest/kds"
	"github.com/google/go-tdx-guest/pcs"
	"github.com/spf13/cobra"

	"github.com/attested-kms/attested-kms/attestation/collateral"
	"github.com/attested-kms/attested-kms/attestation/verifiers"
)

var fmspcPattern = regexp.MustCompile(`^[0-9a-f]{12}$`)

func newCollateralCmd() *cobra.Command {
	cmd := &cobra.Command{Use: "collateral", Short: "Prepare collateral directories for offline verification"}
	var in evidenceInput
	var out, amdBase, pcsBase, certsBase string
	var allowHTTP bool
	var fmspcs, products []string
	fetch := &cobra.Command{
		Use:   "fetch",
		Short: "Fetch the collateral needed to verify evidence into a directory",
		Long: `fetch downloads, on a machine that can reach AMD's KDS and Intel's PCS (or
a PCCS / Azure THIM cache given by the base URL flags), everything needed to
verify the given evidence, and writes it to --out in the collateral
directory format (docs/collateral.md). Copy the directory to the KMS host
and point attestation.collateral.dir at it with offline: true, or pass it
to "kms evidence verify --offline --collateral DIR".

--fmspc and --amd-product fetch documents that do not depend on one piece of
evidence: Intel's TCB info for a platform family, the QE identity and the
PCK CRLs; AMD's certificate chain and CRL for a product line.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if in.file == "" && len(fmspcs) == 0 && len(products) == 0 {
				return errors.New("give --evidence with --type, or --fmspc / --amd-product")
			}
			if (in.file == "") != (in.typ == "") {
				return errors.New("--evidence and --type go together")
			}
			store, err := collateral.New(collateral.Config{
				Dir: out, AMDBaseURL: amdBase, IntelPCSBaseURL: pcsBase, IntelCertsBaseURL: certsBase,
				AllowHTTP: allowHTTP,
			})
			if err != nil {
				return err
			}
			ctx := cmd.Context()
			var urls []string
			for _, f := range fmspcs {
				if !fmspcPattern.MatchString(f) {
					return fmt.Errorf("--fmspc %q: want 12 lowercase hex characters", f)
				}
				urls = append(urls, pcs.TcbInfoURL(f))
			}
			if len(fmspcs) > 0 {
				// TDX PCK certificates are issued by the platform CA, so its
				// CRL is the one verification asks for.
				urls = append(urls, pcs.QeIdentityURL(), pcs.PckCrlURL("platform"),
					"https://certificates.trustedservices.intel.com/IntelSGXRootCA.der")
			}
			for _, p := range products {
				switch p {
				case "Milan", "Genoa", "Turin":
				default:
					return fmt.Errorf("--amd-product %q: want Milan, Genoa or Turin", p)
				}
				base := kds.ProductCertChainURL(abi.VcekReportSigner, p)
				urls = append(urls, base, base[:len(base)-len("cert_chain")]+"crl")
			}
			for _, u := range urls {
				doc, err := store.Fetch(ctx, u)
				if err != nil {
					return err
				}
				fmt.Fprintf(cmd.OutOrStdout(), "%s (next update %s)\n", u, nextUpdate(doc.NextUpdate))
			}
			if in.file == "" {
				return nil
			}
			ev, now, err := in.load()
			if err != nil {
				return err
			}
			s, err := in.settings(now)
			if err != nil {
				return err
			}
			s.Collateral = store
			set, err := verifiers.New(s)
			if err != nil {
				return err
			}
			// Verifying fetches exactly what verification needs, through
			// the store, which writes each document to --out.
			if _, err := set.Verify(ctx, ev); err != nil {
				return &exitError{code: exitRejected, err: oneLine(fmt.Errorf("evidence rejected (the collateral fetched so far is in %s): %w", out, err))}
			}
			fmt.Fprintf(cmd.OutOrStdout(), "collateral for %s written to %s\n", in.file, out)
			return nil
		},
	}
	// Evidence is optional here: --fmspc / --amd-product work alone.
	in.register(fetch, false)
	f := fetch.Flags()
	f.StringVar(&out, "out", "", "collateral directory to write (required)")
	f.StringSliceVar(&fmspcs, "fmspc", nil, "Intel platform FMSPC (12 hex) whose TCB info to fetch (repeatable)")
	f.StringSliceVar(&products, "amd-product", nil, "AMD product line whose certificate chain and CRL to fetch: Milan, Genoa, Turin (repeatable)")
	f.StringVar(&amdBase, "amd-kds-url", "", "AMD KDS base URL (default https://kdsintf.amd.com)")
	f.StringVar(&pcsBase, "intel-pcs-url", "", "Intel PCS base URL, or a PCCS / Azure THIM cache (default https://api.trustedservices.intel.com)")
	f.StringVar(&certsBase, "intel-certs-url", "", "Intel certificates base URL (default https://certificates.trustedservices.intel.com)")
	f.BoolVar(&allowHTTP, "allow-plain-http", false, "accept http:// base URLs (a PCCS on a trusted network; every document is still signature-checked when used)")
	_ = fetch.MarkFlagRequired("out")
	cmd.AddCommand(fetch)
	return cmd
}

func nextUpdate(t time.Time) string {
	if t.IsZero() {
		return "not stated"
	}
	return t.UTC().Format(time.RFC3339)
}
