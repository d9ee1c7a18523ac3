package main

import (
	"bytes"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"strings"

	"github.com/spf13/cobra"

	"github.com/attested-kms/attested-kms/attestation"
	"github.com/attested-kms/attested-kms/attestation/collateral"
	"github.com/attested-kms/attested-kms/attestation/verifiers"
	"github.com/attested-kms/attested-kms/policy"
)

// newPolicyExplainCmd is `kms policy explain`: the operator's view of how a
// policy judges one workload, condition by condition.
func newPolicyExplainCmd() *cobra.Command {
	var policyFile, tokenFile, collateralDir string
	var in evidenceInput
	var offline bool
	cmd := &cobra.Command{
		Use:   "explain",
		Short: "Show, per rule, which conditions hold for given evidence and token",
		Long: `explain evaluates a release policy against one workload's evidence and
token and prints, for every rule, each condition that held or failed, then
the decision the KMS would take.

--evidence is either the claims JSON printed by "kms evidence verify", or an
evidence file, which is then verified first exactly as "kms evidence verify"
does (give --type, and --at, --collateral, --offline, --test-roots as
needed). --token is a JWT or a JSON object of claims. The token's signature
and issuer are NOT checked here (the KMS checks them before the policy);
only its claims are compared with the policy's token conditions.

Exit status: 0 granted, 3 denied, 2 evidence rejected, 1 usage errors.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			pb, err := os.ReadFile(policyFile)
			if err != nil {
				return err
			}
			p, err := policy.Parse(pb)
			if err != nil {
				return fmt.Errorf("%s: invalid policy: %w", policyFile, err)
			}
			var input policy.Input
			if in.file != "" {
				if input.Evidence, err = explainClaims(cmd, &in, collateralDir, offline); err != nil {
					return err
				}
			}
			if tokenFile != "" {
				if input.Token, err = tokenClaims(tokenFile); err != nil {
					return err
				}
			}
			ex := p.Explain(input)
			if _, err := ex.WriteTo(cmd.OutOrStdout()); err != nil {
				return err
			}
			if !ex.Decision.Allowed {
				return &exitError{code: 3, err: errors.New("denied")}
			}
			return nil
		},
	}
	in.register(cmd, false)
	f := cmd.Flags()
	f.StringVar(&policyFile, "policy", "", "release policy file (required)")
	f.StringVar(&tokenFile, "token", "", "access token (JWT) or JSON claims file")
	f.StringVar(&collateralDir, "collateral", "", "collateral directory (when --evidence is an evidence file)")
	f.BoolVar(&offline, "offline", false, "fetch nothing when verifying an evidence file")
	_ = cmd.MarkFlagRequired("policy")
	return cmd
}

// explainClaims reads claims JSON, or verifies an evidence file.
func explainClaims(cmd *cobra.Command, in *evidenceInput, collateralDir string, offline bool) (*attestation.Claims, error) {
	data, err := readBounded(in.file, 1<<20)
	if err != nil {
		return nil, err
	}
	var probe struct {
		Platform attestation.Platform `json:"platform"`
	}
	if json.Unmarshal(data, &probe) == nil && probe.Platform != "" {
		var c attestation.Claims
		dec := json.NewDecoder(bytes.NewReader(data))
		dec.DisallowUnknownFields()
		if err := dec.Decode(&c); err != nil {
			return nil, fmt.Errorf("%s: claims JSON: %w", in.file, err)
		}
		return &c, nil
	}
	if in.typ == "" {
		return nil, fmt.Errorf("%s is not claims JSON; give --type to verify it as evidence", in.file)
	}
	ev, now, err := in.load()
	if err != nil {
		return nil, err
	}
	s, err := in.settings(now)
	if err != nil {
		return nil, err
	}
	cc := collateral.Config{Dir: collateralDir, Offline: offline, Now: now}
	s.RevocationOptional = offline
	if !offline || collateralDir != "" {
		if s.Collateral, err = collateral.New(cc); err != nil {
			return nil, err
		}
	}
	set, err := verifiers.New(s)
	if err != nil {
		return nil, err
	}
	claims, err := set.Verify(cmd.Context(), ev)
	if err != nil {
		return nil, &exitError{code: exitRejected, err: oneLine(fmt.Errorf("evidence rejected: %w", err))}
	}
	return claims, nil
}

// tokenClaims decodes a JWT's payload, unverified, or a JSON claims object.
func tokenClaims(path string) (map[string]any, error) {
	data, err := readBounded(path, 64<<10)
	if err != nil {
		return nil, err
	}
	text := strings.TrimSpace(string(data))
	payload := []byte(text)
	if !strings.HasPrefix(text, "{") {
		parts := strings.Split(text, ".")
		if len(parts) != 3 {
			return nil, fmt.Errorf("%s: neither a JWT (three dot-separated parts) nor a JSON object", path)
		}
		if payload, err = base64.RawURLEncoding.DecodeString(parts[1]); err != nil {
			return nil, fmt.Errorf("%s: JWT payload: %w", path, err)
		}
	}
	dec := json.NewDecoder(bytes.NewReader(payload))
	dec.UseNumber()
	var claims map[string]any
	if err := dec.Decode(&claims); err != nil {
		return nil, fmt.Errorf("%s: token claims: %w", path, err)
	}
	return claims, nil
}
