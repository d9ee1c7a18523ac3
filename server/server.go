// Package server wires the key-release service together from its parts:
// configuration, key store, KEK provider, token and evidence verifiers,
// and the gRPC and HTTP listeners.
package server

import (
	"context"
	"crypto/rand"
	"crypto/tls"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"sync"
	"syscall"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials"

	"github.com/attested-kms/attested-kms/attestation"
	"github.com/attested-kms/attested-kms/attestation/collateral"
	"github.com/attested-kms/attested-kms/attestation/verifiers"
	"github.com/attested-kms/attested-kms/challenge"
	"github.com/attested-kms/attested-kms/config"
	"github.com/attested-kms/attested-kms/keystore"
	"github.com/attested-kms/attested-kms/keystore/kek"
	"github.com/attested-kms/attested-kms/keystore/kek/providers"
	"github.com/attested-kms/attested-kms/policy"
	kmsv1 "github.com/attested-kms/attested-kms/proto/kms/v1"
	"github.com/attested-kms/attested-kms/token"
)

// NonceSecretAAD binds the sealed nonce secret to its purpose, so a wrapped
// data key from elsewhere cannot be swapped in.
var nonceSecretAAD = []byte("attested-kms/v1 nonce-secret")

// SealNonceSecret makes a fresh nonce secret sealed under the KEK.
func SealNonceSecret(ctx context.Context, p kek.Provider) ([]byte, error) {
	secret, sealed, err := newSealedNonceSecret(ctx, p)
	clear(secret)
	return sealed, err
}

// newSealedNonceSecret returns a fresh secret and its sealed form: JSON of
// kek.Wrapped, which keeps the KEK URI, version and algorithm beside the
// ciphertext.
func newSealedNonceSecret(ctx context.Context, p kek.Provider) (secret, sealed []byte, err error) {
	secret = make([]byte, challenge.SecretSize)
	if _, err := rand.Read(secret); err != nil {
		return nil, nil, fmt.Errorf("nonce secret: %w", err)
	}
	w, err := p.Wrap(ctx, secret, nonceSecretAAD)
	if err == nil {
		sealed, err = json.Marshal(w)
	}
	if err != nil {
		clear(secret)
		return nil, nil, fmt.Errorf("sealing nonce secret: %w", err)
	}
	return secret, sealed, nil
}

// openNonceSecret unseals the challenge secret with the KEK named in its
// file (resolved like the key sets' KEKs, so a file sealed under an earlier
// KEK still opens). A missing file is created, sealed under the root KEK,
// so a KMS can start directly on a cloud or HSM KEK; replicas must then
// share the file.
func openNonceSecret(ctx context.Context, keys *keystore.Manager, path string, log *slog.Logger) ([]byte, error) {
	sealed, err := os.ReadFile(path)
	if errors.Is(err, fs.ErrNotExist) {
		root, err := keys.KEK(ctx, keys.RootKEKURI())
		if err != nil {
			return nil, fmt.Errorf("nonce secret: %w", err)
		}
		secret, sealed, err := newSealedNonceSecret(ctx, root)
		if err != nil {
			return nil, err
		}
		if err := writeFileAtomic(path, sealed); err != nil {
			clear(secret)
			return nil, fmt.Errorf("nonce secret: %w", err)
		}
		log.InfoContext(ctx, "created the nonce secret, sealed under the root KEK", "file", path, "kek", root.URI())
		return secret, nil
	}
	if err != nil {
		return nil, fmt.Errorf("nonce secret: %w", err)
	}
	var w kek.Wrapped
	if err := json.Unmarshal(sealed, &w); err != nil {
		return nil, fmt.Errorf("nonce secret %s is not a sealed secret (remove it to have a new one made): %w", path, err)
	}
	p, err := keys.KEK(ctx, w.KEKURI)
	if err != nil {
		return nil, fmt.Errorf("nonce secret %s: %w", path, err)
	}
	secret, err := p.Unwrap(ctx, w, nonceSecretAAD)
	if err != nil {
		return nil, fmt.Errorf("unsealing nonce secret %s: %w", path, err)
	}
	return secret, nil
}

// writeFileAtomic writes beside path and renames, so a crash leaves the
// old or the new content, never half of one.
func writeFileAtomic(path string, b []byte) error {
	tmp := path + ".tmp"
	if err := os.WriteFile(tmp, b, 0o600); err != nil {
		return err
	}
	if err := os.Rename(tmp, path); err != nil {
		_ = os.Remove(tmp)
		return err
	}
	return nil
}

// resealNonceSecret moves the sealed nonce secret under the KEK a rotation
// moved the key store to, so the old KEK can be retired: nothing the
// server starts with stays sealed under it.
func (s *Server) resealNonceSecret(ctx context.Context, to kek.Provider) error {
	path := s.cfg.Nonce.SealedSecretFile
	sealed, err := os.ReadFile(path)
	if err != nil {
		return fmt.Errorf("reseal nonce secret: %w", err)
	}
	var w kek.Wrapped
	if err := json.Unmarshal(sealed, &w); err != nil {
		return fmt.Errorf("reseal nonce secret %s: %w", path, err)
	}
	if w.KEKURI == to.URI() {
		return nil
	}
	from, err := s.keys.KEK(ctx, w.KEKURI)
	if err != nil {
		return fmt.Errorf("reseal nonce secret: %w", err)
	}
	secret, err := from.Unwrap(ctx, w, nonceSecretAAD)
	if err != nil {
		return fmt.Errorf("reseal nonce secret: unseal under %s: %w", w.KEKURI, err)
	}
	defer clear(secret)
	nw, err := to.Wrap(ctx, secret, nonceSecretAAD)
	if err != nil {
		return fmt.Errorf("reseal nonce secret: seal under %s: %w", to.URI(), err)
	}
	out, err := json.Marshal(nw)
	if err != nil {
		return fmt.Errorf("reseal nonce secret: %w", err)
	}
	if err := writeFileAtomic(path, out); err != nil {
		return fmt.Errorf("reseal nonce secret: %w", err)
	}
	s.log.InfoContext(ctx, "nonce secret resealed under the new KEK", "kek", to.URI())
	return nil
}

// Server is a running KMS.
type Server struct {
	cfg     *config.Config
	log     *slog.Logger
	backend *backend
	keys    *keystore.Manager
	release *ReleaseService
	admin   *AdminService
	public  http.Handler
	// stopBackground ends rotation, store following and KEK checks;
	// background counts them so Stop can wait before closing the store.
	stopBackground context.CancelFunc
	background     sync.WaitGroup

	// metrics and readiness are served beside the public endpoints.
	metrics   *Metrics
	readiness *Readiness
	audit     *Auditor

	grpcSrv     *grpc.Server
	adminSrv    *grpc.Server
	adminNetSrv *grpc.Server // the network admin listener, if configured
	httpSrv     *http.Server

	// Addresses bound, known after Start (useful with port 0 in tests).
	GRPCAddr, HTTPAddr, AdminSocket, AdminAddr string
}

// New builds a server from its configuration: it opens the store and KEK,
// unseals every key set's keys once (refusing to start if it cannot), and
// prepares the verifiers. It does not listen yet.
func New(ctx context.Context, cfg *config.Config, log *slog.Logger) (*Server, error) {
	provider, err := providers.Open(ctx, cfg.KEK, providers.Options{})
	if err != nil {
		return nil, fmt.Errorf("opening KEK %s: %w", providers.DisplayURI(cfg.KEK), err)
	}
	b, err := openBackend(ctx, cfg.Store)
	if err != nil {
		_ = kek.Close(provider)
		return nil, err
	}
	s, err := newWithStore(ctx, cfg, log, b, provider)
	if err != nil {
		_ = b.Close()
		_ = kek.Close(provider)
		return nil, err
	}
	return s, nil
}

func newWithStore(ctx context.Context, cfg *config.Config, log *slog.Logger, b *backend, provider kek.Provider) (*Server, error) {
	metrics := NewMetrics()
	// Lifecycle and KEK events: KEK errors counted, changes audited once
	// the audit log is open (below).
	events := &keyEvents{metrics: metrics}
	keys := keystore.NewManager(b.store, provider, keystore.Options{
		Logger:  log,
		OnEvent: events.handle,
		// Key sets still under an earlier KEK (during or after a
		// rotation) are opened by the URI recorded on them.
		OpenKEK:          providers.Opener(providers.Options{}),
		KEKCheckInterval: time.Duration(cfg.KEKCheckInterval),
	})
	if err := ensureKeySets(ctx, keys, cfg.KeySets); err != nil {
		return nil, err
	}
	// One KEK call per key set, then every releasable key unsealed: a KMS
	// that cannot do this must say so at start, not at the first release.
	if err := keys.Warm(ctx); err != nil {
		return nil, fmt.Errorf("refusing to start: %w", err)
	}
	secret, err := openNonceSecret(ctx, keys, cfg.Nonce.SealedSecretFile, log)
	if err != nil {
		return nil, err
	}
	nonces, err := challenge.NewIssuer(secret, challenge.Options{Lifetime: time.Duration(cfg.Nonce.Lifetime)})
	clear(secret)
	if err != nil {
		return nil, err
	}
	tokens, err := newTokenVerifier(ctx, cfg.Tokens)
	if err != nil {
		return nil, err
	}
	evidence, err := newEvidenceVerifiers(cfg.Attestation, log, metrics)
	if err != nil {
		return nil, err
	}
	metrics.RegisterKeyStates(KeyStateCounts(keys, 2*time.Second))
	auditBackend, err := b.auditBackend()
	if err != nil {
		return nil, fmt.Errorf("audit log: %w", err)
	}
	auditor, err := openAuditor(ctx, keys, auditBackend, log, metrics)
	if err != nil {
		return nil, err
	}
	events.audit.Store(auditor)
	rel, err := NewReleaseService(ReleaseDeps{
		Keys: keys, Tokens: tokens, Nonces: nonces, Logger: log, Rand: rand.Reader,
		Evidence: evidence.Verifiers(), Metrics: metrics, Audit: auditor,
	})
	if err != nil {
		return nil, err
	}
	s := &Server{cfg: cfg, log: log, backend: b, keys: keys, release: rel,
		admin: NewAdminService(keys, keystore.DefaultKeySetSettings(), log)}
	s.admin.kekRotated = s.resealNonceSecret
	s.admin.auditLog = auditor
	s.audit = auditor
	s.public = NewPublicHandler(keys, s.ready, log, time.Now)
	s.metrics = metrics
	// Ready only when the store answers, every key set has an active key
	// that unseals now, and no KEK is switched off or unreachable.
	s.readiness = NewReadiness(2*time.Second).
		Add("store", StoreReachable(keys)).
		Add("kek", KEKsUsable(keys)).
		Add("unsealed", KeySetsUnsealed(keys))
	return s, nil
}

func newTokenVerifier(ctx context.Context, c config.Tokens) (*token.Verifier, error) {
	tc := token.Config{ClockSkew: time.Duration(c.ClockSkew)}
	for _, is := range c.Issuers {
		tc.Issuers = append(tc.Issuers, token.IssuerConfig{
			Issuer: is.Issuer, Discovery: is.Discovery, JWKSURL: is.JWKSURL,
			Audiences: is.Audiences, Algorithms: is.Algorithms,
		})
	}
	v, err := token.NewVerifier(ctx, tc)
	if err != nil {
		return nil, fmt.Errorf("token verifier: %w", err)
	}
	return v, nil
}

// newEvidenceVerifiers builds the platform verifiers and their collateral
// store from the configuration; collateral cache lookups are counted in m.
func newEvidenceVerifiers(c config.Attestation, log *slog.Logger, m *Metrics) (*verifiers.Set, error) {
	store, err := collateral.New(collateral.Config{
		AMDBaseURL:        c.Collateral.AMDKDSURL,
		IntelPCSBaseURL:   c.Collateral.IntelPCSURL,
		IntelCertsBaseURL: c.Collateral.IntelCertsURL,
		AllowHTTP:         c.Collateral.AllowPlainHTTP,
		Dir:               c.Collateral.Dir,
		Offline:           c.Collateral.Offline,
		RequestTimeout:    time.Duration(c.Collateral.RequestTimeout),
		Logger:            log,
		OnLookup:          m.CollateralLookup,
	})
	if err != nil {
		return nil, fmt.Errorf("collateral: %w", err)
	}
	settings := verifiers.Settings{
		Collateral:    store,
		SNPRevocation: config.Revocation(c.SEVSNP.CheckRevocation),
		TDXRevocation: config.Revocation(c.TDX.CheckRevocation),
	}
	for _, p := range c.Platforms {
		settings.Platforms = append(settings.Platforms, attestation.Platform(p))
	}
	for _, f := range []struct {
		path string
		dst  *[]byte
	}{{c.SEVSNP.TestRootsFile, &settings.SNPTestRootsPEM}, {c.TDX.TestRootsFile, &settings.TDXTestRootsPEM}} {
		if f.path == "" {
			continue
		}
		if *f.dst, err = os.ReadFile(f.path); err != nil {
			return nil, fmt.Errorf("test roots: %w", err)
		}
	}
	set, err := verifiers.New(settings)
	if err != nil {
		return nil, err
	}
	for _, p := range set.TestRoots() {
		log.Warn("DEVELOPMENT ONLY: simulator test roots are trusted; simulated evidence will be accepted", "vendor", string(p))
	}
	if !settings.SNPRevocation || !settings.TDXRevocation {
		log.Warn("revocation checking is switched off by the configuration", "sev_snp", settings.SNPRevocation, "tdx", settings.TDXRevocation)
	}
	return set, nil
}

// ensureKeySets creates configured key sets that do not exist yet.
func ensureKeySets(ctx context.Context, keys *keystore.Manager, sets []config.KeySet) error {
	for _, c := range sets {
		if _, err := keys.KeySet(ctx, c.Name); err == nil {
			continue
		} else if !errors.Is(err, keystore.ErrKeySetNotFound) {
			return fmt.Errorf("key set %q: %w", c.Name, err)
		}
		settings := keystore.DefaultKeySetSettings()
		override := func(dst *time.Duration, v config.Duration) {
			if v > 0 {
				*dst = time.Duration(v)
			}
		}
		override(&settings.RotationPeriod, c.RotationPeriod)
		override(&settings.KeyLifetime, c.KeyLifetime)
		override(&settings.PendingLead, c.PendingLead)
		override(&settings.Retention, c.Retention)
		if c.PolicyFile == "" {
			return fmt.Errorf("key set %q does not exist and has no policy_file to create it with", c.Name)
		}
		pol, err := os.ReadFile(c.PolicyFile)
		if err != nil {
			return fmt.Errorf("key set %q: %w", c.Name, err)
		}
		if _, err := policy.Parse(pol); err != nil {
			return fmt.Errorf("key set %q: policy %s: %w", c.Name, c.PolicyFile, err)
		}
		if _, err := keys.CreateKeySetWithPolicy(ctx, c.Name, settings, pol); err != nil {
			return fmt.Errorf("creating key set %q: %w", c.Name, err)
		}
	}
	return nil
}

// ReleaseService returns the release service, for in-process callers such
// as benchmarks.
func (s *Server) ReleaseService() *ReleaseService { return s.release }

// ready reports whether releases can be served.
func (s *Server) ready(ctx context.Context) error {
	if _, err := s.keys.ListKeySets(ctx); err != nil {
		return storeError(err)
	}
	return nil
}

// Start binds the listeners and serves in the background.
func (s *Server) Start(ctx context.Context) error {
	var tlsCfg *tls.Config
	if !s.cfg.TLS.Disabled {
		cert, err := tls.LoadX509KeyPair(s.cfg.TLS.Cert, s.cfg.TLS.Key)
		if err != nil {
			return fmt.Errorf("loading TLS certificate: %w", err)
		}
		tlsCfg = &tls.Config{Certificates: []tls.Certificate{cert}, MinVersion: tls.VersionTLS12}
	}

	adminLis, err := listenUnix(s.cfg.Listen.AdminSocket)
	if err != nil {
		return err
	}
	grpcLis, err := net.Listen("tcp", s.cfg.Listen.GRPC)
	if err != nil {
		adminLis.Close()
		return fmt.Errorf("listening for gRPC: %w", err)
	}
	httpLis, err := net.Listen("tcp", s.cfg.Listen.HTTP)
	if err != nil {
		adminLis.Close()
		grpcLis.Close()
		return fmt.Errorf("listening for HTTP: %w", err)
	}
	s.GRPCAddr, s.HTTPAddr, s.AdminSocket = grpcLis.Addr().String(), httpLis.Addr().String(), s.cfg.Listen.AdminSocket

	opts := []grpc.ServerOption{
		grpc.MaxRecvMsgSize(s.cfg.Limits.MaxRequestBytes),
		grpc.MaxSendMsgSize(1 << 20),
		grpc.ConnectionTimeout(10 * time.Second),
		grpc.ChainUnaryInterceptor(UnaryRequestID()),
	}
	if tlsCfg != nil {
		opts = append(opts, grpc.Creds(credentials.NewTLS(tlsCfg)))
	}
	s.grpcSrv = grpc.NewServer(opts...)
	kmsv1.RegisterKeyReleaseServer(s.grpcSrv, s.release)
	s.adminSrv = grpc.NewServer(grpc.MaxRecvMsgSize(1<<20), grpc.ChainUnaryInterceptor(UnaryRequestID()))
	kmsv1.RegisterAdminServer(s.adminSrv, s.admin)

	mux := http.NewServeMux()
	mux.Handle("GET /metrics", s.metrics.Handler())
	mux.Handle("GET /readyz", s.readiness)
	mux.Handle("/", s.public)
	s.httpSrv = &http.Server{
		Handler:           http.MaxBytesHandler(RequestIDMiddleware(mux), 4096),
		TLSConfig:         tlsCfg,
		ReadHeaderTimeout: 5 * time.Second,
		ReadTimeout:       10 * time.Second,
		WriteTimeout:      10 * time.Second,
		IdleTimeout:       60 * time.Second,
		MaxHeaderBytes:    16 << 10,
		ErrorLog:          slog.NewLogLogger(s.log.Handler(), slog.LevelWarn),
	}
	if s.cfg.Listen.Admin != "" {
		if err := s.startNetworkAdmin(ctx, tlsCfg); err != nil {
			adminLis.Close()
			grpcLis.Close()
			httpLis.Close()
			return err
		}
	}
	go func() { _ = s.grpcSrv.Serve(grpcLis) }()
	go func() { _ = s.adminSrv.Serve(adminLis) }()
	go func() {
		var err error
		if tlsCfg != nil {
			err = s.httpSrv.ServeTLS(httpLis, "", "")
		} else {
			err = s.httpSrv.Serve(httpLis)
		}
		if err != nil && !errors.Is(err, http.ErrServerClosed) {
			s.log.Error("http server stopped", "error", err)
		}
	}()
	// Background work ends with Stop, not only with the caller's context:
	// it must not outlive the store it uses.
	bg, cancel := context.WithCancel(ctx)
	s.stopBackground = cancel
	run := func(f func(context.Context)) {
		s.background.Add(1)
		go func() { defer s.background.Done(); f(bg) }()
	}
	// Rotation runs on one replica at a time (the elected leader; on bbolt
	// the single node); every replica follows the others' writes.
	run(func(ctx context.Context) {
		s.backend.asLeader(ctx, s.log, s.metrics, func(ctx context.Context) {
			s.keys.RunRotation(ctx, time.Duration(s.cfg.Rotation.TickInterval))
		})
	})
	run(func(ctx context.Context) { s.backend.follow(ctx, s.keys) })
	// The customer's off switch: each key set's KEK is re-checked so a
	// disabled or revoked KEK stops releases within the interval.
	run(s.keys.RunRevalidation)
	s.log.Info("kms serving", "grpc", s.GRPCAddr, "http", s.HTTPAddr, "admin_socket", s.AdminSocket, "admin", s.AdminAddr, "tls", tlsCfg != nil)
	return nil
}

// Stop shuts the listeners down, letting in-flight calls finish briefly.
func (s *Server) Stop() {
	var wg sync.WaitGroup
	for _, g := range []*grpc.Server{s.grpcSrv, s.adminSrv, s.adminNetSrv} {
		if g == nil {
			continue
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			stopped := make(chan struct{})
			go func() { g.GracefulStop(); close(stopped) }()
			select {
			case <-stopped:
			case <-time.After(5 * time.Second):
				g.Stop()
			}
		}()
	}
	if s.httpSrv != nil {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		_ = s.httpSrv.Shutdown(ctx)
		cancel()
	}
	wg.Wait()
	if s.stopBackground != nil {
		s.stopBackground()
		s.background.Wait()
	}
	// No call is in flight: sign the log's head, then zero the cached
	// private keys (and the audit key) before the store closes.
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	s.audit.close(ctx)
	cancel()
	s.keys.ClearCache()
	// HSM sessions and cloud connections of every KEK the keys used.
	_ = s.keys.Close()
	_ = s.backend.Close()
	if s.AdminSocket != "" {
		_ = os.Remove(s.AdminSocket)
	}
}

// listenUnix creates the admin socket readable and writable by the owner
// only. The umask is narrowed around bind so there is no moment at which
// the socket exists with wider permissions.
func listenUnix(path string) (net.Listener, error) {
	if err := os.MkdirAll(filepath.Dir(path), 0o700); err != nil {
		return nil, fmt.Errorf("admin socket directory: %w", err)
	}
	if fi, err := os.Lstat(path); err == nil {
		if fi.Mode()&os.ModeSocket == 0 {
			return nil, fmt.Errorf("admin socket %s exists and is not a socket", path)
		}
		// A stale socket from a previous run; a live server would still hold it.
		if c, err := net.Dial("unix", path); err == nil {
			c.Close()
			return nil, fmt.Errorf("admin socket %s is in use by another server", path)
		}
		if err := os.Remove(path); err != nil {
			return nil, fmt.Errorf("removing stale admin socket: %w", err)
		}
	}
	old := syscall.Umask(0o177)
	l, err := net.Listen("unix", path)
	syscall.Umask(old)
	if err != nil {
		return nil, fmt.Errorf("listening on admin socket: %w", err)
	}
	if err := os.Chmod(path, 0o600); err != nil {
		l.Close()
		return nil, fmt.Errorf("admin socket mode: %w", err)
	}
	return l, nil
}
