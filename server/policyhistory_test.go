package server_test

import (
	"context"
	"crypto/ed25519"
	"crypto/tls"
	"crypto/x509"
	"encoding/hex"
	"encoding/pem"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/status"

	"github.com/attested-kms/attested-kms/audit"
	kmsv1 "github.com/attested-kms/attested-kms/proto/kms/v1"
)

// History over the admin socket: every version is readable, a rollback
// is a new version that puts the old content back in force for
// releases, and rollbacks are audited.
func TestPolicyHistoryOverAdminSocket(t *testing.T) {
	e := newEnv(t)
	ctx := context.Background()
	v1 := policyYAML(e.iss.IssuerURL())
	// Version 2 admits only another measurement: releases are denied.
	v2 := strings.Replace(v1, hex.EncodeToString(goodMeasurement), hex.EncodeToString(badMeasurement), 1)
	if _, err := e.admin.SetPolicy(ctx, &kmsv1.SetPolicyRequest{Keyset: "default", Policy: []byte(v2)}); err != nil {
		t.Fatal(err)
	}
	if _, _, err := e.release(attempt{}); reasonOf(err) != "POLICY_DENIED" {
		t.Fatalf("release under version 2: %v", err)
	}

	old, err := e.admin.GetPolicy(ctx, &kmsv1.GetPolicyRequest{Keyset: "default", Version: 1})
	if err != nil || string(old.GetPolicy()) != v1 || old.GetVersion() != 1 || old.GetSetAt() == nil {
		t.Fatalf("GetPolicy(1) = %v, %v", old, err)
	}
	for v, code := range map[int64]codes.Code{7: codes.NotFound, -1: codes.InvalidArgument} {
		if _, err := e.admin.GetPolicy(ctx, &kmsv1.GetPolicyRequest{Keyset: "default", Version: v}); status.Code(err) != code {
			t.Errorf("GetPolicy(%d): %v, want %v", v, err, code)
		}
	}

	rb, err := e.admin.RollbackPolicy(ctx, &kmsv1.RollbackPolicyRequest{Keyset: "default", Version: 1})
	if err != nil || rb.GetVersion() != 3 {
		t.Fatalf("RollbackPolicy = %v, %v", rb, err)
	}
	if _, _, err := e.release(attempt{}); err != nil {
		t.Fatalf("release after rolling back to version 1: %v", err)
	}
	cur, err := e.admin.GetPolicy(ctx, &kmsv1.GetPolicyRequest{Keyset: "default"})
	if err != nil || cur.GetVersion() != 3 || string(cur.GetPolicy()) != v1 || cur.GetRollbackOf() != 1 || cur.GetSetBy() != "" {
		t.Fatalf("current policy = %v, %v", cur, err)
	}
	hist, err := e.admin.GetPolicyHistory(ctx, &kmsv1.GetPolicyHistoryRequest{Keyset: "default"})
	if err != nil {
		t.Fatal(err)
	}
	type row struct {
		version, size, rollbackOf int64
		current                   bool
	}
	want := []row{{3, int64(len(v1)), 1, true}, {2, int64(len(v2)), 0, false}, {1, int64(len(v1)), 0, false}}
	var got []row
	for _, v := range hist.GetVersions() {
		got = append(got, row{v.GetVersion(), v.GetSizeBytes(), v.GetRollbackOf(), v.GetCurrent()})
	}
	if len(got) != len(want) || got[0] != want[0] || got[1] != want[1] || got[2] != want[2] {
		t.Fatalf("history %+v, want %+v", got, want)
	}

	for _, c := range []struct {
		keyset  string
		version int64
		code    codes.Code
	}{
		{"default", 3, codes.FailedPrecondition}, // already current
		{"default", 0, codes.InvalidArgument},
		{"default", 99, codes.NotFound},
		{"nope", 1, codes.NotFound},
	} {
		if _, err := e.admin.RollbackPolicy(ctx, &kmsv1.RollbackPolicyRequest{Keyset: c.keyset, Version: c.version}); status.Code(err) != c.code {
			t.Errorf("rollback %s to %d: %v, want %v", c.keyset, c.version, err, c.code)
		}
	}
	if _, err := e.admin.GetPolicyHistory(ctx, &kmsv1.GetPolicyHistoryRequest{Keyset: "nope"}); status.Code(err) != codes.NotFound {
		t.Errorf("history of a missing set: %v", err)
	}

	// The audit log has the rollback as it has SetPolicy: one entry per
	// call, failures included, with the versions.
	ak, err := e.admin.GetAuditKey(ctx, &kmsv1.GetAuditKeyRequest{})
	if err != nil {
		t.Fatal(err)
	}
	pub, err := x509.ParsePKIXPublicKey(ak.GetPublicKey())
	if err != nil {
		t.Fatal(err)
	}
	e.srv.Stop()
	entries, _, err := auditEntries(t, filepath.Join(e.dir, "kms.db"), pub.(ed25519.PublicKey))
	if err != nil {
		t.Fatal(err)
	}
	var rollbacks []audit.Entry
	for _, en := range entries {
		if en.Details["call"] == "RollbackPolicy" {
			rollbacks = append(rollbacks, en)
		}
	}
	if len(rollbacks) != 5 {
		t.Fatalf("%d RollbackPolicy entries, want 5: %+v", len(rollbacks), rollbacks)
	}
	if r := rollbacks[0]; r.Outcome != audit.OutcomeOK || r.KeySet != "default" || r.Details["version"] != "3" || r.Details["rollback_of"] != "1" {
		t.Fatalf("rollback entry: %+v", r)
	}
	if r := rollbacks[3]; r.Outcome != audit.OutcomeError || r.Details["rollback_of"] != "99" {
		t.Fatalf("failed rollback entry: %+v", r)
	}
}

// Over the network listener the history names who set each version, and
// the role table applies: auditors read the history, operators roll back.
func TestPolicyHistoryRecordsPrincipal(t *testing.T) {
	ca := newTestCA(t, "KMS operator CA")
	e := newEnvWith(t, envOptions{adminClientCA: pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: ca.cert.Raw})})
	serverCA := x509.NewCertPool()
	pemBytes, err := os.ReadFile(e.cfg.TLS.Cert)
	if err != nil {
		t.Fatal(err)
	}
	serverCA.AppendCertsFromPEM(pemBytes)
	client := func(cn, role string) kmsv1.AdminClient {
		cert := ca.issue(t, cn, nil, roleURI(role))
		cfg := &tls.Config{RootCAs: serverCA, MinVersion: tls.VersionTLS13, Certificates: []tls.Certificate{cert}}
		conn, err := grpc.NewClient(e.srv.AdminAddr, grpc.WithTransportCredentials(credentials.NewTLS(cfg)))
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { conn.Close() })
		return kmsv1.NewAdminClient(conn)
	}
	ctx := context.Background()
	operator, auditor := client("bob", "operator"), client("alice", "auditor")

	v1 := policyYAML(e.iss.IssuerURL())
	if _, err := operator.SetPolicy(ctx, &kmsv1.SetPolicyRequest{Keyset: "default", Policy: []byte(v1 + "# v2\n")}); err != nil {
		t.Fatal(err)
	}
	if _, err := operator.RollbackPolicy(ctx, &kmsv1.RollbackPolicyRequest{Keyset: "default", Version: 1}); err != nil {
		t.Fatal(err)
	}
	hist, err := auditor.GetPolicyHistory(ctx, &kmsv1.GetPolicyHistoryRequest{Keyset: "default"})
	if err != nil {
		t.Fatal(err)
	}
	vs := hist.GetVersions()
	if len(vs) != 3 || !strings.Contains(vs[0].GetSetBy(), "CN=bob") || !strings.Contains(vs[1].GetSetBy(), "CN=bob") || vs[2].GetSetBy() != "" {
		t.Fatalf("authors: %v", vs)
	}
	if _, err := auditor.RollbackPolicy(ctx, &kmsv1.RollbackPolicyRequest{Keyset: "default", Version: 2}); status.Code(err) != codes.PermissionDenied {
		t.Errorf("auditor rolls back: %v", err)
	}
	if _, err := operator.GetPolicyHistory(ctx, &kmsv1.GetPolicyHistoryRequest{Keyset: "default"}); status.Code(err) != codes.PermissionDenied {
		t.Errorf("operator reads history: %v", err)
	}
}
