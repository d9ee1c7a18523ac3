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
//	    sev_snp:                # evidence section; exactly one per rule (see below)
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
// The other evidence sections, each in place of sev_snp:
//
//	tdx:                                 # Intel TDX quote
//	  mrtd: [<96 hex>, ...]              # required, non-empty allow-list
//	  rtmr0: [<96 hex>, ...]             # optional allow-lists, rtmr0..rtmr3
//	  mrconfigid: [<96 hex>, ...]        # optional allow-list
//	  mrowner: [<96 hex>, ...]           # optional allow-list
//	  mrownerconfig: [<96 hex>, ...]     # optional allow-list
//	  mrseam: [<96 hex>, ...]            # optional allow-list (TDX module)
//	  allow_debug: false                 # default false (TD attributes bit 0)
//	  min_tee_tcb_svn: <32 hex>          # optional; 16 components, each a minimum
//	  tcb_statuses: [UpToDate]           # default [UpToDate]
//	  forbidden_advisories: [INTEL-SA-00837, ...]  # optional
//
//	azure_sev_snp_vtpm:                  # Azure confidential VM on SEV-SNP
//	  vtpm:                              # required
//	    secure_boot: true                # default true: secure boot required
//	    pcrs:                            # required, non-empty; SHA-256 bank
//	      7: [<64 hex>, ...]             # PCR index 0-23 -> allow-list
//	      11: [<64 hex>, ...]
//	    vm_unique_ids: [<GUID>, ...]     # optional, case-insensitive
//	  sev_snp:                           # optional; the sev_snp conditions, but
//	    measurements: [<96 hex>, ...]    # the measurement allow-list is optional
//
//	azure_tdx_vtpm:                      # Azure confidential VM on TDX
//	  vtpm: ...                          # as above
//	  tdx:                               # optional; the tdx conditions, but
//	    mrtd: [<96 hex>, ...]            # the mrtd allow-list is optional
//
// tcb_statuses takes Intel's names: UpToDate, SWHardeningNeeded,
// ConfigurationNeeded, ConfigurationAndSWHardeningNeeded, OutOfDate and
// OutOfDateConfigurationNeeded. Advisory ids are written INTEL-SA-nnnnn and
// compare case-insensitively.
//
// Rules are any-of: evaluation walks the rules in file order and the first
// rule whose conditions all hold grants. Conditions inside a rule, and
// values inside an optional field, are all-of across fields and any-of
// within one allow-list.
//
// Every rule must carry exactly one evidence section: sev_snp, tdx,
// azure_sev_snp_vtpm or azure_tdx_vtpm. A rule with only token conditions is
// rejected at parse time because it would release keys to anyone holding a
// token, without attestation. An evidence section only matches evidence of
// its platform: a sev_snp rule never grants to TDX evidence, nor to Azure
// SEV-SNP evidence although that carries an SNP report, because on Azure
// the report measures Microsoft's paravisor, not the workload.
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
//   - tdx.allow_debug defaults to false for the same reason: the debug bit
//     of the TD attributes lets the host read and write TD memory.
//   - tdx.tcb_statuses defaults to [UpToDate]. Any other status means Intel
//     knows of a weakness of the platform (an unpatched microcode or TDX
//     module, a configuration such as SMT that needs a judgment); a policy
//     accepts it only by naming it, ideally with forbidden_advisories for
//     the advisories the operator will not accept. "Revoked" cannot be
//     listed: verification refuses revoked levels.
//   - min_tee_tcb_svn is compared component by component, as Intel's TCB
//     levels are: each of the 16 bytes versions a different component, so
//     a packed comparison would let a newer component hide an older one.
//   - On Azure (azure_sev_snp_vtpm, azure_tdx_vtpm) the hardware report
//     measures the paravisor (HCL), which Microsoft builds and updates; the
//     workload's identity is in the vTPM's PCRs, which the paravisor's
//     report vouches for. So vtpm.pcrs is required and non-empty (a rule
//     without it would release to any Azure confidential VM), and the
//     hardware measurement is optional: pinning it means updating the
//     policy with every Azure paravisor update. secure_boot defaults to
//     true: without secure boot, the PCRs alone must exclude every boot
//     chain the operator has not vetted.
//   - An omitted hardware section inside an Azure section is the same as
//     an empty one: its defaults still apply to the hardware claims (no
//     debug guest, VMPL 0, TCB status UpToDate). Canonical form writes it
//     out.
//   - Optional allow-lists that are omitted accept any value. An allow-list
//     that is present must be non-empty, and an explicit null is rejected:
//     "host_data: []" or "host_data:" reads like "nothing allowed" but would
//     otherwise silently allow everything.
//   - The token section is optional because the release service has already
//     verified the token's signature, issuer trust and audience for the KMS;
//     token conditions narrow which identities may receive this key set.
//
// Parse is strict: unknown fields, duplicate keys, duplicate rule names,
// duplicate allow-list entries, malformed hex, wrong hex lengths, unknown
// TCB statuses, malformed advisory ids, PCR indices outside 0-23 or not
// in plain decimal ("07"), multiple YAML documents and inputs over MaxSize
// are errors that name the line and field.
//
// # Decisions
//
// Evaluate reports, for a denial, every failing condition of every rule
// that covers the evidence's platform (not only the first), so an operator
// can fix a policy or a deployment in one pass. Rules for other platforms
// are skipped silently; if no rule covers the platform, or no evidence was
// supplied, the decision carries a single policy-level denial (Rule "").
//
// Explain evaluates every rule (also those after the granting one) and
// reports each condition, by its grammar path (tdx.mrtd,
// azure_sev_snp_vtpm.vtpm.pcrs[7], token.tenant_ids), as held or failed,
// with the decision; `kms policy explain` prints its String form. Evaluate
// and Explain run the same code, so they cannot disagree; the failures an
// Explanation lists are exactly the Denials of a denying Decision.
//
// A Policy is immutable after Parse and safe for concurrent use.
package policy
