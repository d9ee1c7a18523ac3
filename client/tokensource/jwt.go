package tokensource

import (
	"encoding/base64"
	"encoding/json"
	"math"
	"strings"
	"time"
)

const (
	// maxJWTBytes bounds the input jwtExpiry will decode; larger strings
	// are not cached rather than parsed at length.
	maxJWTBytes = 64 << 10

	// maxNumericDate is 9999-12-31T23:59:59Z. Later values are not
	// plausible expiries and would overflow time arithmetic.
	maxNumericDate = 253402300799
)

// jwtExpiry returns the exp claim of a compact JWS without verifying the
// signature: the KMS verifies the token, and a forged exp could only make
// this client cache its own token for the wrong length of time. ok is false
// when the token is not a three-part JWS or has no usable exp.
func jwtExpiry(token string) (exp time.Time, ok bool) {
	if len(token) > maxJWTBytes || strings.Count(token, ".") != 2 {
		return time.Time{}, false
	}
	payload := token[strings.IndexByte(token, '.')+1 : strings.LastIndexByte(token, '.')]
	// base64url without padding per RFC 7515; tolerate padding anyway.
	raw, err := base64.RawURLEncoding.DecodeString(strings.TrimRight(payload, "="))
	if err != nil {
		return time.Time{}, false
	}
	var claims struct {
		Exp json.RawMessage `json:"exp"`
	}
	if err := json.Unmarshal(raw, &claims); err != nil || len(claims.Exp) == 0 {
		return time.Time{}, false
	}
	// NumericDate (RFC 7519) is a JSON number of seconds and may have a
	// fraction. A string or null is not a NumericDate; float64 decoding
	// rejects the former, and the range check the latter (it leaves 0).
	var secs float64
	if err := json.Unmarshal(claims.Exp, &secs); err != nil {
		return time.Time{}, false
	}
	if !(secs > 0 && secs <= maxNumericDate) {
		return time.Time{}, false
	}
	whole := math.Floor(secs)
	return time.Unix(int64(whole), int64((secs-whole)*1e9)), true
}
