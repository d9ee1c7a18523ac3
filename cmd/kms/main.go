// Command kms is the Attested KMS server and its operator CLI.
package main

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/signal"
	"syscall"

	"github.com/spf13/cobra"
)

// exitError carries a process exit code through cobra.
type exitError struct {
	code int
	err  error
}

func (e *exitError) Error() string { return e.err.Error() }

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	err := newRootCmd().ExecuteContext(ctx)
	stop()
	if err != nil {
		// One line per error, even when providers join several.
		fmt.Fprintln(os.Stderr, "kms:", oneLine(err))
		var ee *exitError
		if errors.As(err, &ee) {
			os.Exit(ee.code)
		}
		os.Exit(1)
	}
}

func newRootCmd() *cobra.Command {
	root := &cobra.Command{
		Use:   "kms",
		Short: "Attested KMS: releases HPKE private keys only to attested workloads",
		Long: `kms runs the Attested KMS server and administers it.

The server releases versioned X25519 HPKE private keys to enclave services
that prove, with AMD SEV-SNP evidence and an Azure AD access token, that they
run approved code. End users encrypt to the published public keys (RFC 9458).`,
		SilenceUsage:  true,
		SilenceErrors: true,
	}
	root.AddCommand(newInitCmd(), newServeCmd(), newPolicyCmd(), newKeysCmd(), newKeySetsCmd(), newEvidenceCmd(), newCollateralCmd(), newKEKCmd(), newAuditCmd())
	return root
}
