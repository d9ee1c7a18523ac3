#!/usr/bin/env bash
# make ha-demo: three `kms serve` replicas sharing a three-member etcd
# cluster, on loopback.
#   1. a development etcd cluster (dev-etcd: 3 embedded members) and OIDC issuer
#   2. kms init once; three replica configurations on the etcd store
#   3. a rotation on replica 1 released by replica 2 (store watches)
#   4. the rotation leader killed: another replica takes over, the survivors
#      rotate and release
#   5. one etcd member (the raft leader) stopped: releases go on
#   6. the audit log the replicas share in etcd verified
# Prints "ha-demo: ok" last when every step behaved as expected.
set -euo pipefail
cd "$(dirname "$0")/.."
BIN="$PWD/bin"
WORK="$(mktemp -d "${TMPDIR:-/tmp}/attested-kms-ha-demo.XXXXXX")"
PIDS=()
cleanup() {
	for pid in "${PIDS[@]}"; do kill "$pid" 2>/dev/null || true; done
	wait 2>/dev/null || true
	rm -rf "$WORK"
}
trap cleanup EXIT
START=$SECONDS
step() { printf '\n== [%2ds] %s\n' "$((SECONDS - START))" "$*"; }
fail() { echo "ha-demo: FAILED: $*" >&2; for f in "$WORK"/*.log; do echo "--- $f" >&2; tail -20 "$f" >&2; done; exit 1; }

# wait_for_line FILE REGEX: waits up to 30 s for a line to appear.
wait_for_line() {
	for _ in $(seq 300); do
		if grep -Eq "$2" "$1" 2>/dev/null; then return 0; fi
		sleep 0.1
	done
	fail "timed out waiting for /$2/ in $1"
}

GOOD_MEASUREMENT=$(printf 'a1%.0s' $(seq 48))
AUDIENCE="api://attested-kms"
LEADING='leading: this replica runs rotation'

step "starting a 3-member development etcd cluster (dev-etcd) and the OIDC issuer on loopback"
"$BIN/dev-etcd" --members 3 --dir "$WORK/etcd" >"$WORK/etcd.log" 2>"$WORK/etcd-stderr.log" &
ETCD_PID=$!
PIDS+=("$ETCD_PID")
"$BIN/dev-oidc-issuer" --addr 127.0.0.1:0 >"$WORK/issuer.log" 2>&1 &
PIDS+=($!)
wait_for_line "$WORK/etcd.log" '^http://'
ENDPOINTS=$(head -1 "$WORK/etcd.log")
wait_for_line "$WORK/issuer.log" 'msg=serving'
BASE=$(head -1 "$WORK/issuer.log")
ISSUER=$(sed -n 's/.*msg=serving issuer=\([^ ]*\).*/\1/p' "$WORK/issuer.log" | head -1)
echo "etcd client endpoints $ENDPOINTS"
echo "issuer $ISSUER"

step "kms init once: TLS certificate, local KEK, nonce secret and policy shared by every replica"
"$BIN/kms" init --dir "$WORK/kms" --issuer "$ISSUER" --discovery "$BASE" --audience "$AUDIENCE" \
	--measurement "$GOOD_MEASUREMENT" --simulator --grpc-addr 127.0.0.1:0 --http-addr 127.0.0.1:0 >/dev/null
# Each replica's configuration sits next to config.yaml, so the relative
# paths (kek.key, tls.crt, nonce.sealed, policy.yaml, ...) name the same
# files; only the store settings and the admin socket differ.
etcd_list=$(sed 's/,/, /g' <<<"$ENDPOINTS")
for r in 1 2 3; do
	mkdir -p "$WORK/kms/r$r"
	awk -v r="$r" -v endpoints="$etcd_list" '
		/^store:/ {
			print "store:"
			print "  etcd:"
			print "    endpoints: [" endpoints "]"
			print "    prefix: /attested-kms/ha-demo/"
			print "    leader_ttl: 3s"
			print "    replica_id: replica" r
			skip = 1; next
		}
		skip && /^  / { next }
		{ skip = 0 }
		/^  admin_socket:/ { print "  admin_socket: r" r "/admin.sock"; next }
		/^  tick_interval:/ { print "  tick_interval: 200ms"; next }
		{ print }
	' "$WORK/kms/config.yaml" >"$WORK/kms/replica$r.yaml"
done
echo "replica 1 differs from the single-node configuration in:"
{ diff "$WORK/kms/config.yaml" "$WORK/kms/replica1.yaml" || true; } | sed -n "s/^> /  /p"
grep -q 'replica_id: replica1' "$WORK/kms/replica1.yaml" || fail "replica configuration not written"

declare -A KMS_PID GRPC
start_replica() {
	"$BIN/kms" serve --config "$WORK/kms/replica$1.yaml" --log-format text >"$WORK/replica$1.log" 2>&1 &
	KMS_PID[$1]=$!
	PIDS+=($!)
}
serving() {
	wait_for_line "$WORK/replica$1.log" 'msg="kms serving"'
	GRPC[$1]=$(sed -n 's/.*msg="kms serving" grpc=\([^ ]*\).*/\1/p' "$WORK/replica$1.log" | head -1)
	echo "replica $1: gRPC on ${GRPC[$1]}, pid ${KMS_PID[$1]}"
}
sock() { echo "$WORK/kms/r$1/admin.sock"; }

step "starting 3 kms serve replicas on the etcd store"
# Replica 1 first: it creates key set "default" and the audit key in etcd;
# the other two find them there.
start_replica 1
serving 1
start_replica 2
start_replica 3
serving 2
serving 3
for r in 1 2 3; do
	"$BIN/kms" audit public-key --socket "$(sock "$r")" --out "$WORK/kms/r$r/audit.pub"
done
cmp -s "$WORK/kms/r1/audit.pub" "$WORK/kms/r2/audit.pub" && cmp -s "$WORK/kms/r1/audit.pub" "$WORK/kms/r3/audit.pub" ||
	fail "replicas report different audit keys"
echo "audit public keys fetched (one key, shared through etcd)"

# leader: the replica whose log says it leads rotation and which still runs.
leader() {
	for r in "$@"; do
		if grep -q "$LEADING" "$WORK/replica$r.log"; then echo "$r"; return 0; fi
	done
	return 1
}
# wait_for_leader R...: waits up to 30 s for one of replicas R to lead.
wait_for_leader() {
	for _ in $(seq 300); do
		if leader "$@"; then return 0; fi
		sleep 0.1
	done
	fail "no replica among $* took the rotation leadership"
}

ENCLAVE=(--ca "$WORK/kms/tls.crt" --evidence simulated --sim-signer "$WORK/kms/sim-snp.pem"
	--sim-measurement "$GOOD_MEASUREMENT" --token-source imds --imds-endpoint "$BASE" --resource "$AUDIENCE")
# rotate R: a new active key through replica R's admin socket; sets KID.
rotate() {
	"$BIN/kms" keys rotate --socket "$(sock "$1")" | tee "$WORK/rotate.txt"
	KID=$(awk 'NR == 2 { print $2 }' "$WORK/rotate.txt")
	[ -n "$KID" ] || fail "kms keys rotate on replica $1 printed no kid"
}
# release R: the enclave releases the keys from replica R; the kid just
# rotated in must be among them. The rotation went to etcd through another
# replica, and R learns it from its store watch, which may trail the
# rotation's answer by a moment: a few tries are allowed, and counted.
release() {
	for try in $(seq 20); do
		if "$BIN/inference-client" keys fetch --kms "${GRPC[$1]}" "${ENCLAVE[@]}" >"$WORK/release.txt" 2>"$WORK/release-err.txt" &&
			grep -q " $KID " "$WORK/release.txt"; then
			cat "$WORK/release.txt"
			echo "replica $1 released kid $KID$([ "$try" -gt 1 ] && echo " (after $try tries)")"
			return 0
		fi
		sleep 0.1
	done
	cat "$WORK/release.txt" "$WORK/release-err.txt" >&2
	fail "replica $1 did not release kid $KID"
}

LEADER=$(wait_for_leader 1 2 3)
echo "rotation leader: replica $LEADER"
[ "$(grep -l "$LEADING" "$WORK"/replica?.log | wc -l)" -eq 1 ] || fail "more than one replica leads"

step "operator: rotate on replica 1 (kms keys rotate)"
rotate 1
step "enclave: release on replica 2 returns the same kid"
release 2

step "killing the rotation leader, replica $LEADER (SIGKILL: no resignation, its lease must expire)"
kill -KILL "${KMS_PID[$LEADER]}"
wait "${KMS_PID[$LEADER]}" 2>/dev/null || true
SURVIVORS=()
for r in 1 2 3; do [ "$r" = "$LEADER" ] || SURVIVORS+=("$r"); done
KILLED_AT=$SECONDS
NEW_LEADER=$(wait_for_leader "${SURVIVORS[@]}")
echo "replica $NEW_LEADER logs: $(grep -h "$LEADING" "$WORK/replica$NEW_LEADER.log" | sed 's/.*msg=/msg=/' | head -1) (within $((SECONDS - KILLED_AT))s, leader_ttl 3s)"
OTHER=${SURVIVORS[0]}
[ "$OTHER" = "$NEW_LEADER" ] && OTHER=${SURVIVORS[1]}

step "operator: rotate on the new leader, replica $NEW_LEADER; release on replica $OTHER"
rotate "$NEW_LEADER"
release "$OTHER"

step "stopping one etcd member (the raft leader)"
echo "(etcd's orderly stop: the member hands leadership over, then gives the replicas'"
echo " open watch streams up to its request timeout, about 6 s, before cutting them)"
kill -USR1 "$ETCD_PID"
wait_for_line "$WORK/etcd.log" '^(raft leader now|stop refused|no new raft leader)'
grep -q '^raft leader now ' "$WORK/etcd.log" || fail "dev-etcd did not stop a member and elect a new leader"
grep -E '^(stopped|raft leader now)' "$WORK/etcd.log" | sed 's/^/  etcd: /'
step "release on replica $NEW_LEADER and a rotation on replica $OTHER with 2 of 3 etcd members"
release "$NEW_LEADER"
rotate "$OTHER"
release "$NEW_LEADER"

step "stopping the replicas (SIGTERM: each signs a last checkpoint)"
for r in "${SURVIVORS[@]}"; do kill -TERM "${KMS_PID[$r]}"; done
for r in "${SURVIVORS[@]}"; do wait "${KMS_PID[$r]}" || fail "replica $r exited with status $?"; done

step "kms audit verify: the one hash-chained log the replicas appended to, in etcd"
ETCD_HOSTS=$(sed 's#http://##g' <<<"$ENDPOINTS")
out=$("$BIN/kms" audit verify --log "etcd://$ETCD_HOSTS/attested-kms/ha-demo/" --public-key "$WORK/kms/r1/audit.pub") ||
	fail "the shared audit log does not verify: $out"
echo "$out"
[[ "$out" == "audit: ok "* ]] || fail "audit verify did not print audit: ok"
"$BIN/kms" audit tail --db "etcd://$ETCD_HOSTS/attested-kms/ha-demo/" --lines 5 | sed 's/^/  /'

step "stopping etcd and the issuer"
for pid in "${PIDS[@]}"; do kill "$pid" 2>/dev/null || true; done
wait 2>/dev/null || true
PIDS=()

echo "ha-demo finished in $((SECONDS - START))s"
echo "ha-demo: ok"
