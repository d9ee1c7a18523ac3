package keystore

import (
	"context"
	"crypto/ecdh"
	"crypto/rsa"
	"crypto/x509"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"slices"
	"time"

	"github.com/attested-kms/attested-kms/hpke"
	"github.com/attested-kms/attested-kms/keystore/kek"
)

// Key import (bring your own key).
//
// ImportKey takes a raw X25519 private key. ImportWrapped takes it wrapped
// to the KMS's import key, an RSA-3072 key pair created on first use whose
// private key is sealed like an intermediate (an AES-256 key wrapped by the
// root KEK encrypts its PKCS#8 form) and stored as a metadata record. The
// import key is used for nothing but unwrapping imports.

const (
	importKeyRecordName = "import-key"
	importKeyBits       = 3072
	importKeyLabel      = "attested-kms/v2 import-key"
)

// importKeyRecord is the stored import key.
type importKeyRecord struct {
	// PublicKey is the PKIX DER public key, what callers wrap to.
	PublicKey []byte `json:"public_key"`
	// Wrapped is the AES-256 key that encrypts the private key, wrapped by
	// the root KEK with AAD importKeyAAD(PublicKey).
	Wrapped kek.Wrapped `json:"wrapped"`
	// Nonce and Ciphertext: AES-256-GCM of the PKCS#8 private key, same
	// AAD.
	Nonce      []byte    `json:"nonce"`
	Ciphertext []byte    `json:"ciphertext"`
	Created    time.Time `json:"created"`
}

func importKeyAAD(pub []byte) []byte {
	return appendField(appendField(nil, []byte(importKeyLabel)), pub)
}

// ImportKey seals a caller-supplied raw X25519 private key (32 bytes) under
// the key hierarchy and adds it to keyset as a new key version, active now;
// the set's active keys retire, as with Rotate. Any 32 bytes are a valid
// X25519 scalar (clamping happens when it is used, so pre-clamped and
// unclamped forms of a key are the same key); what is refused is a key whose
// public key is all-zero or of small order, and a key the set already
// holds. The caller should zero priv afterwards.
func (m *Manager) ImportKey(ctx context.Context, keyset string, priv []byte) (*Key, error) {
	if len(priv) != privateKeySize {
		return nil, fmt.Errorf("import key into %q: private key is %d bytes, want %d: %w", keyset, len(priv), privateKeySize, ErrInvalidArgument)
	}
	sk, err := ecdh.X25519().NewPrivateKey(priv)
	if err != nil {
		return nil, fmt.Errorf("import key into %q: private key rejected: %w", keyset, ErrInvalidArgument)
	}
	if err := hpke.ValidateX25519PublicKey(sk.PublicKey().Bytes()); err != nil {
		return nil, fmt.Errorf("import key into %q: %w", keyset, errors.Join(ErrInvalidArgument, err))
	}
	own := slices.Clone(priv)
	defer clear(own)
	return m.rotate(ctx, keyset, own, "import key into")
}

// checkNotPresent refuses a private key whose public key an undestroyed key
// of the set already has: two versions of one key would share a kid slot
// for nothing and confuse audits.
func checkNotPresent(keys []*Key, priv []byte) error {
	sk, err := ecdh.X25519().NewPrivateKey(priv)
	if err != nil {
		return fmt.Errorf("private key rejected: %w", ErrInvalidArgument)
	}
	pub := sk.PublicKey().Bytes()
	for _, k := range keys {
		if k.State != StateDestroyed && slices.Equal(k.PublicKey, pub) {
			return fmt.Errorf("key is already in the set as %s v%d: %w", k.KID, k.Version, ErrAlreadyExists)
		}
	}
	return nil
}

// ImportPublicKey returns the KMS's import public key (RSA-3072, PKIX DER),
// creating the key pair on first use. Wrap keys to it with
// CKM_RSA_AES_KEY_WRAP (RSA-OAEP-SHA256 of an AES-256 key, then RFC 5649
// key wrap of the key; hpke.WrapRSA) and pass the result to ImportWrapped.
func (m *Manager) ImportPublicKey(ctx context.Context) ([]byte, error) {
	rec, _, err := m.importKeyRecord(ctx)
	if err == nil {
		return slices.Clone(rec.PublicKey), nil
	}
	if !errors.Is(err, ErrMetadataNotFound) {
		return nil, fmt.Errorf("import public key: %w", err)
	}
	rec, err = m.newImportKey(ctx)
	if err != nil {
		return nil, fmt.Errorf("import public key: %w", err)
	}
	value, err := json.Marshal(rec)
	if err != nil {
		return nil, fmt.Errorf("import public key: encode: %w", err)
	}
	if _, err := m.store.PutMetadata(ctx, importKeyRecordName, value, 0); err != nil {
		if !errors.Is(err, ErrAlreadyExists) {
			return nil, fmt.Errorf("import public key: store: %w", err)
		}
		// Another replica created it first: use theirs.
		if rec, _, err = m.importKeyRecord(ctx); err != nil {
			return nil, fmt.Errorf("import public key: %w", err)
		}
	} else {
		m.log.Info("import key created", "kek", rec.Wrapped.KEKURI)
	}
	return slices.Clone(rec.PublicKey), nil
}

func (m *Manager) importKeyRecord(ctx context.Context) (*importKeyRecord, uint64, error) {
	value, rev, err := m.store.Metadata(ctx, importKeyRecordName)
	if err != nil {
		return nil, 0, err
	}
	var rec importKeyRecord
	if err := json.Unmarshal(value, &rec); err != nil {
		return nil, 0, fmt.Errorf("decode import key record: %w", err)
	}
	return &rec, rev, nil
}

// newImportKey generates the RSA key pair and seals its private key under
// the root KEK: one outside call.
func (m *Manager) newImportKey(ctx context.Context) (*importKeyRecord, error) {
	sk, err := rsa.GenerateKey(m.rand, importKeyBits)
	if err != nil {
		return nil, fmt.Errorf("generate RSA key: %w", err)
	}
	pub, err := x509.MarshalPKIXPublicKey(&sk.PublicKey)
	if err != nil {
		return nil, fmt.Errorf("encode RSA public key: %w", err)
	}
	der, err := x509.MarshalPKCS8PrivateKey(sk)
	if err != nil {
		return nil, fmt.Errorf("encode RSA private key: %w", err)
	}
	defer clear(der)
	dek := make([]byte, dekSize)
	defer clear(dek)
	if _, err := io.ReadFull(m.rand, dek); err != nil {
		return nil, fmt.Errorf("generate data key: %w", err)
	}
	aead, err := newGCM(dek)
	if err != nil {
		return nil, err
	}
	nonce := make([]byte, aead.NonceSize())
	if _, err := io.ReadFull(m.rand, nonce); err != nil {
		return nil, fmt.Errorf("generate nonce: %w", err)
	}
	aad := importKeyAAD(pub)
	root := m.rootProvider()
	w, err := root.Wrap(ctx, dek, aad)
	if err != nil {
		return nil, fmt.Errorf("wrap import key with KEK %s: %w", root.URI(), err)
	}
	return &importKeyRecord{
		PublicKey:  pub,
		Wrapped:    w.Clone(),
		Nonce:      nonce,
		Ciphertext: aead.Seal(nil, nonce, der, aad),
		Created:    m.clock(),
	}, nil
}

// openImportKey unseals the import private key: one outside call. Nothing
// is cached; imports are rare and the key is needed for nothing else.
func (m *Manager) openImportKey(ctx context.Context, rec *importKeyRecord) (*rsa.PrivateKey, error) {
	p, err := m.provider(ctx, rec.Wrapped.KEKURI)
	if err != nil {
		return nil, err
	}
	aad := importKeyAAD(rec.PublicKey)
	dek, err := p.Unwrap(ctx, rec.Wrapped, aad)
	if err != nil {
		switch {
		case errors.Is(err, kek.ErrKeyDisabled):
			err = errors.Join(ErrKEKDisabled, err)
		case errors.Is(err, kek.ErrAuthentication):
			err = errors.Join(ErrSealedKeyInvalid, err)
		}
		return nil, fmt.Errorf("unwrap import key with KEK %s: %w", rec.Wrapped.KEKURI, err)
	}
	defer clear(dek)
	if len(dek) != dekSize {
		return nil, fmt.Errorf("import key data key has wrong size: %w", ErrSealedKeyInvalid)
	}
	aead, err := newGCM(dek)
	if err != nil {
		return nil, err
	}
	if len(rec.Nonce) != aead.NonceSize() {
		return nil, fmt.Errorf("import key has bad nonce size: %w", ErrSealedKeyInvalid)
	}
	der, err := aead.Open(nil, rec.Nonce, rec.Ciphertext, aad)
	if err != nil {
		return nil, fmt.Errorf("decrypt import key: %w", ErrSealedKeyInvalid)
	}
	defer clear(der)
	k, err := x509.ParsePKCS8PrivateKey(der)
	if err != nil {
		return nil, fmt.Errorf("parse import key: %w", ErrSealedKeyInvalid)
	}
	sk, ok := k.(*rsa.PrivateKey)
	if !ok {
		return nil, fmt.Errorf("import key is %T, not RSA: %w", k, ErrSealedKeyInvalid)
	}
	pub, err := x509.MarshalPKIXPublicKey(&sk.PublicKey)
	if err != nil || !slices.Equal(pub, rec.PublicKey) {
		return nil, fmt.Errorf("import private key does not match its public key: %w", ErrSealedKeyInvalid)
	}
	return sk, nil
}

// ImportWrapped unwraps blob, a CKM_RSA_AES_KEY_WRAP of a raw X25519
// private key to the import public key (see ImportPublicKey), and imports
// the key into keyset (ImportKey). The plaintext exists only in memory.
// A blob that does not unwrap is ErrInvalidArgument, with no detail (no
// padding oracle).
func (m *Manager) ImportWrapped(ctx context.Context, keyset string, blob []byte) (*Key, error) {
	if !ValidKeySetName(keyset) {
		return nil, fmt.Errorf("import key into %q: %w", keyset, ErrInvalidArgument)
	}
	rec, _, err := m.importKeyRecord(ctx)
	if errors.Is(err, ErrMetadataNotFound) {
		return nil, fmt.Errorf("import key into %q: no import key exists yet (fetch the import public key first): %w", keyset, ErrInvalidArgument)
	}
	if err != nil {
		return nil, fmt.Errorf("import key into %q: %w", keyset, err)
	}
	sk, err := m.openImportKey(ctx, rec)
	if err != nil {
		return nil, fmt.Errorf("import key into %q: %w", keyset, err)
	}
	priv, err := hpke.UnwrapRSA(sk, blob)
	if err != nil {
		return nil, fmt.Errorf("import key into %q: wrapped key does not unwrap with the import key: %w", keyset, ErrInvalidArgument)
	}
	defer clear(priv)
	return m.ImportKey(ctx, keyset, priv)
}

// rewrapImportKey moves the import key (if any) to the root KEK to.
func (m *Manager) rewrapImportKey(ctx context.Context, to kek.Provider) error {
	rec, rev, err := m.importKeyRecord(ctx)
	if errors.Is(err, ErrMetadataNotFound) {
		return nil
	}
	if err != nil {
		return err
	}
	if rec.Wrapped.KEKURI == to.URI() {
		return nil
	}
	p, err := m.provider(ctx, rec.Wrapped.KEKURI)
	if err != nil {
		return err
	}
	aad := importKeyAAD(rec.PublicKey)
	dek, err := p.Unwrap(ctx, rec.Wrapped, aad)
	if err != nil {
		return fmt.Errorf("unwrap import key with KEK %s: %w", rec.Wrapped.KEKURI, err)
	}
	defer clear(dek)
	w, err := to.Wrap(ctx, dek, aad)
	if err != nil {
		return fmt.Errorf("wrap import key with KEK %s: %w", to.URI(), err)
	}
	rec.Wrapped = w.Clone()
	value, err := json.Marshal(rec)
	if err != nil {
		return fmt.Errorf("encode import key record: %w", err)
	}
	if _, err := m.store.PutMetadata(ctx, importKeyRecordName, value, rev); err != nil {
		return fmt.Errorf("store import key: %w", err)
	}
	return nil
}
