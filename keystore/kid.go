package keystore

import (
	"encoding/hex"
	"fmt"
	"io"
)

// kidRandomAttempts bounds how many fresh random kids are drawn before
// falling back to choosing among the free key identifiers directly. Random
// draws keep kids unpredictable; the fallback keeps a nearly full identifier
// space from failing by bad luck.
const kidRandomAttempts = 32

// newKID returns a random kid whose first byte (the RFC 9458 key identifier)
// is not in used. used marks identifiers held by undestroyed keys of the set.
func newKID(rand io.Reader, used *[256]bool) (string, error) {
	var free []byte
	for id := range 256 {
		if !used[id] {
			free = append(free, byte(id))
		}
	}
	if len(free) == 0 {
		return "", ErrKeyIDExhausted
	}
	var b [8]byte
	for range kidRandomAttempts {
		if _, err := io.ReadFull(rand, b[:]); err != nil {
			return "", fmt.Errorf("generate kid: %w", err)
		}
		if !used[b[0]] {
			return hex.EncodeToString(b[:]), nil
		}
	}
	// Slight modulo bias is irrelevant: the identifier need only be unused.
	b[0] = free[(int(b[1])<<8|int(b[2]))%len(free)]
	return hex.EncodeToString(b[:]), nil
}

// usedKeyIDs marks the key identifiers held by keys.
func usedKeyIDs(keys []*Key) *[256]bool {
	var used [256]bool
	for _, k := range keys {
		if !k.holdsKeyID() {
			continue
		}
		if id, err := ParseKeyID(k.KID); err == nil {
			used[id] = true
		}
	}
	return &used
}
