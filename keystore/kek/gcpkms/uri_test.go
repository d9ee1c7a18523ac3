package gcpkms

import (
	"errors"
	"strings"
	"testing"

	"github.com/attested-kms/attested-kms/keystore/kek"
)

func TestParseURI(t *testing.T) {
	good := []struct {
		uri  string
		want KeyName
	}{
		{"gcp-kms://projects/my-project/locations/global/keyRings/kms/cryptoKeys/kek",
			KeyName{"my-project", "global", "kms", "kek"}},
		{"gcp-kms://projects/123456789/locations/europe-west4/keyRings/Ring_1/cryptoKeys/key-A_2",
			KeyName{"123456789", "europe-west4", "Ring_1", "key-A_2"}},
		{"gcp-kms://projects/example.com:proj/locations/us/keyRings/r/cryptoKeys/k",
			KeyName{"example.com:proj", "us", "r", "k"}},
	}
	for _, c := range good {
		got, err := ParseURI(c.uri)
		if err != nil {
			t.Errorf("ParseURI(%q): %v", c.uri, err)
			continue
		}
		if got != c.want {
			t.Errorf("ParseURI(%q) = %+v, want %+v", c.uri, got, c.want)
		}
		if got.URI() != c.uri {
			t.Errorf("URI() = %q, want %q", got.URI(), c.uri)
		}
		if want := strings.TrimPrefix(c.uri, "gcp-kms://"); got.ResourceName() != want {
			t.Errorf("ResourceName() = %q, want %q", got.ResourceName(), want)
		}
	}

	bad := []string{
		"",
		"projects/p/locations/l/keyRings/r/cryptoKeys/k",
		"gcp-kms://",
		"gcp-kms:///projects/p/locations/l/keyRings/r/cryptoKeys/k",
		"gcp-kms://projects/p/locations/l/keyRings/r/cryptoKeys/k/",
		"gcp-kms://projects/p/locations/l/keyRings/r/cryptoKeys/k/cryptoKeyVersions/1",
		"gcp-kms://projects/p/locations/l/keyRings/r/cryptoKeys/k?x=1",
		"gcp-kms://projects/p/locations/l/keyRings/r/cryptoKeys/k#f",
		"gcp-kms://projects/p/locations/l/keyRings/r/cryptoKeys/",
		"gcp-kms://projects//locations/l/keyRings/r/cryptoKeys/k",
		"gcp-kms://projects/P/locations/l/keyRings/r/cryptoKeys/k",
		"gcp-kms://projects/p/locations/L/keyRings/r/cryptoKeys/k",
		"gcp-kms://projects/p/locations/l/keyRings/r%2F/cryptoKeys/k",
		"gcp-kms://projects/p/locations/l/keyRings/r/cryptoKeys/k k",
		"gcp-kms://projects/p/locations/l/keyRings/r/cryptoKeys/" + strings.Repeat("k", 64),
		"gcp-kms://project/p/locations/l/keyRings/r/cryptoKeys/k",
		"gcp-kms://projects/p/locations/l/keyrings/r/cryptokeys/k",
		"GCP-KMS://projects/p/locations/l/keyRings/r/cryptoKeys/k",
	}
	for _, uri := range bad {
		if k, err := ParseURI(uri); err == nil {
			t.Errorf("ParseURI(%q) = %+v, want an error", uri, k)
		}
	}

	_, err := ParseURI("aws-kms://arn:aws:kms:us-east-1:111122223333:key/x")
	if !errors.Is(err, kek.ErrUnsupported) {
		t.Errorf("foreign scheme: err = %v, want ErrUnsupported", err)
	}
}

func FuzzParseURI(f *testing.F) {
	f.Add("gcp-kms://projects/p/locations/global/keyRings/r/cryptoKeys/k")
	f.Add("gcp-kms://projects/p/locations/l/keyRings/r/cryptoKeys/k/cryptoKeyVersions/3")
	f.Add("gcp-kms://projects/a.b:c/locations/x/keyRings/_/cryptoKeys/-")
	f.Add("aws-kms://x")
	f.Fuzz(func(t *testing.T, uri string) {
		k, err := ParseURI(uri)
		if err != nil {
			return
		}
		// A URI that parses names one key and prints back unchanged, so
		// two spellings can never name the same key.
		if k.URI() != uri {
			t.Fatalf("ParseURI(%q).URI() = %q", uri, k.URI())
		}
		again, err := ParseURI(k.URI())
		if err != nil || again != k {
			t.Fatalf("reparse of %q: %+v, %v", k.URI(), again, err)
		}
		for _, id := range []string{k.Project, k.Location, k.KeyRing, k.CryptoKey} {
			if id == "" || strings.ContainsAny(id, "/?#% \t\n") {
				t.Fatalf("ParseURI(%q) accepted ID %q", uri, id)
			}
		}
	})
}
