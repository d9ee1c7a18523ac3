package tokensource

import (
	"encoding/base64"
	"strings"
	"testing"
	"time"
)

func TestJWTExpiry(t *testing.T) {
	b64 := base64.RawURLEncoding.EncodeToString
	hdr := b64([]byte(`{"alg":"RS256"}`))
	tok := func(payload string) string { return hdr + "." + b64([]byte(payload)) + ".sig" }
	tests := []struct {
		name  string
		token string
		want  time.Time
		ok    bool
	}{
		{"integer", tok(`{"exp":1893456000}`), time.Unix(1893456000, 0), true},
		{"fraction", tok(`{"exp":1893456000.5}`), time.Unix(1893456000, 5e8), true},
		{"exponent", tok(`{"exp":1.893456e9}`), time.Unix(1893456000, 0), true},
		{"padded payload", hdr + "." + base64.URLEncoding.EncodeToString([]byte(`{"exp":1}`)) + ".s", time.Unix(1, 0), true},
		{"empty signature", tok(`{"exp":1893456000}`)[:len(tok(`{"exp":1893456000}`))-3], time.Unix(1893456000, 0), true},
		{"no exp", tok(`{"aud":"x"}`), time.Time{}, false},
		{"string exp", tok(`{"exp":"1893456000"}`), time.Time{}, false},
		{"null exp", tok(`{"exp":null}`), time.Time{}, false},
		{"zero exp", tok(`{"exp":0}`), time.Time{}, false},
		{"negative exp", tok(`{"exp":-5}`), time.Time{}, false},
		{"huge exp", tok(`{"exp":1e300}`), time.Time{}, false},
		{"payload not object", tok(`[1]`), time.Time{}, false},
		{"bad base64", hdr + ".!!!.sig", time.Time{}, false},
		{"two parts", hdr + "." + b64([]byte(`{"exp":1}`)), time.Time{}, false},
		{"JWE five parts", "a.b.c.d.e", time.Time{}, false},
		{"empty", "", time.Time{}, false},
		{"too long", tok(`{"exp":1,"p":"` + strings.Repeat("a", maxJWTBytes) + `"}`), time.Time{}, false},
	}
	for _, tc := range tests {
		got, ok := jwtExpiry(tc.token)
		if ok != tc.ok || !got.Equal(tc.want) {
			t.Errorf("%s: got (%v, %v), want (%v, %v)", tc.name, got, ok, tc.want, tc.ok)
		}
	}
}

func FuzzJWTExpiry(f *testing.F) {
	f.Add(makeJWT(f, map[string]any{"exp": 1893456000}))
	f.Add(makeJWT(f, map[string]any{"exp": 1.5}))
	f.Add(makeJWT(f, map[string]any{"exp": "x"}))
	f.Add("a.b.c")
	f.Add("..")
	f.Add("eyJ.eyJleHAiOjF9.")
	f.Fuzz(func(t *testing.T, token string) {
		exp, ok := jwtExpiry(token)
		if !ok {
			if !exp.IsZero() {
				t.Errorf("not ok but exp = %v", exp)
			}
			return
		}
		if exp.Unix() <= 0 && exp.Nanosecond() == 0 || exp.Unix() > maxNumericDate {
			t.Errorf("exp %v out of range", exp)
		}
		// Whatever it returns must be usable in the cache's arithmetic.
		_ = exp.Add(-DefaultRefreshBefore).Before(time.Now())
	})
}
