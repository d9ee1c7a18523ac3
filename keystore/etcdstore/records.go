package etcdstore

import (
	"encoding/json"
	"fmt"
	"time"

	"github.com/attested-kms/attested-kms/keystore"
	"github.com/attested-kms/attested-kms/keystore/kek"
)

// Records are the JSON layout boltstore writes (schema 1), minus the
// revision field: here a record's revision is its etcd ModRevision, which
// cannot be stored inside the value it versions. They are spelled out
// rather than derived from the keystore types so a change to in-memory
// types cannot silently change what other replicas read.

type keySetRecord struct {
	Schema        int                  `json:"schema"`
	Name          string               `json:"name"`
	Settings      settingsRecord       `json:"settings"`
	Policy        policyRecord         `json:"policy"`
	Intermediates []intermediateRecord `json:"intermediates,omitempty"`
	Created       time.Time            `json:"created"`
}

type settingsRecord struct {
	RotationPeriodNS int64 `json:"rotation_period_ns"`
	KeyLifetimeNS    int64 `json:"key_lifetime_ns"`
	PendingLeadNS    int64 `json:"pending_lead_time_ns"`
	RetentionNS      int64 `json:"retention_ns"`
}

type policyRecord struct {
	Version int        `json:"version"`
	YAML    []byte     `json:"yaml,omitempty"`
	Updated *time.Time `json:"updated,omitempty"`
	// SetBy, RollbackOf and History were added after schema 1 was first
	// written; absent, the set simply has no recorded earlier versions.
	SetBy      string                 `json:"set_by,omitempty"`
	RollbackOf int                    `json:"rollback_of,omitempty"`
	History    []policyRevisionRecord `json:"history,omitempty"`
}

// policyRevisionRecord is one earlier policy version, oldest first.
type policyRevisionRecord struct {
	Version    int       `json:"version"`
	YAML       []byte    `json:"yaml"`
	Set        time.Time `json:"set"`
	SetBy      string    `json:"set_by,omitempty"`
	RollbackOf int       `json:"rollback_of,omitempty"`
}

func encodePolicy(ks *keystore.KeySet) policyRecord {
	r := policyRecord{Version: ks.PolicyVersion, YAML: ks.Policy, Updated: optTime(ks.PolicyUpdated),
		SetBy: ks.PolicySetBy, RollbackOf: ks.PolicyRollbackOf}
	for _, h := range ks.PolicyHistory {
		r.History = append(r.History, policyRevisionRecord{Version: h.Version, YAML: h.YAML, Set: h.Set, SetBy: h.SetBy, RollbackOf: h.RollbackOf})
	}
	return r
}

// decodePolicy fills ks's policy fields from r and checks the history.
func decodePolicy(ks *keystore.KeySet, r policyRecord) error {
	ks.Policy, ks.PolicyVersion, ks.PolicySetBy, ks.PolicyRollbackOf = r.YAML, r.Version, r.SetBy, r.RollbackOf
	if r.Updated != nil {
		ks.PolicyUpdated = *r.Updated
	}
	for _, h := range r.History {
		ks.PolicyHistory = append(ks.PolicyHistory, keystore.PolicyRevision{Version: h.Version, YAML: h.YAML, Set: h.Set, SetBy: h.SetBy, RollbackOf: h.RollbackOf})
	}
	if err := ks.CheckPolicyHistory(); err != nil {
		return fmt.Errorf("etcdstore: decode key set record: %w", err)
	}
	return nil
}

type intermediateRecord struct {
	Generation uint64        `json:"generation"`
	Wrapped    wrappedRecord `json:"wrapped"`
	Created    time.Time     `json:"created"`
}

type wrappedRecord struct {
	KEKURI     string `json:"kek_uri"`
	KEKVersion string `json:"kek_version,omitempty"`
	Algorithm  string `json:"algorithm"`
	Ciphertext []byte `json:"ciphertext"`
}

type keyRecord struct {
	Schema       int           `json:"schema"`
	KeySet       string        `json:"keyset"`
	KID          string        `json:"kid"`
	Version      uint64        `json:"version"`
	Suite        string        `json:"suite"`
	PublicKey    []byte        `json:"public_key"`
	Sealed       *sealedRecord `json:"sealed,omitempty"`
	State        string        `json:"state"`
	HeldState    string        `json:"held_state,omitempty"`
	Created      time.Time     `json:"created"`
	Activates    time.Time     `json:"activates"`
	Expires      time.Time     `json:"expires"`
	DestroyAfter time.Time     `json:"destroy_after"`
	Destroyed    *time.Time    `json:"destroyed,omitempty"`
}

type sealedRecord struct {
	Format     string `json:"format"`
	KEKURI     string `json:"kek_uri,omitempty"`
	Generation uint64 `json:"generation,omitempty"`
	Algorithm  string `json:"algorithm,omitempty"`
	KEKVersion string `json:"kek_version,omitempty"`
	WrappedDEK []byte `json:"wrapped_dek"`
	Nonce      []byte `json:"nonce"`
	Ciphertext []byte `json:"ciphertext"`
}

type metadataRecord struct {
	Value []byte `json:"value"`
}

func encodeKeySet(ks *keystore.KeySet) ([]byte, error) {
	r := keySetRecord{
		Schema: 1,
		Name:   ks.Name,
		Settings: settingsRecord{
			RotationPeriodNS: int64(ks.Settings.RotationPeriod),
			KeyLifetimeNS:    int64(ks.Settings.KeyLifetime),
			PendingLeadNS:    int64(ks.Settings.PendingLead),
			RetentionNS:      int64(ks.Settings.Retention),
		},
		Policy:  encodePolicy(ks),
		Created: ks.Created,
	}
	for _, in := range ks.Intermediates {
		w := in.Wrapped
		r.Intermediates = append(r.Intermediates, intermediateRecord{
			Generation: in.Generation,
			Wrapped:    wrappedRecord{KEKURI: w.KEKURI, KEKVersion: w.KEKVersion, Algorithm: w.Algorithm, Ciphertext: w.Ciphertext},
			Created:    in.Created,
		})
	}
	b, err := json.Marshal(r)
	if err != nil {
		return nil, fmt.Errorf("etcdstore: encode key set %q: %w", ks.Name, err)
	}
	return b, nil
}

// decodeKeySet parses a key set record read from etcd (outside bytes: any
// client with write access to the prefix can put anything there).
func decodeKeySet(b []byte) (*keystore.KeySet, error) {
	var r keySetRecord
	if err := json.Unmarshal(b, &r); err != nil {
		return nil, fmt.Errorf("etcdstore: decode key set record: %w", err)
	}
	if r.Schema != 1 {
		return nil, fmt.Errorf("etcdstore: key set %q has record schema %d", r.Name, r.Schema)
	}
	ks := &keystore.KeySet{
		Name: r.Name,
		Settings: keystore.KeySetSettings{
			RotationPeriod: time.Duration(r.Settings.RotationPeriodNS),
			KeyLifetime:    time.Duration(r.Settings.KeyLifetimeNS),
			PendingLead:    time.Duration(r.Settings.PendingLeadNS),
			Retention:      time.Duration(r.Settings.RetentionNS),
		},
		Created: r.Created,
	}
	if err := decodePolicy(ks, r.Policy); err != nil {
		return nil, err
	}
	for _, in := range r.Intermediates {
		w := in.Wrapped
		ks.Intermediates = append(ks.Intermediates, keystore.Intermediate{
			Generation: in.Generation,
			Wrapped:    kek.Wrapped{KEKURI: w.KEKURI, KEKVersion: w.KEKVersion, Algorithm: w.Algorithm, Ciphertext: w.Ciphertext},
			Created:    in.Created,
		})
	}
	return ks, nil
}

func encodeKey(k *keystore.Key) ([]byte, error) {
	if !k.State.Valid() {
		return nil, fmt.Errorf("etcdstore: key %s v%d has invalid state %q: %w", k.KID, k.Version, k.State, keystore.ErrInvalidArgument)
	}
	r := keyRecord{
		Schema:       1,
		KeySet:       k.KeySet,
		KID:          k.KID,
		Version:      k.Version,
		Suite:        k.Suite,
		PublicKey:    k.PublicKey,
		State:        string(k.State),
		HeldState:    string(k.HeldState),
		Created:      k.Created,
		Activates:    k.Activates,
		Expires:      k.Expires,
		DestroyAfter: k.DestroyAfter,
		Destroyed:    optTime(k.Destroyed),
	}
	if s := k.Sealed; s != nil {
		r.Sealed = &sealedRecord{
			Format: s.Format, KEKURI: s.KEKURI, Generation: s.Generation, Algorithm: s.Algorithm, KEKVersion: s.KEKVersion,
			WrappedDEK: s.WrappedDEK, Nonce: s.Nonce, Ciphertext: s.Ciphertext,
		}
	}
	b, err := json.Marshal(r)
	if err != nil {
		return nil, fmt.Errorf("etcdstore: encode key %s v%d: %w", k.KID, k.Version, err)
	}
	return b, nil
}

// decodeKey parses a key record read from etcd (outside bytes).
func decodeKey(b []byte) (*keystore.Key, error) {
	var r keyRecord
	if err := json.Unmarshal(b, &r); err != nil {
		return nil, fmt.Errorf("etcdstore: decode key record: %w", err)
	}
	if r.Schema != 1 {
		return nil, fmt.Errorf("etcdstore: key v%d has record schema %d", r.Version, r.Schema)
	}
	k := &keystore.Key{
		KeySet:       r.KeySet,
		KID:          r.KID,
		Version:      r.Version,
		Suite:        r.Suite,
		PublicKey:    r.PublicKey,
		State:        keystore.State(r.State),
		HeldState:    keystore.State(r.HeldState),
		Created:      r.Created,
		Activates:    r.Activates,
		Expires:      r.Expires,
		DestroyAfter: r.DestroyAfter,
	}
	if r.Destroyed != nil {
		k.Destroyed = *r.Destroyed
	}
	if s := r.Sealed; s != nil {
		k.Sealed = &keystore.SealedKey{
			Format: s.Format, KEKURI: s.KEKURI, Generation: s.Generation, Algorithm: s.Algorithm, KEKVersion: s.KEKVersion,
			WrappedDEK: s.WrappedDEK, Nonce: s.Nonce, Ciphertext: s.Ciphertext,
		}
	}
	return k, nil
}

func optTime(t time.Time) *time.Time {
	if t.IsZero() {
		return nil
	}
	return &t
}

func encodeMetadata(value []byte) ([]byte, error) {
	b, err := json.Marshal(metadataRecord{Value: value})
	if err != nil {
		return nil, fmt.Errorf("encode metadata: %w", err)
	}
	return b, nil
}

// decodeMetadata parses a metadata record read from etcd (outside bytes).
func decodeMetadata(b []byte) ([]byte, error) {
	var r metadataRecord
	if err := json.Unmarshal(b, &r); err != nil {
		return nil, fmt.Errorf("decode metadata record: %w", err)
	}
	return r.Value, nil
}
