package keystore

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"time"
)

// ErrPolicyVersionNotFound: the key set never had that policy version.
// NotFound.
var ErrPolicyVersionNotFound = errors.New("keystore: policy version not found")

// ErrPolicyHistoryFull: keeping one more policy version would take the
// key set's policies past MaxPolicyHistorySize. ResourceExhausted.
var ErrPolicyHistoryFull = errors.New("keystore: policy history full")

// MaxPolicyHistorySize bounds the YAML of all of a key set's policy
// versions together (current included). Every version is kept in the key
// set record, which the stores write in one request (etcd refuses requests
// over 1.5 MiB by default, and the JSON record base64-encodes the YAML,
// adding a third), and which the release path reads. Versions are never
// dropped to make room: a policy change past the bound is refused instead.
const MaxPolicyHistorySize = 1 << 20

// PolicyRevision is one version of a key set's release policy.
type PolicyRevision struct {
	Version int
	// YAML is the document as submitted.
	YAML []byte
	// Set is when this version became current.
	Set time.Time
	// SetBy names the admin principal that set it; empty when unknown
	// (the local admin socket, or versions set before this was recorded).
	SetBy string
	// RollbackOf is the earlier version whose content this one restored;
	// 0 if it was set directly.
	RollbackOf int
}

func clonePolicyHistory(h []PolicyRevision) []PolicyRevision {
	if len(h) == 0 {
		return nil
	}
	c := make([]PolicyRevision, len(h))
	for i, r := range h {
		c[i] = r
		c[i].YAML = slices.Clone(r.YAML)
	}
	return c
}

// CurrentPolicy returns the current policy version; ok is false if the set
// has none. YAML aliases ks.Policy.
func (ks *KeySet) CurrentPolicy() (rev PolicyRevision, ok bool) {
	if ks.PolicyVersion == 0 {
		return PolicyRevision{}, false
	}
	return PolicyRevision{Version: ks.PolicyVersion, YAML: ks.Policy, Set: ks.PolicyUpdated,
		SetBy: ks.PolicySetBy, RollbackOf: ks.PolicyRollbackOf}, true
}

// PolicyVersions returns every policy version the set has had, newest
// first. YAML fields alias the key set's.
func (ks *KeySet) PolicyVersions() []PolicyRevision {
	out := make([]PolicyRevision, 0, len(ks.PolicyHistory)+1)
	if cur, ok := ks.CurrentPolicy(); ok {
		out = append(out, cur)
	}
	for i := len(ks.PolicyHistory) - 1; i >= 0; i-- {
		out = append(out, ks.PolicyHistory[i])
	}
	return out
}

// PolicyAt returns policy version v (current or earlier), or
// ErrPolicyVersionNotFound. YAML aliases the key set's.
func (ks *KeySet) PolicyAt(v int) (PolicyRevision, error) {
	if cur, ok := ks.CurrentPolicy(); ok && cur.Version == v {
		return cur, nil
	}
	i, found := slices.BinarySearchFunc(ks.PolicyHistory, v, func(r PolicyRevision, v int) int { return r.Version - v })
	if !found {
		return PolicyRevision{}, fmt.Errorf("key set %q policy version %d: %w", ks.Name, v, ErrPolicyVersionNotFound)
	}
	return ks.PolicyHistory[i], nil
}

// CheckPolicyHistory reports whether the history is well formed: versions
// strictly increasing and below the current one. Stores call it on records
// they decode, so a corrupt or hand-edited record is refused rather than
// served with versions PolicyAt cannot find.
func (ks *KeySet) CheckPolicyHistory() error {
	prev := 0
	for _, r := range ks.PolicyHistory {
		if r.Version <= prev || r.Version >= ks.PolicyVersion {
			return fmt.Errorf("key set %q: policy history version %d out of order (current %d): %w", ks.Name, r.Version, ks.PolicyVersion, ErrInvalidArgument)
		}
		prev = r.Version
	}
	return nil
}

// pushPolicy makes yaml the next policy version and keeps the current one
// in the history. It changes nothing when the result would exceed
// MaxPolicyHistorySize.
func (ks *KeySet) pushPolicy(yaml []byte, now time.Time, setBy string, rollbackOf int) error {
	total := len(yaml)
	for _, r := range ks.PolicyVersions() {
		total += len(r.YAML)
	}
	if total > MaxPolicyHistorySize {
		return fmt.Errorf("key set %q: its policy versions would total %d bytes, limit %d: %w", ks.Name, total, MaxPolicyHistorySize, ErrPolicyHistoryFull)
	}
	if cur, ok := ks.CurrentPolicy(); ok {
		ks.PolicyHistory = append(ks.PolicyHistory, cur)
	}
	ks.Policy, ks.PolicyVersion, ks.PolicyUpdated = slices.Clone(yaml), ks.PolicyVersion+1, now
	ks.PolicySetBy, ks.PolicyRollbackOf = setBy, rollbackOf
	return nil
}

// SetPolicyAs is SetPolicy recording setBy (the admin principal, empty if
// unknown) as the author of the new version. The previous version is kept.
func (m *Manager) SetPolicyAs(ctx context.Context, keyset string, policyYAML []byte, setBy string) (int, error) {
	if err := checkPolicySize(policyYAML); err != nil {
		return 0, fmt.Errorf("set policy of %q: %w", keyset, err)
	}
	return m.updatePolicy(ctx, keyset, setBy, func(*KeySet) ([]byte, int, error) {
		return policyYAML, 0, nil
	})
}

// RollbackPolicy makes the content of the earlier policy version a NEW
// version, recording setBy as its author and version as its origin, and
// returns the new version. History is never rewritten. Like SetPolicy it
// does not parse the document: callers validate PolicyAt(version) first
// (history is immutable, so what they validated is what is restored).
func (m *Manager) RollbackPolicy(ctx context.Context, keyset string, version int, setBy string) (int, error) {
	return m.updatePolicy(ctx, keyset, setBy, func(ks *KeySet) ([]byte, int, error) {
		rev, err := ks.PolicyAt(version)
		if err != nil {
			return nil, 0, err
		}
		return rev.YAML, version, nil
	})
}

// updatePolicy appends the policy next returns (from the stored key set)
// as a new version, compare-and-swap: a concurrent writer on another
// replica makes this fail with ErrConflict rather than lose its version.
func (m *Manager) updatePolicy(ctx context.Context, keyset, setBy string, next func(*KeySet) (yaml []byte, rollbackOf int, err error)) (int, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	ks, err := m.KeySet(ctx, keyset)
	if err != nil {
		return 0, fmt.Errorf("set policy: %w", err)
	}
	yaml, rollbackOf, err := next(ks)
	if err != nil {
		return 0, fmt.Errorf("set policy of %q: %w", keyset, err)
	}
	if err := ks.pushPolicy(yaml, m.clock(), setBy, rollbackOf); err != nil {
		return 0, fmt.Errorf("set policy: %w", err)
	}
	if err := m.store.UpdateKeySet(ctx, ks); err != nil {
		return 0, fmt.Errorf("set policy of %q: %w", keyset, err)
	}
	m.log.Info("release policy set", "keyset", keyset, "policy_version", ks.PolicyVersion, "rollback_of", rollbackOf)
	return ks.PolicyVersion, nil
}

// PolicyHistory returns every policy version of keyset, newest first.
func (m *Manager) PolicyHistory(ctx context.Context, keyset string) ([]PolicyRevision, error) {
	ks, err := m.KeySet(ctx, keyset)
	if err != nil {
		return nil, fmt.Errorf("policy history: %w", err)
	}
	return ks.PolicyVersions(), nil
}

// Policy returns policy version v of keyset; v == 0 means the current one
// (ErrPolicyVersionNotFound if the set has none).
func (m *Manager) Policy(ctx context.Context, keyset string, v int) (PolicyRevision, error) {
	ks, err := m.KeySet(ctx, keyset)
	if err != nil {
		return PolicyRevision{}, fmt.Errorf("get policy: %w", err)
	}
	if v == 0 {
		v = ks.PolicyVersion
	}
	rev, err := ks.PolicyAt(v)
	if err != nil {
		return PolicyRevision{}, fmt.Errorf("get policy: %w", err)
	}
	return rev, nil
}
