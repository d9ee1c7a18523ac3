package etcdstore

import (
	"reflect"
	"testing"
)

// Everything under the prefix is outside bytes: any client with write
// access can put anything there. The decoders and the watch's key parser
// must reject or accept it without panicking, and what they accept must
// survive re-encoding.

func FuzzDecodeKey(f *testing.F) {
	rec, err := encodeKey(testKey(kidN(1), 1))
	if err != nil {
		f.Fatal(err)
	}
	f.Add(rec)
	f.Add([]byte(`{"schema":1,"sealed":null,"destroyed":"2026-01-01T00:00:00Z"}`))
	f.Add([]byte(`{"schema":2}`))
	f.Fuzz(func(t *testing.T, b []byte) {
		k, err := decodeKey(b)
		if err != nil || !k.State.Valid() {
			return
		}
		again, err := encodeKey(k)
		if err != nil {
			t.Fatalf("decoded key does not re-encode: %v", err)
		}
		k2, err := decodeKey(again)
		if err != nil || !reflect.DeepEqual(k.Clone(), k2.Clone()) {
			t.Fatalf("round trip changed the key:\n%+v\n%+v (%v)", k, k2, err)
		}
	})
}

func FuzzDecodeKeySet(f *testing.F) {
	ks := testSet()
	rec, err := encodeKeySet(ks)
	if err != nil {
		f.Fatal(err)
	}
	f.Add(rec)
	f.Add([]byte(`{"schema":1,"intermediates":[{"generation":1,"wrapped":{"ciphertext":"AA=="}}]}`))
	f.Fuzz(func(t *testing.T, b []byte) {
		ks, err := decodeKeySet(b)
		if err != nil {
			return
		}
		again, err := encodeKeySet(ks)
		if err != nil {
			t.Fatalf("decoded key set does not re-encode: %v", err)
		}
		if _, err := decodeKeySet(again); err != nil {
			t.Fatalf("re-encoded key set does not decode: %v", err)
		}
	})
}

func FuzzDecodeMetadata(f *testing.F) {
	rec, err := encodeMetadata([]byte("sealed"))
	if err != nil {
		f.Fatal(err)
	}
	f.Add(rec)
	f.Fuzz(func(t *testing.T, b []byte) {
		_, _ = decodeMetadata(b)
	})
}

func FuzzParseKey(f *testing.F) {
	l := layout{prefix: "/kms/"}
	rec, err := encodeKey(testKey(kidN(1), 1))
	if err != nil {
		f.Fatal(err)
	}
	f.Add([]byte(l.version("default", 1)), rec)
	f.Add([]byte(l.keySet("default")), []byte(nil))
	f.Add([]byte(l.kid("default", kidN(1), 1)), []byte(nil))
	f.Add([]byte(l.metadata("import-key")), []byte("{}"))
	f.Add([]byte(l.election("rotation")+"694d7d"), []byte("replica"))
	f.Fuzz(func(t *testing.T, key, value []byte) {
		c, ok := l.parseKey(key, value)
		if !ok {
			return
		}
		// What is accepted names a record at exactly that path.
		var path string
		switch c.Kind {
		case ChangeKeySet:
			path = l.keySet(c.KeySet)
		case ChangeKey:
			path = l.version(c.KeySet, c.Version)
		case ChangeMetadata:
			path = l.metadata(c.Name)
		default:
			t.Fatalf("parsed kind %v", c.Kind)
		}
		if path != string(key) {
			t.Fatalf("%q parsed as %+v, which is %q", key, c, path)
		}
	})
}
