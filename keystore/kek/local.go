package kek

import (
	"context"
	"crypto/aes"
	"crypto/cipher"
	"crypto/rand"
	"crypto/sha256"
	"crypto/subtle"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
)

// LocalKeySize is the size of a local KEK: an AES-256 key.
const LocalKeySize = 32

// Wrapped form of the local provider, version 1:
//
//	0x01 || kek_id (8) || nonce (12) || AES-256-GCM(dek, aad = 0x01 || kek_id || caller aad)
//
// The leading version byte lets later formats (another AEAD, a KEK ring) be
// told apart. kek_id is a one-way fingerprint of the KEK so a record wrapped
// by a different KEK is reported as such instead of as generic tampering;
// the header is authenticated as part of the AAD so it cannot be swapped.
const (
	localFormatV1   = 0x01
	localKEKIDSize  = 8
	localNonceSize  = 12
	localHeaderSize = 1 + localKEKIDSize
	localOverhead   = localHeaderSize + localNonceSize + 16
)

// Local is a KEK held in a file on local disk. It is meant for development
// and tests: the KEK sits next to the data it protects, so it gives none of
// the separation a cloud KMS or HSM gives.
type Local struct {
	uri   string
	kekID [localKEKIDSize]byte
	aead  cipher.AEAD
}

var _ Provider = (*Local)(nil)

// CreateLocal writes a fresh random 32-byte KEK to path with mode 0600. It
// refuses to overwrite an existing file: replacing a KEK silently would make
// every key sealed under the old one unrecoverable.
func CreateLocal(path string) (err error) {
	key := make([]byte, LocalKeySize)
	defer clear(key)
	if _, err := io.ReadFull(rand.Reader, key); err != nil {
		return fmt.Errorf("kek: generate local key: %w", err)
	}
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o600)
	if err != nil {
		if errors.Is(err, fs.ErrExist) {
			return fmt.Errorf("kek: refusing to overwrite existing key file %s: %w", path, err)
		}
		return fmt.Errorf("kek: create key file: %w", err)
	}
	defer func() {
		if cerr := f.Close(); err == nil && cerr != nil {
			err = fmt.Errorf("kek: close key file: %w", cerr)
		}
		if err != nil {
			_ = os.Remove(path) // do not leave a partial key behind
		}
	}()
	if _, err := f.Write(key); err != nil {
		return fmt.Errorf("kek: write key file: %w", err)
	}
	if err := f.Sync(); err != nil {
		return fmt.Errorf("kek: sync key file: %w", err)
	}
	return nil
}

// OpenLocal loads the KEK in path. It refuses files that are not regular
// files, that group or others may read or write, or that do not hold exactly
// LocalKeySize bytes.
func OpenLocal(path string) (*Local, error) {
	abs, err := filepath.Abs(path)
	if err != nil {
		return nil, fmt.Errorf("kek: resolve key file path: %w", err)
	}
	f, err := os.Open(abs)
	if err != nil {
		// A missing or unreadable file is an availability problem (e.g. a
		// secret volume not mounted yet), not an integrity one.
		return nil, fmt.Errorf("kek: open key file %s: %w", abs, errors.Join(ErrUnavailable, err))
	}
	defer f.Close()
	// Stat the open descriptor rather than the path so the checks apply to
	// the file actually read.
	fi, err := f.Stat()
	if err != nil {
		return nil, fmt.Errorf("kek: stat key file %s: %w", abs, errors.Join(ErrUnavailable, err))
	}
	if !fi.Mode().IsRegular() {
		return nil, fmt.Errorf("kek: key file %s is not a regular file: %w", abs, ErrInsecureKeyFile)
	}
	if perm := fi.Mode().Perm(); perm&0o077 != 0 {
		return nil, fmt.Errorf("kek: key file %s has mode %#o, want no group/other access (chmod 600): %w", abs, perm, ErrInsecureKeyFile)
	}
	if fi.Size() != LocalKeySize {
		return nil, fmt.Errorf("kek: key file %s has %d bytes, want %d: %w", abs, fi.Size(), LocalKeySize, ErrInvalidKeyFile)
	}
	key := make([]byte, LocalKeySize+1) // one spare byte detects growth after Stat
	defer clear(key)
	n, err := io.ReadFull(f, key)
	if err != nil && !errors.Is(err, io.ErrUnexpectedEOF) {
		return nil, fmt.Errorf("kek: read key file %s: %w", abs, errors.Join(ErrUnavailable, err))
	}
	if n != LocalKeySize {
		return nil, fmt.Errorf("kek: key file %s changed size while reading: %w", abs, ErrInvalidKeyFile)
	}
	return newLocal("local://"+filepath.ToSlash(abs), key[:LocalKeySize])
}

func newLocal(uri string, key []byte) (*Local, error) {
	block, err := aes.NewCipher(key)
	if err != nil {
		return nil, fmt.Errorf("kek: init AES: %w", err)
	}
	aead, err := cipher.NewGCM(block)
	if err != nil {
		return nil, fmt.Errorf("kek: init GCM: %w", err)
	}
	l := &Local{uri: uri, aead: aead}
	h := sha256.New()
	h.Write([]byte("attested-kms/v1 local-kek-id\x00"))
	h.Write(key)
	copy(l.kekID[:], h.Sum(nil))
	return l, nil
}

// URI returns local:///abs/path/to/kek.key.
func (l *Local) URI() string { return l.uri }

// LocalAlgorithm is the Algorithm of the local provider's Wrapped values.
const LocalAlgorithm = "AES-256-GCM"

// Wrap encrypts dek under the KEK with a random nonce.
func (l *Local) Wrap(ctx context.Context, dek, aad []byte) (Wrapped, error) {
	if err := ctx.Err(); err != nil {
		return Wrapped{}, err
	}
	out := make([]byte, localHeaderSize+localNonceSize, localOverhead+len(dek))
	out[0] = localFormatV1
	copy(out[1:localHeaderSize], l.kekID[:])
	nonce := out[localHeaderSize:]
	if _, err := io.ReadFull(rand.Reader, nonce); err != nil {
		return Wrapped{}, fmt.Errorf("kek: generate nonce: %w", err)
	}
	return Wrapped{
		KEKURI:     l.uri,
		Algorithm:  LocalAlgorithm,
		Ciphertext: l.aead.Seal(out, nonce, dek, l.fullAAD(out[:localHeaderSize], aad)),
	}, nil
}

// Unwrap decrypts a value produced by Wrap with the same KEK and aad.
func (l *Local) Unwrap(ctx context.Context, w Wrapped, aad []byte) ([]byte, error) {
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	if w.Algorithm != LocalAlgorithm {
		return nil, fmt.Errorf("kek: algorithm %q not supported by the local provider: %w", w.Algorithm, ErrUnsupported)
	}
	wrapped := w.Ciphertext
	if len(wrapped) == 0 {
		return nil, fmt.Errorf("kek: empty wrapped key: %w", ErrAuthentication)
	}
	if wrapped[0] != localFormatV1 {
		return nil, fmt.Errorf("kek: wrapped key format %#x not supported by local provider: %w", wrapped[0], ErrUnsupported)
	}
	if len(wrapped) < localOverhead {
		return nil, fmt.Errorf("kek: wrapped key truncated: %w", ErrAuthentication)
	}
	if subtle.ConstantTimeCompare(wrapped[1:localHeaderSize], l.kekID[:]) != 1 {
		return nil, fmt.Errorf("kek: key was wrapped by a different KEK than %s: %w", l.uri, ErrAuthentication)
	}
	nonce := wrapped[localHeaderSize : localHeaderSize+localNonceSize]
	dek, err := l.aead.Open(nil, nonce, wrapped[localHeaderSize+localNonceSize:], l.fullAAD(wrapped[:localHeaderSize], aad))
	if err != nil {
		return nil, fmt.Errorf("kek: unwrap: %w", ErrAuthentication)
	}
	return dek, nil
}

func (l *Local) fullAAD(header, aad []byte) []byte {
	full := make([]byte, 0, len(header)+len(aad))
	return append(append(full, header...), aad...)
}
