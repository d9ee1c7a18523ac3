package azurekvtest

import (
	"bytes"
	"encoding/hex"
	"testing"
)

func TestAESKeyWrapRFC3394(t *testing.T) {
	// RFC 3394 section 4.6: 256 bits of key data with a 256-bit KEK.
	kek, _ := hex.DecodeString("000102030405060708090A0B0C0D0E0F101112131415161718191A1B1C1D1E1F")
	data, _ := hex.DecodeString("00112233445566778899AABBCCDDEEFF000102030405060708090A0B0C0D0E0F")
	want, _ := hex.DecodeString("28C9F404C4B810F4CBCCB35CFB87F8263F5786E2D80ED326CBC7F0E71A99F43BFB988B9B7A02DD21")
	got, err := aesKeyWrap(kek, data)
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(got, want) {
		t.Fatalf("wrap = %x, want %x", got, want)
	}
	back, err := aesKeyUnwrap(kek, got)
	if err != nil || !bytes.Equal(back, data) {
		t.Fatalf("unwrap = %x, %v", back, err)
	}
	for i := range got {
		bad := bytes.Clone(got)
		bad[i] ^= 0x80
		if _, err := aesKeyUnwrap(kek, bad); err == nil {
			t.Fatalf("flipped byte %d unwrapped", i)
		}
	}
	if _, err := aesKeyUnwrap(kek, got[:len(got)-8]); err == nil {
		t.Fatal("truncated ciphertext unwrapped")
	}
	if _, err := aesKeyWrap(kek, data[:15]); err == nil {
		t.Fatal("wrapped a length that is not a multiple of 8")
	}
}
