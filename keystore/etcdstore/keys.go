package etcdstore

import (
	"context"
	"errors"
	"fmt"
	"strconv"
	"strings"

	"go.etcd.io/etcd/api/v3/mvccpb"
	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/attested-kms/attested-kms/keystore"
)

// A Commit is one etcd transaction, and etcd caps the comparisons and the
// writes of a transaction (--max-txn-ops, 128 by default). A commit costs
// 1 + len(create) + len(update) comparisons and 2*len(create) + len(update)
// writes; a larger batch is refused with ErrInvalidArgument (splitting it
// would break all-or-nothing), so etcd's limit must cover the largest batch
// the Manager writes.

// keyFrom decodes a key record and checks it is the one its etcd key
// names, so a record copied to another path is not served as that key.
func (s *Store) keyFrom(keyset string, kv *mvccpb.KeyValue) (*keystore.Key, error) {
	k, err := decodeKey(kv.Value)
	if err != nil {
		return nil, err
	}
	if k.KeySet != keyset || string(kv.Key) != s.l.version(keyset, k.Version) {
		return nil, fmt.Errorf("etcdstore: record at %q is key %s v%d (corrupt store)", kv.Key, k.KeySet, k.Version)
	}
	k.Revision = uint64(kv.ModRevision)
	return k, nil
}

// Keys implements keystore.Store.
func (s *Store) Keys(ctx context.Context, keyset string) ([]*keystore.Key, error) {
	if err := s.begin(ctx); err != nil {
		return nil, err
	}
	if !keystore.ValidKeySetName(keyset) {
		return nil, fmt.Errorf("etcdstore: key set %q: %w", keyset, keystore.ErrKeySetNotFound)
	}
	// One transaction: the set's existence and its keys from one snapshot.
	resp, err := s.cli.Txn(ctx).Then(
		clientv3.OpGet(s.l.keySet(keyset), clientv3.WithKeysOnly()),
		clientv3.OpGet(s.l.versions(keyset), clientv3.WithPrefix()),
	).Commit()
	if err != nil {
		return nil, s.fail(ctx, "read keys", err)
	}
	if len(resp.Responses[0].GetResponseRange().Kvs) == 0 {
		return nil, fmt.Errorf("etcdstore: key set %q: %w", keyset, keystore.ErrKeySetNotFound)
	}
	kvs := resp.Responses[1].GetResponseRange().Kvs
	out := make([]*keystore.Key, 0, len(kvs))
	for _, kv := range kvs {
		k, err := s.keyFrom(keyset, kv)
		if err != nil {
			return nil, err
		}
		out = append(out, k)
	}
	return out, nil
}

// KeysByKID implements keystore.Store. It is on the release path, so it
// reads the kid index and then only the versions it names (two small round
// trips, the second at the first's revision for a consistent snapshot)
// rather than every key of the set.
func (s *Store) KeysByKID(ctx context.Context, keyset, kid string) ([]*keystore.Key, error) {
	if err := s.begin(ctx); err != nil {
		return nil, err
	}
	if !keystore.ValidKeySetName(keyset) {
		return nil, fmt.Errorf("etcdstore: key set %q: %w", keyset, keystore.ErrKeySetNotFound)
	}
	ops := []clientv3.Op{clientv3.OpGet(s.l.keySet(keyset), clientv3.WithKeysOnly())}
	if keystore.ValidKID(kid) {
		ops = append(ops, clientv3.OpGet(s.l.kids(keyset, kid), clientv3.WithPrefix(), clientv3.WithKeysOnly()))
	}
	resp, err := s.cli.Txn(ctx).Then(ops...).Commit()
	if err != nil {
		return nil, s.fail(ctx, "read kid index", err)
	}
	if len(resp.Responses[0].GetResponseRange().Kvs) == 0 {
		return nil, fmt.Errorf("etcdstore: key set %q: %w", keyset, keystore.ErrKeySetNotFound)
	}
	if len(ops) == 1 || len(resp.Responses[1].GetResponseRange().Kvs) == 0 {
		return nil, nil
	}
	idx := resp.Responses[1].GetResponseRange().Kvs
	gets := make([]clientv3.Op, 0, len(idx))
	dir := s.l.kids(keyset, kid)
	for _, kv := range idx {
		v, err := strconv.ParseUint(strings.TrimPrefix(string(kv.Key), dir), 16, 64)
		if err != nil {
			return nil, fmt.Errorf("etcdstore: kid index entry %q (corrupt store): %w", kv.Key, err)
		}
		gets = append(gets, clientv3.OpGet(s.l.version(keyset, v), clientv3.WithRev(resp.Header.Revision)))
	}
	vresp, err := s.cli.Txn(ctx).Then(gets...).Commit()
	if err != nil {
		return nil, s.fail(ctx, "read keys by kid", err)
	}
	out := make([]*keystore.Key, 0, len(gets))
	for _, r := range vresp.Responses {
		kvs := r.GetResponseRange().Kvs
		if len(kvs) == 0 {
			return nil, fmt.Errorf("etcdstore: kid index of %q points to a missing version (corrupt store)", keyset)
		}
		k, err := s.keyFrom(keyset, kvs[0])
		if err != nil {
			return nil, err
		}
		if k.KID != kid {
			return nil, fmt.Errorf("etcdstore: kid index of %q points to a key with another kid (corrupt store)", keyset)
		}
		out = append(out, k)
	}
	return out, nil
}

// createOps returns the guard and the writes that create k in keyset.
func (s *Store) createOps(keyset string, k *keystore.Key) (clientv3.Cmp, []clientv3.Op, error) {
	if k.KeySet != keyset {
		return clientv3.Cmp{}, nil, fmt.Errorf("etcdstore: key of set %q created in %q: %w", k.KeySet, keyset, keystore.ErrInvalidArgument)
	}
	if !keystore.ValidKID(k.KID) || k.Version == 0 {
		return clientv3.Cmp{}, nil, fmt.Errorf("etcdstore: key %q v%d: malformed kid or version: %w", k.KID, k.Version, keystore.ErrInvalidArgument)
	}
	rec, err := encodeKey(k)
	if err != nil {
		return clientv3.Cmp{}, nil, err
	}
	vk := s.l.version(keyset, k.Version)
	return absent(vk), []clientv3.Op{
		clientv3.OpPut(vk, string(rec)),
		clientv3.OpPut(s.l.kid(keyset, k.KID, k.Version), ""),
	}, nil
}

// Commit implements keystore.Store: one transaction guarded by "the set
// exists", "each created version is absent" and "each updated key is
// unchanged since it was read".
func (s *Store) Commit(ctx context.Context, keyset string, create, update []*keystore.Key) error {
	if err := s.begin(ctx); err != nil {
		return err
	}
	if !keystore.ValidKeySetName(keyset) {
		return fmt.Errorf("etcdstore: key set %q: %w", keyset, keystore.ErrKeySetNotFound)
	}
	cmps, ops, err := s.commitOps(keyset, create, update)
	if err != nil {
		// A missing set is the more basic error (and the one boltstore,
		// which checks it first, reports).
		if _, serr := s.KeySet(ctx, keyset); errors.Is(serr, keystore.ErrKeySetNotFound) {
			return serr
		}
		return err
	}
	if len(update) > 0 {
		if err := s.checkUpdates(ctx, keyset, update); err != nil {
			return err
		}
	}
	setKey := s.l.keySet(keyset)
	resp, err := s.cli.Txn(ctx).If(cmps...).Then(ops...).Else(
		clientv3.OpGet(setKey, clientv3.WithKeysOnly()),
		clientv3.OpGet(s.l.versions(keyset), clientv3.WithPrefix(), clientv3.WithKeysOnly()),
	).Commit()
	if err != nil {
		return s.fail(ctx, "commit keys", err)
	}
	if !resp.Succeeded {
		return s.commitFailure(keyset, create, update, resp)
	}
	rev := uint64(resp.Header.Revision)
	for _, k := range create {
		k.Revision = rev
	}
	for _, k := range update {
		k.Revision = rev
	}
	return nil
}

// commitOps validates a commit and builds its guards and writes.
func (s *Store) commitOps(keyset string, create, update []*keystore.Key) ([]clientv3.Cmp, []clientv3.Op, error) {
	cmps := []clientv3.Cmp{present(s.l.keySet(keyset))}
	var ops []clientv3.Op
	seen := make(map[uint64]bool, len(create)+len(update))
	for _, k := range create {
		if seen[k.Version] {
			return nil, nil, fmt.Errorf("etcdstore: key %s v%d created twice in one commit: %w", keyset, k.Version, keystore.ErrAlreadyExists)
		}
		seen[k.Version] = true
		c, o, err := s.createOps(keyset, k)
		if err != nil {
			return nil, nil, err
		}
		cmps, ops = append(cmps, c), append(ops, o...)
	}
	for _, k := range update {
		if k.KeySet != keyset {
			return nil, nil, fmt.Errorf("etcdstore: key of set %q committed to %q: %w", k.KeySet, keyset, keystore.ErrInvalidArgument)
		}
		if seen[k.Version] {
			return nil, nil, fmt.Errorf("etcdstore: key %s v%d appears twice in one commit: %w", keyset, k.Version, keystore.ErrInvalidArgument)
		}
		seen[k.Version] = true
		rec, err := encodeKey(k)
		if err != nil {
			return nil, nil, err
		}
		vk := s.l.version(keyset, k.Version)
		cmps, ops = append(cmps, unchanged(vk, k.Revision)), append(ops, clientv3.OpPut(vk, string(rec)))
	}
	return cmps, ops, nil
}

// checkUpdates reads the stored versions of the keys to update and refuses
// a change of kid or suite (the kid index and the sealed key's AAD depend
// on them). The transaction that follows only writes if each key is still
// at the revision checked here, so the check cannot go stale.
func (s *Store) checkUpdates(ctx context.Context, keyset string, update []*keystore.Key) error {
	ops := make([]clientv3.Op, 0, 1+len(update))
	ops = append(ops, clientv3.OpGet(s.l.keySet(keyset), clientv3.WithKeysOnly()))
	for _, k := range update {
		ops = append(ops, clientv3.OpGet(s.l.version(keyset, k.Version)))
	}
	resp, err := s.cli.Txn(ctx).Then(ops...).Commit()
	if err != nil {
		return s.fail(ctx, "read keys to update", err)
	}
	if len(resp.Responses[0].GetResponseRange().Kvs) == 0 {
		return fmt.Errorf("etcdstore: key set %q: %w", keyset, keystore.ErrKeySetNotFound)
	}
	for i, k := range update {
		kvs := resp.Responses[1+i].GetResponseRange().Kvs
		if len(kvs) == 0 {
			return fmt.Errorf("etcdstore: key %s/%s v%d: %w", keyset, k.KID, k.Version, keystore.ErrKeyNotFound)
		}
		if uint64(kvs[0].ModRevision) != k.Revision {
			return fmt.Errorf("etcdstore: key %s/%s v%d revision %d, stored %d: %w", keyset, k.KID, k.Version, k.Revision, kvs[0].ModRevision, keystore.ErrConflict)
		}
		cur, err := s.keyFrom(keyset, kvs[0])
		if err != nil {
			return err
		}
		if cur.KID != k.KID || cur.Suite != k.Suite {
			return fmt.Errorf("etcdstore: key %s v%d: kid and suite are immutable: %w", keyset, k.Version, keystore.ErrInvalidArgument)
		}
	}
	return nil
}

// commitFailure names the guard of a failed commit from the snapshot the
// transaction's else branch read.
func (s *Store) commitFailure(keyset string, create, update []*keystore.Key, resp *clientv3.TxnResponse) error {
	if len(resp.Responses[0].GetResponseRange().Kvs) == 0 {
		return fmt.Errorf("etcdstore: key set %q: %w", keyset, keystore.ErrKeySetNotFound)
	}
	stored := make(map[string]int64)
	for _, kv := range resp.Responses[1].GetResponseRange().Kvs {
		stored[string(kv.Key)] = kv.ModRevision
	}
	for _, k := range create {
		if _, ok := stored[s.l.version(keyset, k.Version)]; ok {
			return fmt.Errorf("etcdstore: key %s v%d: %w", keyset, k.Version, keystore.ErrAlreadyExists)
		}
	}
	for _, k := range update {
		rev, ok := stored[s.l.version(keyset, k.Version)]
		if !ok {
			return fmt.Errorf("etcdstore: key %s/%s v%d: %w", keyset, k.KID, k.Version, keystore.ErrKeyNotFound)
		}
		if uint64(rev) != k.Revision {
			return fmt.Errorf("etcdstore: key %s/%s v%d revision %d, stored %d: %w", keyset, k.KID, k.Version, k.Revision, rev, keystore.ErrConflict)
		}
	}
	// Unreachable: the else branch reads the snapshot the guards failed
	// on, so one of the checks above fails too. Kept so a surprise reads
	// as a retryable race rather than success.
	return fmt.Errorf("etcdstore: commit to %q raced another writer: %w", keyset, keystore.ErrConflict)
}
