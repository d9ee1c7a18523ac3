package main

import (
	"bytes"
	"context"
	"crypto/ed25519"
	"crypto/x509"
	"encoding/binary"
	"net"
	"os"
	"path/filepath"
	"strings"
	"testing"

	bolt "go.etcd.io/bbolt"
	"google.golang.org/grpc"

	kmsv1 "github.com/attested-kms/attested-kms/proto/kms/v1"
)

// auditKeyAdmin answers GetAuditKey with the fixture's audit key.
type auditKeyAdmin struct {
	kmsv1.UnimplementedAdminServer
	der []byte
}

func (a *auditKeyAdmin) GetAuditKey(context.Context, *kmsv1.GetAuditKeyRequest) (*kmsv1.GetAuditKeyResponse, error) {
	return &kmsv1.GetAuditKeyResponse{PublicKey: a.der}, nil
}

// serveAuditKey serves the fixture's public key on a Unix socket.
func serveAuditKey(t *testing.T) string {
	t.Helper()
	der, err := x509.MarshalPKIXPublicKey(ed25519.NewKeyFromSeed(make([]byte, ed25519.SeedSize)).Public())
	if err != nil {
		t.Fatal(err)
	}
	sock := filepath.Join(t.TempDir(), "admin.sock")
	lis, err := net.Listen("unix", sock)
	if err != nil {
		t.Fatal(err)
	}
	srv := grpc.NewServer()
	kmsv1.RegisterAdminServer(srv, &auditKeyAdmin{der: der})
	go func() { _ = srv.Serve(lis) }()
	t.Cleanup(srv.Stop)
	return sock
}

// The PEM public-key writes is what verify reads; a byte changed in a
// bbolt entry is reported as altered at its seq.
func TestAuditPublicKeyThenVerify(t *testing.T) {
	dbPath, fixturePub := auditFixture(t, 12)
	sock := serveAuditKey(t)
	stdout, errText, code := run(t, "audit", "public-key", "--socket", sock)
	want, err := os.ReadFile(fixturePub)
	if err != nil {
		t.Fatal(err)
	}
	if code != 0 || stdout != string(want) {
		t.Fatalf("public-key: exit %d, %q %q", code, stdout, errText)
	}
	pemPath := filepath.Join(t.TempDir(), "audit.pem")
	if _, errText, code := run(t, "audit", "public-key", "--socket", sock, "--out", pemPath); code != 0 {
		t.Fatalf("public-key --out: exit %d: %s", code, errText)
	}
	if out, errText, code := run(t, "audit", "verify", "--log", dbPath, "--public-key", pemPath); code != 0 || out != "audit: ok 12 entries, last checkpoint at seq 10\n" {
		t.Fatalf("verify: exit %d, %q %q", code, out, errText)
	}

	db, err := bolt.Open(dbPath, 0o600, nil)
	if err != nil {
		t.Fatal(err)
	}
	err = db.Update(func(tx *bolt.Tx) error {
		bk := tx.Bucket([]byte("audit")).Bucket([]byte("entries"))
		key := binary.BigEndian.AppendUint64(nil, 7)
		v := bytes.Clone(bk.Get(key))
		i := bytes.Index(v, []byte(`"actor":"sub-`)) + len(`"actor":"`)
		v[i] = 'S'
		return bk.Put(key, v)
	})
	if cerr := db.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		t.Fatal(err)
	}
	out, errText, code := run(t, "audit", "verify", "--log", dbPath, "--public-key", pemPath)
	if code != 2 || !strings.Contains(errText, "seq 7 altered") {
		t.Fatalf("tampered bbolt log: exit %d, %q %q", code, out, errText)
	}
}
