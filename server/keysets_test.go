package server_test

import (
	"context"
	"errors"
	"path/filepath"
	"testing"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/attested-kms/attested-kms/keystore"
	"github.com/attested-kms/attested-kms/keystore/boltstore"
	"github.com/attested-kms/attested-kms/keystore/kek"
	kmsv1 "github.com/attested-kms/attested-kms/proto/kms/v1"
)

func settingsOf(t *testing.T, e *env, name string) *kmsv1.KeySetSettings {
	t.Helper()
	resp, err := e.admin.ListKeySets(context.Background(), &kmsv1.ListKeySetsRequest{})
	if err != nil {
		t.Fatal(err)
	}
	for _, ks := range resp.GetKeysets() {
		if ks.GetName() == name {
			return ks.GetSettings()
		}
	}
	t.Fatalf("key set %s not listed", name)
	return nil
}

// UpdateKeySetSettings over the admin socket: zero fields keep their
// value, invalid schedules and unknown sets are refused without a write,
// existing keys keep their times, and the next key follows the new
// settings.
func TestUpdateKeySetSettings(t *testing.T) {
	e := newEnv(t)
	ctx := context.Background()
	before := settingsOf(t, e, "default")
	first, err := e.admin.GetKey(ctx, &kmsv1.GetKeyRequest{Keyset: "default", Kid: e.kid})
	if err != nil {
		t.Fatal(err)
	}

	const hour = int64(time.Hour / time.Second)
	ks, err := e.admin.UpdateKeySetSettings(ctx, &kmsv1.UpdateKeySetSettingsRequest{Keyset: "default",
		Settings: &kmsv1.KeySetSettings{RotationPeriodSeconds: 48 * hour, KeyLifetimeSeconds: 72 * hour, RetentionSeconds: 2 * hour}})
	if err != nil {
		t.Fatal(err)
	}
	want := &kmsv1.KeySetSettings{RotationPeriodSeconds: 48 * hour, KeyLifetimeSeconds: 72 * hour,
		PendingLeadSeconds: before.GetPendingLeadSeconds(), RetentionSeconds: 2 * hour}
	if got := ks.GetSettings(); got.String() != want.String() {
		t.Fatalf("returned settings %v, want %v", got, want)
	}
	if got := settingsOf(t, e, "default"); got.String() != want.String() {
		t.Fatalf("stored settings %v, want %v", got, want)
	}

	for _, tc := range []struct {
		name     string
		keyset   string
		settings *kmsv1.KeySetSettings
		code     codes.Code
	}{
		{"lifetime shorter than the period", "default", &kmsv1.KeySetSettings{KeyLifetimeSeconds: hour}, codes.InvalidArgument},
		{"lead of a whole period", "default", &kmsv1.KeySetSettings{PendingLeadSeconds: 48 * hour}, codes.InvalidArgument},
		{"negative retention", "default", &kmsv1.KeySetSettings{RetentionSeconds: -1}, codes.InvalidArgument},
		{"beyond time.Duration", "default", &kmsv1.KeySetSettings{RetentionSeconds: 1 << 62}, codes.InvalidArgument},
		{"nothing to change", "default", &kmsv1.KeySetSettings{}, codes.InvalidArgument},
		{"no settings", "default", nil, codes.InvalidArgument},
		{"unknown set", "nosuchset", &kmsv1.KeySetSettings{RetentionSeconds: hour}, codes.NotFound},
		{"malformed name", "Not_A_Label", &kmsv1.KeySetSettings{RetentionSeconds: hour}, codes.InvalidArgument},
	} {
		_, err := e.admin.UpdateKeySetSettings(ctx, &kmsv1.UpdateKeySetSettingsRequest{Keyset: tc.keyset, Settings: tc.settings})
		if status.Code(err) != tc.code {
			t.Errorf("%s: %v, want %v", tc.name, err, tc.code)
		}
	}
	if got := settingsOf(t, e, "default"); got.String() != want.String() {
		t.Fatalf("a refused update changed the settings to %v", got)
	}

	// The existing key's times were fixed when it was created.
	again, err := e.admin.GetKey(ctx, &kmsv1.GetKeyRequest{Keyset: "default", Kid: e.kid})
	if err != nil {
		t.Fatal(err)
	}
	if again.GetKey().GetExpiresAt().AsTime() != first.GetKey().GetExpiresAt().AsTime() ||
		again.GetKey().GetDestroyAfter().AsTime() != first.GetKey().GetDestroyAfter().AsTime() {
		t.Fatalf("the existing key moved: %v -> %v", first.GetKey(), again.GetKey())
	}

	next, err := e.admin.RotateKeys(ctx, &kmsv1.RotateKeysRequest{Keyset: "default"})
	if err != nil {
		t.Fatal(err)
	}
	act, exp, del := next.GetActivatesAt().AsTime(), next.GetExpiresAt().AsTime(), next.GetDestroyAfter().AsTime()
	if exp.Sub(act) != 72*time.Hour || del.Sub(exp) != 2*time.Hour {
		t.Fatalf("next key: lifetime %s, retention %s; want 72h and 2h", exp.Sub(act), del.Sub(exp))
	}
	// The rotation retired the first key with the new, shorter retention.
	retired, err := e.admin.GetKey(ctx, &kmsv1.GetKeyRequest{Keyset: "default", Kid: e.kid})
	if err != nil {
		t.Fatal(err)
	}
	if r := retired.GetKey(); r.GetState() != kmsv1.KeyState_KEY_STATE_RETIRED ||
		r.GetDestroyAfter().AsTime().Sub(r.GetExpiresAt().AsTime()) != 2*time.Hour {
		t.Fatalf("retired key %v", r)
	}
}

// GetKey: full metadata of one key, the hold's return state while
// disabled, and the destruction time once the sealed key is erased.
func TestGetKey(t *testing.T) {
	e := newEnv(t)
	ctx := context.Background()
	got, err := e.admin.GetKey(ctx, &kmsv1.GetKeyRequest{Keyset: "default", Kid: e.kid})
	if err != nil {
		t.Fatal(err)
	}
	k := got.GetKey()
	if k.GetKid() != e.kid || k.GetKeyset() != "default" || k.GetVersion() != 1 || k.GetState() != kmsv1.KeyState_KEY_STATE_ACTIVE ||
		len(k.GetPublicKey()) != 32 || k.GetKekUri() == "" || got.GetSealFormat() != keystore.SealFormatV2 ||
		got.GetIntermediateGeneration() != 1 || got.GetWrapAlgorithm() == "" || got.GetDestroyedAt() != nil ||
		got.GetHeldState() != kmsv1.KeyState_KEY_STATE_UNSPECIFIED {
		t.Fatalf("GetKey = %v", got)
	}

	if _, err := e.admin.SetKeyState(ctx, &kmsv1.SetKeyStateRequest{Keyset: "default", Kid: e.kid, State: kmsv1.KeyState_KEY_STATE_DISABLED}); err != nil {
		t.Fatal(err)
	}
	got, err = e.admin.GetKey(ctx, &kmsv1.GetKeyRequest{Keyset: "default", Kid: e.kid})
	if err != nil || got.GetKey().GetState() != kmsv1.KeyState_KEY_STATE_DISABLED || got.GetHeldState() != kmsv1.KeyState_KEY_STATE_ACTIVE {
		t.Fatalf("disabled key: %v, %v", got, err)
	}

	if _, err := e.admin.SetKeyState(ctx, &kmsv1.SetKeyStateRequest{Keyset: "default", Kid: e.kid, State: kmsv1.KeyState_KEY_STATE_DESTROYED}); err != nil {
		t.Fatal(err)
	}
	got, err = e.admin.GetKey(ctx, &kmsv1.GetKeyRequest{Keyset: "default", Kid: e.kid})
	if err != nil || got.GetKey().GetState() != kmsv1.KeyState_KEY_STATE_DESTROYED || got.GetDestroyedAt() == nil ||
		got.GetSealFormat() != "" || got.GetKey().GetKekUri() != "" {
		t.Fatalf("destroyed key: %v, %v", got, err)
	}

	for _, tc := range []struct {
		keyset, kid string
		code        codes.Code
	}{
		{"default", "00000000000000ff", codes.NotFound},
		{"nosuchset", e.kid, codes.NotFound},
		{"default", "XYZ", codes.InvalidArgument},
	} {
		if _, err := e.admin.GetKey(ctx, &kmsv1.GetKeyRequest{Keyset: tc.keyset, Kid: tc.kid}); status.Code(err) != tc.code {
			t.Errorf("GetKey(%s/%s): %v, want %v", tc.keyset, tc.kid, err, tc.code)
		}
	}
}

// racingStore writes a concurrent change to the key set between the
// Manager's read and its compare-and-swap, as another replica would.
type racingStore struct {
	*boltstore.Store
	race func(ctx context.Context, ks *keystore.KeySet) error
}

func (s *racingStore) KeySet(ctx context.Context, name string) (*keystore.KeySet, error) {
	ks, err := s.Store.KeySet(ctx, name)
	if err == nil && s.race != nil {
		race := s.race
		s.race = nil
		other := ks.Clone()
		if err := race(ctx, other); err != nil {
			return nil, err
		}
	}
	return ks, err
}

// A settings update that loses the compare-and-swap race writes nothing
// and reports ErrConflict (which the Admin API answers as Aborted), so
// the other writer's change survives.
func TestUpdateKeySetSettingsConflict(t *testing.T) {
	ctx := context.Background()
	dir := t.TempDir()
	bs, err := boltstore.Open(filepath.Join(dir, "kms.db"))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { bs.Close() })
	kekPath := filepath.Join(dir, "kek.key")
	if err := kek.CreateLocal(kekPath); err != nil {
		t.Fatal(err)
	}
	provider, err := kek.OpenLocal(kekPath)
	if err != nil {
		t.Fatal(err)
	}
	store := &racingStore{Store: bs}
	m := keystore.NewManager(store, provider, keystore.Options{})
	if _, err := m.CreateKeySet(ctx, "race", keystore.KeySetSettings{}); err != nil {
		t.Fatal(err)
	}
	store.race = func(ctx context.Context, ks *keystore.KeySet) error {
		ks.Settings.Retention = time.Hour
		return bs.UpdateKeySet(ctx, ks)
	}
	_, err = m.UpdateKeySetSettings(ctx, "race", keystore.KeySetSettings{Retention: 3 * time.Hour})
	if !errors.Is(err, keystore.ErrConflict) {
		t.Fatalf("update racing another writer: %v, want ErrConflict", err)
	}
	ks, err := m.KeySet(ctx, "race")
	if err != nil || ks.Settings.Retention != time.Hour {
		t.Fatalf("after the lost race: %v, %v; want the other writer's retention 1h", ks, err)
	}
}
