package server

import (
	"context"
	"crypto/ed25519"
	"crypto/x509"
	"errors"
	"fmt"
	"log/slog"
	"strconv"
	"strings"
	"sync/atomic"
	"unicode/utf8"

	"github.com/prometheus/client_golang/prometheus"
	"google.golang.org/grpc/codes"

	"github.com/attested-kms/attested-kms/audit"
	"github.com/attested-kms/attested-kms/keystore"
	kmsv1 "github.com/attested-kms/attested-kms/proto/kms/v1"
)

// auditCheckpointEvery is how many entries the server appends between
// signed checkpoints; Stop signs one more at the head.
const auditCheckpointEvery = 100

// maxAuditField bounds each string the server copies from a request into
// an entry (the log allows 4096 bytes; a longer field would lose the
// entry, and a key set name or kid that long is an attack, not a name).
const maxAuditField = 512

// Auditor appends the server's decisions to the hash-chained audit log:
// every release decision and every audited admin call. A nil *Auditor
// records nothing, for services built without a log (benchmarks).
//
// An entry that cannot be appended does not fail the call it records: the
// decision is already made, and an audit store problem must not turn into
// an outage of releases (fail-open for availability). It is not lost
// silently either: the entry's fields go to the server log at error level
// and kms_audit_failures_total counts it, so alerting can page on the gap.
type Auditor struct {
	log      *audit.Log
	logger   *slog.Logger
	failures *prometheus.CounterVec
	closed   atomic.Bool
}

// openAuditor opens the audit log in its own bucket of the key store's
// bbolt file, signing checkpoints with the key store's audit key.
func openAuditor(ctx context.Context, keys *keystore.Manager, b audit.Backend, logger *slog.Logger, m *Metrics) (*Auditor, error) {
	signer, err := keys.AuditSigner(ctx)
	if err != nil {
		return nil, fmt.Errorf("audit log: %w", err)
	}
	l, err := audit.New(ctx, b, signer, audit.Options{CheckpointEvery: auditCheckpointEvery})
	if err != nil {
		return nil, fmt.Errorf("audit log: %w", err)
	}
	return NewAuditor(l, logger, m), nil
}

// NewAuditor records to l. Failures are logged to logger and counted in
// m's registry (m may be nil).
func NewAuditor(l *audit.Log, logger *slog.Logger, m *Metrics) *Auditor {
	if logger == nil {
		logger = slog.New(slog.DiscardHandler)
	}
	a := &Auditor{log: l, logger: logger, failures: prometheus.NewCounterVec(prometheus.CounterOpts{
		Namespace: metricsNamespace, Name: "audit_failures_total",
		Help: "Audit log writes that failed, by stage (append: the entry is missing from the log; checkpoint: stored but not yet signed).",
	}, []string{"stage"})}
	a.failures.WithLabelValues("append")
	a.failures.WithLabelValues("checkpoint")
	if m != nil {
		m.Registry().MustRegister(a.failures)
	}
	return a
}

// PublicKey is the Ed25519 key that verifies the log's checkpoints.
func (a *Auditor) PublicKey() ed25519.PublicKey {
	if a == nil {
		return nil
	}
	return a.log.PublicKey()
}

// Record appends e. The append outlives the caller's context: a client
// that hangs up must not take the record of its request with it.
func (a *Auditor) Record(ctx context.Context, e audit.Entry) {
	if a == nil {
		return
	}
	err := errors.New("audit log closed")
	if !a.closed.Load() {
		_, err = a.log.Append(context.WithoutCancel(ctx), e)
	}
	switch {
	case err == nil:
	case errors.Is(err, audit.ErrCheckpoint):
		a.failures.WithLabelValues("checkpoint").Inc()
		a.logger.ErrorContext(ctx, "audit: checkpoint not signed", "error", err)
	default:
		a.failures.WithLabelValues("append").Inc()
		a.logger.LogAttrs(ctx, slog.LevelError, "audit: entry not recorded",
			slog.String("kind", string(e.Kind)), slog.String("actor", e.Actor), slog.String("keyset", e.KeySet),
			slog.String("kid", e.KID), slog.String("outcome", string(e.Outcome)), slog.String("reason", e.Reason),
			slog.String("claims_digest", e.ClaimsDigest), slog.Any("details", e.Details), slog.String("error", err.Error()))
	}
}

// close signs a checkpoint at the head, so a stopped server's log is
// covered to its last entry, and refuses later appends (the store is
// about to close). Only the first call does anything.
func (a *Auditor) close(ctx context.Context) {
	if a == nil || a.closed.Swap(true) {
		return
	}
	if _, err := a.log.Checkpoint(ctx); err != nil && !errors.Is(err, audit.ErrEmpty) {
		a.failures.WithLabelValues("checkpoint").Inc()
		a.logger.ErrorContext(ctx, "audit: final checkpoint not signed", "error", err)
	}
}

// release records a release decision. The claims are bound by their
// digest only; the token, nonce and keys never reach the entry.
func (a *Auditor) release(ctx context.Context, rec *releaseRecord, derr *decisionError) {
	if a == nil {
		return
	}
	e := audit.Entry{Kind: audit.KindRelease, Actor: clip(rec.subject), KeySet: clip(rec.keyset), KID: clip(rec.kid),
		Outcome: audit.OutcomeGranted, Details: map[string]string{}}
	if rec.claims != nil {
		d, err := audit.DigestClaims(rec.claims)
		if err != nil {
			a.logger.ErrorContext(ctx, "audit: claims digest", "error", err)
		}
		e.ClaimsDigest = d
	}
	setDetail(e.Details, "platform", rec.platform)
	setDetail(e.Details, "rule", rec.rule)
	setDetail(e.Details, "tenant", rec.tenant)
	if derr != nil {
		// Reason is the stable reason code; the message is the one the
		// caller received, which never holds tokens, nonces or keys.
		e.Outcome, e.Reason = audit.OutcomeDenied, derr.reason
		setDetail(e.Details, "code", derr.code.String())
		setDetail(e.Details, "detail", derr.message)
	}
	a.Record(ctx, e)
}

// adminCallKinds classify the admin calls that change keys, policies or
// KEKs; every other call is an admin_call entry. Each call is one entry,
// whatever its kind, with the call's name in the "call" detail.
var adminCallKinds = map[string]audit.Kind{
	"RotateKeys":            audit.KindRotation,
	"ImportKey":             audit.KindRotation,
	"SetKeyState":           audit.KindStateChange,
	"SetPolicy":             audit.KindPolicyChange,
	"UpdateKeySetSettings":  audit.KindPolicyChange,
	"RollbackPolicy":        audit.KindPolicyChange,
	"RotateKEK":             audit.KindKEK,
	"RotateIntermediateKey": audit.KindKEK,
}

// adminCall records an admin call with the attributes its log line has
// (only non-secret arguments are passed there).
func (a *Auditor) adminCall(ctx context.Context, call string, err error, attrs []slog.Attr) {
	if a == nil {
		return
	}
	e := audit.Entry{Kind: audit.KindAdminCall, Actor: "local-socket", Outcome: audit.OutcomeOK,
		Details: map[string]string{"call": call}}
	if k, ok := adminCallKinds[call]; ok {
		e.Kind = k
	}
	if p, ok := AdminIdentity(ctx); ok {
		e.Actor = clip(p.Subject)
		setDetail(e.Details, "auth", p.Method)
	}
	for _, at := range attrs {
		switch at.Key {
		case "keyset":
			e.KeySet = clip(at.Value.String())
		case "kid":
			e.KID = clip(at.Value.String())
		default:
			setDetail(e.Details, at.Key, at.Value.String())
		}
	}
	if err != nil {
		e.Outcome = audit.OutcomeError
		var d *decisionError
		if errors.As(adminStoreError(err), &d) {
			e.Reason = d.reason
		}
		setDetail(e.Details, "error", err.Error())
	}
	a.Record(ctx, e)
}

func setDetail(m map[string]string, k, v string) {
	if v != "" {
		m[k] = clip(v)
	}
}

// clip makes s fit an entry field: valid UTF-8 (the log refuses anything
// else) and at most maxAuditField bytes, cut at a rune boundary.
func clip(s string) string {
	s = strings.ToValidUTF8(s, "\uFFFD")
	if len(s) <= maxAuditField {
		return s
	}
	n := maxAuditField
	for n > 0 && !utf8.RuneStart(s[n]) {
		n--
	}
	return s[:n]
}

// GetAuditKey implements kmsv1.AdminServer: the audit public key, PKIX
// DER, for auditors verifying an export (kms audit public-key).
func (a *AdminService) GetAuditKey(ctx context.Context, _ *kmsv1.GetAuditKeyRequest) (*kmsv1.GetAuditKeyResponse, error) {
	var der []byte
	var err error
	if pub := a.auditLog.PublicKey(); pub == nil {
		err = refuse(codes.FailedPrecondition, ReasonBadRequest, "this server keeps no audit log")
	} else if der, err = x509.MarshalPKIXPublicKey(pub); err != nil {
		err = refuseErr(codes.Internal, ReasonInternal, err)
	}
	a.audit(ctx, "GetAuditKey", err)
	if err != nil {
		return nil, grpcStatus(err)
	}
	return &kmsv1.GetAuditKeyResponse{PublicKey: der}, nil
}

// keyEvents turns the key store's lifecycle and KEK events into audit
// entries and metrics. The Manager is built before the audit log (which
// needs the Manager's audit key), so the Auditor is attached once it
// exists; events before that (start-up) reach the process log only.
type keyEvents struct {
	metrics *Metrics
	audit   atomic.Pointer[Auditor]
}

// handle is keystore.Options.OnEvent. It runs on the goroutine that made
// the change (Tick, a KEK check, a release) and costs one audit append.
func (k *keyEvents) handle(ev keystore.Event) {
	if ev.Kind == keystore.EventKEKError {
		k.metrics.KEKError(ev.KeySet, KEKErrorClass(ev.Err))
		return
	}
	// Operator actions are audited by the admin API with the operator's
	// identity; auditing their events too would record them twice.
	if ev.Source == keystore.SourceAdmin {
		return
	}
	if e, ok := keyEventEntry(ev); ok {
		k.audit.Load().Record(context.Background(), e)
	}
}

// keyEventEntry maps an event to its audit entry: a key created by the
// rotation leader is a rotation, a scheduled state change a state_change,
// a KEK switched off, unavailable or restored a kek entry.
func keyEventEntry(ev keystore.Event) (audit.Entry, bool) {
	e := audit.Entry{KeySet: clip(ev.KeySet), KID: clip(ev.KID), Outcome: audit.OutcomeOK, Details: map[string]string{}}
	setDetail(e.Details, "source", ev.Source)
	setDetail(e.Details, "detail", ev.Reason)
	setDetail(e.Details, "from", ev.From)
	setDetail(e.Details, "to", ev.To)
	if ev.Version != 0 {
		setDetail(e.Details, "version", strconv.FormatUint(ev.Version, 10))
	}
	switch ev.Kind {
	case keystore.EventKeyCreated:
		e.Kind, e.Actor = audit.KindRotation, "rotation"
	case keystore.EventKeyStateChanged:
		e.Kind, e.Actor = audit.KindStateChange, "rotation"
	case keystore.EventKEKStateChanged:
		e.Kind, e.Actor = audit.KindKEK, "kek-check"
		switch ev.To {
		case keystore.KEKStateDisabled:
			e.Outcome, e.Reason = audit.OutcomeError, ReasonKEKDisabled
			setDetail(e.Details, "event", "switched_off")
		case keystore.KEKStateUnavailable:
			e.Outcome, e.Reason = audit.OutcomeError, ReasonKEKUnavailable
			setDetail(e.Details, "event", "unavailable")
		default:
			setDetail(e.Details, "event", "restored")
		}
	default:
		return audit.Entry{}, false
	}
	return e, true
}
