// Package challenge issues and checks the nonces of the key-release
// protocol. A nonce is self-authenticating (HMAC under a server secret), so
// any replica holding the secret can check it without shared state.
//
// Layout (73 bytes):
//
//	version(1)=0x01 || key id(4) || random(32) || expiry(8, u64be unix seconds) || HMAC-SHA256(32)
//
// The MAC covers every preceding byte under a key derived from the secret
// with a purpose label, so the secret is never used for anything else. The
// key id lets the checker tell a nonce from another KMS (a different secret)
// from a forged one and answer with a useful reason.
package challenge

import (
	"crypto/hkdf"
	"crypto/hmac"
	"crypto/rand"
	"crypto/sha256"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"time"
)

const (
	version   = 0x01
	keyIDLen  = 4
	randomLen = 32
	expiryLen = 8
	macLen    = sha256.Size
	headerLen = 1 + keyIDLen + randomLen + expiryLen
	// Size is the length of every nonce issued by this package.
	Size = headerLen + macLen

	// SecretSize is the length of the server secret.
	SecretSize = 32
	// DefaultLifetime is how long a nonce stays acceptable.
	DefaultLifetime = 5 * time.Minute
)

// Reason says why a nonce was refused; the release service reports it.
type Reason string

const (
	ReasonMalformed Reason = "NONCE_MALFORMED"
	ReasonForged    Reason = "NONCE_INVALID"
	ReasonForeign   Reason = "NONCE_OTHER_SERVER"
	ReasonExpired   Reason = "NONCE_EXPIRED"
)

// Error is a refused nonce. Its message never contains the nonce.
type Error struct {
	Reason Reason
	msg    string
}

func (e *Error) Error() string { return "nonce: " + e.msg }

// ReasonOf returns the reason carried by err, or "".
func ReasonOf(err error) Reason {
	var e *Error
	if errors.As(err, &e) {
		return e.Reason
	}
	return ""
}

// Issuer makes and checks nonces under one secret.
type Issuer struct {
	macKey   []byte
	keyID    [keyIDLen]byte
	lifetime time.Duration
	now      func() time.Time
	rand     io.Reader
}

// Options tune an Issuer. Zero values take defaults.
type Options struct {
	Lifetime time.Duration
	Now      func() time.Time
	Rand     io.Reader
}

// NewIssuer derives the MAC key and key id from secret.
func NewIssuer(secret []byte, opts Options) (*Issuer, error) {
	if len(secret) != SecretSize {
		return nil, fmt.Errorf("challenge: secret must be %d bytes, got %d", SecretSize, len(secret))
	}
	macKey, err := hkdf.Key(sha256.New, secret, nil, "attested-kms/v1 nonce-mac", 32)
	if err != nil {
		return nil, fmt.Errorf("challenge: deriving MAC key: %w", err)
	}
	id, err := hkdf.Key(sha256.New, secret, nil, "attested-kms/v1 nonce-key-id", keyIDLen)
	if err != nil {
		return nil, fmt.Errorf("challenge: deriving key id: %w", err)
	}
	is := &Issuer{macKey: macKey, lifetime: opts.Lifetime, now: opts.Now, rand: opts.Rand}
	copy(is.keyID[:], id)
	if is.lifetime <= 0 {
		is.lifetime = DefaultLifetime
	}
	if is.now == nil {
		is.now = time.Now
	}
	if is.rand == nil {
		is.rand = rand.Reader
	}
	return is, nil
}

// Issue returns a new nonce and the time after which it is refused.
func (is *Issuer) Issue() ([]byte, time.Time, error) {
	expires := is.now().Add(is.lifetime).Truncate(time.Second)
	n := make([]byte, headerLen, Size)
	n[0] = version
	copy(n[1:], is.keyID[:])
	if _, err := io.ReadFull(is.rand, n[1+keyIDLen:1+keyIDLen+randomLen]); err != nil {
		return nil, time.Time{}, fmt.Errorf("challenge: reading randomness: %w", err)
	}
	binary.BigEndian.PutUint64(n[headerLen-expiryLen:], uint64(expires.Unix()))
	return is.mac(n), expires, nil
}

// Check accepts a nonce issued by this secret that has not expired.
func (is *Issuer) Check(n []byte) error {
	if len(n) != Size || n[0] != version {
		return &Error{ReasonMalformed, fmt.Sprintf("malformed: want %d bytes of version %d", Size, version)}
	}
	if !hmac.Equal(n[1:1+keyIDLen], is.keyID[:]) {
		return &Error{ReasonForeign, "issued by another server (key id mismatch); get a challenge from this KMS"}
	}
	want := is.mac(n[:headerLen:headerLen])
	if !hmac.Equal(n[headerLen:], want[headerLen:]) {
		return &Error{ReasonForged, "authentication failed: not issued by this server"}
	}
	exp := time.Unix(int64(binary.BigEndian.Uint64(n[headerLen-expiryLen:headerLen])), 0)
	if !is.now().Before(exp) {
		return &Error{ReasonExpired, fmt.Sprintf("expired at %s", exp.UTC().Format(time.RFC3339))}
	}
	return nil
}

func (is *Issuer) mac(header []byte) []byte {
	m := hmac.New(sha256.New, is.macKey)
	m.Write(header)
	return m.Sum(header)
}
