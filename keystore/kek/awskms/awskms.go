// Package awskms is the KEK provider for AWS KMS: data keys are wrapped with
// KMS Encrypt and unwrapped with KMS Decrypt under a customer managed
// symmetric key that never leaves AWS.
//
// The caller's associated data is bound through the KMS encryption context,
// under the name "associatedData" with a hex value, the layout Tink's AWS KMS
// AEAD uses, so a record wrapped here can also be opened by Tink-based tools
// holding the same key. KMS authenticates the encryption context; Decrypt
// with a different one fails with InvalidCiphertextException. The encryption
// context is logged in CloudTrail in clear, which is fine for the AAD this
// service uses (key set, kid, version): never pass secrets as aad.
//
// Credentials come from the AWS SDK's default chain (environment, shared
// config and credentials files, web identity / EKS pod identity, ECS and
// EC2 instance roles), optionally followed by an sts:AssumeRole into a role
// the key's owner controls, with an external id.
package awskms

import (
	"cmp"
	"context"
	"encoding/hex"
	"errors"
	"fmt"
	"regexp"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/aws/retry"
	"github.com/aws/aws-sdk-go-v2/config"
	"github.com/aws/aws-sdk-go-v2/credentials/stscreds"
	"github.com/aws/aws-sdk-go-v2/service/kms"
	"github.com/aws/aws-sdk-go-v2/service/kms/types"
	"github.com/aws/aws-sdk-go-v2/service/sts"

	"github.com/attested-kms/attested-kms/keystore/kek"
)

// Algorithm is the Algorithm of the Wrapped values this provider makes.
const Algorithm = "AWS-KMS-SYMMETRIC_DEFAULT"

// EncryptionContextKey is the encryption context entry that carries the
// hex-encoded aad (Tink's name for it).
const EncryptionContextKey = "associatedData"

// Limits of the KMS API: Encrypt takes at most 4096 bytes of plaintext and
// Decrypt at most 6144 bytes of ciphertext.
const (
	maxPlaintext  = 4096
	maxCiphertext = 6144
)

// Defaults bounding each Wrap and Unwrap.
const (
	DefaultCallTimeout = 20 * time.Second
	DefaultMaxAttempts = 3
	defaultSessionName = "attested-kms"
)

// Options configure Open. The zero value uses the default credential chain
// and the public regional endpoints.
type Options struct {
	// Endpoint overrides the KMS endpoint URL (a VPC endpoint, or a test
	// server). Empty: the SDK's regional endpoint, honouring
	// AWS_USE_FIPS_ENDPOINT and AWS_ENDPOINT_URL_KMS.
	Endpoint string
	// STSEndpoint overrides the STS endpoint used for AssumeRole.
	STSEndpoint string
	// HTTPClient sends the requests (tests pass one that trusts their TLS
	// certificate). Nil: the SDK's default client. When AWS_CA_BUNDLE is
	// set the SDK must add to the client's roots, which only works with an
	// *awshttp.BuildableClient (aws/transport/http).
	HTTPClient aws.HTTPClient
	// Credentials replaces the default credential chain (tests use
	// credentials.NewStaticCredentialsProvider). With RoleARN these are the
	// credentials that call sts:AssumeRole.
	Credentials aws.CredentialsProvider
	// RoleARN and ExternalID: assume this role before calling KMS. They may
	// instead come from the URI's role_arn and external_id; giving both
	// with different values is an error.
	RoleARN    string
	ExternalID string
	// RoleSessionName names the assumed-role session in CloudTrail;
	// default "attested-kms".
	RoleSessionName string
	// CallTimeout bounds each Wrap and Unwrap, retries included; default
	// DefaultCallTimeout. A shorter deadline on the caller's context wins.
	CallTimeout time.Duration
	// MaxAttempts is the number of attempts per KMS call, first one
	// included; default DefaultMaxAttempts.
	MaxAttempts int
	// MaxBackoff caps the delay between attempts; 0 keeps the SDK default.
	MaxBackoff time.Duration
}

// sessionNameRE is STS's RoleSessionName syntax.
var sessionNameRE = regexp.MustCompile(`^[A-Za-z0-9_+=,.@-]{2,64}$`)

// Provider wraps data keys under one AWS KMS key. It is safe for concurrent
// use.
type Provider struct {
	uri     string
	keyID   string // the key or alias ARN, passed as KeyId to every call
	client  *kms.Client
	timeout time.Duration
	// roleCreds caches the assumed role's credentials, nil without a role.
	roleCreds *aws.CredentialsCache
}

var _ kek.Provider = (*Provider)(nil)

// Open returns a provider for the key named by uri (see ParseURI). It makes
// no network call: a wrong key, missing permission or unreachable service
// shows on the first Wrap or Unwrap.
func Open(ctx context.Context, uri string, opts Options) (*Provider, error) {
	k, err := ParseURI(uri)
	if err != nil {
		return nil, err
	}
	if opts.RoleARN != "" || opts.ExternalID != "" {
		if k.RoleARN != "" && (k.RoleARN != opts.RoleARN || k.ExternalID != opts.ExternalID) {
			return nil, errors.New("awskms: role given in both the URI and the options, with different values")
		}
		if err := validateRole(opts.RoleARN, opts.ExternalID); err != nil {
			return nil, err
		}
		if partitionOf(opts.RoleARN) != k.Partition {
			return nil, errors.New("awskms: role ARN and key ARN are in different partitions")
		}
		k.RoleARN, k.ExternalID = opts.RoleARN, opts.ExternalID
	}
	if opts.RoleSessionName != "" && !sessionNameRE.MatchString(opts.RoleSessionName) {
		return nil, errors.New("awskms: invalid role session name (2 to 64 characters of letters, digits and +=,.@-_)")
	}
	if opts.CallTimeout < 0 || opts.MaxAttempts < 0 || opts.MaxBackoff < 0 {
		return nil, errors.New("awskms: negative timeout, attempts or backoff in options")
	}

	maxAttempts := cmp.Or(opts.MaxAttempts, DefaultMaxAttempts)
	load := []func(*config.LoadOptions) error{
		// The region is the key's: a KMS key lives in exactly one region.
		config.WithRegion(k.Region),
		config.WithRetryer(func() aws.Retryer {
			return retry.NewStandard(func(o *retry.StandardOptions) {
				o.MaxAttempts = maxAttempts
				if opts.MaxBackoff > 0 {
					o.MaxBackoff = opts.MaxBackoff
				}
			})
		}),
	}
	if opts.HTTPClient != nil {
		load = append(load, config.WithHTTPClient(opts.HTTPClient))
	}
	if opts.Credentials != nil {
		load = append(load, config.WithCredentialsProvider(opts.Credentials))
	}
	cfg, err := config.LoadDefaultConfig(ctx, load...)
	if err != nil {
		return nil, fmt.Errorf("awskms: load AWS configuration: %w", err)
	}
	var roleCreds *aws.CredentialsCache
	if k.RoleARN != "" {
		stsClient := sts.NewFromConfig(cfg, func(o *sts.Options) {
			if opts.STSEndpoint != "" {
				o.BaseEndpoint = aws.String(opts.STSEndpoint)
			}
		})
		session := cmp.Or(opts.RoleSessionName, defaultSessionName)
		assume := stscreds.NewAssumeRoleProvider(stsClient, k.RoleARN, func(o *stscreds.AssumeRoleOptions) {
			o.RoleSessionName = session
			if k.ExternalID != "" {
				o.ExternalID = aws.String(k.ExternalID)
			}
		})
		roleCreds = aws.NewCredentialsCache(assume)
		cfg.Credentials = roleCreds
	}
	client := kms.NewFromConfig(cfg, func(o *kms.Options) {
		if opts.Endpoint != "" {
			o.BaseEndpoint = aws.String(opts.Endpoint)
		}
	})
	return &Provider{
		uri:       k.String(),
		keyID:     k.ARN,
		client:    client,
		timeout:   cmp.Or(opts.CallTimeout, DefaultCallTimeout),
		roleCreds: roleCreds,
	}, nil
}

// URI returns the canonical aws-kms:// URI, role included.
func (p *Provider) URI() string { return p.uri }

// Wrap encrypts dek with KMS Encrypt, binding aad as encryption context.
func (p *Provider) Wrap(ctx context.Context, dek, aad []byte) (kek.Wrapped, error) {
	if len(dek) == 0 || len(dek) > maxPlaintext {
		return kek.Wrapped{}, fmt.Errorf("awskms: data key of %d bytes, want 1 to %d", len(dek), maxPlaintext)
	}
	ctx, cancel := context.WithTimeout(ctx, p.timeout)
	defer cancel()
	out, err := p.client.Encrypt(ctx, &kms.EncryptInput{
		KeyId:               aws.String(p.keyID),
		Plaintext:           dek,
		EncryptionContext:   encryptionContext(aad),
		EncryptionAlgorithm: types.EncryptionAlgorithmSpecSymmetricDefault,
	})
	if err != nil {
		return kek.Wrapped{}, p.callError(ctx, "encrypt", err)
	}
	if len(out.CiphertextBlob) == 0 {
		return kek.Wrapped{}, fmt.Errorf("awskms: encrypt under %s: empty ciphertext in response: %w", p.keyID, kek.ErrUnavailable)
	}
	return kek.Wrapped{
		KEKURI:     p.uri,
		KEKVersion: "", // KMS does not expose which backing key encrypted
		Algorithm:  Algorithm,
		Ciphertext: out.CiphertextBlob,
	}, nil
}

// Unwrap decrypts w with KMS Decrypt. KeyId is always sent so KMS refuses a
// ciphertext made under any other key (IncorrectKeyException) instead of
// decrypting it with whatever key it names.
func (p *Provider) Unwrap(ctx context.Context, w kek.Wrapped, aad []byte) ([]byte, error) {
	if w.Algorithm != Algorithm {
		return nil, fmt.Errorf("awskms: algorithm %q not supported by the AWS KMS provider: %w", w.Algorithm, kek.ErrUnsupported)
	}
	if len(w.Ciphertext) == 0 || len(w.Ciphertext) > maxCiphertext {
		return nil, fmt.Errorf("awskms: wrapped key of %d bytes cannot be a KMS ciphertext: %w", len(w.Ciphertext), kek.ErrAuthentication)
	}
	ctx, cancel := context.WithTimeout(ctx, p.timeout)
	defer cancel()
	out, err := p.client.Decrypt(ctx, &kms.DecryptInput{
		KeyId:               aws.String(p.keyID),
		CiphertextBlob:      w.Ciphertext,
		EncryptionContext:   encryptionContext(aad),
		EncryptionAlgorithm: types.EncryptionAlgorithmSpecSymmetricDefault,
	})
	if err != nil {
		return nil, p.callError(ctx, "decrypt", err)
	}
	if len(out.Plaintext) == 0 {
		return nil, fmt.Errorf("awskms: decrypt under %s: empty plaintext in response: %w", p.keyID, kek.ErrUnavailable)
	}
	return out.Plaintext, nil
}

// encryptionContext carries aad as Tink does, and omits the context when aad
// is empty, as Tink does, so either side opens the other's records.
func encryptionContext(aad []byte) map[string]string {
	if len(aad) == 0 {
		return nil
	}
	return map[string]string{EncryptionContextKey: hex.EncodeToString(aad)}
}
