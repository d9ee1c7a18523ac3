// Command dev-oidc-issuer runs the loopback OIDC issuer used by `make demo`:
// discovery, JWKS and an Azure IMDS-compatible managed-identity endpoint.
// It prints its base URL on the first line of stdout and serves until
// SIGINT or SIGTERM. With --token-out it also writes one access token for
// --audience to a file (mode 0600). Development only: it signs a token for
// anyone who asks, so it refuses non-loopback addresses.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"log/slog"
	"os"
	"os/signal"
	"path/filepath"
	"syscall"
	"time"

	"github.com/attested-kms/attested-kms/internal/oidcissuer"
)

func main() {
	if err := run(); err != nil {
		fmt.Fprintln(os.Stderr, "dev-oidc-issuer:", err)
		os.Exit(1)
	}
}

func run() error {
	addr := flag.String("addr", "127.0.0.1:0", "listen address (loopback only)")
	tenant := flag.String("tenant", "", "tenant ID (tid); default a fixed GUID")
	objectID := flag.String("object-id", "", "managed identity object ID (oid, sub)")
	appID := flag.String("app-id", "", "managed identity client ID (appid)")
	v2 := flag.Bool("v2", false, "issue AAD v2-shaped tokens (iss .../<tid>/v2.0, azp) instead of v1")
	tokenOut := flag.String("token-out", "", "write one access token to this file (mode 0600)")
	audience := flag.String("audience", "", "audience (resource) of the --token-out token")
	lifetime := flag.Duration("token-lifetime", time.Hour, "lifetime of minted tokens")
	flag.Parse()
	if flag.NArg() > 0 {
		return fmt.Errorf("unexpected arguments %q", flag.Args())
	}
	if (*tokenOut == "") != (*audience == "") {
		return errors.New("--token-out and --audience go together")
	}

	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()

	opts := oidcissuer.Options{
		Addr: *addr, TenantID: *tenant, ObjectID: *objectID, AppID: *appID, TokenLifetime: *lifetime,
	}
	if *v2 {
		opts.Form = oidcissuer.FormV2
	}
	iss, err := oidcissuer.Start(ctx, opts)
	if err != nil {
		return err
	}
	defer iss.Close()

	if *tokenOut != "" {
		tok, err := iss.MintManagedIdentity(*audience)
		if err != nil {
			return err
		}
		if err := writeSecret(*tokenOut, []byte(tok+"\n")); err != nil {
			return err
		}
	}

	fmt.Println(iss.URL())
	log := slog.New(slog.NewTextHandler(os.Stderr, nil))
	log.Info("serving",
		"issuer", iss.IssuerURL(), "discovery", iss.DiscoveryURL(), "jwks", iss.JWKSURL(),
		"imds", iss.URL()+"/metadata/identity/oauth2/token", "token_out", *tokenOut)
	<-ctx.Done()
	log.Info("shutting down")
	return nil
}

// writeSecret writes data to path with mode 0600 via a temporary file and a
// rename, so the token is never readable under wider permissions, even if
// path already existed with them, and readers never see a partial file.
func writeSecret(path string, data []byte) error {
	f, err := os.CreateTemp(filepath.Dir(path), ".token-*") // CreateTemp uses 0600
	if err != nil {
		return fmt.Errorf("writing token: %w", err)
	}
	defer os.Remove(f.Name()) // no-op after a successful rename
	if _, err := f.Write(data); err != nil {
		f.Close()
		return fmt.Errorf("writing token: %w", err)
	}
	if err := f.Close(); err != nil {
		return fmt.Errorf("writing token: %w", err)
	}
	if err := os.Rename(f.Name(), path); err != nil {
		return fmt.Errorf("writing token: %w", err)
	}
	return nil
}
