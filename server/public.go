package server

import (
	"context"
	"encoding/json"
	"errors"
	"log/slog"
	"math"
	"net/http"
	"strconv"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/attested-kms/attested-kms/hpke"
	"github.com/attested-kms/attested-kms/hpke/ohttp"
	"github.com/attested-kms/attested-kms/keystore"
	kmsv1 "github.com/attested-kms/attested-kms/proto/kms/v1"
)

// DefaultKeySet is used when a request names no key set.
const DefaultKeySet = "default"

// maxPublicKeyAge caps Cache-Control so clients refetch at least this
// often even when keys live long, and see a disabled key go away.
const maxPublicKeyAge = time.Hour

// emptyListAge is the cache lifetime of an empty key list.
const emptyListAge = time.Minute

// ListPublicKeys implements kmsv1.KeyReleaseServer. It lists pending and
// active keys: enclaves fetch a pending key before end users encrypt to it.
func (s *ReleaseService) ListPublicKeys(ctx context.Context, req *kmsv1.ListPublicKeysRequest) (*kmsv1.ListPublicKeysResponse, error) {
	name := req.GetKeyset()
	if name == "" {
		name = DefaultKeySet
	}
	keys, err := s.keys.ListKeys(ctx, name)
	if err != nil {
		return nil, grpcStatus(storeError(err))
	}
	resp := &kmsv1.ListPublicKeysResponse{}
	for _, k := range keys {
		if k.State != keystore.StatePending && k.State != keystore.StateActive {
			continue
		}
		resp.Keys = append(resp.Keys, &kmsv1.PublicKey{
			Keyset: name, Kid: k.KID, PublicKey: k.PublicKey, OhttpKeyId: uint32(k.OHTTPKeyID()),
			Suite: k.Suite, State: stateToProto(k.State),
			NotBefore: timestamppb.New(k.Activates), NotAfter: timestamppb.New(k.Expires),
		})
	}
	return resp, nil
}

// PublicHandler serves the end-user endpoints and health checks.
type PublicHandler struct {
	keys  *keystore.Manager
	ready func(context.Context) error
	log   *slog.Logger
	now   func() time.Time
}

// NewPublicHandler builds the HTTP mux. ready reports whether the server
// can serve releases (key sets unsealed, store reachable).
func NewPublicHandler(keys *keystore.Manager, ready func(context.Context) error, log *slog.Logger, now func() time.Time) http.Handler {
	h := &PublicHandler{keys: keys, ready: ready, log: log, now: now}
	mux := http.NewServeMux()
	mux.HandleFunc("GET /v1/public-keys", h.publicKeys)
	mux.HandleFunc("GET /.well-known/ohttp-keys", h.ohttpKeys)
	mux.HandleFunc("GET /healthz", func(w http.ResponseWriter, _ *http.Request) {
		w.Header().Set("Content-Type", "text/plain")
		_, _ = w.Write([]byte("ok\n"))
	})
	mux.HandleFunc("GET /readyz", h.readyz)
	return mux
}

// activeKeys lists the key set's active keys and how long a client may
// cache the list: never past the earliest expiry.
func (h *PublicHandler) activeKeys(w http.ResponseWriter, r *http.Request) ([]*keystore.Key, bool) {
	name := r.URL.Query().Get("keyset")
	if name == "" {
		name = DefaultKeySet
	}
	keys, err := h.keys.ListKeys(r.Context(), name)
	if err != nil {
		d := storeError(err)
		status := http.StatusInternalServerError
		switch d.code {
		case codes.NotFound:
			status = http.StatusNotFound
		case codes.Unavailable:
			status = http.StatusServiceUnavailable
		}
		http.Error(w, d.message, status)
		return nil, false
	}
	now := h.now()
	var active []*keystore.Key
	maxAge := maxPublicKeyAge
	for _, k := range keys {
		// Stored times decide, so a late rotation tick never publishes an
		// expired key.
		if k.State != keystore.StateActive || now.Before(k.Activates) || !now.Before(k.Expires) {
			continue
		}
		// Publish only keys whose sealed private key opens and matches the
		// stored public key (the unseal checks both), so a public key
		// substituted in the store is never handed to end users.
		priv, err := h.keys.PrivateKey(r.Context(), name, k.KID)
		if err != nil {
			h.log.Error("public keys: not publishing a key that does not unseal", "keyset", name, "kid", k.KID, "error", err)
			continue
		}
		clear(priv) // only the check was wanted; do not leave a copy behind
		active = append(active, k)
		if left := k.Expires.Sub(now); left < maxAge {
			maxAge = max(left, 0)
		}
	}
	if len(active) == 0 {
		// Nothing to encrypt to yet: let clients look again soon.
		maxAge = emptyListAge
	}
	w.Header().Set("Cache-Control", "max-age="+strconv.Itoa(int(math.Floor(maxAge.Seconds()))))
	return active, true
}

type publicKeyJSON struct {
	ID  string `json:"id"`
	Key []byte `json:"key"`
}

func (h *PublicHandler) publicKeys(w http.ResponseWriter, r *http.Request) {
	keys, ok := h.activeKeys(w, r)
	if !ok {
		return
	}
	out := struct {
		Keys []publicKeyJSON `json:"keys"`
	}{Keys: []publicKeyJSON{}}
	for _, k := range keys {
		out.Keys = append(out.Keys, publicKeyJSON{ID: k.KID, Key: k.PublicKey})
	}
	w.Header().Set("Content-Type", "application/json")
	if err := json.NewEncoder(w).Encode(out); err != nil {
		h.log.Warn("public keys: writing response", "error", err)
	}
}

func (h *PublicHandler) ohttpKeys(w http.ResponseWriter, r *http.Request) {
	keys, ok := h.activeKeys(w, r)
	if !ok {
		return
	}
	cfgs := make([]ohttp.KeyConfig, 0, len(keys))
	for _, k := range keys {
		cfgs = append(cfgs, ohttp.KeyConfig{
			KeyID: k.OHTTPKeyID(), KEMID: hpke.KEMID, PublicKey: k.PublicKey,
			Algorithms: []ohttp.SymmetricAlgorithm{{KDFID: hpke.KDFID, AEADID: hpke.AEADID}},
		})
	}
	b, err := ohttp.MarshalKeyConfigs(cfgs)
	if err != nil {
		h.log.Error("ohttp keys: encoding", "error", err)
		http.Error(w, "internal error", http.StatusInternalServerError)
		return
	}
	w.Header().Set("Content-Type", "application/ohttp-keys")
	_, _ = w.Write(b)
}

func (h *PublicHandler) readyz(w http.ResponseWriter, r *http.Request) {
	w.Header().Set("Content-Type", "text/plain")
	if err := h.ready(r.Context()); err != nil {
		w.WriteHeader(http.StatusServiceUnavailable)
		msg := "not ready"
		var d *decisionError
		if errors.As(err, &d) {
			msg += ": " + d.message
		}
		_, _ = w.Write([]byte(msg + "\n"))
		return
	}
	_, _ = w.Write([]byte("ready\n"))
}

func stateToProto(s keystore.State) kmsv1.KeyState {
	switch s {
	case keystore.StatePending:
		return kmsv1.KeyState_KEY_STATE_PENDING
	case keystore.StateActive:
		return kmsv1.KeyState_KEY_STATE_ACTIVE
	case keystore.StateRetired:
		return kmsv1.KeyState_KEY_STATE_RETIRED
	case keystore.StateDisabled:
		return kmsv1.KeyState_KEY_STATE_DISABLED
	case keystore.StateDestroyed:
		return kmsv1.KeyState_KEY_STATE_DESTROYED
	}
	return kmsv1.KeyState_KEY_STATE_UNSPECIFIED
}
