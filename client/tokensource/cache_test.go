package tokensource

import (
	"context"
	"errors"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

type fakeClock struct {
	mu sync.Mutex
	t  time.Time
}

func (c *fakeClock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.t
}

func (c *fakeClock) Advance(d time.Duration) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.t = c.t.Add(d)
}

// countingSource issues a new token per call from next and counts calls.
// When gate is non-nil each call waits for it to close (or ctx to end).
type countingSource struct {
	calls atomic.Int32
	gate  chan struct{}
	next  func(n int) (string, error)
}

func (s *countingSource) Token(ctx context.Context) (string, error) {
	n := int(s.calls.Add(1))
	if s.gate != nil {
		select {
		case <-s.gate:
		case <-ctx.Done():
			return "", ctx.Err()
		}
	}
	return s.next(n)
}

// jwtSource returns a source whose n-th token expires ttl after clock's now.
func jwtSource(t *testing.T, clock *fakeClock, ttl time.Duration) *countingSource {
	return &countingSource{next: func(n int) (string, error) {
		return makeJWT(t, map[string]any{"n": n, "exp": clock.Now().Add(ttl).Unix()}), nil
	}}
}

var epoch = time.Date(2030, 1, 1, 0, 0, 0, 0, time.UTC)

func TestCachedReusesUntilRefreshWindow(t *testing.T) {
	clock := &fakeClock{t: epoch}
	src := jwtSource(t, clock, time.Hour)
	c := Cached(src, CacheOptions{Now: clock.Now})
	ctx := context.Background()

	first, err := c.Token(ctx)
	if err != nil {
		t.Fatal(err)
	}
	second, err := c.Token(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if second != first || src.calls.Load() != 1 {
		t.Fatalf("second call: calls = %d, same token = %v; want served from cache", src.calls.Load(), second == first)
	}

	// One second before the 5-minute window opens: still cached.
	clock.Advance(55*time.Minute - time.Second)
	if tok, _ := c.Token(ctx); tok != first || src.calls.Load() != 1 {
		t.Fatalf("before the window: calls = %d, want 1", src.calls.Load())
	}
	// Inside the window: refetched, and the new token is then cached.
	clock.Advance(time.Second)
	third, err := c.Token(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if third == first || src.calls.Load() != 2 {
		t.Fatalf("inside the window: calls = %d, want 2 and a new token", src.calls.Load())
	}
	if tok, _ := c.Token(ctx); tok != third || src.calls.Load() != 2 {
		t.Fatalf("after refresh: calls = %d, want 2", src.calls.Load())
	}
}

func TestCachedCustomRefreshBefore(t *testing.T) {
	clock := &fakeClock{t: epoch}
	src := jwtSource(t, clock, time.Hour)
	c := Cached(src, CacheOptions{Now: clock.Now, RefreshBefore: 30 * time.Minute})
	_, _ = c.Token(context.Background())
	clock.Advance(29 * time.Minute)
	_, _ = c.Token(context.Background())
	if n := src.calls.Load(); n != 1 {
		t.Fatalf("calls = %d at 29m, want 1", n)
	}
	clock.Advance(time.Minute)
	_, _ = c.Token(context.Background())
	if n := src.calls.Load(); n != 2 {
		t.Fatalf("calls = %d at 30m, want 2", n)
	}
}

func TestCachedConcurrentCallersShareOneFetch(t *testing.T) {
	clock := &fakeClock{t: epoch}
	src := jwtSource(t, clock, time.Hour)
	src.gate = make(chan struct{})
	c := Cached(src, CacheOptions{Now: clock.Now})

	const callers = 20
	var (
		wg     sync.WaitGroup
		tokens [callers]string
		errs   [callers]error
	)
	for i := range callers {
		wg.Go(func() { tokens[i], errs[i] = c.Token(context.Background()) })
	}
	// Hold the fetch open until it has started, giving the other callers
	// time to pile up behind it. Late callers would be served from the
	// cache, so the count below holds whatever the scheduling.
	for src.calls.Load() == 0 {
		time.Sleep(time.Millisecond)
	}
	time.Sleep(20 * time.Millisecond)
	close(src.gate)
	wg.Wait()

	if n := src.calls.Load(); n != 1 {
		t.Fatalf("fetches = %d, want exactly 1", n)
	}
	for i := range callers {
		if errs[i] != nil || tokens[i] != tokens[0] {
			t.Fatalf("caller %d: err = %v, same token = %v", i, errs[i], tokens[i] == tokens[0])
		}
	}
}

func TestCachedWaiterCancellationDoesNotFailOthers(t *testing.T) {
	clock := &fakeClock{t: epoch}
	src := jwtSource(t, clock, time.Hour)
	src.gate = make(chan struct{})
	c := Cached(src, CacheOptions{Now: clock.Now})

	// The caller that starts the fetch gives up.
	ctx, cancel := context.WithCancel(context.Background())
	errc := make(chan error, 1)
	go func() { _, err := c.Token(ctx); errc <- err }()
	for src.calls.Load() == 0 {
		time.Sleep(time.Millisecond)
	}
	cancel()
	if err := <-errc; !errors.Is(err, context.Canceled) {
		t.Fatalf("cancelled caller: err = %v", err)
	}
	// A patient caller joins the same fetch and gets its result.
	done := make(chan error, 1)
	go func() { _, err := c.Token(context.Background()); done <- err }()
	time.Sleep(10 * time.Millisecond)
	close(src.gate)
	if err := <-done; err != nil {
		t.Fatalf("patient caller: %v", err)
	}
	if n := src.calls.Load(); n != 1 {
		t.Fatalf("fetches = %d, want 1 (shared)", n)
	}
}

func TestCachedDoesNotCacheUnusableTokens(t *testing.T) {
	clock := &fakeClock{t: epoch}
	tests := map[string]func(t *testing.T) string{
		"opaque":     func(*testing.T) string { return "opaque-token" },
		"no exp":     func(t *testing.T) string { return makeJWT(t, map[string]any{"aud": testResource}) },
		"string exp": func(t *testing.T) string { return makeJWT(t, map[string]any{"exp": "4102444800"}) },
		"short-lived": func(t *testing.T) string {
			return makeJWT(t, map[string]any{"exp": clock.Now().Add(4 * time.Minute).Unix()})
		},
		"expired": func(t *testing.T) string {
			return makeJWT(t, map[string]any{"exp": clock.Now().Add(-time.Hour).Unix()})
		},
	}
	for name, mk := range tests {
		t.Run(name, func(t *testing.T) {
			src := &countingSource{next: func(int) (string, error) { return mk(t), nil }}
			c := Cached(src, CacheOptions{Now: clock.Now})
			for range 3 {
				if _, err := c.Token(context.Background()); err != nil {
					t.Fatal(err)
				}
			}
			if n := src.calls.Load(); n != 3 {
				t.Fatalf("fetches = %d, want 3 (nothing cached)", n)
			}
		})
	}
}

func TestCachedDoesNotCacheErrors(t *testing.T) {
	clock := &fakeClock{t: epoch}
	good := jwtSource(t, clock, time.Hour)
	boom := errors.New("imds unavailable")
	src := &countingSource{next: func(n int) (string, error) {
		if n == 1 {
			return "", boom
		}
		return good.next(n)
	}}
	c := Cached(src, CacheOptions{Now: clock.Now})
	if _, err := c.Token(context.Background()); !errors.Is(err, boom) {
		t.Fatalf("first call: err = %v, want the source's error", err)
	}
	if _, err := c.Token(context.Background()); err != nil {
		t.Fatalf("second call: %v", err)
	}
	if _, err := c.Token(context.Background()); err != nil {
		t.Fatal(err)
	}
	if n := src.calls.Load(); n != 2 {
		t.Fatalf("fetches = %d, want 2", n)
	}
}

func TestCachedFetchTimeout(t *testing.T) {
	src := &countingSource{gate: make(chan struct{}), next: func(int) (string, error) { return "never", nil }}
	c := Cached(src, CacheOptions{FetchTimeout: 20 * time.Millisecond})
	// The caller has no deadline; the fetch's own timeout ends it.
	if _, err := c.Token(context.Background()); !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("err = %v, want deadline exceeded", err)
	}
}
