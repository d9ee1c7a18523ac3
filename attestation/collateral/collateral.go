// Package collateral obtains the documents that attestation verifiers need
// besides the evidence: AMD KDS certificates (VCEK, VLEK, ASK/ARK
// cert_chain) and CRLs, and Intel PCS TDX TCB info, QE identity, PCK CRL
// and root CA CRL.
//
// A Store is the getter that go-sev-guest (trust.HTTPSGetter,
// trust.ContextHTTPSGetter) and go-tdx-guest (through Store.TDX) call with
// the vendors' canonical URLs. It fetches from configurable base URLs (AMD
// KDS, Intel PCS, a PCCS, Azure's THIM cache), keeps documents in memory
// and in a directory until the next-update time each document states, runs
// one fetch per document at a time, backs off when throttled, bounds every
// size, and in offline mode serves only a directory prepared elsewhere.
//
// The store authenticates nothing: bodies and issuer chains are checked by
// the verifiers against their trusted roots. It only decides what to fetch
// from where and how long to keep it. See docs/collateral.md.
package collateral

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"os"
	"sync"
	"time"
)

// ErrNotFound is returned when a document does not exist: the server
// answered 404 (or 410), or the store is offline and the document is not in
// its directory. Callers map it to "collateral unavailable".
var ErrNotFound = errors.New("collateral: document not found")

// Cache lifetimes.
const (
	// DefaultTTL is how long a document that states no next-update time
	// is kept before it is fetched again.
	DefaultTTL = time.Hour
	// DefaultMinRefresh is the least time between two fetches of one
	// document. It matters for documents already past their next update
	// when fetched (a cache serving old TCB info): without it every
	// verification would refetch them.
	DefaultMinRefresh = 5 * time.Minute
	// DefaultFailureTTL is how long a failed fetch is remembered before
	// the store tries again: a 404, so that evidence naming a chip unknown
	// to KDS does not cost a KDS request each time, and a failed refresh
	// whose stale copy is being served, so that an outage does not add
	// a round of retries to every verification.
	DefaultFailureTTL = time.Minute
	// DefaultMaxEntries bounds the in-memory cache.
	DefaultMaxEntries = 1024
)

// Config configures a Store. The zero value fetches from the vendors with
// a memory-only cache.
type Config struct {
	// AMDBaseURL replaces https://kdsintf.amd.com. A path is prefixed to
	// the KDS path.
	AMDBaseURL string
	// IntelPCSBaseURL replaces https://api.trustedservices.intel.com
	// (which serves /sgx/certification/v4/... and /tdx/certification/v4/...):
	// a PCCS, or Azure's THIM cache such as https://global.acccache.azure.net.
	IntelPCSBaseURL string
	// IntelCertsBaseURL replaces https://certificates.trustedservices.intel.com,
	// which serves the root CA CRL.
	IntelCertsBaseURL string
	// AllowHTTP permits http:// base URLs. Only for loopback tests or a
	// PCCS on the same host: the bodies are signed, but a network attacker
	// could still withhold or replay old documents.
	AllowHTTP bool

	// Dir is the cache directory (created if missing). Empty means a
	// memory-only cache. In Offline mode it is the only source.
	Dir string
	// Offline never touches the network: documents come from Dir only,
	// even when past their next update (verification then decides).
	Offline bool

	// Client makes the requests; nil means a client with timeouts suited
	// to the vendors' services that refuses redirects to plain http.
	Client *http.Client
	// RequestTimeout bounds one request of the default client (not of a
	// Client given above); 0 means one minute.
	RequestTimeout time.Duration
	// Now is the clock for freshness; nil means time.Now.
	Now func() time.Time
	// MaxAttempts bounds requests per fetch (429, 5xx and transport
	// errors are retried); 0 means DefaultMaxAttempts.
	MaxAttempts int
	// BaseBackoff is the first delay without Retry-After, doubled per
	// attempt; 0 means DefaultBaseBackoff.
	BaseBackoff time.Duration
	// MaxBackoff caps every delay, Retry-After included; 0 means
	// DefaultMaxBackoff.
	MaxBackoff time.Duration
	// Sleep waits between attempts; nil means a timer that honours ctx.
	Sleep func(ctx context.Context, d time.Duration) error
	// MaxDocumentSize bounds bodies; 0 means DefaultMaxDocumentSize.
	MaxDocumentSize int64
	// DefaultTTL, MinRefresh, FailureTTL and MaxEntries: 0 means the
	// package defaults of the same names.
	DefaultTTL time.Duration
	MinRefresh time.Duration
	FailureTTL time.Duration
	MaxEntries int
	// Logger receives warnings (retries, stale documents, cache write
	// failures); nil discards them.
	Logger *slog.Logger
	// OnLookup, if set, is called once per Fetch of a well-formed URL:
	// hit when memory answered (a fresh document or a remembered 404),
	// miss when the directory or the network was consulted. It runs on
	// the caller's goroutine and must be quick (a metrics counter).
	OnLookup func(hit bool)
}

// Document is a collateral document and what the store knows of it.
type Document struct {
	// URL is the canonical vendor URL.
	URL string
	// Header holds the response headers verifiers need (Intel issuer
	// chains), with canonical keys; nil when there are none.
	Header http.Header
	Body   []byte
	// NextUpdate is when the document should be replaced: a CRL's
	// NextUpdate, Intel JSON's nextUpdate, a certificate's NotAfter, or
	// FetchedAt plus the default TTL when the document states none.
	NextUpdate time.Time
	// FetchedAt is when the store obtained it (the file's modification
	// time for documents read from the directory).
	FetchedAt time.Time
	// Stale is set when NextUpdate has passed: the store could not get a
	// newer copy (offline, or the refetch failed) and returns what it has,
	// so the verifier can fail with "collateral expired".
	Stale bool
}

func (d *Document) clone(now time.Time) *Document {
	c := *d
	c.Body = bytes.Clone(d.Body)
	c.Header = d.Header.Clone()
	c.Stale = !now.Before(d.NextUpdate)
	return &c
}

// Store fetches and caches collateral. It is safe for concurrent use.
type Store struct {
	bases       map[string]base
	dir         string
	offline     bool
	client      *http.Client
	now         func() time.Time
	sleep       func(context.Context, time.Duration) error
	maxAttempts int
	baseBackoff time.Duration
	maxBackoff  time.Duration
	maxSize     int64
	defaultTTL  time.Duration
	minRefresh  time.Duration
	failureTTL  time.Duration
	maxEntries  int
	log         *slog.Logger
	onLookup    func(hit bool)

	flights flightGroup
	mu      sync.Mutex
	mem     map[string]*entry
}

// entry is a cached document, or a remembered 404 when doc is nil. Until
// until, it is served without looking for a newer copy.
type entry struct {
	doc   *Document
	until time.Time
}

// New returns a Store for cfg.
func New(cfg Config) (*Store, error) {
	s := &Store{
		dir:         cfg.Dir,
		offline:     cfg.Offline,
		client:      cfg.Client,
		now:         cfg.Now,
		sleep:       cfg.Sleep,
		maxAttempts: orDefault(cfg.MaxAttempts, DefaultMaxAttempts),
		baseBackoff: orDefault(cfg.BaseBackoff, DefaultBaseBackoff),
		maxBackoff:  orDefault(cfg.MaxBackoff, DefaultMaxBackoff),
		maxSize:     orDefault(cfg.MaxDocumentSize, DefaultMaxDocumentSize),
		defaultTTL:  orDefault(cfg.DefaultTTL, DefaultTTL),
		minRefresh:  orDefault(cfg.MinRefresh, DefaultMinRefresh),
		failureTTL:  orDefault(cfg.FailureTTL, DefaultFailureTTL),
		maxEntries:  orDefault(cfg.MaxEntries, DefaultMaxEntries),
		log:         cfg.Logger,
		onLookup:    cfg.OnLookup,
		mem:         make(map[string]*entry),
	}
	if cfg.MaxAttempts < 0 || cfg.BaseBackoff < 0 || cfg.MaxBackoff < 0 || cfg.MaxDocumentSize < 0 ||
		cfg.DefaultTTL < 0 || cfg.MinRefresh < 0 || cfg.FailureTTL < 0 || cfg.MaxEntries < 0 {
		return nil, errors.New("collateral: negative limit in Config")
	}
	if s.offline && s.dir == "" {
		return nil, errors.New("collateral: Offline needs Dir")
	}
	s.bases = make(map[string]base, 3)
	for _, b := range []struct{ host, name, raw, def string }{
		{HostAMDKDS, "AMDBaseURL", cfg.AMDBaseURL, defaultAMDBase},
		{HostIntelPCS, "IntelPCSBaseURL", cfg.IntelPCSBaseURL, defaultPCSBase},
		{HostIntelCerts, "IntelCertsBaseURL", cfg.IntelCertsBaseURL, defaultCertBase},
	} {
		pb, err := parseBase(b.name, b.raw, b.def, cfg.AllowHTTP)
		if err != nil {
			return nil, err
		}
		s.bases[b.host] = pb
	}
	if s.offline {
		// A mistyped offline directory should fail at start-up, not as
		// "collateral unavailable" on every verification.
		if fi, err := os.Stat(s.dir); err != nil || !fi.IsDir() {
			return nil, fmt.Errorf("collateral: offline directory %s: not a readable directory (%v)", s.dir, err)
		}
	} else if s.dir != "" {
		if err := os.MkdirAll(s.dir, dirPerm); err != nil {
			return nil, fmt.Errorf("collateral: cache directory: %w", err)
		}
	}
	if s.client == nil {
		s.client = defaultClient(cfg.AllowHTTP, orDefault(cfg.RequestTimeout, time.Minute))
	}
	if s.now == nil {
		s.now = time.Now
	}
	if s.sleep == nil {
		s.sleep = sleepContext
	}
	if s.log == nil {
		s.log = slog.New(slog.DiscardHandler)
	}
	return s, nil
}

func orDefault[T int | int64 | time.Duration](v, def T) T {
	if v == 0 {
		return def
	}
	return v
}

// defaultClient has timeouts for each phase, a bound on response headers
// and no redirect to plain http (unless http bases are allowed anyway).
func defaultClient(allowHTTP bool, timeout time.Duration) *http.Client {
	t := http.DefaultTransport.(*http.Transport).Clone()
	t.DialContext = (&net.Dialer{Timeout: 10 * time.Second, KeepAlive: 30 * time.Second}).DialContext
	t.TLSHandshakeTimeout = 10 * time.Second
	t.ResponseHeaderTimeout = 30 * time.Second
	t.MaxResponseHeaderBytes = maxHeadersSize
	return &http.Client{
		Transport: t,
		Timeout:   timeout,
		CheckRedirect: func(req *http.Request, via []*http.Request) error {
			if len(via) >= 5 {
				return errors.New("collateral: too many redirects")
			}
			if req.URL.Scheme != "https" && !allowHTTP {
				return fmt.Errorf("collateral: redirect to %s refused", req.URL.Scheme)
			}
			return nil
		},
	}
}
