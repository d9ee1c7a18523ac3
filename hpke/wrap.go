package hpke

import (
	"errors"
	"fmt"
	"io"

	circl "github.com/cloudflare/circl/hpke"
)

// wrapInfoLabel is the HPKE info prefix of key wrapping, DESIGN.md "Key
// release protocol" step 7. Putting the kid in info binds the wrapped key to
// the kid the KMS answered with, so it cannot be passed off as another key.
const wrapInfoLabel = "attested-kms/v1 key-wrap"

// maxKIDLen bounds the kid put into HPKE info. Kids are 16 characters; the
// bound only keeps a hostile caller from making info arbitrarily large.
const maxKIDLen = 255

// encLen and tagLen are the sizes of the X25519 encapsulated key and the
// AES-GCM tag, which every HPKE ciphertext of this suite carries.
const (
	encLen = X25519KeySize
	tagLen = 16
)

// suite returns the circl suite for KEMID/KDFID/AEADID. It is a function,
// not a package variable, to keep the package free of mutable globals; the
// value is three integers.
func suite() circl.Suite {
	return circl.NewSuite(circl.KEM(KEMID), circl.KDF(KDFID), circl.AEAD(AEADID))
}

func wrapInfo(kid string) ([]byte, error) {
	if kid == "" || len(kid) > maxKIDLen {
		return nil, fmt.Errorf("hpke: kid must be 1 to %d bytes, got %d", maxKIDLen, len(kid))
	}
	info := make([]byte, 0, len(wrapInfoLabel)+1+len(kid))
	info = append(info, wrapInfoLabel...)
	info = append(info, 0)
	return append(info, kid...), nil
}

// WrapX25519 encrypts secret (a released private key) to the enclave's X25519
// wrapping key with HPKE base mode, info = "attested-kms/v1 key-wrap" || 0x00
// || kid and aad = nonce, so the result opens only for that wrapping key, that
// kid and that challenge nonce. The output is enc (32 bytes) || ciphertext.
// rand seeds the ephemeral key (crypto/rand when nil).
func WrapX25519(rand io.Reader, wrappingPub []byte, kid string, nonce, secret []byte) ([]byte, error) {
	if err := ValidateX25519PublicKey(wrappingPub); err != nil {
		return nil, fmt.Errorf("hpke: wrapping key: %w", err)
	}
	if len(nonce) == 0 {
		return nil, errors.New("hpke: empty nonce: the wrapped key must be bound to a challenge")
	}
	info, err := wrapInfo(kid)
	if err != nil {
		return nil, err
	}
	return sealBase(randOrDefault(rand), wrappingPub, info, nonce, secret)
}

// UnwrapX25519 reverses WrapX25519 with the wrapping private key. Any
// mismatch (key, kid, nonce, or a changed byte) gives ErrDecrypt.
func UnwrapX25519(wrappingPriv []byte, kid string, nonce, wrapped []byte) ([]byte, error) {
	info, err := wrapInfo(kid)
	if err != nil {
		return nil, err
	}
	return openBase(wrappingPriv, info, nonce, wrapped)
}

// sealBase is single-shot HPKE base-mode Seal of this package's suite,
// returning enc || ct. It is separate from WrapX25519 so the RFC 9180 test
// vectors can drive it with their own info and aad.
func sealBase(rand io.Reader, pkR, info, aad, pt []byte) ([]byte, error) {
	s := suite()
	kemID, _, _ := s.Params()
	pk, err := kemID.Scheme().UnmarshalBinaryPublicKey(pkR)
	if err != nil {
		return nil, fmt.Errorf("%w: X25519 public key", ErrInvalidKey)
	}
	sender, err := s.NewSender(pk, info)
	if err != nil {
		return nil, fmt.Errorf("hpke: sender: %w", err)
	}
	enc, sealer, err := sender.Setup(rand)
	if err != nil {
		// circl reports a low-order recipient key here; its errors carry no key bytes.
		return nil, fmt.Errorf("hpke: encapsulating: %w", err)
	}
	ct, err := sealer.Seal(pt, aad)
	if err != nil {
		return nil, fmt.Errorf("hpke: sealing: %w", err)
	}
	return append(enc, ct...), nil
}

// openBase is the inverse of sealBase.
func openBase(skR, info, aad, encCT []byte) ([]byte, error) {
	if len(skR) != X25519KeySize {
		return nil, fmt.Errorf("%w: X25519 private key is %d bytes, want %d", ErrInvalidKey, len(skR), X25519KeySize)
	}
	if len(encCT) < encLen+tagLen {
		return nil, fmt.Errorf("%w: wrapped key is %d bytes, shorter than %d", ErrDecrypt, len(encCT), encLen+tagLen)
	}
	s := suite()
	kemID, _, _ := s.Params()
	sk, err := kemID.Scheme().UnmarshalBinaryPrivateKey(skR)
	if err != nil {
		return nil, fmt.Errorf("%w: X25519 private key", ErrInvalidKey)
	}
	receiver, err := s.NewReceiver(sk, info)
	if err != nil {
		return nil, fmt.Errorf("hpke: receiver: %w", err)
	}
	opener, err := receiver.Setup(encCT[:encLen])
	if err != nil {
		return nil, fmt.Errorf("%w: decapsulation failed", ErrDecrypt)
	}
	pt, err := opener.Open(encCT[encLen:], aad)
	if err != nil {
		return nil, ErrDecrypt
	}
	return pt, nil
}
