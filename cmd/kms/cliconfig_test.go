package main

import (
	"context"
	"net"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/spf13/cobra"
	"google.golang.org/grpc"
	"google.golang.org/protobuf/encoding/protojson"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/timestamppb"

	kmsv1 "github.com/attested-kms/attested-kms/proto/kms/v1"
)

// resolved parses args on a command carrying the admin flags and resolves
// them against env (a missing name is unset).
func resolved(t *testing.T, env map[string]string, args ...string) (*adminFlags, error) {
	t.Helper()
	a := &adminFlags{}
	cmd := &cobra.Command{Use: "x"}
	a.register(cmd)
	if err := cmd.ParseFlags(args); err != nil {
		t.Fatal(err)
	}
	return a, a.resolve(cmd.Flags().Changed, func(k string) string { return env[k] })
}

func writeTestFile(t *testing.T, path, text string) string {
	t.Helper()
	if err := os.MkdirAll(filepath.Dir(path), 0o700); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(path, []byte(text), 0o600); err != nil {
		t.Fatal(err)
	}
	return path
}

// Each setting: a given flag beats its environment variable, which beats
// the config file, which beats the default; relative paths in the file
// are relative to the file.
func TestCLIConfigPrecedence(t *testing.T) {
	dir := t.TempDir()
	cfg := writeTestFile(t, filepath.Join(dir, "cfg", "cli.yaml"), `socket: run/admin.sock
addr: file.example:8443
ca: ca.pem
cert: /etc/kms/op.crt
key: op.key
token_file: token
output: json
`)
	inCfg := func(p string) string { return filepath.Join(dir, "cfg", p) }
	type want struct{ socket, addr, ca, cert, key, token, output string }
	got := func(a *adminFlags) want {
		return want{a.socket, a.addr, a.caFile, a.certFile, a.keyFile, a.tokenFile, a.output}
	}
	for _, tc := range []struct {
		name string
		env  map[string]string
		args []string
		want want
	}{
		{"defaults", nil, nil, want{socket: "admin.sock", output: "table"}},
		{"file", nil, []string{"--cli-config", cfg},
			want{inCfg("run/admin.sock"), "file.example:8443", inCfg("ca.pem"), "/etc/kms/op.crt", inCfg("op.key"), inCfg("token"), "json"}},
		{"environment over file", map[string]string{"KMS_CLI_CONFIG": cfg, "KMS_ADMIN_ADDR": "env.example:1", "KMS_ADMIN_OUTPUT": "table", "KMS_ADMIN_KEY": "env.key"}, nil,
			want{inCfg("run/admin.sock"), "env.example:1", inCfg("ca.pem"), "/etc/kms/op.crt", "env.key", inCfg("token"), "table"}},
		{"flags over environment", map[string]string{"KMS_CLI_CONFIG": cfg, "KMS_ADMIN_ADDR": "env.example:1", "KMS_ADMIN_SOCKET": "env.sock"},
			[]string{"--addr", "flag.example:2", "-o", "json", "--socket", "flag.sock", "--token-file", "flag-token"},
			want{"flag.sock", "flag.example:2", inCfg("ca.pem"), "/etc/kms/op.crt", inCfg("op.key"), "flag-token", "json"}},
		{"an empty flag switches a setting off", map[string]string{"KMS_CLI_CONFIG": cfg, "KMS_ADMIN_CERT": "env.crt"}, []string{"--cert", "", "--key", ""},
			want{inCfg("run/admin.sock"), "file.example:8443", inCfg("ca.pem"), "", "", inCfg("token"), "json"}},
		{"one flag, the rest from the file", nil, []string{"--cli-config", cfg, "--ca", "flag-ca.pem"},
			want{inCfg("run/admin.sock"), "file.example:8443", "flag-ca.pem", "/etc/kms/op.crt", inCfg("op.key"), inCfg("token"), "json"}},
	} {
		a, err := resolved(t, tc.env, tc.args...)
		if err != nil {
			t.Errorf("%s: %v", tc.name, err)
			continue
		}
		if g := got(a); g != tc.want {
			t.Errorf("%s:\n got %+v\nwant %+v", tc.name, g, tc.want)
		}
	}
}

// Which file: --cli-config, else KMS_CLI_CONFIG, else the XDG default
// (XDG_CONFIG_HOME, else ~/.config). A file named explicitly must exist
// and be valid; a missing default file is no config.
func TestCLIConfigFile(t *testing.T) {
	dir := t.TempDir()
	flagFile := writeTestFile(t, filepath.Join(dir, "flag.yaml"), "addr: flag-file:1\n")
	envFile := writeTestFile(t, filepath.Join(dir, "env.yaml"), "addr: env-file:1\n")
	writeTestFile(t, filepath.Join(dir, "xdg", "attested-kms", "cli.yaml"), "addr: xdg-file:1\n")
	writeTestFile(t, filepath.Join(dir, "home", ".config", "attested-kms", "cli.yaml"), "addr: home-file:1\n")
	xdg, home := filepath.Join(dir, "xdg"), filepath.Join(dir, "home")
	for _, tc := range []struct {
		name string
		env  map[string]string
		args []string
		addr string
	}{
		{"flag over environment", map[string]string{"KMS_CLI_CONFIG": envFile, "XDG_CONFIG_HOME": xdg}, []string{"--cli-config", flagFile}, "flag-file:1"},
		{"environment over default", map[string]string{"KMS_CLI_CONFIG": envFile, "XDG_CONFIG_HOME": xdg}, nil, "env-file:1"},
		{"XDG_CONFIG_HOME", map[string]string{"XDG_CONFIG_HOME": xdg, "HOME": home}, nil, "xdg-file:1"},
		{"~/.config", map[string]string{"HOME": home}, nil, "home-file:1"},
		{"relative XDG_CONFIG_HOME is ignored", map[string]string{"XDG_CONFIG_HOME": "xdg", "HOME": home}, nil, "home-file:1"},
		{"missing default file", map[string]string{"HOME": filepath.Join(dir, "nobody")}, nil, ""},
		{"no home at all", nil, nil, ""},
	} {
		a, err := resolved(t, tc.env, tc.args...)
		if err != nil || a.addr != tc.addr {
			t.Errorf("%s: addr %q, %v; want %q", tc.name, a.addr, err, tc.addr)
		}
	}

	bad := writeTestFile(t, filepath.Join(dir, "bad.yaml"), "addr: x:1\ntoken: secret-looking\n")
	badOutput := writeTestFile(t, filepath.Join(dir, "badout.yaml"), "output: yaml\n")
	notYAML := writeTestFile(t, filepath.Join(dir, "list.yaml"), "- a\n- b\n")
	for _, tc := range []struct {
		name string
		env  map[string]string
		args []string
		want string
	}{
		{"unknown field", nil, []string{"--cli-config", bad}, "field token not found"},
		{"bad output", nil, []string{"--cli-config", badOutput}, "want table or json"},
		{"not a mapping", nil, []string{"--cli-config", notYAML}, "cannot unmarshal"},
		{"missing --cli-config file", nil, []string{"--cli-config", filepath.Join(dir, "none.yaml")}, "no such file"},
		{"missing KMS_CLI_CONFIG file", map[string]string{"KMS_CLI_CONFIG": filepath.Join(dir, "none.yaml")}, nil, "no such file"},
	} {
		_, err := resolved(t, tc.env, tc.args...)
		if err == nil || !strings.Contains(err.Error(), tc.want) || strings.Contains(err.Error(), "secret-looking") {
			t.Errorf("%s: %v, want an error containing %q (and no file content)", tc.name, err, tc.want)
		}
	}
}

// showAdmin answers GetKey with a fixed disabled key and records
// UpdateKeySetSettings requests.
type showAdmin struct {
	kmsv1.UnimplementedAdminServer
	mu      sync.Mutex
	updates []*kmsv1.UpdateKeySetSettingsRequest
}

var shownKey = &kmsv1.GetKeyResponse{
	Key: &kmsv1.KeyInfo{Keyset: "payments", Kid: "2a00000000000001", Version: 3, OhttpKeyId: 0x2a,
		Suite: "DHKEM(X25519,HKDF-SHA256)/HKDF-SHA256/AES-256-GCM", PublicKey: make([]byte, 32),
		State:       kmsv1.KeyState_KEY_STATE_DISABLED,
		CreatedAt:   timestamppb.New(time.Date(2025, 1, 1, 0, 0, 0, 0, time.UTC)),
		ActivatesAt: timestamppb.New(time.Date(2025, 1, 2, 0, 0, 0, 0, time.UTC)),
		ExpiresAt:   timestamppb.New(time.Date(2025, 1, 9, 0, 0, 0, 0, time.UTC)), DestroyAfter: timestamppb.New(time.Date(2025, 1, 16, 0, 0, 0, 0, time.UTC)),
		KekUri: "local:///var/lib/kms/kek.key"},
	HeldState: kmsv1.KeyState_KEY_STATE_ACTIVE, SealFormat: "attested-kms/v2 sealed-key", IntermediateGeneration: 2, WrapAlgorithm: "AES-256-GCM",
}

func (s *showAdmin) GetKey(_ context.Context, req *kmsv1.GetKeyRequest) (*kmsv1.GetKeyResponse, error) {
	if req.GetKeyset() != "payments" || req.GetKid() != shownKey.GetKey().GetKid() {
		return nil, os.ErrNotExist
	}
	return shownKey, nil
}

func (s *showAdmin) UpdateKeySetSettings(_ context.Context, req *kmsv1.UpdateKeySetSettingsRequest) (*kmsv1.KeySet, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.updates = append(s.updates, req)
	return &kmsv1.KeySet{Name: req.GetKeyset(), Settings: req.GetSettings(), PolicyVersion: 1, CreatedAt: timestamppb.Now()}, nil
}

// The commands reach a server through the socket named in the default
// config file: keys show prints every field that applies, keysets update
// sends only the settings given, in seconds.
func TestKeysShowAndKeySetsUpdate(t *testing.T) {
	// Unix socket paths are short: not under the test's long temp name.
	sockDir, err := os.MkdirTemp("", "kmscli")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(sockDir) })
	lis, err := net.Listen("unix", filepath.Join(sockDir, "admin.sock"))
	if err != nil {
		t.Fatal(err)
	}
	stub := &showAdmin{}
	gs := grpc.NewServer()
	kmsv1.RegisterAdminServer(gs, stub)
	go gs.Serve(lis)
	t.Cleanup(gs.Stop)

	xdg := t.TempDir()
	writeTestFile(t, filepath.Join(xdg, "attested-kms", "cli.yaml"), "socket: "+filepath.Join(sockDir, "admin.sock")+"\n")
	t.Setenv("XDG_CONFIG_HOME", xdg)
	t.Setenv(cliConfigEnv, "")
	for _, v := range []string{"SOCKET", "ADDR", "CA", "CERT", "KEY", "TOKEN_FILE", "OUTPUT"} {
		t.Setenv("KMS_ADMIN_"+v, "")
	}

	out, errText, code := run(t, "keys", "show", "2a00000000000001", "--keyset", "payments")
	if code != 0 {
		t.Fatalf("keys show: exit %d: %s", code, errText)
	}
	for _, line := range []string{
		"KEYSET                   payments", "KID                      2a00000000000001", "VERSION                  3",
		"OHTTP KEY ID             42", "STATE                    disabled", "HELD STATE               active",
		"PUBLIC KEY               AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA=",
		"ACTIVATES                2025-01-02T00:00:00Z", "EXPIRES                  2025-01-09T00:00:00Z",
		"DESTROY AFTER            2025-01-16T00:00:00Z", "KEK                      local:///var/lib/kms/kek.key",
		"SEAL FORMAT              attested-kms/v2 sealed-key", "INTERMEDIATE GENERATION  2",
	} {
		if !strings.Contains(out, line+"\n") {
			t.Errorf("keys show output lacks %q:\n%s", line, out)
		}
	}
	if strings.Contains(out, "DESTROYED") || strings.Contains(out, "KEK VERSION") {
		t.Errorf("keys show prints fields that do not apply:\n%s", out)
	}
	out, errText, code = run(t, "keys", "show", "2a00000000000001", "--keyset", "payments", "-o", "json")
	var fromJSON kmsv1.GetKeyResponse
	if code != 0 {
		t.Fatalf("keys show -o json: exit %d: %s", code, errText)
	}
	if err := protojson.Unmarshal([]byte(out), &fromJSON); err != nil || !proto.Equal(&fromJSON, shownKey) {
		t.Fatalf("keys show -o json: %v\n%s", err, out)
	}
	if _, _, code := run(t, "keys", "show", "2a00000000000002", "--keyset", "payments"); code == 0 {
		t.Fatal("keys show of an unknown key succeeded")
	}

	out, errText, code = run(t, "keysets", "update", "payments", "--retention", "48h", "--key-lifetime", "1h30m")
	if code != 0 || !strings.Contains(out, "payments") || !strings.Contains(out, "1h30m0s") || !strings.Contains(out, "48h0m0s") {
		t.Fatalf("keysets update: exit %d: %s\n%s", code, errText, out)
	}
	for _, args := range [][]string{
		{"keysets", "update", "payments"},
		{"keysets", "update", "payments", "--pending-lead", "1500ms"},
		{"keysets", "update", "payments", "--retention", "0s"},
		{"keysets", "update", "payments", "--rotation-period", "-1h"},
	} {
		if _, errText, code := run(t, args...); code != 2 {
			t.Errorf("%v: exit %d (%s), want 2", args, code, errText)
		}
	}
	stub.mu.Lock()
	defer stub.mu.Unlock()
	want := &kmsv1.UpdateKeySetSettingsRequest{Keyset: "payments", Settings: &kmsv1.KeySetSettings{KeyLifetimeSeconds: 5400, RetentionSeconds: 172800}}
	if len(stub.updates) != 1 || !proto.Equal(stub.updates[0], want) {
		t.Fatalf("server received %v, want only %v", stub.updates, want)
	}
}

// The config file comes from the operator's disk: any bytes parse or
// fail cleanly, and what parses has a valid output format.
func FuzzParseCLIConfig(f *testing.F) {
	f.Add([]byte("socket: a.sock\naddr: h:1\nca: ca.pem\ncert: c\nkey: k\ntoken_file: t\noutput: json\n"))
	f.Add([]byte("unknown: 1\n"))
	f.Add([]byte("- 1\n"))
	f.Add([]byte(""))
	f.Add([]byte("output: [a]\n"))
	f.Fuzz(func(t *testing.T, b []byte) {
		c, err := parseCLIConfig(b)
		if err != nil {
			return
		}
		if c.Output != "" && checkFormat(c.Output) != nil {
			t.Fatalf("accepted output %q", c.Output)
		}
	})
}
