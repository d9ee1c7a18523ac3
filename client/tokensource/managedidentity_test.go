package tokensource

import (
	"context"
	"encoding/json"
	"errors"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync/atomic"
	"testing"
	"time"
)

const testResource = "api://attested-kms-test"

func TestManagedIdentityRequestShape(t *testing.T) {
	token := makeJWT(t, map[string]any{"aud": testResource, "exp": 4102444800})
	tests := []struct {
		name       string
		opts       ManagedIdentityOptions
		wantParam  string // identity selector expected in the query, "" for none
		wantValue  string
		expiresRaw string // expires_in as IMDS sends it (string) or as look-alikes do (number)
	}{
		{name: "system-assigned", expiresRaw: `"3599"`},
		{name: "client_id", opts: ManagedIdentityOptions{ClientID: "11111111-2222-3333-4444-555555555555"}, wantParam: "client_id", wantValue: "11111111-2222-3333-4444-555555555555", expiresRaw: `3599`},
		{name: "resource id", opts: ManagedIdentityOptions{ResourceID: "/subscriptions/s/resourceGroups/rg/providers/Microsoft.ManagedIdentity/userAssignedIdentities/kms-client"}, wantParam: "msi_res_id", wantValue: "/subscriptions/s/resourceGroups/rg/providers/Microsoft.ManagedIdentity/userAssignedIdentities/kms-client", expiresRaw: `"3599"`},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			var got *http.Request
			srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
				got = r.Clone(context.Background())
				w.Header().Set("Content-Type", "application/json")
				_, _ = w.Write([]byte(`{"access_token":"` + token + `","expires_in":` + tc.expiresRaw +
					`,"expires_on":` + tc.expiresRaw + `,"resource":"` + testResource + `","token_type":"Bearer"}`))
			}))
			defer srv.Close()

			opts := tc.opts
			opts.Resource = testResource
			opts.Endpoint = srv.URL
			mi, err := NewManagedIdentity(opts)
			if err != nil {
				t.Fatal(err)
			}
			tok, err := mi.Token(context.Background())
			if err != nil {
				t.Fatal(err)
			}
			if tok != token {
				t.Errorf("token = %q, want the one the server issued", tok)
			}
			if got.Method != http.MethodGet {
				t.Errorf("method = %s, want GET", got.Method)
			}
			if got.URL.Path != "/metadata/identity/oauth2/token" {
				t.Errorf("path = %q", got.URL.Path)
			}
			if h := got.Header.Get("Metadata"); h != "true" {
				t.Errorf("Metadata header = %q, want true", h)
			}
			q := got.URL.Query()
			if v := q.Get("api-version"); v != "2018-02-01" {
				t.Errorf("api-version = %q", v)
			}
			if v := q.Get("resource"); v != testResource {
				t.Errorf("resource = %q", v)
			}
			for _, p := range []string{"client_id", "msi_res_id", "mi_res_id", "object_id"} {
				want := ""
				if p == tc.wantParam {
					want = tc.wantValue
				}
				if v := q.Get(p); v != want {
					t.Errorf("%s = %q, want %q", p, v, want)
				}
			}
		})
	}
}

func TestManagedIdentityErrorStatus(t *testing.T) {
	secretToken := makeJWT(t, map[string]any{"exp": 4102444800})
	for _, status := range []int{http.StatusBadRequest, http.StatusInternalServerError} {
		t.Run(http.StatusText(status), func(t *testing.T) {
			srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
				w.Header().Set("Content-Type", "application/json")
				w.WriteHeader(status)
				// A misbehaving endpoint that echoes a token in its error
				// and even includes one alongside: neither may reach the
				// error text.
				_ = json.NewEncoder(w).Encode(map[string]string{
					"error":             "invalid_request",
					"error_description": "Identity not found (token " + secretToken + ")\nfake log line",
					"access_token":      secretToken,
				})
			}))
			defer srv.Close()

			mi, err := NewManagedIdentity(ManagedIdentityOptions{Resource: testResource, Endpoint: srv.URL})
			if err != nil {
				t.Fatal(err)
			}
			_, err = mi.Token(context.Background())
			if err == nil {
				t.Fatal("want an error")
			}
			msg := err.Error()
			for _, want := range []string{"managed identity", http.StatusText(status), "invalid_request", "Identity not found"} {
				if !strings.Contains(msg, want) {
					t.Errorf("error %q does not mention %q", msg, want)
				}
			}
			if strings.Contains(msg, secretToken) || strings.Contains(msg, strings.Split(secretToken, ".")[1]) {
				t.Errorf("error leaks the token: %q", msg)
			}
			if strings.Contains(msg, "\n") {
				t.Errorf("error contains a newline from the IdP: %q", msg)
			}
			var herr *HTTPError
			if !errors.As(err, &herr) {
				t.Fatalf("error %T is not an *HTTPError", err)
			}
			if herr.StatusCode != status || herr.Code != "invalid_request" {
				t.Errorf("HTTPError = %+v", herr)
			}
		})
	}
}

func TestManagedIdentityNonJSONError(t *testing.T) {
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.WriteHeader(http.StatusBadGateway)
		_, _ = w.Write([]byte("<html>proxy says no</html>"))
	}))
	defer srv.Close()
	mi, err := NewManagedIdentity(ManagedIdentityOptions{Resource: testResource, Endpoint: srv.URL})
	if err != nil {
		t.Fatal(err)
	}
	_, err = mi.Token(context.Background())
	var herr *HTTPError
	if !errors.As(err, &herr) || herr.StatusCode != http.StatusBadGateway {
		t.Fatalf("err = %v, want HTTPError 502", err)
	}
	if strings.Contains(err.Error(), "proxy says no") {
		t.Errorf("error quotes a non-JSON body: %v", err)
	}
}

func TestManagedIdentityBadSuccessBodies(t *testing.T) {
	tests := map[string]string{
		"not json":        "nope",
		"no token":        `{"token_type":"Bearer"}`,
		"token with nl":   `{"access_token":"abc\ndef"}`,
		"wrong type":      `{"access_token":"abc","token_type":"pop"}`,
		"oversized":       `{"access_token":"` + strings.Repeat("a", maxResponseBytes) + `"}`,
		"number as token": `{"access_token":12}`,
	}
	for name, body := range tests {
		t.Run(name, func(t *testing.T) {
			srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
				_, _ = w.Write([]byte(body))
			}))
			defer srv.Close()
			mi, err := NewManagedIdentity(ManagedIdentityOptions{Resource: testResource, Endpoint: srv.URL})
			if err != nil {
				t.Fatal(err)
			}
			if tok, err := mi.Token(context.Background()); err == nil {
				t.Fatalf("got token %.20q, want an error", tok)
			} else if len(err.Error()) > 300 {
				t.Errorf("error is suspiciously long (%d bytes): does it quote the body?", len(err.Error()))
			}
		})
	}
}

func TestManagedIdentityRefusesRedirect(t *testing.T) {
	var elsewhereHits atomic.Int32
	elsewhere := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		elsewhereHits.Add(1)
		_, _ = w.Write([]byte(`{"access_token":"x"}`))
	}))
	defer elsewhere.Close()
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		http.Redirect(w, r, elsewhere.URL+r.URL.RequestURI(), http.StatusTemporaryRedirect)
	}))
	defer srv.Close()

	// A caller-supplied client that would follow redirects still must not.
	mi, err := NewManagedIdentity(ManagedIdentityOptions{Resource: testResource, Endpoint: srv.URL, HTTPClient: &http.Client{}})
	if err != nil {
		t.Fatal(err)
	}
	_, err = mi.Token(context.Background())
	var herr *HTTPError
	if !errors.As(err, &herr) || herr.StatusCode != http.StatusTemporaryRedirect {
		t.Fatalf("err = %v, want HTTPError 307", err)
	}
	if n := elsewhereHits.Load(); n != 0 {
		t.Errorf("redirect target was contacted %d times", n)
	}
}

func TestManagedIdentityContextDeadline(t *testing.T) {
	release := make(chan struct{})
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		select {
		case <-release:
		case <-r.Context().Done():
		}
	}))
	defer srv.Close()
	defer close(release)

	mi, err := NewManagedIdentity(ManagedIdentityOptions{Resource: testResource, Endpoint: srv.URL})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 50*time.Millisecond)
	defer cancel()
	start := time.Now()
	_, err = mi.Token(ctx)
	if !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("err = %v, want deadline exceeded", err)
	}
	if d := time.Since(start); d > 5*time.Second {
		t.Errorf("took %v to honour a 50ms deadline", d)
	}
}

func TestNewManagedIdentityValidation(t *testing.T) {
	tests := map[string]ManagedIdentityOptions{
		"no resource":       {},
		"both identities":   {Resource: testResource, ClientID: "a", ResourceID: "/b"},
		"bad scheme":        {Resource: testResource, Endpoint: "ftp://169.254.169.254"},
		"no host":           {Resource: testResource, Endpoint: "http://"},
		"query in endpoint": {Resource: testResource, Endpoint: "http://169.254.169.254/?x=1"},
		"userinfo":          {Resource: testResource, Endpoint: "http://u:p@169.254.169.254"},
		"unparseable":       {Resource: testResource, Endpoint: "http://[::1"},
	}
	for name, opts := range tests {
		if _, err := NewManagedIdentity(opts); err == nil {
			t.Errorf("%s: want an error", name)
		}
	}
	mi, err := NewManagedIdentity(ManagedIdentityOptions{Resource: testResource})
	if err != nil {
		t.Fatal(err)
	}
	if want := "http://169.254.169.254/metadata/identity/oauth2/token?"; !strings.HasPrefix(mi.tokenURL, want) {
		t.Errorf("default URL = %q, want prefix %q", mi.tokenURL, want)
	}
}
