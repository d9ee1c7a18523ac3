package main

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/base64"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"text/tabwriter"
	"time"

	"github.com/spf13/cobra"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/protobuf/encoding/protojson"
	"google.golang.org/protobuf/proto"

	"github.com/attested-kms/attested-kms/client/tokensource"
	"github.com/attested-kms/attested-kms/policy"
	kmsv1 "github.com/attested-kms/attested-kms/proto/kms/v1"
)

// adminFlags are the connection settings of every admin command: the
// local Unix socket (bootstrap, the default), or the network admin
// listener with a client certificate and/or a bearer token. Each setting
// comes from its flag, else its environment variable, else the CLI config
// file (cliconfig.go), else its default; resolve applies that order once
// the flags are parsed.
type adminFlags struct {
	socket, output                             string
	addr, caFile, certFile, keyFile, tokenFile string
	// cliConfig is --cli-config: the config file to read instead of
	// $KMS_CLI_CONFIG or the default path.
	cliConfig string
}

func (a *adminFlags) register(cmd *cobra.Command) {
	f := cmd.PersistentFlags()
	f.StringVar(&a.socket, "socket", "admin.sock", "admin Unix socket of the server (env KMS_ADMIN_SOCKET, config socket)")
	f.StringVarP(&a.output, "output", "o", "table", "output format: table or json (env KMS_ADMIN_OUTPUT, config output)")
	f.StringVar(&a.addr, "addr", "", "network admin listener host:port instead of the socket (env KMS_ADMIN_ADDR, config addr)")
	f.StringVar(&a.caFile, "ca", "", "PEM CA of the server's TLS certificate (env KMS_ADMIN_CA, config ca; default: system roots)")
	f.StringVar(&a.certFile, "cert", "", "operator client certificate, PEM (env KMS_ADMIN_CERT, config cert)")
	f.StringVar(&a.keyFile, "key", "", "its private key, PEM (env KMS_ADMIN_KEY, config key)")
	f.StringVar(&a.tokenFile, "token-file", "", "file holding an access token with admin app roles (env KMS_ADMIN_TOKEN_FILE, config token_file)")
	f.StringVar(&a.cliConfig, "cli-config", "", "CLI config file, YAML with socket, addr, ca, cert, key, token_file, output; flags and environment override it (env "+
		cliConfigEnv+"; default $XDG_CONFIG_HOME/attested-kms/cli.yaml or ~/.config/attested-kms/cli.yaml, if present)")
}

// client resolves the connection settings of cmd and dials the admin
// API: the network listener when addr is set, else the Unix socket, whose
// file mode is its access control (so that connection itself is not
// encrypted).
func (a *adminFlags) client(cmd *cobra.Command) (kmsv1.AdminClient, func(), error) {
	if err := a.resolve(cmd.Flags().Changed, os.Getenv); err != nil {
		return nil, nil, err
	}
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
// refreshed token (workload identity) is picked up; only over TLS. The
// file is read as the client library reads one (size bound, private
// regular file, not empty).
type bearerFile string

func (f bearerFile) GetRequestMetadata(ctx context.Context, _ ...string) (map[string]string, error) {
	tok, err := tokensource.NewStaticFile(string(f)).Token(ctx)
	if err != nil {
		return nil, fmt.Errorf("admin token: %w", err)
	}
	return map[string]string{"authorization": "Bearer " + tok}, nil
}

func (bearerFile) RequireTransportSecurity() bool { return true }

// run dials the admin socket, calls f with the command's context, and
// closes the connection.
func (a *adminFlags) run(cmd *cobra.Command, f func(ctx context.Context, c kmsv1.AdminClient) error) error {
	c, done, err := a.client(cmd)
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

// printKey prints one key's fields, one per line. Fields that do not
// apply (the hold's return state, the destruction time, the sealing of a
// destroyed key) are left out rather than shown empty.
func printKey(w io.Writer, resp *kmsv1.GetKeyResponse) error {
	k := resp.GetKey()
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	row := func(name string, v any) { fmt.Fprintf(tw, "%s\t%v\n", name, v) }
	row("KEYSET", k.GetKeyset())
	row("KID", k.GetKid())
	row("VERSION", k.GetVersion())
	row("OHTTP KEY ID", k.GetOhttpKeyId())
	row("STATE", stateName(k.GetState()))
	if k.GetState() == kmsv1.KeyState_KEY_STATE_DISABLED {
		row("HELD STATE", stateName(resp.GetHeldState()))
	}
	row("SUITE", k.GetSuite())
	row("PUBLIC KEY", base64.StdEncoding.EncodeToString(k.GetPublicKey()))
	row("CREATED", ts(k.GetCreatedAt()))
	row("ACTIVATES", ts(k.GetActivatesAt()))
	row("EXPIRES", ts(k.GetExpiresAt()))
	row("DESTROY AFTER", ts(k.GetDestroyAfter()))
	if resp.GetDestroyedAt() != nil {
		row("DESTROYED", ts(resp.GetDestroyedAt()))
	}
	if resp.GetSealFormat() != "" {
		row("KEK", k.GetKekUri())
		row("SEAL FORMAT", resp.GetSealFormat())
		row("WRAP ALGORITHM", resp.GetWrapAlgorithm())
		if g := resp.GetIntermediateGeneration(); g != 0 {
			row("INTERMEDIATE GENERATION", g)
		}
		if v := resp.GetKekVersion(); v != "" {
			row("KEK VERSION", v)
		}
	}
	return tw.Flush()
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
				c, done, err := a.client(cmd)
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
	show := &cobra.Command{
		Use: "show KID", Short: "Show one key's full metadata (never key material)", Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			return a.run(cmd, func(ctx context.Context, c kmsv1.AdminClient) error {
				resp, err := c.GetKey(ctx, &kmsv1.GetKeyRequest{Keyset: keyset, Kid: args[0]})
				if err != nil {
					return err
				}
				if a.output == "json" {
					return printJSON(cmd.OutOrStdout(), resp)
				}
				return printKey(cmd.OutOrStdout(), resp)
			})
		},
	}
	cmd.AddCommand(list, show, rotate,
		setState("disable", "Hold a key: nothing is released while it is disabled", kmsv1.KeyState_KEY_STATE_DISABLED),
		setState("enable", "Lift a hold: the key returns to the state it had", kmsv1.KeyState_KEY_STATE_ACTIVE),
		setState("destroy", "Erase the sealed private key (irreversible)", kmsv1.KeyState_KEY_STATE_DESTROYED))
	cmd.AddCommand(importCommands(a, &keyset)...)
	return cmd
}

func newKeySetsCmd() *cobra.Command {
	a := &adminFlags{}
	cmd := &cobra.Command{Use: "keysets", Short: "Create, list and update key sets (admin socket)"}
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
				return printKeySets(cmd.OutOrStdout(), resp.GetKeysets())
			})
		},
	}
	cmd.AddCommand(create, list, newKeySetsUpdateCmd(a))
	return cmd
}

func printKeySets(w io.Writer, sets []*kmsv1.KeySet) error {
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "NAME\tPOLICY VERSION\tROTATION\tLIFETIME\tPENDING LEAD\tRETENTION\tCREATED")
	sec := func(v int64) time.Duration { return time.Duration(v) * time.Second }
	for _, ks := range sets {
		s := ks.GetSettings()
		fmt.Fprintf(tw, "%s\t%d\t%s\t%s\t%s\t%s\t%s\n", ks.GetName(), ks.GetPolicyVersion(),
			sec(s.GetRotationPeriodSeconds()), sec(s.GetKeyLifetimeSeconds()), sec(s.GetPendingLeadSeconds()),
			sec(s.GetRetentionSeconds()), ts(ks.GetCreatedAt()))
	}
	return tw.Flush()
}

// newKeySetsUpdateCmd is `kms keysets update`: new lifecycle settings
// for keys created from now on.
func newKeySetsUpdateCmd(a *adminFlags) *cobra.Command {
	var rotation, lifetime, lead, retention time.Duration
	cmd := &cobra.Command{
		Use:   "update NAME",
		Short: "Change a key set's rotation period, key lifetime, pending lead or retention",
		Long: `update changes the lifecycle settings of a key set; settings not given keep
their value. Each key's activation, expiry and destruction times are fixed,
as absolute times, when the key is created, so existing keys are not moved:
the new settings apply to keys created afterwards (the next rotation, and
the next key the scheduler creates, which activates one new rotation period
after the newest key). A later rotation retires the current key with the new
retention, which can shorten its remaining retention but never extend it.

The result must describe a gapless schedule: key lifetime at least the
rotation period, pending lead below it. Durations are whole seconds.`,
		Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			var settings kmsv1.KeySetSettings
			given := 0
			for _, f := range []struct {
				name string
				v    time.Duration
				dst  *int64
			}{
				{"rotation-period", rotation, &settings.RotationPeriodSeconds},
				{"key-lifetime", lifetime, &settings.KeyLifetimeSeconds},
				{"pending-lead", lead, &settings.PendingLeadSeconds},
				{"retention", retention, &settings.RetentionSeconds},
			} {
				if !cmd.Flags().Changed(f.name) {
					continue
				}
				// Zero means "keep" on the wire, and the wire has whole
				// seconds: refuse what would silently mean something else.
				if f.v <= 0 || f.v%time.Second != 0 {
					return &exitError{code: 2, err: fmt.Errorf("--%s %s: want a positive whole number of seconds (omit the flag to keep the current value)", f.name, f.v)}
				}
				*f.dst = int64(f.v / time.Second)
				given++
			}
			if given == 0 {
				return &exitError{code: 2, err: errors.New("nothing to change: give --rotation-period, --key-lifetime, --pending-lead or --retention")}
			}
			return a.run(cmd, func(ctx context.Context, c kmsv1.AdminClient) error {
				ks, err := c.UpdateKeySetSettings(ctx, &kmsv1.UpdateKeySetSettingsRequest{Keyset: args[0], Settings: &settings})
				if err != nil {
					return err
				}
				if a.output == "json" {
					return printJSON(cmd.OutOrStdout(), ks)
				}
				return printKeySets(cmd.OutOrStdout(), []*kmsv1.KeySet{ks})
			})
		},
	}
	cmd.Flags().DurationVar(&rotation, "rotation-period", 0, "interval between key activations")
	cmd.Flags().DurationVar(&lifetime, "key-lifetime", 0, "how long a key stays active")
	cmd.Flags().DurationVar(&lead, "pending-lead", 0, "how long before activation a key is published")
	cmd.Flags().DurationVar(&retention, "retention", 0, "how long a retired key stays releasable")
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
