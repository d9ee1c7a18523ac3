package server

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"fmt"
	"net"
	"os"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials"

	"github.com/attested-kms/attested-kms/config"
	kmsv1 "github.com/attested-kms/attested-kms/proto/kms/v1"
	"github.com/attested-kms/attested-kms/token"
)

// startNetworkAdmin serves the admin API on listen.admin: TLS 1.3,
// authentication by operator-CA client certificates and/or bearer tokens,
// authorization per RPC by role (adminauth.go). The Unix socket stays for
// bootstrap.
func (s *Server) startNetworkAdmin(ctx context.Context, tlsCfg *tls.Config) error {
	c := s.cfg.AdminAuth
	auth := AdminAuthConfig{RoleClaims: c.RoleClaims, Log: s.log}
	if c.ClientCAFile != "" {
		pemBytes, err := os.ReadFile(c.ClientCAFile)
		if err != nil {
			return fmt.Errorf("admin client CA: %w", err)
		}
		auth.ClientCAs = x509.NewCertPool()
		if !auth.ClientCAs.AppendCertsFromPEM(pemBytes) {
			return fmt.Errorf("admin client CA %s: no PEM certificates", c.ClientCAFile)
		}
	}
	if len(c.RoleClaims) > 0 {
		// The admin API has its own audience: a token minted for key
		// release must not administer the KMS.
		tc := s.cfg.Tokens
		issuers := make([]config.Issuer, len(tc.Issuers))
		for i, is := range tc.Issuers {
			is.Audiences = c.Audiences
			issuers[i] = is
		}
		tc.Issuers = issuers
		v, err := newTokenVerifier(ctx, tc)
		if err != nil {
			return fmt.Errorf("admin tokens: %w", err)
		}
		auth.Tokens = v
	}
	authOpts, err := NewAdminAuth(auth)
	if err != nil {
		return err
	}
	// The request id first, so refused calls carry one too.
	opts := append([]grpc.ServerOption{grpc.ChainUnaryInterceptor(UnaryRequestID())}, authOpts...)
	opts = append(opts,
		grpc.Creds(credentials.NewTLS(AdminTLSConfig(tlsCfg, auth.ClientCAs))),
		grpc.MaxRecvMsgSize(1<<20),
		grpc.ConnectionTimeout(10*time.Second))
	lis, err := net.Listen("tcp", s.cfg.Listen.Admin)
	if err != nil {
		return fmt.Errorf("listening for the network admin API: %w", err)
	}
	s.adminNetSrv = grpc.NewServer(opts...)
	kmsv1.RegisterAdminServer(s.adminNetSrv, s.admin)
	s.AdminAddr = lis.Addr().String()
	go func() { _ = s.adminNetSrv.Serve(lis) }()
	return nil
}

var _ TokenVerifier = (*token.Verifier)(nil)
