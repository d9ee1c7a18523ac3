package server_test

import (
	"bytes"
	"context"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials"

	"github.com/attested-kms/attested-kms/attestation/sevsnp/simulate"
	"github.com/attested-kms/attested-kms/client"
	"github.com/attested-kms/attested-kms/client/evidence"
	"github.com/attested-kms/attested-kms/hpke/ohttp"
	kmsv1 "github.com/attested-kms/attested-kms/proto/kms/v1"
)

// countingEvidence counts how many releases asked for evidence.
type countingEvidence struct {
	inner client.EvidenceProvider
	n     atomic.Int64
}

func (c *countingEvidence) Evidence(ctx context.Context, rd [64]byte) (*kmsv1.Evidence, error) {
	c.n.Add(1)
	return c.inner.Evidence(ctx, rd)
}

type tokenFunc func(context.Context) (string, error)

func (f tokenFunc) Token(ctx context.Context) (string, error) { return f(ctx) }

func (e *env) tlsConfig(t testing.TB) *tls.Config {
	pool := x509.NewCertPool()
	pemBytes, err := os.ReadFile(filepath.Join(e.dir, "tls.crt"))
	if err != nil {
		t.Fatal(err)
	}
	pool.AppendCertsFromPEM(pemBytes)
	return &tls.Config{RootCAs: pool}
}

func (e *env) client(t testing.TB, measurement []byte, wrap client.WrapAlgorithm) (*client.Client, *countingEvidence) {
	conn, err := grpc.NewClient(e.srv.GRPCAddr, grpc.WithTransportCredentials(credentials.NewTLS(e.tlsConfig(t))))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close() })
	var f simulate.ReportFields
	copy(f.Measurement[:], measurement)
	f.TCB = minTCB
	ev := &countingEvidence{inner: evidence.NewSimulated(e.signer, f)}
	c, err := client.New(client.Config{Conn: conn, Evidence: ev, Wrap: wrap,
		Tokens: tokenFunc(func(context.Context) (string, error) { return e.token(), nil })})
	if err != nil {
		t.Fatal(err)
	}
	return c, ev
}

func (e *env) httpGet(t *testing.T, path string) (*http.Response, []byte) {
	hc := &http.Client{Transport: &http.Transport{TLSClientConfig: e.tlsConfig(t)}}
	resp, err := hc.Get("https://" + e.srv.HTTPAddr + path)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	return resp, b
}

// TestEndToEnd: an end user encrypts to the published key configuration,
// the enclave releases the key through the client library and decrypts,
// and the response travels back.
func TestEndToEnd(t *testing.T) {
	e := newEnv(t)
	resp, body := e.httpGet(t, "/.well-known/ohttp-keys")
	if resp.StatusCode != 200 || resp.Header.Get("Content-Type") != "application/ohttp-keys" {
		t.Fatalf("ohttp-keys: %s %q", resp.Status, resp.Header.Get("Content-Type"))
	}
	cfgs, err := ohttp.ParseKeyConfigs(body)
	if err != nil || len(cfgs) != 1 {
		t.Fatalf("key configs: %v %v", cfgs, err)
	}
	request := []byte("GET /inference?q=secret HTTP/1.1")
	enc, cctx, err := ohttp.EncapsulateRequest(rand.Reader, cfgs[0], request)
	if err != nil {
		t.Fatal(err)
	}

	c, ev := e.client(t, goodMeasurement, client.WrapX25519)
	if _, _, err := c.DecryptRequest(enc); err == nil {
		t.Fatal("decrypted before any key was released")
	}
	keys, err := c.Prefetch(context.Background())
	if err != nil || len(keys) != 1 || keys[0].KID != e.kid {
		t.Fatalf("prefetch: %v %v", keys, err)
	}
	got, rctx, err := c.DecryptRequest(enc)
	if err != nil || !bytes.Equal(got, request) {
		t.Fatalf("decrypt: %q %v", got, err)
	}
	sealed, err := rctx.SealResponse(rand.Reader, []byte("HTTP/1.1 200 OK"))
	if err != nil {
		t.Fatal(err)
	}
	if back, err := cctx.OpenResponse(sealed); err != nil || string(back) != "HTTP/1.1 200 OK" {
		t.Fatalf("response: %q %v", back, err)
	}
	// Decryption uses the cache: no new release.
	if _, _, err := c.DecryptRequest(enc); err != nil || ev.n.Load() != 1 {
		t.Fatalf("second decrypt: %v, %d releases", err, ev.n.Load())
	}
}

func TestClientSingleFlightAndRSA(t *testing.T) {
	e := newEnv(t)
	c, ev := e.client(t, goodMeasurement, client.WrapRSA3072)
	var wg sync.WaitGroup
	errs := make(chan error, 8)
	for range 8 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			_, err := c.Key(context.Background(), e.kid)
			errs <- err
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		if err != nil {
			t.Fatal(err)
		}
	}
	if n := ev.n.Load(); n != 1 {
		t.Fatalf("%d releases for 8 concurrent callers of one kid, want 1", n)
	}
}

func TestClientDenied(t *testing.T) {
	e := newEnv(t)
	c, _ := e.client(t, badMeasurement, client.WrapX25519)
	_, err := c.Key(context.Background(), e.kid)
	if err == nil || reasonOf(errorsUnwrapAll(err)) != "POLICY_DENIED" {
		t.Fatalf("got %v, want POLICY_DENIED", err)
	}
	// A failed release is not cached: the next call tries again.
	if _, err2 := c.Key(context.Background(), e.kid); err2 == nil {
		t.Fatal("second attempt succeeded with a bad measurement")
	}
}

func errorsUnwrapAll(err error) error {
	for {
		u, ok := err.(interface{ Unwrap() error })
		if !ok || u.Unwrap() == nil {
			return err
		}
		err = u.Unwrap()
	}
}

func TestPublicKeysEndpoint(t *testing.T) {
	e := newEnv(t)
	resp, body := e.httpGet(t, "/v1/public-keys")
	if resp.StatusCode != 200 {
		t.Fatalf("status %s", resp.Status)
	}
	var doc struct {
		Keys []struct {
			ID  string `json:"id"`
			Key []byte `json:"key"`
		} `json:"keys"`
	}
	if err := json.Unmarshal(body, &doc); err != nil {
		t.Fatal(err)
	}
	if len(doc.Keys) != 1 || doc.Keys[0].ID != e.kid || len(doc.Keys[0].Key) != 32 {
		t.Fatalf("public keys: %s", body)
	}
	cc := resp.Header.Get("Cache-Control")
	age, err := strconv.Atoi(strings.TrimPrefix(cc, "max-age="))
	if err != nil || age <= 0 || age > 3600 {
		t.Fatalf("Cache-Control %q", cc)
	}
	// Rotation: the new key is listed, the retired one is not.
	k, err := e.admin.RotateKeys(context.Background(), &kmsv1.RotateKeysRequest{Keyset: "default"})
	if err != nil {
		t.Fatal(err)
	}
	_, body = e.httpGet(t, "/v1/public-keys")
	if !strings.Contains(string(body), k.GetKid()) || strings.Contains(string(body), e.kid) {
		t.Fatalf("after rotation: %s", body)
	}
	// Disabled keys are not published.
	if _, err := e.admin.SetKeyState(context.Background(), &kmsv1.SetKeyStateRequest{Keyset: "default", Kid: k.GetKid(), State: kmsv1.KeyState_KEY_STATE_DISABLED}); err != nil {
		t.Fatal(err)
	}
	_, body = e.httpGet(t, "/v1/public-keys")
	if strings.Contains(string(body), k.GetKid()) {
		t.Fatalf("disabled key published: %s", body)
	}
	if resp, _ := e.httpGet(t, "/v1/public-keys?keyset=nope"); resp.StatusCode != 404 {
		t.Fatalf("unknown key set: %s", resp.Status)
	}
	if resp, body := e.httpGet(t, "/readyz"); resp.StatusCode != 200 {
		t.Fatalf("readyz: %s %s", resp.Status, body)
	}
}

func TestAdminSocketMode(t *testing.T) {
	e := newEnv(t)
	fi, err := os.Stat(e.srv.AdminSocket)
	if err != nil {
		t.Fatal(err)
	}
	if fi.Mode()&os.ModeSocket == 0 || fi.Mode().Perm() != 0o600 {
		t.Fatalf("admin socket mode %v, want socket 0600", fi.Mode())
	}
}

func TestAdminRejectsInvalidPolicy(t *testing.T) {
	e := newEnv(t)
	_, err := e.admin.SetPolicy(context.Background(), &kmsv1.SetPolicyRequest{Keyset: "default", Policy: []byte("version: 1\nrules: []\n")})
	if err == nil {
		t.Fatal("empty policy accepted")
	}
	_, err = e.admin.CreateKeySet(context.Background(), &kmsv1.CreateKeySetRequest{Name: "second"})
	if err == nil {
		t.Fatal("key set without policy accepted")
	}
}
