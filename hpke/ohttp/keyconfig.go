package ohttp

import (
	"encoding/binary"
	"fmt"
	"math"

	"github.com/attested-kms/attested-kms/hpke"
)

// SymmetricAlgorithm is one (KDF, AEAD) pair a key configuration offers.
type SymmetricAlgorithm struct {
	KDFID  uint16
	AEADID uint16
}

// DefaultAlgorithm is the pair of the KMS suite (hpke.KDFID, hpke.AEADID),
// the only one EncapsulateRequest uses and NewGatewayKey offers.
func DefaultAlgorithm() SymmetricAlgorithm {
	return SymmetricAlgorithm{KDFID: hpke.KDFID, AEADID: hpke.AEADID}
}

// KeyConfig is an RFC 9458 section 3 key configuration: what a client needs to
// encrypt to one gateway key.
type KeyConfig struct {
	KeyID      uint8
	KEMID      uint16
	PublicKey  []byte
	Algorithms []SymmetricAlgorithm
}

// maxAlgorithms is the most (KDF, AEAD) pairs the 16-bit length field holds.
const maxAlgorithms = math.MaxUint16 / 4

// publicKeyLen is Npk of the KEMs this package can parse. Only X25519 is
// listed: a configuration of another KEM is useless to the KMS's clients,
// and its key length could not be checked.
func publicKeyLen(kemID uint16) (int, bool) {
	if kemID == hpke.KEMID {
		return hpke.X25519KeySize, true
	}
	return 0, false
}

// validate checks everything MarshalBinary and UnmarshalBinary require of a
// configuration beyond its framing.
func (c KeyConfig) validate() error {
	npk, ok := publicKeyLen(c.KEMID)
	if !ok {
		return fmt.Errorf("%w: KEM 0x%04x", ErrUnsupportedSuite, c.KEMID)
	}
	if len(c.PublicKey) != npk {
		return fmt.Errorf("%w: public key is %d bytes, want %d", ErrMalformed, len(c.PublicKey), npk)
	}
	if err := hpke.ValidateX25519PublicKey(c.PublicKey); err != nil {
		return fmt.Errorf("ohttp: key configuration %d: %w", c.KeyID, err)
	}
	if len(c.Algorithms) == 0 || len(c.Algorithms) > maxAlgorithms {
		return fmt.Errorf("%w: %d symmetric algorithms, want 1 to %d", ErrMalformed, len(c.Algorithms), maxAlgorithms)
	}
	return nil
}

// MarshalBinary encodes c as in RFC 9458 section 3.1: key_id(8) kem_id(16)
// public_key(Npk) length(16) then (kdf_id(16) aead_id(16)) pairs.
func (c KeyConfig) MarshalBinary() ([]byte, error) {
	if err := c.validate(); err != nil {
		return nil, err
	}
	b := make([]byte, 0, 1+2+len(c.PublicKey)+2+4*len(c.Algorithms))
	b = append(b, c.KeyID)
	b = binary.BigEndian.AppendUint16(b, c.KEMID)
	b = append(b, c.PublicKey...)
	b = binary.BigEndian.AppendUint16(b, uint16(4*len(c.Algorithms)))
	for _, a := range c.Algorithms {
		b = binary.BigEndian.AppendUint16(b, a.KDFID)
		b = binary.BigEndian.AppendUint16(b, a.AEADID)
	}
	return b, nil
}

// UnmarshalBinary decodes exactly one key configuration, rejecting trailing
// bytes, unknown KEMs (ErrUnsupportedSuite), low-order keys and any framing
// error (ErrMalformed). The public key is copied, not aliased.
func (c *KeyConfig) UnmarshalBinary(b []byte) error {
	if len(b) < 3 {
		return fmt.Errorf("%w: key configuration is %d bytes", ErrMalformed, len(b))
	}
	cfg := KeyConfig{KeyID: b[0], KEMID: binary.BigEndian.Uint16(b[1:3])}
	npk, ok := publicKeyLen(cfg.KEMID)
	if !ok {
		return fmt.Errorf("%w: KEM 0x%04x", ErrUnsupportedSuite, cfg.KEMID)
	}
	rest := b[3:]
	if len(rest) < npk+2 {
		return fmt.Errorf("%w: key configuration truncated", ErrMalformed)
	}
	cfg.PublicKey = append([]byte(nil), rest[:npk]...)
	algLen := int(binary.BigEndian.Uint16(rest[npk : npk+2]))
	rest = rest[npk+2:]
	if algLen != len(rest) || algLen == 0 || algLen%4 != 0 {
		return fmt.Errorf("%w: symmetric algorithms are %d bytes, %d present", ErrMalformed, algLen, len(rest))
	}
	cfg.Algorithms = make([]SymmetricAlgorithm, 0, algLen/4)
	for i := 0; i < algLen; i += 4 {
		cfg.Algorithms = append(cfg.Algorithms, SymmetricAlgorithm{
			KDFID:  binary.BigEndian.Uint16(rest[i : i+2]),
			AEADID: binary.BigEndian.Uint16(rest[i+2 : i+4]),
		})
	}
	if err := cfg.validate(); err != nil {
		return err
	}
	*c = cfg
	return nil
}

// MarshalKeyConfigs encodes the application/ohttp-keys body of RFC 9458
// section 3.2: each configuration prefixed by its length as u16be. An empty
// list encodes to no bytes, which is what a gateway with no active key serves.
func MarshalKeyConfigs(cfgs []KeyConfig) ([]byte, error) {
	var out []byte
	for _, c := range cfgs {
		b, err := c.MarshalBinary()
		if err != nil {
			return nil, err
		}
		if len(b) > math.MaxUint16 {
			return nil, fmt.Errorf("%w: key configuration %d is %d bytes", ErrMalformed, c.KeyID, len(b))
		}
		out = binary.BigEndian.AppendUint16(out, uint16(len(b)))
		out = append(out, b...)
	}
	return out, nil
}

// ParseKeyConfigs decodes an application/ohttp-keys body. It is strict: any
// framing error fails the whole list, because salvaging part of a damaged
// list is where two parsers start to disagree about what a gateway offers.
// Configurations of KEMs this package does not implement are skipped, which
// is what the length prefixes are for; if nothing usable remains the error is
// ErrUnsupportedSuite, and an empty body is ErrMalformed.
func ParseKeyConfigs(b []byte) ([]KeyConfig, error) {
	if len(b) == 0 {
		return nil, fmt.Errorf("%w: no key configurations", ErrMalformed)
	}
	var cfgs []KeyConfig
	skipped := 0
	for len(b) > 0 {
		if len(b) < 2 {
			return nil, fmt.Errorf("%w: truncated length prefix", ErrMalformed)
		}
		n := int(binary.BigEndian.Uint16(b))
		b = b[2:]
		if n > len(b) {
			return nil, fmt.Errorf("%w: key configuration of %d bytes, %d present", ErrMalformed, n, len(b))
		}
		one := b[:n]
		b = b[n:]
		if len(one) >= 3 && !knownKEM(binary.BigEndian.Uint16(one[1:3])) {
			skipped++
			continue
		}
		var c KeyConfig
		if err := c.UnmarshalBinary(one); err != nil {
			return nil, err
		}
		cfgs = append(cfgs, c)
	}
	if len(cfgs) == 0 {
		return nil, fmt.Errorf("%w: none of %d key configurations uses a supported KEM", ErrUnsupportedSuite, skipped)
	}
	return cfgs, nil
}

func knownKEM(id uint16) bool {
	_, ok := publicKeyLen(id)
	return ok
}
