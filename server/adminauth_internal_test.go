package server

import (
	"bytes"
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/json"
	"log/slog"
	"maps"
	"math/big"
	"net/url"
	"slices"
	"strings"
	"testing"
	"time"

	"google.golang.org/genproto/googleapis/rpc/errdetails"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/peer"
	"google.golang.org/grpc/status"

	kmsv1 "github.com/attested-kms/attested-kms/proto/kms/v1"
)

// selfSignedClient returns a CA pool and a client leaf it signed, valid
// for the next hour, with the given role URIs.
func selfSignedClient(t testing.TB, uris ...string) (*x509.CertPool, *x509.Certificate) {
	t.Helper()
	caKey, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	now := time.Now()
	caTmpl := &x509.Certificate{SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "ops CA"},
		NotBefore: now.Add(-time.Minute), NotAfter: now.Add(24 * time.Hour),
		KeyUsage: x509.KeyUsageCertSign, BasicConstraintsValid: true, IsCA: true}
	caDER, err := x509.CreateCertificate(rand.Reader, caTmpl, caTmpl, &caKey.PublicKey, caKey)
	if err != nil {
		t.Fatal(err)
	}
	ca, _ := x509.ParseCertificate(caDER)
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(0xbeef), Subject: pkix.Name{CommonName: "alice"},
		NotBefore: now.Add(-time.Minute), NotAfter: now.Add(time.Hour),
		KeyUsage: x509.KeyUsageDigitalSignature, ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth}}
	for _, s := range uris {
		u, err := url.Parse(s)
		if err != nil {
			t.Fatal(err)
		}
		tmpl.URIs = append(tmpl.URIs, u)
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, ca, &key.PublicKey, caKey)
	if err != nil {
		t.Fatal(err)
	}
	leaf, _ := x509.ParseCertificate(der)
	pool := x509.NewCertPool()
	pool.AddCert(ca)
	return pool, leaf
}

func tlsPeerContext(certs ...*x509.Certificate) context.Context {
	return peer.NewContext(context.Background(), &peer.Peer{
		AuthInfo: credentials.TLSInfo{State: tls.ConnectionState{PeerCertificates: certs}},
	})
}

// TestAdminAuthCertificateExpiresOnOpenConnection: the chain is checked on
// every call, so a certificate that expires while its connection stays
// open stops authenticating, and one the handshake never verified (a TLS
// configuration that merely requests certificates) never does.
func TestAdminAuthCertificateExpiresOnOpenConnection(t *testing.T) {
	pool, leaf := selfSignedClient(t, "attested-kms:role:admin")
	a, err := newAdminAuth(AdminAuthConfig{ClientCAs: pool})
	if err != nil {
		t.Fatal(err)
	}
	ctx := tlsPeerContext(leaf)
	if _, err := a.authorize(ctx, kmsv1.Admin_ListKeys_FullMethodName); err != nil {
		t.Fatalf("fresh certificate: %v", err)
	}
	a.now = func() time.Time { return leaf.NotAfter.Add(time.Second) }
	if _, err := a.authorize(ctx, kmsv1.Admin_ListKeys_FullMethodName); refusalReason(err) != ReasonClientCertificate {
		t.Fatalf("expired certificate: %v", err)
	}

	otherPool, _ := selfSignedClient(t)
	b, err := newAdminAuth(AdminAuthConfig{ClientCAs: otherPool})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := b.authorize(ctx, kmsv1.Admin_ListKeys_FullMethodName); refusalReason(err) != ReasonClientCertificate {
		t.Fatalf("certificate from another CA: %v", err)
	}
}

// refusalReason is the ErrorInfo reason of a gRPC status error.
func refusalReason(err error) string {
	for _, d := range status.Convert(err).Details() {
		if info, ok := d.(*errdetails.ErrorInfo); ok {
			return info.GetReason()
		}
	}
	return ""
}

// TestAdminAuthRefusalLog: a refused call is logged with the principal and
// the reason, and never with the credential.
func TestAdminAuthRefusalLog(t *testing.T) {
	var buf bytes.Buffer
	pool, leaf := selfSignedClient(t, "attested-kms:role:auditor")
	a, err := newAdminAuth(AdminAuthConfig{ClientCAs: pool, Log: slog.New(slog.NewTextHandler(&buf, nil))})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := a.authorize(tlsPeerContext(leaf), kmsv1.Admin_RotateKeys_FullMethodName); status.Code(err) != codes.PermissionDenied {
		t.Fatalf("auditor rotating: %v", err)
	}
	line := buf.String()
	for _, want := range []string{"admin call refused", ReasonRoleDenied, "CN=alice", "auditor", "beef", kmsv1.Admin_RotateKeys_FullMethodName} {
		if !strings.Contains(line, want) {
			t.Errorf("log line lacks %q: %s", want, line)
		}
	}
}

func FuzzRolesFromURIs(f *testing.F) {
	for _, s := range []string{"attested-kms:role:admin", "ATTESTED-KMS:role:operator", "attested-kms://role/admin",
		"attested-kms:role:auditor?x", "attested-kms:role:Admin", "spiffe://x/role:admin", "attested-kms:role:admin#f"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		u, err := url.Parse(s)
		if err != nil {
			return
		}
		roles := rolesFromURIs([]*url.URL{u, u})
		if len(roles) > 1 {
			t.Fatalf("%q: one URI gave roles %v", s, roles)
		}
		for _, r := range roles {
			if _, ok := ParseAdminRole(string(r)); !ok {
				t.Fatalf("%q: invalid role %q", s, r)
			}
			if !strings.HasPrefix(strings.ToLower(s), certRoleScheme+":"+certRolePrefix) {
				t.Fatalf("%q: role %q from a URI outside the role scheme", s, r)
			}
		}
	})
}

func FuzzRolesFromClaim(f *testing.F) {
	for _, s := range []string{`["KMS.Admin"]`, `["KMS.Admin","KMS.Admin","x"]`, `"KMS.Admin"`, `[1]`, `null`, `[]`, `{"a":1}`} {
		f.Add([]byte(s))
	}
	mapping := map[string]AdminRole{"KMS.Admin": RoleAdmin, "KMS.Auditor": RoleAuditor, "KMS.Ops": RoleOperator}
	f.Fuzz(func(t *testing.T, b []byte) {
		dec := json.NewDecoder(bytes.NewReader(b))
		dec.UseNumber() // as the token verifier decodes claims
		var claim any
		if err := dec.Decode(&claim); err != nil {
			return
		}
		roles, ok := rolesFromClaim(claim, mapping)
		if !ok && roles != nil {
			t.Fatalf("%s: refused claim still gave roles %v", b, roles)
		}
		seen := map[AdminRole]bool{}
		for _, r := range roles {
			if seen[r] || !slices.Contains(slices.Collect(maps.Values(mapping)), r) {
				t.Fatalf("%s: roles %v", b, roles)
			}
			seen[r] = true
		}
	})
}

// BenchmarkAdminAuthorizeCertificate measures the per-call cost of the
// certificate path, dominated by re-verifying the chain.
func BenchmarkAdminAuthorizeCertificate(b *testing.B) {
	pool, leaf := selfSignedClient(b, "attested-kms:role:operator")
	a, err := newAdminAuth(AdminAuthConfig{ClientCAs: pool})
	if err != nil {
		b.Fatal(err)
	}
	ctx := tlsPeerContext(leaf)
	for b.Loop() {
		if _, err := a.authorize(ctx, kmsv1.Admin_RotateKeys_FullMethodName); err != nil {
			b.Fatal(err)
		}
	}
}
