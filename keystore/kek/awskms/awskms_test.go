package awskms_test

import (
	"bytes"
	"context"
	"crypto/rand"
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/credentials"
	"github.com/aws/aws-sdk-go-v2/service/kms"
	"github.com/aws/aws-sdk-go-v2/service/kms/types"
	tinkawskms "github.com/tink-crypto/tink-go-awskms/v3/integration/awskms"

	"github.com/attested-kms/attested-kms/keystore/kek"
	"github.com/attested-kms/attested-kms/keystore/kek/awskms"
	"github.com/attested-kms/attested-kms/keystore/kek/awskms/awskmstest"
	"github.com/attested-kms/attested-kms/keystore/kek/kektest"
)

var testAAD = []byte("attested-kms/v1 seal keyset=default kid=0123456789abcdef v=1")

func open(t testing.TB, uri string, opts awskms.Options) *awskms.Provider {
	t.Helper()
	p, err := awskms.Open(context.Background(), uri, opts)
	if err != nil {
		t.Fatal(err)
	}
	return p
}

func newDEK(t testing.TB) []byte {
	t.Helper()
	dek := make([]byte, 32)
	if _, err := rand.Read(dek); err != nil {
		t.Fatal(err)
	}
	return dek
}

func wrap(t testing.TB, p kek.Provider, dek []byte) kek.Wrapped {
	t.Helper()
	w, err := p.Wrap(context.Background(), dek, testAAD)
	if err != nil {
		t.Fatal(err)
	}
	return w
}

// wantClass checks that err belongs to class and to no other class.
func wantClass(t testing.TB, what string, err, class error) {
	t.Helper()
	if class == nil {
		if err != nil {
			t.Fatalf("%s: %v", what, err)
		}
		return
	}
	if !errors.Is(err, class) {
		t.Fatalf("%s: err = %v, want %v", what, err, class)
	}
	for _, other := range []error{kek.ErrUnavailable, kek.ErrAuthentication, kek.ErrUnsupported, kek.ErrKeyDisabled} {
		if other != class && errors.Is(err, other) {
			t.Fatalf("%s: err = %v is both %v and %v", what, err, class, other)
		}
	}
}

func TestConformance(t *testing.T) {
	s := awskmstest.NewServer(t)
	key := s.CreateKey(t)
	kektest.Run(t, kektest.Config{
		New:        func(t testing.TB) kek.Provider { return open(t, key.URI(), s.Options()) },
		Owner:      key,
		Network:    s,
		Randomized: true,
	})
}

func TestConformanceAssumedRole(t *testing.T) {
	s := awskmstest.NewServer(t)
	key := s.CreateKey(t)
	kektest.Run(t, kektest.Config{
		New:        func(t testing.TB) kek.Provider { return open(t, key.RoleURI(), s.Options()) },
		Owner:      key,
		Network:    s,
		Randomized: true,
	})
	if s.Calls("AssumeRole") == 0 {
		t.Fatal("KMS was called without assuming the role")
	}
}

func TestConformanceAlias(t *testing.T) {
	s := awskmstest.NewServer(t)
	key := s.CreateKey(t)
	uri := awskms.Scheme + "://" + s.CreateAlias(t, "attested-kms-kek", key)
	kektest.Run(t, kektest.Config{
		New:        func(t testing.TB) kek.Provider { return open(t, uri, s.Options()) },
		Owner:      key,
		Network:    s,
		Randomized: true,
	})
}

func TestWrappedFields(t *testing.T) {
	s := awskmstest.NewServer(t)
	key := s.CreateKey(t)
	p := open(t, key.URI(), s.Options())
	if p.URI() != key.URI() {
		t.Fatalf("URI() = %q, want %q", p.URI(), key.URI())
	}
	w := wrap(t, p, newDEK(t))
	if w.KEKURI != key.URI() || w.KEKVersion != "" || w.Algorithm != awskms.Algorithm {
		t.Fatalf("wrapped = %+v", w)
	}
}

// TestServiceErrors drives every error the service answers with through the
// real client and checks its class.
func TestServiceErrors(t *testing.T) {
	s := awskmstest.NewServer(t)
	key := s.CreateKey(t)
	p := open(t, key.URI(), s.Options())
	dek := newDEK(t)
	w := wrap(t, p, dek)
	for _, tc := range []struct {
		code  string
		class error
	}{
		{"DisabledException", kek.ErrKeyDisabled},
		{"KMSInvalidStateException", kek.ErrKeyDisabled},
		{"NotFoundException", kek.ErrKeyDisabled},
		{"AccessDeniedException", kek.ErrKeyDisabled},
		{"InvalidCiphertextException", kek.ErrAuthentication},
		{"IncorrectKeyException", kek.ErrAuthentication},
		{"InvalidKeyUsageException", kek.ErrUnsupported},
		{"ValidationException", kek.ErrUnsupported},
		{"SomeFutureClientException", kek.ErrUnsupported},
		{"ThrottlingException", kek.ErrUnavailable},
		{"LimitExceededException", kek.ErrUnavailable},
		{"KMSInternalException", kek.ErrUnavailable},
		{"KeyUnavailableException", kek.ErrUnavailable},
		{"DependencyTimeoutException", kek.ErrUnavailable},
		{"ServiceUnavailableException", kek.ErrUnavailable},
		{"UnrecognizedClientException", kek.ErrUnavailable},
		{"ExpiredTokenException", kek.ErrUnavailable},
		{"HTTP 500", kek.ErrUnavailable},
		{"HTTP 502", kek.ErrUnavailable},
		{"HTTP 503", kek.ErrUnavailable},
		{"HTTP 429", kek.ErrUnavailable},
		{"HTTP 403", kek.ErrKeyDisabled},
	} {
		t.Run(tc.code, func(t *testing.T) {
			// Enough faults to outlast the client's retries.
			s.Fail(t, 10, tc.code)
			defer s.Fail(t, 0, "")
			_, err := p.Unwrap(context.Background(), w, testAAD)
			wantClass(t, "unwrap", err, tc.class)
			s.Fail(t, 10, tc.code)
			_, err = p.Wrap(context.Background(), dek, testAAD)
			wantClass(t, "wrap", err, tc.class)
		})
	}
	// The SDK's typed errors stay reachable for callers that want detail.
	s.Fail(t, 1, "DisabledException")
	_, err := p.Unwrap(context.Background(), w, testAAD)
	if de := (*types.DisabledException)(nil); !errors.As(err, &de) {
		t.Fatalf("err = %v, want it to wrap types.DisabledException", err)
	}
}

// TestKeyStates walks the owner's switches through the fake's key states.
func TestKeyStates(t *testing.T) {
	s := awskmstest.NewServer(t)
	key := s.CreateKey(t)
	p := open(t, key.URI(), s.Options())
	dek := newDEK(t)
	w := wrap(t, p, dek)
	unwrap := func(what string, class error) {
		t.Helper()
		got, err := p.Unwrap(context.Background(), w, testAAD)
		wantClass(t, what, err, class)
		if err == nil && !bytes.Equal(got, dek) {
			t.Fatalf("%s: wrong data key", what)
		}
	}
	key.RevokeAccess(t)
	unwrap("access revoked", kek.ErrKeyDisabled)
	key.GrantAccess(t)
	unwrap("access granted", nil)

	key.ScheduleDeletion(t)
	unwrap("pending deletion", kek.ErrKeyDisabled)
	key.CancelDeletion(t) // leaves the key disabled, as on AWS
	unwrap("deletion cancelled", kek.ErrKeyDisabled)
	key.Enable(t)
	unwrap("re-enabled", nil)

	key.Rotate(t)
	unwrap("after rotation", nil)
	w2 := wrap(t, p, dek)
	if got, err := p.Unwrap(context.Background(), w2, testAAD); err != nil || !bytes.Equal(got, dek) {
		t.Fatalf("wrap after rotation: %v", err)
	}

	key.DeleteNow(t)
	unwrap("deleted", kek.ErrKeyDisabled)
	_, err := p.Wrap(context.Background(), dek, testAAD)
	wantClass(t, "wrap under a deleted key", err, kek.ErrKeyDisabled)
}

func TestOtherKey(t *testing.T) {
	s := awskmstest.NewServer(t)
	a, b := s.CreateKey(t), s.CreateKey(t)
	pa, pb := open(t, a.URI(), s.Options()), open(t, b.URI(), s.Options())
	w := wrap(t, pa, newDEK(t))
	// The URI in the record is not trusted: the provider names its own key.
	_, err := pb.Unwrap(context.Background(), w, testAAD)
	wantClass(t, "unwrap under another key", err, kek.ErrAuthentication)
	if !strings.Contains(err.Error(), "IncorrectKeyException") {
		t.Fatalf("err = %v, want KMS to refuse the key (IncorrectKeyException)", err)
	}
}

// TestAliasRepointed pins down what operators must know: an alias URI
// unwraps under the key the alias names now, so re-pointing it orphans
// earlier records until it points back.
func TestAliasRepointed(t *testing.T) {
	s := awskmstest.NewServer(t)
	a, b := s.CreateKey(t), s.CreateKey(t)
	uri := awskms.Scheme + "://" + s.CreateAlias(t, "kek", a)
	p := open(t, uri, s.Options())
	w := wrap(t, p, newDEK(t))
	s.CreateAlias(t, "kek", b)
	_, err := p.Unwrap(context.Background(), w, testAAD)
	wantClass(t, "alias re-pointed", err, kek.ErrAuthentication)
	s.CreateAlias(t, "kek", a)
	if _, err := p.Unwrap(context.Background(), w, testAAD); err != nil {
		t.Fatal(err)
	}
}

func TestAssumedRoleRevoked(t *testing.T) {
	s := awskmstest.NewServer(t)
	key := s.CreateKey(t)
	p := open(t, key.RoleURI(), s.Options())
	dek := newDEK(t)
	w := wrap(t, p, dek)

	s.RevokeRole(t)
	// First KMS refuses the revoked session, then STS refuses a new one.
	for i := range 2 {
		_, err := p.Unwrap(context.Background(), w, testAAD)
		wantClass(t, "role revoked", err, kek.ErrKeyDisabled)
		if i == 1 && !strings.Contains(err.Error(), "AssumeRole") {
			t.Fatalf("second call: err = %v, want STS to refuse AssumeRole", err)
		}
	}
	s.RestoreRole(t)
	if got, err := p.Unwrap(context.Background(), w, testAAD); err != nil || !bytes.Equal(got, dek) {
		t.Fatalf("after restoring the role: %v", err)
	}
}

func TestAssumeRoleOptions(t *testing.T) {
	s := awskmstest.NewServer(t)
	key := s.CreateKey(t)
	opts := s.Options()
	opts.RoleARN, opts.ExternalID = awskmstest.RoleARN, awskmstest.ExternalID
	p := open(t, key.URI(), opts)
	if p.URI() != key.RoleURI() {
		t.Fatalf("URI() = %q, want the role in it: %q", p.URI(), key.RoleURI())
	}
	wrap(t, p, newDEK(t))
	if s.Calls("AssumeRole") != 1 {
		t.Fatalf("AssumeRole calls = %d, want 1", s.Calls("AssumeRole"))
	}

	opts.ExternalID = "not-the-external-id"
	p = open(t, key.URI(), opts)
	_, err := p.Wrap(context.Background(), newDEK(t), testAAD)
	wantClass(t, "wrong external id", err, kek.ErrKeyDisabled)

	if _, err := awskms.Open(context.Background(), key.RoleURI(), opts); err == nil {
		t.Fatal("Open accepted a role in both the URI and the options with different external ids")
	}
}

// TestBadCredentials: the KMS's own credentials being refused is not the
// owner's off switch, and the secret never shows in the error.
func TestBadCredentials(t *testing.T) {
	s := awskmstest.NewServer(t)
	key := s.CreateKey(t)
	for name, creds := range map[string]aws.CredentialsProvider{
		"wrong secret":      credentials.NewStaticCredentialsProvider(s.AccessKeyID, "wrong-secret-0123456789", ""),
		"unknown key id":    credentials.NewStaticCredentialsProvider("AKIAUNKNOWN000000000", s.SecretAccessKey, ""),
		"bad session token": credentials.NewStaticCredentialsProvider(s.AccessKeyID, s.SecretAccessKey, "forged-session-token"),
	} {
		t.Run(name, func(t *testing.T) {
			opts := s.Options()
			opts.Credentials = creds
			p := open(t, key.URI(), opts)
			_, err := p.Wrap(context.Background(), newDEK(t), testAAD)
			if name == "bad session token" {
				// The base credentials ignore an extra token: AWS checks
				// tokens only for temporary credentials.
				wantClass(t, name, err, nil)
				return
			}
			wantClass(t, name, err, kek.ErrUnavailable)
			if strings.Contains(err.Error(), s.SecretAccessKey) || strings.Contains(err.Error(), "wrong-secret") {
				t.Fatalf("error carries a secret: %v", err)
			}
		})
	}
}

func TestRetriesBounded(t *testing.T) {
	s := awskmstest.NewServer(t)
	key := s.CreateKey(t)
	opts := s.Options()
	opts.MaxAttempts = 3
	p := open(t, key.URI(), opts)
	dek := newDEK(t)
	w := wrap(t, p, dek)

	// Throttling shorter than the retry budget is absorbed.
	s.Throttle(t, 2)
	before := s.Calls("Decrypt")
	if got, err := p.Unwrap(context.Background(), w, testAAD); err != nil || !bytes.Equal(got, dek) {
		t.Fatalf("two throttled answers: %v", err)
	}
	if n := s.Calls("Decrypt") - before; n != 3 {
		t.Fatalf("Decrypt attempts = %d, want 3", n)
	}
	// Longer throttling stops after MaxAttempts.
	s.Throttle(t, 100)
	before = s.Calls("Decrypt")
	_, err := p.Unwrap(context.Background(), w, testAAD)
	wantClass(t, "throttled", err, kek.ErrUnavailable)
	if n := s.Calls("Decrypt") - before; n != 3 {
		t.Fatalf("Decrypt attempts = %d, want 3", n)
	}
	s.Throttle(t, 0)
}

func TestCallTimeout(t *testing.T) {
	s := awskmstest.NewServer(t)
	key := s.CreateKey(t)
	opts := s.Options()
	opts.CallTimeout = 300 * time.Millisecond
	p := open(t, key.URI(), opts)
	w := wrap(t, p, newDEK(t))
	s.Stall(t, true)
	defer s.Stall(t, false)
	start := time.Now()
	_, err := p.Unwrap(context.Background(), w, testAAD)
	wantClass(t, "stalled service", err, kek.ErrUnavailable)
	if d := time.Since(start); d > 3*time.Second {
		t.Fatalf("Unwrap took %v with a 300ms call timeout", d)
	}

	// A caller's cancellation is reported as such, not as an outage.
	ctx, cancel := context.WithCancel(context.Background())
	time.AfterFunc(50*time.Millisecond, cancel)
	_, err = p.Unwrap(ctx, w, testAAD)
	if !errors.Is(err, context.Canceled) || errors.Is(err, kek.ErrUnavailable) {
		t.Fatalf("cancelled call: err = %v, want context.Canceled only", err)
	}
}

func TestConnectionRefused(t *testing.T) {
	s := awskmstest.NewServer(t)
	key := s.CreateKey(t)
	opts := s.Options()
	opts.Endpoint = "https://127.0.0.1:1" // nothing listens on port 1
	p := open(t, key.URI(), opts)
	_, err := p.Wrap(context.Background(), newDEK(t), testAAD)
	wantClass(t, "connection refused", err, kek.ErrUnavailable)
}

func TestLocalChecks(t *testing.T) {
	s := awskmstest.NewServer(t)
	key := s.CreateKey(t)
	p := open(t, key.URI(), s.Options())
	w := wrap(t, p, newDEK(t))

	other := w.Clone()
	other.Algorithm = kek.LocalAlgorithm
	_, err := p.Unwrap(context.Background(), other, testAAD)
	wantClass(t, "other algorithm", err, kek.ErrUnsupported)

	long := w.Clone()
	long.Ciphertext = make([]byte, 6145)
	_, err = p.Unwrap(context.Background(), long, testAAD)
	wantClass(t, "oversized ciphertext", err, kek.ErrAuthentication)

	if _, err := p.Wrap(context.Background(), nil, testAAD); err == nil {
		t.Fatal("wrapped an empty data key")
	}
	if _, err := p.Wrap(context.Background(), make([]byte, 4097), testAAD); err == nil {
		t.Fatal("wrapped a data key larger than KMS Encrypt accepts")
	}
	if s.Calls("Decrypt") != 0 || s.Calls("Encrypt") != 1 {
		t.Fatalf("local checks reached the service: %d encrypt, %d decrypt", s.Calls("Encrypt"), s.Calls("Decrypt"))
	}
}

func TestOpen(t *testing.T) {
	s := awskmstest.NewServer(t)
	key := s.CreateKey(t)
	for name, tc := range map[string]struct {
		uri  string
		opts awskms.Options
	}{
		"not aws-kms":          {uri: "gcp-kms://projects/p/locations/l/keyRings/r/cryptoKeys/k"},
		"bare key id":          {uri: "aws-kms://" + key.ID()},
		"negative timeout":     {uri: key.URI(), opts: awskms.Options{CallTimeout: -1}},
		"external id, no role": {uri: key.URI(), opts: awskms.Options{ExternalID: "abc"}},
		"bad role":             {uri: key.URI(), opts: awskms.Options{RoleARN: "arn:aws:iam::111122223333:user/x"}},
		"bad session name":     {uri: key.RoleURI(), opts: awskms.Options{RoleSessionName: "a b"}},
	} {
		if _, err := awskms.Open(context.Background(), tc.uri, tc.opts); err == nil {
			t.Errorf("%s: Open(%q) succeeded", name, tc.uri)
		}
	}
	_, err := awskms.Open(context.Background(), "gcp-kms://x", awskms.Options{})
	if !errors.Is(err, kek.ErrUnsupported) {
		t.Errorf("other scheme: err = %v, want ErrUnsupported", err)
	}
	// Open makes no call: the service sees nothing until the first Wrap.
	open(t, key.RoleURI(), s.Options())
	if s.Calls("AssumeRole")+s.Calls("Encrypt")+s.Calls("Decrypt") != 0 {
		t.Fatal("Open called the service")
	}
}

// TestTinkInterop: the aad travels in the encryption context exactly as in
// Tink's AWS KMS AEAD, so either side opens the other's records.
func TestTinkInterop(t *testing.T) {
	s := awskmstest.NewServer(t)
	key := s.CreateKey(t)
	p := open(t, key.URI(), s.Options())
	client := kms.New(kms.Options{
		Region:       awskmstest.Region,
		BaseEndpoint: aws.String(s.URL),
		HTTPClient:   s.HTTPClient(),
		Credentials:  s.Credentials(),
	})
	tc, err := tinkawskms.NewClientWithOptions(context.Background(), key.URI(), tinkawskms.WithKMS(client))
	if err != nil {
		t.Fatal(err)
	}
	aead, err := tc.GetAEAD(key.URI())
	if err != nil {
		t.Fatal(err)
	}
	dek := newDEK(t)
	w := wrap(t, p, dek)
	if got, err := aead.Decrypt(w.Ciphertext, testAAD); err != nil || !bytes.Equal(got, dek) {
		t.Fatalf("tink decrypts ours: %v", err)
	}
	if _, err := aead.Decrypt(w.Ciphertext, []byte("other aad")); err == nil {
		t.Fatal("tink decrypted with another aad")
	}
	ct, err := aead.Encrypt(dek, testAAD)
	if err != nil {
		t.Fatal(err)
	}
	got, err := p.Unwrap(context.Background(), kek.Wrapped{KEKURI: p.URI(), Algorithm: awskms.Algorithm, Ciphertext: ct}, testAAD)
	if err != nil || !bytes.Equal(got, dek) {
		t.Fatalf("we decrypt tink's: %v", err)
	}
}
