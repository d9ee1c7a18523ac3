package simulate_test

import (
	"bytes"
	"crypto/sha512"
	"encoding/hex"
	"strings"
	"testing"

	"github.com/google/go-tdx-guest/testing/testdata"

	"github.com/attested-kms/attested-kms/attestation/azurevtpm"
	"github.com/attested-kms/attested-kms/attestation/azurevtpm/guest"
	"github.com/attested-kms/attested-kms/attestation/azurevtpm/simulate"
)

func quote(reportData [64]byte) ([]byte, error) {
	q := bytes.Clone(testdata.RawQuote)
	copy(q[48+584-64:], reportData[:])
	return q, nil
}

func userDataOf(t *testing.T, report []byte) string {
	t.Helper()
	hcl, err := azurevtpm.ParseHCLReport(report)
	if err != nil {
		t.Fatal(err)
	}
	rd, err := azurevtpm.ParseRuntimeData(hcl.RuntimeData)
	if err != nil {
		t.Fatal(err)
	}
	return rd.UserData
}

// The guest's TPM behaves like the paravisor's: a user-data write shows
// in the HCL report only after RefreshLag reads.
func TestGuestTPMRefresh(t *testing.T) {
	vm, err := simulate.NewVM(simulate.Options{TDXQuote: quote, RefreshLag: 2})
	if err != nil {
		t.Fatal(err)
	}
	defer vm.Close()
	tpm := vm.TPM()
	boot, err := guest.ReadHCLReport(tpm)
	if err != nil {
		t.Fatal(err)
	}
	if got := userDataOf(t, boot); got != "" {
		t.Fatalf("boot report has user-data %q", got)
	}
	data := sha512.Sum512([]byte("data"))
	if err := guest.WriteUserData(tpm, data); err != nil {
		t.Fatal(err)
	}
	for i := range 2 {
		r, err := guest.ReadHCLReport(tpm)
		if err != nil {
			t.Fatal(err)
		}
		if userDataOf(t, r) != "" {
			t.Fatalf("read %d: report refreshed before the lag passed", i)
		}
	}
	r, err := guest.ReadHCLReport(tpm)
	if err != nil {
		t.Fatal(err)
	}
	if got, want := userDataOf(t, r), strings.ToUpper(hex.EncodeToString(data[:])); got != want {
		t.Fatalf("user-data %q, want %q", got, want)
	}
	// The IMDS model answers for this report's TD report only.
	hcl, _ := azurevtpm.ParseHCLReport(r)
	if _, err := vm.TDQuote(hcl.HardwareReport); err != nil {
		t.Errorf("TDQuote for the current TD report: %v", err)
	}
	hb, _ := azurevtpm.ParseHCLReport(boot)
	if _, err := vm.TDQuote(hb.HardwareReport); err == nil {
		t.Error("TDQuote answered for a stale TD report")
	}
}

// The same seed gives the same attestation key; another seed another.
func TestDeterministicAK(t *testing.T) {
	keys := map[int64][]byte{}
	for _, seed := range []int64{7, 7, 8} {
		vm, err := simulate.NewVM(simulate.Options{TDXQuote: quote, Seed: seed})
		if err != nil {
			t.Fatal(err)
		}
		n := vm.AttestationKey().N.Bytes()
		if err := vm.Close(); err != nil {
			t.Fatal(err)
		}
		if prev, ok := keys[seed]; ok && !bytes.Equal(prev, n) {
			t.Errorf("seed %d gave two keys", seed)
		}
		keys[seed] = n
	}
	if bytes.Equal(keys[7], keys[8]) {
		t.Error("seeds 7 and 8 gave the same key")
	}
}

func TestNewVMOptions(t *testing.T) {
	if _, err := simulate.NewVM(simulate.Options{}); err == nil {
		t.Error("NewVM without a hardware report source succeeded")
	}
	vm, err := simulate.NewVM(simulate.Options{TDXQuote: quote})
	if err != nil {
		t.Fatal(err)
	}
	if err := vm.Close(); err != nil {
		t.Fatal(err)
	}
	if _, err := vm.Evidence([64]byte{}); err == nil {
		t.Error("Evidence on a closed VM succeeded")
	}
	if err := vm.Close(); err != nil {
		t.Errorf("second Close: %v", err)
	}
}

func TestTDReportFromQuote(t *testing.T) {
	for name, q := range map[string][]byte{"v4": testdata.RawQuote, "v5": testdata.RawQuoteV5} {
		r, err := simulate.TDReportFromQuote(q)
		if err != nil {
			t.Fatalf("%s: %v", name, err)
		}
		b, err := azurevtpm.MarshalTDReport(r)
		if err != nil {
			t.Fatalf("%s: %v", name, err)
		}
		back, err := azurevtpm.ParseTDReport(b)
		if err != nil || !bytes.Equal(back.MRTD, r.MRTD) || !bytes.Equal(back.RTMRs[3], r.RTMRs[3]) || !bytes.Equal(back.ReportData, r.ReportData) {
			t.Fatalf("%s: TD report round trip: %v", name, err)
		}
	}
	if _, err := simulate.TDReportFromQuote([]byte("not a quote")); err == nil {
		t.Error("parsed garbage as a TD quote")
	}
}
