package collateral

import (
	"encoding/pem"
	"net/http"
	"testing"
	"time"

	"github.com/google/go-tdx-guest/testing/testdata"
)

func TestNextUpdateGenuine(t *testing.T) {
	date := func(y int, m time.Month, d, h, mi, s int) time.Time { return time.Date(y, m, d, h, mi, s, 0, time.UTC) }
	tests := []struct {
		name string
		kind kind
		body []byte
		want time.Time
	}{
		{"Intel TDX TCB info", kindTCBInfo, testdata.TcbInfoBody, date(2023, 7, 18, 8, 42, 58)},
		{"Intel QE identity", kindQEIdentity, testdata.QeIdentityBody, date(2023, 7, 8, 7, 24, 59)},
		{"AMD VCEK", kindCert, fixture(t, "vcek.testcer"), date(2029, 9, 24, 0, 55, 28)},
		{"AMD cert_chain (earliest NotAfter)", kindCertChain, fixture(t, "milan.testcer"), date(2045, 10, 22, 17, 23, 5)},
	}
	for _, tc := range tests {
		got, err := nextUpdate(tc.kind, tc.body)
		if err != nil || !got.Equal(tc.want) {
			t.Errorf("%s: %v, %v; want %v", tc.name, got, err, tc.want)
		}
		// Sniffing an unknown kind agrees.
		if got2, err := nextUpdate(kindUnknown, tc.body); err != nil || !got2.Equal(got) {
			t.Errorf("%s sniffed: %v, %v; want %v", tc.name, got2, err, got)
		}
	}
	for _, body := range [][]byte{testdata.PckCrlBody, testdata.RootCrlBody} {
		got, err := nextUpdate(kindCRL, body)
		if err != nil || got.IsZero() {
			t.Errorf("Intel CRL: %v, %v", got, err)
		}
	}
}

func TestNextUpdateForms(t *testing.T) {
	ca := newTestCA(t)
	next := t0.Add(36 * time.Hour)
	der := ca.crl(t, 7, t0, next)
	pemCRL := pem.EncodeToMemory(&pem.Block{Type: "X509 CRL", Bytes: der})
	leaf := ca.leaf(t, 3, t0.Add(100*time.Hour))
	tests := []struct {
		name string
		kind kind
		body []byte
		want time.Time
		ok   bool
	}{
		{"DER CRL", kindCRL, der, next, true},
		{"PEM CRL", kindCRL, pemCRL, next, true},
		{"PEM CRL with trailing data", kindCRL, append(pemCRL, "x"...), time.Time{}, false},
		{"certificate as CRL", kindCRL, leaf, time.Time{}, false},
		{"PEM leaf", kindCert, pemCert(leaf), t0.Add(100 * time.Hour), true},
		{"two certs where one is expected", kindCert, append(pemCert(leaf), pemCert(ca.cert.Raw)...), time.Time{}, false},
		{"chain: earliest NotAfter", kindCertChain, append(pemCert(ca.cert.Raw), pemCert(leaf)...), t0.Add(100 * time.Hour), true},
		{"empty chain", kindCertChain, nil, time.Time{}, false},
		{"JSON", kindTCBInfo, tcbInfo(next), next, true},
		{"JSON offset", kindQEIdentity, []byte(`{"enclaveIdentity":{"nextUpdate":"2025-03-03T00:00:00+02:00"}}`), time.Date(2025, 3, 2, 22, 0, 0, 0, time.UTC), true},
		{"JSON wrong field", kindQEIdentity, tcbInfo(next), time.Time{}, false},
		{"JSON bad time", kindTCBInfo, []byte(`{"tcbInfo":{"nextUpdate":"tomorrow"}}`), time.Time{}, false},
		{"JSON not an object", kindTCBInfo, []byte(`{"tcbInfo":[1]}`), time.Time{}, false},
		{"unknown: nothing stated", kindUnknown, []byte("hello"), time.Time{}, true},
		{"unknown: a CRL", kindUnknown, der, next, true},
	}
	for _, tc := range tests {
		got, err := nextUpdate(tc.kind, tc.body)
		if (err == nil) != tc.ok || !got.Equal(tc.want) {
			t.Errorf("%s: %v, %v; want %v, ok=%v", tc.name, got, err, tc.want, tc.ok)
		}
	}
}

func TestParseRetryAfter(t *testing.T) {
	for _, tc := range []struct {
		v    string
		want time.Duration
		ok   bool
	}{
		{"", 0, false},
		{"0", 0, true},
		{"120", 2 * time.Minute, true},
		{"99999999999999999", maxRetryAfter, true},
		{"-5", 0, false},
		{"soon", 0, false},
		{t0.Add(90 * time.Second).Format(http.TimeFormat), 90 * time.Second, true},
		{t0.Add(-time.Hour).Format(http.TimeFormat), 0, true},
	} {
		got, ok := parseRetryAfter(tc.v, t0)
		if got != tc.want || ok != tc.ok {
			t.Errorf("parseRetryAfter(%q) = %v, %v; want %v, %v", tc.v, got, ok, tc.want, tc.ok)
		}
	}
}
