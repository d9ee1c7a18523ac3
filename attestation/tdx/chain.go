package tdx

import (
	"bytes"
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/sha256"
	"crypto/x509"
	"encoding/pem"
	"errors"
	"fmt"
	"sync"
	"time"

	"github.com/attested-kms/attested-kms/attestation"
	"github.com/google/go-tdx-guest/pcs"
	"github.com/google/go-tdx-guest/verify"
)

// Common names go-tdx-guest (following Intel) requires in a PCK chain.
const (
	pckCommonName         = "Intel SGX PCK Certificate"
	platformCACommonName  = "Intel SGX PCK Platform CA"
	processorCACommonName = "Intel SGX PCK Processor CA"
)

// pckChain is a PCK certificate chain as carried in a quote, with the
// PCK certificate's SGX extensions.
type pckChain struct {
	pck, ca, root *x509.Certificate // as in the quote
	pckKey        *ecdsa.PublicKey
	ext           *pcs.PckExtensions
	caID          string            // "platform" or "processor": names the PCK CRL
	trustedRoot   *x509.Certificate // the configured root the chain verified to
	notBefore     time.Time         // latest NotBefore of the chain
	notAfter      time.Time         // earliest NotAfter of the chain
}

// splitChain parses the PEM chain: exactly three CERTIFICATE blocks,
// leaf first, optionally followed by one NUL byte (as genuine quotes
// have), like go-tdx-guest's extractor.
func splitChain(b []byte) (*pckChain, error) {
	var certs []*x509.Certificate
	rest := b
	for len(certs) < 3 {
		var block *pem.Block
		block, rest = pem.Decode(rest)
		if block == nil || block.Type != "CERTIFICATE" {
			return nil, fmt.Errorf("PCK certificate chain: want 3 PEM certificates, found %d", len(certs))
		}
		c, err := x509.ParseCertificate(block.Bytes)
		if err != nil {
			return nil, fmt.Errorf("PCK certificate chain: certificate %d: %w", len(certs), err)
		}
		certs = append(certs, c)
	}
	if rest = bytes.TrimRight(rest, "\n"); len(rest) != 0 && !bytes.Equal(rest, []byte{0}) {
		return nil, errors.New("PCK certificate chain: trailing data")
	}
	ch := &pckChain{pck: certs[0], ca: certs[1], root: certs[2]}
	key, ok := ch.pck.PublicKey.(*ecdsa.PublicKey)
	if !ok || key.Curve != elliptic.P256() {
		return nil, errors.New("PCK certificate: key is not ECDSA P-256")
	}
	ch.pckKey = key
	switch ch.pck.Issuer.CommonName {
	case platformCACommonName:
		ch.caID = "platform"
	case processorCACommonName:
		ch.caID = "processor"
	default:
		return nil, fmt.Errorf("PCK certificate: unknown issuer %q", ch.pck.Issuer.CommonName)
	}
	ch.notBefore, ch.notAfter = ch.pck.NotBefore, ch.pck.NotAfter
	for _, c := range []*x509.Certificate{ch.ca, ch.root} {
		if c.NotBefore.After(ch.notBefore) {
			ch.notBefore = c.NotBefore
		}
		if c.NotAfter.Before(ch.notAfter) {
			ch.notAfter = c.NotAfter
		}
	}
	return ch, nil
}

// pckExtensions wraps pcs.PckCertificateExtensions and insists on the
// FMSPC and TCB components that TCB matching relies on.
func pckExtensions(pck *x509.Certificate) (*pcs.PckExtensions, error) {
	ext, err := pcs.PckCertificateExtensions(pck)
	if err != nil {
		return nil, fmt.Errorf("PCK certificate SGX extensions: %w", err)
	}
	if len(ext.FMSPC) != 12 || len(ext.TCB.CPUSvnComponents) != 16 {
		return nil, errors.New("PCK certificate SGX extensions: missing FMSPC or TCB")
	}
	return ext, nil
}

// verifyChain returns the quote's PCK chain once it is known to lead to a
// configured root and to certify the key that signed the QE report, which
// in turn vouches for the attestation key that signed the quote.
//
// Cold path: go-tdx-guest verifies the whole quote without collateral
// (chain names, algorithms and signatures, chain to Options.TrustedRoots
// at now, certificate expiry, quote signature, QE report signature, QE
// report data). The verified chain is then cached under the SHA-256 of
// the exact PEM chain bytes, until the earliest NotAfter in the chain.
// Warm path: only the per-quote signatures are checked (checkSignatures).
func (v *Verifier) verifyChain(ctx context.Context, q *quote, now time.Time) (*pckChain, error) {
	key := sha256.Sum256(q.pckChain)
	if ch := v.chains.get(key, now); ch != nil {
		if err := checkSignatures(q, ch.pckKey); err != nil {
			return nil, err
		}
		return ch, nil
	}
	ch, err := splitChain(q.pckChain)
	if err != nil {
		return nil, attestation.Errorf(attestation.ReasonMalformed, fmt.Errorf("tdx: %w", err))
	}
	if ch.ext, err = pckExtensions(ch.pck); err != nil {
		return nil, attestation.Errorf(attestation.ReasonMalformed, fmt.Errorf("tdx: %w", err))
	}
	opts := &verify.Options{
		// Collateral and revocation are handled by this package (see
		// collateral.go): go-tdx-guest would fail a known but
		// out-of-date TCB level, which must be a claim instead.
		GetCollateral:    false,
		CheckRevocations: false,
		// Never nil: go-tdx-guest would substitute its embedded root.
		TrustedRoots: v.pool,
		Now:          &verify.TimeSet{PckCertChain: now, TcbInfo: now, QeIdentity: now, PckCrl: now, RootCaCrl: now},
	}
	if err := verify.TdxQuoteContext(ctx, q.proto, opts); err != nil {
		// go-tdx-guest flattens most errors to strings. Re-check the
		// per-quote signatures alone: if they fail the quote was altered;
		// otherwise the chain is what it rejected.
		if sigErr := checkSignatures(q, ch.pckKey); sigErr != nil {
			return nil, sigErr
		}
		return nil, attestation.Errorf(attestation.ReasonUntrustedRoot, fmt.Errorf("tdx: PCK certificate chain: %w", err))
	}
	// go-tdx-guest accepted the chain through v.pool; find which root,
	// for the root CA CRL.
	inter := x509.NewCertPool()
	inter.AddCert(ch.ca)
	chains, err := ch.pck.Verify(x509.VerifyOptions{Roots: v.pool, Intermediates: inter, CurrentTime: now})
	if err != nil || len(chains) == 0 || len(chains[0]) != 3 {
		return nil, attestation.Errorf(attestation.ReasonUntrustedRoot, fmt.Errorf("tdx: PCK certificate chain: %v", err))
	}
	ch.trustedRoot = chains[0][2]
	v.chains.put(key, ch)
	return ch, nil
}

// maxCachedChains bounds the chain cache: one entry per PCK certificate,
// i.e. per platform and TCB; a large fleet fits.
const maxCachedChains = 4096

// chainCache remembers PCK chains verified to a configured root. An entry
// is used only while every certificate of the chain is valid.
type chainCache struct {
	mu      sync.Mutex
	entries map[[sha256.Size]byte]*pckChain
}

func (c *chainCache) get(key [sha256.Size]byte, now time.Time) *pckChain {
	c.mu.Lock()
	defer c.mu.Unlock()
	ch := c.entries[key]
	if ch == nil {
		return nil
	}
	if now.Before(ch.notBefore) || now.After(ch.notAfter) {
		delete(c.entries, key)
		return nil
	}
	return ch
}

func (c *chainCache) put(key [sha256.Size]byte, ch *pckChain) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.entries == nil {
		c.entries = make(map[[sha256.Size]byte]*pckChain)
	}
	if len(c.entries) >= maxCachedChains {
		// Dropping an arbitrary entry only costs a re-verification.
		for k := range c.entries {
			delete(c.entries, k)
			break
		}
	}
	c.entries[key] = ch
}
