// Package pkcs11 is the KEK provider for keys held in a PKCS#11 token (an
// HSM, a cloud HSM partition, SoftHSM2 for development), named by RFC 7512
// URIs such as
//
//	pkcs11:token=kms;object=kek;type=secret-key?module-path=/usr/lib/softhsm/libsofthsm2.so&pin-source=file:/etc/kms/hsm.pin
//
// The KEK is an AES-256 secret key that never leaves the token: Wrap and
// Unwrap run CKM_AES_GCM inside it. The package also exports a key held in
// the token for import into the KMS (ExportForImport, "bring your own
// key"), wrapped inside the token to the KMS's RSA import key.
package pkcs11

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"io"

	"github.com/miekg/pkcs11"

	"github.com/attested-kms/attested-kms/keystore/kek"
	"github.com/attested-kms/attested-kms/keystore/kek/pkcs11/internal/hsm"
)

// Algorithm is the Algorithm of this provider's Wrapped values.
const Algorithm = "PKCS11-AES-256-GCM"

// Wrapped form, version 1:
//
//	0x01 || iv (12) || CKM_AES_GCM(dek, aad = 0x01 || caller aad, 128-bit tag)
//
// The version byte is authenticated through the AAD so a later format
// cannot be passed off as this one.
const (
	formatV1 = 0x01
	ivSize   = 12
	tagBits  = 128
	overhead = 1 + ivSize + tagBits/8
	keyBytes = 32
	idBytes  = 8
)

// Provider wraps data keys under an AES-256 key in a PKCS#11 token. It is
// safe for concurrent use: every operation borrows a session of its own
// from a bounded pool. Close it to release the sessions and the module.
type Provider struct {
	uri   *URI
	canon string
	tok   *hsm.Token
}

var _ kek.Provider = (*Provider)(nil)

// Open parses uri, loads the module, logs in to the token and checks that
// the key exists and is an AES-256 secret key, so configuration mistakes
// surface at start-up. Errors carry a kek class: ErrUnavailable when the
// module, the token or the PIN source cannot be reached, ErrKeyDisabled when
// the key is missing or the PIN is rejected or locked, ErrUnsupported for a
// malformed URI or a key of the wrong kind.
func Open(ctx context.Context, uri string) (*Provider, error) {
	u, err := ParseURI(uri)
	if err != nil {
		return nil, err
	}
	if err := u.checkSecretKey(); err != nil {
		return nil, err
	}
	tok, err := openToken(ctx, u)
	if err != nil {
		return nil, err
	}
	p := &Provider{uri: u, canon: u.String(), tok: tok}
	if err := tok.Do(ctx, func(s hsm.Session) error {
		_, _, err := findAESKey(s, u)
		return err
	}); err != nil {
		tok.Close()
		return nil, classify("find key", err)
	}
	return p, nil
}

// openToken opens the token u names, classifying failures.
func openToken(ctx context.Context, u *URI) (*hsm.Token, error) {
	path, err := u.modulePath()
	if err != nil {
		return nil, err
	}
	pin, err := u.pinFunc()
	if err != nil {
		return nil, err
	}
	tok, err := hsm.Open(ctx, hsm.Config{ModulePath: path, Select: u.selector(), PIN: pin})
	if err != nil {
		return nil, classify("open token", err)
	}
	return tok, nil
}

func (u *URI) selector() hsm.Selector {
	return hsm.Selector{
		Label: u.Token, Manufacturer: u.Manufacturer, Serial: u.Serial, Model: u.Model,
		SlotDescription: u.SlotDescription, SlotManufacturer: u.SlotManufacturer, SlotID: u.SlotID,
		LibraryManufacturer: u.LibraryManufacturer, LibraryDescription: u.LibraryDescription, LibraryVersion: u.LibraryVersion,
	}
}

// checkSecretKey checks that u names a secret key object unambiguously
// enough to be looked up.
func (u *URI) checkSecretKey() error {
	if u.Object == "" && u.ID == nil {
		return errURI("object= or id= is required to name the key")
	}
	if u.Type != "" && u.Type != "secret-key" {
		return errURI("type=%s: the key must be a secret-key", u.Type)
	}
	return nil
}

// URI returns the canonical form of the provider's URI, without pin-value.
func (p *Provider) URI() string { return p.canon }

// Close releases the provider's sessions and its reference to the module.
func (p *Provider) Close() error {
	p.tok.Close()
	return nil
}

// Wrap encrypts dek with AES-256-GCM inside the token under a random IV.
func (p *Provider) Wrap(ctx context.Context, dek, aad []byte) (kek.Wrapped, error) {
	if err := ctx.Err(); err != nil {
		return kek.Wrapped{}, err
	}
	iv := make([]byte, ivSize)
	if _, err := io.ReadFull(rand.Reader, iv); err != nil {
		return kek.Wrapped{}, fmt.Errorf("pkcs11: generate IV: %w", err)
	}
	header := []byte{formatV1}
	var out, id []byte
	err := p.tok.Do(ctx, func(s hsm.Session) error {
		h, kid, err := findAESKey(s, p.uri)
		if err != nil {
			return err
		}
		params := pkcs11.NewGCMParams(iv, fullAAD(header, aad), tagBits)
		defer params.Free()
		if err := s.Ctx.EncryptInit(s.Handle, []*pkcs11.Mechanism{pkcs11.NewMechanism(pkcs11.CKM_AES_GCM, params)}, h); err != nil {
			return fmt.Errorf("C_EncryptInit: %w", err)
		}
		ct, err := s.Ctx.Encrypt(s.Handle, dek)
		if err != nil {
			return fmt.Errorf("C_Encrypt: %w", err)
		}
		// Some tokens (FIPS mode) ignore the caller's IV and write their
		// own into the parameters: use whichever the token really used.
		used := params.IV()
		if len(used) != ivSize {
			return fmt.Errorf("token used a %d-byte GCM IV, want %d: %w", len(used), ivSize, kek.ErrUnsupported)
		}
		out = make([]byte, 0, overhead+len(dek))
		out = append(append(append(out, header...), used...), ct...)
		id = kid
		return nil
	})
	if err != nil {
		return kek.Wrapped{}, classify("wrap", err)
	}
	if len(out) != overhead+len(dek) {
		return kek.Wrapped{}, fmt.Errorf("pkcs11: wrap: token returned %d bytes, want %d: %w", len(out)-1-ivSize, len(dek)+tagBits/8, kek.ErrUnavailable)
	}
	w := kek.Wrapped{KEKURI: p.canon, Algorithm: Algorithm, Ciphertext: out}
	if len(id) > 0 {
		w.KEKVersion = hex.EncodeToString(id)
	}
	return w, nil
}

// Unwrap decrypts a value produced by Wrap under the same key and aad.
// KEKVersion is informational: the key is looked up by the URI, and a
// different key under the same label fails authentication.
func (p *Provider) Unwrap(ctx context.Context, w kek.Wrapped, aad []byte) ([]byte, error) {
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	if w.Algorithm != Algorithm {
		return nil, fmt.Errorf("pkcs11: algorithm %q not supported by the PKCS#11 provider: %w", w.Algorithm, kek.ErrUnsupported)
	}
	ct := w.Ciphertext
	if len(ct) == 0 {
		return nil, fmt.Errorf("pkcs11: empty wrapped key: %w", kek.ErrAuthentication)
	}
	if ct[0] != formatV1 {
		return nil, fmt.Errorf("pkcs11: wrapped key format %#x not supported: %w", ct[0], kek.ErrUnsupported)
	}
	if len(ct) < overhead {
		return nil, fmt.Errorf("pkcs11: wrapped key truncated: %w", kek.ErrAuthentication)
	}
	header, iv, body := ct[:1], ct[1:1+ivSize], ct[1+ivSize:]
	var dek []byte
	err := p.tok.Do(ctx, func(s hsm.Session) error {
		h, _, err := findAESKey(s, p.uri)
		if err != nil {
			return err
		}
		params := pkcs11.NewGCMParams(iv, fullAAD(header, aad), tagBits)
		defer params.Free()
		if err := s.Ctx.DecryptInit(s.Handle, []*pkcs11.Mechanism{pkcs11.NewMechanism(pkcs11.CKM_AES_GCM, params)}, h); err != nil {
			return fmt.Errorf("C_DecryptInit: %w", err)
		}
		pt, err := s.Ctx.Decrypt(s.Handle, body)
		if err != nil {
			return decryptError(s, err)
		}
		dek = pt
		return nil
	})
	if err != nil {
		return nil, classify("unwrap", err)
	}
	return dek, nil
}

// decryptError classifies a C_Decrypt failure. The key and session were
// fine a moment ago (C_DecryptInit succeeded), and SoftHSM2 reports a GCM
// tag mismatch as CKR_GENERAL_ERROR, so that code means "does not
// authenticate" here, provided the session still answers; if it does not,
// the token failed and the error is an outage.
func decryptError(s hsm.Session, err error) error {
	if !errors.Is(err, pkcs11.Error(pkcs11.CKR_GENERAL_ERROR)) {
		return fmt.Errorf("C_Decrypt: %w", err)
	}
	if _, ierr := s.Ctx.GetSessionInfo(s.Handle); ierr != nil {
		return fmt.Errorf("C_Decrypt: %w (token check: %w)", err, ierr)
	}
	return fmt.Errorf("C_Decrypt: tag mismatch: %w", kek.ErrAuthentication)
}

func fullAAD(header, aad []byte) []byte {
	full := make([]byte, 0, len(header)+len(aad))
	return append(append(full, header...), aad...)
}

// findAESKey finds the one AES-256 secret key u names and returns its
// handle and CKA_ID.
func findAESKey(s hsm.Session, u *URI) (pkcs11.ObjectHandle, []byte, error) {
	h, err := findOne(s, u, pkcs11.CKO_SECRET_KEY)
	if err != nil {
		return 0, nil, err
	}
	attrs, err := s.Ctx.GetAttributeValue(s.Handle, h, []*pkcs11.Attribute{
		pkcs11.NewAttribute(pkcs11.CKA_KEY_TYPE, nil),
		pkcs11.NewAttribute(pkcs11.CKA_VALUE_LEN, nil),
		pkcs11.NewAttribute(pkcs11.CKA_ID, nil),
	})
	if err != nil {
		return 0, nil, fmt.Errorf("C_GetAttributeValue: %w", err)
	}
	if kt := attrUint(attrs[0]); kt != pkcs11.CKK_AES {
		return 0, nil, fmt.Errorf("key type %#x is not AES: %w", kt, kek.ErrUnsupported)
	}
	if n := attrUint(attrs[1]); n != keyBytes {
		return 0, nil, fmt.Errorf("AES key is %d bytes, want %d: %w", n, keyBytes, kek.ErrUnsupported)
	}
	return h, attrs[2].Value, nil
}

// findOne finds the one object of class that u's object= and id= name.
func findOne(s hsm.Session, u *URI, class uint) (pkcs11.ObjectHandle, error) {
	tmpl := []*pkcs11.Attribute{pkcs11.NewAttribute(pkcs11.CKA_CLASS, class)}
	if u.Object != "" {
		tmpl = append(tmpl, pkcs11.NewAttribute(pkcs11.CKA_LABEL, u.Object))
	}
	if u.ID != nil {
		tmpl = append(tmpl, pkcs11.NewAttribute(pkcs11.CKA_ID, u.ID))
	}
	if err := s.Ctx.FindObjectsInit(s.Handle, tmpl); err != nil {
		return 0, fmt.Errorf("C_FindObjectsInit: %w", err)
	}
	hs, _, err := s.Ctx.FindObjects(s.Handle, 2)
	if ferr := s.Ctx.FindObjectsFinal(s.Handle); err == nil && ferr != nil {
		err = ferr
	}
	if err != nil {
		return 0, fmt.Errorf("C_FindObjects: %w", err)
	}
	switch len(hs) {
	case 0:
		return 0, errKeyNotFound
	case 1:
		return hs[0], nil
	default:
		return 0, fmt.Errorf("several objects match %s (name one by id=): %w", u.describe(), kek.ErrUnsupported)
	}
}

// describe names the object for error messages.
func (u *URI) describe() string {
	d := fmt.Sprintf("object=%q", u.Object)
	if u.ID != nil {
		d += " id=" + hex.EncodeToString(u.ID)
	}
	return d
}

// attrUint decodes a CK_ULONG attribute in the host's byte order, which is
// how the module returns it; a wrong size yields a value no check accepts.
func attrUint(a *pkcs11.Attribute) uint {
	var n uint
	switch len(a.Value) {
	case 4, 8:
		for i := len(a.Value) - 1; i >= 0; i-- {
			n = n<<8 | uint(a.Value[i])
		}
		return n
	}
	return ^uint(0)
}

// CreateKey generates the KEK u names inside the token: AES-256, a token
// object that is sensitive, never extractable, and usable only to encrypt
// and decrypt. object= is required; id= is used as CKA_ID when given,
// otherwise a random 8-byte CKA_ID is assigned (it becomes KEKVersion, so a
// key re-created under the same label is told apart). CreateKey refuses
// to replace an existing key with that label or ID: every data key wrapped
// under the old one would become unrecoverable.
func CreateKey(ctx context.Context, uri string) error {
	u, err := ParseURI(uri)
	if err != nil {
		return err
	}
	if err := u.checkSecretKey(); err != nil {
		return err
	}
	if u.Object == "" {
		return errURI("object= is required to create a key")
	}
	id := u.ID
	if id == nil {
		id = make([]byte, idBytes)
		if _, err := io.ReadFull(rand.Reader, id); err != nil {
			return fmt.Errorf("pkcs11: generate key ID: %w", err)
		}
	}
	tok, err := openToken(ctx, u)
	if err != nil {
		return err
	}
	defer tok.Close()
	err = tok.Do(ctx, func(s hsm.Session) error {
		// Look for the label and the ID separately: either clash is a key
		// someone relies on.
		for _, probe := range []*URI{{Object: u.Object}, {ID: id}} {
			_, err := findOne(s, probe, pkcs11.CKO_SECRET_KEY)
			switch {
			case err == nil || errors.Is(err, kek.ErrUnsupported):
				return fmt.Errorf("a secret key with %s already exists; refusing to create another: %w", probe.describe(), ErrKeyExists)
			case !errors.Is(err, errKeyNotFound):
				return err
			}
		}
		_, err := s.Ctx.GenerateKey(s.Handle, []*pkcs11.Mechanism{pkcs11.NewMechanism(pkcs11.CKM_AES_KEY_GEN, nil)}, []*pkcs11.Attribute{
			pkcs11.NewAttribute(pkcs11.CKA_CLASS, pkcs11.CKO_SECRET_KEY),
			pkcs11.NewAttribute(pkcs11.CKA_KEY_TYPE, pkcs11.CKK_AES),
			pkcs11.NewAttribute(pkcs11.CKA_VALUE_LEN, keyBytes),
			pkcs11.NewAttribute(pkcs11.CKA_LABEL, u.Object),
			pkcs11.NewAttribute(pkcs11.CKA_ID, id),
			pkcs11.NewAttribute(pkcs11.CKA_TOKEN, true),
			pkcs11.NewAttribute(pkcs11.CKA_PRIVATE, true),
			pkcs11.NewAttribute(pkcs11.CKA_SENSITIVE, true),
			pkcs11.NewAttribute(pkcs11.CKA_EXTRACTABLE, false),
			pkcs11.NewAttribute(pkcs11.CKA_ENCRYPT, true),
			pkcs11.NewAttribute(pkcs11.CKA_DECRYPT, true),
			pkcs11.NewAttribute(pkcs11.CKA_WRAP, false),
			pkcs11.NewAttribute(pkcs11.CKA_UNWRAP, false),
			pkcs11.NewAttribute(pkcs11.CKA_SIGN, false),
			pkcs11.NewAttribute(pkcs11.CKA_VERIFY, false),
			pkcs11.NewAttribute(pkcs11.CKA_DERIVE, false),
		})
		if err != nil {
			return fmt.Errorf("C_GenerateKey: %w", err)
		}
		return nil
	})
	if errors.Is(err, ErrKeyExists) {
		return fmt.Errorf("pkcs11: create key: %w", err)
	}
	return classify("create key", err)
}

// ErrKeyExists is returned by CreateKey when the label or ID is taken.
var ErrKeyExists = errors.New("pkcs11: key already exists")
