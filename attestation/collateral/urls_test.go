package collateral

import (
	"errors"
	"os"
	"path/filepath"
	"testing"

	"github.com/google/go-sev-guest/abi"
	"github.com/google/go-sev-guest/kds"
	"github.com/google/go-tdx-guest/pcs"
)

func TestPathFor(t *testing.T) {
	tests := []struct{ url, want string }{
		// The example the fixture engineers work from.
		{urlTCB, "api.trustedservices.intel.com/tdx/certification/v4/tcb@fmspc=50806f000000"},
		{urlPCKCRL, "api.trustedservices.intel.com/sgx/certification/v4/pckcrl@ca=platform,encoding=der"},
		{urlQEID, "api.trustedservices.intel.com/tdx/certification/v4/qe/identity"},
		{urlRootCRL, "certificates.trustedservices.intel.com/IntelSGXRootCA.der"},
		{urlMilanChain, "kdsintf.amd.com/vcek/v1/Milan/cert_chain"},
		{"https://kdsintf.amd.com/vlek/v1/Genoa/cert?blSPL=1&teeSPL=0&snpSPL=2&ucodeSPL=3",
			"kdsintf.amd.com/vlek/v1/Genoa/cert@blSPL=1,teeSPL=0,snpSPL=2,ucodeSPL=3"},
	}
	for _, tc := range tests {
		got, err := PathFor(tc.url)
		if err != nil || got != tc.want {
			t.Errorf("PathFor(%s) = %q, %v; want %q", tc.url, got, err, tc.want)
		}
	}
}

// TestLibraryURLsAccepted: every URL the libraries build is one the store
// fetches, with the kind that decides its freshness.
func TestLibraryURLsAccepted(t *testing.T) {
	hwid := make([]byte, abi.ChipIDSize)
	hwid[0] = 0xab
	tests := []struct {
		url  string
		kind kind
	}{
		{kds.VCEKCertURL("Milan", hwid, kds.TCBVersion(0x4400000000000502)), kindCert},
		{kds.VLEKCertURL("Genoa", kds.TCBVersion(0x1600000000000302)), kindCert},
		{kds.ProductCertChainURL(abi.VcekReportSigner, "Milan"), kindCertChain},
		{kds.ProductCertChainURL(abi.VlekReportSigner, "Genoa"), kindCertChain},
		{kds.CrlLinkByKey("Turin", abi.VcekReportSigner), kindCRL},
		{pcs.TcbInfoURL("90c06f000000"), kindTCBInfo},
		{pcs.QeIdentityURL(), kindQEIdentity},
		{pcs.PckCrlURL("processor"), kindCRL},
		{urlRootCRL, kindCRL},
		{"https://kdsintf.amd.com/vcek/v1/Turin/0011223344556677?fmcSPL=1&blSPL=2&teeSPL=0&snpSPL=3&ucodeSPL=4", kindCert},
	}
	for _, tc := range tests {
		d, err := parseDocURL(tc.url)
		if err != nil {
			t.Errorf("%s refused: %v", tc.url, err)
			continue
		}
		if d.kind != tc.kind || d.canonical != tc.url {
			t.Errorf("%s: kind %v canonical %s, want %v and unchanged", tc.url, d.kind, d.canonical, tc.kind)
		}
	}
}

func TestPathForRefusesEscapes(t *testing.T) {
	for _, u := range []string{
		"https://kdsintf.amd.com/vcek/v1/../../../etc/passwd",
		"https://kdsintf.amd.com/vcek/v1/Milan/..",
		"https://kdsintf.amd.com/vcek/v1/Milan/%2e%2e/x",
		"https://kdsintf.amd.com/vcek/v1/Milan/a%2fb",
		"https://kdsintf.amd.com/vcek/v1//crl",
		"https://kdsintf.amd.com/vcek/v1/Milan/.hidden",
		"https://kdsintf.amd.com/vcek/v1/Milan/crl.headers.json",
		"https://certificates.trustedservices.intel.com/",
		"https://api.trustedservices.intel.com/tdx/certification/v4/tcb?fmspc=../../x",
		"https://api.trustedservices.intel.com/tdx/certification/v4/tcb?fmspc=a/b",
		"https://api.trustedservices.intel.com/tdx/certification/v4/tcb?fmspc=a,b",
		"https://api.trustedservices.intel.com/tdx/certification/v4/tcb?fmspc",
		"https://api.trustedservices.intel.com/tdx/certification/v4/tcb?",
		"https://api.trustedservices.intel.com/tdx/certification/v4/tcb#frag",
		"/kdsintf.amd.com/vcek/v1/Milan/crl",
		"file:///etc/passwd",
		"",
	} {
		if p, err := PathFor(u); !errors.Is(err, ErrURLNotAllowed) {
			t.Errorf("PathFor(%q) = %q, %v; want ErrURLNotAllowed", u, p, err)
		}
	}
}

func TestWriteDocumentRefusesEscape(t *testing.T) {
	parent := t.TempDir()
	dir := filepath.Join(parent, "collateral")
	if err := WriteDocument(dir, "https://kdsintf.amd.com/vcek/v1/../../../../x", nil, []byte("x")); !errors.Is(err, ErrURLNotAllowed) {
		t.Fatalf("WriteDocument escaping: %v", err)
	}
	entries, _ := os.ReadDir(parent)
	if len(entries) != 0 {
		t.Errorf("refused write created %d entries", len(entries))
	}
	// A symbolic link inside the directory pointing out of it is not followed.
	if err := os.MkdirAll(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.Symlink(parent, filepath.Join(dir, HostAMDKDS)); err != nil {
		t.Skip("no symlinks:", err)
	}
	if err := WriteDocument(dir, urlMilanCRL, nil, []byte("x")); err == nil {
		t.Error("write through a symlink out of the directory succeeded")
	}
	if _, err := os.Stat(filepath.Join(parent, "vcek")); !errors.Is(err, os.ErrNotExist) {
		t.Error("write escaped through the symlink")
	}
}
