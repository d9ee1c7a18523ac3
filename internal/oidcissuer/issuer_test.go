package oidcissuer

import (
	"encoding/base64"
	"encoding/json"
	"net/http"
	"strconv"
	"strings"
	"testing"
	"time"
)

func start(t *testing.T, opts Options) *Issuer {
	t.Helper()
	i, err := Start(t.Context(), opts)
	if err != nil {
		t.Fatalf("Start: %v", err)
	}
	t.Cleanup(func() { _ = i.Close() })
	return i
}

func get(t *testing.T, url string, hdr map[string]string) (int, map[string]any) {
	t.Helper()
	req, err := http.NewRequestWithContext(t.Context(), http.MethodGet, url, nil)
	if err != nil {
		t.Fatal(err)
	}
	for k, v := range hdr {
		req.Header.Set(k, v)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatalf("GET %s: %v", url, err)
	}
	defer resp.Body.Close()
	var body map[string]any
	if err := json.NewDecoder(resp.Body).Decode(&body); err != nil {
		t.Fatalf("decoding %s: %v", url, err)
	}
	return resp.StatusCode, body
}

func TestStartRefusesNonLoopback(t *testing.T) {
	if _, err := Start(t.Context(), Options{Addr: "0.0.0.0:0"}); err == nil {
		t.Fatal("Start listened on a non-loopback address")
	}
}

func TestIMDS(t *testing.T) {
	now := time.Date(2026, 3, 1, 12, 0, 0, 0, time.UTC)
	i := start(t, Options{Now: func() time.Time { return now }, TenantID: "tenant-1", ObjectID: "oid-1", AppID: "app-1"})
	base := i.URL() + "/metadata/identity/oauth2/token"
	md := map[string]string{"Metadata": "true"}

	for _, tc := range []struct {
		name  string
		query string
		hdr   map[string]string
	}{
		{"no metadata header", "?api-version=2018-02-01&resource=api://kms", nil},
		{"forwarded", "?api-version=2018-02-01&resource=api://kms", map[string]string{"Metadata": "true", "X-Forwarded-For": "10.0.0.1"}},
		{"no api-version", "?resource=api://kms", md},
		{"bad api-version", "?api-version=2000-01-01&resource=api://kms", md},
		{"no resource", "?api-version=2018-02-01", md},
		{"other identity", "?api-version=2018-02-01&resource=api://kms&client_id=someone", md},
	} {
		t.Run(tc.name, func(t *testing.T) {
			status, body := get(t, base+tc.query, tc.hdr)
			if status != http.StatusBadRequest || body["error"] != "invalid_request" || body["error_description"] == "" {
				t.Fatalf("status %d body %v", status, body)
			}
		})
	}

	status, body := get(t, base+"?api-version=2018-02-01&resource=api%3A%2F%2Fkms&client_id=app-1", md)
	if status != http.StatusOK {
		t.Fatalf("status %d body %v", status, body)
	}
	for k, want := range map[string]string{
		"token_type": "Bearer", "resource": "api://kms", "client_id": "app-1", "expires_in": "3600",
		"expires_on": strconv.FormatInt(now.Add(time.Hour).Unix(), 10), "not_before": strconv.FormatInt(now.Unix(), 10),
	} {
		if body[k] != want {
			t.Errorf("%s = %v, want %q", k, body[k], want)
		}
	}
	tok, _ := body["access_token"].(string)
	parts := strings.Split(tok, ".")
	if len(parts) != 3 {
		t.Fatalf("access_token has %d segments", len(parts))
	}
	payload, err := base64.RawURLEncoding.DecodeString(parts[1])
	if err != nil {
		t.Fatal(err)
	}
	var claims map[string]any
	if err := json.Unmarshal(payload, &claims); err != nil {
		t.Fatal(err)
	}
	for k, want := range map[string]any{
		"iss": i.IssuerURL(), "aud": "api://kms", "tid": "tenant-1", "oid": "oid-1", "sub": "oid-1",
		"appid": "app-1", "ver": "1.0", "xms_mirid": i.Identity().ResourceID,
		"iat": float64(now.Unix()), "nbf": float64(now.Unix()), "exp": float64(now.Add(time.Hour).Unix()),
	} {
		if claims[k] != want {
			t.Errorf("claim %s = %v, want %v", k, claims[k], want)
		}
	}
	if i.IssuerURL() != i.URL()+"/tenant-1/" {
		t.Errorf("IssuerURL = %q", i.IssuerURL())
	}
}

func TestDiscoveryAndKeys(t *testing.T) {
	i := start(t, Options{Form: FormV2, TenantID: "tenant-2"})
	for _, u := range []string{i.DiscoveryURL(), i.IssuerURL() + "/.well-known/openid-configuration"} {
		status, doc := get(t, u, nil)
		if status != http.StatusOK || doc["issuer"] != i.URL()+"/tenant-2/v2.0" || doc["jwks_uri"] != i.JWKSURL() {
			t.Fatalf("%s: status %d doc %v", u, status, doc)
		}
	}
	status, set := get(t, i.JWKSURL(), nil)
	keys, _ := set["keys"].([]any)
	if status != http.StatusOK || len(keys) != 1 {
		t.Fatalf("JWKS status %d: %v", status, set)
	}
	if k := keys[0].(map[string]any); k["kid"] != i.KeyID() || k["kty"] != "RSA" {
		t.Errorf("JWK %v", k)
	}
	if _, err := i.RotateKey(); err != nil {
		t.Fatal(err)
	}
	if _, set = get(t, i.JWKSURL(), nil); len(set["keys"].([]any)) != 2 {
		t.Errorf("after rotation: %v", set)
	}
	if i.JWKSFetches() != 2 || i.DiscoveryFetches() != 2 {
		t.Errorf("counters: jwks %d discovery %d", i.JWKSFetches(), i.DiscoveryFetches())
	}
}

func TestCloseIdempotent(t *testing.T) {
	i := start(t, Options{})
	if err := i.Close(); err != nil {
		t.Fatal(err)
	}
	if err := i.Close(); err != nil {
		t.Fatal(err)
	}
}
