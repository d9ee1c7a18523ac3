package keystore

import "context"

// Store persists key sets and keys. It holds ciphertext only: a Key's private
// half is always inside Key.Sealed.
//
// Writes are compare-and-swap so a multi-replica backend (etcd) can be
// plugged in: creates fail with ErrAlreadyExists if the record exists, and
// updates fail with ErrConflict unless the stored Revision equals the
// Revision of the value passed in. On success the store sets Revision on
// the values passed in to the new stored revision. Reads return copies the
// caller may modify. Errors reaching the backend wrap ErrStoreUnavailable.
//
// Key metadata is never deleted (destroyed keys keep theirs), which is what
// makes "highest version + 1" a safe next version: two writers that read the
// same keys pick the same version and one loses the create-once race, so
// the kid chosen against that snapshot stays unique.
type Store interface {
	// CreateKeySet stores a new key set together with its first key, in one
	// transaction. ErrAlreadyExists if the name is taken.
	CreateKeySet(ctx context.Context, ks *KeySet, first *Key) error
	// KeySet returns the named key set or ErrKeySetNotFound.
	KeySet(ctx context.Context, name string) (*KeySet, error)
	// KeySets returns all key sets ordered by name.
	KeySets(ctx context.Context) ([]*KeySet, error)
	// UpdateKeySet replaces a key set if its Revision matches.
	UpdateKeySet(ctx context.Context, ks *KeySet) error

	// Keys returns the keys of a set ordered by version, or
	// ErrKeySetNotFound.
	Keys(ctx context.Context, keyset string) ([]*Key, error)
	// KeysByKID returns the keys of a set carrying kid, ordered by version
	// (several only if earlier holders were destroyed). Empty if none;
	// ErrKeySetNotFound if the set does not exist.
	KeysByKID(ctx context.Context, keyset, kid string) ([]*Key, error)
	// Commit atomically creates the keys in create (each must have a
	// version not yet stored in its set: ErrAlreadyExists otherwise) and
	// replaces the keys in update (ErrConflict unless each Revision
	// matches). All keys must belong to keyset, which must exist. Nothing is
	// written unless everything succeeds.
	Commit(ctx context.Context, keyset string, create, update []*Key) error

	// Metadata returns the named store-wide record (e.g. the sealed import
	// key) and its revision, or ErrMetadataNotFound.
	Metadata(ctx context.Context, name string) (value []byte, revision uint64, err error)
	// PutMetadata creates the named record if revision is 0
	// (ErrAlreadyExists if it exists) or replaces it if its stored revision
	// equals revision (ErrConflict otherwise), and returns the new revision.
	PutMetadata(ctx context.Context, name string, value []byte, revision uint64) (uint64, error)

	// Close releases the backend.
	Close() error
}
