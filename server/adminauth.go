package server

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"log/slog"
	"maps"
	"slices"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/peer"

	"github.com/attested-kms/attested-kms/token"
)

// Reasons of the Admin API's network authentication (google.rpc.ErrorInfo).
// Token verification failures keep the token package's reasons.
const (
	// ReasonCredentialsMissing: neither a client certificate nor a bearer
	// token was presented. Unauthenticated.
	ReasonCredentialsMissing = "CREDENTIALS_MISSING"
	// ReasonCredentialsAmbiguous: a certificate and a token, or several
	// authorization entries, were presented; the audit record must name one
	// caller. Unauthenticated.
	ReasonCredentialsAmbiguous = "CREDENTIALS_AMBIGUOUS"
	// ReasonCredentialsNotAccepted: the kind of credential presented is not
	// configured on this listener. Unauthenticated.
	ReasonCredentialsNotAccepted = "CREDENTIALS_NOT_ACCEPTED"
	// ReasonTransportInsecure: the connection is not TLS. Unauthenticated.
	ReasonTransportInsecure = "TRANSPORT_INSECURE"
	// ReasonClientCertificate: the client certificate does not verify
	// against the operator CAs (now: it may have expired since the
	// handshake). Unauthenticated.
	ReasonClientCertificate = "CLIENT_CERT_INVALID"
	// ReasonRoleDenied: the caller is authenticated but none of its roles
	// may call the method. PermissionDenied.
	ReasonRoleDenied = "ROLE_DENIED"
)

// How an AdminPrincipal authenticated.
const (
	AdminAuthCertificate = "mtls"
	AdminAuthToken       = "oidc"
)

// AdminAuthConfig configures authentication and role checks of the Admin
// API on a network listener. At least one of ClientCAs and Tokens is
// required.
type AdminAuthConfig struct {
	// ClientCAs verifies operator client certificates, whose roles are URI
	// SANs attested-kms:role:<role>. Nil accepts no certificates. Pass the
	// same pool to AdminTLSConfig.
	ClientCAs *x509.CertPool
	// Tokens verifies OIDC bearer tokens (*token.Verifier). Nil accepts no
	// tokens.
	Tokens TokenVerifier
	// RoleClaims maps values of a token's "roles" claim (Azure AD app role
	// values) to admin role names ("admin", "operator", "auditor").
	// Required with Tokens.
	RoleClaims map[string]string
	// Log receives one line per refused call (never a credential); nil
	// discards.
	Log *slog.Logger
}

// AdminPrincipal is an authenticated admin caller, for audit records.
type AdminPrincipal struct {
	// Method is AdminAuthCertificate or AdminAuthToken.
	Method string
	// Subject is the certificate's subject DN, or the token's oid (its sub
	// when it has no oid).
	Subject string
	// Issuer is the certificate's issuer DN or the token's iss.
	Issuer string
	// Serial is the certificate's serial number in hex; empty for tokens.
	Serial string
	// Roles are the caller's known roles, possibly none.
	Roles []AdminRole
}

// LogValue lets audit lines carry the principal as one group.
func (p AdminPrincipal) LogValue() slog.Value {
	roles := make([]string, len(p.Roles))
	for i, r := range p.Roles {
		roles[i] = string(r)
	}
	attrs := []slog.Attr{
		slog.String("auth", p.Method),
		slog.String("subject", p.Subject),
		slog.String("issuer", p.Issuer),
		slog.Any("roles", roles),
	}
	if p.Serial != "" {
		attrs = append(attrs, slog.String("serial", p.Serial))
	}
	return slog.GroupValue(attrs...)
}

type adminPrincipalKey struct{}

// AdminIdentity returns the caller NewAdminAuth's interceptors authorized.
// ok is false for calls that did not pass through them (the local Unix
// socket, whose caller is whoever may open it).
func AdminIdentity(ctx context.Context) (p AdminPrincipal, ok bool) {
	p, ok = ctx.Value(adminPrincipalKey{}).(AdminPrincipal)
	return p, ok
}

// AdminTLSConfig derives the admin listener's TLS configuration from base
// (which supplies the server certificate): client certificates are verified
// against clientCAs when presented and may be omitted, so token-only
// clients can connect. A certificate from any other CA fails the
// handshake. With a nil clientCAs no certificate is requested at all:
// crypto/tls would otherwise verify against the system roots.
func AdminTLSConfig(base *tls.Config, clientCAs *x509.CertPool) *tls.Config {
	c := base.Clone()
	if c == nil {
		c = &tls.Config{}
	}
	// Admin clients are our own CLI; nothing older needs to be served.
	c.MinVersion = tls.VersionTLS13
	c.ClientCAs = clientCAs
	c.ClientAuth = tls.NoClientCert
	if clientCAs != nil {
		c.ClientAuth = tls.VerifyClientCertIfGiven
	}
	return c
}

// NewAdminAuth returns unary and stream interceptors that authenticate
// every call (client certificate or bearer token, over TLS) and allow it
// only when one of the caller's roles may call the method. Methods missing
// from the role table are refused to everyone.
func NewAdminAuth(cfg AdminAuthConfig) ([]grpc.ServerOption, error) {
	a, err := newAdminAuth(cfg)
	if err != nil {
		return nil, err
	}
	return []grpc.ServerOption{
		grpc.ChainUnaryInterceptor(a.unary),
		grpc.ChainStreamInterceptor(a.stream),
	}, nil
}

type adminAuth struct {
	clientCAs  *x509.CertPool
	tokens     TokenVerifier
	roleClaims map[string]AdminRole
	log        *slog.Logger
	now        func() time.Time
}

func newAdminAuth(cfg AdminAuthConfig) (*adminAuth, error) {
	if cfg.ClientCAs == nil && cfg.Tokens == nil {
		return nil, errors.New("admin auth: neither client CAs nor a token verifier is configured; no caller could authenticate")
	}
	if cfg.Tokens == nil && len(cfg.RoleClaims) > 0 {
		return nil, errors.New("admin auth: role claims are configured without a token verifier")
	}
	if cfg.Tokens != nil && len(cfg.RoleClaims) == 0 {
		return nil, errors.New("admin auth: a token verifier needs role claims; without them no token could hold a role")
	}
	a := &adminAuth{
		clientCAs:  cfg.ClientCAs,
		tokens:     cfg.Tokens,
		roleClaims: make(map[string]AdminRole, len(cfg.RoleClaims)),
		log:        cfg.Log,
		now:        time.Now,
	}
	// Sorted so the first bad entry reported is the same on every start.
	for _, claim := range slices.Sorted(maps.Keys(cfg.RoleClaims)) {
		name := cfg.RoleClaims[claim]
		if claim == "" {
			return nil, errors.New("admin auth: role claims: empty app role value")
		}
		r, ok := ParseAdminRole(name)
		if !ok {
			return nil, fmt.Errorf("admin auth: role claims: app role %q maps to %q, want admin, operator or auditor", claim, name)
		}
		a.roleClaims[claim] = r
	}
	if a.log == nil {
		a.log = slog.New(slog.DiscardHandler)
	}
	return a, nil
}

func (a *adminAuth) unary(ctx context.Context, req any, info *grpc.UnaryServerInfo, handler grpc.UnaryHandler) (any, error) {
	ctx, err := a.authorize(ctx, info.FullMethod)
	if err != nil {
		return nil, err
	}
	return handler(ctx, req)
}

func (a *adminAuth) stream(srv any, ss grpc.ServerStream, info *grpc.StreamServerInfo, handler grpc.StreamHandler) error {
	ctx, err := a.authorize(ss.Context(), info.FullMethod)
	if err != nil {
		return err
	}
	return handler(srv, &principalStream{ServerStream: ss, ctx: ctx})
}

// principalStream hands the handler the context carrying the principal.
type principalStream struct {
	grpc.ServerStream
	ctx context.Context
}

func (s *principalStream) Context() context.Context { return s.ctx }

// authorize returns ctx with the caller's principal, or a gRPC status.
func (a *adminAuth) authorize(ctx context.Context, method string) (context.Context, error) {
	p, derr := a.authenticate(ctx)
	if derr == nil && !allowed(method, p.Roles) {
		if need := AdminMethodRoles(method); len(need) == 0 {
			derr = refuse(codes.PermissionDenied, ReasonRoleDenied, "no role may call %s", method)
		} else {
			derr = refuse(codes.PermissionDenied, ReasonRoleDenied, "%s requires one of the roles %v; the caller holds %v", method, need, p.Roles)
		}
	}
	if derr != nil {
		attrs := []slog.Attr{slog.String("call", method), slog.String("reason", derr.reason), slog.String("error", derr.message)}
		if p != nil {
			attrs = append(attrs, slog.Any("principal", *p))
		}
		a.log.LogAttrs(ctx, slog.LevelWarn, "admin call refused", attrs...)
		return nil, grpcStatus(derr)
	}
	return context.WithValue(ctx, adminPrincipalKey{}, *p), nil
}

// authenticate identifies the caller. A non-nil principal with an error is
// an authenticated caller refused anyway, returned for the log line.
func (a *adminAuth) authenticate(ctx context.Context) (*AdminPrincipal, *decisionError) {
	var state tls.ConnectionState
	pr, ok := peer.FromContext(ctx)
	if ok {
		var info credentials.TLSInfo
		info, ok = pr.AuthInfo.(credentials.TLSInfo)
		state = info.State
	}
	// Bearer tokens in clear text could be replayed by anyone on the path.
	if !ok {
		return nil, refuse(codes.Unauthenticated, ReasonTransportInsecure, "the admin API is served only over TLS")
	}
	md, _ := metadata.FromIncomingContext(ctx)
	authz := md.Get("authorization")
	certs := state.PeerCertificates
	switch {
	case len(authz) > 1 || len(authz) == 1 && len(certs) > 0:
		return nil, refuse(codes.Unauthenticated, ReasonCredentialsAmbiguous, "present one credential: a client certificate or one bearer token")
	case len(authz) == 1:
		return a.fromToken(ctx, authz[0])
	case len(certs) > 0:
		return a.fromCertificate(certs)
	default:
		return nil, refuse(codes.Unauthenticated, ReasonCredentialsMissing, "a client certificate or an authorization: Bearer token is required")
	}
}

// fromCertificate verifies the chain again, though the handshake did: the
// interceptor then holds even under a TLS configuration that only requests
// certificates, and a certificate that expired during a long-lived
// connection stops working.
func (a *adminAuth) fromCertificate(certs []*x509.Certificate) (*AdminPrincipal, *decisionError) {
	if a.clientCAs == nil {
		return nil, refuse(codes.Unauthenticated, ReasonCredentialsNotAccepted, "client certificates are not accepted on this listener")
	}
	leaf := certs[0]
	inter := x509.NewCertPool()
	for _, c := range certs[1:] {
		inter.AddCert(c)
	}
	_, err := leaf.Verify(x509.VerifyOptions{
		Roots:         a.clientCAs,
		Intermediates: inter,
		CurrentTime:   a.now(),
		KeyUsages:     []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth},
	})
	if err != nil {
		return nil, refuseErr(codes.Unauthenticated, ReasonClientCertificate, fmt.Errorf("client certificate: %w", err))
	}
	return &AdminPrincipal{
		Method:  AdminAuthCertificate,
		Subject: leaf.Subject.String(),
		Issuer:  leaf.Issuer.String(),
		Serial:  leaf.SerialNumber.Text(16),
		Roles:   rolesFromURIs(leaf.URIs),
	}, nil
}

func (a *adminAuth) fromToken(ctx context.Context, authorization string) (*AdminPrincipal, *decisionError) {
	if a.tokens == nil {
		return nil, refuse(codes.Unauthenticated, ReasonCredentialsNotAccepted, "bearer tokens are not accepted on this listener")
	}
	raw, err := token.BearerToken(authorization)
	if err == nil {
		var id *token.Identity
		if id, err = a.tokens.Verify(ctx, raw); err == nil {
			return a.tokenPrincipal(id)
		}
	}
	// token errors never quote the token, so the message may go back.
	reason, code := token.ReasonOf(err), codes.Unauthenticated
	if reason == token.ReasonKeysUnavailable {
		code = codes.Unavailable
	}
	if reason == "" {
		reason = token.ReasonMalformed
	}
	return nil, refuseErr(code, string(reason), fmt.Errorf("token rejected: %w", err))
}

func (a *adminAuth) tokenPrincipal(id *token.Identity) (*AdminPrincipal, *decisionError) {
	p := &AdminPrincipal{Method: AdminAuthToken, Subject: id.ObjectID, Issuer: id.Issuer}
	if p.Subject == "" {
		p.Subject = id.Subject
	}
	roles, ok := rolesFromClaim(id.Claims["roles"], a.roleClaims)
	if !ok {
		return p, refuse(codes.PermissionDenied, ReasonRoleDenied, "the token's roles claim is not an array of strings")
	}
	p.Roles = roles
	return p, nil
}
