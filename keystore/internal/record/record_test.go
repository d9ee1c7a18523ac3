package record

import (
	"bytes"
	"errors"
	"reflect"
	"testing"
	"time"

	"github.com/attested-kms/attested-kms/keystore"
	"github.com/attested-kms/attested-kms/keystore/kek"
)

// Records as the backends wrote them before this package existed, captured
// from their own encoders: existing bbolt files and etcd prefixes hold
// exactly these bytes, so they must decode to the fixtures and re-encode
// byte for byte.
const (
	boltKeySet   = `{"schema":1,"name":"default","settings":{"rotation_period_ns":86400000000000,"key_lifetime_ns":172800000000000,"pending_lead_time_ns":3600000000000,"retention_ns":259200000000000},"policy":{"version":3,"yaml":"YTogYgo=","updated":"2026-03-01T14:00:00Z","set_by":"CN=bob","rollback_of":1,"history":[{"version":1,"yaml":"eDogMQo=","set":"2026-03-01T12:00:00Z","set_by":"CN=alice"},{"version":2,"yaml":"eDogMgo=","set":"2026-03-01T13:00:00Z","set_by":"CN=carol"}]},"intermediates":[{"generation":1,"wrapped":{"kek_uri":"file:///kek","kek_version":"v7","algorithm":"AES-256-GCM","ciphertext":"AQID"},"created":"2026-03-01T12:00:00Z"},{"generation":2,"wrapped":{"kek_uri":"file:///kek","algorithm":"AES-256-GCM","ciphertext":"BAU="},"created":"2026-03-01T12:01:00Z"}],"created":"2026-03-01T12:00:00Z","revision":5}`
	boltKey      = `{"schema":1,"keyset":"default","kid":"0123456789abcdef","version":2,"suite":"ES256","public_key":"CQgH","sealed":{"format":"interm-v1","kek_uri":"file:///kek","generation":2,"algorithm":"AES-256-GCM","kek_version":"v7","wrapped_dek":"AQ==","nonce":"AgI=","ciphertext":"AwMD"},"state":"disabled","held_state":"active","created":"2026-03-01T12:00:00Z","activates":"2026-03-01T13:00:00Z","expires":"2026-03-03T13:00:00Z","destroy_after":"2026-03-06T13:00:00Z","destroyed":"2026-03-09T20:00:00Z","revision":6}`
	boltMinKey   = `{"schema":1,"keyset":"default","kid":"fedcba9876543210","version":1,"suite":"ES256","public_key":"AQ==","state":"pending","created":"2026-03-01T12:00:00Z","activates":"2026-03-01T12:00:00Z","expires":"2026-03-01T12:00:00Z","destroy_after":"2026-03-01T12:00:00Z","revision":1}`
	boltMetadata = `{"value":"c2VhbGVk","revision":3}`

	etcdKeySet   = `{"schema":1,"name":"default","settings":{"rotation_period_ns":86400000000000,"key_lifetime_ns":172800000000000,"pending_lead_time_ns":3600000000000,"retention_ns":259200000000000},"policy":{"version":3,"yaml":"YTogYgo=","updated":"2026-03-01T14:00:00Z","set_by":"CN=bob","rollback_of":1,"history":[{"version":1,"yaml":"eDogMQo=","set":"2026-03-01T12:00:00Z","set_by":"CN=alice"},{"version":2,"yaml":"eDogMgo=","set":"2026-03-01T13:00:00Z","set_by":"CN=carol"}]},"intermediates":[{"generation":1,"wrapped":{"kek_uri":"file:///kek","kek_version":"v7","algorithm":"AES-256-GCM","ciphertext":"AQID"},"created":"2026-03-01T12:00:00Z"},{"generation":2,"wrapped":{"kek_uri":"file:///kek","algorithm":"AES-256-GCM","ciphertext":"BAU="},"created":"2026-03-01T12:01:00Z"}],"created":"2026-03-01T12:00:00Z"}`
	etcdKey      = `{"schema":1,"keyset":"default","kid":"0123456789abcdef","version":2,"suite":"ES256","public_key":"CQgH","sealed":{"format":"interm-v1","kek_uri":"file:///kek","generation":2,"algorithm":"AES-256-GCM","kek_version":"v7","wrapped_dek":"AQ==","nonce":"AgI=","ciphertext":"AwMD"},"state":"disabled","held_state":"active","created":"2026-03-01T12:00:00Z","activates":"2026-03-01T13:00:00Z","expires":"2026-03-03T13:00:00Z","destroy_after":"2026-03-06T13:00:00Z","destroyed":"2026-03-09T20:00:00Z"}`
	etcdMinKey   = `{"schema":1,"keyset":"default","kid":"fedcba9876543210","version":1,"suite":"ES256","public_key":"AQ==","state":"pending","created":"2026-03-01T12:00:00Z","activates":"2026-03-01T12:00:00Z","expires":"2026-03-01T12:00:00Z","destroy_after":"2026-03-01T12:00:00Z"}`
	etcdMetadata = `{"value":"c2VhbGVk"}`
)

func fixtures() (*keystore.KeySet, *keystore.Key, *keystore.Key) {
	t0 := time.Date(2026, 3, 1, 12, 0, 0, 0, time.UTC)
	ks := &keystore.KeySet{
		Name:     "default",
		Settings: keystore.KeySetSettings{RotationPeriod: 24 * time.Hour, KeyLifetime: 48 * time.Hour, PendingLead: time.Hour, Retention: 72 * time.Hour},
		Policy:   []byte("a: b\n"), PolicyVersion: 3, PolicyUpdated: t0.Add(2 * time.Hour), PolicySetBy: "CN=bob", PolicyRollbackOf: 1,
		PolicyHistory: []keystore.PolicyRevision{
			{Version: 1, YAML: []byte("x: 1\n"), Set: t0, SetBy: "CN=alice"},
			{Version: 2, YAML: []byte("x: 2\n"), Set: t0.Add(time.Hour), SetBy: "CN=carol", RollbackOf: 0},
		},
		Created: t0,
		Intermediates: []keystore.Intermediate{
			{Generation: 1, Wrapped: kek.Wrapped{KEKURI: "file:///kek", KEKVersion: "v7", Algorithm: "AES-256-GCM", Ciphertext: []byte{1, 2, 3}}, Created: t0},
			{Generation: 2, Wrapped: kek.Wrapped{KEKURI: "file:///kek", Algorithm: "AES-256-GCM", Ciphertext: []byte{4, 5}}, Created: t0.Add(time.Minute)},
		},
	}
	full := &keystore.Key{
		KeySet: "default", KID: "0123456789abcdef", Version: 2, Suite: "ES256", PublicKey: []byte{9, 8, 7},
		Sealed: &keystore.SealedKey{Format: "interm-v1", KEKURI: "file:///kek", Generation: 2, Algorithm: "AES-256-GCM", KEKVersion: "v7",
			WrappedDEK: []byte{1}, Nonce: []byte{2, 2}, Ciphertext: []byte{3, 3, 3}},
		State: keystore.StateDisabled, HeldState: keystore.StateActive,
		Created: t0, Activates: t0.Add(time.Hour), Expires: t0.Add(49 * time.Hour), DestroyAfter: t0.Add(121 * time.Hour), Destroyed: t0.Add(200 * time.Hour),
	}
	minimal := &keystore.Key{
		KeySet: "default", KID: "fedcba9876543210", Version: 1, Suite: "ES256", PublicKey: []byte{1},
		State: keystore.StatePending, Created: t0, Activates: t0, Expires: t0, DestroyAfter: t0,
	}
	return ks, full, minimal
}

func TestKeySetCompat(t *testing.T) {
	want, _, _ := fixtures()
	for _, tc := range []struct {
		name         string
		rec          string
		rev          uint64
		withRevision bool
	}{
		{"bolt", boltKeySet, 5, true},
		{"etcd", etcdKeySet, 0, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got, rev, err := DecodeKeySet([]byte(tc.rec))
			if err != nil {
				t.Fatal(err)
			}
			if rev != tc.rev || !reflect.DeepEqual(got, want) {
				t.Fatalf("decoded rev %d\n%+v\nwant rev %d\n%+v", rev, got, tc.rev, want)
			}
			b, err := EncodeKeySet(got, tc.rev, tc.withRevision)
			if err != nil {
				t.Fatal(err)
			}
			if string(b) != tc.rec {
				t.Fatalf("re-encoded\n%s\nwant\n%s", b, tc.rec)
			}
		})
	}
}

func TestKeyCompat(t *testing.T) {
	_, full, minimal := fixtures()
	for _, tc := range []struct {
		name         string
		rec          string
		want         *keystore.Key
		rev          uint64
		withRevision bool
	}{
		{"bolt", boltKey, full, 6, true},
		{"bolt minimal", boltMinKey, minimal, 1, true},
		{"etcd", etcdKey, full, 0, false},
		{"etcd minimal", etcdMinKey, minimal, 0, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got, rev, err := DecodeKey([]byte(tc.rec))
			if err != nil {
				t.Fatal(err)
			}
			if rev != tc.rev || !reflect.DeepEqual(got, tc.want) {
				t.Fatalf("decoded rev %d\n%+v\nwant rev %d\n%+v", rev, got, tc.rev, tc.want)
			}
			b, err := EncodeKey(got, tc.rev, tc.withRevision)
			if err != nil {
				t.Fatal(err)
			}
			if string(b) != tc.rec {
				t.Fatalf("re-encoded\n%s\nwant\n%s", b, tc.rec)
			}
		})
	}
}

func TestMetadataCompat(t *testing.T) {
	for _, tc := range []struct {
		rec          string
		rev          uint64
		withRevision bool
	}{
		{boltMetadata, 3, true},
		{etcdMetadata, 0, false},
	} {
		v, rev, err := DecodeMetadata([]byte(tc.rec))
		if err != nil || string(v) != "sealed" || rev != tc.rev {
			t.Fatalf("%s: decoded %q rev %d, %v", tc.rec, v, rev, err)
		}
		b, err := EncodeMetadata(v, rev, tc.withRevision)
		if err != nil || string(b) != tc.rec {
			t.Fatalf("re-encoded %s, %v; want %s", b, err, tc.rec)
		}
	}
}

// A stored revision of 0 is still written: boltstore records always carry
// the field, and only its absence means "revision kept elsewhere".
func TestZeroRevisionKept(t *testing.T) {
	b, err := EncodeMetadata(nil, 0, true)
	if err != nil || !bytes.Contains(b, []byte(`"revision":0`)) {
		t.Fatalf("got %s, %v", b, err)
	}
}

func TestRefused(t *testing.T) {
	_, full, _ := fixtures()
	full.State = "bogus"
	if _, err := EncodeKey(full, 1, true); !errors.Is(err, keystore.ErrInvalidArgument) {
		t.Fatalf("invalid state: %v", err)
	}
	if _, _, err := DecodeKey([]byte(`{"schema":2}`)); err == nil {
		t.Fatal("key record schema 2 accepted")
	}
	if _, _, err := DecodeKeySet([]byte(`{"schema":2}`)); err == nil {
		t.Fatal("key set record schema 2 accepted")
	}
	// A history that does not precede the current version is corrupt.
	ks, _, _ := fixtures()
	ks.PolicyVersion = 2
	b, err := EncodeKeySet(ks, 0, false)
	if err != nil {
		t.Fatal(err)
	}
	if _, _, err := DecodeKeySet(b); !errors.Is(err, keystore.ErrInvalidArgument) {
		t.Fatalf("corrupt history: %v", err)
	}
}

// Records are outside bytes (anyone who can write the file or the etcd
// prefix); whatever decodes must re-encode, and that encoding must be a
// fixed point (decoding and encoding it again changes no byte).
func FuzzDecodeKeySet(f *testing.F) {
	f.Add([]byte(boltKeySet))
	f.Add([]byte(etcdKeySet))
	f.Fuzz(func(t *testing.T, b []byte) {
		ks, rev, err := DecodeKeySet(b)
		if err != nil {
			return
		}
		again, err := EncodeKeySet(ks, rev, true)
		if err != nil {
			t.Fatalf("decoded key set does not re-encode: %v", err)
		}
		ks2, rev2, err := DecodeKeySet(again)
		if err != nil {
			t.Fatalf("re-encoded key set does not decode: %v", err)
		}
		if third, err := EncodeKeySet(ks2, rev2, true); err != nil || !bytes.Equal(third, again) {
			t.Fatalf("key set encoding is not stable: %v\n%s\n%s", err, again, third)
		}
	})
}

func FuzzDecodeKey(f *testing.F) {
	f.Add([]byte(boltKey))
	f.Add([]byte(etcdMinKey))
	f.Fuzz(func(t *testing.T, b []byte) {
		k, rev, err := DecodeKey(b)
		if err != nil || !k.State.Valid() {
			return
		}
		again, err := EncodeKey(k, rev, true)
		if err != nil {
			t.Fatalf("decoded key does not re-encode: %v", err)
		}
		k2, rev2, err := DecodeKey(again)
		if err != nil {
			t.Fatalf("re-encoded key does not decode: %v", err)
		}
		if third, err := EncodeKey(k2, rev2, true); err != nil || !bytes.Equal(third, again) {
			t.Fatalf("key encoding is not stable: %v\n%s\n%s", err, again, third)
		}
	})
}

func FuzzDecodeMetadata(f *testing.F) {
	f.Add([]byte(boltMetadata))
	f.Add([]byte(etcdMetadata))
	f.Fuzz(func(t *testing.T, b []byte) {
		_, _, _ = DecodeMetadata(b)
	})
}
