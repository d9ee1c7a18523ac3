package pkcs11

import (
	"context"
	"crypto/rand"
	"crypto/rsa"
	"crypto/sha256"
	"errors"
	"fmt"
	"math/big"
	"slices"

	"github.com/miekg/pkcs11"

	"github.com/attested-kms/attested-kms/hpke"
	"github.com/attested-kms/attested-kms/keystore/kek"
	"github.com/attested-kms/attested-kms/keystore/kek/pkcs11/internal/hsm"
)

// ExportKeySize is the size of the key ExportForImport exports: an X25519
// private key, held in the token as a CKK_GENERIC_SECRET because PKCS#11
// tokens (SoftHSM2 2.6 among them) rarely support CKK_EC_MONTGOMERY, and a
// Montgomery private key would be wrapped as PKCS#8 rather than as the
// raw 32 bytes the KMS imports.
const ExportKeySize = 32

// ckmAESKeyWrapKWP is PKCS#11 3.0's CKM_AES_KEY_WRAP_KWP (RFC 5649), which
// github.com/miekg/pkcs11 v1.1.1 does not define. Version 3.0 redefined
// CKM_AES_KEY_WRAP_PAD (RFC 5649 in v2.40) as RFC 3394 over PKCS#7 padding,
// so KWP is preferred when the token offers it, and the output length
// is checked either way.
const ckmAESKeyWrapKWP = 0x210B

// ExportOption adjusts ExportForImport.
type ExportOption func(*exportConfig)

type exportConfig struct{ hostOAEP bool }

// WithHostOAEP lets ExportForImport fall back, on tokens that cannot wrap
// with RSA-OAEP-SHA-256 (SoftHSM2 2.6 wraps with OAEP-SHA-1 only), to
// encrypting the ephemeral AES key with RSA-OAEP in this process. The
// exported key itself is still wrapped inside the token and never leaves
// it in the clear, but the ephemeral AES key does, briefly: whoever
// controls this process at that moment could unwrap the export. Use it
// only where that is acceptable (development tokens, tests).
func WithHostOAEP() ExportOption { return func(c *exportConfig) { c.hostOAEP = true } }

// ExportForImport exports the 32-byte X25519 private key that uri names
// (a CKK_GENERIC_SECRET with CKA_EXTRACTABLE true) wrapped to the KMS's RSA
// import key importPublicKeyDER (PKIX DER, RSA 3072 to 8192 bits), in the
// layout hpke.UnwrapRSA reads and CKM_RSA_AES_KEY_WRAP produces:
//
//	RSA-OAEP-SHA-256(ephemeral AES-256 key) || AES-KWP (RFC 5649)(private key)
//
// Both steps run inside the token: an ephemeral session AES key is
// generated there, wraps the private key with AES key wrap with padding,
// and is itself wrapped with CKM_RSA_PKCS_OAEP (SHA-256) under a session
// copy of the import public key; all session objects are destroyed before
// returning. The private key never leaves the token in the clear. Tokens
// without OAEP-SHA-256 wrapping fail with kek.ErrUnsupported unless
// WithHostOAEP is given.
func ExportForImport(ctx context.Context, uri string, importPublicKeyDER []byte, opts ...ExportOption) ([]byte, error) {
	var cfg exportConfig
	for _, o := range opts {
		o(&cfg)
	}
	u, err := ParseURI(uri)
	if err != nil {
		return nil, err
	}
	if err := u.checkSecretKey(); err != nil {
		return nil, err
	}
	pub, err := hpke.ParseRSAWrappingKey(importPublicKeyDER)
	if err != nil {
		return nil, fmt.Errorf("pkcs11: export: import public key: %w", err)
	}
	tok, err := openToken(ctx, u)
	if err != nil {
		return nil, err
	}
	defer tok.Close()
	var blob []byte
	if err := tok.Do(ctx, func(s hsm.Session) error {
		b, err := exportIn(s, u, pub, cfg)
		blob = b
		return err
	}); err != nil {
		return nil, classify("export", err)
	}
	return blob, nil
}

func exportIn(s hsm.Session, u *URI, pub *rsa.PublicKey, cfg exportConfig) ([]byte, error) {
	target, err := findOne(s, u, pkcs11.CKO_SECRET_KEY)
	if err != nil {
		return nil, err
	}
	attrs, err := s.Ctx.GetAttributeValue(s.Handle, target, []*pkcs11.Attribute{
		pkcs11.NewAttribute(pkcs11.CKA_KEY_TYPE, nil),
		pkcs11.NewAttribute(pkcs11.CKA_VALUE_LEN, nil),
	})
	if err != nil {
		return nil, fmt.Errorf("C_GetAttributeValue: %w", err)
	}
	if kt := attrUint(attrs[0]); kt != pkcs11.CKK_GENERIC_SECRET {
		return nil, fmt.Errorf("key type %#x is not CKK_GENERIC_SECRET: %w", kt, kek.ErrUnsupported)
	}
	if n := attrUint(attrs[1]); n != ExportKeySize {
		return nil, fmt.Errorf("key is %d bytes, want %d (an X25519 private key): %w", n, ExportKeySize, kek.ErrUnsupported)
	}
	kwp, err := kwpMechanism(s)
	if err != nil {
		return nil, err
	}

	destroy := func(h pkcs11.ObjectHandle) {
		// Session objects vanish with the session anyway; destroying them
		// now keeps the ephemeral key's lifetime to this call.
		_ = s.Ctx.DestroyObject(s.Handle, h)
	}
	// In host-OAEP mode the ephemeral key must be readable; otherwise it is
	// sensitive and can leave the token only wrapped.
	aesKey, err := s.Ctx.GenerateKey(s.Handle, []*pkcs11.Mechanism{pkcs11.NewMechanism(pkcs11.CKM_AES_KEY_GEN, nil)}, []*pkcs11.Attribute{
		pkcs11.NewAttribute(pkcs11.CKA_CLASS, pkcs11.CKO_SECRET_KEY),
		pkcs11.NewAttribute(pkcs11.CKA_KEY_TYPE, pkcs11.CKK_AES),
		pkcs11.NewAttribute(pkcs11.CKA_VALUE_LEN, keyBytes),
		pkcs11.NewAttribute(pkcs11.CKA_TOKEN, false),
		pkcs11.NewAttribute(pkcs11.CKA_PRIVATE, true),
		pkcs11.NewAttribute(pkcs11.CKA_WRAP, true),
		pkcs11.NewAttribute(pkcs11.CKA_UNWRAP, false),
		pkcs11.NewAttribute(pkcs11.CKA_ENCRYPT, false),
		pkcs11.NewAttribute(pkcs11.CKA_DECRYPT, false),
		pkcs11.NewAttribute(pkcs11.CKA_EXTRACTABLE, true),
		pkcs11.NewAttribute(pkcs11.CKA_SENSITIVE, !cfg.hostOAEP),
	})
	if err != nil {
		return nil, fmt.Errorf("C_GenerateKey (ephemeral AES key): %w", err)
	}
	defer destroy(aesKey)

	wrappedKey, err := s.Ctx.WrapKey(s.Handle, []*pkcs11.Mechanism{pkcs11.NewMechanism(kwp, nil)}, aesKey, target)
	if err != nil {
		return nil, fmt.Errorf("C_WrapKey (AES key wrap with padding): %w", err)
	}
	// RFC 5649 of 32 bytes is 40 bytes; anything else is another padding.
	if len(wrappedKey) != ExportKeySize+8 {
		return nil, fmt.Errorf("token's mechanism %#x produced %d bytes, not RFC 5649's %d: %w", kwp, len(wrappedKey), ExportKeySize+8, kek.ErrUnsupported)
	}

	var encKey []byte
	if cfg.hostOAEP {
		encKey, err = hostOAEP(s, aesKey, pub)
	} else {
		encKey, err = tokenOAEP(s, aesKey, pub, destroy)
	}
	if err != nil {
		return nil, err
	}
	if len(encKey) != pub.Size() {
		return nil, fmt.Errorf("RSA-OAEP output is %d bytes, want %d: %w", len(encKey), pub.Size(), kek.ErrUnavailable)
	}
	return append(encKey, wrappedKey...), nil
}

// tokenOAEP wraps the ephemeral AES key inside the token with RSA-OAEP
// (SHA-256, MGF1-SHA-256, empty label) under a session copy of pub.
func tokenOAEP(s hsm.Session, aesKey pkcs11.ObjectHandle, pub *rsa.PublicKey, destroy func(pkcs11.ObjectHandle)) ([]byte, error) {
	pubObj, err := s.Ctx.CreateObject(s.Handle, []*pkcs11.Attribute{
		pkcs11.NewAttribute(pkcs11.CKA_CLASS, pkcs11.CKO_PUBLIC_KEY),
		pkcs11.NewAttribute(pkcs11.CKA_KEY_TYPE, pkcs11.CKK_RSA),
		pkcs11.NewAttribute(pkcs11.CKA_TOKEN, false),
		pkcs11.NewAttribute(pkcs11.CKA_WRAP, true),
		pkcs11.NewAttribute(pkcs11.CKA_ENCRYPT, false),
		pkcs11.NewAttribute(pkcs11.CKA_VERIFY, false),
		pkcs11.NewAttribute(pkcs11.CKA_MODULUS, pub.N.Bytes()),
		pkcs11.NewAttribute(pkcs11.CKA_PUBLIC_EXPONENT, big.NewInt(int64(pub.E)).Bytes()),
	})
	if err != nil {
		return nil, fmt.Errorf("C_CreateObject (import public key): %w", err)
	}
	defer destroy(pubObj)
	params := pkcs11.NewOAEPParams(pkcs11.CKM_SHA256, pkcs11.CKG_MGF1_SHA256, pkcs11.CKZ_DATA_SPECIFIED, nil)
	encKey, err := s.Ctx.WrapKey(s.Handle, []*pkcs11.Mechanism{pkcs11.NewMechanism(pkcs11.CKM_RSA_PKCS_OAEP, params)}, pubObj, aesKey)
	if err != nil {
		var rv pkcs11.Error
		if errors.As(err, &rv) && (rv == pkcs11.CKR_MECHANISM_INVALID || rv == pkcs11.CKR_MECHANISM_PARAM_INVALID || rv == pkcs11.CKR_ARGUMENTS_BAD) {
			return nil, fmt.Errorf("token cannot wrap with RSA-OAEP-SHA-256 (%w); use a token that can, or WithHostOAEP: %w", err, kek.ErrUnsupported)
		}
		return nil, fmt.Errorf("C_WrapKey (RSA-OAEP-SHA-256): %w", err)
	}
	return encKey, nil
}

// hostOAEP reads the ephemeral AES key and encrypts it with RSA-OAEP here.
func hostOAEP(s hsm.Session, aesKey pkcs11.ObjectHandle, pub *rsa.PublicKey) ([]byte, error) {
	attrs, err := s.Ctx.GetAttributeValue(s.Handle, aesKey, []*pkcs11.Attribute{pkcs11.NewAttribute(pkcs11.CKA_VALUE, nil)})
	if err != nil {
		return nil, fmt.Errorf("C_GetAttributeValue (ephemeral AES key): %w", err)
	}
	k := attrs[0].Value
	defer clear(k)
	if len(k) != keyBytes {
		return nil, fmt.Errorf("ephemeral AES key is %d bytes, want %d: %w", len(k), keyBytes, kek.ErrUnavailable)
	}
	encKey, err := rsa.EncryptOAEP(sha256.New(), rand.Reader, pub, k, nil)
	if err != nil {
		return nil, fmt.Errorf("RSA-OAEP: %w", err)
	}
	return encKey, nil
}

// kwpMechanism picks the token's RFC 5649 key wrap mechanism.
func kwpMechanism(s hsm.Session) (uint, error) {
	info, err := s.Ctx.GetSessionInfo(s.Handle)
	if err != nil {
		return 0, fmt.Errorf("C_GetSessionInfo: %w", err)
	}
	mechs, err := s.Ctx.GetMechanismList(info.SlotID)
	if err != nil {
		return 0, fmt.Errorf("C_GetMechanismList: %w", err)
	}
	has := func(m uint) bool {
		return slices.ContainsFunc(mechs, func(x *pkcs11.Mechanism) bool { return x.Mechanism == m })
	}
	switch {
	case has(ckmAESKeyWrapKWP):
		return ckmAESKeyWrapKWP, nil
	case has(pkcs11.CKM_AES_KEY_WRAP_PAD):
		return pkcs11.CKM_AES_KEY_WRAP_PAD, nil
	}
	return 0, fmt.Errorf("token offers no AES key wrap with padding (RFC 5649): %w", kek.ErrUnsupported)
}
