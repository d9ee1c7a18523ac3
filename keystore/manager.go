package keystore

import (
	"cmp"
	"context"
	"crypto/ecdh"
	"crypto/rand"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"slices"
	"sync"
	"time"

	"github.com/attested-kms/attested-kms/keystore/kek"
)

// MaxPolicySize bounds a policy document; policies are small and the bound
// keeps a mistaken upload from bloating every key set read.
const MaxPolicySize = 1 << 20

// Options configure a Manager. Zero values select the real clock, the
// operating system's CSPRNG and a logger that discards.
type Options struct {
	// Now returns the current time; tests pass a fake clock.
	Now func() time.Time
	// Rand supplies kids, private keys, data keys and nonces. It is only read
	// while the Manager's write lock is held, so it need not be safe for
	// concurrent use. Anything but a CSPRNG is for tests only.
	Rand io.Reader
	// Logger receives lifecycle events and errors; never key material.
	Logger *slog.Logger
	// OpenKEK returns the provider for a KEK URI other than the configured
	// root, e.g. a key set still under the old KEK while RewrapRoot runs,
	// or the target of RewrapRoot. Nil: only the root KEK is usable, and a
	// record under another KEK fails with kek.ErrUnsupported. Production
	// passes kek.Open (or a wrapper that restricts the schemes allowed).
	OpenKEK func(ctx context.Context, uri string) (kek.Provider, error)
	// KEKCheckInterval is the customer's off switch delay: each key set's
	// KEK is checked every half interval, a disabled KEK stops releases at
	// its first failed check, and an unreachable one stops them once the
	// last successful check is older than the interval. Default 5 minutes.
	KEKCheckInterval time.Duration
	// KEKCheckAttempts bounds the attempts of one check of one key set
	// while the KEK answers kek.ErrUnavailable; default 4.
	KEKCheckAttempts int
	// Sleep waits d or until ctx is done (returning its error); used for
	// retry backoff and by RunRevalidation. Tests pass one driving a fake
	// clock. Default: a real timer.
	Sleep func(ctx context.Context, d time.Duration) error
	// OnEvent, if set, receives lifecycle and KEK changes (see Event):
	// synchronously, in order, and never while the Manager holds a lock,
	// so it may call back into the Manager. It runs on the goroutine that
	// made the change (Tick, a KEK check, a release) and delays it, so it
	// must return quickly; the server's handler appends to the audit log.
	// Only real changes are reported: a Tick that changes nothing reports
	// nothing.
	OnEvent func(Event)
}

// DefaultKEKCheckInterval is the default Options.KEKCheckInterval.
const DefaultKEKCheckInterval = 5 * time.Minute

// Manager is the key store's entry point: it creates key sets and keys,
// drives their lifecycle, and unseals private keys for release.
type Manager struct {
	store    Store
	now      func() time.Time
	rand     io.Reader
	log      *slog.Logger
	openKEK  func(ctx context.Context, uri string) (kek.Provider, error)
	interval time.Duration
	attempts int
	sleep    func(ctx context.Context, d time.Duration) error
	events   eventQueue

	// mu serializes this process's read-modify-write cycles so they never
	// lose compare-and-swap races to each other; other replicas still can,
	// and then get ErrConflict.
	mu sync.Mutex

	cacheMu sync.Mutex
	cache   map[cacheKey][]byte

	// kekMu guards the KEK side: the root provider (RewrapRoot replaces
	// it), providers opened for other URIs, unwrapped intermediates and
	// each key set's KEK status. Never held during an outside call.
	kekMu     sync.Mutex
	root      kek.Provider
	providers map[string]kek.Provider
	inter     map[interCacheKey]*intermediateKey
	status    map[string]*KEKStatus
}

type interCacheKey struct {
	keyset string
	gen    uint64
}

type cacheKey struct {
	keyset  string
	kid     string
	version uint64
	// pub is the stored public key: a record whose public key was
	// replaced misses the cache and is unsealed again, and the unseal's
	// key-pair check refuses it, instead of the cache handing out the old
	// private key under the new public key.
	pub string
}

// NewManager returns a Manager over store whose root KEK is provider: new
// key sets' intermediate keys are wrapped by it. Call Warm before serving.
func NewManager(store Store, provider kek.Provider, opts Options) *Manager {
	m := &Manager{
		store:     store,
		root:      provider,
		now:       opts.Now,
		rand:      opts.Rand,
		log:       opts.Logger,
		openKEK:   opts.OpenKEK,
		interval:  opts.KEKCheckInterval,
		attempts:  opts.KEKCheckAttempts,
		sleep:     opts.Sleep,
		cache:     make(map[cacheKey][]byte),
		providers: make(map[string]kek.Provider),
		inter:     make(map[interCacheKey]*intermediateKey),
		status:    make(map[string]*KEKStatus),
		events:    eventQueue{onEvent: opts.OnEvent},
	}
	if m.interval <= 0 {
		m.interval = DefaultKEKCheckInterval
	}
	if m.attempts <= 0 {
		m.attempts = 4
	}
	if m.sleep == nil {
		m.sleep = sleepCtx
	}
	if m.now == nil {
		m.now = time.Now
	}
	if m.rand == nil {
		m.rand = rand.Reader
	}
	if m.log == nil {
		m.log = slog.New(slog.DiscardHandler)
	}
	return m
}

// clock returns Now without the monotonic reading (stored times have none,
// and mixing the two makes comparisons depend on whether a value was
// persisted) in UTC.
func (m *Manager) clock() time.Time { return m.now().Round(0).UTC() }

// CreateKeySet creates a key set and its first key, active immediately,
// with no release policy (version 0: the release path must deny). Zero
// fields of s take defaults (KeySetSettings.WithDefaults).
func (m *Manager) CreateKeySet(ctx context.Context, name string, s KeySetSettings) (*KeySet, error) {
	return m.CreateKeySetWithPolicy(ctx, name, s, nil)
}

// CreateKeySetWithPolicy is CreateKeySet that also stores policyYAML as
// policy version 1 in the same transaction, so no window exists in which the
// set has keys but no policy. A nil policyYAML stores no policy.
func (m *Manager) CreateKeySetWithPolicy(ctx context.Context, name string, s KeySetSettings, policyYAML []byte) (*KeySet, error) {
	if !ValidKeySetName(name) {
		return nil, fmt.Errorf("create key set %q: name must be a DNS label: %w", name, ErrInvalidArgument)
	}
	s = s.WithDefaults()
	if err := s.Validate(); err != nil {
		return nil, fmt.Errorf("create key set %q: %w", name, err)
	}
	if policyYAML != nil {
		if err := checkPolicySize(policyYAML); err != nil {
			return nil, fmt.Errorf("create key set %q: %w", name, err)
		}
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	now := m.clock()
	ks := &KeySet{Name: name, Settings: s, Created: now}
	if policyYAML != nil {
		ks.Policy, ks.PolicyVersion, ks.PolicyUpdated = slices.Clone(policyYAML), 1, now
	}
	// The intermediate is created with the set, in the same transaction.
	in, err := m.newIntermediate(ctx, m.rootProvider(), name, 1)
	if err != nil {
		return nil, fmt.Errorf("create key set %q: %w", name, err)
	}
	ks.Intermediates = []Intermediate{in.rec}
	first, err := m.newKey(ctx, ks, in.key, nil, 1, now, now, nil)
	if err != nil {
		clear(in.key.raw)
		return nil, fmt.Errorf("create key set %q: %w", name, err)
	}
	if err := m.store.CreateKeySet(ctx, ks, first); err != nil {
		clear(in.key.raw)
		return nil, fmt.Errorf("create key set %q: %w", name, err)
	}
	m.cacheIntermediate(name, in.key)
	m.log.Info("key set created", "keyset", name, "kid", first.KID, "version", first.Version, "kek", in.rec.Wrapped.KEKURI)
	return ks.Clone(), nil
}

// KeySet returns the named key set.
func (m *Manager) KeySet(ctx context.Context, name string) (*KeySet, error) {
	if !ValidKeySetName(name) {
		return nil, fmt.Errorf("key set %q: %w", name, ErrInvalidArgument)
	}
	ks, err := m.store.KeySet(ctx, name)
	if err != nil {
		return nil, fmt.Errorf("get key set %q: %w", name, err)
	}
	return ks, nil
}

// ListKeySets returns all key sets ordered by name.
func (m *Manager) ListKeySets(ctx context.Context) ([]*KeySet, error) {
	sets, err := m.store.KeySets(ctx)
	if err != nil {
		return nil, fmt.Errorf("list key sets: %w", err)
	}
	return sets, nil
}

// SetPolicy stores a new release policy document for keyset and returns its
// version; the previous version is kept (KeySet.PolicyHistory). The
// document is not parsed here; callers validate it with the policy package
// first. SetPolicyAs also records who set it.
func (m *Manager) SetPolicy(ctx context.Context, keyset string, policyYAML []byte) (int, error) {
	return m.SetPolicyAs(ctx, keyset, policyYAML, "")
}

func checkPolicySize(p []byte) error {
	if len(p) == 0 {
		return fmt.Errorf("empty policy: %w", ErrInvalidArgument)
	}
	if len(p) > MaxPolicySize {
		return fmt.Errorf("policy is %d bytes, limit %d: %w", len(p), MaxPolicySize, ErrInvalidArgument)
	}
	return nil
}

// Rotate creates a key that is active now and retires the set's active keys
// at once (Expires = now, DestroyAfter = now + retention). Pending keys keep
// their schedule: enclaves may already have fetched them.
func (m *Manager) Rotate(ctx context.Context, keyset string) (*Key, error) {
	return m.rotate(ctx, keyset, nil, "rotate")
}

// rotate is Rotate with the new key's private key given (priv, imported)
// or generated (nil).
func (m *Manager) rotate(ctx context.Context, keyset string, priv []byte, op string) (*Key, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	ks, err := m.KeySet(ctx, keyset)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", op, err)
	}
	in, err := m.sealingIntermediate(ctx, ks)
	if err != nil {
		return nil, fmt.Errorf("%s %q: %w", op, keyset, err)
	}
	keys, err := m.store.Keys(ctx, keyset)
	if err != nil {
		return nil, fmt.Errorf("%s %q: %w", op, keyset, err)
	}
	if priv != nil {
		if err := checkNotPresent(keys, priv); err != nil {
			return nil, fmt.Errorf("%s %q: %w", op, keyset, err)
		}
	}
	now := m.clock()
	var updates []*Key
	for _, k := range keys {
		// A disabled key that was active is retired too, so enabling it later
		// does not bring back a key the operator rotated away from.
		wasActive := k.State == StateActive || (k.State == StateDisabled && k.HeldState == StateActive)
		if !wasActive {
			continue
		}
		retire(k, now, ks.Settings.Retention)
		updates = append(updates, k)
	}
	nk, err := m.newKey(ctx, ks, in, keys, nextVersion(keys), now, now, priv)
	if err != nil {
		return nil, fmt.Errorf("%s %q: %w", op, keyset, err)
	}
	if err := m.store.Commit(ctx, keyset, []*Key{nk}, updates); err != nil {
		return nil, fmt.Errorf("%s %q: %w", op, keyset, err)
	}
	m.log.Info("key set rotated", "keyset", keyset, "kid", nk.KID, "version", nk.Version, "retired", len(updates), "imported", priv != nil)
	out := nk.Clone()
	out.Sealed.KEKURI = ks.KEKURI()
	return out, nil
}

// retire ends k's active period at now, shortening (never extending) its
// retention to now+retention.
func retire(k *Key, now time.Time, retention time.Duration) {
	if k.Expires.After(now) {
		k.Expires = now
	}
	if d := now.Add(retention); k.DestroyAfter.After(d) {
		k.DestroyAfter = d
	}
	if k.State == StateDisabled {
		k.HeldState = StateRetired
	} else {
		k.State = StateRetired
	}
}

// Tick performs one lifecycle step for every key set at Now: destroys keys
// past DestroyAfter, retires expired keys, activates due pending keys, and
// creates the next key once it is within the pending lead time of its
// activation. Calling it again at the same time changes nothing. Errors of
// one key set do not stop the others; they are joined.
func (m *Manager) Tick(ctx context.Context) error {
	sets, err := m.ListKeySets(ctx)
	if err != nil {
		return fmt.Errorf("tick: %w", err)
	}
	var errs []error
	for _, ks := range sets {
		if err := ctx.Err(); err != nil {
			return err
		}
		err := m.tickSet(ctx, ks.Name)
		// tickSet has released m.mu: deliver what it (and KEK calls made
		// on its behalf) queued.
		m.flush()
		if err != nil {
			errs = append(errs, fmt.Errorf("tick %q: %w", ks.Name, err))
		}
	}
	return errors.Join(errs...)
}

func (m *Manager) tickSet(ctx context.Context, name string) error {
	m.mu.Lock()
	defer m.mu.Unlock()
	ks, err := m.store.KeySet(ctx, name)
	if err != nil {
		return err
	}
	keys, err := m.store.Keys(ctx, name)
	if err != nil {
		return err
	}
	now := m.clock()
	var updates []*Key
	var from []State
	for _, k := range keys {
		prev := k.State
		if advance(k, now) {
			updates = append(updates, k)
			from = append(from, prev)
		}
	}

	// Schedule the successor of the newest key still ahead of retirement.
	var latest *Key
	for _, k := range keys {
		if (k.State == StatePending || k.State == StateActive) && (latest == nil || k.Activates.After(latest.Activates)) {
			latest = k
		}
	}
	var create []*Key
	var activates time.Time
	switch {
	case latest == nil:
		// No usable key at all (first Tick after a long outage, or every
		// key disabled): end users need one now.
		activates = now
	case !now.Before(latest.Activates.Add(ks.Settings.RotationPeriod - ks.Settings.PendingLead)):
		activates = latest.Activates.Add(ks.Settings.RotationPeriod)
		if activates.Before(now) {
			activates = now
		}
	}
	if !activates.IsZero() {
		in, err := m.sealingIntermediate(ctx, ks)
		if err != nil {
			return err
		}
		nk, err := m.newKey(ctx, ks, in, keys, nextVersion(keys), activates, now, nil)
		if err != nil {
			return err
		}
		create = append(create, nk)
	}
	if len(create) == 0 && len(updates) == 0 {
		return nil
	}
	if err := m.store.Commit(ctx, name, create, updates); err != nil {
		return err
	}
	for i, k := range updates {
		if k.State == StateDestroyed {
			m.evict(k)
		}
		m.log.Info("key state changed", "keyset", name, "kid", k.KID, "version", k.Version, "from", from[i], "to", k.State)
		m.queue(Event{Kind: EventKeyStateChanged, Source: SourceTick, KeySet: name, KID: k.KID, Version: k.Version,
			From: string(from[i]), To: string(k.State), Reason: "scheduled", Time: now})
	}
	for _, k := range create {
		m.log.Info("key created", "keyset", name, "kid", k.KID, "version", k.Version, "state", k.State, "activates", k.Activates)
		reason := "scheduled"
		if latest == nil {
			reason = "no usable key"
		}
		m.queue(Event{Kind: EventKeyCreated, Source: SourceTick, KeySet: name, KID: k.KID, Version: k.Version,
			To: string(k.State), Reason: reason, Time: now})
	}
	return nil
}

// advance moves k forward to the state its times call for at now and
// reports whether it changed. Keys never move backwards. Disabled keys stay
// on hold except that destruction happens on schedule: retention is a
// promise about how long a key can decrypt, and a hold must not extend it.
func advance(k *Key, now time.Time) bool {
	switch k.State {
	case StateDestroyed:
		return false
	case StateDisabled:
		if !now.Before(k.DestroyAfter) {
			destroy(k, now)
			return true
		}
		return false
	}
	target := timedState(k, now)
	if target.rank() <= k.State.rank() {
		return false
	}
	if target == StateDestroyed {
		destroy(k, now)
	} else {
		k.State = target
	}
	return true
}

// timedState is the state k's times call for at now.
func timedState(k *Key, now time.Time) State {
	switch {
	case !now.Before(k.DestroyAfter):
		return StateDestroyed
	case !now.Before(k.Expires):
		return StateRetired
	case !now.Before(k.Activates):
		return StateActive
	}
	return StatePending
}

// destroy erases k's sealed private key and keeps its metadata.
func destroy(k *Key, now time.Time) {
	k.Sealed = nil
	k.State = StateDestroyed
	k.HeldState = ""
	k.Destroyed = now
}

func nextVersion(keys []*Key) uint64 {
	var v uint64
	for _, k := range keys {
		v = max(v, k.Version)
	}
	return v + 1
}

// newKey seals a key for ks under its intermediate in: priv if given
// (import; the caller validated it), else a fresh one. existing are the
// set's keys, used to keep the RFC 9458 key identifier unique. No outside
// call.
func (m *Manager) newKey(_ context.Context, ks *KeySet, in *intermediateKey, existing []*Key, version uint64, activates, now time.Time, priv []byte) (*Key, error) {
	kid, err := newKID(m.rand, usedKeyIDs(existing))
	if err != nil {
		return nil, err
	}
	if priv == nil {
		// Go 1.26's ecdh.GenerateKey ignores its reader; derive the scalar
		// from m.rand ourselves so Options.Rand governs all randomness.
		// X25519 accepts any 32 bytes (clamping happens inside).
		priv = make([]byte, privateKeySize)
		defer clear(priv)
		if _, err := io.ReadFull(m.rand, priv); err != nil {
			return nil, fmt.Errorf("generate private key: %w", err)
		}
	}
	sk, err := ecdh.X25519().NewPrivateKey(priv)
	if err != nil {
		return nil, fmt.Errorf("generate private key: %w", err)
	}
	expires := activates.Add(ks.Settings.KeyLifetime)
	k := &Key{
		KeySet:       ks.Name,
		KID:          kid,
		Version:      version,
		Suite:        SuiteX25519,
		PublicKey:    sk.PublicKey().Bytes(),
		State:        StatePending,
		Created:      now,
		Activates:    activates,
		Expires:      expires,
		DestroyAfter: expires.Add(ks.Settings.Retention),
	}
	if !now.Before(activates) {
		k.State = StateActive
	}
	k.Sealed, err = sealV2(m.rand, in, k, priv)
	if err != nil {
		return nil, fmt.Errorf("seal key %s v%d: %w", kid, version, err)
	}
	return k, nil
}

// RunRotation calls Tick now and then every interval until ctx is done. It
// is the single-node scheduler; with several replicas only the elected
// leader should run it.
func (m *Manager) RunRotation(ctx context.Context, interval time.Duration) {
	if interval <= 0 {
		interval = time.Minute
	}
	t := time.NewTicker(interval)
	defer t.Stop()
	for {
		if err := m.Tick(ctx); err != nil && ctx.Err() == nil {
			m.log.Error("key rotation tick failed", "err", err)
		}
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
	}
}

// ListKeys returns the keys of keyset ordered by version, destroyed ones
// included.
func (m *Manager) ListKeys(ctx context.Context, keyset string) ([]*Key, error) {
	if !ValidKeySetName(keyset) {
		return nil, fmt.Errorf("key set %q: %w", keyset, ErrInvalidArgument)
	}
	keys, err := m.store.Keys(ctx, keyset)
	if err != nil {
		return nil, fmt.Errorf("list keys of %q: %w", keyset, err)
	}
	m.describe(ctx, keyset, keys...)
	return keys, nil
}

// describe fills in Sealed.KEKURI of v2 keys from their key set, for
// display (the record does not store it: RewrapRoot moves a set to another
// KEK without rewriting its keys). Best effort: on a store error the field
// stays empty.
func (m *Manager) describe(ctx context.Context, keyset string, keys ...*Key) {
	var uri string
	for i, k := range keys {
		if k.Sealed == nil || k.Sealed.Format != SealFormatV2 {
			continue
		}
		if uri == "" {
			ks, err := m.store.KeySet(ctx, keyset)
			if err != nil {
				return
			}
			uri = ks.KEKURI()
		}
		keys[i].Sealed.KEKURI = uri
	}
}

// Key returns the key with kid in keyset: the undestroyed one if any, else
// the most recent destroyed one.
func (m *Manager) Key(ctx context.Context, keyset, kid string) (*Key, error) {
	k, err := m.key(ctx, keyset, kid)
	if err != nil {
		return nil, err
	}
	m.describe(ctx, keyset, k)
	return k, nil
}

// key is Key without describe: the release path needs no display fields.
func (m *Manager) key(ctx context.Context, keyset, kid string) (*Key, error) {
	if !ValidKeySetName(keyset) {
		return nil, fmt.Errorf("key set %q: %w", keyset, ErrInvalidArgument)
	}
	if !ValidKID(kid) {
		return nil, fmt.Errorf("kid must be 16 lowercase hex characters: %w", ErrInvalidArgument)
	}
	keys, err := m.store.KeysByKID(ctx, keyset, kid)
	if err != nil {
		return nil, fmt.Errorf("get key %s/%s: %w", keyset, kid, err)
	}
	if len(keys) == 0 {
		return nil, fmt.Errorf("key %s/%s: %w", keyset, kid, ErrKeyNotFound)
	}
	for _, k := range slices.Backward(keys) {
		if k.State != StateDestroyed {
			return k, nil
		}
	}
	return keys[len(keys)-1], nil
}

// SetState applies an operator state change (the Admin API's SetKeyState):
//   - StateDisabled puts a pending, active or retired key on hold;
//   - StateActive enables a disabled key: it returns to the state it was
//     disabled in, advanced to Now (an active key whose expiry passed
//     meanwhile comes back retired), so the result need not be active;
//   - StateDestroyed erases the private key now, from any state.
//
// Pending, active and retired otherwise follow the schedule; asking for them
// is ErrInvalidTransition. Repeating a change that already holds (disable a
// disabled key, destroy a destroyed one, enable an active one) returns the
// key unchanged.
func (m *Manager) SetState(ctx context.Context, keyset, kid string, s State) (*Key, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	k, err := m.key(ctx, keyset, kid)
	if err != nil {
		return nil, fmt.Errorf("set state: %w", err)
	}
	now := m.clock()
	from := k.State
	switch s {
	case StateDisabled:
		switch k.State {
		case StateDisabled:
			return k, nil
		case StateDestroyed:
			return nil, fmt.Errorf("disable %s/%s: %w", keyset, kid, ErrKeyDestroyed)
		}
		k.HeldState, k.State = k.State, StateDisabled
	case StateDestroyed:
		if k.State == StateDestroyed {
			return k, nil
		}
		destroy(k, now)
	case StateActive:
		switch k.State {
		case StateActive:
			return k, nil
		case StateDestroyed:
			return nil, fmt.Errorf("enable %s/%s: %w", keyset, kid, ErrKeyDestroyed)
		case StateDisabled:
		default:
			return nil, fmt.Errorf("enable %s/%s: key is %s, not disabled; activation follows the schedule: %w",
				keyset, kid, k.State, ErrInvalidTransition)
		}
		resume := k.HeldState
		if resume != StatePending && resume != StateActive && resume != StateRetired {
			// A hold without a valid remembered state (corrupt record)
			// resumes from the earliest state; advance moves it on.
			resume = StatePending
		}
		k.State, k.HeldState = resume, ""
		advance(k, now)
	case StatePending, StateRetired:
		return nil, fmt.Errorf("set state of %s/%s to %s: follows the schedule, not set by operators: %w", keyset, kid, s, ErrInvalidTransition)
	default:
		return nil, fmt.Errorf("set state of %s/%s to %q: %w", keyset, kid, s, ErrInvalidArgument)
	}
	if err := m.store.Commit(ctx, keyset, nil, []*Key{k}); err != nil {
		return nil, fmt.Errorf("set state of %s/%s: %w", keyset, kid, err)
	}
	if k.State == StateDisabled || k.State == StateDestroyed {
		// Fewer plaintext copies while a key is on hold or gone.
		m.evict(k)
	}
	m.log.Info("key state set by operator", "keyset", keyset, "kid", kid, "version", k.Version, "from", from, "to", k.State)
	out := k.Clone()
	m.describe(ctx, keyset, out)
	return out, nil
}

// Disable puts a key on hold: nothing is released until Enable.
func (m *Manager) Disable(ctx context.Context, keyset, kid string) (*Key, error) {
	return m.SetState(ctx, keyset, kid, StateDisabled)
}

// Enable lifts a hold (SetState with StateActive); the returned key shows the
// state it resumed, which is retired if it expired meanwhile.
func (m *Manager) Enable(ctx context.Context, keyset, kid string) (*Key, error) {
	return m.SetState(ctx, keyset, kid, StateActive)
}

// Destroy erases a key's sealed private key now.
func (m *Manager) Destroy(ctx context.Context, keyset, kid string) (*Key, error) {
	return m.SetState(ctx, keyset, kid, StateDestroyed)
}

// PrivateKey returns the raw 32-byte X25519 private key of keyset/kid if the
// key is releasable now. The key state is read from the store on every call
// (so a disable takes effect at once); the unsealed key is cached, so only
// the first call per key version costs a KEK call. The caller owns the
// returned slice and should zero it after use.
//
// The key set's KEK gates every release, cached or not: once a check found
// it disabled (ErrKEKDisabled), or unreachable for longer than the check
// interval (ErrKEKUnavailable), nothing of the set is released.
func (m *Manager) PrivateKey(ctx context.Context, keyset, kid string) ([]byte, error) {
	_, priv, err := m.Release(ctx, keyset, kid)
	return priv, err
}

// Release is PrivateKey that also returns the key's record, from the same
// single store read: the release path needs both.
func (m *Manager) Release(ctx context.Context, keyset, kid string) (*Key, []byte, error) {
	k, err := m.key(ctx, keyset, kid)
	if err != nil {
		return nil, nil, fmt.Errorf("private key: %w", err)
	}
	priv, err := m.releasable(ctx, k)
	if err != nil {
		return nil, nil, err
	}
	return k, priv, nil
}

func (m *Manager) releasable(ctx context.Context, k *Key) ([]byte, error) {
	keyset, kid := k.KeySet, k.KID
	switch {
	case k.State == StateDisabled:
		m.evict(k)
		return nil, fmt.Errorf("private key %s/%s: %w", keyset, kid, ErrKeyDisabled)
	case k.State == StateDestroyed:
		m.evict(k)
		return nil, fmt.Errorf("private key %s/%s: %w", keyset, kid, ErrKeyDestroyed)
	case !k.Releasable(m.clock()):
		return nil, fmt.Errorf("private key %s/%s: retention ended: %w", keyset, kid, ErrKeyNotReleasable)
	}
	if err := m.kekGate(keyset); err != nil {
		return nil, fmt.Errorf("private key %s/%s: %w", keyset, kid, err)
	}
	return m.cachedPrivate(ctx, k)
}

// cachedPrivate returns a copy of k's private key from the cache, unsealing
// it first if needed.
func (m *Manager) cachedPrivate(ctx context.Context, k *Key) ([]byte, error) {
	ck := cacheKey{k.KeySet, k.KID, k.Version, string(k.PublicKey)}
	m.cacheMu.Lock()
	priv, ok := m.cache[ck]
	m.cacheMu.Unlock()
	if ok {
		return slices.Clone(priv), nil
	}
	// Unseal outside the lock: a slow KEK must not block cached releases.
	// Concurrent first calls may unseal twice; the first stored wins.
	priv, err := m.unseal(ctx, k)
	if err != nil {
		return nil, fmt.Errorf("private key: %w", err)
	}
	m.cacheMu.Lock()
	if cur, ok := m.cache[ck]; ok {
		clear(priv)
		priv = cur
	} else {
		m.cache[ck] = priv
	}
	out := slices.Clone(priv)
	m.cacheMu.Unlock()
	return out, nil
}

func (m *Manager) evict(k *Key) {
	ck := cacheKey{k.KeySet, k.KID, k.Version, string(k.PublicKey)}
	m.cacheMu.Lock()
	defer m.cacheMu.Unlock()
	if priv, ok := m.cache[ck]; ok {
		clear(priv)
		delete(m.cache, ck)
	}
}

// evictSet zeroes and drops the cached private keys of keyset.
func (m *Manager) evictSet(keyset string) {
	m.cacheMu.Lock()
	defer m.cacheMu.Unlock()
	for ck, priv := range m.cache {
		if ck.keyset == keyset {
			clear(priv)
			delete(m.cache, ck)
		}
	}
}

// Invalidate drops what this process caches about a record another
// replica changed: the cached private keys of kid (all of keyset's if kid
// is empty, with its intermediate keys). Reads go to the store anyway, so
// this only shortens how long a destroyed or re-wrapped key's plaintext
// stays in memory here; a store watch calls it.
func (m *Manager) Invalidate(keyset, kid string) {
	if kid != "" {
		m.cacheMu.Lock()
		for ck, priv := range m.cache {
			if ck.keyset == keyset && ck.kid == kid {
				clear(priv)
				delete(m.cache, ck)
			}
		}
		m.cacheMu.Unlock()
		return
	}
	m.evictSet(keyset)
	m.dropIntermediates(keyset, nil)
}

// ClearCache zeroes and drops every cached private key and intermediate
// key, e.g. at shutdown. The next release unwraps again.
func (m *Manager) ClearCache() {
	m.cacheMu.Lock()
	for ck, priv := range m.cache {
		clear(priv)
		delete(m.cache, ck)
	}
	m.cacheMu.Unlock()
	m.kekMu.Lock()
	defer m.kekMu.Unlock()
	for ik, in := range m.inter {
		clear(in.raw)
		delete(m.inter, ik)
	}
}

// ActivePublicKeys returns the keys to advertise to end users: active and
// within [Activates, Expires) at Now, from the named key sets or, with none
// named, from all. Sealed is stripped. Ordered by key set, newest first.
func (m *Manager) ActivePublicKeys(ctx context.Context, keysets ...string) ([]*Key, error) {
	if len(keysets) == 0 {
		sets, err := m.ListKeySets(ctx)
		if err != nil {
			return nil, fmt.Errorf("active public keys: %w", err)
		}
		for _, ks := range sets {
			keysets = append(keysets, ks.Name)
		}
	}
	now := m.clock()
	var out []*Key
	for _, name := range keysets {
		keys, err := m.ListKeys(ctx, name)
		if err != nil {
			return nil, fmt.Errorf("active public keys: %w", err)
		}
		for _, k := range keys {
			// Check the times too: if Tick is late, an expired key must not
			// be advertised just because its state was not updated yet.
			if k.State == StateActive && timedState(k, now) == StateActive {
				k.Sealed = nil
				out = append(out, k)
			}
		}
	}
	slices.SortStableFunc(out, func(a, b *Key) int {
		return cmp.Or(cmp.Compare(a.KeySet, b.KeySet), b.Activates.Compare(a.Activates), cmp.Compare(b.Version, a.Version))
	})
	return out, nil
}
