package hcvault

import (
	"strings"
	"testing"
)

func TestParseURI(t *testing.T) {
	for _, tc := range []struct {
		uri  string
		want KeyURI
	}{
		{"hcvault://vault.example.com/transit/keys/kek", KeyURI{Host: "vault.example.com", Mount: "transit", Name: "kek"}},
		{"hcvault://vault:8200/kms/transit/keys/a.b-c@d_e", KeyURI{Host: "vault:8200", Mount: "kms/transit", Name: "a.b-c@d_e"}},
		{"hcvault://10.0.0.1:8200/ns1/transit/keys/k?role=kms", KeyURI{Host: "10.0.0.1:8200", Mount: "ns1/transit", Name: "k", Role: "kms"}},
		{"hcvault://[::1]:8200/transit/keys/k?role=kms&auth_mount=k8s/prod", KeyURI{Host: "[::1]:8200", Mount: "transit", Name: "k", Role: "kms", AuthMount: "k8s/prod"}},
		{"hcvault://v/transit/keys/k?token_file=/vault/secrets/token", KeyURI{Host: "v", Mount: "transit", Name: "k", TokenFile: "/vault/secrets/token"}},
		// A mount may itself be called "keys".
		{"hcvault://v/keys/keys/k", KeyURI{Host: "v", Mount: "keys", Name: "k"}},
	} {
		got, err := ParseURI(tc.uri)
		if err != nil {
			t.Errorf("%s: %v", tc.uri, err)
			continue
		}
		if got != tc.want {
			t.Errorf("%s: got %+v, want %+v", tc.uri, got, tc.want)
		}
		if canon := got.String(); strings.Contains(canon, "?") || !strings.HasPrefix(tc.uri, canon) {
			t.Errorf("%s: String() = %q", tc.uri, canon)
		}
	}
	for _, bad := range []string{
		"",
		"hcvault:transit/keys/k",
		"hcvault:///transit/keys/k",
		"hcvault://v/keys/k",
		"hcvault://v/transit/keys/",
		"hcvault://v/transit/keys/k/",
		"hcvault://v/transit/key/k",
		"hcvault://v//keys/k",
		"hcvault://v/../keys/k",
		"hcvault://v/./keys/k",
		"hcvault://v/transit/keys/-k",
		"hcvault://v/transit/keys/k%2Fx",
		"hcvault://v/tran%73it/keys/k",
		"hcvault://v/transit/keys/k#frag",
		"hcvault://user:s.secret@v/transit/keys/k",
		"hcvault://:8200/transit/keys/k",
		"https://v/transit/keys/k",
		"HCVAULT://v/transit/keys/k?x=1",
		"hcvault://v/transit/keys/k?role=",
		"hcvault://v/transit/keys/k?role=a&role=b",
		"hcvault://v/transit/keys/k?token=s.abc",
		"hcvault://v/transit/keys/k?auth_mount=k8s",
		"hcvault://v/transit/keys/k?role=a&token_file=/t",
		"hcvault://v/transit/keys/k?role=a&auth_mount=../sys",
		"hcvault://v/transit/keys/k?%zz",
	} {
		if k, err := ParseURI(bad); err == nil {
			t.Errorf("ParseURI(%q) = %+v, want an error", bad, k)
		} else if strings.Contains(err.Error(), "s.secret") {
			t.Errorf("ParseURI(%q): error repeats the credential: %v", bad, err)
		}
	}
}

func FuzzParseURI(f *testing.F) {
	for _, s := range []string{
		"hcvault://vault.example.com/transit/keys/kek",
		"hcvault://vault:8200/kms/transit/keys/k?role=kms&auth_mount=kubernetes",
		"hcvault://v/transit/keys/k?token_file=/t",
		"hcvault://user@v/transit/keys/k",
		"hcvault://v/a/b/c/keys/k%2F",
	} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		k, err := ParseURI(s)
		if err != nil {
			return
		}
		// The canonical form re-parses to the same key, and the paths
		// sent to Vault stay inside the mount.
		k2, err := ParseURI(k.String())
		if err != nil {
			t.Fatalf("canonical %q of %q does not parse: %v", k.String(), s, err)
		}
		if k2.Host != k.Host || k2.Mount != k.Mount || k2.Name != k.Name {
			t.Fatalf("round trip %q -> %+v -> %+v", s, k, k2)
		}
		for _, p := range []string{k.encryptPath(), k.decryptPath()} {
			if strings.ContainsAny(p, "?#%") || strings.Contains(p, "//") || strings.Contains(p, "..") {
				t.Fatalf("%q: unsafe request path %q", s, p)
			}
		}
	})
}
