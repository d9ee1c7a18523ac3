package main

import (
	"context"
	"fmt"
	"io"
	"strings"
	"text/tabwriter"

	"github.com/spf13/cobra"

	kmsv1 "github.com/attested-kms/attested-kms/proto/kms/v1"
)

// withPolicyVersion gives `kms policy get` a --version flag (0, the
// default, is the current policy). It replaces get's RunE so the command
// keeps its flags, output and registration in newPolicyCmd.
func withPolicyVersion(get *cobra.Command, a *adminFlags, keyset *string) *cobra.Command {
	var version int64
	get.Short = "Print the key set's current policy, or an earlier version"
	get.Flags().Int64Var(&version, "version", 0, "policy version to print (default: the current one)")
	get.RunE = func(cmd *cobra.Command, _ []string) error {
		return a.run(cmd, func(ctx context.Context, c kmsv1.AdminClient) error {
			resp, err := c.GetPolicy(ctx, &kmsv1.GetPolicyRequest{Keyset: *keyset, Version: version})
			if err != nil {
				return err
			}
			if a.output == "json" {
				return printJSON(cmd.OutOrStdout(), resp)
			}
			fmt.Fprintf(cmd.OutOrStdout(), "# key set %s, policy version %d\n%s", *keyset, resp.GetVersion(), resp.GetPolicy())
			return nil
		})
	}
	return get
}

// policyCommand is an admin command of `kms policy` with its own
// connection flags and --keyset.
func policyCommand(use, short string, a *adminFlags, keyset *string) *cobra.Command {
	cmd := &cobra.Command{Use: use, Short: short, Args: cobra.NoArgs}
	a.register(cmd)
	cmd.Flags().StringVar(keyset, "keyset", "default", "key set")
	return cmd
}

// newPolicyHistoryCmd is `kms policy history`: every version, newest first.
func newPolicyHistoryCmd() *cobra.Command {
	a := &adminFlags{}
	var keyset string
	cmd := policyCommand("history", "List every policy version of the key set, newest first", a, &keyset)
	cmd.RunE = func(cmd *cobra.Command, _ []string) error {
		return a.run(cmd, func(ctx context.Context, c kmsv1.AdminClient) error {
			resp, err := c.GetPolicyHistory(ctx, &kmsv1.GetPolicyHistoryRequest{Keyset: keyset})
			if err != nil {
				return err
			}
			if a.output == "json" {
				return printJSON(cmd.OutOrStdout(), resp)
			}
			tw := tabwriter.NewWriter(cmd.OutOrStdout(), 0, 4, 2, ' ', 0)
			fmt.Fprintln(tw, "VERSION\tSET AT\tSET BY\tSIZE\tNOTE")
			for _, v := range resp.GetVersions() {
				by := v.GetSetBy()
				if by == "" {
					by = "-"
				}
				var notes []string
				if v.GetCurrent() {
					notes = append(notes, "current")
				}
				if v.GetRollbackOf() != 0 {
					notes = append(notes, fmt.Sprintf("rollback to v%d", v.GetRollbackOf()))
				}
				fmt.Fprintf(tw, "%d\t%s\t%s\t%d\t%s\n", v.GetVersion(), ts(v.GetSetAt()), by, v.GetSizeBytes(), strings.Join(notes, ", "))
			}
			return tw.Flush()
		})
	}
	return cmd
}

// newPolicyRollbackCmd is `kms policy rollback --to N`.
func newPolicyRollbackCmd() *cobra.Command {
	a := &adminFlags{}
	var keyset string
	var to int64
	cmd := policyCommand("rollback", "Make an earlier policy version's content the new current version", a, &keyset)
	cmd.Long = `rollback sets a NEW policy version whose content is that of version --to.
The history is never rewritten: "kms policy history" shows the new version
as a rollback. The server validates the old document as it validates "kms
policy set".`
	cmd.Flags().Int64Var(&to, "to", 0, "policy version whose content to restore (required)")
	_ = cmd.MarkFlagRequired("to")
	cmd.RunE = func(cmd *cobra.Command, _ []string) error {
		return a.run(cmd, func(ctx context.Context, c kmsv1.AdminClient) error {
			resp, err := c.RollbackPolicy(ctx, &kmsv1.RollbackPolicyRequest{Keyset: keyset, Version: to})
			if err != nil {
				return err
			}
			if a.output == "json" {
				return printJSON(cmd.OutOrStdout(), resp)
			}
			fmt.Fprintf(cmd.OutOrStdout(), "key set %s: policy version %d (content of version %d)\n", keyset, resp.GetVersion(), to)
			return nil
		})
	}
	return cmd
}

// newPolicyDiffCmd is `kms policy diff --from N --to M`.
func newPolicyDiffCmd() *cobra.Command {
	a := &adminFlags{}
	var keyset string
	var from, to int64
	cmd := policyCommand("diff", "Show how two policy versions differ (unified diff)", a, &keyset)
	cmd.Long = `diff prints a unified diff of the YAML of two policy versions of the key
set, computed locally from the two documents. --to defaults to the current
version.

Exit status, as diff(1): 0 the versions are identical (nothing is printed),
1 they differ, 2 trouble (connection, unknown version, bad flags).`
	cmd.Flags().Int64Var(&from, "from", 0, "older policy version (required)")
	cmd.Flags().Int64Var(&to, "to", 0, "newer policy version (default: the current one)")
	// Usage errors exit 2, not cobra's 1, which here means "different".
	cmd.SetFlagErrorFunc(func(_ *cobra.Command, err error) error { return &exitError{code: 2, err: err} })
	cmd.Args = func(cmd *cobra.Command, args []string) error {
		if err := cobra.NoArgs(cmd, args); err != nil {
			return &exitError{code: 2, err: err}
		}
		return nil
	}
	cmd.RunE = func(cmd *cobra.Command, _ []string) error {
		// --from is checked here rather than marked required, for the exit
		// status; --from 0 would silently mean "current"; only --to has a default.
		if from <= 0 || to < 0 {
			return &exitError{code: 2, err: fmt.Errorf("--from must be a policy version (1 or more), --to a version or 0 for the current one")}
		}
		var differ bool
		err := a.run(cmd, func(ctx context.Context, c kmsv1.AdminClient) error {
			older, err := c.GetPolicy(ctx, &kmsv1.GetPolicyRequest{Keyset: keyset, Version: from})
			if err != nil {
				return fmt.Errorf("version %d: %w", from, err)
			}
			newer, err := c.GetPolicy(ctx, &kmsv1.GetPolicyRequest{Keyset: keyset, Version: to})
			if err != nil {
				return fmt.Errorf("version %d: %w", to, err)
			}
			differ = writeUnifiedDiff(cmd.OutOrStdout(),
				fmt.Sprintf("%s/v%d\t%s", keyset, older.GetVersion(), ts(older.GetSetAt())),
				fmt.Sprintf("%s/v%d\t%s", keyset, newer.GetVersion(), ts(newer.GetSetAt())),
				string(older.GetPolicy()), string(newer.GetPolicy()))
			return nil
		})
		switch {
		case err != nil:
			// 1 means "different": trouble must not look like it.
			return &exitError{code: 2, err: err}
		case differ:
			return &exitError{code: 1, err: fmt.Errorf("key set %s: policy versions differ", keyset)}
		}
		return nil
	}
	return cmd
}

// diffContext is the number of unchanged lines shown around each change,
// as diff -u.
const diffContext = 3

// writeUnifiedDiff writes the unified diff of a and b (nothing if they are
// equal) and reports whether they differ.
func writeUnifiedDiff(w io.Writer, fromName, toName, a, b string) bool {
	la, lb := splitLines(a), splitLines(b)
	ops := lineDiff(la, lb)
	if !hasChange(ops) {
		return false
	}
	fmt.Fprintf(w, "--- %s\n+++ %s\n", fromName, toName)
	for _, h := range hunks(ops, diffContext) {
		var na, nb int
		for _, op := range h {
			if op.kind != opInsert {
				na++
			}
			if op.kind != opDelete {
				nb++
			}
		}
		fmt.Fprintf(w, "@@ -%s +%s @@\n", hunkRange(h[0].a, na), hunkRange(h[0].b, nb))
		for _, op := range h {
			line := ""
			switch op.kind {
			case opEqual, opDelete:
				line = la[op.a]
			case opInsert:
				line = lb[op.b]
			}
			fmt.Fprintf(w, "%c%s", op.kind, line)
			if !strings.HasSuffix(line, "\n") {
				fmt.Fprint(w, "\n\\ No newline at end of file\n")
			}
		}
	}
	return true
}

// hunkRange formats a hunk's side: 1-based start and count, as diff -u
// (a count of 1 is left out; an empty side names the line before it).
func hunkRange(start, count int) string {
	switch count {
	case 0:
		return fmt.Sprintf("%d,0", start)
	case 1:
		return fmt.Sprintf("%d", start+1)
	}
	return fmt.Sprintf("%d,%d", start+1, count)
}

// splitLines splits s after each newline; a last line without one keeps
// none, so "a" and "a\n" differ as they do for diff(1).
func splitLines(s string) []string {
	if s == "" {
		return nil
	}
	lines := strings.SplitAfter(s, "\n")
	if lines[len(lines)-1] == "" {
		lines = lines[:len(lines)-1]
	}
	return lines
}

// Edit operations of a line diff; the values are their unified-diff
// prefixes.
const (
	opEqual  = ' '
	opDelete = '-'
	opInsert = '+'
)

// diffOp is one line of the edit script: kind, and the positions in a
// and b where it applies (the line's index for the sides it reads).
type diffOp struct {
	kind byte
	a, b int
}

// maxDiffCells bounds the LCS table (4 bytes a cell). Policies are small;
// past the bound the changed middle is shown as removed then added, which
// is still a correct diff, only not a minimal one.
const maxDiffCells = 4 << 20

// lineDiff returns an edit script turning a into b: the common prefix and
// suffix are matched directly, and the middle by a longest common
// subsequence of lines.
func lineDiff(a, b []string) []diffOp {
	pre := 0
	for pre < len(a) && pre < len(b) && a[pre] == b[pre] {
		pre++
	}
	suf := 0
	for suf < len(a)-pre && suf < len(b)-pre && a[len(a)-1-suf] == b[len(b)-1-suf] {
		suf++
	}
	ops := make([]diffOp, 0, len(a)+len(b))
	for i := range pre {
		ops = append(ops, diffOp{opEqual, i, i})
	}
	ma, mb := a[pre:len(a)-suf], b[pre:len(b)-suf]
	n, m := len(ma), len(mb)
	if n*m > maxDiffCells {
		for i := range n {
			ops = append(ops, diffOp{opDelete, pre + i, pre})
		}
		for j := range m {
			ops = append(ops, diffOp{opInsert, pre + n, pre + j})
		}
	} else {
		// lcs[i*(m+1)+j] is the LCS length of ma[i:] and mb[j:].
		lcs := make([]int32, (n+1)*(m+1))
		at := func(i, j int) int32 { return lcs[i*(m+1)+j] }
		for i := n - 1; i >= 0; i-- {
			for j := m - 1; j >= 0; j-- {
				if ma[i] == mb[j] {
					lcs[i*(m+1)+j] = at(i+1, j+1) + 1
				} else {
					lcs[i*(m+1)+j] = max(at(i+1, j), at(i, j+1))
				}
			}
		}
		i, j := 0, 0
		for i < n || j < m {
			switch {
			case i < n && j < m && ma[i] == mb[j]:
				ops = append(ops, diffOp{opEqual, pre + i, pre + j})
				i, j = i+1, j+1
			case j == m || (i < n && at(i+1, j) >= at(i, j+1)):
				ops = append(ops, diffOp{opDelete, pre + i, pre + j})
				i++
			default:
				ops = append(ops, diffOp{opInsert, pre + i, pre + j})
				j++
			}
		}
	}
	for k := range suf {
		ops = append(ops, diffOp{opEqual, len(a) - suf + k, len(b) - suf + k})
	}
	return ops
}

func hasChange(ops []diffOp) bool {
	for _, op := range ops {
		if op.kind != opEqual {
			return true
		}
	}
	return false
}

// hunks cuts the edit script into unified-diff hunks: each change with up
// to context unchanged lines around it, merging changes whose gap would
// otherwise be shown twice.
func hunks(ops []diffOp, context int) [][]diffOp {
	var out [][]diffOp
	for i := 0; i < len(ops); {
		if ops[i].kind == opEqual {
			i++
			continue
		}
		// Changes more than 2*context apart are in separate hunks, so this
		// start is past the previous hunk's end.
		start := max(i-context, 0)
		end := i // one past the last change in the hunk
		for j := i; j < len(ops); j++ {
			if ops[j].kind != opEqual {
				end = j + 1
			} else if j-end >= 2*context {
				break
			}
		}
		stop := min(end+context, len(ops))
		out = append(out, ops[start:stop])
		i = stop
	}
	return out
}
