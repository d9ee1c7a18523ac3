package record

import (
	"encoding/json"
	"fmt"
	"time"

	"github.com/attested-kms/attested-kms/keystore"
)

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
	// Revision: see keySetRecord.
	Revision *uint64 `json:"revision,omitempty"`
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

// EncodeKey returns k's record, with or without rev as for EncodeKeySet. A
// key in no known state is refused (keystore.ErrInvalidArgument) rather than
// written where every reader would trip over it.
func EncodeKey(k *keystore.Key, rev uint64, withRevision bool) ([]byte, error) {
	if !k.State.Valid() {
		return nil, fmt.Errorf("key %s v%d has invalid state %q: %w", k.KID, k.Version, k.State, keystore.ErrInvalidArgument)
	}
	r := keyRecord{
		Schema:       schema,
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
		Revision:     optRevision(rev, withRevision),
	}
	if s := k.Sealed; s != nil {
		r.Sealed = &sealedRecord{
			Format: s.Format, KEKURI: s.KEKURI, Generation: s.Generation, Algorithm: s.Algorithm, KEKVersion: s.KEKVersion,
			WrappedDEK: s.WrappedDEK, Nonce: s.Nonce, Ciphertext: s.Ciphertext,
		}
	}
	b, err := json.Marshal(r)
	if err != nil {
		return nil, fmt.Errorf("encode key %s v%d: %w", k.KID, k.Version, err)
	}
	return b, nil
}

// DecodeKey parses a key record (outside bytes), returning its revision
// separately as DecodeKeySet does.
func DecodeKey(b []byte) (*keystore.Key, uint64, error) {
	var r keyRecord
	if err := json.Unmarshal(b, &r); err != nil {
		return nil, 0, fmt.Errorf("decode key record: %w", err)
	}
	if r.Schema != schema {
		return nil, 0, fmt.Errorf("key %s v%d has record schema %d", r.KID, r.Version, r.Schema)
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
	return k, revisionOf(r.Revision), nil
}
