package kek

import (
	"bytes"
	"context"
	"errors"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func newTestLocal(t *testing.T) (*Local, string) {
	t.Helper()
	path := filepath.Join(t.TempDir(), "kek.key")
	if err := CreateLocal(path); err != nil {
		t.Fatalf("CreateLocal: %v", err)
	}
	l, err := OpenLocal(path)
	if err != nil {
		t.Fatalf("OpenLocal: %v", err)
	}
	return l, path
}

func TestCreateLocalModeAndSize(t *testing.T) {
	_, path := newTestLocal(t)
	fi, err := os.Stat(path)
	if err != nil {
		t.Fatal(err)
	}
	if perm := fi.Mode().Perm(); perm != 0o600 {
		t.Errorf("mode = %#o, want 0600", perm)
	}
	if fi.Size() != LocalKeySize {
		t.Errorf("size = %d, want %d", fi.Size(), LocalKeySize)
	}
}

func TestCreateLocalRefusesOverwrite(t *testing.T) {
	_, path := newTestLocal(t)
	before, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	err = CreateLocal(path)
	if !errors.Is(err, fs.ErrExist) {
		t.Fatalf("second CreateLocal: err = %v, want fs.ErrExist", err)
	}
	after, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(before, after) {
		t.Fatal("existing key file was modified")
	}
}

func TestOpenLocalRejectsLoosePermissions(t *testing.T) {
	for _, mode := range []os.FileMode{0o640, 0o604, 0o660, 0o644, 0o620} {
		_, path := newTestLocal(t)
		if err := os.Chmod(path, mode); err != nil {
			t.Fatal(err)
		}
		_, err := OpenLocal(path)
		if !errors.Is(err, ErrInsecureKeyFile) {
			t.Errorf("mode %#o: err = %v, want ErrInsecureKeyFile", mode, err)
		}
	}
	// 0400 is stricter than 0600 and must be accepted.
	_, path := newTestLocal(t)
	if err := os.Chmod(path, 0o400); err != nil {
		t.Fatal(err)
	}
	if _, err := OpenLocal(path); err != nil {
		t.Errorf("mode 0400: %v", err)
	}
}

func TestOpenLocalRejectsBadFiles(t *testing.T) {
	dir := t.TempDir()
	short := filepath.Join(dir, "short.key")
	if err := os.WriteFile(short, []byte("too short"), 0o600); err != nil {
		t.Fatal(err)
	}
	if _, err := OpenLocal(short); !errors.Is(err, ErrInvalidKeyFile) {
		t.Errorf("short file: err = %v, want ErrInvalidKeyFile", err)
	}
	if _, err := OpenLocal(filepath.Join(dir, "missing.key")); !errors.Is(err, ErrUnavailable) {
		t.Errorf("missing file: err = %v, want ErrUnavailable", err)
	}
	sub := filepath.Join(dir, "sub")
	if err := os.Mkdir(sub, 0o700); err != nil {
		t.Fatal(err)
	}
	if _, err := OpenLocal(sub); !errors.Is(err, ErrInsecureKeyFile) {
		t.Errorf("directory: err = %v, want ErrInsecureKeyFile", err)
	}
}

func TestLocalFormat(t *testing.T) {
	ctx := context.Background()
	l, _ := newTestLocal(t)
	dek := bytes.Repeat([]byte{0xA5}, 32)
	aad := []byte("keyset=default kid=0123456789abcdef v=1")
	w, err := l.Wrap(ctx, dek, aad)
	if err != nil {
		t.Fatal(err)
	}
	if w.Ciphertext[0] != localFormatV1 || w.Algorithm != LocalAlgorithm {
		t.Errorf("version byte = %#x, algorithm %q", w.Ciphertext[0], w.Algorithm)
	}
	for i := 1; i < len(w.Ciphertext); i++ {
		bad := w.Clone()
		bad.Ciphertext[i] ^= 0x01
		if _, err := l.Unwrap(ctx, bad, aad); !errors.Is(err, ErrAuthentication) {
			t.Fatalf("flip byte %d: err = %v, want ErrAuthentication", i, err)
		}
	}
	bad := w.Clone()
	bad.Ciphertext[0] = 0x7f
	if _, err := l.Unwrap(ctx, bad, aad); !errors.Is(err, ErrUnsupported) {
		t.Fatalf("unknown version: err = %v, want ErrUnsupported", err)
	}
	other, _ := newTestLocal(t)
	if _, err := other.Unwrap(ctx, w, aad); !errors.Is(err, ErrAuthentication) || errors.Is(err, ErrUnavailable) {
		t.Fatalf("wrong kek: err = %v, want ErrAuthentication only", err)
	}
}

func TestOpenDispatch(t *testing.T) {
	ctx := context.Background()
	_, path := newTestLocal(t)
	abs, _ := filepath.Abs(path)

	p, err := Open(ctx, "local://"+abs)
	if err != nil {
		t.Fatalf("local URI: %v", err)
	}
	if p.URI() != "local://"+abs {
		t.Errorf("URI = %q", p.URI())
	}
	p2, err := Open(ctx, path)
	if err != nil {
		t.Fatalf("bare path: %v", err)
	}
	if p2.URI() != p.URI() {
		t.Errorf("bare path URI = %q, want %q", p2.URI(), p.URI())
	}
	// Both handles hold the same KEK.
	w, err := p.Wrap(ctx, []byte("0123456789abcdef0123456789abcdef"), nil)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := p2.Unwrap(ctx, w, nil); err != nil {
		t.Fatalf("cross-handle unwrap: %v", err)
	}

	for _, uri := range []string{"aws-kms://arn:aws:kms:eu-west-1:1:key/x", "pkcs11:token=kms", "gopher://x/y"} {
		_, err := Open(ctx, uri)
		if !errors.Is(err, ErrUnsupported) {
			t.Errorf("%s: err = %v, want ErrUnsupported", uri, err)
		}
	}
	if _, err := Open(ctx, "gopher://x/y"); err == nil || !strings.Contains(err.Error(), `"gopher"`) {
		t.Errorf("unknown scheme error should name the scheme: %v", err)
	}
	if _, err := Open(ctx, "local://host/path"); err == nil {
		t.Error("local URI with host accepted")
	}
}
