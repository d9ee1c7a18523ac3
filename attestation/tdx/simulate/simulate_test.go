package simulate

import (
	"bytes"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/x509"
	"encoding/hex"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/attested-kms/attested-kms/attestation/tdx"
	"github.com/google/go-tdx-guest/pcs"
)

// RFC 6979 appendix A.2.5, P-256 with SHA-256, message "sample".
func TestRFC6979Vector(t *testing.T) {
	x, _ := hex.DecodeString("C9AFA9D845BA75166B5C215767B1D6934E50C3DB36E89B127B8A622B120F6721")
	priv, err := ecdsa.ParseRawPrivateKey(elliptic.P256(), x)
	if err != nil {
		t.Fatal(err)
	}
	s, err := newSigner(priv)
	if err != nil {
		t.Fatal(err)
	}
	sig, err := s.signRaw([]byte("sample"))
	if err != nil {
		t.Fatal(err)
	}
	want := "efd48b2aacb6a8fd1140dd9cd45e81d69d2c877b56aaf991c34d0ea84eaf3716" +
		"f7cb1c942d657c41d436c7a1b6e29f65f3e900dbb9aff4064dc4ab2f843acda8"
	if got := hex.EncodeToString(sig); got != want {
		t.Errorf("signature %s, want %s", got, want)
	}
}

func TestMarshalLoadRoundTrip(t *testing.T) {
	seed := bytes.Repeat([]byte{7}, 32*len(roles))
	a, err := New(bytes.NewReader(seed))
	if err != nil {
		t.Fatal(err)
	}
	b, err := New(bytes.NewReader(seed))
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(a.RootsPEM(), b.RootsPEM()) {
		t.Error("same seed, different roots")
	}
	p, err := a.MarshalPEM()
	if err != nil {
		t.Fatal(err)
	}
	c, err := Load(p)
	if err != nil {
		t.Fatal(err)
	}
	qa, err := a.Quote(QuoteFields{Version: 5})
	if err != nil {
		t.Fatal(err)
	}
	qc, err := c.Quote(QuoteFields{Version: 5})
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(qa, qc) {
		t.Error("loaded simulator makes different quotes")
	}
	if _, err := Load(p[:len(p)/2]); err == nil {
		t.Error("truncated key file loaded")
	}
	if _, err := Load([]byte("-----BEGIN CERTIFICATE-----\nAA==\n-----END CERTIFICATE-----\n")); err == nil {
		t.Error("foreign PEM loaded")
	}
	if _, err := a.Quote(QuoteFields{Version: 3}); err == nil {
		t.Error("version 3 quote built")
	}
}

func TestCertificatesLookLikeIntels(t *testing.T) {
	i, err := New(bytes.NewReader(bytes.Repeat([]byte{9}, 32*len(roles))))
	if err != nil {
		t.Fatal(err)
	}
	pck, err := i.PCKCertificate(PCK{FMSPC: "00112233aabb", PCESVN: 11, CPUSVN: []byte{1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15, 16}})
	if err != nil {
		t.Fatal(err)
	}
	ext, err := pcs.PckCertificateExtensions(pck)
	if err != nil {
		t.Fatalf("go-tdx-guest cannot read the SGX extension: %v", err)
	}
	if ext.FMSPC != "00112233aabb" || ext.TCB.PCESvn != 11 || ext.TCB.CPUSvnComponents[15] != 16 || ext.PCEID != "0000" || len(ext.PPID) != 32 {
		t.Errorf("extensions %+v", ext)
	}
	for _, c := range []struct {
		name string
		cert *x509.Certificate
	}{{"Intel SGX Root CA", i.Root()}, {"Intel SGX PCK Platform CA", i.PCKCA()}, {"Intel SGX TCB Signing", i.TCBSigning()}, {"Intel SGX PCK Certificate", pck}} {
		if c.cert.Subject.CommonName != c.name || !tdx.IsTestCertificate(c.cert) {
			t.Errorf("%s: subject %v", c.name, c.cert.Subject)
		}
	}
	if err := pck.CheckSignatureFrom(i.PCKCA()); err != nil {
		t.Error(err)
	}
}

func TestCollateralPath(t *testing.T) {
	for u, want := range map[string]string{
		"https://api.trustedservices.intel.com/tdx/certification/v4/tcb?fmspc=50806f000000":          "api.trustedservices.intel.com/tdx/certification/v4/tcb@fmspc=50806f000000",
		"https://api.trustedservices.intel.com/sgx/certification/v4/pckcrl?ca=platform&encoding=der": "api.trustedservices.intel.com/sgx/certification/v4/pckcrl@ca=platform,encoding=der",
		"https://certificates.trustedservices.intel.com/IntelSGXRootCA.der":                          "certificates.trustedservices.intel.com/IntelSGXRootCA.der",
	} {
		got, err := CollateralPath(u)
		if err != nil || filepath.ToSlash(got) != want {
			t.Errorf("CollateralPath(%s) = %q, %v", u, got, err)
		}
	}
	for _, u := range []string{"https://x/../../etc/passwd", "https://x/a?b=../c", "relative", "https://h"} {
		if p, err := CollateralPath(u); err == nil && strings.Contains(p, "..") {
			t.Errorf("CollateralPath(%q) = %q escapes the directory", u, p)
		}
	}
}

// TestFixturesAreReproducible regenerates the committed fixtures from the
// committed simulator keys and compares byte for byte.
func TestFixturesAreReproducible(t *testing.T) {
	committed := filepath.Join("..", "..", "..", "test", "fixtures", "tdx")
	keys, err := os.ReadFile(filepath.Join(committed, "simulated", SimulatorKeyFile))
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	if err := os.MkdirAll(filepath.Join(dir, "simulated"), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, "simulated", SimulatorKeyFile), keys, 0o600); err != nil {
		t.Fatal(err)
	}
	if err := Generate(dir); err != nil {
		t.Fatal(err)
	}
	n := 0
	err = filepath.WalkDir(dir, func(p string, d fs.DirEntry, err error) error {
		if err != nil || d.IsDir() {
			return err
		}
		rel, _ := filepath.Rel(dir, p)
		got, _ := os.ReadFile(p)
		want, err := os.ReadFile(filepath.Join(committed, rel))
		if err != nil {
			t.Errorf("%s: generated but not committed: %v", rel, err)
			return nil
		}
		if !bytes.Equal(got, want) {
			t.Errorf("%s differs from the committed fixture", rel)
		}
		n++
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	if n < 20 {
		t.Errorf("only %d files generated", n)
	}
}
