// Package etcdstore is the multi-replica keystore.Store: key sets and keys
// as JSON records in etcd v3 under a configurable key prefix, written with
// compare-and-swap transactions so several KMS replicas can share one
// store. It also offers what replicas need to cooperate: Watch, so each
// replica evicts caches when another one writes, and Campaign, leader
// election that decides which replica rotates keys.
//
// Private keys are only ever stored sealed (keystore.SealedKey); this
// package never sees plaintext.
package etcdstore

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"os"
	"strings"
	"sync"
	"time"

	"go.etcd.io/etcd/api/v3/v3rpc/rpctypes"
	clientv3 "go.etcd.io/etcd/client/v3"
	"go.uber.org/zap"

	"github.com/attested-kms/attested-kms/keystore"
)

// DefaultPrefix is the key prefix used when Config.Prefix is empty.
const DefaultPrefix = "/attested-kms/"

// DefaultDialTimeout bounds connecting (and the first request) when
// Config.DialTimeout is zero.
const DefaultDialTimeout = 5 * time.Second

// Config says how to reach etcd.
type Config struct {
	// Endpoints are the etcd client URLs (https://host:2379, or
	// unix:// / unixs:// sockets).
	Endpoints []string
	// Prefix is prepended to every key this store writes, so several
	// deployments can share a cluster. A trailing "/" is added if missing.
	// Default DefaultPrefix.
	Prefix string
	// TLS, if set, is used for every connection: RootCAs to verify etcd,
	// Certificates for mutual TLS. Nil means plaintext (tests, sockets).
	TLS *tls.Config
	// DialTimeout bounds connecting. Default DefaultDialTimeout.
	DialTimeout time.Duration
	// Username and Password are etcd's own authentication, optional (mTLS
	// client certificates are the usual choice).
	Username string
	Password string
	// ReplicaID identifies this replica as the value of the election keys
	// it holds, so operators can see who leads. Default: the host name.
	ReplicaID string
}

// Store is a keystore.Store backed by etcd. It is safe for concurrent use.
type Store struct {
	cli     *clientv3.Client
	l       layout
	replica string

	// ctx lives until Close: it carries lease keep-alives, which must
	// not end with the context of the call that started them.
	ctx    context.Context
	cancel context.CancelFunc
	// done is closed by Close; it stops watches and campaigns.
	done      chan struct{}
	closeOnce sync.Once
	wg        sync.WaitGroup // watch goroutines

	mu      sync.Mutex // guards leaders, and wg.Add against Close
	leaders map[*Leadership]struct{}
}

var _ keystore.Store = (*Store)(nil)

// Open connects to etcd and checks that it answers (and that the
// credentials are accepted) before returning.
func Open(ctx context.Context, cfg Config) (*Store, error) {
	if len(cfg.Endpoints) == 0 {
		return nil, fmt.Errorf("etcdstore: no endpoints: %w", keystore.ErrInvalidArgument)
	}
	prefix := cfg.Prefix
	if prefix == "" {
		prefix = DefaultPrefix
	}
	if !strings.HasSuffix(prefix, "/") {
		prefix += "/"
	}
	dial := cfg.DialTimeout
	if dial <= 0 {
		dial = DefaultDialTimeout
	}
	replica := cfg.ReplicaID
	if replica == "" {
		// The host name is only a label; failing to read it is harmless.
		replica, _ = os.Hostname()
	}
	cli, err := clientv3.New(clientv3.Config{
		Endpoints:   cfg.Endpoints,
		TLS:         cfg.TLS,
		DialTimeout: dial,
		Username:    cfg.Username,
		Password:    cfg.Password,
		// The client's own logger would write to stderr outside slog;
		// every failure it sees reaches us as an error anyway.
		Logger: zap.NewNop(),
	})
	if err != nil {
		return nil, fmt.Errorf("etcdstore: connect: %w", errors.Join(keystore.ErrStoreUnavailable, err))
	}
	sctx, scancel := context.WithCancel(context.Background())
	s := &Store{
		ctx:     sctx,
		cancel:  scancel,
		cli:     cli,
		l:       layout{prefix: prefix},
		replica: replica,
		done:    make(chan struct{}),
		leaders: make(map[*Leadership]struct{}),
	}
	pctx, cancel := context.WithTimeout(ctx, dial)
	defer cancel()
	if _, err := cli.Get(pctx, s.l.keySets(), clientv3.WithPrefix(), clientv3.WithCountOnly()); err != nil {
		scancel()
		_ = cli.Close()
		return nil, s.fail(ctx, "probe", err)
	}
	return s, nil
}

// Close resigns the leaderships this store holds (so another replica takes
// over at once instead of after the lease TTL), stops watches and closes
// the connection.
func (s *Store) Close() error {
	var err error
	s.closeOnce.Do(func() {
		s.mu.Lock()
		held := make([]*Leadership, 0, len(s.leaders))
		for l := range s.leaders {
			held = append(held, l)
		}
		s.mu.Unlock()
		for _, l := range held {
			ctx, cancel := context.WithTimeout(context.Background(), time.Second)
			_ = l.Resign(ctx) // best effort: the lease expires anyway
			cancel()
		}
		s.mu.Lock()
		close(s.done)
		s.mu.Unlock()
		s.cancel()
		if cerr := s.cli.Close(); cerr != nil && !errors.Is(cerr, context.Canceled) {
			err = fmt.Errorf("etcdstore: close: %w", cerr)
		}
		s.wg.Wait()
	})
	return err
}

// fail classifies an error from the etcd client. The caller cancelling is
// passed through as it is; requests etcd refuses as malformed or too large
// are the caller's (ErrInvalidArgument: retrying cannot help); everything
// else, including the caller's deadline running out while etcd does not
// answer, is the backend failing (ErrStoreUnavailable).
func (s *Store) fail(ctx context.Context, op string, err error) error {
	if cerr := ctx.Err(); errors.Is(cerr, context.Canceled) {
		return fmt.Errorf("etcdstore: %s: %w", op, cerr)
	}
	switch {
	case errors.Is(err, rpctypes.ErrTooManyOps), errors.Is(err, rpctypes.ErrRequestTooLarge),
		errors.Is(err, rpctypes.ErrDuplicateKey):
		return fmt.Errorf("etcdstore: %s: %w", op, errors.Join(keystore.ErrInvalidArgument, err))
	}
	return fmt.Errorf("etcdstore: %s: %w", op, errors.Join(keystore.ErrStoreUnavailable, err, ctx.Err()))
}

// closed reports a store used after Close as unavailable without a round
// trip (the client would say "grpc: the client connection is closing").
func (s *Store) closed() error {
	select {
	case <-s.done:
		return fmt.Errorf("etcdstore: store closed: %w", keystore.ErrStoreUnavailable)
	default:
		return nil
	}
}

// begin is the common prologue of every operation.
func (s *Store) begin(ctx context.Context) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	return s.closed()
}

// Client returns the store's etcd client, for components that keep their
// own records beside the store's (the audit log) on the same connection.
// The store owns it: do not close it.
func (s *Store) Client() *clientv3.Client { return s.cli }

// Prefix returns the key prefix the store writes under, with its trailing
// "/".
func (s *Store) Prefix() string { return s.l.prefix }
