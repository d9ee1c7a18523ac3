package server_test

import (
	"bytes"
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/rsa"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/hex"
	"encoding/json"
	"encoding/pem"
	"fmt"
	"io"
	"log/slog"
	"maps"
	"math/big"
	"net"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"google.golang.org/genproto/googleapis/rpc/errdetails"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"

	"github.com/attested-kms/attested-kms/attestation"
	"github.com/attested-kms/attested-kms/attestation/collateral"
	"github.com/attested-kms/attested-kms/attestation/sevsnp"
	"github.com/attested-kms/attested-kms/attestation/sevsnp/simulate"
	"github.com/attested-kms/attested-kms/challenge"
	"github.com/attested-kms/attested-kms/config"
	"github.com/attested-kms/attested-kms/hpke"
	"github.com/attested-kms/attested-kms/internal/oidcissuer"
	"github.com/attested-kms/attested-kms/keystore/kek"
	"github.com/attested-kms/attested-kms/keystore/kek/providers"
	kmsv1 "github.com/attested-kms/attested-kms/proto/kms/v1"
	"github.com/attested-kms/attested-kms/server"
)

const audience = "api://attested-kms-test"

var (
	goodMeasurement = bytes.Repeat([]byte{0xa1}, 48)
	badMeasurement  = bytes.Repeat([]byte{0xb2}, 48)
	minTCB          = attestation.TCBParts{Bootloader: 3, TEE: 0, SNP: 8, Microcode: 115}
)

// The trusted simulator chain is the committed fixture (generating one costs
// two RSA-4096 keys); the untrusted one is generated once per test binary.
var signers struct {
	once              sync.Once
	trusted, stranger *simulate.Signer
	err               error
}

func testSigners(t testing.TB) (*simulate.Signer, *simulate.Signer) {
	t.Helper()
	signers.once.Do(func() {
		pemBytes, err := os.ReadFile("../test/fixtures/sevsnp/simulator-milan.pem")
		if err != nil {
			signers.err = err
			return
		}
		signers.trusted, signers.err = simulate.LoadSigner(pemBytes)
		if signers.err == nil {
			signers.stranger, signers.err = simulate.NewSigner(rand.Reader, "Milan")
		}
	})
	if signers.err != nil {
		t.Fatal(signers.err)
	}
	return signers.trusted, signers.stranger
}

type env struct {
	t      testing.TB
	dir    string
	iss    *oidcissuer.Issuer
	signer *simulate.Signer
	srv    *server.Server
	rel    kmsv1.KeyReleaseClient
	admin  kmsv1.AdminClient
	kid    string
	logs   *bytes.Buffer
	cfg    *config.Config
	// logw guards logs; read it with logText while the server runs.
	logw *lockedWriter
}

// logText is the server's log so far, read under the writer's lock (the
// server's background jobs may be logging).
func (e *env) logText() string {
	e.logw.mu.Lock()
	defer e.logw.mu.Unlock()
	return e.logs.String()
}

func policyYAML(issuer string) string {
	return fmt.Sprintf(`version: 1
rules:
  - name: inference
    sev_snp:
      measurements: ["%s"]
      min_tcb: {bootloader: 3, tee: 0, snp: 8, microcode: 115}
      vmpl: [0]
    token:
      issuers: ["%s"]
      audiences: ["%s"]
`, hex.EncodeToString(goodMeasurement), issuer, audience)
}

func writeTestTLS(t testing.TB, dir string) (certPath, keyPath string) {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "localhost"},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour),
		KeyUsage: x509.KeyUsageDigitalSignature | x509.KeyUsageCertSign, ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
		BasicConstraintsValid: true, IsCA: true, IPAddresses: []net.IP{net.IPv4(127, 0, 0, 1)},
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	kd, _ := x509.MarshalPKCS8PrivateKey(key)
	certPath, keyPath = filepath.Join(dir, "tls.crt"), filepath.Join(dir, "tls.key")
	if err := os.WriteFile(certPath, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(keyPath, pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: kd}), 0o600); err != nil {
		t.Fatal(err)
	}
	return certPath, keyPath
}

// newEnv starts a real KMS (bbolt, local KEK, TLS gRPC on loopback) that
// trusts the test signer's roots and a real OIDC issuer on loopback.
func newEnv(t testing.TB) *env {
	t.Helper()
	return newEnvWith(t, envOptions{})
}

// envOptions extend newEnv's environment for other platforms; the zero
// value is newEnv's.
type envOptions struct {
	// policy replaces policyYAML for the "default" key set.
	policy func(issuer string) string
	// keySets are further key sets: name -> policy (given the issuer).
	keySets map[string]func(issuer string) string
	// tdxRootsPEM, when set, is trusted as attestation.tdx.test_roots_file.
	tdxRootsPEM []byte
	// collateral writes more documents into the offline collateral directory.
	collateral func(t testing.TB, dir string)
	// kekURI replaces the local KEK file as the root KEK (any provider
	// URI), and kekCheckInterval sets kek_check_interval.
	kekURI           string
	kekCheckInterval time.Duration
	// adminClientCA, when set, turns on the network admin listener with
	// this operator CA (PEM).
	adminClientCA []byte
	// Replicas (replicas_test.go) share one store and one environment:
	// parent bounds the server's context (cancelling it ends its
	// background jobs, as a process exit would); store replaces the
	// bbolt store (the YAML value of store:); nonceFile is the shared
	// sealed nonce secret (the server creates a missing one); issuer is
	// a shared token issuer; extraYAML is appended at the top level and
	// keySetYAML to the default key set's entry (indented fields).
	parent     context.Context
	store      string
	nonceFile  string
	issuer     *oidcissuer.Issuer
	extraYAML  string
	keySetYAML string
}

func newEnvWith(t testing.TB, o envOptions) *env {
	t.Helper()
	trusted, _ := testSigners(t)
	parent := o.parent
	if parent == nil {
		parent = context.Background()
	}
	ctx, cancel := context.WithCancel(parent)
	t.Cleanup(cancel)
	dir := t.TempDir()
	iss := o.issuer
	if iss == nil {
		var err error
		if iss, err = oidcissuer.Start(ctx, oidcissuer.Options{}); err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { iss.Close() })
	}

	certPath, keyPath := writeTestTLS(t, dir)
	if o.kekURI == "" {
		kekPath := filepath.Join(dir, "kek.key")
		if err := kek.CreateLocal(kekPath); err != nil {
			t.Fatal(err)
		}
		o.kekURI = "local://" + kekPath
	}
	provider, err := providers.Open(ctx, o.kekURI, providers.Options{})
	if err != nil {
		t.Fatal(err)
	}
	var sealed []byte
	if o.nonceFile == "" {
		sealed, err = server.SealNonceSecret(ctx, provider)
	}
	_ = kek.Close(provider) // HSM sessions: the server opens its own
	if err != nil {
		t.Fatal(err)
	}
	write := func(name string, b []byte) string {
		p := filepath.Join(dir, name)
		if err := os.WriteFile(p, b, 0o600); err != nil {
			t.Fatal(err)
		}
		return p
	}
	if o.policy == nil {
		o.policy = policyYAML
	}
	cdir := simulatorCollateral(t, dir, trusted)
	if o.collateral != nil {
		o.collateral(t, cdir)
	}
	var tdxRoots, extraSets, kekCheck string
	store := fmt.Sprintf("{bbolt: %q}", filepath.Join(dir, "kms.db"))
	if o.store != "" {
		store = o.store
	}
	nonceFile := o.nonceFile
	if nonceFile == "" {
		nonceFile = write("nonce.sealed", sealed)
	}
	if o.kekCheckInterval > 0 {
		kekCheck = fmt.Sprintf("kek_check_interval: %s\n", o.kekCheckInterval)
	}
	if o.tdxRootsPEM != nil {
		tdxRoots = fmt.Sprintf("  tdx: {test_roots_file: %q}\n", write("tdx-roots.pem", o.tdxRootsPEM))
	}
	for _, name := range slices.Sorted(maps.Keys(o.keySets)) {
		extraSets += fmt.Sprintf("  - name: %s\n    policy_file: %q\n", name, write("policy-"+name+".yaml", []byte(o.keySets[name](iss.IssuerURL()))))
	}
	var adminNet string
	if o.adminClientCA != nil {
		adminNet = fmt.Sprintf("admin_auth: {client_ca_file: %q}\n", write("operator-ca.pem", o.adminClientCA))
	}
	cfgYAML := adminNet + fmt.Sprintf(`listen: {grpc: "127.0.0.1:0", http: "127.0.0.1:0", admin_socket: %q%s}
tls: {cert: %q, key: %q}
store: %s
kek: %q
%snonce: {sealed_secret_file: %q}
tokens:
  issuers:
    - issuer: %q
      discovery: %q
      audiences: [%q]
attestation:
  collateral: {dir: %q, offline: true}
  sev_snp: {test_roots_file: %q}
%slimits: {max_request_bytes: 16384}
keysets:
  - name: default
    policy_file: %q
%s%s%s`, filepath.Join(dir, "admin.sock"), adminListen(o), certPath, keyPath, store, o.kekURI, kekCheck,
		nonceFile, iss.IssuerURL(), iss.URL(), audience,
		cdir, write("roots.pem", trusted.RootsPEM()), tdxRoots, write("policy.yaml", []byte(o.policy(iss.IssuerURL()))), o.keySetYAML, extraSets, o.extraYAML)
	cfg, err := config.Parse([]byte(cfgYAML))
	if err != nil {
		t.Fatal(err)
	}
	logs := &bytes.Buffer{}
	logw := &lockedWriter{w: logs}
	log := slog.New(slog.NewJSONHandler(logw, nil))
	srv, err := server.New(ctx, cfg, log)
	if err != nil {
		t.Fatal(err)
	}
	if err := srv.Start(ctx); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(srv.Stop)

	pool := x509.NewCertPool()
	pemBytes, _ := os.ReadFile(certPath)
	pool.AppendCertsFromPEM(pemBytes)
	conn, err := grpc.NewClient(srv.GRPCAddr, grpc.WithTransportCredentials(credentials.NewTLS(&tls.Config{RootCAs: pool})))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close() })
	aconn, err := grpc.NewClient("unix://"+srv.AdminSocket, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { aconn.Close() })
	e := &env{t: t, dir: dir, iss: iss, signer: trusted, srv: srv, rel: kmsv1.NewKeyReleaseClient(conn),
		admin: kmsv1.NewAdminClient(aconn), logs: logs, cfg: cfg, logw: logw}
	keys, err := e.admin.ListKeys(ctx, &kmsv1.ListKeysRequest{Keyset: "default"})
	// A replica joining a shared store finds the keys made before it.
	if err != nil || len(keys.GetKeys()) == 0 || (o.store == "" && len(keys.GetKeys()) != 1) {
		t.Fatalf("initial keys: %v %v", keys, err)
	}
	e.kid = keys.GetKeys()[0].GetKid()
	return e
}

// adminListen is the listen.admin entry for o.
func adminListen(o envOptions) string {
	if o.adminClientCA == nil {
		return ""
	}
	return `, admin: "127.0.0.1:0"`
}

// simulatorCollateral prepares an offline collateral directory holding the
// simulated ARK's CRL, so the server checks revocation as in production.
func simulatorCollateral(t testing.TB, dir string, s *simulate.Signer) string {
	t.Helper()
	cdir := filepath.Join(dir, "collateral")
	url, der, err := s.CRL(time.Now(), false)
	if err != nil {
		t.Fatal(err)
	}
	if err := collateral.WriteDocument(cdir, url, nil, der); err != nil {
		t.Fatal(err)
	}
	return cdir
}

type lockedWriter struct {
	mu sync.Mutex
	w  io.Writer
}

func (l *lockedWriter) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.w.Write(p)
}

func (e *env) token(opts ...oidcissuer.MintOption) string {
	tok, err := e.iss.Mint(map[string]any{"aud": audience, "sub": "workload", "tid": e.iss.Identity().TenantID,
		"oid": e.iss.Identity().ObjectID}, opts...)
	if err != nil {
		e.t.Fatal(err)
	}
	return tok
}

func withToken(ctx context.Context, tok string) context.Context {
	return metadata.AppendToOutgoingContext(ctx, "authorization", "Bearer "+tok)
}

// attempt describes one release; the zero value after defaults() succeeds.
type attempt struct {
	token      string
	nonce      []byte
	wrapAlg    kmsv1.WrappingAlgorithm
	wrapPub    []byte
	wrapPriv   []byte
	fields     simulate.ReportFields
	signer     *simulate.Signer
	reportData *[64]byte
	tamper     func(report []byte)
	keyset     string
	kid        string
	padding    int
}

func (e *env) defaults(a *attempt) {
	ctx := context.Background()
	if a.token == "" {
		a.token = e.token()
	}
	if a.nonce == nil {
		// The challenge is always fetched with a good token, so a refusal
		// is caused by the release request alone.
		ch, err := e.rel.GetChallenge(withToken(ctx, e.token()), &kmsv1.GetChallengeRequest{})
		if err != nil {
			e.t.Fatalf("GetChallenge: %v", err)
		}
		a.nonce = ch.GetNonce()
	}
	if a.wrapPub == nil {
		kp, err := hpke.GenerateKeyPair(rand.Reader)
		if err != nil {
			e.t.Fatal(err)
		}
		a.wrapAlg, a.wrapPub, a.wrapPriv = kmsv1.WrappingAlgorithm_WRAPPING_ALGORITHM_HPKE_X25519, kp.Public, kp.Private
	}
	if a.fields.Measurement == [48]byte{} {
		copy(a.fields.Measurement[:], goodMeasurement)
	}
	if a.fields.TCB == (attestation.TCBParts{}) {
		a.fields.TCB = minTCB
	}
	if a.signer == nil {
		a.signer = e.signer
	}
	if a.keyset == "" {
		a.keyset = "default"
	}
	if a.kid == "" {
		a.kid = e.kid
	}
}

func (e *env) release(a attempt) (*kmsv1.ReleaseKeyResponse, *attempt, error) {
	e.t.Helper()
	e.defaults(&a)
	rd, err := hpke.BindingDigest(a.nonce, a.wrapPub)
	if err != nil {
		rd = [64]byte{}
	}
	if a.reportData != nil {
		rd = *a.reportData
	}
	a.fields.ReportData = rd
	report, certs, err := a.signer.Sign(a.fields)
	if err != nil {
		e.t.Fatal(err)
	}
	if a.tamper != nil {
		a.tamper(report)
	}
	if a.padding > 0 {
		certs = append(certs, make([]byte, a.padding)...)
	}
	resp, err := e.rel.ReleaseKey(withToken(context.Background(), a.token), &kmsv1.ReleaseKeyRequest{
		Keyset: a.keyset, Kid: a.kid, Nonce: a.nonce,
		Evidence:    &kmsv1.Evidence{Type: "sev-snp", Report: report, Certificates: certs},
		WrappingKey: &kmsv1.WrappingKey{Algorithm: a.wrapAlg, PublicKey: a.wrapPub},
	})
	return resp, &a, err
}

func reasonOf(err error) string {
	st, _ := status.FromError(err)
	for _, d := range st.Details() {
		if info, ok := d.(*errdetails.ErrorInfo); ok {
			return info.GetReason()
		}
	}
	return ""
}

func TestReleaseGranted(t *testing.T) {
	e := newEnv(t)
	resp, a, err := e.release(attempt{})
	if err != nil {
		t.Fatalf("release: %v", err)
	}
	if resp.GetKid() != e.kid || resp.GetKeyset() != "default" || len(resp.GetPublicKey()) != 32 {
		t.Fatalf("unexpected response metadata: %v", resp)
	}
	if resp.GetOhttpKeyId() != uint32(mustHexByte(t, e.kid[:2])) {
		t.Fatalf("ohttp key id %d does not match kid %s", resp.GetOhttpKeyId(), e.kid)
	}
	priv, err := hpke.UnwrapX25519(a.wrapPriv, resp.GetKid(), a.nonce, resp.GetWrappedKey())
	if err != nil {
		t.Fatalf("unwrap: %v", err)
	}
	pub, err := hpke.PublicFromPrivate(priv)
	if err != nil || !bytes.Equal(pub, resp.GetPublicKey()) {
		t.Fatal("released private key does not match the public key")
	}
	// The decision log names the decision and carries no secret.
	logs := e.logs.String()
	if !strings.Contains(logs, `"decision":"granted"`) || !strings.Contains(logs, `"rule":"inference"`) {
		t.Fatalf("no granted decision line in logs:\n%s", logs)
	}
	for name, secret := range map[string][]byte{"private key": priv, "nonce": a.nonce, "token": []byte(a.token)} {
		for _, enc := range []string{string(secret), hex.EncodeToString(secret), fmt.Sprintf("%x", secret)} {
			if len(enc) > 8 && strings.Contains(logs, enc) {
				t.Fatalf("logs contain the %s", name)
			}
		}
	}
}

func TestReleaseRSAWrappingKey(t *testing.T) {
	e := newEnv(t)
	priv, err := rsa.GenerateKey(rand.Reader, 3072)
	if err != nil {
		t.Fatal(err)
	}
	der, _ := x509.MarshalPKIXPublicKey(&priv.PublicKey)
	resp, _, err := e.release(attempt{wrapAlg: kmsv1.WrappingAlgorithm_WRAPPING_ALGORITHM_RSA_AES_KEY_WRAP_256, wrapPub: der})
	if err != nil {
		t.Fatalf("release: %v", err)
	}
	key, err := hpke.UnwrapRSA(priv, resp.GetWrappedKey())
	if err != nil {
		t.Fatal(err)
	}
	if pub, _ := hpke.PublicFromPrivate(key); !bytes.Equal(pub, resp.GetPublicKey()) {
		t.Fatal("RSA-unwrapped key does not match the public key")
	}
}

func mustHexByte(t *testing.T, s string) byte {
	b, err := hex.DecodeString(s)
	if err != nil || len(b) != 1 {
		t.Fatal(s)
	}
	return b[0]
}

// TestReleaseRefusals is the bad-input list: every refusal has its gRPC
// code and machine-readable reason, and the server keeps serving.
func TestReleaseRefusals(t *testing.T) {
	e := newEnv(t)
	_, stranger := testSigners(t)
	now := time.Now()

	otherIssuer, err := challenge.NewIssuer(bytes.Repeat([]byte{7}, challenge.SecretSize), challenge.Options{})
	if err != nil {
		t.Fatal(err)
	}
	foreignNonce, _, _ := otherIssuer.Issue()
	staleIssuer, err := challenge.NewIssuer(bytes.Repeat([]byte{7}, challenge.SecretSize), challenge.Options{Now: func() time.Time { return now.Add(-time.Hour) }})
	if err != nil {
		t.Fatal(err)
	}
	staleForeign, _, _ := staleIssuer.Issue()
	forged := func() []byte {
		ch, err := e.rel.GetChallenge(withToken(context.Background(), e.token()), &kmsv1.GetChallengeRequest{})
		if err != nil {
			t.Fatal(err)
		}
		n := bytes.Clone(ch.GetNonce())
		n[20] ^= 1
		return n
	}()
	smallRSA, err := rsa.GenerateKey(rand.Reader, 2048)
	if err != nil {
		t.Fatal(err)
	}
	smallDER, _ := x509.MarshalPKIXPublicKey(&smallRSA.PublicKey)
	wrongRD := [64]byte{1, 2, 3}
	debugFields := simulate.ReportFields{Policy: simulate.DefaultPolicy | sevsnp.PolicyDebug}
	lowTCB := simulate.ReportFields{TCB: attestation.TCBParts{Bootloader: 3, TEE: 0, SNP: 7, Microcode: 115}}
	var badM simulate.ReportFields
	copy(badM.Measurement[:], badMeasurement)

	// A disabled second key, so the default key stays usable for the rest.
	rotated, err := e.admin.RotateKeys(context.Background(), &kmsv1.RotateKeysRequest{Keyset: "default"})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := e.admin.SetKeyState(context.Background(), &kmsv1.SetKeyStateRequest{Keyset: "default", Kid: rotated.GetKid(), State: kmsv1.KeyState_KEY_STATE_DISABLED}); err != nil {
		t.Fatal(err)
	}

	cases := []struct {
		name   string
		a      attempt
		code   codes.Code
		reason string
		detail string
	}{
		{"tampered report signature", attempt{tamper: func(r []byte) { r[0x2A0+5] ^= 0xff }}, codes.PermissionDenied, "EVIDENCE_SIGNATURE_INVALID", ""},
		{"tampered measurement", attempt{tamper: func(r []byte) { r[0x90] ^= 0x01 }}, codes.PermissionDenied, "EVIDENCE_SIGNATURE_INVALID", ""},
		{"chain to an untrusted root", attempt{signer: stranger}, codes.PermissionDenied, "EVIDENCE_UNTRUSTED_ROOT", ""},
		{"debug guest", attempt{fields: debugFields}, codes.PermissionDenied, "POLICY_DENIED", "debug"},
		{"measurement not allowed", attempt{fields: badM}, codes.PermissionDenied, "POLICY_DENIED", "measurement"},
		{"TCB below minimum", attempt{fields: lowTCB}, codes.PermissionDenied, "POLICY_DENIED", "snp"},
		{"report data not matching the binding", attempt{reportData: &wrongRD}, codes.PermissionDenied, "BINDING_MISMATCH", ""},
		{"forged nonce", attempt{nonce: forged}, codes.InvalidArgument, "NONCE_INVALID", ""},
		{"other-server nonce", attempt{nonce: foreignNonce}, codes.InvalidArgument, "NONCE_OTHER_SERVER", ""},
		{"garbage nonce", attempt{nonce: []byte("not a nonce")}, codes.InvalidArgument, "NONCE_MALFORMED", ""},
		{"expired token", attempt{token: e.token(oidcissuer.WithExpired())}, codes.Unauthenticated, "TOKEN_EXPIRED", ""},
		{"wrong audience", attempt{token: mint(t, e, map[string]any{"aud": "api://someone-else"})}, codes.Unauthenticated, "TOKEN_AUDIENCE", ""},
		{"wrong issuer", attempt{token: mint(t, e, map[string]any{"iss": "https://sts.windows.net/evil/"})}, codes.Unauthenticated, "TOKEN_ISSUER", ""},
		{"alg none", attempt{token: e.token(oidcissuer.WithAlgNone())}, codes.Unauthenticated, "TOKEN_ALGORITHM", ""},
		{"HS256 signed with the public key", attempt{token: e.token(oidcissuer.WithHS256PublicKey())}, codes.Unauthenticated, "TOKEN_ALGORITHM", ""},
		{"unknown JWKS kid", attempt{token: e.token(oidcissuer.WithUnknownKey())}, codes.Unauthenticated, "TOKEN_UNKNOWN_KEY", ""},
		{"unknown key set", attempt{keyset: "nope"}, codes.NotFound, "KEYSET_NOT_FOUND", ""},
		{"unknown kid", attempt{kid: "00112233445566ff"}, codes.NotFound, "KEY_NOT_FOUND", ""},
		{"malformed kid", attempt{kid: "XYZ"}, codes.InvalidArgument, "BAD_REQUEST", ""},
		{"disabled key", attempt{kid: rotated.GetKid()}, codes.FailedPrecondition, "KEY_DISABLED", ""},
		{"malformed wrapping key", attempt{wrapAlg: kmsv1.WrappingAlgorithm_WRAPPING_ALGORITHM_HPKE_X25519, wrapPub: []byte{1, 2, 3}}, codes.InvalidArgument, "WRAPPING_KEY_INVALID", ""},
		{"all-zero wrapping key", attempt{wrapAlg: kmsv1.WrappingAlgorithm_WRAPPING_ALGORITHM_HPKE_X25519, wrapPub: make([]byte, 32)}, codes.InvalidArgument, "WRAPPING_KEY_INVALID", ""},
		{"low-order wrapping key", attempt{wrapAlg: kmsv1.WrappingAlgorithm_WRAPPING_ALGORITHM_HPKE_X25519, wrapPub: append([]byte{1}, make([]byte, 31)...)}, codes.InvalidArgument, "WRAPPING_KEY_INVALID", ""},
		{"RSA wrapping key under 3072 bits", attempt{wrapAlg: kmsv1.WrappingAlgorithm_WRAPPING_ALGORITHM_RSA_AES_KEY_WRAP_256, wrapPub: smallDER}, codes.InvalidArgument, "WRAPPING_KEY_INVALID", ""},
		{"no wrapping algorithm", attempt{wrapAlg: kmsv1.WrappingAlgorithm_WRAPPING_ALGORITHM_UNSPECIFIED, wrapPub: make([]byte, 32)}, codes.InvalidArgument, "WRAPPING_KEY_INVALID", ""},
		{"oversized request", attempt{padding: 32 << 10}, codes.ResourceExhausted, "", ""},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			_, _, err := e.release(c.a)
			if status.Code(err) != c.code {
				t.Fatalf("code %v (%v), want %v", status.Code(err), err, c.code)
			}
			if got := reasonOf(err); got != c.reason {
				t.Fatalf("reason %q (%v), want %q", got, err, c.reason)
			}
			if c.detail != "" && !strings.Contains(status.Convert(err).Message(), c.detail) {
				t.Fatalf("message %q does not mention %q", status.Convert(err).Message(), c.detail)
			}
		})
	}
	t.Run("expired nonce", func(t *testing.T) {
		// An expired nonce of this server: same secret, issued an hour ago.
		secret := unsealNonceSecret(t, e)
		old, err := challenge.NewIssuer(secret, challenge.Options{Now: func() time.Time { return now.Add(-time.Hour) }})
		if err != nil {
			t.Fatal(err)
		}
		n, _, _ := old.Issue()
		_, _, err = e.release(attempt{nonce: n})
		if status.Code(err) != codes.FailedPrecondition || reasonOf(err) != "NONCE_EXPIRED" {
			t.Fatalf("got %v / %q, want FailedPrecondition / NONCE_EXPIRED", err, reasonOf(err))
		}
		_, _, err = e.release(attempt{nonce: staleForeign})
		if reasonOf(err) != "NONCE_OTHER_SERVER" {
			t.Fatalf("stale foreign nonce: %v", err)
		}
	})
	t.Run("no token", func(t *testing.T) {
		_, err := e.rel.GetChallenge(context.Background(), &kmsv1.GetChallengeRequest{})
		if status.Code(err) != codes.Unauthenticated || reasonOf(err) != "TOKEN_MISSING" {
			t.Fatalf("got %v", err)
		}
	})
	// After every refusal the server still grants a good request.
	if _, _, err := e.release(attempt{}); err != nil {
		t.Fatalf("good release after refusals: %v", err)
	}
	if n := strings.Count(e.logs.String(), `"decision":"denied"`); n < len(cases)-1 {
		t.Fatalf("%d denied decision lines logged, want at least %d", n, len(cases)-1)
	}
}

func mint(t *testing.T, e *env, claims map[string]any) string {
	base := map[string]any{"aud": audience, "sub": "workload"}
	for k, v := range claims {
		base[k] = v
	}
	tok, err := e.iss.Mint(base)
	if err != nil {
		t.Fatal(err)
	}
	return tok
}

func unsealNonceSecret(t *testing.T, e *env) []byte {
	t.Helper()
	p, err := kek.Open(context.Background(), e.cfg.KEK)
	if err != nil {
		t.Fatal(err)
	}
	sealed, err := os.ReadFile(e.cfg.Nonce.SealedSecretFile)
	if err != nil {
		t.Fatal(err)
	}
	var w kek.Wrapped
	if err := json.Unmarshal(sealed, &w); err != nil {
		t.Fatal(err)
	}
	s, err := p.Unwrap(context.Background(), w, []byte("attested-kms/v1 nonce-secret"))
	if err != nil {
		t.Fatal(err)
	}
	return s
}
