// Package keystore holds key sets and their HPKE key versions: the model,
// the lifecycle (pending -> active -> retired -> destroyed, with disabled as
// an operator hold), sealing of private keys under per-key data keys wrapped
// by a KEK provider, and the Store interface that storage backends implement
// (keystore/boltstore for one node; etcd later).
//
// Plaintext private keys exist only in process memory: the Manager unseals on
// first use and caches the result so releases cost no KEK call afterwards.
package keystore

import (
	"fmt"
	"slices"
	"strconv"
	"time"

	"github.com/attested-kms/attested-kms/keystore/kek"
)

// SuiteX25519 is the HPKE suite of every key this package generates.
const SuiteX25519 = "DHKEM(X25519,HKDF-SHA256)/HKDF-SHA256/AES-256-GCM"

// DefaultKeySetName is the key set used when none is configured.
const DefaultKeySetName = "default"

// State is a key's lifecycle state.
type State string

const (
	// StatePending: published ahead of activation so enclaves can fetch the
	// private key before end users encrypt to it. Releasable.
	StatePending State = "pending"
	// StateActive: advertised to end users. Releasable.
	StateActive State = "active"
	// StateRetired: no longer advertised; releasable until DestroyAfter so
	// requests encrypted shortly before retirement can still be decrypted.
	StateRetired State = "retired"
	// StateDisabled: operator hold; nothing is released. The state to return
	// to is kept in Key.HeldState.
	StateDisabled State = "disabled"
	// StateDestroyed: the sealed private key has been erased; metadata stays
	// for audit and so the kid is never silently reused for another key.
	StateDestroyed State = "destroyed"
)

// Valid reports whether s is one of the defined states.
func (s State) Valid() bool {
	switch s {
	case StatePending, StateActive, StateRetired, StateDisabled, StateDestroyed:
		return true
	}
	return false
}

// rank orders the time-driven states so lifecycle steps never move a key
// backwards (e.g. after a manual rotation set Expires in the past, or if the
// clock steps back).
func (s State) rank() int {
	switch s {
	case StatePending:
		return 1
	case StateActive:
		return 2
	case StateRetired:
		return 3
	case StateDestroyed:
		return 4
	}
	return 0
}

// KeySetSettings control the lifecycle of keys created in a key set. They are
// read when a key is created and turned into absolute times on the key;
// changing them never moves the times of existing keys.
type KeySetSettings struct {
	// RotationPeriod is the interval between activations of successive keys.
	RotationPeriod time.Duration
	// KeyLifetime is how long a key stays active. At least RotationPeriod;
	// a longer lifetime makes consecutive keys overlap.
	KeyLifetime time.Duration
	// PendingLead is how long before its activation a key is created and
	// published as pending. Less than RotationPeriod.
	PendingLead time.Duration
	// Retention is how long a retired key stays releasable before it is
	// destroyed.
	Retention time.Duration
}

// DefaultKeySetSettings: weekly rotation, a day's lead, a week's retention.
func DefaultKeySetSettings() KeySetSettings {
	return KeySetSettings{
		RotationPeriod: 7 * 24 * time.Hour,
		KeyLifetime:    7 * 24 * time.Hour,
		PendingLead:    24 * time.Hour,
		Retention:      7 * 24 * time.Hour,
	}
}

// WithDefaults fills zero fields, as the Admin API defines ("zero values
// take the server's defaults"): rotation period and retention from
// DefaultKeySetSettings, lifetime = rotation period, and a lead time of a
// day capped at half the rotation period so it stays below it.
func (s KeySetSettings) WithDefaults() KeySetSettings {
	d := DefaultKeySetSettings()
	if s.RotationPeriod == 0 {
		s.RotationPeriod = d.RotationPeriod
	}
	if s.KeyLifetime == 0 {
		s.KeyLifetime = s.RotationPeriod
	}
	if s.PendingLead == 0 {
		s.PendingLead = min(d.PendingLead, s.RotationPeriod/2)
	}
	if s.Retention == 0 {
		s.Retention = d.Retention
	}
	return s
}

// Validate checks that the settings describe a gapless schedule.
func (s KeySetSettings) Validate() error {
	switch {
	case s.RotationPeriod <= 0:
		return fmt.Errorf("rotation period must be positive: %w", ErrInvalidArgument)
	case s.KeyLifetime < s.RotationPeriod:
		// Shorter lifetimes would leave intervals with no active key.
		return fmt.Errorf("key lifetime %s is shorter than rotation period %s: %w", s.KeyLifetime, s.RotationPeriod, ErrInvalidArgument)
	case s.PendingLead < 0 || s.PendingLead >= s.RotationPeriod:
		// A lead time of a whole period or more would need several pending
		// keys at once; one is enough to prefetch.
		return fmt.Errorf("pending lead time %s must be in [0, rotation period %s): %w", s.PendingLead, s.RotationPeriod, ErrInvalidArgument)
	case s.Retention < 0:
		return fmt.Errorf("retention must not be negative: %w", ErrInvalidArgument)
	}
	return nil
}

// KeySet is a named family of keys with its own settings and release
// policy.
type KeySet struct {
	Name     string
	Settings KeySetSettings
	// Policy is the release policy document (YAML) as submitted. The key
	// store treats it as opaque bytes; the policy package parses it.
	Policy []byte
	// PolicyVersion increases by one on every SetPolicy; 0 means no policy
	// was set (and the release path must deny).
	PolicyVersion int
	// PolicyUpdated is when PolicyVersion was set; zero if never.
	PolicyUpdated time.Time
	// PolicySetBy names who set the current policy (the authenticated
	// admin principal); empty when unknown, e.g. the local admin socket.
	PolicySetBy string
	// PolicyRollbackOf is the earlier version whose content the current
	// version restored (RollbackPolicy); 0 if it was set directly.
	PolicyRollbackOf int
	// PolicyHistory holds every earlier policy version, oldest first.
	// Versions are only ever appended: a rollback adds a new version.
	PolicyHistory []PolicyRevision
	Created       time.Time
	// Intermediates are the key set's level-2 keys (AES-256), each wrapped
	// by the root KEK, ordered by generation. Usually one; two while
	// RotateIntermediate moves keys from the old generation to the new one.
	// Empty for sets created before the hierarchy existed, until their
	// first new key needs one.
	Intermediates []Intermediate
	// Revision is managed by the Store for compare-and-swap updates.
	Revision uint64
}

// Intermediate is one generation of a key set's intermediate key as
// stored: wrapped by the root KEK named in Wrapped.KEKURI, with AAD
// intermediateAAD(key set, generation).
type Intermediate struct {
	Generation uint64
	Wrapped    kek.Wrapped
	Created    time.Time
}

// Clone returns a deep copy.
func (ks *KeySet) Clone() *KeySet {
	if ks == nil {
		return nil
	}
	c := *ks
	c.Policy = slices.Clone(ks.Policy)
	c.PolicyHistory = clonePolicyHistory(ks.PolicyHistory)
	c.Intermediates = make([]Intermediate, len(ks.Intermediates))
	for i, in := range ks.Intermediates {
		c.Intermediates[i] = in
		c.Intermediates[i].Wrapped = in.Wrapped.Clone()
	}
	if len(c.Intermediates) == 0 {
		c.Intermediates = nil
	}
	return &c
}

// CurrentIntermediate returns the newest intermediate generation, which
// new keys are sealed under, or nil if the set has none yet.
func (ks *KeySet) CurrentIntermediate() *Intermediate {
	var cur *Intermediate
	for i := range ks.Intermediates {
		if cur == nil || ks.Intermediates[i].Generation > cur.Generation {
			cur = &ks.Intermediates[i]
		}
	}
	return cur
}

// intermediate returns generation gen, or nil.
func (ks *KeySet) intermediate(gen uint64) *Intermediate {
	for i := range ks.Intermediates {
		if ks.Intermediates[i].Generation == gen {
			return &ks.Intermediates[i]
		}
	}
	return nil
}

// KEKURI names the root KEK the set's current intermediate is wrapped
// under; empty if the set has no intermediate yet.
func (ks *KeySet) KEKURI() string {
	if cur := ks.CurrentIntermediate(); cur != nil {
		return cur.Wrapped.KEKURI
	}
	return ""
}

// SealedKey is a private key encrypted at rest. It holds ciphertext only.
type SealedKey struct {
	// Format names the sealing scheme: SealFormatV2 (DEK wrapped by the key
	// set's intermediate key) for every key sealed now, SealFormatV1 (DEK
	// wrapped by the KEK directly) for keys sealed before the hierarchy.
	Format string
	// KEKURI names the KEK that protects the key. v1: the KEK that wrapped
	// WrappedDEK (stored). v2: not stored (the key set's intermediate is
	// what the root KEK wraps, and RewrapRoot moves it without touching
	// keys); the Manager fills it in from the key set on the keys it
	// returns, for display.
	KEKURI string
	// Generation is the intermediate generation that wrapped WrappedDEK
	// (v2 only).
	Generation uint64
	// Algorithm is how WrappedDEK was made: "AES-256-GCM" under the
	// intermediate (v2), or the KEK provider's algorithm (v1).
	Algorithm string
	// KEKVersion is the KEK's version that wrapped WrappedDEK (v1 only,
	// when the provider has versions).
	KEKVersion string
	// WrappedDEK is the per-key data key, wrapped by the intermediate (v2:
	// nonce || AES-256-GCM ciphertext) or by the KEK provider (v1).
	WrappedDEK []byte
	// Nonce and Ciphertext are the AES-256-GCM encryption of the private key
	// under the data key (Ciphertext includes the tag).
	Nonce      []byte
	Ciphertext []byte
}

// Clone returns a deep copy.
func (s *SealedKey) Clone() *SealedKey {
	if s == nil {
		return nil
	}
	return &SealedKey{
		Format:     s.Format,
		KEKURI:     s.KEKURI,
		Generation: s.Generation,
		Algorithm:  s.Algorithm,
		KEKVersion: s.KEKVersion,
		WrappedDEK: slices.Clone(s.WrappedDEK),
		Nonce:      slices.Clone(s.Nonce),
		Ciphertext: slices.Clone(s.Ciphertext),
	}
}

// Key is one key version of a key set.
type Key struct {
	KeySet string
	// KID is 16 lowercase hex characters; its first byte is the RFC 9458 key
	// identifier, unique among the set's keys that are not destroyed.
	KID string
	// Version increases by one per key created in the set.
	Version uint64
	Suite   string
	// PublicKey is the raw 32-byte X25519 public key.
	PublicKey []byte
	// Sealed is the encrypted private key; nil once destroyed.
	Sealed *SealedKey
	State  State
	// HeldState is the state to return to when a disabled key is enabled;
	// empty unless State is StateDisabled.
	HeldState State
	// Lifecycle times, fixed when the key is created (a manual rotation or an
	// operator action may shorten them, never recompute them from settings).
	Created      time.Time
	Activates    time.Time
	Expires      time.Time
	DestroyAfter time.Time
	// Destroyed is when the sealed key was erased; zero otherwise.
	Destroyed time.Time
	// Revision is managed by the Store for compare-and-swap updates.
	Revision uint64
}

// Clone returns a deep copy.
func (k *Key) Clone() *Key {
	if k == nil {
		return nil
	}
	c := *k
	c.PublicKey = slices.Clone(k.PublicKey)
	c.Sealed = k.Sealed.Clone()
	return &c
}

// OHTTPKeyID returns the RFC 9458 key identifier: the first byte of the
// kid. Kids are validated when keys are created and stored, so a malformed
// one (which yields 0) means a corrupt record.
func (k *Key) OHTTPKeyID() uint8 {
	id, _ := ParseKeyID(k.KID)
	return id
}

// KEKURI names the KEK that seals the private key (for v2 keys, the key
// set's root KEK as filled in by the Manager); empty once destroyed.
func (k *Key) KEKURI() string {
	if k.Sealed == nil {
		return ""
	}
	return k.Sealed.KEKURI
}

// Releasable reports whether the private key may be released at now: the key
// is pending, active or retired, and its retention has not ended.
func (k *Key) Releasable(now time.Time) bool {
	switch k.State {
	case StatePending, StateActive, StateRetired:
		return now.Before(k.DestroyAfter)
	}
	return false
}

// holdsKeyID reports whether k still occupies its RFC 9458 key identifier:
// every key whose private key may ever be released again does.
func (k *Key) holdsKeyID() bool { return k.State != StateDestroyed }

// ParseKeyID validates a kid (16 lowercase hex characters) and returns its
// RFC 9458 key identifier.
func ParseKeyID(kid string) (uint8, error) {
	if !ValidKID(kid) {
		return 0, fmt.Errorf("kid must be 16 lowercase hex characters: %w", ErrInvalidArgument)
	}
	b, err := strconv.ParseUint(kid[:2], 16, 8)
	if err != nil {
		return 0, fmt.Errorf("parse kid: %w", ErrInvalidArgument)
	}
	return uint8(b), nil
}

// ValidKID reports whether kid is 16 lowercase hex characters.
func ValidKID(kid string) bool {
	if len(kid) != 16 {
		return false
	}
	for i := 0; i < len(kid); i++ {
		c := kid[i]
		if (c < '0' || c > '9') && (c < 'a' || c > 'f') {
			return false
		}
	}
	return true
}

// ValidKeySetName reports whether name is a DNS label: 1-63 characters of
// lowercase letters, digits and '-', not starting or ending with '-'. Names
// appear in URLs, storage keys and AADs, so the alphabet is kept narrow.
func ValidKeySetName(name string) bool {
	if len(name) == 0 || len(name) > 63 || name[0] == '-' || name[len(name)-1] == '-' {
		return false
	}
	for i := 0; i < len(name); i++ {
		c := name[i]
		if (c < 'a' || c > 'z') && (c < '0' || c > '9') && c != '-' {
			return false
		}
	}
	return true
}
