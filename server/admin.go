package server

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/attested-kms/attested-kms/keystore"
	"github.com/attested-kms/attested-kms/keystore/kek"
	"github.com/attested-kms/attested-kms/policy"
	kmsv1 "github.com/attested-kms/attested-kms/proto/kms/v1"
)

// AdminService implements kmsv1.AdminServer. In protocol version 1 it is
// reachable only through a Unix socket with mode 0600, so the caller is
// whoever may open that file; every call is logged.
type AdminService struct {
	kmsv1.UnimplementedAdminServer
	keys     *keystore.Manager
	defaults keystore.KeySetSettings
	log      *slog.Logger
	// kekRotated, if set, runs after RotateKEK moved every key set, for
	// what the server seals outside the key store (the nonce secret).
	kekRotated func(ctx context.Context, to kek.Provider) error
	// auditLog, if set, gets an entry for every call audit reports.
	auditLog *Auditor
}

// NewAdminService wraps the key manager. defaults fill the zero fields of
// CreateKeySet settings.
func NewAdminService(keys *keystore.Manager, defaults keystore.KeySetSettings, log *slog.Logger) *AdminService {
	return &AdminService{keys: keys, defaults: defaults, log: log}
}

func (a *AdminService) audit(ctx context.Context, call string, err error, attrs ...slog.Attr) {
	a.auditLog.adminCall(ctx, call, err, attrs)
	attrs = append(attrs, slog.String("call", call))
	// Who called: the network admin listener authenticated a principal;
	// the Unix socket's caller is whoever may open it.
	if p, ok := AdminIdentity(ctx); ok {
		attrs = append(attrs, slog.Any("principal", p))
	} else {
		attrs = append(attrs, slog.String("principal", "local-socket"))
	}
	if err != nil {
		attrs = append(attrs, slog.String("outcome", "error"), slog.String("error", err.Error()))
	} else {
		attrs = append(attrs, slog.String("outcome", "ok"))
	}
	a.log.LogAttrs(ctx, slog.LevelInfo, "admin", attrs...)
}

// CreateKeySet implements kmsv1.AdminServer.
func (a *AdminService) CreateKeySet(ctx context.Context, req *kmsv1.CreateKeySetRequest) (*kmsv1.KeySet, error) {
	ks, err := a.createKeySet(ctx, req)
	a.audit(ctx, "CreateKeySet", err, slog.String("keyset", req.GetName()))
	if err != nil {
		return nil, grpcStatus(err)
	}
	return keySetToProto(ks), nil
}

func (a *AdminService) createKeySet(ctx context.Context, req *kmsv1.CreateKeySetRequest) (*keystore.KeySet, error) {
	if len(req.GetPolicy()) == 0 {
		return nil, refuse(codes.InvalidArgument, ReasonBadRequest, "a release policy is required: a key set without one would release nothing")
	}
	if _, err := policy.Parse(req.GetPolicy()); err != nil {
		return nil, refuseErr(codes.InvalidArgument, ReasonBadRequest, err)
	}
	// The same range check as UpdateKeySetSettings: seconds beyond
	// time.Duration would wrap into a tiny rotation period.
	changes, err := settingsChangesFromProto(req.GetSettings())
	if err != nil {
		return nil, err
	}
	s := a.defaults.Overlay(changes)
	ks, err := a.keys.CreateKeySetWithPolicy(ctx, req.GetName(), s, req.GetPolicy())
	if err != nil {
		return nil, adminStoreError(err)
	}
	return ks, nil
}

// ListKeySets implements kmsv1.AdminServer.
func (a *AdminService) ListKeySets(ctx context.Context, _ *kmsv1.ListKeySetsRequest) (*kmsv1.ListKeySetsResponse, error) {
	sets, err := a.keys.ListKeySets(ctx)
	if err != nil {
		return nil, grpcStatus(adminStoreError(err))
	}
	resp := &kmsv1.ListKeySetsResponse{}
	for _, ks := range sets {
		resp.Keysets = append(resp.Keysets, keySetToProto(ks))
	}
	return resp, nil
}

// UpdateKeySetSettings implements kmsv1.AdminServer: zero fields keep
// the set's value; existing keys keep their times (see
// keystore.Manager.UpdateKeySetSettings).
func (a *AdminService) UpdateKeySetSettings(ctx context.Context, req *kmsv1.UpdateKeySetSettingsRequest) (*kmsv1.KeySet, error) {
	ks, err := a.updateKeySetSettings(ctx, req)
	s := req.GetSettings()
	a.audit(ctx, "UpdateKeySetSettings", err, slog.String("keyset", req.GetKeyset()),
		slog.Int64("rotation_period_seconds", s.GetRotationPeriodSeconds()), slog.Int64("key_lifetime_seconds", s.GetKeyLifetimeSeconds()),
		slog.Int64("pending_lead_seconds", s.GetPendingLeadSeconds()), slog.Int64("retention_seconds", s.GetRetentionSeconds()))
	if err != nil {
		return nil, grpcStatus(err)
	}
	return keySetToProto(ks), nil
}

func (a *AdminService) updateKeySetSettings(ctx context.Context, req *kmsv1.UpdateKeySetSettingsRequest) (*keystore.KeySet, error) {
	changes, err := settingsChangesFromProto(req.GetSettings())
	if err != nil {
		return nil, err
	}
	if changes == (keystore.KeySetSettings{}) {
		return nil, refuse(codes.InvalidArgument, ReasonBadRequest, "no setting to change: give at least one non-zero field")
	}
	ks, err := a.keys.UpdateKeySetSettings(ctx, req.GetKeyset(), changes)
	if errors.Is(err, keystore.ErrConflict) {
		// Another replica changed the key set meanwhile: nothing was
		// written, and the caller may retry.
		return nil, refuseErr(codes.Aborted, ReasonUnavailable, err)
	}
	if err != nil {
		return nil, adminStoreError(err)
	}
	return ks, nil
}

// maxSettingSeconds is the longest duration time.Duration holds, in
// seconds; larger values would overflow into nonsense schedules.
const maxSettingSeconds = int64(1<<63-1) / int64(time.Second)

// settingsChangesFromProto converts an update's fields without filling
// defaults: zero stays zero ("keep"), negative stays negative so that
// validation refuses it.
func settingsChangesFromProto(p *kmsv1.KeySetSettings) (keystore.KeySetSettings, error) {
	var out keystore.KeySetSettings
	for _, f := range []struct {
		name string
		v    int64
		dst  *time.Duration
	}{
		{"rotation_period_seconds", p.GetRotationPeriodSeconds(), &out.RotationPeriod},
		{"key_lifetime_seconds", p.GetKeyLifetimeSeconds(), &out.KeyLifetime},
		{"pending_lead_seconds", p.GetPendingLeadSeconds(), &out.PendingLead},
		{"retention_seconds", p.GetRetentionSeconds(), &out.Retention},
	} {
		if f.v > maxSettingSeconds || f.v < -maxSettingSeconds {
			return out, refuse(codes.InvalidArgument, ReasonBadRequest, "%s %d is out of range", f.name, f.v)
		}
		*f.dst = time.Duration(f.v) * time.Second
	}
	return out, nil
}

// RotateKeys implements kmsv1.AdminServer.
func (a *AdminService) RotateKeys(ctx context.Context, req *kmsv1.RotateKeysRequest) (*kmsv1.KeyInfo, error) {
	k, err := a.keys.Rotate(ctx, req.GetKeyset())
	var kid string
	if k != nil {
		kid = k.KID
	}
	a.audit(ctx, "RotateKeys", err, slog.String("keyset", req.GetKeyset()), slog.String("kid", kid))
	if err != nil {
		return nil, grpcStatus(adminStoreError(err))
	}
	return keyToProto(k), nil
}

// ListKeys implements kmsv1.AdminServer.
func (a *AdminService) ListKeys(ctx context.Context, req *kmsv1.ListKeysRequest) (*kmsv1.ListKeysResponse, error) {
	keys, err := a.keys.ListKeys(ctx, req.GetKeyset())
	if err != nil {
		return nil, grpcStatus(adminStoreError(err))
	}
	resp := &kmsv1.ListKeysResponse{}
	for _, k := range keys {
		resp.Keys = append(resp.Keys, keyToProto(k))
	}
	return resp, nil
}

// GetKey implements kmsv1.AdminServer: one key's metadata, with the
// sealing details ListKeys leaves out (never key material).
func (a *AdminService) GetKey(ctx context.Context, req *kmsv1.GetKeyRequest) (*kmsv1.GetKeyResponse, error) {
	k, err := a.keys.Key(ctx, req.GetKeyset(), req.GetKid())
	if err != nil {
		return nil, grpcStatus(adminStoreError(err))
	}
	resp := &kmsv1.GetKeyResponse{Key: keyToProto(k)}
	if k.State == keystore.StateDisabled {
		resp.HeldState = stateToProto(k.HeldState)
	}
	if !k.Destroyed.IsZero() {
		resp.DestroyedAt = timestamppb.New(k.Destroyed)
	}
	if sk := k.Sealed; sk != nil {
		resp.SealFormat, resp.WrapAlgorithm, resp.KekVersion = sk.Format, sk.Algorithm, sk.KEKVersion
		if sk.Format == keystore.SealFormatV2 {
			resp.IntermediateGeneration = sk.Generation
		}
	}
	return resp, nil
}

// SetKeyState implements kmsv1.AdminServer.
func (a *AdminService) SetKeyState(ctx context.Context, req *kmsv1.SetKeyStateRequest) (*kmsv1.KeyInfo, error) {
	var (
		k   *keystore.Key
		err error
	)
	switch req.GetState() {
	case kmsv1.KeyState_KEY_STATE_DISABLED:
		k, err = a.keys.SetState(ctx, req.GetKeyset(), req.GetKid(), keystore.StateDisabled)
	case kmsv1.KeyState_KEY_STATE_ACTIVE:
		k, err = a.keys.Enable(ctx, req.GetKeyset(), req.GetKid())
	case kmsv1.KeyState_KEY_STATE_DESTROYED:
		k, err = a.keys.SetState(ctx, req.GetKeyset(), req.GetKid(), keystore.StateDestroyed)
	default:
		err = refuse(codes.InvalidArgument, ReasonBadRequest, "state must be DISABLED, ACTIVE (enable) or DESTROYED")
	}
	a.audit(ctx, "SetKeyState", err, slog.String("keyset", req.GetKeyset()), slog.String("kid", req.GetKid()), slog.String("state", req.GetState().String()))
	if err != nil {
		return nil, grpcStatus(adminStoreError(err))
	}
	return keyToProto(k), nil
}

// SetPolicy implements kmsv1.AdminServer.
func (a *AdminService) SetPolicy(ctx context.Context, req *kmsv1.SetPolicyRequest) (*kmsv1.SetPolicyResponse, error) {
	v, err := a.setPolicy(ctx, req)
	a.audit(ctx, "SetPolicy", err, slog.String("keyset", req.GetKeyset()), slog.Int("version", v))
	if err != nil {
		return nil, grpcStatus(err)
	}
	return &kmsv1.SetPolicyResponse{Version: int64(v)}, nil
}

func (a *AdminService) setPolicy(ctx context.Context, req *kmsv1.SetPolicyRequest) (int, error) {
	if _, err := policy.Parse(req.GetPolicy()); err != nil {
		return 0, refuseErr(codes.InvalidArgument, ReasonBadRequest, err)
	}
	v, err := a.keys.SetPolicyAs(ctx, req.GetKeyset(), req.GetPolicy(), adminActor(ctx))
	if err != nil {
		return 0, policyStoreError(err)
	}
	return v, nil
}

// GetPolicy implements kmsv1.AdminServer: the current policy, or the
// version asked for.
func (a *AdminService) GetPolicy(ctx context.Context, req *kmsv1.GetPolicyRequest) (*kmsv1.GetPolicyResponse, error) {
	if req.GetVersion() < 0 {
		return nil, grpcStatus(refuse(codes.InvalidArgument, ReasonBadRequest, "policy version must not be negative"))
	}
	ks, err := a.keys.KeySet(ctx, req.GetKeyset())
	if err != nil {
		return nil, grpcStatus(adminStoreError(err))
	}
	if req.GetVersion() == 0 && ks.PolicyVersion == 0 {
		// A set without a policy answers version 0, as before versions
		// could be asked for.
		return &kmsv1.GetPolicyResponse{}, nil
	}
	v := int(req.GetVersion())
	if v == 0 {
		v = ks.PolicyVersion
	}
	rev, err := ks.PolicyAt(v)
	if err != nil {
		return nil, grpcStatus(policyStoreError(err))
	}
	return &kmsv1.GetPolicyResponse{Policy: rev.YAML, Version: int64(rev.Version), SetAt: timestamppb.New(rev.Set),
		SetBy: rev.SetBy, RollbackOf: int64(rev.RollbackOf)}, nil
}

// GetPolicyHistory implements kmsv1.AdminServer.
func (a *AdminService) GetPolicyHistory(ctx context.Context, req *kmsv1.GetPolicyHistoryRequest) (*kmsv1.GetPolicyHistoryResponse, error) {
	revs, err := a.keys.PolicyHistory(ctx, req.GetKeyset())
	if err != nil {
		return nil, grpcStatus(adminStoreError(err))
	}
	resp := &kmsv1.GetPolicyHistoryResponse{}
	for i, r := range revs {
		resp.Versions = append(resp.Versions, &kmsv1.PolicyVersionInfo{
			Version: int64(r.Version), SetAt: timestamppb.New(r.Set), SetBy: r.SetBy,
			SizeBytes: int64(len(r.YAML)), RollbackOf: int64(r.RollbackOf), Current: i == 0,
		})
	}
	return resp, nil
}

// RollbackPolicy implements kmsv1.AdminServer. It is audited like
// SetPolicy, with the restored version in the entry.
func (a *AdminService) RollbackPolicy(ctx context.Context, req *kmsv1.RollbackPolicyRequest) (*kmsv1.RollbackPolicyResponse, error) {
	v, err := a.rollbackPolicy(ctx, req)
	a.audit(ctx, "RollbackPolicy", err, slog.String("keyset", req.GetKeyset()), slog.Int("version", v),
		slog.Int64("rollback_of", req.GetVersion()))
	if err != nil {
		return nil, grpcStatus(err)
	}
	return &kmsv1.RollbackPolicyResponse{Version: int64(v)}, nil
}

func (a *AdminService) rollbackPolicy(ctx context.Context, req *kmsv1.RollbackPolicyRequest) (int, error) {
	if req.GetVersion() <= 0 {
		return 0, refuse(codes.InvalidArgument, ReasonBadRequest, "a policy version (1 or more) to roll back to is required")
	}
	ks, err := a.keys.KeySet(ctx, req.GetKeyset())
	if err != nil {
		return 0, adminStoreError(err)
	}
	if int(req.GetVersion()) == ks.PolicyVersion {
		return 0, refuse(codes.FailedPrecondition, ReasonBadRequest, "policy version %d is already the current one", ks.PolicyVersion)
	}
	rev, err := ks.PolicyAt(int(req.GetVersion()))
	if err != nil {
		return 0, policyStoreError(err)
	}
	// The old document must still pass today's parser: a policy the
	// release path cannot load would deny everything. Versions never
	// change once written, so what is checked here is what is restored.
	if _, err := policy.Parse(rev.YAML); err != nil {
		return 0, refuseErr(codes.FailedPrecondition, ReasonBadRequest, fmt.Errorf("policy version %d no longer validates: %w", rev.Version, err))
	}
	v, err := a.keys.RollbackPolicy(ctx, req.GetKeyset(), rev.Version, adminActor(ctx))
	if err != nil {
		return 0, policyStoreError(err)
	}
	return v, nil
}

// adminActor names the authenticated admin principal for the policy
// history; empty for the local socket, whose caller is unknown.
func adminActor(ctx context.Context) string {
	if p, ok := AdminIdentity(ctx); ok {
		return clip(p.Subject)
	}
	return ""
}

// policyStoreError is adminStoreError plus the policy history's errors.
func policyStoreError(err error) error {
	switch {
	case errors.Is(err, keystore.ErrPolicyVersionNotFound):
		return refuseErr(codes.NotFound, ReasonBadRequest, err)
	case errors.Is(err, keystore.ErrPolicyHistoryFull):
		return refuseErr(codes.ResourceExhausted, ReasonBadRequest, err)
	case errors.Is(err, keystore.ErrConflict):
		// Another replica changed the key set meanwhile: nothing was
		// written, and the caller may retry.
		return refuseErr(codes.Aborted, ReasonUnavailable, err)
	}
	return adminStoreError(err)
}

func adminStoreError(err error) error {
	var d *decisionError
	if errors.As(err, &d) {
		return d
	}
	switch {
	case errors.Is(err, keystore.ErrAlreadyExists):
		return refuseErr(codes.AlreadyExists, ReasonBadRequest, err)
	case errors.Is(err, keystore.ErrInvalidArgument):
		return refuseErr(codes.InvalidArgument, ReasonBadRequest, err)
	case errors.Is(err, keystore.ErrInvalidTransition):
		return refuseErr(codes.FailedPrecondition, ReasonKeyNotReleasable, err)
	}
	return storeError(err)
}

func keySetToProto(ks *keystore.KeySet) *kmsv1.KeySet {
	return &kmsv1.KeySet{
		Name: ks.Name,
		Settings: &kmsv1.KeySetSettings{
			RotationPeriodSeconds: int64(ks.Settings.RotationPeriod / time.Second),
			KeyLifetimeSeconds:    int64(ks.Settings.KeyLifetime / time.Second),
			PendingLeadSeconds:    int64(ks.Settings.PendingLead / time.Second),
			RetentionSeconds:      int64(ks.Settings.Retention / time.Second),
		},
		PolicyVersion: int64(ks.PolicyVersion),
		CreatedAt:     timestamppb.New(ks.Created),
	}
}

func keyToProto(k *keystore.Key) *kmsv1.KeyInfo {
	return &kmsv1.KeyInfo{
		Keyset: k.KeySet, Kid: k.KID, Version: k.Version, OhttpKeyId: uint32(k.OHTTPKeyID()),
		Suite: k.Suite, PublicKey: k.PublicKey, State: stateToProto(k.State),
		CreatedAt: timestamppb.New(k.Created), ActivatesAt: timestamppb.New(k.Activates),
		ExpiresAt: timestamppb.New(k.Expires), DestroyAfter: timestamppb.New(k.DestroyAfter),
		KekUri: k.KEKURI(),
	}
}
