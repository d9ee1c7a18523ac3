package keystore

import (
	"context"
	"crypto/aes"
	"crypto/cipher"
	"crypto/ecdh"
	"crypto/subtle"
	"encoding/binary"
	"errors"
	"fmt"
	"io"

	"github.com/attested-kms/attested-kms/keystore/kek"
)

// SealFormatV1 is the format label of SealedKey version 1: the private key
// encrypted with AES-256-GCM under a fresh 32-byte DEK, the DEK wrapped by
// the KEK provider, both with the AAD built by sealAAD.
const SealFormatV1 = "attested-kms/v1 sealed-key aes-256-gcm"

const (
	dekSize        = 32
	privateKeySize = 32
)

// sealAAD binds a sealed key to its place: format, key set, kid, version,
// suite and public key. Every field is length-prefixed so no two distinct
// tuples encode alike. A record copied onto another key (another kid,
// version or set), or whose public key was replaced, no longer opens.
func sealAAD(format, keyset, kid string, version uint64, suite string, pub []byte) []byte {
	b := make([]byte, 0, 64+len(format)+len(keyset)+len(kid)+len(suite)+len(pub))
	b = appendField(b, []byte(format))
	b = appendField(b, []byte(keyset))
	b = appendField(b, []byte(kid))
	b = binary.BigEndian.AppendUint64(b, version)
	b = appendField(b, []byte(suite))
	b = appendField(b, pub)
	return b
}

func appendField(b, f []byte) []byte {
	b = binary.BigEndian.AppendUint32(b, uint32(len(f)))
	return append(b, f...)
}

// seal encrypts priv for k (whose KeySet, KID, Version, Suite and PublicKey
// must be set) under a fresh DEK wrapped by provider.
func seal(ctx context.Context, provider kek.Provider, rand io.Reader, k *Key, priv []byte) (*SealedKey, error) {
	dek := make([]byte, dekSize)
	defer clear(dek)
	if _, err := io.ReadFull(rand, dek); err != nil {
		return nil, fmt.Errorf("generate data key: %w", err)
	}
	aead, err := newGCM(dek)
	if err != nil {
		return nil, err
	}
	nonce := make([]byte, aead.NonceSize())
	if _, err := io.ReadFull(rand, nonce); err != nil {
		return nil, fmt.Errorf("generate nonce: %w", err)
	}
	aad := sealAAD(SealFormatV1, k.KeySet, k.KID, k.Version, k.Suite, k.PublicKey)
	ct := aead.Seal(nil, nonce, priv, aad)
	wrapped, err := provider.Wrap(ctx, dek, aad)
	if err != nil {
		return nil, fmt.Errorf("wrap data key with %s: %w", provider.URI(), err)
	}
	return &SealedKey{
		Format:     SealFormatV1,
		KEKURI:     provider.URI(),
		WrappedDEK: wrapped,
		Nonce:      nonce,
		Ciphertext: ct,
	}, nil
}

// unseal decrypts k's private key and checks it matches k.PublicKey. The
// caller owns (and should zero) the result.
func unseal(ctx context.Context, provider kek.Provider, k *Key) ([]byte, error) {
	s := k.Sealed
	if s == nil {
		return nil, fmt.Errorf("key %s/%s v%d has no sealed private key: %w", k.KeySet, k.KID, k.Version, ErrKeyDestroyed)
	}
	if s.Format != SealFormatV1 {
		return nil, fmt.Errorf("key %s/%s v%d: unknown seal format %q: %w", k.KeySet, k.KID, k.Version, s.Format, ErrSealedKeyInvalid)
	}
	if s.KEKURI != provider.URI() {
		// Rewrapping under a new KEK is a separate migration step; a
		// provider that cannot name the record's KEK must not try.
		return nil, fmt.Errorf("key %s/%s v%d is sealed under KEK %s, configured KEK is %s: %w",
			k.KeySet, k.KID, k.Version, s.KEKURI, provider.URI(), ErrSealedKeyInvalid)
	}
	aad := sealAAD(s.Format, k.KeySet, k.KID, k.Version, k.Suite, k.PublicKey)
	dek, err := provider.Unwrap(ctx, s.WrappedDEK, aad)
	if err != nil {
		if errors.Is(err, kek.ErrAuthentication) {
			err = errors.Join(ErrSealedKeyInvalid, err)
		}
		return nil, fmt.Errorf("unwrap data key of %s/%s v%d: %w", k.KeySet, k.KID, k.Version, err)
	}
	defer clear(dek)
	if len(dek) != dekSize {
		return nil, fmt.Errorf("data key of %s/%s v%d has wrong size: %w", k.KeySet, k.KID, k.Version, ErrSealedKeyInvalid)
	}
	aead, err := newGCM(dek)
	if err != nil {
		return nil, err
	}
	if len(s.Nonce) != aead.NonceSize() {
		return nil, fmt.Errorf("sealed key %s/%s v%d has bad nonce size: %w", k.KeySet, k.KID, k.Version, ErrSealedKeyInvalid)
	}
	priv, err := aead.Open(nil, s.Nonce, s.Ciphertext, aad)
	if err != nil {
		return nil, fmt.Errorf("decrypt sealed key %s/%s v%d: %w", k.KeySet, k.KID, k.Version, ErrSealedKeyInvalid)
	}
	if err := checkKeyPair(priv, k.PublicKey); err != nil {
		clear(priv)
		return nil, fmt.Errorf("sealed key %s/%s v%d: %w", k.KeySet, k.KID, k.Version, err)
	}
	return priv, nil
}

// checkKeyPair verifies that priv is the X25519 private key of pub. The AAD
// already binds pub, so this catches bugs rather than attacks, but a wrong
// key handed to an enclave would fail silently far away.
func checkKeyPair(priv, pub []byte) error {
	if len(priv) != privateKeySize {
		return fmt.Errorf("private key has wrong size: %w", ErrSealedKeyInvalid)
	}
	sk, err := ecdh.X25519().NewPrivateKey(priv)
	if err != nil {
		return fmt.Errorf("private key rejected: %w", ErrSealedKeyInvalid)
	}
	if subtle.ConstantTimeCompare(sk.PublicKey().Bytes(), pub) != 1 {
		return fmt.Errorf("private key does not match public key: %w", ErrSealedKeyInvalid)
	}
	return nil
}

func newGCM(key []byte) (cipher.AEAD, error) {
	block, err := aes.NewCipher(key)
	if err != nil {
		return nil, fmt.Errorf("init AES: %w", err)
	}
	aead, err := cipher.NewGCM(block)
	if err != nil {
		return nil, fmt.Errorf("init GCM: %w", err)
	}
	return aead, nil
}
