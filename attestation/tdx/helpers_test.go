package tdx_test

import (
	"context"
	"crypto/x509"
	"encoding/base64"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"encoding/json"
	"github.com/attested-kms/attested-kms/attestation"
	"github.com/attested-kms/attested-kms/attestation/tdx"
	"github.com/attested-kms/attested-kms/attestation/tdx/simulate"
)

const fixtures = "../../test/fixtures/tdx"

// dirGetter serves a collateral directory (see simulate.CollateralPath).
type dirGetter string

func (d dirGetter) Get(u string) (map[string][]string, []byte, error) {
	name, err := simulate.CollateralPath(u)
	if err != nil {
		return nil, nil, err
	}
	p := filepath.Join(string(d), name)
	body, err := os.ReadFile(p)
	if err != nil {
		return nil, nil, fmt.Errorf("collateral for %s: %w", u, err)
	}
	var hdr map[string][]string
	if h, err := os.ReadFile(p + ".headers.json"); err == nil {
		if err := json.Unmarshal(h, &hdr); err != nil {
			return nil, nil, err
		}
	} else if !errors.Is(err, os.ErrNotExist) {
		return nil, nil, err
	}
	return hdr, body, nil
}

// mapGetter serves simulate.Intel.Collateral output.
type mapGetter map[string]simulate.Response

func (m mapGetter) Get(u string) (map[string][]string, []byte, error) {
	r, ok := m[u]
	if !ok {
		return nil, nil, fmt.Errorf("no collateral for %s", u)
	}
	return r.Header, r.Body, nil
}

func readFixture(t testing.TB, name string) []byte {
	t.Helper()
	b, err := os.ReadFile(filepath.Join(fixtures, name))
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// fixtureIntel is the simulator whose keys made the committed fixtures.
func fixtureIntel(t testing.TB) *simulate.Intel {
	t.Helper()
	intel, err := simulate.Load(readFixture(t, "simulated/simulator.pem"))
	if err != nil {
		t.Fatal(err)
	}
	return intel
}

// simTime is when the simulated fixture collateral is current.
var simTime = simulate.FixtureTime.Add(time.Hour)

func at(t time.Time) func() time.Time { return func() time.Time { return t } }

// simVerifier trusts intel's roots and serves col, checking revocation.
func simVerifier(t testing.TB, intel *simulate.Intel, col map[string]simulate.Response, now time.Time) *tdx.Verifier {
	t.Helper()
	v, err := tdx.NewVerifier(tdx.Options{
		Roots:           emptyPool(),
		TestRootsPEM:    intel.RootsPEM(),
		Now:             at(now),
		CheckRevocation: true,
		Getter:          mapGetter(col),
	})
	if err != nil {
		t.Fatal(err)
	}
	return v
}

func collateral(t testing.TB, intel *simulate.Intel, opts simulate.CollateralOptions) map[string]simulate.Response {
	t.Helper()
	col, err := intel.Collateral(simulate.FixtureTime, opts)
	if err != nil {
		t.Fatal(err)
	}
	return col
}

func quote(t testing.TB, intel *simulate.Intel, f simulate.QuoteFields) []byte {
	t.Helper()
	q, err := intel.Quote(f)
	if err != nil {
		t.Fatal(err)
	}
	return q
}

func wantReason(t *testing.T, err error, want attestation.Reason) {
	t.Helper()
	if err == nil {
		t.Fatalf("verification succeeded, want %s", want)
	}
	t.Logf("%v", err)
	if got := attestation.ReasonOf(err); got != want {
		t.Fatalf("reason %q (%v), want %q", got, err, want)
	}
}

func verify(t testing.TB, v *tdx.Verifier, q []byte) (*attestation.Claims, error) {
	t.Helper()
	return v.VerifyQuote(context.Background(), q)
}

func emptyPool() *x509.CertPool { return x509.NewCertPool() }

func base64Cert(der []byte) string {
	s := base64.StdEncoding.EncodeToString(der)
	var b strings.Builder
	for len(s) > 64 {
		b.WriteString(s[:64] + "\n")
		s = s[64:]
	}
	b.WriteString(s + "\n")
	return b.String()
}
