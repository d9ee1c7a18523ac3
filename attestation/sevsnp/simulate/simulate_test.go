package simulate_test

import (
	"bytes"
	"context"
	"crypto/rand"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/attested-kms/attested-kms/attestation"
	"github.com/attested-kms/attested-kms/attestation/sevsnp"
	"github.com/attested-kms/attested-kms/attestation/sevsnp/simulate"
	"github.com/google/go-sev-guest/verify/trust"
)

// TestNewSignerPersistence is the `make demo` flow: one process creates
// the chain and writes it out, another loads it and signs, and the KMS
// trusts RootsPEM. It generates two RSA-4096 keys, so it takes a second or two.
func TestNewSignerPersistence(t *testing.T) {
	s, err := simulate.NewSigner(rand.Reader, sevsnp.ProductMilan)
	if err != nil {
		t.Fatalf("NewSigner: %v", err)
	}
	if !sevsnp.IsTestCertificate(s.ARK()) || !sevsnp.IsTestCertificate(s.ASK()) {
		t.Error("simulated ARK/ASK lack the test marker")
	}
	pemBytes, err := s.MarshalPEM()
	if err != nil {
		t.Fatalf("MarshalPEM: %v", err)
	}
	loaded, err := simulate.LoadSigner(pemBytes)
	if err != nil {
		t.Fatalf("LoadSigner: %v", err)
	}
	if !bytes.Equal(loaded.RootsPEM(), s.RootsPEM()) || !bytes.Equal(loaded.ChipID(), s.ChipID()) || loaded.ProductLine() != "Milan" {
		t.Fatal("loaded signer differs from the saved one")
	}
	// The roots are in KDS cert_chain form, which go-sev-guest parses too.
	if err := new(trust.AMDRootCerts).FromKDSCertBytes(s.RootsPEM()); err != nil {
		t.Errorf("RootsPEM is not a KDS cert_chain: %v", err)
	}

	var f simulate.ReportFields
	copy(f.ReportData[:], "from the other process")
	f.TCB = attestation.TCBParts{Bootloader: 4, SNP: 22, Microcode: 213}
	report, table, err := loaded.Sign(f)
	if err != nil {
		t.Fatalf("Sign: %v", err)
	}
	v, err := sevsnp.NewVerifier(sevsnp.Options{TestRootsPEM: s.RootsPEM()})
	if err != nil {
		t.Fatal(err)
	}
	claims, err := v.VerifyReport(context.Background(), report, table)
	if err != nil {
		t.Fatalf("Verify: %v", err)
	}
	if !bytes.Equal(claims.ReportData, f.ReportData[:]) || claims.SEVSNP.ReportedTCB != f.TCB || claims.SEVSNP.Policy != simulate.DefaultPolicy {
		t.Errorf("claims %+v", claims.SEVSNP)
	}
}

func TestLoadSignerRejects(t *testing.T) {
	good, err := os.ReadFile(filepath.Join("..", "..", "..", "test", "fixtures", "sevsnp", "simulator-milan.pem"))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := simulate.LoadSigner(good); err != nil {
		t.Fatalf("LoadSigner(fixture): %v", err)
	}
	noMeta := good[bytes.Index(good, []byte("-----BEGIN CERTIFICATE")):]
	for name, b := range map[string][]byte{
		"empty":          nil,
		"garbage":        []byte("garbage"),
		"no meta block":  noMeta,
		"genuine roots":  append([]byte(nil), trust.AskArkMilanVcekBytes...),
		"roots only":     []byte(strings.Split(string(good), "-----BEGIN PRIVATE KEY")[0]),
		"unknown line":   bytes.Replace(good, []byte("Product-Line: Milan"), []byte("Product-Line: Naples"), 1),
		"bad chip id":    bytes.Replace(good, []byte("Chip-Id: "), []byte("Chip-Id: zz"), 1),
		"duplicate keys": append(bytes.Clone(good), good[bytes.Index(good, []byte("-----BEGIN PRIVATE KEY")):]...),
	} {
		if _, err := simulate.LoadSigner(b); err == nil {
			t.Errorf("%s: LoadSigner succeeded", name)
		}
	}
}

func TestSignRejectsBadFields(t *testing.T) {
	s := loadFixture(t)
	for name, f := range map[string]simulate.ReportFields{
		"policy without bit 17": {Policy: 1 << 16},
		"VMPL 4":                {VMPL: 4},
		"Milan TCB with FMC":    {TCB: attestation.TCBParts{FMC: 1}},
		"SNP level over 127":    {TCB: attestation.TCBParts{SNP: 128}},
	} {
		if _, _, err := s.Sign(f); err == nil {
			t.Errorf("%s: Sign succeeded", name)
		}
	}
}

func TestCRL(t *testing.T) {
	s := loadFixture(t)
	now := time.Now()
	url, der, err := s.CRL(now, true)
	if err != nil {
		t.Fatal(err)
	}
	if !strings.HasSuffix(url, ".invalid/vcek/v1/Milan/crl") || url != s.ASK().CRLDistributionPoints[0] {
		t.Errorf("CRL URL %q", url)
	}
	if len(der) == 0 {
		t.Error("empty CRL")
	}
}

func loadFixture(t *testing.T) *simulate.Signer {
	t.Helper()
	b, err := os.ReadFile(filepath.Join("..", "..", "..", "test", "fixtures", "sevsnp", "simulator-milan.pem"))
	if err != nil {
		t.Fatal(err)
	}
	s, err := simulate.LoadSigner(b)
	if err != nil {
		t.Fatal(err)
	}
	return s
}
