package server_test

import (
	"context"
	"crypto/rand"
	"testing"

	"google.golang.org/grpc/metadata"

	"github.com/attested-kms/attested-kms/client"
	"github.com/attested-kms/attested-kms/hpke"
	"github.com/attested-kms/attested-kms/hpke/ohttp"
	kmsv1 "github.com/attested-kms/attested-kms/proto/kms/v1"
)

// prepared is one valid release request; benchmarks replay it, which the
// protocol allows within the nonce's lifetime (the answer is wrapped to the
// same wrapping key, so a replay gains nothing).
func prepared(b testing.TB, e *env) (*kmsv1.ReleaseKeyRequest, string) {
	b.Helper()
	tok := e.token()
	ch, err := e.rel.GetChallenge(withToken(context.Background(), tok), &kmsv1.GetChallengeRequest{})
	if err != nil {
		b.Fatal(err)
	}
	kp, err := hpke.GenerateKeyPair(rand.Reader)
	if err != nil {
		b.Fatal(err)
	}
	a := attempt{token: tok, nonce: ch.GetNonce(), wrapAlg: kmsv1.WrappingAlgorithm_WRAPPING_ALGORITHM_HPKE_X25519, wrapPub: kp.Public}
	e.defaults(&a)
	rd, _ := hpke.BindingDigest(a.nonce, a.wrapPub)
	a.fields.ReportData = rd
	report, certs, err := a.signer.Sign(a.fields)
	if err != nil {
		b.Fatal(err)
	}
	return &kmsv1.ReleaseKeyRequest{
		Keyset: "default", Kid: e.kid, Nonce: a.nonce,
		Evidence:    &kmsv1.Evidence{Type: "sev-snp", Report: report, Certificates: certs},
		WrappingKey: &kmsv1.WrappingKey{Algorithm: a.wrapAlg, PublicKey: a.wrapPub},
	}, tok
}

// BenchmarkReleasePath runs the whole release path in process: token,
// nonce, evidence, binding, policy, key state, wrap, decision log.
func BenchmarkReleasePath(b *testing.B) {
	e := newEnv(b)
	req, tok := prepared(b, e)
	svc := e.srv.ReleaseService()
	ctx := metadata.NewIncomingContext(context.Background(), metadata.Pairs("authorization", "Bearer "+tok))
	if _, err := svc.ReleaseKey(ctx, req); err != nil {
		b.Fatal(err)
	}
	b.ReportAllocs()
	b.ResetTimer()
	for b.Loop() {
		if _, err := svc.ReleaseKey(ctx, req); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkReleaseKeyGRPC is the same over TLS gRPC on loopback.
func BenchmarkReleaseKeyGRPC(b *testing.B) {
	e := newEnv(b)
	req, tok := prepared(b, e)
	ctx := withToken(context.Background(), tok)
	if _, err := e.rel.ReleaseKey(ctx, req); err != nil {
		b.Fatal(err)
	}
	b.ReportAllocs()
	b.ResetTimer()
	for b.Loop() {
		if _, err := e.rel.ReleaseKey(ctx, req); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkDecryptRequest decrypts a 1 KiB RFC 9458 request with a key the
// client library released earlier: the enclave's per-request cost.
func BenchmarkDecryptRequest(b *testing.B) {
	e := newEnv(b)
	c, _ := e.client(b, goodMeasurement, client.WrapX25519)
	keys, err := c.Prefetch(context.Background())
	if err != nil {
		b.Fatal(err)
	}
	enc, _, err := ohttp.EncapsulateRequest(rand.Reader, keys[0].Config(), make([]byte, 1024))
	if err != nil {
		b.Fatal(err)
	}
	b.ReportAllocs()
	b.ResetTimer()
	for b.Loop() {
		if _, _, err := c.DecryptRequest(enc); err != nil {
			b.Fatal(err)
		}
	}
}
