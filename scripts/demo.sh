#!/usr/bin/env bash
# make demo: the whole product on one machine, on loopback.
#   1. a development KMS (kms init + kms serve: bbolt store, local KEK, TLS)
#   2. a real OIDC issuer with an Azure IMDS-style managed-identity endpoint
#   3. an end user encrypting a request to the published key (RFC 9458)
#   4. an enclave (simulated SEV-SNP) releasing the key and decrypting it
#   5. a release refused because the measurement is not in the policy
#   6. recorded Azure vTPM evidence verified offline, an altered copy refused
#   7. a KEK created and tested in a SoftHSM2 token
# Prints "demo: ok" last when every step behaved as expected.
set -euo pipefail
cd "$(dirname "$0")/.."
BIN="$PWD/bin"
WORK="$(mktemp -d "${TMPDIR:-/tmp}/attested-kms-demo.XXXXXX")"
PIDS=()
cleanup() {
	for pid in "${PIDS[@]}"; do kill "$pid" 2>/dev/null || true; done
	wait 2>/dev/null || true
	rm -rf "$WORK"
}
trap cleanup EXIT
step() { printf '\n== %s\n' "$*"; }
fail() { echo "demo: FAILED: $*" >&2; for f in "$WORK"/*.log; do echo "--- $f" >&2; tail -20 "$f" >&2; done; exit 1; }

# wait_for_line FILE REGEX: waits up to 30 s for a line to appear.
wait_for_line() {
	for _ in $(seq 300); do
		if grep -Eq "$2" "$1" 2>/dev/null; then return 0; fi
		sleep 0.1
	done
	fail "timed out waiting for /$2/ in $1"
}

GOOD_MEASUREMENT=$(printf 'a1%.0s' $(seq 48))
BAD_MEASUREMENT=$(printf 'b2%.0s' $(seq 48))
AUDIENCE="api://attested-kms"

step "starting a development OIDC issuer (Azure AD stand-in) on loopback"
"$BIN/dev-oidc-issuer" --addr 127.0.0.1:0 >"$WORK/issuer.log" 2>&1 &
PIDS+=($!)
wait_for_line "$WORK/issuer.log" 'msg=serving'
BASE=$(head -1 "$WORK/issuer.log")
ISSUER=$(sed -n 's/.*msg=serving issuer=\([^ ]*\).*/\1/p' "$WORK/issuer.log" | head -1)
echo "issuer $ISSUER (discovery and IMDS endpoint at $BASE)"

step "kms init: configuration, self-signed TLS certificate, local KEK, key set 'default'"
"$BIN/kms" init --dir "$WORK/kms" --issuer "$ISSUER" --discovery "$BASE" --audience "$AUDIENCE" \
	--measurement "$GOOD_MEASUREMENT" --simulator --grpc-addr 127.0.0.1:0 --http-addr 127.0.0.1:0
echo "release policy:"; sed 's/^/  /' "$WORK/kms/policy.yaml"

step "kms serve"
"$BIN/kms" serve --config "$WORK/kms/config.yaml" --log-format text >"$WORK/kms.log" 2>&1 &
PIDS+=($!)
wait_for_line "$WORK/kms.log" 'msg="kms serving"'
GRPC=$(sed -n 's/.*msg="kms serving" grpc=\([^ ]*\).*/\1/p' "$WORK/kms.log" | head -1)
HTTP=$(sed -n 's/.*msg="kms serving".* http=\([^ ]*\).*/\1/p' "$WORK/kms.log" | head -1)
echo "gRPC on $GRPC, HTTP on $HTTP"
"$BIN/kms" keys list --socket "$WORK/kms/admin.sock"

step "end user: fetch /.well-known/ohttp-keys and encrypt a request"
REQUEST="What is the capital of Karnataka? (request $(date +%s))"
printf '%s' "$REQUEST" | "$BIN/inference-client" encrypt --url "https://$HTTP" --ca "$WORK/kms/tls.crt" --out "$WORK/request.ohttp"
echo "encapsulated request: $(wc -c <"$WORK/request.ohttp") bytes"

ENCLAVE=(--kms "$GRPC" --ca "$WORK/kms/tls.crt" --evidence simulated --sim-signer "$WORK/kms/sim-snp.pem"
	--token-source imds --imds-endpoint "$BASE" --resource "$AUDIENCE")

step "enclave: release the keys with simulated SEV-SNP evidence (measurement ${GOOD_MEASUREMENT:0:12}...)"
"$BIN/inference-client" keys fetch "${ENCLAVE[@]}" --sim-measurement "$GOOD_MEASUREMENT"

step "enclave: decrypt the request with the released key"
GOT=$("$BIN/inference-client" decrypt "${ENCLAVE[@]}" --sim-measurement "$GOOD_MEASUREMENT" --in "$WORK/request.ohttp")
echo "decrypted: $GOT"
[ "$GOT" = "$REQUEST" ] || fail "decrypted request differs from what the end user sent"

step "enclave with another measurement (${BAD_MEASUREMENT:0:12}...): the release must be denied"
if "$BIN/inference-client" keys fetch "${ENCLAVE[@]}" --sim-measurement "$BAD_MEASUREMENT" 2>"$WORK/denied.txt"; then
	fail "release with a measurement outside the policy succeeded"
fi
cat "$WORK/denied.txt"
grep -q 'PermissionDenied' "$WORK/denied.txt" || fail "denial is not PermissionDenied"
grep -q 'POLICY_DENIED' "$WORK/denied.txt" || fail "denial does not carry reason POLICY_DENIED"
grep -q 'measurement' "$WORK/denied.txt" || fail "denial does not name the measurement"

step "operator: verify recorded Azure vTPM evidence (TDX) offline, at its time"
FIX=test/fixtures
"$BIN/kms" evidence verify --type azure-tdx-vtpm --evidence "$FIX/azure/tdx-vtpm.coco.json" \
	--test-roots "$FIX/tdx/simulated/roots.pem" --collateral "$FIX/tdx/simulated/collateral" \
	--offline --at 2026-01-01T01:00:00Z >"$WORK/claims.json" || fail "recorded Azure TDX vTPM evidence did not verify"
grep -E '"(platform|revocation|tcb_status|secure_boot)"' "$WORK/claims.json" | sed 's/^ */  /'
echo "and an altered copy (one PCR value changed) is rejected:"
sed 's/"pcrs":\["\(.\)/"pcrs":["f/' "$FIX/azure/tdx-vtpm.coco.json" >"$WORK/altered.json"
cmp -s "$FIX/azure/tdx-vtpm.coco.json" "$WORK/altered.json" && fail "could not alter the fixture"
if "$BIN/kms" evidence verify --type azure-tdx-vtpm --evidence "$WORK/altered.json" \
	--test-roots "$FIX/tdx/simulated/roots.pem" --collateral "$FIX/tdx/simulated/collateral" \
	--offline --at 2026-01-01T01:00:00Z 2>"$WORK/altered.txt"; then
	fail "altered evidence verified"
fi
sed 's/^/  /' "$WORK/altered.txt"
grep -q EVIDENCE_INCONSISTENT "$WORK/altered.txt" || fail "altered evidence not rejected as EVIDENCE_INCONSISTENT"

step "customer's HSM: create a KEK in a SoftHSM2 token and test it (the root of the key hierarchy)"
if command -v softhsm2-util >/dev/null && [ -e /usr/lib/softhsm/libsofthsm2.so ]; then
	mkdir -p "$WORK/hsm/tokens"
	printf 'directories.tokendir = %s\nobjectstore.backend = file\nlog.level = ERROR\n' "$WORK/hsm/tokens" >"$WORK/hsm/softhsm2.conf"
	export SOFTHSM2_CONF="$WORK/hsm/softhsm2.conf"
	printf '%s' "demo-pin-$$" >"$WORK/hsm/pin" && chmod 600 "$WORK/hsm/pin"
	softhsm2-util --init-token --free --label kms-demo --pin "demo-pin-$$" --so-pin "demo-so-$$" >/dev/null
	HSM_KEK="pkcs11:token=kms-demo;object=kek;type=secret-key?module-path=/usr/lib/softhsm/libsofthsm2.so&pin-source=file:$WORK/hsm/pin"
	"$BIN/kms" kek create --kek "$HSM_KEK"
	"$BIN/kms" kek test --kek "$HSM_KEK" | tee "$WORK/kek-test.txt"
	grep -q '^kek: ok ' "$WORK/kek-test.txt" || fail "kms kek test did not print kek: ok"
else
	echo "(SoftHSM2 not installed: skipped; apt-get install softhsm2)"
fi

step "the KMS's decision log (one line per release, no secrets)"
grep 'msg=release' "$WORK/kms.log" | sed 's/^/  /'

step "stopping"
for pid in "${PIDS[@]}"; do kill "$pid" 2>/dev/null || true; done
wait 2>/dev/null || true
PIDS=()
echo "demo: ok"
