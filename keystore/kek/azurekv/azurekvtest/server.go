// Package azurekvtest is a loopback Azure Key Vault / Managed HSM that
// speaks the keys data-plane REST protocol (wrapkey, unwrapkey, get key)
// over HTTPS with Key Vault's bearer challenge, for tests that drive the
// real azkeys client through the azurekv provider.
//
// It models what the KMS must react to: key versions (RSA-OAEP-256 under
// real RSA keys, A256KW under real AES keys, so tampering and wrong
// versions fail as on the service), per-version enabled attributes, soft
// deletion (404 KeyNotFound) and recovery, access revoked from the KMS
// identity (403 ForbiddenByPolicy), key operations not permitted on the key
// (403 KeyOperationForbidden), throttling (429 with Retry-After) and
// outages (503, connection reset, or a server that never answers).
//
// Vault hosts are the real names (for example kms.vault.azure.net and
// kms.managedhsm.azure.net); Server.Client routes them to the loopback
// listener and trusts the server's throwaway CA, so the SDK's challenge
// resource verification stays on.
package azurekvtest

import (
	"context"
	"crypto/rand"
	"crypto/rsa"
	"crypto/sha256"
	"crypto/tls"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"net"
	"net/http"
	"net/http/httptest"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/Azure/azure-sdk-for-go/sdk/azcore"
	"github.com/Azure/azure-sdk-for-go/sdk/azcore/policy"

	"github.com/attested-kms/attested-kms/keystore/kek/azurekv"
	"github.com/attested-kms/attested-kms/keystore/kek/kektest"
)

var (
	_ kektest.Network = (*Server)(nil)
	_ kektest.Owner   = (*Key)(nil)
	_ kektest.Deleter = (*Key)(nil)
)

// Tenant is the tenant the fake's challenges name.
const Tenant = "72f988bf-86f1-41af-91ab-2d7cd011db47"

// KeyType is a key's JSON Web Key type.
type KeyType string

// Key types the fake creates.
const (
	KeyTypeRSA    KeyType = "RSA"     // software-protected RSA (vault)
	KeyTypeRSAHSM KeyType = "RSA-HSM" // HSM-protected RSA (premium vault or Managed HSM)
	KeyTypeOctHSM KeyType = "oct-HSM" // AES-256 (Managed HSM only)
)

// OutageMode is how an outage shows.
type OutageMode int

const (
	// Outage503 answers 503 Service Unavailable.
	Outage503 OutageMode = iota
	// OutageReset closes the connection without an answer.
	OutageReset
	// OutageHang never answers (until the client gives up or the server
	// closes).
	OutageHang
)

// Operations, as named in access policies and key_ops.
const (
	OpWrapKey   = "wrapKey"
	OpUnwrapKey = "unwrapKey"
	OpGet       = "get"
)

const (
	vaultSuffix = ".vault.azure.net"
	hsmSuffix   = ".managedhsm.azure.net"
)

// Server is the fake service. Its controls are safe for concurrent use.
type Server struct {
	ts      *httptest.Server
	pki     *testPKI
	cred    *Credential
	closing chan struct{}
	once    sync.Once

	mu         sync.Mutex
	keys       map[string]*Key // host + "/" + lower-case name
	outage     bool
	outageMode OutageMode
	throttle   int
	retryAfter int
	calls      map[string]int
	// challengeResource, if set, replaces the resource the bearer
	// challenge names (to test the client's resource verification).
	challengeResource string
}

// NewServer starts a fake; it is closed when the test ends.
func NewServer(t testing.TB) *Server {
	t.Helper()
	pki, err := newTestPKI()
	if err != nil {
		t.Fatalf("azurekvtest: %v", err)
	}
	s := &Server{
		pki:        pki,
		cred:       newCredential(),
		closing:    make(chan struct{}),
		keys:       make(map[string]*Key),
		retryAfter: 1,
		calls:      make(map[string]int),
	}
	s.ts = httptest.NewUnstartedServer(http.HandlerFunc(s.serveHTTP))
	s.ts.TLS = &tls.Config{Certificates: []tls.Certificate{pki.cert}, MinVersion: tls.VersionTLS12}
	s.ts.StartTLS()
	t.Cleanup(s.Close)
	return s
}

// Close stops the server; later calls fail with connection refused.
func (s *Server) Close() {
	s.once.Do(func() {
		close(s.closing)
		s.ts.Close()
	})
}

// Client returns an HTTP client that sends requests for any
// *.vault.azure.net or *.managedhsm.azure.net host to this server and
// trusts its CA (and nothing else).
func (s *Server) Client() *http.Client {
	addr := s.ts.Listener.Addr().String()
	var d net.Dialer
	return &http.Client{Transport: &http.Transport{
		TLSClientConfig: &tls.Config{RootCAs: s.pki.pool, MinVersion: tls.VersionTLS12},
		DialContext: func(ctx context.Context, network, hostport string) (net.Conn, error) {
			host, _, err := net.SplitHostPort(hostport)
			if err != nil {
				return nil, err
			}
			if !strings.HasSuffix(host, vaultSuffix) && !strings.HasSuffix(host, hsmSuffix) {
				return nil, fmt.Errorf("azurekvtest: no route to %s", host)
			}
			return d.DialContext(ctx, network, addr)
		},
		// Keep connection churn small and failures quick.
		MaxIdleConnsPerHost: 16,
		TLSHandshakeTimeout: 5 * time.Second,
	}}
}

// Credential returns the token issuer the server trusts.
func (s *Server) Credential() *Credential { return s.cred }

// Options returns provider options wired to this server, with quick
// retries so throttling and outage tests stay fast.
func (s *Server) Options() *azurekv.Options {
	return &azurekv.Options{
		Credential: s.cred,
		ClientOptions: azcore.ClientOptions{
			Transport: s.Client(),
			Retry: policy.RetryOptions{
				MaxRetries:    2,
				RetryDelay:    5 * time.Millisecond,
				MaxRetryDelay: 50 * time.Millisecond,
				TryTimeout:    5 * time.Second,
			},
		},
		Timeout: 10 * time.Second,
	}
}

// Outage makes every request fail, in the current OutageMode, while on
// (kektest.Network).
func (s *Server) Outage(t testing.TB, on bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.outage = on
}

// SetOutageMode chooses how Outage shows.
func (s *Server) SetOutageMode(m OutageMode) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.outageMode = m
}

// Throttle answers the next n authenticated requests with 429
// (kektest.Network); 0 stops throttling.
func (s *Server) Throttle(t testing.TB, n int) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.throttle = n
}

// SetRetryAfter sets the Retry-After seconds sent with 429 (default 1).
func (s *Server) SetRetryAfter(seconds int) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.retryAfter = seconds
}

// SetChallengeResource makes the bearer challenge name resource instead of
// the service's own ("" restores it), as a server impersonating a vault
// would to obtain a token for another audience.
func (s *Server) SetChallengeResource(resource string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.challengeResource = resource
}

// Calls reports how many authenticated requests reached an operation
// ("wrapkey", "unwrapkey", "get").
func (s *Server) Calls(op string) int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.calls[op]
}

// CreateKey creates a key with one version. host is the vault or Managed
// HSM host, e.g. "kms.vault.azure.net".
func (s *Server) CreateKey(t testing.TB, host, name string, kty KeyType) *Key {
	t.Helper()
	host = strings.ToLower(host)
	hsm := strings.HasSuffix(host, hsmSuffix)
	if !hsm && !strings.HasSuffix(host, vaultSuffix) {
		t.Fatalf("azurekvtest: host %q is neither a vault nor a Managed HSM", host)
	}
	if kty == KeyTypeOctHSM && !hsm {
		t.Fatalf("azurekvtest: %s keys live only in a Managed HSM", kty)
	}
	k := &Key{s: s, host: host, name: name, kty: kty, hsm: hsm, denied: map[string]bool{},
		ops: []string{"encrypt", "decrypt", OpWrapKey, OpUnwrapKey}}
	s.mu.Lock()
	defer s.mu.Unlock()
	if _, ok := s.keys[k.id()]; ok {
		t.Fatalf("azurekvtest: key %s already exists", k.id())
	}
	if err := k.addVersionLocked(); err != nil {
		t.Fatalf("azurekvtest: %v", err)
	}
	s.keys[k.id()] = k
	return k
}

// Key is a key in the fake. Its methods are the key owner's controls.
type Key struct {
	s          *Server
	host, name string
	kty        KeyType
	hsm        bool
	versions   []*keyVersion // guarded by s.mu; last is current
	deleted    bool
	denied     map[string]bool
	ops        []string
}

type keyVersion struct {
	id      string
	rsa     *rsa.PrivateKey
	aes     []byte
	enabled bool
	created time.Time
}

func (k *Key) id() string { return k.host + "/" + strings.ToLower(k.name) }

func (k *Key) addVersionLocked() error {
	b := make([]byte, 16)
	if _, err := rand.Read(b); err != nil {
		return err
	}
	v := &keyVersion{id: hex.EncodeToString(b), enabled: true, created: time.Now()}
	if k.kty == KeyTypeOctHSM {
		v.aes = make([]byte, 32)
		if _, err := rand.Read(v.aes); err != nil {
			return err
		}
	} else {
		key, err := rsa.GenerateKey(rand.Reader, 2048)
		if err != nil {
			return err
		}
		v.rsa = key
	}
	k.versions = append(k.versions, v)
	return nil
}

// URI is the provider URI of the key, without a version.
func (k *Key) URI() string {
	scheme := azurekv.SchemeKeyVault
	if k.hsm {
		scheme = azurekv.SchemeManagedHSM
	}
	return scheme + "://" + k.host + "/keys/" + k.name
}

// Rotate adds a new current version and returns its id.
func (k *Key) Rotate(t testing.TB) string {
	t.Helper()
	k.s.mu.Lock()
	defer k.s.mu.Unlock()
	if err := k.addVersionLocked(); err != nil {
		t.Fatalf("azurekvtest: rotate: %v", err)
	}
	return k.versions[len(k.versions)-1].id
}

// Versions lists version ids, oldest first.
func (k *Key) Versions() []string {
	k.s.mu.Lock()
	defer k.s.mu.Unlock()
	ids := make([]string, len(k.versions))
	for i, v := range k.versions {
		ids[i] = v.id
	}
	return ids
}

// Disable sets enabled=false on every version (kektest.Owner). In Key
// Vault the enabled attribute is per version; an owner switching a key off
// must disable every version that wrapped data.
func (k *Key) Disable(t testing.TB) { k.setEnabled("", false) }

// Enable sets enabled=true on every version (kektest.Owner).
func (k *Key) Enable(t testing.TB) { k.setEnabled("", true) }

// SetVersionEnabled sets one version's enabled attribute.
func (k *Key) SetVersionEnabled(t testing.TB, version string, enabled bool) {
	t.Helper()
	if !k.setEnabled(version, enabled) {
		t.Fatalf("azurekvtest: no version %s", version)
	}
}

func (k *Key) setEnabled(version string, enabled bool) bool {
	k.s.mu.Lock()
	defer k.s.mu.Unlock()
	found := false
	for _, v := range k.versions {
		if version == "" || v.id == version {
			v.enabled = enabled
			found = true
		}
	}
	return found
}

// Delete soft-deletes the key (kektest.Deleter): every operation answers
// 404 KeyNotFound until Restore.
func (k *Key) Delete(t testing.TB) { k.setDeleted(true) }

// Restore recovers the soft-deleted key (kektest.Deleter).
func (k *Key) Restore(t testing.TB) { k.setDeleted(false) }

func (k *Key) setDeleted(d bool) {
	k.s.mu.Lock()
	defer k.s.mu.Unlock()
	k.deleted = d
}

// Deny removes operations (OpWrapKey, OpUnwrapKey, OpGet) from the KMS
// identity's access policy / role assignment: 403 ForbiddenByPolicy.
func (k *Key) Deny(t testing.TB, ops ...string) {
	k.s.mu.Lock()
	defer k.s.mu.Unlock()
	for _, op := range ops {
		k.denied[op] = true
	}
}

// Allow grants operations back.
func (k *Key) Allow(t testing.TB, ops ...string) {
	k.s.mu.Lock()
	defer k.s.mu.Unlock()
	for _, op := range ops {
		delete(k.denied, op)
	}
}

// SetKeyOps sets the key's permitted operations (key_ops); an operation
// not listed answers 403 KeyOperationForbidden.
func (k *Key) SetKeyOps(t testing.TB, ops ...string) {
	k.s.mu.Lock()
	defer k.s.mu.Unlock()
	k.ops = append([]string(nil), ops...)
}

// AccessOwner is an owner whose off switch revokes the KMS identity's
// wrap/unwrap permissions instead of disabling the key.
func (k *Key) AccessOwner() kektest.Owner {
	return accessOwner{k}
}

type accessOwner struct{ k *Key }

func (a accessOwner) Disable(t testing.TB) { a.k.Deny(t, OpWrapKey, OpUnwrapKey, OpGet) }
func (a accessOwner) Enable(t testing.TB)  { a.k.Allow(t, OpWrapKey, OpUnwrapKey, OpGet) }

// ---- wire protocol ----

type kvError struct {
	Error kvErrorBody `json:"error"`
}

type kvErrorBody struct {
	Code       string     `json:"code"`
	Message    string     `json:"message"`
	InnerError *innerCode `json:"innererror,omitempty"`
}

type innerCode struct {
	Code string `json:"code"`
}

func writeJSON(w http.ResponseWriter, status int, v any) {
	w.Header().Set("Content-Type", "application/json; charset=utf-8")
	w.Header().Set("x-ms-keyvault-service-version", "1.9.0.0")
	w.WriteHeader(status)
	_ = json.NewEncoder(w).Encode(v)
}

func writeError(w http.ResponseWriter, status int, code, inner, msg string) {
	e := kvError{Error: kvErrorBody{Code: code, Message: msg}}
	if inner != "" {
		e.Error.InnerError = &innerCode{Code: inner}
	}
	writeJSON(w, status, e)
}

func resourceOf(host string) string {
	if strings.HasSuffix(host, hsmSuffix) {
		return "https://managedhsm.azure.net"
	}
	return "https://vault.azure.net"
}

func (s *Server) serveHTTP(w http.ResponseWriter, r *http.Request) {
	host := strings.ToLower(r.Host)
	if h, _, err := net.SplitHostPort(host); err == nil {
		host = h
	}

	s.mu.Lock()
	outage, mode, resource := s.outage, s.outageMode, s.challengeResource
	s.mu.Unlock()
	if resource == "" {
		resource = resourceOf(host)
	}
	if outage {
		switch mode {
		case OutageReset:
			if hj, ok := w.(http.Hijacker); ok {
				if conn, _, err := hj.Hijack(); err == nil {
					conn.Close()
					return
				}
			}
			panic(http.ErrAbortHandler)
		case OutageHang:
			select {
			case <-r.Context().Done():
			case <-s.closing:
			}
			return
		default:
			writeError(w, http.StatusServiceUnavailable, "ServiceUnavailable", "", "The service is temporarily unavailable. Please retry.")
			return
		}
	}

	if r.URL.Query().Get("api-version") == "" {
		writeError(w, http.StatusBadRequest, "BadParameter", "", "The 'api-version' query parameter is missing.")
		return
	}

	// Bearer challenge: a request without a valid token for this
	// service's audience gets 401 naming the tenant and resource.
	challenge := func(msg string) {
		w.Header().Set("WWW-Authenticate", fmt.Sprintf(`Bearer authorization="https://login.microsoftonline.com/%s", resource="%s"`, Tenant, resource))
		writeError(w, http.StatusUnauthorized, "Unauthorized", "", msg)
	}
	auth := r.Header.Get("Authorization")
	if auth == "" {
		challenge("AKV10000: Request is missing a Bearer or PoP token.")
		return
	}
	tok, ok := strings.CutPrefix(auth, "Bearer ")
	grant, known := s.cred.lookup(tok)
	if !ok || !known {
		challenge("AKV10022: Invalid token.")
		return
	}
	if grant.scope != resourceOf(host)+"/.default" {
		challenge("AKV10022: Invalid audience.")
		return
	}
	if grant.tenant != Tenant {
		challenge("AKV10032: Invalid issuer.")
		return
	}

	// Routes: /keys/{name}[/{version}] (GET) and
	// /keys/{name}[/{version}]/{wrapkey|unwrapkey} (POST).
	parts := strings.Split(strings.Trim(r.URL.Path, "/"), "/")
	if len(parts) < 2 || len(parts) > 4 || parts[0] != "keys" {
		writeError(w, http.StatusNotFound, "NotFound", "", "Not found.")
		return
	}
	op, version := "get", ""
	switch last := parts[len(parts)-1]; {
	case len(parts) >= 3 && (last == "wrapkey" || last == "unwrapkey"):
		op = last
		if len(parts) == 4 {
			version = parts[2]
		}
	case len(parts) <= 3:
		if len(parts) == 3 {
			version = parts[2]
		}
	default:
		writeError(w, http.StatusNotFound, "NotFound", "", "Not found.")
		return
	}
	wantMethod := http.MethodPost
	if op == "get" {
		wantMethod = http.MethodGet
	}
	if r.Method != wantMethod {
		writeError(w, http.StatusMethodNotAllowed, "MethodNotAllowed", "", "Method not allowed.")
		return
	}
	name := parts[1]

	s.mu.Lock()
	defer s.mu.Unlock()
	s.calls[op]++
	if s.throttle > 0 {
		s.throttle--
		w.Header().Set("Retry-After", strconv.Itoa(s.retryAfter))
		writeError(w, http.StatusTooManyRequests, "Throttled", "", "Request was not processed because too many requests were received. Reason: A1")
		return
	}
	k := s.keys[host+"/"+strings.ToLower(name)]
	permission := map[string]string{"get": OpGet, "wrapkey": OpWrapKey, "unwrapkey": OpUnwrapKey}[op]
	if k != nil && k.denied[permission] {
		writeError(w, http.StatusForbidden, "Forbidden", "ForbiddenByPolicy",
			fmt.Sprintf("The user, group or application 'appid=00000000-0000-0000-0000-000000000001' does not have keys %s permission on key vault '%s'.", permission, strings.SplitN(host, ".", 2)[0]))
		return
	}
	if k == nil || k.deleted {
		writeError(w, http.StatusNotFound, "KeyNotFound", "",
			fmt.Sprintf("A key with (name/id) %s was not found in this key vault. If you recently deleted this key you may be able to recover it using the correct recovery command.", name))
		return
	}
	v := k.versions[len(k.versions)-1]
	if version != "" {
		v = nil
		for _, cand := range k.versions {
			if cand.id == version {
				v = cand
			}
		}
		if v == nil {
			writeError(w, http.StatusNotFound, "KeyNotFound", "",
				fmt.Sprintf("A key with (name/id) %s/%s was not found in this key vault.", name, version))
			return
		}
	}
	kid := "https://" + host + "/keys/" + k.name + "/" + v.id

	if op == "get" {
		s.writeKeyBundle(w, k, v, kid)
		return
	}

	var req struct {
		Alg   string `json:"alg"`
		Value string `json:"value"`
	}
	if err := json.NewDecoder(http.MaxBytesReader(w, r.Body, 1<<16)).Decode(&req); err != nil {
		writeError(w, http.StatusBadRequest, "BadParameter", "", "The request body is not valid JSON.")
		return
	}
	value, err := base64.RawURLEncoding.DecodeString(req.Value)
	if err != nil || len(value) == 0 {
		writeError(w, http.StatusBadRequest, "BadParameter", "", "Content of 'value' is not base64url. Property 'value' is required.")
		return
	}
	if !k.permits(permission) {
		writeError(w, http.StatusForbidden, "Forbidden", "KeyOperationForbidden", fmt.Sprintf("Operation %s is not permitted on this key.", permission))
		return
	}
	// Unwrap needs the private or secret key and is refused on a disabled
	// version. Wrap under an RSA key is a public-key operation that Key
	// Vault is reported to serve even for a disabled key (modelled so, the
	// stricter case for the provider); A256KW needs the secret key.
	if !v.enabled && (op == "unwrapkey" || k.kty == KeyTypeOctHSM) {
		writeError(w, http.StatusForbidden, "Forbidden", "KeyDisabled", fmt.Sprintf("Operation %s is not allowed on a disabled key.", permission))
		return
	}
	out, status, msg := v.apply(k.kty, op, req.Alg, value)
	if status != http.StatusOK {
		writeError(w, status, "BadParameter", "", msg)
		return
	}
	writeJSON(w, http.StatusOK, map[string]string{
		"kid":   kid,
		"value": base64.RawURLEncoding.EncodeToString(out),
	})
}

func (k *Key) permits(op string) bool {
	for _, o := range k.ops {
		if o == op {
			return true
		}
	}
	return false
}

// apply performs the wrap or unwrap; failures are 400 BadParameter, as on
// the service.
func (v *keyVersion) apply(kty KeyType, op, alg string, value []byte) ([]byte, int, string) {
	switch {
	case alg == "RSA-OAEP-256" && v.rsa != nil:
		if op == "wrapkey" {
			out, err := rsa.EncryptOAEP(sha256.New(), rand.Reader, &v.rsa.PublicKey, value, nil)
			if err != nil {
				return nil, http.StatusBadRequest, "The value is too long for the key size."
			}
			return out, http.StatusOK, ""
		}
		out, err := rsa.DecryptOAEP(sha256.New(), nil, v.rsa, value, nil)
		if err != nil {
			return nil, http.StatusBadRequest, "Error occurred while decoding OAEP padding."
		}
		return out, http.StatusOK, ""
	case alg == "A256KW" && v.aes != nil:
		var out []byte
		var err error
		if op == "wrapkey" {
			out, err = aesKeyWrap(v.aes, value)
		} else {
			out, err = aesKeyUnwrap(v.aes, value)
		}
		if err != nil {
			return nil, http.StatusBadRequest, "The parameter is incorrect: key wrap failed."
		}
		return out, http.StatusOK, ""
	default:
		return nil, http.StatusBadRequest, fmt.Sprintf("Algorithm %s is not supported for key type %s.", alg, kty)
	}
}

func (s *Server) writeKeyBundle(w http.ResponseWriter, k *Key, v *keyVersion, kid string) {
	jwk := map[string]any{"kid": kid, "kty": string(k.kty), "key_ops": k.ops}
	if v.rsa != nil {
		jwk["n"] = base64.RawURLEncoding.EncodeToString(v.rsa.N.Bytes())
		jwk["e"] = base64.RawURLEncoding.EncodeToString(bigEndian(v.rsa.E))
	}
	recovery := "Recoverable"
	writeJSON(w, http.StatusOK, map[string]any{
		"key": jwk,
		"attributes": map[string]any{
			"enabled":         v.enabled,
			"created":         v.created.Unix(),
			"updated":         v.created.Unix(),
			"recoveryLevel":   recovery,
			"recoverableDays": 90,
		},
	})
}

func bigEndian(e int) []byte {
	var b []byte
	for ; e > 0; e >>= 8 {
		b = append([]byte{byte(e)}, b...)
	}
	return b
}
