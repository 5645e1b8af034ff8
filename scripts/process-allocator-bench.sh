#!/usr/bin/env bash
# SPDX-License-Identifier: Apache-2.0
# The allocator benchmarks of Benchmarks/ProcessAllocator/alloc-bench.c (Larson-style
# server, producer/consumer, four threads, a realloc string builder, large-block churn)
# and a Swift program's own allocations (swift-workload.swift: objects, arrays,
# dictionaries, strings; the Swift runtime is loaded for every allocator there)
# under glibc, swift-mm (LD_PRELOAD=libmmmalloc.so) and each installed allocator:
# best of RUNS wall time and the peak RSS of that process, then ratios swift-mm ÷
# each other allocator and their geometric means. A second table subtracts each
# allocator's fixed peak RSS (the `idle` shape: one malloc and free, so its code,
# the libraries it loads and its initialisation; for swift-mm that is mostly the
# Swift runtime's shared libraries) to show what the workload itself costs.
# Usage: scripts/process-allocator-bench.sh [--hardening] [RUNS]   (default 3)
#   --hardening: swift-mm with MM_HARDENING=full against swift-mm with the default
#   (what the guarded mode costs), instead of against the other allocators.
set -euo pipefail
cd "$(dirname "$0")/.."
hardening=0; [[ "${1:-}" == --hardening ]] && { hardening=1; shift; }
runs="${1:-3}"
swift build -c release --product mmmalloc >&2
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
cc -O2 -pthread -o "$work/alloc-bench" Benchmarks/ProcessAllocator/alloc-bench.c
# The `swift` shape: a Swift program's own allocations (Benchmarks/ProcessAllocator/swift-workload.swift).
swiftc -O -o "$work/swift-workload" Benchmarks/ProcessAllocator/swift-workload.swift
find_library() { ldconfig -p 2>/dev/null | awk -v lib="$1" '$1 == lib && !found { print $NF; found = 1 }'; }
declare -A preload=([glibc]="" [swift-mm]="$PWD/.build/release/libmmmalloc.so")
declare -A mode=([swift-mm]=trap)
names=(swift-mm glibc)
if [[ $hardening == 1 ]]; then
    # The ratios are "swift-mm ÷ other": here swift-mm is the guarded mode, the other the default.
    preload[swift-mm-default]=${preload[swift-mm]}; mode[swift-mm]=full; mode[swift-mm-default]=trap
    names=(swift-mm swift-mm-default)
fi
[[ $hardening == 1 ]] || for pair in jemalloc:libjemalloc.so.2 tcmalloc:libtcmalloc_minimal.so.4 mimalloc:libmimalloc.so.2; do
    path=$(find_library "${pair#*:}")
    if [[ -n "$path" ]]; then preload[${pair%%:*}]=$path; names+=("${pair%%:*}"); else echo "(${pair%%:*} not installed: skipped)" >&2; fi
done
shapes=(larson prodcons threads realloc large swift idle)
# The allocators take turns run by run (A B C, A B C, ...), not all runs of one
# allocator in a row: a slow spell of the shared machine then falls on every
# allocator's runs alike instead of on one cell, and the best of each is kept.
for shape in "${shapes[@]}"; do
    declare -A best=()
    program=("$work/alloc-bench" "$shape"); [[ $shape == swift ]] && program=("$work/swift-workload")
    for _ in $(seq "$runs"); do
        for name in "${names[@]}"; do
            line=$(env LD_PRELOAD="${preload[$name]}" MM_HARDENING="${mode[$name]:-trap}" "${program[@]}")
            best[$name]=$(printf "%s\n%s\n" "${best[$name]:-}" "$line" | awk 'NF == 3' | sort -k2 -n | head -1)
        done
    done
    for name in "${names[@]}"; do echo "$shape $name ${best[$name]}" >> "$work/results"; done
    unset best
done
python3 - "$work/results" "${names[@]}" <<'PY'
import math, sys
rows = {}
for line in open(sys.argv[1]):
    shape, name, _, seconds, rss = line.split()
    rows[(shape, name)] = (float(seconds), int(rss))
names = sys.argv[2:]
shapes = [s for s in ["larson", "prodcons", "threads", "realloc", "large", "swift"] if (s, "swift-mm") in rows]
idle = {n: rows[("idle", n)][1] for n in names}
others = [n for n in names if n != "swift-mm"]
print("| shape | " + " | ".join(f"swift-mm time ÷ {n}" for n in others) + " | " + " | ".join(f"peak RSS ÷ {n}" for n in others) + " |")
print("|---|" + "---|" * (2 * len(others)))
logs = {n: ([], []) for n in others}
for s in shapes:
    mm = rows[(s, "swift-mm")]
    cells_t, cells_r = [], []
    for n in others:
        t, r = mm[0] / rows[(s, n)][0], mm[1] / rows[(s, n)][1]
        logs[n][0].append(math.log(t)); logs[n][1].append(math.log(r))
        cells_t.append(f"{t:.2f}"); cells_r.append(f"{r:.2f}")
    print(f"| {s} | " + " | ".join(cells_t) + " | " + " | ".join(cells_r) + " |")
print("| geometric mean | " + " | ".join(f"{math.exp(sum(logs[n][0]) / len(shapes)):.2f}" for n in others) + " | "
      + " | ".join(f"{math.exp(sum(logs[n][1]) / len(shapes)):.2f}" for n in others) + " |")
print()
# The C shapes only: the `swift` shape loads the Swift runtime under every allocator, so
# its total ratio above is already like for like, and a C program's idle peak is not its base.
c_shapes = [s for s in shapes if s != "swift"]
print("Peak RSS of the C shapes above each allocator's idle peak (" + ", ".join(f"{n} {idle[n] / 1024:.1f} MiB" for n in names) + "):")
print()
print("| shape | swift-mm above idle | " + " | ".join(f"÷ {n} above idle" for n in others) + " |")
print("|---|---|" + "---|" * len(others))
logs = {n: [] for n in others}
for s in c_shapes:
    mm = max(rows[(s, "swift-mm")][1] - idle["swift-mm"], 1024)
    cells = []
    for n in others:
        # At least 1 MiB above idle on both sides: smaller differences are page-granular noise.
        r = mm / max(rows[(s, n)][1] - idle[n], 1024)
        logs[n].append(math.log(r)); cells.append(f"{r:.2f}")
    print(f"| {s} | {mm / 1024:.1f} MiB | " + " | ".join(cells) + " |")
print("| geometric mean | | " + " | ".join(f"{math.exp(sum(logs[n]) / len(c_shapes)):.2f}" for n in others) + " |")
print()
print("absolute (best of runs): " + "; ".join(f"{s}: " + ", ".join(f"{n} {rows[(s, n)][0]:.3f} s {rows[(s, n)][1] >> 10} MiB" for n in names) for s in shapes))
PY
