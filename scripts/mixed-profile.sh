#!/usr/bin/env bash
# SPDX-License-Identifier: Apache-2.0
# Where the mixed workload's time goes, in figures that repeat: callgrind's
# instruction count and its cache model (L1 data 32 KiB and L2 512 KiB, 8-way,
# 64-byte lines, as on the development VM's cores) for `mmctl mixed-worker` on
# swift-mm and on each installed allocator (glibc, then jemalloc, tcmalloc,
# mimalloc through LD_PRELOAD). Each runs with N and 2N steps per thread; the
# difference divided by the extra operations is one operation (an allocation or
# a free, with the workload's own bookkeeping, about 38 instructions), set-up
# cancelled. Prints instructions, L1 read misses and L2 read misses per
# operation. The model runs the two threads on one simulated cache, so the
# misses are the workload's own, not the machine's.
# Usage: scripts/mixed-profile.sh [--without-free-checks] [N]   (default 500000)
#   --without-free-checks: swift-mm built with MM_UNSAFE_NO_FREE_CHECKS (in a
#   scratch directory of its own, as scripts/instructions.sh does), to see what
#   the free fast path's checks cost; swift-mm's row only.
set -euo pipefail
cd "$(dirname "$0")/.."
flags=(); scratch=.build; only_swiftmm=0
if [[ "${1:-}" == --without-free-checks ]]; then
    flags=(-Xswiftc -DMM_UNSAFE_NO_FREE_CHECKS); scratch=.build-unsafe-no-free-checks; only_swiftmm=1; shift
fi
n="${1:-500000}"
command -v valgrind >/dev/null || { echo "valgrind is not installed (apt-get install valgrind)" >&2; exit 2; }
swift build -c release --product mmctl --scratch-path "$scratch" ${flags[@]+"${flags[@]}"} >&2
bin=$(swift build -c release --scratch-path "$scratch" --show-bin-path)/mmctl
# valgrind 3.19 cannot read the DWARF 5 of release builds; the counts need no symbols.
stripped=$(mktemp)
trap 'rm -f "$stripped"' EXIT
cp "$bin" "$stripped" && strip "$stripped" && chmod +x "$stripped"
find_library() { ldconfig -p 2>/dev/null | awk -v lib="$1" '$1 == lib && !found { print $NF; found = 1 }'; }
measure() {  # measure PRELOAD ALLOCATOR STEPS -> "instructions L1-read-misses L2-read-misses"
    LD_PRELOAD="$1" valgrind --tool=callgrind --cache-sim=yes --D1=32768,8,64 --LL=524288,8,64 \
        --callgrind-out-file=/dev/null "$stripped" mixed-worker --allocator "$2" --operations "$3" 2>&1 \
        | awk '/I *refs:/ { gsub(",", "", $4); i = $4 }
               /D1  misses:/ { gsub(/[(,]/, "", $6); d1 = $6 }
               /LLd misses:/ { gsub(/[(,]/, "", $6); ll = $6 }
               END { print i, d1, ll }'
}
printf "%-10s %14s %14s %14s\n" allocator instructions/op L1-misses/op L2-misses/op
row() {  # row NAME PRELOAD ALLOCATOR
    read -r i1 d1 l1 <<<"$(measure "$2" "$3" "$n")"
    read -r i2 d2 l2 <<<"$(measure "$2" "$3" $((2 * n)))"
    local ops=$((2 * n))  # two threads, n more steps each
    awk -v name="$1" -v i=$((i2 - i1)) -v d=$((d2 - d1)) -v l=$((l2 - l1)) -v ops="$ops" \
        'BEGIN { printf "%-10s %14.1f %14.2f %14.3f\n", name, i / ops, d / ops, l / ops }'
}
row swift-mm "" swift-mm
((only_swiftmm)) && exit 0
row glibc "" malloc
for pair in jemalloc:libjemalloc.so.2 tcmalloc:libtcmalloc_minimal.so.4 mimalloc:libmimalloc.so.2; do
    path=$(find_library "${pair#*:}")
    if [[ -n "$path" ]]; then row "${pair%%:*}" "$path" malloc; else echo "(${pair%%:*} not installed: skipped)" >&2; fi
done
