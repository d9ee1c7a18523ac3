package attestation

import "errors"

// Reason is a machine-readable cause of a verification failure. The release
// service copies it into google.rpc.ErrorInfo so callers can act on it
// without parsing English.
type Reason string

const (
	// ReasonMalformed: the evidence could not be parsed. Maps to InvalidArgument.
	ReasonMalformed Reason = "EVIDENCE_MALFORMED"
	// ReasonSignature: a signature over the report or in its chain is wrong.
	ReasonSignature Reason = "EVIDENCE_SIGNATURE_INVALID"
	// ReasonUntrustedRoot: the chain does not end in a configured root.
	ReasonUntrustedRoot Reason = "EVIDENCE_UNTRUSTED_ROOT"
	// ReasonRevoked: a certificate of the chain is on a CRL.
	ReasonRevoked Reason = "EVIDENCE_REVOKED"
	// ReasonCollateral: certificates, CRLs or other collateral needed to
	// verify could not be obtained.
	ReasonCollateral Reason = "EVIDENCE_COLLATERAL_UNAVAILABLE"
	// ReasonCollateralExpired: collateral (CRL, TCB info, QE identity) is
	// at hand but past its next-update time or not yet valid.
	ReasonCollateralExpired Reason = "EVIDENCE_COLLATERAL_EXPIRED"
	// ReasonUnsupported: the evidence type or version is not supported.
	ReasonUnsupported Reason = "EVIDENCE_UNSUPPORTED"
	// ReasonInconsistent: the parts of composite evidence do not agree
	// (HCL runtime data vs. its hash in the hardware report, PCR values
	// vs. the quoted digest, user-data vs. qualifying data, TD report vs.
	// TD quote).
	ReasonInconsistent Reason = "EVIDENCE_INCONSISTENT"
	// ReasonTCB: the vendor's authentic TCB information lists no level
	// that matches the platform, or the QE identity does not match. TCB
	// info the KMS cannot obtain (e.g. none for the FMSPC) is
	// ReasonCollateral. An out-of-date but known TCB level is not an
	// error here: it is a claim (TDXClaims.TCBStatus) for policy.
	ReasonTCB Reason = "EVIDENCE_TCB_UNSUPPORTED"
)

// Error is a verification failure with its Reason. Messages never contain
// report data or other caller-supplied secrets verbatim.
type Error struct {
	Reason Reason
	Err    error
}

func (e *Error) Error() string { return string(e.Reason) + ": " + e.Err.Error() }
func (e *Error) Unwrap() error { return e.Err }

// Errorf wraps err with a reason.
func Errorf(reason Reason, err error) error { return &Error{Reason: reason, Err: err} }

// ReasonOf returns the Reason carried by err, or "" when there is none.
func ReasonOf(err error) Reason {
	var e *Error
	if errors.As(err, &e) {
		return e.Reason
	}
	return ""
}
