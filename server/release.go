package server

import (
	"context"
	"crypto/subtle"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"regexp"
	"slices"
	"strings"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/metadata"
	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/attested-kms/attested-kms/attestation"
	"github.com/attested-kms/attested-kms/challenge"
	"github.com/attested-kms/attested-kms/hpke"
	"github.com/attested-kms/attested-kms/keystore"
	"github.com/attested-kms/attested-kms/keystore/kek"
	"github.com/attested-kms/attested-kms/policy"
	kmsv1 "github.com/attested-kms/attested-kms/proto/kms/v1"
	"github.com/attested-kms/attested-kms/token"
)

// TokenVerifier checks a bearer token. *token.Verifier implements it.
type TokenVerifier interface {
	Verify(ctx context.Context, raw string) (*token.Identity, error)
}

// EvidenceVerifier checks one kind of evidence and returns its claims.
type EvidenceVerifier = attestation.Verifier

// evidenceOf converts the wire form. The byte slices alias the request;
// verifiers copy what they keep.
func evidenceOf(ev *kmsv1.Evidence) *attestation.Evidence {
	out := &attestation.Evidence{
		Type:         attestation.Platform(ev.GetType()),
		Report:       ev.GetReport(),
		Certificates: ev.GetCertificates(),
		TDQuote:      ev.GetTdQuote(),
		Document:     ev.GetDocument(),
	}
	if q := ev.GetTpmQuote(); q != nil {
		out.TPMQuote = &attestation.TPMQuote{Message: q.GetMessage(), Signature: q.GetSignature(), PCRs: q.GetPcrs()}
	}
	return out
}

// ReleaseService implements kmsv1.KeyReleaseServer.
type ReleaseService struct {
	kmsv1.UnimplementedKeyReleaseServer

	keys     *keystore.Manager
	tokens   TokenVerifier
	nonces   *challenge.Issuer
	evidence map[attestation.Platform]EvidenceVerifier
	policies *policyCache
	log      *slog.Logger
	now      func() time.Time
	rand     io.Reader
	metrics  *Metrics
	audit    *Auditor
}

// ReleaseDeps are the components the release path is built from.
type ReleaseDeps struct {
	Keys     *keystore.Manager
	Tokens   TokenVerifier
	Nonces   *challenge.Issuer
	Evidence map[attestation.Platform]EvidenceVerifier
	Logger   *slog.Logger
	Now      func() time.Time
	Rand     io.Reader
	// Metrics, if set, counts decisions and times evidence verification.
	Metrics *Metrics
	// Audit, if set, records every decision in the audit log.
	Audit *Auditor
}

// NewReleaseService checks that every dependency is present: a release
// path with a missing verifier must not start, rather than skip a check.
func NewReleaseService(d ReleaseDeps) (*ReleaseService, error) {
	if d.Keys == nil || d.Tokens == nil || d.Nonces == nil || len(d.Evidence) == 0 || d.Rand == nil {
		return nil, errors.New("server: release service needs keys, tokens, nonces, evidence verifiers and a random source")
	}
	if d.Logger == nil {
		d.Logger = slog.New(slog.DiscardHandler)
	}
	if d.Now == nil {
		d.Now = time.Now
	}
	return &ReleaseService{
		keys: d.Keys, tokens: d.Tokens, nonces: d.Nonces, evidence: d.Evidence,
		policies: newPolicyCache(), log: d.Logger, now: d.Now, rand: d.Rand, metrics: d.Metrics, audit: d.Audit,
	}, nil
}

// GetChallenge implements kmsv1.KeyReleaseServer. It requires a valid
// token so unauthenticated callers cannot make the server do work.
func (s *ReleaseService) GetChallenge(ctx context.Context, _ *kmsv1.GetChallengeRequest) (*kmsv1.GetChallengeResponse, error) {
	if _, derr := s.checkToken(ctx); derr != nil {
		s.log.LogAttrs(ctx, slog.LevelInfo, "challenge", slog.String("decision", "denied"), slog.String("reason", derr.reason), slog.String("detail", derr.message))
		return nil, grpcStatus(derr)
	}
	n, exp, err := s.nonces.Issue()
	if err != nil {
		s.log.ErrorContext(ctx, "challenge: issuing nonce", "error", err)
		return nil, grpcStatus(refuse(codes.Internal, ReasonInternal, "could not issue a challenge"))
	}
	return &kmsv1.GetChallengeResponse{Nonce: n, ExpiresAt: timestamppb.New(exp)}, nil
}

var kidPattern = regexp.MustCompile(`^[0-9a-f]{16}$`)

// releaseRecord collects what the decision log line reports.
type releaseRecord struct {
	keyset, kid, platform, subject, tenant, measurement, rule, wrapAlg string
	revocation                                                         string
	claims                                                             *attestation.Claims // for the audit entry's digest
}

// ReleaseKey implements kmsv1.KeyReleaseServer.
func (s *ReleaseService) ReleaseKey(ctx context.Context, req *kmsv1.ReleaseKeyRequest) (*kmsv1.ReleaseKeyResponse, error) {
	start := s.now()
	// Clipped: the log line must not grow with what a caller sends.
	rec := releaseRecord{keyset: clip(req.GetKeyset()), kid: clip(req.GetKid())}
	resp, derr := s.release(ctx, req, &rec)
	attrs := []slog.Attr{
		slog.String("keyset", rec.keyset), slog.String("kid", rec.kid),
		slog.String("platform", rec.platform), slog.String("subject", rec.subject),
		slog.String("tenant", rec.tenant), slog.String("measurement", rec.measurement),
		slog.String("revocation", rec.revocation), slog.String("wrapping", rec.wrapAlg), slog.Duration("elapsed", s.now().Sub(start)),
	}
	if derr != nil {
		attrs = append(attrs, slog.String("decision", "denied"), slog.String("reason", derr.reason),
			slog.String("code", derr.code.String()), slog.String("detail", derr.message))
		s.log.LogAttrs(ctx, slog.LevelInfo, "release", attrs...)
		s.metrics.ObserveRelease("denied", derr.reason)
		// Callers without a valid token are logged and counted, not
		// audited: otherwise anyone who reaches the port could make the
		// KMS write (and fsync) an audit entry per request.
		if derr.code != codes.Unauthenticated {
			s.audit.release(ctx, &rec, derr)
		}
		return nil, grpcStatus(derr)
	}
	attrs = append(attrs, slog.String("decision", "granted"), slog.String("rule", rec.rule))
	s.log.LogAttrs(ctx, slog.LevelInfo, "release", attrs...)
	s.metrics.ObserveRelease("granted", "")
	// Recorded before the key leaves: a grant is never sent unrecorded
	// unless the append failed, which Auditor logs and counts.
	s.audit.release(ctx, &rec, nil)
	return resp, nil
}

// release runs the checks in the order fixed by the protocol: token, nonce,
// evidence, binding, policy, key state. Each returns on failure, so nothing
// after a failed check runs.
func (s *ReleaseService) release(ctx context.Context, req *kmsv1.ReleaseKeyRequest, rec *releaseRecord) (*kmsv1.ReleaseKeyResponse, *decisionError) {
	id, derr := s.checkToken(ctx)
	if derr != nil {
		return nil, derr
	}
	rec.subject, rec.tenant = id.ObjectID, id.TenantID
	if rec.subject == "" {
		rec.subject = id.Subject
	}

	// Shape checks cost nothing and give clear InvalidArgument errors.
	if !keystore.ValidKeySetName(req.GetKeyset()) {
		return nil, refuse(codes.InvalidArgument, ReasonBadRequest, "keyset must be a key set name (a DNS label)")
	}
	if !kidPattern.MatchString(req.GetKid()) {
		return nil, refuse(codes.InvalidArgument, ReasonBadRequest, "kid must be 16 lowercase hex characters")
	}
	ev := req.GetEvidence()
	verifier, ok := s.evidence[attestation.Platform(ev.GetType())]
	if !ok {
		return nil, refuse(codes.InvalidArgument, string(attestation.ReasonUnsupported), "evidence type %q is not supported (supported: %s)", truncate(ev.GetType(), 32), s.platforms())
	}
	wk := req.GetWrappingKey()
	rec.wrapAlg = wk.GetAlgorithm().String()
	if derr := validateWrappingKey(wk); derr != nil {
		return nil, derr
	}

	if err := s.nonces.Check(req.GetNonce()); err != nil {
		code := codes.InvalidArgument
		if challenge.ReasonOf(err) == challenge.ReasonExpired {
			code = codes.FailedPrecondition
		}
		return nil, refuseErr(code, string(challenge.ReasonOf(err)), err)
	}

	verifyStart := time.Now()
	claims, err := verifier.Verify(ctx, evidenceOf(ev))
	// The platform label comes from the verifier map, a bounded set.
	s.metrics.ObserveVerification(ev.GetType(), time.Since(verifyStart))
	if err != nil {
		reason := attestation.ReasonOf(err)
		code := codes.PermissionDenied
		switch reason {
		case attestation.ReasonMalformed, attestation.ReasonUnsupported:
			code = codes.InvalidArgument
		case attestation.ReasonCollateral, attestation.ReasonCollateralExpired:
			// The KMS lacks current collateral: its problem, retryable,
			// not a verdict on the caller's evidence.
			code = codes.Unavailable
		case "":
			reason = attestation.ReasonSignature
		}
		return nil, refuse(code, string(reason), "evidence verification failed: %v", err)
	}
	rec.platform, rec.claims = string(claims.Platform), claims
	rec.revocation = string(claims.Revocation)
	switch {
	case claims.SEVSNP != nil:
		rec.measurement = claims.SEVSNP.Measurement.String()
	case claims.TDX != nil:
		rec.measurement = claims.TDX.MRTD.String()
	}

	binding, err := hpke.BindingDigest(req.GetNonce(), wk.GetPublicKey())
	if err != nil {
		return nil, refuseErr(codes.InvalidArgument, ReasonBadRequest, err)
	}
	if subtle.ConstantTimeCompare(binding[:], claims.ReportData) != 1 {
		return nil, refuse(codes.PermissionDenied, ReasonBinding,
			"report data does not match the binding of this nonce and wrapping key (see docs/protocol.md, Binding)")
	}

	ks, err := s.keys.KeySet(ctx, req.GetKeyset())
	if err != nil {
		return nil, storeError(err)
	}
	pol, err := s.policies.get(ks)
	if err != nil {
		// A stored policy that no longer parses must deny, not allow.
		s.log.ErrorContext(ctx, "release: stored policy does not parse", "keyset", ks.Name, "error", err)
		return nil, refuse(codes.PermissionDenied, ReasonPolicy, "the key set's release policy is invalid; ask the operator to fix it")
	}
	decision := pol.Evaluate(policy.Input{Evidence: claims, Token: id.Claims})
	if !decision.Allowed {
		return nil, refuse(codes.PermissionDenied, ReasonPolicy, "%s", decision.Summary())
	}
	rec.rule = decision.Rule

	// One store read gives the record and its private key; the key
	// store refuses disabled, destroyed and expired keys and a switched-off
	// KEK (storeError maps each to its reason).
	key, priv, err := s.keys.Release(ctx, ks.Name, req.GetKid())
	if err != nil {
		return nil, storeError(err)
	}
	defer clear(priv) // a copy of the cached key; only the wrapped form leaves

	var wrapped []byte
	switch wk.GetAlgorithm() {
	case kmsv1.WrappingAlgorithm_WRAPPING_ALGORITHM_HPKE_X25519:
		wrapped, err = hpke.WrapX25519(s.rand, wk.GetPublicKey(), key.KID, req.GetNonce(), priv)
	case kmsv1.WrappingAlgorithm_WRAPPING_ALGORITHM_RSA_AES_KEY_WRAP_256:
		wrapped, err = hpke.WrapRSA(s.rand, wk.GetPublicKey(), priv)
	}
	if err != nil {
		s.log.ErrorContext(ctx, "release: wrapping", "kid", key.KID, "error", err)
		return nil, refuse(codes.Internal, ReasonInternal, "could not wrap the key")
	}
	return &kmsv1.ReleaseKeyResponse{
		WrappedKey: wrapped,
		Keyset:     ks.Name,
		Kid:        key.KID,
		PublicKey:  key.PublicKey,
		OhttpKeyId: uint32(key.OHTTPKeyID()),
		Suite:      key.Suite,
		NotBefore:  timestamppb.New(key.Activates),
		NotAfter:   timestamppb.New(key.Expires),
	}, nil
}

// checkToken extracts and verifies the bearer token.
func (s *ReleaseService) checkToken(ctx context.Context) (*token.Identity, *decisionError) {
	md, _ := metadata.FromIncomingContext(ctx)
	vals := md.Get("authorization")
	if len(vals) != 1 {
		return nil, refuse(codes.Unauthenticated, string(token.ReasonMissing), "exactly one authorization: Bearer <token> metadata entry is required")
	}
	raw, err := token.BearerToken(vals[0])
	if err != nil {
		return nil, refuse(codes.Unauthenticated, string(token.ReasonOf(err)), "authorization metadata must be \"Bearer <token>\"")
	}
	id, err := s.tokens.Verify(ctx, raw)
	if err != nil {
		reason := token.ReasonOf(err)
		code := codes.Unauthenticated
		if reason == token.ReasonKeysUnavailable {
			code = codes.Unavailable
		}
		return nil, refuse(code, string(reason), "token rejected: %v", err)
	}
	return id, nil
}

func validateWrappingKey(wk *kmsv1.WrappingKey) *decisionError {
	switch wk.GetAlgorithm() {
	case kmsv1.WrappingAlgorithm_WRAPPING_ALGORITHM_HPKE_X25519:
		if err := hpke.ValidateX25519PublicKey(wk.GetPublicKey()); err != nil {
			return refuseErr(codes.InvalidArgument, ReasonWrappingKey, fmt.Errorf("wrapping key: %w", err))
		}
	case kmsv1.WrappingAlgorithm_WRAPPING_ALGORITHM_RSA_AES_KEY_WRAP_256:
		if _, err := hpke.ParseRSAWrappingKey(wk.GetPublicKey()); err != nil {
			return refuseErr(codes.InvalidArgument, ReasonWrappingKey, fmt.Errorf("wrapping key: %w", err))
		}
	default:
		return refuse(codes.InvalidArgument, ReasonWrappingKey, "wrapping key algorithm must be HPKE_X25519 or RSA_AES_KEY_WRAP_256")
	}
	return nil
}

// storeError maps key store errors to gRPC codes.
func storeError(err error) *decisionError {
	switch {
	case errors.Is(err, keystore.ErrKeySetNotFound):
		return refuseErr(codes.NotFound, ReasonKeySetNotFound, err)
	case errors.Is(err, keystore.ErrKeyNotFound):
		return refuseErr(codes.NotFound, ReasonKeyNotFound, err)
	case errors.Is(err, keystore.ErrKeyDisabled):
		return refuseErr(codes.FailedPrecondition, ReasonKeyDisabled, err)
	case errors.Is(err, keystore.ErrKeyDestroyed), errors.Is(err, keystore.ErrKeyNotReleasable):
		return refuseErr(codes.FailedPrecondition, ReasonKeyNotReleasable, err)
	case errors.Is(err, keystore.ErrInvalidArgument):
		return refuseErr(codes.InvalidArgument, ReasonBadRequest, err)
	// The KEK's URI, role or module path stay in the server log: callers
	// learn only what happened.
	case errors.Is(err, keystore.ErrKEKDisabled), errors.Is(err, kek.ErrKeyDisabled):
		// The customer's off switch: not retryable until they act.
		return refuse(codes.FailedPrecondition, ReasonKEKDisabled, "the key set's key-encryption key was disabled or access to it revoked by its owner")
	case errors.Is(err, keystore.ErrKEKUnavailable):
		return refuse(codes.Unavailable, ReasonKEKUnavailable, "the key set's key-encryption key has not been reachable for longer than the check interval; retry later")
	case keystore.IsUnavailable(err):
		return refuse(codes.Unavailable, ReasonUnavailable, "key store or KEK provider unavailable; retry later")
	default:
		return refuse(codes.Internal, ReasonInternal, "key store error")
	}
}

func (s *ReleaseService) platforms() string {
	var names []string
	for p := range s.evidence {
		names = append(names, string(p))
	}
	slices.Sort(names)
	return strings.Join(names, ", ")
}

func truncate(s string, n int) string {
	if len(s) > n {
		return s[:n] + "…"
	}
	return s
}
