package server_test

import (
	"bytes"
	"context"
	"crypto/ed25519"
	"crypto/x509"
	"encoding/base64"
	"encoding/binary"
	"encoding/hex"
	"errors"
	"math"
	"path/filepath"
	"testing"

	bolt "go.etcd.io/bbolt"

	"github.com/attested-kms/attested-kms/audit"
	"github.com/attested-kms/attested-kms/audit/boltaudit"
	"github.com/attested-kms/attested-kms/hpke"
	kmsv1 "github.com/attested-kms/attested-kms/proto/kms/v1"
)

// auditEntries reads the whole log of the stopped server's store file.
func auditEntries(t *testing.T, dbPath string, pub ed25519.PublicKey) ([]audit.Entry, audit.Result, error) {
	t.Helper()
	b, err := boltaudit.Open(dbPath, true)
	if err != nil {
		t.Fatal(err)
	}
	defer b.Close()
	ctx := context.Background()
	var out []audit.Entry
	for e, err := range b.Range(ctx, 1, math.MaxUint64) {
		if err != nil {
			t.Fatal(err)
		}
		out = append(out, e)
	}
	res, err := audit.VerifyBackend(ctx, b, pub)
	return out, res, err
}

func TestAuditLogRecordsDecisions(t *testing.T) {
	e := newEnv(t)
	ctx := context.Background()

	granted, ga, err := e.release(attempt{})
	if err != nil {
		t.Fatalf("release: %v", err)
	}
	priv, err := hpke.UnwrapX25519(ga.wrapPriv, granted.GetKid(), ga.nonce, granted.GetWrappedKey())
	if err != nil {
		t.Fatal(err)
	}
	denied := attempt{}
	copy(denied.fields.Measurement[:], badMeasurement)
	_, da, err := e.release(denied)
	if reasonOf(err) != "POLICY_DENIED" {
		t.Fatalf("bad measurement: %v", err)
	}
	rotated, err := e.admin.RotateKeys(ctx, &kmsv1.RotateKeysRequest{Keyset: "default"})
	if err != nil {
		t.Fatal(err)
	}
	ak, err := e.admin.GetAuditKey(ctx, &kmsv1.GetAuditKeyRequest{})
	if err != nil {
		t.Fatal(err)
	}
	k, err := x509.ParsePKIXPublicKey(ak.GetPublicKey())
	pub, ok := k.(ed25519.PublicKey)
	if err != nil || !ok {
		t.Fatalf("audit key: %T %v", k, err)
	}

	// The server holds the file locked: stop it (which signs a final
	// checkpoint) and read the file as an auditor would.
	e.srv.Stop()
	dbPath := filepath.Join(e.dir, "kms.db")
	entries, res, err := auditEntries(t, dbPath, pub)
	if err != nil {
		t.Fatalf("verify: %v", err)
	}
	if res.Entries != 4 || res.LastCheckpoint != 4 {
		t.Fatalf("verified %+v, want 4 entries and a checkpoint at 4", res)
	}
	want := []struct {
		kind    audit.Kind
		actor   string
		kid     string
		outcome audit.Outcome
		reason  string
		detail  [2]string
	}{
		{audit.KindRelease, e.iss.Identity().ObjectID, e.kid, audit.OutcomeGranted, "", [2]string{"rule", "inference"}},
		{audit.KindRelease, e.iss.Identity().ObjectID, e.kid, audit.OutcomeDenied, "POLICY_DENIED", [2]string{"platform", "sev-snp"}},
		{audit.KindRotation, "local-socket", rotated.GetKid(), audit.OutcomeOK, "", [2]string{"call", "RotateKeys"}},
		{audit.KindAdminCall, "local-socket", "", audit.OutcomeOK, "", [2]string{"call", "GetAuditKey"}},
	}
	for i, w := range want {
		got := entries[i]
		if got.Kind != w.kind || got.Actor != w.actor || got.KID != w.kid || got.Outcome != w.outcome ||
			got.Reason != w.reason || got.Details[w.detail[0]] != w.detail[1] {
			t.Errorf("entry %d = %+v, want %+v", i+1, got, w)
		}
	}
	for i := range 2 {
		if len(entries[i].ClaimsDigest) != 64 || entries[i].KeySet != "default" {
			t.Errorf("release entry %d: claims digest %q, keyset %q", i+1, entries[i].ClaimsDigest, entries[i].KeySet)
		}
	}

	// Nothing secret in what a SIEM receives.
	var export bytes.Buffer
	if _, err := audit.Export(&export, func(yield func(audit.Entry, error) bool) {
		for _, en := range entries {
			if !yield(en, nil) {
				return
			}
		}
	}, nil); err != nil {
		t.Fatal(err)
	}
	secrets := map[string][]byte{
		"granted nonce": ga.nonce, "denied nonce": da.nonce, "token": []byte(ga.token),
		"released key": priv, "wrapping key": ga.wrapPriv, "wrapping public key": ga.wrapPub,
	}
	for name, s := range secrets {
		for _, enc := range []string{string(s), hex.EncodeToString(s), base64.StdEncoding.EncodeToString(s), base64.RawURLEncoding.EncodeToString(s)} {
			if bytes.Contains(export.Bytes(), []byte(enc)) {
				t.Fatalf("audit log contains the %s", name)
			}
		}
	}

	// Change one byte of entry 2 in the file: verification names it.
	tamperEntry(t, dbPath, 2)
	if _, _, err := auditEntries(t, dbPath, pub); !isAltered(err, 2) {
		t.Fatalf("tampered log: %v, want seq 2 altered", err)
	}
}

// tamperEntry changes one byte of the stored entry seq: a letter of its
// actor, so the record still parses and only the hash chain can tell.
func tamperEntry(t *testing.T, dbPath string, seq uint64) {
	t.Helper()
	db, err := bolt.Open(dbPath, 0o600, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	err = db.Update(func(tx *bolt.Tx) error {
		bk := tx.Bucket([]byte("audit")).Bucket([]byte("entries"))
		key := binary.BigEndian.AppendUint64(nil, seq)
		v := bytes.Clone(bk.Get(key))
		i := bytes.Index(v, []byte(`"actor":"`))
		if i < 0 {
			return errors.New("no actor in the record")
		}
		i += len(`"actor":"`)
		v[i] ^= 0x01 // a letter or digit stays printable and valid JSON
		return bk.Put(key, v)
	})
	if err != nil {
		t.Fatal(err)
	}
}

func isAltered(err error, seq uint64) bool {
	var ve *audit.VerifyError
	return errors.As(err, &ve) && ve.Problem == audit.ProblemAltered && ve.Seq == seq
}
