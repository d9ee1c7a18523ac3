// Package verifiers assembles the platform verifiers (sevsnp, tdx,
// azurevtpm) into one attestation.Verifier that dispatches on the
// evidence type, from one set of settings shared by `kms serve` and
// `kms evidence verify`, so both judge evidence the same way.
package verifiers

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"time"

	"github.com/attested-kms/attested-kms/attestation"
	"github.com/attested-kms/attested-kms/attestation/azurevtpm"
	"github.com/attested-kms/attested-kms/attestation/collateral"
	"github.com/attested-kms/attested-kms/attestation/sevsnp"
	"github.com/attested-kms/attested-kms/attestation/tdx"
)

// Settings choose what is trusted and where collateral comes from.
type Settings struct {
	// Platforms enabled; nil means all (attestation.Platforms).
	Platforms []attestation.Platform
	// Collateral serves VCEKs, CRLs, TCB info and QE identities. nil
	// means none: SEV-SNP evidence must then carry its VCEK, and TDX and
	// revocation checking cannot work (New fails unless
	// RevocationOptional).
	Collateral *collateral.Store
	// Now is the verification time; nil means time.Now.
	Now func() time.Time
	// Simulator roots, development only.
	SNPTestRootsPEM []byte
	TDXTestRootsPEM []byte
	// Revocation checking per vendor; the server turns both on unless the
	// configuration says otherwise.
	SNPRevocation bool
	TDXRevocation bool
	// RevocationOptional: only for offline verification by an operator.
	RevocationOptional bool
}

// Set verifies evidence of the enabled platforms.
type Set struct {
	byType    map[attestation.Platform]attestation.Verifier
	testRoots []attestation.Platform
}

// New builds the verifiers s enables.
func New(s Settings) (*Set, error) {
	enabled := s.Platforms
	if enabled == nil {
		enabled = attestation.Platforms()
	}
	for _, p := range enabled {
		if !slices.Contains(attestation.Platforms(), p) {
			return nil, fmt.Errorf("verifiers: unknown evidence type %q", p)
		}
	}
	needSNP := slices.Contains(enabled, attestation.PlatformSEVSNP) || slices.Contains(enabled, attestation.PlatformAzureSNPVTPM)
	needTDX := slices.Contains(enabled, attestation.PlatformTDX) || slices.Contains(enabled, attestation.PlatformAzureTDXVTPM)
	set := &Set{byType: map[attestation.Platform]attestation.Verifier{}}

	var snp *sevsnp.Verifier
	if needSNP {
		opts := sevsnp.Options{
			TestRootsPEM:       s.SNPTestRootsPEM,
			Now:                s.Now,
			CheckRevocation:    s.SNPRevocation,
			RevocationOptional: s.RevocationOptional,
		}
		if s.Collateral != nil {
			// Assigned only when non-nil: a typed nil would pass the
			// verifier's nil check and crash on first use.
			opts.Getter = s.Collateral
		}
		v, err := sevsnp.NewVerifier(opts)
		if err != nil {
			return nil, fmt.Errorf("sev-snp verifier: %w", err)
		}
		snp = v
		if v.TrustsTestRoots() {
			set.testRoots = append(set.testRoots, attestation.PlatformSEVSNP)
		}
	}
	var td *tdx.Verifier
	if needTDX && s.Collateral == nil {
		return nil, errors.New("verifiers: TDX verification needs collateral (Intel's TCB info and QE identity): give a collateral directory, or let it fetch")
	}
	if needTDX {
		opts := tdx.Options{
			TestRootsPEM:       s.TDXTestRootsPEM,
			Now:                s.Now,
			CheckRevocation:    s.TDXRevocation,
			RevocationOptional: s.RevocationOptional,
		}
		if s.Collateral != nil {
			opts.Getter = s.Collateral.TDX()
		}
		v, err := tdx.NewVerifier(opts)
		if err != nil {
			return nil, fmt.Errorf("tdx verifier: %w", err)
		}
		td = v
		if v.TrustsTestRoots() {
			set.testRoots = append(set.testRoots, attestation.PlatformTDX)
		}
	}
	var az *azurevtpm.Verifier
	if slices.Contains(enabled, attestation.PlatformAzureSNPVTPM) || slices.Contains(enabled, attestation.PlatformAzureTDXVTPM) {
		opts := azurevtpm.Options{}
		if snp != nil {
			opts.SNP = snp
		}
		if td != nil {
			opts.TDX = td
		}
		v, err := azurevtpm.NewVerifier(opts)
		if err != nil {
			return nil, fmt.Errorf("azure vTPM verifier: %w", err)
		}
		az = v
	}
	for _, p := range enabled {
		switch p {
		case attestation.PlatformSEVSNP:
			set.byType[p] = snp
		case attestation.PlatformTDX:
			set.byType[p] = td
		case attestation.PlatformAzureSNPVTPM, attestation.PlatformAzureTDXVTPM:
			set.byType[p] = az
		}
	}
	return set, nil
}

// Verify implements attestation.Verifier.
func (s *Set) Verify(ctx context.Context, ev *attestation.Evidence) (*attestation.Claims, error) {
	if ev == nil {
		return nil, attestation.Errorf(attestation.ReasonMalformed, errors.New("no evidence"))
	}
	v, ok := s.byType[ev.Type]
	if !ok {
		return nil, attestation.Errorf(attestation.ReasonUnsupported, fmt.Errorf("evidence type %q is not accepted here", ev.Type))
	}
	return v.Verify(ctx, ev)
}

// Verifiers returns the verifier of each enabled platform.
func (s *Set) Verifiers() map[attestation.Platform]attestation.Verifier {
	out := make(map[attestation.Platform]attestation.Verifier, len(s.byType))
	for p, v := range s.byType {
		out[p] = v
	}
	return out
}

// TestRoots lists the vendors whose simulator roots are trusted, so the
// server can warn loudly.
func (s *Set) TestRoots() []attestation.Platform { return slices.Clone(s.testRoots) }
