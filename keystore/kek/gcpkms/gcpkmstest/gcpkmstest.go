// Package gcpkmstest runs a loopback Cloud KMS for tests: a gRPC server over
// TLS that implements the KeyManagementService Encrypt and Decrypt RPCs the
// way the real service behaves for symmetric keys, so the official client
// library can be pointed at it.
//
// What it models:
//   - CryptoKeys with numbered versions and a primary; Encrypt by key name
//     uses the primary (or a named version), Decrypt finds the version from
//     the ciphertext, as Cloud KMS does.
//   - Real encryption: AES-256-GCM under a random secret per version, with
//     the request's additional_authenticated_data bound, so tampering, a
//     wrong key or a wrong AAD fail with INVALID_ARGUMENT "Decryption
//     failed: verify that 'name' refers to the correct CryptoKey."
//   - Version states ENABLED, DISABLED, DESTROY_SCHEDULED and DESTROYED:
//     using a version that is not enabled fails with FAILED_PRECONDITION.
//   - Bearer-token authentication (UNAUTHENTICATED without a known token)
//     and a per-key IAM grant of the caller's principal (PERMISSION_DENIED
//     when revoked); NOT_FOUND for a key that does not exist.
//   - Request CRC32C checks (INVALID_ARGUMENT on mismatch) and the
//     verified_* flags and response checksums.
//   - Faults: outage (UNAVAILABLE), throttling (RESOURCE_EXHAUSTED), stalls
//     (a request that never answers), bits flipped in transit in either
//     direction, and a stopped server (connection refused).
package gcpkmstest

import (
	"context"
	"crypto/aes"
	"crypto/cipher"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/subtle"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/binary"
	"fmt"
	"hash/crc32"
	"math/big"
	"net"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"cloud.google.com/go/auth"
	"cloud.google.com/go/kms/apiv1/kmspb"
	"google.golang.org/api/option"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/types/known/wrapperspb"

	"github.com/attested-kms/attested-kms/keystore/kek/kektest"
)

// Principal is the identity the default token authenticates as.
const Principal = "serviceAccount:attested-kms@test-project.iam.gserviceaccount.com"

// maxDataSize is Cloud KMS's limit on plaintext and AAD for software keys.
const maxDataSize = 64 << 10

// Ciphertext layout of this fake (the real format is also opaque and also
// names the key version inside):
//
//	key id (16) || version (4, big endian) || nonce (12) || AES-256-GCM(plaintext)
//
// with GCM's AAD = key id || version || request AAD, so the header cannot be
// swapped either.
const (
	keyIDSize  = 16
	headerSize = keyIDSize + 4
	nonceSize  = 12
	minCTSize  = headerSize + nonceSize + 16
)

// Server is a loopback Cloud KMS. Its methods are safe for concurrent use.
type Server struct {
	addr  string
	pool  *x509.CertPool
	grpc  *grpc.Server
	token string

	mu               sync.Mutex
	tokens           map[string]string     // bearer token -> principal
	keys             map[string]*cryptoKey // CryptoKey resource name -> key
	outage           bool
	stall            bool
	throttle         int
	corruptRequests  int
	corruptResponses int
	calls            int
	stopped          bool
}

type cryptoKey struct {
	id       [keyIDSize]byte
	versions []*version // versions[i] is version i+1
	primary  int        // version number, 0 for none
	grants   map[string]bool
}

type version struct {
	state kmspb.CryptoKeyVersion_CryptoKeyVersionState
	aead  cipher.AEAD
}

// Start runs a server on 127.0.0.1 until the test ends.
func Start(t testing.TB) *Server {
	t.Helper()
	cert, pool, err := selfSigned()
	if err != nil {
		t.Fatalf("gcpkmstest: certificate: %v", err)
	}
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatalf("gcpkmstest: listen: %v", err)
	}
	s := &Server{
		addr:   lis.Addr().String(),
		pool:   pool,
		token:  rand.Text(),
		keys:   make(map[string]*cryptoKey),
		tokens: make(map[string]string),
	}
	s.tokens[s.token] = Principal
	s.grpc = grpc.NewServer(grpc.Creds(credentials.NewTLS(&tls.Config{
		Certificates: []tls.Certificate{cert},
		MinVersion:   tls.VersionTLS12,
	})))
	kmspb.RegisterKeyManagementServiceServer(s.grpc, &service{s: s})
	go func() { _ = s.grpc.Serve(lis) }()
	t.Cleanup(s.Stop)
	return s
}

// Addr is the server's host:port.
func (s *Server) Addr() string { return s.addr }

// ClientOptions point the Cloud KMS client at the server, trusting its
// certificate and authenticating as Principal.
func (s *Server) ClientOptions() []option.ClientOption {
	return s.ClientOptionsWithToken(s.token)
}

// ClientOptionsWithToken is ClientOptions with another bearer token ("" sends
// none), to exercise authentication failures.
func (s *Server) ClientOptionsWithToken(token string) []option.ClientOption {
	opts := s.TransportOptions()
	if token == "" {
		return append(opts, option.WithoutAuthentication())
	}
	return append(opts, option.WithAuthCredentials(auth.NewCredentials(&auth.CredentialsOptions{
		TokenProvider: staticToken(token),
	})))
}

// TransportOptions point the client at the server and trust its
// certificate, leaving credentials to the caller (for example a workload
// identity federation configuration whose token the test registered with
// AddToken).
func (s *Server) TransportOptions() []option.ClientOption {
	return []option.ClientOption{
		option.WithEndpoint(s.addr),
		option.WithGRPCDialOption(grpc.WithTransportCredentials(credentials.NewTLS(&tls.Config{
			RootCAs:    s.pool,
			MinVersion: tls.VersionTLS12,
		}))),
		option.WithTelemetryDisabled(),
	}
}

// AddToken makes the server accept token as principal.
func (s *Server) AddToken(token, principal string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.tokens[token] = principal
}

type staticToken string

func (t staticToken) Token(context.Context) (*auth.Token, error) {
	return &auth.Token{Value: string(t), Type: "Bearer", Expiry: time.Now().Add(time.Hour)}, nil
}

// Stop shuts the server down; later calls see connection refused.
func (s *Server) Stop() {
	s.mu.Lock()
	stopped := s.stopped
	s.stopped = true
	s.mu.Unlock()
	if !stopped {
		// Stop cancels the contexts of running handlers, so stalled ones
		// return too.
		s.grpc.Stop()
	}
}

// Key is a CryptoKey on a Server, with the owner's controls. It implements
// kektest.Owner and kektest.Deleter.
type Key struct {
	s    *Server
	name string
}

var (
	_ kektest.Owner   = (*Key)(nil)
	_ kektest.Deleter = (*Key)(nil)
	_ kektest.Network = (*Server)(nil)
)

// CreateKey creates projects/test-project/locations/global/keyRings/test/cryptoKeys/<id>
// with one enabled primary version and Principal granted
// roles/cloudkms.cryptoKeyEncrypterDecrypter on it.
func (s *Server) CreateKey(t testing.TB, id string) *Key {
	t.Helper()
	return s.CreateKeyNamed(t, "projects/test-project/locations/global/keyRings/test/cryptoKeys/"+id)
}

// CreateKeyNamed is CreateKey with a full CryptoKey resource name.
func (s *Server) CreateKeyNamed(t testing.TB, name string) *Key {
	t.Helper()
	if _, ok := parseKeyName(name); !ok {
		t.Fatalf("gcpkmstest: %q is not a CryptoKey name", name)
	}
	k := &cryptoKey{grants: map[string]bool{Principal: true}}
	if _, err := rand.Read(k.id[:]); err != nil {
		t.Fatal(err)
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if _, dup := s.keys[name]; dup {
		t.Fatalf("gcpkmstest: key %s exists", name)
	}
	s.keys[name] = k
	s.addVersionLocked(t, k)
	return &Key{s: s, name: name}
}

func (s *Server) addVersionLocked(t testing.TB, k *cryptoKey) int {
	secret := make([]byte, 32)
	if _, err := rand.Read(secret); err != nil {
		t.Fatal(err)
	}
	block, err := aes.NewCipher(secret)
	if err != nil {
		t.Fatal(err)
	}
	aead, err := cipher.NewGCM(block)
	if err != nil {
		t.Fatal(err)
	}
	k.versions = append(k.versions, &version{state: kmspb.CryptoKeyVersion_ENABLED, aead: aead})
	k.primary = len(k.versions)
	return k.primary
}

// Name is the CryptoKey resource name.
func (k *Key) Name() string { return k.name }

// URI is the provider URI, gcp-kms://<name>.
func (k *Key) URI() string { return "gcp-kms://" + k.name }

// VersionName is the resource name of version n.
func (k *Key) VersionName(n int) string {
	return k.name + "/cryptoKeyVersions/" + strconv.Itoa(n)
}

func (k *Key) with(t testing.TB, f func(*cryptoKey)) {
	t.Helper()
	k.s.mu.Lock()
	defer k.s.mu.Unlock()
	ck, ok := k.s.keys[k.name]
	if !ok {
		t.Fatalf("gcpkmstest: key %s removed", k.name)
	}
	f(ck)
}

// Rotate adds a version and makes it primary, returning its number.
func (k *Key) Rotate(t testing.TB) int {
	t.Helper()
	var n int
	k.with(t, func(ck *cryptoKey) { n = k.s.addVersionLocked(t, ck) })
	return n
}

// SetVersionState sets version n's state directly (the owner's
// UpdateCryptoKeyVersion, DestroyCryptoKeyVersion, RestoreCryptoKeyVersion).
func (k *Key) SetVersionState(t testing.TB, n int, st kmspb.CryptoKeyVersion_CryptoKeyVersionState) {
	t.Helper()
	k.with(t, func(ck *cryptoKey) {
		if n < 1 || n > len(ck.versions) {
			t.Fatalf("gcpkmstest: key %s has no version %d", k.name, n)
		}
		if ck.versions[n-1].state == kmspb.CryptoKeyVersion_DESTROYED {
			t.Fatalf("gcpkmstest: version %d of %s is destroyed for good", n, k.name)
		}
		ck.versions[n-1].state = st
	})
}

func (k *Key) transition(t testing.TB, from, to kmspb.CryptoKeyVersion_CryptoKeyVersionState) {
	t.Helper()
	k.with(t, func(ck *cryptoKey) {
		for _, v := range ck.versions {
			if v.state == from {
				v.state = to
			}
		}
	})
}

// Disable disables every enabled version, as an owner switching the key
// off does.
func (k *Key) Disable(t testing.TB) {
	t.Helper()
	k.transition(t, kmspb.CryptoKeyVersion_ENABLED, kmspb.CryptoKeyVersion_DISABLED)
}

// Enable enables every disabled version.
func (k *Key) Enable(t testing.TB) {
	t.Helper()
	k.transition(t, kmspb.CryptoKeyVersion_DISABLED, kmspb.CryptoKeyVersion_ENABLED)
}

// Delete schedules every version that is not destroyed for destruction
// (Cloud KMS keys cannot be deleted, only their versions destroyed after a
// scheduled period).
func (k *Key) Delete(t testing.TB) {
	t.Helper()
	k.with(t, func(ck *cryptoKey) {
		for _, v := range ck.versions {
			if v.state == kmspb.CryptoKeyVersion_ENABLED || v.state == kmspb.CryptoKeyVersion_DISABLED {
				v.state = kmspb.CryptoKeyVersion_DESTROY_SCHEDULED
			}
		}
	})
}

// Restore cancels scheduled destruction and then enables the versions, as
// a customer does: Cloud KMS restores a version to DISABLED.
func (k *Key) Restore(t testing.TB) {
	t.Helper()
	k.transition(t, kmspb.CryptoKeyVersion_DESTROY_SCHEDULED, kmspb.CryptoKeyVersion_DISABLED)
	k.Enable(t)
}

// Destroy destroys every version for good.
func (k *Key) Destroy(t testing.TB) {
	t.Helper()
	k.with(t, func(ck *cryptoKey) {
		for _, v := range ck.versions {
			v.state = kmspb.CryptoKeyVersion_DESTROYED
		}
	})
}

// Revoke removes Principal's grant on the key (PERMISSION_DENIED follows).
func (k *Key) Revoke(t testing.TB) { t.Helper(); k.RevokePrincipal(t, Principal) }

// Grant restores Principal's grant on the key.
func (k *Key) Grant(t testing.TB) { t.Helper(); k.GrantPrincipal(t, Principal) }

// GrantPrincipal grants roles/cloudkms.cryptoKeyEncrypterDecrypter on the
// key to principal.
func (k *Key) GrantPrincipal(t testing.TB, principal string) {
	t.Helper()
	k.with(t, func(ck *cryptoKey) { ck.grants[principal] = true })
}

// RevokePrincipal removes principal's grant on the key.
func (k *Key) RevokePrincipal(t testing.TB, principal string) {
	t.Helper()
	k.with(t, func(ck *cryptoKey) { delete(ck.grants, principal) })
}

// Remove makes the key disappear (its project deleted): NOT_FOUND follows.
func (k *Key) Remove(t testing.TB) {
	t.Helper()
	k.s.mu.Lock()
	defer k.s.mu.Unlock()
	delete(k.s.keys, k.name)
}

// Outage makes every call fail with UNAVAILABLE while on.
func (s *Server) Outage(t testing.TB, on bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.outage = on
}

// Throttle makes the next n calls fail with RESOURCE_EXHAUSTED (quota).
func (s *Server) Throttle(t testing.TB, n int) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.throttle = n
}

// Stall makes calls hang until the client gives up, while on.
func (s *Server) Stall(t testing.TB, on bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.stall = on
}

// CorruptRequests flips a bit in the data of the next n requests as if in
// transit, so the server's CRC32C check rejects them.
func (s *Server) CorruptRequests(t testing.TB, n int) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.corruptRequests = n
}

// CorruptResponses flips a bit in the data of the next n successful
// responses after their checksums are computed, so the client's check
// must catch them.
func (s *Server) CorruptResponses(t testing.TB, n int) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.corruptResponses = n
}

// Calls is the number of Encrypt and Decrypt calls received.
func (s *Server) Calls() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.calls
}

// service implements the gRPC API; the other RPCs are unimplemented.
type service struct {
	kmspb.UnimplementedKeyManagementServiceServer
	s *Server
}

func crc(b []byte) int64 { return int64(crc32.Checksum(b, crc32.MakeTable(crc32.Castagnoli))) }

// admit applies what happens before a request reaches the key: faults,
// authentication, and returns the caller's principal. It also reports
// whether this request is to be corrupted in transit.
func (s *Server) admit(ctx context.Context) (principal string, corruptReq, corruptResp bool, err error) {
	s.mu.Lock()
	s.calls++
	stall := s.stall
	s.mu.Unlock()
	if stall {
		// A load balancer that accepted the request and never answers.
		<-ctx.Done()
		return "", false, false, status.FromContextError(ctx.Err()).Err()
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.outage {
		return "", false, false, status.Error(codes.Unavailable, "The service is currently unavailable.")
	}
	if s.throttle > 0 {
		s.throttle--
		return "", false, false, status.Error(codes.ResourceExhausted, "Quota exceeded for quota metric 'Cryptographic requests' and limit 'Cryptographic requests per minute' of service 'cloudkms.googleapis.com'.")
	}
	md, _ := metadata.FromIncomingContext(ctx)
	var token string
	if v := md.Get("authorization"); len(v) == 1 {
		token, _ = strings.CutPrefix(v[0], "Bearer ")
	}
	principal, ok := s.tokens[token]
	if token == "" || !ok {
		return "", false, false, status.Error(codes.Unauthenticated, "Request had invalid authentication credentials. Expected OAuth 2 access token, login cookie or other valid authentication credential.")
	}
	if s.corruptRequests > 0 {
		s.corruptRequests--
		corruptReq = true
	}
	if s.corruptResponses > 0 {
		s.corruptResponses--
		corruptResp = true
	}
	return principal, corruptReq, corruptResp, nil
}

// lookupLocked resolves name (a CryptoKey, or a CryptoKeyVersion if
// allowVersion) and checks the principal's permission, in the order Cloud
// KMS reports problems: malformed name, missing permission, missing key.
func (s *Server) lookupLocked(name, principal, permission string, allowVersion bool) (*cryptoKey, int, error) {
	keyName, ver := name, 0
	if i := strings.Index(name, "/cryptoKeyVersions/"); i >= 0 && allowVersion {
		n, err := strconv.Atoi(name[i+len("/cryptoKeyVersions/"):])
		if err != nil || n < 1 {
			return nil, 0, status.Errorf(codes.InvalidArgument, "Resource name [%s] does not represent a valid CryptoKeyVersion.", name)
		}
		keyName, ver = name[:i], n
	}
	if _, ok := parseKeyName(keyName); !ok {
		return nil, 0, status.Errorf(codes.InvalidArgument, "Resource name [%s] does not represent a valid CryptoKey.", name)
	}
	k, ok := s.keys[keyName]
	if ok && !k.grants[principal] {
		return nil, 0, status.Errorf(codes.PermissionDenied, "Permission '%s' denied on resource '%s' (or it may not exist).", permission, keyName)
	}
	if !ok {
		// The caller is assumed to hold the permission at the project
		// level, so a missing key is NOT_FOUND rather than denied.
		return nil, 0, status.Errorf(codes.NotFound, "%s not found.", keyName)
	}
	if ver > len(k.versions) {
		return nil, 0, status.Errorf(codes.NotFound, "%s not found.", name)
	}
	return k, ver, nil
}

func checkCRC(field string, data []byte, sum *wrapperspb.Int64Value) (bool, error) {
	if sum == nil {
		return false, nil
	}
	if sum.GetValue() != crc(data) {
		return false, status.Errorf(codes.InvalidArgument, "The checksum in field %s_crc32c did not match the data in field %s.", field, field)
	}
	return true, nil
}

func flip(b []byte) []byte {
	c := append([]byte(nil), b...)
	if len(c) == 0 {
		return []byte{0x01}
	}
	c[len(c)/2] ^= 0x01
	return c
}

func notEnabled(name string, st kmspb.CryptoKeyVersion_CryptoKeyVersionState) error {
	return status.Errorf(codes.FailedPrecondition, "%s is not enabled, current state is: %s.", name, st)
}

func (v *service) Encrypt(ctx context.Context, req *kmspb.EncryptRequest) (*kmspb.EncryptResponse, error) {
	s := v.s
	principal, corruptReq, corruptResp, err := s.admit(ctx)
	if err != nil {
		return nil, err
	}
	plaintext := req.GetPlaintext()
	if corruptReq {
		plaintext = flip(plaintext)
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	k, ver, err := s.lookupLocked(req.GetName(), principal, "cloudkms.cryptoKeyVersions.useToEncrypt", true)
	if err != nil {
		return nil, err
	}
	if len(plaintext) == 0 || len(plaintext) > maxDataSize || len(req.GetAdditionalAuthenticatedData()) > maxDataSize {
		return nil, status.Errorf(codes.InvalidArgument, "The request plaintext must be 1 to %d bytes and the additional authenticated data at most %d bytes.", maxDataSize, maxDataSize)
	}
	verifiedPT, err := checkCRC("plaintext", plaintext, req.GetPlaintextCrc32C())
	if err != nil {
		return nil, err
	}
	verifiedAAD, err := checkCRC("additional_authenticated_data", req.GetAdditionalAuthenticatedData(), req.GetAdditionalAuthenticatedDataCrc32C())
	if err != nil {
		return nil, err
	}
	keyName := req.GetName()
	if ver == 0 {
		if k.primary == 0 {
			return nil, status.Errorf(codes.FailedPrecondition, "%s has no primary version.", keyName)
		}
		ver = k.primary
	} else {
		keyName = keyName[:strings.Index(keyName, "/cryptoKeyVersions/")]
	}
	verName := keyName + "/cryptoKeyVersions/" + strconv.Itoa(ver)
	kv := k.versions[ver-1]
	if kv.state != kmspb.CryptoKeyVersion_ENABLED {
		return nil, notEnabled(verName, kv.state)
	}
	ct := make([]byte, headerSize+nonceSize, minCTSize+len(plaintext))
	copy(ct, k.id[:])
	binary.BigEndian.PutUint32(ct[keyIDSize:], uint32(ver))
	if _, err := rand.Read(ct[headerSize:]); err != nil {
		return nil, status.Error(codes.Internal, "Internal error encountered.")
	}
	ct = kv.aead.Seal(ct, ct[headerSize:], plaintext, gcmAAD(ct[:headerSize], req.GetAdditionalAuthenticatedData()))
	sum := crc(ct)
	if corruptResp {
		ct = flip(ct)
	}
	return &kmspb.EncryptResponse{
		Name:                    verName,
		Ciphertext:              ct,
		CiphertextCrc32C:        wrapperspb.Int64(sum),
		VerifiedPlaintextCrc32C: verifiedPT,
		VerifiedAdditionalAuthenticatedDataCrc32C: verifiedAAD,
		ProtectionLevel: kmspb.ProtectionLevel_SOFTWARE,
	}, nil
}

func gcmAAD(header, aad []byte) []byte {
	return append(append(make([]byte, 0, len(header)+len(aad)), header...), aad...)
}

// msgWrongKey is what Cloud KMS says for every ciphertext that does not
// authenticate under the named key with the given AAD.
const msgWrongKey = "Decryption failed: verify that 'name' refers to the correct CryptoKey."

func (v *service) Decrypt(ctx context.Context, req *kmspb.DecryptRequest) (*kmspb.DecryptResponse, error) {
	s := v.s
	principal, corruptReq, corruptResp, err := s.admit(ctx)
	if err != nil {
		return nil, err
	}
	ct := req.GetCiphertext()
	if corruptReq {
		ct = flip(ct)
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	k, _, err := s.lookupLocked(req.GetName(), principal, "cloudkms.cryptoKeyVersions.useToDecrypt", false)
	if err != nil {
		return nil, err
	}
	if len(ct) == 0 {
		return nil, status.Error(codes.InvalidArgument, "The request must specify a ciphertext.")
	}
	if _, err := checkCRC("ciphertext", ct, req.GetCiphertextCrc32C()); err != nil {
		return nil, err
	}
	if _, err := checkCRC("additional_authenticated_data", req.GetAdditionalAuthenticatedData(), req.GetAdditionalAuthenticatedDataCrc32C()); err != nil {
		return nil, err
	}
	if len(ct) < minCTSize {
		return nil, status.Error(codes.InvalidArgument, "Decryption failed: the ciphertext is invalid.")
	}
	if subtle.ConstantTimeCompare(ct[:keyIDSize], k.id[:]) != 1 {
		return nil, status.Error(codes.InvalidArgument, msgWrongKey)
	}
	ver := int(binary.BigEndian.Uint32(ct[keyIDSize:headerSize]))
	if ver < 1 || ver > len(k.versions) {
		return nil, status.Error(codes.InvalidArgument, msgWrongKey)
	}
	kv := k.versions[ver-1]
	if kv.state != kmspb.CryptoKeyVersion_ENABLED {
		return nil, notEnabled(req.GetName()+"/cryptoKeyVersions/"+strconv.Itoa(ver), kv.state)
	}
	pt, err := kv.aead.Open(nil, ct[headerSize:headerSize+nonceSize], ct[headerSize+nonceSize:], gcmAAD(ct[:headerSize], req.GetAdditionalAuthenticatedData()))
	if err != nil {
		return nil, status.Error(codes.InvalidArgument, msgWrongKey)
	}
	sum := crc(pt)
	if corruptResp {
		pt = flip(pt)
	}
	return &kmspb.DecryptResponse{
		Plaintext:       pt,
		PlaintextCrc32C: wrapperspb.Int64(sum),
		UsedPrimary:     ver == k.primary,
		ProtectionLevel: kmspb.ProtectionLevel_SOFTWARE,
	}, nil
}

// parseKeyName checks projects/<p>/locations/<l>/keyRings/<r>/cryptoKeys/<k>.
func parseKeyName(name string) ([]string, bool) {
	p := strings.Split(name, "/")
	if len(p) != 8 || p[0] != "projects" || p[2] != "locations" || p[4] != "keyRings" || p[6] != "cryptoKeys" {
		return nil, false
	}
	for _, id := range []string{p[1], p[3], p[5], p[7]} {
		if id == "" {
			return nil, false
		}
	}
	return p, true
}

// selfSigned makes a throwaway certificate for 127.0.0.1 and localhost.
func selfSigned() (tls.Certificate, *x509.CertPool, error) {
	priv, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return tls.Certificate{}, nil, err
	}
	serial, err := rand.Int(rand.Reader, new(big.Int).Lsh(big.NewInt(1), 64))
	if err != nil {
		return tls.Certificate{}, nil, err
	}
	tmpl := &x509.Certificate{
		SerialNumber:          serial,
		Subject:               pkix.Name{CommonName: "gcpkmstest"},
		NotBefore:             time.Now().Add(-time.Hour),
		NotAfter:              time.Now().Add(24 * time.Hour),
		KeyUsage:              x509.KeyUsageDigitalSignature | x509.KeyUsageCertSign,
		ExtKeyUsage:           []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
		BasicConstraintsValid: true,
		IsCA:                  true,
		IPAddresses:           []net.IP{net.IPv4(127, 0, 0, 1)},
		DNSNames:              []string{"localhost"},
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &priv.PublicKey, priv)
	if err != nil {
		return tls.Certificate{}, nil, err
	}
	leaf, err := x509.ParseCertificate(der)
	if err != nil {
		return tls.Certificate{}, nil, err
	}
	pool := x509.NewCertPool()
	pool.AddCert(leaf)
	return tls.Certificate{Certificate: [][]byte{der}, PrivateKey: priv, Leaf: leaf}, pool, nil
}

// String describes the server for test logs.
func (s *Server) String() string { return fmt.Sprintf("gcpkmstest.Server(%s)", s.addr) }
