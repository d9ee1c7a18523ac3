package evidence

import (
	"context"
	"errors"
	"fmt"
	"os"

	"github.com/google/go-tpm/tpm2/transport"

	"github.com/attested-kms/attested-kms/attestation"
	"github.com/attested-kms/attested-kms/attestation/azurevtpm"
	"github.com/attested-kms/attested-kms/attestation/azurevtpm/guest"
	kmsv1 "github.com/attested-kms/attested-kms/proto/kms/v1"
)

// Provider produces evidence binding reportData; client.EvidenceProvider
// has the same method set.
type Provider interface {
	Evidence(ctx context.Context, reportData [64]byte) (*kmsv1.Evidence, error)
}

// DetectOptions point detection at other devices (tests, unusual hosts).
type DetectOptions struct {
	// TPMPath is the vTPM device; DefaultTPMPath when empty.
	TPMPath string
	// Azure carries the IMDS settings for an Azure vTPM provider; its
	// Platform and TPMPath are filled in by Detect.
	Azure AzureVTPMOptions
	// skipHardware leaves out the TDX and SEV-SNP guest interfaces, so
	// tests do not depend on the machine they run on.
	skipHardware bool
}

// Detect finds the evidence source of the machine it runs on. Azure
// confidential VMs come first: there the HCL owns the hardware interface
// and the guest sees a vTPM holding an HCL report, even though it is an
// SNP or TDX guest underneath. Then bare TDX, then bare SEV-SNP. The error
// names every source tried and why it did not apply.
func Detect(opts DetectOptions) (Provider, error) {
	var tried []error
	az, err := detectAzure(opts)
	if err == nil {
		return az, nil
	}
	tried = append(tried, err)
	if !opts.skipHardware {
		tdx, err := NewTDX()
		if err == nil {
			return tdx, nil
		}
		tried = append(tried, err)
		snp, err := NewSEVSNP()
		if err == nil {
			return snp, nil
		}
		tried = append(tried, err)
	}
	return nil, fmt.Errorf("evidence: no attestation source found: %w", errors.Join(tried...))
}

// detectAzure reads the HCL report from the vTPM to learn whether this is
// an Azure CVM and of which hardware.
func detectAzure(opts DetectOptions) (Provider, error) {
	path := opts.TPMPath
	if path == "" {
		path = DefaultTPMPath
	}
	f, err := os.OpenFile(path, os.O_RDWR, 0)
	if err != nil {
		return nil, fmt.Errorf("azure vTPM: %w", err)
	}
	defer f.Close()
	raw, err := guest.ReadHCLReport(transport.FromReadWriter(f))
	if err != nil {
		return nil, fmt.Errorf("azure vTPM: %s has no HCL report at NV index %#x: %w", path, guest.HCLReportIndex, err)
	}
	return azureProvider(raw, path, opts.Azure)
}

func azureProvider(hclReport []byte, path string, o AzureVTPMOptions) (Provider, error) {
	hcl, err := azurevtpm.ParseHCLReport(hclReport)
	if err != nil {
		return nil, fmt.Errorf("azure vTPM: %w", err)
	}
	switch hcl.ReportType {
	case azurevtpm.ReportTypeSNP:
		o.Platform = attestation.PlatformAzureSNPVTPM
	case azurevtpm.ReportTypeTDX:
		o.Platform = attestation.PlatformAzureTDXVTPM
	default:
		return nil, fmt.Errorf("azure vTPM: HCL report of unknown hardware type %v", hcl.ReportType)
	}
	o.TPMPath = path
	return NewAzureVTPM(o)
}
