package keystore

import (
	"context"
	"fmt"
)

// Overlay returns s with every non-zero field of changes in its place.
// Zero means "keep": an update names only what it changes. Negative
// values are taken as given so that Validate refuses them rather than
// have them silently ignored.
func (s KeySetSettings) Overlay(changes KeySetSettings) KeySetSettings {
	if changes.RotationPeriod != 0 {
		s.RotationPeriod = changes.RotationPeriod
	}
	if changes.KeyLifetime != 0 {
		s.KeyLifetime = changes.KeyLifetime
	}
	if changes.PendingLead != 0 {
		s.PendingLead = changes.PendingLead
	}
	if changes.Retention != 0 {
		s.Retention = changes.Retention
	}
	return s
}

// UpdateKeySetSettings replaces keyset's settings with the current ones
// overlaid by changes (zero fields keep their value) and returns the
// updated key set. The result must pass Validate (ErrInvalidArgument).
//
// Settings are read when a key is created and turned into absolute times
// on it, so no existing key moves: keys created afterwards (Rotate, and
// the successor Tick schedules, whose activation is the newest key's
// activation plus the new rotation period) follow the new settings, and a
// later rotation retires the current key with the new retention, which
// can only shorten its DestroyAfter.
//
// The write is compare-and-swap on the key set record: a change by
// another replica in between fails with ErrConflict and writes nothing.
func (m *Manager) UpdateKeySetSettings(ctx context.Context, keyset string, changes KeySetSettings) (*KeySet, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	ks, err := m.KeySet(ctx, keyset)
	if err != nil {
		return nil, fmt.Errorf("update settings: %w", err)
	}
	next := ks.Settings.Overlay(changes)
	if err := next.Validate(); err != nil {
		return nil, fmt.Errorf("update settings of %q: %w", keyset, err)
	}
	if next == ks.Settings {
		return ks, nil
	}
	prev := ks.Settings
	ks.Settings = next
	if err := m.store.UpdateKeySet(ctx, ks); err != nil {
		return nil, fmt.Errorf("update settings of %q: %w", keyset, err)
	}
	m.log.Info("key set settings updated", "keyset", keyset,
		"rotation_period", next.RotationPeriod, "key_lifetime", next.KeyLifetime,
		"pending_lead", next.PendingLead, "retention", next.Retention,
		"previous_rotation_period", prev.RotationPeriod, "previous_key_lifetime", prev.KeyLifetime,
		"previous_pending_lead", prev.PendingLead, "previous_retention", prev.Retention)
	return ks.Clone(), nil
}
