// Package hpke holds the cryptography of the key release protocol: the HPKE
// suite the KMS uses, X25519 key pairs, the binding digest that ties an
// attestation report to a nonce and a wrapping key, and the two ways a
// released private key is wrapped to the enclave's wrapping key (HPKE for
// X25519 wrapping keys, RSA-OAEP plus AES key wrap with padding for RSA ones).
//
// The package is a leaf: it does no I/O beyond reading the random source it
// is given, and holds no state between calls. Errors never carry key bytes.
//
// Oblivious HTTP (RFC 9458) encapsulation, which end users use to encrypt to
// the keys this package wraps, lives in the subpackage hpke/ohttp.
package hpke

import (
	"crypto/rand"
	"crypto/sha512"
	"crypto/subtle"
	"encoding/binary"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"math"

	"github.com/cloudflare/circl/dh/x25519"
)

// The one HPKE suite of protocol version 1 (RFC 9180 identifiers). It is fixed
// rather than negotiated so that a downgrade is impossible by construction.
const (
	KEMID  uint16 = 0x0020 // DHKEM(X25519, HKDF-SHA256)
	KDFID  uint16 = 0x0001 // HKDF-SHA256
	AEADID uint16 = 0x0002 // AES-256-GCM
)

// SuiteName is the suite as it appears in API answers and audit records.
const SuiteName = "DHKEM(X25519,HKDF-SHA256)/HKDF-SHA256/AES-256-GCM"

// X25519KeySize is the length of raw X25519 public and private keys.
const X25519KeySize = 32

// Sentinel errors. They are wrapped with context; compare with errors.Is.
var (
	// ErrInvalidKey reports a key that is malformed: wrong length or encoding.
	ErrInvalidKey = errors.New("hpke: invalid key")
	// ErrLowOrderKey reports an X25519 public key of small order. Encrypting
	// to such a key yields a shared secret anyone can compute, so it would
	// hand the wrapped key to whoever observes the answer.
	ErrLowOrderKey = errors.New("hpke: low-order X25519 public key")
	// ErrNotRSAKey reports a PKIX public key of another algorithm where an RSA
	// wrapping key was expected.
	ErrNotRSAKey = errors.New("hpke: wrapping key is not an RSA key")
	// ErrRSAKeyTooSmall reports an RSA wrapping key under MinRSABits.
	ErrRSAKeyTooSmall = errors.New("hpke: RSA wrapping key too small")
	// ErrRSAKeyTooLarge reports an RSA wrapping key over MaxRSABits.
	ErrRSAKeyTooLarge = errors.New("hpke: RSA wrapping key too large")
	// ErrDecrypt reports a wrapped key that does not authenticate: tampered,
	// wrapped to another key, or bound to another kid or nonce. One error for
	// every cause, so that failures do not become an oracle.
	ErrDecrypt = errors.New("hpke: cannot unwrap")
)

// KeyPair is a raw X25519 key pair.
type KeyPair struct {
	Public  []byte // 32 bytes, RFC 7748 u-coordinate
	Private []byte // 32 bytes, unclamped scalar as RFC 9180 SerializePrivateKey
}

// String shows the public key only, so that a key pair that reaches a log
// line or an error message by accident does not leak its private half.
func (k KeyPair) String() string {
	return fmt.Sprintf("hpke.KeyPair{Public: %s, Private: [redacted]}", hex.EncodeToString(k.Public))
}

// GoString redacts for the same reason as String, for %#v.
func (k KeyPair) GoString() string { return k.String() }

// GenerateKeyPair returns a fresh X25519 key pair whose private key is 32
// bytes read from rand (crypto/rand when rand is nil). Taking the reader
// lets tests be deterministic; production callers pass nil.
func GenerateKeyPair(rand io.Reader) (*KeyPair, error) {
	priv := make([]byte, X25519KeySize)
	if _, err := io.ReadFull(randOrDefault(rand), priv); err != nil {
		return nil, fmt.Errorf("hpke: generating X25519 key: %w", err)
	}
	pub, err := PublicFromPrivate(priv)
	if err != nil {
		return nil, err
	}
	return &KeyPair{Public: pub, Private: priv}, nil
}

// PublicFromPrivate returns the X25519 public key of a raw 32-byte private key.
func PublicFromPrivate(priv []byte) ([]byte, error) {
	if len(priv) != X25519KeySize {
		return nil, fmt.Errorf("%w: X25519 private key is %d bytes, want %d", ErrInvalidKey, len(priv), X25519KeySize)
	}
	var sk, pk x25519.Key
	copy(sk[:], priv)
	x25519.KeyGen(&pk, &sk)
	clear(sk[:])
	return pk[:], nil
}

// lowOrderPoints are the X25519 u-coordinates of small order (on the curve
// and its twist), as listed by libsodium and the X25519 literature: 0, 1,
// the two points of order 8, p-1, and the non-canonical p and p+1. The
// comparison masks bit 255, which X25519 ignores, so the forms with that bit
// set are rejected too. A function rather than a variable keeps the table
// immutable.
func lowOrderPoints() [7][X25519KeySize]byte {
	return [7][X25519KeySize]byte{
		{},
		{1},
		{0xe0, 0xeb, 0x7a, 0x7c, 0x3b, 0x41, 0xb8, 0xae, 0x16, 0x56, 0xe3, 0xfa, 0xf1, 0x9f, 0xc4, 0x6a, 0xda, 0x09, 0x8d, 0xeb, 0x9c, 0x32, 0xb1, 0xfd, 0x86, 0x62, 0x05, 0x16, 0x5f, 0x49, 0xb8, 0x00},
		{0x5f, 0x9c, 0x95, 0xbc, 0xa3, 0x50, 0x8c, 0x24, 0xb1, 0xd0, 0xb1, 0x55, 0x9c, 0x83, 0xef, 0x5b, 0x04, 0x44, 0x5c, 0xc4, 0x58, 0x1c, 0x8e, 0x86, 0xd8, 0x22, 0x4e, 0xdd, 0xd0, 0x9f, 0x11, 0x57},
		{0xec, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x7f},
		{0xed, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x7f},
		{0xee, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x7f},
	}
}

// ValidateX25519PublicKey rejects a public key that must never be encrypted
// to: wrong length (ErrInvalidKey), or all-zero or of small order in any
// encoding (ErrLowOrderKey). Besides the explicit list it runs X25519 with a
// fixed scalar and rejects an all-zero result, so a point the list missed
// would still be caught.
func ValidateX25519PublicKey(pub []byte) error {
	if len(pub) != X25519KeySize {
		return fmt.Errorf("%w: X25519 public key is %d bytes, want %d", ErrInvalidKey, len(pub), X25519KeySize)
	}
	var u [X25519KeySize]byte
	copy(u[:], pub)
	u[31] &= 0x7f
	lowOrder := 0
	for _, p := range lowOrderPoints() {
		lowOrder |= subtle.ConstantTimeCompare(u[:], p[:])
	}
	if lowOrder == 1 {
		return ErrLowOrderKey
	}
	// The scalar is public: the result only says whether the point is in the
	// small subgroup, which every clamped scalar (a multiple of 8) reveals.
	var shared, scalar, point x25519.Key
	scalar[0] = 9
	copy(point[:], pub)
	var zero [X25519KeySize]byte
	if !x25519.Shared(&shared, &scalar, &point) || subtle.ConstantTimeCompare(shared[:], zero[:]) == 1 {
		return ErrLowOrderKey
	}
	return nil
}

// bindingLabel is the domain separator of the binding digest, DESIGN.md
// "Key release protocol" step 3.
const bindingLabel = "attested-kms/v1 key-release"

// BindingDigest returns the 64 bytes an enclave puts in its attestation
// report_data to bind the report to a challenge nonce and its wrapping public
// key:
//
//	SHA-512("attested-kms/v1 key-release" || 0x00 || u16be(len(nonce)) || nonce || u16be(len(wk)) || wk)
//
// wrappingKey is the canonical encoding (X25519: 32 raw bytes; RSA: PKIX DER).
// The lengths make the encoding injective, so no other (nonce, key) pair has
// the same preimage.
func BindingDigest(nonce, wrappingKey []byte) ([64]byte, error) {
	if len(nonce) > math.MaxUint16 {
		return [64]byte{}, fmt.Errorf("hpke: binding: nonce is %d bytes, limit %d", len(nonce), math.MaxUint16)
	}
	if len(wrappingKey) > math.MaxUint16 {
		return [64]byte{}, fmt.Errorf("hpke: binding: wrapping key is %d bytes, limit %d", len(wrappingKey), math.MaxUint16)
	}
	h := sha512.New()
	h.Write([]byte(bindingLabel))
	h.Write([]byte{0})
	h.Write(binary.BigEndian.AppendUint16(nil, uint16(len(nonce))))
	h.Write(nonce)
	h.Write(binary.BigEndian.AppendUint16(nil, uint16(len(wrappingKey))))
	h.Write(wrappingKey)
	var d [64]byte
	h.Sum(d[:0])
	return d, nil
}

func randOrDefault(r io.Reader) io.Reader {
	if r == nil {
		return rand.Reader
	}
	return r
}
