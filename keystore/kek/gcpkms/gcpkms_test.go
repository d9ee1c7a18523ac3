package gcpkms_test

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/json"
	"errors"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"testing"
	"time"

	kms "cloud.google.com/go/kms/apiv1"
	"cloud.google.com/go/kms/apiv1/kmspb"
	"google.golang.org/api/option"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/types/known/wrapperspb"

	"github.com/attested-kms/attested-kms/keystore/kek"
	"github.com/attested-kms/attested-kms/keystore/kek/gcpkms"
	"github.com/attested-kms/attested-kms/keystore/kek/gcpkms/gcpkmstest"
	"github.com/attested-kms/attested-kms/keystore/kek/kektest"
)

var aad = []byte("attested-kms/v1 test aad")

// open returns a provider for key on srv with test-sized time budgets.
func open(t testing.TB, uri string, srv *gcpkmstest.Server, mod func(*gcpkms.Options)) *gcpkms.Provider {
	t.Helper()
	o := gcpkms.Options{
		ClientOptions:  srv.ClientOptions(),
		Timeout:        10 * time.Second,
		AttemptTimeout: 3 * time.Second,
	}
	if mod != nil {
		mod(&o)
	}
	p, err := gcpkms.New(context.Background(), uri, o)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = p.Close() })
	return p
}

func newDEK(t testing.TB) []byte {
	t.Helper()
	dek := make([]byte, 32)
	if _, err := rand.Read(dek); err != nil {
		t.Fatal(err)
	}
	return dek
}

func TestConformance(t *testing.T) {
	srv := gcpkmstest.Start(t)
	key := srv.CreateKey(t, "conformance")
	kektest.Run(t, kektest.Config{
		New:        func(t testing.TB) kek.Provider { return open(t, key.URI(), srv, nil) },
		Owner:      key,
		Network:    srv,
		Randomized: true,
	})
}

func TestWrapRecordsVersionAndSurvivesRotation(t *testing.T) {
	ctx := context.Background()
	srv := gcpkmstest.Start(t)
	key := srv.CreateKey(t, "rotating")
	p := open(t, key.URI(), srv, nil)
	dek := newDEK(t)

	w1, err := p.Wrap(ctx, dek, aad)
	if err != nil {
		t.Fatal(err)
	}
	if w1.KEKURI != key.URI() || w1.KEKVersion != key.VersionName(1) || w1.Algorithm != gcpkms.Algorithm {
		t.Fatalf("wrapped = %+v, want URI %s version %s", w1, key.URI(), key.VersionName(1))
	}
	if n := key.Rotate(t); n != 2 {
		t.Fatalf("rotated to version %d", n)
	}
	w2, err := p.Wrap(ctx, dek, aad)
	if err != nil {
		t.Fatal(err)
	}
	if w2.KEKVersion != key.VersionName(2) {
		t.Fatalf("after rotation KEKVersion = %q, want %q", w2.KEKVersion, key.VersionName(2))
	}
	for _, w := range []kek.Wrapped{w1, w2} {
		if got, err := p.Unwrap(ctx, w, aad); err != nil || !bytes.Equal(got, dek) {
			t.Fatalf("unwrap %s after rotation: %v", w.KEKVersion, err)
		}
	}

	// Disabling only the old version cuts off what it wrapped, not the rest.
	key.SetVersionState(t, 1, kmspb.CryptoKeyVersion_DISABLED)
	if _, err := p.Unwrap(ctx, w1, aad); !errors.Is(err, kek.ErrKeyDisabled) {
		t.Fatalf("unwrap under disabled version 1: %v, want ErrKeyDisabled", err)
	}
	if _, err := p.Unwrap(ctx, w2, aad); err != nil {
		t.Fatalf("unwrap under enabled version 2: %v", err)
	}
	// Disabling the primary stops wrapping.
	key.SetVersionState(t, 2, kmspb.CryptoKeyVersion_DISABLED)
	if _, err := p.Wrap(ctx, dek, aad); !errors.Is(err, kek.ErrKeyDisabled) {
		t.Fatalf("wrap with disabled primary: %v, want ErrKeyDisabled", err)
	}
}

// TestOffSwitches covers every way the key's owner can cut the KMS off;
// each must read as ErrKeyDisabled, cost one call (no retries) and never
// look like tampering.
func TestOffSwitches(t *testing.T) {
	cases := []struct {
		name string
		off  func(t *testing.T, k *gcpkmstest.Key)
	}{
		{"disabled", func(t *testing.T, k *gcpkmstest.Key) { k.Disable(t) }},
		{"destroy scheduled", func(t *testing.T, k *gcpkmstest.Key) { k.Delete(t) }},
		{"destroyed", func(t *testing.T, k *gcpkmstest.Key) { k.Destroy(t) }},
		{"IAM grant revoked", func(t *testing.T, k *gcpkmstest.Key) { k.Revoke(t) }},
		{"key gone", func(t *testing.T, k *gcpkmstest.Key) { k.Remove(t) }},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			ctx := context.Background()
			srv := gcpkmstest.Start(t)
			key := srv.CreateKey(t, "k")
			p := open(t, key.URI(), srv, nil)
			dek := newDEK(t)
			w, err := p.Wrap(ctx, dek, aad)
			if err != nil {
				t.Fatal(err)
			}
			c.off(t, key)
			before := srv.Calls()
			_, err = p.Unwrap(ctx, w, aad)
			if !errors.Is(err, kek.ErrKeyDisabled) || errors.Is(err, kek.ErrAuthentication) || errors.Is(err, kek.ErrUnavailable) {
				t.Fatalf("unwrap: err = %v, want only ErrKeyDisabled", err)
			}
			if n := srv.Calls() - before; n != 1 {
				t.Errorf("unwrap made %d calls, want 1 (the off switch is not retried)", n)
			}
			if _, err := p.Wrap(ctx, dek, aad); !errors.Is(err, kek.ErrKeyDisabled) {
				t.Fatalf("wrap: err = %v, want ErrKeyDisabled", err)
			}
		})
	}
}

func TestOtherKeysCiphertext(t *testing.T) {
	ctx := context.Background()
	srv := gcpkmstest.Start(t)
	a := open(t, srv.CreateKey(t, "a").URI(), srv, nil)
	b := open(t, srv.CreateKey(t, "b").URI(), srv, nil)
	w, err := a.Wrap(ctx, newDEK(t), aad)
	if err != nil {
		t.Fatal(err)
	}
	// With the version recorded, the mismatch is caught before any call.
	before := srv.Calls()
	if _, err := b.Unwrap(ctx, w, aad); !errors.Is(err, kek.ErrAuthentication) {
		t.Fatalf("unwrap a's key with b: %v, want ErrAuthentication", err)
	}
	if srv.Calls() != before {
		t.Error("a foreign KEKVersion still reached the service")
	}
	// Without it, Cloud KMS rejects the ciphertext (INVALID_ARGUMENT).
	w.KEKVersion = ""
	if _, err := b.Unwrap(ctx, w, aad); !errors.Is(err, kek.ErrAuthentication) {
		t.Fatalf("unwrap a's ciphertext with b: %v, want ErrAuthentication", err)
	}
	w.Algorithm = "AES-256-GCM"
	if _, err := a.Unwrap(ctx, w, aad); !errors.Is(err, kek.ErrUnsupported) {
		t.Fatalf("foreign algorithm: %v, want ErrUnsupported", err)
	}
}

func TestChecksumFailuresAreRetriedNeverAccepted(t *testing.T) {
	ctx := context.Background()
	srv := gcpkmstest.Start(t)
	key := srv.CreateKey(t, "crc")
	p := open(t, key.URI(), srv, nil)
	dek := newDEK(t)
	w, err := p.Wrap(ctx, dek, aad)
	if err != nil {
		t.Fatal(err)
	}

	for _, dir := range []struct {
		name    string
		corrupt func(testing.TB, int)
	}{
		{"response", srv.CorruptResponses},
		{"request", srv.CorruptRequests},
	} {
		t.Run(dir.name+" once", func(t *testing.T) {
			dir.corrupt(t, 1)
			before := srv.Calls()
			w2, err := p.Wrap(ctx, dek, aad)
			if err != nil {
				t.Fatalf("wrap: %v", err)
			}
			if got, err := p.Unwrap(ctx, w2, aad); err != nil || !bytes.Equal(got, dek) {
				t.Fatalf("unwrap of what the retried wrap made: %v", err)
			}
			if n := srv.Calls() - before; n != 3 {
				t.Errorf("%d calls, want 3 (one retried wrap, one unwrap)", n)
			}
			dir.corrupt(t, 1)
			got, err := p.Unwrap(ctx, w, aad)
			if err != nil {
				t.Fatalf("unwrap: %v", err)
			}
			if !bytes.Equal(got, dek) {
				t.Fatal("unwrap accepted a corrupted plaintext")
			}
		})
		t.Run(dir.name+" persistently", func(t *testing.T) {
			dir.corrupt(t, 1000)
			defer dir.corrupt(t, 0)
			for _, op := range []func() error{
				func() error { _, err := p.Wrap(ctx, dek, aad); return err },
				func() error { _, err := p.Unwrap(ctx, w, aad); return err },
			} {
				before := srv.Calls()
				err := op()
				if !errors.Is(err, kek.ErrUnavailable) || errors.Is(err, kek.ErrAuthentication) || errors.Is(err, kek.ErrKeyDisabled) {
					t.Fatalf("err = %v, want only ErrUnavailable", err)
				}
				if n := srv.Calls() - before; n != gcpkms.DefaultMaxAttempts {
					t.Errorf("%d calls, want %d", n, gcpkms.DefaultMaxAttempts)
				}
			}
		})
	}
}

// TestFakeChecksRequestChecksums talks to the fake with the raw client, as
// a client that computed a wrong CRC32C or sent none would.
func TestFakeChecksRequestChecksums(t *testing.T) {
	ctx := context.Background()
	srv := gcpkmstest.Start(t)
	key := srv.CreateKey(t, "raw")
	c, err := kms.NewKeyManagementClient(ctx, srv.ClientOptions()...)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	_, err = c.Encrypt(ctx, &kmspb.EncryptRequest{Name: key.Name(), Plaintext: []byte("x"), PlaintextCrc32C: wrapperspb.Int64(1)})
	if status.Code(err) != codes.InvalidArgument {
		t.Fatalf("wrong plaintext_crc32c: %v, want INVALID_ARGUMENT", err)
	}
	r, err := c.Encrypt(ctx, &kmspb.EncryptRequest{Name: key.Name(), Plaintext: []byte("x")})
	if err != nil {
		t.Fatal(err)
	}
	if r.GetVerifiedPlaintextCrc32C() || r.GetVerifiedAdditionalAuthenticatedDataCrc32C() {
		t.Fatal("verified_* set although no checksum was sent")
	}
	_, err = c.Decrypt(ctx, &kmspb.DecryptRequest{Name: key.Name(), Ciphertext: r.GetCiphertext(), CiphertextCrc32C: wrapperspb.Int64(7)})
	if status.Code(err) != codes.InvalidArgument {
		t.Fatalf("wrong ciphertext_crc32c: %v, want INVALID_ARGUMENT", err)
	}
	_, err = c.Encrypt(ctx, &kmspb.EncryptRequest{Name: key.VersionName(1), Plaintext: []byte("x")})
	if err != nil {
		t.Fatalf("encrypt with a version name: %v", err)
	}
}

func TestThrottlingIsRetriedWithinBounds(t *testing.T) {
	ctx := context.Background()
	srv := gcpkmstest.Start(t)
	key := srv.CreateKey(t, "throttle")
	p := open(t, key.URI(), srv, func(o *gcpkms.Options) { o.MaxAttempts = 3 })
	dek := newDEK(t)
	w, err := p.Wrap(ctx, dek, aad)
	if err != nil {
		t.Fatal(err)
	}
	srv.Throttle(t, 2)
	if got, err := p.Unwrap(ctx, w, aad); err != nil || !bytes.Equal(got, dek) {
		t.Fatalf("unwrap after two throttled attempts: %v", err)
	}
	srv.Throttle(t, 100)
	before := srv.Calls()
	if _, err := p.Unwrap(ctx, w, aad); !errors.Is(err, kek.ErrUnavailable) {
		t.Fatalf("persistent throttling: %v, want ErrUnavailable", err)
	}
	if n := srv.Calls() - before; n != 3 {
		t.Errorf("%d attempts, want MaxAttempts = 3", n)
	}
}

func TestStalledServiceDoesNotHang(t *testing.T) {
	srv := gcpkmstest.Start(t)
	key := srv.CreateKey(t, "stall")
	p := open(t, key.URI(), srv, func(o *gcpkms.Options) {
		o.Timeout = 1500 * time.Millisecond
		o.AttemptTimeout = 300 * time.Millisecond
	})
	dek := newDEK(t)
	w, err := p.Wrap(context.Background(), dek, aad)
	if err != nil {
		t.Fatal(err)
	}
	srv.Stall(t, true)
	start := time.Now()
	_, err = p.Unwrap(context.Background(), w, aad)
	if !errors.Is(err, kek.ErrUnavailable) {
		t.Fatalf("stalled: %v, want ErrUnavailable", err)
	}
	if d := time.Since(start); d > 3*time.Second {
		t.Fatalf("stalled call took %v", d)
	}
	// The caller's own deadline is honoured too.
	ctx, cancel := context.WithTimeout(context.Background(), 200*time.Millisecond)
	defer cancel()
	_, err = p.Unwrap(ctx, w, aad)
	if !errors.Is(err, kek.ErrUnavailable) || !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("caller deadline: %v, want ErrUnavailable and DeadlineExceeded", err)
	}
	srv.Stall(t, false)
	if _, err := p.Unwrap(context.Background(), w, aad); err != nil {
		t.Fatalf("after the stall: %v", err)
	}
}

func TestConnectionRefused(t *testing.T) {
	srv := gcpkmstest.Start(t)
	key := srv.CreateKey(t, "gone")
	p := open(t, key.URI(), srv, nil)
	dek := newDEK(t)
	w, err := p.Wrap(context.Background(), dek, aad)
	if err != nil {
		t.Fatal(err)
	}
	srv.Stop()
	start := time.Now()
	_, err = p.Unwrap(context.Background(), w, aad)
	if !errors.Is(err, kek.ErrUnavailable) || errors.Is(err, kek.ErrKeyDisabled) {
		t.Fatalf("server down: %v, want ErrUnavailable", err)
	}
	if d := time.Since(start); d > 8*time.Second {
		t.Fatalf("took %v", d)
	}
}

func TestBadCredentialsAreUnavailableNotOffSwitch(t *testing.T) {
	srv := gcpkmstest.Start(t)
	key := srv.CreateKey(t, "auth")
	for _, tok := range []string{"", "not-a-valid-token"} {
		p := open(t, key.URI(), srv, func(o *gcpkms.Options) {
			o.ClientOptions = srv.ClientOptionsWithToken(tok)
			o.MaxAttempts = 1
		})
		_, err := p.Wrap(context.Background(), newDEK(t), aad)
		if !errors.Is(err, kek.ErrUnavailable) || errors.Is(err, kek.ErrKeyDisabled) {
			t.Fatalf("token %q: %v, want ErrUnavailable", tok, err)
		}
	}
}

func TestNewRejectsBadURIs(t *testing.T) {
	for _, uri := range []string{
		"gcp-kms://projects/p/locations/l/keyRings/r/cryptoKeys/k/cryptoKeyVersions/1",
		"gcp-kms://projects/p",
		"local:///etc/kek.key",
	} {
		if _, err := gcpkms.New(context.Background(), uri, gcpkms.Options{ClientOptions: []option.ClientOption{option.WithoutAuthentication()}}); err == nil {
			t.Errorf("New(%q) succeeded", uri)
		}
	}
}

func TestWrapRejectsOversizedInput(t *testing.T) {
	srv := gcpkmstest.Start(t)
	p := open(t, srv.CreateKey(t, "size").URI(), srv, nil)
	for _, c := range []struct{ dek, aad []byte }{
		{nil, aad},
		{make([]byte, gcpkms.MaxDataKeySize+1), aad},
		{make([]byte, 32), make([]byte, gcpkms.MaxDataKeySize+1)},
	} {
		if _, err := p.Wrap(context.Background(), c.dek, c.aad); err == nil {
			t.Errorf("wrap of %d-byte key with %d-byte AAD succeeded", len(c.dek), len(c.aad))
		}
	}
}

// TestWorkloadIdentityFederation runs the credential path a confidential VM
// outside Google Cloud uses: an external_account configuration whose
// subject token (here a file) is exchanged at STS for an access token, which
// Cloud KMS then sees as the federated principal.
func TestWorkloadIdentityFederation(t *testing.T) {
	const (
		subjectToken = "header.payload.signature"
		accessToken  = "federated-access-token"
		principal    = "principal://iam.googleapis.com/projects/123/locations/global/workloadIdentityPools/pool/subject/kms"
		audience     = "//iam.googleapis.com/projects/123/locations/global/workloadIdentityPools/pool/providers/azure"
	)
	sts := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if err := r.ParseForm(); err != nil ||
			r.Form.Get("grant_type") != "urn:ietf:params:oauth:grant-type:token-exchange" ||
			r.Form.Get("subject_token") != subjectToken || r.Form.Get("audience") != audience {
			http.Error(w, `{"error":"invalid_grant"}`, http.StatusBadRequest)
			return
		}
		w.Header().Set("Content-Type", "application/json")
		_ = json.NewEncoder(w).Encode(map[string]any{
			"access_token":      accessToken,
			"issued_token_type": "urn:ietf:params:oauth:token-type:access_token",
			"token_type":        "Bearer",
			"expires_in":        3600,
		})
	}))
	defer sts.Close()

	dir := t.TempDir()
	tokenFile := filepath.Join(dir, "token.jwt")
	if err := os.WriteFile(tokenFile, []byte(subjectToken), 0o600); err != nil {
		t.Fatal(err)
	}
	cfg, err := json.Marshal(map[string]any{
		"type":               "external_account",
		"audience":           audience,
		"subject_token_type": "urn:ietf:params:oauth:token-type:jwt",
		"token_url":          sts.URL + "/v1/token",
		"credential_source":  map[string]any{"file": tokenFile},
	})
	if err != nil {
		t.Fatal(err)
	}
	cfgFile := filepath.Join(dir, "wif.json")
	if err := os.WriteFile(cfgFile, cfg, 0o600); err != nil {
		t.Fatal(err)
	}

	srv := gcpkmstest.Start(t)
	srv.AddToken(accessToken, principal)
	key := srv.CreateKey(t, "wif")
	key.GrantPrincipal(t, principal)
	key.Revoke(t) // only the federated principal may use the key
	p := open(t, key.URI(), srv, func(o *gcpkms.Options) {
		o.WorkloadIdentityConfig = cfgFile
		o.ClientOptions = srv.TransportOptions()
	})
	dek := newDEK(t)
	w, err := p.Wrap(context.Background(), dek, aad)
	if err != nil {
		t.Fatal(err)
	}
	if got, err := p.Unwrap(context.Background(), w, aad); err != nil || !bytes.Equal(got, dek) {
		t.Fatalf("unwrap: %v", err)
	}
	key.RevokePrincipal(t, principal)
	if _, err := p.Unwrap(context.Background(), w, aad); !errors.Is(err, kek.ErrKeyDisabled) {
		t.Fatalf("after revoking the federated principal: %v, want ErrKeyDisabled", err)
	}
}
