package etcdstore

import (
	"fmt"

	"github.com/attested-kms/attested-kms/keystore"
	"github.com/attested-kms/attested-kms/keystore/internal/record"
)

// Records are boltstore's JSON layout (package record) minus the revision
// field: here a record's revision is its etcd ModRevision, which cannot be
// stored inside the value it versions. Decoders therefore ignore any
// revision a record carries and leave Revision for the caller to fill.

func encodeKeySet(ks *keystore.KeySet) ([]byte, error) {
	b, err := record.EncodeKeySet(ks, 0, false)
	if err != nil {
		return nil, fmt.Errorf("etcdstore: %w", err)
	}
	return b, nil
}

// decodeKeySet parses a key set record read from etcd (outside bytes: any
// client with write access to the prefix can put anything there).
func decodeKeySet(b []byte) (*keystore.KeySet, error) {
	ks, _, err := record.DecodeKeySet(b)
	if err != nil {
		return nil, fmt.Errorf("etcdstore: %w", err)
	}
	return ks, nil
}

func encodeKey(k *keystore.Key) ([]byte, error) {
	b, err := record.EncodeKey(k, 0, false)
	if err != nil {
		return nil, fmt.Errorf("etcdstore: %w", err)
	}
	return b, nil
}

// decodeKey parses a key record read from etcd (outside bytes).
func decodeKey(b []byte) (*keystore.Key, error) {
	k, _, err := record.DecodeKey(b)
	if err != nil {
		return nil, fmt.Errorf("etcdstore: %w", err)
	}
	return k, nil
}

// encodeMetadata and decodeMetadata leave the "etcdstore:" prefix to their
// callers, which name the metadata.

func encodeMetadata(value []byte) ([]byte, error) {
	return record.EncodeMetadata(value, 0, false)
}

// decodeMetadata parses a metadata record read from etcd (outside bytes).
func decodeMetadata(b []byte) ([]byte, error) {
	v, _, err := record.DecodeMetadata(b)
	return v, err
}
