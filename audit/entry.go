package audit

import (
	"crypto/sha256"
	"encoding/binary"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"maps"
	"slices"
	"strings"
	"time"
	"unicode/utf8"
)

// Kind says what an entry records.
type Kind string

// Kinds of entries.
const (
	KindRelease      Kind = "release"       // a key release decision
	KindRotation     Kind = "rotation"      // a key created or moved between states by rotation
	KindStateChange  Kind = "state_change"  // an operator disabled, enabled or destroyed a key
	KindPolicyChange Kind = "policy_change" // a key set's release policy changed
	KindAdminCall    Kind = "admin_call"    // any other admin API call
	KindKEK          Kind = "kek"           // a KEK check, rotation or failure
)

// Outcome is how the recorded action ended.
type Outcome string

// Outcomes: releases are granted or denied, everything else ok or error.
const (
	OutcomeGranted Outcome = "granted"
	OutcomeDenied  Outcome = "denied"
	OutcomeOK      Outcome = "ok"
	OutcomeError   Outcome = "error"
)

// Hash is a SHA-256 digest; it reads and writes as 64 lowercase hex digits.
type Hash [sha256.Size]byte

// String is the hash in lowercase hex.
func (h Hash) String() string { return hex.EncodeToString(h[:]) }

// MarshalText implements encoding.TextMarshaler.
func (h Hash) MarshalText() ([]byte, error) { return []byte(h.String()), nil }

// UnmarshalText implements encoding.TextUnmarshaler.
func (h *Hash) UnmarshalText(b []byte) error {
	if len(b) != 2*len(h) {
		return fmt.Errorf("hash: %d hex digits, want %d", len(b), 2*len(h))
	}
	if _, err := hex.Decode(h[:], b); err != nil {
		return fmt.Errorf("hash: %w", err)
	}
	return nil
}

// Entry is one audit record. Seq, PrevHash and Hash are assigned by
// Log.Append; the rest is the caller's. Details must not hold keys, tokens
// or nonces: the log is exported to SIEMs in the clear.
type Entry struct {
	Seq     uint64
	Time    time.Time
	Kind    Kind
	Actor   string // token subject or admin identity
	KeySet  string
	KID     string
	Outcome Outcome
	Reason  string
	// ClaimsDigest is DigestClaims of the attestation claims a release
	// decision was made on, so the log binds them without copying them.
	ClaimsDigest string
	Details      map[string]string
	PrevHash     Hash
	Hash         Hash
}

const entryDomain = "attested-kms/v1 audit entry\x00"

// ComputeHash is the hash of e as doc.go defines it, over every field but
// Hash itself.
func (e *Entry) ComputeHash() Hash {
	b := make([]byte, 0, 256)
	b = append(b, entryDomain...)
	b = binary.BigEndian.AppendUint64(b, e.Seq)
	b = appendTime(b, e.Time)
	for _, s := range []string{string(e.Kind), e.Actor, e.KeySet, e.KID, string(e.Outcome), e.Reason, e.ClaimsDigest} {
		b = appendStr(b, s)
	}
	keys := make([]string, 0, len(e.Details))
	for k := range e.Details {
		keys = append(keys, k)
	}
	slices.Sort(keys)
	b = binary.BigEndian.AppendUint32(b, uint32(len(keys)))
	for _, k := range keys {
		b = appendStr(b, k)
		b = appendStr(b, e.Details[k])
	}
	b = appendStr(b, string(e.PrevHash[:]))
	return sha256.Sum256(b)
}

func appendStr(b []byte, s string) []byte {
	b = binary.BigEndian.AppendUint32(b, uint32(len(s)))
	return append(b, s...)
}

func appendTime(b []byte, t time.Time) []byte {
	b = binary.BigEndian.AppendUint64(b, uint64(t.Unix()))
	return binary.BigEndian.AppendUint32(b, uint32(t.Nanosecond()))
}

// Limits on what one entry may hold, so one bad caller cannot bloat the log
// and every exported line stays well under the Decoder's line limit.
const (
	maxField   = 4096
	maxDetails = 64
)

// validate checks the caller's part of an entry. Strings must be UTF-8:
// JSON would silently replace invalid bytes and the export would then no
// longer match the hash.
func (e *Entry) validate() error {
	switch e.Kind {
	case KindRelease, KindRotation, KindStateChange, KindPolicyChange, KindAdminCall, KindKEK:
	default:
		return fmt.Errorf("kind %q: %w", e.Kind, ErrInvalidEntry)
	}
	switch e.Outcome {
	case OutcomeGranted, OutcomeDenied, OutcomeOK, OutcomeError:
	default:
		return fmt.Errorf("outcome %q: %w", e.Outcome, ErrInvalidEntry)
	}
	if e.ClaimsDigest != "" {
		if _, err := hex.DecodeString(e.ClaimsDigest); err != nil || len(e.ClaimsDigest) != 2*sha256.Size || e.ClaimsDigest != strings.ToLower(e.ClaimsDigest) {
			return fmt.Errorf("claims digest is not 64 lowercase hex digits: %w", ErrInvalidEntry)
		}
	}
	if len(e.Details) > maxDetails {
		return fmt.Errorf("%d details, at most %d: %w", len(e.Details), maxDetails, ErrInvalidEntry)
	}
	for name, v := range map[string]string{"actor": e.Actor, "keyset": e.KeySet, "kid": e.KID, "reason": e.Reason} {
		if err := checkField(name, v); err != nil {
			return err
		}
	}
	for k, v := range e.Details {
		if err := checkField("detail key", k); err != nil {
			return err
		}
		if err := checkField("detail value", v); err != nil {
			return err
		}
	}
	if y := e.Time.UTC().Year(); !e.Time.IsZero() && (y < 1 || y > 9999) {
		return fmt.Errorf("time year %d outside 1..9999: %w", y, ErrInvalidEntry)
	}
	return nil
}

func checkField(name, v string) error {
	if len(v) > maxField {
		return fmt.Errorf("%s: %d bytes, at most %d: %w", name, len(v), maxField, ErrInvalidEntry)
	}
	if !utf8.ValidString(v) {
		return fmt.Errorf("%s: not UTF-8: %w", name, ErrInvalidEntry)
	}
	return nil
}

// DigestClaims is the hex SHA-256 of v's JSON encoding, for
// Entry.ClaimsDigest. encoding/json writes struct fields in declaration
// order and map keys sorted, so the same claims always give the same digest.
func DigestClaims(v any) (string, error) {
	b, err := json.Marshal(v)
	if err != nil {
		return "", fmt.Errorf("audit: encode claims: %w", err)
	}
	sum := sha256.Sum256(b)
	return hex.EncodeToString(sum[:]), nil
}

// clone copies e with its own Details map, so neither the caller nor a
// backend can change a stored entry through a shared map.
func (e Entry) clone() Entry {
	e.Details = maps.Clone(e.Details)
	return e
}
