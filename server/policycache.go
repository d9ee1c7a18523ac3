package server

import (
	"fmt"
	"sync"

	"github.com/attested-kms/attested-kms/keystore"
	"github.com/attested-kms/attested-kms/policy"
)

// policyCache keeps each key set's parsed policy, keyed by its version, so
// the release path parses YAML only when the policy changed.
type policyCache struct {
	mu      sync.Mutex
	entries map[string]policyEntry
}

type policyEntry struct {
	version int
	policy  *policy.Policy
}

func newPolicyCache() *policyCache { return &policyCache{entries: map[string]policyEntry{}} }

func (c *policyCache) get(ks *keystore.KeySet) (*policy.Policy, error) {
	c.mu.Lock()
	e, ok := c.entries[ks.Name]
	c.mu.Unlock()
	if ok && e.version == ks.PolicyVersion {
		return e.policy, nil
	}
	if len(ks.Policy) == 0 {
		return nil, fmt.Errorf("key set %q has no release policy", ks.Name)
	}
	p, err := policy.Parse(ks.Policy)
	if err != nil {
		return nil, fmt.Errorf("key set %q policy version %d: %w", ks.Name, ks.PolicyVersion, err)
	}
	c.mu.Lock()
	c.entries[ks.Name] = policyEntry{version: ks.PolicyVersion, policy: p}
	c.mu.Unlock()
	return p, nil
}
