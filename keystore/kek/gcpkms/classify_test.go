package gcpkms

import (
	"context"
	"errors"
	"testing"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/attested-kms/attested-kms/keystore/kek"
)

// TestClassify pins the status-to-class table: every code lands in exactly
// one class, and only the transient ones are retried.
func TestClassify(t *testing.T) {
	classes := []error{kek.ErrUnavailable, kek.ErrKeyDisabled, kek.ErrAuthentication, kek.ErrUnsupported}
	cases := []struct {
		err       error
		decrypt   bool
		want      error // nil: a plain error in no class
		retryable bool
	}{
		{status.Error(codes.InvalidArgument, "Decryption failed: verify that 'name' refers to the correct CryptoKey."), true, kek.ErrAuthentication, false},
		{status.Error(codes.InvalidArgument, "Decryption failed: the ciphertext is invalid."), true, kek.ErrAuthentication, false},
		{status.Error(codes.InvalidArgument, "The checksum in field ciphertext_crc32c did not match the data in field ciphertext."), true, kek.ErrUnavailable, true},
		{status.Error(codes.InvalidArgument, "The checksum in field plaintext_crc32c did not match the data in field plaintext."), false, kek.ErrUnavailable, true},
		{status.Error(codes.InvalidArgument, "plaintext too large"), false, nil, false},
		{status.Error(codes.FailedPrecondition, "projects/p/.../cryptoKeyVersions/1 is not enabled, current state is: DISABLED."), true, kek.ErrKeyDisabled, false},
		{status.Error(codes.FailedPrecondition, "... current state is: DESTROY_SCHEDULED."), false, kek.ErrKeyDisabled, false},
		{status.Error(codes.NotFound, "projects/p/... not found."), true, kek.ErrKeyDisabled, false},
		{status.Error(codes.PermissionDenied, "Permission 'cloudkms.cryptoKeyVersions.useToDecrypt' denied"), true, kek.ErrKeyDisabled, false},
		{status.Error(codes.Unauthenticated, "Request had invalid authentication credentials."), true, kek.ErrUnavailable, true},
		{status.Error(codes.ResourceExhausted, "Quota exceeded"), true, kek.ErrUnavailable, true},
		{status.Error(codes.Unavailable, "connection refused"), true, kek.ErrUnavailable, true},
		{status.Error(codes.DeadlineExceeded, "deadline"), true, kek.ErrUnavailable, true},
		{status.Error(codes.Internal, "Internal error encountered."), true, kek.ErrUnavailable, true},
		{status.Error(codes.Unknown, "?"), true, kek.ErrUnavailable, true},
		{status.Error(codes.Aborted, "aborted"), true, kek.ErrUnavailable, true},
		{status.Error(codes.Unimplemented, "unknown service"), true, kek.ErrUnavailable, false},
		{errors.New("token source: metadata server down"), true, kek.ErrUnavailable, true},
		{context.DeadlineExceeded, false, kek.ErrUnavailable, true},
	}
	for _, c := range cases {
		got := classify(c.err, c.decrypt)
		n := 0
		for _, cl := range classes {
			if errors.Is(got, cl) {
				n++
				if cl != c.want {
					t.Errorf("classify(%v) = %v, in class %v, want %v", c.err, got, cl, c.want)
				}
			}
		}
		if c.want != nil && n != 1 || c.want == nil && n != 0 {
			t.Errorf("classify(%v) = %v: in %d classes", c.err, got, n)
		}
		var r *retryableError
		if errors.As(got, &r) != c.retryable {
			t.Errorf("classify(%v): retryable = %v, want %v", c.err, !c.retryable, c.retryable)
		}
	}
}
