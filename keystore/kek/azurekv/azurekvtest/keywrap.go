package azurekvtest

import (
	"crypto/aes"
	"crypto/subtle"
	"encoding/binary"
	"errors"
)

// RFC 3394 AES key wrap, which the service performs for A256KW. The Go
// standard library has no key wrap, and the fake must really encrypt so
// tampering fails the way the service fails.

var kwDefaultIV = [8]byte{0xA6, 0xA6, 0xA6, 0xA6, 0xA6, 0xA6, 0xA6, 0xA6}

var errKeyWrap = errors.New("aes key wrap: integrity check failed or bad length")

func aesKeyWrap(kek, plaintext []byte) ([]byte, error) {
	if len(plaintext) < 16 || len(plaintext)%8 != 0 {
		return nil, errKeyWrap
	}
	block, err := aes.NewCipher(kek)
	if err != nil {
		return nil, err
	}
	n := len(plaintext) / 8
	out := make([]byte, 8+len(plaintext))
	copy(out[8:], plaintext)
	a := kwDefaultIV
	var buf [16]byte
	for j := 0; j <= 5; j++ {
		for i := 1; i <= n; i++ {
			copy(buf[:8], a[:])
			copy(buf[8:], out[8*i:8*i+8])
			block.Encrypt(buf[:], buf[:])
			t := uint64(n*j + i)
			binary.BigEndian.PutUint64(a[:], binary.BigEndian.Uint64(buf[:8])^t)
			copy(out[8*i:8*i+8], buf[8:])
		}
	}
	copy(out[:8], a[:])
	return out, nil
}

func aesKeyUnwrap(kek, ciphertext []byte) ([]byte, error) {
	if len(ciphertext) < 24 || len(ciphertext)%8 != 0 {
		return nil, errKeyWrap
	}
	block, err := aes.NewCipher(kek)
	if err != nil {
		return nil, err
	}
	n := len(ciphertext)/8 - 1
	out := make([]byte, len(ciphertext)-8)
	copy(out, ciphertext[8:])
	var a [8]byte
	copy(a[:], ciphertext[:8])
	var buf [16]byte
	for j := 5; j >= 0; j-- {
		for i := n; i >= 1; i-- {
			t := uint64(n*j + i)
			binary.BigEndian.PutUint64(buf[:8], binary.BigEndian.Uint64(a[:])^t)
			copy(buf[8:], out[8*(i-1):8*i])
			block.Decrypt(buf[:], buf[:])
			copy(a[:], buf[:8])
			copy(out[8*(i-1):8*i], buf[8:])
		}
	}
	if subtle.ConstantTimeCompare(a[:], kwDefaultIV[:]) != 1 {
		clear(out)
		return nil, errKeyWrap
	}
	return out, nil
}
