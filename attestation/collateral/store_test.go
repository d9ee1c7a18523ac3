package collateral

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"reflect"
	"runtime"
	"strings"
	"sync"
	"testing"
	"time"
)

func TestBaseURLRewrite(t *testing.T) {
	ca := newTestCA(t)
	v := newVendor(t)
	crl := ca.crl(t, 1, t0, t0.Add(24*time.Hour))
	chain := append(pemCert(ca.leaf(t, 2, t0.Add(time.Hour*1000))), pemCert(ca.cert.Raw)...)
	tests := []struct {
		canonical, served string
		body              []byte
	}{
		{urlMilanCRL, amdPrefix + "/vcek/v1/Milan/crl", crl},
		{urlMilanChain, amdPrefix + "/vcek/v1/Milan/cert_chain", chain},
		{urlTCB, pcsPrefix + "/tdx/certification/v4/tcb?fmspc=50806f000000", tcbInfo(t0.Add(time.Hour))},
		{urlPCKCRL, pcsPrefix + "/sgx/certification/v4/pckcrl?ca=platform&encoding=der", crl},
		{urlRootCRL, certsPrefix + "/IntelSGXRootCA.der", crl},
	}
	for _, tc := range tests {
		v.serve(tc.served, nil, tc.body)
	}
	s := newStore(t, v.config(newClock(t0), &sleepRecorder{}))
	for _, tc := range tests {
		doc, err := s.Fetch(context.Background(), tc.canonical)
		if err != nil {
			t.Fatalf("Fetch(%s): %v", tc.canonical, err)
		}
		if doc.URL != tc.canonical || !bytes.Equal(doc.Body, tc.body) {
			t.Errorf("Fetch(%s) = URL %s, %d bytes; want the canonical URL and %d bytes", tc.canonical, doc.URL, len(doc.Body), len(tc.body))
		}
		if n := v.count(tc.served); n != 1 {
			t.Errorf("%s requested %d times, want 1", tc.served, n)
		}
	}
}

func TestDefaultBasesAreTheVendors(t *testing.T) {
	s := newStore(t, Config{})
	for _, u := range []string{urlMilanCRL, urlTCB, urlRootCRL} {
		d, err := parseDocURL(u)
		if err != nil {
			t.Fatal(err)
		}
		if got := s.bases[d.host].fetchURL(d); got != u {
			t.Errorf("default fetch URL %s, want %s", got, u)
		}
	}
}

func TestBaseURLValidation(t *testing.T) {
	for _, tc := range []struct {
		cfg Config
		ok  bool
	}{
		{Config{IntelPCSBaseURL: "https://global.acccache.azure.net"}, true},
		{Config{IntelPCSBaseURL: "https://pccs.internal:8081/"}, true},
		{Config{IntelPCSBaseURL: "http://127.0.0.1:8081"}, false},
		{Config{IntelPCSBaseURL: "http://127.0.0.1:8081", AllowHTTP: true}, true},
		{Config{AMDBaseURL: "ftp://kds"}, false},
		{Config{AMDBaseURL: "https://"}, false},
		{Config{AMDBaseURL: "https://kds/?x=1"}, false},
		{Config{AMDBaseURL: "https://user:pw@kds/"}, false},
		{Config{Offline: true}, false}, // offline needs Dir
		{Config{Offline: true, Dir: "/nonexistent/collateral"}, false},
		{Config{MaxAttempts: -1}, false},
	} {
		_, err := New(tc.cfg)
		if (err == nil) != tc.ok {
			t.Errorf("New(%+v) error %v, want ok=%v", tc.cfg, err, tc.ok)
		}
	}
}

func TestCacheHitWithinNextUpdate(t *testing.T) {
	ca := newTestCA(t)
	v := newVendor(t)
	const served = amdPrefix + "/vcek/v1/Milan/crl"
	v.serve(served, nil, ca.crl(t, 1, t0, t0.Add(24*time.Hour)))
	clk := newClock(t0)
	s := newStore(t, v.config(clk, &sleepRecorder{}))
	for i := 0; i < 5; i++ {
		doc, err := s.Fetch(context.Background(), urlMilanCRL)
		if err != nil {
			t.Fatal(err)
		}
		if !doc.NextUpdate.Equal(t0.Add(24*time.Hour)) || doc.Stale {
			t.Fatalf("NextUpdate %v stale %v, want %v and fresh", doc.NextUpdate, doc.Stale, t0.Add(24*time.Hour))
		}
		doc.Body[0] ^= 0xff // the caller owns its copy; the cache must not change
		clk.Advance(4 * time.Hour)
	}
	if n := v.count(served); n != 1 {
		t.Errorf("server hit %d times within next update, want 1", n)
	}
}

func TestRefetchAfterNextUpdate(t *testing.T) {
	v := newVendor(t)
	const served = pcsPrefix + "/tdx/certification/v4/tcb?fmspc=50806f000000"
	first, second := tcbInfo(t0.Add(24*time.Hour)), tcbInfo(t0.Add(48*time.Hour))
	v.serve(served, nil, first)
	clk := newClock(t0)
	s := newStore(t, v.config(clk, &sleepRecorder{}))
	if doc, err := s.Fetch(context.Background(), urlTCB); err != nil || !bytes.Equal(doc.Body, first) {
		t.Fatalf("first Fetch: %v", err)
	}
	v.serve(served, nil, second)
	clk.Advance(24*time.Hour - time.Second)
	if doc, _ := s.Fetch(context.Background(), urlTCB); !bytes.Equal(doc.Body, first) {
		t.Error("refetched before next update")
	}
	clk.Advance(time.Second)
	doc, err := s.Fetch(context.Background(), urlTCB)
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(doc.Body, second) || !doc.NextUpdate.Equal(t0.Add(48*time.Hour)) {
		t.Errorf("after next update got NextUpdate %v, want the new document", doc.NextUpdate)
	}
	if n := v.count(served); n != 2 {
		t.Errorf("server hit %d times, want 2", n)
	}
}

func TestSingleflight(t *testing.T) {
	ca := newTestCA(t)
	v := newVendor(t)
	body := ca.crl(t, 1, t0, t0.Add(24*time.Hour))
	started, release := make(chan struct{}), make(chan struct{})
	var once sync.Once
	v.handle(amdPrefix+"/vcek/v1/Milan/crl", func(w http.ResponseWriter, _ *http.Request) {
		once.Do(func() { close(started) })
		<-release
		_, _ = w.Write(body)
	})
	s := newStore(t, v.config(newClock(t0), &sleepRecorder{}))
	const n = 16
	var wg sync.WaitGroup
	errs := make(chan error, n)
	for i := 0; i < n; i++ {
		wg.Go(func() {
			doc, err := s.Fetch(context.Background(), urlMilanCRL)
			if err == nil && !bytes.Equal(doc.Body, body) {
				err = errors.New("wrong body")
			}
			errs <- err
		})
	}
	<-started
	// Wait, without a timer, until every caller has either joined the
	// flight or (were the store broken) sent its own request.
	for s.flights.inFlight(urlMilanCRL) < n && v.total() < n {
		runtime.Gosched()
	}
	close(release)
	wg.Wait()
	close(errs)
	for err := range errs {
		if err != nil {
			t.Error(err)
		}
	}
	if got := v.total(); got != 1 {
		t.Errorf("%d concurrent Fetches made %d requests, want 1", n, got)
	}
}

// TestSingleflightCallerCancel: a waiter giving up does not fail the
// others; the last one leaving cancels the request.
func TestSingleflightCallerCancel(t *testing.T) {
	ca := newTestCA(t)
	v := newVendor(t)
	body := ca.crl(t, 1, t0, t0.Add(24*time.Hour))
	started, release := make(chan struct{}), make(chan struct{})
	var once sync.Once
	v.handle(amdPrefix+"/vcek/v1/Milan/crl", func(w http.ResponseWriter, _ *http.Request) {
		once.Do(func() { close(started) })
		<-release
		_, _ = w.Write(body)
	})
	s := newStore(t, v.config(newClock(t0), &sleepRecorder{}))
	ctx1, cancel1 := context.WithCancel(context.Background())
	res1, res2 := make(chan error, 1), make(chan error, 1)
	go func() { _, err := s.Fetch(ctx1, urlMilanCRL); res1 <- err }()
	<-started
	go func() { _, err := s.Fetch(context.Background(), urlMilanCRL); res2 <- err }()
	for s.flights.inFlight(urlMilanCRL) < 2 && v.total() < 2 {
		runtime.Gosched()
	}
	cancel1()
	if err := <-res1; !errors.Is(err, context.Canceled) {
		t.Errorf("cancelled caller got %v, want context.Canceled", err)
	}
	close(release)
	if err := <-res2; err != nil {
		t.Errorf("patient caller got %v", err)
	}
}

func TestRetry(t *testing.T) {
	ca := newTestCA(t)
	body := ca.crl(t, 1, t0, t0.Add(24*time.Hour))
	tests := []struct {
		name       string
		code       int
		retryAfter string
		maxBackoff time.Duration
		want       []time.Duration
	}{
		{"429 without Retry-After", 429, "", 0, []time.Duration{2 * time.Second, 4 * time.Second, 8 * time.Second}},
		{"429 Retry-After seconds", 429, "7", 0, []time.Duration{7 * time.Second, 7 * time.Second, 7 * time.Second}},
		{"429 Retry-After date", 429, t0.Add(9 * time.Second).Format(http.TimeFormat), 0, []time.Duration{9 * time.Second, 9 * time.Second, 9 * time.Second}},
		{"429 Retry-After capped", 429, "3600", 20 * time.Second, []time.Duration{20 * time.Second, 20 * time.Second, 20 * time.Second}},
		{"backoff capped", 429, "", 5 * time.Second, []time.Duration{2 * time.Second, 4 * time.Second, 5 * time.Second}},
		{"503", 503, "", 0, []time.Duration{2 * time.Second, 4 * time.Second, 8 * time.Second}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			v := newVendor(t)
			const served = amdPrefix + "/vcek/v1/Milan/crl"
			failures := len(tc.want)
			v.handle(served, func(w http.ResponseWriter, _ *http.Request) {
				if v.count(served) <= failures {
					if tc.retryAfter != "" {
						w.Header().Set("Retry-After", tc.retryAfter)
					}
					w.WriteHeader(tc.code)
					return
				}
				_, _ = w.Write(body)
			})
			sl := &sleepRecorder{}
			cfg := v.config(newClock(t0), sl)
			cfg.MaxBackoff = tc.maxBackoff
			s := newStore(t, cfg)
			doc, err := s.Fetch(context.Background(), urlMilanCRL)
			if err != nil {
				t.Fatalf("Fetch after %d failures: %v", failures, err)
			}
			if !bytes.Equal(doc.Body, body) {
				t.Error("wrong body")
			}
			if got := sl.got(); !reflect.DeepEqual(got, tc.want) {
				t.Errorf("slept %v, want %v", got, tc.want)
			}
		})
	}
}

func Test429Forever(t *testing.T) {
	v := newVendor(t)
	const served = amdPrefix + "/vcek/v1/Milan/crl"
	v.handle(served, func(w http.ResponseWriter, _ *http.Request) {
		w.Header().Set("Retry-After", "1")
		w.WriteHeader(http.StatusTooManyRequests)
	})
	sl := &sleepRecorder{}
	cfg := v.config(newClock(t0), sl)
	cfg.MaxAttempts = 3
	s := newStore(t, cfg)
	_, err := s.Fetch(context.Background(), urlMilanCRL)
	if err == nil || !strings.Contains(err.Error(), "giving up after 3 attempts") || !strings.Contains(err.Error(), "429") {
		t.Fatalf("error %v, want one naming 3 attempts and HTTP 429", err)
	}
	if errors.Is(err, ErrNotFound) {
		t.Error("throttling reported as not found")
	}
	if n := v.count(served); n != 3 {
		t.Errorf("%d requests, want 3", n)
	}
	if got := sl.got(); len(got) != 2 {
		t.Errorf("slept %v, want 2 delays", got)
	}
}

func TestCancelDuringBackoff(t *testing.T) {
	v := newVendor(t)
	const served = amdPrefix + "/vcek/v1/Milan/crl"
	v.handle(served, func(w http.ResponseWriter, _ *http.Request) { w.WriteHeader(http.StatusTooManyRequests) })
	ctx, cancel := context.WithCancel(context.Background())
	cfg := v.config(newClock(t0), nil)
	cfg.Sleep = func(ctx context.Context, _ time.Duration) error {
		cancel() // the caller gives up while the store waits
		return sleepContext(ctx, time.Hour)
	}
	s := newStore(t, cfg)
	_, err := s.Fetch(ctx, urlMilanCRL)
	if !errors.Is(err, context.Canceled) {
		t.Fatalf("error %v, want context.Canceled", err)
	}
	if n := v.count(served); n != 1 {
		t.Errorf("%d requests after cancellation, want 1", n)
	}
}

func TestNotFound(t *testing.T) {
	v := newVendor(t) // answers 404 for everything unrouted
	clk := newClock(t0)
	s := newStore(t, v.config(clk, &sleepRecorder{}))
	const u = "https://kdsintf.amd.com/vcek/v1/Milan/00ff?blSPL=1&teeSPL=0&snpSPL=2&ucodeSPL=3"
	for i := 0; i < 3; i++ {
		if _, err := s.Fetch(context.Background(), u); !errors.Is(err, ErrNotFound) {
			t.Fatalf("error %v, want ErrNotFound", err)
		}
	}
	if n := v.total(); n != 1 {
		t.Errorf("%d requests for a remembered 404, want 1", n)
	}
	clk.Advance(DefaultFailureTTL)
	if _, err := s.Fetch(context.Background(), u); !errors.Is(err, ErrNotFound) {
		t.Fatalf("error %v, want ErrNotFound", err)
	}
	if n := v.total(); n != 2 {
		t.Errorf("%d requests after the 404 was forgotten, want 2", n)
	}
}

// failingClient fails the test if the store makes any connection.
func failingClient(t *testing.T) *http.Client {
	return &http.Client{Transport: &http.Transport{
		DialContext: func(context.Context, string, string) (net.Conn, error) {
			t.Error("offline store dialled out")
			return nil, errors.New("no network in offline mode")
		},
		DialTLSContext: func(context.Context, string, string) (net.Conn, error) {
			t.Error("offline store dialled out")
			return nil, errors.New("no network in offline mode")
		},
	}}
}

func TestOffline(t *testing.T) {
	dir := t.TempDir()
	ca := newTestCA(t)
	if err := WriteDocument(dir, urlTCB, nil, tcbInfo(t0.Add(time.Hour))); err != nil {
		t.Fatal(err)
	}
	// A headers file written by hand, with Intel's spelling of the name.
	const chain = "-----BEGIN%20CERTIFICATE-----%0A..."
	rel, _ := PathFor(urlTCB)
	hj := `{"TCB-Info-Issuer-Chain": ["` + chain + `"], "Date": ["dropped"]}`
	if err := os.WriteFile(filepath.Join(dir, filepath.FromSlash(rel))+".headers.json", []byte(hj), 0o644); err != nil {
		t.Fatal(err)
	}
	crl := ca.crl(t, 1, t0, t0.Add(time.Hour))
	if err := WriteDocument(dir, urlMilanCRL, nil, crl); err != nil {
		t.Fatal(err)
	}
	// Offline pointed at a live vendor that fails the test if asked.
	v := newVendor(t)
	v.handle("/", func(http.ResponseWriter, *http.Request) { t.Error("offline store reached the server") })
	clk := newClock(t0)
	cfg := v.config(clk, &sleepRecorder{})
	cfg.Dir, cfg.Offline, cfg.Client = dir, true, failingClient(t)
	s := newStore(t, cfg)

	h, body, err := s.TDX().GetContext(context.Background(), urlTCB)
	if err != nil {
		t.Fatalf("offline TDX get: %v", err)
	}
	if !bytes.Equal(body, tcbInfo(t0.Add(time.Hour))) || len(h) != 1 || len(h["Tcb-Info-Issuer-Chain"]) != 1 || h["Tcb-Info-Issuer-Chain"][0] != chain {
		t.Errorf("offline TDX get: body or header differ (header %v)", h)
	}
	if b, err := s.GetContext(context.Background(), urlMilanCRL); err != nil || !bytes.Equal(b, crl) {
		t.Errorf("offline get CRL: %v", err)
	}

	// Past its next update: served anyway, marked stale; verification decides.
	clk.Advance(2 * time.Hour)
	doc, err := s.Fetch(context.Background(), urlTCB)
	if err != nil || !doc.Stale {
		t.Errorf("offline stale document: err %v, stale %v; want it served and marked stale", err, doc != nil && doc.Stale)
	}

	for _, u := range []string{urlQEID, urlRootCRL, urlPCKCRL} {
		if _, err := s.Fetch(context.Background(), u); !errors.Is(err, ErrNotFound) {
			t.Errorf("offline miss %s: %v, want ErrNotFound", u, err)
		}
	}
	if v.total() != 0 {
		t.Errorf("offline store made %d requests", v.total())
	}
}

func TestOfflineOversizeAndMalformed(t *testing.T) {
	dir := t.TempDir()
	if err := WriteDocument(dir, urlMilanCRL, nil, bytes.Repeat([]byte{0x30}, 2000)); err != nil {
		t.Fatal(err)
	}
	if err := WriteDocument(dir, urlTCB, nil, []byte(`{"tcbInfo":{}}`)); err != nil {
		t.Fatal(err)
	}
	s := newStore(t, Config{Dir: dir, Offline: true, MaxDocumentSize: 1000, Client: failingClient(t)})
	if _, err := s.Fetch(context.Background(), urlMilanCRL); !errors.Is(err, ErrTooLarge) {
		t.Errorf("oversize file: %v, want ErrTooLarge", err)
	}
	if _, err := s.Fetch(context.Background(), urlTCB); err == nil || errors.Is(err, ErrNotFound) {
		t.Errorf("TCB info without nextUpdate: %v, want a malformed-document error", err)
	}
}

func TestStaleOnFailure(t *testing.T) {
	for _, failure := range []int{http.StatusInternalServerError, http.StatusNotFound} {
		t.Run(fmt.Sprint(failure), func(t *testing.T) {
			ca := newTestCA(t)
			v := newVendor(t)
			const served = amdPrefix + "/vcek/v1/Milan/crl"
			body := ca.crl(t, 1, t0, t0.Add(24*time.Hour))
			v.serve(served, nil, body)
			clk := newClock(t0)
			cfg := v.config(clk, &sleepRecorder{})
			cfg.MaxAttempts = 2
			s := newStore(t, cfg)
			if _, err := s.Fetch(context.Background(), urlMilanCRL); err != nil {
				t.Fatal(err)
			}
			v.handle(served, func(w http.ResponseWriter, _ *http.Request) { w.WriteHeader(failure) })
			clk.Advance(25 * time.Hour)
			doc, err := s.Fetch(context.Background(), urlMilanCRL)
			if err != nil {
				t.Fatalf("refetch failure with a stale copy: %v", err)
			}
			if !doc.Stale || !bytes.Equal(doc.Body, body) || !doc.NextUpdate.Equal(t0.Add(24*time.Hour)) {
				t.Errorf("got stale=%v NextUpdate=%v, want the old copy marked stale", doc.Stale, doc.NextUpdate)
			}
			before := v.count(served)
			// Within the failure TTL the stale copy is served without asking again.
			if doc, err := s.Fetch(context.Background(), urlMilanCRL); err != nil || !doc.Stale {
				t.Errorf("second stale fetch: %v", err)
			}
			if v.count(served) != before {
				t.Error("failed refresh retried within the failure TTL")
			}
			// Once the vendor is back, the store recovers.
			fresh := ca.crl(t, 2, t0.Add(25*time.Hour), t0.Add(48*time.Hour))
			v.serve(served, nil, fresh)
			clk.Advance(DefaultFailureTTL)
			if doc, err := s.Fetch(context.Background(), urlMilanCRL); err != nil || doc.Stale || !bytes.Equal(doc.Body, fresh) {
				t.Errorf("after recovery: err %v; want the fresh CRL", err)
			}
		})
	}
}

func TestForeignURLRefused(t *testing.T) {
	v := newVendor(t)
	s := newStore(t, v.config(newClock(t0), &sleepRecorder{}))
	for _, u := range []string{
		"https://evil.example/vcek/v1/Milan/crl",
		"http://kdsintf.amd.com/vcek/v1/Milan/crl",
		"https://kdsintf.amd.com:8443/vcek/v1/Milan/crl",
		"https://kdsintf.amd.com/other/v1/Milan/crl",
		"https://api.trustedservices.intel.com/sgx/certification/v3/pckcrl?ca=platform",
		"https://kdsintf.amd.com.evil.example/vcek/v1/Milan/crl",
		"https://user@kdsintf.amd.com/vcek/v1/Milan/crl",
		v.URL + "/vcek/v1/Milan/crl", // the base itself is not a canonical URL
		"https://kdsintf.amd.com/vcek/v1/../../etc/passwd",
	} {
		if _, err := s.Fetch(context.Background(), u); !errors.Is(err, ErrURLNotAllowed) {
			t.Errorf("Fetch(%q) = %v, want ErrURLNotAllowed", u, err)
		}
		if _, _, err := s.TDX().Get(u); !errors.Is(err, ErrURLNotAllowed) {
			t.Errorf("TDX().Get(%q) = %v, want ErrURLNotAllowed", u, err)
		}
	}
	if n := v.total(); n != 0 {
		t.Errorf("refused URLs caused %d requests", n)
	}
}

func TestOversizeBodyRefused(t *testing.T) {
	for _, chunked := range []bool{false, true} {
		t.Run(fmt.Sprint("chunked=", chunked), func(t *testing.T) {
			v := newVendor(t)
			const served = amdPrefix + "/vcek/v1/Milan/crl"
			v.handle(served, func(w http.ResponseWriter, _ *http.Request) {
				big := bytes.Repeat([]byte{0x30}, 5000)
				if chunked {
					// Flushing first hides the length: the limit must hold while reading.
					w.(http.Flusher).Flush()
				}
				_, _ = w.Write(big)
			})
			cfg := v.config(newClock(t0), &sleepRecorder{})
			cfg.MaxDocumentSize = 4096
			s := newStore(t, cfg)
			if _, err := s.Fetch(context.Background(), urlMilanCRL); !errors.Is(err, ErrTooLarge) {
				t.Errorf("oversize body: %v, want ErrTooLarge", err)
			}
			if n := v.count(served); n != 1 {
				t.Errorf("oversize body requested %d times, want 1 (not retried)", n)
			}
		})
	}
}

func TestMalformedNotCached(t *testing.T) {
	v := newVendor(t)
	const served = amdPrefix + "/vcek/v1/Milan/crl"
	v.serve(served, nil, []byte("<html>maintenance</html>"))
	dir := t.TempDir()
	cfg := v.config(newClock(t0), &sleepRecorder{})
	cfg.Dir = dir
	s := newStore(t, cfg)
	for i := 0; i < 2; i++ {
		if _, err := s.Fetch(context.Background(), urlMilanCRL); err == nil || !strings.Contains(err.Error(), "malformed CRL") {
			t.Fatalf("error %v, want malformed CRL", err)
		}
	}
	if n := v.count(served); n != 2 {
		t.Errorf("%d requests, want 2 (a malformed answer is not cached)", n)
	}
	if _, err := os.Stat(filepath.Join(dir, "kdsintf.amd.com", "vcek", "v1", "Milan", "crl")); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("malformed document written to the cache directory: %v", err)
	}
}

func TestDiskCacheAndHeaders(t *testing.T) {
	v := newVendor(t)
	const served = pcsPrefix + "/tdx/certification/v4/tcb?fmspc=50806f000000"
	body := tcbInfo(t0.Add(24 * time.Hour))
	v.serve(served, http.Header{
		"Tcb-Info-Issuer-Chain": {"chain%0A"},
		"Set-Cookie":            {"session=secret"},
		"Request-Id":            {"abc"},
	}, body)
	dir := filepath.Join(t.TempDir(), "cache")
	clk := newClock(t0)
	cfg := v.config(clk, &sleepRecorder{})
	cfg.Dir = dir
	s := newStore(t, cfg)
	doc, err := s.Fetch(context.Background(), urlTCB)
	if err != nil {
		t.Fatal(err)
	}
	if want := (http.Header{"Tcb-Info-Issuer-Chain": {"chain%0A"}}); !reflect.DeepEqual(doc.Header, want) {
		t.Errorf("kept headers %v, want only the issuer chain %v", doc.Header, want)
	}
	name := filepath.Join(dir, "api.trustedservices.intel.com", "tdx", "certification", "v4", "tcb@fmspc=50806f000000")
	if got := readFile(t, name); !bytes.Equal(got, body) {
		t.Error("cached body differs")
	}
	if got, want := string(readFile(t, name+".headers.json")), "{\n  \"Tcb-Info-Issuer-Chain\": [\"chain%0A\"]\n}\n"; got != want {
		t.Errorf("headers file %q, want %q", got, want)
	}
	fi, err := os.Stat(filepath.Join(dir, "api.trustedservices.intel.com"))
	if err != nil || fi.Mode().Perm() != 0o755 {
		t.Errorf("directory mode %v (%v), want 0755", fi.Mode().Perm(), err)
	}
	entries, _ := os.ReadDir(filepath.Dir(name))
	for _, e := range entries {
		if strings.HasPrefix(e.Name(), tempFilePrefix) {
			t.Errorf("temporary file %s left behind", e.Name())
		}
	}

	// A new store (a restart) serves the directory's copy while fresh.
	v.handle(served, func(w http.ResponseWriter, _ *http.Request) { w.WriteHeader(http.StatusInternalServerError) })
	s2 := newStore(t, cfg)
	doc2, err := s2.Fetch(context.Background(), urlTCB)
	if err != nil || !bytes.Equal(doc2.Body, body) || !reflect.DeepEqual(doc2.Header, doc.Header) {
		t.Fatalf("restart: %v", err)
	}
	if n := v.count(served); n != 1 {
		t.Errorf("restart refetched a fresh cached document (%d requests)", n)
	}
}

func TestHTTPBaseNeedsAllowHTTP(t *testing.T) {
	if _, err := New(Config{IntelPCSBaseURL: "http://localhost:8081"}); err == nil {
		t.Fatal("http base accepted without AllowHTTP")
	}
	ca := newTestCA(t)
	v := newVendor(t)
	// A plain-http PCCS on loopback, explicitly allowed.
	plain := &http.Server{Handler: v.Config.Handler}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	go func() { _ = plain.Serve(ln) }()
	t.Cleanup(func() { _ = plain.Close() })
	v.serve("/sgx/certification/v4/pckcrl?ca=platform&encoding=der", nil, ca.crl(t, 1, t0, t0.Add(time.Hour)))
	s := newStore(t, Config{IntelPCSBaseURL: "http://" + ln.Addr().String(), AllowHTTP: true, Now: newClock(t0).Now})
	if _, err := s.Fetch(context.Background(), urlPCKCRL); err != nil {
		t.Fatalf("http PCCS: %v", err)
	}
}

// Simulator collateral lives under .invalid hosts: readable from the
// directory, never fetched, whatever the mode.
func TestSimulatorHostsServedOnlyFromDir(t *testing.T) {
	v := newVendor(t)
	dir := t.TempDir()
	ca := newTestCA(t)
	const u = "https://sevsnp-simulator.attested-kms.invalid/vcek/v1/Milan/crl"
	crl := ca.crl(t, 1, t0.Add(-time.Hour), t0.Add(24*time.Hour))
	cfg := v.config(newClock(t0), &sleepRecorder{})
	cfg.Dir = dir
	s := newStore(t, cfg)
	if _, err := s.Fetch(context.Background(), u); !errors.Is(err, ErrNotFound) {
		t.Fatalf("missing simulator document: %v, want ErrNotFound", err)
	}
	if err := WriteDocument(dir, u, nil, crl); err != nil {
		t.Fatal(err)
	}
	s = newStore(t, cfg)
	doc, err := s.Fetch(context.Background(), u)
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(doc.Body, crl) || !doc.NextUpdate.Equal(t0.Add(24*time.Hour)) {
		t.Fatalf("document %+v", doc)
	}
	// Past its next update it is still not fetched: served stale.
	clk := newClock(t0.Add(48 * time.Hour))
	cfg.Now = clk.Now
	s = newStore(t, cfg)
	if doc, err = s.Fetch(context.Background(), u); err != nil || !doc.Stale {
		t.Fatalf("stale simulator document: %+v, %v", doc, err)
	}
	for _, bad := range []string{
		"https://Upper.invalid/vcek/v1/Milan/crl",
		"https://-x.invalid/vcek/v1/Milan/crl",
		"https://x.invalid/../etc/passwd",
		"https://x.invalid:443/vcek/v1/Milan/crl",
	} {
		if _, err := s.Fetch(context.Background(), bad); !errors.Is(err, ErrURLNotAllowed) {
			t.Errorf("Fetch(%q) = %v, want ErrURLNotAllowed", bad, err)
		}
	}
	if n := v.total(); n != 0 {
		t.Errorf("simulator documents caused %d requests", n)
	}
}
