#!/usr/bin/env bash
# SPDX-License-Identifier: Apache-2.0
# Instructions per operation of swift-mm's hot loops, counted by callgrind in
# a client package (Benchmarks/InstructionCount), so that the fast paths are
# inlined as in a user's module. Deterministic: the repeatable figure on a
# noisy machine. Each loop runs twice (N and 2N iterations); the difference
# divided by N is one iteration (allocation + free + loop), set-up cancelled.
# Usage: scripts/instructions.sh [N]   (default 100000)
set -euo pipefail
cd "$(dirname "$0")/.."
n="${1:-100000}"
command -v valgrind >/dev/null || { echo "valgrind is not installed (apt-get install valgrind)" >&2; exit 2; }
(cd Benchmarks/InstructionCount && swift build -c release >&2)
bin=$(cd Benchmarks/InstructionCount && swift build -c release --show-bin-path)/HotLoops
# valgrind 3.19 cannot read the DWARF 5 of release builds; the counts need no symbols.
stripped=$(mktemp)
trap 'rm -f "$stripped"' EXIT
cp "$bin" "$stripped" && strip "$stripped" && chmod +x "$stripped"
count() { valgrind --tool=callgrind --callgrind-out-file=/dev/null "$stripped" "$1" "$2" 2>&1 | awk '/Collected/ { print $4 }'; }
printf "%-18s %s\n" loop instructions_per_iteration
for loop in pair16 pair1k page0 page0_deallocate pair64k; do
    a=$(count "$loop" "$n")
    b=$(count "$loop" $((2 * n)))
    printf "%-18s %s\n" "$loop" $(( (b - a) / n ))
done
