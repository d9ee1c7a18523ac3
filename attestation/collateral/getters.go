package collateral

import (
	"context"

	tdxtrust "github.com/google/go-tdx-guest/verify/trust"
)

// Get implements go-sev-guest's trust.HTTPSGetter.
func (s *Store) Get(url string) ([]byte, error) {
	return s.GetContext(context.Background(), url)
}

// GetContext implements go-sev-guest's trust.ContextHTTPSGetter.
func (s *Store) GetContext(ctx context.Context, url string) ([]byte, error) {
	d, err := s.Fetch(ctx, url)
	if err != nil {
		return nil, err
	}
	return d.Body, nil
}

// TDXGetter adapts a Store to go-tdx-guest's getters, which also want the
// response headers (the issuer chains). It implements both
// trust.HTTPSGetter, the type of verify.Options.Getter, and
// trust.ContextHTTPSGetter, which go-tdx-guest prefers when present.
type TDXGetter struct{ s *Store }

var (
	_ tdxtrust.HTTPSGetter        = (*TDXGetter)(nil)
	_ tdxtrust.ContextHTTPSGetter = (*TDXGetter)(nil)
)

// TDX returns the store as a go-tdx-guest getter.
func (s *Store) TDX() *TDXGetter { return &TDXGetter{s: s} }

// Get implements go-tdx-guest's trust.HTTPSGetter.
func (g *TDXGetter) Get(url string) (map[string][]string, []byte, error) {
	return g.GetContext(context.Background(), url)
}

// GetContext implements go-tdx-guest's trust.ContextHTTPSGetter.
func (g *TDXGetter) GetContext(ctx context.Context, url string) (map[string][]string, []byte, error) {
	d, err := g.s.Fetch(ctx, url)
	if err != nil {
		return nil, nil, err
	}
	h := d.Header
	// Intel's PCS v3 and some caches name the TCB info chain
	// SGX-TCB-Info-Issuer-Chain; go-tdx-guest looks up the v4 name only.
	if v, ok := h["Sgx-Tcb-Info-Issuer-Chain"]; ok && h.Get("Tcb-Info-Issuer-Chain") == "" {
		h.Set("Tcb-Info-Issuer-Chain", v[0])
	}
	return h, d.Body, nil
}
