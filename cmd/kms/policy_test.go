package main

import (
	"context"
	"net"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/types/known/timestamppb"

	kmsv1 "github.com/attested-kms/attested-kms/proto/kms/v1"
)

// policyAdmin serves fixed policy versions (1-based, the last current).
type policyAdmin struct {
	kmsv1.UnimplementedAdminServer
	versions []string
}

func (p *policyAdmin) GetPolicy(_ context.Context, req *kmsv1.GetPolicyRequest) (*kmsv1.GetPolicyResponse, error) {
	v := int(req.GetVersion())
	if v == 0 {
		v = len(p.versions)
	}
	if v < 1 || v > len(p.versions) {
		return nil, status.Error(codes.NotFound, "no such policy version")
	}
	return &kmsv1.GetPolicyResponse{Policy: []byte(p.versions[v-1]), Version: int64(v),
		SetAt: timestamppb.New(time.Date(2026, 3, v, 0, 0, 0, 0, time.UTC))}, nil
}

func servePolicies(t *testing.T, versions ...string) string {
	t.Helper()
	sock := filepath.Join(t.TempDir(), "admin.sock")
	lis, err := net.Listen("unix", sock)
	if err != nil {
		t.Fatal(err)
	}
	srv := grpc.NewServer()
	kmsv1.RegisterAdminServer(srv, &policyAdmin{versions: versions})
	go func() { _ = srv.Serve(lis) }()
	t.Cleanup(srv.Stop)
	return sock
}

func TestPolicyDiff(t *testing.T) {
	v1 := "version: 1\nrules:\n  - name: a\n    x: 1\n    y: 2\n    z: 3\n    w: 4\n    v: 5\n    u: 6\n    t: 7\n    s: 8\n"
	v2 := "version: 1\nrules:\n  - name: b\n    x: 1\n    y: 2\n    z: 3\n    w: 4\n    v: 5\n    u: 6\n    t: 7\n    s: 9\n    r: 0"
	sock := servePolicies(t, v1, v2, v1)
	out, errText, code := run(t, "policy", "diff", "--socket", sock, "--from", "1", "--to", "2")
	want := `--- default/v1	2026-03-01T00:00:00Z
+++ default/v2	2026-03-02T00:00:00Z
@@ -1,6 +1,6 @@
 version: 1
 rules:
-  - name: a
+  - name: b
     x: 1
     y: 2
     z: 3
@@ -8,4 +8,5 @@
     v: 5
     u: 6
     t: 7
-    s: 8
+    s: 9
+    r: 0
\ No newline at end of file
`
	if code != 1 || out != want {
		t.Fatalf("diff 1 2: exit %d (%s)\n%s\nwant\n%s", code, errText, out, want)
	}
	// --to defaults to the current version, equal to 1: no output, exit 0.
	if out, errText, code := run(t, "policy", "diff", "--socket", sock, "--from", "1"); code != 0 || out != "" {
		t.Fatalf("diff 1 current: exit %d %q %q", code, out, errText)
	}
	// Trouble is 2, never 1.
	for _, args := range [][]string{
		{"--from", "9"},
		{"--to", "2"},
		{"--from", "1", "--to", "x"},
		{"--from", "1", "extra"},
	} {
		if _, errText, code := run(t, append([]string{"policy", "diff", "--socket", sock}, args...)...); code != 2 {
			t.Errorf("diff %v: exit %d (%s), want 2", args, code, errText)
		}
	}
}

func TestLineDiff(t *testing.T) {
	render := func(a, b string) string {
		var sb strings.Builder
		writeUnifiedDiff(&sb, "a", "b", a, b)
		return sb.String()
	}
	for _, c := range []struct{ a, b, want string }{
		{"", "", ""},
		{"x\n", "x\n", ""},
		{"", "x\n", "--- a\n+++ b\n@@ -0,0 +1 @@\n+x\n"},
		{"x\n", "", "--- a\n+++ b\n@@ -1 +0,0 @@\n-x\n"},
		{"x\n", "x", "--- a\n+++ b\n@@ -1 +1 @@\n-x\n+x\n\\ No newline at end of file\n"},
		// An LCS keeps the common lines in the middle.
		{"a\nb\nc\nd\n", "b\nx\nd\ne\n", "--- a\n+++ b\n@@ -1,4 +1,4 @@\n-a\n b\n-c\n+x\n d\n+e\n"},
	} {
		if got := render(c.a, c.b); got != c.want {
			t.Errorf("diff %q %q:\n%s\nwant\n%s", c.a, c.b, got, c.want)
		}
	}
	// Past the table bound the middle is replaced wholesale, still a
	// correct diff.
	var a, b strings.Builder
	for i := range 3000 {
		a.WriteString(strings.Repeat("a", i%7) + "\n")
		b.WriteString(strings.Repeat("b", i%5) + "\n")
	}
	ops := lineDiff(splitLines(a.String()), splitLines(b.String()))
	var dels, ins int
	for _, op := range ops {
		switch op.kind {
		case opDelete:
			dels++
		case opInsert:
			ins++
		}
	}
	// Line 0 is empty in both and matched as the common prefix.
	if dels != 2999 || ins != 2999 {
		t.Fatalf("large diff: %d deletions, %d insertions", dels, ins)
	}
}
