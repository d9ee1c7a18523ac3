package tdx

import (
	"bytes"
	"context"
	"crypto/sha256"
	"crypto/x509"
	"errors"
	"fmt"
	"math/big"
	"time"

	"github.com/attested-kms/attested-kms/attestation"
	"github.com/google/go-tdx-guest/pcs"
)

// checkRevocation checks the PCK CRL (issued by the PCK platform or
// processor CA: lists PCK certificates) and the root CA CRL (issued by the
// root: lists the PCK CAs and the TCB signing certificates). It returns
// RevocationNotChecked only when Options.RevocationOptional allowed a CRL
// that could not be fetched to be skipped.
//
// The PCK CRL's own issuer-chain header is not needed: the CRL must be
// signed by the very CA certificate that verifyChain accepted for the
// PCK certificate, which is a stronger check than a chain from a header.
func (v *Verifier) checkRevocation(ctx context.Context, ch *pckChain, signers []*x509.Certificate, now time.Time) (attestation.Revocation, error) {
	if !v.checkRevocationOn {
		return attestation.RevocationNotChecked, nil
	}
	result := attestation.RevocationChecked
	pckCRL, err := v.crl(ctx, []string{pcs.PckCrlURL(ch.caID)}, ch.ca, now)
	switch {
	case err == nil:
		if err := notRevoked(pckCRL, ch.pck, "PCK certificate"); err != nil {
			return "", err
		}
	case v.revocationOptional && attestation.ReasonOf(err) == attestation.ReasonCollateral:
		result = attestation.RevocationNotChecked
	default:
		return "", err
	}
	if len(ch.trustedRoot.CRLDistributionPoints) == 0 {
		return "", attestation.Errorf(attestation.ReasonCollateral, errors.New("tdx: root certificate names no CRL distribution point"))
	}
	rootCRL, err := v.crl(ctx, ch.trustedRoot.CRLDistributionPoints, ch.trustedRoot, now)
	switch {
	case err == nil:
		if err := notRevoked(rootCRL, ch.ca, "PCK CA certificate"); err != nil {
			return "", err
		}
		for _, s := range signers {
			if err := notRevoked(rootCRL, s, "TCB signing certificate"); err != nil {
				return "", err
			}
		}
	case v.revocationOptional && attestation.ReasonOf(err) == attestation.ReasonCollateral:
		result = attestation.RevocationNotChecked
	default:
		return "", err
	}
	return result, nil
}

func notRevoked(crl *x509.RevocationList, cert *x509.Certificate, what string) error {
	for _, e := range crl.RevokedCertificateEntries {
		if e.SerialNumber != nil && e.SerialNumber.Cmp(cert.SerialNumber) == 0 {
			return attestation.Errorf(attestation.ReasonRevoked,
				fmt.Errorf("tdx: %s (serial %s) revoked at %s", what, serialHex(cert.SerialNumber), e.RevocationTime.UTC().Format(time.RFC3339)))
		}
	}
	return nil
}

func serialHex(n *big.Int) string { return fmt.Sprintf("%x", n) }

// crl fetches the DER CRL from the first of urls that works and checks
// that issuer signed it and that it is current. Verified CRLs are cached
// under the SHA-256 of URL, issuer certificate and body. A CRL that cannot
// be fetched or parsed is ReasonCollateral; a wrong signature
// ReasonSignature; one outside [thisUpdate, nextUpdate)
// ReasonCollateralExpired.
func (v *Verifier) crl(ctx context.Context, urls []string, issuer *x509.Certificate, now time.Time) (*x509.RevocationList, error) {
	var errs []error
	for _, u := range urls {
		_, body, err := v.fetch(ctx, u)
		if err != nil {
			errs = append(errs, errors.Unwrap(err))
			continue
		}
		h := sha256.New()
		fmt.Fprintf(h, "%d:%s%d:", len(u), u, len(issuer.Raw))
		h.Write(issuer.Raw)
		h.Write(body)
		var key [sha256.Size]byte
		h.Sum(key[:0])
		crl := v.crls.get(key)
		if crl == nil {
			parsed, err := x509.ParseRevocationList(body)
			if err != nil {
				errs = append(errs, fmt.Errorf("CRL from %s: %w", u, err))
				continue
			}
			if !bytes.Equal(parsed.RawIssuer, issuer.RawSubject) {
				return nil, attestation.Errorf(attestation.ReasonSignature, fmt.Errorf("tdx: CRL from %s is not issued by %q", u, issuer.Subject.CommonName))
			}
			if err := parsed.CheckSignatureFrom(issuer); err != nil {
				return nil, attestation.Errorf(attestation.ReasonSignature, fmt.Errorf("tdx: CRL from %s not signed by %q: %w", u, issuer.Subject.CommonName, err))
			}
			crl = parsed
			v.crls.put(key, crl)
		}
		if now.Before(crl.ThisUpdate) {
			return nil, attestation.Errorf(attestation.ReasonCollateralExpired, fmt.Errorf("tdx: CRL from %s not valid before %s", u, crl.ThisUpdate.UTC().Format(time.RFC3339)))
		}
		if !crl.NextUpdate.IsZero() && !now.Before(crl.NextUpdate) {
			return nil, attestation.Errorf(attestation.ReasonCollateralExpired, fmt.Errorf("tdx: CRL from %s expired at %s", u, crl.NextUpdate.UTC().Format(time.RFC3339)))
		}
		return crl, nil
	}
	return nil, attestation.Errorf(attestation.ReasonCollateral, fmt.Errorf("tdx: no usable CRL: %w", errors.Join(errs...)))
}
