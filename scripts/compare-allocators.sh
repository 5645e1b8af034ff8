#!/usr/bin/env bash
# SPDX-License-Identifier: Apache-2.0
# Runs `mmctl bench objects --json` once per allocator — glibc, then jemalloc,
# tcmalloc and mimalloc through LD_PRELOAD — and prints one table of ratios
# swift-mm / that allocator (lower is better, except remote_free and scaling).
# Installs the allocators with apt-get when they are missing.
set -euo pipefail
cd "$(dirname "$0")/.."
scale="${SCALE:-1}"

declare -A packages=([jemalloc]=libjemalloc2 [tcmalloc]=libtcmalloc-minimal4 [mimalloc]=libmimalloc2.0)
declare -A libraries=([jemalloc]=libjemalloc.so.2 [tcmalloc]=libtcmalloc_minimal.so.4 [mimalloc]=libmimalloc.so.2)

find_library() { ldconfig -p 2>/dev/null | awk -v lib="$1" '$1 == lib && !found { print $NF; found = 1 }'; }

missing=()
for name in jemalloc tcmalloc mimalloc; do
    [[ -n "$(find_library "${libraries[$name]}")" ]] || missing+=("${packages[$name]}")
done
if ((${#missing[@]})); then
    echo "installing ${missing[*]}" >&2
    sudo_cmd=""; [[ $(id -u) -ne 0 ]] && sudo_cmd="sudo"
    $sudo_cmd apt-get update -qq >&2 || true
    $sudo_cmd apt-get install -y -qq "${missing[@]}" >&2 || echo "warning: apt-get could not install ${missing[*]}" >&2
fi

swift build -c release --product mmctl >&2
mmctl=.build/release/mmctl
results=$(mktemp -d)
trap 'rm -rf "$results"' EXIT

columns=(glibc)
"$mmctl" bench objects --json --scale "$scale" > "$results/glibc.json"
for name in jemalloc tcmalloc mimalloc; do
    path=$(find_library "${libraries[$name]}")
    if [[ -z "$path" ]]; then echo "skipping $name: ${libraries[$name]} not found" >&2; continue; fi
    LD_PRELOAD="$path" "$mmctl" bench objects --json --scale "$scale" > "$results/$name.json"
    columns+=("$name")
done

python3 - "$results" "${columns[@]}" <<'PY'
import json, sys
directory, names = sys.argv[1], sys.argv[2:]
runs = {n: json.load(open(f"{directory}/{n}.json")) for n in names}
keys = list(runs[names[0]].keys())
higher_is_better = {"remote_free_vs_malloc", "two_thread_scaling"}
print("| figure | " + " | ".join(names) + " | vs best |")
print("|---|" + "---|" * (len(names) + 1))
for k in keys:
    values = [runs[n].get(k) for n in names]
    present = [v for v in values if v is not None]
    if k in ("two_thread_scaling", "two_thread_scaling_vs_control"):
        best = "-"  # swift-mm against itself (and its control): not a comparison
    else:
        best = f"{(min(present) if k in higher_is_better else max(present)):.3f}"
    print(f"| {k} | " + " | ".join("-" if v is None else f"{v:.3f}" for v in values) + f" | {best} |")
PY
