package collateral

import (
	"bytes"
	"context"
	"crypto/x509"
	"encoding/pem"
	"net/http"
	"net/url"
	"strings"
	"testing"
	"time"

	"github.com/attested-kms/attested-kms/attestation/sevsnp"
	"github.com/google/go-sev-guest/abi"
	"github.com/google/go-sev-guest/kds"
	sevtrust "github.com/google/go-sev-guest/verify/trust"
	tdxtesting "github.com/google/go-tdx-guest/testing"
	"github.com/google/go-tdx-guest/testing/testdata"
	tdxverify "github.com/google/go-tdx-guest/verify"
	tdxtrust "github.com/google/go-tdx-guest/verify/trust"
)

// The interfaces each library's verifier takes.
var (
	_ sevtrust.HTTPSGetter        = (*Store)(nil)
	_ sevtrust.ContextHTTPSGetter = (*Store)(nil)
	_ tdxtrust.HTTPSGetter        = (*TDXGetter)(nil)
	_ tdxtrust.ContextHTTPSGetter = (*TDXGetter)(nil)
)

// genuineSEVTime is inside the recorded VCEK's validity.
var genuineSEVTime = time.Date(2023, time.June, 1, 0, 0, 0, 0, time.UTC)

// genuineVCEKURL is the KDS URL of the recorded VCEK (test/fixtures/sevsnp).
const genuineVCEKURL = "https://kdsintf.amd.com/vcek/v1/Milan/3ac3fe21e13fb0990eb28a802e3fb6a29483a6b0753590c951bdd3b8e53786184ca39e359669a2b76a1936776b564ea464cdce40c05f63c9b610c5068b006b5d?blSPL=2&teeSPL=0&snpSPL=5&ucodeSPL=68"

// TestSEVSNPVerifierFetchesVCEKThroughStore: the project's sevsnp verifier,
// given a report without certificates, asks the store (as a go-sev-guest
// trust.HTTPSGetter) for the VCEK by its KDS URL; the store gets it from the
// configured base, and a second verification is served from the cache.
func TestSEVSNPVerifierFetchesVCEKThroughStore(t *testing.T) {
	v := newVendor(t)
	vcek := fixture(t, "vcek.testcer")
	served := amdPrefix + strings.TrimPrefix(genuineVCEKURL, "https://"+HostAMDKDS)
	v.serve(served, nil, vcek)
	v.serve(amdPrefix+"/vcek/v1/Milan/cert_chain", nil, fixture(t, "milan.testcer"))
	clk := newClock(genuineSEVTime)
	cfg := v.config(clk, &sleepRecorder{})
	cfg.Dir = t.TempDir()
	s := newStore(t, cfg)

	ver, err := sevsnp.NewVerifier(sevsnp.Options{Now: clk.Now, Getter: s})
	if err != nil {
		t.Fatal(err)
	}
	report := fixture(t, "attestation.bin")
	for i := 0; i < 2; i++ {
		if _, err := ver.VerifyReport(context.Background(), report, nil); err != nil {
			t.Fatalf("verify with VCEK from the store: %v", err)
		}
	}
	if n := v.count(served); n != 1 {
		t.Errorf("VCEK requested %d times, want 1", n)
	}
	doc, err := s.Fetch(context.Background(), genuineVCEKURL)
	if err != nil || !doc.NextUpdate.Equal(time.Date(2029, time.September, 24, 0, 55, 28, 0, time.UTC)) {
		t.Errorf("VCEK NextUpdate %v (%v), want its NotAfter", doc.NextUpdate, err)
	}

	// go-sev-guest's own URL builder and GetWith, for the product chain.
	chain, err := sevtrust.GetWith(context.Background(), s, kds.ProductCertChainURL(abi.VcekReportSigner, "Milan"))
	if err != nil {
		t.Fatal(err)
	}
	if _, _, err := kds.ParseProductCertChain(chain); err != nil {
		t.Errorf("cert_chain through the store: %v", err)
	}

	// The same directory, offline, verifies without the vendor.
	off := newStore(t, Config{Dir: cfg.Dir, Offline: true, Now: clk.Now, Client: failingClient(t)})
	ver, err = sevsnp.NewVerifier(sevsnp.Options{Now: clk.Now, Getter: off})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := ver.VerifyReport(context.Background(), report, nil); err != nil {
		t.Fatalf("offline verify: %v", err)
	}
}

// tdxVendor serves go-tdx-guest's genuine sample collateral (with its
// issuer-chain headers) under the configured base paths.
func tdxVendor(t *testing.T) *vendor {
	v := newVendor(t)
	for canonical, resp := range tdxtesting.TestGetter.Responses {
		d, err := parseDocURL(canonical)
		if err != nil {
			t.Fatalf("sample URL %s: %v", canonical, err)
		}
		prefix := map[string]string{HostIntelPCS: pcsPrefix, HostIntelCerts: certsPrefix}[d.host]
		key := prefix + d.path
		if d.rawQuery != "" {
			key += "?" + d.rawQuery
		}
		v.serve(key, http.Header(resp.Header), resp.Body)
	}
	return v
}

// intelRoot is the Intel SGX root CA, taken from the sample PCK CRL issuer
// chain (intermediate, then root), so that the verifier trusts it
// explicitly rather than through go-tdx-guest's embedded default.
func intelRoot(t *testing.T) *x509.CertPool {
	t.Helper()
	chain, err := url.QueryUnescape(tdxtesting.PckCrlHeader["Sgx-Pck-Crl-Issuer-Chain"][0])
	if err != nil {
		t.Fatal(err)
	}
	_, rest := pem.Decode([]byte(chain))
	root, _ := pem.Decode(rest)
	if root == nil {
		t.Fatal("no root in the sample issuer chain")
	}
	cert, err := x509.ParseCertificate(root.Bytes)
	if err != nil {
		t.Fatal(err)
	}
	pool := x509.NewCertPool()
	pool.AddCert(cert)
	return pool
}

func tdxOptions(t *testing.T, g tdxtrust.HTTPSGetter, at time.Time) *tdxverify.Options {
	return &tdxverify.Options{
		TrustedRoots:     intelRoot(t),
		GetCollateral:    true,
		CheckRevocations: true,
		Getter:           g,
		Now:              &tdxverify.TimeSet{PckCertChain: at, TcbInfo: at, QeIdentity: at, PckCrl: at, RootCaCrl: at},
	}
}

// tdxSampleTime is when go-tdx-guest's sample collateral is current.
var tdxSampleTime = time.Date(2023, time.July, 1, 1, 0, 0, 0, time.UTC)

// The sample quote's TCB is not among the sample TCB info's levels, so a
// quote verification whose collateral all fetched, parsed, chained to
// Intel's root and passed the CRL checks ends with this error.
const tdxWantAfterCollateral = "no matching TCB level found"

// TestTDXVerifierThroughStore drives go-tdx-guest's verifier, with the
// store as its getter, over genuine Intel collateral: TCB info, QE
// identity, PCK CRL (their issuer chains travel in headers) and the root
// CA CRL, whose URL go-tdx-guest takes from the root certificate.
func TestTDXVerifierThroughStore(t *testing.T) {
	v := tdxVendor(t)
	clk := newClock(tdxSampleTime)
	cfg := v.config(clk, &sleepRecorder{})
	cfg.Dir = t.TempDir()
	s := newStore(t, cfg)

	for i := 0; i < 2; i++ {
		err := tdxverify.RawTdxQuoteContext(context.Background(), testdata.RawQuote, tdxOptions(t, s.TDX(), tdxSampleTime))
		if err == nil || !strings.Contains(err.Error(), tdxWantAfterCollateral) {
			t.Fatalf("verify with collateral from the store: %v, want %q", err, tdxWantAfterCollateral)
		}
	}
	if n := v.total(); n != 4 {
		t.Errorf("two verifications made %d requests, want 4 (one per document)", n)
	}

	// Offline from the directory the online store filled, later than the
	// documents' next update: served stale, and the verifier reports
	// expiry instead of "unavailable".
	off := newStore(t, Config{Dir: cfg.Dir, Offline: true, Now: clk.Now, Client: failingClient(t)})
	if err := tdxverify.RawTdxQuote(testdata.RawQuote, tdxOptions(t, off.TDX(), tdxSampleTime)); err == nil || !strings.Contains(err.Error(), tdxWantAfterCollateral) {
		t.Fatalf("offline verify: %v, want %q", err, tdxWantAfterCollateral)
	}
	later := tdxSampleTime.AddDate(1, 0, 0)
	clk.Advance(later.Sub(tdxSampleTime))
	err := tdxverify.RawTdxQuote(testdata.RawQuote, tdxOptions(t, off.TDX(), later))
	if err == nil || !strings.Contains(err.Error(), "expired") {
		t.Errorf("offline verify with stale collateral: %v, want an expiry error", err)
	}
	doc, ferr := off.Fetch(context.Background(), urlTCB)
	if ferr != nil || !doc.Stale {
		t.Errorf("offline TCB info a year later: %v, want served and stale", ferr)
	}

	// An empty offline directory: collateral unavailable, as ErrNotFound.
	empty := newStore(t, Config{Dir: t.TempDir(), Offline: true, Client: failingClient(t)})
	if _, _, err := empty.TDX().Get(urlTCB); err == nil || !strings.Contains(err.Error(), ErrNotFound.Error()) {
		t.Errorf("empty offline directory: %v", err)
	}
}

// TestTHIMHeaderAlias: a cache naming the TCB info chain the v3 way still
// satisfies go-tdx-guest, which looks for the v4 name.
func TestTHIMHeaderAlias(t *testing.T) {
	v := newVendor(t)
	resp := tdxtesting.TestGetter.Responses[urlTCB]
	chain := resp.Header["Tcb-Info-Issuer-Chain"]
	v.serve(pcsPrefix+"/tdx/certification/v4/tcb?fmspc=50806f000000", http.Header{"Sgx-Tcb-Info-Issuer-Chain": chain}, resp.Body)
	s := newStore(t, v.config(newClock(tdxSampleTime), &sleepRecorder{}))
	h, body, err := s.TDX().Get(urlTCB)
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(body, resp.Body) || len(h["Tcb-Info-Issuer-Chain"]) != 1 || h["Tcb-Info-Issuer-Chain"][0] != chain[0] {
		t.Errorf("v3 header not offered under the v4 name: %v", h)
	}
}
