package sevsnp

import (
	"crypto/sha256"
	"crypto/x509"
	"sync"
	"time"

	"github.com/google/go-sev-guest/abi"
	"github.com/google/go-sev-guest/verify/trust"
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
	entries map[chainKey]*chainEntry
}

// chainEntry is a verified certificate and, once revocation checking has
// looked it up, the configured root it chains to, whose CRL applies.
type chainEntry struct {
	cert *x509.Certificate
	root *trust.AMDRootCerts
}

type chainKey struct {
	signer abi.ReportSigner
	digest [sha256.Size]byte
}

func (c *chainCache) get(signer abi.ReportSigner, der []byte, now time.Time) *x509.Certificate {
	if e := c.entry(signer, der, now); e != nil {
		return e.cert
	}
	return nil
}

// root returns the root recorded for a cached certificate, or nil.
func (c *chainCache) root(signer abi.ReportSigner, der []byte, now time.Time) *trust.AMDRootCerts {
	if e := c.entry(signer, der, now); e != nil {
		return e.root
	}
	return nil
}

func (c *chainCache) entry(signer abi.ReportSigner, der []byte, now time.Time) *chainEntry {
	k := chainKey{signer, sha256.Sum256(der)}
	c.mu.Lock()
	defer c.mu.Unlock()
	e := c.entries[k]
	if e == nil {
		return nil
	}
	if now.Before(e.cert.NotBefore) || now.After(e.cert.NotAfter) {
		delete(c.entries, k)
		return nil
	}
	return e
}

// setRoot records the root of a cached certificate.
func (c *chainCache) setRoot(signer abi.ReportSigner, der []byte, root *trust.AMDRootCerts) {
	k := chainKey{signer, sha256.Sum256(der)}
	c.mu.Lock()
	defer c.mu.Unlock()
	if e := c.entries[k]; e != nil {
		e.root = root
	}
}

func (c *chainCache) put(signer abi.ReportSigner, der []byte, cert *x509.Certificate) {
	k := chainKey{signer, sha256.Sum256(der)}
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.entries == nil {
		c.entries = make(map[chainKey]*chainEntry)
	}
	if len(c.entries) >= maxCachedChains {
		// Dropping an arbitrary entry only costs a re-verification.
		for old := range c.entries {
			delete(c.entries, old)
			break
		}
	}
	c.entries[k] = &chainEntry{cert: cert}
}
