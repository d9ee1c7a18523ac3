package keystore

import (
	"errors"

	"github.com/attested-kms/attested-kms/keystore/kek"
)

// Errors returned by the Manager and by Store implementations, wrapped with
// context; test with errors.Is. The gRPC mapping is noted on each.
var (
	// ErrKeySetNotFound: no key set of that name. NotFound.
	ErrKeySetNotFound = errors.New("keystore: key set not found")
	// ErrKeyNotFound: no key with that kid (or version) in the set. NotFound.
	ErrKeyNotFound = errors.New("keystore: key not found")
	// ErrKeyDisabled: the key is on operator hold. FailedPrecondition.
	ErrKeyDisabled = errors.New("keystore: key disabled")
	// ErrKeyDestroyed: the private key was erased. FailedPrecondition.
	ErrKeyDestroyed = errors.New("keystore: key destroyed")
	// ErrKeyNotReleasable: the key's retention has ended (destruction is
	// due). FailedPrecondition.
	ErrKeyNotReleasable = errors.New("keystore: key not releasable")
	// ErrAlreadyExists: create-once violated (key set name or key version
	// already present). AlreadyExists.
	ErrAlreadyExists = errors.New("keystore: already exists")
	// ErrConflict: a compare-and-swap update lost a race with another
	// writer; re-read and retry. Aborted.
	ErrConflict = errors.New("keystore: concurrent modification")
	// ErrInvalidTransition: the requested state change is not allowed from
	// the key's current state. FailedPrecondition.
	ErrInvalidTransition = errors.New("keystore: invalid state transition")
	// ErrInvalidArgument: malformed name, kid, settings or policy.
	// InvalidArgument.
	ErrInvalidArgument = errors.New("keystore: invalid argument")
	// ErrKeyIDExhausted: all 256 RFC 9458 key identifiers are held by
	// undestroyed keys of the set. ResourceExhausted.
	ErrKeyIDExhausted = errors.New("keystore: no free OHTTP key identifier in key set")
	// ErrStoreUnavailable: the storage backend failed or is unreachable.
	// Unavailable.
	ErrStoreUnavailable = errors.New("keystore: store unavailable")
	// ErrSealedKeyInvalid: a sealed key failed to decrypt or does not match
	// its public key: tampering, a record moved between keys, or the wrong
	// KEK. Internal (DataLoss); never retried.
	ErrSealedKeyInvalid = errors.New("keystore: sealed key invalid")
	// ErrKEKUnavailable is kek.ErrUnavailable: the KEK provider is down,
	// or a key set's KEK has not answered a check for longer than the
	// revalidation interval. Unavailable.
	ErrKEKUnavailable = kek.ErrUnavailable
	// ErrKEKDisabled: the key set's KEK was disabled, deleted or scheduled
	// for deletion, or the KMS's access to it revoked, by its owner (the
	// provider answered kek.ErrKeyDisabled). Nothing of the set is released
	// until a check finds the KEK usable again. FailedPrecondition.
	ErrKEKDisabled = errors.New("keystore: key set's KEK disabled or access revoked by its owner")
	// ErrMetadataNotFound: no metadata record of that name. Internal use.
	ErrMetadataNotFound = errors.New("keystore: metadata record not found")
)

// IsUnavailable reports whether err is a transient backend failure (KEK
// provider or store) that the server maps to gRPC Unavailable.
func IsUnavailable(err error) bool {
	return errors.Is(err, ErrKEKUnavailable) || errors.Is(err, ErrStoreUnavailable)
}
