package main

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"math/big"
	"net"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/peer"

	kmsv1 "github.com/attested-kms/attested-kms/proto/kms/v1"
)

// seenAdmin records what reached the server: the bearer token and the
// client certificate's subject.
type seenAdmin struct {
	kmsv1.UnimplementedAdminServer
	mu         sync.Mutex
	auth, peer string
}

func (s *seenAdmin) ListKeySets(ctx context.Context, _ *kmsv1.ListKeySetsRequest) (*kmsv1.ListKeySetsResponse, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if md, ok := metadata.FromIncomingContext(ctx); ok {
		s.auth = strings.Join(md.Get("authorization"), ",")
	}
	if p, ok := peer.FromContext(ctx); ok {
		if ti, ok := p.AuthInfo.(credentials.TLSInfo); ok && len(ti.State.PeerCertificates) > 0 {
			s.peer = ti.State.PeerCertificates[0].Subject.CommonName
		}
	}
	return &kmsv1.ListKeySetsResponse{Keysets: []*kmsv1.KeySet{{Name: "default"}}}, nil
}

// writeCert makes a self-signed certificate for cn and writes cert and key
// as PEM files in dir.
func writeCert(t *testing.T, dir, cn string, server bool) (certPath, keyPath string, cert tls.Certificate) {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(time.Now().UnixNano()), Subject: pkix.Name{CommonName: cn},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour),
		KeyUsage: x509.KeyUsageDigitalSignature | x509.KeyUsageCertSign, BasicConstraintsValid: true, IsCA: true,
		ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth}}
	if server {
		tmpl.ExtKeyUsage, tmpl.IPAddresses = []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth}, []net.IP{net.IPv4(127, 0, 0, 1)}
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	kd, _ := x509.MarshalPKCS8PrivateKey(key)
	certPEM := pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der})
	keyPEM := pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: kd})
	certPath, keyPath = filepath.Join(dir, cn+".crt"), filepath.Join(dir, cn+".key")
	if err := os.WriteFile(certPath, certPEM, 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(keyPath, keyPEM, 0o600); err != nil {
		t.Fatal(err)
	}
	cert, err = tls.X509KeyPair(certPEM, keyPEM)
	if err != nil {
		t.Fatal(err)
	}
	return certPath, keyPath, cert
}

// --addr dials the network admin listener over TLS 1.3 with the client
// certificate and the bearer token from --token-file; env variables work
// the same way.
func TestAdminCommandsOverTheNetwork(t *testing.T) {
	dir := t.TempDir()
	srvCertPath, _, srvCert := writeCert(t, dir, "kms", true)
	cliCert, cliKey, _ := writeCert(t, dir, "alice", false)
	tokenFile := filepath.Join(dir, "token")
	if err := os.WriteFile(tokenFile, []byte("header.payload.sig\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	stub := &seenAdmin{}
	gs := grpc.NewServer(grpc.Creds(credentials.NewTLS(&tls.Config{
		Certificates: []tls.Certificate{srvCert}, ClientAuth: tls.RequireAnyClientCert, MinVersion: tls.VersionTLS13})))
	kmsv1.RegisterAdminServer(gs, stub)
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	go gs.Serve(lis)
	t.Cleanup(gs.Stop)

	out, errText, code := run(t, "keysets", "list", "--addr", lis.Addr().String(), "--ca", srvCertPath,
		"--cert", cliCert, "--key", cliKey, "--token-file", tokenFile, "-o", "json")
	if code != 0 || !strings.Contains(out, `"default"`) {
		t.Fatalf("exit %d: %s\n%s", code, errText, out)
	}
	stub.mu.Lock()
	auth, who := stub.auth, stub.peer
	stub.mu.Unlock()
	if auth != "Bearer header.payload.sig" || who != "alice" {
		t.Fatalf("server saw authorization %q from %q", auth, who)
	}

	t.Setenv("KMS_ADMIN_ADDR", lis.Addr().String())
	t.Setenv("KMS_ADMIN_CA", srvCertPath)
	t.Setenv("KMS_ADMIN_CERT", cliCert)
	t.Setenv("KMS_ADMIN_KEY", cliKey)
	if _, errText, code := run(t, "keysets", "list"); code != 0 {
		t.Fatalf("from the environment: exit %d: %s", code, errText)
	}
	if _, errText, code := run(t, "keysets", "list", "--cert", cliCert, "--key", ""); code != 1 || !strings.Contains(errText, "--cert and --key") {
		t.Fatalf("cert without key: exit %d: %s", code, errText)
	}
}
