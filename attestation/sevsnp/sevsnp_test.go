package sevsnp_test

import (
	"bytes"
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"encoding/binary"
	"encoding/hex"
	"encoding/json"
	"encoding/pem"
	"errors"
	"math/big"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/attested-kms/attested-kms/attestation"
	"github.com/attested-kms/attested-kms/attestation/sevsnp"
	"github.com/attested-kms/attested-kms/attestation/sevsnp/simulate"
	"github.com/google/go-sev-guest/abi"
	"github.com/google/go-sev-guest/verify"
	"github.com/google/go-sev-guest/verify/trust"
)

// genuineTime is inside the fixture VCEK's validity (2022-09-24T00:55:28Z
// to 2029-09-24T00:55:28Z) and the Milan ARK/ASK's (2020-10-22 to
// 2045-10-22); fixed so the test keeps passing after the VCEK expires.
var genuineTime = time.Date(2023, time.June, 1, 0, 0, 0, 0, time.UTC)

// The KDS URL of the fixture VCEK: its chip ID and the report's reported TCB.
const genuineVCEKURL = "https://kdsintf.amd.com/vcek/v1/Milan/3ac3fe21e13fb0990eb28a802e3fb6a29483a6b0753590c951bdd3b8e53786184ca39e359669a2b76a1936776b564ea464cdce40c05f63c9b610c5068b006b5d?blSPL=2&teeSPL=0&snpSPL=5&ucodeSPL=68"

func fixture(tb testing.TB, name string) []byte {
	tb.Helper()
	b, err := os.ReadFile(filepath.Join("..", "..", "test", "fixtures", "sevsnp", name))
	if err != nil {
		tb.Fatalf("read fixture: %v", err)
	}
	return b
}

// genuineEvidence returns the recorded report and a certificate table
// holding the recorded ARK, ASK and VCEK, as a host would return them.
func genuineEvidence(tb testing.TB) (report, table []byte) {
	tb.Helper()
	chain := fixture(tb, "milan.testcer")
	ask, rest := pem.Decode(chain)
	ark, _ := pem.Decode(rest)
	if ask == nil || ark == nil {
		tb.Fatal("milan.testcer: want two PEM certificates")
	}
	return fixture(tb, "attestation.bin"), simulate.CertTable(ark.Bytes, ask.Bytes, fixture(tb, "vcek.testcer"))
}

func fixedNow(t time.Time) func() time.Time { return func() time.Time { return t } }

// signer loads the recorded simulator chain: generating its two RSA-4096
// keys would take seconds per test binary (simulate's own tests cover
// NewSigner).
func signer(tb testing.TB) *simulate.Signer {
	tb.Helper()
	s, err := simulate.LoadSigner(fixture(tb, "simulator-milan.pem"))
	if err != nil {
		tb.Fatalf("LoadSigner: %v", err)
	}
	return s
}

// simNow is a fixed time inside the simulator chain's validity, so the
// tests do not depend on the clock of the machine running them.
func simNow(s *simulate.Signer) time.Time { return s.ASK().NotBefore.Add(30 * 24 * time.Hour) }

func newVerifier(tb testing.TB, opts sevsnp.Options) *sevsnp.Verifier {
	tb.Helper()
	v, err := sevsnp.NewVerifier(opts)
	if err != nil {
		tb.Fatalf("NewVerifier: %v", err)
	}
	return v
}

func wantReason(t *testing.T, err error, want attestation.Reason) {
	t.Helper()
	if err == nil {
		t.Fatalf("got no error, want %s", want)
	}
	var ae *attestation.Error
	if !errors.As(err, &ae) {
		t.Fatalf("error %q is not an *attestation.Error", err)
	}
	if ae.Reason != want {
		t.Fatalf("reason %s (%v), want %s", ae.Reason, err, want)
	}
}

// mapGetter serves fixed URLs, like AMD's KDS would, and fails for others.
type mapGetter map[string][]byte

func (g mapGetter) Get(url string) ([]byte, error) {
	if b, ok := g[url]; ok {
		return b, nil
	}
	return nil, errors.New("404 " + url)
}

func TestGenuineMilanReport(t *testing.T) {
	report, table := genuineEvidence(t)
	v := newVerifier(t, sevsnp.Options{Now: fixedNow(genuineTime)})
	if v.TrustsTestRoots() {
		t.Error("default verifier trusts test roots")
	}
	claims, err := v.VerifyReport(context.Background(), report, table)
	if err != nil {
		t.Fatalf("Verify: %v", err)
	}
	snp := claims.SEVSNP
	if claims.Platform != attestation.PlatformSEVSNP || snp == nil {
		t.Fatalf("claims %+v", claims)
	}
	if !bytes.Equal(claims.ReportData, report[0x50:0x90]) || !bytes.Equal(snp.ReportData, report[0x50:0x90]) {
		t.Error("report data differs from the report's bytes 0x50-0x8f")
	}
	if !bytes.Equal(snp.Measurement, report[0x90:0xc0]) {
		t.Error("measurement differs from the report's bytes 0x90-0xbf")
	}
	if !bytes.Equal(snp.HostData, report[0xc0:0xe0]) || !bytes.Equal(snp.ChipID, report[0x1a0:0x1e0]) {
		t.Error("host data or chip ID differ from the report")
	}
	if got, want := hex.EncodeToString(snp.ChipID[:8]), "3ac3fe21e13fb099"; got != want {
		t.Errorf("chip ID starts %s, want %s", got, want)
	}
	wantTCB := attestation.TCBParts{Bootloader: 2, TEE: 0, SNP: 5, Microcode: 68}
	if snp.ReportedTCB != wantTCB {
		t.Errorf("reported TCB %+v, want %+v", snp.ReportedTCB, wantTCB)
	}
	if snp.Version != 2 || snp.Product != "Milan" || snp.Signer != "VCEK" {
		t.Errorf("version %d product %q signer %q, want 2 Milan VCEK", snp.Version, snp.Product, snp.Signer)
	}
	// The recorded guest was launched with policy 0xb0000: debug allowed.
	if snp.Policy != 0xb0000 || !snp.Debug {
		t.Errorf("policy %#x debug %v, want 0xb0000 true", snp.Policy, snp.Debug)
	}
	if snp.VMPL > 3 || len(snp.FamilyID) != 16 || len(snp.ImageID) != 16 || len(snp.IDKeyDigest) != 48 || len(snp.AuthorKeyDigest) != 48 {
		t.Errorf("field sizes or VMPL wrong: %+v", snp)
	}

	// ParseReport agrees with Verify except for what only the VCEK tells
	// (the product of a version 2 report).
	parsed, err := sevsnp.ParseReport(report)
	if err != nil {
		t.Fatalf("ParseReport: %v", err)
	}
	parsed.Product = "Milan"
	if a, b := mustJSON(t, parsed), mustJSON(t, snp); a != b {
		t.Errorf("ParseReport %s\nVerify      %s", a, b)
	}
}

func TestGenuineFetchesVCEKThroughGetter(t *testing.T) {
	report, _ := genuineEvidence(t)
	getter := mapGetter{genuineVCEKURL: fixture(t, "vcek.testcer")}
	v := newVerifier(t, sevsnp.Options{Now: fixedNow(genuineTime), Getter: getter})
	if _, err := v.VerifyReport(context.Background(), report, nil); err != nil {
		t.Fatalf("Verify with KDS getter: %v", err)
	}
	v = newVerifier(t, sevsnp.Options{Now: fixedNow(genuineTime), Getter: mapGetter{}})
	_, err := v.VerifyReport(context.Background(), report, nil)
	wantReason(t, err, attestation.ReasonCollateral)
}

func TestGenuineWithoutCollateral(t *testing.T) {
	report, _ := genuineEvidence(t)
	v := newVerifier(t, sevsnp.Options{Now: fixedNow(genuineTime)})
	_, err := v.VerifyReport(context.Background(), report, nil)
	wantReason(t, err, attestation.ReasonCollateral)
}

func TestGenuineOutsideValidity(t *testing.T) {
	report, table := genuineEvidence(t)
	// A second before the VCEK's notBefore.
	v := newVerifier(t, sevsnp.Options{Now: fixedNow(time.Date(2022, time.September, 24, 0, 55, 27, 0, time.UTC))})
	_, err := v.VerifyReport(context.Background(), report, table)
	wantReason(t, err, attestation.ReasonUntrustedRoot)
}

func TestGenuineTampered(t *testing.T) {
	report, table := genuineEvidence(t)
	v := newVerifier(t, sevsnp.Options{Now: fixedNow(genuineTime)})
	for name, off := range map[string]int{
		"signature R":  0x2a0 + 5,
		"signature S":  0x2a0 + 72 + 5,
		"measurement":  0x90,
		"report data":  0x50 + 63,
		"reported TCB": 0x180,
	} {
		t.Run(name, func(t *testing.T) {
			r := bytes.Clone(report)
			r[off] ^= 0x01
			_, err := v.VerifyReport(context.Background(), r, table)
			wantReason(t, err, attestation.ReasonSignature)
		})
	}
}

// TestCachedChainStillChecksEachReport: once a VCEK's chain is verified
// and cached, every tampered report is still refused, the cached entry is
// not used outside the certificate's validity, and the binding of TCB to
// certificate is still enforced.
func TestCachedChainStillChecksEachReport(t *testing.T) {
	report, table := genuineEvidence(t)
	now := genuineTime
	v := newVerifier(t, sevsnp.Options{Now: func() time.Time { return now }})
	if _, err := v.VerifyReport(context.Background(), report, table); err != nil {
		t.Fatalf("first verification: %v", err)
	}
	for name, off := range map[string]int{"signature": 0x2a0 + 5, "measurement": 0x90, "report data": 0x50, "reported TCB": 0x180} {
		r := bytes.Clone(report)
		r[off] ^= 0x01
		_, err := v.VerifyReport(context.Background(), r, table)
		t.Run(name, func(t *testing.T) { wantReason(t, err, attestation.ReasonSignature) })
	}
	if _, err := v.VerifyReport(context.Background(), report, table); err != nil {
		t.Fatalf("cached verification: %v", err)
	}
	now = time.Date(2030, 1, 1, 0, 0, 0, 0, time.UTC) // past the VCEK's notAfter
	_, err := v.VerifyReport(context.Background(), report, table)
	wantReason(t, err, attestation.ReasonUntrustedRoot)
}

func TestGenuineWithOnlyTestRoots(t *testing.T) {
	report, table := genuineEvidence(t)
	v := newVerifier(t, sevsnp.Options{
		Roots:        map[string][]*trust.AMDRootCerts{},
		TestRootsPEM: signer(t).RootsPEM(),
		Now:          fixedNow(genuineTime),
	})
	if !v.TrustsTestRoots() {
		t.Error("TrustsTestRoots = false with TestRootsPEM")
	}
	_, err := v.VerifyReport(context.Background(), report, table)
	wantReason(t, err, attestation.ReasonUntrustedRoot)
}

func TestNoRoots(t *testing.T) {
	// go-sev-guest would fall back to its embedded roots; we refuse instead.
	if _, err := sevsnp.NewVerifier(sevsnp.Options{Roots: map[string][]*trust.AMDRootCerts{}}); err == nil {
		t.Fatal("NewVerifier with no roots succeeded")
	}
}

func TestTestRootsMustBeMarked(t *testing.T) {
	// Genuine AMD roots lack the simulator marker, so they cannot be passed as test roots.
	if _, err := sevsnp.NewVerifier(sevsnp.Options{TestRootsPEM: trust.AskArkMilanVcekBytes}); err == nil {
		t.Fatal("genuine AMD roots accepted as test roots")
	}
	for _, bad := range []string{"", "garbage", "-----BEGIN PRIVATE KEY-----\nAAAA\n-----END PRIVATE KEY-----\n"} {
		if _, err := sevsnp.ParseTestRoots([]byte(bad)); err == nil {
			t.Errorf("ParseTestRoots(%q) succeeded", bad)
		}
	}
	roots, err := sevsnp.ParseTestRoots(signer(t).RootsPEM())
	if err != nil {
		t.Fatalf("ParseTestRoots: %v", err)
	}
	if rs := roots["Milan"]; len(rs) != 1 || !sevsnp.IsTestCertificate(rs[0].ProductCerts.Ark) {
		t.Fatalf("roots %+v", roots)
	}
	// Simulator roots smuggled in through Roots are still flagged.
	if v := newVerifier(t, sevsnp.Options{Roots: roots}); !v.TrustsTestRoots() {
		t.Error("TrustsTestRoots = false with simulator roots in Roots")
	}
}

func simulatedFields() simulate.ReportFields {
	f := simulate.ReportFields{
		Policy:   simulate.DefaultPolicy,
		VMPL:     1,
		GuestSVN: 7,
		TCB:      attestation.TCBParts{Bootloader: 3, TEE: 0, SNP: 8, Microcode: 115},
	}
	copy(f.ReportData[:], "report data: nonce and key binding digest")
	copy(f.Measurement[:], "launch measurement")
	copy(f.HostData[:], "host data")
	copy(f.FamilyID[:], "family")
	copy(f.ImageID[:], "image")
	copy(f.IDKeyDigest[:], "id key")
	copy(f.AuthorKeyDigest[:], "author key")
	return f
}

func testRootsVerifier(tb testing.TB, s *simulate.Signer) *sevsnp.Verifier {
	tb.Helper()
	return newVerifier(tb, sevsnp.Options{TestRootsPEM: s.RootsPEM(), Now: fixedNow(simNow(s))})
}

func TestSimulatedWithGenuineRoots(t *testing.T) {
	report, table, err := signer(t).Sign(simulatedFields())
	if err != nil {
		t.Fatal(err)
	}
	v := newVerifier(t, sevsnp.Options{Now: fixedNow(simNow(signer(t)))})
	_, err = v.VerifyReport(context.Background(), report, table)
	wantReason(t, err, attestation.ReasonUntrustedRoot)
}

func TestSimulatedWithTestRoots(t *testing.T) {
	s := signer(t)
	f := simulatedFields()
	report, table, err := s.Sign(f)
	if err != nil {
		t.Fatal(err)
	}
	claims, err := testRootsVerifier(t, s).VerifyReport(context.Background(), report, table)
	if err != nil {
		t.Fatalf("Verify: %v", err)
	}
	snp := claims.SEVSNP
	for _, c := range []struct {
		name      string
		got, want []byte
	}{
		{"report data", claims.ReportData, f.ReportData[:]},
		{"snp report data", snp.ReportData, f.ReportData[:]},
		{"measurement", snp.Measurement, f.Measurement[:]},
		{"host data", snp.HostData, f.HostData[:]},
		{"family id", snp.FamilyID, f.FamilyID[:]},
		{"image id", snp.ImageID, f.ImageID[:]},
		{"id key digest", snp.IDKeyDigest, f.IDKeyDigest[:]},
		{"author key digest", snp.AuthorKeyDigest, f.AuthorKeyDigest[:]},
		{"chip id", snp.ChipID, s.ChipID()},
	} {
		if !bytes.Equal(c.got, c.want) {
			t.Errorf("%s = %x, want %x", c.name, c.got, c.want)
		}
	}
	if snp.Policy != f.Policy || snp.Debug || snp.VMPL != f.VMPL || snp.GuestSVN != f.GuestSVN {
		t.Errorf("policy %#x debug %v vmpl %d svn %d", snp.Policy, snp.Debug, snp.VMPL, snp.GuestSVN)
	}
	for name, tcb := range map[string]attestation.TCBParts{"current": snp.CurrentTCB, "reported": snp.ReportedTCB, "committed": snp.CommittedTCB, "launch": snp.LaunchTCB} {
		if tcb != f.TCB {
			t.Errorf("%s TCB %+v, want %+v", name, tcb, f.TCB)
		}
	}
	if snp.Version != 3 || snp.Product != "Milan" || snp.Signer != "VCEK" {
		t.Errorf("version %d product %q signer %q", snp.Version, snp.Product, snp.Signer)
	}

	// go-sev-guest itself accepts the simulated chain once its roots are trusted.
	roots, err := sevsnp.ParseTestRoots(s.RootsPEM())
	if err != nil {
		t.Fatal(err)
	}
	att, err := abi.ReportCertsToProto(append(bytes.Clone(report), table...))
	if err != nil {
		t.Fatal(err)
	}
	if err := verify.SnpAttestation(att, &verify.Options{TrustedRoots: roots, DisableCertFetching: true, Now: simNow(s)}); err != nil {
		t.Errorf("go-sev-guest verify.SnpAttestation: %v", err)
	}
}

func TestSimulatedDebugPolicy(t *testing.T) {
	s := signer(t)
	f := simulatedFields()
	f.Policy |= sevsnp.PolicyDebug
	report, table, err := s.Sign(f)
	if err != nil {
		t.Fatal(err)
	}
	claims, err := testRootsVerifier(t, s).VerifyReport(context.Background(), report, table)
	if err != nil {
		t.Fatalf("Verify: %v", err)
	}
	if !claims.SEVSNP.Debug || claims.SEVSNP.Policy&sevsnp.PolicyDebug == 0 {
		t.Errorf("debug %v policy %#x, want debug", claims.SEVSNP.Debug, claims.SEVSNP.Policy)
	}
}

func TestSimulatedThroughGetter(t *testing.T) {
	s := signer(t)
	f := simulatedFields()
	report, _, err := s.Sign(f)
	if err != nil {
		t.Fatal(err)
	}
	vcek, err := s.VCEK(f.TCB)
	if err != nil {
		t.Fatal(err)
	}
	url := "https://kdsintf.amd.com/vcek/v1/Milan/" + hex.EncodeToString(s.ChipID()) + "?blSPL=3&teeSPL=0&snpSPL=8&ucodeSPL=115"
	v := newVerifier(t, sevsnp.Options{TestRootsPEM: s.RootsPEM(), Getter: mapGetter{url: vcek.Raw}, Now: fixedNow(simNow(s))})
	if _, err := v.VerifyReport(context.Background(), report, nil); err != nil {
		t.Fatalf("Verify with getter: %v", err)
	}
}

// A VCEK certified for another TCB must not vouch for the report's TCB.
// The simulator reuses one key for all TCBs, so the signature still checks
// and only the binding check can catch this.
func TestSimulatedTCBMismatch(t *testing.T) {
	s := signer(t)
	f := simulatedFields()
	report, _, err := s.Sign(f)
	if err != nil {
		t.Fatal(err)
	}
	other := f.TCB
	other.SNP++
	vcek, err := s.VCEK(other)
	if err != nil {
		t.Fatal(err)
	}
	_, err = testRootsVerifier(t, s).VerifyReport(context.Background(), report, simulate.CertTable(nil, nil, vcek.Raw))
	wantReason(t, err, attestation.ReasonSignature)
	if !strings.Contains(err.Error(), "TCB") {
		t.Errorf("error %q does not mention the TCB", err)
	}
}

func TestMalformed(t *testing.T) {
	report, table := genuineEvidence(t)
	v := newVerifier(t, sevsnp.Options{Now: fixedNow(genuineTime)})
	garbage := make([]byte, sevsnp.ReportSize)
	if _, err := rand.Read(garbage); err != nil {
		t.Fatal(err)
	}
	// Entry claiming offset 0xffffffe0 and length 0x40: the 32-bit sum wraps
	// to 0x20, which passes abi.CertTable.Unmarshal's bound and panics it.
	wrap := make([]byte, 2*abi.CertTableEntrySize+8)
	binary.LittleEndian.PutUint32(wrap[16:], 0xffffffe0)
	binary.LittleEndian.PutUint32(wrap[20:], 0x40)
	wrap[0] = 0x8d
	noTerminator := bytes.Clone(table[:abi.CertTableEntrySize])
	badVCEK := simulate.CertTable(nil, nil, []byte("not DER"))

	for name, c := range map[string]struct{ report, table []byte }{
		"nil report":          {nil, table},
		"truncated report":    {report[:len(report)-1], table},
		"long report":         {append(bytes.Clone(report), 0), table},
		"garbage report":      {garbage, table},
		"garbage table":       {report, garbage[:100]},
		"wrapping offset":     {report, wrap},
		"no terminator":       {report, noTerminator},
		"truncated table":     {report, table[:len(table)-10]},
		"unparsable VCEK":     {report, badVCEK},
		"oversized table":     {report, make([]byte, sevsnp.MaxCertTableSize+1)},
		"nonzero reserved":    {withByte(report, 0x4c, 1), table},
		"policy reserved bit": {withByte(report, 0x0a, 0x00), table},
	} {
		t.Run(name, func(t *testing.T) {
			_, err := v.VerifyReport(context.Background(), c.report, c.table)
			wantReason(t, err, attestation.ReasonMalformed)
			if bytes.Equal(c.table, table) {
				_, err = sevsnp.ParseReport(c.report)
				wantReason(t, err, attestation.ReasonMalformed)
			}
		})
	}
}

func withByte(b []byte, off int, v byte) []byte {
	b = bytes.Clone(b)
	b[off] = v
	return b
}

func TestUnsupportedVersion(t *testing.T) {
	report, table := genuineEvidence(t)
	r := bytes.Clone(report)
	binary.LittleEndian.PutUint32(r, 9)
	v := newVerifier(t, sevsnp.Options{Now: fixedNow(genuineTime)})
	_, err := v.VerifyReport(context.Background(), r, table)
	wantReason(t, err, attestation.ReasonUnsupported)
}

func TestRevocation(t *testing.T) {
	s := signer(t)
	report, table, err := s.Sign(simulatedFields())
	if err != nil {
		t.Fatal(err)
	}
	now := simNow(s)
	url, good, err := s.CRL(now, false)
	if err != nil {
		t.Fatal(err)
	}
	_, revoked, err := s.CRL(now, true)
	if err != nil {
		t.Fatal(err)
	}
	foreign := foreignCRL(t, s, now)
	for name, c := range map[string]struct {
		getter   trust.HTTPSGetter
		now      time.Time
		optional bool // RevocationOptional, as kms evidence verify --offline sets it
		want     attestation.Reason
		checked  attestation.Revocation
	}{
		"not revoked":          {getter: mapGetter{url: good}, now: now, checked: attestation.RevocationChecked},
		"ASK revoked":          {getter: mapGetter{url: revoked}, now: now, want: attestation.ReasonRevoked},
		"CRL unavailable":      {getter: mapGetter{}, now: now, want: attestation.ReasonCollateral},
		"CRL expired":          {getter: mapGetter{url: good}, now: now.Add(8 * 24 * time.Hour), want: attestation.ReasonCollateralExpired},
		"CRL from another ARK": {getter: mapGetter{url: foreign}, now: now, want: attestation.ReasonSignature},
		"CRL garbage":          {getter: mapGetter{url: []byte("garbage")}, now: now, want: attestation.ReasonCollateral},
		// Optional revocation forgives only a CRL that is not at hand.
		"optional, unavailable": {getter: mapGetter{}, now: now, optional: true, checked: attestation.RevocationNotChecked},
		"optional, no getter":   {now: now, optional: true, checked: attestation.RevocationNotChecked},
		"optional, revoked":     {getter: mapGetter{url: revoked}, now: now, optional: true, want: attestation.ReasonRevoked},
		"optional, expired":     {getter: mapGetter{url: good}, now: now.Add(8 * 24 * time.Hour), optional: true, want: attestation.ReasonCollateralExpired},
		"optional, garbage":     {getter: mapGetter{url: []byte("garbage")}, now: now, optional: true, want: attestation.ReasonCollateral},
		"optional, present":     {getter: mapGetter{url: good}, now: now, optional: true, checked: attestation.RevocationChecked},
	} {
		t.Run(name, func(t *testing.T) {
			v := newVerifier(t, sevsnp.Options{TestRootsPEM: s.RootsPEM(), CheckRevocation: true, RevocationOptional: c.optional, Getter: c.getter, Now: fixedNow(c.now)})
			claims, err := v.VerifyReport(context.Background(), report, table)
			if c.want == "" {
				if err != nil {
					t.Fatalf("Verify: %v", err)
				}
				if claims.Revocation != c.checked {
					t.Fatalf("Revocation = %q, want %q", claims.Revocation, c.checked)
				}
				return
			}
			wantReason(t, err, c.want)
		})
	}
	if _, err := sevsnp.NewVerifier(sevsnp.Options{CheckRevocation: true}); err == nil {
		t.Error("CheckRevocation without Getter accepted")
	}
}

// foreignCRL is a CRL naming the simulated ARK as issuer but signed by
// another key, as an attacker serving the CRL URL would make it.
func foreignCRL(t *testing.T, s *simulate.Signer, now time.Time) []byte {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P384(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(1), Subject: s.ARK().Subject,
		NotBefore: now.Add(-time.Hour), NotAfter: now.Add(time.Hour),
		KeyUsage: x509.KeyUsageCRLSign | x509.KeyUsageCertSign, BasicConstraintsValid: true, IsCA: true,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	issuer, err := x509.ParseCertificate(der)
	if err != nil {
		t.Fatal(err)
	}
	crl, err := x509.CreateRevocationList(rand.Reader, &x509.RevocationList{
		Number: big.NewInt(1), ThisUpdate: now.Add(-time.Minute), NextUpdate: now.Add(time.Hour),
	}, issuer, key)
	if err != nil {
		t.Fatal(err)
	}
	return crl
}

func TestTCBLayouts(t *testing.T) {
	parts := attestation.TCBParts{FMC: 1, Bootloader: 2, TEE: 3, SNP: 4, Microcode: 0xd5}
	turin, err := sevsnp.ComposeTCB(sevsnp.ProductTurin, parts)
	if err != nil {
		t.Fatal(err)
	}
	// SEV-SNP ABI 1.57 TCB_VERSION for Turin: FMC, BOOT_LOADER, TEE, SNP in bytes 0-3, microcode in byte 7.
	if turin != 0xd5000000_04030201 {
		t.Errorf("Turin TCB word %#x", turin)
	}
	if got := sevsnp.DecomposeTCB(sevsnp.ProductTurin, turin); got != parts {
		t.Errorf("Turin round trip %+v", got)
	}
	parts.FMC = 0
	milan, err := sevsnp.ComposeTCB(sevsnp.ProductMilan, parts)
	if err != nil {
		t.Fatal(err)
	}
	// Milan/Genoa: bootloader, TEE in bytes 0-1, SNP in byte 6, microcode in byte 7.
	if milan != 0xd5040000_00000302 {
		t.Errorf("Milan TCB word %#x", milan)
	}
	if got := sevsnp.DecomposeTCB(sevsnp.ProductGenoa, milan); got != parts {
		t.Errorf("Genoa round trip %+v", got)
	}
	if _, err := sevsnp.ComposeTCB(sevsnp.ProductMilan, attestation.TCBParts{FMC: 1}); err == nil {
		t.Error("Milan TCB with FMC accepted")
	}

	// A report whose CPUID names Turin is split in the Turin layout.
	report, _, err := signer(t).Sign(simulatedFields())
	if err != nil {
		t.Fatal(err)
	}
	report[0x188], report[0x189], report[0x18a] = 0x1a, 0x02, 0x00 // family 1Ah model 02h: Turin
	binary.LittleEndian.PutUint64(report[0x180:], turin)
	claims, err := sevsnp.ParseReport(report)
	if err != nil {
		t.Fatal(err)
	}
	want := attestation.TCBParts{FMC: 1, Bootloader: 2, TEE: 3, SNP: 4, Microcode: 0xd5}
	if claims.Product != "Turin" || claims.ReportedTCB != want {
		t.Errorf("product %q reported TCB %+v, want Turin %+v", claims.Product, claims.ReportedTCB, want)
	}
}

func BenchmarkVerifyReportSignature(b *testing.B) {
	report := fixture(b, "attestation.bin")
	vcek, err := x509.ParseCertificate(fixture(b, "vcek.testcer"))
	if err != nil {
		b.Fatal(err)
	}
	for b.Loop() {
		if err := verify.SnpReportSignature(report, vcek); err != nil {
			b.Fatal(err)
		}
	}
}

func BenchmarkVerify(b *testing.B) {
	s := signer(b)
	report, table, err := s.Sign(simulatedFields())
	if err != nil {
		b.Fatal(err)
	}
	v := testRootsVerifier(b, s)
	ctx := context.Background()
	for b.Loop() {
		if _, err := v.VerifyReport(ctx, report, table); err != nil {
			b.Fatal(err)
		}
	}
}

func BenchmarkVerifyGenuine(b *testing.B) {
	report, table := genuineEvidence(b)
	v := newVerifier(b, sevsnp.Options{Now: fixedNow(genuineTime)})
	ctx := context.Background()
	for b.Loop() {
		if _, err := v.VerifyReport(ctx, report, table); err != nil {
			b.Fatal(err)
		}
	}
}

func mustJSON(t *testing.T, v any) string {
	t.Helper()
	b, err := json.Marshal(v)
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}
