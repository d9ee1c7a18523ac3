package collateral

import (
	"context"
	"sync"
)

// flightGroup runs at most one load per document at a time; concurrent
// callers for the same document wait for it and share its result. Unlike
// golang.org/x/sync/singleflight, the shared load is not tied to the
// context of whoever started it: it runs until every waiter has given up,
// so one impatient caller cannot fail the others.
type flightGroup struct {
	mu    sync.Mutex
	calls map[string]*flightCall
}

type flightCall struct {
	done    chan struct{}
	doc     *Document
	err     error
	waiters int
	cancel  context.CancelFunc
}

func (g *flightGroup) do(ctx context.Context, key string, load func(context.Context) (*Document, error)) (*Document, error) {
	g.mu.Lock()
	c, ok := g.calls[key]
	if !ok {
		// Keep ctx's values (loggers, traces), drop its deadline and
		// cancellation: the call is cancelled when its last waiter leaves.
		lctx, cancel := context.WithCancel(context.WithoutCancel(ctx))
		c = &flightCall{done: make(chan struct{}), cancel: cancel}
		if g.calls == nil {
			g.calls = make(map[string]*flightCall)
		}
		g.calls[key] = c
		go func() {
			c.doc, c.err = load(lctx)
			g.mu.Lock()
			if g.calls[key] == c {
				delete(g.calls, key)
			}
			g.mu.Unlock()
			cancel()
			close(c.done)
		}()
	}
	c.waiters++
	g.mu.Unlock()

	select {
	case <-c.done:
		return c.doc, c.err
	case <-ctx.Done():
		g.mu.Lock()
		if c.waiters--; c.waiters == 0 {
			// Nobody wants the result any more. Forget the call so that a
			// caller arriving now starts afresh instead of joining a
			// cancelled load.
			c.cancel()
			if g.calls[key] == c {
				delete(g.calls, key)
			}
		}
		g.mu.Unlock()
		return nil, ctx.Err()
	}
}

// inFlight reports how many callers wait for key (tests).
func (g *flightGroup) inFlight(key string) int {
	g.mu.Lock()
	defer g.mu.Unlock()
	if c, ok := g.calls[key]; ok {
		return c.waiters
	}
	return 0
}
