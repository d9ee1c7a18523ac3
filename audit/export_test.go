package audit_test

import (
	"bytes"
	"crypto/ed25519"
	"errors"
	"io"
	"reflect"
	"strings"
	"testing"

	"github.com/attested-kms/attested-kms/audit"
)

// An export read back gives the same entries and checkpoints, verifies, and
// interleaves each checkpoint right after its entry.
func TestExportRoundTrip(t *testing.T) {
	m, key := buildLog(t, 250, 100)
	es, cps := contents(t, m)
	var buf bytes.Buffer
	n, err := audit.Export(&buf, seqOf(es), cps)
	if err != nil || n != 250 {
		t.Fatalf("Export = %d, %v", n, err)
	}
	lines := strings.Split(strings.TrimSuffix(buf.String(), "\n"), "\n")
	if len(lines) != 252 || !strings.HasPrefix(lines[100], `{"record":"checkpoint","seq":100,`) {
		t.Fatalf("%d lines, line 101 = %.60s", len(lines), lines[100])
	}
	if !strings.HasPrefix(lines[0], `{"record":"entry","seq":1,"time":"2026-03-01T12:00:00.124456789Z","kind":"release",`) {
		t.Fatalf("first line %s", lines[0])
	}

	gotCPs, err := audit.ReadCheckpoints(bytes.NewReader(buf.Bytes()))
	if err != nil || !reflect.DeepEqual(gotCPs, cps) {
		t.Fatalf("ReadCheckpoints = %+v, %v; want %+v", gotCPs, err, cps)
	}
	var got []audit.Entry
	for e, err := range audit.Entries(bytes.NewReader(buf.Bytes())) {
		if err != nil {
			t.Fatal(err)
		}
		got = append(got, e)
	}
	if !reflect.DeepEqual(got, es) {
		t.Fatal("entries read back differ from those exported")
	}
	res, err := audit.Verify(audit.Entries(bytes.NewReader(buf.Bytes())), gotCPs, key.Public().(ed25519.PublicKey))
	if err != nil || res.Entries != 250 || res.LastCheckpoint != 200 {
		t.Fatalf("Verify(export) = %+v, %v", res, err)
	}
}

// Lines that say the same thing differently to a lenient JSON reader are
// refused, so a SIEM and the verifier always read the same values.
func TestParseLineStrict(t *testing.T) {
	m, _ := buildLog(t, 1, 100)
	es, _ := contents(t, m)
	good, err := audit.MarshalEntry(&es[0])
	if err != nil {
		t.Fatal(err)
	}
	if _, err := audit.ParseLine(good); err != nil {
		t.Fatalf("own line refused: %v", err)
	}
	s := string(good)
	for name, line := range map[string]string{
		"duplicate key":  strings.Replace(s, `"outcome":"granted"`, `"outcome":"denied","outcome":"granted"`, 1),
		"key case":       strings.Replace(s, `"outcome"`, `"Outcome"`, 1),
		"unknown field":  strings.Replace(s, `"record":"entry"`, `"record":"entry","override":"x"`, 1),
		"whitespace":     strings.Replace(s, `,"kind"`, `, "kind"`, 1),
		"null details":   strings.Replace(s, `"details":{"platform":"sev-snp","request":"0"}`, `"details":null`, 1),
		"time zone":      strings.Replace(s, `12:00:00.124456789Z`, `13:00:00.124456789+01:00`, 1),
		"upper hex":      strings.Replace(s, es[0].Hash.String(), strings.ToUpper(es[0].Hash.String()), 1),
		"unknown record": strings.Replace(s, `"record":"entry"`, `"record":"note"`, 1),
		"not json":       "seq=1",
		"empty":          "",
	} {
		if line == s {
			t.Fatalf("%s: test line is unchanged", name)
		}
		if _, err := audit.ParseLine([]byte(line)); !errors.Is(err, audit.ErrMalformed) {
			t.Errorf("%s: ParseLine = %v, want ErrMalformed", name, err)
		}
	}
}

func TestDecoderNamesLine(t *testing.T) {
	m, _ := buildLog(t, 2, 100)
	es, cps := contents(t, m)
	var buf bytes.Buffer
	if _, err := audit.Export(&buf, seqOf(es), cps); err != nil {
		t.Fatal(err)
	}
	buf.WriteString("{\"record\":\"entry\"}\n")
	d := audit.NewDecoder(&buf)
	for range 2 {
		if _, err := d.Next(); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := d.Next(); !errors.Is(err, audit.ErrMalformed) || !strings.Contains(err.Error(), "line 3") {
		t.Fatalf("Next = %v, want ErrMalformed naming line 3", err)
	}
	if _, err := audit.NewDecoder(strings.NewReader("")).Next(); err != io.EOF {
		t.Fatalf("empty input: %v, want io.EOF", err)
	}
	long := strings.Repeat("x", audit.MaxLineBytes+1)
	if _, err := audit.NewDecoder(strings.NewReader(long)).Next(); !errors.Is(err, audit.ErrMalformed) {
		t.Fatalf("overlong line: %v, want ErrMalformed", err)
	}
}

// FuzzParseLine: no input panics, and whatever parses re-encodes to exactly
// the input and parses again to the same record.
func FuzzParseLine(f *testing.F) {
	m, _ := buildLog(f, 3, 3)
	es, cps := contents(f, m)
	for i := range es {
		b, _ := audit.MarshalEntry(&es[i])
		f.Add(b)
	}
	b, _ := audit.MarshalCheckpoint(&cps[0])
	f.Add(b)
	f.Add([]byte(`{"record":"entry","seq":1}`))
	f.Add([]byte(`{"record":"checkpoint","signature":"!!"}`))
	f.Fuzz(func(t *testing.T, line []byte) {
		rec, err := audit.ParseLine(line)
		if err != nil {
			if !errors.Is(err, audit.ErrMalformed) {
				t.Fatalf("error %v does not wrap ErrMalformed", err)
			}
			return
		}
		var out []byte
		switch {
		case rec.Entry != nil && rec.Checkpoint == nil:
			out, err = audit.MarshalEntry(rec.Entry)
		case rec.Checkpoint != nil && rec.Entry == nil:
			out, err = audit.MarshalCheckpoint(rec.Checkpoint)
		default:
			t.Fatalf("record %+v has not exactly one part", rec)
		}
		if err != nil || !bytes.Equal(out, line) {
			t.Fatalf("re-encoding %q gave %q, %v", line, out, err)
		}
		again, err := audit.ParseLine(out)
		if err != nil || !reflect.DeepEqual(again, rec) {
			t.Fatalf("second parse = %+v, %v; want %+v", again, err, rec)
		}
	})
}
