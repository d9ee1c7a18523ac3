package audit

import (
	"crypto"
	"crypto/ed25519"
	"encoding/binary"
	"fmt"
	"time"
)

// Checkpoint is a signed statement that the entry at Seq has Hash: it pins
// the whole chain up to Seq, so entries before it cannot be changed and the
// log cannot be cut short of it without Verify noticing.
type Checkpoint struct {
	Seq       uint64
	Hash      Hash
	Time      time.Time
	Signature []byte
}

const checkpointDomain = "attested-kms/v1 audit checkpoint\x00"

// SignedMessage is the exact byte string the signature covers (doc.go).
func (c *Checkpoint) SignedMessage() []byte {
	b := make([]byte, 0, len(checkpointDomain)+8+len(c.Hash)+12)
	b = append(b, checkpointDomain...)
	b = binary.BigEndian.AppendUint64(b, c.Seq)
	b = append(b, c.Hash[:]...)
	return appendTime(b, c.Time)
}

// VerifySignature reports whether c is signed by pub.
func (c *Checkpoint) VerifySignature(pub ed25519.PublicKey) bool {
	return len(pub) == ed25519.PublicKeySize && ed25519.Verify(pub, c.SignedMessage(), c.Signature)
}

// sign fills in c.Signature. Ed25519 signs the message itself, so the
// signer is called with crypto.Hash(0), as crypto/ed25519 requires; an HSM
// or a sealed key behind the crypto.Signer interface sees only this message.
func (c *Checkpoint) sign(s crypto.Signer) error {
	sig, err := s.Sign(nil, c.SignedMessage(), crypto.Hash(0))
	if err != nil {
		return fmt.Errorf("audit: sign checkpoint at seq %d: %w", c.Seq, err)
	}
	c.Signature = sig
	return nil
}

// signerKey returns the Ed25519 public key of s, refusing other algorithms:
// Verify only knows Ed25519.
func signerKey(s crypto.Signer) (ed25519.PublicKey, error) {
	if s == nil {
		return nil, fmt.Errorf("audit: no checkpoint signer: %w", ErrInvalidArgument)
	}
	pub, ok := s.Public().(ed25519.PublicKey)
	if !ok || len(pub) != ed25519.PublicKeySize {
		return nil, fmt.Errorf("audit: checkpoint signer's key is %T, want ed25519.PublicKey: %w", s.Public(), ErrInvalidArgument)
	}
	return pub, nil
}
