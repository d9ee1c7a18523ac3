package tdx

import (
	"context"
	"crypto/x509"
	"encoding/json"
	"time"

	"github.com/attested-kms/attested-kms/attestation"
	"github.com/google/go-tdx-guest/pcs"
)

// Stage-by-stage access for fixtures whose collateral documents have no
// common validity window (go-tdx-guest's genuine v5 sample).

// CheckChain verifies the quote's PCK chain and signatures at now.
func (v *Verifier) CheckChain(ctx context.Context, raw []byte, now time.Time) error {
	q, err := parseQuote(raw)
	if err != nil {
		return err
	}
	_, err = v.verifyChain(ctx, q, now)
	return err
}

// CheckTCBInfo fetches and verifies the TCB info for fmspc at now.
func (v *Verifier) CheckTCBInfo(ctx context.Context, fmspc string, now time.Time) error {
	_, err := v.tcbInfo(ctx, fmspc, now)
	return err
}

// CheckQEIdentity fetches and verifies the QE identity at now.
func (v *Verifier) CheckQEIdentity(ctx context.Context, now time.Time) error {
	_, err := v.qeIdentity(ctx, now)
	return err
}

// CheckRevocationAt verifies the chain at chainTime and checks the CRLs at
// crlTime.
func (v *Verifier) CheckRevocationAt(ctx context.Context, raw []byte, chainTime, crlTime time.Time) (attestation.Revocation, error) {
	q, err := parseQuote(raw)
	if err != nil {
		return "", err
	}
	ch, err := v.verifyChain(ctx, q, chainTime)
	if err != nil {
		return "", err
	}
	return v.checkRevocation(ctx, ch, []*x509.Certificate{}, crlTime)
}

// EvaluateTCBUnverified matches a quote against TCB info and QE identity
// response bodies whose signatures are not checked.
func EvaluateTCBUnverified(raw, tcbInfoBody, qeIdentityBody []byte) (string, []string, error) {
	q, err := parseQuote(raw)
	if err != nil {
		return "", nil, err
	}
	ch, err := splitChain(q.pckChain)
	if err != nil {
		return "", nil, err
	}
	ext, err := pckExtensions(ch.pck)
	if err != nil {
		return "", nil, err
	}
	var ti pcs.TdxTcbInfo
	var qe pcs.QeIdentity
	if err := json.Unmarshal(tcbInfoBody, &ti); err != nil {
		return "", nil, err
	}
	if err := json.Unmarshal(qeIdentityBody, &qe); err != nil {
		return "", nil, err
	}
	r, err := evaluateTCB(q, ext, &ti.TcbInfo, &qe.EnclaveIdentity)
	if err != nil {
		return "", nil, err
	}
	return string(r.status), r.advisories, nil
}
