// Package record is the JSON layout (schema 1) in which both key store
// backends, boltstore and etcdstore, persist key sets, keys and metadata.
//
// The records are spelled out here rather than derived from the keystore
// types so a change to in-memory types cannot silently change what existing
// stores (or other replicas) read. The one difference between the backends
// is the revision: boltstore keeps it inside the record, etcdstore takes it
// from etcd's ModRevision, which cannot be stored inside the value it
// versions. Encoders therefore take withRevision, and a record without the
// field decodes with revision 0.
//
// Fields added since schema 1 was first written (a key set's intermediate
// keys and earlier policy versions, a sealed key's generation and
// algorithm) are optional, so older records decode unchanged.
//
// Errors carry no package prefix: each backend wraps them with its own.
package record

import (
	"encoding/json"
	"fmt"
	"time"

	"github.com/attested-kms/attested-kms/keystore"
	"github.com/attested-kms/attested-kms/keystore/kek"
)

// schema is the only record schema this package reads or writes.
const schema = 1

type keySetRecord struct {
	Schema        int                  `json:"schema"`
	Name          string               `json:"name"`
	Settings      settingsRecord       `json:"settings"`
	Policy        policyRecord         `json:"policy"`
	Intermediates []intermediateRecord `json:"intermediates,omitempty"`
	Created       time.Time            `json:"created"`
	// Revision is a pointer so boltstore's records keep "revision":0 while
	// etcdstore's have no such field at all.
	Revision *uint64 `json:"revision,omitempty"`
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

// EncodeKeySet returns ks's record. With withRevision the record carries rev
// (boltstore); without, it has no revision field and rev is ignored
// (etcdstore). ks.Revision is never read.
func EncodeKeySet(ks *keystore.KeySet, rev uint64, withRevision bool) ([]byte, error) {
	r := keySetRecord{
		Schema: schema,
		Name:   ks.Name,
		Settings: settingsRecord{
			RotationPeriodNS: int64(ks.Settings.RotationPeriod),
			KeyLifetimeNS:    int64(ks.Settings.KeyLifetime),
			PendingLeadNS:    int64(ks.Settings.PendingLead),
			RetentionNS:      int64(ks.Settings.Retention),
		},
		Policy:   encodePolicy(ks),
		Created:  ks.Created,
		Revision: optRevision(rev, withRevision),
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
		return nil, fmt.Errorf("encode key set %q: %w", ks.Name, err)
	}
	return b, nil
}

// DecodeKeySet parses a key set record (outside bytes: whoever can write the
// file or the etcd prefix can put anything there). It returns the record's
// revision separately, 0 if it has none, and leaves the set's Revision zero
// for the caller to fill from wherever its backend keeps revisions.
func DecodeKeySet(b []byte) (*keystore.KeySet, uint64, error) {
	var r keySetRecord
	if err := json.Unmarshal(b, &r); err != nil {
		return nil, 0, fmt.Errorf("decode key set record: %w", err)
	}
	if r.Schema != schema {
		return nil, 0, fmt.Errorf("key set %q has record schema %d", r.Name, r.Schema)
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
		return nil, 0, err
	}
	for _, in := range r.Intermediates {
		w := in.Wrapped
		ks.Intermediates = append(ks.Intermediates, keystore.Intermediate{
			Generation: in.Generation,
			Wrapped:    kek.Wrapped{KEKURI: w.KEKURI, KEKVersion: w.KEKVersion, Algorithm: w.Algorithm, Ciphertext: w.Ciphertext},
			Created:    in.Created,
		})
	}
	return ks, revisionOf(r.Revision), nil
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
		return fmt.Errorf("decode key set record: %w", err)
	}
	return nil
}

// optTime keeps a zero time out of the JSON: optional times are pointers.
func optTime(t time.Time) *time.Time {
	if t.IsZero() {
		return nil
	}
	return &t
}

func optRevision(rev uint64, withRevision bool) *uint64 {
	if !withRevision {
		return nil
	}
	return &rev
}

func revisionOf(p *uint64) uint64 {
	if p == nil {
		return 0
	}
	return *p
}
