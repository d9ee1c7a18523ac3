package server

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"fmt"
	"log/slog"
	"os"
	"time"

	"github.com/attested-kms/attested-kms/audit"
	"github.com/attested-kms/attested-kms/audit/boltaudit"
	"github.com/attested-kms/attested-kms/audit/etcdaudit"
	"github.com/attested-kms/attested-kms/config"
	"github.com/attested-kms/attested-kms/keystore"
	"github.com/attested-kms/attested-kms/keystore/boltstore"
	"github.com/attested-kms/attested-kms/keystore/etcdstore"
)

// DefaultLeaderTTL bounds how long rotation pauses after a leader dies.
const DefaultLeaderTTL = 10 * time.Second

// backend is the storage a server runs on: a bbolt file (one node, always
// the leader) or a shared etcd cluster (replicas, one elected leader).
type backend struct {
	store keystore.Store
	bolt  *boltstore.Store
	etcd  *etcdstore.Store
	ttl   time.Duration
}

func openBackend(ctx context.Context, c config.Store) (*backend, error) {
	if c.Etcd == nil {
		st, err := boltstore.Open(c.Bolt)
		if err != nil {
			return nil, fmt.Errorf("opening store: %w", err)
		}
		return &backend{store: st, bolt: st}, nil
	}
	e := c.Etcd
	var tlsCfg *tls.Config
	if e.CAFile != "" || e.CertFile != "" {
		tlsCfg = &tls.Config{MinVersion: tls.VersionTLS12}
		if e.CAFile != "" {
			pemBytes, err := os.ReadFile(e.CAFile)
			if err != nil {
				return nil, fmt.Errorf("etcd CA: %w", err)
			}
			tlsCfg.RootCAs = x509.NewCertPool()
			if !tlsCfg.RootCAs.AppendCertsFromPEM(pemBytes) {
				return nil, fmt.Errorf("etcd CA %s: no PEM certificates", e.CAFile)
			}
		}
		if e.CertFile != "" {
			cert, err := tls.LoadX509KeyPair(e.CertFile, e.KeyFile)
			if err != nil {
				return nil, fmt.Errorf("etcd client certificate: %w", err)
			}
			tlsCfg.Certificates = []tls.Certificate{cert}
		}
	}
	st, err := etcdstore.Open(ctx, etcdstore.Config{Endpoints: e.Endpoints, Prefix: e.Prefix, TLS: tlsCfg, ReplicaID: e.ReplicaID})
	if err != nil {
		return nil, fmt.Errorf("opening etcd store: %w", err)
	}
	ttl := time.Duration(e.LeaderTTL)
	if ttl <= 0 {
		ttl = DefaultLeaderTTL
	}
	return &backend{store: st, etcd: st, ttl: ttl}, nil
}

// auditBackend is where the audit log lives: on one node the store's own
// bbolt file (its own bucket), so a backup of the store is a backup of the
// log; on etcd the shared cluster, so the replicas append to one chain.
func (b *backend) auditBackend() (audit.Backend, error) {
	if b.bolt != nil {
		return boltaudit.New(b.bolt.DB())
	}
	return etcdaudit.New(b.etcd.Client(), b.etcd.Prefix()), nil
}

func (b *backend) Close() error { return b.store.Close() }

// asLeader runs work while this replica leads; on bbolt it always does. A
// lost election cancels work's context; the replica then campaigns again.
// Work must be safe to run on a new leader mid-period: the key store's
// ticks are idempotent (creates are compare-and-swap, exactly once).
func (b *backend) asLeader(ctx context.Context, log *slog.Logger, m *Metrics, work func(context.Context)) {
	if b.etcd == nil {
		m.SetLeader(true)
		work(ctx)
		return
	}
	for ctx.Err() == nil {
		l, err := b.etcd.Campaign(ctx, "rotation", b.ttl)
		if err != nil {
			if ctx.Err() == nil {
				log.Warn("rotation election failed; retrying", "error", err)
				sleepCtx(ctx, time.Second)
			}
			continue
		}
		log.Info("leading: this replica runs rotation")
		m.SetLeader(true)
		lctx, cancel := context.WithCancel(ctx)
		go func() {
			select {
			case <-l.Done():
			case <-lctx.Done():
			}
			cancel()
		}()
		work(lctx)
		cancel()
		m.SetLeader(false)
		rctx, rcancel := context.WithTimeout(context.Background(), 5*time.Second)
		_ = l.Resign(rctx)
		rcancel()
		if ctx.Err() == nil {
			log.Warn("lost the rotation leadership; campaigning again")
		}
	}
}

// follow keeps this replica's caches current with what other replicas
// write: a changed key or key set drops what is cached for it, a gap in the
// watch drops everything.
func (b *backend) follow(ctx context.Context, keys *keystore.Manager) {
	if b.etcd == nil {
		return
	}
	for ch := range b.etcd.Watch(ctx) {
		switch ch.Kind {
		case etcdstore.ChangeResync:
			keys.ClearCache()
		case etcdstore.ChangeKey:
			keys.Invalidate(ch.KeySet, ch.KID)
		case etcdstore.ChangeKeySet:
			keys.Invalidate(ch.KeySet, "")
		}
	}
}

func sleepCtx(ctx context.Context, d time.Duration) {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
	case <-t.C:
	}
}
