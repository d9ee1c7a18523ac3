package etcdstore

import (
	"context"
	"errors"
	"fmt"
	"math"
	"sync"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"
	"go.etcd.io/etcd/client/v3/concurrency"

	"github.com/attested-kms/attested-kms/keystore"
)

// Leadership is a won election. It lasts while this replica's lease is
// kept alive: if the process dies or loses etcd for longer than the TTL,
// the lease expires, Done is closed and another campaigner wins.
type Leadership struct {
	s        *Store
	session  *concurrency.Session
	election *concurrency.Election

	once      sync.Once
	resignErr error
}

// Campaign blocks until this replica leads the election name (or ctx
// ends). ttl is the lease: how long leadership outlives a replica that
// stopped answering. etcd counts in whole seconds, so ttl is rounded up
// to at least one second.
func (s *Store) Campaign(ctx context.Context, name string, ttl time.Duration) (*Leadership, error) {
	if err := s.begin(ctx); err != nil {
		return nil, err
	}
	// Key set name rules: no '/', so one election's prefix never covers
	// another's.
	if !keystore.ValidKeySetName(name) {
		return nil, fmt.Errorf("etcdstore: election name %q: %w", name, keystore.ErrInvalidArgument)
	}
	secs := int64(math.Ceil(ttl.Seconds()))
	secs = max(secs, 1)
	// The lease is granted under the caller's ctx, but kept alive under
	// the store's: leadership must not end when Campaign's ctx does.
	lease, err := s.cli.Grant(ctx, secs)
	if err != nil {
		return nil, s.fail(ctx, "grant election lease", err)
	}
	session, err := concurrency.NewSession(s.cli, concurrency.WithLease(lease.ID), concurrency.WithTTL(int(secs)), concurrency.WithContext(s.ctx))
	if err != nil {
		s.revoke(lease.ID)
		return nil, s.fail(ctx, "start election session", err)
	}
	e := concurrency.NewElection(session, s.l.election(name))
	if err := e.Campaign(ctx, s.replica); err != nil {
		_ = session.Close()
		return nil, s.fail(ctx, "campaign", err)
	}
	l := &Leadership{s: s, session: session, election: e}
	s.mu.Lock()
	if s.closed() != nil {
		s.mu.Unlock()
		_ = l.Resign(context.Background())
		return nil, s.closed()
	}
	s.leaders[l] = struct{}{}
	s.mu.Unlock()
	return l, nil
}

func (s *Store) revoke(id clientv3.LeaseID) {
	ctx, cancel := context.WithTimeout(s.ctx, time.Second)
	defer cancel()
	_, _ = s.cli.Revoke(ctx, id) // best effort: it expires anyway
}

// Done is closed when the leadership ends: lease lost or expired,
// Resign, or the store closed. A leader must stop acting as one then.
func (l *Leadership) Done() <-chan struct{} { return l.session.Done() }

// Revision is the etcd revision at which this leadership began. It only
// grows from one leader to the next, so it can fence writes made on a
// leader's behalf.
func (l *Leadership) Revision() int64 { return l.election.Rev() }

// Resign gives up leadership at once (instead of when the lease expires)
// so another campaigner takes over. It is safe to call more than once.
func (l *Leadership) Resign(ctx context.Context) error {
	l.once.Do(func() {
		err := l.election.Resign(ctx)
		// Closing the session revokes the lease, which also removes the
		// election key if Resign could not.
		if cerr := l.session.Close(); cerr != nil && err == nil && !errors.Is(cerr, context.Canceled) {
			err = cerr
		}
		if err != nil {
			l.resignErr = l.s.fail(ctx, "resign", err)
		}
		l.s.mu.Lock()
		delete(l.s.leaders, l)
		l.s.mu.Unlock()
	})
	return l.resignErr
}
