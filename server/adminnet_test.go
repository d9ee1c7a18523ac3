package server_test

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/pem"
	"os"
	"testing"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/status"

	kmsv1 "github.com/attested-kms/attested-kms/proto/kms/v1"
)

// The real server, configured with listen.admin and an operator CA, serves
// the admin API over TLS with client certificates, each call authorized by
// the role in the certificate; the Unix socket keeps working.
func TestNetworkAdminThroughConfig(t *testing.T) {
	ca := newTestCA(t, "KMS operator CA")
	e := newEnvWith(t, envOptions{adminClientCA: pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: ca.cert.Raw})})
	if e.srv.AdminAddr == "" {
		t.Fatal("no network admin listener")
	}
	serverCA := x509.NewCertPool()
	pemBytes, err := os.ReadFile(e.cfg.TLS.Cert)
	if err != nil {
		t.Fatal(err)
	}
	serverCA.AppendCertsFromPEM(pemBytes)
	client := func(cert *tls.Certificate) kmsv1.AdminClient {
		cfg := &tls.Config{RootCAs: serverCA, MinVersion: tls.VersionTLS13}
		if cert != nil {
			cfg.Certificates = []tls.Certificate{*cert}
		}
		conn, err := grpc.NewClient(e.srv.AdminAddr, grpc.WithTransportCredentials(credentials.NewTLS(cfg)))
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { conn.Close() })
		return kmsv1.NewAdminClient(conn)
	}
	ctx := context.Background()
	auditorCert := ca.issue(t, "alice", nil, roleURI("auditor"))
	operatorCert := ca.issue(t, "bob", nil, roleURI("operator"))
	auditor, operator, anonymous := client(&auditorCert), client(&operatorCert), client(nil)

	if _, err := auditor.ListKeySets(ctx, &kmsv1.ListKeySetsRequest{}); err != nil {
		t.Fatalf("auditor lists key sets: %v", err)
	}
	if _, err := auditor.RotateKeys(ctx, &kmsv1.RotateKeysRequest{Keyset: "default"}); status.Code(err) != codes.PermissionDenied {
		t.Fatalf("auditor rotates: %v, want PermissionDenied", err)
	}
	k, err := operator.RotateKeys(ctx, &kmsv1.RotateKeysRequest{Keyset: "default"})
	if err != nil {
		t.Fatalf("operator rotates: %v", err)
	}
	if _, err := anonymous.ListKeySets(ctx, &kmsv1.ListKeySetsRequest{}); status.Code(err) != codes.Unauthenticated {
		t.Fatalf("no credentials: %v, want Unauthenticated", err)
	}
	// The rotation is real: the local socket sees the new active key.
	keys, err := e.admin.ListKeys(ctx, &kmsv1.ListKeysRequest{Keyset: "default"})
	if err != nil {
		t.Fatal(err)
	}
	found := false
	for _, ki := range keys.GetKeys() {
		found = found || (ki.GetKid() == k.GetKid() && ki.GetState() == kmsv1.KeyState_KEY_STATE_ACTIVE)
	}
	if !found {
		t.Fatalf("rotated key %s not active: %v", k.GetKid(), keys)
	}
}
