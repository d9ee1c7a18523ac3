package tokensource

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"net/url"
	"strings"
)

const (
	// DefaultIMDSEndpoint is the Azure Instance Metadata Service address,
	// reachable only from inside the VM.
	DefaultIMDSEndpoint = "http://169.254.169.254"

	imdsTokenPath  = "/metadata/identity/oauth2/token"
	imdsAPIVersion = "2018-02-01"
)

// ManagedIdentityOptions configures NewManagedIdentity.
type ManagedIdentityOptions struct {
	// Resource is the KMS's application ID URI (e.g. "api://<app id>"),
	// the audience of the requested token. Required.
	Resource string
	// ClientID selects a user-assigned identity by its client ID.
	// At most one of ClientID and ResourceID may be set; with neither,
	// the VM's system-assigned identity is used.
	ClientID string
	// ResourceID selects a user-assigned identity by its Azure resource ID
	// (/subscriptions/.../userAssignedIdentities/<name>).
	ResourceID string
	// Endpoint is the IMDS base URL. Defaults to DefaultIMDSEndpoint.
	Endpoint string
	// HTTPClient sends the request. Its CheckRedirect is overridden so
	// redirects are never followed. The default client ignores proxy
	// environment variables: IMDS is link-local, and a proxy would see the
	// token in the response.
	HTTPClient *http.Client
}

// ManagedIdentity gets tokens from Azure IMDS with the VM's managed
// identity.
type ManagedIdentity struct {
	tokenURL string // fully built: the query never changes
	client   *http.Client
}

// NewManagedIdentity validates opts and returns a ManagedIdentity source.
func NewManagedIdentity(opts ManagedIdentityOptions) (*ManagedIdentity, error) {
	if opts.Resource == "" {
		return nil, errors.New("tokensource: managed identity: Resource is required")
	}
	if opts.ClientID != "" && opts.ResourceID != "" {
		return nil, errors.New("tokensource: managed identity: set at most one of ClientID and ResourceID")
	}
	endpoint := opts.Endpoint
	if endpoint == "" {
		endpoint = DefaultIMDSEndpoint
	}
	u, err := url.Parse(endpoint)
	if err != nil {
		return nil, fmt.Errorf("tokensource: managed identity: endpoint: %w", err)
	}
	if (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" || u.User != nil || u.RawQuery != "" || u.Fragment != "" {
		return nil, fmt.Errorf("tokensource: managed identity: endpoint %q must be an http(s) base URL without credentials, query or fragment", endpoint)
	}
	u.Path = strings.TrimSuffix(u.Path, "/") + imdsTokenPath
	u.RawPath = ""

	q := url.Values{}
	q.Set("api-version", imdsAPIVersion)
	q.Set("resource", opts.Resource)
	switch {
	case opts.ClientID != "":
		q.Set("client_id", opts.ClientID)
	case opts.ResourceID != "":
		// msi_res_id, not mi_res_id: it is the parameter the IMDS API
		// documents, and Azure Container Instances' IMDS implementation
		// accepts only it (the Azure SDKs and MSAL switched in 2024-25).
		q.Set("msi_res_id", opts.ResourceID)
	}
	u.RawQuery = q.Encode()

	return &ManagedIdentity{
		tokenURL: u.String(),
		client:   clientWithoutRedirects(opts.HTTPClient, defaultIMDSClient),
	}, nil
}

func defaultIMDSClient() *http.Client {
	t := cloneDefaultTransport()
	// Go's ProxyFromEnvironment exempts only "localhost", so HTTP_PROXY
	// would otherwise route the link-local IMDS request, and the token in
	// its answer, through a proxy.
	t.Proxy = nil
	return &http.Client{Transport: t}
}

// Token requests a token from IMDS. Every call is a request; wrap the
// source with Cached to reuse tokens.
func (m *ManagedIdentity) Token(ctx context.Context) (string, error) {
	ctx, cancel := withDefaultTimeout(ctx)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, m.tokenURL, nil)
	if err != nil {
		return "", fmt.Errorf("tokensource: managed identity: %w", err)
	}
	// IMDS refuses requests without this header; it is its defence against
	// server-side request forgery through the VM's workloads.
	req.Header.Set("Metadata", "true")
	req.Header.Set("Accept", "application/json")
	return requestToken(m.client, req, "managed identity")
}
