// Package ohttp implements the encapsulation of RFC 9458 Oblivious HTTP for
// the KMS's keys: key configurations (application/ohttp-keys), request
// encapsulation for end-user clients, and decapsulation plus response
// encapsulation for the enclave services that hold released keys.
//
// New requests always use the KMS suite (DHKEM(X25519, HKDF-SHA256),
// HKDF-SHA256, AES-256-GCM). A gateway accepts whichever (KDF, AEAD) pairs
// its key configuration lists, so a configuration published by another
// implementation (such as the RFC 9458 Appendix A example) still works.
//
// The package holds no state outside the values it returns; a GatewayKey is
// safe for concurrent use.
package ohttp

import (
	"crypto/cipher"
	"crypto/rand"
	"encoding/binary"
	"errors"
	"fmt"
	"io"

	"github.com/attested-kms/attested-kms/hpke"
	circl "github.com/cloudflare/circl/hpke"
	"github.com/cloudflare/circl/kem"
)

// Sentinel errors; RFC 9458 section 5.2 lets a gateway answer them
// differently, so callers branch with errors.Is.
var (
	// ErrMalformed reports bytes that do not parse: truncated messages,
	// bad length fields.
	ErrMalformed = errors.New("ohttp: malformed message")
	// ErrUnknownKeyID reports a request for a key identifier this gateway
	// key does not have; the client likely holds a stale configuration.
	ErrUnknownKeyID = errors.New("ohttp: unknown key identifier")
	// ErrUnsupportedSuite reports a KEM, KDF or AEAD not offered or not
	// implemented.
	ErrUnsupportedSuite = errors.New("ohttp: unsupported HPKE suite")
	// ErrDecrypt reports a request or response that does not authenticate.
	ErrDecrypt = errors.New("ohttp: decryption failed")
)

// Labels of RFC 9458 sections 4.3 and 4.4 for Binary HTTP payloads.
const (
	requestLabel  = "message/bhttp request"
	responseLabel = "message/bhttp response"
)

// headerLen is key_id(8) kem_id(16) kdf_id(16) aead_id(16).
const headerLen = 7

// encLen is Nenc of DHKEM(X25519).
const encLen = hpke.X25519KeySize

// algorithm is a (KDF, AEAD) pair resolved to circl values, with the sizes
// the response encapsulation needs.
type algorithm struct {
	SymmetricAlgorithm
	suite circl.Suite
	kdf   circl.KDF
	aead  circl.AEAD
}

func newAlgorithm(a SymmetricAlgorithm) (algorithm, error) {
	kdf, aead := circl.KDF(a.KDFID), circl.AEAD(a.AEADID)
	if !kdf.IsValid() || !aead.IsValid() {
		return algorithm{}, fmt.Errorf("%w: KDF 0x%04x, AEAD 0x%04x", ErrUnsupportedSuite, a.KDFID, a.AEADID)
	}
	return algorithm{
		SymmetricAlgorithm: a,
		suite:              circl.NewSuite(circl.KEM(hpke.KEMID), kdf, aead),
		kdf:                kdf,
		aead:               aead,
	}, nil
}

// secretLen is max(Nn, Nk), the length of the exported response secret and
// of response_nonce (RFC 9458 section 4.4).
func (a algorithm) secretLen() int {
	return max(int(a.aead.KeySize()), int(a.aead.NonceSize()))
}

// header returns hdr and the HPKE info "message/bhttp request" || 0x00 || hdr.
func (a algorithm) header(keyID uint8) (hdr, info []byte) {
	hdr = make([]byte, 0, headerLen)
	hdr = append(hdr, keyID)
	hdr = binary.BigEndian.AppendUint16(hdr, hpke.KEMID)
	hdr = binary.BigEndian.AppendUint16(hdr, a.KDFID)
	hdr = binary.BigEndian.AppendUint16(hdr, a.AEADID)
	info = make([]byte, 0, len(requestLabel)+1+headerLen)
	info = append(info, requestLabel...)
	info = append(info, 0)
	info = append(info, hdr...)
	return hdr, info
}

// responseAEAD derives the response key and nonce of RFC 9458 section 4.4
// from the exported secret, enc and response_nonce.
func (a algorithm) responseAEAD(secret, enc, responseNonce []byte) (cipher.AEAD, []byte, error) {
	salt := make([]byte, 0, len(enc)+len(responseNonce))
	salt = append(append(salt, enc...), responseNonce...)
	prk := a.kdf.Extract(secret, salt)
	key := a.kdf.Expand(prk, []byte("key"), a.aead.KeySize())
	nonce := a.kdf.Expand(prk, []byte("nonce"), a.aead.NonceSize())
	aead, err := a.aead.New(key)
	clear(key)
	clear(prk)
	if err != nil {
		return nil, nil, fmt.Errorf("ohttp: response AEAD: %w", err)
	}
	return aead, nonce, nil
}

// ClientContext is what a client keeps to open the response to one request.
// It holds the exported response secret, not the HPKE context, so it cannot
// be misused to seal further requests. It is immutable.
type ClientContext struct {
	alg    algorithm
	enc    []byte
	secret []byte
}

// EncapsulateRequest encrypts request (a Binary HTTP message) to cfg with the
// KMS suite, which cfg must offer (ErrUnsupportedSuite otherwise). Each call
// uses a fresh ephemeral key from rand (crypto/rand when nil), as RFC 9458
// requires for unlinkability.
func EncapsulateRequest(rand io.Reader, cfg KeyConfig, request []byte) (encapsulated []byte, ctx *ClientContext, err error) {
	return encapsulate(rand, cfg, DefaultAlgorithm(), request)
}

// encapsulate is EncapsulateRequest with the (KDF, AEAD) pair as a parameter,
// so tests can run the RFC 9458 Appendix A suite through the same code.
func encapsulate(rnd io.Reader, cfg KeyConfig, want SymmetricAlgorithm, request []byte) ([]byte, *ClientContext, error) {
	if cfg.KEMID != hpke.KEMID {
		return nil, nil, fmt.Errorf("%w: KEM 0x%04x", ErrUnsupportedSuite, cfg.KEMID)
	}
	if err := hpke.ValidateX25519PublicKey(cfg.PublicKey); err != nil {
		return nil, nil, fmt.Errorf("ohttp: key configuration %d: %w", cfg.KeyID, err)
	}
	offered := false
	for _, a := range cfg.Algorithms {
		offered = offered || a == want
	}
	if !offered {
		return nil, nil, fmt.Errorf("%w: key configuration %d does not offer KDF 0x%04x, AEAD 0x%04x", ErrUnsupportedSuite, cfg.KeyID, want.KDFID, want.AEADID)
	}
	alg, err := newAlgorithm(want)
	if err != nil {
		return nil, nil, err
	}
	pk, err := circl.KEM(hpke.KEMID).Scheme().UnmarshalBinaryPublicKey(cfg.PublicKey)
	if err != nil {
		return nil, nil, fmt.Errorf("%w: key configuration %d public key", ErrMalformed, cfg.KeyID)
	}
	hdr, info := alg.header(cfg.KeyID)
	sender, err := alg.suite.NewSender(pk, info)
	if err != nil {
		return nil, nil, fmt.Errorf("ohttp: HPKE sender: %w", err)
	}
	if rnd == nil {
		rnd = rand.Reader
	}
	enc, sealer, err := sender.Setup(rnd)
	if err != nil {
		return nil, nil, fmt.Errorf("ohttp: HPKE encapsulation: %w", err)
	}
	ct, err := sealer.Seal(request, nil)
	if err != nil {
		return nil, nil, fmt.Errorf("ohttp: HPKE seal: %w", err)
	}
	out := make([]byte, 0, len(hdr)+len(enc)+len(ct))
	out = append(append(append(out, hdr...), enc...), ct...)
	ctx := &ClientContext{
		alg:    alg,
		enc:    enc,
		secret: sealer.Export([]byte(responseLabel), uint(alg.secretLen())),
	}
	return out, ctx, nil
}

// OpenResponse decrypts an encapsulated response (response_nonce || ct) to
// the request this context was made for.
func (c *ClientContext) OpenResponse(encapsulatedResponse []byte) ([]byte, error) {
	n := c.alg.secretLen()
	if len(encapsulatedResponse) < n+int(c.alg.aead.CipherLen(0)) {
		return nil, fmt.Errorf("%w: encapsulated response is %d bytes", ErrMalformed, len(encapsulatedResponse))
	}
	aead, nonce, err := c.alg.responseAEAD(c.secret, c.enc, encapsulatedResponse[:n])
	if err != nil {
		return nil, err
	}
	pt, err := aead.Open(nil, nonce, encapsulatedResponse[n:], nil)
	if err != nil {
		return nil, ErrDecrypt
	}
	return pt, nil
}

// GatewayKey is one gateway private key with everything decapsulation needs
// prepared once: the parsed key (with its public key already derived) and
// the HPKE info of every accepted (KDF, AEAD) pair. Decapsulating with it
// therefore costs what a bare HPKE open with a parsed key costs. It is
// immutable and safe for concurrent use.
type GatewayKey struct {
	keyID uint8
	sk    kem.PrivateKey
	pub   []byte
	algs  []gatewayAlgorithm
}

type gatewayAlgorithm struct {
	algorithm
	info []byte
}

// NewGatewayKey prepares the X25519 private key priv, published under keyID,
// for decapsulation with the KMS suite only.
func NewGatewayKey(keyID uint8, priv []byte) (*GatewayKey, error) {
	pub, err := hpke.PublicFromPrivate(priv)
	if err != nil {
		return nil, fmt.Errorf("ohttp: gateway key %d: %w", keyID, err)
	}
	return newGatewayKey(KeyConfig{
		KeyID:      keyID,
		KEMID:      hpke.KEMID,
		PublicKey:  pub,
		Algorithms: []SymmetricAlgorithm{DefaultAlgorithm()},
	}, priv)
}

// NewGatewayKeyForConfig prepares priv to decapsulate requests made with any
// (KDF, AEAD) pair cfg lists. It is for configurations published before, or
// by other implementations; cfg.PublicKey must be priv's public key.
func NewGatewayKeyForConfig(cfg KeyConfig, priv []byte) (*GatewayKey, error) {
	pub, err := hpke.PublicFromPrivate(priv)
	if err != nil {
		return nil, fmt.Errorf("ohttp: gateway key %d: %w", cfg.KeyID, err)
	}
	if string(pub) != string(cfg.PublicKey) {
		return nil, fmt.Errorf("ohttp: gateway key %d: private key does not match the configuration's public key", cfg.KeyID)
	}
	return newGatewayKey(cfg, priv)
}

func newGatewayKey(cfg KeyConfig, priv []byte) (*GatewayKey, error) {
	if err := cfg.validate(); err != nil {
		return nil, err
	}
	sk, err := circl.KEM(cfg.KEMID).Scheme().UnmarshalBinaryPrivateKey(priv)
	if err != nil {
		return nil, fmt.Errorf("ohttp: gateway key %d: %w", cfg.KeyID, hpke.ErrInvalidKey)
	}
	// circl derives and caches the public key on first use, without a lock;
	// doing it here makes later concurrent decapsulations read-only, and
	// keeps a scalar multiplication out of the first request.
	sk.Public()
	k := &GatewayKey{keyID: cfg.KeyID, sk: sk, pub: append([]byte(nil), cfg.PublicKey...)}
	for _, a := range cfg.Algorithms {
		alg, err := newAlgorithm(a)
		if err != nil {
			return nil, fmt.Errorf("ohttp: gateway key %d: %w", cfg.KeyID, err)
		}
		_, info := alg.header(cfg.KeyID)
		k.algs = append(k.algs, gatewayAlgorithm{algorithm: alg, info: info})
	}
	return k, nil
}

// Config returns the key configuration to publish for k (a copy).
func (k *GatewayKey) Config() KeyConfig {
	cfg := KeyConfig{KeyID: k.keyID, KEMID: hpke.KEMID, PublicKey: append([]byte(nil), k.pub...)}
	for _, a := range k.algs {
		cfg.Algorithms = append(cfg.Algorithms, a.SymmetricAlgorithm)
	}
	return cfg
}

// PeekKeyID returns the key identifier of an encapsulated request, so a
// gateway holding several keys can pick the GatewayKey to decapsulate with.
// It authenticates nothing.
func PeekKeyID(encapsulated []byte) (uint8, error) {
	if len(encapsulated) < headerLen {
		return 0, fmt.Errorf("%w: encapsulated request is %d bytes", ErrMalformed, len(encapsulated))
	}
	return encapsulated[0], nil
}

// ResponseContext is what a gateway keeps to encapsulate the response to one
// decapsulated request.
type ResponseContext struct {
	alg algorithm
	enc []byte
	ctx circl.Context
}

// DecapsulateRequest decrypts an encapsulated request (hdr || enc || ct) made
// to k. Errors: ErrMalformed, ErrUnknownKeyID, ErrUnsupportedSuite for a
// (KDF, AEAD) pair k does not accept, ErrDecrypt when it does not open.
func (k *GatewayKey) DecapsulateRequest(encapsulated []byte) (request []byte, ctx *ResponseContext, err error) {
	if len(encapsulated) < headerLen {
		return nil, nil, fmt.Errorf("%w: encapsulated request is %d bytes", ErrMalformed, len(encapsulated))
	}
	if encapsulated[0] != k.keyID {
		return nil, nil, fmt.Errorf("%w: %d", ErrUnknownKeyID, encapsulated[0])
	}
	kemID := binary.BigEndian.Uint16(encapsulated[1:3])
	want := SymmetricAlgorithm{
		KDFID:  binary.BigEndian.Uint16(encapsulated[3:5]),
		AEADID: binary.BigEndian.Uint16(encapsulated[5:7]),
	}
	var alg *gatewayAlgorithm
	for i := range k.algs {
		if k.algs[i].SymmetricAlgorithm == want {
			alg = &k.algs[i]
			break
		}
	}
	if kemID != hpke.KEMID || alg == nil {
		return nil, nil, fmt.Errorf("%w: KEM 0x%04x, KDF 0x%04x, AEAD 0x%04x for key %d", ErrUnsupportedSuite, kemID, want.KDFID, want.AEADID, k.keyID)
	}
	body := encapsulated[headerLen:]
	if len(body) < encLen+int(alg.aead.CipherLen(0)) {
		return nil, nil, fmt.Errorf("%w: encapsulated request is %d bytes", ErrMalformed, len(encapsulated))
	}
	// A Receiver records the enc it is set up with, so one is made per
	// request rather than shared; it is a small struct around the cached key.
	receiver, err := alg.suite.NewReceiver(k.sk, alg.info)
	if err != nil {
		return nil, nil, fmt.Errorf("ohttp: HPKE receiver: %w", err)
	}
	enc := body[:encLen:encLen]
	opener, err := receiver.Setup(enc)
	if err != nil {
		return nil, nil, fmt.Errorf("%w: decapsulation", ErrDecrypt)
	}
	request, err = opener.Open(body[encLen:], nil)
	if err != nil {
		return nil, nil, ErrDecrypt
	}
	// The response secret is exported only when a response is sealed, so
	// decapsulation does nothing beyond the HPKE open.
	return request, &ResponseContext{alg: alg.algorithm, enc: append([]byte(nil), enc...), ctx: opener}, nil
}

// SealResponse encrypts response (a Binary HTTP message) as RFC 9458 section
// 4.4 describes: a secret exported with the label "message/bhttp response",
// a random response_nonce of max(Nn, Nk) bytes from rand (crypto/rand when
// nil), and output response_nonce || ct. Call it once per request: each call
// draws a new nonce and so produces an unrelated ciphertext.
func (r *ResponseContext) SealResponse(rnd io.Reader, response []byte) ([]byte, error) {
	if rnd == nil {
		rnd = rand.Reader
	}
	n := r.alg.secretLen()
	out := make([]byte, n, n+int(r.alg.aead.CipherLen(uint(len(response)))))
	if _, err := io.ReadFull(rnd, out); err != nil {
		return nil, fmt.Errorf("ohttp: response nonce: %w", err)
	}
	secret := r.ctx.Export([]byte(responseLabel), uint(n))
	defer clear(secret)
	aead, nonce, err := r.alg.responseAEAD(secret, r.enc, out)
	if err != nil {
		return nil, err
	}
	return aead.Seal(out, nonce, response, nil), nil
}
