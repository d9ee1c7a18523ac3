// Package awskmstest runs a loopback AWS KMS (and STS AssumeRole) that
// speaks the real wire protocols, for tests of the awskms provider and of
// anything built on it (the key store's off-switch tests).
//
// KMS is served as AWS JSON 1.1 over HTTPS (POST /, X-Amz-Target
// TrentService.Encrypt or TrentService.Decrypt), STS AssumeRole as the AWS
// query protocol with XML answers. Every request must carry a valid SigV4
// signature under the server's static test credentials or a session it
// issued, as the real services require. Keys really encrypt: AES-256-GCM
// under a per-key secret with backing-key versions (rotation keeps old
// ciphertexts readable), the encryption context authenticated, so tampering
// and a wrong context fail with InvalidCiphertextException as on AWS.
//
// The owner's controls (disable, schedule deletion, delete, revoke access,
// revoke the role) and the network's (outage, throttling, injected service
// faults) implement kektest.Owner, kektest.Deleter and kektest.Network.
package awskmstest

import (
	"bytes"
	"cmp"
	"crypto/aes"
	"crypto/cipher"
	"crypto/hmac"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"encoding/base64"
	"encoding/binary"
	"encoding/hex"
	"encoding/json"
	"encoding/xml"
	"io"
	"maps"
	"net/http"
	"net/http/httptest"
	"net/url"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	awshttp "github.com/aws/aws-sdk-go-v2/aws/transport/http"
	"github.com/aws/aws-sdk-go-v2/credentials"

	"github.com/attested-kms/attested-kms/keystore/kek/awskms"
	"github.com/attested-kms/attested-kms/keystore/kek/kektest"
)

// Fixed identities of the fake account.
const (
	Region  = "eu-west-1"
	Account = "111122223333"
	// UserARN is the principal of the static test credentials.
	UserARN = "arn:aws:iam::" + Account + ":user/attested-kms"
	// RoleARN is a role that UserARN may assume with ExternalID.
	RoleARN    = "arn:aws:iam::" + Account + ":role/attested-kms-kek"
	ExternalID = "attested-kms-external-id-42"
)

// Key states, as KMS names them.
const (
	StateEnabled         = "Enabled"
	StateDisabled        = "Disabled"
	StatePendingDeletion = "PendingDeletion"
	stateDeleted         = "" // gone: every reference is NotFoundException
)

// Server is a running fake. Its methods are safe for concurrent use.
type Server struct {
	// URL is the https:// endpoint of both KMS and STS.
	URL string
	// AccessKeyID and SecretAccessKey are the static credentials of UserARN.
	AccessKeyID, SecretAccessKey string

	srv *httptest.Server

	mu        sync.Mutex
	keys      map[string]*keyState // by key id
	handles   map[[16]byte]string  // ciphertext key handle -> key id
	aliases   map[string]string    // alias name (without "alias/") -> key id
	sessions  map[string]*session  // by temporary access key id
	roleTrust bool                 // UserARN may assume RoleARN
	outage    bool
	stall     chan struct{} // non-nil: requests wait until it is closed
	throttle  int
	faults    []string
	calls     map[string]int
}

type keyState struct {
	id       string
	handle   [16]byte
	state    string
	revoked  bool     // the key policy no longer lets anyone here use it
	versions [][]byte // backing keys, newest last
}

type session struct {
	secret, token, principal string
	expires                  time.Time
	revoked                  bool // "revoke active sessions" on the role
}

// NewServer starts a fake on a loopback TLS listener, closed when t ends.
func NewServer(t testing.TB) *Server {
	t.Helper()
	s := &Server{
		AccessKeyID:     "AKIA" + strings.ToUpper(hex.EncodeToString(random(8))),
		SecretAccessKey: base64.StdEncoding.EncodeToString(random(30)),
		keys:            map[string]*keyState{},
		handles:         map[[16]byte]string{},
		aliases:         map[string]string{},
		sessions:        map[string]*session{},
		roleTrust:       true,
		calls:           map[string]int{},
	}
	s.srv = httptest.NewTLSServer(s)
	s.URL = s.srv.URL
	t.Cleanup(func() {
		s.Stall(t, false) // let held requests finish so Close does not wait on them
		s.srv.Close()
	})
	return s
}

// HTTPClient returns a client that trusts the server's certificate. It is
// the SDK's buildable client rather than an *http.Client because the SDK's
// config loader adds AWS_CA_BUNDLE to the client's roots when that variable
// is set, and refuses clients it cannot extend.
func (s *Server) HTTPClient() *awshttp.BuildableClient {
	pool := x509.NewCertPool()
	pool.AddCert(s.srv.Certificate())
	return awshttp.NewBuildableClient().WithTransportOptions(func(tr *http.Transport) {
		tr.TLSClientConfig = &tls.Config{RootCAs: pool, MinVersion: tls.VersionTLS12}
	})
}

// Credentials returns a provider of the static test credentials.
func (s *Server) Credentials() aws.CredentialsProvider {
	return credentials.NewStaticCredentialsProvider(s.AccessKeyID, s.SecretAccessKey, "")
}

// Options returns provider options that reach this server with the static
// credentials, fast retries and a short call timeout.
func (s *Server) Options() awskms.Options {
	return awskms.Options{
		Endpoint:    s.URL,
		STSEndpoint: s.URL,
		HTTPClient:  s.HTTPClient(),
		Credentials: s.Credentials(),
		CallTimeout: 10 * time.Second,
		MaxBackoff:  5 * time.Millisecond,
	}
}

// Key is a handle on one KMS key, for the owner's controls.
type Key struct {
	s  *Server
	id string
}

var (
	_ kektest.Owner   = (*Key)(nil)
	_ kektest.Deleter = (*Key)(nil)
	_ kektest.Network = (*Server)(nil)
)

// CreateKey creates an enabled symmetric encryption key.
func (s *Server) CreateKey(t testing.TB) *Key {
	t.Helper()
	var h [16]byte
	copy(h[:], random(16))
	h[6] = h[6]&0x0f | 0x40 // UUID version 4, variant 10: the form KMS key ids take
	h[8] = h[8]&0x3f | 0x80
	x := hex.EncodeToString(h[:])
	id := x[:8] + "-" + x[8:12] + "-" + x[12:16] + "-" + x[16:20] + "-" + x[20:]
	s.mu.Lock()
	defer s.mu.Unlock()
	s.keys[id] = &keyState{id: id, handle: h, state: StateEnabled, versions: [][]byte{random(32)}}
	s.handles[h] = id
	return &Key{s: s, id: id}
}

// CreateAlias points alias/name at k and returns the alias ARN.
func (s *Server) CreateAlias(t testing.TB, name string, k *Key) string {
	t.Helper()
	s.mu.Lock()
	defer s.mu.Unlock()
	s.aliases[name] = k.id
	return aliasARN(name)
}

func keyARN(id string) string     { return "arn:aws:kms:" + Region + ":" + Account + ":key/" + id }
func aliasARN(name string) string { return "arn:aws:kms:" + Region + ":" + Account + ":alias/" + name }

// ID returns the key id (a UUID).
func (k *Key) ID() string { return k.id }

// ARN returns the key ARN.
func (k *Key) ARN() string { return keyARN(k.id) }

// URI returns the provider URI of the key.
func (k *Key) URI() string { return awskms.Scheme + "://" + k.ARN() }

// RoleURI returns the provider URI of the key reached through RoleARN.
func (k *Key) RoleURI() string {
	return k.URI() + "?role_arn=" + url.QueryEscape(RoleARN) + "&external_id=" + url.QueryEscape(ExternalID)
}

func (k *Key) update(t testing.TB, f func(ks *keyState)) {
	t.Helper()
	k.s.mu.Lock()
	defer k.s.mu.Unlock()
	ks := k.s.keys[k.id]
	if ks.state == stateDeleted {
		t.Fatalf("awskmstest: key %s was deleted", k.id)
	}
	f(ks)
}

// Disable is DisableKey.
func (k *Key) Disable(t testing.TB) {
	k.update(t, func(ks *keyState) {
		if ks.state == StatePendingDeletion {
			t.Fatal("awskmstest: DisableKey on a key pending deletion")
		}
		ks.state = StateDisabled
	})
}

// Enable is EnableKey.
func (k *Key) Enable(t testing.TB) {
	k.update(t, func(ks *keyState) {
		if ks.state == StatePendingDeletion {
			t.Fatal("awskmstest: EnableKey on a key pending deletion")
		}
		ks.state = StateEnabled
	})
}

// ScheduleDeletion is ScheduleKeyDeletion: the key is PendingDeletion.
func (k *Key) ScheduleDeletion(t testing.TB) {
	k.update(t, func(ks *keyState) { ks.state = StatePendingDeletion })
}

// CancelDeletion is CancelKeyDeletion, which leaves the key Disabled.
func (k *Key) CancelDeletion(t testing.TB) {
	k.update(t, func(ks *keyState) {
		if ks.state != StatePendingDeletion {
			t.Fatal("awskmstest: CancelKeyDeletion on a key not pending deletion")
		}
		ks.state = StateDisabled
	})
}

// Delete schedules the key's deletion (kektest.Deleter).
func (k *Key) Delete(t testing.TB) { k.ScheduleDeletion(t) }

// Restore cancels the deletion and re-enables the key, the two calls an
// owner makes to undo ScheduleKeyDeletion (kektest.Deleter).
func (k *Key) Restore(t testing.TB) {
	k.CancelDeletion(t)
	k.Enable(t)
}

// DeleteNow ends the waiting period: the key material is gone and every
// reference to the key answers NotFoundException.
func (k *Key) DeleteNow(t testing.TB) {
	k.update(t, func(ks *keyState) {
		ks.state = stateDeleted
		ks.versions = nil
	})
}

// Rotate adds a backing key version, as automatic or on-demand rotation
// does. New ciphertexts use it; old ones still decrypt.
func (k *Key) Rotate(t testing.TB) {
	k.update(t, func(ks *keyState) { ks.versions = append(ks.versions, random(32)) })
}

// RevokeAccess removes the KMS identity from the key policy: calls answer
// AccessDeniedException. GrantAccess puts it back.
func (k *Key) RevokeAccess(t testing.TB) { k.update(t, func(ks *keyState) { ks.revoked = true }) }

// GrantAccess undoes RevokeAccess.
func (k *Key) GrantAccess(t testing.TB) { k.update(t, func(ks *keyState) { ks.revoked = false }) }

// RevokeRole removes UserARN from RoleARN's trust policy (AssumeRole
// answers AccessDenied) and revokes the role's active sessions (KMS answers
// AccessDeniedException to credentials issued before now), which is what
// the IAM console's "Revoke active sessions" does.
func (s *Server) RevokeRole(t testing.TB) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.roleTrust = false
	for _, ss := range s.sessions {
		ss.revoked = true
	}
}

// RestoreRole trusts UserARN again. Revoked sessions stay revoked, as on
// AWS: the client must assume the role afresh.
func (s *Server) RestoreRole(t testing.TB) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.roleTrust = true
}

// Outage drops every connection without an answer while on.
func (s *Server) Outage(t testing.TB, on bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.outage = on
}

// Stall holds every request without answering while on, so clients run
// into their timeouts.
func (s *Server) Stall(t testing.TB, on bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	switch {
	case on && s.stall == nil:
		s.stall = make(chan struct{})
	case !on && s.stall != nil:
		close(s.stall)
		s.stall = nil
	}
}

// Throttle answers the next n KMS requests with ThrottlingException; 0
// stops throttling.
func (s *Server) Throttle(t testing.TB, n int) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.throttle = n
}

// Fail answers the next n KMS requests (after authentication) with the
// given error: an AWS error code such as "KMSInternalException" (500),
// "DependencyTimeoutException" or "ServiceUnavailableException" (503), any
// other code as HTTP 400, or "HTTP <status>" for a bare status with a
// non-JSON body, as a load balancer in front of the service answers.
func (s *Server) Fail(t testing.TB, n int, code string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.faults = nil
	for range n {
		s.faults = append(s.faults, code)
	}
}

// Calls returns how many authenticated requests reached op ("Encrypt",
// "Decrypt", "AssumeRole").
func (s *Server) Calls(op string) int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.calls[op]
}

// ---- wire protocol ----

type awsError struct {
	status  int
	code    string
	message string
}

var faultStatus = map[string]int{
	"KMSInternalException":        http.StatusInternalServerError,
	"KeyUnavailableException":     http.StatusInternalServerError,
	"DependencyTimeoutException":  http.StatusServiceUnavailable,
	"ServiceUnavailableException": http.StatusServiceUnavailable,
}

func (s *Server) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	body, err := io.ReadAll(io.LimitReader(r.Body, 1<<20))
	if err != nil {
		return
	}
	s.mu.Lock()
	if stall := s.stall; stall != nil {
		// Hold the request, as an overloaded service or a black-holed
		// network path does, until the client gives up or the stall ends.
		s.mu.Unlock()
		select {
		case <-stall:
		case <-r.Context().Done():
			return
		}
		s.mu.Lock()
	}
	defer s.mu.Unlock()
	if s.outage {
		if hj, ok := w.(http.Hijacker); ok {
			if conn, _, err := hj.Hijack(); err == nil {
				conn.Close()
				return
			}
		}
		w.WriteHeader(http.StatusBadGateway)
		return
	}
	if target := r.Header.Get("X-Amz-Target"); target != "" {
		s.serveKMS(w, r, body, target)
		return
	}
	s.serveSTS(w, r, body)
}

func (s *Server) serveKMS(w http.ResponseWriter, r *http.Request, body []byte, target string) {
	if r.Method != http.MethodPost || r.URL.Path != "/" {
		writeKMSError(w, &awsError{404, "UnknownOperationException", ""})
		return
	}
	if ct := r.Header.Get("Content-Type"); ct != "application/x-amz-json-1.1" {
		writeKMSError(w, &awsError{400, "SerializationException", "Unsupported content type " + ct})
		return
	}
	principal, sess, aerr := s.authenticate(r, body, "kms")
	if aerr != nil {
		writeKMSError(w, aerr)
		return
	}
	op, ok := strings.CutPrefix(target, "TrentService.")
	if !ok || (op != "Encrypt" && op != "Decrypt") {
		writeKMSError(w, &awsError{400, "UnknownOperationException", ""})
		return
	}
	s.calls[op]++
	if s.throttle > 0 {
		s.throttle--
		writeKMSError(w, &awsError{400, "ThrottlingException", "Rate exceeded"})
		return
	}
	if len(s.faults) > 0 {
		code := s.faults[0]
		s.faults = s.faults[1:]
		if status, ok := strings.CutPrefix(code, "HTTP "); ok {
			w.Header().Set("Content-Type", "text/html")
			w.WriteHeader(atoi(status))
			io.WriteString(w, "<html><body>"+http.StatusText(atoi(status))+"</body></html>")
			return
		}
		writeKMSError(w, &awsError{cmp.Or(faultStatus[code], 400), code, "injected fault"})
		return
	}
	if sess != nil && sess.revoked {
		writeKMSError(w, &awsError{400, "AccessDeniedException", "User: " + principal + " is not authorized to perform: kms:" + op + " with an explicit deny in an identity-based policy"})
		return
	}
	var out any
	switch op {
	case "Encrypt":
		out, aerr = s.encrypt(principal, body)
	case "Decrypt":
		out, aerr = s.decrypt(principal, body)
	}
	if aerr != nil {
		writeKMSError(w, aerr)
		return
	}
	w.Header().Set("Content-Type", "application/x-amz-json-1.1")
	w.Header().Set("X-Amzn-RequestId", requestID())
	json.NewEncoder(w).Encode(out)
}

func writeKMSError(w http.ResponseWriter, e *awsError) {
	w.Header().Set("Content-Type", "application/x-amz-json-1.1")
	w.Header().Set("X-Amzn-RequestId", requestID())
	w.WriteHeader(e.status)
	json.NewEncoder(w).Encode(map[string]string{"__type": e.code, "message": e.message})
}

// authenticate checks the SigV4 signature and returns the caller's
// principal ARN and, for temporary credentials, their session.
func (s *Server) authenticate(r *http.Request, body []byte, service string) (string, *session, *awsError) {
	auth := r.Header.Get("Authorization")
	if auth == "" {
		return "", nil, &awsError{400, "MissingAuthenticationTokenException", "Missing Authentication Token"}
	}
	sig, ok := parseSigV4(auth)
	if !ok {
		return "", nil, &awsError{400, "IncompleteSignatureException", "Authorization header requires Credential, SignedHeaders and Signature"}
	}
	amzDate := r.Header.Get("X-Amz-Date")
	if !checkTime(amzDate, sig.date, time.Now()) {
		return "", nil, &awsError{400, "InvalidSignatureException", "Signature expired or X-Amz-Date malformed"}
	}
	if sig.region != Region || sig.service != service {
		return "", nil, &awsError{400, "InvalidSignatureException", "Credential should be scoped to a valid region and service"}
	}
	required := []string{"host", "x-amz-date"}
	if service == "kms" {
		required = append(required, "x-amz-target")
	}
	var principal, secret string
	var sess *session
	if sig.accessKeyID == s.AccessKeyID {
		principal, secret = UserARN, s.SecretAccessKey
	} else if ss, ok := s.sessions[sig.accessKeyID]; ok {
		if !hmac.Equal([]byte(r.Header.Get("X-Amz-Security-Token")), []byte(ss.token)) {
			return "", nil, &awsError{400, "UnrecognizedClientException", "The security token included in the request is invalid."}
		}
		if time.Now().After(ss.expires) {
			return "", nil, &awsError{400, "ExpiredTokenException", "The security token included in the request is expired"}
		}
		principal, secret, sess = ss.principal, ss.secret, ss
		required = append(required, "x-amz-security-token")
	} else {
		return "", nil, &awsError{400, "UnrecognizedClientException", "The security token included in the request is invalid."}
	}
	for _, h := range required {
		if !slices.Contains(sig.signedHeaders, h) {
			return "", nil, &awsError{400, "InvalidSignatureException", "Header " + h + " must be signed"}
		}
	}
	want := sig.expectedSignature(r, body, amzDate, secret)
	if !hmac.Equal([]byte(want), []byte(sig.signature)) {
		return "", nil, &awsError{400, "InvalidSignatureException", "The request signature we calculated does not match the signature you provided."}
	}
	return principal, sess, nil
}

// resolve finds the key a KeyId names: key id, key ARN, alias name or alias
// ARN.
func (s *Server) resolve(keyID string) (*keyState, *awsError) {
	id := keyID
	alias, isAlias := strings.CutPrefix(keyID, "alias/")
	if a, ok := strings.CutPrefix(keyID, "arn:aws:kms:"+Region+":"+Account+":"); ok {
		if name, ok := strings.CutPrefix(a, "alias/"); ok {
			alias, isAlias = name, true
		} else if kid, ok := strings.CutPrefix(a, "key/"); ok {
			id = kid
		} else {
			return nil, &awsError{400, "NotFoundException", "Invalid keyId " + keyID}
		}
	} else if strings.HasPrefix(keyID, "arn:") {
		// Another region or account: this fake holds none of those.
		return nil, &awsError{400, "NotFoundException", "Invalid arn " + keyID}
	}
	if isAlias {
		kid, ok := s.aliases[alias]
		if !ok {
			return nil, &awsError{400, "NotFoundException", "Alias " + aliasARN(alias) + " is not found."}
		}
		id = kid
	}
	ks, ok := s.keys[id]
	if !ok || ks.state == stateDeleted {
		return nil, &awsError{400, "NotFoundException", "Key '" + keyARN(id) + "' does not exist"}
	}
	return ks, nil
}

// usable checks what KMS checks before any cryptography: the key policy,
// then the key state.
func (ks *keyState) usable(principal, op string) *awsError {
	if ks.revoked {
		return &awsError{400, "AccessDeniedException", "User: " + principal + " is not authorized to perform: kms:" + op + " on resource: " + keyARN(ks.id) + " because no resource-based policy allows the kms:" + op + " action"}
	}
	switch ks.state {
	case StateEnabled:
		return nil
	case StateDisabled:
		return &awsError{400, "DisabledException", keyARN(ks.id) + " is disabled."}
	default:
		return &awsError{400, "KMSInvalidStateException", keyARN(ks.id) + " is pending deletion."}
	}
}

type encryptInput struct {
	KeyId               string
	Plaintext           []byte
	EncryptionContext   map[string]string
	EncryptionAlgorithm string
	GrantTokens         []string
}

type decryptInput struct {
	KeyId               string
	CiphertextBlob      []byte
	EncryptionContext   map[string]string
	EncryptionAlgorithm string
	GrantTokens         []string
}

func decodeInput(body []byte, v any) *awsError {
	if err := json.Unmarshal(body, v); err != nil {
		return &awsError{400, "SerializationException", "Malformed request body"}
	}
	return nil
}

func checkAlgorithm(alg string) *awsError {
	if alg != "" && alg != "SYMMETRIC_DEFAULT" {
		return &awsError{400, "InvalidKeyUsageException", "The encryption algorithm " + alg + " is not compatible with a symmetric key"}
	}
	return nil
}

// Ciphertext blob of the fake, version 1:
//
//	0x01 || key handle (16) || backing version (4, big endian) || nonce (12) || AES-256-GCM
//
// with the blob's 21-byte header and the canonical encryption context as
// GCM's associated data. Real blobs are opaque too; only KMS reads them.
const (
	blobV1     = 0x01
	blobHeader = 1 + 16 + 4
	blobNonce  = 12
)

func (s *Server) encrypt(principal string, body []byte) (any, *awsError) {
	var in encryptInput
	if e := decodeInput(body, &in); e != nil {
		return nil, e
	}
	if in.KeyId == "" {
		return nil, &awsError{400, "ValidationException", "1 validation error detected: Value null at 'keyId' failed to satisfy constraint: Member must not be null"}
	}
	ks, e := s.resolve(in.KeyId)
	if e != nil {
		return nil, e
	}
	if e := ks.usable(principal, "Encrypt"); e != nil {
		return nil, e
	}
	if e := checkAlgorithm(in.EncryptionAlgorithm); e != nil {
		return nil, e
	}
	if len(in.Plaintext) == 0 || len(in.Plaintext) > 4096 {
		return nil, &awsError{400, "ValidationException", "1 validation error detected: Value at 'plaintext' failed to satisfy constraint: Member must have length less than or equal to 4096"}
	}
	ver := len(ks.versions) - 1
	blob := make([]byte, blobHeader+blobNonce, blobHeader+blobNonce+len(in.Plaintext)+16)
	blob[0] = blobV1
	copy(blob[1:17], ks.handle[:])
	binary.BigEndian.PutUint32(blob[17:blobHeader], uint32(ver))
	copy(blob[blobHeader:], random(blobNonce))
	blob = gcm(ks.versions[ver]).Seal(blob, blob[blobHeader:], in.Plaintext, blobAAD(blob[:blobHeader], in.EncryptionContext))
	return map[string]any{"CiphertextBlob": blob, "KeyId": keyARN(ks.id), "EncryptionAlgorithm": "SYMMETRIC_DEFAULT"}, nil
}

func (s *Server) decrypt(principal string, body []byte) (any, *awsError) {
	var in decryptInput
	if e := decodeInput(body, &in); e != nil {
		return nil, e
	}
	if len(in.CiphertextBlob) == 0 || len(in.CiphertextBlob) > 6144 {
		return nil, &awsError{400, "ValidationException", "1 validation error detected: Value at 'ciphertextBlob' failed to satisfy constraint: Member must have length between 1 and 6144"}
	}
	invalid := &awsError{400, "InvalidCiphertextException", ""}
	blob := in.CiphertextBlob
	var blobKey *keyState
	if len(blob) >= blobHeader+blobNonce+16 && blob[0] == blobV1 {
		if id, ok := s.handles[[16]byte(blob[1:17])]; ok {
			blobKey = s.keys[id]
		}
	}
	var ks *keyState
	if in.KeyId != "" {
		var e *awsError
		if ks, e = s.resolve(in.KeyId); e != nil {
			return nil, e
		}
		if blobKey != nil && blobKey != ks {
			return nil, &awsError{400, "IncorrectKeyException", "The key ID in the request does not identify a CMK that can perform this operation."}
		}
	} else {
		if blobKey == nil {
			return nil, invalid
		}
		if blobKey.state == stateDeleted {
			return nil, &awsError{400, "NotFoundException", "Key '" + keyARN(blobKey.id) + "' does not exist"}
		}
		ks = blobKey
	}
	if e := ks.usable(principal, "Decrypt"); e != nil {
		return nil, e
	}
	if e := checkAlgorithm(in.EncryptionAlgorithm); e != nil {
		return nil, e
	}
	if blobKey == nil {
		return nil, invalid
	}
	ver := binary.BigEndian.Uint32(blob[17:blobHeader])
	if int(ver) >= len(ks.versions) {
		return nil, invalid
	}
	pt, err := gcm(ks.versions[ver]).Open(nil, blob[blobHeader:blobHeader+blobNonce], blob[blobHeader+blobNonce:], blobAAD(blob[:blobHeader], in.EncryptionContext))
	if err != nil {
		return nil, invalid
	}
	return map[string]any{"Plaintext": pt, "KeyId": keyARN(ks.id), "EncryptionAlgorithm": "SYMMETRIC_DEFAULT"}, nil
}

// blobAAD authenticates the header and the encryption context; the context
// is canonicalised (sorted, length-prefixed) because KMS treats it as an
// unordered map.
func blobAAD(header []byte, ec map[string]string) []byte {
	aad := bytes.Clone(header)
	for _, k := range slices.Sorted(maps.Keys(ec)) {
		aad = binary.BigEndian.AppendUint32(aad, uint32(len(k)))
		aad = append(aad, k...)
		aad = binary.BigEndian.AppendUint32(aad, uint32(len(ec[k])))
		aad = append(aad, ec[k]...)
	}
	return aad
}

func gcm(key []byte) cipher.AEAD {
	b, err := aes.NewCipher(key)
	if err != nil {
		panic(err) // keys are always 32 bytes
	}
	a, err := cipher.NewGCM(b)
	if err != nil {
		panic(err)
	}
	return a
}

// ---- STS ----

type stsErrorResponse struct {
	XMLName   xml.Name `xml:"https://sts.amazonaws.com/doc/2011-06-15/ ErrorResponse"`
	Type      string   `xml:"Error>Type"`
	Code      string   `xml:"Error>Code"`
	Message   string   `xml:"Error>Message"`
	RequestID string   `xml:"RequestId"`
}

type assumeRoleResponse struct {
	XMLName         xml.Name  `xml:"https://sts.amazonaws.com/doc/2011-06-15/ AssumeRoleResponse"`
	AccessKeyID     string    `xml:"AssumeRoleResult>Credentials>AccessKeyId"`
	SecretAccessKey string    `xml:"AssumeRoleResult>Credentials>SecretAccessKey"`
	SessionToken    string    `xml:"AssumeRoleResult>Credentials>SessionToken"`
	Expiration      time.Time `xml:"AssumeRoleResult>Credentials>Expiration"`
	RoleUserARN     string    `xml:"AssumeRoleResult>AssumedRoleUser>Arn"`
	RoleUserID      string    `xml:"AssumeRoleResult>AssumedRoleUser>AssumedRoleId"`
	RequestID       string    `xml:"ResponseMetadata>RequestId"`
}

func writeSTSError(w http.ResponseWriter, e *awsError) {
	w.Header().Set("Content-Type", "text/xml")
	w.WriteHeader(e.status)
	typ := "Sender"
	if e.status >= 500 {
		typ = "Receiver"
	}
	xml.NewEncoder(w).Encode(stsErrorResponse{Type: typ, Code: e.code, Message: e.message, RequestID: requestID()})
}

func (s *Server) serveSTS(w http.ResponseWriter, r *http.Request, body []byte) {
	form, err := url.ParseQuery(string(body))
	if r.Method != http.MethodPost || err != nil || form.Get("Action") != "AssumeRole" || form.Get("Version") != "2011-06-15" {
		writeSTSError(w, &awsError{400, "InvalidAction", "Could not find operation"})
		return
	}
	principal, sess, aerr := s.authenticate(r, body, "sts")
	if aerr != nil {
		// STS spells the KMS-style codes without "Exception".
		aerr.code = strings.TrimSuffix(aerr.code, "Exception")
		if aerr.code == "UnrecognizedClient" {
			aerr.code, aerr.status = "InvalidClientTokenId", 403
		}
		writeSTSError(w, aerr)
		return
	}
	s.calls["AssumeRole"]++
	roleARN, sessionName := form.Get("RoleArn"), form.Get("RoleSessionName")
	if sess != nil || roleARN != RoleARN || !s.roleTrust || !hmac.Equal([]byte(form.Get("ExternalId")), []byte(ExternalID)) {
		writeSTSError(w, &awsError{403, "AccessDenied", "User: " + principal + " is not authorized to perform: sts:AssumeRole on resource: " + roleARN})
		return
	}
	if sessionName == "" {
		writeSTSError(w, &awsError{400, "ValidationError", "1 validation error detected: Value null at 'roleSessionName' failed to satisfy constraint: Member must not be null"})
		return
	}
	ss := &session{
		secret:    base64.StdEncoding.EncodeToString(random(30)),
		token:     base64.StdEncoding.EncodeToString(random(64)),
		principal: "arn:aws:sts::" + Account + ":assumed-role/attested-kms-kek/" + sessionName,
		expires:   time.Now().Add(time.Hour).Truncate(time.Second),
	}
	akid := "ASIA" + strings.ToUpper(hex.EncodeToString(random(8)))
	s.sessions[akid] = ss
	w.Header().Set("Content-Type", "text/xml")
	xml.NewEncoder(w).Encode(assumeRoleResponse{
		AccessKeyID: akid, SecretAccessKey: ss.secret, SessionToken: ss.token, Expiration: ss.expires.UTC(),
		RoleUserARN: ss.principal, RoleUserID: "AROAEXAMPLE:" + sessionName, RequestID: requestID(),
	})
}

// ---- helpers ----

func random(n int) []byte {
	b := make([]byte, n)
	rand.Read(b) // never fails (crypto/rand)
	return b
}

func requestID() string {
	x := hex.EncodeToString(random(16))
	return x[:8] + "-" + x[8:12] + "-" + x[12:16] + "-" + x[16:20] + "-" + x[20:]
}

func atoi(s string) int {
	n, err := strconv.Atoi(s)
	if err != nil {
		return http.StatusInternalServerError
	}
	return n
}
