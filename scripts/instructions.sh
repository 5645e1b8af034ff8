#!/usr/bin/env bash
# SPDX-License-Identifier: Apache-2.0
# Instructions per operation of swift-mm's hot loops, counted by callgrind in
# a client package (Benchmarks/InstructionCount), so that the fast paths are
# inlined as in a user's module — and the same 16 B and 1 KiB pairs through
# malloc/free of glibc and of every other allocator installed (jemalloc,
# tcmalloc, mimalloc via LD_PRELOAD). Deterministic: the repeatable figure on
# a noisy machine. Each loop runs twice (N and 2N iterations); the difference
# divided by N is one iteration (allocation + free + loop), set-up cancelled.
# Last, `cpair16`: a C program's malloc(16) + free pair (Benchmarks/ProcessAllocator/c-pair.c)
# through libmmmalloc.so and through each other allocator: what a C caller pays,
# the entry into the allocator included.
# Usage: scripts/instructions.sh [--without-free-checks] [N]   (default 100000)
#   --without-free-checks builds swift-mm with MM_UNSAFE_NO_FREE_CHECKS (in a
#   scratch directory of its own): the object free fast path without its slot
#   and canary checks, to measure what the always-on hardening costs. Never
#   use that build for anything else.
set -euo pipefail
cd "$(dirname "$0")/.."
flags=(); scratch=.build
if [[ "${1:-}" == --without-free-checks ]]; then
    flags=(-Xswiftc -DMM_UNSAFE_NO_FREE_CHECKS); scratch=.build-unsafe-no-free-checks; shift
fi
n="${1:-100000}"
command -v valgrind >/dev/null || { echo "valgrind is not installed (apt-get install valgrind)" >&2; exit 2; }
(cd Benchmarks/InstructionCount && swift build -c release --scratch-path "$scratch" ${flags[@]+"${flags[@]}"} >&2)
bin=$(cd Benchmarks/InstructionCount && swift build -c release --scratch-path "$scratch" --show-bin-path)/HotLoops
# valgrind 3.19 cannot read the DWARF 5 of release builds; the counts need no symbols.
stripped=$(mktemp)
trap 'rm -f "$stripped"' EXIT
cp "$bin" "$stripped" && strip "$stripped" && chmod +x "$stripped"
count() {  # count PRELOAD LOOP ITERATIONS
    LD_PRELOAD="$1" valgrind --tool=callgrind --callgrind-out-file=/dev/null "$stripped" "$2" "$3" 2>&1 \
        | awk '/Collected/ { print $4 }'
}
per_iteration() { local a b; a=$(count "$1" "$2" "$n"); b=$(count "$1" "$2" $((2 * n))); echo $(( (b - a) / n )); }
find_library() { ldconfig -p 2>/dev/null | awk -v lib="$1" '$1 == lib && !found { print $NF; found = 1 }'; }

printf "%-32s %-10s %s\n" loop allocator instructions_per_iteration
for loop in pair16 pair1k page0 page0_deallocate pair64k pair64 pair64_charged pair64_beside_token_charging pair64_beside_closure_charging token; do
    printf "%-32s %-10s %s\n" "$loop" swift-mm "$(per_iteration "" "$loop")"
done
# A round of batch64 is 1000 objects allocated then freed in order: printed per object
# (fewer iterations: each is a thousand pairs).
per_object() { local a b m=$(( n / 1000 > 10 ? n / 1000 : 10 )); a=$(count "$1" "$2" "$m"); b=$(count "$1" "$2" $((2 * m))); echo $(( (b - a) / m / 1000 )); }
printf "%-32s %-10s %s\n" batch64/object swift-mm "$(per_object "" batch64)"
declare -A libraries=([jemalloc]=libjemalloc.so.2 [tcmalloc]=libtcmalloc_minimal.so.4 [mimalloc]=libmimalloc.so.2)
for allocator in glibc jemalloc tcmalloc mimalloc; do
    preload=""
    if [[ $allocator != glibc ]]; then
        preload=$(find_library "${libraries[$allocator]}")
        [[ -n "$preload" ]] || { echo "($allocator not installed: skipped)" >&2; continue; }
    fi
    for size in 16 1k; do
        printf "%-32s %-10s %s\n" "malloc$size" "$allocator" "$(per_iteration "$preload" "malloc$size")"
    done
    printf "%-32s %-10s %s\n" batch64/object "$allocator" "$(per_object "$preload" mallocbatch64)"
done

swift build -c release --product mmmalloc >&2
cpair=$(mktemp); mmmalloc=$(mktemp --suffix=.so)
trap 'rm -f "$stripped" "$cpair" "$mmmalloc"' EXIT
cc -O2 -o "$cpair" Benchmarks/ProcessAllocator/c-pair.c
cp .build/release/libmmmalloc.so "$mmmalloc" && strip -g "$mmmalloc"
count_c() { LD_PRELOAD="$1" valgrind --tool=callgrind --callgrind-out-file=/dev/null "$cpair" "$2" 2>&1 | awk '/Collected/ { print $4 }'; }
c_per_iteration() { local a b; a=$(count_c "$1" "$n"); b=$(count_c "$1" $((2 * n))); echo $(( (b - a) / n )); }
printf "%-32s %-10s %s\n" cpair16 swift-mm "$(c_per_iteration "$mmmalloc")"
for allocator in glibc jemalloc tcmalloc mimalloc; do
    preload=""
    if [[ $allocator != glibc ]]; then
        preload=$(find_library "${libraries[$allocator]}")
        [[ -n "$preload" ]] || continue
    fi
    printf "%-32s %-10s %s\n" cpair16 "$allocator" "$(c_per_iteration "$preload")"
done
