package token_test

import (
	"crypto/rsa"
	"crypto/x509"
	"encoding/base64"
	"encoding/pem"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/attested-kms/attested-kms/internal/oidcissuer"
	"github.com/attested-kms/attested-kms/token"
)

// FuzzVerify: malformed tokens never panic and are never accepted. The only
// inputs that may verify are the exact valid seeds (the verifier rejects
// non-canonical base64, so no other spelling of them exists).
func FuzzVerify(f *testing.F) {
	e := newFuzzEnv(f)
	valid := map[string]bool{}
	add := func(tok string, ok bool) {
		if ok {
			valid[tok] = true
		}
		f.Add(tok)
	}
	must := func(tok string, err error) string {
		if err != nil {
			f.Fatal(err)
		}
		return tok
	}
	// Valid seeds are deterministic (fixed claims, clock, keys; RS256 is
	// deterministic), so every fuzz process agrees on which tokens are valid.
	fixed := func(iss *oidcissuer.Issuer, aud, appClaim string) map[string]any {
		mi := iss.Identity()
		return map[string]any{"aud": aud, "sub": mi.ObjectID, "oid": mi.ObjectID, "tid": mi.TenantID,
			appClaim: mi.AppID, "xms_mirid": mi.ResourceID, "idtyp": "app"}
	}
	add(must(e.v1.Mint(fixed(e.v1, audV1, "appid"))), true)
	add(must(e.v2.Mint(fixed(e.v2, audV2, "azp"))), true)
	add(must(e.v1.MintManagedIdentity(audV1, oidcissuer.WithAlgNone())), false)
	add(must(e.v1.MintManagedIdentity(audV1, oidcissuer.WithHS256PublicKey())), false)
	add(must(e.v1.MintManagedIdentity(audV1, oidcissuer.WithUnknownKey())), false)
	add(must(e.v1.MintManagedIdentity(audV1, oidcissuer.WithExpired())), false)
	add(must(e.v1.MintManagedIdentity(audV1, oidcissuer.WithAlg("RS384"))), false)
	add(must(e.v1.MintManagedIdentity("api://wrong")), false)
	b64 := base64.RawURLEncoding.EncodeToString
	add(b64([]byte(`{"alg":"RS256","kid":"x"}`))+"."+b64([]byte(`{"iss":1}`))+".AAAA", false)
	add("", false)
	add("...", false)
	add("a.b.c.d.e", false)

	// Warm the key sets so fuzzing exercises signature checks, not fetches.
	for tok := range valid {
		if _, err := e.ver.Verify(f.Context(), tok); err != nil {
			f.Fatalf("seed does not verify: %v", err)
		}
	}

	f.Fuzz(func(t *testing.T, raw string) {
		id, err := e.ver.Verify(t.Context(), raw)
		if err == nil {
			if !valid[raw] {
				t.Fatalf("accepted a token that was never minted")
			}
			if id == nil {
				t.Fatal("nil identity without error")
			}
			return
		}
		if id != nil {
			t.Fatal("identity returned with an error")
		}
		var te *token.Error
		if !errors.As(err, &te) || !strings.HasPrefix(string(te.Reason), "TOKEN_") {
			t.Fatalf("untyped error %T: %v", err, err)
		}
		checkNoLeak(t, err, raw)
	})
}

// newFuzzEnv is newEnv with fixed keys and port-independent iss values.
// Fuzz workers are separate processes that each run the setup but receive
// inputs from the coordinator, so a seed token verifies in a worker only if
// every process signs with the same keys under the same iss.
func newFuzzEnv(tb testing.TB) *env {
	tb.Helper()
	e := &env{clock: &clock{now: epoch}}
	unpublished := loadKey(tb, "unpublished")
	e.v1 = startIssuer(tb, oidcissuer.Options{Form: oidcissuer.FormV1, Now: e.clock.Now,
		Issuer: "https://sts.windows.net/72f988bf-86f1-41af-91ab-2d7cd011db47/",
		Key:    loadKey(tb, "v1"), UnpublishedKey: unpublished})
	e.v2 = startIssuer(tb, oidcissuer.Options{Form: oidcissuer.FormV2, Now: e.clock.Now,
		Issuer: "https://login.microsoftonline.com/0d1e2f3a-4b5c-6d7e-8f90-a1b2c3d4e5f6/v2.0",
		Key:    loadKey(tb, "v2"), UnpublishedKey: unpublished})
	e.ver = newVerifier(tb, token.Config{
		Issuers: []token.IssuerConfig{
			{Issuer: e.v1.IssuerURL(), Discovery: e.v1.URL(), Audiences: []string{audV1}},
			{Issuer: e.v2.IssuerURL(), JWKSURL: e.v2.JWKSURL(), Audiences: []string{audV2}},
		},
		Now: e.clock.Now,
	})
	return e
}

func loadKey(tb testing.TB, name string) *rsa.PrivateKey {
	tb.Helper()
	b, err := os.ReadFile(filepath.Join("testdata", "test-key-"+name+".pem"))
	if err != nil {
		tb.Fatal(err)
	}
	blk, _ := pem.Decode(b)
	if blk == nil {
		tb.Fatalf("test key %s: no PEM block", name)
	}
	k, err := x509.ParsePKCS8PrivateKey(blk.Bytes)
	if err != nil {
		tb.Fatalf("test key %s: %v", name, err)
	}
	rk, ok := k.(*rsa.PrivateKey)
	if !ok {
		tb.Fatalf("test key %s is a %T", name, k)
	}
	return rk
}
