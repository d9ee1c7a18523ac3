// Package client is the library enclave services link to obtain private
// keys from an Attested KMS and to decrypt end users' RFC 9458 requests.
//
// A release makes a fresh wrapping key pair, binds its public key and a
// server challenge into hardware evidence, sends the evidence with an
// access token, and unwraps the answer. Released keys are cached by kid;
// concurrent requests for the same kid share one release.
package client

import (
	"bytes"
	"context"
	"crypto/rand"
	"crypto/rsa"
	"crypto/x509"
	"errors"
	"fmt"
	"io"
	"sync"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/metadata"

	"github.com/attested-kms/attested-kms/hpke"
	"github.com/attested-kms/attested-kms/hpke/ohttp"
	kmsv1 "github.com/attested-kms/attested-kms/proto/kms/v1"
)

// EvidenceProvider produces hardware evidence whose report data is the
// given 64 bytes.
type EvidenceProvider interface {
	Evidence(ctx context.Context, reportData [64]byte) (*kmsv1.Evidence, error)
}

// TokenSource returns an access token for the KMS.
// tokensource.Source implementations satisfy it.
type TokenSource interface {
	Token(ctx context.Context) (string, error)
}

// WrapAlgorithm selects the kind of wrapping key the client generates.
type WrapAlgorithm int

const (
	// WrapX25519 uses HPKE with an X25519 wrapping key (the default).
	WrapX25519 WrapAlgorithm = iota
	// WrapRSA3072 uses RSA-OAEP-SHA256 + AES key wrap with a 3072-bit key,
	// for environments that only hold RSA keys.
	WrapRSA3072
)

// Config configures a Client.
type Config struct {
	Conn     grpc.ClientConnInterface
	Evidence EvidenceProvider
	Tokens   TokenSource
	// KeySet defaults to "default".
	KeySet string
	Wrap   WrapAlgorithm
	Rand   io.Reader
}

// Client releases keys and decrypts requests. Safe for concurrent use.
type Client struct {
	rpc      kmsv1.KeyReleaseClient
	evidence EvidenceProvider
	tokens   TokenSource
	keyset   string
	wrap     WrapAlgorithm
	rand     io.Reader

	mu       sync.Mutex
	keys     map[string]*Key           // by kid
	byKeyID  map[uint8]*Key            // by RFC 9458 key id, for decryption
	inflight map[string]*releaseFlight // one release per kid at a time
}

type releaseFlight struct {
	done chan struct{}
	key  *Key
	err  error
}

// New checks the configuration and returns a Client.
func New(cfg Config) (*Client, error) {
	if cfg.Conn == nil || cfg.Evidence == nil || cfg.Tokens == nil {
		return nil, errors.New("client: Conn, Evidence and Tokens are required")
	}
	if cfg.KeySet == "" {
		cfg.KeySet = "default"
	}
	if cfg.Rand == nil {
		cfg.Rand = rand.Reader
	}
	return &Client{
		rpc: kmsv1.NewKeyReleaseClient(cfg.Conn), evidence: cfg.Evidence, tokens: cfg.Tokens,
		keyset: cfg.KeySet, wrap: cfg.Wrap, rand: cfg.Rand,
		keys: map[string]*Key{}, byKeyID: map[uint8]*Key{}, inflight: map[string]*releaseFlight{},
	}, nil
}

// Key is a released private key and its metadata. The private key is not
// exported: callers decrypt through the Client.
type Key struct {
	KeySet     string
	KID        string
	OHTTPKeyID uint8
	Suite      string
	PublicKey  []byte
	NotBefore  time.Time
	NotAfter   time.Time

	gateway *ohttp.GatewayKey
}

// Config returns the RFC 9458 key configuration of the key.
func (k *Key) Config() ohttp.KeyConfig { return k.gateway.Config() }

// withToken attaches the bearer token to an outgoing call.
func (c *Client) withToken(ctx context.Context) (context.Context, error) {
	tok, err := c.tokens.Token(ctx)
	if err != nil {
		return nil, fmt.Errorf("client: obtaining access token: %w", err)
	}
	return metadata.AppendToOutgoingContext(ctx, "authorization", "Bearer "+tok), nil
}

// PublicKeys lists the key set's pending and active keys.
func (c *Client) PublicKeys(ctx context.Context) ([]*kmsv1.PublicKey, error) {
	resp, err := c.rpc.ListPublicKeys(ctx, &kmsv1.ListPublicKeysRequest{Keyset: c.keyset})
	if err != nil {
		return nil, fmt.Errorf("client: listing public keys: %w", err)
	}
	return resp.GetKeys(), nil
}

// Key returns the released key kid, releasing it if it is not cached.
// Concurrent calls for the same kid wait for one release.
func (c *Client) Key(ctx context.Context, kid string) (*Key, error) {
	c.mu.Lock()
	if k, ok := c.keys[kid]; ok {
		c.mu.Unlock()
		return k, nil
	}
	if f, ok := c.inflight[kid]; ok {
		c.mu.Unlock()
		select {
		case <-f.done:
			return f.key, f.err
		case <-ctx.Done():
			return nil, ctx.Err()
		}
	}
	f := &releaseFlight{done: make(chan struct{})}
	c.inflight[kid] = f
	c.mu.Unlock()

	// The release runs detached from this caller's cancellation so other
	// waiters are not failed by one impatient caller, but always under a
	// deadline so a stalled KMS cannot hold every waiter forever.
	rctx, cancel := releaseContext(ctx)
	f.key, f.err = c.release(rctx, kid)
	cancel()
	c.mu.Lock()
	delete(c.inflight, kid)
	if f.err == nil {
		c.keys[kid] = f.key
		c.byKeyID[f.key.OHTTPKeyID] = f.key
	}
	c.mu.Unlock()
	close(f.done)
	return f.key, f.err
}

// DefaultReleaseTimeout bounds one release when the caller set no deadline.
const DefaultReleaseTimeout = time.Minute

func releaseContext(ctx context.Context) (context.Context, context.CancelFunc) {
	deadline, ok := ctx.Deadline()
	if !ok {
		deadline = time.Now().Add(DefaultReleaseTimeout)
	}
	return context.WithDeadline(context.WithoutCancel(ctx), deadline)
}

// Prefetch releases every pending and active key of the key set, so
// requests encrypted to a newly activated key find it already cached.
func (c *Client) Prefetch(ctx context.Context) ([]*Key, error) {
	pubs, err := c.PublicKeys(ctx)
	if err != nil {
		return nil, err
	}
	var out []*Key
	var errs []error
	for _, p := range pubs {
		k, err := c.Key(ctx, p.GetKid())
		if err != nil {
			errs = append(errs, fmt.Errorf("kid %s: %w", p.GetKid(), err))
			continue
		}
		out = append(out, k)
	}
	return out, errors.Join(errs...)
}

// Forget drops a cached key, e.g. after the KMS retired it.
func (c *Client) Forget(kid string) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if k, ok := c.keys[kid]; ok {
		delete(c.keys, kid)
		if c.byKeyID[k.OHTTPKeyID] == k {
			delete(c.byKeyID, k.OHTTPKeyID)
		}
	}
}

type wrappingKey struct {
	alg    kmsv1.WrappingAlgorithm
	public []byte
	unwrap func(kid string, nonce, wrapped []byte) ([]byte, error)
}

func (c *Client) newWrappingKey() (*wrappingKey, error) {
	switch c.wrap {
	case WrapX25519:
		kp, err := hpke.GenerateKeyPair(c.rand)
		if err != nil {
			return nil, err
		}
		return &wrappingKey{
			alg: kmsv1.WrappingAlgorithm_WRAPPING_ALGORITHM_HPKE_X25519, public: kp.Public,
			unwrap: func(kid string, nonce, wrapped []byte) ([]byte, error) {
				defer clear(kp.Private)
				return hpke.UnwrapX25519(kp.Private, kid, nonce, wrapped)
			},
		}, nil
	case WrapRSA3072:
		priv, err := rsa.GenerateKey(c.rand, 3072)
		if err != nil {
			return nil, err
		}
		der, err := x509.MarshalPKIXPublicKey(&priv.PublicKey)
		if err != nil {
			return nil, err
		}
		return &wrappingKey{
			alg: kmsv1.WrappingAlgorithm_WRAPPING_ALGORITHM_RSA_AES_KEY_WRAP_256, public: der,
			unwrap: func(_ string, _, wrapped []byte) ([]byte, error) { return hpke.UnwrapRSA(priv, wrapped) },
		}, nil
	}
	return nil, fmt.Errorf("unknown wrap algorithm %d", c.wrap)
}

// release runs one key-release exchange.
func (c *Client) release(ctx context.Context, kid string) (*Key, error) {
	ctx, err := c.withToken(ctx)
	if err != nil {
		return nil, err
	}
	ch, err := c.rpc.GetChallenge(ctx, &kmsv1.GetChallengeRequest{})
	if err != nil {
		return nil, fmt.Errorf("client: getting challenge: %w", err)
	}
	wk, err := c.newWrappingKey()
	if err != nil {
		return nil, fmt.Errorf("client: making wrapping key: %w", err)
	}
	binding, err := hpke.BindingDigest(ch.GetNonce(), wk.public)
	if err != nil {
		return nil, fmt.Errorf("client: binding: %w", err)
	}
	ev, err := c.evidence.Evidence(ctx, binding)
	if err != nil {
		return nil, fmt.Errorf("client: obtaining evidence: %w", err)
	}
	resp, err := c.rpc.ReleaseKey(ctx, &kmsv1.ReleaseKeyRequest{
		Keyset: c.keyset, Kid: kid, Evidence: ev, Nonce: ch.GetNonce(),
		WrappingKey: &kmsv1.WrappingKey{Algorithm: wk.alg, PublicKey: wk.public},
	})
	if err != nil {
		return nil, fmt.Errorf("client: releasing key %s: %w", kid, err)
	}
	if resp.GetKid() != kid {
		return nil, fmt.Errorf("client: KMS answered for kid %q, asked for %q", resp.GetKid(), kid)
	}
	priv, err := wk.unwrap(kid, ch.GetNonce(), resp.GetWrappedKey())
	if err != nil {
		return nil, fmt.Errorf("client: unwrapping key %s: %w", kid, err)
	}
	defer clear(priv)
	// The released private key must belong to the advertised public key;
	// otherwise requests would fail later in a way that is hard to trace.
	pub, err := hpke.PublicFromPrivate(priv)
	if err != nil || !bytes.Equal(pub, resp.GetPublicKey()) {
		return nil, fmt.Errorf("client: released key %s does not match its public key", kid)
	}
	id := resp.GetOhttpKeyId()
	if id > 0xff {
		return nil, fmt.Errorf("client: RFC 9458 key id %d out of range", id)
	}
	gw, err := ohttp.NewGatewayKey(uint8(id), priv)
	if err != nil {
		return nil, fmt.Errorf("client: key %s: %w", kid, err)
	}
	return &Key{
		KeySet: resp.GetKeyset(), KID: kid, OHTTPKeyID: uint8(id), Suite: resp.GetSuite(),
		PublicKey: resp.GetPublicKey(), NotBefore: resp.GetNotBefore().AsTime(), NotAfter: resp.GetNotAfter().AsTime(),
		gateway: gw,
	}, nil
}

// ErrNoKey reports that no released key has the request's key id.
var ErrNoKey = errors.New("client: no released key for the request's key id")

// DecryptRequest decapsulates an RFC 9458 encapsulated request with a
// cached key. It never calls the KMS: keys are released ahead of time with
// Key or Prefetch, so decryption cost stays that of one HPKE open.
func (c *Client) DecryptRequest(encapsulated []byte) ([]byte, *ohttp.ResponseContext, error) {
	id, err := ohttp.PeekKeyID(encapsulated)
	if err != nil {
		return nil, nil, fmt.Errorf("client: %w", err)
	}
	c.mu.Lock()
	k := c.byKeyID[id]
	c.mu.Unlock()
	if k == nil {
		return nil, nil, fmt.Errorf("%w (key id %d)", ErrNoKey, id)
	}
	req, rc, err := k.gateway.DecapsulateRequest(encapsulated)
	if err != nil {
		return nil, nil, fmt.Errorf("client: decrypting request: %w", err)
	}
	return req, rc, nil
}
