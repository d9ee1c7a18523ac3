#!/usr/bin/env bash
# make bench: evidence verification per platform with warm collateral, and
# the release path and request decryption against the crypto they cannot
# avoid, and the key store's start-up (10,000 keys) and per-key seal/unseal.
# Prints every benchmark, the per-platform verification times, then
# two ratios:
#   release path / (report signature check + token signature check + HPKE wrap)   target <= 1.3
#   request decryption with a cached key / bare HPKE open                          target <= 1.1
# Each benchmark runs COUNT times and the fastest run is used, which is the
# least disturbed by other load on the machine.
set -euo pipefail
cd "$(dirname "$0")/.."
COUNT="${COUNT:-5}"
BENCHTIME="${BENCHTIME:-1s}"
out="$(mktemp)"
trap 'rm -f "$out"' EXIT

run() { # package regex [benchtime]
	go test -run '^$' -bench "$2" -benchtime "${3:-$BENCHTIME}" -count "$COUNT" -benchmem "$1" | tee -a "$out"
}
run ./attestation/sevsnp/ '^(BenchmarkVerifyReportSignature|BenchmarkVerify)$'
run ./attestation/verifiers/ '^BenchmarkVerify$'
run ./token/ '^BenchmarkVerify$'
run ./hpke/ '^BenchmarkWrapX25519$'
run ./hpke/ohttp/ '^(BenchmarkBareHPKEOpen|BenchmarkDecapsulateRequest)$'
run ./server/ '^(BenchmarkReleasePath|BenchmarkReleaseKeyGRPC|BenchmarkDecryptRequest)$'
run ./keystore/ '^(BenchmarkSeal|BenchmarkUnseal)$'
# Each start-up opens and warms 10,000 keys: a few runs are enough.
run ./keystore/ '^BenchmarkStartup$' 3x

awk '
/^pkg: / { pkg = $2; sub(".*/attested-kms/", "", pkg) }
/^Benchmark/ {
	name = pkg "." $1; sub(/-[0-9]+$/, "", name)
	ns = $3 + 0
	if (!(name in best) || ns < best[name]) best[name] = ns
}
END {
	sig = best["attestation/sevsnp.BenchmarkVerifyReportSignature"]
	tok = best["token.BenchmarkVerify"]
	wrap = best["hpke.BenchmarkWrapX25519"]
	path = best["server.BenchmarkReleasePath"]
	open_ = best["hpke/ohttp.BenchmarkBareHPKEOpen"]
	dec = best["server.BenchmarkDecryptRequest"]
	if (!sig || !tok || !wrap || !path || !open_ || !dec) { print "bench: missing results" > "/dev/stderr"; exit 1 }
	printf "\n== evidence verification with warm collateral (fastest of each)\n"
	for (n in best) if (n ~ /^attestation\/verifiers\.BenchmarkVerify\//) {
		p = n; sub(/^attestation\/verifiers\.BenchmarkVerify\//, "", p)
		printf "%-20s %8.0f us\n", p, best[n] / 1000
	}
	printf "\n== key store (fastest of each)\n"
	printf "start-up, 10,000 keys in 10 key sets, all unsealed: %.2f s\n", best["keystore.BenchmarkStartup"] / 1e9
	printf "seal one key: %.0f us, unseal one key: %.0f us\n", best["keystore.BenchmarkSeal"] / 1000, best["keystore.BenchmarkUnseal"] / 1000
	printf "\n== ratios (fastest of each)\n"
	printf "release path %.0f ns / crypto steps %.0f ns (report signature %.0f + token signature %.0f + HPKE wrap %.0f) = %.2fx (target <= 1.3x)\n", path, sig + tok + wrap, sig, tok, wrap, path / (sig + tok + wrap)
	printf "request decryption %.0f ns / bare HPKE open %.0f ns = %.2fx (target <= 1.1x)\n", dec, open_, dec / open_
}' "$out"
