package collateral

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"net/http"
	"os"
	"time"
)

// Fetch returns the document at canonical URL u: from memory or the
// directory while fresh, else from the network (never in Offline mode).
// When a refetch fails and an older copy is at hand, that copy is returned
// with Stale set. The caller owns the returned Document.
func (s *Store) Fetch(ctx context.Context, u string) (*Document, error) {
	// Memory is keyed by canonical URL, and only URLs that passed
	// parseDocURL get there; the libraries ask in canonical form, so a hit
	// on u itself needs no parsing.
	now := s.now()
	s.mu.Lock()
	e := s.mem[u]
	s.mu.Unlock()
	if e != nil && e.doc != nil && now.Before(e.until) {
		s.lookup(true)
		return e.doc.clone(now), nil
	}
	d, err := parseDocURL(u)
	if err != nil {
		return nil, err
	}
	if d.canonical != u {
		s.mu.Lock()
		e = s.mem[d.canonical]
		s.mu.Unlock()
	}
	if e != nil && e.doc == nil && now.Before(e.until) {
		s.lookup(true)
		return nil, fmt.Errorf("%w: %s (remembered)", ErrNotFound, d.canonical)
	}
	if e != nil && e.doc != nil && now.Before(e.until) {
		s.lookup(true)
		return e.doc.clone(now), nil
	}
	// Whatever load finds (it may be a copy another caller's load just
	// stored), this call waited for the slow path: a miss.
	s.lookup(false)
	doc, err := s.flights.do(ctx, d.canonical, func(ctx context.Context) (*Document, error) {
		return s.load(ctx, d)
	})
	if err != nil {
		return nil, err
	}
	return doc.clone(s.now()), nil
}

// lookup reports a cache hit or miss to Config.OnLookup.
func (s *Store) lookup(hit bool) {
	if s.onLookup != nil {
		s.onLookup(hit)
	}
}

// load finds d when memory holds no fresh copy: memory (filled by a load
// that just finished), then the directory, then the network.
func (s *Store) load(ctx context.Context, d *docURL) (*Document, error) {
	now := s.now()
	s.mu.Lock()
	e := s.mem[d.canonical]
	s.mu.Unlock()
	var have *Document
	if e != nil {
		if now.Before(e.until) {
			if e.doc == nil {
				return nil, fmt.Errorf("%w: %s (remembered)", ErrNotFound, d.canonical)
			}
			return e.doc, nil
		}
		have = e.doc
	}
	if s.dir != "" {
		doc, refreshAt, err := s.readDir(d)
		switch {
		case err == nil:
			if s.offline || now.Before(refreshAt) {
				s.remember(d.canonical, &entry{doc: doc, until: refreshAt})
				return doc, nil
			}
			if have == nil || doc.FetchedAt.After(have.FetchedAt) {
				have = doc
			}
		case errors.Is(err, fs.ErrNotExist):
			if s.offline {
				return nil, fmt.Errorf("%w: %s not in the offline collateral directory", ErrNotFound, d.canonical)
			}
		default:
			if s.offline {
				return nil, fmt.Errorf("collateral: %s: %w", d.canonical, err)
			}
			s.log.Warn("collateral: ignoring unreadable cached copy", "url", d.canonical, "err", err)
		}
	}
	if d.localOnly {
		if have != nil {
			return have, nil
		}
		return nil, fmt.Errorf("%w: %s is simulator collateral, served only from the collateral directory", ErrNotFound, d.canonical)
	}
	if s.offline {
		// Not reached (Offline requires Dir and every branch above
		// returns), but the one promise offline mode makes is never to
		// dial, so it is checked where the network begins.
		return nil, fmt.Errorf("%w: %s (offline)", ErrNotFound, d.canonical)
	}
	doc, err := s.fetchNetwork(ctx, d)
	if err == nil {
		return doc, nil
	}
	if ctx.Err() != nil {
		return nil, err
	}
	if have != nil || errors.Is(err, ErrNotFound) {
		s.remember(d.canonical, &entry{doc: have, until: s.now().Add(s.failureTTL)})
	}
	if have != nil {
		s.log.Warn("collateral: refetch failed; serving the copy past its next update",
			"url", d.canonical, "next_update", have.NextUpdate, "err", err)
		return have, nil
	}
	return nil, err
}

// fetchNetwork downloads d, checks that it is a well-formed document of its
// kind, and caches it in memory and in the directory.
func (s *Store) fetchNetwork(ctx context.Context, d *docURL) (*Document, error) {
	header, body, err := s.download(ctx, d)
	if err != nil {
		return nil, err
	}
	fetched := s.now()
	doc, refreshAt, err := s.newDocument(d, header, body, fetched)
	if err != nil {
		// A truncated or garbled answer must not be cached for a week.
		return nil, fmt.Errorf("collateral: GET %s: malformed %s: %w", d.canonical, d.kind, err)
	}
	if s.dir != "" {
		if err := s.writeDir(d, header, body); err != nil {
			s.log.Warn("collateral: could not write cache directory", "url", d.canonical, "err", err)
		}
	}
	s.remember(d.canonical, &entry{doc: doc, until: refreshAt})
	return doc, nil
}

// newDocument derives the document's next update and the time to refresh.
func (s *Store) newDocument(d *docURL, header http.Header, body []byte, fetched time.Time) (*Document, time.Time, error) {
	next, err := nextUpdate(d.kind, body)
	if err != nil {
		return nil, time.Time{}, err
	}
	if next.IsZero() {
		next = fetched.Add(s.defaultTTL)
	}
	doc := &Document{URL: d.canonical, Header: header, Body: body, NextUpdate: next, FetchedAt: fetched}
	return doc, later(next, fetched.Add(s.minRefresh)), nil
}

func later(a, b time.Time) time.Time {
	if a.After(b) {
		return a
	}
	return b
}

func (s *Store) readDir(d *docURL) (*Document, time.Time, error) {
	root, err := os.OpenRoot(s.dir)
	if err != nil {
		return nil, time.Time{}, err
	}
	defer root.Close()
	st, err := readDocument(root, d.rel, s.maxSize)
	if err != nil {
		return nil, time.Time{}, err
	}
	doc, refreshAt, err := s.newDocument(d, st.header, st.body, st.modTime)
	if err != nil {
		return nil, time.Time{}, fmt.Errorf("malformed %s in %s: %w", d.kind, d.rel, err)
	}
	return doc, refreshAt, nil
}

func (s *Store) writeDir(d *docURL, header http.Header, body []byte) error {
	root, err := os.OpenRoot(s.dir)
	if err != nil {
		return err
	}
	defer root.Close()
	return writeDocument(root, d.rel, header, body)
}

// remember stores e, evicting when the cache is full: first entries that
// are due for refresh, else an arbitrary one. The directory keeps evicted
// documents anyway.
func (s *Store) remember(key string, e *entry) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if _, ok := s.mem[key]; !ok && len(s.mem) >= s.maxEntries {
		now := s.now()
		victim := ""
		for k, old := range s.mem {
			victim = k
			if !now.Before(old.until) {
				break
			}
		}
		delete(s.mem, victim)
	}
	s.mem[key] = e
}
