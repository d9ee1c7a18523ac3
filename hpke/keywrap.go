package hpke

import (
	"crypto/aes"
	"crypto/cipher"
	"crypto/subtle"
	"encoding/binary"
	"fmt"
	"math"
)

// kwpIVPrefix is the alternative initial value of RFC 5649 section 3.
const kwpIVPrefix = "\xa6\x59\x59\xa6"

func newKEK(kek []byte) (cipher.Block, error) {
	switch len(kek) {
	case 16, 24, 32:
	default:
		return nil, fmt.Errorf("%w: AES key wrap KEK is %d bytes, want 16, 24 or 32", ErrInvalidKey, len(kek))
	}
	b, err := aes.NewCipher(kek)
	if err != nil {
		return nil, fmt.Errorf("hpke: key wrap: %w", err)
	}
	return b, nil
}

// KeyWrapPad is AES key wrap with padding (RFC 5649) of plaintext under an
// AES-128, -192 or -256 KEK: the second step of RSA_AES_KEY_WRAP and
// CKM_RSA_AES_KEY_WRAP. plaintext must be 1 to 2^32-1 bytes.
func KeyWrapPad(kek, plaintext []byte) ([]byte, error) {
	b, err := newKEK(kek)
	if err != nil {
		return nil, err
	}
	if len(plaintext) == 0 || uint64(len(plaintext)) > math.MaxUint32 {
		return nil, fmt.Errorf("hpke: key wrap: plaintext is %d bytes, want 1 to 2^32-1", len(plaintext))
	}
	padded := (len(plaintext) + 7) &^ 7
	out := make([]byte, 8+padded)
	copy(out[:4], kwpIVPrefix)
	binary.BigEndian.PutUint32(out[4:8], uint32(len(plaintext)))
	copy(out[8:], plaintext) // the zero padding is already there
	if padded == 8 {
		// One semiblock: RFC 5649 section 4.1 encrypts AIV || P as one block.
		b.Encrypt(out, out)
		return out, nil
	}
	wrap(b, out)
	return out, nil
}

// KeyUnwrapPad reverses KeyWrapPad. A wrong KEK or a changed byte gives
// ErrDecrypt; the checks of the integrity value and padding do not branch on
// which of them failed.
func KeyUnwrapPad(kek, wrapped []byte) ([]byte, error) {
	b, err := newKEK(kek)
	if err != nil {
		return nil, err
	}
	if len(wrapped) < 16 || len(wrapped)%8 != 0 {
		return nil, fmt.Errorf("%w: key wrap output is %d bytes, want a multiple of 8 of at least 16", ErrDecrypt, len(wrapped))
	}
	buf := make([]byte, len(wrapped))
	if len(wrapped) == 16 {
		b.Decrypt(buf, wrapped)
	} else {
		copy(buf, wrapped)
		unwrap(b, buf)
	}
	// RFC 5649 section 3: the integrity check is the AIV prefix, a length
	// within the last semiblock (n-7 <= MLI <= n bytes) and zero padding.
	// A forgery decrypts to random bytes, so which check fails tells an
	// attacker nothing; all failures are the same ErrDecrypt.
	n := uint64(len(buf) - 8)
	mli := uint64(binary.BigEndian.Uint32(buf[4:8]))
	ok := subtle.ConstantTimeCompare(buf[:4], []byte(kwpIVPrefix)) == 1 && mli+7 >= n && mli <= n
	if ok {
		var pad byte
		for _, c := range buf[8+mli:] {
			pad |= c
		}
		ok = pad == 0
	}
	if !ok {
		clear(buf)
		return nil, ErrDecrypt
	}
	return buf[8 : 8+mli], nil
}

// wrap is the RFC 3394 wrapping process W over buf = A || R[1..n], in place.
func wrap(b cipher.Block, buf []byte) {
	n := len(buf)/8 - 1
	var blk [16]byte
	copy(blk[:8], buf[:8])
	for j := 0; j < 6; j++ {
		for i := 1; i <= n; i++ {
			copy(blk[8:], buf[8*i:8*i+8])
			b.Encrypt(blk[:], blk[:])
			t := uint64(n*j + i)
			binary.BigEndian.PutUint64(blk[:8], binary.BigEndian.Uint64(blk[:8])^t)
			copy(buf[8*i:8*i+8], blk[8:])
		}
	}
	copy(buf[:8], blk[:8])
}

// unwrap is the RFC 3394 unwrapping process W^-1 over buf, in place.
func unwrap(b cipher.Block, buf []byte) {
	n := len(buf)/8 - 1
	var blk [16]byte
	copy(blk[:8], buf[:8])
	for j := 5; j >= 0; j-- {
		for i := n; i >= 1; i-- {
			t := uint64(n*j + i)
			binary.BigEndian.PutUint64(blk[:8], binary.BigEndian.Uint64(blk[:8])^t)
			copy(blk[8:], buf[8*i:8*i+8])
			b.Decrypt(blk[:], blk[:])
			copy(buf[8*i:8*i+8], blk[8:])
		}
	}
	copy(buf[:8], blk[:8])
}
