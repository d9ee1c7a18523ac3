// Package sevsnp verifies AMD SEV-SNP attestation reports and turns them
// into normalized attestation claims.
//
// It follows go-sev-guest's split: this package checks signatures, the
// certificate chain to a trusted AMD root, the binding of the report to its
// endorsement key certificate and, on request, revocation; deciding whether
// the measurement, TCB, policy word and so on are acceptable is the release
// policy's job. The package does no network I/O of its own: certificates
// and CRLs that are not in the evidence are fetched through the
// trust.HTTPSGetter the caller passes in.
package sevsnp

import (
	"context"
	"crypto/sha256"
	"crypto/x509"
	"errors"
	"fmt"
	"sync"
	"time"

	"github.com/attested-kms/attested-kms/attestation"
	"github.com/google/go-sev-guest/abi"
	"github.com/google/go-sev-guest/kds"
	spb "github.com/google/go-sev-guest/proto/sevsnp"
	"github.com/google/go-sev-guest/verify"
	"github.com/google/go-sev-guest/verify/trust"
)

// Options configure a Verifier.
type Options struct {
	// Roots maps a product line ("Milan", "Genoa", "Turin") to the roots
	// trusted for it. nil means GenuineRoots(). A non-nil empty map trusts
	// no genuine root, which only makes sense together with TestRootsPEM.
	Roots map[string][]*trust.AMDRootCerts
	// TestRootsPEM adds simulator roots (simulate.Signer.RootsPEM) to
	// Roots. Development and tests only: set it only when the
	// configuration names a test-roots file. See ParseTestRoots.
	TestRootsPEM []byte
	// Now is the verification time for certificates and CRLs; nil means
	// time.Now.
	Now func() time.Time
	// CheckRevocation fetches the product CRL named by the ASK (or ASVK)
	// through Getter, checks that the ARK signed it and that it is
	// current, and rejects a revoked intermediate.
	CheckRevocation bool
	// RevocationOptional lets verification succeed without a CRL when none
	// can be obtained, with Claims.Revocation "not checked". A CRL that is
	// obtained but expired, or not signed by the ARK, still fails. Only
	// for explicit offline verification (kms evidence verify --offline);
	// never for the release path.
	RevocationOptional bool
	// Getter fetches a missing VCEK from AMD's KDS and, with
	// CheckRevocation, the CRL. nil disables all fetching: reports must
	// then come with their VCEK or VLEK in the certificate table.
	Getter trust.HTTPSGetter
}

// errRevocationNotChecked tells finish that RevocationOptional applied.
var errRevocationNotChecked = errors.New("sevsnp: revocation not checked")

// errNoCRL marks a failure where no CRL could be obtained at all, the only
// case RevocationOptional forgives.
var errNoCRL = errors.New("no CRL at hand")

// Verifier verifies SEV-SNP evidence. It is safe for concurrent use.
type Verifier struct {
	roots           map[string][]*trust.AMDRootCerts
	testRoots       bool
	now             func() time.Time
	checkRevocation bool
	revocationOpt   bool
	getter          trust.HTTPSGetter
	crls            crlCache
	chains          chainCache
}

// NewVerifier returns a Verifier for opts.
func NewVerifier(opts Options) (*Verifier, error) {
	roots := opts.Roots
	if roots == nil {
		var err error
		if roots, err = GenuineRoots(); err != nil {
			return nil, err
		}
	}
	// Copy, so later changes to the caller's map do not reach the verifier.
	merged := make(map[string][]*trust.AMDRootCerts, len(roots))
	for line, rs := range roots {
		for _, r := range rs {
			if r == nil || r.ProductCerts == nil || r.ProductCerts.Ark == nil {
				return nil, fmt.Errorf("sevsnp: %s root without an ARK", line)
			}
			merged[line] = append(merged[line], r)
		}
	}
	testRoots := len(opts.TestRootsPEM) > 0
	for _, rs := range merged {
		for _, r := range rs {
			// Simulator roots passed through Roots still count as test roots.
			testRoots = testRoots || IsTestCertificate(r.ProductCerts.Ark)
		}
	}
	if len(opts.TestRootsPEM) > 0 {
		trs, err := ParseTestRoots(opts.TestRootsPEM)
		if err != nil {
			return nil, err
		}
		for line, rs := range trs {
			merged[line] = append(merged[line], rs...)
		}
	}
	// go-sev-guest falls back to its embedded roots when TrustedRoots is
	// empty; refuse that here so the trust decision is always ours.
	if len(merged) == 0 {
		return nil, errors.New("sevsnp: no trusted roots configured")
	}
	if opts.CheckRevocation && opts.Getter == nil && !opts.RevocationOptional {
		return nil, errors.New("sevsnp: CheckRevocation needs a Getter to fetch the CRL")
	}
	now := opts.Now
	if now == nil {
		now = time.Now
	}
	return &Verifier{
		roots:           merged,
		testRoots:       testRoots,
		now:             now,
		checkRevocation: opts.CheckRevocation,
		revocationOpt:   opts.RevocationOptional,
		getter:          opts.Getter,
	}, nil
}

// TrustsTestRoots reports whether simulator roots are trusted (through
// TestRootsPEM or Roots), so the server can refuse to start, or warn
// loudly, in production.
func (v *Verifier) TrustsTestRoots() bool { return v.testRoots }

// Verify implements attestation.Verifier for sev-snp evidence: the report
// and the certificate table of an extended report.
func (v *Verifier) Verify(ctx context.Context, ev *attestation.Evidence) (*attestation.Claims, error) {
	if ev == nil || ev.Type != attestation.PlatformSEVSNP {
		return nil, attestation.Errorf(attestation.ReasonUnsupported, errors.New("sevsnp: not sev-snp evidence"))
	}
	return v.VerifyReport(ctx, ev.Report, ev.Certificates)
}

// VerifyReport checks a raw attestation report (abi.ReportSize bytes) and the
// certificate table of an extended report (SNP_GET_EXT_REPORT, configfs-tsm
// auxblob; may be empty when the Verifier has a Getter to fetch the VCEK
// from AMD's KDS). Only the VCEK or VLEK is taken from the table: the ARK
// and ASK come from the configured roots, never from the evidence.
//
// Failures are *attestation.Error values: ReasonMalformed (unparsable report
// or table), ReasonUnsupported (report version, signature algorithm),
// ReasonCollateral (endorsement key certificate or CRL unavailable),
// ReasonUntrustedRoot (chain does not end in a configured root, or is not
// valid at the verification time), ReasonSignature (report signature wrong,
// unsigned report, or report not bound to its certificate's TCB and chip),
// ReasonRevoked.
func (v *Verifier) VerifyReport(ctx context.Context, report, certTable []byte) (*attestation.Claims, error) {
	if len(certTable) > MaxCertTableSize {
		return nil, attestation.Errorf(attestation.ReasonMalformed,
			fmt.Errorf("sevsnp: certificate table is %d bytes, limit %d", len(certTable), MaxCertTableSize))
	}
	rep, err := parseReport(report)
	if err != nil {
		return nil, err
	}
	info, err := abi.ParseSignerInfo(rep.GetSignerInfo())
	if err != nil {
		return nil, attestation.Errorf(attestation.ReasonMalformed, fmt.Errorf("sevsnp: signer info: %w", err))
	}
	key := info.SigningKey
	if key != abi.VcekReportSigner && key != abi.VlekReportSigner {
		return nil, attestation.Errorf(attestation.ReasonSignature, fmt.Errorf("sevsnp: report signing key is %v", key))
	}
	chain, err := parseCertTable(certTable)
	if err != nil {
		return nil, attestation.Errorf(attestation.ReasonMalformed, err)
	}
	now := v.now()
	reportLine := productLineOfReport(rep)

	var ekDER []byte
	switch key {
	case abi.VcekReportSigner:
		if len(chain.GetVcekCert()) == 0 {
			if chain.VcekCert, err = v.fetchVCEK(ctx, rep, reportLine); err != nil {
				return nil, attestation.Errorf(attestation.ReasonCollateral, err)
			}
		}
		ekDER = chain.GetVcekCert()
	case abi.VlekReportSigner:
		// KDS hands VLEKs only to the cloud provider; the host must supply it.
		if len(chain.GetVlekCert()) == 0 {
			return nil, attestation.Errorf(attestation.ReasonCollateral, errors.New("sevsnp: VLEK-signed report without a VLEK certificate"))
		}
		ekDER = chain.GetVlekCert()
	}
	ek, err := x509.ParseCertificate(ekDER)
	if err != nil {
		return nil, attestation.Errorf(attestation.ReasonMalformed, fmt.Errorf("sevsnp: parse %v certificate: %w", key, err))
	}

	if cached := v.chains.get(key, ekDER, now); cached != nil {
		// The chain of this exact certificate was verified before and the
		// certificate is still valid: only the report signature is new.
		if err := verify.SnpReportSignature(report, cached); err != nil {
			return nil, attestation.Errorf(attestation.ReasonSignature, fmt.Errorf("sevsnp: %w", err))
		}
		return v.finish(ctx, rep, reportLine, key, cached, now)
	}

	opts := &verify.Options{
		// Never empty (NewVerifier): go-sev-guest would substitute its defaults.
		TrustedRoots: v.roots,
		// Fetching, if any, was done above through v.getter. Left on,
		// go-sev-guest would fetch with its own default HTTP client.
		DisableCertFetching: true,
		// Revocation is checked below so that its failures get their own reasons.
		CheckRevocations: false,
		Now:              now,
	}
	att := &spb.Attestation{Report: rep, CertificateChain: chain}
	if err := verify.SnpAttestationContext(ctx, att, opts); err != nil {
		// go-sev-guest checks the chain, then the report signature, and
		// flattens its errors to strings. Re-check the signature alone to
		// tell "report altered" from "key not certified by a trusted root".
		if sigErr := verify.SnpReportSignature(report, ek); sigErr != nil {
			return nil, attestation.Errorf(attestation.ReasonSignature, fmt.Errorf("sevsnp: %w", sigErr))
		}
		return nil, attestation.Errorf(attestation.ReasonUntrustedRoot, fmt.Errorf("sevsnp: %v certificate chain: %w", key, err))
	}

	v.chains.put(key, ekDER, ek)
	return v.finish(ctx, rep, reportLine, key, ek, now)
}

// finish checks what ties the report to its verified certificate (TCB,
// chip), revocation, and normalizes the claims.
func (v *Verifier) finish(ctx context.Context, rep *spb.Report, reportLine string, key abi.ReportSigner, ek *x509.Certificate, now time.Time) (*attestation.Claims, error) {
	exts, err := kds.CertificateExtensions(ek, key)
	if err != nil {
		// go-sev-guest parsed these already; keep the check rather than assume.
		return nil, attestation.Errorf(attestation.ReasonMalformed, fmt.Errorf("sevsnp: %v extensions: %w", key, err))
	}
	line := reportLine
	if line == "" {
		// Version 2 reports do not name the product; the certified key does.
		product, err := kds.ParseProductName(exts.ProductName, key)
		if err != nil {
			return nil, attestation.Errorf(attestation.ReasonMalformed, fmt.Errorf("sevsnp: %v product name: %w", key, err))
		}
		line = kds.ProductLine(product)
	}
	if err := checkBinding(rep, line, exts, key); err != nil {
		return nil, attestation.Errorf(attestation.ReasonSignature, err)
	}
	revocation := attestation.RevocationNotChecked
	if v.checkRevocation {
		switch err := v.checkRevoked(ctx, line, key, ek, now); {
		case errors.Is(err, errRevocationNotChecked):
		case err != nil:
			return nil, err
		default:
			revocation = attestation.RevocationChecked
		}
	}
	snp := normalize(rep, line, key)
	return &attestation.Claims{
		Platform:   attestation.PlatformSEVSNP,
		ReportData: snp.ReportData,
		Revocation: revocation,
		SEVSNP:     snp,
	}, nil
}

// fetchVCEK gets the VCEK for the report's chip and reported TCB from KDS.
func (v *Verifier) fetchVCEK(ctx context.Context, rep *spb.Report, line string) ([]byte, error) {
	if v.getter == nil {
		return nil, errors.New("sevsnp: no VCEK certificate in the evidence and no KDS getter configured")
	}
	chip := rep.GetChipId()
	if string(chip) == string(make([]byte, len(chip))) {
		return nil, errors.New("sevsnp: CHIP_ID is masked; the VCEK must come with the evidence")
	}
	lines := []string{line}
	if line == "" {
		// Version 2 reports come from Milan or Genoa firmware; ask KDS for both.
		lines = []string{ProductMilan, ProductGenoa}
	}
	var errs []error
	for _, l := range lines {
		url := vcekURL(l, chip, rep.GetReportedTcb())
		der, err := trust.GetWith(ctx, v.getter, url)
		if err == nil {
			return der, nil
		}
		errs = append(errs, fmt.Errorf("%s: %w", url, err))
	}
	return nil, fmt.Errorf("sevsnp: fetch VCEK: %w", errors.Join(errs...))
}

// vcekURL is kds.VCEKCertURL, plus Turin's form, which go-sev-guest
// v0.15.0 lacks: KDS identifies a Turin chip by the first 8 bytes of its
// CHIP_ID and wants the FMC level too.
func vcekURL(line string, chip []byte, tcb uint64) string {
	if line != ProductTurin {
		return kds.VCEKCertURL(line, chip, kds.TCBVersion(tcb))
	}
	p := DecomposeTCB(line, tcb)
	return fmt.Sprintf("https://kdsintf.amd.com/vcek/v1/%s/%x?fmcSPL=%d&blSPL=%d&teeSPL=%d&snpSPL=%d&ucodeSPL=%d",
		line, chip[:8], p.FMC, p.Bootloader, p.TEE, p.SNP, p.Microcode)
}

// checkRevoked fetches the CRL of the root that certified ek and rejects
// the chain if the ARK revoked the ASK (or ASVK).
//
// AMD's CRL is issued by the ARK and so lists ARK-issued certificates:
// ASKs and ASVKs. VCEKs are issued by the ASK, whose serial numbers are a
// different namespace, and AMD does not revoke them (a TCB bump replaces
// them); so ek itself is not looked up. go-sev-guest's own check
// (VcekNotRevoked) does the same, but neither checks the CRL's validity
// period nor separates "revoked" from "CRL unavailable", hence this code.
func (v *Verifier) checkRevoked(ctx context.Context, line string, key abi.ReportSigner, ek *x509.Certificate, now time.Time) error {
	// Finding the root means verifying the RSA-4096 chain again; do it
	// once per cached certificate, not per release.
	root := v.chains.root(key, ek.Raw, now)
	for _, r := range v.roots[line] {
		if root != nil {
			break
		}
		vo := r.X509Options(now, key)
		if vo == nil {
			continue
		}
		if _, err := ek.Verify(*vo); err == nil {
			root = r
			v.chains.setRoot(key, ek.Raw, r)
		}
	}
	if root == nil {
		// SnpAttestation accepted the chain a moment ago; this is a bug.
		return attestation.Errorf(attestation.ReasonUntrustedRoot, errors.New("sevsnp: internal error: no root verifies the accepted chain"))
	}
	ica := root.ProductCerts.Ask
	if key == abi.VlekReportSigner {
		ica = root.ProductCerts.Asvk
	}
	if len(ica.CRLDistributionPoints) == 0 {
		return attestation.Errorf(attestation.ReasonCollateral, fmt.Errorf("sevsnp: %s has no CRL distribution point", ica.Subject.CommonName))
	}
	var crl *x509.RevocationList
	err := attestation.Errorf(attestation.ReasonCollateral, fmt.Errorf("sevsnp: no collateral getter: %w", errNoCRL))
	if v.getter != nil {
		crl, err = v.crls.get(ctx, v.getter, ica.CRLDistributionPoints, root.ProductCerts.Ark, now)
	}
	if err != nil {
		if v.revocationOpt && errors.Is(err, errNoCRL) {
			return errRevocationNotChecked
		}
		return err
	}
	for _, e := range crl.RevokedCertificateEntries {
		if e.SerialNumber != nil && e.SerialNumber.Cmp(ica.SerialNumber) == 0 {
			return attestation.Errorf(attestation.ReasonRevoked,
				fmt.Errorf("sevsnp: %s (serial %x) revoked at %s", ica.Subject.CommonName, ica.SerialNumber, e.RevocationTime.UTC().Format(time.RFC3339)))
		}
	}
	return nil
}

// crlCache keeps verified CRLs until their nextUpdate, so that a busy KMS
// does not ask AMD for the CRL on every request. It is per Verifier.
type crlCache struct {
	mu      sync.Mutex
	entries map[crlKey]*x509.RevocationList
}

type crlKey struct {
	url string
	ark [sha256.Size]byte
}

func (c *crlCache) get(ctx context.Context, getter trust.HTTPSGetter, urls []string, ark *x509.Certificate, now time.Time) (*x509.RevocationList, error) {
	arkID := sha256.Sum256(ark.Raw)
	c.mu.Lock()
	for _, u := range urls {
		if crl, ok := c.entries[crlKey{u, arkID}]; ok && crlCurrent(crl, now) == nil {
			c.mu.Unlock()
			return crl, nil
		}
	}
	c.mu.Unlock()

	// Fetch without holding the lock: a slow KDS must not stall verifications
	// that can use a cached CRL for another product line.
	var errs []error
	// A CRL that was obtained but is forged or out of date makes the
	// failure more specific than "unavailable".
	reason := attestation.ReasonCollateral
	fetched := false
	for _, u := range urls {
		der, err := trust.GetWith(ctx, getter, u)
		if err != nil {
			errs = append(errs, fmt.Errorf("fetch %s: %w", u, err))
			continue
		}
		fetched = true
		crl, err := x509.ParseRevocationList(der)
		if err != nil {
			errs = append(errs, fmt.Errorf("parse CRL from %s: %w", u, err))
			continue
		}
		if err := crl.CheckSignatureFrom(ark); err != nil {
			reason = attestation.ReasonSignature
			errs = append(errs, fmt.Errorf("CRL from %s not signed by %s: %w", u, ark.Subject.CommonName, err))
			continue
		}
		if err := crlCurrent(crl, now); err != nil {
			reason = attestation.ReasonCollateralExpired
			errs = append(errs, fmt.Errorf("CRL from %s: %w", u, err))
			continue
		}
		c.mu.Lock()
		if c.entries == nil {
			c.entries = make(map[crlKey]*x509.RevocationList)
		}
		c.entries[crlKey{u, arkID}] = crl
		c.mu.Unlock()
		return crl, nil
	}
	if !fetched {
		errs = append(errs, errNoCRL)
	}
	return nil, attestation.Errorf(reason, fmt.Errorf("sevsnp: no usable CRL: %w", errors.Join(errs...)))
}

// crlCurrent rejects a CRL outside its validity period: an old CRL replayed
// by a network attacker would otherwise hide a recent revocation.
func crlCurrent(crl *x509.RevocationList, now time.Time) error {
	if now.Before(crl.ThisUpdate) {
		return fmt.Errorf("CRL not valid before %s", crl.ThisUpdate.UTC().Format(time.RFC3339))
	}
	if !crl.NextUpdate.IsZero() && !now.Before(crl.NextUpdate) {
		return fmt.Errorf("CRL expired at %s", crl.NextUpdate.UTC().Format(time.RFC3339))
	}
	return nil
}
