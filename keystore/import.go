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

// importKey is how the import key is sealed and named.
var importKey = sealedSecretKind{record: importKeyRecordName, label: importKeyLabel, what: "import key"}

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
	rec, err := m.sealedSecretOrCreate(ctx, importKey, m.newImportKeyPair)
	if err != nil {
		return nil, fmt.Errorf("import public key: %w", err)
	}
	return slices.Clone(rec.PublicKey), nil
}

// newImportKeyPair generates the RSA key pair: the PKIX DER public key and
// the PKCS#8 private key (which the caller clears).
func (m *Manager) newImportKeyPair() (pub, secret []byte, err error) {
	sk, err := rsa.GenerateKey(m.rand, importKeyBits)
	if err != nil {
		return nil, nil, fmt.Errorf("generate RSA key: %w", err)
	}
	if pub, err = x509.MarshalPKIXPublicKey(&sk.PublicKey); err != nil {
		return nil, nil, fmt.Errorf("encode RSA public key: %w", err)
	}
	if secret, err = x509.MarshalPKCS8PrivateKey(sk); err != nil {
		return nil, nil, fmt.Errorf("encode RSA private key: %w", err)
	}
	return pub, secret, nil
}

// openImportKey unseals the import private key: one outside call. Nothing
// is cached; imports are rare and the key is needed for nothing else.
func (m *Manager) openImportKey(ctx context.Context, rec *sealedSecret) (*rsa.PrivateKey, error) {
	der, err := m.openSealedSecret(ctx, importKey, rec)
	if err != nil {
		return nil, err
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
	rec, _, err := m.sealedSecretRecord(ctx, importKey)
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

// Sealed secrets: the import key and the audit key are each a key pair
// created on first use whose private half is sealed like an intermediate
// (an AES-256 data key wrapped by the root KEK encrypts it) and stored as
// one metadata record. RewrapRoot moves them with the key sets.

// sealedSecretKind names one sealed secret: its metadata record and the
// label its AAD binds, so one record's ciphertext cannot pass for another's.
type sealedSecretKind struct {
	record, label, what string
}

func (k sealedSecretKind) aad(pub []byte) []byte {
	return appendField(appendField(nil, []byte(k.label)), pub)
}

// sealedSecret is a stored sealed secret. The JSON names are those of the
// original import key record, which is stored in this form.
type sealedSecret struct {
	// PublicKey is the PKIX DER public key of the pair.
	PublicKey []byte `json:"public_key"`
	// Wrapped is the AES-256 key that encrypts the secret, wrapped by the
	// root KEK with AAD kind.aad(PublicKey).
	Wrapped kek.Wrapped `json:"wrapped"`
	// Nonce and Ciphertext: AES-256-GCM of the secret, same AAD.
	Nonce      []byte    `json:"nonce"`
	Ciphertext []byte    `json:"ciphertext"`
	Created    time.Time `json:"created"`
}

func (m *Manager) sealedSecretRecord(ctx context.Context, kind sealedSecretKind) (*sealedSecret, uint64, error) {
	value, rev, err := m.store.Metadata(ctx, kind.record)
	if err != nil {
		return nil, 0, err
	}
	var rec sealedSecret
	if err := json.Unmarshal(value, &rec); err != nil {
		return nil, 0, fmt.Errorf("decode %s record: %w", kind.what, err)
	}
	return &rec, rev, nil
}

// sealedSecretOrCreate returns the stored record of kind, creating it
// with a key pair from generate (which returns the public key and the
// secret to seal) if there is none yet. When two replicas race, the first
// stored wins and the other's pair is discarded.
func (m *Manager) sealedSecretOrCreate(ctx context.Context, kind sealedSecretKind, generate func() (pub, secret []byte, err error)) (*sealedSecret, error) {
	rec, _, err := m.sealedSecretRecord(ctx, kind)
	if err == nil || !errors.Is(err, ErrMetadataNotFound) {
		return rec, err
	}
	pub, secret, err := generate()
	if err != nil {
		return nil, err
	}
	defer clear(secret)
	if rec, err = m.sealSecret(ctx, kind, pub, secret); err != nil {
		return nil, err
	}
	value, err := json.Marshal(rec)
	if err != nil {
		return nil, fmt.Errorf("encode %s record: %w", kind.what, err)
	}
	if _, err := m.store.PutMetadata(ctx, kind.record, value, 0); err != nil {
		if !errors.Is(err, ErrAlreadyExists) {
			return nil, fmt.Errorf("store %s: %w", kind.what, err)
		}
		// Another replica created it first: use theirs.
		rec, _, err = m.sealedSecretRecord(ctx, kind)
		return rec, err
	}
	m.log.Info(kind.what+" created", "kek", rec.Wrapped.KEKURI)
	return rec, nil
}

// sealSecret seals secret under the root KEK: one outside call.
func (m *Manager) sealSecret(ctx context.Context, kind sealedSecretKind, pub, secret []byte) (*sealedSecret, error) {
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
	aad := kind.aad(pub)
	root := m.rootProvider()
	w, err := root.Wrap(ctx, dek, aad)
	if err != nil {
		return nil, fmt.Errorf("wrap %s with KEK %s: %w", kind.what, root.URI(), err)
	}
	return &sealedSecret{
		PublicKey:  slices.Clone(pub),
		Wrapped:    w.Clone(),
		Nonce:      nonce,
		Ciphertext: aead.Seal(nil, nonce, secret, aad),
		Created:    m.clock(),
	}, nil
}

// openSealedSecret unseals rec's secret (the caller clears it): one
// outside call. The caller checks that it matches rec.PublicKey.
func (m *Manager) openSealedSecret(ctx context.Context, kind sealedSecretKind, rec *sealedSecret) ([]byte, error) {
	dek, err := m.unwrapSealedSecret(ctx, kind, rec)
	if err != nil {
		return nil, err
	}
	defer clear(dek)
	aead, err := newGCM(dek)
	if err != nil {
		return nil, err
	}
	if len(rec.Nonce) != aead.NonceSize() {
		return nil, fmt.Errorf("%s has bad nonce size: %w", kind.what, ErrSealedKeyInvalid)
	}
	secret, err := aead.Open(nil, rec.Nonce, rec.Ciphertext, kind.aad(rec.PublicKey))
	if err != nil {
		return nil, fmt.Errorf("decrypt %s: %w", kind.what, ErrSealedKeyInvalid)
	}
	return secret, nil
}

// unwrapSealedSecret returns rec's data key, unwrapped by the KEK named
// on it (the caller clears it).
func (m *Manager) unwrapSealedSecret(ctx context.Context, kind sealedSecretKind, rec *sealedSecret) ([]byte, error) {
	p, err := m.provider(ctx, rec.Wrapped.KEKURI)
	if err != nil {
		return nil, err
	}
	dek, err := p.Unwrap(ctx, rec.Wrapped, kind.aad(rec.PublicKey))
	if err != nil {
		switch {
		case errors.Is(err, kek.ErrKeyDisabled):
			err = errors.Join(ErrKEKDisabled, err)
		case errors.Is(err, kek.ErrAuthentication):
			err = errors.Join(ErrSealedKeyInvalid, err)
		}
		return nil, fmt.Errorf("unwrap %s with KEK %s: %w", kind.what, rec.Wrapped.KEKURI, err)
	}
	if len(dek) != dekSize {
		clear(dek)
		return nil, fmt.Errorf("%s data key has wrong size: %w", kind.what, ErrSealedKeyInvalid)
	}
	return dek, nil
}

// rewrapSealedSecret moves the sealed secret of kind (if any) to the root
// KEK to: only its data key is re-wrapped.
func (m *Manager) rewrapSealedSecret(ctx context.Context, kind sealedSecretKind, to kek.Provider) error {
	rec, rev, err := m.sealedSecretRecord(ctx, kind)
	if errors.Is(err, ErrMetadataNotFound) {
		return nil
	}
	if err != nil {
		return err
	}
	if rec.Wrapped.KEKURI == to.URI() {
		return nil
	}
	dek, err := m.unwrapSealedSecret(ctx, kind, rec)
	if err != nil {
		return err
	}
	defer clear(dek)
	w, err := to.Wrap(ctx, dek, kind.aad(rec.PublicKey))
	if err != nil {
		return fmt.Errorf("wrap %s with KEK %s: %w", kind.what, to.URI(), err)
	}
	rec.Wrapped = w.Clone()
	value, err := json.Marshal(rec)
	if err != nil {
		return fmt.Errorf("encode %s record: %w", kind.what, err)
	}
	if _, err := m.store.PutMetadata(ctx, kind.record, value, rev); err != nil {
		return fmt.Errorf("store %s: %w", kind.what, err)
	}
	return nil
}
