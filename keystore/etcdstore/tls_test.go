package etcdstore

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"errors"
	"math/big"
	"net"
	"net/url"
	"os"
	"path/filepath"
	"testing"
	"time"

	"go.etcd.io/etcd/client/pkg/v3/transport"

	"github.com/attested-kms/attested-kms/keystore"
)

// testCA issues certificates for one test.
type testCA struct {
	cert *x509.Certificate
	key  *ecdsa.PrivateKey
	pool *x509.CertPool
	pem  []byte
}

func newTestCA(t *testing.T) *testCA {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "test etcd CA"},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour),
		IsCA: true, BasicConstraintsValid: true, KeyUsage: x509.KeyUsageCertSign,
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
	return &testCA{cert: cert, key: key, pool: pool, pem: pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der})}
}

// issue returns a leaf certificate and key in PEM.
func (ca *testCA) issue(t *testing.T, cn string, usage x509.ExtKeyUsage, ips ...net.IP) (certPEM, keyPEM []byte) {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(time.Now().UnixNano()), Subject: pkix.Name{CommonName: cn},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour),
		KeyUsage: x509.KeyUsageDigitalSignature, ExtKeyUsage: []x509.ExtKeyUsage{usage}, IPAddresses: ips,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, ca.cert, &key.PublicKey, ca.key)
	if err != nil {
		t.Fatal(err)
	}
	kder, err := x509.MarshalPKCS8PrivateKey(key)
	if err != nil {
		t.Fatal(err)
	}
	return pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}), pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: kder})
}

func writeFile(t *testing.T, dir, name string, b []byte) string {
	t.Helper()
	p := filepath.Join(dir, name)
	if err := os.WriteFile(p, b, 0o600); err != nil {
		t.Fatal(err)
	}
	return p
}

func TestMutualTLS(t *testing.T) {
	ctx := t.Context()
	ca := newTestCA(t)
	dir := t.TempDir()
	srvCert, srvKey := ca.issue(t, "etcd", x509.ExtKeyUsageServerAuth, net.IPv4(127, 0, 0, 1))
	cfg := etcdConfig(t, "tls")
	cfg.ClientTLSInfo = transport.TLSInfo{
		CertFile:       writeFile(t, dir, "server.pem", srvCert),
		KeyFile:        writeFile(t, dir, "server-key.pem", srvKey),
		TrustedCAFile:  writeFile(t, dir, "ca.pem", ca.pem),
		ClientCertAuth: true,
	}
	u := mustURL(t, "https://127.0.0.1:0")
	cfg.ListenClientUrls, cfg.AdvertiseClientUrls = []url.URL{u}, []url.URL{u}
	e := start(t, cfg)
	ready(t, e)

	open := func(tc *tls.Config) (*Store, error) {
		s, err := Open(ctx, Config{Endpoints: []string{endpoint(e)}, TLS: tc, DialTimeout: 2 * time.Second})
		if err == nil {
			t.Cleanup(func() { _ = s.Close() })
		}
		return s, err
	}

	// Without a client certificate the server refuses the connection.
	if _, err := open(&tls.Config{RootCAs: ca.pool, MinVersion: tls.VersionTLS12}); !errors.Is(err, keystore.ErrStoreUnavailable) {
		t.Fatalf("no client certificate: err = %v, want refusal", err)
	}
	// A certificate from another CA is refused too.
	other := newTestCA(t)
	oc, ok := other.issue(t, "intruder", x509.ExtKeyUsageClientAuth)
	intruder, err := tls.X509KeyPair(oc, ok)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := open(&tls.Config{RootCAs: ca.pool, Certificates: []tls.Certificate{intruder}, MinVersion: tls.VersionTLS12}); !errors.Is(err, keystore.ErrStoreUnavailable) {
		t.Fatalf("foreign client certificate: err = %v, want refusal", err)
	}

	cc, ck := ca.issue(t, "kms", x509.ExtKeyUsageClientAuth)
	client, err := tls.X509KeyPair(cc, ck)
	if err != nil {
		t.Fatal(err)
	}
	s, err := open(&tls.Config{RootCAs: ca.pool, Certificates: []tls.Certificate{client}, MinVersion: tls.VersionTLS12})
	if err != nil {
		t.Fatalf("with a client certificate: %v", err)
	}
	if err := s.CreateKeySet(ctx, testSet(), testKey(kidN(1), 1)); err != nil {
		t.Fatal(err)
	}
	if keys, err := s.KeysByKID(ctx, "default", kidN(1)); err != nil || len(keys) != 1 {
		t.Fatalf("read over mTLS: %v %v", keys, err)
	}
}
