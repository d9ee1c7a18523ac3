// Package gcpkms is the KEK provider for Google Cloud KMS symmetric keys
// (purpose ENCRYPT_DECRYPT, algorithm GOOGLE_SYMMETRIC_ENCRYPTION).
//
// Data keys are wrapped with the Encrypt RPC and unwrapped with Decrypt,
// over gRPC with the official client (cloud.google.com/go/kms/apiv1). The
// caller's AAD is passed as Cloud KMS additional_authenticated_data, so the
// service itself binds it. Every request carries CRC32C checksums of its
// inputs and every response's checksums and verified_* flags are checked;
// a response that fails them is discarded and retried, never used.
//
// Credentials come from Application Default Credentials: on GCE/GKE the
// attached service account, elsewhere GOOGLE_APPLICATION_CREDENTIALS, which
// may name a workload identity federation (external_account) configuration,
// the usual choice for a confidential VM outside Google Cloud.
package gcpkms

import (
	"context"
	"errors"
	"fmt"
	"hash/crc32"
	"math/rand/v2"
	"strings"
	"time"

	kms "cloud.google.com/go/kms/apiv1"
	"cloud.google.com/go/kms/apiv1/kmspb"
	"google.golang.org/api/option"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/types/known/wrapperspb"

	"github.com/attested-kms/attested-kms/keystore/kek"
)

// Algorithm is the Algorithm of the Wrapped values this provider makes.
const Algorithm = "GCP-KMS-GOOGLE_SYMMETRIC_ENCRYPTION"

// MaxDataKeySize is the largest plaintext Encrypt accepts for software keys
// (HSM keys allow 8 KiB for plaintext and AAD together).
const MaxDataKeySize = 64 << 10

// Defaults for Options.
const (
	DefaultTimeout        = 30 * time.Second
	DefaultAttemptTimeout = 10 * time.Second
	DefaultMaxAttempts    = 4
)

// Options configures a Provider. The zero value uses Application Default
// Credentials against the public endpoint.
type Options struct {
	// WorkloadIdentityConfig, if set, is the path of a workload identity
	// federation credential configuration (type external_account) used
	// instead of Application Default Credentials. Only that credential type
	// is accepted from the file, so a swapped file cannot make the KMS run
	// as some other kind of principal.
	WorkloadIdentityConfig string
	// ClientOptions are passed to the Cloud KMS client after the ones above:
	// tests use them for the endpoint, credentials and TLS dial options of a
	// loopback server.
	ClientOptions []option.ClientOption
	// Timeout bounds one Wrap or Unwrap including retries
	// (DefaultTimeout if zero). The caller's context can only shorten it.
	Timeout time.Duration
	// AttemptTimeout bounds each RPC attempt (DefaultAttemptTimeout if zero),
	// so one stalled connection does not use the whole budget.
	AttemptTimeout time.Duration
	// MaxAttempts bounds RPC attempts per call (DefaultMaxAttempts if zero);
	// 1 disables retries.
	MaxAttempts int
}

// Provider wraps data keys under one Cloud KMS CryptoKey. It is safe for
// concurrent use.
type Provider struct {
	key            KeyName
	uri            string
	client         *kms.KeyManagementClient
	timeout        time.Duration
	attemptTimeout time.Duration
	maxAttempts    int
}

var _ kek.Provider = (*Provider)(nil)

// New returns a provider for the CryptoKey named by uri
// (gcp-kms://projects/<p>/locations/<l>/keyRings/<r>/cryptoKeys/<k>). It
// dials lazily: a wrong endpoint or missing permission shows on the first
// Wrap or Unwrap, not here. Close releases the connection.
func New(ctx context.Context, uri string, o Options) (*Provider, error) {
	key, err := ParseURI(uri)
	if err != nil {
		return nil, err
	}
	if o.Timeout < 0 || o.AttemptTimeout < 0 || o.MaxAttempts < 0 {
		return nil, errors.New("gcpkms: negative timeout or attempt count")
	}
	var copts []option.ClientOption
	if o.WorkloadIdentityConfig != "" {
		copts = append(copts, option.WithAuthCredentialsFile(option.ExternalAccount, o.WorkloadIdentityConfig))
	}
	copts = append(copts, o.ClientOptions...)
	client, err := kms.NewKeyManagementClient(ctx, copts...)
	if err != nil {
		// Credential discovery failures land here (no ADC, unreadable
		// configuration); they are for the operator to fix, not the key
		// owner's off switch, and retrying may help once a volume mounts.
		return nil, fmt.Errorf("gcpkms: create Cloud KMS client: %w", errors.Join(kek.ErrUnavailable, err))
	}
	// The generated client retries Unavailable and DeadlineExceeded for up
	// to 60 s per call. Retrying happens in call below instead, under one
	// bounded policy that also covers throttling and checksum failures.
	client.CallOptions.Encrypt = nil
	client.CallOptions.Decrypt = nil
	p := &Provider{
		key:            key,
		uri:            key.URI(),
		client:         client,
		timeout:        cmpOr(o.Timeout, DefaultTimeout),
		attemptTimeout: cmpOr(o.AttemptTimeout, DefaultAttemptTimeout),
		maxAttempts:    cmpOr(o.MaxAttempts, DefaultMaxAttempts),
	}
	return p, nil
}

func cmpOr[T comparable](v, def T) T {
	var zero T
	if v == zero {
		return def
	}
	return v
}

// Close closes the client connection.
func (p *Provider) Close() error { return p.client.Close() }

// URI returns gcp-kms://projects/<p>/locations/<l>/keyRings/<r>/cryptoKeys/<k>.
func (p *Provider) URI() string { return p.uri }

// Key returns the CryptoKey this provider uses.
func (p *Provider) Key() KeyName { return p.key }

// Wrap encrypts dek with the key's primary version. Wrapped.KEKVersion is
// the CryptoKeyVersion resource name Cloud KMS reports having used.
func (p *Provider) Wrap(ctx context.Context, dek, aad []byte) (kek.Wrapped, error) {
	if len(dek) == 0 {
		return kek.Wrapped{}, errors.New("gcpkms: wrap: empty data key")
	}
	if len(dek) > MaxDataKeySize || len(aad) > MaxDataKeySize {
		return kek.Wrapped{}, fmt.Errorf("gcpkms: wrap: data key or AAD larger than %d bytes", MaxDataKeySize)
	}
	req := &kmspb.EncryptRequest{
		Name:                              p.key.ResourceName(),
		Plaintext:                         dek,
		PlaintextCrc32C:                   wrapperspb.Int64(crc32c(dek)),
		AdditionalAuthenticatedData:       aad,
		AdditionalAuthenticatedDataCrc32C: wrapperspb.Int64(crc32c(aad)),
	}
	var resp *kmspb.EncryptResponse
	err := p.call(ctx, "encrypt", func(ctx context.Context) error {
		r, err := p.client.Encrypt(ctx, req)
		if err != nil {
			return classify(err, false)
		}
		if err := p.checkEncryptResponse(r); err != nil {
			return err
		}
		resp = r
		return nil
	})
	if err != nil {
		return kek.Wrapped{}, err
	}
	return kek.Wrapped{
		KEKURI:     p.uri,
		KEKVersion: resp.GetName(),
		Algorithm:  Algorithm,
		Ciphertext: resp.GetCiphertext(),
	}, nil
}

// checkEncryptResponse applies Cloud KMS's integrity guidelines: the
// service must say it verified both request checksums, the ciphertext must
// match its checksum, and the version must belong to the requested key.
func (p *Provider) checkEncryptResponse(r *kmspb.EncryptResponse) error {
	switch {
	case !r.GetVerifiedPlaintextCrc32C():
		return integrityError("encrypt response does not confirm plaintext_crc32c was verified")
	case !r.GetVerifiedAdditionalAuthenticatedDataCrc32C():
		return integrityError("encrypt response does not confirm additional_authenticated_data_crc32c was verified")
	case r.GetCiphertextCrc32C() == nil || r.GetCiphertextCrc32C().GetValue() != crc32c(r.GetCiphertext()):
		return integrityError("encrypt response ciphertext does not match ciphertext_crc32c")
	case len(r.GetCiphertext()) == 0:
		return integrityError("encrypt response has no ciphertext")
	case !p.isOwnVersion(r.GetName()):
		return integrityError(fmt.Sprintf("encrypt response names version %q, not a version of %s", r.GetName(), p.key.ResourceName()))
	}
	return nil
}

// isOwnVersion reports whether name is projects/.../cryptoKeys/<k>/cryptoKeyVersions/<n>
// of this key (a bare prefix test would accept key "k2" for key "k").
func (p *Provider) isOwnVersion(name string) bool {
	v, ok := strings.CutPrefix(name, p.key.versionPrefix())
	if !ok || v == "" {
		return false
	}
	for _, c := range []byte(v) {
		if c < '0' || c > '9' {
			return false
		}
	}
	return true
}

// Unwrap decrypts w with the CryptoKey; Cloud KMS picks the version that
// made the ciphertext. A disabled, destroyed or destruction-scheduled
// version, a missing key or a revoked IAM grant yields ErrKeyDisabled;
// tampering or a different aad yields ErrAuthentication.
func (p *Provider) Unwrap(ctx context.Context, w kek.Wrapped, aad []byte) ([]byte, error) {
	if w.Algorithm != Algorithm {
		return nil, fmt.Errorf("gcpkms: algorithm %q not supported by the Cloud KMS provider: %w", w.Algorithm, kek.ErrUnsupported)
	}
	if w.KEKVersion != "" && !p.isOwnVersion(w.KEKVersion) {
		return nil, fmt.Errorf("gcpkms: key was wrapped by %q, not a version of %s: %w", w.KEKVersion, p.key.ResourceName(), kek.ErrAuthentication)
	}
	if len(w.Ciphertext) == 0 {
		return nil, fmt.Errorf("gcpkms: empty wrapped key: %w", kek.ErrAuthentication)
	}
	req := &kmspb.DecryptRequest{
		Name:                              p.key.ResourceName(),
		Ciphertext:                        w.Ciphertext,
		CiphertextCrc32C:                  wrapperspb.Int64(crc32c(w.Ciphertext)),
		AdditionalAuthenticatedData:       aad,
		AdditionalAuthenticatedDataCrc32C: wrapperspb.Int64(crc32c(aad)),
	}
	var dek []byte
	err := p.call(ctx, "decrypt", func(ctx context.Context) error {
		r, err := p.client.Decrypt(ctx, req)
		if err != nil {
			return classify(err, true)
		}
		if r.GetPlaintextCrc32C() == nil || r.GetPlaintextCrc32C().GetValue() != crc32c(r.GetPlaintext()) {
			clear(r.GetPlaintext())
			return integrityError("decrypt response plaintext does not match plaintext_crc32c")
		}
		dek = r.GetPlaintext()
		return nil
	})
	if err != nil {
		return nil, err
	}
	return dek, nil
}

// retryableError marks a failure worth another attempt; it always carries
// kek.ErrUnavailable.
type retryableError struct{ err error }

func (e *retryableError) Error() string { return e.err.Error() }
func (e *retryableError) Unwrap() error { return e.err }

func integrityError(msg string) error {
	return &retryableError{fmt.Errorf("%s (corrupted in transit?): %w", msg, kek.ErrUnavailable)}
}

// classify maps a Cloud KMS status to exactly one kek error class. decrypt
// says whether INVALID_ARGUMENT means the ciphertext did not authenticate.
func classify(err error, decrypt bool) error {
	st, ok := status.FromError(err)
	if !ok {
		// Not a gRPC status: a local failure in the client stack.
		return &retryableError{errors.Join(kek.ErrUnavailable, err)}
	}
	desc := fmt.Sprintf("Cloud KMS: %s: %s", st.Code(), st.Message())
	switch st.Code() {
	case codes.InvalidArgument:
		if isChecksumError(st.Message()) {
			// The service saw different bytes than were sent: the
			// integrity guidelines say to retry a limited number of times.
			return &retryableError{fmt.Errorf("%s: %w", desc, kek.ErrUnavailable)}
		}
		if decrypt {
			// Wrong key, tampered ciphertext and AAD mismatch all come
			// back as "Decryption failed: verify that 'name' refers to
			// the correct CryptoKey" or "the ciphertext is invalid".
			return fmt.Errorf("%s: %w", desc, kek.ErrAuthentication)
		}
		return errors.New(desc) // a request this provider should not make
	case codes.FailedPrecondition, codes.NotFound, codes.PermissionDenied:
		// FAILED_PRECONDITION: the version is DISABLED, DESTROYED or
		// DESTROY_SCHEDULED (or the key has no enabled primary);
		// NOT_FOUND: the key, key ring or project is gone;
		// PERMISSION_DENIED: the IAM grant was revoked (or the API or
		// billing was turned off). All are the owner's decisions.
		return fmt.Errorf("%s: %w", desc, kek.ErrKeyDisabled)
	case codes.Unauthenticated:
		// This process could not present valid credentials (metadata
		// server or token exchange failing, clock skew). It is an
		// operational fault on the KMS side, so it is retryable
		// unavailability, not the key owner's off switch.
		return &retryableError{fmt.Errorf("%s: %w", desc, kek.ErrUnavailable)}
	case codes.Unimplemented:
		return fmt.Errorf("%s (endpoint does not serve Cloud KMS?): %w", desc, kek.ErrUnavailable)
	default:
		// RESOURCE_EXHAUSTED (quota), UNAVAILABLE (incl. connection
		// refused), DEADLINE_EXCEEDED, INTERNAL, UNKNOWN, ABORTED, ...
		return &retryableError{fmt.Errorf("%s: %w", desc, kek.ErrUnavailable)}
	}
}

// isChecksumError recognises the INVALID_ARGUMENT Cloud KMS returns when a
// request's *_crc32c field does not match its data.
func isChecksumError(msg string) bool {
	m := strings.ToLower(msg)
	return strings.Contains(m, "crc32c") || strings.Contains(m, "checksum")
}

// call runs attempt with per-attempt timeouts and jittered exponential
// backoff until it succeeds, fails for good, attempts run out or the
// overall deadline passes.
func (p *Provider) call(ctx context.Context, op string, attempt func(context.Context) error) error {
	ctx, cancel := context.WithTimeout(ctx, p.timeout)
	defer cancel()
	backoff := 100 * time.Millisecond
	var err error
	for i := 0; i < p.maxAttempts; i++ {
		if i > 0 {
			// Jitter keeps many replicas from retrying in step after a
			// shared outage.
			pause := time.Duration(rand.Int64N(int64(backoff))) + backoff/2
			backoff = min(backoff*2, 2*time.Second)
			t := time.NewTimer(pause)
			select {
			case <-ctx.Done():
				t.Stop()
				return p.wrapErr(op, errors.Join(ctx.Err(), err))
			case <-t.C:
			}
		}
		actx, acancel := context.WithTimeout(ctx, p.attemptTimeout)
		err = attempt(actx)
		acancel()
		if err == nil {
			return nil
		}
		var r *retryableError
		if !errors.As(err, &r) {
			return p.wrapErr(op, err)
		}
		if ctx.Err() != nil {
			return p.wrapErr(op, errors.Join(ctx.Err(), err))
		}
	}
	return p.wrapErr(op, fmt.Errorf("after %d attempts: %w", p.maxAttempts, err))
}

func (p *Provider) wrapErr(op string, err error) error {
	return fmt.Errorf("gcpkms: %s with %s: %w", op, p.key.ResourceName(), err)
}

func crc32c(b []byte) int64 {
	return int64(crc32.Checksum(b, crc32.MakeTable(crc32.Castagnoli)))
}
