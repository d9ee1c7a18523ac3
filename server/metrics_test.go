package server_test

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/http/httptest"
	"path/filepath"
	"regexp"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus/testutil"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/health"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"

	"github.com/attested-kms/attested-kms/keystore"
	"github.com/attested-kms/attested-kms/keystore/boltstore"
	"github.com/attested-kms/attested-kms/keystore/kek"
	"github.com/attested-kms/attested-kms/server"
)

var (
	obsValidID     = regexp.MustCompile(`^[A-Za-z0-9._-]{1,64}$`)
	obsGeneratedID = regexp.MustCompile(`^[0-9a-f]{16}$`)
)

// obsScrape compares the named series served by a real HTTP server in
// front of m's handler with want (exposition text).
func obsScrape(t *testing.T, m *server.Metrics, want string, names ...string) {
	t.Helper()
	ts := httptest.NewServer(m.Handler())
	defer ts.Close()
	if err := testutil.ScrapeAndCompare(ts.URL, strings.NewReader(want), names...); err != nil {
		t.Fatal(err)
	}
}

func TestMetricsScrapeExactSeries(t *testing.T) {
	m := server.NewMetrics()
	m.ObserveRelease("granted", "")
	m.ObserveRelease("granted", "")
	m.ObserveRelease("denied", server.ReasonPolicy)
	m.ObserveVerification("sev-snp", 3*time.Millisecond)
	m.ObserveVerification("sev-snp", 2*time.Second)
	m.KEKError("default", server.KEKErrorUnavailable)
	m.KEKError("default", server.KEKErrorUnavailable)
	m.KEKError("tenant-b", server.KEKErrorDisabled)
	m.SetLeader(true)
	m.CollateralLookup(true)
	m.CollateralLookup(true)
	m.CollateralLookup(false)
	m.RegisterKeyStates(func() map[[2]string]int {
		return map[[2]string]int{{"default", "active"}: 1, {"default", "retired"}: 3}
	})

	obsScrape(t, m, `
# HELP kms_releases_total Key release decisions by outcome (granted or denied) and refusal reason.
# TYPE kms_releases_total counter
kms_releases_total{outcome="denied",reason="POLICY_DENIED"} 1
kms_releases_total{outcome="granted",reason=""} 2
# HELP kms_kek_errors_total Failed calls to a key set's KEK provider, by error class.
# TYPE kms_kek_errors_total counter
kms_kek_errors_total{class="disabled",keyset="tenant-b"} 1
kms_kek_errors_total{class="unavailable",keyset="default"} 2
# HELP kms_leader 1 while this replica holds the leadership for background jobs, else 0.
# TYPE kms_leader gauge
kms_leader 1
# HELP kms_collateral_cache_lookups_total Attestation collateral lookups by result (hit: served from the cache, miss: fetched).
# TYPE kms_collateral_cache_lookups_total counter
kms_collateral_cache_lookups_total{result="hit"} 2
kms_collateral_cache_lookups_total{result="miss"} 1
# HELP kms_keys Keys per key set and lifecycle state, read from the key store at scrape time.
# TYPE kms_keys gauge
kms_keys{keyset="default",state="active"} 1
kms_keys{keyset="default",state="retired"} 3
# HELP kms_evidence_verification_seconds Time to verify attestation evidence, by platform.
# TYPE kms_evidence_verification_seconds histogram
kms_evidence_verification_seconds_bucket{platform="sev-snp",le="0.001"} 0
kms_evidence_verification_seconds_bucket{platform="sev-snp",le="0.0025"} 0
kms_evidence_verification_seconds_bucket{platform="sev-snp",le="0.005"} 1
kms_evidence_verification_seconds_bucket{platform="sev-snp",le="0.01"} 1
kms_evidence_verification_seconds_bucket{platform="sev-snp",le="0.025"} 1
kms_evidence_verification_seconds_bucket{platform="sev-snp",le="0.05"} 1
kms_evidence_verification_seconds_bucket{platform="sev-snp",le="0.1"} 1
kms_evidence_verification_seconds_bucket{platform="sev-snp",le="0.25"} 1
kms_evidence_verification_seconds_bucket{platform="sev-snp",le="0.5"} 1
kms_evidence_verification_seconds_bucket{platform="sev-snp",le="1"} 1
kms_evidence_verification_seconds_bucket{platform="sev-snp",le="2.5"} 2
kms_evidence_verification_seconds_bucket{platform="sev-snp",le="5"} 2
kms_evidence_verification_seconds_bucket{platform="sev-snp",le="10"} 2
kms_evidence_verification_seconds_bucket{platform="sev-snp",le="30"} 2
kms_evidence_verification_seconds_bucket{platform="sev-snp",le="+Inf"} 2
kms_evidence_verification_seconds_sum{platform="sev-snp"} 2.003
kms_evidence_verification_seconds_count{platform="sev-snp"} 2
`, "kms_releases_total", "kms_kek_errors_total", "kms_leader", "kms_collateral_cache_lookups_total", "kms_keys", "kms_evidence_verification_seconds")

	// The runtime and process collectors are on the same registry.
	n, err := testutil.GatherAndCount(m.Registry(), "go_goroutines", "process_start_time_seconds")
	if err != nil || n != 2 {
		t.Fatalf("go and process collectors: %d series, %v; want 2", n, err)
	}
}

func TestMetricsFreshState(t *testing.T) {
	// Before anything is recorded: a follower, both collateral results at
	// zero, no keys series without a callback.
	m := server.NewMetrics()
	obsScrape(t, m, `
# HELP kms_leader 1 while this replica holds the leadership for background jobs, else 0.
# TYPE kms_leader gauge
kms_leader 0
# HELP kms_collateral_cache_lookups_total Attestation collateral lookups by result (hit: served from the cache, miss: fetched).
# TYPE kms_collateral_cache_lookups_total counter
kms_collateral_cache_lookups_total{result="hit"} 0
kms_collateral_cache_lookups_total{result="miss"} 0
`, "kms_leader", "kms_collateral_cache_lookups_total", "kms_keys", "kms_releases_total")

	m.SetLeader(true)
	m.SetLeader(false)
	obsScrape(t, m, `
# HELP kms_leader 1 while this replica holds the leadership for background jobs, else 0.
# TYPE kms_leader gauge
kms_leader 0
`, "kms_leader")
}

func TestMetricsKeyStatesReadAtEachScrape(t *testing.T) {
	m := server.NewMetrics()
	var active atomic.Int64
	active.Store(1)
	m.RegisterKeyStates(func() map[[2]string]int {
		return map[[2]string]int{{"default", "active"}: int(active.Load())}
	})
	const head = "# HELP kms_keys Keys per key set and lifecycle state, read from the key store at scrape time.\n# TYPE kms_keys gauge\n"
	obsScrape(t, m, head+`kms_keys{keyset="default",state="active"} 1`+"\n", "kms_keys")
	active.Store(2)
	obsScrape(t, m, head+`kms_keys{keyset="default",state="active"} 2`+"\n", "kms_keys")
	m.RegisterKeyStates(nil)
	obsScrape(t, m, "", "kms_keys")
}

func TestMetricsNilIsNoOp(t *testing.T) {
	var m *server.Metrics
	m.ObserveRelease("granted", "")
	m.ObserveVerification("tdx", time.Second)
	m.KEKError("default", server.KEKErrorOther)
	m.SetLeader(true)
	m.CollateralLookup(false)
	m.RegisterKeyStates(func() map[[2]string]int { return nil })
}

func TestKEKErrorClass(t *testing.T) {
	for _, c := range []struct {
		err  error
		want string
	}{
		{fmt.Errorf("aws: %w", kek.ErrKeyDisabled), server.KEKErrorDisabled},
		{fmt.Errorf("gate: %w", keystore.ErrKEKDisabled), server.KEKErrorDisabled},
		{errors.Join(kek.ErrUnavailable, errors.New("throttled")), server.KEKErrorUnavailable},
		{fmt.Errorf("hsm: %w", context.DeadlineExceeded), server.KEKErrorUnavailable},
		{fmt.Errorf("unwrap: %w", kek.ErrAuthentication), server.KEKErrorAuthentication},
		{errors.New("something else"), server.KEKErrorOther},
	} {
		if got := server.KEKErrorClass(c.err); got != c.want {
			t.Errorf("KEKErrorClass(%v) = %q, want %q", c.err, got, c.want)
		}
	}
}

// switchableKEK is a real local KEK whose owner can switch it off, as a
// cloud KMS customer would.
type switchableKEK struct {
	*kek.Local
	off atomic.Bool
}

func (s *switchableKEK) Unwrap(ctx context.Context, w kek.Wrapped, aad []byte) ([]byte, error) {
	if s.off.Load() {
		return nil, fmt.Errorf("switched off by its owner: %w", kek.ErrKeyDisabled)
	}
	return s.Local.Unwrap(ctx, w, aad)
}

// obsManager opens a key manager on a real bbolt store and local KEK with
// one key set, "default", warmed as the server does at start.
func obsManager(t *testing.T) (*keystore.Manager, *switchableKEK, *boltstore.Store) {
	t.Helper()
	dir := t.TempDir()
	kekPath := filepath.Join(dir, "kek.key")
	if err := kek.CreateLocal(kekPath); err != nil {
		t.Fatal(err)
	}
	local, err := kek.OpenLocal(kekPath)
	if err != nil {
		t.Fatal(err)
	}
	p := &switchableKEK{Local: local}
	store, err := boltstore.Open(filepath.Join(dir, "keys.db"))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = store.Close() })
	keys := keystore.NewManager(store, p, keystore.Options{Logger: slog.New(slog.DiscardHandler), KEKCheckAttempts: 1})
	t.Cleanup(func() { _ = keys.Close() })
	ctx := context.Background()
	if _, err := keys.CreateKeySet(ctx, keystore.DefaultKeySetName, keystore.DefaultKeySetSettings()); err != nil {
		t.Fatal(err)
	}
	if err := keys.Warm(ctx); err != nil {
		t.Fatal(err)
	}
	return keys, p, store
}

func TestKeyStateCountsFromStore(t *testing.T) {
	keys, _, _ := obsManager(t)
	ctx := context.Background()
	// A manual rotation retires the first key; disabling the new one
	// leaves one disabled and one retired key.
	k, err := keys.Rotate(ctx, keystore.DefaultKeySetName)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := keys.Disable(ctx, keystore.DefaultKeySetName, k.KID); err != nil {
		t.Fatal(err)
	}
	m := server.NewMetrics()
	m.RegisterKeyStates(server.KeyStateCounts(keys, time.Second))
	obsScrape(t, m, `
# HELP kms_keys Keys per key set and lifecycle state, read from the key store at scrape time.
# TYPE kms_keys gauge
kms_keys{keyset="default",state="active"} 0
kms_keys{keyset="default",state="destroyed"} 0
kms_keys{keyset="default",state="disabled"} 1
kms_keys{keyset="default",state="pending"} 0
kms_keys{keyset="default",state="retired"} 1
`, "kms_keys")
}

// obsReadyz fetches /readyz from a real HTTP server in front of r.
func obsReadyz(t *testing.T, r *server.Readiness) (int, string) {
	t.Helper()
	ts := httptest.NewServer(r)
	defer ts.Close()
	resp, err := http.Get(ts.URL)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	if cc := resp.Header.Get("Cache-Control"); cc != "no-store" {
		t.Errorf("Cache-Control = %q, want no-store", cc)
	}
	return resp.StatusCode, string(b)
}

func TestReadinessReportsFailingNamesOnly(t *testing.T) {
	ok := func(context.Context) error { return nil }
	leaky := func(context.Context) error { return errors.New("token=sekrit-token dial kms.internal:443") }
	r := server.NewReadiness(time.Second).Add("store", ok).Add("kek", leaky).Add("unsealed", ok).Add("other", leaky)
	code, body := obsReadyz(t, r)
	if code != http.StatusServiceUnavailable || body != "not ready: kek, other\n" {
		t.Fatalf("readyz = %d %q, want 503 naming kek and other", code, body)
	}
	if strings.Contains(body, "sekrit") || strings.Contains(body, "kms.internal") {
		t.Fatalf("readyz leaks a check's error: %q", body)
	}

	code, body = obsReadyz(t, server.NewReadiness(0).Add("store", ok))
	if code != http.StatusOK || body != "ready\n" {
		t.Fatalf("readyz = %d %q, want 200 ready", code, body)
	}
}

func TestReadinessBoundsHungChecks(t *testing.T) {
	// One check waits for its context, one ignores it entirely: both must
	// be reported failed once the probe's budget is spent, and the healthy
	// check still counts as passed.
	release := make(chan struct{})
	defer close(release)
	r := server.NewReadiness(20*time.Millisecond).
		Add("waits", func(ctx context.Context) error { <-ctx.Done(); return ctx.Err() }).
		Add("fine", func(context.Context) error { return nil }).
		Add("ignores", func(context.Context) error { <-release; return nil })
	if got := r.Failing(context.Background()); strings.Join(got, ",") != "waits,ignores" {
		t.Fatalf("Failing = %v, want [waits ignores]", got)
	}
}

func TestReadinessWithKeyManager(t *testing.T) {
	keys, p, store := obsManager(t)
	r := server.NewReadiness(2*time.Second).
		Add("store", server.StoreReachable(keys)).
		Add("kek", server.KEKsUsable(keys)).
		Add("unsealed", server.KeySetsUnsealed(keys))
	if code, body := obsReadyz(t, r); code != http.StatusOK || body != "ready\n" {
		t.Fatalf("healthy: readyz = %d %q", code, body)
	}

	// The customer switches the KEK off; revalidation notices it.
	p.off.Store(true)
	if err := keys.CheckKEKs(context.Background()); !errors.Is(err, kek.ErrKeyDisabled) {
		t.Fatalf("CheckKEKs = %v, want the KEK disabled", err)
	}
	code, body := obsReadyz(t, r)
	if code != http.StatusServiceUnavailable || body != "not ready: kek, unsealed\n" {
		t.Fatalf("KEK disabled: readyz = %d %q", code, body)
	}
	if strings.Contains(body, "local:") {
		t.Fatalf("readyz names the KEK: %q", body)
	}

	// The owner switches it back on; the next check restores the set.
	p.off.Store(false)
	if err := keys.CheckKEKs(context.Background()); err != nil {
		t.Fatal(err)
	}
	if code, body := obsReadyz(t, r); code != http.StatusOK {
		t.Fatalf("KEK restored: readyz = %d %q", code, body)
	}

	if err := store.Close(); err != nil {
		t.Fatal(err)
	}
	code, body = obsReadyz(t, r)
	if code != http.StatusServiceUnavailable || body != "not ready: store, kek, unsealed\n" {
		t.Fatalf("store closed: readyz = %d %q", code, body)
	}
}

// A key set whose active key the operator disabled keeps the replica
// ready: taking every replica out of service would stop the other key sets
// and the set's retired keys too.
func TestKeySetsUnsealedWithoutActiveKey(t *testing.T) {
	keys, _, _ := obsManager(t)
	ctx := context.Background()
	active, err := keys.ActivePublicKeys(ctx)
	if err != nil || len(active) != 1 {
		t.Fatalf("active keys: %v, %v", active, err)
	}
	if _, err := keys.Disable(ctx, keystore.DefaultKeySetName, active[0].KID); err != nil {
		t.Fatal(err)
	}
	if err := server.KeySetsUnsealed(keys)(ctx); err != nil {
		t.Fatalf("KeySetsUnsealed with no active key = %v", err)
	}
}

// obsLog is a JSON slog destination safe for concurrent handlers.
type obsLog struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (l *obsLog) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.buf.Write(p)
}

// records decodes every JSON record logged so far.
func (l *obsLog) records(t *testing.T) []map[string]any {
	t.Helper()
	l.mu.Lock()
	defer l.mu.Unlock()
	var out []map[string]any
	sc := bufio.NewScanner(bytes.NewReader(l.buf.Bytes()))
	for sc.Scan() {
		var rec map[string]any
		if err := json.Unmarshal(sc.Bytes(), &rec); err != nil {
			t.Fatalf("log line %q: %v", sc.Text(), err)
		}
		out = append(out, rec)
	}
	return out
}

func (l *obsLog) logger() *slog.Logger {
	return slog.New(server.WithRequestIDs(slog.NewJSONHandler(l, nil)))
}

// obsIDCases are incoming ids and whether each must be kept as sent.
var obsIDCases = []struct {
	name, in string
	kept     bool
}{
	{"valid", "req-42.A_b", true},
	{"max length", strings.Repeat("a", 64), true},
	{"absent", "", false},
	{"too long", strings.Repeat("a", 65), false},
	{"space", "two words", false},
	{"log injection", `x" level=ERROR msg="forged`, false},
	{"slash", "a/b", false},
}

func checkID(t *testing.T, in string, kept bool, got string) {
	t.Helper()
	if kept && got != in {
		t.Fatalf("request id %q, want the caller's %q", got, in)
	}
	if !kept && !obsGeneratedID.MatchString(got) {
		t.Fatalf("request id %q for invalid %q, want 16 fresh hex digits", got, in)
	}
}

func TestRequestIDOverGRPC(t *testing.T) {
	var logs obsLog
	log := logs.logger()
	seen := make(chan string, 1)
	logCall := func(ctx context.Context, req any, info *grpc.UnaryServerInfo, h grpc.UnaryHandler) (any, error) {
		seen <- server.RequestID(ctx)
		log.InfoContext(ctx, "call", "method", info.FullMethod)
		return h(ctx, req)
	}
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	srv := grpc.NewServer(grpc.ChainUnaryInterceptor(server.UnaryRequestID(), logCall))
	healthpb.RegisterHealthServer(srv, health.NewServer())
	go func() { _ = srv.Serve(lis) }()
	t.Cleanup(srv.Stop)
	conn, err := grpc.NewClient(lis.Addr().String(), grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = conn.Close() })
	client := healthpb.NewHealthClient(conn)

	call := func(t *testing.T, in, service string) (string, error) {
		t.Helper()
		ctx := context.Background()
		if in != "" {
			ctx = metadata.AppendToOutgoingContext(ctx, server.RequestIDHeader, in)
		}
		var hdr metadata.MD
		_, err := client.Check(ctx, &healthpb.HealthCheckRequest{Service: service}, grpc.Header(&hdr))
		ids := hdr.Get(server.RequestIDHeader)
		if len(ids) != 1 {
			t.Fatalf("response header %s = %v, want one id", server.RequestIDHeader, ids)
		}
		if handler := <-seen; handler != ids[0] {
			t.Fatalf("handler saw request id %q, response carries %q", handler, ids[0])
		}
		recs := logs.records(t)
		if got := recs[len(recs)-1]["request_id"]; got != ids[0] {
			t.Fatalf("log record request_id = %v, want %q", got, ids[0])
		}
		return ids[0], err
	}
	for _, c := range obsIDCases {
		t.Run(c.name, func(t *testing.T) {
			id, err := call(t, c.in, "")
			if err != nil {
				t.Fatal(err)
			}
			checkID(t, c.in, c.kept, id)
		})
	}
	t.Run("echoed on errors", func(t *testing.T) {
		id, err := call(t, "err-1", "no-such-service")
		if status.Code(err) != codes.NotFound || id != "err-1" {
			t.Fatalf("Check unknown service = %q, %v; want err-1 and NotFound", id, err)
		}
	})
	t.Run("fresh ids differ", func(t *testing.T) {
		a, _ := call(t, "", "")
		b, _ := call(t, "", "")
		if a == b {
			t.Fatalf("two generated ids are both %q", a)
		}
	})
}

func TestRequestIDOverHTTP(t *testing.T) {
	var logs obsLog
	log := logs.logger()
	ts := httptest.NewServer(server.RequestIDMiddleware(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		log.InfoContext(r.Context(), "public request", "path", r.URL.Path)
		_, _ = io.WriteString(w, server.RequestID(r.Context()))
	})))
	defer ts.Close()
	for _, c := range obsIDCases {
		t.Run(c.name, func(t *testing.T) {
			req, err := http.NewRequest(http.MethodGet, ts.URL+"/v1/keys", nil)
			if err != nil {
				t.Fatal(err)
			}
			if c.in != "" {
				req.Header.Set("X-Request-Id", c.in)
			}
			resp, err := http.DefaultClient.Do(req)
			if err != nil {
				t.Fatal(err)
			}
			body, err := io.ReadAll(resp.Body)
			resp.Body.Close()
			if err != nil {
				t.Fatal(err)
			}
			id := resp.Header.Get("X-Request-Id")
			checkID(t, c.in, c.kept, id)
			if string(body) != id {
				t.Fatalf("handler saw request id %q, response header %q", body, id)
			}
			recs := logs.records(t)
			if got := recs[len(recs)-1]["request_id"]; got != id {
				t.Fatalf("log record request_id = %v, want %q", got, id)
			}
		})
	}
}

func TestWithRequestIDsHandler(t *testing.T) {
	var logs obsLog
	log := logs.logger()
	// Outside a request no attribute is added.
	log.Info("startup")
	// Attributes and groups keep the wrapper; the id joins the open group.
	var ctx context.Context
	h := server.RequestIDMiddleware(http.HandlerFunc(func(_ http.ResponseWriter, r *http.Request) { ctx = r.Context() }))
	req := httptest.NewRequest(http.MethodGet, "/", nil)
	req.Header.Set("X-Request-Id", "grp-1")
	h.ServeHTTP(httptest.NewRecorder(), req)
	log.With("component", "release").InfoContext(ctx, "with attrs")
	log.WithGroup("g").InfoContext(ctx, "grouped", "k", "v")
	// Disabled levels stay disabled.
	log.DebugContext(ctx, "dropped")

	recs := logs.records(t)
	if len(recs) != 3 {
		t.Fatalf("%d records, want 3: %v", len(recs), recs)
	}
	if _, ok := recs[0]["request_id"]; ok {
		t.Fatalf("record without a request context has request_id: %v", recs[0])
	}
	if recs[1]["request_id"] != "grp-1" || recs[1]["component"] != "release" {
		t.Fatalf("With record = %v", recs[1])
	}
	if g, _ := recs[2]["g"].(map[string]any); g["request_id"] != "grp-1" || g["k"] != "v" {
		t.Fatalf("WithGroup record = %v", recs[2])
	}
}

// FuzzRequestIDHeader: whatever a caller sends as X-Request-Id, the id
// used is safe for logs and headers, and a valid one is kept as sent.
func FuzzRequestIDHeader(f *testing.F) {
	for _, c := range obsIDCases {
		f.Add(c.in)
	}
	f.Add("\x00\n\r")
	f.Add("é")
	h := server.RequestIDMiddleware(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		_, _ = io.WriteString(w, server.RequestID(r.Context()))
	}))
	f.Fuzz(func(t *testing.T, in string) {
		req := httptest.NewRequest(http.MethodGet, "/", nil)
		req.Header[http.CanonicalHeaderKey(server.RequestIDHeader)] = []string{in}
		rec := httptest.NewRecorder()
		h.ServeHTTP(rec, req)
		id := rec.Header().Get(server.RequestIDHeader)
		if !obsValidID.MatchString(id) || rec.Body.String() != id {
			t.Fatalf("input %q gave id %q (handler saw %q)", in, id, rec.Body.String())
		}
		if obsValidID.MatchString(in) != (id == in) {
			t.Fatalf("input %q gave id %q: a valid id must be kept, an invalid one replaced", in, id)
		}
	})
}

func BenchmarkMetricsObserveRelease(b *testing.B) {
	m := server.NewMetrics()
	b.RunParallel(func(pb *testing.PB) {
		for pb.Next() {
			m.ObserveRelease("granted", "")
			m.ObserveVerification("sev-snp", 3*time.Millisecond)
		}
	})
}

func BenchmarkRequestIDMiddlewareAndLog(b *testing.B) {
	log := slog.New(server.WithRequestIDs(slog.NewJSONHandler(io.Discard, nil)))
	h := server.RequestIDMiddleware(http.HandlerFunc(func(_ http.ResponseWriter, r *http.Request) {
		log.LogAttrs(r.Context(), slog.LevelInfo, "release", slog.String("decision", "granted"))
	}))
	req := httptest.NewRequest(http.MethodGet, "/", nil)
	w := httptest.NewRecorder()
	b.ReportAllocs()
	for b.Loop() {
		h.ServeHTTP(w, req)
	}
}
