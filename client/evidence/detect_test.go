package evidence

import (
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/attested-kms/attested-kms/attestation"
	"github.com/attested-kms/attested-kms/attestation/azurevtpm/guest"
	"github.com/attested-kms/attested-kms/attestation/azurevtpm/simulate"
	tdxsim "github.com/attested-kms/attested-kms/attestation/tdx/simulate"
)

func TestDetectNamesWhatWasTried(t *testing.T) {
	missing := filepath.Join(t.TempDir(), "tpmrm0")
	_, err := Detect(DetectOptions{TPMPath: missing, skipHardware: true})
	if err == nil || !strings.Contains(err.Error(), "azure vTPM") || !strings.Contains(err.Error(), missing) {
		t.Fatalf("Detect = %v, want an error naming the vTPM device tried", err)
	}
}

// The HCL report's hardware type decides the Azure evidence type.
func TestAzureProviderFollowsHCLReportType(t *testing.T) {
	pemBytes, err := os.ReadFile("../../test/fixtures/tdx/simulated/simulator.pem")
	if err != nil {
		t.Fatal(err)
	}
	intel, err := tdxsim.Load(pemBytes)
	if err != nil {
		t.Fatal(err)
	}
	quote := func(rd [64]byte) ([]byte, error) { return intel.Quote(tdxsim.QuoteFields{ReportData: rd}) }
	vm, err := simulate.NewVM(simulate.Options{TDXQuote: quote})
	if err != nil {
		t.Fatal(err)
	}
	raw, err := guest.ReadHCLReport(vm.TPM())
	vm.Close()
	if err != nil {
		t.Fatal(err)
	}
	p, err := azureProvider(raw, "/dev/tpmrm0", AzureVTPMOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if az, ok := p.(*AzureVTPM); !ok || az.platform != attestation.PlatformAzureTDXVTPM {
		t.Fatalf("provider %#v, want an azure-tdx-vtpm provider", p)
	}
	if _, err := azureProvider([]byte("not an HCL report"), "/dev/tpmrm0", AzureVTPMOptions{}); err == nil {
		t.Fatal("garbage accepted as an HCL report")
	}
}
