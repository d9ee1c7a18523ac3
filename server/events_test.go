package server_test

import (
	"context"
	"crypto/ed25519"
	"crypto/x509"
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"strconv"
	"testing"
	"time"

	tdxsim "github.com/attested-kms/attested-kms/attestation/tdx/simulate"
	"github.com/attested-kms/attested-kms/audit"
	"github.com/attested-kms/attested-kms/keystore"
	"github.com/attested-kms/attested-kms/keystore/kek/hcvault/hcvaulttest"
	kmsv1 "github.com/attested-kms/attested-kms/proto/kms/v1"
)

// auditKey fetches the audit log's public key over the admin socket.
func (e *env) auditKey(t *testing.T) ed25519.PublicKey {
	t.Helper()
	ak, err := e.admin.GetAuditKey(context.Background(), &kmsv1.GetAuditKeyRequest{})
	if err != nil {
		t.Fatal(err)
	}
	k, err := x509.ParsePKIXPublicKey(ak.GetPublicKey())
	pub, ok := k.(ed25519.PublicKey)
	if err != nil || !ok {
		t.Fatalf("audit key: %T %v", k, err)
	}
	return pub
}

// stoppedAuditLog stops the server and returns its verified audit log.
func (e *env) stoppedAuditLog(t *testing.T, pub ed25519.PublicKey) []audit.Entry {
	t.Helper()
	e.srv.Stop()
	entries, res, err := auditEntries(t, filepath.Join(e.dir, "kms.db"), pub)
	if err != nil {
		t.Fatalf("verify: %v", err)
	}
	if res.Entries != uint64(len(entries)) || res.LastCheckpoint != res.Entries {
		t.Fatalf("verified %+v for %d entries, want all covered by the final checkpoint", res, len(entries))
	}
	return entries
}

// metricValue scrapes /metrics and returns the sample of series (name and
// labels exactly as exposed), or -1 if absent.
func (e *env) metricValue(t *testing.T, series string) float64 {
	t.Helper()
	_, body := e.httpGet(t, "/metrics")
	m := regexp.MustCompile(`(?m)^` + regexp.QuoteMeta(series) + ` (\S+)$`).FindSubmatch(body)
	if m == nil {
		return -1
	}
	v, err := strconv.ParseFloat(string(m[1]), 64)
	if err != nil {
		t.Fatal(err)
	}
	return v
}

// TestTickRotationAudited: keys created and moved by the rotation tick are
// audited with actor "rotation", in a chain that verifies.
func TestTickRotationAudited(t *testing.T) {
	const period = 3 * time.Second
	e := newEnvWith(t, envOptions{
		extraYAML: "rotation: {tick_interval: 100ms}\n",
		keySetYAML: fmt.Sprintf("    rotation_period: %s\n    pending_lead: 1s\n    key_lifetime: %s\n    retention: %s\n",
			period, period, period),
	})
	var next string
	eventually(t, 4*period, "tick-driven rotation", func() (bool, string) {
		resp, err := e.admin.ListKeys(context.Background(), &kmsv1.ListKeysRequest{Keyset: "default"})
		if err != nil {
			t.Fatal(err)
		}
		for _, k := range resp.GetKeys() {
			if k.GetKid() != e.kid && k.GetState() == kmsv1.KeyState_KEY_STATE_ACTIVE {
				next = k.GetKid()
				return true, ""
			}
		}
		return false, resp.String()
	})
	entries := e.stoppedAuditLog(t, e.auditKey(t))

	var created, activated, retired bool
	for _, en := range entries {
		if en.Kind != audit.KindRotation && en.Kind != audit.KindStateChange {
			continue
		}
		if en.Actor != "rotation" || en.KeySet != "default" || en.Outcome != audit.OutcomeOK || en.Details["source"] != keystore.SourceTick {
			t.Errorf("lifecycle entry %+v: want actor rotation, key set default, outcome ok, source tick", en)
		}
		switch {
		case en.Kind == audit.KindRotation && en.KID == next && en.Details["to"] == string(keystore.StatePending):
			created = true
		case en.Kind == audit.KindStateChange && en.KID == next && en.Details["from"] == "pending" && en.Details["to"] == "active":
			activated = true
		case en.Kind == audit.KindStateChange && en.KID == e.kid && en.Details["from"] == "active" && en.Details["to"] == "retired":
			retired = true
		}
	}
	if !created || !activated || !retired {
		t.Errorf("audit log lacks the tick's changes (created %v, activated %v, retired %v): %+v", created, activated, retired, entries)
	}
}

// TestKEKOutageMetricsAndAudit: a Vault outage is counted in
// kms_kek_errors_total and audited (unavailable, then restored) by the KEK
// check.
func TestKEKOutageMetricsAndAudit(t *testing.T) {
	vault := hcvaulttest.New(t)
	key := vault.CreateKey("transit", "kms-root")
	ca := filepath.Join(t.TempDir(), "vault-ca.pem")
	if err := os.WriteFile(ca, vault.CACertPEM(), 0o600); err != nil {
		t.Fatal(err)
	}
	t.Setenv("VAULT_TOKEN", vault.IssueToken(key.KMSPolicy()))
	t.Setenv("VAULT_CACERT", ca)
	e := newKEKEnv(t, key.URI(), 400*time.Millisecond)

	const series = `kms_kek_errors_total{class="unavailable",keyset="default"}`
	if v := e.metricValue(t, series); v != -1 {
		t.Fatalf("KEK errors before the outage: %v", v)
	}
	vault.Outage(t, true)
	eventually(t, 10*time.Second, "KEK error counted", func() (bool, string) {
		v := e.metricValue(t, series)
		return v >= 1, fmt.Sprint(v)
	})
	vault.Outage(t, false)
	eventually(t, 10*time.Second, "KEK usable again", func() (bool, string) {
		st := e.kekState("default")
		return st.GetState() == keystore.KEKStateOK, st.String()
	})

	var events []string
	for _, en := range e.stoppedAuditLog(t, e.auditKey(t)) {
		if en.Kind != audit.KindKEK {
			continue
		}
		if en.Actor != "kek-check" || en.KeySet != "default" {
			t.Errorf("kek entry %+v: want actor kek-check, key set default", en)
		}
		events = append(events, en.Details["event"]+"/"+string(en.Outcome)+"/"+en.Reason)
	}
	if want := "[unavailable/error/KEK_UNAVAILABLE restored/ok/]"; fmt.Sprint(events) != want {
		t.Errorf("kek audit entries %v, want %s", events, want)
	}
}

// TestCollateralLookupMetrics: TDX verifications read their collateral
// through the store; the first reads the offline directory (misses), the
// second is served from memory (hits), and /metrics counts both.
func TestCollateralLookupMetrics(t *testing.T) {
	p := newPlatformEnv(t, time.Now(), 0)
	const missSeries, hitSeries = `kms_collateral_cache_lookups_total{result="miss"}`, `kms_collateral_cache_lookups_total{result="hit"}`
	if miss, hit := p.metricValue(t, missSeries), p.metricValue(t, hitSeries); miss != 0 || hit != 0 {
		t.Fatalf("before any verification: %v misses, %v hits", miss, hit)
	}
	release := func() {
		b := p.bind()
		p.granted(t, b, &kmsv1.Evidence{Type: "tdx", Report: p.tdQuote(t, tdxsim.QuoteFields{Version: 4, MRTD: tdxMRTD, ReportData: b.digest})})
	}
	release()
	misses := p.metricValue(t, missSeries)
	if hits := p.metricValue(t, hitSeries); misses < 1 {
		t.Fatalf("after the first verification: %v misses, %v hits; want the directory read", misses, hits)
	}
	release()
	if miss, hit := p.metricValue(t, missSeries), p.metricValue(t, hitSeries); miss != misses || hit < 1 {
		t.Errorf("after the second verification: %v misses (was %v), %v hits; want only hits", miss, misses, hit)
	}
}
