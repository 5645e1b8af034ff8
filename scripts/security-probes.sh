#!/usr/bin/env bash
# SPDX-License-Identifier: Apache-2.0
# Security probes (Tests/ProcessAllocator/security-probes.c): 22 memory errors
# of the usual kinds, each in a process of its own, against glibc, libmmmalloc
# (MM_HARDENING=trap, the default, and MM_HARDENING=full), and jemalloc,
# tcmalloc and mimalloc when installed. A probe is caught when the process is
# stopped (a report and a trap, an abort, a fault) or, for the read probe,
# when the freed data cannot be read back.
# Usage: scripts/security-probes.sh [--check]
#   --check: exit 1 unless MM_HARDENING=full catches at least 90 % and the
#   default mode catches every double and invalid free (CI).
set -euo pipefail
cd "$(dirname "$0")/.."
check=0; [[ "${1:-}" == --check ]] && check=1
swift build -c release --product mmmalloc >&2
lib=$(swift build -c release --show-bin-path)/libmmmalloc.so
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
cc -O1 -w -o "$work/probes" Tests/ProcessAllocator/security-probes.c
probes=(double-free double-free-delayed double-free-interleaved invalid-free-stack invalid-free-unaligned invalid-free-far
        overflow-1 overflow-32 overflow-1m memcpy-overflow-1 memcpy-overflow-32 memcpy-overflow-1m
        underflow-1 underflow-32 underflow-1m memcpy-underflow-1 memcpy-underflow-32 memcpy-underflow-1m
        write-after-free zero-size-write zero-size-read read-after-free)
find_library() { ldconfig -p 2>/dev/null | awk -v lib="$1" '$1 == lib && !found { print $NF; found = 1 }'; }
names=(glibc swift-mm swift-mm-full); preloads=("" "$lib" "$lib"); modes=("" trap full)
for pair in jemalloc:libjemalloc.so.2 tcmalloc:libtcmalloc_minimal.so.4 mimalloc:libmimalloc.so.2; do
    path=$(find_library "${pair#*:}")
    if [[ -n "$path" ]]; then names+=("${pair%%:*}"); preloads+=("$path"); modes+=(""); fi
done
# caught|missed for one probe under one allocator.
run() {  # run PRELOAD MODE PROBE
    local out status
    set +e
    out=$(MM_HARDENING="$2" MM_CAPACITY=1G timeout -s KILL 30 env LD_PRELOAD="$1" "$work/probes" "$3" 2>/dev/null)
    status=$?
    set -e
    if [[ $status -eq 0 && ( "$out" == survived || "$out" == leaked ) ]]; then echo missed; else echo caught; fi
}
printf "%-22s" probe; for n in "${names[@]}"; do printf " %-13s" "$n"; done; echo
declare -A caught
for probe in "${probes[@]}"; do
    printf "%-22s" "$probe"
    for i in "${!names[@]}"; do
        r=$(run "${preloads[$i]}" "${modes[$i]}" "$probe")
        [[ $r == caught ]] && caught[$i]=$(( ${caught[$i]:-0} + 1 ))
        [[ $r == missed && ${names[$i]} == swift-mm && $probe == *free* && $probe != write-after-free && $probe != read-after-free ]] \
            && default_missed_free=1
        printf " %-13s" "$r"
    done
    echo
done
printf "%-22s" "caught (of ${#probes[@]})"; for i in "${!names[@]}"; do printf " %-13s" "${caught[$i]:-0}"; done; echo
full=${caught[2]:-0}
echo "swift-mm MM_HARDENING=full: $full of ${#probes[@]} caught ($(( 100 * full / ${#probes[@]} )) %)"
if [[ $check -eq 1 ]]; then
    [[ $(( 100 * full )) -ge $(( 90 * ${#probes[@]} )) ]] || { echo "FAIL: full mode catches fewer than 90 %" >&2; exit 1; }
    [[ -z "${default_missed_free:-}" ]] || { echo "FAIL: the default mode missed a double or invalid free" >&2; exit 1; }
fi
