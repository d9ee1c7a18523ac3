package azurevtpm

import (
	"bytes"
	"crypto/rsa"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math/big"
	"strings"
)

// AKKeyID is the JWK key ID under which the runtime data lists the vTPM's
// attestation key.
const AKKeyID = "HCLAkPub"

// UserDataSize is the size of the user data the guest writes to NV index
// 0x01400002 and the paravisor copies into the runtime data.
const UserDataSize = 64

// RuntimeData is the HCL report's variable data: JSON written by the
// paravisor. Unknown members are ignored: Azure adds fields over time and
// none of them weakens what is checked here.
type RuntimeData struct {
	Keys            []JWK           `json:"keys"`
	VMConfiguration VMConfiguration `json:"vm-configuration"`
	// UserData is the hex encoding (Azure writes upper case) of the 64
	// bytes in NV index 0x01400002 when the report was made.
	UserData string `json:"user-data,omitempty"`
}

// JWK is an RSA JSON Web Key as the runtime data lists it.
type JWK struct {
	KeyID  string   `json:"kid"`
	KeyOps []string `json:"key_ops,omitempty"`
	Type   string   `json:"kty"`
	E      string   `json:"e,omitempty"`
	N      string   `json:"n,omitempty"`
}

// VMConfiguration is the VM's security configuration as the paravisor
// reports it.
type VMConfiguration struct {
	ConsoleEnabled bool   `json:"console-enabled"`
	SecureBoot     bool   `json:"secure-boot"`
	TPMEnabled     bool   `json:"tpm-enabled"`
	VMUniqueID     string `json:"vmUniqueId,omitempty"`
}

// ParseRuntimeData decodes the runtime data JSON.
func ParseRuntimeData(b []byte) (*RuntimeData, error) {
	if len(b) > MaxRuntimeDataSize {
		return nil, fmt.Errorf("azurevtpm: runtime data is %d bytes, limit %d", len(b), MaxRuntimeDataSize)
	}
	var rd RuntimeData
	dec := json.NewDecoder(bytes.NewReader(b))
	if err := dec.Decode(&rd); err != nil {
		return nil, fmt.Errorf("azurevtpm: runtime data: %w", err)
	}
	if dec.More() || dec.Decode(&json.RawMessage{}) != io.EOF { // also a stray "}" or "]"
		return nil, errors.New("azurevtpm: runtime data: trailing data after the JSON object")
	}
	return &rd, nil
}

// AttestationKey returns the RSA key listed under AKKeyID. Exactly one
// such key must be present.
func (rd *RuntimeData) AttestationKey() (*rsa.PublicKey, error) {
	var found *JWK
	for i := range rd.Keys {
		if rd.Keys[i].KeyID != AKKeyID {
			continue
		}
		if found != nil {
			return nil, fmt.Errorf("azurevtpm: runtime data lists %s twice", AKKeyID)
		}
		found = &rd.Keys[i]
	}
	if found == nil {
		return nil, fmt.Errorf("azurevtpm: runtime data lists no %s key", AKKeyID)
	}
	if found.Type != "RSA" {
		return nil, fmt.Errorf("azurevtpm: %s is a %q key, want RSA", AKKeyID, found.Type)
	}
	n, err := decodeB64URL(found.N)
	if err != nil {
		return nil, fmt.Errorf("azurevtpm: %s modulus: %w", AKKeyID, err)
	}
	e, err := decodeB64URL(found.E)
	if err != nil {
		return nil, fmt.Errorf("azurevtpm: %s exponent: %w", AKKeyID, err)
	}
	key := &rsa.PublicKey{N: new(big.Int).SetBytes(n)}
	// TPM RSA keys are 1024 to 4096 bits; below 2048 is not acceptable for
	// an attestation key, and a huge modulus would only cost CPU time.
	if bits := key.N.BitLen(); bits < 2048 || bits > 4096 {
		return nil, fmt.Errorf("azurevtpm: %s modulus is %d bits, want 2048-4096", AKKeyID, bits)
	}
	eInt := new(big.Int).SetBytes(e)
	if eInt.BitLen() > 31 || eInt.Int64() < 3 || eInt.Bit(0) == 0 {
		return nil, fmt.Errorf("azurevtpm: %s exponent is not an odd number in [3, 2^31)", AKKeyID)
	}
	key.E = int(eInt.Int64())
	return key, nil
}

// UserDataBytes decodes UserData. It returns nil when the runtime data has
// no user-data (reports made before the guest wrote NV 0x01400002).
func (rd *RuntimeData) UserDataBytes() ([]byte, error) {
	if rd.UserData == "" {
		return nil, nil
	}
	if len(rd.UserData) != 2*UserDataSize {
		return nil, fmt.Errorf("azurevtpm: user-data is %d hex digits, want %d", len(rd.UserData), 2*UserDataSize)
	}
	b, err := hex.DecodeString(rd.UserData)
	if err != nil {
		return nil, fmt.Errorf("azurevtpm: user-data is not hex: %w", err)
	}
	return b, nil
}

// NewRSAJWK encodes key as a JWK with the given key ID, as the paravisor
// lists it (unpadded base64url, big-endian).
func NewRSAJWK(kid string, key *rsa.PublicKey, ops ...string) JWK {
	e := big.NewInt(int64(key.E)).Bytes()
	return JWK{
		KeyID:  kid,
		KeyOps: ops,
		Type:   "RSA",
		E:      base64.RawURLEncoding.EncodeToString(e),
		N:      base64.RawURLEncoding.EncodeToString(key.N.Bytes()),
	}
}

// decodeB64URL decodes base64url with or without padding, as JWK
// producers differ; other alphabets are rejected.
func decodeB64URL(s string) ([]byte, error) {
	if strings.ContainsAny(s, "\r\n") {
		return nil, errors.New("line breaks in base64url")
	}
	if strings.HasSuffix(s, "=") {
		return base64.URLEncoding.DecodeString(s)
	}
	return base64.RawURLEncoding.DecodeString(s)
}
