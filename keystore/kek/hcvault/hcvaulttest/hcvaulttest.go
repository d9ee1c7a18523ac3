// Package hcvaulttest is a loopback HashiCorp Vault server speaking the
// transit secrets engine's REST protocol, for tests of the hcvault KEK
// provider and of the key store's off switch.
//
// It models what the provider meets in production: TLS, tokens and ACL
// policies (update on <mount>/encrypt/<key> and <mount>/decrypt/<key>;
// create on encrypt makes Vault create a missing key, as real Vault does),
// Kubernetes auth logins issuing tokens with a TTL, key versions and
// rotation, min_decryption_version, deleted keys restored from a backup,
// associated data on AEAD keys (and its absence on Vault before 1.13, which
// ignores the parameter with a warning), rate-limit quotas (429), a sealed
// Vault (503) and dropped connections. Ciphertexts are real AES-GCM under a
// per-version secret, in Vault's "vault:v<N>:<base64(nonce||ct||tag)>"
// form, and errors come in Vault's {"errors":[...]} form with Vault's
// wording.
//
// Vault has no "disabled" key state. The customer's off switch is to revoke
// the KMS's access: Key.Disable removes the key's paths from every policy,
// so Vault answers 403 "permission denied"; Key.Enable puts them back.
package hcvaulttest

import (
	"bytes"
	"crypto/aes"
	"crypto/cipher"
	"crypto/rand"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"encoding/pem"
	"fmt"
	"net/http"
	"net/http/httptest"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"
)

// Capabilities used in policies.
const (
	CapCreate = "create"
	CapUpdate = "update"
)

// Server is the fake Vault. Its methods are safe for concurrent use.
type Server struct {
	// URL is the server's https://127.0.0.1:<port> address.
	URL string
	// Host is URL's host:port, for hcvault:// URIs.
	Host string

	srv *httptest.Server

	mu        sync.Mutex
	mounts    map[string]bool
	keys      map[string]*keyState // by "<mount>/<name>"
	backups   map[string]*keyState // deleted keys, restorable
	policies  map[string]map[string][]string
	disabled  map[string]map[string]map[string][]string // key id -> policy -> path -> caps removed by Disable
	tokens    map[string]*token
	roles     map[string]*role // by "<auth mount>/<role>"
	sealed    bool
	drop      bool
	throttle  int
	legacyAAD bool
	now       func() time.Time
	logins    int
	calls     map[string]int // by request path, after /v1/
}

type keyState struct {
	typ      string
	versions [][]byte // versions[i] is version i+1's secret
	minDecr  int
}

type token struct {
	policies []string
	expires  time.Time // zero: never
}

type role struct {
	jwt      string
	policies []string
	ttl      time.Duration
}

// New starts a fake Vault with TLS on a loopback port, closed when the
// test ends.
func New(t testing.TB) *Server {
	t.Helper()
	s := &Server{
		mounts:   map[string]bool{},
		keys:     map[string]*keyState{},
		backups:  map[string]*keyState{},
		policies: map[string]map[string][]string{},
		disabled: map[string]map[string]map[string][]string{},
		tokens:   map[string]*token{},
		roles:    map[string]*role{},
		calls:    map[string]int{},
		now:      time.Now,
	}
	s.srv = httptest.NewTLSServer(http.HandlerFunc(s.serve))
	t.Cleanup(s.srv.Close)
	s.URL = s.srv.URL
	s.Host = strings.TrimPrefix(s.srv.URL, "https://")
	return s
}

// CACertPEM returns the PEM certificate clients must trust.
func (s *Server) CACertPEM() []byte {
	return pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: s.srv.Certificate().Raw})
}

// Close stops the server; later calls fail with connection refused.
func (s *Server) Close() { s.srv.Close() }

// Key is a transit key on the fake server. It implements kektest.Owner and
// kektest.Deleter.
type Key struct {
	s           *Server
	Mount, Name string
}

// CreateKey creates an aes256-gcm96 transit key (version 1), mounting the
// transit engine at mount if needed.
func (s *Server) CreateKey(mount, name string) *Key {
	return s.CreateKeyType(mount, name, "aes256-gcm96")
}

// CreateKeyType creates a key of a transit key type: aes256-gcm96 and
// aes128-gcm96 encrypt; any other type (rsa-2048, ...) is accepted as a
// non-AEAD key that refuses associated data, as Vault does.
func (s *Server) CreateKeyType(mount, name, typ string) *Key {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.mounts[mount] = true
	k := &keyState{typ: typ}
	k.rotate()
	s.keys[mount+"/"+name] = k
	return &Key{s: s, Mount: mount, Name: name}
}

func (k *keyState) rotate() {
	size := 32
	if k.typ == "aes128-gcm96" {
		size = 16
	}
	secret := make([]byte, size)
	if _, err := rand.Read(secret); err != nil {
		panic(err)
	}
	k.versions = append(k.versions, secret)
}

func (k *keyState) aead() bool {
	return k.typ == "aes256-gcm96" || k.typ == "aes128-gcm96"
}

func (k *Key) id() string { return k.Mount + "/" + k.Name }

// URI returns the key's hcvault:// URI on this server.
func (k *Key) URI() string { return "hcvault://" + k.s.Host + "/" + k.Mount + "/keys/" + k.Name }

// EncryptPath and DecryptPath are the key's transit endpoints (without /v1/).
func (k *Key) EncryptPath() string { return k.Mount + "/encrypt/" + k.Name }
func (k *Key) DecryptPath() string { return k.Mount + "/decrypt/" + k.Name }

// KMSPolicy creates (or replaces) a policy named "kms-<name>" granting only
// update on the key's encrypt and decrypt paths, the least a KEK provider
// needs, and returns its name.
func (k *Key) KMSPolicy() string {
	name := "kms-" + k.Name
	k.s.SetPolicy(name, map[string][]string{
		k.EncryptPath(): {CapUpdate},
		k.DecryptPath(): {CapUpdate},
	})
	return name
}

// Rotate adds a key version; new encryptions use it.
func (k *Key) Rotate() {
	k.s.mu.Lock()
	defer k.s.mu.Unlock()
	if st := k.s.keys[k.id()]; st != nil {
		st.rotate()
	}
}

// SetMinDecryptionVersion refuses to decrypt ciphertexts of older versions.
func (k *Key) SetMinDecryptionVersion(v int) {
	k.s.mu.Lock()
	defer k.s.mu.Unlock()
	if st := k.s.keys[k.id()]; st != nil {
		st.minDecr = v
	}
}

// Disable revokes the KMS's access: the key's paths are removed from every
// policy, so Vault answers 403 permission denied.
func (k *Key) Disable(t testing.TB) {
	t.Helper()
	k.s.mu.Lock()
	defer k.s.mu.Unlock()
	removed := k.s.disabled[k.id()]
	if removed == nil {
		removed = map[string]map[string][]string{}
		k.s.disabled[k.id()] = removed
	}
	for pname, rules := range k.s.policies {
		for _, path := range []string{k.EncryptPath(), k.DecryptPath()} {
			if caps, ok := rules[path]; ok {
				if removed[pname] == nil {
					removed[pname] = map[string][]string{}
				}
				removed[pname][path] = caps
				delete(rules, path)
			}
		}
	}
}

// Enable restores the access Disable revoked.
func (k *Key) Enable(t testing.TB) {
	t.Helper()
	k.s.mu.Lock()
	defer k.s.mu.Unlock()
	for pname, rules := range k.s.disabled[k.id()] {
		if k.s.policies[pname] == nil {
			k.s.policies[pname] = map[string][]string{}
		}
		for path, caps := range rules {
			k.s.policies[pname][path] = caps
		}
	}
	delete(k.s.disabled, k.id())
}

// Delete deletes the key (after the owner set deletion_allowed), keeping a
// backup as "vault read transit/backup/<name>" would.
func (k *Key) Delete(t testing.TB) {
	t.Helper()
	k.s.mu.Lock()
	defer k.s.mu.Unlock()
	if st := k.s.keys[k.id()]; st != nil {
		k.s.backups[k.id()] = st
		delete(k.s.keys, k.id())
	}
}

// Restore restores a deleted key from its backup (transit/restore), with
// all its versions.
func (k *Key) Restore(t testing.TB) {
	t.Helper()
	k.s.mu.Lock()
	defer k.s.mu.Unlock()
	if st := k.s.backups[k.id()]; st != nil {
		k.s.keys[k.id()] = st
		delete(k.s.backups, k.id())
	}
}

// SetPolicy creates or replaces an ACL policy: path -> capabilities. A path
// ending in "*" matches every path with that prefix.
func (s *Server) SetPolicy(name string, rules map[string][]string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	cp := make(map[string][]string, len(rules))
	for p, c := range rules {
		cp[p] = slices.Clone(c)
	}
	s.policies[name] = cp
}

// IssueToken returns a new token carrying policies, valid until revoked or
// expired.
func (s *Server) IssueToken(policies ...string) string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.issueLocked(policies, 0)
}

func (s *Server) issueLocked(policies []string, ttl time.Duration) string {
	b := make([]byte, 16)
	if _, err := rand.Read(b); err != nil {
		panic(err)
	}
	tok := "hvs." + hex.EncodeToString(b)
	t := &token{policies: slices.Clone(policies)}
	if ttl > 0 {
		t.expires = s.now().Add(ttl)
	}
	s.tokens[tok] = t
	return tok
}

// RevokeToken revokes a token.
func (s *Server) RevokeToken(tok string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	delete(s.tokens, tok)
}

// ExpireTokens makes every token issued so far expire now, as if their TTL
// had passed.
func (s *Server) ExpireTokens() {
	s.mu.Lock()
	defer s.mu.Unlock()
	past := s.now().Add(-time.Second)
	for _, t := range s.tokens {
		t.expires = past
	}
}

// KubernetesRole configures a role of the Kubernetes auth method mounted
// at mount: a login presenting jwt gets a token with policies and ttl.
func (s *Server) KubernetesRole(mount, name, jwt string, ttl time.Duration, policies ...string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.roles[mount+"/"+name] = &role{jwt: jwt, policies: slices.Clone(policies), ttl: ttl}
}

// DeleteKubernetesRole removes a role.
func (s *Server) DeleteKubernetesRole(mount, name string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	delete(s.roles, mount+"/"+name)
}

// Logins returns how many successful logins the server has answered.
func (s *Server) Logins() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.logins
}

// Calls returns how many requests reached path (without /v1/).
func (s *Server) Calls(path string) int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.calls[path]
}

// Seal seals or unseals Vault: sealed, every request gets 503 "Vault is
// sealed".
func (s *Server) Seal(on bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.sealed = on
}

// Drop makes the server close every connection without answering while on.
func (s *Server) Drop(on bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.drop = on
}

// LegacyAssociatedData makes the server behave like Vault before 1.13:
// associated_data is an unknown parameter, ignored with a warning.
func (s *Server) LegacyAssociatedData(on bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.legacyAAD = on
}

// Outage implements kektest.Network: a sealed Vault (503).
func (s *Server) Outage(t testing.TB, on bool) {
	t.Helper()
	s.Seal(on)
}

// Throttle implements kektest.Network: the next n requests exceed a rate
// limit quota (429).
func (s *Server) Throttle(t testing.TB, n int) {
	t.Helper()
	s.mu.Lock()
	defer s.mu.Unlock()
	s.throttle = n
}

// response is Vault's response envelope.
type response struct {
	RequestID     string         `json:"request_id"`
	LeaseID       string         `json:"lease_id"`
	Renewable     bool           `json:"renewable"`
	LeaseDuration int            `json:"lease_duration"`
	Data          map[string]any `json:"data"`
	WrapInfo      any            `json:"wrap_info"`
	Warnings      []string       `json:"warnings"`
	Auth          any            `json:"auth"`
	MountType     string         `json:"mount_type,omitempty"`
}

func writeJSON(w http.ResponseWriter, status int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	_ = json.NewEncoder(w).Encode(v)
}

func vaultError(w http.ResponseWriter, status int, msgs ...string) {
	writeJSON(w, status, map[string][]string{"errors": msgs})
}

func requestID() string {
	b := make([]byte, 16)
	_, _ = rand.Read(b)
	h := hex.EncodeToString(b)
	return h[:8] + "-" + h[8:12] + "-" + h[12:16] + "-" + h[16:20] + "-" + h[20:]
}

func (s *Server) serve(w http.ResponseWriter, r *http.Request) {
	s.mu.Lock()
	defer s.mu.Unlock()
	path, ok := strings.CutPrefix(r.URL.Path, "/v1/")
	if !ok {
		vaultError(w, http.StatusNotFound)
		return
	}
	s.calls[path]++
	if s.drop {
		if hj, ok := w.(http.Hijacker); ok {
			if conn, _, err := hj.Hijack(); err == nil {
				_ = conn.Close()
				return
			}
		}
		panic(http.ErrAbortHandler)
	}
	if s.sealed {
		vaultError(w, http.StatusServiceUnavailable, "Vault is sealed")
		return
	}
	if s.throttle > 0 {
		s.throttle--
		w.Header().Set("Retry-After", "1")
		vaultError(w, http.StatusTooManyRequests, fmt.Sprintf("request path %q: rate limit quota exceeded", path))
		return
	}
	if r.Method != http.MethodPut && r.Method != http.MethodPost {
		vaultError(w, http.StatusMethodNotAllowed, "unsupported operation")
		return
	}
	var body map[string]any
	dec := json.NewDecoder(http.MaxBytesReader(w, r.Body, 1<<20))
	if err := dec.Decode(&body); err != nil {
		vaultError(w, http.StatusBadRequest, "failed to parse JSON input: "+err.Error())
		return
	}
	if mount, ok := strings.CutSuffix(path, "/login"); ok && strings.HasPrefix(mount, "auth/") {
		s.login(w, strings.TrimPrefix(mount, "auth/"), body)
		return
	}

	segs := strings.Split(path, "/")
	if len(segs) < 3 {
		vaultError(w, http.StatusNotFound, "1 error occurred:\n\t* unsupported path\n\n")
		return
	}
	opName, name := segs[len(segs)-2], segs[len(segs)-1]
	mount := strings.Join(segs[:len(segs)-2], "/")
	key := s.keys[mount+"/"+name]

	// ACL: decrypt is an update; encrypt is an update on an existing key
	// and a create (upsert) on a missing one.
	need := CapUpdate
	if opName == "encrypt" && key == nil {
		need = CapCreate
	}
	if !s.allowed(r.Header.Get("X-Vault-Token"), path, need) {
		vaultError(w, http.StatusForbidden, "permission denied")
		return
	}
	if !s.mounts[mount] {
		vaultError(w, http.StatusNotFound, fmt.Sprintf("no handler for route %q. route entry not found.", path))
		return
	}
	switch opName {
	case "encrypt":
		if key == nil {
			key = &keyState{typ: "aes256-gcm96"}
			key.rotate()
			s.keys[mount+"/"+name] = key
		}
		s.encrypt(w, key, body)
	case "decrypt":
		s.decrypt(w, key, body)
	default:
		vaultError(w, http.StatusNotFound, "1 error occurred:\n\t* unsupported path\n\n")
	}
}

func (s *Server) allowed(tok, path, capability string) bool {
	t := s.tokens[tok]
	if tok == "" || t == nil || (!t.expires.IsZero() && !s.now().Before(t.expires)) {
		return false
	}
	for _, pname := range t.policies {
		for p, caps := range s.policies[pname] {
			match := p == path
			if prefix, glob := strings.CutSuffix(p, "*"); glob {
				match = strings.HasPrefix(path, prefix)
			}
			if match && slices.Contains(caps, capability) {
				return true
			}
		}
	}
	return false
}

func (s *Server) login(w http.ResponseWriter, mount string, body map[string]any) {
	name, _ := body["role"].(string)
	jwt, _ := body["jwt"].(string)
	if name == "" {
		vaultError(w, http.StatusBadRequest, "missing role")
		return
	}
	if jwt == "" {
		vaultError(w, http.StatusBadRequest, "missing jwt")
		return
	}
	ro := s.roles[mount+"/"+name]
	if ro == nil {
		vaultError(w, http.StatusBadRequest, fmt.Sprintf("invalid role name %q", name))
		return
	}
	if jwt != ro.jwt {
		vaultError(w, http.StatusForbidden, "permission denied")
		return
	}
	s.logins++
	tok := s.issueLocked(ro.policies, ro.ttl)
	writeJSON(w, http.StatusOK, response{
		RequestID: requestID(),
		Auth: map[string]any{
			"client_token":   tok,
			"accessor":       requestID(),
			"policies":       append([]string{"default"}, ro.policies...),
			"token_policies": append([]string{"default"}, ro.policies...),
			"lease_duration": int(ro.ttl / time.Second),
			"renewable":      true,
			"entity_id":      requestID(),
			"token_type":     "service",
			"orphan":         true,
		},
	})
}

// knownParams lists each endpoint's parameters; others are ignored with
// Vault's warning.
var knownParams = map[string][]string{
	"encrypt": {"plaintext", "context", "nonce", "key_version", "type", "convergent_encryption", "batch_input", "partial_failure_response_code", "padding_scheme", "associated_data"},
	"decrypt": {"ciphertext", "context", "nonce", "batch_input", "partial_failure_response_code", "padding_scheme", "associated_data"},
}

func (s *Server) warnings(op string, body map[string]any) (warnings []string, aad []byte, errMsg string) {
	var unknown []string
	for p := range body {
		known := slices.Contains(knownParams[op], p)
		if p == "associated_data" && s.legacyAAD {
			known = false
		}
		if !known {
			unknown = append(unknown, p)
		}
	}
	if len(unknown) > 0 {
		slices.Sort(unknown)
		warnings = append(warnings, "Endpoint ignored these unrecognized parameters: ["+strings.Join(unknown, " ")+"]")
	}
	if ad, _ := body["associated_data"].(string); ad != "" && !s.legacyAAD {
		b, err := base64.StdEncoding.DecodeString(ad)
		if err != nil {
			return nil, nil, "failed to base64-decode associated_data: " + err.Error()
		}
		aad = b
	}
	return warnings, aad, ""
}

func (k *keyState) gcm(version int) cipher.AEAD {
	block, err := aes.NewCipher(k.versions[version-1])
	if err != nil {
		panic(err)
	}
	g, err := cipher.NewGCM(block)
	if err != nil {
		panic(err)
	}
	return g
}

func (s *Server) encrypt(w http.ResponseWriter, key *keyState, body map[string]any) {
	warnings, aad, msg := s.warnings("encrypt", body)
	if msg != "" {
		vaultError(w, http.StatusBadRequest, msg)
		return
	}
	pt64, _ := body["plaintext"].(string)
	if pt64 == "" {
		vaultError(w, http.StatusBadRequest, "missing plaintext to encrypt")
		return
	}
	pt, err := base64.StdEncoding.DecodeString(pt64)
	if err != nil {
		vaultError(w, http.StatusBadRequest, "failed to base64-decode plaintext")
		return
	}
	if aad != nil && !key.aead() {
		vaultError(w, http.StatusBadRequest, fmt.Sprintf("'[0].associated_data' provided for non-AEAD cipher suite %s", key.typ))
		return
	}
	if !key.aead() {
		vaultError(w, http.StatusBadRequest, "hcvaulttest: key type "+key.typ+" encryption is not modelled")
		return
	}
	version := len(key.versions)
	nonce := make([]byte, 12)
	if _, err := rand.Read(nonce); err != nil {
		panic(err)
	}
	out := key.gcm(version).Seal(bytes.Clone(nonce), nonce, pt, aad)
	writeJSON(w, http.StatusOK, response{
		RequestID: requestID(),
		Data: map[string]any{
			"ciphertext":  "vault:v" + strconv.Itoa(version) + ":" + base64.StdEncoding.EncodeToString(out),
			"key_version": version,
		},
		Warnings:  warnings,
		MountType: "transit",
	})
}

func (s *Server) decrypt(w http.ResponseWriter, key *keyState, body map[string]any) {
	warnings, aad, msg := s.warnings("decrypt", body)
	if msg != "" {
		vaultError(w, http.StatusBadRequest, msg)
		return
	}
	ct, _ := body["ciphertext"].(string)
	if ct == "" {
		vaultError(w, http.StatusBadRequest, "missing ciphertext to decrypt")
		return
	}
	if key == nil {
		vaultError(w, http.StatusBadRequest, "encryption key not found")
		return
	}
	if aad != nil && !key.aead() {
		vaultError(w, http.StatusBadRequest, fmt.Sprintf("'[0].associated_data' provided for non-AEAD cipher suite %s", key.typ))
		return
	}
	if !key.aead() {
		vaultError(w, http.StatusBadRequest, "hcvaulttest: key type "+key.typ+" decryption is not modelled")
		return
	}
	rest, ok := strings.CutPrefix(ct, "vault:v")
	if !ok {
		vaultError(w, http.StatusBadRequest, "invalid ciphertext: no prefix")
		return
	}
	verStr, payload, ok := strings.Cut(rest, ":")
	if !ok {
		vaultError(w, http.StatusBadRequest, "invalid ciphertext: wrong number of fields")
		return
	}
	version, err := strconv.Atoi(verStr)
	if err != nil {
		vaultError(w, http.StatusBadRequest, "invalid ciphertext: version number could not be decoded")
		return
	}
	if version == 0 {
		version = 1 // Vault's compatibility with its first releases
	}
	if version < 0 || version > len(key.versions) {
		vaultError(w, http.StatusBadRequest, "invalid ciphertext: version is too new")
		return
	}
	if key.minDecr > 0 && version < key.minDecr {
		vaultError(w, http.StatusBadRequest, "ciphertext or signature version is disallowed by policy (too old)")
		return
	}
	raw, err := base64.StdEncoding.DecodeString(payload)
	if err != nil {
		vaultError(w, http.StatusBadRequest, "invalid ciphertext: could not decode base64")
		return
	}
	g := key.gcm(version)
	if len(raw) < g.NonceSize() {
		vaultError(w, http.StatusBadRequest, "invalid ciphertext length")
		return
	}
	pt, err := g.Open(nil, raw[:g.NonceSize()], raw[g.NonceSize():], aad)
	if err != nil {
		vaultError(w, http.StatusBadRequest, "cipher: message authentication failed")
		return
	}
	writeJSON(w, http.StatusOK, response{
		RequestID: requestID(),
		Data:      map[string]any{"plaintext": base64.StdEncoding.EncodeToString(pt)},
		Warnings:  warnings,
		MountType: "transit",
	})
}
