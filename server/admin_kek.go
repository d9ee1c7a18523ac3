package server

import (
	"context"
	"log/slog"

	"google.golang.org/grpc/codes"
	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/attested-kms/attested-kms/keystore"
	"github.com/attested-kms/attested-kms/keystore/kek"
	"github.com/attested-kms/attested-kms/keystore/kek/providers"
	kmsv1 "github.com/attested-kms/attested-kms/proto/kms/v1"
)

// ImportAlgorithm names the BYOK blob format GetImportKey announces.
const ImportAlgorithm = "RSA_AES_KEY_WRAP_SHA_256"

// maxImportBlob bounds an import blob: an RSA-4096 OAEP block plus the
// wrapped 32-byte key is well under 1 KiB.
const maxImportBlob = 4 << 10

// GetKEKStatus implements kmsv1.AdminServer.
func (a *AdminService) GetKEKStatus(ctx context.Context, _ *kmsv1.GetKEKStatusRequest) (*kmsv1.GetKEKStatusResponse, error) {
	st, err := a.keys.KEKStatus(ctx)
	if err != nil {
		return nil, grpcStatus(adminStoreError(err))
	}
	return &kmsv1.GetKEKStatusResponse{Keysets: kekStatusToProto(st)}, nil
}

// RotateKEK implements kmsv1.AdminServer.
func (a *AdminService) RotateKEK(ctx context.Context, req *kmsv1.RotateKEKRequest) (*kmsv1.RotateKEKResponse, error) {
	var done []string
	var err error
	to := providers.DisplayURI(req.GetToUri())
	switch {
	case req.GetToUri() == "":
		err = refuse(codes.InvalidArgument, ReasonBadRequest, "to_uri is required")
	case providers.HasInlineSecret(req.GetToUri()):
		// It would reach the log and the audit chain, which keeps it for
		// good: the PIN must come from a file the server reads.
		err = refuse(codes.InvalidArgument, ReasonBadRequest, "to_uri carries a PIN (pin-value): use pin-source=file:... instead")
	default:
		err = a.keys.RewrapRoot(ctx, req.GetToUri(), func(keyset string) {
			done = append(done, keyset)
			a.log.InfoContext(ctx, "kek rotation: key set re-wrapped", "keyset", keyset, "to", to)
		})
		if err == nil && a.kekRotated != nil {
			var to kek.Provider
			if to, err = a.keys.KEK(ctx, req.GetToUri()); err == nil {
				err = a.kekRotated(ctx, to)
			}
		}
	}
	a.audit(ctx, "RotateKEK", err, slog.String("to", to), slog.Int("rewrapped", len(done)))
	if err != nil {
		return nil, grpcStatus(adminStoreError(err))
	}
	st, err := a.keys.KEKStatus(ctx)
	if err != nil {
		return nil, grpcStatus(adminStoreError(err))
	}
	return &kmsv1.RotateKEKResponse{Rewrapped: done, Keysets: kekStatusToProto(st)}, nil
}

// RotateIntermediateKey implements kmsv1.AdminServer.
func (a *AdminService) RotateIntermediateKey(ctx context.Context, req *kmsv1.RotateIntermediateKeyRequest) (*kmsv1.KEKStatus, error) {
	err := a.keys.RotateIntermediate(ctx, req.GetKeyset())
	a.audit(ctx, "RotateIntermediateKey", err, slog.String("keyset", req.GetKeyset()))
	if err != nil {
		return nil, grpcStatus(adminStoreError(err))
	}
	st, err := a.keys.KEKStatus(ctx)
	if err != nil {
		return nil, grpcStatus(adminStoreError(err))
	}
	for _, s := range kekStatusToProto(st) {
		if s.GetKeyset() == req.GetKeyset() {
			return s, nil
		}
	}
	return nil, grpcStatus(refuse(codes.NotFound, ReasonKeySetNotFound, "key set %q not found", req.GetKeyset()))
}

// GetImportKey implements kmsv1.AdminServer.
func (a *AdminService) GetImportKey(ctx context.Context, _ *kmsv1.GetImportKeyRequest) (*kmsv1.GetImportKeyResponse, error) {
	pub, err := a.keys.ImportPublicKey(ctx)
	a.audit(ctx, "GetImportKey", err)
	if err != nil {
		return nil, grpcStatus(adminStoreError(err))
	}
	return &kmsv1.GetImportKeyResponse{PublicKey: pub, Algorithm: ImportAlgorithm}, nil
}

// ImportKey implements kmsv1.AdminServer.
func (a *AdminService) ImportKey(ctx context.Context, req *kmsv1.ImportKeyRequest) (*kmsv1.KeyInfo, error) {
	var k *keystore.Key
	var err error
	if n := len(req.GetWrappedKey()); n == 0 || n > maxImportBlob {
		err = refuse(codes.InvalidArgument, ReasonBadRequest, "wrapped_key is %d bytes; want an RSA_AES_KEY_WRAP blob of at most %d", n, maxImportBlob)
	} else {
		k, err = a.keys.ImportWrapped(ctx, req.GetKeyset(), req.GetWrappedKey())
	}
	attrs := []slog.Attr{slog.String("keyset", req.GetKeyset())}
	if k != nil {
		attrs = append(attrs, slog.String("kid", k.KID), slog.Uint64("version", k.Version))
	}
	a.audit(ctx, "ImportKey", err, attrs...)
	if err != nil {
		return nil, grpcStatus(adminStoreError(err))
	}
	return keyToProto(k), nil
}

func kekStatusToProto(st []keystore.KEKStatus) []*kmsv1.KEKStatus {
	out := make([]*kmsv1.KEKStatus, 0, len(st))
	for _, s := range st {
		p := &kmsv1.KEKStatus{
			Keyset: s.KeySet, KekUri: s.KEKURI, KekVersion: s.KEKVersion, Algorithm: s.Algorithm,
			Generation: s.Generation, State: s.State, Error: s.Error,
		}
		if !s.LastChecked.IsZero() {
			p.LastChecked = timestamppb.New(s.LastChecked)
		}
		if !s.LastOK.IsZero() {
			p.LastOk = timestamppb.New(s.LastOK)
		}
		out = append(out, p)
	}
	return out
}
