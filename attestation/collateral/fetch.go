package collateral

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"strconv"
	"time"
)

// Retry policy defaults. AMD asks clients to wait about ten seconds before
// repeating a KDS request; both vendors answer 429 when throttling.
const (
	DefaultMaxAttempts = 4
	DefaultBaseBackoff = 2 * time.Second
	DefaultMaxBackoff  = 30 * time.Second
)

// attemptError is the outcome of one failed request.
type attemptError struct {
	err        error
	retry      bool          // 429, 5xx or a transport error
	retryAfter time.Duration // from Retry-After, when hasAfter
	hasAfter   bool
}

func (e *attemptError) Error() string { return e.err.Error() }
func (e *attemptError) Unwrap() error { return e.err }

// download fetches d from its configured base, retrying throttled and
// failed requests with backoff, up to the configured number of attempts.
func (s *Store) download(ctx context.Context, d *docURL) (http.Header, []byte, error) {
	target := s.bases[d.host].fetchURL(d)
	for attempt := 1; ; attempt++ {
		h, body, err := s.attempt(ctx, target)
		if err == nil {
			return h, body, nil
		}
		var ae *attemptError
		if !errors.As(err, &ae) || !ae.retry {
			return nil, nil, fmt.Errorf("collateral: GET %s: %w", d.canonical, err)
		}
		if attempt >= s.maxAttempts {
			return nil, nil, fmt.Errorf("collateral: GET %s: giving up after %d attempts: %w", d.canonical, attempt, err)
		}
		delay := s.backoff(attempt, ae)
		s.log.Warn("collateral: retrying", "url", d.canonical, "attempt", attempt, "delay", delay, "err", ae.err)
		if serr := s.sleep(ctx, delay); serr != nil {
			return nil, nil, fmt.Errorf("collateral: GET %s: %w (after %d attempts: %v)", d.canonical, serr, attempt, err)
		}
	}
}

// backoff is Retry-After when the server sent one, else exponential from
// BaseBackoff; both capped at MaxBackoff so that a server asking for an
// hour cannot park a verification that long (the bounded attempts then
// fail it with a clear error instead).
func (s *Store) backoff(attempt int, ae *attemptError) time.Duration {
	d := ae.retryAfter
	if !ae.hasAfter {
		d = s.baseBackoff
		for i := 1; i < attempt && d < s.maxBackoff; i++ {
			d *= 2
		}
	}
	return min(d, s.maxBackoff)
}

// attempt makes one GET request.
func (s *Store) attempt(ctx context.Context, target string) (http.Header, []byte, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, target, nil)
	if err != nil {
		return nil, nil, err
	}
	req.Header.Set("User-Agent", "attested-kms-collateral/1")
	resp, err := s.client.Do(req)
	if err != nil {
		if ctx.Err() != nil {
			return nil, nil, ctx.Err()
		}
		return nil, nil, &attemptError{err: err, retry: true}
	}
	defer resp.Body.Close()
	// Drain a little so the connection can be reused; never much.
	defer func() { _, _ = io.Copy(io.Discard, io.LimitReader(resp.Body, 4<<10)) }()

	switch code := resp.StatusCode; {
	case code == http.StatusOK:
	case code == http.StatusNotFound || code == http.StatusGone:
		return nil, nil, fmt.Errorf("%w: HTTP %d", ErrNotFound, code)
	case code == http.StatusTooManyRequests || code == http.StatusBadGateway ||
		code == http.StatusServiceUnavailable || code == http.StatusGatewayTimeout ||
		code == http.StatusInternalServerError:
		ra, ok := parseRetryAfter(resp.Header.Get("Retry-After"), s.now())
		return nil, nil, &attemptError{err: fmt.Errorf("HTTP %d %s", code, http.StatusText(code)), retry: true, retryAfter: ra, hasAfter: ok}
	default:
		return nil, nil, fmt.Errorf("HTTP %d %s", code, http.StatusText(code))
	}
	if resp.ContentLength > s.maxSize {
		return nil, nil, fmt.Errorf("%w: announced %d bytes, limit %d", ErrTooLarge, resp.ContentLength, s.maxSize)
	}
	body, err := io.ReadAll(io.LimitReader(resp.Body, s.maxSize+1))
	if err != nil {
		if ctx.Err() != nil {
			return nil, nil, ctx.Err()
		}
		// A connection cut mid-body is as transient as one never made.
		var ne net.Error
		return nil, nil, &attemptError{err: err, retry: errors.As(err, &ne) || errors.Is(err, io.ErrUnexpectedEOF)}
	}
	if int64(len(body)) > s.maxSize {
		return nil, nil, fmt.Errorf("%w: more than %d bytes", ErrTooLarge, s.maxSize)
	}
	h := filterHeader(resp.Header)
	if headerSize(h) > maxHeadersSize {
		return nil, nil, fmt.Errorf("%w: issuer chain headers over %d bytes", ErrTooLarge, maxHeadersSize)
	}
	return h, body, nil
}

// maxRetryAfter bounds a parsed Retry-After before the MaxBackoff cap, so
// arithmetic on absurd values cannot overflow.
const maxRetryAfter = 24 * time.Hour

// parseRetryAfter reads a Retry-After value: delay-seconds or an HTTP date
// (RFC 9110, section 10.2.3). ok is false when v is absent or unreadable.
func parseRetryAfter(v string, now time.Time) (d time.Duration, ok bool) {
	if v == "" {
		return 0, false
	}
	if n, err := strconv.ParseUint(v, 10, 64); err == nil {
		if n > uint64(maxRetryAfter/time.Second) {
			return maxRetryAfter, true
		}
		return time.Duration(n) * time.Second, true
	}
	t, err := http.ParseTime(v)
	if err != nil {
		return 0, false
	}
	d = t.Sub(now)
	return max(0, min(d, maxRetryAfter)), true
}

// sleepContext waits for d or until ctx is done.
func sleepContext(ctx context.Context, d time.Duration) error {
	if d <= 0 {
		return ctx.Err()
	}
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}
