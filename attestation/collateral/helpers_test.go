package collateral

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"fmt"
	"math/big"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"sync"
	"testing"
	"time"
)

// t0 is the fake clock's start; test documents are issued around it.
var t0 = time.Date(2025, time.March, 1, 12, 0, 0, 0, time.UTC)

// fakeClock is a settable clock for freshness tests.
type fakeClock struct {
	mu sync.Mutex
	t  time.Time
}

func newClock(t time.Time) *fakeClock { return &fakeClock{t: t} }

func (c *fakeClock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.t
}

func (c *fakeClock) Advance(d time.Duration) {
	c.mu.Lock()
	c.t = c.t.Add(d)
	c.mu.Unlock()
}

// sleepRecorder stands in for Config.Sleep: it records each delay and
// returns at once (or ctx's error).
type sleepRecorder struct {
	mu sync.Mutex
	ds []time.Duration
}

func (s *sleepRecorder) Sleep(ctx context.Context, d time.Duration) error {
	s.mu.Lock()
	s.ds = append(s.ds, d)
	s.mu.Unlock()
	return ctx.Err()
}

func (s *sleepRecorder) got() []time.Duration {
	s.mu.Lock()
	defer s.mu.Unlock()
	return append([]time.Duration(nil), s.ds...)
}

// vendor is an httptest TLS server standing in for KDS, PCS and Intel's
// certificate host at once; it counts requests per path and query.
type vendor struct {
	*httptest.Server
	mu     sync.Mutex
	hits   map[string]int
	routes map[string]http.HandlerFunc // by path+"?"+query, or path
}

func newVendor(t testing.TB) *vendor {
	v := &vendor{hits: map[string]int{}, routes: map[string]http.HandlerFunc{}}
	v.Server = httptest.NewTLSServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		key := r.URL.Path
		if r.URL.RawQuery != "" {
			key += "?" + r.URL.RawQuery
		}
		v.mu.Lock()
		v.hits[key]++
		h, ok := v.routes[key]
		if !ok {
			h, ok = v.routes[r.URL.Path]
		}
		v.mu.Unlock()
		if !ok {
			http.NotFound(w, r)
			return
		}
		h(w, r)
	}))
	t.Cleanup(v.Close)
	return v
}

// handle routes a path (optionally with "?query") to h.
func (v *vendor) handle(key string, h http.HandlerFunc) {
	v.mu.Lock()
	v.routes[key] = h
	v.mu.Unlock()
}

// serve routes key to a 200 answer with body and headers.
func (v *vendor) serve(key string, header http.Header, body []byte) {
	v.handle(key, func(w http.ResponseWriter, _ *http.Request) {
		for k, vs := range header {
			w.Header()[k] = vs
		}
		_, _ = w.Write(body)
	})
}

func (v *vendor) count(key string) int {
	v.mu.Lock()
	defer v.mu.Unlock()
	return v.hits[key]
}

func (v *vendor) total() int {
	v.mu.Lock()
	defer v.mu.Unlock()
	n := 0
	for _, c := range v.hits {
		n += c
	}
	return n
}

// Path prefixes under which the vendor server answers for each base, so
// the tests see the prefix rewrite, not just the host swap.
const (
	amdPrefix   = "/amd"
	pcsPrefix   = "/pcs"
	certsPrefix = "/certs"
)

// config returns a Config pointing every base at v, with a fake clock and
// a sleep recorder.
func (v *vendor) config(clk *fakeClock, sl *sleepRecorder) Config {
	return Config{
		AMDBaseURL:        v.URL + amdPrefix,
		IntelPCSBaseURL:   v.URL + pcsPrefix + "/",
		IntelCertsBaseURL: v.URL + certsPrefix,
		Client:            v.Client(),
		Now:               clk.Now,
		Sleep:             sl.Sleep,
	}
}

func newStore(t testing.TB, cfg Config) *Store {
	t.Helper()
	s, err := New(cfg)
	if err != nil {
		t.Fatalf("New: %v", err)
	}
	return s
}

// testCA issues the CRLs and certificates the freshness tests need.
type testCA struct {
	cert *x509.Certificate
	key  *ecdsa.PrivateKey
}

func newTestCA(t testing.TB) *testCA {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber:          big.NewInt(1),
		Subject:               pkix.Name{CommonName: "collateral test CA"},
		NotBefore:             t0.Add(-24 * time.Hour),
		NotAfter:              t0.Add(10 * 365 * 24 * time.Hour),
		IsCA:                  true,
		BasicConstraintsValid: true,
		KeyUsage:              x509.KeyUsageCertSign | x509.KeyUsageCRLSign,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	cert, err := x509.ParseCertificate(der)
	if err != nil {
		t.Fatal(err)
	}
	return &testCA{cert: cert, key: key}
}

// crl returns a DER CRL valid from thisUpdate to nextUpdate.
func (ca *testCA) crl(t testing.TB, number int64, thisUpdate, nextUpdate time.Time) []byte {
	t.Helper()
	der, err := x509.CreateRevocationList(rand.Reader, &x509.RevocationList{
		Number:     big.NewInt(number),
		ThisUpdate: thisUpdate,
		NextUpdate: nextUpdate,
	}, ca.cert, ca.key)
	if err != nil {
		t.Fatal(err)
	}
	return der
}

// leaf returns a DER certificate expiring at notAfter.
func (ca *testCA) leaf(t testing.TB, serial int64, notAfter time.Time) []byte {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P384(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	der, err := x509.CreateCertificate(rand.Reader, &x509.Certificate{
		SerialNumber: big.NewInt(serial),
		Subject:      pkix.Name{CommonName: fmt.Sprintf("leaf %d", serial)},
		NotBefore:    t0.Add(-time.Hour),
		NotAfter:     notAfter,
	}, ca.cert, &key.PublicKey, ca.key)
	if err != nil {
		t.Fatal(err)
	}
	return der
}

func pemCert(der []byte) []byte {
	return pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der})
}

// tcbInfo returns a TDX TCB info body with the given nextUpdate.
func tcbInfo(next time.Time) []byte {
	return fmt.Appendf(nil, `{"tcbInfo":{"id":"TDX","version":3,"issueDate":%q,"nextUpdate":%q,"fmspc":"50806f000000"},"signature":"00"}`,
		next.Add(-30*24*time.Hour).Format(time.RFC3339), next.Format(time.RFC3339))
}

func readFile(t testing.TB, name string) []byte {
	t.Helper()
	b, err := os.ReadFile(name)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func fixture(t testing.TB, name string) []byte {
	t.Helper()
	return readFile(t, filepath.Join("..", "..", "test", "fixtures", "sevsnp", name))
}

// Canonical URLs used throughout the tests.
const (
	urlMilanCRL   = "https://kdsintf.amd.com/vcek/v1/Milan/crl"
	urlMilanChain = "https://kdsintf.amd.com/vcek/v1/Milan/cert_chain"
	urlTCB        = "https://api.trustedservices.intel.com/tdx/certification/v4/tcb?fmspc=50806f000000"
	urlQEID       = "https://api.trustedservices.intel.com/tdx/certification/v4/qe/identity"
	urlPCKCRL     = "https://api.trustedservices.intel.com/sgx/certification/v4/pckcrl?ca=platform&encoding=der"
	urlRootCRL    = "https://certificates.trustedservices.intel.com/IntelSGXRootCA.der"
)

func mustRoot(t testing.TB, dir string) *os.Root {
	t.Helper()
	r, err := os.OpenRoot(dir)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { r.Close() })
	return r
}
