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

// Sealing formats. Both encrypt the private key with AES-256-GCM under a
// fresh 32-byte DEK; they differ in what wraps the DEK.
const (
	// SealFormatV1: the DEK wrapped by the KEK provider directly, AAD from
	// sealAAD. Read only: every KEK call for such a key is an outside call,
	// so keys are no longer sealed this way; RotateIntermediate and
	// RewrapRoot convert them to v2.
	SealFormatV1 = "attested-kms/v1 sealed-key aes-256-gcm"
	// SealFormatV2: the DEK wrapped locally (AES-256-GCM) by the key set's
	// intermediate key of generation SealedKey.Generation; the AAD of both
	// the DEK wrap and the private key encryption is sealAADv2.
	SealFormatV2 = "attested-kms/v2 sealed-key aes-256-gcm"
)

// IntermediateAlgorithm is SealedKey.Algorithm of v2 keys: how the DEK is
// wrapped under the intermediate key.
const IntermediateAlgorithm = "AES-256-GCM"

// intermediateLabel is the domain separator of an intermediate key's AAD
// when the root KEK wraps it.
const intermediateLabel = "attested-kms/v2 intermediate"

const (
	dekSize          = 32
	intermediateSize = 32
	privateKeySize   = 32
)

// sealAAD binds a sealed key to its place: format, key set, kid, version,
// suite and public key. Every field is length-prefixed so no two distinct
// tuples encode alike. A record copied onto another key (another kid,
// version or set), or whose public key was replaced, no longer opens.
func sealAAD(format, keyset, kid string, version uint64, suite string, pub []byte) []byte {
	b := make([]byte, 0, 72+len(format)+len(keyset)+len(kid)+len(suite)+len(pub))
	b = appendField(b, []byte(format))
	b = appendField(b, []byte(keyset))
	b = appendField(b, []byte(kid))
	b = binary.BigEndian.AppendUint64(b, version)
	b = appendField(b, []byte(suite))
	b = appendField(b, pub)
	return b
}

// sealAADv2 is sealAAD of SealFormatV2 followed by the intermediate
// generation, so a DEK wrap cannot be replayed under another generation.
func sealAADv2(k *Key, gen uint64) []byte {
	return binary.BigEndian.AppendUint64(sealAAD(SealFormatV2, k.KeySet, k.KID, k.Version, k.Suite, k.PublicKey), gen)
}

// intermediateAAD binds a wrapped intermediate key to its key set and
// generation: a record copied to another set or generation does not open.
func intermediateAAD(keyset string, gen uint64) []byte {
	b := appendField(nil, []byte(intermediateLabel))
	b = appendField(b, []byte(keyset))
	return binary.BigEndian.AppendUint64(b, gen)
}

func appendField(b, f []byte) []byte {
	b = binary.BigEndian.AppendUint32(b, uint32(len(f)))
	return append(b, f...)
}

// intermediateKey is an unwrapped intermediate key, held in memory only.
type intermediateKey struct {
	gen  uint64
	raw  []byte // kept to re-wrap it under another root KEK
	aead cipher.AEAD
}

func newIntermediateKey(gen uint64, raw []byte) (*intermediateKey, error) {
	if len(raw) != intermediateSize {
		clear(raw)
		return nil, fmt.Errorf("intermediate key has %d bytes, want %d: %w", len(raw), intermediateSize, ErrSealedKeyInvalid)
	}
	aead, err := newGCM(raw)
	if err != nil {
		return nil, err
	}
	return &intermediateKey{gen: gen, raw: raw, aead: aead}, nil
}

// sealV2 encrypts priv for k (whose KeySet, KID, Version, Suite and
// PublicKey must be set) under a fresh DEK wrapped by in. No outside call.
func sealV2(rand io.Reader, in *intermediateKey, k *Key, priv []byte) (*SealedKey, error) {
	dek := make([]byte, dekSize)
	defer clear(dek)
	if _, err := io.ReadFull(rand, dek); err != nil {
		return nil, fmt.Errorf("generate data key: %w", err)
	}
	aead, err := newGCM(dek)
	if err != nil {
		return nil, err
	}
	// One buffer for both nonces: the DEK's wrap nonce, then the private
	// key's.
	nonces := make([]byte, 2*aead.NonceSize())
	if _, err := io.ReadFull(rand, nonces); err != nil {
		return nil, fmt.Errorf("generate nonce: %w", err)
	}
	wrapNonce, nonce := nonces[:aead.NonceSize()], nonces[aead.NonceSize():]
	aad := sealAADv2(k, in.gen)
	wrapped := in.aead.Seal(append([]byte(nil), wrapNonce...), wrapNonce, dek, aad)
	return &SealedKey{
		Format:     SealFormatV2,
		Generation: in.gen,
		Algorithm:  IntermediateAlgorithm,
		WrappedDEK: wrapped,
		Nonce:      nonce,
		Ciphertext: aead.Seal(nil, nonce, priv, aad),
	}, nil
}

// unsealV2 decrypts k's v2 private key with in, the intermediate of the
// generation k.Sealed names, and checks it matches k.PublicKey.
func unsealV2(in *intermediateKey, k *Key) ([]byte, error) {
	s := k.Sealed
	if s.Generation != in.gen {
		return nil, fmt.Errorf("key %s/%s v%d: sealed under intermediate generation %d, not %d: %w", k.KeySet, k.KID, k.Version, s.Generation, in.gen, ErrSealedKeyInvalid)
	}
	if s.Algorithm != IntermediateAlgorithm {
		return nil, fmt.Errorf("key %s/%s v%d: unknown data key wrapping %q: %w", k.KeySet, k.KID, k.Version, s.Algorithm, ErrSealedKeyInvalid)
	}
	ns := in.aead.NonceSize()
	if len(s.WrappedDEK) < ns {
		return nil, fmt.Errorf("key %s/%s v%d: wrapped data key truncated: %w", k.KeySet, k.KID, k.Version, ErrSealedKeyInvalid)
	}
	aad := sealAADv2(k, in.gen)
	dek, err := in.aead.Open(nil, s.WrappedDEK[:ns], s.WrappedDEK[ns:], aad)
	if err != nil {
		// kek.ErrAuthentication too: the wrapped key failed to
		// authenticate, as a KEK provider would report it.
		return nil, fmt.Errorf("unwrap data key of %s/%s v%d: %w", k.KeySet, k.KID, k.Version, errors.Join(ErrSealedKeyInvalid, kek.ErrAuthentication))
	}
	defer clear(dek)
	return openPrivate(dek, aad, k)
}

// unsealV1 decrypts a v1 key: one outside call to provider, which must be
// the KEK the record names.
func unsealV1(ctx context.Context, provider kek.Provider, k *Key) ([]byte, error) {
	s := k.Sealed
	if s.KEKURI != provider.URI() {
		return nil, fmt.Errorf("key %s/%s v%d is sealed under KEK %s, not %s: %w",
			k.KeySet, k.KID, k.Version, s.KEKURI, provider.URI(), ErrSealedKeyInvalid)
	}
	aad := sealAAD(s.Format, k.KeySet, k.KID, k.Version, k.Suite, k.PublicKey)
	dek, err := provider.Unwrap(ctx, v1Wrapped(s), aad)
	if err != nil {
		if errors.Is(err, kek.ErrAuthentication) {
			err = errors.Join(ErrSealedKeyInvalid, err)
		}
		return nil, fmt.Errorf("unwrap data key of %s/%s v%d: %w", k.KeySet, k.KID, k.Version, err)
	}
	defer clear(dek)
	return openPrivate(dek, aad, k)
}

// v1Wrapped is the kek.Wrapped of a v1 record. Records written before
// kek.Wrapped existed carry no algorithm; the local key file was the only
// provider then, so its algorithm is implied.
func v1Wrapped(s *SealedKey) kek.Wrapped {
	alg := s.Algorithm
	if alg == "" {
		alg = kek.LocalAlgorithm
	}
	return kek.Wrapped{KEKURI: s.KEKURI, KEKVersion: s.KEKVersion, Algorithm: alg, Ciphertext: s.WrappedDEK}
}

// openPrivate decrypts k.Sealed's private key with dek and aad and checks
// it against k.PublicKey. The caller owns (and should zero) the result.
func openPrivate(dek, aad []byte, k *Key) ([]byte, error) {
	if len(dek) != dekSize {
		return nil, fmt.Errorf("data key of %s/%s v%d has wrong size: %w", k.KeySet, k.KID, k.Version, ErrSealedKeyInvalid)
	}
	aead, err := newGCM(dek)
	if err != nil {
		return nil, err
	}
	s := k.Sealed
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
