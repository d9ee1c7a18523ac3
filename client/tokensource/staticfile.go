package tokensource

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"runtime"
)

// errAccessibleByOthers is wrapped by StaticFile's refusal of a file that
// users outside its owner and group can access.
var errAccessibleByOthers = errors.New("token file is accessible by other users")

// StaticFile reads a token from a file on every call, trimming surrounding
// whitespace. It is for development and for deployments where a sidecar
// keeps the file fresh; the file is never cached by StaticFile itself.
//
// The file must not be readable, writable or executable by "others"
// (mode & 0o007 == 0) on Unix systems: a bearer token readable by every
// local user is a leaked token, and a world-writable one lets any local
// user substitute their own identity. Group access is allowed because
// Kubernetes shares volumes between a refresher sidecar and the service
// through the pod's fsGroup. Kubernetes secret volumes default to 0644;
// set defaultMode to 0440 (or 0400). Permission bits are not checked on
// Windows, where they do not reflect access control.
type StaticFile struct {
	path string
}

// NewStaticFile returns a source that reads the token from path.
func NewStaticFile(path string) *StaticFile {
	return &StaticFile{path: path}
}

// Token reads and returns the token in the file.
func (s *StaticFile) Token(ctx context.Context) (string, error) {
	// A file read is not cancellable, but honouring an already-cancelled
	// context keeps StaticFile consistent with the network sources.
	if err := ctx.Err(); err != nil {
		return "", fmt.Errorf("tokensource: static file: %w", err)
	}
	tok, err := readTokenFile(s.path, true)
	if err != nil {
		return "", fmt.Errorf("tokensource: static file: %w", err)
	}
	return tok, nil
}

func checkPrivate(path string, mode fs.FileMode) error {
	if runtime.GOOS == "windows" {
		return nil
	}
	if mode.Perm()&0o007 != 0 {
		return fmt.Errorf("%w: %s has mode %v; remove access for others (e.g. chmod 0600 or 0640)", errAccessibleByOthers, path, mode.Perm())
	}
	return nil
}
