package tokensource

import (
	"context"
	"encoding/json"
	"errors"
	"net/http"
	"net/http/httptest"
	"net/url"
	"os"
	"reflect"
	"strings"
	"sync"
	"testing"
)

const (
	testTenant   = "72f988bf-86f1-41af-91ab-2d7cd011db47"
	testClientID = "aaaaaaaa-bbbb-cccc-dddd-eeeeeeeeeeee"
)

// entraServer is a TLS token endpoint that records each request's path and
// form and answers with token.
type entraServer struct {
	*httptest.Server
	mu    sync.Mutex
	paths []string
	forms []url.Values
	ctype []string
}

func newEntraServer(t *testing.T, handle func(w http.ResponseWriter, form url.Values)) *entraServer {
	t.Helper()
	s := &entraServer{}
	s.Server = httptest.NewTLSServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Method != http.MethodPost {
			http.Error(w, "method", http.StatusMethodNotAllowed)
			return
		}
		if err := r.ParseForm(); err != nil {
			http.Error(w, err.Error(), http.StatusBadRequest)
			return
		}
		s.mu.Lock()
		s.paths = append(s.paths, r.URL.Path)
		s.forms = append(s.forms, r.PostForm)
		s.ctype = append(s.ctype, r.Header.Get("Content-Type"))
		s.mu.Unlock()
		handle(w, r.PostForm)
	}))
	t.Cleanup(s.Close)
	return s
}

func TestWorkloadIdentityFormAndRotation(t *testing.T) {
	issued := makeJWT(t, map[string]any{"aud": testResource, "exp": 4102444800})
	srv := newEntraServer(t, func(w http.ResponseWriter, _ url.Values) {
		w.Header().Set("Content-Type", "application/json")
		_, _ = w.Write([]byte(`{"token_type":"Bearer","expires_in":3599,"ext_expires_in":3599,"access_token":"` + issued + `"}`))
	})
	dir := t.TempDir()
	saToken1 := makeJWT(t, map[string]any{"sub": "system:serviceaccount:ns:sa", "n": 1})
	saToken2 := makeJWT(t, map[string]any{"sub": "system:serviceaccount:ns:sa", "n": 2})
	// kubelet writes the file with a trailing newline in some setups.
	tokenFile := writeFile(t, dir, "token", saToken1+"\n", 0o644)

	wi, err := NewWorkloadIdentity(WorkloadIdentityOptions{
		TenantID:      testTenant,
		ClientID:      testClientID,
		TokenFile:     tokenFile,
		AuthorityHost: srv.URL, // no trailing slash: must still form a correct path
		Resource:      testResource,
		HTTPClient:    srv.Client(),
	})
	if err != nil {
		t.Fatal(err)
	}
	for i, sa := range []string{saToken1, saToken2} {
		if i == 1 {
			// kubelet rotates the projected token in place.
			writeFile(t, dir, "token", saToken2, 0o644)
		}
		tok, err := wi.Token(context.Background())
		if err != nil {
			t.Fatalf("exchange %d: %v", i, err)
		}
		if tok != issued {
			t.Errorf("exchange %d: wrong token returned", i)
		}
		want := url.Values{
			"grant_type":            {"client_credentials"},
			"client_id":             {testClientID},
			"scope":                 {testResource + "/.default"},
			"client_assertion_type": {"urn:ietf:params:oauth:client-assertion-type:jwt-bearer"},
			"client_assertion":      {sa},
		}
		if !reflect.DeepEqual(srv.forms[i], want) {
			t.Errorf("exchange %d: form = %v, want %v", i, srv.forms[i], want)
		}
		if p := srv.paths[i]; p != "/"+testTenant+"/oauth2/v2.0/token" {
			t.Errorf("exchange %d: path = %q", i, p)
		}
		if ct := srv.ctype[i]; ct != "application/x-www-form-urlencoded" {
			t.Errorf("exchange %d: content type = %q", i, ct)
		}
	}
}

func TestWorkloadIdentityErrorDoesNotLeakAssertion(t *testing.T) {
	srv := newEntraServer(t, func(w http.ResponseWriter, form url.Values) {
		w.Header().Set("Content-Type", "application/json")
		w.WriteHeader(http.StatusUnauthorized)
		// Echo the assertion back, as a careless IdP might.
		_ = json.NewEncoder(w).Encode(map[string]any{
			"error":             "invalid_client",
			"error_description": "AADSTS700213: No matching federated identity record found for presented assertion " + form.Get("client_assertion"),
			"error_codes":       []int{700213},
		})
	})
	// An assertion that does not look like a JWT, so only the exact-match
	// redaction can catch it.
	const assertion = "opaque-federated-assertion-SECRET"
	tokenFile := writeFile(t, t.TempDir(), "token", assertion, 0o600)
	wi, err := NewWorkloadIdentity(WorkloadIdentityOptions{
		TenantID: testTenant, ClientID: testClientID, TokenFile: tokenFile,
		AuthorityHost: srv.URL + "/", Resource: testResource, HTTPClient: srv.Client(),
	})
	if err != nil {
		t.Fatal(err)
	}
	_, err = wi.Token(context.Background())
	if err == nil {
		t.Fatal("want an error")
	}
	msg := err.Error()
	for _, want := range []string{"workload identity", "401", "invalid_client", "AADSTS700213"} {
		if !strings.Contains(msg, want) {
			t.Errorf("error %q does not mention %q", msg, want)
		}
	}
	if strings.Contains(msg, "SECRET") {
		t.Errorf("error leaks the client assertion: %q", msg)
	}
	var herr *HTTPError
	if !errors.As(err, &herr) || herr.StatusCode != http.StatusUnauthorized {
		t.Errorf("err = %#v, want *HTTPError 401", err)
	}
}

func TestWorkloadIdentityTokenFileProblems(t *testing.T) {
	srv := newEntraServer(t, func(w http.ResponseWriter, _ url.Values) {
		t.Error("token endpoint contacted without a valid assertion")
	})
	dir := t.TempDir()
	for name, path := range map[string]string{
		"missing": dir + "/absent",
		"empty":   writeFile(t, dir, "empty", " \n", 0o600),
		"dir":     dir,
	} {
		wi, err := NewWorkloadIdentity(WorkloadIdentityOptions{
			TenantID: testTenant, ClientID: testClientID, TokenFile: path,
			AuthorityHost: srv.URL, Resource: testResource, HTTPClient: srv.Client(),
		})
		if err != nil {
			t.Fatal(err)
		}
		if _, err := wi.Token(context.Background()); err == nil {
			t.Errorf("%s: want an error", name)
		} else if !strings.Contains(err.Error(), "federated token") {
			t.Errorf("%s: error %q lacks context", name, err)
		}
	}
}

func TestNewWorkloadIdentityValidation(t *testing.T) {
	valid := WorkloadIdentityOptions{TenantID: testTenant, ClientID: testClientID, TokenFile: "/t", Resource: testResource}
	mod := func(f func(*WorkloadIdentityOptions)) WorkloadIdentityOptions { o := valid; f(&o); return o }
	tests := map[string]WorkloadIdentityOptions{
		"no tenant":        mod(func(o *WorkloadIdentityOptions) { o.TenantID = "" }),
		"tenant traversal": mod(func(o *WorkloadIdentityOptions) { o.TenantID = "../common" }),
		"tenant slash":     mod(func(o *WorkloadIdentityOptions) { o.TenantID = "a/b" }),
		"no client":        mod(func(o *WorkloadIdentityOptions) { o.ClientID = "" }),
		"no file":          mod(func(o *WorkloadIdentityOptions) { o.TokenFile = "" }),
		"no resource":      mod(func(o *WorkloadIdentityOptions) { o.Resource = "" }),
		"http authority":   mod(func(o *WorkloadIdentityOptions) { o.AuthorityHost = "http://login.microsoftonline.com/" }),
		"query authority":  mod(func(o *WorkloadIdentityOptions) { o.AuthorityHost = "https://login.microsoftonline.com/?x" }),
	}
	for name, opts := range tests {
		if _, err := NewWorkloadIdentity(opts); err == nil {
			t.Errorf("%s: want an error", name)
		}
	}
	wi, err := NewWorkloadIdentity(valid)
	if err != nil {
		t.Fatal(err)
	}
	if want := "https://login.microsoftonline.com/" + testTenant + "/oauth2/v2.0/token"; wi.tokenURL != want {
		t.Errorf("default token URL = %q, want %q", wi.tokenURL, want)
	}
}

func TestWorkloadIdentityFromEnv(t *testing.T) {
	t.Setenv("AZURE_TENANT_ID", "")
	t.Setenv("AZURE_CLIENT_ID", testClientID)
	t.Setenv("AZURE_FEDERATED_TOKEN_FILE", "")
	t.Setenv("AZURE_AUTHORITY_HOST", "")
	_, err := WorkloadIdentityFromEnv(testResource)
	if err == nil || !strings.Contains(err.Error(), "AZURE_TENANT_ID") || !strings.Contains(err.Error(), "AZURE_FEDERATED_TOKEN_FILE") ||
		strings.Contains(err.Error(), "AZURE_CLIENT_ID") {
		t.Errorf("err = %v, want it to name exactly the missing variables", err)
	}

	t.Setenv("AZURE_TENANT_ID", testTenant)
	t.Setenv("AZURE_FEDERATED_TOKEN_FILE", "/var/run/secrets/azure/tokens/azure-identity-token")
	wi, err := WorkloadIdentityFromEnv(testResource)
	if err != nil {
		t.Fatal(err)
	}
	if want := "https://login.microsoftonline.com/" + testTenant + "/oauth2/v2.0/token"; wi.tokenURL != want {
		t.Errorf("token URL = %q, want %q", wi.tokenURL, want)
	}

	t.Setenv("AZURE_AUTHORITY_HOST", "https://login.microsoftonline.us/")
	wi, err = WorkloadIdentityFromEnv(testResource)
	if err != nil {
		t.Fatal(err)
	}
	if want := "https://login.microsoftonline.us/" + testTenant + "/oauth2/v2.0/token"; wi.tokenURL != want {
		t.Errorf("token URL = %q, want %q", wi.tokenURL, want)
	}
	if wi.clientID != testClientID || wi.tokenFile != os.Getenv("AZURE_FEDERATED_TOKEN_FILE") {
		t.Errorf("env not applied: %+v", wi)
	}
}
