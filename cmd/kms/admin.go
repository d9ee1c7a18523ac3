package main

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/spf13/cobra"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/protobuf/encoding/protojson"
	"google.golang.org/protobuf/proto"

	"github.com/attested-kms/attested-kms/policy"
	kmsv1 "github.com/attested-kms/attested-kms/proto/kms/v1"
)

// adminFlags are the connection settings of every admin command: the
// local Unix socket (bootstrap, the default), or the network admin
// listener with a client certificate and/or a bearer token. Each flag has
// an environment variable, so scripts can set them once.
type adminFlags struct {
	socket, output                             string
	addr, caFile, certFile, keyFile, tokenFile string
}

func (a *adminFlags) register(cmd *cobra.Command) {
	env := func(name, def string) string {
		if v := os.Getenv(name); v != "" {
			return v
		}
		return def
	}
	f := cmd.PersistentFlags()
	f.StringVar(&a.socket, "socket", env("KMS_ADMIN_SOCKET", "admin.sock"), "admin Unix socket of the server (env KMS_ADMIN_SOCKET)")
	f.StringVarP(&a.output, "output", "o", "table", "output format: table or json")
	f.StringVar(&a.addr, "addr", env("KMS_ADMIN_ADDR", ""), "network admin listener host:port instead of the socket (env KMS_ADMIN_ADDR)")
	f.StringVar(&a.caFile, "ca", env("KMS_ADMIN_CA", ""), "PEM CA of the server's TLS certificate (env KMS_ADMIN_CA; default: system roots)")
	f.StringVar(&a.certFile, "cert", env("KMS_ADMIN_CERT", ""), "operator client certificate, PEM (env KMS_ADMIN_CERT)")
	f.StringVar(&a.keyFile, "key", env("KMS_ADMIN_KEY", ""), "its private key, PEM (env KMS_ADMIN_KEY)")
	f.StringVar(&a.tokenFile, "token-file", env("KMS_ADMIN_TOKEN_FILE", ""), "file holding an access token with admin app roles (env KMS_ADMIN_TOKEN_FILE)")
}

// client dials the admin API: the network listener when --addr is set,
// else the Unix socket, whose file mode is its access control (so that
// connection itself is not encrypted).
func (a *adminFlags) client() (kmsv1.AdminClient, func(), error) {
	if err := checkFormat(a.output); err != nil {
		return nil, nil, err
	}
	if a.addr != "" {
		return a.networkClient()
	}
	if _, err := os.Stat(a.socket); err != nil {
		return nil, nil, fmt.Errorf("admin socket: %w (is kms serve running? set --socket, or --addr for the network listener)", err)
	}
	// gRPC's unix:// target wants an absolute path; a relative --socket
	// (the default admin.sock) would be read as a host name.
	path, err := filepath.Abs(a.socket)
	if err != nil {
		return nil, nil, fmt.Errorf("admin socket: %w", err)
	}
	conn, err := grpc.NewClient("unix://"+path, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		return nil, nil, fmt.Errorf("admin socket: %w", err)
	}
	return kmsv1.NewAdminClient(conn), func() { conn.Close() }, nil
}

func (a *adminFlags) networkClient() (kmsv1.AdminClient, func(), error) {
	cfg := &tls.Config{MinVersion: tls.VersionTLS13}
	if a.caFile != "" {
		pemBytes, err := os.ReadFile(a.caFile)
		if err != nil {
			return nil, nil, fmt.Errorf("admin CA: %w", err)
		}
		cfg.RootCAs = x509.NewCertPool()
		if !cfg.RootCAs.AppendCertsFromPEM(pemBytes) {
			return nil, nil, fmt.Errorf("admin CA %s: no PEM certificates", a.caFile)
		}
	}
	if (a.certFile == "") != (a.keyFile == "") {
		return nil, nil, errors.New("--cert and --key go together")
	}
	if a.certFile != "" {
		cert, err := tls.LoadX509KeyPair(a.certFile, a.keyFile)
		if err != nil {
			return nil, nil, fmt.Errorf("admin client certificate: %w", err)
		}
		cfg.Certificates = []tls.Certificate{cert}
	}
	opts := []grpc.DialOption{grpc.WithTransportCredentials(credentials.NewTLS(cfg))}
	if a.tokenFile != "" {
		opts = append(opts, grpc.WithPerRPCCredentials(bearerFile(a.tokenFile)))
	}
	conn, err := grpc.NewClient(a.addr, opts...)
	if err != nil {
		return nil, nil, fmt.Errorf("admin %s: %w", a.addr, err)
	}
	return kmsv1.NewAdminClient(conn), func() { conn.Close() }, nil
}

// bearerFile sends the token in the file, read at every call so a
// refreshed token (workload identity) is picked up; only over TLS.
type bearerFile string

func (f bearerFile) GetRequestMetadata(context.Context, ...string) (map[string]string, error) {
	b, err := os.ReadFile(string(f))
	if err != nil {
		return nil, fmt.Errorf("admin token: %w", err)
	}
	return map[string]string{"authorization": "Bearer " + strings.TrimSpace(string(b))}, nil
}

func (bearerFile) RequireTransportSecurity() bool { return true }

// run dials the admin socket, calls f with the command's context, and
// closes the connection.
func (a *adminFlags) run(cmd *cobra.Command, f func(ctx context.Context, c kmsv1.AdminClient) error) error {
	c, done, err := a.client()
	if err != nil {
		return err
	}
	defer done()
	return f(cmd.Context(), c)
}

func printJSON(w io.Writer, m proto.Message) error {
	b, err := protojson.MarshalOptions{Multiline: true, Indent: "  ", EmitUnpopulated: true}.Marshal(m)
	if err != nil {
		return err
	}
	_, err = fmt.Fprintln(w, string(b))
	return err
}

func ts(t interface{ AsTime() time.Time }) string {
	return t.AsTime().UTC().Format(time.RFC3339)
}

func printKeys(w io.Writer, keys []*kmsv1.KeyInfo) {
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "KEYSET\tKID\tVERSION\tKEY ID\tSTATE\tACTIVATES\tEXPIRES\tDESTROY AFTER")
	for _, k := range keys {
		fmt.Fprintf(tw, "%s\t%s\t%d\t%d\t%s\t%s\t%s\t%s\n", k.GetKeyset(), k.GetKid(), k.GetVersion(), k.GetOhttpKeyId(),
			stateName(k.GetState()), ts(k.GetActivatesAt()), ts(k.GetExpiresAt()), ts(k.GetDestroyAfter()))
	}
	tw.Flush()
}

func stateName(s kmsv1.KeyState) string {
	switch s {
	case kmsv1.KeyState_KEY_STATE_PENDING:
		return "pending"
	case kmsv1.KeyState_KEY_STATE_ACTIVE:
		return "active"
	case kmsv1.KeyState_KEY_STATE_RETIRED:
		return "retired"
	case kmsv1.KeyState_KEY_STATE_DISABLED:
		return "disabled"
	case kmsv1.KeyState_KEY_STATE_DESTROYED:
		return "destroyed"
	}
	return "unknown"
}

func newKeysCmd() *cobra.Command {
	a := &adminFlags{}
	cmd := &cobra.Command{Use: "keys", Short: "List, rotate, disable, enable and destroy keys (admin socket)"}
	a.register(cmd)
	var keyset string
	cmd.PersistentFlags().StringVar(&keyset, "keyset", "default", "key set")

	// keysCommand runs one admin call that answers with keys and prints
	// them as a table or JSON.
	keysCommand := func(use, short string, args cobra.PositionalArgs,
		call func(ctx context.Context, c kmsv1.AdminClient, args []string) (proto.Message, []*kmsv1.KeyInfo, error)) *cobra.Command {
		return &cobra.Command{
			Use: use, Short: short, Args: args,
			RunE: func(cmd *cobra.Command, args []string) error {
				c, done, err := a.client()
				if err != nil {
					return err
				}
				defer done()
				msg, keys, err := call(cmd.Context(), c, args)
				if err != nil {
					return err
				}
				if a.output == "json" {
					return printJSON(cmd.OutOrStdout(), msg)
				}
				printKeys(cmd.OutOrStdout(), keys)
				return nil
			},
		}
	}
	list := keysCommand("list", "List the key set's keys", cobra.NoArgs,
		func(ctx context.Context, c kmsv1.AdminClient, _ []string) (proto.Message, []*kmsv1.KeyInfo, error) {
			resp, err := c.ListKeys(ctx, &kmsv1.ListKeysRequest{Keyset: keyset})
			return resp, resp.GetKeys(), err
		})
	rotate := keysCommand("rotate", "Create a new active key now and retire the current one", cobra.NoArgs,
		func(ctx context.Context, c kmsv1.AdminClient, _ []string) (proto.Message, []*kmsv1.KeyInfo, error) {
			k, err := c.RotateKeys(ctx, &kmsv1.RotateKeysRequest{Keyset: keyset})
			return k, []*kmsv1.KeyInfo{k}, err
		})
	setState := func(use, short string, state kmsv1.KeyState) *cobra.Command {
		return keysCommand(use+" KID", short, cobra.ExactArgs(1),
			func(ctx context.Context, c kmsv1.AdminClient, args []string) (proto.Message, []*kmsv1.KeyInfo, error) {
				k, err := c.SetKeyState(ctx, &kmsv1.SetKeyStateRequest{Keyset: keyset, Kid: args[0], State: state})
				return k, []*kmsv1.KeyInfo{k}, err
			})
	}
	cmd.AddCommand(list, rotate,
		setState("disable", "Hold a key: nothing is released while it is disabled", kmsv1.KeyState_KEY_STATE_DISABLED),
		setState("enable", "Lift a hold: the key returns to the state it had", kmsv1.KeyState_KEY_STATE_ACTIVE),
		setState("destroy", "Erase the sealed private key (irreversible)", kmsv1.KeyState_KEY_STATE_DESTROYED))
	cmd.AddCommand(importCommands(a, &keyset)...)
	return cmd
}

func newKeySetsCmd() *cobra.Command {
	a := &adminFlags{}
	cmd := &cobra.Command{Use: "keysets", Short: "Create and list key sets (admin socket)"}
	a.register(cmd)
	var policyFile string
	var rotation, lifetime, lead, retention time.Duration
	create := &cobra.Command{
		Use: "create NAME", Short: "Create a key set with its release policy and first key", Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			pol, err := os.ReadFile(policyFile)
			if err != nil {
				return err
			}
			return a.run(cmd, func(ctx context.Context, c kmsv1.AdminClient) error {
				ks, err := c.CreateKeySet(ctx, &kmsv1.CreateKeySetRequest{
					Name: args[0], Policy: pol,
					Settings: &kmsv1.KeySetSettings{
						RotationPeriodSeconds: int64(rotation / time.Second), KeyLifetimeSeconds: int64(lifetime / time.Second),
						PendingLeadSeconds: int64(lead / time.Second), RetentionSeconds: int64(retention / time.Second),
					},
				})
				if err != nil {
					return err
				}
				return printJSON(cmd.OutOrStdout(), ks)
			})
		},
	}
	create.Flags().StringVar(&policyFile, "policy", "", "release policy YAML (required)")
	create.Flags().DurationVar(&rotation, "rotation-period", 0, "interval between key activations (default: server's)")
	create.Flags().DurationVar(&lifetime, "key-lifetime", 0, "how long a key stays active")
	create.Flags().DurationVar(&lead, "pending-lead", 0, "how long before activation a key is published")
	create.Flags().DurationVar(&retention, "retention", 0, "how long a retired key stays releasable")
	_ = create.MarkFlagRequired("policy")
	list := &cobra.Command{
		Use: "list", Short: "List key sets", Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			return a.run(cmd, func(ctx context.Context, c kmsv1.AdminClient) error {
				resp, err := c.ListKeySets(ctx, &kmsv1.ListKeySetsRequest{})
				if err != nil {
					return err
				}
				if a.output == "json" {
					return printJSON(cmd.OutOrStdout(), resp)
				}
				tw := tabwriter.NewWriter(cmd.OutOrStdout(), 0, 4, 2, ' ', 0)
				fmt.Fprintln(tw, "NAME\tPOLICY VERSION\tROTATION\tLIFETIME\tRETENTION\tCREATED")
				for _, ks := range resp.GetKeysets() {
					s := ks.GetSettings()
					fmt.Fprintf(tw, "%s\t%d\t%s\t%s\t%s\t%s\n", ks.GetName(), ks.GetPolicyVersion(),
						time.Duration(s.GetRotationPeriodSeconds())*time.Second, time.Duration(s.GetKeyLifetimeSeconds())*time.Second,
						time.Duration(s.GetRetentionSeconds())*time.Second, ts(ks.GetCreatedAt()))
				}
				return tw.Flush()
			})
		},
	}
	cmd.AddCommand(create, list)
	return cmd
}

func newPolicyCmd() *cobra.Command {
	cmd := &cobra.Command{Use: "policy", Short: "Validate, read and set release policies"}
	validate := &cobra.Command{
		Use: "validate FILE", Short: "Check a release policy file", Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			b, err := os.ReadFile(args[0])
			if err != nil {
				return err
			}
			p, err := policy.Parse(b)
			if err != nil {
				return &exitError{code: 2, err: fmt.Errorf("%s: invalid policy: %w", args[0], err)}
			}
			fmt.Fprintf(cmd.OutOrStdout(), "%s: valid (%d rules)\n", args[0], len(p.RuleNames()))
			return nil
		},
	}
	a := &adminFlags{}
	var keyset string
	get := &cobra.Command{
		Use: "get", Short: "Print the key set's current policy", Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			return a.run(cmd, func(ctx context.Context, c kmsv1.AdminClient) error {
				resp, err := c.GetPolicy(ctx, &kmsv1.GetPolicyRequest{Keyset: keyset})
				if err != nil {
					return err
				}
				if a.output == "json" {
					return printJSON(cmd.OutOrStdout(), resp)
				}
				fmt.Fprintf(cmd.OutOrStdout(), "# key set %s, policy version %d\n%s", keyset, resp.GetVersion(), resp.GetPolicy())
				return nil
			})
		},
	}
	set := &cobra.Command{
		Use: "set FILE", Short: "Replace the key set's policy (validated first)", Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			b, err := os.ReadFile(args[0])
			if err != nil {
				return err
			}
			if _, err := policy.Parse(b); err != nil {
				return &exitError{code: 2, err: fmt.Errorf("%s: invalid policy: %w", args[0], err)}
			}
			return a.run(cmd, func(ctx context.Context, c kmsv1.AdminClient) error {
				resp, err := c.SetPolicy(ctx, &kmsv1.SetPolicyRequest{Keyset: keyset, Policy: b})
				if err != nil {
					return err
				}
				fmt.Fprintf(cmd.OutOrStdout(), "key set %s: policy version %d\n", keyset, resp.GetVersion())
				return nil
			})
		},
	}
	for _, c := range []*cobra.Command{get, set} {
		a.register(c)
		c.Flags().StringVar(&keyset, "keyset", "default", "key set")
	}
	cmd.AddCommand(validate, withPolicyVersion(get, a, &keyset), set, newPolicyExplainCmd(), newPolicyHistoryCmd(), newPolicyDiffCmd(), newPolicyRollbackCmd())
	return cmd
}
