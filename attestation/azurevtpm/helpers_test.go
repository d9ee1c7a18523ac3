package azurevtpm_test

import (
	"bytes"
	"context"
	"crypto/rand"
	"crypto/sha512"
	"encoding/binary"
	"errors"
	"sync"
	"testing"

	"github.com/google/go-sev-guest/verify/trust"
	"github.com/google/go-tdx-guest/testing/testdata"

	"github.com/attested-kms/attested-kms/attestation"
	"github.com/attested-kms/attested-kms/attestation/azurevtpm"
	"github.com/attested-kms/attested-kms/attestation/azurevtpm/simulate"
	"github.com/attested-kms/attested-kms/attestation/sevsnp"
	snpsim "github.com/attested-kms/attested-kms/attestation/sevsnp/simulate"
)

// The TDX quote simulator is written elsewhere; these tests use a
// genuine TD quote (go-tdx-guest's test data, version 4) with its report
// data replaced, and a fake TDX verifier that checks no signature but
// turns the quote body into claims. That exercises everything this
// package does with a TD quote: it never looks inside the quote itself.
const (
	quoteV4HeaderSize   = 48
	quoteV4BodySize     = 584
	quoteV4ReportDataAt = quoteV4HeaderSize + quoteV4BodySize - 64
)

func fakeTDXQuote(reportData [64]byte) ([]byte, error) {
	q := bytes.Clone(testdata.RawQuote)
	copy(q[quoteV4ReportDataAt:], reportData[:])
	return q, nil
}

type fakeTDXVerifier struct{ calls int }

func (f *fakeTDXVerifier) VerifyQuote(_ context.Context, quote []byte) (*attestation.Claims, error) {
	f.calls++
	r, err := simulate.TDReportFromQuote(quote)
	if err != nil {
		return nil, attestation.Errorf(attestation.ReasonMalformed, err)
	}
	rtmrs := make([]attestation.HexBytes, len(r.RTMRs))
	for i, m := range r.RTMRs {
		rtmrs[i] = m
	}
	return &attestation.Claims{
		Platform:   attestation.PlatformTDX,
		ReportData: r.ReportData,
		Revocation: attestation.RevocationChecked,
		TDX: &attestation.TDXClaims{
			QuoteVersion:  4,
			MRTD:          r.MRTD,
			RTMRs:         rtmrs,
			MRConfigID:    r.MRConfigID,
			MROwner:       r.MROwner,
			MROwnerConfig: r.MROwnerConfig,
			MRSeam:        r.MRSeam,
			MRSignerSeam:  r.MRSignerSeam,
			TDAttributes:  r.TDAttributes,
			XFAM:          r.XFAM,
			TEETCBSVN:     r.TEETCBSVN,
			ReportData:    r.ReportData,
			TCBStatus:     "UpToDate",
		},
	}, nil
}

// failingTDXVerifier stands for a TDX verifier rejecting the quote.
type failingTDXVerifier struct{}

func (failingTDXVerifier) VerifyQuote(context.Context, []byte) (*attestation.Claims, error) {
	return nil, attestation.Errorf(attestation.ReasonSignature, errors.New("fake: quote signature"))
}

// The SNP signer takes seconds to make (two RSA-4096 keys): one per test binary.
var (
	signerOnce sync.Once
	signer     *snpsim.Signer
	signerErr  error
)

func testSigner(t testing.TB) *snpsim.Signer {
	t.Helper()
	signerOnce.Do(func() { signer, signerErr = snpsim.NewSigner(rand.Reader, sevsnp.ProductMilan) })
	if signerErr != nil {
		t.Fatalf("NewSigner: %v", signerErr)
	}
	return signer
}

func snpVerifier(t testing.TB) *sevsnp.Verifier {
	t.Helper()
	v, err := sevsnp.NewVerifier(sevsnp.Options{Roots: map[string][]*trust.AMDRootCerts{}, TestRootsPEM: testSigner(t).RootsPEM()})
	if err != nil {
		t.Fatalf("sevsnp.NewVerifier: %v", err)
	}
	return v
}

func newVerifier(t testing.TB) (*azurevtpm.Verifier, *fakeTDXVerifier) {
	t.Helper()
	tdx := &fakeTDXVerifier{}
	v, err := azurevtpm.NewVerifier(azurevtpm.Options{SNP: snpVerifier(t), TDX: tdx})
	if err != nil {
		t.Fatalf("NewVerifier: %v", err)
	}
	return v, tdx
}

// binding is a stand-in for the KMS's binding digest.
func binding(s string) [64]byte { return sha512.Sum512([]byte(s)) }

// withVM runs f with a simulated VM (one at a time: the TPM simulator is global).
func withVM(t testing.TB, opts simulate.Options, f func(vm *simulate.VM)) {
	t.Helper()
	if opts.SNP == nil && opts.TDXQuote == nil {
		opts.SNP = testSigner(t)
	}
	vm, err := simulate.NewVM(opts)
	if err != nil {
		t.Fatalf("NewVM: %v", err)
	}
	defer vm.Close()
	f(vm)
}

// evidence returns simulated evidence for userData.
func evidence(t testing.TB, opts simulate.Options, userData [64]byte) *attestation.Evidence {
	t.Helper()
	var ev *attestation.Evidence
	withVM(t, opts, func(vm *simulate.VM) {
		var err error
		if ev, err = vm.Evidence(userData); err != nil {
			t.Fatalf("Evidence: %v", err)
		}
	})
	return ev
}

func tdxOpts() simulate.Options { return simulate.Options{TDXQuote: fakeTDXQuote} }

// cloneEvidence deep-copies ev so that table tests can corrupt it.
func cloneEvidence(ev *attestation.Evidence) *attestation.Evidence {
	c := *ev
	c.Report = bytes.Clone(ev.Report)
	c.Certificates = bytes.Clone(ev.Certificates)
	c.TDQuote = bytes.Clone(ev.TDQuote)
	c.Document = bytes.Clone(ev.Document)
	if ev.TPMQuote != nil {
		q := *ev.TPMQuote
		q.Message = bytes.Clone(q.Message)
		q.Signature = bytes.Clone(q.Signature)
		q.PCRs = nil
		for _, p := range ev.TPMQuote.PCRs {
			q.PCRs = append(q.PCRs, bytes.Clone(p))
		}
		c.TPMQuote = &q
	}
	return &c
}

// runtimeDataOffset is where the HCL report's runtime data starts.
const runtimeDataOffset = 32 + 1184 + 20

func runtimeDataOf(t testing.TB, report []byte) []byte {
	t.Helper()
	n := binary.LittleEndian.Uint32(report[runtimeDataOffset-4:])
	return report[runtimeDataOffset : runtimeDataOffset+int(n)]
}
