// Package kektest is the conformance suite every KEK provider passes: the
// same round trips, tamper checks, error classes and off-switch behaviour,
// whether the key lives in a file, an HSM or a cloud service (reached
// through a loopback server that speaks the service's wire protocol).
package kektest

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/base64"
	"encoding/hex"
	"errors"
	"strings"
	"sync"
	"testing"

	"github.com/attested-kms/attested-kms/keystore/kek"
)

// Owner acts as the customer who holds the key.
type Owner interface {
	// Disable switches the key off (disabled state, or the KMS identity's
	// permission revoked); Enable switches it back on.
	Disable(t testing.TB)
	Enable(t testing.TB)
}

// Deleter is an Owner that can also delete the key (or schedule its
// deletion) and, where the service allows, cancel that.
type Deleter interface {
	Delete(t testing.TB)
	Restore(t testing.TB)
}

// Network simulates the provider being unreachable or throttling.
type Network interface {
	// Outage makes every call fail as an outage (connection refused, 5xx)
	// while on is true.
	Outage(t testing.TB, on bool)
	// Throttle makes the next n calls fail as throttled (HTTP 429,
	// ThrottlingException, RESOURCE_EXHAUSTED).
	Throttle(t testing.TB, n int)
}

// Config is what Run needs. Owner and Network are optional (nil skips
// those checks, which the caller must justify: only the local provider has
// no owner other than the file system).
type Config struct {
	// New returns a provider for the key under test.
	New func(t testing.TB) kek.Provider
	// Owner, if the key has one other than the KMS.
	Owner Owner
	// Network, if calls leave the process.
	Network Network
	// Randomized: two wraps of the same key differ (every provider here
	// uses random nonces or OAEP).
	Randomized bool
}

// Run runs the conformance suite.
func Run(t *testing.T, c Config) {
	ctx := context.Background()
	p := c.New(t)
	dek := make([]byte, 32)
	if _, err := rand.Read(dek); err != nil {
		t.Fatal(err)
	}
	aad := []byte("attested-kms/v1 test aad: keyset=default level=2")

	t.Run("round trip", func(t *testing.T) {
		w, err := p.Wrap(ctx, dek, aad)
		if err != nil {
			t.Fatal(err)
		}
		if w.KEKURI != p.URI() || w.Algorithm == "" || len(w.Ciphertext) == 0 {
			t.Fatalf("wrapped %+v: want KEKURI %q, an algorithm and a ciphertext", w, p.URI())
		}
		if bytes.Contains(w.Ciphertext, dek) {
			t.Fatal("ciphertext contains the data key")
		}
		got, err := p.Unwrap(ctx, w, aad)
		if err != nil {
			t.Fatal(err)
		}
		if !bytes.Equal(got, dek) {
			t.Fatal("round trip changed the data key")
		}
		if c.Randomized {
			w2, err := p.Wrap(ctx, dek, aad)
			if err != nil {
				t.Fatal(err)
			}
			if bytes.Equal(w.Ciphertext, w2.Ciphertext) {
				t.Fatal("two wraps are identical")
			}
		}
		// A second handle on the same key unwraps what the first wrapped.
		if got, err := c.New(t).Unwrap(ctx, w, aad); err != nil || !bytes.Equal(got, dek) {
			t.Fatalf("second provider handle: %v", err)
		}
	})

	t.Run("authentication", func(t *testing.T) {
		w, err := p.Wrap(ctx, dek, aad)
		if err != nil {
			t.Fatal(err)
		}
		wantAuth := func(what string, w kek.Wrapped, aad []byte) {
			t.Helper()
			_, err := p.Unwrap(ctx, w, aad)
			// A format or version byte hit by the flip may read as an
			// unknown format; both say "this record does not open".
			if !errors.Is(err, kek.ErrAuthentication) && !errors.Is(err, kek.ErrUnsupported) {
				t.Errorf("%s: err = %v, want ErrAuthentication", what, err)
			}
			if errors.Is(err, kek.ErrUnavailable) || errors.Is(err, kek.ErrKeyDisabled) {
				t.Errorf("%s: tampering reported as unavailability or off switch: %v", what, err)
			}
			noSecrets(t, err, dek)
		}
		wantAuth("other aad", w, []byte("attested-kms/v1 test aad: keyset=other level=2"))
		wantAuth("no aad", w, nil)
		for _, i := range []int{0, len(w.Ciphertext) / 2, len(w.Ciphertext) - 1} {
			bad := w.Clone()
			bad.Ciphertext[i] ^= 0x01
			wantAuth("flipped byte", bad, aad)
		}
		short := w.Clone()
		short.Ciphertext = short.Ciphertext[:len(short.Ciphertext)-1]
		wantAuth("truncated", short, aad)
		empty := w.Clone()
		empty.Ciphertext = nil
		wantAuth("empty", empty, aad)
	})

	t.Run("concurrent", func(t *testing.T) {
		var wg sync.WaitGroup
		errs := make(chan error, 16)
		for range 16 {
			wg.Go(func() {
				w, err := p.Wrap(ctx, dek, aad)
				if err == nil {
					var got []byte
					got, err = p.Unwrap(ctx, w, aad)
					if err == nil && !bytes.Equal(got, dek) {
						err = errors.New("round trip changed the data key")
					}
				}
				errs <- err
			})
		}
		wg.Wait()
		close(errs)
		for err := range errs {
			if err != nil {
				t.Fatal(err)
			}
		}
	})

	if c.Owner != nil {
		t.Run("off switch", func(t *testing.T) {
			w, err := p.Wrap(ctx, dek, aad)
			if err != nil {
				t.Fatal(err)
			}
			c.Owner.Disable(t)
			_, err = p.Unwrap(ctx, w, aad)
			wantDisabled(t, "unwrap with the key disabled", err, dek)
			_, err = p.Wrap(ctx, dek, aad)
			wantDisabled(t, "wrap with the key disabled", err, dek)
			c.Owner.Enable(t)
			if got, err := p.Unwrap(ctx, w, aad); err != nil || !bytes.Equal(got, dek) {
				t.Fatalf("after re-enabling: %v", err)
			}
			if d, ok := c.Owner.(Deleter); ok {
				d.Delete(t)
				_, err = p.Unwrap(ctx, w, aad)
				wantDisabled(t, "unwrap with the key deleted", err, dek)
				d.Restore(t)
				if _, err := p.Unwrap(ctx, w, aad); err != nil {
					t.Fatalf("after restoring: %v", err)
				}
			}
		})
	}

	if c.Network != nil {
		t.Run("outage and throttling", func(t *testing.T) {
			w, err := p.Wrap(ctx, dek, aad)
			if err != nil {
				t.Fatal(err)
			}
			c.Network.Outage(t, true)
			_, err = p.Unwrap(ctx, w, aad)
			wantUnavailable(t, "outage", err, dek)
			c.Network.Outage(t, false)
			// Throttling is retried inside the client within reason, or
			// reported as ErrUnavailable; either way it is never the off
			// switch and never an integrity failure.
			c.Network.Throttle(t, 1000)
			_, err = p.Unwrap(ctx, w, aad)
			wantUnavailable(t, "throttled", err, dek)
			c.Network.Throttle(t, 0)
			if got, err := p.Unwrap(ctx, w, aad); err != nil || !bytes.Equal(got, dek) {
				t.Fatalf("after the outage: %v", err)
			}
		})
	}
}

func wantDisabled(t *testing.T, what string, err error, dek []byte) {
	t.Helper()
	if !errors.Is(err, kek.ErrKeyDisabled) {
		t.Errorf("%s: err = %v, want ErrKeyDisabled", what, err)
	}
	if errors.Is(err, kek.ErrAuthentication) {
		t.Errorf("%s: off switch reported as tampering: %v", what, err)
	}
	noSecrets(t, err, dek)
}

func wantUnavailable(t *testing.T, what string, err error, dek []byte) {
	t.Helper()
	if !errors.Is(err, kek.ErrUnavailable) {
		t.Errorf("%s: err = %v, want ErrUnavailable", what, err)
	}
	if errors.Is(err, kek.ErrKeyDisabled) || errors.Is(err, kek.ErrAuthentication) {
		t.Errorf("%s: outage reported as off switch or tampering: %v", what, err)
	}
	noSecrets(t, err, dek)
}

// noSecrets fails if an error message carries the data key in any common
// encoding.
func noSecrets(t *testing.T, err error, dek []byte) {
	t.Helper()
	if err == nil {
		return
	}
	msg := err.Error()
	for _, enc := range []string{string(dek), hex.EncodeToString(dek), base64.StdEncoding.EncodeToString(dek), base64.RawURLEncoding.EncodeToString(dek)} {
		if strings.Contains(msg, enc) {
			t.Fatalf("error message contains the data key: %q", msg)
		}
	}
}
