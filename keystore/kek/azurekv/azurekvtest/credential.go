package azurekvtest

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"sync"
	"time"

	"github.com/Azure/azure-sdk-for-go/sdk/azcore"
	"github.com/Azure/azure-sdk-for-go/sdk/azcore/policy"
)

// Credential stands in for Entra ID: it issues opaque bearer tokens for
// the scope and tenant the client asks for, and the Server accepts only
// tokens it issued for the right audience and tenant. It is what a
// DefaultAzureCredential would be in production.
type Credential struct {
	mu     sync.Mutex
	tokens map[string]tokenGrant
	fail   error
	calls  int
}

type tokenGrant struct {
	scope, tenant string
}

var _ azcore.TokenCredential = (*Credential)(nil)

func newCredential() *Credential { return &Credential{tokens: make(map[string]tokenGrant)} }

// GetToken implements azcore.TokenCredential.
func (c *Credential) GetToken(ctx context.Context, opts policy.TokenRequestOptions) (azcore.AccessToken, error) {
	if err := ctx.Err(); err != nil {
		return azcore.AccessToken{}, err
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	c.calls++
	if c.fail != nil {
		return azcore.AccessToken{}, c.fail
	}
	if len(opts.Scopes) != 1 {
		return azcore.AccessToken{}, errors.New("azurekvtest: want exactly one scope")
	}
	b := make([]byte, 16)
	if _, err := rand.Read(b); err != nil {
		return azcore.AccessToken{}, err
	}
	tok := "azurekvtest-" + hex.EncodeToString(b)
	c.tokens[tok] = tokenGrant{scope: opts.Scopes[0], tenant: opts.TenantID}
	return azcore.AccessToken{Token: tok, ExpiresOn: time.Now().Add(time.Hour)}, nil
}

// SetError makes GetToken fail with err (nil restores it), as when the
// managed identity endpoint is unreachable.
func (c *Credential) SetError(err error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.fail = err
}

// Calls reports how many tokens were requested.
func (c *Credential) Calls() int {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.calls
}

func (c *Credential) lookup(tok string) (tokenGrant, bool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	g, ok := c.tokens[tok]
	return g, ok
}
