package server

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"strings"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"

	"github.com/attested-kms/attested-kms/keystore"
	"github.com/attested-kms/attested-kms/keystore/kek"
)

// metricsNamespace prefixes every KMS series, so they cannot collide with
// the Go and process collectors' or with another exporter's on the host.
const metricsNamespace = "kms"

// KEK error classes recorded by Metrics.KEKError; KEKErrorClass maps an
// error to one of them.
const (
	KEKErrorDisabled       = "disabled"
	KEKErrorUnavailable    = "unavailable"
	KEKErrorAuthentication = "authentication"
	KEKErrorOther          = "other"
)

// verificationBuckets span a cached verification (about a millisecond) to
// one that fetches collateral from a slow vendor service (tens of seconds).
var verificationBuckets = []float64{0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30}

// Metrics is the KMS's Prometheus instrumentation. It owns its registry,
// so tests and several servers in one process never share series. Label
// values must come from bounded sets (reason codes, configured key set
// names, platform names), never from request fields a caller controls.
//
// Every method is safe for concurrent use and is a no-op on a nil
// *Metrics, so services can hold an optional one without checks.
type Metrics struct {
	reg          *prometheus.Registry
	releases     *prometheus.CounterVec
	verification *prometheus.HistogramVec
	kekErrors    *prometheus.CounterVec
	leader       prometheus.Gauge
	collateral   *prometheus.CounterVec
	keys         *keyStatesCollector
}

// NewMetrics builds the KMS's metrics, plus the Go runtime and process
// collectors, on a fresh registry.
func NewMetrics() *Metrics {
	m := &Metrics{
		reg: prometheus.NewRegistry(),
		releases: prometheus.NewCounterVec(prometheus.CounterOpts{
			Namespace: metricsNamespace, Name: "releases_total",
			Help: "Key release decisions by outcome (granted or denied) and refusal reason.",
		}, []string{"outcome", "reason"}),
		verification: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Namespace: metricsNamespace, Name: "evidence_verification_seconds",
			Help:    "Time to verify attestation evidence, by platform.",
			Buckets: verificationBuckets,
		}, []string{"platform"}),
		kekErrors: prometheus.NewCounterVec(prometheus.CounterOpts{
			Namespace: metricsNamespace, Name: "kek_errors_total",
			Help: "Failed calls to a key set's KEK provider, by error class.",
		}, []string{"keyset", "class"}),
		leader: prometheus.NewGauge(prometheus.GaugeOpts{
			Namespace: metricsNamespace, Name: "leader",
			Help: "1 while this replica holds the leadership for background jobs, else 0.",
		}),
		collateral: prometheus.NewCounterVec(prometheus.CounterOpts{
			Namespace: metricsNamespace, Name: "collateral_cache_lookups_total",
			Help: "Attestation collateral lookups by result (hit: served from the cache, miss: fetched).",
		}, []string{"result"}),
		keys: &keyStatesCollector{desc: prometheus.NewDesc(
			prometheus.BuildFQName(metricsNamespace, "", "keys"),
			"Keys per key set and lifecycle state, read from the key store at scrape time.",
			[]string{"keyset", "state"}, nil)},
	}
	// Both results exist from the start, so a hit ratio is defined (and
	// rate() has a baseline) before the first miss.
	m.collateral.WithLabelValues("hit")
	m.collateral.WithLabelValues("miss")
	m.reg.MustRegister(
		collectors.NewGoCollector(),
		collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}),
		m.releases, m.verification, m.kekErrors, m.leader, m.collateral, m.keys,
	)
	return m
}

// Registry returns the registry, for components that add their own
// collectors (e.g. gRPC server metrics).
func (m *Metrics) Registry() *prometheus.Registry { return m.reg }

// Handler serves the registry in the Prometheus exposition formats, for
// /metrics. A failing collector drops its own series, not the whole
// scrape; concurrent scrapes are bounded because the key-state callback
// reads the store.
func (m *Metrics) Handler() http.Handler {
	return promhttp.HandlerFor(m.reg, promhttp.HandlerOpts{
		Registry:            m.reg,
		ErrorHandling:       promhttp.ContinueOnError,
		MaxRequestsInFlight: 4,
	})
}

// ObserveRelease counts one release decision. reason is empty for a grant.
func (m *Metrics) ObserveRelease(outcome, reason string) {
	if m == nil {
		return
	}
	m.releases.WithLabelValues(outcome, reason).Inc()
}

// ObserveVerification records how long verifying evidence of platform took.
func (m *Metrics) ObserveVerification(platform string, d time.Duration) {
	if m == nil {
		return
	}
	m.verification.WithLabelValues(platform).Observe(d.Seconds())
}

// KEKError counts a failed KEK call for keyset; class is one of the
// KEKError constants (see KEKErrorClass).
func (m *Metrics) KEKError(keyset, class string) {
	if m == nil {
		return
	}
	m.kekErrors.WithLabelValues(keyset, class).Inc()
}

// SetLeader records whether this replica is the leader.
func (m *Metrics) SetLeader(leader bool) {
	if m == nil {
		return
	}
	v := 0.0
	if leader {
		v = 1
	}
	m.leader.Set(v)
}

// CollateralLookup counts a collateral cache hit or miss.
func (m *Metrics) CollateralLookup(hit bool) {
	if m == nil {
		return
	}
	result := "miss"
	if hit {
		result = "hit"
	}
	m.collateral.WithLabelValues(result).Inc()
}

// RegisterKeyStates sets the callback the keys gauge is read from at each
// scrape: counts by [2]string{keyset, state}. It replaces any earlier
// callback; nil removes it (no keys series are exported). The callback
// runs on the scraping goroutine and must bound its own work.
func (m *Metrics) RegisterKeyStates(fn func() map[[2]string]int) {
	if m == nil {
		return
	}
	if fn == nil {
		m.keys.fn.Store(nil)
		return
	}
	m.keys.fn.Store(&fn)
}

// keyStatesCollector exports the callback's counts as const metrics, so the
// gauge reflects the store at scrape time instead of whatever the code
// paths that change states last remembered to update.
type keyStatesCollector struct {
	desc *prometheus.Desc
	fn   atomic.Pointer[func() map[[2]string]int]
}

func (c *keyStatesCollector) Describe(ch chan<- *prometheus.Desc) { ch <- c.desc }

func (c *keyStatesCollector) Collect(ch chan<- prometheus.Metric) {
	fn := c.fn.Load()
	if fn == nil {
		return
	}
	for k, n := range (*fn)() {
		ch <- prometheus.MustNewConstMetric(c.desc, prometheus.GaugeValue, float64(n), k[0], k[1])
	}
}

// keyStates are the lifecycle states KeyStateCounts reports, zeros
// included, so a series does not vanish when its last key moves on.
var keyStates = []keystore.State{keystore.StatePending, keystore.StateActive, keystore.StateRetired, keystore.StateDisabled, keystore.StateDestroyed}

// KeyStateCounts returns a RegisterKeyStates callback that counts keys in
// the store through keys, each scrape bounded by timeout. A key set whose
// keys cannot be read is left out (its series go absent, which alerts can
// catch; the readiness check names the store); if the sets cannot be
// listed, nothing is exported.
func KeyStateCounts(keys *keystore.Manager, timeout time.Duration) func() map[[2]string]int {
	return func() map[[2]string]int {
		ctx, cancel := context.WithTimeout(context.Background(), timeout)
		defer cancel()
		sets, err := keys.ListKeySets(ctx)
		if err != nil {
			return nil
		}
		out := make(map[[2]string]int, len(sets)*len(keyStates))
		for _, ks := range sets {
			list, err := keys.ListKeys(ctx, ks.Name)
			if err != nil {
				continue
			}
			for _, s := range keyStates {
				out[[2]string{ks.Name, string(s)}] = 0
			}
			for _, k := range list {
				out[[2]string{ks.Name, string(k.State)}]++
			}
		}
		return out
	}
}

// KEKErrorClass maps a KEK or key-store error to a KEKError class.
func KEKErrorClass(err error) string {
	switch {
	case errors.Is(err, kek.ErrKeyDisabled), errors.Is(err, keystore.ErrKEKDisabled):
		return KEKErrorDisabled
	case errors.Is(err, kek.ErrUnavailable), errors.Is(err, context.DeadlineExceeded):
		return KEKErrorUnavailable
	case errors.Is(err, kek.ErrAuthentication), errors.Is(err, keystore.ErrSealedKeyInvalid):
		return KEKErrorAuthentication
	}
	return KEKErrorOther
}

// Readiness answers /readyz from named checks: 200 "ready" when all pass,
// 503 listing the failing checks' names otherwise. Only names are sent,
// never the errors, which may carry KEK URIs or provider detail. Leadership
// is deliberately not a check: followers serve releases too, so they must
// stay in the load balancer.
//
// Add checks before serving; ServeHTTP and Failing are then safe for
// concurrent use.
type Readiness struct {
	timeout time.Duration
	checks  []readinessCheck
}

type readinessCheck struct {
	name  string
	check func(context.Context) error
}

// NewReadiness makes an empty Readiness whose checks together get at most
// timeout per probe (2s if timeout is not positive), so a hung backend
// fails the probe instead of hanging it.
func NewReadiness(timeout time.Duration) *Readiness {
	if timeout <= 0 {
		timeout = 2 * time.Second
	}
	return &Readiness{timeout: timeout}
}

// Add appends a named check. Names should be short and fixed ("store",
// "kek"); they are what a failing probe reports.
func (r *Readiness) Add(name string, check func(context.Context) error) *Readiness {
	r.checks = append(r.checks, readinessCheck{name: name, check: check})
	return r
}

// Failing runs every check concurrently, so one slow backend does not eat
// the others' time, and returns the names of those that failed, in the
// order they were added; nil when ready.
func (r *Readiness) Failing(ctx context.Context) []string {
	ctx, cancel := context.WithTimeout(ctx, r.timeout)
	defer cancel()
	failed := make([]bool, len(r.checks))
	done := make(chan int, len(r.checks))
	for i, c := range r.checks {
		go func() {
			failed[i] = c.check(ctx) != nil
			done <- i
		}()
	}
	finished := make([]bool, len(r.checks))
wait:
	for range r.checks {
		select {
		case i := <-done:
			finished[i] = true
		case <-ctx.Done():
			// Checks still running (one that ignores its context, say)
			// are reported failed; their goroutines finish on their own
			// into the buffered channel.
			break wait
		}
	}
	var names []string
	for i, c := range r.checks {
		if !finished[i] || failed[i] {
			names = append(names, c.name)
		}
	}
	return names
}

func (r *Readiness) ServeHTTP(w http.ResponseWriter, req *http.Request) {
	w.Header().Set("Content-Type", "text/plain; charset=utf-8")
	w.Header().Set("Cache-Control", "no-store")
	if failing := r.Failing(req.Context()); len(failing) > 0 {
		w.WriteHeader(http.StatusServiceUnavailable)
		_, _ = w.Write([]byte("not ready: " + strings.Join(failing, ", ") + "\n"))
		return
	}
	_, _ = w.Write([]byte("ready\n"))
}

// StoreReachable is a readiness check that lists the key sets.
func StoreReachable(keys *keystore.Manager) func(context.Context) error {
	return func(ctx context.Context) error {
		if _, err := keys.ListKeySets(ctx); err != nil {
			return fmt.Errorf("store: %w", err)
		}
		return nil
	}
}

// KEKsUsable is a readiness check that fails while any key set's KEK was
// last seen disabled or unavailable by this process's revalidation. It
// reads the recorded states only; it does not call the KEK.
func KEKsUsable(keys *keystore.Manager) func(context.Context) error {
	return func(ctx context.Context) error {
		states, err := keys.KEKStatus(ctx)
		if err != nil {
			return err
		}
		var bad []string
		for _, s := range states {
			if s.State == keystore.KEKStateDisabled || s.State == keystore.KEKStateUnavailable {
				bad = append(bad, s.KeySet+" ("+s.State+")")
			}
		}
		if len(bad) > 0 {
			return fmt.Errorf("key sets with an unusable KEK: %s", strings.Join(bad, ", "))
		}
		return nil
	}
}

// KeySetsUnsealed is a readiness check that every active key of every key
// set can be released by this process now: it asks for each one's private key
// as a release would (state, KEK gate, unseal cache) and zeroes the copy at
// once. After start-up the keys are cached, so no KEK is called.
func KeySetsUnsealed(keys *keystore.Manager) func(context.Context) error {
	return func(ctx context.Context) error {
		sets, err := keys.ListKeySets(ctx)
		if err != nil {
			return fmt.Errorf("unsealed: %w", err)
		}
		var errs []error
		for _, ks := range sets {
			// A set without an active key (the operator disabled it) is
			// not a reason to take the replica out of service: its other
			// key sets, and its retired keys, still serve.
			active, err := keys.ActivePublicKeys(ctx, ks.Name)
			for _, k := range active {
				priv, perr := keys.PrivateKey(ctx, ks.Name, k.KID)
				clear(priv)
				if perr != nil {
					err = perr
					break
				}
			}
			if err != nil {
				errs = append(errs, fmt.Errorf("key set %q: %w", ks.Name, err))
			}
		}
		return errors.Join(errs...)
	}
}
