package server_test

import (
	"bytes"
	"context"
	"testing"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"

	kmsv1 "github.com/attested-kms/attested-kms/proto/kms/v1"
)

// FuzzReleaseKey feeds arbitrary ReleaseKeyRequest messages to the release
// path with a valid token. It must never panic, every refusal must carry a
// deliberate gRPC code, and a grant is possible only for the seed's own
// genuine evidence: the fuzzer cannot forge a signed report.
func FuzzReleaseKey(f *testing.F) {
	e := newEnv(f)
	req, tok := prepared(f, e)
	seed, err := proto.Marshal(req)
	if err != nil {
		f.Fatal(err)
	}
	f.Add(seed)
	f.Add([]byte{})
	mutated := proto.Clone(req).(*kmsv1.ReleaseKeyRequest)
	mutated.Evidence.Report = mutated.Evidence.Report[:100]
	if b, err := proto.Marshal(mutated); err == nil {
		f.Add(b)
	}
	svc := e.srv.ReleaseService()
	ctx := metadata.NewIncomingContext(context.Background(), metadata.Pairs("authorization", "Bearer "+tok))
	f.Fuzz(func(t *testing.T, b []byte) {
		var r kmsv1.ReleaseKeyRequest
		if err := proto.Unmarshal(b, &r); err != nil {
			return // gRPC rejects such bytes before the service sees them
		}
		resp, err := svc.ReleaseKey(ctx, &r)
		if err == nil {
			if !bytes.Equal(r.GetEvidence().GetReport(), req.GetEvidence().GetReport()) || resp.GetKid() != req.GetKid() {
				t.Fatalf("granted a request whose evidence was not the genuine seed's")
			}
			return
		}
		switch status.Code(err) {
		case codes.Unknown, codes.Internal, codes.OK:
			t.Fatalf("refusal without a deliberate code: %v", err)
		}
	})
}
