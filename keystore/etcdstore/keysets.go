package etcdstore

import (
	"context"
	"fmt"

	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/attested-kms/attested-kms/keystore"
)

// Comparisons used by the transactions. A key that does not exist has
// CreateRevision 0 and Version 0.
func absent(key string) clientv3.Cmp  { return clientv3.Compare(clientv3.CreateRevision(key), "=", 0) }
func present(key string) clientv3.Cmp { return clientv3.Compare(clientv3.Version(key), ">", 0) }

// unchanged holds if key was last written at revision rev. A rev above
// MaxInt64 turns negative and never matches, which is the right answer for
// a value no store ever handed out.
func unchanged(key string, rev uint64) clientv3.Cmp {
	return clientv3.Compare(clientv3.ModRevision(key), "=", int64(rev))
}

// CreateKeySet implements keystore.Store.
func (s *Store) CreateKeySet(ctx context.Context, ks *keystore.KeySet, first *keystore.Key) error {
	if err := s.begin(ctx); err != nil {
		return err
	}
	if !keystore.ValidKeySetName(ks.Name) {
		return fmt.Errorf("etcdstore: key set name %q: %w", ks.Name, keystore.ErrInvalidArgument)
	}
	rec, err := encodeKeySet(ks)
	if err != nil {
		return err
	}
	setKey := s.l.keySet(ks.Name)
	cmps := []clientv3.Cmp{absent(setKey)}
	ops := []clientv3.Op{clientv3.OpPut(setKey, string(rec))}
	if first != nil {
		c, o, err := s.createOps(ks.Name, first)
		if err != nil {
			return err
		}
		cmps, ops = append(cmps, c), append(ops, o...)
	}
	resp, err := s.cli.Txn(ctx).If(cmps...).Then(ops...).Commit()
	if err != nil {
		return s.fail(ctx, "create key set", err)
	}
	if !resp.Succeeded {
		// Key records left without a set (an operator deleting only the
		// set's record) also land here: the versions stay create-once.
		return fmt.Errorf("etcdstore: key set %q: %w", ks.Name, keystore.ErrAlreadyExists)
	}
	rev := uint64(resp.Header.Revision)
	ks.Revision = rev
	if first != nil {
		first.Revision = rev
	}
	return nil
}

// KeySet implements keystore.Store.
func (s *Store) KeySet(ctx context.Context, name string) (*keystore.KeySet, error) {
	if err := s.begin(ctx); err != nil {
		return nil, err
	}
	if !keystore.ValidKeySetName(name) {
		return nil, fmt.Errorf("etcdstore: key set %q: %w", name, keystore.ErrKeySetNotFound)
	}
	resp, err := s.cli.Get(ctx, s.l.keySet(name))
	if err != nil {
		return nil, s.fail(ctx, "read key set", err)
	}
	if len(resp.Kvs) == 0 {
		return nil, fmt.Errorf("etcdstore: key set %q: %w", name, keystore.ErrKeySetNotFound)
	}
	return s.keySetFrom(name, resp.Kvs[0].Value, resp.Kvs[0].ModRevision)
}

func (s *Store) keySetFrom(name string, value []byte, modRev int64) (*keystore.KeySet, error) {
	ks, err := decodeKeySet(value)
	if err != nil {
		return nil, err
	}
	if ks.Name != name {
		return nil, fmt.Errorf("etcdstore: record of key set %q names %q (corrupt store)", name, ks.Name)
	}
	ks.Revision = uint64(modRev)
	return ks, nil
}

// KeySets implements keystore.Store.
func (s *Store) KeySets(ctx context.Context) ([]*keystore.KeySet, error) {
	if err := s.begin(ctx); err != nil {
		return nil, err
	}
	// etcd returns a range in key order, which is name order here.
	dir := s.l.keySets()
	resp, err := s.cli.Get(ctx, dir, clientv3.WithPrefix())
	if err != nil {
		return nil, s.fail(ctx, "list key sets", err)
	}
	out := make([]*keystore.KeySet, 0, len(resp.Kvs))
	for _, kv := range resp.Kvs {
		ks, err := s.keySetFrom(string(kv.Key[len(dir):]), kv.Value, kv.ModRevision)
		if err != nil {
			return nil, err
		}
		out = append(out, ks)
	}
	return out, nil
}

// UpdateKeySet implements keystore.Store.
func (s *Store) UpdateKeySet(ctx context.Context, ks *keystore.KeySet) error {
	if err := s.begin(ctx); err != nil {
		return err
	}
	if !keystore.ValidKeySetName(ks.Name) {
		return fmt.Errorf("etcdstore: key set %q: %w", ks.Name, keystore.ErrKeySetNotFound)
	}
	rec, err := encodeKeySet(ks)
	if err != nil {
		return err
	}
	setKey := s.l.keySet(ks.Name)
	resp, err := s.cli.Txn(ctx).
		If(present(setKey), unchanged(setKey, ks.Revision)).
		Then(clientv3.OpPut(setKey, string(rec))).
		Else(clientv3.OpGet(setKey, clientv3.WithKeysOnly())).
		Commit()
	if err != nil {
		return s.fail(ctx, "update key set", err)
	}
	if !resp.Succeeded {
		if len(resp.Responses[0].GetResponseRange().Kvs) == 0 {
			return fmt.Errorf("etcdstore: key set %q: %w", ks.Name, keystore.ErrKeySetNotFound)
		}
		return fmt.Errorf("etcdstore: key set %q revision %d is stale: %w", ks.Name, ks.Revision, keystore.ErrConflict)
	}
	ks.Revision = uint64(resp.Header.Revision)
	return nil
}

// Metadata implements keystore.Store.
func (s *Store) Metadata(ctx context.Context, name string) ([]byte, uint64, error) {
	if err := s.begin(ctx); err != nil {
		return nil, 0, err
	}
	if name == "" {
		return nil, 0, fmt.Errorf("etcdstore: empty metadata name: %w", keystore.ErrMetadataNotFound)
	}
	resp, err := s.cli.Get(ctx, s.l.metadata(name))
	if err != nil {
		return nil, 0, s.fail(ctx, "read metadata", err)
	}
	if len(resp.Kvs) == 0 {
		return nil, 0, fmt.Errorf("etcdstore: metadata %q: %w", name, keystore.ErrMetadataNotFound)
	}
	value, err := decodeMetadata(resp.Kvs[0].Value)
	if err != nil {
		return nil, 0, fmt.Errorf("etcdstore: metadata %q: %w", name, err)
	}
	return value, uint64(resp.Kvs[0].ModRevision), nil
}

// PutMetadata implements keystore.Store.
func (s *Store) PutMetadata(ctx context.Context, name string, value []byte, revision uint64) (uint64, error) {
	if err := s.begin(ctx); err != nil {
		return 0, err
	}
	if name == "" {
		return 0, fmt.Errorf("etcdstore: empty metadata name: %w", keystore.ErrInvalidArgument)
	}
	rec, err := encodeMetadata(value)
	if err != nil {
		return 0, fmt.Errorf("etcdstore: metadata %q: %w", name, err)
	}
	key := s.l.metadata(name)
	cmps := []clientv3.Cmp{absent(key)}
	if revision != 0 {
		cmps = []clientv3.Cmp{present(key), unchanged(key, revision)}
	}
	resp, err := s.cli.Txn(ctx).
		If(cmps...).
		Then(clientv3.OpPut(key, string(rec))).
		Else(clientv3.OpGet(key, clientv3.WithKeysOnly())).
		Commit()
	if err != nil {
		return 0, s.fail(ctx, "write metadata", err)
	}
	if !resp.Succeeded {
		exists := len(resp.Responses[0].GetResponseRange().Kvs) > 0
		switch {
		case revision == 0:
			return 0, fmt.Errorf("etcdstore: metadata %q: %w", name, keystore.ErrAlreadyExists)
		case !exists:
			return 0, fmt.Errorf("etcdstore: metadata %q: %w", name, keystore.ErrMetadataNotFound)
		default:
			return 0, fmt.Errorf("etcdstore: metadata %q revision %d is stale: %w", name, revision, keystore.ErrConflict)
		}
	}
	return uint64(resp.Header.Revision), nil
}
