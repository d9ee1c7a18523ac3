package tokensource

import (
	"context"
	"sync"
	"time"
)

const (
	// DefaultRefreshBefore is how long before a token's exp Cached stops
	// handing it out. It covers clock skew between this host and the KMS
	// and the time a release takes, so a token is not expired on arrival.
	DefaultRefreshBefore = 5 * time.Minute

	// DefaultFetchTimeout bounds a shared fetch; see CacheOptions.
	DefaultFetchTimeout = time.Minute
)

// CacheOptions configures Cached.
type CacheOptions struct {
	// RefreshBefore is how long before exp a token stops being reused.
	// Zero or negative means DefaultRefreshBefore.
	RefreshBefore time.Duration
	// FetchTimeout bounds one fetch from the wrapped source. A fetch is
	// shared by every caller waiting for it, so it runs under a context
	// detached from the caller that started it (one caller giving up must
	// not fail the others) and this timeout keeps it from running forever.
	// Zero or negative means DefaultFetchTimeout.
	FetchTimeout time.Duration
	// Now returns the current time. Defaults to time.Now; tests pass a
	// fake clock.
	Now func() time.Time
}

// Cached returns a Source that reuses src's token until RefreshBefore
// before the exp claim in its (unverified) JWT payload. At most one fetch
// from src runs at a time; callers arriving meanwhile wait for it and share
// its result, each until its own context ends. Tokens without a usable exp,
// or already within RefreshBefore of it, are returned but not cached.
// Errors are not cached: the next call fetches again.
func Cached(src Source, opts CacheOptions) Source {
	c := &cache{
		src:           src,
		refreshBefore: opts.RefreshBefore,
		fetchTimeout:  opts.FetchTimeout,
		now:           opts.Now,
	}
	if c.refreshBefore <= 0 {
		c.refreshBefore = DefaultRefreshBefore
	}
	if c.fetchTimeout <= 0 {
		c.fetchTimeout = DefaultFetchTimeout
	}
	if c.now == nil {
		c.now = time.Now
	}
	return c
}

type cache struct {
	src           Source
	refreshBefore time.Duration
	fetchTimeout  time.Duration
	now           func() time.Time

	mu       sync.Mutex
	token    string    // "" when nothing is cached
	useUntil time.Time // exp - refreshBefore
	inflight *fetch
}

// fetch is one call to the wrapped source; done is closed once token and
// err are set.
type fetch struct {
	done  chan struct{}
	token string
	err   error
}

func (c *cache) Token(ctx context.Context) (string, error) {
	c.mu.Lock()
	if c.token != "" && c.now().Before(c.useUntil) {
		tok := c.token
		c.mu.Unlock()
		return tok, nil
	}
	f := c.inflight
	if f == nil {
		f = &fetch{done: make(chan struct{})}
		c.inflight = f
		// WithoutCancel keeps the starter's values (trace IDs) but not its
		// cancellation; see CacheOptions.FetchTimeout.
		go c.run(context.WithoutCancel(ctx), f)
	}
	c.mu.Unlock()

	select {
	case <-f.done:
		return f.token, f.err
	case <-ctx.Done():
		return "", ctx.Err()
	}
}

func (c *cache) run(ctx context.Context, f *fetch) {
	ctx, cancel := context.WithTimeout(ctx, c.fetchTimeout)
	defer cancel()
	tok, err := c.src.Token(ctx)

	c.mu.Lock()
	defer c.mu.Unlock()
	// Whatever was cached is past its use-by time (or there would have
	// been no fetch), so drop it even if the new token is not cacheable.
	c.token, c.useUntil = "", time.Time{}
	if err == nil {
		if exp, ok := jwtExpiry(tok); ok {
			if until := exp.Add(-c.refreshBefore); c.now().Before(until) {
				c.token, c.useUntil = tok, until
			}
		}
	}
	c.inflight = nil
	f.token, f.err = tok, err
	close(f.done)
}
