package sevsnp

import (
	"crypto/sha256"
	"crypto/x509"
	"sync"
	"time"

	"github.com/google/go-sev-guest/abi"
)

// maxCachedChains bounds the chain cache. One entry per chip and TCB
// version: a fleet of this many machines at one TCB fits.
const maxCachedChains = 4096

// chainCache remembers endorsement key certificates whose chain to a
// trusted root has been verified, so a release does not redo the RSA-4096
// chain signatures for a machine it has seen: only the report signature,
// which changes with every report, is checked again. An entry is used only
// within the certificate's validity period.
type chainCache struct {
	mu      sync.Mutex
	entries map[chainKey]*x509.Certificate
}

type chainKey struct {
	signer abi.ReportSigner
	digest [sha256.Size]byte
}

func (c *chainCache) get(signer abi.ReportSigner, der []byte, now time.Time) *x509.Certificate {
	k := chainKey{signer, sha256.Sum256(der)}
	c.mu.Lock()
	defer c.mu.Unlock()
	cert := c.entries[k]
	if cert == nil {
		return nil
	}
	if now.Before(cert.NotBefore) || now.After(cert.NotAfter) {
		delete(c.entries, k)
		return nil
	}
	return cert
}

func (c *chainCache) put(signer abi.ReportSigner, der []byte, cert *x509.Certificate) {
	k := chainKey{signer, sha256.Sum256(der)}
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.entries == nil {
		c.entries = make(map[chainKey]*x509.Certificate)
	}
	if len(c.entries) >= maxCachedChains {
		// Dropping an arbitrary entry only costs a re-verification.
		for old := range c.entries {
			delete(c.entries, old)
			break
		}
	}
	c.entries[k] = cert
}
