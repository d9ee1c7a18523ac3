package tokensource

import (
	"context"
	"errors"
	"os"
	"runtime"
	"strings"
	"testing"
)

func TestStaticFileTrimsAndRereads(t *testing.T) {
	dir := t.TempDir()
	path := writeFile(t, dir, "token", "  first-token\r\n", 0o600)
	src := NewStaticFile(path)
	tok, err := src.Token(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	if tok != "first-token" {
		t.Errorf("token = %q, want trimmed first-token", tok)
	}
	// A sidecar refreshes the file; group-readable is allowed (fsGroup).
	writeFile(t, dir, "token", "second-token\n", 0o640)
	if tok, err = src.Token(context.Background()); err != nil || tok != "second-token" {
		t.Errorf("after refresh: token = %q, err = %v", tok, err)
	}
}

func TestStaticFileRefusals(t *testing.T) {
	dir := t.TempDir()
	tests := map[string]string{
		"missing":     dir + "/absent",
		"empty":       writeFile(t, dir, "empty", "\n\t ", 0o600),
		"inner space": writeFile(t, dir, "space", "two words", 0o600),
		"directory":   dir,
	}
	for name, path := range tests {
		if tok, err := NewStaticFile(path).Token(context.Background()); err == nil {
			t.Errorf("%s: got %q, want an error", name, tok)
		}
	}

	if runtime.GOOS != "windows" {
		for _, mode := range []os.FileMode{0o644, 0o604, 0o602} {
			path := writeFile(t, dir, "open", "secret-token-value", mode)
			_, err := NewStaticFile(path).Token(context.Background())
			if !errors.Is(err, errAccessibleByOthers) {
				t.Errorf("mode %o: err = %v, want refusal", mode, err)
			} else if strings.Contains(err.Error(), "secret-token-value") {
				t.Errorf("mode %o: error leaks the token", mode)
			}
		}
	}

	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	ok := writeFile(t, dir, "ok", "tok", 0o600)
	if _, err := NewStaticFile(ok).Token(ctx); !errors.Is(err, context.Canceled) {
		t.Errorf("cancelled context: err = %v", err)
	}
}
