#!/usr/bin/env bash
# Issue #7's targets in one window: a creditd build against its own no-op
# ceiling (CREDITD_NOOP=true), alternated round by round (paired-run.sh):
# 1,000-event batches and single events at peak, then at half (and, for
# batches, a quarter) of the creditd median peak just measured.
#
# Usage, from anywhere:
#   bench/targets.sh OUTDIR CREDITD_BINARY [ROUNDS]   (ROUNDS: 3)
# Example:
#   go build -o /tmp/creditd ./cmd/creditd && bench/targets.sh /tmp/targets /tmp/creditd
# OUTDIR gets one directory per load (peak1000, peak1, half1000,
# quarter1000, half1), each with paired-run.sh's reports and log.txt, and
# targets.md: each target judged on the window's medians (cmd/benchtargets;
# MEMORY=DIR/rss.txt of a bench/seeded-run.sh run adds the memory target).
# About ten minutes with 3 rounds. WARMUP and DURATION (3s, 15s) shorten a
# trial.
set -euo pipefail

[ $# -ge 2 ] || { sed -n '2,16p' "$0" >&2; exit 2; }
out=$1 bin=$2 rounds=${3:-3}
run="$(dirname "$0")/paired-run.sh"
base="--warmup ${WARMUP:-3s} --duration ${DURATION:-15s} --mix report=100"
batches="$base --batch 1000 --concurrency 16"
singles="$base --batch 1 --concurrency 256"
variants=(creditd="$bin" noop="$bin:CREDITD_NOOP=true")

"$run" "$rounds" "$out/peak1000" "$batches" "${variants[@]}"
"$run" "$rounds" "$out/peak1" "$singles" "${variants[@]}"

# The median creditd events/s of a load's runs.
median() {
  for f in "$1"/creditd-*.json; do
    grep -o '"events_per_sec": [0-9.]*' "$f" | head -1 | cut -d' ' -f2
  done | sort -n | awk '{v[NR] = $1} END {print v[int((NR + 1) / 2)]}'
}
p1000=$(median "$out/peak1000") p1=$(median "$out/peak1")
# --rate is requests per second per run: events/s ÷ 1,000 events per request.
half1000=$(awk -v p="$p1000" 'BEGIN {printf "%.1f", p / 2000}')
quarter1000=$(awk -v p="$p1000" 'BEGIN {printf "%.1f", p / 4000}')
half1=$(awk -v p="$p1" 'BEGIN {printf "%d", p / 2}')
echo "rates (requests/s): half1000 $half1000 quarter1000 $quarter1000 half1 $half1" | tee "$out/rates.txt"

"$run" "$rounds" "$out/half1000" "$batches --rate $half1000" "${variants[@]}"
"$run" "$rounds" "$out/quarter1000" "$batches --rate $quarter1000" creditd="$bin"
"$run" "$rounds" "$out/half1" "$singles --rate $half1" "${variants[@]}"

# The verdict, from this window's reports alone.
repo=$(cd "$(dirname "$0")/.." && pwd)
# Paths as the repository sees them (relative where they are inside it).
from_repo() { realpath --relative-base="$repo" "$1"; }
memory=()
[ -n "${MEMORY:-}" ] && memory=(-memory "$(from_repo "$MEMORY")")
target_dir=$(from_repo "$out")
(cd "$repo" && go run ./cmd/benchtargets "${memory[@]}" "$target_dir") | tee "$out/targets.md"
