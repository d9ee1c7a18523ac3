package etcdstore

import (
	"fmt"
	"strconv"
	"strings"

	"github.com/attested-kms/attested-kms/keystore"
)

// Layout under the configured prefix P (schema 1):
//
//	P keysets/<name>                     -> keySetRecord (JSON)
//	P keys/<name>/v/<%016x version>      -> keyRecord (JSON)
//	P keys/<name>/kid/<kid>/<%016x ver>  -> "" (index for lookups by kid)
//	P metadata/<name>                    -> metadataRecord (JSON)
//	P election/<name>/...                -> concurrency.Election keys
//
// A record's Revision is the etcd ModRevision of its key: it is never 0 for
// an existing key and only grows, so a compare-and-swap cannot be fooled by
// a record that was rewritten back to an older value (no ABA).
//
// Fixed-width hex versions sort in version order, so a prefix range read
// returns a set's keys already ordered. Key set names and kids are
// validated before they become path segments (neither can hold '/'), so
// one set's prefix never covers another's.
const (
	dirKeySets  = "keysets/"
	dirKeys     = "keys/"
	dirMetadata = "metadata/"
	dirElection = "election/"
	segVersion  = "/v/"
	segKID      = "/kid/"
)

type layout struct{ prefix string }

func (l layout) keySet(name string) string     { return l.prefix + dirKeySets + name }
func (l layout) keySets() string               { return l.prefix + dirKeySets }
func (l layout) versions(keyset string) string { return l.prefix + dirKeys + keyset + segVersion }
func (l layout) version(keyset string, v uint64) string {
	return l.versions(keyset) + fmt.Sprintf("%016x", v)
}
func (l layout) kids(keyset, kid string) string {
	return l.prefix + dirKeys + keyset + segKID + kid + "/"
}
func (l layout) kid(keyset, kid string, v uint64) string {
	return l.kids(keyset, kid) + fmt.Sprintf("%016x", v)
}
func (l layout) metadata(name string) string { return l.prefix + dirMetadata + name }
func (l layout) election(name string) string { return l.prefix + dirElection + name + "/" }

// ChangeKind says what a Change is about.
type ChangeKind int

const (
	// ChangeResync: events may have been missed (the watch fell behind a
	// compaction); drop every cache derived from the store.
	ChangeResync ChangeKind = iota + 1
	// ChangeKeySet: the key set KeySet was created or updated.
	ChangeKeySet
	// ChangeKey: version Version (kid KID) of key set KeySet was created
	// or updated.
	ChangeKey
	// ChangeMetadata: the store-wide metadata record Name was written.
	ChangeMetadata
)

func (k ChangeKind) String() string {
	switch k {
	case ChangeResync:
		return "resync"
	case ChangeKeySet:
		return "keyset"
	case ChangeKey:
		return "key"
	case ChangeMetadata:
		return "metadata"
	}
	return "ChangeKind(" + strconv.Itoa(int(k)) + ")"
}

// Change is one write under the store's prefix, by any replica.
type Change struct {
	Kind    ChangeKind
	KeySet  string // ChangeKeySet, ChangeKey
	KID     string // ChangeKey
	Version uint64 // ChangeKey
	Name    string // ChangeMetadata
	// Revision is the etcd revision of the write (for ChangeResync, the
	// revision the watch resumed from).
	Revision int64
}

// parseKey classifies an etcd key under the prefix. ok is false for keys
// that are not records (the kid index, election keys, anything unknown):
// a kid index entry is written in the same transaction as its version
// record, which already yields a ChangeKey. value is the record, needed
// for a key's kid (the path holds only the version); it may be nil for a
// deletion, which this store never does but an operator might.
func (l layout) parseKey(key, value []byte) (Change, bool) {
	rest, found := strings.CutPrefix(string(key), l.prefix)
	if !found {
		return Change{}, false
	}
	switch {
	case strings.HasPrefix(rest, dirKeySets):
		name := rest[len(dirKeySets):]
		if !keystore.ValidKeySetName(name) {
			return Change{}, false
		}
		return Change{Kind: ChangeKeySet, KeySet: name}, true
	case strings.HasPrefix(rest, dirMetadata):
		name := rest[len(dirMetadata):]
		if name == "" {
			return Change{}, false
		}
		return Change{Kind: ChangeMetadata, Name: name}, true
	case strings.HasPrefix(rest, dirKeys):
		set, ver, found := strings.Cut(rest[len(dirKeys):], segVersion)
		if !found || !keystore.ValidKeySetName(set) || len(ver) != 16 {
			return Change{}, false
		}
		v, err := strconv.ParseUint(ver, 16, 64)
		if err != nil || v == 0 {
			return Change{}, false
		}
		c := Change{Kind: ChangeKey, KeySet: set, Version: v}
		if len(value) > 0 {
			// A record that does not decode still names a changed key;
			// the kid stays empty and consumers evict by version.
			if k, err := decodeKey(value); err == nil && k.KeySet == set && k.Version == v {
				c.KID = k.KID
			}
		}
		return c, true
	}
	return Change{}, false
}
