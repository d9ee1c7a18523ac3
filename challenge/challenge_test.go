package challenge

import (
	"bytes"
	"crypto/rand"
	"testing"
	"time"
)

func newIssuer(t *testing.T, secret byte, now *time.Time) *Issuer {
	t.Helper()
	is, err := NewIssuer(bytes.Repeat([]byte{secret}, SecretSize), Options{Now: func() time.Time { return *now }})
	if err != nil {
		t.Fatal(err)
	}
	return is
}

func TestIssueAndCheck(t *testing.T) {
	now := time.Unix(1_800_000_000, 0)
	is := newIssuer(t, 1, &now)
	n, exp, err := is.Issue()
	if err != nil {
		t.Fatal(err)
	}
	if len(n) != Size {
		t.Fatalf("nonce length %d, want %d", len(n), Size)
	}
	if want := now.Add(DefaultLifetime); !exp.Equal(want) {
		t.Fatalf("expiry %v, want %v", exp, want)
	}
	if err := is.Check(n); err != nil {
		t.Fatalf("fresh nonce refused: %v", err)
	}
	// Another replica with the same secret accepts it: no shared state.
	if err := newIssuer(t, 1, &now).Check(n); err != nil {
		t.Fatalf("replica refused nonce: %v", err)
	}
	n2, _, _ := is.Issue()
	if bytes.Equal(n, n2) {
		t.Fatal("two nonces are equal")
	}
}

func TestCheckRefusals(t *testing.T) {
	now := time.Unix(1_800_000_000, 0)
	is := newIssuer(t, 1, &now)
	n, _, err := is.Issue()
	if err != nil {
		t.Fatal(err)
	}
	flip := func(i int) []byte {
		c := bytes.Clone(n)
		c[i] ^= 0x01
		return c
	}
	cases := []struct {
		name  string
		nonce []byte
		check *Issuer
		at    time.Time
		want  Reason
	}{
		{"empty", nil, is, now, ReasonMalformed},
		{"short", n[:Size-1], is, now, ReasonMalformed},
		{"long", append(bytes.Clone(n), 0), is, now, ReasonMalformed},
		{"bad version", flip(0), is, now, ReasonMalformed},
		{"forged random", flip(10), is, now, ReasonForged},
		{"extended expiry", flip(headerLen - 1), is, now, ReasonForged},
		{"forged mac", flip(Size - 1), is, now, ReasonForged},
		{"other server", n, newIssuer(t, 2, &now), now, ReasonForeign},
		{"expired", n, is, now.Add(DefaultLifetime), ReasonExpired},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			saved := now
			now = c.at
			defer func() { now = saved }()
			err := c.check.Check(c.nonce)
			if got := ReasonOf(err); got != c.want {
				t.Fatalf("reason %q (%v), want %q", got, err, c.want)
			}
			if bytes.Contains([]byte(err.Error()), c.nonce) && len(c.nonce) > 0 {
				t.Fatal("error message contains the nonce")
			}
		})
	}
}

func TestNewIssuerRejectsShortSecret(t *testing.T) {
	if _, err := NewIssuer(make([]byte, 16), Options{}); err == nil {
		t.Fatal("16-byte secret accepted")
	}
}

func FuzzCheck(f *testing.F) {
	now := time.Unix(1_800_000_000, 0)
	// A fresh secret per process: fuzz workers are separate processes
	// that each run this setup, and with a shared fixed secret one
	// worker's seed nonce would be genuinely valid in another.
	secret := make([]byte, SecretSize)
	if _, err := rand.Read(secret); err != nil {
		f.Fatal(err)
	}
	is, err := NewIssuer(secret, Options{Now: func() time.Time { return now }})
	if err != nil {
		f.Fatal(err)
	}
	n, _, _ := is.Issue()
	f.Add(n)
	f.Add([]byte{})
	f.Fuzz(func(t *testing.T, b []byte) {
		if is.Check(b) == nil && !bytes.Equal(b, n) {
			t.Fatalf("accepted a nonce this issuer did not issue: %x", b)
		}
	})
}
