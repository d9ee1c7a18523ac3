package keystore_test

import (
	"bytes"
	"context"
	"errors"
	"testing"
	"time"

	"github.com/attested-kms/attested-kms/keystore"
)

// wantVersions checks the history's versions and contents, newest first.
func wantVersions(t *testing.T, got []keystore.PolicyRevision, want ...string) {
	t.Helper()
	if len(got) != len(want) {
		t.Fatalf("%d versions, want %d: %+v", len(got), len(want), got)
	}
	for i, r := range got {
		if v := len(want) - i; r.Version != v || string(r.YAML) != want[i] {
			t.Fatalf("entry %d: v%d %q, want v%d %q", i, r.Version, r.YAML, v, want[i])
		}
	}
}

func TestPolicyHistoryKeptAcrossSetPolicy(t *testing.T) {
	ctx := context.Background()
	e := newEnv(t)
	if _, err := e.m.CreateKeySetWithPolicy(ctx, "default", testSettings, []byte("p1\n")); err != nil {
		t.Fatal(err)
	}
	t1 := t0.Add(time.Hour)
	e.clock.Set(t1)
	if v, err := e.m.SetPolicyAs(ctx, "default", []byte("p2\n"), "CN=alice"); err != nil || v != 2 {
		t.Fatalf("SetPolicyAs = %d, %v", v, err)
	}
	e.clock.Set(t1.Add(time.Hour))
	if v, err := e.m.SetPolicy(ctx, "default", []byte("p3\n")); err != nil || v != 3 {
		t.Fatalf("SetPolicy = %d, %v", v, err)
	}
	// A fresh Manager reads it all back from the store.
	hist, err := e.manager(e.kek).PolicyHistory(ctx, "default")
	if err != nil {
		t.Fatal(err)
	}
	wantVersions(t, hist, "p3\n", "p2\n", "p1\n")
	if !hist[2].Set.Equal(t0) || !hist[1].Set.Equal(t1) || hist[1].SetBy != "CN=alice" || hist[0].SetBy != "" || hist[2].SetBy != "" {
		t.Fatalf("times or authors: %+v", hist)
	}
	rev, err := e.m.Policy(ctx, "default", 2)
	if err != nil || string(rev.YAML) != "p2\n" || rev.SetBy != "CN=alice" {
		t.Fatalf("Policy(2) = %+v, %v", rev, err)
	}
	if cur, err := e.m.Policy(ctx, "default", 0); err != nil || cur.Version != 3 {
		t.Fatalf("Policy(0) = %+v, %v", cur, err)
	}
	for _, v := range []int{4, -1} {
		if _, err := e.m.Policy(ctx, "default", v); !errors.Is(err, keystore.ErrPolicyVersionNotFound) {
			t.Errorf("Policy(%d): %v", v, err)
		}
	}
	// A returned key set is a deep copy: changing its history changes
	// nothing stored.
	ks, err := e.m.KeySet(ctx, "default")
	if err != nil {
		t.Fatal(err)
	}
	c := ks.Clone()
	c.PolicyHistory[0].YAML[0] = 'X'
	if ks.PolicyHistory[0].YAML[0] != 'p' {
		t.Fatal("Clone shares the history's YAML")
	}
}

func TestRollbackPolicyAddsVersion(t *testing.T) {
	ctx := context.Background()
	e := newEnv(t)
	if _, err := e.m.CreateKeySetWithPolicy(ctx, "default", testSettings, []byte("p1\n")); err != nil {
		t.Fatal(err)
	}
	if _, err := e.m.SetPolicy(ctx, "default", []byte("p2\n")); err != nil {
		t.Fatal(err)
	}
	v, err := e.m.RollbackPolicy(ctx, "default", 1, "CN=bob")
	if err != nil || v != 3 {
		t.Fatalf("RollbackPolicy = %d, %v", v, err)
	}
	ks, err := e.m.KeySet(ctx, "default")
	if err != nil {
		t.Fatal(err)
	}
	// The new version serves the old content; nothing earlier changed.
	if ks.PolicyVersion != 3 || string(ks.Policy) != "p1\n" || ks.PolicyRollbackOf != 1 || ks.PolicySetBy != "CN=bob" {
		t.Fatalf("current policy after rollback: %+v", ks)
	}
	wantVersions(t, ks.PolicyVersions(), "p1\n", "p2\n", "p1\n")
	if ks.PolicyHistory[0].RollbackOf != 0 || ks.PolicyHistory[1].RollbackOf != 0 {
		t.Fatalf("earlier versions rewritten: %+v", ks.PolicyHistory)
	}
	if _, err := e.m.RollbackPolicy(ctx, "default", 9, ""); !errors.Is(err, keystore.ErrPolicyVersionNotFound) {
		t.Fatalf("rollback to a missing version: %v", err)
	}
	if _, err := e.m.RollbackPolicy(ctx, "nope", 1, ""); !errors.Is(err, keystore.ErrKeySetNotFound) {
		t.Fatalf("rollback of a missing set: %v", err)
	}
	if after, _ := e.m.KeySet(ctx, "default"); after.PolicyVersion != 3 {
		t.Fatalf("failed rollbacks wrote version %d", after.PolicyVersion)
	}
}

// racingStore lets another writer change the key set between the
// Manager's read and its compare-and-swap write, once.
type racingStore struct {
	keystore.Store
	race func()
}

func (r *racingStore) UpdateKeySet(ctx context.Context, ks *keystore.KeySet) error {
	if f := r.race; f != nil {
		r.race = nil
		f()
	}
	return r.Store.UpdateKeySet(ctx, ks)
}

// Two replicas setting policies at once: the loser gets ErrConflict and
// writes nothing, and the winner's version is kept, not overwritten.
func TestPolicyHistoryCompareAndSwap(t *testing.T) {
	ctx := context.Background()
	e := newEnv(t)
	if _, err := e.m.CreateKeySetWithPolicy(ctx, "default", testSettings, []byte("p1\n")); err != nil {
		t.Fatal(err)
	}
	other := e.manager(e.kek)
	rs := &racingStore{Store: e.store}
	mine := keystore.NewManager(rs, e.kek, keystore.Options{Now: e.clock.Now})
	for name, write := range map[string]func() (int, error){
		"SetPolicy":      func() (int, error) { return mine.SetPolicy(ctx, "default", []byte("mine\n")) },
		"RollbackPolicy": func() (int, error) { return mine.RollbackPolicy(ctx, "default", 1, "") },
	} {
		before, err := e.m.PolicyHistory(ctx, "default")
		if err != nil {
			t.Fatal(err)
		}
		rs.race = func() {
			if _, err := other.SetPolicy(ctx, "default", []byte("theirs-"+name+"\n")); err != nil {
				t.Error(err)
			}
		}
		if _, err := write(); !errors.Is(err, keystore.ErrConflict) {
			t.Fatalf("%s racing another replica: %v, want ErrConflict", name, err)
		}
		after, err := e.m.PolicyHistory(ctx, "default")
		if err != nil {
			t.Fatal(err)
		}
		if len(after) != len(before)+1 || string(after[0].YAML) != "theirs-"+name+"\n" {
			t.Fatalf("%s: history after the race: %+v", name, after)
		}
	}
	// Retried after the conflict, the write lands on top.
	if v, err := mine.SetPolicy(ctx, "default", []byte("mine\n")); err != nil || v != 4 {
		t.Fatalf("retry: %d, %v", v, err)
	}
}

func TestPolicyHistoryBounded(t *testing.T) {
	ctx := context.Background()
	e := newEnv(t)
	big := bytes.Repeat([]byte("a"), keystore.MaxPolicyHistorySize/2)
	if _, err := e.m.CreateKeySetWithPolicy(ctx, "default", testSettings, big); err != nil {
		t.Fatal(err)
	}
	if _, err := e.m.SetPolicy(ctx, "default", big); err != nil {
		t.Fatalf("history exactly at the bound: %v", err)
	}
	if _, err := e.m.SetPolicy(ctx, "default", []byte("x")); !errors.Is(err, keystore.ErrPolicyHistoryFull) {
		t.Fatalf("past the bound: %v", err)
	}
	if _, err := e.m.RollbackPolicy(ctx, "default", 1, ""); !errors.Is(err, keystore.ErrPolicyHistoryFull) {
		t.Fatalf("rollback past the bound: %v", err)
	}
	hist, err := e.m.PolicyHistory(ctx, "default")
	if err != nil || len(hist) != 2 {
		t.Fatalf("refused writes changed the history: %d versions, %v", len(hist), err)
	}
}

func TestCheckPolicyHistory(t *testing.T) {
	for name, c := range map[string]struct {
		current  int
		versions []int
		ok       bool
	}{
		"empty":             {0, nil, true},
		"ordered":           {3, []int{1, 2}, true},
		"gaps are legal":    {5, []int{1, 3}, true},
		"duplicate":         {3, []int{1, 1}, false},
		"out of order":      {3, []int{2, 1}, false},
		"not below current": {2, []int{1, 2}, false},
		"zero":              {2, []int{0}, false},
	} {
		ks := &keystore.KeySet{Name: "s", PolicyVersion: c.current}
		for _, v := range c.versions {
			ks.PolicyHistory = append(ks.PolicyHistory, keystore.PolicyRevision{Version: v})
		}
		if err := ks.CheckPolicyHistory(); (err == nil) != c.ok {
			t.Errorf("%s: %v", name, err)
		}
	}
}
