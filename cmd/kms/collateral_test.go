package main

import (
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"

	"github.com/attested-kms/attested-kms/attestation/collateral"
)

// fakeVendors serves a collateral directory the way AMD KDS and Intel PCS
// would, under one prefix per vendor, and counts requests.
func fakeVendors(t *testing.T, dir string) (*httptest.Server, func() []string) {
	t.Helper()
	var mu sync.Mutex
	var seen []string
	hosts := map[string]string{"/amd": collateral.HostAMDKDS, "/pcs": collateral.HostIntelPCS, "/certs": collateral.HostIntelCerts}
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		mu.Lock()
		seen = append(seen, r.URL.RequestURI())
		mu.Unlock()
		for prefix, host := range hosts {
			rest, ok := strings.CutPrefix(r.URL.RequestURI(), prefix)
			if !ok {
				continue
			}
			name, err := collateral.PathFor("https://" + host + rest)
			if err != nil {
				http.Error(w, err.Error(), http.StatusBadRequest)
				return
			}
			body, err := os.ReadFile(filepath.Join(dir, name))
			if err != nil {
				http.NotFound(w, r)
				return
			}
			if h, err := os.ReadFile(filepath.Join(dir, name+".headers.json")); err == nil {
				var hdr map[string][]string
				if err := json.Unmarshal(h, &hdr); err != nil {
					t.Error(err)
				}
				for k, vs := range hdr {
					for _, v := range vs {
						w.Header().Add(k, v)
					}
				}
			}
			w.Write(body)
			return
		}
		http.NotFound(w, r)
	}))
	t.Cleanup(srv.Close)
	return srv, func() []string { mu.Lock(); defer mu.Unlock(); return append([]string(nil), seen...) }
}

// collateral fetch --fmspc writes Intel's documents for a platform family
// into a directory that then serves an offline verification.
func TestCollateralFetchFMSPC(t *testing.T) {
	srv, seen := fakeVendors(t, filepath.Join(fixtures, "tdx/simulated/collateral"))
	out := filepath.Join(t.TempDir(), "collateral")
	base := []string{"collateral", "fetch", "--out", out, "--allow-plain-http",
		"--intel-pcs-url", srv.URL + "/pcs", "--intel-certs-url", srv.URL + "/certs", "--amd-kds-url", srv.URL + "/amd"}
	// The simulated Intel's platform family, as its quotes' claims say.
	stdout, errText, code := run(t, append(base, "--fmspc", "5e1a70000000")...)
	// The simulated root CA CRL lives at an .invalid host, so the genuine
	// root CRL URL is not served: fetch reports it and fails.
	if code != 1 || !strings.Contains(errText, "IntelSGXRootCA.der") {
		t.Fatalf("exit %d: %s\n%s", code, errText, stdout)
	}
	for _, doc := range []string{"tdx/certification/v4/tcb@fmspc=5e1a70000000", "tdx/certification/v4/qe/identity", "sgx/certification/v4/pckcrl@ca=platform,encoding=der"} {
		if _, err := os.Stat(filepath.Join(out, collateral.HostIntelPCS, doc)); err != nil {
			t.Errorf("%s not written: %v", doc, err)
		}
	}
	if len(seen()) == 0 || !strings.HasPrefix(seen()[0], "/pcs/tdx/certification/v4/tcb?fmspc=5e1a70000000") {
		t.Fatalf("requests %v", seen())
	}

	// Plain http is refused unless asked for, and bad input is a usage error.
	for _, args := range [][]string{
		{"collateral", "fetch", "--out", out, "--intel-pcs-url", srv.URL + "/pcs", "--fmspc", "5e1a70000000"},
		{"collateral", "fetch", "--out", out, "--fmspc", "xyz"},
		{"collateral", "fetch", "--out", out, "--amd-product", "Naples"},
		{"collateral", "fetch", "--out", out},
		{"collateral", "fetch", "--out", out, "--type", "tdx"},
	} {
		if _, errText, code := run(t, args...); code != 1 || errText == "" {
			t.Errorf("%v: exit %d (%s), want a usage error", args, code, errText)
		}
	}
}
