package server_test

import (
	"context"
	"testing"
	"time"

	"google.golang.org/grpc/metadata"

	azsim "github.com/attested-kms/attested-kms/attestation/azurevtpm/simulate"
	tdxsim "github.com/attested-kms/attested-kms/attestation/tdx/simulate"
	kmsv1 "github.com/attested-kms/attested-kms/proto/kms/v1"
)

// BenchmarkReleasePathPlatforms runs the in-process release path (token,
// nonce, evidence with collateral and revocation, binding, policy, wrap,
// decision log) for each evidence type besides bare SEV-SNP, which
// BenchmarkReleasePath covers. Requests are replayed within the nonce's
// lifetime, as the protocol allows.
func BenchmarkReleasePathPlatforms(b *testing.B) {
	p := newPlatformEnv(b, time.Now(), 0)
	azure := func(opts azsim.Options) func(rd [64]byte) *kmsv1.Evidence {
		return func(rd [64]byte) *kmsv1.Evidence {
			vm, err := azsim.NewVM(opts)
			if err != nil {
				b.Fatal(err)
			}
			defer vm.Close()
			ev, err := vm.Evidence(rd)
			if err != nil {
				b.Fatal(err)
			}
			return wire(ev)
		}
	}
	for _, c := range []struct {
		name     string
		evidence func(rd [64]byte) *kmsv1.Evidence
	}{
		{"tdx", func(rd [64]byte) *kmsv1.Evidence {
			q, err := p.intel.Quote(tdxsim.QuoteFields{MRTD: tdxMRTD, ReportData: rd})
			if err != nil {
				b.Fatal(err)
			}
			return &kmsv1.Evidence{Type: "tdx", Report: q}
		}},
		{"azure-sev-snp-vtpm", azure(azsim.Options{SNP: p.signer, SNPFields: simulateFields([64]byte{})})},
		{"azure-tdx-vtpm", azure(azsim.Options{TDXQuote: func(rd [64]byte) ([]byte, error) {
			return p.intel.Quote(tdxsim.QuoteFields{MRTD: azureTDXMRTD, ReportData: rd})
		}})},
	} {
		b.Run(c.name, func(b *testing.B) {
			bd := p.bind()
			tok := p.token()
			req := &kmsv1.ReleaseKeyRequest{
				Keyset: "default", Kid: p.kid, Nonce: bd.nonce, Evidence: c.evidence(bd.digest),
				WrappingKey: &kmsv1.WrappingKey{Algorithm: kmsv1.WrappingAlgorithm_WRAPPING_ALGORITHM_HPKE_X25519, PublicKey: bd.pub},
			}
			svc := p.srv.ReleaseService()
			ctx := metadata.NewIncomingContext(context.Background(), metadata.Pairs("authorization", "Bearer "+tok))
			if _, err := svc.ReleaseKey(ctx, req); err != nil {
				b.Fatal(err)
			}
			b.ReportAllocs()
			for b.Loop() {
				if _, err := svc.ReleaseKey(ctx, req); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}
