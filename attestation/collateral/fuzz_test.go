package collateral

import (
	"bytes"
	"context"
	"net/http"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/google/go-tdx-guest/testing/testdata"
)

// FuzzNextUpdate: reading a document's next update never panics, and a
// document accepted as a specific kind is also accepted, with the same
// time, when its kind has to be sniffed.
func FuzzNextUpdate(f *testing.F) {
	for _, seed := range [][]byte{
		testdata.TcbInfoBody, testdata.TcbInfoBodyV5, testdata.QeIdentityBody,
		testdata.PckCrlBody, testdata.RootCrlBody,
		fixture(f, "vcek.testcer"), fixture(f, "milan.testcer"),
		tcbInfo(t0), []byte(`{"enclaveIdentity":{"nextUpdate":"2025-01-01T00:00:00Z"}}`),
		[]byte("-----BEGIN X509 CRL-----\n-----END X509 CRL-----\n"), {}, {0x30, 0x80},
	} {
		for k := kindUnknown; k <= kindCertChain; k++ {
			f.Add(uint8(k), seed)
		}
	}
	f.Fuzz(func(t *testing.T, k uint8, body []byte) {
		kd := kind(k % uint8(kindCertChain+1))
		got, err := nextUpdate(kd, body)
		if err != nil {
			if !got.IsZero() {
				t.Errorf("error %v with a time %v", err, got)
			}
			return
		}
		if got.Location() != time.UTC {
			t.Errorf("time %v not in UTC", got)
		}
		if kd != kindUnknown && !got.IsZero() {
			sniffed, err := nextUpdate(kindUnknown, body)
			if err != nil || sniffed.IsZero() {
				t.Errorf("kind %v accepted (%v) but sniffing found nothing (%v)", kd, got, err)
			}
		}
	})
}

// FuzzPathFor: an accepted URL maps to a local, clean, slash-separated
// name inside the directory, deterministically, and the canonical URL maps
// to the same name; WriteDocument and the store then round-trip the body.
func FuzzPathFor(f *testing.F) {
	for _, u := range []string{
		urlTCB, urlPCKCRL, urlQEID, urlRootCRL, urlMilanCRL, urlMilanChain,
		"https://kdsintf.amd.com/vcek/v1/Milan/../../x",
		"https://kdsintf.amd.com/vcek/v1/Milan/a?b=c&d=e",
		"https://api.trustedservices.intel.com/tdx/certification/v4/tcb?fmspc=..%2f",
		"https://certificates.trustedservices.intel.com/a/b/c.der",
		"https://evil.example/x",
	} {
		f.Add(u)
	}
	dir := f.TempDir()
	s, err := New(Config{Dir: dir, Offline: true})
	if err != nil {
		f.Fatal(err)
	}
	f.Fuzz(func(t *testing.T, u string) {
		rel, err := PathFor(u)
		if err != nil {
			return
		}
		native := filepath.FromSlash(rel)
		if !filepath.IsLocal(native) || filepath.Clean(native) != native || strings.Contains(rel, "\\") {
			t.Fatalf("PathFor(%q) = %q: not a clean local name", u, rel)
		}
		if strings.HasSuffix(rel, headersSuffix) || strings.Contains(rel, "/"+tempFilePrefix) {
			t.Fatalf("PathFor(%q) = %q collides with side files", u, rel)
		}
		d, _ := parseDocURL(u)
		if again, err := PathFor(d.canonical); err != nil || again != rel {
			t.Fatalf("canonical %q maps to %q, %v; want %q", d.canonical, again, err, rel)
		}
		// Round trip through the directory, when the name does not clash
		// with a directory an earlier input created.
		body := []byte("fuzz body " + u)
		h := http.Header{"Sgx-Pck-Crl-Issuer-Chain": {"x"}}
		if err := WriteDocument(dir, u, h, body); err != nil {
			return
		}
		st, err := readDocument(mustRoot(t, dir), rel, DefaultMaxDocumentSize)
		if err != nil || !bytes.Equal(st.body, body) || st.header.Get("Sgx-Pck-Crl-Issuer-Chain") != "x" {
			t.Fatalf("round trip of %q: %v", u, err)
		}
		_, _ = s.Fetch(context.Background(), u) // no panic on any stored body
	})
}
