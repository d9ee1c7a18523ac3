package azurekv

import (
	"strings"
	"testing"
)

func TestParseURI(t *testing.T) {
	good := []struct {
		in   string
		want KeyURI
		// canon is the canonical form when it differs from in.
		canon string
	}{
		{in: "azure-kv://kms-prod.vault.azure.net/keys/kek",
			want: KeyURI{Scheme: SchemeKeyVault, Host: "kms-prod.vault.azure.net", Name: "kek"}},
		{in: "azure-kv://kms-prod.vault.azure.net/keys/kek/0123456789abcdef0123456789abcdef",
			want: KeyURI{Scheme: SchemeKeyVault, Host: "kms-prod.vault.azure.net", Name: "kek", Version: "0123456789abcdef0123456789abcdef"}},
		{in: "azure-kv://KMS.Vault.Azure.NET/keys/My-Key-1?alg=RSA-OAEP-256",
			want:  KeyURI{Scheme: SchemeKeyVault, Host: "kms.vault.azure.net", Name: "My-Key-1", Algorithm: AlgRSAOAEP256},
			canon: "azure-kv://kms.vault.azure.net/keys/My-Key-1?alg=RSA-OAEP-256"},
		{in: "azure-kv://kms.vault.azure.cn/keys/kek",
			want: KeyURI{Scheme: SchemeKeyVault, Host: "kms.vault.azure.cn", Name: "kek"}},
		{in: "azure-kv://kms.vault.usgovcloudapi.net/keys/kek",
			want: KeyURI{Scheme: SchemeKeyVault, Host: "kms.vault.usgovcloudapi.net", Name: "kek"}},
		{in: "azure-mhsm://sro-hsm.managedhsm.azure.net/keys/kek",
			want: KeyURI{Scheme: SchemeManagedHSM, Host: "sro-hsm.managedhsm.azure.net", Name: "kek"}},
		{in: "azure-mhsm://sro-hsm.managedhsm.azure.net/keys/kek/abc123?alg=A256KW",
			want: KeyURI{Scheme: SchemeManagedHSM, Host: "sro-hsm.managedhsm.azure.net", Name: "kek", Version: "abc123", Algorithm: AlgA256KW}},
	}
	for _, tc := range good {
		got, err := ParseURI(tc.in)
		if err != nil {
			t.Errorf("ParseURI(%q): %v", tc.in, err)
			continue
		}
		if got != tc.want {
			t.Errorf("ParseURI(%q) = %+v, want %+v", tc.in, got, tc.want)
		}
		canon := tc.canon
		if canon == "" {
			canon = tc.in
		}
		if got.String() != canon {
			t.Errorf("String() = %q, want %q", got.String(), canon)
		}
		if got.VaultURL() != "https://"+tc.want.Host+"/" {
			t.Errorf("VaultURL() = %q", got.VaultURL())
		}
	}

	bad := []string{
		"",
		"azure-kv:",
		"azure-kv://",
		"aws-kms://kms.vault.azure.net/keys/kek",
		"https://kms.vault.azure.net/keys/kek",
		"azure-kv://kms.managedhsm.azure.net/keys/kek",     // wrong service for scheme
		"azure-mhsm://kms.vault.azure.net/keys/kek",        // wrong service for scheme
		"azure-kv://evil.example.com/keys/kek",             // not a vault
		"azure-kv://kms.vault.azure.net.evil.com/keys/kek", // suffix not at end
		"azure-kv://vault.azure.net/keys/kek",              // no vault name
		"azure-kv://a.b.vault.azure.net/keys/kek",          // dotted name
		"azure-kv://ab.vault.azure.net/keys/kek",           // name too short
		"azure-kv://1kms.vault.azure.net/keys/kek",         // starts with a digit
		"azure-kv://kms-.vault.azure.net/keys/kek",         // ends with a hyphen
		"azure-kv://k--ms.vault.azure.net/keys/kek",        // consecutive hyphens
		"azure-kv://kms.vault.azure.net:443/keys/kek",
		"azure-kv://user@kms.vault.azure.net/keys/kek",
		"azure-kv://kms.vault.azure.net/keys/kek#frag",
		"azure-kv://kms.vault.azure.net",
		"azure-kv://kms.vault.azure.net/",
		"azure-kv://kms.vault.azure.net/keys",
		"azure-kv://kms.vault.azure.net/keys/",
		"azure-kv://kms.vault.azure.net/keys/kek/",
		"azure-kv://kms.vault.azure.net/secrets/kek",
		"azure-kv://kms.vault.azure.net/keys/kek/v1/extra",
		"azure-kv://kms.vault.azure.net/keys/k_e_k",
		"azure-kv://kms.vault.azure.net/keys/kek%2Fv1",
		"azure-kv://kms.vault.azure.net/keys/kek/v-1",
		"azure-kv://kms.vault.azure.net/keys/kek/..",
		"azure-kv://kms.vault.azure.net/keys/" + strings.Repeat("k", 128),
		"azure-kv://kms.vault.azure.net/keys/kek?alg=A256KW", // vaults hold no AES keys
		"azure-kv://kms.vault.azure.net/keys/kek?alg=RSA1_5",
		"azure-kv://kms.vault.azure.net/keys/kek?alg=RSA-OAEP-256&alg=RSA-OAEP-256",
		"azure-kv://kms.vault.azure.net/keys/kek?version=1",
		"azure-kv://kms.vault.azure.net/keys/kek?alg=%zz",
	}
	for _, in := range bad {
		if k, err := ParseURI(in); err == nil {
			t.Errorf("ParseURI(%q) = %+v, want error", in, k)
		}
	}
}

func FuzzParseURI(f *testing.F) {
	for _, s := range []string{
		"azure-kv://kms.vault.azure.net/keys/kek",
		"azure-kv://kms.vault.azure.net/keys/kek/0123456789abcdef0123456789abcdef",
		"azure-mhsm://hsm.managedhsm.azure.net/keys/kek?alg=A256KW",
		"azure-kv://kms.vault.azure.net/keys/kek%2F..",
		"azure-mhsm://[::1]/keys/x",
	} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, in string) {
		k, err := ParseURI(in)
		if err != nil {
			return
		}
		// A parsed URI is canonical and stable, and names only safe
		// path segments and a vault host.
		again, err := ParseURI(k.String())
		if err != nil {
			t.Fatalf("canonical form %q of %q does not parse: %v", k.String(), in, err)
		}
		if again != k {
			t.Fatalf("round trip of %q: %+v != %+v", in, again, k)
		}
		if !keyNameRE.MatchString(k.Name) || (k.Version != "" && !keyVersionRE.MatchString(k.Version)) {
			t.Fatalf("unsafe name or version from %q: %+v", in, k)
		}
		if !strings.HasSuffix(k.Host, ".azure.net") && !strings.HasSuffix(k.Host, ".azure.cn") && !strings.HasSuffix(k.Host, ".usgovcloudapi.net") {
			t.Fatalf("host %q accepted from %q", k.Host, in)
		}
	})
}
