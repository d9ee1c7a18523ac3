package tdx_test

import (
	"bytes"
	"context"
	"encoding/hex"
	"math/big"
	"strings"
	"testing"
	"time"

	"github.com/attested-kms/attested-kms/attestation"
	"github.com/attested-kms/attested-kms/attestation/tdx"
	"github.com/attested-kms/attested-kms/attestation/tdx/simulate"
)

func TestSimulatedFixtures(t *testing.T) {
	intel := fixtureIntel(t)
	v, err := tdx.NewVerifier(tdx.Options{
		Roots:           emptyPool(),
		TestRootsPEM:    intel.RootsPEM(),
		Now:             at(simTime),
		CheckRevocation: true,
		Getter:          dirGetter(fixtures + "/simulated/collateral"),
	})
	if err != nil {
		t.Fatal(err)
	}
	if !v.TrustsTestRoots() {
		t.Error("TrustsTestRoots() = false with TestRootsPEM")
	}
	rd := simulate.FixtureReportData()
	for name, want := range map[string]uint32{"quote_v4.dat": 4, "quote_v5_tdx10.dat": 5, "quote_v5_tdx15.dat": 5} {
		t.Run(name, func(t *testing.T) {
			c, err := v.Verify(context.Background(), &attestation.Evidence{Type: attestation.PlatformTDX, Report: readFixture(t, "simulated/"+name)})
			if err != nil {
				t.Fatal(err)
			}
			if c.Platform != attestation.PlatformTDX || c.Revocation != attestation.RevocationChecked || c.TDX == nil {
				t.Fatalf("claims %+v", c)
			}
			if !bytes.Equal(c.ReportData, rd[:]) || !bytes.Equal(c.TDX.ReportData, rd[:]) {
				t.Errorf("report data %x", c.ReportData)
			}
			if c.TDX.QuoteVersion != want || c.TDX.TCBStatus != "UpToDate" || len(c.TDX.AdvisoryIDs) != 0 {
				t.Errorf("version %d status %q advisories %v", c.TDX.QuoteVersion, c.TDX.TCBStatus, c.TDX.AdvisoryIDs)
			}
			if hex.EncodeToString(c.TDX.FMSPC) != simulate.DefaultFMSPC || c.TDX.Debug {
				t.Errorf("FMSPC %x debug %v", c.TDX.FMSPC, c.TDX.Debug)
			}
		})
	}
}

func TestVerifyWrongEvidenceType(t *testing.T) {
	intel := fixtureIntel(t)
	v := simVerifier(t, intel, nil, simTime)
	_, err := v.Verify(context.Background(), &attestation.Evidence{Type: attestation.PlatformSEVSNP})
	wantReason(t, err, attestation.ReasonUnsupported)
	_, err = v.Verify(context.Background(), nil)
	wantReason(t, err, attestation.ReasonUnsupported)
}

func TestClaimsCarryEveryField(t *testing.T) {
	intel := fixtureIntel(t)
	v := simVerifier(t, intel, collateral(t, intel, simulate.CollateralOptions{}), simTime)
	fill := func(b byte) (out [48]byte) {
		for i := range out {
			out[i] = b + byte(i)
		}
		return out
	}
	f := simulate.QuoteFields{
		Version: 5, BodyType: 3,
		TEETCBSVN:     []byte{7, 1, 3, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 9},
		MRSeam:        fill(0x10),
		TDAttributes:  [8]byte{0, 0, 0, 0x10},
		XFAM:          [8]byte{0xe7, 0x02, 0x06},
		MRTD:          fill(0x20),
		MRConfigID:    fill(0x30),
		MROwner:       fill(0x40),
		MROwnerConfig: fill(0x50),
		RTMRs:         [4][48]byte{fill(0x60), fill(0x70), fill(0x80), fill(0x90)},
		Debug:         true,
	}
	copy(f.ReportData[:], "binding digest")
	c, err := verify(t, v, quote(t, intel, f))
	if err != nil {
		t.Fatal(err)
	}
	d := c.TDX
	wantAttrs := []byte{1, 0, 0, 0x10, 0, 0, 0, 0}
	checks := []struct {
		name      string
		got, want []byte
	}{
		{"MRSEAM", d.MRSeam, f.MRSeam[:]},
		{"MRSIGNERSEAM", d.MRSignerSeam, f.MRSignerSeam[:]},
		{"MRTD", d.MRTD, f.MRTD[:]},
		{"MRCONFIGID", d.MRConfigID, f.MRConfigID[:]},
		{"MROWNER", d.MROwner, f.MROwner[:]},
		{"MROWNERCONFIG", d.MROwnerConfig, f.MROwnerConfig[:]},
		{"TD attributes", d.TDAttributes, wantAttrs},
		{"XFAM", d.XFAM, f.XFAM[:]},
		{"TEE TCB SVN", d.TEETCBSVN, f.TEETCBSVN},
		{"report data", d.ReportData, f.ReportData[:]},
		{"claims report data", c.ReportData, f.ReportData[:]},
	}
	for _, ch := range checks {
		if !bytes.Equal(ch.got, ch.want) {
			t.Errorf("%s = %x, want %x", ch.name, ch.got, ch.want)
		}
	}
	if len(d.RTMRs) != 4 {
		t.Fatalf("%d RTMRs", len(d.RTMRs))
	}
	for i, r := range d.RTMRs {
		if !bytes.Equal(r, f.RTMRs[i][:]) {
			t.Errorf("RTMR%d = %x", i, r)
		}
	}
	if !d.Debug {
		t.Error("Debug = false for a debug TD")
	}
	if d.TCBStatus != "UpToDate" {
		t.Errorf("TCB status %q", d.TCBStatus)
	}
}

func TestDebugBitOnly(t *testing.T) {
	intel := fixtureIntel(t)
	v := simVerifier(t, intel, collateral(t, intel, simulate.CollateralOptions{}), simTime)
	for _, tc := range []struct {
		attrs [8]byte
		debug bool
	}{
		{[8]byte{1}, true},
		{[8]byte{0, 0, 0, 0x40}, false}, // SEPT_VE_DISABLE only
		{[8]byte{0xfe, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff}, false},
	} {
		c, err := verify(t, v, quote(t, intel, simulate.QuoteFields{TDAttributes: tc.attrs}))
		if err != nil {
			t.Fatal(err)
		}
		if c.TDX.Debug != tc.debug {
			t.Errorf("attributes %x: Debug = %v, want %v", tc.attrs, c.TDX.Debug, tc.debug)
		}
	}
}

func TestTCBStatusIsAClaim(t *testing.T) {
	intel := fixtureIntel(t)
	tests := []struct {
		name       string
		f          simulate.QuoteFields
		opts       simulate.CollateralOptions
		status     string
		advisories []string
	}{
		{"platform out of date", simulate.QuoteFields{TEETCBSVN: []byte{3, 0, 2, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0}}, simulate.CollateralOptions{},
			"OutOfDate", []string{"INTEL-SA-SIM-0001", "INTEL-SA-SIM-0002"}},
		{"older SGX components", simulate.QuoteFields{PCK: simulate.PCK{CPUSVN: []byte{2, 2, 2, 2, 3, 1, 0, 5, 0, 0, 0, 0, 0, 0, 0, 0}}}, simulate.CollateralOptions{},
			"OutOfDate", []string{"INTEL-SA-SIM-0001", "INTEL-SA-SIM-0002"}},
		{"QE out of date", simulate.QuoteFields{}, simulate.CollateralOptions{QEOutOfDate: true},
			"OutOfDate", []string{"INTEL-SA-SIM-0005"}},
		{"TDX module out of date", simulate.QuoteFields{Version: 5, BodyType: 3, TEETCBSVN: []byte{4, 1, 3, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0}}, simulate.CollateralOptions{},
			"OutOfDate", []string{"INTEL-SA-SIM-0004"}},
		{"configuration needed", simulate.QuoteFields{}, simulate.CollateralOptions{TCBLevels: withStatus("ConfigurationNeeded")},
			"ConfigurationNeeded", nil},
		{"configuration needed, QE out of date", simulate.QuoteFields{}, simulate.CollateralOptions{TCBLevels: withStatus("ConfigurationNeeded"), QEOutOfDate: true},
			"OutOfDateConfigurationNeeded", []string{"INTEL-SA-SIM-0005"}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			v := simVerifier(t, intel, collateral(t, intel, tc.opts), simTime)
			c, err := verify(t, v, quote(t, intel, tc.f))
			if err != nil {
				t.Fatalf("a known TCB level must verify: %v", err)
			}
			if c.TDX.TCBStatus != tc.status || strings.Join(c.TDX.AdvisoryIDs, ",") != strings.Join(tc.advisories, ",") {
				t.Errorf("status %q advisories %v, want %q %v", c.TDX.TCBStatus, c.TDX.AdvisoryIDs, tc.status, tc.advisories)
			}
		})
	}
}

// withStatus returns the default levels with the first one's status set.
func withStatus(s string) []simulate.TCBLevel {
	l := simulate.DefaultTCBLevels()
	l[0].Status = s
	return l
}

func TestTCBFailures(t *testing.T) {
	intel := fixtureIntel(t)
	revokedLevel := withStatus("Revoked")
	tests := []struct {
		name string
		f    simulate.QuoteFields
		opts simulate.CollateralOptions
		want attestation.Reason
	}{
		{"no matching level", simulate.QuoteFields{TEETCBSVN: make([]byte, 16)}, simulate.CollateralOptions{}, attestation.ReasonTCB},
		{"unknown TDX module version", simulate.QuoteFields{TEETCBSVN: []byte{6, 2, 3, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0}}, simulate.CollateralOptions{}, attestation.ReasonTCB},
		{"module SVN below every level", simulate.QuoteFields{TEETCBSVN: []byte{1, 1, 3, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0}}, simulate.CollateralOptions{}, attestation.ReasonTCB},
		{"MRSIGNERSEAM not Intel's", simulate.QuoteFields{MRSignerSeam: [48]byte{1}}, simulate.CollateralOptions{}, attestation.ReasonTCB},
		{"SEAM attributes", simulate.QuoteFields{SeamAttributes: [8]byte{1}}, simulate.CollateralOptions{}, attestation.ReasonTCB},
		{"QE below every level", simulate.QuoteFields{QESVN: 1}, simulate.CollateralOptions{}, attestation.ReasonTCB},
		{"revoked TCB level", simulate.QuoteFields{}, simulate.CollateralOptions{TCBLevels: revokedLevel}, attestation.ReasonRevoked},
		{"no TCB info for the FMSPC", simulate.QuoteFields{PCK: simulate.PCK{FMSPC: "00aa00bb00cc"}}, simulate.CollateralOptions{}, attestation.ReasonCollateral},
		{"TCB info but no level for the FMSPC", simulate.QuoteFields{PCK: simulate.PCK{FMSPC: "00aa00bb00cc", CPUSVN: make([]byte, 16)}},
			simulate.CollateralOptions{FMSPCs: []string{"00aa00bb00cc"}}, attestation.ReasonTCB},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			v := simVerifier(t, intel, collateral(t, intel, tc.opts), simTime)
			_, err := verify(t, v, quote(t, intel, tc.f))
			wantReason(t, err, tc.want)
		})
	}
}

func TestRevocation(t *testing.T) {
	intel := fixtureIntel(t)
	serial, err := simulate.PCKSerial(simulate.PCK{})
	if err != nil {
		t.Fatal(err)
	}
	q := quote(t, intel, simulate.QuoteFields{})
	for _, tc := range []struct {
		name string
		opts simulate.CollateralOptions
	}{
		{"PCK", simulate.CollateralOptions{RevokedPCKs: []*big.Int{big.NewInt(7), serial}}},
		{"PCK CA", simulate.CollateralOptions{RevokePCKCA: true}},
		{"TCB signing", simulate.CollateralOptions{RevokeTCBSigning: true}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			v := simVerifier(t, intel, collateral(t, intel, tc.opts), simTime)
			_, err := verify(t, v, q)
			wantReason(t, err, attestation.ReasonRevoked)
		})
	}
	t.Run("other PCK revoked", func(t *testing.T) {
		v := simVerifier(t, intel, collateral(t, intel, simulate.CollateralOptions{RevokedPCKs: []*big.Int{big.NewInt(7)}}), simTime)
		if _, err := verify(t, v, q); err != nil {
			t.Fatal(err)
		}
	})
}

// withoutCRLs drops the CRLs from col.
func withoutCRLs(col map[string]simulate.Response) map[string]simulate.Response {
	out := make(map[string]simulate.Response)
	for u, r := range col {
		if !strings.Contains(u, "crl") && !strings.HasSuffix(u, ".der") {
			out[u] = r
		}
	}
	return out
}

func TestRevocationOptional(t *testing.T) {
	intel := fixtureIntel(t)
	col := withoutCRLs(collateral(t, intel, simulate.CollateralOptions{}))
	q := quote(t, intel, simulate.QuoteFields{})
	opts := tdx.Options{Roots: emptyPool(), TestRootsPEM: intel.RootsPEM(), Now: at(simTime), Getter: mapGetter(col)}

	opts.CheckRevocation = true
	v, err := tdx.NewVerifier(opts)
	if err != nil {
		t.Fatal(err)
	}
	_, err = verify(t, v, q)
	wantReason(t, err, attestation.ReasonCollateral)

	opts.RevocationOptional = true
	if v, err = tdx.NewVerifier(opts); err != nil {
		t.Fatal(err)
	}
	c, err := verify(t, v, q)
	if err != nil {
		t.Fatal(err)
	}
	if c.Revocation != attestation.RevocationNotChecked {
		t.Errorf("Revocation = %q without CRLs", c.Revocation)
	}

	opts.CheckRevocation, opts.RevocationOptional = false, false
	if v, err = tdx.NewVerifier(opts); err != nil {
		t.Fatal(err)
	}
	if c, err = verify(t, v, q); err != nil || c.Revocation != attestation.RevocationNotChecked {
		t.Errorf("without revocation checking: %v, %v", c, err)
	}

	// An obtained CRL must still verify, optional or not.
	full := collateral(t, intel, simulate.CollateralOptions{RevokedPCKs: []*big.Int{mustSerial(t)}})
	opts.CheckRevocation, opts.RevocationOptional, opts.Getter = true, true, mapGetter(full)
	if v, err = tdx.NewVerifier(opts); err != nil {
		t.Fatal(err)
	}
	_, err = verify(t, v, q)
	wantReason(t, err, attestation.ReasonRevoked)
}

func mustSerial(t *testing.T) *big.Int {
	s, err := simulate.PCKSerial(simulate.PCK{})
	if err != nil {
		t.Fatal(err)
	}
	return s
}

func TestCollateralTimes(t *testing.T) {
	intel := fixtureIntel(t)
	q := quote(t, intel, simulate.QuoteFields{})
	col := collateral(t, intel, simulate.CollateralOptions{})
	for _, tc := range []struct {
		name string
		now  time.Time
		want attestation.Reason
	}{
		{"after nextUpdate", simulate.FixtureTime.Add(30 * 24 * time.Hour), attestation.ReasonCollateralExpired},
		{"long after nextUpdate", simulate.FixtureTime.AddDate(1, 0, 0), attestation.ReasonCollateralExpired},
		{"before issueDate", simulate.FixtureTime.Add(-time.Second), attestation.ReasonCollateralExpired},
		{"certificates not yet valid", simulate.CertsNotBefore.Add(-time.Hour), attestation.ReasonUntrustedRoot},
		{"PCK certificate expired", simulate.PCKNotAfter.Add(time.Hour), attestation.ReasonUntrustedRoot},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := verify(t, simVerifier(t, intel, col, tc.now), q)
			wantReason(t, err, tc.want)
		})
	}
	t.Run("stale CRL only", func(t *testing.T) {
		fresh, err := intel.Collateral(simulate.FixtureTime.Add(40*24*time.Hour), simulate.CollateralOptions{})
		if err != nil {
			t.Fatal(err)
		}
		mixed := make(map[string]simulate.Response)
		for u, r := range fresh {
			mixed[u] = r
		}
		mixed[simulate.RootCRLURL] = col[simulate.RootCRLURL]
		_, err = verify(t, simVerifier(t, intel, mixed, simulate.FixtureTime.Add(41*24*time.Hour)), q)
		wantReason(t, err, attestation.ReasonCollateralExpired)
	})
}

func TestUntrustedRoot(t *testing.T) {
	intel := fixtureIntel(t)
	q := quote(t, intel, simulate.QuoteFields{})
	col := collateral(t, intel, simulate.CollateralOptions{})

	// Genuine roots only: the simulated chain is not trusted.
	v, err := tdx.NewVerifier(tdx.Options{Now: at(simTime), CheckRevocation: true, Getter: mapGetter(col)})
	if err != nil {
		t.Fatal(err)
	}
	if v.TrustsTestRoots() {
		t.Error("TrustsTestRoots() = true without TestRootsPEM")
	}
	_, err = verify(t, v, q)
	wantReason(t, err, attestation.ReasonUntrustedRoot)

	// Another simulator's roots: same names, other keys.
	other, err := simulate.New(bytes.NewReader(bytes.Repeat([]byte{0x42}, 32*5)))
	if err != nil {
		t.Fatal(err)
	}
	_, err = verify(t, simVerifier(t, other, col, simTime), q)
	wantReason(t, err, attestation.ReasonUntrustedRoot)

	// Genuine chain, collateral signed by the simulator: the TCB signing
	// chain is not trusted.
	_, err = verify(t, simVerifier(t, intel, collateral(t, other, simulate.CollateralOptions{}), simTime), q)
	wantReason(t, err, attestation.ReasonUntrustedRoot)
}

func TestCollateralTampering(t *testing.T) {
	intel := fixtureIntel(t)
	q := quote(t, intel, simulate.QuoteFields{})
	tcbURL := "https://api.trustedservices.intel.com/tdx/certification/v4/tcb?fmspc=" + simulate.DefaultFMSPC
	qeURL := "https://api.trustedservices.intel.com/tdx/certification/v4/qe/identity"
	pckCRLURL := "https://api.trustedservices.intel.com/sgx/certification/v4/pckcrl?ca=platform&encoding=der"
	tests := []struct {
		name   string
		url    string
		change func(r *simulate.Response)
		want   attestation.Reason
	}{
		{"TCB info level changed", tcbURL, func(r *simulate.Response) {
			r.Body = bytes.Replace(r.Body, []byte(`"tcbStatus":"OutOfDate"`), []byte(`"tcbStatus":"UpToDate"`), 1)
		}, attestation.ReasonSignature},
		{"TCB info signature", tcbURL, func(r *simulate.Response) { r.Body[len(r.Body)-3] ^= 1 }, attestation.ReasonSignature},
		{"TCB info not JSON", tcbURL, func(r *simulate.Response) { r.Body = []byte("<html>") }, attestation.ReasonCollateral},
		{"TCB info without issuer chain", tcbURL, func(r *simulate.Response) { r.Header = nil }, attestation.ReasonCollateral},
		{"QE identity changed", qeURL, func(r *simulate.Response) {
			r.Body = bytes.Replace(r.Body, []byte(`"isvprodid":2`), []byte(`"isvprodid":3`), 1)
		}, attestation.ReasonSignature},
		{"QE identity signed by the PCK CA chain", qeURL, func(r *simulate.Response) {
			r.Header = map[string][]string{"Sgx-Enclave-Identity-Issuer-Chain": {url0(t, intel, "pck")}}
		}, attestation.ReasonUntrustedRoot},
		{"PCK CRL signature", pckCRLURL, func(r *simulate.Response) { r.Body[len(r.Body)-1] ^= 1 }, attestation.ReasonSignature},
		{"PCK CRL garbage", pckCRLURL, func(r *simulate.Response) { r.Body = []byte("x") }, attestation.ReasonCollateral},
		{"root CRL from the PCK CA", simulate.RootCRLURL, func(r *simulate.Response) {
			r.Body = collateral(t, intel, simulate.CollateralOptions{})[pckCRLURL].Body
		}, attestation.ReasonSignature},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			col := collateral(t, intel, simulate.CollateralOptions{})
			r := col[tc.url]
			r.Body = bytes.Clone(r.Body)
			tc.change(&r)
			col[tc.url] = r
			_, err := verify(t, simVerifier(t, intel, col, simTime), q)
			wantReason(t, err, tc.want)
		})
	}
}

// url0 is an issuer-chain header value for the PCK CA and root: a valid
// chain, but not one whose leaf is a TCB signing certificate.
func url0(t *testing.T, intel *simulate.Intel, _ string) string {
	col := collateral(t, intel, simulate.CollateralOptions{})
	return col["https://api.trustedservices.intel.com/sgx/certification/v4/pckcrl?ca=platform&encoding=der"].Header["Sgx-Pck-Crl-Issuer-Chain"][0]
}

// TestCacheFollowsCollateral checks that the caches key on content: a
// verifier that accepted a quote rejects it once the served CRL revokes
// the PCK, and accepts new collateral issued later.
func TestCacheFollowsCollateral(t *testing.T) {
	intel := fixtureIntel(t)
	q := quote(t, intel, simulate.QuoteFields{})
	col := mapGetter(collateral(t, intel, simulate.CollateralOptions{}))
	now := simTime
	v, err := tdx.NewVerifier(tdx.Options{Roots: emptyPool(), TestRootsPEM: intel.RootsPEM(), Now: func() time.Time { return now }, CheckRevocation: true, Getter: col})
	if err != nil {
		t.Fatal(err)
	}
	for range 2 {
		if _, err := verify(t, v, q); err != nil {
			t.Fatal(err)
		}
	}
	revoked := collateral(t, intel, simulate.CollateralOptions{RevokedPCKs: []*big.Int{mustSerial(t)}})
	pckCRL := "https://api.trustedservices.intel.com/sgx/certification/v4/pckcrl?ca=platform&encoding=der"
	col[pckCRL] = revoked[pckCRL]
	_, err = verify(t, v, q)
	wantReason(t, err, attestation.ReasonRevoked)

	// Time moves past nextUpdate: cached documents are not reused.
	now = simulate.FixtureTime.Add(31 * 24 * time.Hour)
	_, err = verify(t, v, q)
	wantReason(t, err, attestation.ReasonCollateralExpired)
	later, err := intel.Collateral(simulate.FixtureTime.Add(30*24*time.Hour), simulate.CollateralOptions{})
	if err != nil {
		t.Fatal(err)
	}
	for u, r := range later {
		col[u] = r
	}
	if _, err := verify(t, v, q); err != nil {
		t.Fatal(err)
	}
}

func TestNewVerifierOptions(t *testing.T) {
	intel := fixtureIntel(t)
	if _, err := tdx.NewVerifier(tdx.Options{}); err == nil {
		t.Error("NewVerifier without a Getter succeeded")
	}
	getter := mapGetter(nil)
	if _, err := tdx.NewVerifier(tdx.Options{Roots: emptyPool(), Getter: getter}); err == nil {
		t.Error("NewVerifier with no roots succeeded")
	}
	genuine := []byte("-----BEGIN CERTIFICATE-----\n" + base64Cert(tdx.GenuineRoot().Raw) + "-----END CERTIFICATE-----\n")
	if _, err := tdx.NewVerifier(tdx.Options{TestRootsPEM: genuine, Getter: getter}); err == nil {
		t.Error("the genuine Intel root was accepted as a test root")
	}
	if _, err := tdx.NewVerifier(tdx.Options{TestRootsPEM: []byte("junk"), Getter: getter}); err == nil {
		t.Error("junk test roots accepted")
	}
	if !tdx.IsTestCertificate(intel.Root()) || tdx.IsTestCertificate(tdx.GenuineRoot()) || tdx.IsTestCertificate(nil) {
		t.Error("IsTestCertificate does not tell simulated from genuine")
	}
}
