package server_test

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"math/big"
	"net"
	"net/url"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/types/known/emptypb"

	"github.com/attested-kms/attested-kms/internal/oidcissuer"
	kmsv1 "github.com/attested-kms/attested-kms/proto/kms/v1"
	"github.com/attested-kms/attested-kms/server"
	"github.com/attested-kms/attested-kms/token"
)

const adminAudience = "api://attested-kms-admin"

// adminRoleClaims is the app role mapping every test listener uses.
var adminRoleClaims = map[string]string{
	"KMS.Admin":    "admin",
	"KMS.Operator": "operator",
	"KMS.Auditor":  "auditor",
}

// testCA is a throwaway certificate authority.
type testCA struct {
	cert *x509.Certificate
	key  *ecdsa.PrivateKey
	pool *x509.CertPool
}

func newTestCA(t testing.TB, name string) *testCA {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: name},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour),
		KeyUsage: x509.KeyUsageCertSign, BasicConstraintsValid: true, IsCA: true,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	cert, err := x509.ParseCertificate(der)
	if err != nil {
		t.Fatal(err)
	}
	pool := x509.NewCertPool()
	pool.AddCert(cert)
	return &testCA{cert: cert, key: key, pool: pool}
}

// issue signs a leaf for cn. Client leaves carry uris (role SANs); a leaf
// with ip set is a server certificate for that address.
func (ca *testCA) issue(t testing.TB, cn string, ip net.IP, uris ...string) tls.Certificate {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	serial, err := rand.Int(rand.Reader, big.NewInt(1<<62))
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber: serial, Subject: pkix.Name{CommonName: cn, Organization: []string{"Contoso KMS operators"}},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour),
		KeyUsage: x509.KeyUsageDigitalSignature, ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth},
	}
	if ip != nil {
		tmpl.ExtKeyUsage, tmpl.IPAddresses = []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth}, []net.IP{ip}
	}
	for _, s := range uris {
		u, err := url.Parse(s)
		if err != nil {
			t.Fatal(err)
		}
		tmpl.URIs = append(tmpl.URIs, u)
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, ca.cert, &key.PublicKey, ca.key)
	if err != nil {
		t.Fatal(err)
	}
	return tls.Certificate{Certificate: [][]byte{der}, PrivateKey: key}
}

// stubAdmin answers two methods and records who called; the rest stay
// Unimplemented, which proves a call got past the interceptor.
type stubAdmin struct {
	kmsv1.UnimplementedAdminServer
	mu    sync.Mutex
	calls []stubCall
}

type stubCall struct {
	method    string
	principal server.AdminPrincipal
	ok        bool
}

func (s *stubAdmin) record(ctx context.Context, method string) {
	p, ok := server.AdminIdentity(ctx)
	s.mu.Lock()
	defer s.mu.Unlock()
	s.calls = append(s.calls, stubCall{method, p, ok})
}

func (s *stubAdmin) seen() []stubCall {
	s.mu.Lock()
	defer s.mu.Unlock()
	return slices.Clone(s.calls)
}

func (s *stubAdmin) RotateKeys(ctx context.Context, req *kmsv1.RotateKeysRequest) (*kmsv1.KeyInfo, error) {
	s.record(ctx, "RotateKeys")
	return &kmsv1.KeyInfo{Keyset: req.GetKeyset(), Kid: "00112233445566ff"}, nil
}

func (s *stubAdmin) ListKeySets(ctx context.Context, _ *kmsv1.ListKeySetsRequest) (*kmsv1.ListKeySetsResponse, error) {
	s.record(ctx, "ListKeySets")
	return &kmsv1.ListKeySetsResponse{Keysets: []*kmsv1.KeySet{{Name: "default"}}}, nil
}

// adminNet is an Admin service behind NewAdminAuth on a loopback TLS
// listener, with an operator CA and a real OIDC issuer.
type adminNet struct {
	t        *testing.T
	addr     string
	serverCA *testCA
	opCA     *testCA
	iss      *oidcissuer.Issuer
	stub     *stubAdmin
}

type adminNetOptions struct {
	noCerts, noTokens bool
	// extra registers more services on the same server.
	extra func(*grpc.Server)
}

func newAdminNet(t *testing.T, o adminNetOptions) *adminNet {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	t.Cleanup(cancel)
	iss, err := oidcissuer.Start(ctx, oidcissuer.Options{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { iss.Close() })
	e := &adminNet{t: t, serverCA: newTestCA(t, "test server CA"), opCA: newTestCA(t, "operator CA"), iss: iss, stub: &stubAdmin{}}

	cfg := server.AdminAuthConfig{}
	if !o.noCerts {
		cfg.ClientCAs = e.opCA.pool
	}
	if !o.noTokens {
		v, err := token.NewVerifier(ctx, token.Config{Issuers: []token.IssuerConfig{{
			Issuer: iss.IssuerURL(), JWKSURL: iss.JWKSURL(), Audiences: []string{adminAudience},
		}}})
		if err != nil {
			t.Fatal(err)
		}
		cfg.Tokens, cfg.RoleClaims = v, adminRoleClaims
	}
	opts, err := server.NewAdminAuth(cfg)
	if err != nil {
		t.Fatal(err)
	}
	base := &tls.Config{Certificates: []tls.Certificate{e.serverCA.issue(t, "kms", net.IPv4(127, 0, 0, 1))}}
	opts = append(opts, grpc.Creds(credentials.NewTLS(server.AdminTLSConfig(base, cfg.ClientCAs))))
	e.addr = serveAdmin(t, e.stub, o.extra, opts...)
	return e
}

// serveAdmin serves stub on a loopback port until the test ends.
func serveAdmin(t *testing.T, stub kmsv1.AdminServer, extra func(*grpc.Server), opts ...grpc.ServerOption) string {
	t.Helper()
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	srv := grpc.NewServer(opts...)
	kmsv1.RegisterAdminServer(srv, stub)
	if extra != nil {
		extra(srv)
	}
	go func() { _ = srv.Serve(lis) }()
	t.Cleanup(srv.Stop)
	return lis.Addr().String()
}

// dial connects with the client certificate cert, or none when nil.
func (e *adminNet) dial(cert *tls.Certificate) *grpc.ClientConn {
	e.t.Helper()
	cfg := &tls.Config{RootCAs: e.serverCA.pool, MinVersion: tls.VersionTLS13}
	if cert != nil {
		cfg.Certificates = []tls.Certificate{*cert}
	}
	conn, err := grpc.NewClient(e.addr, grpc.WithTransportCredentials(credentials.NewTLS(cfg)))
	if err != nil {
		e.t.Fatal(err)
	}
	e.t.Cleanup(func() { conn.Close() })
	return conn
}

// certClient returns an Admin client authenticated by a certificate carrying
// the given role URI SANs.
func (e *adminNet) certClient(cn string, uris ...string) kmsv1.AdminClient {
	cert := e.opCA.issue(e.t, cn, nil, uris...)
	return kmsv1.NewAdminClient(e.dial(&cert))
}

// token mints an admin token carrying the roles claim (omitted when roles
// is nil).
func (e *adminNet) token(roles any, opts ...oidcissuer.MintOption) string {
	e.t.Helper()
	claims := map[string]any{"aud": adminAudience, "sub": "admin-user", "oid": "0d5c5a4e-oper-ator0-0000-000000000001",
		"tid": e.iss.Identity().TenantID}
	if roles != nil {
		claims["roles"] = roles
	}
	tok, err := e.iss.Mint(claims, opts...)
	if err != nil {
		e.t.Fatal(err)
	}
	return tok
}

func bearer(tok string) context.Context {
	return metadata.AppendToOutgoingContext(context.Background(), "authorization", "Bearer "+tok)
}

func roleURI(role string) string { return "attested-kms:role:" + role }

// wantRefused checks err is a refusal with code and ErrorInfo reason.
func wantRefused(t *testing.T, err error, code codes.Code, reason string) {
	t.Helper()
	if status.Code(err) != code || reasonOf(err) != reason {
		t.Fatalf("got %v (reason %q), want %v %s", err, reasonOf(err), code, reason)
	}
}

// adminPolicy is the role policy of the assignment, written out
// independently of the server's table: operators change, auditors read,
// admins do everything.
var adminPolicy = map[string][]string{
	"CreateKeySet":          {"admin", "operator"},
	"UpdateKeySetSettings":  {"admin", "operator"},
	"RotateKeys":            {"admin", "operator"},
	"SetKeyState":           {"admin", "operator"},
	"SetPolicy":             {"admin", "operator"},
	"RollbackPolicy":        {"admin", "operator"},
	"RotateKEK":             {"admin", "operator"},
	"RotateIntermediateKey": {"admin", "operator"},
	"GetImportKey":          {"admin", "operator"},
	"ImportKey":             {"admin", "operator"},
	"ListKeySets":           {"admin", "auditor"},
	"ListKeys":              {"admin", "auditor"},
	"GetKey":                {"admin", "auditor"},
	"GetPolicy":             {"admin", "auditor"},
	"GetPolicyHistory":      {"admin", "auditor"},
	"GetKEKStatus":          {"admin", "auditor"},
	"GetAuditKey":           {"admin", "auditor"},
}

// TestAdminRoleTableCoversService fails when an Admin RPC has no entry in
// the role table (it would be refused to everyone) or the table names an
// RPC the service no longer has.
func TestAdminRoleTableCoversService(t *testing.T) {
	sd := kmsv1.Admin_ServiceDesc
	var names []string
	for _, m := range sd.Methods {
		names = append(names, m.MethodName)
	}
	for _, s := range sd.Streams {
		names = append(names, s.StreamName)
	}
	for _, name := range names {
		full := "/" + sd.ServiceName + "/" + name
		got := server.AdminMethodRoles(full)
		if len(got) == 0 {
			t.Errorf("%s has no entry in the admin role table", full)
			continue
		}
		var gotNames []string
		for _, r := range got {
			gotNames = append(gotNames, string(r))
		}
		if want := adminPolicy[name]; !slices.Equal(slices.Sorted(slices.Values(gotNames)), want) {
			t.Errorf("%s: roles %v, want %v", full, gotNames, want)
		}
	}
	for name := range adminPolicy {
		if !slices.Contains(names, name) {
			t.Errorf("the test policy names %s, which the Admin service does not have", name)
		}
	}
	if got := server.AdminMethodRoles("/kms.v1.Admin/NoSuchMethod"); got != nil {
		t.Errorf("unknown method has roles %v", got)
	}
}

// TestAdminAuthMatrix calls every Admin RPC as every role, by certificate
// and by token: an allowed call reaches the stub (OK or Unimplemented), any
// other is PermissionDenied.
func TestAdminAuthMatrix(t *testing.T) {
	e := newAdminNet(t, adminNetOptions{})
	type caller struct {
		role, by string
		conn     *grpc.ClientConn
		ctx      context.Context
	}
	claimOf := map[string]string{}
	for claim, role := range adminRoleClaims {
		claimOf[role] = claim
	}
	tokenConn := e.dial(nil)
	var callers []caller
	for _, role := range []string{"admin", "operator", "auditor"} {
		cert := e.opCA.issue(t, role+"-cert", nil, roleURI(role))
		callers = append(callers,
			caller{role, "certificate", e.dial(&cert), context.Background()},
			caller{role, "token", tokenConn, bearer(e.token([]string{claimOf[role]}))})
	}
	for _, c := range callers {
		for _, m := range kmsv1.Admin_ServiceDesc.Methods {
			full := "/" + kmsv1.Admin_ServiceDesc.ServiceName + "/" + m.MethodName
			err := c.conn.Invoke(c.ctx, full, &emptypb.Empty{}, &emptypb.Empty{})
			if slices.Contains(adminPolicy[m.MethodName], c.role) {
				if code := status.Code(err); code != codes.OK && code != codes.Unimplemented {
					t.Errorf("%s by %s %s: %v, want it to reach the service", m.MethodName, c.role, c.by, err)
				}
			} else if status.Code(err) != codes.PermissionDenied || reasonOf(err) != server.ReasonRoleDenied {
				t.Errorf("%s by %s %s: %v, want PermissionDenied %s", m.MethodName, c.role, c.by, err, server.ReasonRoleDenied)
			}
		}
	}
}

func TestAdminAuthCertificates(t *testing.T) {
	e := newAdminNet(t, adminNetOptions{})
	ctx := context.Background()

	t.Run("no credentials", func(t *testing.T) {
		_, err := kmsv1.NewAdminClient(e.dial(nil)).ListKeySets(ctx, &kmsv1.ListKeySetsRequest{})
		wantRefused(t, err, codes.Unauthenticated, server.ReasonCredentialsMissing)
	})
	t.Run("auditor may not rotate", func(t *testing.T) {
		_, err := e.certClient("carol", roleURI("auditor")).RotateKeys(ctx, &kmsv1.RotateKeysRequest{Keyset: "default"})
		wantRefused(t, err, codes.PermissionDenied, server.ReasonRoleDenied)
	})
	t.Run("no role", func(t *testing.T) {
		_, err := e.certClient("nobody", "spiffe://example.org/ns/kms").ListKeySets(ctx, &kmsv1.ListKeySetsRequest{})
		wantRefused(t, err, codes.PermissionDenied, server.ReasonRoleDenied)
	})
	t.Run("unknown role", func(t *testing.T) {
		_, err := e.certClient("mallory", roleURI("root"), roleURI("Admin")).ListKeySets(ctx, &kmsv1.ListKeySetsRequest{})
		wantRefused(t, err, codes.PermissionDenied, server.ReasonRoleDenied)
	})
	t.Run("token with a certificate", func(t *testing.T) {
		c := e.certClient("alice", roleURI("operator"))
		_, err := c.RotateKeys(bearer(e.token([]string{"KMS.Admin"})), &kmsv1.RotateKeysRequest{Keyset: "default"})
		wantRefused(t, err, codes.Unauthenticated, server.ReasonCredentialsAmbiguous)
	})
	if n := len(e.stub.seen()); n != 0 {
		t.Fatalf("refused calls reached the service %d times", n)
	}

	t.Run("operator rotates", func(t *testing.T) {
		c := e.certClient("alice", roleURI("operator"))
		k, err := c.RotateKeys(ctx, &kmsv1.RotateKeysRequest{Keyset: "default"})
		if err != nil || k.GetKeyset() != "default" {
			t.Fatalf("RotateKeys = %v, %v", k, err)
		}
		calls := e.stub.seen()
		got := calls[len(calls)-1]
		if !got.ok || got.principal.Method != server.AdminAuthCertificate ||
			!strings.Contains(got.principal.Subject, "CN=alice") || got.principal.Issuer != "CN=operator CA" ||
			got.principal.Serial == "" || !slices.Equal(got.principal.Roles, []server.AdminRole{server.RoleOperator}) {
			t.Fatalf("identity in the handler: %+v", got)
		}
	})
	t.Run("two roles", func(t *testing.T) {
		c := e.certClient("dave", roleURI("operator"), roleURI("auditor"))
		if _, err := c.RotateKeys(ctx, &kmsv1.RotateKeysRequest{Keyset: "default"}); err != nil {
			t.Fatal(err)
		}
		if _, err := c.ListKeySets(ctx, &kmsv1.ListKeySetsRequest{}); err != nil {
			t.Fatal(err)
		}
	})
}

// TestAdminAuthForeignCA: a certificate from another CA fails the TLS
// handshake itself, before any RPC is dispatched.
func TestAdminAuthForeignCA(t *testing.T) {
	e := newAdminNet(t, adminNetOptions{})
	rogue := newTestCA(t, "operator CA") // same name, different key
	cert := rogue.issue(t, "alice", nil, roleURI("admin"))

	conn, err := tls.Dial("tcp", e.addr, &tls.Config{
		RootCAs: e.serverCA.pool, Certificates: []tls.Certificate{cert}, NextProtos: []string{"h2"},
	})
	if err == nil {
		// In TLS 1.3 the client finishes first; the server's verdict
		// arrives as an alert on the first read.
		_, err = conn.Read(make([]byte, 1))
		conn.Close()
	}
	if err == nil || !strings.Contains(err.Error(), "unknown certificate authority") {
		t.Fatalf("handshake with a foreign client certificate: %v, want an unknown certificate authority alert", err)
	}

	_, err = kmsv1.NewAdminClient(e.dial(&cert)).ListKeySets(context.Background(), &kmsv1.ListKeySetsRequest{})
	if status.Code(err) != codes.Unavailable {
		t.Fatalf("RPC with a foreign client certificate: %v, want Unavailable (no connection)", err)
	}
	if n := len(e.stub.seen()); n != 0 {
		t.Fatalf("the service was reached %d times", n)
	}
}

func TestAdminAuthTokens(t *testing.T) {
	e := newAdminNet(t, adminNetOptions{})
	c := kmsv1.NewAdminClient(e.dial(nil))
	rotate := func(tok string) error {
		_, err := c.RotateKeys(bearer(tok), &kmsv1.RotateKeysRequest{Keyset: "default"})
		return err
	}

	for _, tc := range []struct {
		name   string
		tok    string
		code   codes.Code
		reason string
	}{
		{"expired", e.token([]string{"KMS.Operator"}, oidcissuer.WithExpired()), codes.Unauthenticated, string(token.ReasonExpired)},
		{"unknown role", e.token([]string{"KMS.Superuser", "Directory.ReadWrite"}), codes.PermissionDenied, server.ReasonRoleDenied},
		{"no roles claim", e.token(nil), codes.PermissionDenied, server.ReasonRoleDenied},
		{"roles claim not an array", e.token("KMS.Operator"), codes.PermissionDenied, server.ReasonRoleDenied},
		{"role value differs in case", e.token([]string{"kms.operator"}), codes.PermissionDenied, server.ReasonRoleDenied},
		{"auditor", e.token([]string{"KMS.Auditor"}), codes.PermissionDenied, server.ReasonRoleDenied},
		{"signed by an unpublished key", e.token([]string{"KMS.Admin"}, oidcissuer.WithUnknownKey()), codes.Unauthenticated, string(token.ReasonUnknownKey)},
		{"alg none", e.token([]string{"KMS.Admin"}, oidcissuer.WithAlgNone()), codes.Unauthenticated, string(token.ReasonAlgorithm)},
	} {
		t.Run(tc.name, func(t *testing.T) { wantRefused(t, rotate(tc.tok), tc.code, tc.reason) })
	}

	t.Run("not a bearer credential", func(t *testing.T) {
		ctx := metadata.AppendToOutgoingContext(context.Background(), "authorization", "Basic YWRtaW46YWRtaW4=")
		_, err := c.RotateKeys(ctx, &kmsv1.RotateKeysRequest{})
		wantRefused(t, err, codes.Unauthenticated, string(token.ReasonMalformed))
	})
	t.Run("two tokens", func(t *testing.T) {
		ctx := metadata.AppendToOutgoingContext(bearer(e.token([]string{"KMS.Auditor"})), "authorization", "Bearer "+e.token([]string{"KMS.Admin"}))
		_, err := c.RotateKeys(ctx, &kmsv1.RotateKeysRequest{})
		wantRefused(t, err, codes.Unauthenticated, server.ReasonCredentialsAmbiguous)
	})
	if n := len(e.stub.seen()); n != 0 {
		t.Fatalf("refused calls reached the service %d times", n)
	}

	t.Run("operator rotates", func(t *testing.T) {
		if err := rotate(e.token([]string{"KMS.Operator", "Something.Else"})); err != nil {
			t.Fatal(err)
		}
		calls := e.stub.seen()
		got := calls[len(calls)-1]
		if !got.ok || got.principal.Method != server.AdminAuthToken || got.principal.Subject != "0d5c5a4e-oper-ator0-0000-000000000001" ||
			got.principal.Issuer != e.iss.IssuerURL() || got.principal.Serial != "" ||
			!slices.Equal(got.principal.Roles, []server.AdminRole{server.RoleOperator}) {
			t.Fatalf("identity in the handler: %+v", got)
		}
	})
}

func TestAdminAuthTokenKeysUnavailable(t *testing.T) {
	e := newAdminNet(t, adminNetOptions{})
	e.iss.SetKeysUnavailable(true)
	_, err := kmsv1.NewAdminClient(e.dial(nil)).ListKeySets(bearer(e.token([]string{"KMS.Admin"})), &kmsv1.ListKeySetsRequest{})
	wantRefused(t, err, codes.Unavailable, string(token.ReasonKeysUnavailable))
}

// TestAdminAuthListenerKinds: a listener configured for one kind of
// credential refuses the other.
func TestAdminAuthListenerKinds(t *testing.T) {
	ctx := context.Background()
	t.Run("certificates only", func(t *testing.T) {
		e := newAdminNet(t, adminNetOptions{noTokens: true})
		c := kmsv1.NewAdminClient(e.dial(nil))
		_, err := c.ListKeySets(bearer(e.token([]string{"KMS.Admin"})), &kmsv1.ListKeySetsRequest{})
		wantRefused(t, err, codes.Unauthenticated, server.ReasonCredentialsNotAccepted)
		if _, err := e.certClient("erin", roleURI("admin")).ListKeySets(ctx, &kmsv1.ListKeySetsRequest{}); err != nil {
			t.Fatal(err)
		}
	})
	t.Run("tokens only", func(t *testing.T) {
		e := newAdminNet(t, adminNetOptions{noCerts: true})
		// No certificate is requested, so the client's is never sent and
		// cannot authenticate.
		_, err := e.certClient("erin", roleURI("admin")).ListKeySets(ctx, &kmsv1.ListKeySetsRequest{})
		wantRefused(t, err, codes.Unauthenticated, server.ReasonCredentialsMissing)
		c := kmsv1.NewAdminClient(e.dial(nil))
		if _, err := c.ListKeySets(bearer(e.token([]string{"KMS.Admin"})), &kmsv1.ListKeySetsRequest{}); err != nil {
			t.Fatal(err)
		}
	})
}

// TestAdminAuthPlaintext: without TLS even a valid token is refused, as it
// crossed the network in clear.
func TestAdminAuthPlaintext(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	iss, err := oidcissuer.Start(ctx, oidcissuer.Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer iss.Close()
	v, err := token.NewVerifier(ctx, token.Config{Issuers: []token.IssuerConfig{{Issuer: iss.IssuerURL(), JWKSURL: iss.JWKSURL(), Audiences: []string{adminAudience}}}})
	if err != nil {
		t.Fatal(err)
	}
	opts, err := server.NewAdminAuth(server.AdminAuthConfig{Tokens: v, RoleClaims: adminRoleClaims})
	if err != nil {
		t.Fatal(err)
	}
	stub := &stubAdmin{}
	addr := serveAdmin(t, stub, nil, opts...)
	conn, err := grpc.NewClient(addr, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	tok, err := iss.Mint(map[string]any{"aud": adminAudience, "sub": "u", "roles": []string{"KMS.Admin"}})
	if err != nil {
		t.Fatal(err)
	}
	_, err = kmsv1.NewAdminClient(conn).ListKeySets(bearer(tok), &kmsv1.ListKeySetsRequest{})
	wantRefused(t, err, codes.Unauthenticated, server.ReasonTransportInsecure)
	if n := len(stub.seen()); n != 0 {
		t.Fatalf("the service was reached %d times", n)
	}
}

// TestAdminAuthDenyByDefault: methods outside the table, unary or
// streaming, on the same server are refused even to admins.
func TestAdminAuthDenyByDefault(t *testing.T) {
	reached := make(chan string, 2)
	extra := func(s *grpc.Server) {
		s.RegisterService(&grpc.ServiceDesc{
			ServiceName: "kms.v1.Extra",
			HandlerType: (*any)(nil),
			// Shaped like generated code: the handler runs the interceptor.
			Methods: []grpc.MethodDesc{{MethodName: "Peek", Handler: func(srv any, ctx context.Context, dec func(any) error, icpt grpc.UnaryServerInterceptor) (any, error) {
				in := &emptypb.Empty{}
				if err := dec(in); err != nil {
					return nil, err
				}
				peek := func(context.Context, any) (any, error) {
					reached <- "Peek"
					return &emptypb.Empty{}, nil
				}
				return icpt(ctx, in, &grpc.UnaryServerInfo{Server: srv, FullMethod: "/kms.v1.Extra/Peek"}, peek)
			}}},
			Streams: []grpc.StreamDesc{{StreamName: "Watch", ServerStreams: true, Handler: func(any, grpc.ServerStream) error {
				reached <- "Watch"
				return nil
			}}},
		}, struct{}{})
	}
	e := newAdminNet(t, adminNetOptions{extra: extra})
	cert := e.opCA.issue(t, "root", nil, roleURI("admin"))
	conn := e.dial(&cert)

	err := conn.Invoke(context.Background(), "/kms.v1.Extra/Peek", &emptypb.Empty{}, &emptypb.Empty{})
	wantRefused(t, err, codes.PermissionDenied, server.ReasonRoleDenied)

	st, err := conn.NewStream(context.Background(), &grpc.StreamDesc{ServerStreams: true}, "/kms.v1.Extra/Watch")
	if err == nil {
		if err = st.SendMsg(&emptypb.Empty{}); err == nil {
			err = st.RecvMsg(&emptypb.Empty{})
		}
	}
	wantRefused(t, err, codes.PermissionDenied, server.ReasonRoleDenied)
	select {
	case m := <-reached:
		t.Fatalf("%s was dispatched", m)
	default:
	}
}

func TestNewAdminAuthConfig(t *testing.T) {
	pool := x509.NewCertPool()
	v, err := token.NewVerifier(context.Background(), token.Config{Issuers: []token.IssuerConfig{{Issuer: "https://issuer.example/", Audiences: []string{"a"}}}})
	if err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		name string
		cfg  server.AdminAuthConfig
		want string
	}{
		{"nothing", server.AdminAuthConfig{}, "neither"},
		{"tokens without role claims", server.AdminAuthConfig{Tokens: v}, "role claims"},
		{"role claims without tokens", server.AdminAuthConfig{ClientCAs: pool, RoleClaims: adminRoleClaims}, "without a token verifier"},
		{"unknown role", server.AdminAuthConfig{Tokens: v, RoleClaims: map[string]string{"KMS.Root": "root"}}, `"root"`},
		{"role name case", server.AdminAuthConfig{Tokens: v, RoleClaims: map[string]string{"KMS.Admin": "Admin"}}, `"Admin"`},
		{"empty app role", server.AdminAuthConfig{Tokens: v, RoleClaims: map[string]string{"": "admin"}}, "empty app role"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := server.NewAdminAuth(tc.cfg)
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("NewAdminAuth: %v, want an error mentioning %s", err, tc.want)
			}
		})
	}
	for _, cfg := range []server.AdminAuthConfig{
		{ClientCAs: pool},
		{Tokens: v, RoleClaims: adminRoleClaims},
		{ClientCAs: pool, Tokens: v, RoleClaims: adminRoleClaims},
	} {
		if opts, err := server.NewAdminAuth(cfg); err != nil || len(opts) != 2 {
			t.Fatalf("NewAdminAuth(%+v) = %d options, %v", cfg, len(opts), err)
		}
	}
}

func TestAdminTLSConfig(t *testing.T) {
	base := &tls.Config{MinVersion: tls.VersionTLS12, ServerName: "kms"}
	pool := x509.NewCertPool()
	c := server.AdminTLSConfig(base, pool)
	if c.ClientAuth != tls.VerifyClientCertIfGiven || c.ClientCAs != pool || c.MinVersion != tls.VersionTLS13 || c.ServerName != "kms" {
		t.Fatalf("with client CAs: %+v", c)
	}
	if base.ClientAuth != tls.NoClientCert || base.MinVersion != tls.VersionTLS12 {
		t.Fatal("AdminTLSConfig modified its base")
	}
	// Without operator CAs nothing is requested: crypto/tls would verify
	// against the system roots otherwise.
	if c := server.AdminTLSConfig(base, nil); c.ClientAuth != tls.NoClientCert {
		t.Fatalf("without client CAs: ClientAuth %v", c.ClientAuth)
	}
	if c := server.AdminTLSConfig(nil, pool); c.ClientAuth != tls.VerifyClientCertIfGiven {
		t.Fatalf("nil base: ClientAuth %v", c.ClientAuth)
	}
}
