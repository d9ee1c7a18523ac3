package tokensource

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"os"
	"regexp"
	"strings"
)

const (
	// DefaultAuthorityHost is the Entra ID authority for the public cloud.
	DefaultAuthorityHost = "https://login.microsoftonline.com/"

	// maxTokenFileBytes bounds reads of token files. Service-account
	// tokens and access tokens are a few kilobytes.
	maxTokenFileBytes = 64 << 10

	clientAssertionType = "urn:ietf:params:oauth:client-assertion-type:jwt-bearer"
)

// tenantIDPattern accepts tenant GUIDs and verified domain names. The
// tenant becomes a URL path segment, so anything else ("/", "?", "..")
// is rejected rather than escaped.
var tenantIDPattern = regexp.MustCompile(`^[A-Za-z0-9][A-Za-z0-9.-]{0,252}$`)

// WorkloadIdentityOptions configures NewWorkloadIdentity. The AKS workload
// identity webhook injects the matching environment variables; see
// WorkloadIdentityFromEnv.
type WorkloadIdentityOptions struct {
	// TenantID is the Entra ID tenant (GUID or domain). Required.
	TenantID string
	// ClientID is the client ID of the app registration or user-assigned
	// identity the service account is federated with. Required.
	ClientID string
	// TokenFile is the projected service-account token. Required. It is
	// re-read on every exchange because kubelet rotates it.
	TokenFile string
	// AuthorityHost is the Entra ID authority; must be https. Defaults to
	// DefaultAuthorityHost.
	AuthorityHost string
	// Resource is the KMS's application ID URI; the requested scope is
	// Resource + "/.default". Required.
	Resource string
	// HTTPClient sends the request. Its CheckRedirect is overridden so
	// redirects, which would re-send the client assertion, are never
	// followed.
	HTTPClient *http.Client
}

// WorkloadIdentity exchanges a Kubernetes service-account token for an
// Entra ID access token (OAuth 2.0 client credentials with a federated
// client assertion).
type WorkloadIdentity struct {
	tokenURL  string
	clientID  string
	scope     string
	tokenFile string
	client    *http.Client
}

// NewWorkloadIdentity validates opts and returns a WorkloadIdentity source.
// It does not read the token file: that happens on each Token call.
func NewWorkloadIdentity(opts WorkloadIdentityOptions) (*WorkloadIdentity, error) {
	var missing []string
	if opts.TenantID == "" {
		missing = append(missing, "TenantID")
	}
	if opts.ClientID == "" {
		missing = append(missing, "ClientID")
	}
	if opts.TokenFile == "" {
		missing = append(missing, "TokenFile")
	}
	if opts.Resource == "" {
		missing = append(missing, "Resource")
	}
	if len(missing) > 0 {
		return nil, fmt.Errorf("tokensource: workload identity: %s required", strings.Join(missing, ", "))
	}
	if !tenantIDPattern.MatchString(opts.TenantID) {
		return nil, fmt.Errorf("tokensource: workload identity: invalid tenant ID %q", opts.TenantID)
	}
	authority := opts.AuthorityHost
	if authority == "" {
		authority = DefaultAuthorityHost
	}
	u, err := url.Parse(authority)
	if err != nil {
		return nil, fmt.Errorf("tokensource: workload identity: authority host: %w", err)
	}
	// https only: the request carries a credential (the assertion) and
	// the answer is one (the token).
	if u.Scheme != "https" || u.Host == "" || u.User != nil || u.RawQuery != "" || u.Fragment != "" {
		return nil, fmt.Errorf("tokensource: workload identity: authority host %q must be an https URL without credentials, query or fragment", authority)
	}
	if !strings.HasSuffix(u.Path, "/") {
		u.Path += "/"
	}
	u.Path += opts.TenantID + "/oauth2/v2.0/token"
	u.RawPath = ""

	return &WorkloadIdentity{
		tokenURL:  u.String(),
		clientID:  opts.ClientID,
		scope:     opts.Resource + "/.default",
		tokenFile: opts.TokenFile,
		client:    clientWithoutRedirects(opts.HTTPClient, func() *http.Client { return &http.Client{Transport: cloneDefaultTransport()} }),
	}, nil
}

// WorkloadIdentityFromEnv builds a WorkloadIdentity from the variables the
// AKS workload identity webhook injects: AZURE_TENANT_ID, AZURE_CLIENT_ID,
// AZURE_FEDERATED_TOKEN_FILE and, optionally, AZURE_AUTHORITY_HOST.
// resource is the KMS's application ID URI.
func WorkloadIdentityFromEnv(resource string) (*WorkloadIdentity, error) {
	opts := WorkloadIdentityOptions{
		TenantID:      os.Getenv("AZURE_TENANT_ID"),
		ClientID:      os.Getenv("AZURE_CLIENT_ID"),
		TokenFile:     os.Getenv("AZURE_FEDERATED_TOKEN_FILE"),
		AuthorityHost: os.Getenv("AZURE_AUTHORITY_HOST"),
		Resource:      resource,
	}
	// Name the variables, not the option fields, so the message points at
	// the pod spec that needs fixing.
	var missing []string
	for _, v := range []struct{ name, val string }{
		{"AZURE_TENANT_ID", opts.TenantID},
		{"AZURE_CLIENT_ID", opts.ClientID},
		{"AZURE_FEDERATED_TOKEN_FILE", opts.TokenFile},
	} {
		if v.val == "" {
			missing = append(missing, v.name)
		}
	}
	if len(missing) > 0 {
		return nil, fmt.Errorf("tokensource: workload identity: environment variable(s) %s not set (is the pod labelled azure.workload.identity/use=true?)", strings.Join(missing, ", "))
	}
	return NewWorkloadIdentity(opts)
}

// Token reads the current service-account token and exchanges it for an
// access token. Every call is an exchange; wrap the source with Cached to
// reuse tokens.
func (w *WorkloadIdentity) Token(ctx context.Context) (string, error) {
	assertion, err := readTokenFile(w.tokenFile, false)
	if err != nil {
		return "", fmt.Errorf("tokensource: workload identity: federated token: %w", err)
	}
	form := url.Values{
		"grant_type":            {"client_credentials"},
		"client_id":             {w.clientID},
		"scope":                 {w.scope},
		"client_assertion_type": {clientAssertionType},
		"client_assertion":      {assertion},
	}
	ctx, cancel := withDefaultTimeout(ctx)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, w.tokenURL, strings.NewReader(form.Encode()))
	if err != nil {
		return "", fmt.Errorf("tokensource: workload identity: %w", err)
	}
	req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	req.Header.Set("Accept", "application/json")
	return requestToken(w.client, req, "workload identity", assertion)
}

// readTokenFile reads a token file, bounded and trimmed. With
// private set it refuses files other users can access (see StaticFile).
// Errors name the path but never the contents.
func readTokenFile(path string, private bool) (string, error) {
	f, err := os.Open(path)
	if err != nil {
		return "", err
	}
	defer f.Close()
	// Stat the open file, not the path, so the checks apply to the bytes
	// read even if the file is replaced meanwhile (kubelet and refresher
	// sidecars swap files with a rename or symlink flip).
	fi, err := f.Stat()
	if err != nil {
		return "", err
	}
	if !fi.Mode().IsRegular() {
		return "", fmt.Errorf("%s is not a regular file", path)
	}
	if private {
		if err := checkPrivate(path, fi.Mode()); err != nil {
			return "", err
		}
	}
	b, err := io.ReadAll(io.LimitReader(f, maxTokenFileBytes+1))
	if err != nil {
		return "", err
	}
	if len(b) > maxTokenFileBytes {
		return "", fmt.Errorf("%s exceeds %d bytes", path, maxTokenFileBytes)
	}
	tok := strings.TrimSpace(string(b))
	if tok == "" {
		return "", fmt.Errorf("%s is empty", path)
	}
	if err := checkToken(tok); err != nil {
		return "", fmt.Errorf("%s: %w", path, err)
	}
	return tok, nil
}
