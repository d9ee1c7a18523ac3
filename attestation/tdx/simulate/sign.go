package simulate

import (
	"crypto"
	"crypto/ecdh"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/hmac"
	"crypto/sha256"
	"encoding/asn1"
	"errors"
	"io"
	"math/big"
)

// signer is a P-256 key that signs deterministically (RFC 6979 with
// HMAC-SHA256), so that regenerating fixtures from the persisted keys
// gives byte-identical certificates, CRLs, collateral and quotes. Since Go
// 1.26, crypto/ecdsa ignores caller-supplied randomness and offers no
// deterministic mode, hence this small implementation.
//
// It is for test keys only: it uses math/big, which is not constant-time.
type signer struct {
	priv *ecdsa.PrivateKey
	d    []byte // 32-byte big-endian private scalar
}

var p256N = elliptic.P256().Params().N

func newSigner(priv *ecdsa.PrivateKey) (*signer, error) {
	d, err := priv.Bytes()
	if err != nil {
		return nil, err
	}
	return &signer{priv: priv, d: d}, nil
}

// Public implements crypto.Signer.
func (s *signer) Public() crypto.PublicKey { return &s.priv.PublicKey }

// Sign implements crypto.Signer: an ASN.1 DER signature over digest (a
// SHA-256 hash). rand is ignored.
func (s *signer) Sign(_ io.Reader, digest []byte, _ crypto.SignerOpts) ([]byte, error) {
	r, sv, err := s.signRS(digest)
	if err != nil {
		return nil, err
	}
	return asn1.Marshal(struct{ R, S *big.Int }{r, sv})
}

// signRaw signs SHA-256(msg) and returns r||s, 32 bytes each, as Intel's
// quote and collateral formats want.
func (s *signer) signRaw(msg []byte) ([]byte, error) {
	d := sha256.Sum256(msg)
	r, sv, err := s.signRS(d[:])
	if err != nil {
		return nil, err
	}
	out := make([]byte, 64)
	r.FillBytes(out[:32])
	sv.FillBytes(out[32:])
	return out, nil
}

func (s *signer) signRS(digest []byte) (r, sv *big.Int, err error) {
	if len(digest) != sha256.Size {
		return nil, nil, errors.New("simulate: want a SHA-256 digest")
	}
	e := bits2int(digest)
	d := new(big.Int).SetBytes(s.d)
	gen := newRFC6979(s.d, int2octets(new(big.Int).Mod(e, p256N)))
	for {
		k := gen.next()
		if k.Sign() == 0 || k.Cmp(p256N) >= 0 {
			continue
		}
		x, err := baseMultX(k)
		if err != nil {
			return nil, nil, err
		}
		r = new(big.Int).Mod(x, p256N)
		if r.Sign() == 0 {
			continue
		}
		kInv := new(big.Int).ModInverse(k, p256N)
		sv = new(big.Int).Mul(r, d)
		sv.Add(sv, e)
		sv.Mul(sv, kInv)
		sv.Mod(sv, p256N)
		if sv.Sign() == 0 {
			continue
		}
		return r, sv, nil
	}
}

// baseMultX returns the x coordinate of k*G, using crypto/ecdh (whose
// public key for private scalar k is exactly k*G).
func baseMultX(k *big.Int) (*big.Int, error) {
	priv, err := ecdh.P256().NewPrivateKey(int2octets(k))
	if err != nil {
		return nil, err
	}
	pt := priv.PublicKey().Bytes() // 0x04 || X || Y
	return new(big.Int).SetBytes(pt[1:33]), nil
}

// bits2int: for P-256 and SHA-256 the digest and the order have the same
// bit length, so no shift is needed.
func bits2int(b []byte) *big.Int { return new(big.Int).SetBytes(b) }

func int2octets(x *big.Int) []byte {
	out := make([]byte, 32)
	x.FillBytes(out)
	return out
}

// rfc6979 is the HMAC_DRBG of RFC 6979 section 3.2.
type rfc6979 struct {
	k, v []byte
}

func newRFC6979(x, h1 []byte) *rfc6979 {
	g := &rfc6979{k: make([]byte, 32), v: make([]byte, 32)}
	for i := range g.v {
		g.v[i] = 1
	}
	g.k = g.mac(g.k, g.v, []byte{0}, x, h1)
	g.v = g.mac(g.k, g.v)
	g.k = g.mac(g.k, g.v, []byte{1}, x, h1)
	g.v = g.mac(g.k, g.v)
	return g
}

func (g *rfc6979) mac(key []byte, parts ...[]byte) []byte {
	m := hmac.New(sha256.New, key)
	for _, p := range parts {
		m.Write(p)
	}
	return m.Sum(nil)
}

// next returns the next candidate k; a caller that rejects it calls next
// again, which first updates the state as step 3.2.h.3 says.
func (g *rfc6979) next() *big.Int {
	g.v = g.mac(g.k, g.v)
	k := new(big.Int).SetBytes(g.v)
	// Prepare for a possible retry.
	g.k = g.mac(g.k, g.v, []byte{0})
	g.v = g.mac(g.k, g.v)
	return k
}
