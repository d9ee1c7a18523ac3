package evidence_test

import (
	"bytes"
	"context"
	"crypto/rand"
	"crypto/sha512"
	"encoding/base64"
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"

	"github.com/google/go-sev-guest/verify/trust"
	"github.com/google/go-tdx-guest/testing/testdata"

	"github.com/attested-kms/attested-kms/attestation"
	"github.com/attested-kms/attested-kms/attestation/azurevtpm"
	"github.com/attested-kms/attested-kms/attestation/azurevtpm/simulate"
	"github.com/attested-kms/attested-kms/attestation/sevsnp"
	snpsim "github.com/attested-kms/attested-kms/attestation/sevsnp/simulate"
	"github.com/attested-kms/attested-kms/client/evidence"
	kmsv1 "github.com/attested-kms/attested-kms/proto/kms/v1"
)

// imds serves Azure IMDS's THIM and TD quote endpoints for vm, checking
// the request shapes the real service requires.
func imds(t *testing.T, vm *simulate.VM) *httptest.Server {
	t.Helper()
	mux := http.NewServeMux()
	mux.HandleFunc("GET /metadata/THIM/amd/certification", func(w http.ResponseWriter, r *http.Request) {
		if r.Header.Get("Metadata") != "true" {
			http.Error(w, "Required metadata header not specified", http.StatusBadRequest)
			return
		}
		b, err := vm.THIMResponse()
		if err != nil {
			http.Error(w, err.Error(), http.StatusNotFound)
			return
		}
		_, _ = w.Write(b)
	})
	mux.HandleFunc("POST /acc/tdquote", func(w http.ResponseWriter, r *http.Request) {
		var req struct {
			Report string `json:"report"`
		}
		dec := json.NewDecoder(r.Body)
		dec.DisallowUnknownFields()
		if err := dec.Decode(&req); err != nil {
			http.Error(w, err.Error(), http.StatusBadRequest)
			return
		}
		report, err := base64.RawURLEncoding.DecodeString(req.Report)
		if err != nil {
			http.Error(w, "report is not unpadded base64url", http.StatusBadRequest)
			return
		}
		quote, err := vm.TDQuote(report)
		if err != nil {
			http.Error(w, err.Error(), http.StatusBadRequest)
			return
		}
		_ = json.NewEncoder(w).Encode(map[string]string{"quote": base64.RawURLEncoding.EncodeToString(quote)})
	})
	srv := httptest.NewServer(mux)
	t.Cleanup(srv.Close)
	return srv
}

func toEvidence(ev *kmsv1.Evidence) *attestation.Evidence {
	q := ev.GetTpmQuote()
	return &attestation.Evidence{
		Type:         attestation.Platform(ev.GetType()),
		Report:       ev.GetReport(),
		Certificates: ev.GetCertificates(),
		TDQuote:      ev.GetTdQuote(),
		TPMQuote:     &attestation.TPMQuote{Message: q.GetMessage(), Signature: q.GetSignature(), PCRs: q.GetPcrs()},
	}
}

func TestAzureVTPMSNPEndToEnd(t *testing.T) {
	signer, err := snpsim.NewSigner(rand.Reader, sevsnp.ProductGenoa)
	if err != nil {
		t.Fatal(err)
	}
	// The paravisor needs a few reads to pick up the user data.
	vm, err := simulate.NewVM(simulate.Options{SNP: signer, RefreshLag: 2})
	if err != nil {
		t.Fatal(err)
	}
	defer vm.Close()
	srv := imds(t, vm)
	p, err := evidence.NewAzureVTPM(evidence.AzureVTPMOptions{
		Platform: attestation.PlatformAzureSNPVTPM, TPM: vm.TPM(), IMDSURL: srv.URL, RefreshInterval: -1,
	})
	if err != nil {
		t.Fatal(err)
	}
	snp, err := sevsnp.NewVerifier(sevsnp.Options{Roots: map[string][]*trust.AMDRootCerts{}, TestRootsPEM: signer.RootsPEM()})
	if err != nil {
		t.Fatal(err)
	}
	v, err := azurevtpm.NewVerifier(azurevtpm.Options{SNP: snp})
	if err != nil {
		t.Fatal(err)
	}
	// Two releases in a row: the second must not reuse the first report.
	for _, name := range []string{"first", "second"} {
		binding := sha512.Sum512([]byte(name))
		ev, err := p.Evidence(context.Background(), binding)
		if err != nil {
			t.Fatalf("%s: Evidence: %v", name, err)
		}
		if ev.GetType() != string(attestation.PlatformAzureSNPVTPM) || len(ev.GetTpmQuote().GetPcrs()) != 24 ||
			!bytes.HasPrefix(ev.GetCertificates(), []byte("-----BEGIN CERTIFICATE-----")) {
			t.Fatalf("%s: evidence shape: type %q, %d PCRs", name, ev.GetType(), len(ev.GetTpmQuote().GetPcrs()))
		}
		claims, err := v.Verify(context.Background(), toEvidence(ev))
		if err != nil {
			t.Fatalf("%s: Verify: %v", name, err)
		}
		if !bytes.Equal(claims.ReportData, binding[:]) {
			t.Errorf("%s: claims carry other report data", name)
		}
	}
}

// fakeTDX turns a TD quote body into claims without checking its
// signature (the TDX verifier is tested in its own package).
type fakeTDX struct{}

func (fakeTDX) VerifyQuote(_ context.Context, quote []byte) (*attestation.Claims, error) {
	r, err := simulate.TDReportFromQuote(quote)
	if err != nil {
		return nil, attestation.Errorf(attestation.ReasonMalformed, err)
	}
	var rtmrs []attestation.HexBytes
	for _, m := range r.RTMRs {
		rtmrs = append(rtmrs, m)
	}
	return &attestation.Claims{Platform: attestation.PlatformTDX, ReportData: r.ReportData, Revocation: attestation.RevocationChecked,
		TDX: &attestation.TDXClaims{
			MRTD: r.MRTD, RTMRs: rtmrs, MRConfigID: r.MRConfigID, MROwner: r.MROwner, MROwnerConfig: r.MROwnerConfig,
			MRSeam: r.MRSeam, MRSignerSeam: r.MRSignerSeam, TDAttributes: r.TDAttributes, XFAM: r.XFAM,
			TEETCBSVN: r.TEETCBSVN, ReportData: r.ReportData,
		}}, nil
}

// fakeQuote is a genuine TD quote (go-tdx-guest test data) with the
// report data replaced: the TDX quote simulator lives elsewhere.
func fakeQuote(reportData [64]byte) ([]byte, error) {
	q := bytes.Clone(testdata.RawQuote)
	copy(q[48+584-64:], reportData[:])
	return q, nil
}

func TestAzureVTPMTDXEndToEnd(t *testing.T) {
	vm, err := simulate.NewVM(simulate.Options{TDXQuote: fakeQuote, RefreshLag: 1})
	if err != nil {
		t.Fatal(err)
	}
	defer vm.Close()
	srv := imds(t, vm)
	p, err := evidence.NewAzureVTPM(evidence.AzureVTPMOptions{
		Platform: attestation.PlatformAzureTDXVTPM, TPM: vm.TPM(), IMDSURL: srv.URL, RefreshInterval: -1,
	})
	if err != nil {
		t.Fatal(err)
	}
	v, err := azurevtpm.NewVerifier(azurevtpm.Options{TDX: fakeTDX{}})
	if err != nil {
		t.Fatal(err)
	}
	binding := sha512.Sum512([]byte("tdx"))
	ev, err := p.Evidence(context.Background(), binding)
	if err != nil {
		t.Fatalf("Evidence: %v", err)
	}
	if len(ev.GetTdQuote()) == 0 || len(ev.GetCertificates()) != 0 {
		t.Fatal("TDX evidence must carry the TD quote and no certificates")
	}
	claims, err := v.Verify(context.Background(), toEvidence(ev))
	if err != nil {
		t.Fatalf("Verify: %v", err)
	}
	if !bytes.Equal(claims.ReportData, binding[:]) || claims.TDX == nil {
		t.Error("claims do not carry the binding and TDX claims")
	}

	// The wrong platform is detected from the HCL report.
	wrong, err := evidence.NewAzureVTPM(evidence.AzureVTPMOptions{
		Platform: attestation.PlatformAzureSNPVTPM, TPM: vm.TPM(), IMDSURL: srv.URL, RefreshInterval: -1,
	})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := wrong.Evidence(context.Background(), binding); err == nil || !strings.Contains(err.Error(), "not an azure-sev-snp-vtpm VM") {
		t.Errorf("SNP provider on a TDX VM: %v", err)
	}
}

func TestAzureVTPMFailures(t *testing.T) {
	signer, err := snpsim.NewSigner(rand.Reader, sevsnp.ProductMilan)
	if err != nil {
		t.Fatal(err)
	}
	vm, err := simulate.NewVM(simulate.Options{SNP: signer, RefreshLag: 5})
	if err != nil {
		t.Fatal(err)
	}
	defer vm.Close()
	srv := imds(t, vm)
	binding := sha512.Sum512([]byte("x"))

	// The report never catches up within the bounded reads.
	p, err := evidence.NewAzureVTPM(evidence.AzureVTPMOptions{
		Platform: attestation.PlatformAzureSNPVTPM, TPM: vm.TPM(), IMDSURL: srv.URL, RefreshAttempts: 3, RefreshInterval: -1,
	})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := p.Evidence(context.Background(), binding); err == nil || !strings.Contains(err.Error(), "did not pick up the user data after 3 reads") {
		t.Errorf("stale report: %v", err)
	}

	// IMDS failing.
	down := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
		http.Error(w, "unavailable", http.StatusServiceUnavailable)
	}))
	defer down.Close()
	p, err = evidence.NewAzureVTPM(evidence.AzureVTPMOptions{
		Platform: attestation.PlatformAzureSNPVTPM, TPM: vm.TPM(), IMDSURL: down.URL, RefreshInterval: -1,
	})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := p.Evidence(context.Background(), binding); err == nil || !strings.Contains(err.Error(), "503") {
		t.Errorf("IMDS down: %v", err)
	}

	// No vTPM device (not an Azure CVM, or no access).
	p, err = evidence.NewAzureVTPM(evidence.AzureVTPMOptions{
		Platform: attestation.PlatformAzureSNPVTPM, TPMPath: t.TempDir() + "/tpmrm0", IMDSURL: srv.URL,
	})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := p.Evidence(context.Background(), binding); err == nil || !strings.Contains(err.Error(), "open vTPM") {
		t.Errorf("missing vTPM: %v", err)
	}

	if _, err := evidence.NewAzureVTPM(evidence.AzureVTPMOptions{Platform: attestation.PlatformSEVSNP}); err == nil {
		t.Error("bare sev-snp accepted as an Azure vTPM platform")
	}
}
