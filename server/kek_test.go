package server_test

import (
	"bytes"
	"context"
	"crypto/ecdh"
	"crypto/rand"
	"crypto/rsa"
	"crypto/x509"
	"encoding/json"
	"os"
	"path/filepath"
	"slices"
	"testing"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/attested-kms/attested-kms/hpke"
	"github.com/attested-kms/attested-kms/keystore"
	"github.com/attested-kms/attested-kms/keystore/kek"
	"github.com/attested-kms/attested-kms/keystore/kek/pkcs11"
	"github.com/attested-kms/attested-kms/keystore/kek/pkcs11/pkcs11test"
	kmsv1 "github.com/attested-kms/attested-kms/proto/kms/v1"
	"github.com/attested-kms/attested-kms/server"
)

// newKEKEnv is newEnv with the root KEK given by URI (the key must exist)
// and a KEK check interval, so the off switch can be exercised against a
// provider whose owner can disable the key.
func newKEKEnv(t testing.TB, kekURI string, checkInterval time.Duration) *env {
	t.Helper()
	return newEnvWith(t, envOptions{kekURI: kekURI, kekCheckInterval: checkInterval})
}

// releasedKey runs a good release of kid and returns the unwrapped private
// key.
func (e *env) releasedKey(kid string) ([]byte, error) {
	e.t.Helper()
	resp, a, err := e.release(attempt{kid: kid})
	if err != nil {
		return nil, err
	}
	return hpke.UnwrapX25519(a.wrapPriv, resp.GetKid(), a.nonce, resp.GetWrappedKey())
}

func (e *env) kekState(keyset string) *kmsv1.KEKStatus {
	e.t.Helper()
	resp, err := e.admin.GetKEKStatus(context.Background(), &kmsv1.GetKEKStatusRequest{})
	if err != nil {
		e.t.Fatalf("GetKEKStatus: %v", err)
	}
	for _, s := range resp.GetKeysets() {
		if s.GetKeyset() == keyset {
			return s
		}
	}
	e.t.Fatalf("GetKEKStatus has no key set %q: %v", keyset, resp)
	return nil
}

func (e *env) keyCount(keyset string) int {
	e.t.Helper()
	resp, err := e.admin.ListKeys(context.Background(), &kmsv1.ListKeysRequest{Keyset: keyset})
	if err != nil {
		e.t.Fatal(err)
	}
	return len(resp.GetKeys())
}

// eventually polls cond every 20ms until it holds or the deadline passes.
func eventually(t *testing.T, within time.Duration, what string, cond func() (bool, string)) {
	t.Helper()
	deadline := time.Now().Add(within)
	for {
		ok, last := cond()
		if ok {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s: not within %s; last: %s", what, within, last)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// TestKEKWithSoftHSM runs the PKCS#11 scenarios in one test: SoftHSM2 reads
// its token directory once per load, and a server holds the module loaded
// until the process ends (Server.Stop does not close its KEK provider), so
// every token is made up front.
func TestKEKWithSoftHSM(t *testing.T) {
	tk := pkcs11test.NewToken(t)
	x, err := ecdh.X25519().GenerateKey(rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	secret := x.Bytes()
	tk.ImportSecret(t, "byok", []byte{0xb1}, secret)
	root := tk.NewKEK(t, "root")

	t.Run("BYOK", func(t *testing.T) { testBYOK(t, tk.URI("byok"), secret) })
	t.Run("off switch", func(t *testing.T) { testOffSwitch(t, root) })
}

// testBYOK imports an X25519 key held in an HSM: GetImportKey, export from
// the token wrapped to the import key, ImportKey, then a release returns
// exactly that key.
func testBYOK(t *testing.T, hsmKey string, secret []byte) {
	e := newEnv(t)
	ctx := context.Background()
	ik, err := e.admin.GetImportKey(ctx, &kmsv1.GetImportKeyRequest{})
	if err != nil {
		t.Fatal(err)
	}
	if ik.GetAlgorithm() != server.ImportAlgorithm {
		t.Fatalf("import algorithm %q", ik.GetAlgorithm())
	}
	// The import key is stable: a second call returns the same key.
	if again, err := e.admin.GetImportKey(ctx, &kmsv1.GetImportKeyRequest{}); err != nil || !bytes.Equal(again.GetPublicKey(), ik.GetPublicKey()) {
		t.Fatalf("second GetImportKey differs: %v", err)
	}
	blob, err := pkcs11.ExportForImport(ctx, hsmKey, ik.GetPublicKey(), pkcs11.WithHostOAEP())
	if err != nil {
		t.Fatal(err)
	}

	before := e.keyCount("default")
	t.Run("tampered blob", func(t *testing.T) {
		for name, b := range map[string][]byte{
			"RSA block":   flip(blob, 10),
			"wrapped key": flip(blob, len(blob)-5),
			"truncated":   blob[:len(blob)-8],
		} {
			_, err := e.admin.ImportKey(ctx, &kmsv1.ImportKeyRequest{Keyset: "default", WrappedKey: b})
			if c := status.Code(err); c != codes.InvalidArgument && c != codes.FailedPrecondition {
				t.Errorf("%s: %v, want InvalidArgument or FailedPrecondition", name, err)
			}
		}
		if n := e.keyCount("default"); n != before {
			t.Fatalf("%d keys after refused imports, want %d", n, before)
		}
	})
	t.Run("blob for another import key", func(t *testing.T) {
		other, err := rsa.GenerateKey(rand.Reader, 3072)
		if err != nil {
			t.Fatal(err)
		}
		der, _ := x509.MarshalPKIXPublicKey(&other.PublicKey)
		foreign, err := pkcs11.ExportForImport(ctx, hsmKey, der, pkcs11.WithHostOAEP())
		if err != nil {
			t.Fatal(err)
		}
		_, err = e.admin.ImportKey(ctx, &kmsv1.ImportKeyRequest{Keyset: "default", WrappedKey: foreign})
		if c := status.Code(err); c != codes.InvalidArgument && c != codes.FailedPrecondition {
			t.Fatalf("%v, want InvalidArgument or FailedPrecondition", err)
		}
		if n := e.keyCount("default"); n != before {
			t.Fatalf("%d keys after refused import, want %d", n, before)
		}
	})

	k, err := e.admin.ImportKey(ctx, &kmsv1.ImportKeyRequest{Keyset: "default", WrappedKey: blob})
	if err != nil {
		t.Fatal(err)
	}
	if k.GetState() != kmsv1.KeyState_KEY_STATE_ACTIVE || k.GetKid() == e.kid {
		t.Fatalf("imported key %v is not a new active key", k)
	}
	pub, _ := hpke.PublicFromPrivate(secret)
	if !bytes.Equal(k.GetPublicKey(), pub) {
		t.Fatal("imported key's public key is not the HSM key's")
	}
	// It is the set's active key: the one ListKeys reports active.
	keys, err := e.admin.ListKeys(ctx, &kmsv1.ListKeysRequest{Keyset: "default"})
	if err != nil {
		t.Fatal(err)
	}
	var active []string
	for _, kk := range keys.GetKeys() {
		if kk.GetState() == kmsv1.KeyState_KEY_STATE_ACTIVE {
			active = append(active, kk.GetKid())
		}
	}
	if !slices.Equal(active, []string{k.GetKid()}) {
		t.Fatalf("active keys %v, want only the imported %s", active, k.GetKid())
	}

	got, err := e.releasedKey(k.GetKid())
	if err != nil {
		t.Fatalf("release of the imported key: %v", err)
	}
	if !bytes.Equal(got, secret) {
		t.Fatal("released key differs from the key put into the HSM")
	}

	// Importing the same key again is refused and adds nothing.
	n := e.keyCount("default")
	if _, err := e.admin.ImportKey(ctx, &kmsv1.ImportKeyRequest{Keyset: "default", WrappedKey: blob}); err == nil {
		t.Fatal("importing the same key twice succeeded")
	}
	if e.keyCount("default") != n {
		t.Fatal("refused re-import added a key")
	}
}

func flip(b []byte, i int) []byte {
	c := bytes.Clone(b)
	c[i] ^= 0x01
	return c
}

// testOffSwitch: the root KEK's owner disables it; within the check
// interval releases fail with FailedPrecondition / KEK_DISABLED and the
// status says "disabled"; re-enabled, releases resume and it says "ok".
func testOffSwitch(t *testing.T, root *pkcs11test.KEK) {
	const interval = 200 * time.Millisecond
	e := newKEKEnv(t, root.URI(), interval)
	want, err := e.releasedKey(e.kid)
	if err != nil {
		t.Fatalf("release before disabling: %v", err)
	}
	if st := e.kekState("default"); st.GetState() != keystore.KEKStateOK {
		t.Fatalf("status before disabling: %v", st)
	}

	root.Disable(t)
	enabled := false
	t.Cleanup(func() {
		if !enabled {
			root.Enable(t)
		}
	})
	eventually(t, 5*time.Second, "status disabled", func() (bool, string) {
		st := e.kekState("default")
		return st.GetState() == keystore.KEKStateDisabled, st.String()
	})
	if st := e.kekState("default"); st.GetError() == "" || st.GetKekUri() == "" {
		t.Fatalf("disabled status lacks the error or URI: %v", st)
	}
	_, _, err = e.release(attempt{})
	if status.Code(err) != codes.FailedPrecondition || reasonOf(err) != server.ReasonKEKDisabled {
		t.Fatalf("release with the KEK disabled: %v / %q, want FailedPrecondition / KEK_DISABLED", err, reasonOf(err))
	}

	root.Enable(t)
	enabled = true
	eventually(t, 5*time.Second, "status ok", func() (bool, string) {
		st := e.kekState("default")
		return st.GetState() == keystore.KEKStateOK, st.String()
	})
	got, err := e.releasedKey(e.kid)
	if err != nil {
		t.Fatalf("release after re-enabling: %v", err)
	}
	if !bytes.Equal(got, want) {
		t.Fatal("key released after re-enabling differs")
	}
}

// TestRotateKEK moves every key set from one local KEK to another over the
// admin socket; releases keep working and a second rotation is a no-op.
func TestRotateKEK(t *testing.T) {
	e := newEnvWith(t, envOptions{keySets: map[string]func(string) string{"second": policyYAML}})
	ctx := context.Background()
	want, err := e.releasedKey(e.kid)
	if err != nil {
		t.Fatal(err)
	}
	oldURI := e.cfg.KEK
	newPath := filepath.Join(t.TempDir(), "kek2.key")
	if err := kek.CreateLocal(newPath); err != nil {
		t.Fatal(err)
	}
	newP, err := kek.OpenLocal(newPath)
	if err != nil {
		t.Fatal(err)
	}
	newURI := newP.URI()
	if newURI == oldURI {
		t.Fatal("test KEKs share a URI")
	}

	resp, err := e.admin.RotateKEK(ctx, &kmsv1.RotateKEKRequest{ToUri: "local://" + newPath})
	if err != nil {
		t.Fatal(err)
	}
	if got := slices.Sorted(slices.Values(resp.GetRewrapped())); !slices.Equal(got, []string{"default", "second"}) {
		t.Fatalf("rewrapped %v, want both key sets", got)
	}
	checkAllUnder := func(sts []*kmsv1.KEKStatus) {
		t.Helper()
		if len(sts) != 2 {
			t.Fatalf("status lists %d key sets, want 2", len(sts))
		}
		for _, s := range sts {
			if s.GetKekUri() != newURI || s.GetState() != keystore.KEKStateOK {
				t.Fatalf("key set %s after rotation: %v, want ok under %s", s.GetKeyset(), s, newURI)
			}
		}
	}
	checkAllUnder(resp.GetKeysets())
	// The nonce secret moved too, so the old KEK can be retired: the
	// sealed file names the new KEK and opens under it alone.
	var sealedNonce kek.Wrapped
	if b, err := os.ReadFile(e.cfg.Nonce.SealedSecretFile); err != nil {
		t.Fatal(err)
	} else if err := json.Unmarshal(b, &sealedNonce); err != nil {
		t.Fatal(err)
	}
	if sealedNonce.KEKURI != newURI {
		t.Fatalf("nonce secret still sealed under %s after rotating to %s", sealedNonce.KEKURI, newURI)
	}
	if _, err := newP.Unwrap(ctx, sealedNonce, []byte("attested-kms/v1 nonce-secret")); err != nil {
		t.Fatalf("resealed nonce secret does not open under the new KEK: %v", err)
	}
	st, err := e.admin.GetKEKStatus(ctx, &kmsv1.GetKEKStatusRequest{})
	if err != nil {
		t.Fatal(err)
	}
	checkAllUnder(st.GetKeysets())

	got, err := e.releasedKey(e.kid)
	if err != nil {
		t.Fatalf("release after rotation: %v", err)
	}
	if !bytes.Equal(got, want) {
		t.Fatal("key released after rotation differs")
	}
	// Keys made after the rotation are sealed under the new KEK too.
	rotated, err := e.admin.RotateKeys(ctx, &kmsv1.RotateKeysRequest{Keyset: "default"})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := e.releasedKey(rotated.GetKid()); err != nil {
		t.Fatalf("release of a key made after rotation: %v", err)
	}

	again, err := e.admin.RotateKEK(ctx, &kmsv1.RotateKEKRequest{ToUri: "local://" + newPath})
	if err != nil {
		t.Fatal(err)
	}
	if len(again.GetRewrapped()) != 0 {
		t.Fatalf("second rotation re-wrapped %v, want nothing", again.GetRewrapped())
	}
	checkAllUnder(again.GetKeysets())

	// A new intermediate for one set stays under the new KEK.
	gen := e.kekState("default").GetGeneration()
	in, err := e.admin.RotateIntermediateKey(ctx, &kmsv1.RotateIntermediateKeyRequest{Keyset: "default"})
	if err != nil {
		t.Fatal(err)
	}
	if in.GetGeneration() != gen+1 || in.GetKekUri() != newURI {
		t.Fatalf("intermediate rotation: %v, want generation %d under %s", in, gen+1, newURI)
	}
	if got, err := e.releasedKey(e.kid); err != nil || !bytes.Equal(got, want) {
		t.Fatalf("release after intermediate rotation: %v", err)
	}

	// Bad requests are refused.
	if _, err := e.admin.RotateKEK(ctx, &kmsv1.RotateKEKRequest{}); status.Code(err) != codes.InvalidArgument {
		t.Fatalf("rotation without to_uri: %v", err)
	}
}
