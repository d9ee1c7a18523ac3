package etcdaudit

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"
	"go.uber.org/zap"

	"github.com/attested-kms/attested-kms/audit"
)

// DefaultDialTimeout bounds connecting (and the probe) when
// Config.DialTimeout is zero.
const DefaultDialTimeout = 5 * time.Second

// Config says how to reach etcd, for tools (such as an offline verifier)
// that have no client of their own. A server that already holds the key
// store's client should share it through New.
type Config struct {
	// Endpoints are the etcd client URLs.
	Endpoints []string
	// Prefix as for New.
	Prefix string
	// TLS, if set, is used for every connection; nil means plaintext.
	TLS *tls.Config
	// DialTimeout bounds connecting. Default DefaultDialTimeout.
	DialTimeout time.Duration
	// Username and Password are etcd's own authentication, optional.
	Username string
	Password string
}

// Open connects to etcd, checks that it answers, and returns a Backend
// whose Close closes the connection.
func Open(ctx context.Context, cfg Config) (*Backend, error) {
	if len(cfg.Endpoints) == 0 {
		return nil, fmt.Errorf("etcdaudit: no endpoints: %w", audit.ErrInvalidArgument)
	}
	dial := cfg.DialTimeout
	if dial <= 0 {
		dial = DefaultDialTimeout
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
		return nil, fmt.Errorf("etcdaudit: connect: %w", errors.Join(ErrUnavailable, err))
	}
	b := New(cli, cfg.Prefix)
	b.owned = true
	pctx, cancel := context.WithTimeout(ctx, dial)
	defer cancel()
	if _, err := cli.Get(pctx, b.l.head()); err != nil {
		_ = cli.Close()
		return nil, fail(pctx, "probe", err)
	}
	return b, nil
}

// Close closes the connection if Open made it; a Backend from New leaves
// its client alone.
func (b *Backend) Close() error {
	if !b.owned {
		return nil
	}
	if err := b.client.Close(); err != nil {
		return fmt.Errorf("etcdaudit: close: %w", err)
	}
	return nil
}
