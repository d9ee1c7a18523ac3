// Package policy parses and evaluates key release policies.
//
// A release policy belongs to one key set. It decides, from verified
// attestation claims and verified Azure AD (Entra ID) token claims, whether
// a workload may receive that key set's private keys. Signature checks on the
// evidence and the token happen before evaluation, elsewhere; this package
// only compares facts that are already trusted against the operator's rules.
//
// # Grammar (version 1)
//
//	version: 1                  # required; the only version understood
//	rules:                      # required, non-empty; ANY-OF
//	  - name: prod-inference    # required, unique, 1-64 of [A-Za-z0-9._-]
//	    sev_snp:                # evidence section; exactly one per rule
//	      measurements: [<96 hex>, ...]  # required, non-empty allow-list
//	      host_data: [<64 hex>, ...]     # optional allow-list
//	      family_ids: [<32 hex>, ...]    # optional allow-list
//	      image_ids: [<32 hex>, ...]     # optional allow-list
//	      min_tcb:                       # optional; compared with the REPORTED TCB
//	        bootloader: 3
//	        tee: 0
//	        snp: 8
//	        microcode: 115
//	        fmc: 0                       # Turin and later; omit elsewhere
//	      allow_debug: false             # default false
//	      vmpl: [0]                      # default [0]
//	      min_guest_svn: 1               # optional
//	    token:                  # optional token section; ALL-OF
//	      issuers: [...]        # iss, exact
//	      audiences: [...]      # aud (string or array), exact; any value may match
//	      tenant_ids: [...]     # tid, GUID, case-insensitive
//	      object_ids: [...]     # oid, GUID, case-insensitive
//	      app_ids: [...]        # appid (v1 tokens) or azp (v2), GUID, case-insensitive
//	      mi_resource_ids: [...] # xms_mirid, case-insensitive
//	      claims:               # exact match on any other claim
//	        xms_az_rid: "..."   # string, number or bool; an array claim
//	                            # matches when it contains the value
//
// Rules are any-of: evaluation walks the rules in file order and the first
// rule whose conditions all hold grants. Conditions inside a rule, and
// values inside an optional field, are all-of across fields and any-of
// within one allow-list.
//
// Every rule must carry exactly one evidence section (today only sev_snp;
// tdx and azure_vtpm sections will sit beside it). A rule with only token
// conditions is rejected at parse time because it would release keys to
// anyone holding a token, without attestation. An evidence section only
// matches evidence of its platform: a sev_snp rule never grants to TDX
// evidence.
//
// # Defaults and why
//
//   - allow_debug defaults to false: a debug guest lets the host read and
//     write guest memory, so its attestation says nothing about key secrecy.
//   - vmpl defaults to [0]: a report requested from a less privileged VMPL
//     is vouched for only by that level, not by the most privileged code of
//     the guest. Paravisor deployments that need another level list it.
//   - min_tcb is compared part by part (not as a packed integer) with the
//     REPORTED TCB, the TCB the signing VCEK was derived from and therefore
//     the one the signature chain vouches for. An omitted part has minimum 0.
//   - Optional allow-lists that are omitted accept any value. An allow-list
//     that is present must be non-empty, and an explicit null is rejected:
//     "host_data: []" or "host_data:" reads like "nothing allowed" but would
//     otherwise silently allow everything.
//   - The token section is optional because the release service has already
//     verified the token's signature, issuer trust and audience for the KMS;
//     token conditions narrow which identities may receive this key set.
//
// Parse is strict: unknown fields, duplicate keys, duplicate rule names,
// duplicate allow-list entries, malformed hex, wrong hex lengths, multiple
// YAML documents and inputs over MaxSize are errors that name the line and
// field.
//
// # Decisions
//
// Evaluate reports, for a denial, every failing condition of every rule
// that covers the evidence's platform (not only the first), so an operator
// can fix a policy or a deployment in one pass. Rules for other platforms
// are skipped silently; if no rule covers the platform, or no evidence was
// supplied, the decision carries a single policy-level denial (Rule "").
//
// A Policy is immutable after Parse and safe for concurrent use.
package policy
