// Package tdx verifies Intel TDX quotes (versions 4 and 5) and turns them
// into normalized attestation claims.
//
// Verification follows go-tdx-guest's split between signatures and
// policy: this package checks the PCK certificate chain to Intel's SGX
// Root CA (or configured simulator roots), the QE report signature and the
// attestation key it vouches for, the quote signature, Intel's collateral
// (TCB info for the PCK's FMSPC, QE identity, PCK and root CA CRLs, each
// signed and current) and finds the platform's TCB status. Whether the
// measurements, attributes or TCB status are acceptable is the release
// policy's job. The package does no network I/O of its own: collateral is
// fetched through the trust.HTTPSGetter the caller passes in, by Intel's
// PCS URLs.
package tdx

import (
	"context"
	"crypto/x509"
	"encoding/hex"
	"errors"
	"fmt"
	"time"

	"github.com/attested-kms/attested-kms/attestation"
	"github.com/google/go-tdx-guest/verify/trust"
)

// Options configure a Verifier.
type Options struct {
	// Roots are the trusted root certificates of PCK chains and of the
	// TCB signing chain. nil means Intel's SGX Root CA. A non-nil empty
	// pool trusts no genuine root, which only makes sense together with
	// TestRootsPEM.
	Roots *x509.CertPool
	// TestRootsPEM adds simulator roots (simulate.Intel.RootsPEM).
	// Development and tests only; every certificate must carry
	// TestRootMarker. See ParseTestRoots.
	TestRootsPEM []byte
	// Now is the verification time for certificates and every collateral
	// document; nil means time.Now.
	Now func() time.Time
	// CheckRevocation fetches the PCK CRL and the root CA CRL and rejects
	// a revoked PCK certificate, PCK CA or TCB signing certificate. The
	// server turns it on.
	CheckRevocation bool
	// RevocationOptional is ONLY for `kms evidence verify --offline`: a
	// CRL that cannot be obtained is skipped and the claims say
	// attestation.RevocationNotChecked. A CRL that is obtained must still
	// verify and be current.
	RevocationOptional bool
	// Getter serves TCB info, QE identity and CRLs, with Intel's
	// issuer-chain response headers, by their Intel PCS URLs (see
	// go-tdx-guest's pcs package). Required.
	Getter trust.HTTPSGetter
}

// Verifier verifies TDX quotes. It is safe for concurrent use.
type Verifier struct {
	pool               *x509.CertPool
	testRoots          bool
	now                func() time.Time
	checkRevocationOn  bool
	revocationOptional bool
	getter             trust.HTTPSGetter

	chains chainCache
	docs   cache[*signedDoc]
	crls   cache[*x509.RevocationList]
}

// NewVerifier returns a Verifier for opts.
func NewVerifier(opts Options) (*Verifier, error) {
	if opts.Getter == nil {
		return nil, errors.New("tdx: a collateral Getter is required")
	}
	var pool *x509.CertPool
	if opts.Roots == nil {
		pool = x509.NewCertPool()
		pool.AddCert(GenuineRoot())
	} else {
		pool = opts.Roots.Clone()
	}
	testRoots := false
	if len(opts.TestRootsPEM) > 0 {
		roots, err := ParseTestRoots(opts.TestRootsPEM)
		if err != nil {
			return nil, err
		}
		for _, r := range roots {
			pool.AddCert(r)
		}
		testRoots = true
	}
	if pool.Equal(x509.NewCertPool()) {
		return nil, errors.New("tdx: no trusted roots configured")
	}
	now := opts.Now
	if now == nil {
		now = time.Now
	}
	return &Verifier{
		pool:               pool,
		testRoots:          testRoots,
		now:                now,
		checkRevocationOn:  opts.CheckRevocation,
		revocationOptional: opts.RevocationOptional,
		getter:             opts.Getter,
	}, nil
}

// TrustsTestRoots reports whether simulator roots were configured through
// TestRootsPEM, so the server can refuse to start, or warn loudly, in
// production. (A simulator root passed in Roots cannot be recognized in an
// x509.CertPool; configure simulator roots through TestRootsPEM.)
func (v *Verifier) TrustsTestRoots() bool { return v.testRoots }

// Verify implements attestation.Verifier for tdx evidence: the quote in
// Report.
func (v *Verifier) Verify(ctx context.Context, ev *attestation.Evidence) (*attestation.Claims, error) {
	if ev == nil || ev.Type != attestation.PlatformTDX {
		return nil, attestation.Errorf(attestation.ReasonUnsupported, errors.New("tdx: not tdx evidence"))
	}
	return v.VerifyQuote(ctx, ev.Report)
}

// VerifyQuote verifies a raw TD quote (version 4, or 5 with a TDX 1.0 or
// 1.5 body) and returns its claims. Failures are *attestation.Error
// values: ReasonMalformed (unparsable quote or PCK chain), ReasonUnsupported
// (version, attestation key type, certification data type),
// ReasonSignature (quote or QE report signature, QE report data not
// binding the attestation key, collateral or CRL signature),
// ReasonUntrustedRoot (PCK or TCB signing chain not to a configured root,
// or not valid at Now), ReasonRevoked, ReasonCollateral (collateral not
// obtainable or unusable), ReasonCollateralExpired (collateral outside its
// issue/next-update window at Now), ReasonTCB (no TCB info level or QE
// identity matches the platform).
func (v *Verifier) VerifyQuote(ctx context.Context, raw []byte) (*attestation.Claims, error) {
	now := v.now()
	q, err := parseQuote(raw)
	if err != nil {
		return nil, err
	}
	ch, err := v.verifyChain(ctx, q, now)
	if err != nil {
		return nil, err
	}
	ti, err := v.tcbInfo(ctx, ch.ext.FMSPC, now)
	if err != nil {
		return nil, err
	}
	qe, err := v.qeIdentity(ctx, now)
	if err != nil {
		return nil, err
	}
	revocation, err := v.checkRevocation(ctx, ch, []*x509.Certificate{ti.signer, qe.signer}, now)
	if err != nil {
		return nil, err
	}
	tcb, err := evaluateTCB(q, ch.ext, ti.tcbInfo, qe.qeIdentity)
	if err != nil {
		return nil, err
	}
	c := q.claims()
	if c.FMSPC, err = hex.DecodeString(ch.ext.FMSPC); err != nil {
		return nil, attestation.Errorf(attestation.ReasonMalformed, fmt.Errorf("tdx: FMSPC: %w", err))
	}
	c.TCBStatus = string(tcb.status)
	c.AdvisoryIDs = tcb.advisories
	return &attestation.Claims{
		Platform:   attestation.PlatformTDX,
		ReportData: c.ReportData,
		Revocation: revocation,
		TDX:        c,
	}, nil
}
