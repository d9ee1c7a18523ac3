package keystore

import (
	"context"

	"github.com/attested-kms/attested-kms/keystore/kek"
)

// Test hooks for the external test package (compiled into tests only).

// SealV1ForTest returns a legacy v1 sealed record of priv for k.
func SealV1ForTest(ctx context.Context, p kek.Provider, k *Key, priv []byte) (*SealedKey, error) {
	return sealV1(ctx, p, k, priv)
}

// NewKeyForTest seals a fresh active key (given kid and version) under the
// set's current intermediate without storing it, so benchmarks can build
// large stores with batched commits.
func (m *Manager) NewKeyForTest(ctx context.Context, ks *KeySet, kid string, version uint64) (*Key, error) {
	in, err := m.loadIntermediate(ctx, ks, ks.CurrentIntermediate().Generation)
	if err != nil {
		return nil, err
	}
	now := m.clock()
	k, err := m.newKey(ctx, ks, in, nil, version, now, now, nil)
	if err != nil {
		return nil, err
	}
	priv := mustUnsealForTest(in, k)
	defer clear(priv)
	k.KID = kid
	k.Sealed, err = sealV2(m.rand, in, k, priv)
	return k, err
}

// mustUnsealForTest recovers the private key newKey sealed (so the record
// can be re-sealed under the test's kid, which the AAD binds).
func mustUnsealForTest(in *intermediateKey, k *Key) []byte {
	priv, err := unsealV2(in, k)
	if err != nil {
		panic(err)
	}
	return priv
}
