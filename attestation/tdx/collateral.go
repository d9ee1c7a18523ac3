package tdx

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/sha256"
	"crypto/x509"
	"encoding/hex"
	"encoding/json"
	"encoding/pem"
	"errors"
	"fmt"
	"net/http"
	"net/url"
	"strings"
	"sync"
	"time"

	"github.com/attested-kms/attested-kms/attestation"
	"github.com/google/go-tdx-guest/pcs"
	"github.com/google/go-tdx-guest/verify/trust"
)

// maxCollateralSize bounds every collateral response body and header.
// Intel's TDX TCB info is about 10 KiB and its PCK CRLs tens of KiB.
const maxCollateralSize = 4 << 20

// Issuer-chain response headers of Intel's PCS, as go-tdx-guest names
// them (canonical MIME header keys).
var (
	tcbInfoChainHeader    = pcs.TcbInfoIssuerChainPhrase
	qeIdentityChainHeader = pcs.SgxQeIdentityIssuerChainPhrase
)

const tcbSigningCommonName = "Intel SGX TCB Signing"

// signedDoc is a verified TCB info or QE identity document.
type signedDoc struct {
	tcbInfo    *pcs.TcbInfo         // set for TCB info
	qeIdentity *pcs.EnclaveIdentity // set for QE identity
	signer     *x509.Certificate    // TCB signing certificate, for the root CA CRL
	notBefore  time.Time            // latest of issueDate and the chain's NotBefore
	certsUntil time.Time            // earliest NotAfter of the signing chain
	nextUpdate time.Time
}

// fetch gets url through the getter. Failures are ReasonCollateral.
func (v *Verifier) fetch(ctx context.Context, u string) (http.Header, []byte, error) {
	hdr, body, err := trust.GetWith(ctx, v.getter, u)
	if err != nil {
		return nil, nil, attestation.Errorf(attestation.ReasonCollateral, fmt.Errorf("tdx: fetch %s: %w", u, err))
	}
	if len(body) > maxCollateralSize {
		return nil, nil, attestation.Errorf(attestation.ReasonCollateral, fmt.Errorf("tdx: %s: response of %d bytes exceeds %d", u, len(body), maxCollateralSize))
	}
	return http.Header(hdr), body, nil
}

// tcbInfo fetches and verifies the TDX TCB info for fmspc.
func (v *Verifier) tcbInfo(ctx context.Context, fmspc string, now time.Time) (*signedDoc, error) {
	return v.signedDocument(ctx, pcs.TcbInfoURL(fmspc), tcbInfoChainHeader, "tcbInfo", now, func(raw []byte, d *signedDoc) error {
		var ti pcs.TcbInfo
		if err := json.Unmarshal(raw, &ti); err != nil {
			return fmt.Errorf("parse: %w", err)
		}
		if ti.ID != "TDX" || ti.Version != 3 {
			return fmt.Errorf("TCB info id %q version %d, want TDX version 3", ti.ID, ti.Version)
		}
		if !strings.EqualFold(ti.Fmspc, fmspc) {
			return fmt.Errorf("TCB info is for FMSPC %q, requested %q", ti.Fmspc, fmspc)
		}
		if len(ti.TcbLevels) == 0 {
			return errors.New("TCB info has no TCB levels")
		}
		d.tcbInfo = &ti
		d.nextUpdate, d.notBefore = ti.NextUpdate, laterOf(d.notBefore, ti.IssueDate)
		return nil
	})
}

// qeIdentity fetches and verifies the TDX QE identity.
func (v *Verifier) qeIdentity(ctx context.Context, now time.Time) (*signedDoc, error) {
	return v.signedDocument(ctx, pcs.QeIdentityURL(), qeIdentityChainHeader, "enclaveIdentity", now, func(raw []byte, d *signedDoc) error {
		var ei pcs.EnclaveIdentity
		if err := json.Unmarshal(raw, &ei); err != nil {
			return fmt.Errorf("parse: %w", err)
		}
		if ei.ID != "TD_QE" || ei.Version != 2 {
			return fmt.Errorf("QE identity id %q version %d, want TD_QE version 2", ei.ID, ei.Version)
		}
		if len(ei.TcbLevels) == 0 {
			return errors.New("QE identity has no TCB levels")
		}
		if len(ei.Miscselect.Bytes) != 4 || len(ei.MiscselectMask.Bytes) != 4 ||
			len(ei.Attributes.Bytes) != 16 || len(ei.AttributesMask.Bytes) != 16 || len(ei.Mrsigner.Bytes) != 32 {
			return errors.New("QE identity fields have wrong sizes")
		}
		d.qeIdentity = &ei
		d.nextUpdate, d.notBefore = ei.NextUpdate, laterOf(d.notBefore, ei.IssueDate)
		return nil
	})
}

// signedDocument fetches u and returns the verified document. Intel signs
// the exact bytes of the JSON value under field (ECDSA P-256 over SHA-256,
// hex r||s in "signature") with the TCB signing certificate, whose chain
// comes in the response header chainHeader.
//
// Verified documents are cached under the SHA-256 of the URL, the issuer
// chain header and the body, so a document is verified once however
// often the collateral store serves it, and a changed document is
// verified afresh. Time checks are redone on every use.
func (v *Verifier) signedDocument(ctx context.Context, u, chainHeader, field string, now time.Time, parse func([]byte, *signedDoc) error) (*signedDoc, error) {
	hdr, body, err := v.fetch(ctx, u)
	if err != nil {
		return nil, err
	}
	chainValues := hdr.Values(chainHeader)
	key := docKey(u, chainValues, body)
	if d := v.docs.get(key); d != nil && !now.Before(d.notBefore) && !now.After(d.certsUntil) {
		return d, docCurrent(u, d, now)
	}
	d := &signedDoc{}
	fail := func(reason attestation.Reason, err error) (*signedDoc, error) {
		return nil, attestation.Errorf(reason, fmt.Errorf("tdx: %s: %w", u, err))
	}
	signer, err := issuerChain(chainValues)
	if err != nil {
		return fail(attestation.ReasonCollateral, err)
	}
	if signer.Subject.CommonName != tcbSigningCommonName {
		return fail(attestation.ReasonUntrustedRoot, fmt.Errorf("signed by %q, want %q", signer.Subject.CommonName, tcbSigningCommonName))
	}
	// The header's root is only a hint: the signing certificate must
	// chain to a configured root.
	chains, err := signer.Verify(x509.VerifyOptions{Roots: v.pool, CurrentTime: now, KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageAny}})
	if err != nil {
		return fail(attestation.ReasonUntrustedRoot, fmt.Errorf("TCB signing certificate: %w", err))
	}
	root := chains[0][len(chains[0])-1]
	pub, ok := signer.PublicKey.(*ecdsa.PublicKey)
	if !ok || pub.Curve != elliptic.P256() {
		return fail(attestation.ReasonUntrustedRoot, errors.New("TCB signing key is not ECDSA P-256"))
	}
	var top map[string]json.RawMessage
	if err := json.Unmarshal(body, &top); err != nil {
		return fail(attestation.ReasonCollateral, fmt.Errorf("parse: %w", err))
	}
	raw, sigHex := top[field], top["signature"]
	var sigStr string
	if raw == nil || json.Unmarshal(sigHex, &sigStr) != nil {
		return fail(attestation.ReasonCollateral, fmt.Errorf("want %q and \"signature\" fields", field))
	}
	sig, err := hex.DecodeString(sigStr)
	if err != nil || !verifyRS(pub, raw, sig) {
		return fail(attestation.ReasonSignature, errors.New("signature does not verify with the TCB signing certificate"))
	}
	d.signer = signer
	d.notBefore = laterOf(signer.NotBefore, root.NotBefore)
	d.certsUntil = earlierOf(signer.NotAfter, root.NotAfter)
	// Parse only the bytes that were signed.
	if err := parse(raw, d); err != nil {
		return fail(attestation.ReasonCollateral, err)
	}
	if err := docCurrent(u, d, now); err != nil {
		return nil, err
	}
	v.docs.put(key, d)
	return d, nil
}

// docCurrent rejects a document outside [issueDate, nextUpdate): an old
// document replayed by a network attacker could hide a TCB recovery.
func docCurrent(u string, d *signedDoc, now time.Time) error {
	if now.Before(d.notBefore) {
		return attestation.Errorf(attestation.ReasonCollateralExpired, fmt.Errorf("tdx: %s: not valid before %s", u, d.notBefore.UTC().Format(time.RFC3339)))
	}
	if !now.Before(d.nextUpdate) {
		return attestation.Errorf(attestation.ReasonCollateralExpired, fmt.Errorf("tdx: %s: expired at %s", u, d.nextUpdate.UTC().Format(time.RFC3339)))
	}
	return nil
}

// issuerChain parses an issuer-chain header: URL-escaped PEM, signing
// certificate then root.
func issuerChain(values []string) (signer *x509.Certificate, err error) {
	if len(values) != 1 || values[0] == "" {
		return nil, errors.New("missing issuer chain header")
	}
	if len(values[0]) > maxCollateralSize {
		return nil, errors.New("issuer chain header too large")
	}
	s, err := url.QueryUnescape(values[0])
	if err != nil {
		return nil, fmt.Errorf("issuer chain header: %w", err)
	}
	var certs []*x509.Certificate
	rest := []byte(s)
	for {
		var block *pem.Block
		block, rest = pem.Decode(rest)
		if block == nil {
			break
		}
		c, err := x509.ParseCertificate(block.Bytes)
		if block.Type != "CERTIFICATE" || err != nil {
			return nil, errors.New("issuer chain header: bad certificate")
		}
		certs = append(certs, c)
	}
	if len(certs) != 2 || len(strings.TrimSpace(string(rest))) != 0 {
		return nil, fmt.Errorf("issuer chain header: want signing and root certificates, got %d", len(certs))
	}
	return certs[0], nil
}

func docKey(u string, chain []string, body []byte) [sha256.Size]byte {
	h := sha256.New()
	fmt.Fprintf(h, "%d:%s", len(u), u)
	for _, c := range chain {
		fmt.Fprintf(h, "%d:%s", len(c), c)
	}
	fmt.Fprintf(h, "%d:", len(body))
	h.Write(body)
	var k [sha256.Size]byte
	h.Sum(k[:0])
	return k
}

func laterOf(a, b time.Time) time.Time {
	if b.After(a) {
		return b
	}
	return a
}

func earlierOf(a, b time.Time) time.Time {
	if b.Before(a) {
		return b
	}
	return a
}

// maxCachedDocs bounds the document and CRL caches: a TCB info per FMSPC,
// one QE identity, two PCK CRLs, a root CRL, and their successors.
const maxCachedDocs = 512

// cache is a bounded map from content hashes to verified values.
type cache[T any] struct {
	mu      sync.Mutex
	entries map[[sha256.Size]byte]T
}

func (c *cache[T]) get(k [sha256.Size]byte) T {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.entries[k]
}

func (c *cache[T]) put(k [sha256.Size]byte, v T) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.entries == nil {
		c.entries = make(map[[sha256.Size]byte]T)
	}
	if len(c.entries) >= maxCachedDocs {
		// Superseded documents accumulate slowly; start afresh.
		clear(c.entries)
	}
	c.entries[k] = v
}
