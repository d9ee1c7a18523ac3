package audit_test

import (
	"context"
	"crypto"
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/sha256"
	"encoding/binary"
	"errors"
	"io"
	"sync"
	"testing"
	"time"

	"github.com/attested-kms/attested-kms/audit"
	"github.com/attested-kms/attested-kms/audit/audittest"
)

func TestMemoryBackendContract(t *testing.T) {
	audittest.Run(t, func(*testing.T) audit.Backend { return audit.NewMemory() })
}

// The hash is exactly the encoding doc.go defines, built here by hand.
func TestEntryHashEncoding(t *testing.T) {
	e := audit.Entry{
		Seq: 7, Time: time.Unix(1767225600, 42).UTC(), Kind: audit.KindRelease, Actor: "sub",
		KeySet: "default", KID: "0a1b2c3d4e5f6071", Outcome: audit.OutcomeGranted, Reason: "",
		ClaimsDigest: "", Details: map[string]string{"z": "1", "a": "22"},
	}
	e.PrevHash[0] = 0xff
	var b []byte
	str := func(s string) { b = binary.BigEndian.AppendUint32(b, uint32(len(s))); b = append(b, s...) }
	b = append(b, "attested-kms/v1 audit entry\x00"...)
	b = binary.BigEndian.AppendUint64(b, 7)
	b = binary.BigEndian.AppendUint64(b, 1767225600)
	b = binary.BigEndian.AppendUint32(b, 42)
	for _, s := range []string{"release", "sub", "default", "0a1b2c3d4e5f6071", "granted", "", ""} {
		str(s)
	}
	b = binary.BigEndian.AppendUint32(b, 2)
	str("a")
	str("22")
	str("z")
	str("1")
	str(string(e.PrevHash[:]))
	if got, want := e.ComputeHash(), audit.Hash(sha256.Sum256(b)); got != want {
		t.Fatalf("ComputeHash = %s, want %s", got, want)
	}
	// The time zone is not hashed; the instant is.
	local := e
	local.Time = e.Time.In(time.FixedZone("x", 3600))
	if local.ComputeHash() != e.ComputeHash() {
		t.Fatal("hash depends on the time zone")
	}
}

// Length prefixes keep field boundaries: moving bytes between adjacent
// fields, or between a detail's key and value, changes the hash.
func TestEntryHashFieldBoundaries(t *testing.T) {
	a := audit.Entry{Actor: "ab", KeySet: "c", Details: map[string]string{"k": "vv"}}
	for name, b := range map[string]audit.Entry{
		"actor/keyset":    {Actor: "a", KeySet: "bc", Details: map[string]string{"k": "vv"}},
		"detail key/val":  {Actor: "ab", KeySet: "c", Details: map[string]string{"kv": "v"}},
		"detail to field": {Actor: "ab", KeySet: "c", Reason: "k", Details: map[string]string{"": "vv"}},
	} {
		if a.ComputeHash() == b.ComputeHash() {
			t.Errorf("%s: different entries share a hash", name)
		}
	}
	// nil and empty Details are the same entry (JSON cannot tell them apart).
	x, y := audit.Entry{}, audit.Entry{Details: map[string]string{}}
	if x.ComputeHash() != y.ComputeHash() {
		t.Error("nil and empty Details hash differently")
	}
}

func TestAppendAssignsChain(t *testing.T) {
	ctx := context.Background()
	m := audit.NewMemory()
	l, err := audit.New(ctx, m, testKey(1), audit.Options{CheckpointEvery: 3, Now: stepClock()})
	if err != nil {
		t.Fatal(err)
	}
	in := sample(0)
	in.Seq, in.Hash[0], in.PrevHash[0] = 99, 1, 1 // ignored
	first, err := l.Append(ctx, in)
	if err != nil {
		t.Fatal(err)
	}
	if first.Seq != 1 || first.PrevHash != (audit.Hash{}) || first.Hash != first.ComputeHash() || first.Time.IsZero() {
		t.Fatalf("first entry %+v: want seq 1, zero prev hash, its own hash, a time", first)
	}
	in.Details["platform"] = "changed after append"
	second, err := l.Append(ctx, sample(1))
	if err != nil {
		t.Fatal(err)
	}
	if second.Seq != 2 || second.PrevHash != first.Hash {
		t.Fatalf("second entry seq %d prev %s, want 2 after %s", second.Seq, second.PrevHash, first.Hash)
	}
	if _, err := audit.VerifyBackend(ctx, m, l.PublicKey()); err != nil {
		t.Fatalf("caller's map change reached the stored entry: %v", err)
	}
	// Automatic checkpoint at seq 3, then on demand at 4; asking again at
	// the same head returns the same checkpoint.
	if _, err := l.Append(ctx, sample(2)); err != nil {
		t.Fatal(err)
	}
	if _, err := l.Append(ctx, sample(3)); err != nil {
		t.Fatal(err)
	}
	c, err := l.Checkpoint(ctx)
	if err != nil || c.Seq != 4 {
		t.Fatalf("Checkpoint = seq %d, %v; want 4", c.Seq, err)
	}
	if again, err := l.Checkpoint(ctx); err != nil || again.Seq != 4 {
		t.Fatalf("second Checkpoint = %+v, %v", again, err)
	}
	cps, _ := m.Checkpoints(ctx)
	if len(cps) != 2 || cps[0].Seq != 3 || cps[1].Seq != 4 {
		t.Fatalf("checkpoints %+v, want seq 3 and 4", cps)
	}
	res, err := audit.VerifyBackend(ctx, m, l.PublicKey())
	if err != nil || res.LastCheckpoint != 4 || res.Entries != 4 {
		t.Fatalf("VerifyBackend = %+v, %v", res, err)
	}

	// A reopened Log continues the chain and knows its last checkpoint.
	l2, err := audit.New(ctx, m, testKey(1), audit.Options{CheckpointEvery: 3})
	if err != nil {
		t.Fatal(err)
	}
	if c, err := l2.Checkpoint(ctx); err != nil || c.Seq != 4 {
		t.Fatalf("reopened Checkpoint = seq %d, %v; want the existing one at 4", c.Seq, err)
	}
	if e, err := l2.Append(ctx, sample(4)); err != nil || e.Seq != 5 {
		t.Fatalf("reopened Append = seq %d, %v", e.Seq, err)
	}
}

func TestAppendRejectsInvalid(t *testing.T) {
	ctx := context.Background()
	l, err := audit.New(ctx, audit.NewMemory(), testKey(1), audit.Options{})
	if err != nil {
		t.Fatal(err)
	}
	long := string(make([]byte, 5000))
	for name, alter := range map[string]func(e *audit.Entry){
		"kind":          func(e *audit.Entry) { e.Kind = "reboot" },
		"outcome":       func(e *audit.Entry) { e.Outcome = "" },
		"utf8 actor":    func(e *audit.Entry) { e.Actor = "\xff" },
		"utf8 detail":   func(e *audit.Entry) { e.Details["\xfe"] = "x" },
		"long reason":   func(e *audit.Entry) { e.Reason = long },
		"digest length": func(e *audit.Entry) { e.ClaimsDigest = "abcd" },
		"digest case": func(e *audit.Entry) {
			e.ClaimsDigest = "ABCDEF0123456789ABCDEF0123456789ABCDEF0123456789ABCDEF0123456789"
		},
		"year": func(e *audit.Entry) { e.Time = time.Date(10000, 1, 1, 0, 0, 0, 0, time.UTC) },
	} {
		e := sample(1)
		alter(&e)
		if _, err := l.Append(ctx, e); !errors.Is(err, audit.ErrInvalidEntry) {
			t.Errorf("%s: Append = %v, want ErrInvalidEntry", name, err)
		}
	}
	if _, err := l.Checkpoint(ctx); !errors.Is(err, audit.ErrEmpty) {
		t.Fatalf("Checkpoint of an empty log = %v, want ErrEmpty", err)
	}
}

func TestNewRejectsNonEd25519Signer(t *testing.T) {
	k, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := audit.New(context.Background(), audit.NewMemory(), k, audit.Options{}); !errors.Is(err, audit.ErrInvalidArgument) {
		t.Fatalf("New with an ECDSA signer = %v, want ErrInvalidArgument", err)
	}
}

// failingSigner claims an Ed25519 key but cannot sign (an HSM outage).
type failingSigner struct{ pub ed25519.PublicKey }

func (f failingSigner) Public() crypto.PublicKey { return f.pub }
func (f failingSigner) Sign(io.Reader, []byte, crypto.SignerOpts) ([]byte, error) {
	return nil, errors.New("hsm unavailable")
}

// liarSigner signs with a different key than the one it reports.
type liarSigner struct{ ed25519.PrivateKey }

func (l liarSigner) Public() crypto.PublicKey { return testKey(9).Public() }

func TestCheckpointSignerFailures(t *testing.T) {
	ctx := context.Background()
	for name, s := range map[string]crypto.Signer{
		"fails": failingSigner{testKey(1).Public().(ed25519.PublicKey)},
		"lies":  liarSigner{testKey(1)},
	} {
		m := audit.NewMemory()
		l, err := audit.New(ctx, m, s, audit.Options{CheckpointEvery: 2})
		if err != nil {
			t.Fatal(err)
		}
		if _, err := l.Append(ctx, sample(0)); err != nil {
			t.Fatal(err)
		}
		e, err := l.Append(ctx, sample(1))
		if !errors.Is(err, audit.ErrCheckpoint) || e.Seq != 2 {
			t.Fatalf("%s: Append at a checkpoint = seq %d, %v; want the entry and ErrCheckpoint", name, e.Seq, err)
		}
		if cps, _ := m.Checkpoints(ctx); len(cps) != 0 {
			t.Fatalf("%s: stored %d checkpoints", name, len(cps))
		}
		if last, _ := m.Last(ctx); last.Seq != 2 {
			t.Fatalf("%s: entry not stored", name)
		}
	}
}

// 50 goroutines append at once through one Log, and two Logs share one
// backend (the compare-and-swap path): the chain verifies with dense seqs.
func TestConcurrentAppend(t *testing.T) {
	ctx := context.Background()
	m := audit.NewMemory()
	logs := make([]*audit.Log, 2)
	for i := range logs {
		var err error
		if logs[i], err = audit.New(ctx, m, testKey(1), audit.Options{CheckpointEvery: 10}); err != nil {
			t.Fatal(err)
		}
	}
	const workers, each = 50, 20
	var wg sync.WaitGroup
	errs := make(chan error, workers*each)
	for w := range workers {
		wg.Go(func() {
			for i := range each {
				if _, err := logs[w%2].Append(ctx, sample(w*each+i)); err != nil && !errors.Is(err, audit.ErrCheckpoint) {
					errs <- err
				}
			}
		})
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Fatal(err)
	}
	res, err := audit.VerifyBackend(ctx, m, testKey(1).Public().(ed25519.PublicKey))
	if err != nil {
		t.Fatal(err)
	}
	if res.Entries != workers*each || res.First != 1 || res.Last != workers*each {
		t.Fatalf("Result %+v, want %d dense entries", res, workers*each)
	}
}

func BenchmarkAppendMemory(b *testing.B) {
	ctx := context.Background()
	l, err := audit.New(ctx, audit.NewMemory(), testKey(1), audit.Options{})
	if err != nil {
		b.Fatal(err)
	}
	e := sample(1)
	b.ReportAllocs()
	for b.Loop() {
		if _, err := l.Append(ctx, e); err != nil {
			b.Fatal(err)
		}
	}
}
