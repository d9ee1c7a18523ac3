package azurekv_test

import (
	"bytes"
	"context"
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/Azure/azure-sdk-for-go/sdk/azcore"

	"github.com/attested-kms/attested-kms/keystore/kek"
	"github.com/attested-kms/attested-kms/keystore/kek/azurekv"
	"github.com/attested-kms/attested-kms/keystore/kek/azurekv/azurekvtest"
	"github.com/attested-kms/attested-kms/keystore/kek/kektest"
)

var (
	testDEK = bytes.Repeat([]byte{0x5a}, 32)
	testAAD = []byte("attested-kms/v1 keyset=default kid=0011223344556677 version=1")
)

func open(t testing.TB, srv *azurekvtest.Server, uri string) *azurekv.Provider {
	t.Helper()
	p, err := azurekv.Open(context.Background(), uri, srv.Options())
	if err != nil {
		t.Fatalf("Open(%q): %v", uri, err)
	}
	return p
}

func TestConformance(t *testing.T) {
	for _, tc := range []struct {
		name, host string
		kty        azurekvtest.KeyType
		query      string
	}{
		{"key vault RSA", "kms-test.vault.azure.net", azurekvtest.KeyTypeRSA, ""},
		{"key vault RSA-HSM", "kms-test.vault.azure.net", azurekvtest.KeyTypeRSAHSM, ""},
		{"managed HSM RSA", "kms-test.managedhsm.azure.net", azurekvtest.KeyTypeRSAHSM, ""},
		{"managed HSM AES", "kms-test.managedhsm.azure.net", azurekvtest.KeyTypeOctHSM, ""},
		{"managed HSM AES pinned alg", "kms-test.managedhsm.azure.net", azurekvtest.KeyTypeOctHSM, "?alg=A256KW"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			srv := azurekvtest.NewServer(t)
			key := srv.CreateKey(t, tc.host, "kek", tc.kty)
			kektest.Run(t, kektest.Config{
				New:        func(t testing.TB) kek.Provider { return open(t, srv, key.URI()+tc.query) },
				Owner:      key,
				Network:    srv,
				Randomized: tc.kty != azurekvtest.KeyTypeOctHSM, // AES key wrap is deterministic
			})
		})
	}
}

// The customer's other off switch: revoking the KMS identity's wrap and
// unwrap permissions instead of disabling the key.
func TestConformanceAccessRevoked(t *testing.T) {
	for _, host := range []string{"kms-test.vault.azure.net", "kms-test.managedhsm.azure.net"} {
		t.Run(host, func(t *testing.T) {
			srv := azurekvtest.NewServer(t)
			key := srv.CreateKey(t, host, "kek", azurekvtest.KeyTypeRSAHSM)
			kektest.Run(t, kektest.Config{
				New:   func(t testing.TB) kek.Provider { return open(t, srv, key.URI()) },
				Owner: key.AccessOwner(),
			})
		})
	}
}

func TestWrappedRecord(t *testing.T) {
	ctx := context.Background()
	srv := azurekvtest.NewServer(t)
	rsaKey := srv.CreateKey(t, "kms.vault.azure.net", "kek", azurekvtest.KeyTypeRSA)
	aesKey := srv.CreateKey(t, "kms.managedhsm.azure.net", "kek", azurekvtest.KeyTypeOctHSM)
	for _, tc := range []struct {
		key     *azurekvtest.Key
		alg     string
		ctBytes int
	}{
		{rsaKey, azurekv.AlgRSAOAEP256, 256},
		{aesKey, azurekv.AlgA256KW, 32 + 32 + 8},
	} {
		p := open(t, srv, tc.key.URI())
		w, err := p.Wrap(ctx, testDEK, testAAD)
		if err != nil {
			t.Fatal(err)
		}
		if w.KEKURI != tc.key.URI() || w.Algorithm != tc.alg || w.KEKVersion != tc.key.Versions()[0] || len(w.Ciphertext) != tc.ctBytes {
			t.Errorf("%s: wrapped = {%q %q %q %d bytes}, want {%q %q %q %d bytes}", tc.key.URI(),
				w.KEKURI, w.KEKVersion, w.Algorithm, len(w.Ciphertext), tc.key.URI(), tc.key.Versions()[0], tc.alg, tc.ctBytes)
		}
	}
}

func TestKeyVersions(t *testing.T) {
	ctx := context.Background()
	srv := azurekvtest.NewServer(t)
	key := srv.CreateKey(t, "kms.vault.azure.net", "kek", azurekvtest.KeyTypeRSA)
	p := open(t, srv, key.URI())
	v1 := key.Versions()[0]

	old, err := p.Wrap(ctx, testDEK, testAAD)
	if err != nil {
		t.Fatal(err)
	}
	v2 := key.Rotate(t)
	cur, err := p.Wrap(ctx, testDEK, testAAD)
	if err != nil {
		t.Fatal(err)
	}
	if old.KEKVersion != v1 || cur.KEKVersion != v2 {
		t.Fatalf("versions %q, %q; want %q, %q", old.KEKVersion, cur.KEKVersion, v1, v2)
	}
	// Records made before the rotation unwrap with the version they name.
	for _, w := range []kek.Wrapped{old, cur} {
		if got, err := p.Unwrap(ctx, w, testAAD); err != nil || !bytes.Equal(got, testDEK) {
			t.Fatalf("unwrap version %s: %v", w.KEKVersion, err)
		}
	}
	// A record claiming another version of the same key does not open.
	swapped := old.Clone()
	swapped.KEKVersion = v2
	if _, err := p.Unwrap(ctx, swapped, testAAD); !errors.Is(err, kek.ErrAuthentication) {
		t.Errorf("record with swapped version: %v, want ErrAuthentication", err)
	}
	malformed := old.Clone()
	malformed.KEKVersion = "../../secrets/x"
	if _, err := p.Unwrap(ctx, malformed, testAAD); !errors.Is(err, kek.ErrAuthentication) {
		t.Errorf("record with malformed version: %v, want ErrAuthentication", err)
	}
	// A version the vault never had reads as KeyNotFound, like a deleted key.
	unknown := old.Clone()
	unknown.KEKVersion = strings.Repeat("0", 32)
	if _, err := p.Unwrap(ctx, unknown, testAAD); !errors.Is(err, kek.ErrKeyDisabled) {
		t.Errorf("record with unknown version: %v, want ErrKeyDisabled", err)
	}

	// The enabled attribute is per version: disabling the old version
	// stops only the records it wrapped.
	key.SetVersionEnabled(t, v1, false)
	if _, err := p.Unwrap(ctx, old, testAAD); !errors.Is(err, kek.ErrKeyDisabled) {
		t.Errorf("old version disabled: %v, want ErrKeyDisabled", err)
	}
	if _, err := p.Unwrap(ctx, cur, testAAD); err != nil {
		t.Errorf("current version still enabled: %v", err)
	}
	key.SetVersionEnabled(t, v1, true)

	// A URI pinned to a version wraps under that version even after a
	// rotation.
	pinned := open(t, srv, key.URI()+"/"+v1)
	if pinned.URI() != key.URI()+"/"+v1 {
		t.Errorf("pinned URI = %q", pinned.URI())
	}
	key.Rotate(t)
	w, err := pinned.Wrap(ctx, testDEK, testAAD)
	if err != nil {
		t.Fatal(err)
	}
	if w.KEKVersion != v1 {
		t.Errorf("pinned wrap used version %q, want %q", w.KEKVersion, v1)
	}
	// Any handle on the key opens any version's records.
	if _, err := pinned.Unwrap(ctx, cur, testAAD); err != nil {
		t.Errorf("pinned handle, record of version %s: %v", cur.KEKVersion, err)
	}
}

func TestOtherKey(t *testing.T) {
	ctx := context.Background()
	srv := azurekvtest.NewServer(t)
	a := srv.CreateKey(t, "kms.vault.azure.net", "kek-a", azurekvtest.KeyTypeRSA)
	b := srv.CreateKey(t, "kms.vault.azure.net", "kek-b", azurekvtest.KeyTypeRSA)
	w, err := open(t, srv, a.URI()).Wrap(ctx, testDEK, testAAD)
	if err != nil {
		t.Fatal(err)
	}
	w.KEKVersion = b.Versions()[0]
	if _, err := open(t, srv, b.URI()).Unwrap(ctx, w, testAAD); !errors.Is(err, kek.ErrAuthentication) {
		t.Errorf("record of another key: %v, want ErrAuthentication", err)
	}
	w.Algorithm = "AES-256-GCM"
	if _, err := open(t, srv, a.URI()).Unwrap(ctx, w, testAAD); !errors.Is(err, kek.ErrUnsupported) {
		t.Errorf("foreign algorithm: %v, want ErrUnsupported", err)
	}
}

// Key Vault serves wrapKey for a disabled RSA key (a public-key operation);
// Wrap must still refuse, which its verification unwrap ensures.
func TestWrapRefusedWhenUnwrapIsNot(t *testing.T) {
	ctx := context.Background()
	srv := azurekvtest.NewServer(t)
	key := srv.CreateKey(t, "kms.vault.azure.net", "kek", azurekvtest.KeyTypeRSA)
	p := open(t, srv, key.URI())

	key.Disable(t)
	wraps := srv.Calls("wrapkey")
	if _, err := p.Wrap(ctx, testDEK, testAAD); !errors.Is(err, kek.ErrKeyDisabled) {
		t.Errorf("wrap under a disabled key: %v, want ErrKeyDisabled", err)
	}
	if srv.Calls("wrapkey") != wraps+1 {
		t.Errorf("the service did not serve the wrap; this test no longer checks the verification unwrap")
	}
	key.Enable(t)

	key.Deny(t, azurekvtest.OpUnwrapKey)
	if _, err := p.Wrap(ctx, testDEK, testAAD); !errors.Is(err, kek.ErrKeyDisabled) {
		t.Errorf("wrap without unwrapKey permission: %v, want ErrKeyDisabled", err)
	}
	key.Allow(t, azurekvtest.OpUnwrapKey)

	key.SetKeyOps(t, azurekvtest.OpWrapKey)
	_, err := p.Wrap(ctx, testDEK, testAAD)
	if !errors.Is(err, kek.ErrKeyDisabled) {
		t.Errorf("wrap of a key that does not permit unwrapKey: %v, want ErrKeyDisabled", err)
	}
	if !strings.Contains(err.Error(), "KeyOperationForbidden") {
		t.Errorf("error %q does not name the service's reason", err)
	}
}

func TestKeyTypeLookup(t *testing.T) {
	ctx := context.Background()
	srv := azurekvtest.NewServer(t)

	// A vault key is RSA: no get-key call, so wrapKey and unwrapKey are
	// the only permissions the KMS needs.
	kv := srv.CreateKey(t, "kms.vault.azure.net", "kek", azurekvtest.KeyTypeRSA)
	kv.Deny(t, azurekvtest.OpGet)
	if _, err := open(t, srv, kv.URI()).Wrap(ctx, testDEK, testAAD); err != nil {
		t.Fatal(err)
	}
	if n := srv.Calls("get"); n != 0 {
		t.Errorf("vault key: %d get-key calls, want 0", n)
	}

	// A Managed HSM key's type is read once per provider.
	hsm := srv.CreateKey(t, "kms.managedhsm.azure.net", "kek", azurekvtest.KeyTypeOctHSM)
	p := open(t, srv, hsm.URI())
	for range 3 {
		if _, err := p.Wrap(ctx, testDEK, testAAD); err != nil {
			t.Fatal(err)
		}
	}
	if n := srv.Calls("get"); n != 1 {
		t.Errorf("managed HSM key: %d get-key calls, want 1", n)
	}

	// Without get permission, ?alg= names the algorithm instead.
	hsm.Deny(t, azurekvtest.OpGet)
	if _, err := open(t, srv, hsm.URI()).Wrap(ctx, testDEK, testAAD); !errors.Is(err, kek.ErrKeyDisabled) {
		t.Errorf("get denied, no alg: %v, want ErrKeyDisabled", err)
	}
	if _, err := open(t, srv, hsm.URI()+"?alg=A256KW").Wrap(ctx, testDEK, testAAD); err != nil {
		t.Errorf("get denied, alg pinned: %v", err)
	}

	// A disabled key is reported by the lookup itself.
	hsm.Allow(t, azurekvtest.OpGet)
	hsm.Disable(t)
	if _, err := open(t, srv, hsm.URI()).Wrap(ctx, testDEK, testAAD); !errors.Is(err, kek.ErrKeyDisabled) {
		t.Errorf("disabled key lookup: %v, want ErrKeyDisabled", err)
	}
	hsm.Enable(t)

	// The wrong algorithm for the key type is a configuration error.
	if _, err := open(t, srv, hsm.URI()+"?alg=RSA-OAEP-256").Wrap(ctx, testDEK, testAAD); !errors.Is(err, kek.ErrUnsupported) {
		t.Errorf("RSA-OAEP-256 under an AES key: %v, want ErrUnsupported", err)
	}
	// AES key wrap takes whole 8-byte blocks.
	if _, err := p.Wrap(ctx, testDEK[:20], testAAD); err == nil {
		t.Error("A256KW wrapped a 20-byte data key")
	}
}

func TestThrottling(t *testing.T) {
	ctx := context.Background()
	srv := azurekvtest.NewServer(t)
	key := srv.CreateKey(t, "kms.vault.azure.net", "kek", azurekvtest.KeyTypeRSA)
	p := open(t, srv, key.URI())
	w, err := p.Wrap(ctx, testDEK, testAAD)
	if err != nil {
		t.Fatal(err)
	}

	// A short throttle is ridden out by the SDK's retries.
	srv.SetRetryAfter(0)
	srv.Throttle(t, 2)
	before := srv.Calls("unwrapkey")
	if _, err := p.Unwrap(ctx, w, testAAD); err != nil {
		t.Fatalf("unwrap through a short throttle: %v", err)
	}
	if n := srv.Calls("unwrapkey") - before; n != 3 {
		t.Errorf("%d unwrap requests, want 3 (two throttled, one served)", n)
	}

	// A Retry-After longer than the retry policy allows is not waited out.
	srv.SetRetryAfter(60)
	srv.Throttle(t, 1000)
	start := time.Now()
	_, err = p.Unwrap(ctx, w, testAAD)
	if !errors.Is(err, kek.ErrUnavailable) || errors.Is(err, kek.ErrKeyDisabled) {
		t.Errorf("throttled: %v, want ErrUnavailable only", err)
	}
	if d := time.Since(start); d > 5*time.Second {
		t.Errorf("throttled call took %v", d)
	}
	var re *azcore.ResponseError
	if !errors.As(err, &re) || re.StatusCode != 429 {
		t.Errorf("the SDK's response error is not reachable from %v", err)
	}
	if !strings.Contains(err.Error(), "429") || !strings.Contains(err.Error(), "Throttled") {
		t.Errorf("error %q does not name the status", err)
	}
}

func TestOutages(t *testing.T) {
	ctx := context.Background()
	srv := azurekvtest.NewServer(t)
	key := srv.CreateKey(t, "kms.vault.azure.net", "kek", azurekvtest.KeyTypeRSA)
	opts := srv.Options()
	opts.Timeout = 500 * time.Millisecond
	p, err := azurekv.Open(ctx, key.URI(), opts)
	if err != nil {
		t.Fatal(err)
	}
	w, err := p.Wrap(ctx, testDEK, testAAD)
	if err != nil {
		t.Fatal(err)
	}
	for _, mode := range []struct {
		name string
		m    azurekvtest.OutageMode
	}{{"503", azurekvtest.Outage503}, {"connection reset", azurekvtest.OutageReset}, {"no answer", azurekvtest.OutageHang}} {
		t.Run(mode.name, func(t *testing.T) {
			srv.SetOutageMode(mode.m)
			srv.Outage(t, true)
			defer srv.Outage(t, false)
			start := time.Now()
			_, err := p.Unwrap(ctx, w, testAAD)
			if !errors.Is(err, kek.ErrUnavailable) || errors.Is(err, kek.ErrKeyDisabled) || errors.Is(err, kek.ErrAuthentication) {
				t.Errorf("unwrap: %v, want ErrUnavailable only", err)
			}
			if d := time.Since(start); d > 3*time.Second {
				t.Errorf("unwrap took %v despite a 500ms bound", d)
			}
			_, err = p.Wrap(ctx, testDEK, testAAD)
			if !errors.Is(err, kek.ErrUnavailable) {
				t.Errorf("wrap: %v, want ErrUnavailable", err)
			}
		})
	}

	// The caller's own deadline wins when it is sooner.
	srv.SetOutageMode(azurekvtest.OutageHang)
	srv.Outage(t, true)
	short, cancel := context.WithTimeout(ctx, 100*time.Millisecond)
	defer cancel()
	_, err = p.Unwrap(short, w, testAAD)
	if !errors.Is(err, kek.ErrUnavailable) || !errors.Is(err, context.DeadlineExceeded) {
		t.Errorf("caller deadline: %v, want ErrUnavailable and DeadlineExceeded", err)
	}
	srv.Outage(t, false)

	// A closed server refuses connections.
	srv.Close()
	if _, err := p.Unwrap(ctx, w, testAAD); !errors.Is(err, kek.ErrUnavailable) {
		t.Errorf("connection refused: %v, want ErrUnavailable", err)
	}
	// Open does no I/O, so a KMS starts while its vault is down.
	if _, err := azurekv.Open(ctx, key.URI(), srv.Options()); err != nil {
		t.Errorf("Open with the vault down: %v", err)
	}
}

// The SDK checks that the challenge names the vault's own service before
// asking for a token, so a server posing as the vault cannot obtain a token
// for another audience. The provider keeps that check on.
func TestChallengeResourceVerified(t *testing.T) {
	srv := azurekvtest.NewServer(t)
	key := srv.CreateKey(t, "kms.vault.azure.net", "kek", azurekvtest.KeyTypeRSA)
	srv.SetChallengeResource("https://management.azure.com")
	_, err := open(t, srv, key.URI()).Wrap(context.Background(), testDEK, testAAD)
	if !errors.Is(err, kek.ErrUnavailable) {
		t.Errorf("mismatched challenge: %v, want ErrUnavailable", err)
	}
	if n := srv.Credential().Calls(); n != 0 {
		t.Errorf("%d tokens requested for a mismatched challenge, want 0", n)
	}
}

func TestCredentialFailure(t *testing.T) {
	ctx := context.Background()
	srv := azurekvtest.NewServer(t)
	key := srv.CreateKey(t, "kms.vault.azure.net", "kek", azurekvtest.KeyTypeRSA)
	srv.Credential().SetError(errors.New("managed identity endpoint unreachable"))
	_, err := open(t, srv, key.URI()).Wrap(ctx, testDEK, testAAD)
	if !errors.Is(err, kek.ErrUnavailable) || errors.Is(err, kek.ErrKeyDisabled) {
		t.Errorf("token failure: %v, want ErrUnavailable only", err)
	}
	srv.Credential().SetError(nil)
	if _, err := open(t, srv, key.URI()).Wrap(ctx, testDEK, testAAD); err != nil {
		t.Fatal(err)
	}
}

func TestDeletedKeyMessage(t *testing.T) {
	ctx := context.Background()
	srv := azurekvtest.NewServer(t)
	key := srv.CreateKey(t, "kms.vault.azure.net", "kek", azurekvtest.KeyTypeRSA)
	p := open(t, srv, key.URI())
	w, err := p.Wrap(ctx, testDEK, testAAD)
	if err != nil {
		t.Fatal(err)
	}
	key.Delete(t)
	_, err = p.Unwrap(ctx, w, testAAD)
	if !errors.Is(err, kek.ErrKeyDisabled) {
		t.Fatalf("deleted: %v", err)
	}
	msg := err.Error()
	for _, want := range []string{"unwrapkey", key.URI(), "404", "KeyNotFound"} {
		if !strings.Contains(msg, want) {
			t.Errorf("error %q lacks %q", msg, want)
		}
	}
	if strings.Contains(msg, "azurekvtest-") || strings.Contains(msg, "Bearer") || strings.Contains(msg, "\n") {
		t.Errorf("error %q carries a token or spans lines", msg)
	}
}

func TestOpenErrors(t *testing.T) {
	ctx := context.Background()
	if _, err := azurekv.Open(ctx, "azure-kv://evil.example.com/keys/kek", nil); err == nil {
		t.Error("opened a non-vault host")
	}
	canceled, cancel := context.WithCancel(ctx)
	cancel()
	if _, err := azurekv.Open(canceled, "azure-kv://kms.vault.azure.net/keys/kek", nil); !errors.Is(err, context.Canceled) {
		t.Errorf("canceled context: %v", err)
	}
}
