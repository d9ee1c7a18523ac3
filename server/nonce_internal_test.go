package server

import (
	"bytes"
	"context"
	"encoding/json"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"testing"

	"github.com/attested-kms/attested-kms/keystore"
	"github.com/attested-kms/attested-kms/keystore/boltstore"
	"github.com/attested-kms/attested-kms/keystore/kek"
)

// A missing nonce secret is made and sealed under the root KEK, so a KMS
// can start on a cloud or HSM KEK without kms init; the next start opens
// the same secret, also when the file names a KEK other than the root.
func TestOpenNonceSecretCreatesAndResolves(t *testing.T) {
	ctx := context.Background()
	dir := t.TempDir()
	newLocal := func(name string) kek.Provider {
		p := filepath.Join(dir, name)
		if err := kek.CreateLocal(p); err != nil {
			t.Fatal(err)
		}
		l, err := kek.OpenLocal(p)
		if err != nil {
			t.Fatal(err)
		}
		return l
	}
	oldKEK, newKEK := newLocal("old.key"), newLocal("new.key")
	store, err := boltstore.Open(filepath.Join(dir, "kms.db"))
	if err != nil {
		t.Fatal(err)
	}
	defer store.Close()
	log := slog.New(slog.NewTextHandler(io.Discard, nil))
	keys := keystore.NewManager(store, oldKEK, keystore.Options{
		OpenKEK: func(_ context.Context, uri string) (kek.Provider, error) {
			if uri == newKEK.URI() {
				return newKEK, nil
			}
			return kek.Open(ctx, uri)
		},
	})
	path := filepath.Join(dir, "nonce.sealed")

	first, err := openNonceSecret(ctx, keys, path, log)
	if err != nil {
		t.Fatal(err)
	}
	fi, err := os.Stat(path)
	if err != nil || fi.Mode().Perm() != 0o600 {
		t.Fatalf("sealed secret file: %v, mode %v", err, fi.Mode())
	}
	raw, _ := os.ReadFile(path)
	if bytes.Contains(raw, first) {
		t.Fatal("the file holds the secret in plaintext")
	}
	again, err := openNonceSecret(ctx, keys, path, log)
	if err != nil || !bytes.Equal(again, first) {
		t.Fatalf("reopen: %v", err)
	}

	// Sealed under another KEK than the root: resolved through OpenKEK.
	w, err := newKEK.Wrap(ctx, first, nonceSecretAAD)
	if err != nil {
		t.Fatal(err)
	}
	b, _ := json.Marshal(w)
	if err := os.WriteFile(path, b, 0o600); err != nil {
		t.Fatal(err)
	}
	if got, err := openNonceSecret(ctx, keys, path, log); err != nil || !bytes.Equal(got, first) {
		t.Fatalf("secret sealed under a non-root KEK: %v", err)
	}

	if err := os.WriteFile(path, []byte("raw bytes from an old build"), 0o600); err != nil {
		t.Fatal(err)
	}
	if _, err := openNonceSecret(ctx, keys, path, log); err == nil {
		t.Fatal("a file that is not a sealed secret was accepted")
	}
}
