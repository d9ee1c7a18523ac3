package server_test

import (
	"bytes"
	"context"
	"crypto/rand"
	"crypto/sha256"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"math/big"
	"net/http"
	"os"
	"strings"
	"sync"
	"testing"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/attested-kms/attested-kms/attestation"
	azsim "github.com/attested-kms/attested-kms/attestation/azurevtpm/simulate"
	"github.com/attested-kms/attested-kms/attestation/collateral"
	snpsim "github.com/attested-kms/attested-kms/attestation/sevsnp/simulate"
	tdxsim "github.com/attested-kms/attested-kms/attestation/tdx/simulate"
	"github.com/attested-kms/attested-kms/hpke"
	kmsv1 "github.com/attested-kms/attested-kms/proto/kms/v1"
)

// Launch values the platform policy allows. The bare TD and the Azure TD
// (the paravisor) have different MRTDs so that each rule only grants what
// it names.
var (
	tdxMRTD      = [48]byte(bytes.Repeat([]byte{0xd1}, 48))
	azureTDXMRTD = [48]byte(bytes.Repeat([]byte{0xa7}, 48))
	// A platform whose PCK certificate the simulated Intel revokes, and
	// one whose FMSPC has no TCB info in the collateral directory.
	revokedPCK  = tdxsim.PCK{PPID: bytes.Repeat([]byte{0x77}, 16)}
	unknownPCK  = tdxsim.PCK{FMSPC: "00806f050000"}
	outOfDateTD = []byte{3, 0, 2, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0}
)

// The simulated Intel is the committed fixture key, as `kms init
// --simulator` uses it.
var intel struct {
	once sync.Once
	sim  *tdxsim.Intel
	err  error
}

func testIntel(t testing.TB) *tdxsim.Intel {
	t.Helper()
	intel.once.Do(func() {
		pemBytes, err := os.ReadFile("../test/fixtures/tdx/simulated/simulator.pem")
		if err != nil {
			intel.err = err
			return
		}
		intel.sim, intel.err = tdxsim.Load(pemBytes)
	})
	if intel.err != nil {
		t.Fatal(intel.err)
	}
	return intel.sim
}

// simulatedPCR is the SHA-256 PCR value the Azure VM simulator leaves in
// PCRs 0-7 after boot: one extend of its "boot component" from zero.
func simulatedPCR(n int) []byte {
	component := sha256.Sum256(fmt.Appendf(nil, "simulated boot component %d", n))
	v := sha256.Sum256(append(make([]byte, 32), component[:]...))
	return v[:]
}

// platformPolicy has one rule per evidence type, each with a token section.
func platformPolicy(issuer string) string {
	token := fmt.Sprintf("    token: {issuers: [%q], audiences: [%q]}\n", issuer, audience)
	pcrs := fmt.Sprintf("        pcrs: {4: [%x], 7: [%x]}\n", simulatedPCR(4), simulatedPCR(7))
	return fmt.Sprintf(`version: 1
rules:
  - name: bare-snp
    sev_snp:
      measurements: [%x]
      min_tcb: {bootloader: 3, tee: 0, snp: 8, microcode: 115}
`, goodMeasurement) + token + fmt.Sprintf(`  - name: bare-tdx
    tdx:
      mrtd: [%x]
`, tdxMRTD) + token + `  - name: azure-snp
    azure_sev_snp_vtpm:
      vtpm:
` + pcrs + `      sev_snp:
        min_tcb: {bootloader: 3, tee: 0, snp: 8, microcode: 115}
` + token + fmt.Sprintf(`  - name: azure-tdx
    azure_tdx_vtpm:
      vtpm:
`+pcrs+`      tdx:
        mrtd: [%x]
`, azureTDXMRTD) + token
}

// platformEnv is a KMS trusting the SEV-SNP and TDX simulators, with the
// platform policy on the default key set and an SEV-SNP-only key set.
type platformEnv struct {
	*env
	intel   *tdxsim.Intel
	snpOnly string // kid of the "snp-only" key set's key
	// secrets are the nonces, tokens and wrapping keys sent, which no log
	// line may contain.
	secrets [][]byte
}

// newPlatformEnv starts the KMS with TDX collateral issued at issued and
// current for validity (0: Intel's 30 days). The collateral revokes
// revokedPCK.
func newPlatformEnv(t testing.TB, issued time.Time, validity time.Duration) *platformEnv {
	t.Helper()
	sim := testIntel(t)
	revoked, err := tdxsim.PCKSerial(revokedPCK)
	if err != nil {
		t.Fatal(err)
	}
	e := newEnvWith(t, envOptions{
		policy:      platformPolicy,
		keySets:     map[string]func(string) string{"snp-only": policyYAML},
		tdxRootsPEM: sim.RootsPEM(),
		collateral: func(t testing.TB, dir string) {
			docs, err := sim.Collateral(issued, tdxsim.CollateralOptions{Validity: validity, RevokedPCKs: []*big.Int{revoked}})
			if err != nil {
				t.Fatal(err)
			}
			for url, r := range docs {
				if err := collateral.WriteDocument(dir, url, http.Header(r.Header), r.Body); err != nil {
					t.Fatal(err)
				}
			}
		},
	})
	keys, err := e.admin.ListKeys(context.Background(), &kmsv1.ListKeysRequest{Keyset: "snp-only"})
	if err != nil || len(keys.GetKeys()) != 1 {
		t.Fatalf("snp-only keys: %v %v", keys, err)
	}
	return &platformEnv{env: e, intel: sim, snpOnly: keys.GetKeys()[0].GetKid()}
}

// bound is one release attempt's nonce and wrapping key, and the report
// data that binds them.
type bound struct {
	nonce, pub, priv []byte
	digest           [64]byte
}

func (p *platformEnv) bind() bound {
	p.t.Helper()
	ch, err := p.rel.GetChallenge(withToken(context.Background(), p.token()), &kmsv1.GetChallengeRequest{})
	if err != nil {
		p.t.Fatalf("GetChallenge: %v", err)
	}
	kp, err := hpke.GenerateKeyPair(rand.Reader)
	if err != nil {
		p.t.Fatal(err)
	}
	b := bound{nonce: ch.GetNonce(), pub: kp.Public, priv: kp.Private}
	if b.digest, err = hpke.BindingDigest(b.nonce, b.pub); err != nil {
		p.t.Fatal(err)
	}
	p.secrets = append(p.secrets, b.nonce, b.pub, b.priv)
	return b
}

// send asks for key kid of keyset with evidence bound to b.
func (p *platformEnv) send(b bound, keyset, kid string, ev *kmsv1.Evidence) (*kmsv1.ReleaseKeyResponse, error) {
	tok := p.token()
	p.secrets = append(p.secrets, []byte(tok))
	return p.rel.ReleaseKey(withToken(context.Background(), tok), &kmsv1.ReleaseKeyRequest{
		Keyset: keyset, Kid: kid, Nonce: b.nonce, Evidence: ev,
		WrappingKey: &kmsv1.WrappingKey{Algorithm: kmsv1.WrappingAlgorithm_WRAPPING_ALGORITHM_HPKE_X25519, PublicKey: b.pub},
	})
}

// granted sends ev for the default key set and checks that the wrapped
// key unwraps to the key whose public key the response names.
func (p *platformEnv) granted(t *testing.T, b bound, ev *kmsv1.Evidence) {
	t.Helper()
	resp, err := p.send(b, "default", p.kid, ev)
	if err != nil {
		t.Fatalf("release: %v", err)
	}
	priv, err := hpke.UnwrapX25519(b.priv, resp.GetKid(), b.nonce, resp.GetWrappedKey())
	if err != nil {
		t.Fatalf("unwrap: %v", err)
	}
	pub, err := hpke.PublicFromPrivate(priv)
	if err != nil || !bytes.Equal(pub, resp.GetPublicKey()) || resp.GetKid() != p.kid {
		t.Fatal("released private key does not match the public key of the named kid")
	}
	p.secrets = append(p.secrets, priv)
}

// refused checks a refusal's gRPC code, ErrorInfo reason and, when
// detail is set, that the message names it.
func refused(t *testing.T, err error, code codes.Code, reason, detail string) {
	t.Helper()
	if status.Code(err) != code {
		t.Fatalf("code %v (%v), want %v", status.Code(err), err, code)
	}
	if got := reasonOf(err); got != reason {
		t.Fatalf("reason %q (%v), want %q", got, err, reason)
	}
	if detail != "" && !strings.Contains(status.Convert(err).Message(), detail) {
		t.Fatalf("message %q does not mention %q", status.Convert(err).Message(), detail)
	}
}

func (p *platformEnv) tdQuote(t *testing.T, f tdxsim.QuoteFields) []byte {
	t.Helper()
	q, err := p.intel.Quote(f)
	if err != nil {
		t.Fatal(err)
	}
	return q
}

func snpEvidence(t *testing.T, p *platformEnv, rd [64]byte) *kmsv1.Evidence {
	t.Helper()
	f := simulateFields(rd)
	report, certs, err := p.signer.Sign(f)
	if err != nil {
		t.Fatal(err)
	}
	return &kmsv1.Evidence{Type: "sev-snp", Report: report, Certificates: certs}
}

// simulateFields are SEV-SNP launch values the policy allows.
func simulateFields(rd [64]byte) snpsim.ReportFields {
	f := snpsim.ReportFields{TCB: minTCB, ReportData: rd}
	copy(f.Measurement[:], goodMeasurement)
	return f
}

// wire converts evidence to its proto form.
func wire(ev *attestation.Evidence) *kmsv1.Evidence {
	out := &kmsv1.Evidence{Type: string(ev.Type), Report: ev.Report, Certificates: ev.Certificates, TdQuote: ev.TDQuote, Document: ev.Document}
	if q := ev.TPMQuote; q != nil {
		out.TpmQuote = &kmsv1.TPMQuote{Message: q.Message, Signature: q.Signature, Pcrs: q.PCRs}
	}
	return out
}

// TestPlatformReleases releases over gRPC with every evidence type, and
// refuses each kind of bad evidence with its code and reason.
func TestPlatformReleases(t *testing.T) {
	p := newPlatformEnv(t, time.Now(), 0)

	t.Run("sev-snp", func(t *testing.T) {
		b := p.bind()
		p.granted(t, b, snpEvidence(t, p, b.digest))
	})
	for _, c := range []struct {
		name string
		f    tdxsim.QuoteFields
	}{
		{"v4", tdxsim.QuoteFields{Version: 4}},
		{"v5 TDX 1.0 body", tdxsim.QuoteFields{Version: 5, BodyType: 2}},
		{"v5 TDX 1.5 body", tdxsim.QuoteFields{Version: 5, BodyType: 3}},
		{"v5 TDX 1.5 body, module 1.5", tdxsim.SimulatedQuotes["quote_v5_tdx15.dat"]},
	} {
		f := c.f
		t.Run("tdx quote "+c.name, func(t *testing.T) {
			b := p.bind()
			f.MRTD, f.ReportData = tdxMRTD, b.digest
			p.granted(t, b, &kmsv1.Evidence{Type: "tdx", Report: p.tdQuote(t, f)})
		})
	}

	tdxCases := []struct {
		name         string
		f            tdxsim.QuoteFields
		code         codes.Code
		reason       string
		detail       string
		otherBinding bool
	}{
		{name: "debug TD", f: tdxsim.QuoteFields{Debug: true}, code: codes.PermissionDenied, reason: "POLICY_DENIED", detail: "debug"},
		{name: "TCB out of date", f: tdxsim.QuoteFields{TEETCBSVN: outOfDateTD}, code: codes.PermissionDenied, reason: "POLICY_DENIED", detail: "OutOfDate"},
		{name: "revoked PCK", f: tdxsim.QuoteFields{PCK: revokedPCK}, code: codes.PermissionDenied, reason: "EVIDENCE_REVOKED"},
		{name: "FMSPC without TCB info", f: tdxsim.QuoteFields{PCK: unknownPCK}, code: codes.Unavailable, reason: "EVIDENCE_COLLATERAL_UNAVAILABLE"},
		{name: "quote for another nonce", otherBinding: true, code: codes.PermissionDenied, reason: "BINDING_MISMATCH"},
	}
	for _, c := range tdxCases {
		t.Run("tdx refused: "+c.name, func(t *testing.T) {
			b := p.bind()
			c.f.MRTD, c.f.ReportData = tdxMRTD, b.digest
			if c.otherBinding {
				c.f.ReportData = p.bind().digest
			}
			_, err := p.send(b, "default", p.kid, &kmsv1.Evidence{Type: "tdx", Report: p.tdQuote(t, c.f)})
			refused(t, err, c.code, c.reason, c.detail)
		})
	}
	t.Run("sev-snp refused: report for another nonce", func(t *testing.T) {
		b := p.bind()
		_, err := p.send(b, "default", p.kid, snpEvidence(t, p, p.bind().digest))
		refused(t, err, codes.PermissionDenied, "BINDING_MISMATCH", "")
	})
	t.Run("no rule for the evidence type", func(t *testing.T) {
		// The snp-only key set's policy has only a sev_snp rule: genuine
		// TDX evidence gets nothing from it.
		b := p.bind()
		q := p.tdQuote(t, tdxsim.QuoteFields{MRTD: tdxMRTD, ReportData: b.digest})
		_, err := p.send(b, "snp-only", p.snpOnly, &kmsv1.Evidence{Type: "tdx", Report: q})
		refused(t, err, codes.PermissionDenied, "POLICY_DENIED", `no rule accepts "tdx"`)
	})
	t.Run("unknown evidence type", func(t *testing.T) {
		b := p.bind()
		_, err := p.send(b, "default", p.kid, &kmsv1.Evidence{Type: "sgx", Report: []byte{1}})
		refused(t, err, codes.InvalidArgument, "EVIDENCE_UNSUPPORTED", "sgx")
	})

	t.Run("azure-sev-snp-vtpm", func(t *testing.T) {
		withAzureVM(t, azsim.Options{SNP: p.signer, SNPFields: simulateFields([64]byte{})}, func(vm *azsim.VM) {
			azureGoodAndBad(t, p, vm)
			azurePCROutsidePolicy(t, p, vm)
		})
		withAzureVM(t, azsim.Options{SNP: p.signer, SNPFields: simulateFields([64]byte{}), WrongAK: true}, func(vm *azsim.VM) {
			azureRefused(t, p, vm, "AK not the one in the runtime data", codes.PermissionDenied, "EVIDENCE_SIGNATURE_INVALID", "")
		})
	})
	t.Run("azure-tdx-vtpm", func(t *testing.T) {
		quote := func(rd [64]byte) ([]byte, error) {
			return p.intel.Quote(tdxsim.QuoteFields{MRTD: azureTDXMRTD, ReportData: rd})
		}
		withAzureVM(t, azsim.Options{TDXQuote: quote}, func(vm *azsim.VM) {
			azureGoodAndBad(t, p, vm)
			azurePCROutsidePolicy(t, p, vm)
		})
		withAzureVM(t, azsim.Options{TDXQuote: quote, AlterRuntimeData: true}, func(vm *azsim.VM) {
			azureRefused(t, p, vm, "HCL runtime data altered", codes.PermissionDenied, "EVIDENCE_INCONSISTENT", "runtime data")
		})
		withAzureVM(t, azsim.Options{TDXQuote: quote, SecureBootOff: true}, func(vm *azsim.VM) {
			azureRefused(t, p, vm, "secure boot off", codes.PermissionDenied, "POLICY_DENIED", "secure_boot")
		})
	})

	t.Run("decision log", func(t *testing.T) {
		// Each grant names its platform, rule and measurement (the MRTD
		// for TDX, on Azure the paravisor's), one line per release.
		want := map[string]struct {
			rule        string
			measurement []byte
			grants      int
		}{
			"sev-snp":            {"bare-snp", goodMeasurement, 1},
			"tdx":                {"bare-tdx", tdxMRTD[:], 4},
			"azure-sev-snp-vtpm": {"azure-snp", goodMeasurement, 3},
			"azure-tdx-vtpm":     {"azure-tdx", azureTDXMRTD[:], 3},
		}
		grants := map[string]int{}
		for line := range strings.Lines(p.logs.String()) {
			var l struct{ Platform, Decision, Rule, Measurement string }
			if err := json.Unmarshal([]byte(line), &l); err != nil {
				t.Fatalf("log line is not JSON: %v", err)
			}
			if l.Decision != "granted" {
				continue
			}
			w, ok := want[l.Platform]
			if !ok || l.Rule != w.rule || l.Measurement != hex.EncodeToString(w.measurement) {
				t.Fatalf("granted decision line does not name platform, rule and measurement as expected: %s", line)
			}
			grants[l.Platform]++
		}
		for platform, w := range want {
			if grants[platform] != w.grants {
				t.Errorf("%d granted %s decision lines, want %d", grants[platform], platform, w.grants)
			}
		}
		assertNoSecrets(t, p.logs.String(), p.secrets)
	})
}

// assertNoSecrets fails if logs contain any secret in the encodings a log
// line could carry it in.
func assertNoSecrets(t *testing.T, logs string, secrets [][]byte) {
	t.Helper()
	for _, s := range secrets {
		for _, enc := range []string{string(s), hex.EncodeToString(s), base64.StdEncoding.EncodeToString(s), base64.RawURLEncoding.EncodeToString(s)} {
			if len(enc) > 8 && strings.Contains(logs, enc) {
				t.Fatalf("logs contain a nonce, token or key (%.6s…)", enc)
			}
		}
	}
}

// withAzureVM runs f with a simulated Azure VM; the TPM simulator allows
// one at a time, so the VM is closed before the next is made.
func withAzureVM(t *testing.T, opts azsim.Options, f func(vm *azsim.VM)) {
	t.Helper()
	vm, err := azsim.NewVM(opts)
	if err != nil {
		t.Fatalf("NewVM: %v", err)
	}
	defer vm.Close()
	f(vm)
}

func azureEvidence(t *testing.T, vm *azsim.VM, rd [64]byte) *attestation.Evidence {
	t.Helper()
	ev, err := vm.Evidence(rd)
	if err != nil {
		t.Fatal(err)
	}
	return ev
}

// azureGoodAndBad releases with vm's evidence in proto fields and as
// Confidential Containers documents, then refuses evidence bound to another nonce and PCR values the quote does
// not cover.
func azureGoodAndBad(t *testing.T, p *platformEnv, vm *azsim.VM) {
	t.Run("granted", func(t *testing.T) {
		b := p.bind()
		ev := azureEvidence(t, vm, b.digest)
		if got := ev.TPMQuote.PCRs[7]; !bytes.Equal(got, simulatedPCR(7)) {
			t.Fatalf("simulated PCR 7 is %x, the policy expects %x", got, simulatedPCR(7))
		}
		p.granted(t, b, wire(ev))
	})
	for _, version := range []int{1, 2} {
		t.Run(fmt.Sprintf("granted: CoCo document v%d", version), func(t *testing.T) {
			b := p.bind()
			doc, err := vm.Document(b.digest, version)
			if err != nil {
				t.Fatal(err)
			}
			p.granted(t, b, &kmsv1.Evidence{Type: string(vm.Platform()), Document: doc})
		})
	}
	t.Run("refused: evidence for another nonce", func(t *testing.T) {
		b := p.bind()
		_, err := p.send(b, "default", p.kid, wire(azureEvidence(t, vm, p.bind().digest)))
		refused(t, err, codes.PermissionDenied, "BINDING_MISMATCH", "")
	})
	t.Run("refused: PCR values not matching the quoted digest", func(t *testing.T) {
		b := p.bind()
		ev := wire(azureEvidence(t, vm, b.digest))
		ev.TpmQuote.Pcrs[0][0] ^= 0x01
		_, err := p.send(b, "default", p.kid, ev)
		refused(t, err, codes.PermissionDenied, "EVIDENCE_INCONSISTENT", "")
	})
}

// azurePCROutsidePolicy extends PCR 7, so vm is of no further use.
func azurePCROutsidePolicy(t *testing.T, p *platformEnv, vm *azsim.VM) {
	t.Run("refused: PCR value not in the policy", func(t *testing.T) {
		if err := vm.ExtendPCR(7, sha256.Sum256([]byte("unvetted boot component"))); err != nil {
			t.Fatal(err)
		}
		b := p.bind()
		_, err := p.send(b, "default", p.kid, wire(azureEvidence(t, vm, b.digest)))
		refused(t, err, codes.PermissionDenied, "POLICY_DENIED", "pcrs[7]")
	})
}

func azureRefused(t *testing.T, p *platformEnv, vm *azsim.VM, name string, code codes.Code, reason, detail string) {
	t.Run("refused: "+name, func(t *testing.T) {
		b := p.bind()
		_, err := p.send(b, "default", p.kid, wire(azureEvidence(t, vm, b.digest)))
		refused(t, err, code, reason, detail)
	})
}

// TestPlatformStaleCollateral: offline, TDX collateral past its next
// update is the KMS's problem (Unavailable), not a verdict on the quote.
func TestPlatformStaleCollateral(t *testing.T) {
	p := newPlatformEnv(t, time.Now().Add(-40*24*time.Hour), 30*24*time.Hour)
	b := p.bind()
	q := p.tdQuote(t, tdxsim.QuoteFields{MRTD: tdxMRTD, ReportData: b.digest})
	_, err := p.send(b, "default", p.kid, &kmsv1.Evidence{Type: "tdx", Report: q})
	refused(t, err, codes.Unavailable, "EVIDENCE_COLLATERAL_EXPIRED", "")
	// SEV-SNP, whose CRL is current, is unaffected.
	b = p.bind()
	p.granted(t, b, snpEvidence(t, p, b.digest))
}
