#!/usr/bin/env bash
# Runs every fuzz target in the module for a short time each. Targets are
# discovered from the source so a new one cannot be forgotten here.
set -euo pipefail
fuzztime="${1:-10s}"
cd "$(dirname "$0")/.."
status=0
while IFS= read -r file; do
	dir="./$(dirname "$file")"
	for target in $(grep -oE '^func (Fuzz[A-Za-z0-9_]+)\(' "$file" | sed -E 's/^func (Fuzz[A-Za-z0-9_]+)\(/\1/'); do
		echo "== $dir $target ($fuzztime)"
		if ! go test -run='^$' -fuzz="^${target}\$" -fuzztime="$fuzztime" -fuzzminimizetime=2s "$dir"; then
			status=1
		fi
	done
done < <(grep -rl --include='*_test.go' -E '^func Fuzz' . | sort)
exit $status
