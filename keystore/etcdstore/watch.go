package etcdstore

import (
	"context"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"
)

// Backoff between attempts to re-establish a broken watch.
const (
	watchRetryMin = 50 * time.Millisecond
	watchRetryMax = 2 * time.Second
)

// Watch reports every write under the store's prefix, by this or any other
// replica, from the moment Watch returns until ctx ends or the store is
// closed; then the channel is closed.
//
// Nothing is lost silently: the etcd client resumes a watch across
// reconnects from the last revision seen, and this loop restarts it from
// there after errors (such as a member losing its leader). If etcd has
// compacted past that revision, the missed events are gone: a
// ChangeResync is sent and watching continues from the oldest revision
// still kept, so the receiver drops all caches and reloads.
//
// The receiver must keep reading; a slow receiver holds the watch back
// (etcd keeps the events), it does not lose them.
func (s *Store) Watch(ctx context.Context) <-chan Change {
	// The starting revision is read before returning, so writes that
	// complete after Watch returns are reported. If etcd does not answer,
	// the loop keeps trying and starts with a ChangeResync instead.
	var next int64
	resync := false
	if resp, err := s.revisionNow(ctx); err == nil {
		next = resp.Header.Revision + 1
	} else {
		resync = true
	}
	return s.watchFrom(ctx, next, resync)
}

// watchFrom starts the watch loop at revision next (0: unknown yet).
func (s *Store) watchFrom(ctx context.Context, next int64, resync bool) <-chan Change {
	out := make(chan Change, 64)
	s.mu.Lock()
	if s.closed() != nil {
		s.mu.Unlock()
		close(out)
		return out
	}
	s.wg.Add(1)
	s.mu.Unlock()
	go func() {
		defer s.wg.Done()
		defer close(out)
		s.watchLoop(ctx, out, next, resync)
	}()
	return out
}

func (s *Store) watchLoop(ctx context.Context, out chan<- Change, next int64, resync bool) {
	send := func(c Change) bool {
		select {
		case out <- c:
			return true
		case <-ctx.Done():
		case <-s.done:
		}
		return false
	}
	backoff := watchRetryMin
	for {
		if next == 0 {
			resp, err := s.revisionNow(ctx)
			if err == nil {
				next = resp.Header.Revision + 1
			}
		}
		if next != 0 && resync {
			if !send(Change{Kind: ChangeResync, Revision: next}) {
				return
			}
			resync = false
		}
		if next != 0 {
			var progressed bool
			next, resync, progressed = s.watchOnce(ctx, next, send)
			if progressed {
				backoff = watchRetryMin
			}
		}
		select {
		case <-ctx.Done():
			return
		case <-s.done:
			return
		case <-time.After(backoff):
		}
		backoff = min(2*backoff, watchRetryMax)
	}
}

// watchOnce follows one etcd watch from revision next until it breaks, and
// returns where to resume, whether events were lost to compaction, and
// whether anything arrived (to reset the retry backoff).
func (s *Store) watchOnce(ctx context.Context, next int64, send func(Change) bool) (int64, bool, bool) {
	// RequireLeader ends the watch when the member is cut off from the
	// quorum, instead of leaving it silently stalled there; the retry may
	// then land on a healthy member.
	wctx, cancel := context.WithCancel(clientv3.WithRequireLeader(ctx))
	defer cancel()
	progressed := false
	for resp := range s.cli.Watch(wctx, s.l.prefix, clientv3.WithPrefix(), clientv3.WithRev(next), clientv3.WithProgressNotify()) {
		progressed = true
		if resp.CompactRevision != 0 {
			return resp.CompactRevision, true, progressed
		}
		if resp.Err() != nil {
			return next, false, progressed
		}
		for _, ev := range resp.Events {
			if c, ok := s.l.parseKey(ev.Kv.Key, ev.Kv.Value); ok {
				c.Revision = ev.Kv.ModRevision
				if !send(c) {
					return next, false, progressed
				}
			}
			next = ev.Kv.ModRevision + 1
		}
		// A progress notification promises every event up to its header
		// revision was delivered.
		if resp.IsProgressNotify() && resp.Header.Revision >= next {
			next = resp.Header.Revision + 1
		}
	}
	return next, false, progressed
}

// revisionNow asks etcd for its current revision, bounded in time: the
// client waits for a connection by default, which would hold the watch
// (and the replica's cache invalidation) until etcd answers.
func (s *Store) revisionNow(ctx context.Context) (*clientv3.GetResponse, error) {
	ctx, cancel := context.WithTimeout(ctx, DefaultDialTimeout)
	defer cancel()
	return s.cli.Get(ctx, s.l.prefix, clientv3.WithPrefix(), clientv3.WithCountOnly())
}
