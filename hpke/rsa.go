package hpke

import (
	"crypto/rsa"
	"crypto/sha256"
	"crypto/x509"
	"fmt"
	"io"
)

// RSA wrapping key sizes accepted. 3072 bits is the floor of DESIGN.md
// ("RSA (3072 or 4096 bits)"); the ceiling bounds the cost a caller can
// impose on the KMS with a huge modulus.
const (
	MinRSABits = 3072
	MaxRSABits = 8192
)

// rsaAESKeySize is the ephemeral AES-256 key of RSA_AES_KEY_WRAP_256.
const rsaAESKeySize = 32

// ParseRSAWrappingKey parses a PKIX (SubjectPublicKeyInfo) DER RSA public key
// and enforces the size policy: ErrNotRSAKey for other algorithms,
// ErrRSAKeyTooSmall under MinRSABits, ErrRSAKeyTooLarge over MaxRSABits.
func ParseRSAWrappingKey(pkixDER []byte) (*rsa.PublicKey, error) {
	k, err := x509.ParsePKIXPublicKey(pkixDER)
	if err != nil {
		return nil, fmt.Errorf("%w: RSA wrapping key: %w", ErrInvalidKey, err)
	}
	pub, ok := k.(*rsa.PublicKey)
	if !ok {
		return nil, fmt.Errorf("%w: got %T", ErrNotRSAKey, k)
	}
	switch bits := pub.N.BitLen(); {
	case bits < MinRSABits:
		return nil, fmt.Errorf("%w: %d bits, minimum %d", ErrRSAKeyTooSmall, bits, MinRSABits)
	case bits > MaxRSABits:
		return nil, fmt.Errorf("%w: %d bits, maximum %d", ErrRSAKeyTooLarge, bits, MaxRSABits)
	}
	return pub, nil
}

// WrapRSA wraps secret to an RSA wrapping key in the layout of Azure's
// RSA_AES_KEY_WRAP_256 and PKCS#11 CKM_RSA_AES_KEY_WRAP, so HSM-backed
// enclaves can unwrap it natively: RSA-OAEP (SHA-256, MGF1-SHA-256, empty
// label) of a fresh AES-256 key, followed by that key's RFC 5649 wrap of
// secret. wrappingPubDER is PKIX DER, the same bytes the binding digest
// covers. rand supplies the AES key (crypto/rand when nil).
func WrapRSA(rand io.Reader, wrappingPubDER []byte, secret []byte) ([]byte, error) {
	pub, err := ParseRSAWrappingKey(wrappingPubDER)
	if err != nil {
		return nil, err
	}
	rand = randOrDefault(rand)
	aesKey := make([]byte, rsaAESKeySize)
	defer clear(aesKey)
	if _, err := io.ReadFull(rand, aesKey); err != nil {
		return nil, fmt.Errorf("hpke: generating AES key: %w", err)
	}
	encKey, err := rsa.EncryptOAEP(sha256.New(), rand, pub, aesKey, nil)
	if err != nil {
		return nil, fmt.Errorf("hpke: RSA-OAEP: %w", err)
	}
	wrapped, err := KeyWrapPad(aesKey, secret)
	if err != nil {
		return nil, err
	}
	return append(encKey, wrapped...), nil
}

// UnwrapRSA reverses WrapRSA. Every failure after the length check, in OAEP
// or in the key wrap, is the same ErrDecrypt, so the answer is no padding
// oracle.
func UnwrapRSA(priv *rsa.PrivateKey, wrapped []byte) ([]byte, error) {
	if priv == nil {
		return nil, fmt.Errorf("%w: nil RSA private key", ErrInvalidKey)
	}
	k := priv.Size()
	if len(wrapped) < k+16 {
		return nil, fmt.Errorf("%w: wrapped key is %d bytes, want at least %d", ErrDecrypt, len(wrapped), k+16)
	}
	aesKey, err := rsa.DecryptOAEP(sha256.New(), nil, priv, wrapped[:k], nil)
	if err != nil || len(aesKey) != rsaAESKeySize {
		clear(aesKey)
		return nil, ErrDecrypt
	}
	defer clear(aesKey)
	return KeyUnwrapPad(aesKey, wrapped[k:])
}
