package keystore

import (
	"context"
	"errors"
	"fmt"
	"io"
	"maps"
	"slices"

	"github.com/attested-kms/attested-kms/keystore/kek"
)

// The key hierarchy:
//
//	level 1  root KEK, outside (kek.Provider by URI)
//	level 2  one AES-256 intermediate key per key set, stored on the KeySet
//	         wrapped by the root KEK (AAD: label, key set, generation)
//	level 3  one DEK per key, wrapped locally by the set's intermediate;
//	         the private key encrypted under the DEK (SealFormatV2)
//
// So starting costs one outside call per key set, not per key, and the
// customer's off switch (disabling the root KEK) reaches every key of a set
// through one record.

// rewrapBatch bounds the keys re-sealed per Commit: each batch is atomic,
// and a batch is small enough to keep write transactions short.
const rewrapBatch = 100

// rootProvider returns the current root KEK.
func (m *Manager) rootProvider() kek.Provider {
	m.kekMu.Lock()
	defer m.kekMu.Unlock()
	return m.root
}

// RootKEKURI returns the URI of the root KEK new key sets are created under.
func (m *Manager) RootKEKURI() string { return m.rootProvider().URI() }

// KEK returns the provider for uri as the Manager resolves it (the root,
// one opened before, or one from Options.OpenKEK), for callers that seal
// their own secrets beside the key store's.
func (m *Manager) KEK(ctx context.Context, uri string) (kek.Provider, error) {
	return m.provider(ctx, uri)
}

// provider returns the provider for uri: the root, one opened before, or
// one from Options.OpenKEK.
func (m *Manager) provider(ctx context.Context, uri string) (kek.Provider, error) {
	m.kekMu.Lock()
	root, p, open := m.root, m.providers[uri], m.openKEK
	m.kekMu.Unlock()
	switch {
	case uri == root.URI():
		return root, nil
	case p != nil:
		return p, nil
	case open == nil:
		return nil, fmt.Errorf("no provider for KEK %s (the root KEK is %s; Options.OpenKEK opens others): %w", uri, root.URI(), kek.ErrUnsupported)
	}
	p, err := open(ctx, uri)
	if err != nil {
		return nil, fmt.Errorf("open KEK %s: %w", uri, err)
	}
	m.kekMu.Lock()
	defer m.kekMu.Unlock()
	if cur := m.providers[uri]; cur != nil {
		kek.Close(p) // lost a race to open the same KEK
		return cur, nil
	}
	m.providers[uri] = p
	return p, nil
}

// Close releases every KEK provider the Manager holds, including the root
// passed to NewManager: HSM sessions, gRPC connections. Use the Manager no
// more afterwards.
func (m *Manager) Close() error {
	m.kekMu.Lock()
	defer m.kekMu.Unlock()
	seen := map[kek.Provider]bool{}
	var errs []error
	for _, p := range append([]kek.Provider{m.root}, slices.Collect(maps.Values(m.providers))...) {
		if p == nil || seen[p] {
			continue
		}
		seen[p] = true
		if err := kek.Close(p); err != nil {
			errs = append(errs, fmt.Errorf("close KEK %s: %w", p.URI(), err))
		}
	}
	clear(m.providers)
	return errors.Join(errs...)
}

type newIntermediateResult struct {
	rec Intermediate
	key *intermediateKey
}

// newIntermediate generates generation gen of keyset's intermediate key and
// wraps it under p: one outside call.
func (m *Manager) newIntermediate(ctx context.Context, p kek.Provider, keyset string, gen uint64) (*newIntermediateResult, error) {
	raw := make([]byte, intermediateSize)
	if _, err := io.ReadFull(m.rand, raw); err != nil {
		return nil, fmt.Errorf("generate intermediate key: %w", err)
	}
	w, err := p.Wrap(ctx, raw, intermediateAAD(keyset, gen))
	if err != nil {
		clear(raw)
		return nil, fmt.Errorf("wrap intermediate key of %q with KEK %s: %w", keyset, p.URI(), err)
	}
	key, err := newIntermediateKey(gen, raw)
	if err != nil {
		return nil, err
	}
	return &newIntermediateResult{rec: Intermediate{Generation: gen, Wrapped: w.Clone(), Created: m.clock()}, key: key}, nil
}

func (m *Manager) cacheIntermediate(keyset string, in *intermediateKey) {
	m.kekMu.Lock()
	defer m.kekMu.Unlock()
	ik := interCacheKey{keyset, in.gen}
	if old := m.inter[ik]; old != nil && old != in {
		clear(old.raw)
	}
	m.inter[ik] = in
}

func (m *Manager) cachedIntermediate(keyset string, gen uint64) *intermediateKey {
	m.kekMu.Lock()
	defer m.kekMu.Unlock()
	return m.inter[interCacheKey{keyset, gen}]
}

// dropIntermediates zeroes and forgets the cached intermediates of keyset
// (all generations if keep is nil, else those keep rejects).
func (m *Manager) dropIntermediates(keyset string, keep func(gen uint64) bool) {
	m.kekMu.Lock()
	defer m.kekMu.Unlock()
	for ik, in := range m.inter {
		if ik.keyset == keyset && (keep == nil || !keep(ik.gen)) {
			clear(in.raw)
			delete(m.inter, ik)
		}
	}
}

// unwrapIntermediate asks in's KEK for the key: one outside call. It
// classifies the result for the key set's KEK status: kek.ErrKeyDisabled
// switches the set off at once; success marks it ok.
func (m *Manager) unwrapIntermediate(ctx context.Context, keyset string, in *Intermediate) (*intermediateKey, error) {
	p, err := m.provider(ctx, in.Wrapped.KEKURI)
	if err != nil {
		return nil, err
	}
	raw, err := p.Unwrap(ctx, in.Wrapped, intermediateAAD(keyset, in.Generation))
	if err != nil {
		switch {
		case errors.Is(err, kek.ErrKeyDisabled):
			m.switchOff(keyset, in, err)
			err = errors.Join(ErrKEKDisabled, err)
		case errors.Is(err, kek.ErrAuthentication):
			err = errors.Join(ErrSealedKeyInvalid, err)
		}
		return nil, fmt.Errorf("unwrap intermediate key (generation %d) of key set %q with KEK %s: %w", in.Generation, keyset, in.Wrapped.KEKURI, err)
	}
	key, err := newIntermediateKey(in.Generation, raw)
	if err != nil {
		return nil, fmt.Errorf("key set %q: %w", keyset, err)
	}
	m.recordOK(keyset, in)
	return key, nil
}

// loadIntermediate returns generation gen of ks's intermediate, from the
// cache or by unwrapping it.
func (m *Manager) loadIntermediate(ctx context.Context, ks *KeySet, gen uint64) (*intermediateKey, error) {
	if in := m.cachedIntermediate(ks.Name, gen); in != nil {
		return in, nil
	}
	rec := ks.intermediate(gen)
	if rec == nil {
		return nil, fmt.Errorf("key set %q has no intermediate key of generation %d: %w", ks.Name, gen, ErrSealedKeyInvalid)
	}
	in, err := m.unwrapIntermediate(ctx, ks.Name, rec)
	if err != nil {
		return nil, err
	}
	m.cacheIntermediate(ks.Name, in)
	return in, nil
}

// sealingIntermediate returns the intermediate new keys of ks are sealed
// under: its current generation, created (and stored, compare-and-swap)
// if the set predates the hierarchy. Callers hold m.mu.
func (m *Manager) sealingIntermediate(ctx context.Context, ks *KeySet) (*intermediateKey, error) {
	if cur := ks.CurrentIntermediate(); cur != nil {
		return m.loadIntermediate(ctx, ks, cur.Generation)
	}
	res, err := m.newIntermediate(ctx, m.rootProvider(), ks.Name, 1)
	if err != nil {
		return nil, err
	}
	ks.Intermediates = []Intermediate{res.rec}
	if err := m.store.UpdateKeySet(ctx, ks); err != nil {
		clear(res.key.raw)
		ks.Intermediates = nil
		return nil, fmt.Errorf("store intermediate key of %q: %w", ks.Name, err)
	}
	m.cacheIntermediate(ks.Name, res.key)
	m.recordOK(ks.Name, &res.rec)
	m.log.Info("intermediate key created", "keyset", ks.Name, "generation", 1, "kek", res.rec.Wrapped.KEKURI)
	return res.key, nil
}

// unseal decrypts k's private key: v2 through its set's intermediate
// (cached: no outside call), v1 through the KEK the record names.
func (m *Manager) unseal(ctx context.Context, k *Key) ([]byte, error) {
	s := k.Sealed
	if s == nil {
		return nil, fmt.Errorf("key %s/%s v%d has no sealed private key: %w", k.KeySet, k.KID, k.Version, ErrKeyDestroyed)
	}
	switch s.Format {
	case SealFormatV2:
		in := m.cachedIntermediate(k.KeySet, s.Generation)
		if in == nil {
			ks, err := m.store.KeySet(ctx, k.KeySet)
			if err != nil {
				return nil, err
			}
			if in, err = m.loadIntermediate(ctx, ks, s.Generation); err != nil {
				return nil, err
			}
		}
		return unsealV2(in, k)
	case SealFormatV1:
		p, err := m.provider(ctx, s.KEKURI)
		if err != nil {
			return nil, fmt.Errorf("key %s/%s v%d: %w", k.KeySet, k.KID, k.Version, err)
		}
		priv, err := unsealV1(ctx, p, k)
		if errors.Is(err, kek.ErrKeyDisabled) {
			m.switchOff(k.KeySet, &Intermediate{Wrapped: v1Wrapped(s)}, err)
			err = errors.Join(ErrKEKDisabled, err)
		}
		return priv, err
	default:
		return nil, fmt.Errorf("key %s/%s v%d: unknown seal format %q: %w", k.KeySet, k.KID, k.Version, s.Format, ErrSealedKeyInvalid)
	}
}

// Warm prepares the Manager to serve: for every key set it unwraps the
// current intermediate key (one outside call per set) and then unseals
// every releasable key into the cache (local work for v2 keys; one outside
// call per v1 key). It refuses, naming each key set and KEK that failed,
// if any intermediate cannot be unwrapped or any key does not open. A KMS
// that cannot unseal its keys should say so at start, not at the first
// release.
func (m *Manager) Warm(ctx context.Context) error {
	sets, err := m.ListKeySets(ctx)
	if err != nil {
		return fmt.Errorf("warm: %w", err)
	}
	var errs []error
	for _, ks := range sets {
		if cur := ks.CurrentIntermediate(); cur != nil {
			if _, err := m.loadIntermediate(ctx, ks, cur.Generation); err != nil {
				errs = append(errs, fmt.Errorf("key set %q: cannot unwrap its intermediate key with KEK %s: %w", ks.Name, cur.Wrapped.KEKURI, err))
				continue
			}
		}
		keys, err := m.store.Keys(ctx, ks.Name)
		if err != nil {
			errs = append(errs, fmt.Errorf("key set %q: %w", ks.Name, err))
			continue
		}
		now := m.clock()
		for _, k := range keys {
			if !k.Releasable(now) {
				continue
			}
			priv, err := m.cachedPrivate(ctx, k)
			if err != nil {
				errs = append(errs, fmt.Errorf("key set %q: key %s v%d: %w", ks.Name, k.KID, k.Version, err))
				continue
			}
			clear(priv)
		}
	}
	if err := errors.Join(errs...); err != nil {
		return fmt.Errorf("warm: %w", err)
	}
	return nil
}

// RotateIntermediate gives keyset a new intermediate generation and moves
// every key to it: (1) the new generation is added to the set (CAS); (2)
// every sealed key is re-sealed under it, rewrapBatch keys per Commit; (3)
// once no key refers to an older generation, those are dropped (CAS). It
// is crash-safe: at every step every key's generation is on the set, so
// every key opens; running it again finishes an interrupted run (and adds
// yet another generation). v1 keys are converted to v2 on the way. The new
// generation is wrapped by the KEK the set is under now, so a set stays
// wholly under one KEK.
func (m *Manager) RotateIntermediate(ctx context.Context, keyset string) error {
	m.mu.Lock()
	defer m.mu.Unlock()
	ks, err := m.KeySet(ctx, keyset)
	if err != nil {
		return fmt.Errorf("rotate intermediate: %w", err)
	}
	p := m.rootProvider()
	var gen uint64 = 1
	if cur := ks.CurrentIntermediate(); cur != nil {
		if p, err = m.provider(ctx, cur.Wrapped.KEKURI); err != nil {
			return fmt.Errorf("rotate intermediate of %q: %w", keyset, err)
		}
		gen = cur.Generation + 1
	}
	res, err := m.newIntermediate(ctx, p, keyset, gen)
	if err != nil {
		return fmt.Errorf("rotate intermediate of %q: %w", keyset, err)
	}
	ks.Intermediates = append(ks.Intermediates, res.rec)
	if err := m.store.UpdateKeySet(ctx, ks); err != nil {
		clear(res.key.raw)
		return fmt.Errorf("rotate intermediate of %q: add generation %d: %w", keyset, gen, err)
	}
	m.cacheIntermediate(keyset, res.key)
	m.log.Info("intermediate key generation added", "keyset", keyset, "generation", gen, "kek", res.rec.Wrapped.KEKURI)

	n, err := m.resealAll(ctx, keyset, res.key)
	if err != nil {
		return fmt.Errorf("rotate intermediate of %q: %w", keyset, err)
	}
	if err := m.dropOldGenerations(ctx, keyset, gen); err != nil {
		return fmt.Errorf("rotate intermediate of %q: %w", keyset, err)
	}
	m.log.Info("intermediate key rotated", "keyset", keyset, "generation", gen, "keys_resealed", n)
	return nil
}

// resealAll re-seals every sealed key of keyset not yet under in (v1 keys
// and keys of other generations) under in, in batches. Callers hold m.mu.
func (m *Manager) resealAll(ctx context.Context, keyset string, in *intermediateKey) (int, error) {
	keys, err := m.store.Keys(ctx, keyset)
	if err != nil {
		return 0, err
	}
	var batch []*Key
	n := 0
	flush := func() error {
		if len(batch) == 0 {
			return nil
		}
		if err := m.store.Commit(ctx, keyset, nil, batch); err != nil {
			return fmt.Errorf("re-seal keys: %w", err)
		}
		n += len(batch)
		batch = batch[:0]
		return nil
	}
	for _, k := range keys {
		s := k.Sealed
		if s == nil || (s.Format == SealFormatV2 && s.Generation == in.gen) {
			continue
		}
		priv, err := m.unseal(ctx, k)
		if err != nil {
			return n, err
		}
		sealed, err := sealV2(m.rand, in, k, priv)
		clear(priv)
		if err != nil {
			return n, err
		}
		k.Sealed = sealed
		if batch = append(batch, k); len(batch) == rewrapBatch {
			if err := flush(); err != nil {
				return n, err
			}
		}
	}
	return n, flush()
}

// dropOldGenerations removes keyset's intermediate generations other than
// keep, after checking no key refers to them. Callers hold m.mu.
func (m *Manager) dropOldGenerations(ctx context.Context, keyset string, keep uint64) error {
	keys, err := m.store.Keys(ctx, keyset)
	if err != nil {
		return err
	}
	for _, k := range keys {
		if s := k.Sealed; s != nil && (s.Format != SealFormatV2 || s.Generation != keep) {
			return fmt.Errorf("key %s v%d is still sealed under generation %d; not dropping old generations", k.KID, k.Version, s.Generation)
		}
	}
	ks, err := m.store.KeySet(ctx, keyset)
	if err != nil {
		return err
	}
	before := len(ks.Intermediates)
	ks.Intermediates = slices.DeleteFunc(ks.Intermediates, func(in Intermediate) bool { return in.Generation != keep })
	if len(ks.Intermediates) == before {
		return nil
	}
	if err := m.store.UpdateKeySet(ctx, ks); err != nil {
		return fmt.Errorf("drop old intermediate generations: %w", err)
	}
	m.dropIntermediates(keyset, func(gen uint64) bool { return gen == keep })
	return nil
}

// RewrapRoot moves every key set to the root KEK toURI: each set's
// intermediate keys are unwrapped (from the cache or their current KEK)
// and wrapped again under toURI, one CAS update per key set; sets already
// wholly under toURI are skipped, so an interrupted run is resumed by
// running it again. Stopping at any point leaves every set wholly under the
// old or the new KEK, so every key stays readable. Sets still holding v1
// keys (DEK wrapped by the KEK directly) are first converted to v2 under an
// intermediate, since those keys would otherwise stay on the old KEK.
// progress, if not nil, is called after each set is moved. On success the
// Manager's root KEK becomes toURI, and the import and audit keys (if
// any) move too.
// The old KEK must stay enabled until RewrapRoot returns without error.
func (m *Manager) RewrapRoot(ctx context.Context, toURI string, progress func(keyset string)) error {
	if toURI == "" {
		return fmt.Errorf("rewrap root: empty KEK URI: %w", ErrInvalidArgument)
	}
	to, err := m.provider(ctx, toURI)
	if err != nil {
		return fmt.Errorf("rewrap root: %w", err)
	}
	sets, err := m.ListKeySets(ctx)
	if err != nil {
		return fmt.Errorf("rewrap root: %w", err)
	}
	for _, s := range sets {
		if err := ctx.Err(); err != nil {
			return err
		}
		moved, err := m.rewrapSet(ctx, s.Name, to)
		if err != nil {
			return fmt.Errorf("rewrap root: key set %q: %w", s.Name, err)
		}
		if moved {
			m.log.Info("key set moved to new root KEK", "keyset", s.Name, "kek", to.URI())
			if progress != nil {
				progress(s.Name)
			}
		}
	}
	for _, kind := range []sealedSecretKind{importKey, auditKey} {
		if err := m.rewrapSealedSecret(ctx, kind, to); err != nil {
			return fmt.Errorf("rewrap root: %w", err)
		}
	}
	m.kekMu.Lock()
	if m.root.URI() != to.URI() {
		m.providers[m.root.URI()] = m.root // still needed for stragglers
		m.root = to
	}
	m.kekMu.Unlock()
	return nil
}

// rewrapSet moves one key set to to and reports whether it changed.
func (m *Manager) rewrapSet(ctx context.Context, name string, to kek.Provider) (bool, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	ks, err := m.store.KeySet(ctx, name)
	if err != nil {
		return false, err
	}
	keys, err := m.store.Keys(ctx, name)
	if err != nil {
		return false, err
	}
	hasV1 := slices.ContainsFunc(keys, func(k *Key) bool { return k.Sealed != nil && k.Sealed.Format == SealFormatV1 })
	if cur := ks.CurrentIntermediate(); cur == nil {
		// No intermediate yet: create it under the new KEK directly, then
		// bring the v1 keys under it.
		res, err := m.newIntermediate(ctx, to, name, 1)
		if err != nil {
			return false, err
		}
		ks.Intermediates = []Intermediate{res.rec}
		if err := m.store.UpdateKeySet(ctx, ks); err != nil {
			clear(res.key.raw)
			return false, err
		}
		m.cacheIntermediate(name, res.key)
		if _, err := m.resealAll(ctx, name, res.key); err != nil {
			return true, err
		}
		return true, nil
	} else if hasV1 {
		in, err := m.loadIntermediate(ctx, ks, cur.Generation)
		if err != nil {
			return false, err
		}
		if _, err := m.resealAll(ctx, name, in); err != nil {
			return false, err
		}
	}
	if !slices.ContainsFunc(ks.Intermediates, func(in Intermediate) bool { return in.Wrapped.KEKURI != to.URI() }) {
		return false, nil
	}
	next := ks.Clone()
	var fresh []*intermediateKey
	for i := range next.Intermediates {
		rec := &next.Intermediates[i]
		if rec.Wrapped.KEKURI == to.URI() {
			continue
		}
		in, err := m.loadIntermediate(ctx, ks, rec.Generation)
		if err != nil {
			return false, err
		}
		w, err := to.Wrap(ctx, in.raw, intermediateAAD(name, rec.Generation))
		if err != nil {
			return false, fmt.Errorf("wrap intermediate key (generation %d) with KEK %s: %w", rec.Generation, to.URI(), err)
		}
		rec.Wrapped = w.Clone()
		fresh = append(fresh, in)
	}
	if err := m.store.UpdateKeySet(ctx, next); err != nil {
		return false, err
	}
	for _, in := range fresh {
		m.recordOK(name, next.intermediate(in.gen))
	}
	return true, nil
}
