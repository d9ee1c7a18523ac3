package hcvault

import (
	"bytes"
	"context"
	"fmt"
	"os"
	"strings"
	"sync"
	"time"

	"github.com/hashicorp/vault/api"

	"github.com/attested-kms/attested-kms/keystore/kek"
)

// DefaultServiceAccountTokenFile is where Kubernetes mounts a pod's service
// account token.
const DefaultServiceAccountTokenFile = "/var/run/secrets/kubernetes.io/serviceaccount/token"

// DefaultKubernetesAuthMount is the default mount path of Vault's
// Kubernetes auth method.
const DefaultKubernetesAuthMount = "kubernetes"

// KubernetesAuth configures login with Vault's Kubernetes auth method: the
// KMS presents its pod's service account JWT and receives a Vault token
// carrying the policies the owner bound to Role.
type KubernetesAuth struct {
	// Role is the Vault role bound to the KMS's service account.
	Role string
	// Mount is the auth method's mount path; default "kubernetes".
	Mount string
	// JWTFile holds the service account token; default
	// DefaultServiceAccountTokenFile. It is re-read at every login, since
	// projected tokens rotate.
	JWTFile string
}

// tokenSource yields the Vault token for the next request.
type tokenSource interface {
	// token returns a token. If stale is non-empty and is the token the
	// source would return, Vault has just refused it, so a refreshable
	// source fetches a fresh one; a static source returns it again.
	token(ctx context.Context, stale string) (string, error)
	// refreshable reports whether a refused token may be replaced.
	refreshable() bool
}

// staticToken is a token given directly (Options.Token, VAULT_TOKEN).
type staticToken string

func (s staticToken) token(context.Context, string) (string, error) { return string(s), nil }
func (staticToken) refreshable() bool                               { return false }

// fileToken reads the token from a file that something else keeps fresh,
// typically a Vault Agent auto-auth sink. The file is read once and again
// after Vault refuses the cached token.
type fileToken struct {
	path string

	mu  sync.Mutex
	cur string
}

func (f *fileToken) refreshable() bool { return true }

func (f *fileToken) token(_ context.Context, stale string) (string, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.cur != "" && f.cur != stale {
		return f.cur, nil
	}
	b, err := os.ReadFile(f.path)
	if err != nil {
		// A missing sink usually means the agent has not authenticated
		// yet: retry later.
		return "", fmt.Errorf("hcvault: read token file: %w: %w", kek.ErrUnavailable, err)
	}
	tok := string(bytes.TrimSpace(b))
	clear(b)
	if tok == "" {
		return "", fmt.Errorf("hcvault: token file %s is empty: %w", f.path, kek.ErrUnavailable)
	}
	f.cur = tok
	return tok, nil
}

// kubernetesLogin logs in with the Kubernetes auth method and keeps the
// token until shortly before its lease ends or Vault refuses it.
type kubernetesLogin struct {
	client *api.Client // no token set: login paths are unauthenticated
	cfg    KubernetesAuth
	now    func() time.Time

	mu      sync.Mutex
	cur     string
	renewAt time.Time // zero: no expiry reported
}

func (k *kubernetesLogin) refreshable() bool { return true }

func (k *kubernetesLogin) token(ctx context.Context, stale string) (string, error) {
	k.mu.Lock()
	defer k.mu.Unlock()
	if k.cur != "" && k.cur != stale && (k.renewAt.IsZero() || k.now().Before(k.renewAt)) {
		return k.cur, nil
	}
	jwt, err := os.ReadFile(k.cfg.JWTFile)
	if err != nil {
		return "", fmt.Errorf("hcvault: read service account token: %w: %w", kek.ErrUnavailable, err)
	}
	defer clear(jwt)
	what := "login auth/" + k.cfg.Mount + "/login role " + k.cfg.Role
	secret, err := k.client.Logical().WriteWithContext(ctx, "auth/"+k.cfg.Mount+"/login", map[string]any{
		"role": k.cfg.Role,
		"jwt":  strings.TrimSpace(string(jwt)),
	})
	if err != nil {
		return "", classify(ctx, opLogin, what, err)
	}
	if secret == nil || secret.Auth == nil || secret.Auth.ClientToken == "" {
		return "", fmt.Errorf("hcvault: %s: response has no client token: %w", what, kek.ErrUnavailable)
	}
	k.cur = secret.Auth.ClientToken
	k.renewAt = time.Time{}
	if ttl := time.Duration(secret.Auth.LeaseDuration) * time.Second; ttl > 0 {
		// Log in again when 80% of the lease has passed, so a token is
		// never used right at its expiry.
		k.renewAt = k.now().Add(ttl * 4 / 5)
	}
	return k.cur, nil
}
