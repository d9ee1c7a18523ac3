package hcvault_test

import (
	"bytes"
	"context"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/attested-kms/attested-kms/keystore/kek"
	"github.com/attested-kms/attested-kms/keystore/kek/hcvault"
	"github.com/attested-kms/attested-kms/keystore/kek/hcvault/hcvaulttest"
	"github.com/attested-kms/attested-kms/keystore/kek/kektest"
)

var (
	testDEK = []byte("0123456789abcdef0123456789abcdef")
	testAAD = []byte("attested-kms/v1 keyset=default kid=0011223344556677")
)

// noEnv keeps the developer's VAULT_* variables out of the tests.
func noEnv(string) string { return "" }

// fastOptions retries quickly so outage tests take milliseconds.
func fastOptions(s *hcvaulttest.Server) hcvault.Options {
	return hcvault.Options{
		CACertPEM:    s.CACertPEM(),
		MinRetryWait: time.Millisecond,
		MaxRetryWait: 5 * time.Millisecond,
		Timeout:      10 * time.Second,
		Getenv:       noEnv,
	}
}

func open(t testing.TB, uri string, opts hcvault.Options) *hcvault.Provider {
	t.Helper()
	p, err := hcvault.Open(context.Background(), uri, opts)
	if err != nil {
		t.Fatal(err)
	}
	return p
}

// setup starts a fake Vault with one key and a token holding only the
// KMS policy (update on the key's encrypt and decrypt paths).
func setup(t *testing.T) (*hcvaulttest.Server, *hcvaulttest.Key, string) {
	t.Helper()
	s := hcvaulttest.New(t)
	k := s.CreateKey("transit", "kms-kek")
	return s, k, s.IssueToken(k.KMSPolicy())
}

func TestConformance(t *testing.T) {
	s, k, tok := setup(t)
	kektest.Run(t, kektest.Config{
		New: func(t testing.TB) kek.Provider {
			opts := fastOptions(s)
			opts.Token = tok
			return open(t, k.URI(), opts)
		},
		Owner:      k,
		Network:    s,
		Randomized: true,
	})
}

func TestConformanceKubernetesAuth(t *testing.T) {
	s := hcvaulttest.New(t)
	k := s.CreateKey("kms/transit", "kek")
	jwtFile := filepath.Join(t.TempDir(), "token")
	if err := os.WriteFile(jwtFile, []byte("sa-jwt\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	s.KubernetesRole("k8s-prod", "attested-kms", "sa-jwt", time.Hour, k.KMSPolicy())
	kektest.Run(t, kektest.Config{
		New: func(t testing.TB) kek.Provider {
			opts := fastOptions(s)
			opts.Kubernetes = &hcvault.KubernetesAuth{Role: "attested-kms", Mount: "k8s-prod", JWTFile: jwtFile}
			return open(t, k.URI(), opts)
		},
		Owner:      k,
		Network:    s,
		Randomized: true,
	})
}

func TestWrappedFields(t *testing.T) {
	s, k, tok := setup(t)
	opts := fastOptions(s)
	opts.Token = tok
	p := open(t, k.URI()+"?token_file=/ignored/because/token/option/wins", opts)
	ctx := context.Background()
	if p.URI() != k.URI() {
		t.Fatalf("URI() = %q, want %q (no query)", p.URI(), k.URI())
	}
	w1, err := p.Wrap(ctx, testDEK, testAAD)
	if err != nil {
		t.Fatal(err)
	}
	if w1.KEKURI != k.URI() || w1.KEKVersion != "1" || w1.Algorithm != hcvault.Algorithm || !bytes.HasPrefix(w1.Ciphertext, []byte("vault:v1:")) {
		t.Fatalf("wrapped = %+v", w1)
	}
	k.Rotate()
	w2, err := p.Wrap(ctx, testDEK, testAAD)
	if err != nil {
		t.Fatal(err)
	}
	if w2.KEKVersion != "2" || !bytes.HasPrefix(w2.Ciphertext, []byte("vault:v2:")) {
		t.Fatalf("after rotation: version %q", w2.KEKVersion)
	}
	for _, w := range []kek.Wrapped{w1, w2} {
		if got, err := p.Unwrap(ctx, w, testAAD); err != nil || !bytes.Equal(got, testDEK) {
			t.Fatalf("unwrap v%s: %v", w.KEKVersion, err)
		}
	}

	// The owner retires version 1: records it wrapped are switched off.
	k.SetMinDecryptionVersion(2)
	if _, err := p.Unwrap(ctx, w1, testAAD); !errors.Is(err, kek.ErrKeyDisabled) {
		t.Fatalf("unwrap below min_decryption_version: %v, want ErrKeyDisabled", err)
	}
	if _, err := p.Unwrap(ctx, w2, testAAD); err != nil {
		t.Fatal(err)
	}

	// A recorded version that disagrees with the ciphertext is tampering.
	bad := w2.Clone()
	bad.KEKVersion = "1"
	if _, err := p.Unwrap(ctx, bad, testAAD); !errors.Is(err, kek.ErrAuthentication) {
		t.Fatalf("version mismatch: %v", err)
	}
	// A version the key never had: Vault says "version is too new".
	bad = w2.Clone()
	bad.KEKVersion = ""
	bad.Ciphertext = bytes.Replace(bad.Ciphertext, []byte("vault:v2:"), []byte("vault:v9:"), 1)
	if _, err := p.Unwrap(ctx, bad, testAAD); !errors.Is(err, kek.ErrAuthentication) {
		t.Fatalf("unknown version: %v", err)
	}
	// Another provider's record.
	other := w2.Clone()
	other.Algorithm = kek.LocalAlgorithm
	if _, err := p.Unwrap(ctx, other, testAAD); !errors.Is(err, kek.ErrUnsupported) {
		t.Fatalf("foreign algorithm: %v", err)
	}
}

func TestOtherKeyIsAuthenticationFailure(t *testing.T) {
	s, k, tok := setup(t)
	k2 := s.CreateKey("transit", "other")
	tok2 := s.IssueToken(k2.KMSPolicy())
	o1, o2 := fastOptions(s), fastOptions(s)
	o1.Token, o2.Token = tok, tok2
	p1, p2 := open(t, k.URI(), o1), open(t, k2.URI(), o2)
	w, err := p1.Wrap(context.Background(), testDEK, testAAD)
	if err != nil {
		t.Fatal(err)
	}
	_, err = p2.Unwrap(context.Background(), w, testAAD)
	if !errors.Is(err, kek.ErrAuthentication) {
		t.Fatalf("unwrap under another key: %v", err)
	}
}

func TestOffSwitches(t *testing.T) {
	ctx := context.Background()
	t.Run("token revoked", func(t *testing.T) {
		s, k, tok := setup(t)
		opts := fastOptions(s)
		opts.Token = tok
		p := open(t, k.URI(), opts)
		w, err := p.Wrap(ctx, testDEK, testAAD)
		if err != nil {
			t.Fatal(err)
		}
		s.RevokeToken(tok)
		_, err = p.Unwrap(ctx, w, testAAD)
		if !errors.Is(err, kek.ErrKeyDisabled) || !strings.Contains(err.Error(), "permission denied") {
			t.Fatalf("revoked token: %v", err)
		}
		if strings.Contains(err.Error(), tok) {
			t.Fatal("error contains the token")
		}
	})
	t.Run("deleted key is not recreated by encrypt", func(t *testing.T) {
		s, k, tok := setup(t)
		opts := fastOptions(s)
		opts.Token = tok
		p := open(t, k.URI(), opts)
		w, err := p.Wrap(ctx, testDEK, testAAD)
		if err != nil {
			t.Fatal(err)
		}
		k.Delete(t)
		// Without the create capability, Vault refuses to upsert a new
		// key under the old name.
		if _, err := p.Wrap(ctx, testDEK, testAAD); !errors.Is(err, kek.ErrKeyDisabled) {
			t.Fatalf("wrap after delete: %v", err)
		}
		_, err = p.Unwrap(ctx, w, testAAD)
		if !errors.Is(err, kek.ErrKeyDisabled) || !strings.Contains(err.Error(), "encryption key not found") {
			t.Fatalf("unwrap after delete: %v", err)
		}
		k.Restore(t)
		if _, err := p.Unwrap(ctx, w, testAAD); err != nil {
			t.Fatalf("after restore: %v", err)
		}
	})
	t.Run("mount disabled", func(t *testing.T) {
		s := hcvaulttest.New(t)
		// A policy for a key whose mount does not exist: Vault routes
		// nothing there (404).
		s.SetPolicy("kms", map[string][]string{"gone/encrypt/kek": {hcvaulttest.CapUpdate}})
		opts := fastOptions(s)
		opts.Token = s.IssueToken("kms")
		p := open(t, "hcvault://"+s.Host+"/gone/keys/kek", opts)
		if _, err := p.Wrap(ctx, testDEK, testAAD); !errors.Is(err, kek.ErrKeyDisabled) {
			t.Fatalf("wrap under a removed mount: %v", err)
		}
	})
}

func TestOutages(t *testing.T) {
	ctx := context.Background()
	t.Run("connection refused", func(t *testing.T) {
		s, k, tok := setup(t)
		opts := fastOptions(s)
		opts.Token = tok
		p := open(t, k.URI(), opts)
		s.Close()
		start := time.Now()
		_, err := p.Wrap(ctx, testDEK, testAAD)
		if !errors.Is(err, kek.ErrUnavailable) || errors.Is(err, kek.ErrKeyDisabled) {
			t.Fatalf("connection refused: %v", err)
		}
		if d := time.Since(start); d > 5*time.Second {
			t.Fatalf("took %v", d)
		}
	})
	t.Run("dropped connections", func(t *testing.T) {
		s, k, tok := setup(t)
		opts := fastOptions(s)
		opts.Token = tok
		p := open(t, k.URI(), opts)
		w, err := p.Wrap(ctx, testDEK, testAAD)
		if err != nil {
			t.Fatal(err)
		}
		s.Drop(true)
		if _, err := p.Unwrap(ctx, w, testAAD); !errors.Is(err, kek.ErrUnavailable) {
			t.Fatalf("dropped: %v", err)
		}
		s.Drop(false)
		if _, err := p.Unwrap(ctx, w, testAAD); err != nil {
			t.Fatal(err)
		}
	})
	t.Run("retries ride out a short throttle", func(t *testing.T) {
		s, k, tok := setup(t)
		opts := fastOptions(s)
		opts.Token = tok
		opts.MaxRetries = 3
		p := open(t, k.URI(), opts)
		s.Throttle(t, 2)
		if _, err := p.Wrap(ctx, testDEK, testAAD); err != nil {
			t.Fatalf("throttled twice with 3 retries: %v", err)
		}
		if n := s.Calls(k.EncryptPath()); n != 3 {
			t.Fatalf("encrypt calls = %d, want 3", n)
		}
	})
	t.Run("deadline bounds retries", func(t *testing.T) {
		s, k, tok := setup(t)
		opts := fastOptions(s)
		opts.Token = tok
		opts.MaxRetries = 100
		opts.MinRetryWait = 200 * time.Millisecond
		opts.MaxRetryWait = 300 * time.Millisecond
		p := open(t, k.URI(), opts)
		s.Seal(true)
		ctx, cancel := context.WithTimeout(ctx, 500*time.Millisecond)
		defer cancel()
		start := time.Now()
		_, err := p.Wrap(ctx, testDEK, testAAD)
		if !errors.Is(err, kek.ErrUnavailable) || !errors.Is(err, context.DeadlineExceeded) {
			t.Fatalf("sealed until the deadline: %v", err)
		}
		if d := time.Since(start); d > 2*time.Second {
			t.Fatalf("took %v, want about the 500ms deadline", d)
		}
	})
	t.Run("client timeout bounds retries", func(t *testing.T) {
		s, k, tok := setup(t)
		opts := fastOptions(s)
		opts.Token = tok
		opts.MaxRetries = 100
		opts.MinRetryWait = 200 * time.Millisecond
		opts.MaxRetryWait = 300 * time.Millisecond
		opts.Timeout = 500 * time.Millisecond
		p := open(t, k.URI(), opts)
		s.Seal(true)
		start := time.Now()
		if _, err := p.Wrap(ctx, testDEK, testAAD); !errors.Is(err, kek.ErrUnavailable) {
			t.Fatalf("sealed past the timeout: %v", err)
		}
		if d := time.Since(start); d > 2*time.Second {
			t.Fatalf("took %v, want about the 500ms timeout", d)
		}
	})
	t.Run("canceled", func(t *testing.T) {
		s, k, tok := setup(t)
		opts := fastOptions(s)
		opts.Token = tok
		p := open(t, k.URI(), opts)
		ctx, cancel := context.WithCancel(ctx)
		cancel()
		if _, err := p.Wrap(ctx, testDEK, testAAD); !errors.Is(err, context.Canceled) || errors.Is(err, kek.ErrUnavailable) {
			t.Fatalf("canceled: %v", err)
		}
	})
}

func TestAssociatedDataMustBeBound(t *testing.T) {
	ctx := context.Background()
	t.Run("Vault before 1.13 ignores associated_data", func(t *testing.T) {
		s, k, tok := setup(t)
		opts := fastOptions(s)
		opts.Token = tok
		p := open(t, k.URI(), opts)
		w, err := p.Wrap(ctx, testDEK, testAAD)
		if err != nil {
			t.Fatal(err)
		}
		s.LegacyAssociatedData(true)
		if _, err := p.Wrap(ctx, testDEK, testAAD); !errors.Is(err, kek.ErrUnsupported) {
			t.Fatalf("wrap on a Vault that ignores associated_data: %v", err)
		}
		// The AAD-bound record does not open without the AAD anyway,
		// and the warning check refuses even a record that would.
		if _, err := p.Unwrap(ctx, w, testAAD); err == nil {
			t.Fatal("unwrap succeeded on a Vault that ignores associated_data")
		}
	})
	t.Run("non-AEAD key", func(t *testing.T) {
		s := hcvaulttest.New(t)
		k := s.CreateKeyType("transit", "rsa", "rsa-2048")
		opts := fastOptions(s)
		opts.Token = s.IssueToken(k.KMSPolicy())
		p := open(t, k.URI(), opts)
		_, err := p.Wrap(ctx, testDEK, testAAD)
		if !errors.Is(err, kek.ErrUnsupported) || errors.Is(err, kek.ErrUnavailable) {
			t.Fatalf("wrap under an RSA key: %v", err)
		}
	})
}

func TestTokenFile(t *testing.T) {
	ctx := context.Background()
	s, k, tokA := setup(t)
	file := filepath.Join(t.TempDir(), "vault-token")
	if err := os.WriteFile(file, []byte(tokA+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	opts := fastOptions(s)
	p := open(t, k.URI()+"?token_file="+file, opts)
	w, err := p.Wrap(ctx, testDEK, testAAD)
	if err != nil {
		t.Fatal(err)
	}
	// The agent re-authenticates: the old token is revoked and the sink
	// holds a new one. One refused call later the provider uses it.
	s.RevokeToken(tokA)
	tokB := s.IssueToken(k.KMSPolicy())
	if err := os.WriteFile(file, []byte(tokB), 0o600); err != nil {
		t.Fatal(err)
	}
	if got, err := p.Unwrap(ctx, w, testAAD); err != nil || !bytes.Equal(got, testDEK) {
		t.Fatalf("after the sink was refreshed: %v", err)
	}
	// Revoked and not replaced: the off switch.
	s.RevokeToken(tokB)
	if _, err := p.Unwrap(ctx, w, testAAD); !errors.Is(err, kek.ErrKeyDisabled) {
		t.Fatalf("revoked, sink stale: %v", err)
	}
	// Sink removed: the agent is not ready; retry later.
	if err := os.Remove(file); err != nil {
		t.Fatal(err)
	}
	if _, err := p.Unwrap(ctx, w, testAAD); !errors.Is(err, kek.ErrUnavailable) {
		t.Fatalf("no sink: %v", err)
	}
}

func TestKubernetesAuth(t *testing.T) {
	ctx := context.Background()
	s := hcvaulttest.New(t)
	k := s.CreateKey("transit", "kek")
	jwtFile := filepath.Join(t.TempDir(), "token")
	if err := os.WriteFile(jwtFile, []byte("jwt-1"), 0o600); err != nil {
		t.Fatal(err)
	}
	s.KubernetesRole("kubernetes", "kms", "jwt-1", 100*time.Second, k.KMSPolicy())

	var mu sync.Mutex
	now := time.Unix(1_700_000_000, 0)
	opts := fastOptions(s)
	opts.Now = func() time.Time { mu.Lock(); defer mu.Unlock(); return now }
	advance := func(d time.Duration) { mu.Lock(); defer mu.Unlock(); now = now.Add(d) }
	opts.Kubernetes = &hcvault.KubernetesAuth{Role: "kms", JWTFile: jwtFile}
	p := open(t, k.URI(), opts)

	w, err := p.Wrap(ctx, testDEK, testAAD)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := p.Unwrap(ctx, w, testAAD); err != nil {
		t.Fatal(err)
	}
	if n := s.Logins(); n != 1 {
		t.Fatalf("logins = %d, want 1 (token reused)", n)
	}
	// 80% of the lease has passed: log in again before using it.
	advance(81 * time.Second)
	if _, err := p.Unwrap(ctx, w, testAAD); err != nil {
		t.Fatal(err)
	}
	if n := s.Logins(); n != 2 {
		t.Fatalf("logins = %d, want 2 (renewed before expiry)", n)
	}
	// The token dies early (revoked, Vault restarted its token store):
	// one refused call, a new login, success.
	s.ExpireTokens()
	if _, err := p.Unwrap(ctx, w, testAAD); err != nil {
		t.Fatalf("after expiry: %v", err)
	}
	if n := s.Logins(); n != 3 {
		t.Fatalf("logins = %d, want 3", n)
	}
	// The owner deletes the KMS's role: the off switch.
	s.DeleteKubernetesRole("kubernetes", "kms")
	s.ExpireTokens()
	_, err = p.Unwrap(ctx, w, testAAD)
	if !errors.Is(err, kek.ErrKeyDisabled) {
		t.Fatalf("role deleted: %v", err)
	}
	if strings.Contains(err.Error(), "jwt-1") {
		t.Fatal("error contains the service account token")
	}
	// Vault sealed during login: unavailable, not the off switch.
	s.KubernetesRole("kubernetes", "kms", "jwt-1", 100*time.Second, k.KMSPolicy())
	s.ExpireTokens()
	s.Seal(true)
	if _, err := p.Unwrap(ctx, w, testAAD); !errors.Is(err, kek.ErrUnavailable) {
		t.Fatalf("sealed at login: %v", err)
	}
}

func TestKubernetesAuthFromURI(t *testing.T) {
	s := hcvaulttest.New(t)
	k := s.CreateKey("transit", "kek")
	s.KubernetesRole("auth-k8s", "kms", "jwt", time.Hour, k.KMSPolicy())
	opts := fastOptions(s)
	// The URI selects Kubernetes auth; the JWT file defaults to the
	// service account mount, which does not exist here.
	p := open(t, k.URI()+"?role=kms&auth_mount=auth-k8s", opts)
	_, err := p.Wrap(context.Background(), testDEK, testAAD)
	if !errors.Is(err, kek.ErrUnavailable) || !strings.Contains(err.Error(), hcvault.DefaultServiceAccountTokenFile) {
		t.Fatalf("without a service account token: %v", err)
	}
}

func TestCredentialChain(t *testing.T) {
	s, k, tok := setup(t)
	ctx := context.Background()

	opts := fastOptions(s)
	if _, err := hcvault.Open(ctx, k.URI(), opts); err == nil {
		t.Fatal("opened without credentials")
	}

	opts.Getenv = func(name string) string {
		if name == "VAULT_TOKEN" {
			return tok
		}
		return ""
	}
	p := open(t, k.URI(), opts)
	if _, err := p.Wrap(ctx, testDEK, testAAD); err != nil {
		t.Fatalf("VAULT_TOKEN: %v", err)
	}

	// Without the fake's CA, TLS verification fails: an outage, not
	// silently insecure.
	opts.CACertPEM = nil
	p = open(t, k.URI(), opts)
	if _, err := p.Wrap(ctx, testDEK, testAAD); !errors.Is(err, kek.ErrUnavailable) {
		t.Fatalf("untrusted certificate: %v", err)
	}

	// VAULT_CACERT names the CA file.
	caFile := filepath.Join(t.TempDir(), "ca.pem")
	if err := os.WriteFile(caFile, s.CACertPEM(), 0o600); err != nil {
		t.Fatal(err)
	}
	opts.Getenv = func(name string) string {
		switch name {
		case "VAULT_TOKEN":
			return tok
		case "VAULT_CACERT":
			return caFile
		}
		return ""
	}
	p = open(t, k.URI(), opts)
	if _, err := p.Wrap(ctx, testDEK, testAAD); err != nil {
		t.Fatalf("VAULT_CACERT: %v", err)
	}

	// Address override.
	opts = fastOptions(s)
	opts.Token = tok
	opts.Address = s.URL
	p = open(t, "hcvault://vault.example.com/transit/keys/kms-kek", opts)
	if p.URI() != "hcvault://vault.example.com/transit/keys/kms-kek" {
		t.Fatalf("URI() = %q", p.URI())
	}
	if _, err := p.Wrap(ctx, testDEK, testAAD); err != nil {
		t.Fatalf("address override: %v", err)
	}

	for _, bad := range []hcvault.Options{
		{Token: "x", Address: "ftp://vault"},
		{Token: "x", CACertPEM: []byte("not a certificate")},
		{Kubernetes: &hcvault.KubernetesAuth{}},
	} {
		if _, err := hcvault.Open(ctx, k.URI(), bad); err == nil {
			t.Errorf("Open accepted %+v", bad)
		}
	}
}

func TestKubernetesConcurrentRelogin(t *testing.T) {
	ctx := context.Background()
	s := hcvaulttest.New(t)
	k := s.CreateKey("transit", "kek")
	jwtFile := filepath.Join(t.TempDir(), "token")
	if err := os.WriteFile(jwtFile, []byte("jwt"), 0o600); err != nil {
		t.Fatal(err)
	}
	s.KubernetesRole("kubernetes", "kms", "jwt", time.Hour, k.KMSPolicy())
	opts := fastOptions(s)
	opts.Kubernetes = &hcvault.KubernetesAuth{Role: "kms", JWTFile: jwtFile}
	p := open(t, k.URI(), opts)
	w, err := p.Wrap(ctx, testDEK, testAAD)
	if err != nil {
		t.Fatal(err)
	}
	s.ExpireTokens()
	var wg sync.WaitGroup
	errs := make(chan error, 16)
	for range 16 {
		wg.Go(func() {
			_, err := p.Unwrap(ctx, w, testAAD)
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
	// Callers refused with the same stale token share one new login.
	if n := s.Logins(); n != 2 {
		t.Fatalf("logins = %d, want 2", n)
	}
}
