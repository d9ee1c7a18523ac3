package azurevtpm_test

import (
	"bytes"
	"context"
	"crypto/x509"
	"encoding/hex"
	"encoding/json"
	"encoding/pem"
	"strings"
	"testing"

	"github.com/attested-kms/attested-kms/attestation"
	"github.com/attested-kms/attested-kms/attestation/azurevtpm"
	"github.com/attested-kms/attested-kms/attestation/azurevtpm/guest"
	"github.com/attested-kms/attested-kms/attestation/azurevtpm/simulate"
	snpsim "github.com/attested-kms/attested-kms/attestation/sevsnp/simulate"
)

func TestVerifySNP(t *testing.T) {
	userData := binding("snp")
	var ev *attestation.Evidence
	var akDER []byte
	withVM(t, simulate.Options{}, func(vm *simulate.VM) {
		var err error
		if ev, err = vm.Evidence(userData); err != nil {
			t.Fatal(err)
		}
		akDER, _ = x509.MarshalPKIXPublicKey(vm.AttestationKey())
	})
	v, _ := newVerifier(t)
	claims, err := v.Verify(context.Background(), ev)
	if err != nil {
		t.Fatalf("Verify: %v", err)
	}
	if claims.Platform != attestation.PlatformAzureSNPVTPM {
		t.Errorf("Platform = %q", claims.Platform)
	}
	if !bytes.Equal(claims.ReportData, userData[:]) || !bytes.Equal(claims.AzureVTPM.UserData, userData[:]) {
		t.Error("ReportData/UserData is not the user data")
	}
	if claims.SEVSNP == nil || claims.TDX != nil {
		t.Fatal("want SEV-SNP claims only")
	}
	// The SNP report's own report data is the runtime data hash, not the binding.
	if bytes.Equal(claims.SEVSNP.ReportData, userData[:]) {
		t.Error("SEVSNP.ReportData should be the runtime data hash")
	}
	az := claims.AzureVTPM
	if !bytes.Equal(az.AKPub, akDER) {
		t.Error("AKPub is not the simulator's attestation key")
	}
	if !az.SecureBoot || !az.TPMEnabled || az.ConsoleEnabled || az.VMUniqueID == "" {
		t.Errorf("VM configuration claims = %+v", az)
	}
	if len(az.PCRs) != azurevtpm.NumPCRs {
		t.Fatalf("%d PCRs in claims, want %d", len(az.PCRs), azurevtpm.NumPCRs)
	}
	for i := range azurevtpm.NumPCRs {
		if !bytes.Equal(az.PCRs[i], ev.TPMQuote.PCRs[i]) {
			t.Errorf("PCR %d claim differs from the evidence", i)
		}
	}
	if claims.Revocation != attestation.RevocationNotChecked {
		t.Errorf("Revocation = %q, want the SNP verifier's", claims.Revocation)
	}
	// The claims round-trip through JSON (the audit log and explain output).
	if _, err := json.Marshal(claims); err != nil {
		t.Error(err)
	}
}

func TestVerifyTDX(t *testing.T) {
	userData := binding("tdx")
	ev := evidence(t, tdxOpts(), userData)
	v, tdx := newVerifier(t)
	claims, err := v.Verify(context.Background(), ev)
	if err != nil {
		t.Fatalf("Verify: %v", err)
	}
	if tdx.calls != 1 {
		t.Errorf("TDX verifier called %d times", tdx.calls)
	}
	if claims.Platform != attestation.PlatformAzureTDXVTPM || claims.TDX == nil || claims.SEVSNP != nil {
		t.Fatalf("claims = %+v", claims)
	}
	if !bytes.Equal(claims.ReportData, userData[:]) {
		t.Error("ReportData is not the user data")
	}
	if claims.Revocation != attestation.RevocationChecked {
		t.Errorf("Revocation = %q, want the TDX verifier's", claims.Revocation)
	}
}

func TestVerifyDocument(t *testing.T) {
	v, _ := newVerifier(t)
	for _, tc := range []struct {
		name string
		opts simulate.Options
	}{{"snp", simulate.Options{}}, {"tdx", tdxOpts()}} {
		for _, version := range []int{1, 2} {
			userData := binding(tc.name)
			withVM(t, tc.opts, func(vm *simulate.VM) {
				doc, err := vm.Document(userData, version)
				if err != nil {
					t.Fatal(err)
				}
				ev := &attestation.Evidence{Type: vm.Platform(), Document: doc}
				claims, err := v.Verify(context.Background(), ev)
				if err != nil {
					t.Fatalf("%s v%d: Verify: %v", tc.name, version, err)
				}
				if !bytes.Equal(claims.ReportData, userData[:]) {
					t.Errorf("%s v%d: ReportData is not the user data", tc.name, version)
				}
				// A document of the other platform is refused.
				other := attestation.PlatformAzureTDXVTPM
				if vm.Platform() == other {
					other = attestation.PlatformAzureSNPVTPM
				}
				_, err = v.Verify(context.Background(), &attestation.Evidence{Type: other, Document: doc})
				wantReason(t, err, attestation.ReasonMalformed)
			})
		}
	}
}

func wantReason(t *testing.T, err error, want attestation.Reason) {
	t.Helper()
	if err == nil {
		t.Fatalf("verification succeeded, want %s", want)
	}
	if got := attestation.ReasonOf(err); got != want {
		t.Fatalf("reason %q (%v), want %q", got, err, want)
	}
}

func TestVerifyCorruptions(t *testing.T) {
	v, _ := newVerifier(t)
	for _, tc := range []struct {
		name string
		opts simulate.Options
		want attestation.Reason
	}{
		{"AK in runtime data is not the quoting key", simulate.Options{WrongAK: true}, attestation.ReasonSignature},
		{"runtime data altered after the report", simulate.Options{AlterRuntimeData: true}, attestation.ReasonInconsistent},
		{"PCR values not the quoted ones", simulate.Options{WrongPCRs: true}, attestation.ReasonInconsistent},
		{"SNP report from the guest's VMPL", simulate.Options{SNPFields: snpsim.ReportFields{VMPL: 2}}, attestation.ReasonInconsistent},
		{"TDX: AK not the quoting key", simulate.Options{TDXQuote: fakeTDXQuote, WrongAK: true}, attestation.ReasonSignature},
		{"TDX: runtime data altered", simulate.Options{TDXQuote: fakeTDXQuote, AlterRuntimeData: true}, attestation.ReasonInconsistent},
	} {
		t.Run(tc.name, func(t *testing.T) {
			ev := evidence(t, tc.opts, binding(tc.name))
			_, err := v.Verify(context.Background(), ev)
			wantReason(t, err, tc.want)
		})
	}
}

func TestVerifySecureBootOff(t *testing.T) {
	v, _ := newVerifier(t)
	ev := evidence(t, simulate.Options{SecureBootOff: true, ConsoleEnabled: true}, binding("sb"))
	claims, err := v.Verify(context.Background(), ev)
	if err != nil {
		t.Fatal(err)
	}
	if claims.AzureVTPM.SecureBoot || !claims.AzureVTPM.ConsoleEnabled {
		t.Errorf("VM configuration claims = %+v; secure boot off and console on are facts for the policy", claims.AzureVTPM)
	}
}

func TestVerifyByteFlips(t *testing.T) {
	v, _ := newVerifier(t)
	snpEv := evidence(t, simulate.Options{}, binding("flips"))
	tdxEv := evidence(t, tdxOpts(), binding("flips"))
	rdOff := func(ev *attestation.Evidence) int {
		return bytes.Index(ev.Report, runtimeDataOf(t, ev.Report))
	}
	for _, tc := range []struct {
		name   string
		ev     *attestation.Evidence
		mutate func(ev *attestation.Evidence)
		want   attestation.Reason
	}{
		{"SNP report measurement", snpEv, func(ev *attestation.Evidence) { ev.Report[32+0x90] ^= 1 }, attestation.ReasonSignature},
		{"HCL signature", snpEv, func(ev *attestation.Evidence) { ev.Report[0] ^= 1 }, attestation.ReasonMalformed},
		{"HCL report type", snpEv, func(ev *attestation.Evidence) { ev.Report[32+1184+8] = 3 }, attestation.ReasonMalformed},
		{"HCL hash type", snpEv, func(ev *attestation.Evidence) { ev.Report[32+1184+12] = 2 }, attestation.ReasonInconsistent},
		{"runtime data byte", snpEv, func(ev *attestation.Evidence) { ev.Report[rdOff(ev)+2] ^= 0x20 }, attestation.ReasonInconsistent},
		{"runtime data size", snpEv, func(ev *attestation.Evidence) { ev.Report[32+1184+16]-- }, attestation.ReasonInconsistent},
		{"quote magic", snpEv, func(ev *attestation.Evidence) { ev.TPMQuote.Message[0] ^= 1 }, attestation.ReasonMalformed},
		{"quote type", snpEv, func(ev *attestation.Evidence) { ev.TPMQuote.Message[5] = 0x17 }, attestation.ReasonMalformed},
		{"quote qualifying data", snpEv, func(ev *attestation.Evidence) { ev.TPMQuote.Message[len(ev.TPMQuote.Message)-80] ^= 1 }, attestation.ReasonSignature},
		{"quote PCR digest", snpEv, func(ev *attestation.Evidence) { ev.TPMQuote.Message[len(ev.TPMQuote.Message)-1] ^= 1 }, attestation.ReasonSignature},
		{"quote signature", snpEv, func(ev *attestation.Evidence) { ev.TPMQuote.Signature[10] ^= 1 }, attestation.ReasonSignature},
		{"signature scheme", snpEv, func(ev *attestation.Evidence) { ev.TPMQuote.Signature[1] = 0x18 }, attestation.ReasonMalformed},
		{"signature as RSAPSS", snpEv, func(ev *attestation.Evidence) { ev.TPMQuote.Signature[1] = 0x16 }, attestation.ReasonSignature},
		{"PCR value", snpEv, func(ev *attestation.Evidence) { ev.TPMQuote.PCRs[23][31] ^= 1 }, attestation.ReasonInconsistent},
		{"PCR count", snpEv, func(ev *attestation.Evidence) { ev.TPMQuote.PCRs = ev.TPMQuote.PCRs[:23] }, attestation.ReasonMalformed},
		{"PCR length", snpEv, func(ev *attestation.Evidence) { ev.TPMQuote.PCRs[0] = ev.TPMQuote.PCRs[0][:20] }, attestation.ReasonMalformed},
		{"no TPM quote", snpEv, func(ev *attestation.Evidence) { ev.TPMQuote = nil }, attestation.ReasonMalformed},
		{"garbage certificates", snpEv, func(ev *attestation.Evidence) { ev.Certificates = []byte("not a certificate") }, attestation.ReasonMalformed},
		{"TD quote on SNP evidence", snpEv, func(ev *attestation.Evidence) { ev.TDQuote = []byte{1} }, attestation.ReasonMalformed},
		{"SNP HCL report as TDX evidence", snpEv, func(ev *attestation.Evidence) { ev.Type = attestation.PlatformAzureTDXVTPM }, attestation.ReasonMalformed},
		{"document beside fields", snpEv, func(ev *attestation.Evidence) { ev.Document = []byte("{}") }, attestation.ReasonMalformed},
		{"wrong type", snpEv, func(ev *attestation.Evidence) { ev.Type = attestation.PlatformSEVSNP }, attestation.ReasonUnsupported},
		{"TD report MRTD", tdxEv, func(ev *attestation.Evidence) { ev.Report[32+512+16] ^= 1 }, attestation.ReasonInconsistent},
		{"TD report RTMR3", tdxEv, func(ev *attestation.Evidence) { ev.Report[32+512+16+4*48+3*48] ^= 1 }, attestation.ReasonInconsistent},
		{"TD report REPORTDATA", tdxEv, func(ev *attestation.Evidence) { ev.Report[32+128] ^= 1 }, attestation.ReasonInconsistent},
		{"TD report type", tdxEv, func(ev *attestation.Evidence) { ev.Report[32] = 0 }, attestation.ReasonMalformed},
		{"TD quote of another report", tdxEv, func(ev *attestation.Evidence) { ev.TDQuote[quoteV4ReportDataAt] ^= 1 }, attestation.ReasonInconsistent},
		{"no TD quote", tdxEv, func(ev *attestation.Evidence) { ev.TDQuote = nil }, attestation.ReasonMalformed},
		{"certificates on TDX evidence", tdxEv, func(ev *attestation.Evidence) { ev.Certificates = []byte{1} }, attestation.ReasonMalformed},
		{"TDX runtime data", tdxEv, func(ev *attestation.Evidence) { ev.Report[rdOff(ev)+2] ^= 0x20 }, attestation.ReasonInconsistent},
	} {
		t.Run(tc.name, func(t *testing.T) {
			ev := cloneEvidence(tc.ev)
			tc.mutate(ev)
			_, err := v.Verify(context.Background(), ev)
			wantReason(t, err, tc.want)
		})
	}
	// The originals still verify: the table corrupted copies only.
	for _, ev := range []*attestation.Evidence{snpEv, tdxEv} {
		if _, err := v.Verify(context.Background(), ev); err != nil {
			t.Errorf("unmodified %s evidence: %v", ev.Type, err)
		}
	}
}

// A quote over other user data than the HCL report's, both genuine and
// from the same vTPM: a replayed HCL report with a fresh quote, or the
// reverse.
func TestVerifyUserDataMismatch(t *testing.T) {
	v, _ := newVerifier(t)
	withVM(t, simulate.Options{}, func(vm *simulate.VM) {
		first, err := vm.Evidence(binding("first"))
		if err != nil {
			t.Fatal(err)
		}
		second, err := vm.Evidence(binding("second"))
		if err != nil {
			t.Fatal(err)
		}
		mixed := cloneEvidence(first)
		mixed.TPMQuote = second.TPMQuote
		_, err = v.Verify(context.Background(), mixed)
		wantReason(t, err, attestation.ReasonInconsistent)
		if !strings.Contains(err.Error(), "qualifying data") {
			t.Errorf("error %q does not name the qualifying data", err)
		}
	})
}

// Before the guest writes user data, the HCL report (the one made at
// boot) has none, and no quote can match it.
func TestVerifyReportWithoutUserData(t *testing.T) {
	v, _ := newVerifier(t)
	withVM(t, simulate.Options{}, func(vm *simulate.VM) {
		boot, err := guest.ReadHCLReport(vm.TPM())
		if err != nil {
			t.Fatal(err)
		}
		hcl, err := azurevtpm.ParseHCLReport(boot)
		if err != nil {
			t.Fatal(err)
		}
		if rd, err := azurevtpm.ParseRuntimeData(hcl.RuntimeData); err != nil || rd.UserData != "" {
			t.Fatalf("boot report: runtime data %v, user-data %q", err, rd.UserData)
		}
		ev, err := vm.Evidence(binding("y"))
		if err != nil {
			t.Fatal(err)
		}
		ev.Report = boot
		_, err = v.Verify(context.Background(), ev)
		wantReason(t, err, attestation.ReasonInconsistent)
	})
}

func TestVerifyCertificateForms(t *testing.T) {
	v, _ := newVerifier(t)
	ev := evidence(t, simulate.Options{}, binding("certs"))
	var ders [][]byte
	for rest := ev.Certificates; ; {
		var b *pem.Block
		b, rest = pem.Decode(rest)
		if b == nil {
			break
		}
		ders = append(ders, b.Bytes)
	}
	if len(ders) != 3 {
		t.Fatalf("simulated THIM certificates: %d PEM blocks, want VCEK, ASK, ARK", len(ders))
	}
	for name, certs := range map[string][]byte{
		"PEM chain":         ev.Certificates,
		"PEM VCEK":          pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: ders[0]}),
		"DER VCEK":          ders[0],
		"DER VCEK and more": bytes.Join(ders, nil),
	} {
		e := cloneEvidence(ev)
		e.Certificates = certs
		if _, err := v.Verify(context.Background(), e); err != nil {
			t.Errorf("%s: %v", name, err)
		}
	}
	// Without the VCEK, the SNP verifier (here without a KDS getter)
	// cannot verify; its reason passes through.
	e := cloneEvidence(ev)
	e.Certificates = nil
	_, err := v.Verify(context.Background(), e)
	wantReason(t, err, attestation.ReasonCollateral)
}

func TestVerifierConfiguration(t *testing.T) {
	if _, err := azurevtpm.NewVerifier(azurevtpm.Options{}); err == nil {
		t.Error("NewVerifier without hardware verifiers succeeded")
	}
	snpOnly, err := azurevtpm.NewVerifier(azurevtpm.Options{SNP: snpVerifier(t)})
	if err != nil {
		t.Fatal(err)
	}
	_, err = snpOnly.Verify(context.Background(), evidence(t, tdxOpts(), binding("x")))
	wantReason(t, err, attestation.ReasonUnsupported)

	tdxFails, err := azurevtpm.NewVerifier(azurevtpm.Options{TDX: failingTDXVerifier{}})
	if err != nil {
		t.Fatal(err)
	}
	_, err = tdxFails.Verify(context.Background(), evidence(t, tdxOpts(), binding("x")))
	wantReason(t, err, attestation.ReasonSignature)

	_, err = snpOnly.Verify(context.Background(), nil)
	wantReason(t, err, attestation.ReasonUnsupported)
}

func hexString(b []byte) string { return hex.EncodeToString(b) }

func TestErrorsDoNotLeakUserData(t *testing.T) {
	v, _ := newVerifier(t)
	userData := binding("secret binding")
	ev := evidence(t, simulate.Options{WrongPCRs: true}, userData)
	_, err := v.Verify(context.Background(), ev)
	if err == nil {
		t.Fatal("want an error")
	}
	for _, enc := range []string{strings.ToUpper(hexString(userData[:8])), hexString(userData[:8])} {
		if strings.Contains(err.Error(), enc) {
			t.Errorf("error %q contains the user data", err)
		}
	}
}
