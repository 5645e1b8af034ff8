#!/usr/bin/env bash
# SPDX-License-Identifier: Apache-2.0
# The process allocator against real programs: each runs with glibc and with
# LD_PRELOAD=libmmmalloc.so, and the two outputs must be equal and the exit
# statuses 0. Then a Swift executable that links the mmmalloc product must
# find its own allocations in MemorySystem.process.
set -euo pipefail
cd "$(dirname "$0")/.."
swift build -c release --product mmmalloc >&2
swift build -c release --product mmctl >&2
lib="$PWD/.build/release/libmmmalloc.so"
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
cc -O2 -pthread -Wno-alloc-size-larger-than -o "$work/mmmalloc-check" Tests/ProcessAllocator/mmmalloc-check.c

compare() {  # compare NAME SERVED COMMAND...: glibc's output and exit status against swift-mm's;
             # SERVED=1: swift-mm must have served allocations (echo makes none after main).
             # HARDENING (environment): MM_HARDENING for the swift-mm run (default trap).
    local name=$1 served=$2; shift 2
    "$@" > "$work/$name.glibc" 2>&1 || { echo "$name failed with glibc" >&2; cat "$work/$name.glibc" >&2; exit 1; }
    timeout -s KILL 300 env LD_PRELOAD="$lib" MM_STATS=exit MM_HARDENING="${HARDENING:-trap}" "$@" > "$work/$name.mm" 2> "$work/$name.stats" \
        || { echo "$name failed under libmmmalloc" >&2; cat "$work/$name.mm" "$work/$name.stats" >&2; exit 1; }
    if ! diff -q "$work/$name.glibc" "$work/$name.mm" > /dev/null; then
        echo "$name: output differs under libmmmalloc" >&2; diff "$work/$name.glibc" "$work/$name.mm" | head -20 >&2; exit 1
    fi
    local pgalloc
    pgalloc=$(awk '$1 == "pgalloc" { total += $2 } END { print total + 0 }' "$work/$name.stats")  # every process of the command
    if [[ $served == 1 && ( -z "$pgalloc" || "$pgalloc" -eq 0 ) ]]; then
        echo "$name: swift-mm served nothing (pgalloc ${pgalloc:-missing})" >&2; exit 1
    fi
    echo "$name: same output, exit 0; swift-mm pgalloc ${pgalloc:-0}"
}

cc -O0 -Wno-free-nonheap-object -o "$work/mmmalloc-probe" Tests/ProcessAllocator/mmmalloc-probe.c

# Bad frees: trapped with a report by default, reported and survived with MM_HARDENING=report.
for probe in double-free interior misaligned double-free-large delayed-double-free; do
    if timeout -s KILL 60 env LD_PRELOAD="$lib" "$work/mmmalloc-probe" "$probe" > "$work/probe.out" 2> "$work/probe.err"; then
        echo "probe $probe: not detected (exit 0)" >&2; cat "$work/probe.out" "$work/probe.err" >&2; exit 1
    fi
    grep -q "swift-mm" "$work/probe.err" || { echo "probe $probe: no swift-mm report" >&2; cat "$work/probe.err" >&2; exit 1; }
    timeout -s KILL 60 env LD_PRELOAD="$lib" MM_HARDENING=report MM_VERBOSE=1 "$work/mmmalloc-probe" "$probe" > "$work/probe.out" 2> "$work/probe.err" \
        || { echo "probe $probe: MM_HARDENING=report did not survive" >&2; cat "$work/probe.err" >&2; exit 1; }
    grep -q survived "$work/probe.out" && grep -qi "hardening" "$work/probe.err" \
        || { echo "probe $probe: no report with MM_HARDENING=report" >&2; cat "$work/probe.err" >&2; exit 1; }
    echo "probe $probe: trapped with a report; reported and survived with MM_HARDENING=report"
done

# MM_HARDENING=full also catches overflows (red zones), underflows (a header and a guard
# word) and writes after free (poison, checked when the quarantine lets the block go, at
# the latest at exit), which the default mode does not: each with a report.
# scripts/security-probes.sh runs the wider suite.
for probe in overflow-1 overflow-32 memcpy-overflow use-after-free overflow-large; do
    status=0
    timeout -s KILL 60 env LD_PRELOAD="$lib" MM_HARDENING=full "$work/mmmalloc-probe" "$probe" > "$work/probe.out" 2> "$work/probe.err" || status=$?
    if [[ $status == 0 ]]; then echo "probe $probe: not caught with MM_HARDENING=full" >&2; cat "$work/probe.err" >&2; exit 1; fi
    grep -q "swift-mm" "$work/probe.err" || { echo "probe $probe: no swift-mm report" >&2; cat "$work/probe.err" >&2; exit 1; }
    echo "probe $probe: caught with a report with MM_HARDENING=full"
done

# MM_HARDENING=full scrubs a freed large allocation where its data most likely is: the
# pages of its header and its red zone (its first and last bytes).
timeout -s KILL 60 env LD_PRELOAD="$lib" MM_HARDENING=full "$work/mmmalloc-probe" large-read-after-free > "$work/probe.out" 2> "$work/probe.err" \
    && grep -q '^hidden$' "$work/probe.out" \
    || { echo "probe large-read-after-free: data readable after free with MM_HARDENING=full" >&2; cat "$work/probe.out" "$work/probe.err" >&2; exit 1; }
echo "probe large-read-after-free: first and last bytes scrubbed with MM_HARDENING=full"

# The bootstrap region that serves allocations made while glibc's functions are looked up
# (a dlsym that allocates), tested on its own: glibc 2.36's dlsym never reaches it.
cc -O1 -Wall -pthread -I Sources/CMMMalloc/include -o "$work/bootstrap-check" Tests/ProcessAllocator/bootstrap-check.c -ldl
timeout -s KILL 60 "$work/bootstrap-check" > "$work/bootstrap.out" 2>&1 && grep -q "^bootstrap region: ok$" "$work/bootstrap.out" \
    || { echo "bootstrap region check failed (or hung: a re-entered lookup that waits for itself)" >&2; cat "$work/bootstrap.out" >&2; exit 1; }
echo "bootstrap region: allocations during the lookup of glibc's functions are served, sized, moved and ignored by free"

# A bad setting is a message and the default, never a crash.
env LD_PRELOAD="$lib" MM_CAPACITY=lots MM_LIMIT=little MM_HARDENING=maybe MM_POLICY=eager MM_STATS=always \
    python3 -c 'print("ok")' > "$work/env.out" 2> "$work/env.err"
grep -q '^ok$' "$work/env.out" || { echo "bad settings broke the program" >&2; cat "$work/env.err" >&2; exit 1; }
for variable in MM_CAPACITY MM_LIMIT MM_HARDENING MM_POLICY MM_STATS; do
    grep -q "libmmmalloc: $variable=" "$work/env.err" || { echo "no message for a bad $variable" >&2; cat "$work/env.err" >&2; exit 1; }
done
echo "bad settings: one message each, defaults used"

# MM_LIMIT sets the process budget (R11): meminfo at exit shows it.
env LD_PRELOAD="$lib" MM_CAPACITY=1G MM_LIMIT=96M MM_STATS=exit python3 -c 'print("ok")' > "$work/limit.out" 2> "$work/limit.err"
grep -q '^ok$' "$work/limit.out" && grep -Eq '^MemLimit: +98304 kB' "$work/limit.err" \
    || { echo "MM_LIMIT=96M did not set the limit" >&2; cat "$work/limit.err" >&2; exit 1; }
echo "MM_LIMIT: the process budget is 96 MiB"

# A JSON and sqlite3 workload for python3.
python_workload='
import json, sqlite3
d = {"k%d" % i: list(range(i % 50)) for i in range(20000)}
s = json.dumps(d)
db = sqlite3.connect(":memory:")
db.execute("create table t(a, b)")
db.executemany("insert into t values (?, ?)", ((i, "x" * (i % 300)) for i in range(50000)))
print(len(s), len(json.loads(s)), db.execute("select count(*), sum(length(b)) from t").fetchone())'

compare c-program 1 "$work/mmmalloc-check"
c++ -O2 -pthread -o "$work/mmmalloc-cpp" Tests/ProcessAllocator/mmmalloc-cpp.cc
compare c++-program 1 "$work/mmmalloc-cpp"
compare echo 0 /bin/echo hello
compare python 1 python3 -c "$python_workload"
compare git 1 git log --oneline -20
if command -v sqlite3 > /dev/null; then
    compare sqlite3 1 sh -c 'printf "create table t(x); insert into t select value from generate_series(1, 100000); select count(*), sum(x) from t;\n" | sqlite3'
fi
compare mmctl-scenarios 1 ./.build/release/mmctl scenarios
# A Swift program of its own (class instances, arrays, dictionaries, strings): its first
# allocations come from inside the Swift runtime, some while it holds its own locks — the
# system must already exist then (creating it inside such a malloc waited for itself forever).
swiftc -O -o "$work/swift-workload" Benchmarks/ProcessAllocator/swift-workload.swift
compare swift-program 1 "$work/swift-workload" check
# The same programs with every allocation guarded (MM_HARDENING=full): correct programs run unchanged.
HARDENING=full compare c-program-full 1 "$work/mmmalloc-check"
HARDENING=full compare c++-program-full 1 "$work/mmmalloc-cpp"
HARDENING=full compare python-full 1 python3 -c "$python_workload"
HARDENING=full compare git-full 1 git log --oneline -20
HARDENING=full compare mmctl-scenarios-full 1 ./.build/release/mmctl scenarios
HARDENING=full compare swift-program-full 1 "$work/swift-workload" check
# Threads that come and go leave nothing behind: neither the peak RSS nor glibc's heap (where the
# allocator's own bookkeeping goes) grows with the threads that exited, by default and guarded.
cc -O2 -pthread -o "$work/thread-churn" Tests/ProcessAllocator/thread-churn.c -ldl
for mode in trap full; do
    timeout -s KILL 120 env LD_PRELOAD="$lib" MM_HARDENING=$mode "$work/thread-churn" \
        || { echo "thread churn (MM_HARDENING=$mode) left memory behind under libmmmalloc" >&2; exit 1; }
done
# The Swift flagship: its own swift-mm systems on top of a process that swift-mm serves
# (its timing-dependent tables differ run to run, so only its exit status counts).
timeout -s KILL 300 env LD_PRELOAD="$lib" ./.build/release/mmctl > "$work/flagship.mm" 2>&1 \
    || { echo "mmctl (the flagship) failed under libmmmalloc" >&2; tail -20 "$work/flagship.mm" >&2; exit 1; }
echo "mmctl flagship: exit 0 under libmmmalloc"

# mmmalloc.h from a C program linked with -lmmmalloc: scopes, policies, a shrinker under pressure.
cc -O2 -pthread -I Sources/CMMMalloc/public -o "$work/mmmalloc-api" Tests/ProcessAllocator/mmmalloc-api.c \
    -L .build/release -lmmmalloc -Wl,-rpath,"$PWD/.build/release"
MM_CAPACITY=256M timeout -s KILL 120 "$work/mmmalloc-api" > "$work/api.out" \
    || { echo "mmmalloc.h program failed" >&2; tail -5 "$work/api.out" >&2; exit 1; }
grep -q "mmmalloc.h: ok (the shrinker was called under pressure)" "$work/api.out" \
    || { echo "mmmalloc.h: the C shrinker was not called under pressure" >&2; tail -5 "$work/api.out" >&2; exit 1; }
echo "mmmalloc.h: scopes, policies, a C shrinker under pressure, statistics: ok"

(cd Examples/LinkedProcess && swift build -c release >&2 && timeout -s KILL 120 "$(swift build -c release --show-bin-path)/LinkedProcess")
echo "process allocator: all checks passed"
