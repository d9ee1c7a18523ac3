package simulate

import (
	"crypto/rand"
	"encoding/json"
	"errors"
	"fmt"
	"net/url"
	"os"
	"path"
	"path/filepath"
	"sort"
	"strings"
	"time"

	tdxtesting "github.com/google/go-tdx-guest/testing"
	"github.com/google/go-tdx-guest/testing/testdata"
)

// FixtureTime is when the simulated fixture collateral is issued; it is
// current for 30 days from then.
var FixtureTime = time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)

// FixtureReportData is the report data of the simulated fixture quotes.
func FixtureReportData() [64]byte {
	var rd [64]byte
	copy(rd[:], "attested-kms tdx simulated fixture")
	return rd
}

// Fixture file names under <dir>/simulated and <dir>/genuine.
const (
	SimulatorKeyFile = "simulator.pem"
	// RootsFile holds the simulator's root CA certificate only.
	RootsFile     = "roots.pem"
	CollateralDir = "collateral"
)

// SimulatedQuotes are the simulated fixture quotes by file name.
var SimulatedQuotes = map[string]QuoteFields{
	"quote_v4.dat":       {Version: 4},
	"quote_v5_tdx10.dat": {Version: 5, BodyType: 2},
	"quote_v5_tdx15.dat": {Version: 5, BodyType: 3, TEETCBSVN: []byte{6, 1, 3, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0}},
}

// Generate writes the TDX fixtures under dir (test/fixtures/tdx):
// dir/simulated (quotes and collateral from the simulator whose keys are
// in dir/simulated/simulator.pem, created on first use) and dir/genuine
// (go-tdx-guest's genuine Intel quotes and collateral). With the key file
// in place, the output is byte-identical on every run.
func Generate(dir string) error {
	sim := filepath.Join(dir, "simulated")
	keyPath := filepath.Join(sim, SimulatorKeyFile)
	keyPEM, err := os.ReadFile(keyPath)
	var intel *Intel
	switch {
	case err == nil:
		intel, err = Load(keyPEM)
	case errors.Is(err, os.ErrNotExist):
		if intel, err = New(rand.Reader); err == nil {
			keyPEM, err = intel.MarshalPEM()
		}
	}
	if err != nil {
		return fmt.Errorf("simulate: simulator keys: %w", err)
	}
	if err := GenerateSimulated(sim, intel); err != nil {
		return err
	}
	if err := writeFile(keyPath, keyPEM, 0o600); err != nil {
		return err
	}
	return GenerateGenuine(filepath.Join(dir, "genuine"))
}

// GenerateSimulated writes intel's fixture quotes and collateral (issued
// at FixtureTime) into dir; not the key file.
func GenerateSimulated(dir string, intel *Intel) error {
	for name, f := range SimulatedQuotes {
		f.ReportData = FixtureReportData()
		q, err := intel.Quote(f)
		if err != nil {
			return err
		}
		if err := writeFile(filepath.Join(dir, name), q, 0o644); err != nil {
			return err
		}
	}
	// The roots alone, for configurations and `kms evidence verify
	// --test-roots` (the key file is not a roots file).
	if err := writeFile(filepath.Join(dir, RootsFile), intel.RootsPEM(), 0o644); err != nil {
		return err
	}
	col, err := intel.Collateral(FixtureTime, CollateralOptions{})
	if err != nil {
		return err
	}
	return WriteCollateralDir(filepath.Join(dir, CollateralDir), col)
}

// GenerateGenuine copies go-tdx-guest's genuine Intel test data into dir:
// the v4 quote (tdx_prod_quote_SPR_E4.dat), the v5 quote
// (quote_v5_sample.dat) and the collateral go-tdx-guest's TestGetter
// serves, with its issuer-chain headers.
func GenerateGenuine(dir string) error {
	if err := writeFile(filepath.Join(dir, "quote_v4.dat"), testdata.RawQuote, 0o644); err != nil {
		return err
	}
	if err := writeFile(filepath.Join(dir, "quote_v5.dat"), testdata.RawQuoteV5, 0o644); err != nil {
		return err
	}
	col := make(map[string]Response)
	for u, r := range tdxtesting.TestGetter.Responses {
		col[u] = Response{Header: r.Header, Body: r.Body}
	}
	return WriteCollateralDir(filepath.Join(dir, CollateralDir), col)
}

// CollateralPath maps a collateral URL to its file in a collateral
// directory: <host><path>, plus "@<query>" with '&' replaced by ',' when
// the URL has a query. Response headers go to the same name plus
// ".headers.json".
func CollateralPath(u string) (string, error) {
	p, err := url.Parse(u)
	if err != nil {
		return "", err
	}
	if p.Host == "" || p.Path == "" || strings.Contains(p.Host, "..") || path.Clean(p.Path) != p.Path || strings.Contains(p.RawQuery, "/") {
		return "", fmt.Errorf("simulate: URL %q has no safe collateral path", u)
	}
	name := p.Host + p.Path
	if p.RawQuery != "" {
		name += "@" + strings.ReplaceAll(p.RawQuery, "&", ",")
	}
	return filepath.FromSlash(name), nil
}

// WriteCollateralDir writes responses into dir in the collateral
// directory format (see CollateralPath).
func WriteCollateralDir(dir string, responses map[string]Response) error {
	urls := make([]string, 0, len(responses))
	for u := range responses {
		urls = append(urls, u)
	}
	sort.Strings(urls)
	for _, u := range urls {
		name, err := CollateralPath(u)
		if err != nil {
			return err
		}
		r := responses[u]
		if err := writeFile(filepath.Join(dir, name), r.Body, 0o644); err != nil {
			return err
		}
		if len(r.Header) == 0 {
			continue
		}
		h, err := json.MarshalIndent(r.Header, "", "  ")
		if err != nil {
			return err
		}
		if err := writeFile(filepath.Join(dir, name+".headers.json"), append(h, '\n'), 0o644); err != nil {
			return err
		}
	}
	return nil
}

func writeFile(name string, data []byte, mode os.FileMode) error {
	if err := os.MkdirAll(filepath.Dir(name), 0o755); err != nil {
		return err
	}
	return os.WriteFile(name, data, mode)
}
