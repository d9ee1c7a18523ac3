package main

import (
	"context"
	"crypto/ed25519"
	"crypto/x509"
	"encoding/pem"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/attested-kms/attested-kms/audit"
	"github.com/attested-kms/attested-kms/audit/boltaudit"
)

// auditFixture writes a bbolt audit log of n entries (checkpoint every 10)
// and the audit public key as PEM; it returns their paths.
func auditFixture(t *testing.T, n int) (dbPath, pubPath string) {
	t.Helper()
	dir := t.TempDir()
	dbPath, pubPath = filepath.Join(dir, "kms.db"), filepath.Join(dir, "audit.pub")
	b, err := boltaudit.Open(dbPath, false)
	if err != nil {
		t.Fatal(err)
	}
	defer b.Close()
	key := ed25519.NewKeyFromSeed(make([]byte, ed25519.SeedSize))
	l, err := audit.New(context.Background(), b, key, audit.Options{CheckpointEvery: 10})
	if err != nil {
		t.Fatal(err)
	}
	for i := range n {
		e := audit.Entry{Kind: audit.KindRelease, Actor: fmt.Sprintf("sub-%d", i), KeySet: "default",
			KID: fmt.Sprintf("%016x", i), Outcome: audit.OutcomeDenied, Reason: "policy: measurement"}
		if i == n-1 {
			e.Reason = "bidi \u202e and escape \x1b[2J"
		}
		if _, err := l.Append(context.Background(), e); err != nil {
			t.Fatal(err)
		}
	}
	der, err := x509.MarshalPKIXPublicKey(key.Public())
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(pubPath, pem.EncodeToMemory(&pem.Block{Type: "PUBLIC KEY", Bytes: der}), 0o600); err != nil {
		t.Fatal(err)
	}
	return dbPath, pubPath
}

func exportLog(t *testing.T, dbPath string, extra ...string) (string, []string) {
	t.Helper()
	out := filepath.Join(t.TempDir(), "audit.jsonl")
	stdout, errText, code := run(t, append([]string{"audit", "export", "--db", dbPath, "-o", out}, extra...)...)
	if code != 0 {
		t.Fatalf("export: exit %d: %s", code, errText)
	}
	if !strings.HasPrefix(stdout, "audit: exported ") {
		t.Fatalf("export printed %q", stdout)
	}
	data, err := os.ReadFile(out)
	if err != nil {
		t.Fatal(err)
	}
	return out, strings.SplitAfter(strings.TrimSuffix(string(data), "\n"), "\n")
}

func writeLines(t *testing.T, lines []string) string {
	t.Helper()
	p := filepath.Join(t.TempDir(), "tampered.jsonl")
	if err := os.WriteFile(p, []byte(strings.TrimSuffix(strings.Join(lines, ""), "\n")+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	return p
}

// Exported and bbolt logs verify with the exact success line.
func TestAuditVerifyOK(t *testing.T) {
	dbPath, pubPath := auditFixture(t, 25)
	exported, lines := exportLog(t, dbPath)
	if len(lines) != 27 {
		t.Fatalf("export has %d lines, want 25 entries + 2 checkpoints", len(lines))
	}
	for _, p := range []string{exported, dbPath} {
		out, errText, code := run(t, "audit", "verify", "--log", p, "--public-key", pubPath)
		if code != 0 || out != "audit: ok 25 entries, last checkpoint at seq 20\n" {
			t.Fatalf("verify %s: exit %d, %q %q", filepath.Base(p), code, out, errText)
		}
	}
	// A partial export starting after a checkpoint carries its anchor.
	partial, lines := exportLog(t, dbPath, "--from", "11")
	if len(lines) != 17 || !strings.HasPrefix(lines[0], `{"record":"checkpoint","seq":10,`) {
		t.Fatalf("partial export: %d lines, first %.40q", len(lines), lines[0])
	}
	if out, errText, code := run(t, "audit", "verify", "--log", partial, "--public-key", pubPath); code != 0 || out != "audit: ok 15 entries, last checkpoint at seq 20\n" {
		t.Fatalf("verify partial: exit %d, %q %q", code, out, errText)
	}
}

// Each kind of tampering with an export exits 2 with one line naming the
// first bad entry.
func TestAuditVerifyTampered(t *testing.T) {
	dbPath, pubPath := auditFixture(t, 25)
	_, lines := exportLog(t, dbPath)
	// lines: entries 1..10 at 0..9, checkpoint 10 at 10, entries 11..20 at
	// 11..20, checkpoint 20 at 21, entries 21..25 at 22..26.
	altered := append([]string(nil), lines...)
	altered[5] = strings.Replace(altered[5], `"outcome":"denied"`, `"outcome":"granted"`, 1)
	swapped := append([]string(nil), lines...)
	swapped[12], swapped[13] = swapped[13], swapped[12]
	forged := append([]string(nil), lines...)
	i := strings.Index(forged[21], `"signature":"`) + len(`"signature":"`)
	flip := map[byte]string{'A': "B"}[forged[21][i]]
	if flip == "" {
		flip = "A"
	}
	forged[21] = forged[21][:i] + flip + forged[21][i+1:]
	for name, c := range map[string]struct {
		lines []string
		want  string
	}{
		"altered":   {altered, "audit: seq 6 altered: "},
		"removed":   {append(append([]string(nil), lines[:14]...), lines[15:]...), "audit: seq 14 removed: "},
		"reordered": {swapped, "audit: seq 13 reordered: "},
		// Entries 13 on cut off, the checkpoint at 20 left in place (as the
		// bbolt file's checkpoint bucket or a SIEM keeps it).
		"truncated": {append(append([]string(nil), lines[:13]...), lines[21]), "audit: seq 13 truncated: "},
		"forged":    {forged, "audit: seq 20 bad checkpoint: "},
		"malformed": {append([]string{"{\"record\":\"entry\",\"seq\":1}\n"}, lines...), "audit: line 1: "},
	} {
		t.Run(name, func(t *testing.T) {
			out, errText, code := run(t, "audit", "verify", "--log", writeLines(t, c.lines), "--public-key", pubPath)
			if code != 2 || out != "" || !strings.HasPrefix(errText, c.want) || strings.Contains(errText, "\n") {
				t.Fatalf("exit %d, stdout %q, error %q; want exit 2 and one line starting %q", code, out, errText, c.want)
			}
		})
	}
}

// tail shows the newest entries, in table form without control characters.
func TestAuditTail(t *testing.T) {
	dbPath, _ := auditFixture(t, 25)
	out, errText, code := run(t, "audit", "tail", "--db", dbPath, "-n", "3")
	if code != 0 {
		t.Fatalf("tail: exit %d: %s", code, errText)
	}
	rows := strings.Split(strings.TrimSuffix(out, "\n"), "\n")
	if len(rows) != 4 || !strings.HasPrefix(rows[0], "SEQ") || !strings.HasPrefix(rows[1], "23 ") || !strings.HasPrefix(rows[3], "25 ") {
		t.Fatalf("tail table:\n%s", out)
	}
	if strings.ContainsAny(out, "\x1b\u202e") || !strings.Contains(rows[3], "bidi ? and escape ?[2J") {
		t.Fatalf("control characters reached the table: %q", rows[3])
	}

	out, _, code = run(t, "audit", "tail", "--db", dbPath, "-n", "100", "-o", "json")
	lines := strings.Split(strings.TrimSuffix(out, "\n"), "\n")
	if code != 0 || len(lines) != 25 {
		t.Fatalf("tail json: exit %d, %d lines", code, len(lines))
	}
	for i, l := range lines {
		rec, err := audit.ParseLine([]byte(l))
		if err != nil || rec.Entry == nil || rec.Entry.Seq != uint64(i+1) {
			t.Fatalf("line %d: %v", i+1, err)
		}
	}
	if _, errText, code := run(t, "audit", "tail", "--db", dbPath, "-o", "yaml"); code != 1 || !strings.Contains(errText, "table or json") {
		t.Fatalf("bad format: exit %d, %q", code, errText)
	}
}

// Reading never creates a database, and a missing key file is a usage
// error (exit 1), not a verdict on the log.
func TestAuditMissingFiles(t *testing.T) {
	dir := t.TempDir()
	missing := filepath.Join(dir, "none.db")
	if _, _, code := run(t, "audit", "tail", "--db", missing); code != 1 {
		t.Fatalf("tail of a missing file: exit %d, want 1", code)
	}
	if _, err := os.Stat(missing); !os.IsNotExist(err) {
		t.Fatal("tail created the database file")
	}
	dbPath, _ := auditFixture(t, 1)
	if _, errText, code := run(t, "audit", "verify", "--log", dbPath, "--public-key", missing); code != 1 || errText == "" {
		t.Fatalf("verify without key file: exit %d, %q", code, errText)
	}
}
