package keystore

import (
	"context"
	"crypto"
	"crypto/ed25519"
	"crypto/x509"
	"errors"
	"fmt"
	"io"
	"slices"
	"time"
)

// The audit key signs the audit log's checkpoints. It is an Ed25519 key
// created on first use and sealed under the root KEK like the import key
// (metadata record "audit-key"), so every replica sharing the store signs
// with the same key and RewrapRoot moves it with the key sets.

const (
	auditKeyRecordName = "audit-key"
	auditKeyLabel      = "attested-kms/v2 audit-key"
	// auditUnsealTimeout bounds the KEK call a Sign makes when the cached
	// seed was cleared (ClearCache) since AuditSigner: crypto.Signer has no
	// context to carry a deadline.
	auditUnsealTimeout = 30 * time.Second
)

var auditKey = sealedSecretKind{record: auditKeyRecordName, label: auditKeyLabel, what: "audit key"}

// auditCacheKey holds the audit key's seed in the private key cache, so
// ClearCache zeroes it with the rest. No key set has an empty name, so it
// cannot collide with a key's entry, nor be dropped by Invalidate.
var auditCacheKey = cacheKey{kid: auditKeyRecordName}

// AuditSigner returns the audit key as a crypto.Signer (its Public is an
// ed25519.PublicKey), creating and sealing the key on first use. The
// private key is unsealed once (one KEK call) and kept in memory until
// ClearCache; a Sign after ClearCache unseals it again.
func (m *Manager) AuditSigner(ctx context.Context) (crypto.Signer, error) {
	pub, err := m.loadAuditKey(ctx)
	if err != nil {
		return nil, fmt.Errorf("audit signer: %w", err)
	}
	return &auditSigner{m: m, pub: pub}, nil
}

// loadAuditKey makes sure the audit key's seed is cached and returns its
// public key.
func (m *Manager) loadAuditKey(ctx context.Context) (ed25519.PublicKey, error) {
	rec, err := m.sealedSecretOrCreate(ctx, auditKey, m.newAuditKeyPair)
	if err != nil {
		return nil, err
	}
	k, err := x509.ParsePKIXPublicKey(rec.PublicKey)
	pub, ok := k.(ed25519.PublicKey)
	if err != nil || !ok {
		return nil, fmt.Errorf("audit key record holds no Ed25519 public key: %w", ErrSealedKeyInvalid)
	}
	m.cacheMu.Lock()
	_, cached := m.cache[auditCacheKey]
	m.cacheMu.Unlock()
	if cached {
		return pub, nil
	}
	// Unseal outside the lock, as cachedPrivate does; the first stored wins.
	seed, err := m.openSealedSecret(ctx, auditKey, rec)
	if err != nil {
		return nil, err
	}
	if len(seed) != ed25519.SeedSize || !pub.Equal(ed25519.NewKeyFromSeed(seed).Public()) {
		clear(seed)
		return nil, fmt.Errorf("audit private key does not match its public key: %w", ErrSealedKeyInvalid)
	}
	m.cacheMu.Lock()
	if _, ok := m.cache[auditCacheKey]; ok {
		clear(seed)
	} else {
		m.cache[auditCacheKey] = seed
	}
	m.cacheMu.Unlock()
	return pub, nil
}

// newAuditKeyPair generates the Ed25519 key: the PKIX DER public key and
// the 32-byte seed (which the caller clears).
func (m *Manager) newAuditKeyPair() (pub, secret []byte, err error) {
	seed := make([]byte, ed25519.SeedSize)
	if _, err := io.ReadFull(m.rand, seed); err != nil {
		return nil, nil, fmt.Errorf("generate audit key: %w", err)
	}
	sk := ed25519.NewKeyFromSeed(seed)
	defer clear(sk)
	if pub, err = x509.MarshalPKIXPublicKey(sk.Public()); err != nil {
		clear(seed)
		return nil, nil, fmt.Errorf("encode audit public key: %w", err)
	}
	return pub, seed, nil
}

// auditSigner signs with the cached audit key seed; the expanded private
// key exists only for the duration of one Sign.
type auditSigner struct {
	m   *Manager
	pub ed25519.PublicKey
}

// Public implements crypto.Signer.
func (s *auditSigner) Public() crypto.PublicKey { return slices.Clone(s.pub) }

// Sign implements crypto.Signer for pure Ed25519 (opts.HashFunc() must be
// 0, as crypto/ed25519 and audit checkpoints use it).
func (s *auditSigner) Sign(_ io.Reader, msg []byte, opts crypto.SignerOpts) ([]byte, error) {
	if opts.HashFunc() != crypto.Hash(0) {
		return nil, errors.New("audit key: only pure Ed25519 (crypto.Hash(0)) is supported")
	}
	seed, err := s.seed()
	if err != nil {
		return nil, err
	}
	defer clear(seed)
	sk := ed25519.NewKeyFromSeed(seed)
	defer clear(sk)
	if !s.pub.Equal(sk.Public()) {
		return nil, fmt.Errorf("audit key changed since the signer was made: %w", ErrSealedKeyInvalid)
	}
	return ed25519.Sign(sk, msg), nil
}

// seed returns a copy of the cached seed, unsealing it again if
// ClearCache dropped it.
func (s *auditSigner) seed() ([]byte, error) {
	for range 2 {
		s.m.cacheMu.Lock()
		seed, ok := s.m.cache[auditCacheKey]
		seed = slices.Clone(seed)
		s.m.cacheMu.Unlock()
		if ok {
			return seed, nil
		}
		ctx, cancel := context.WithTimeout(context.Background(), auditUnsealTimeout)
		_, err := s.m.loadAuditKey(ctx)
		cancel()
		if err != nil {
			return nil, fmt.Errorf("audit key: %w", err)
		}
	}
	return nil, errors.New("audit key: cleared while signing")
}
