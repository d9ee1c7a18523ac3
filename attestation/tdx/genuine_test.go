package tdx_test

import (
	"context"
	"testing"
	"time"

	"github.com/attested-kms/attested-kms/attestation"
	"github.com/attested-kms/attested-kms/attestation/tdx"
)

// Times at which go-tdx-guest's genuine Intel samples verify (see
// test/fixtures/tdx/README.md).
var (
	// v4: TCB info 2023-06-18T08:42:58Z..2023-07-18T08:42:58Z, QE
	// identity and PCK CRL 2023-06-08T07:2x..2023-07-08T07:2x, root CRL
	// 2023-04-03..2024-04-02, PCK certificate from 2022-09-20, TCB signing
	// certificate until 2025-05-21.
	genuineV4Time = time.Date(2023, 7, 1, 1, 0, 0, 0, time.UTC)
	// v5: PCK certificate from 2026-01-27, TCB info 2026-02-01T14:49:26Z..
	// 2026-03-03T14:49:26Z.
	genuineV5Time = time.Date(2026, 2, 3, 1, 0, 0, 0, time.UTC)
)

func genuineVerifier(t *testing.T, now time.Time) *tdx.Verifier {
	t.Helper()
	v, err := tdx.NewVerifier(tdx.Options{
		Now:             at(now), // Roots nil: Intel's SGX Root CA
		CheckRevocation: true,
		Getter:          dirGetter(fixtures + "/genuine/collateral"),
	})
	if err != nil {
		t.Fatal(err)
	}
	return v
}

func TestGenuineV4(t *testing.T) {
	ctx := context.Background()
	q := readFixture(t, "genuine/quote_v4.dat")
	v := genuineVerifier(t, genuineV4Time)

	// Every signature, chain, collateral document and CRL verifies ...
	if err := v.CheckChain(ctx, q, genuineV4Time); err != nil {
		t.Fatalf("PCK chain and quote signatures: %v", err)
	}
	if err := v.CheckTCBInfo(ctx, "50806f000000", genuineV4Time); err != nil {
		t.Fatalf("TCB info: %v", err)
	}
	if err := v.CheckQEIdentity(ctx, genuineV4Time); err != nil {
		t.Fatalf("QE identity: %v", err)
	}
	if rev, err := v.CheckRevocationAt(ctx, q, genuineV4Time, genuineV4Time); err != nil || rev != attestation.RevocationChecked {
		t.Fatalf("revocation: %q, %v", rev, err)
	}
	// ... but Intel's sample TCB info (evaluation data number 15) wants
	// TDX late microcode SVN 5 at every level and the quote has 4, so no
	// TCB level matches: go-tdx-guest reports the same ("no matching TCB
	// level found").
	_, err := verify(t, v, q)
	wantReason(t, err, attestation.ReasonTCB)

	c, err := tdx.ParseQuote(q)
	if err != nil {
		t.Fatal(err)
	}
	if c.QuoteVersion != 4 || c.FMSPC.String() != "50806f000000" || c.TEETCBSVN.String() != "03000400000000000000000000000000" || c.Debug {
		t.Errorf("parsed %+v", c)
	}

	// After the TCB info's nextUpdate the collateral is stale.
	_, err = verify(t, genuineVerifier(t, time.Date(2023, 7, 19, 0, 0, 0, 0, time.UTC)), q)
	wantReason(t, err, attestation.ReasonCollateralExpired)
}

func TestGenuineV5(t *testing.T) {
	ctx := context.Background()
	q := readFixture(t, "genuine/quote_v5.dat")
	v := genuineVerifier(t, genuineV5Time)

	// The PCK chain to Intel's root and all quote signatures verify.
	if err := v.CheckChain(ctx, q, genuineV5Time); err != nil {
		t.Fatalf("PCK chain and quote signatures: %v", err)
	}
	// The TCB info is signed by Intel's TCB signing key, but the issuer
	// chain go-tdx-guest ships for it holds the TCB signing certificate
	// that expired on 2025-05-21, before the TCB info was issued: there is
	// no time at which both are valid.
	err := v.CheckTCBInfo(ctx, "90c06f000000", genuineV5Time)
	wantReason(t, err, attestation.ReasonUntrustedRoot)
	err = v.CheckTCBInfo(ctx, "90c06f000000", time.Date(2025, 5, 1, 0, 0, 0, 0, time.UTC))
	wantReason(t, err, attestation.ReasonCollateralExpired)
	// QE identity and CRLs are the 2023 ones: current at the v4 time.
	if err := v.CheckQEIdentity(ctx, genuineV4Time); err != nil {
		t.Fatalf("QE identity: %v", err)
	}
	if rev, err := v.CheckRevocationAt(ctx, q, genuineV5Time, genuineV4Time); err != nil || rev != attestation.RevocationChecked {
		t.Fatalf("revocation: %q, %v", rev, err)
	}
	// Matched against the (unverifiable) TCB info and the QE identity,
	// the platform is UpToDate: TDX module 1.x SVN 11 and the platform
	// level of evaluation data number 18.
	status, adv, err := tdx.EvaluateTCBUnverified(q,
		readFixture(t, "genuine/collateral/api.trustedservices.intel.com/tdx/certification/v4/tcb@fmspc=90c06f000000"),
		readFixture(t, "genuine/collateral/api.trustedservices.intel.com/tdx/certification/v4/qe/identity"))
	if err != nil || status != "UpToDate" || len(adv) != 0 {
		t.Errorf("TCB evaluation: %q %v %v", status, adv, err)
	}
	// So the whole verification fails, on the TCB info's signing chain.
	_, err = verify(t, v, q)
	wantReason(t, err, attestation.ReasonUntrustedRoot)

	c, err := tdx.ParseQuote(q)
	if err != nil {
		t.Fatal(err)
	}
	if c.QuoteVersion != 5 || c.FMSPC.String() != "90c06f000000" || c.TEETCBSVN.String() != "0b010400000000000000000000000000" {
		t.Errorf("parsed %+v", c)
	}
}

func TestGenuineRootMatchesQuotes(t *testing.T) {
	// The embedded root is the one Intel's genuine chains end in.
	for _, name := range []string{"genuine/quote_v4.dat", "genuine/quote_v5.dat"} {
		v, err := tdx.NewVerifier(tdx.Options{Getter: mapGetter(nil)})
		if err != nil {
			t.Fatal(err)
		}
		if err := v.CheckChain(context.Background(), readFixture(t, name), genuineV5Time); err != nil {
			t.Errorf("%s: %v", name, err)
		}
	}
}
