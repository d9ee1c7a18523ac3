package main

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"

	"gopkg.in/yaml.v3"
)

// cliConfigEnv names the CLI config file when --cli-config is not given.
const cliConfigEnv = "KMS_CLI_CONFIG"

// maxCLIConfigSize bounds the config file: it holds a handful of paths,
// so anything larger is a wrong file, not a config.
const maxCLIConfigSize = 64 << 10

// cliConfig is the CLI config file (YAML): the admin connection settings
// an operator would otherwise repeat on every command. It holds paths,
// never secrets: the token stays in token_file.
type cliConfig struct {
	Socket    string `yaml:"socket"`
	Addr      string `yaml:"addr"`
	CA        string `yaml:"ca"`
	Cert      string `yaml:"cert"`
	Key       string `yaml:"key"`
	TokenFile string `yaml:"token_file"`
	Output    string `yaml:"output"`
}

// parseCLIConfig decodes a config file. Unknown fields are errors, so a
// misspelt setting is reported instead of silently not applying.
func parseCLIConfig(b []byte) (*cliConfig, error) {
	if len(b) > maxCLIConfigSize {
		return nil, fmt.Errorf("%d bytes, limit %d", len(b), maxCLIConfigSize)
	}
	var c cliConfig
	dec := yaml.NewDecoder(bytes.NewReader(b))
	dec.KnownFields(true)
	if err := dec.Decode(&c); err != nil && !errors.Is(err, io.EOF) {
		return nil, err
	}
	var extra yaml.Node
	if err := dec.Decode(&extra); !errors.Is(err, io.EOF) {
		return nil, errors.New("more than one YAML document")
	}
	if c.Output != "" {
		if err := checkFormat(c.Output); err != nil {
			return nil, err
		}
	}
	return &c, nil
}

// defaultCLIConfigPath is $XDG_CONFIG_HOME/attested-kms/cli.yaml, or
// ~/.config/attested-kms/cli.yaml when XDG_CONFIG_HOME is unset or (as
// the XDG spec says to treat it) relative; empty when neither is known.
func defaultCLIConfigPath(getenv func(string) string) string {
	dir := getenv("XDG_CONFIG_HOME")
	if !filepath.IsAbs(dir) {
		home := getenv("HOME")
		if home == "" {
			return ""
		}
		dir = filepath.Join(home, ".config")
	}
	return filepath.Join(dir, "attested-kms", "cli.yaml")
}

// loadCLIConfig reads the config file named by path (from --cli-config,
// explicit) or else by KMS_CLI_CONFIG (explicit) or else the default
// path. An explicit file must exist; a missing default file means no
// config. Relative paths inside the file are taken relative to its
// directory, so a config works from any working directory.
func loadCLIConfig(path string, getenv func(string) string) (*cliConfig, error) {
	explicit := true
	if path == "" {
		path = getenv(cliConfigEnv)
	}
	if path == "" {
		path, explicit = defaultCLIConfigPath(getenv), false
		if path == "" {
			return &cliConfig{}, nil
		}
	}
	b, err := os.ReadFile(path)
	if errors.Is(err, fs.ErrNotExist) && !explicit {
		return &cliConfig{}, nil
	}
	if err != nil {
		return nil, fmt.Errorf("CLI config: %w", err)
	}
	c, err := parseCLIConfig(b)
	if err != nil {
		return nil, fmt.Errorf("CLI config %s: %w", path, err)
	}
	dir := filepath.Dir(path)
	for _, p := range []*string{&c.Socket, &c.CA, &c.Cert, &c.Key, &c.TokenFile} {
		if *p != "" && !filepath.IsAbs(*p) {
			*p = filepath.Join(dir, *p)
		}
	}
	return c, nil
}

// adminSetting is one connection setting and its sources.
type adminSetting struct {
	flag, env string
	dst       *string
	file      string
	def       string
}

// settings lists a's connection settings; c supplies the config file's
// values (nil: only the names and defaults are needed).
func (a *adminFlags) settings(c *cliConfig) []adminSetting {
	if c == nil {
		c = &cliConfig{}
	}
	return []adminSetting{
		{"socket", "KMS_ADMIN_SOCKET", &a.socket, c.Socket, "admin.sock"},
		{"addr", "KMS_ADMIN_ADDR", &a.addr, c.Addr, ""},
		{"ca", "KMS_ADMIN_CA", &a.caFile, c.CA, ""},
		{"cert", "KMS_ADMIN_CERT", &a.certFile, c.Cert, ""},
		{"key", "KMS_ADMIN_KEY", &a.keyFile, c.Key, ""},
		{"token-file", "KMS_ADMIN_TOKEN_FILE", &a.tokenFile, c.TokenFile, ""},
		{"output", "KMS_ADMIN_OUTPUT", &a.output, c.Output, "table"},
	}
}

// resolve fills a's connection settings after flag parsing: a flag given
// on the command line wins, then its environment variable, then the CLI
// config file, then the built-in default. An explicitly empty flag
// (--key "") counts as given, so it can switch a setting off. changed
// reports whether a flag was given (cobra's Flags().Changed).
func (a *adminFlags) resolve(changed func(flag string) bool, getenv func(string) string) error {
	c, err := loadCLIConfig(a.cliConfig, getenv)
	if err != nil {
		return err
	}
	for _, s := range a.settings(c) {
		if changed(s.flag) {
			continue // the flag already wrote *s.dst
		}
		switch {
		case getenv(s.env) != "":
			*s.dst = getenv(s.env)
		case s.file != "":
			*s.dst = s.file
		default:
			*s.dst = s.def
		}
	}
	return nil
}
