package keystore_test

import (
	"context"
	"crypto"
	"crypto/ed25519"
	"encoding/json"
	"testing"
)

func auditSign(t *testing.T, s crypto.Signer, msg []byte) ed25519.PublicKey {
	t.Helper()
	pub, ok := s.Public().(ed25519.PublicKey)
	if !ok {
		t.Fatalf("audit signer's public key is %T", s.Public())
	}
	sig, err := s.Sign(nil, msg, crypto.Hash(0))
	if err != nil {
		t.Fatal(err)
	}
	if !ed25519.Verify(pub, msg, sig) {
		t.Fatal("audit signature does not verify under the signer's public key")
	}
	return pub
}

func TestAuditKeySurvivesRewrapRoot(t *testing.T) {
	ctx := context.Background()
	h := newHEnv(t)
	oldK, newK := newMemKEK(t, "old"), newMemKEK(t, "new")
	m := h.manager(oldK, newK)
	s, err := m.AuditSigner(ctx)
	if err != nil {
		t.Fatal(err)
	}
	before := auditSign(t, s, []byte("checkpoint 1"))

	// Unsealed once: signing again and asking again cost no KEK call.
	unwraps := oldK.unwraps.Load()
	if _, err := m.AuditSigner(ctx); err != nil {
		t.Fatal(err)
	}
	auditSign(t, s, []byte("checkpoint 2"))
	if n := oldK.unwraps.Load() - unwraps; n != 0 {
		t.Fatalf("%d KEK unwraps after the first unseal", n)
	}

	if err := m.RewrapRoot(ctx, newK.URI(), nil); err != nil {
		t.Fatal(err)
	}
	var rec struct {
		Wrapped struct {
			KEKURI string `json:"kek_uri"`
		} `json:"wrapped"`
	}
	raw, _, err := h.store.Metadata(ctx, "audit-key")
	if err != nil {
		t.Fatal(err)
	}
	if err := json.Unmarshal(raw, &rec); err != nil {
		t.Fatal(err)
	}
	if rec.Wrapped.KEKURI != newK.URI() {
		t.Fatalf("audit key still wrapped by %q after RewrapRoot", rec.Wrapped.KEKURI)
	}

	// The old KEK can go: a fresh Manager unseals the same key through the
	// new one alone.
	oldK.disabled.Store(true)
	fresh, err := h.manager(newK).AuditSigner(ctx)
	if err != nil {
		t.Fatalf("audit signer after KEK rotation: %v", err)
	}
	if after := auditSign(t, fresh, []byte("checkpoint 3")); !after.Equal(before) {
		t.Fatal("audit public key changed across KEK rotation")
	}
}

func TestAuditSignerAfterClearCache(t *testing.T) {
	ctx := context.Background()
	h := newHEnv(t)
	root := newMemKEK(t, "root")
	m := h.manager(root)
	s, err := m.AuditSigner(ctx)
	if err != nil {
		t.Fatal(err)
	}
	pub := auditSign(t, s, []byte("a"))
	m.ClearCache()
	unwraps := root.unwraps.Load()
	// The seed was zeroed and dropped: the next Sign unseals it again.
	if got := auditSign(t, s, []byte("b")); !got.Equal(pub) {
		t.Fatal("public key changed after ClearCache")
	}
	if n := root.unwraps.Load() - unwraps; n != 1 {
		t.Fatalf("%d KEK unwraps to sign after ClearCache, want 1", n)
	}
	if _, err := s.Sign(nil, []byte("c"), crypto.SHA256); err == nil {
		t.Fatal("Ed25519ph (SHA-256) accepted")
	}
}
