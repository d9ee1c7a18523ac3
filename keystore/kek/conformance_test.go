package kek_test

import (
	"path/filepath"
	"testing"

	"github.com/attested-kms/attested-kms/keystore/kek"
	"github.com/attested-kms/attested-kms/keystore/kek/kektest"
)

func TestConformance(t *testing.T) {
	// The file system is the only owner of a local KEK and nothing leaves
	// the process, so Owner and Network do not apply.
	path := filepath.Join(t.TempDir(), "kek.key")
	if err := kek.CreateLocal(path); err != nil {
		t.Fatal(err)
	}
	kektest.Run(t, kektest.Config{
		New: func(t testing.TB) kek.Provider {
			p, err := kek.OpenLocal(path)
			if err != nil {
				t.Fatal(err)
			}
			return p
		},
		Randomized: true,
	})
}
