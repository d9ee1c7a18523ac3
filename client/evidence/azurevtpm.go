package evidence

import (
	"bytes"
	"context"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"strings"
	"time"

	"github.com/google/go-tpm/tpm2/transport"

	"github.com/attested-kms/attested-kms/attestation"
	"github.com/attested-kms/attested-kms/attestation/azurevtpm"
	"github.com/attested-kms/attested-kms/attestation/azurevtpm/guest"
	kmsv1 "github.com/attested-kms/attested-kms/proto/kms/v1"
)

// Defaults of AzureVTPMOptions.
const (
	DefaultTPMPath  = "/dev/tpmrm0"
	DefaultIMDSURL  = "http://169.254.169.254"
	thimPath        = "/metadata/THIM/amd/certification"
	tdQuotePath     = "/acc/tdquote"
	maxIMDSResponse = 256 << 10
	// The paravisor makes a new HCL report when the guest reads it after
	// writing user data, which Microsoft's tools allow up to ~3 s for.
	defaultRefreshAttempts = 20
	defaultRefreshInterval = 250 * time.Millisecond
)

// AzureVTPMOptions configure an AzureVTPM provider.
type AzureVTPMOptions struct {
	// Platform is attestation.PlatformAzureSNPVTPM or PlatformAzureTDXVTPM.
	Platform attestation.Platform
	// TPM is the vTPM to use. nil opens TPMPath for each Evidence call.
	TPM transport.TPM
	// TPMPath defaults to DefaultTPMPath (the kernel's resource manager).
	TPMPath string
	// IMDSURL is the base URL of Azure's instance metadata service;
	// DefaultIMDSURL unless set (tests).
	IMDSURL string
	// HTTPClient talks to IMDS. nil means a client without proxy (IMDS
	// must be reached directly) and a 30 s timeout.
	HTTPClient *http.Client
	// RefreshAttempts bounds the HCL report reads while waiting for it to
	// carry the new user data (default 20); RefreshInterval is the pause
	// between them (default 250 ms; negative means none).
	RefreshAttempts int
	RefreshInterval time.Duration
}

// AzureVTPM obtains evidence on Azure confidential VMs (and AKS
// confidential-VM node pools) from the paravisor's vTPM: it writes the
// binding as HCL user data, reads the refreshed HCL report, quotes PCRs
// 0-23 with the attestation key over the binding, and fetches the VCEK
// (SEV-SNP, from IMDS's THIM endpoint) or the TD quote of the HCL
// report's TD report (TDX, from IMDS's quote endpoint). Calls are
// serialized by the TPM; the provider holds no state between them.
type AzureVTPM struct {
	platform attestation.Platform
	tpm      transport.TPM
	tpmPath  string
	imds     string
	http     *http.Client
	attempts int
	interval time.Duration
}

// NewAzureVTPM returns a provider for opts.
func NewAzureVTPM(opts AzureVTPMOptions) (*AzureVTPM, error) {
	if opts.Platform != attestation.PlatformAzureSNPVTPM && opts.Platform != attestation.PlatformAzureTDXVTPM {
		return nil, fmt.Errorf("evidence: Azure vTPM platform %q, want %s or %s", opts.Platform, attestation.PlatformAzureSNPVTPM, attestation.PlatformAzureTDXVTPM)
	}
	a := &AzureVTPM{
		platform: opts.Platform,
		tpm:      opts.TPM,
		tpmPath:  opts.TPMPath,
		imds:     strings.TrimSuffix(opts.IMDSURL, "/"),
		http:     opts.HTTPClient,
		attempts: opts.RefreshAttempts,
		interval: opts.RefreshInterval,
	}
	if a.tpmPath == "" {
		a.tpmPath = DefaultTPMPath
	}
	if a.imds == "" {
		a.imds = DefaultIMDSURL
	}
	if a.http == nil {
		a.http = &http.Client{Timeout: 30 * time.Second, Transport: &http.Transport{Proxy: nil}}
	}
	if a.attempts <= 0 {
		a.attempts = defaultRefreshAttempts
	}
	if a.interval == 0 {
		a.interval = defaultRefreshInterval
	}
	return a, nil
}

// Evidence implements client.EvidenceProvider.
func (a *AzureVTPM) Evidence(ctx context.Context, reportData [64]byte) (*kmsv1.Evidence, error) {
	t := a.tpm
	if t == nil {
		// The kernel's TPM character device speaks the TPM command
		// protocol directly; the resource manager (tpmrm0) lets several
		// processes share it.
		f, err := os.OpenFile(a.tpmPath, os.O_RDWR, 0)
		if err != nil {
			return nil, fmt.Errorf("evidence: open vTPM %s: %w", a.tpmPath, err)
		}
		defer f.Close()
		t = transport.FromReadWriter(f)
	}
	if err := guest.WriteUserData(t, reportData); err != nil {
		return nil, fmt.Errorf("evidence: write HCL user data: %w", err)
	}
	report, hcl, err := a.freshReport(ctx, t, reportData)
	if err != nil {
		return nil, err
	}
	quote, err := guest.Quote(t, reportData[:])
	if err != nil {
		return nil, fmt.Errorf("evidence: vTPM quote: %w", err)
	}
	ev := &kmsv1.Evidence{
		Type:     string(a.platform),
		Report:   report,
		TpmQuote: &kmsv1.TPMQuote{Message: quote.Message, Signature: quote.Signature, Pcrs: quote.PCRs},
	}
	switch a.platform {
	case attestation.PlatformAzureSNPVTPM:
		if ev.Certificates, err = a.vcek(ctx); err != nil {
			return nil, err
		}
	case attestation.PlatformAzureTDXVTPM:
		if ev.TdQuote, err = a.tdQuote(ctx, hcl.HardwareReport); err != nil {
			return nil, err
		}
	}
	return ev, nil
}

// freshReport reads the HCL report until its user-data is reportData.
func (a *AzureVTPM) freshReport(ctx context.Context, t transport.TPM, reportData [64]byte) ([]byte, *azurevtpm.HCLReport, error) {
	want := azurevtpm.ReportTypeSNP
	if a.platform == attestation.PlatformAzureTDXVTPM {
		want = azurevtpm.ReportTypeTDX
	}
	for attempt := 1; ; attempt++ {
		report, err := guest.ReadHCLReport(t)
		if err != nil {
			return nil, nil, fmt.Errorf("evidence: read HCL report: %w", err)
		}
		hcl, err := azurevtpm.ParseHCLReport(report)
		if err != nil {
			return nil, nil, fmt.Errorf("evidence: %w", err)
		}
		if hcl.ReportType != want {
			return nil, nil, fmt.Errorf("evidence: the vTPM's HCL report holds a %v report; this is not an %s VM", hcl.ReportType, a.platform)
		}
		rd, err := azurevtpm.ParseRuntimeData(hcl.RuntimeData)
		if err != nil {
			return nil, nil, fmt.Errorf("evidence: %w", err)
		}
		userData, err := rd.UserDataBytes()
		if err != nil {
			return nil, nil, fmt.Errorf("evidence: %w", err)
		}
		if bytes.Equal(userData, reportData[:]) {
			return report, hcl, nil
		}
		if attempt >= a.attempts {
			return nil, nil, fmt.Errorf("evidence: the HCL report did not pick up the user data after %d reads", attempt)
		}
		if a.interval > 0 {
			timer := time.NewTimer(a.interval)
			select {
			case <-ctx.Done():
				timer.Stop()
				return nil, nil, fmt.Errorf("evidence: waiting for the HCL report: %w", ctx.Err())
			case <-timer.C:
			}
		}
	}
}

// vcek fetches the VCEK and its chain (PEM) from IMDS's THIM endpoint.
func (a *AzureVTPM) vcek(ctx context.Context) ([]byte, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, a.imds+thimPath, nil)
	if err != nil {
		return nil, fmt.Errorf("evidence: THIM request: %w", err)
	}
	req.Header.Set("Metadata", "true")
	var rsp struct {
		VCEKCert         string `json:"vcekCert"`
		CertificateChain string `json:"certificateChain"`
	}
	if err := a.do(req, &rsp); err != nil {
		return nil, fmt.Errorf("evidence: VCEK from Azure IMDS (THIM): %w", err)
	}
	if !strings.Contains(rsp.VCEKCert, "-----BEGIN CERTIFICATE-----") {
		return nil, errors.New("evidence: VCEK from Azure IMDS (THIM): no vcekCert PEM in the answer")
	}
	// The KMS uses the first certificate; the chain rides along for tools.
	return []byte(strings.TrimSpace(rsp.VCEKCert) + "\n" + strings.TrimSpace(rsp.CertificateChain) + "\n"), nil
}

// tdQuote asks IMDS's quote endpoint to turn the TD report into a TD quote.
func (a *AzureVTPM) tdQuote(ctx context.Context, tdReport []byte) ([]byte, error) {
	body, err := json.Marshal(map[string]string{"report": base64.RawURLEncoding.EncodeToString(tdReport)})
	if err != nil {
		return nil, err
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, a.imds+tdQuotePath, bytes.NewReader(body))
	if err != nil {
		return nil, fmt.Errorf("evidence: TD quote request: %w", err)
	}
	req.Header.Set("Content-Type", "application/json")
	var rsp struct {
		Quote string `json:"quote"`
	}
	if err := a.do(req, &rsp); err != nil {
		return nil, fmt.Errorf("evidence: TD quote from Azure IMDS: %w", err)
	}
	quote, err := base64.RawURLEncoding.DecodeString(strings.TrimRight(rsp.Quote, "="))
	if err != nil || len(quote) == 0 {
		return nil, fmt.Errorf("evidence: TD quote from Azure IMDS: not base64url (%v)", err)
	}
	return quote, nil
}

// do sends req and decodes a bounded JSON answer into v.
func (a *AzureVTPM) do(req *http.Request, v any) error {
	rsp, err := a.http.Do(req)
	if err != nil {
		return err
	}
	defer rsp.Body.Close()
	b, err := io.ReadAll(io.LimitReader(rsp.Body, maxIMDSResponse+1))
	if err != nil {
		return err
	}
	if rsp.StatusCode != http.StatusOK {
		return fmt.Errorf("HTTP %s", rsp.Status)
	}
	if len(b) > maxIMDSResponse {
		return fmt.Errorf("answer exceeds %d bytes", maxIMDSResponse)
	}
	if err := json.Unmarshal(b, v); err != nil {
		return fmt.Errorf("answer is not the expected JSON: %w", err)
	}
	return nil
}
