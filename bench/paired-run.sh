#!/usr/bin/env bash
# Alternated runs of `creditd bench --local 3` for two or more variants, and
# the median events/s of each. On a shared, noisy machine a single run of
# each variant says little (the same binary has measured 29k and 97k
# events/s minutes apart here); alternating them round by round puts every
# variant in the same windows.
#
# Usage, from anywhere:
#   bench/paired-run.sh ROUNDS OUTDIR "BENCH FLAGS" NAME=BINARY[:VAR=VALUE[:VAR=VALUE...]] ...
# Example: two builds, then one build with and without GOGC=200:
#   bench/paired-run.sh 8 /tmp/pairs "--warmup 3s --duration 15s --batch 1000 --concurrency 16 --mix report=100" \
#     old=/tmp/creditd-old new=/tmp/creditd-new
#   bench/paired-run.sh 6 /tmp/gc "--warmup 3s --duration 15s --batch 1000 --concurrency 16 --mix report=100" \
#     gogc100=/tmp/creditd gogc200=/tmp/creditd:GOGC=200
# OUTDIR gets each run's --json report (NAME-ROUND.json), its stderr and log.txt.
set -euo pipefail

[ $# -ge 4 ] || { sed -n '2,17p' "$0" >&2; exit 2; }
rounds=$1 out=$2 flags=$3
shift 3
mkdir -p "$out"
for r in $(seq "$rounds"); do
  for v in "$@"; do
    name=${v%%=*} rest=${v#*=}
    bin=${rest%%:*} envs=()
    [[ $rest == *:* ]] && IFS=: read -ra envs <<< "${rest#*:}"
    # shellcheck disable=SC2086
    env "${envs[@]}" "$bin" bench --local 3 $flags --json > "$out/$name-$r.json" 2> "$out/$name-$r.err"
    rate=$(grep -o '"events_per_sec": [0-9.]*' "$out/$name-$r.json" | head -1 | cut -d' ' -f2)
    echo "$(date -u +%H:%M:%S) load $(cut -d' ' -f1 /proc/loadavg) round $r $name: ${rate%.*} events/s" | tee -a "$out/log.txt"
  done
done
# median FIELD NAME: the median of the first FIELD (the total's) in NAME's reports.
median() {
  for f in "$out/$2"-*.json; do grep -o "\"$1\": [0-9.]*" "$f" | head -1 | cut -d' ' -f2; done |
    sort -n | awk '{a[NR] = $1} END {printf "%s %s %s", (NR % 2) ? a[(NR + 1) / 2] : (a[NR / 2] + a[NR / 2 + 1]) / 2, a[1], a[NR]}'
}
for v in "$@"; do
  name=${v%%=*}
  n=$(ls "$out/$name"-*.json | wc -l)
  read -r m lo hi <<< "$(median events_per_sec "$name")"
  read -r p50 _ _ <<< "$(median p50 "$name")"
  read -r p99 _ _ <<< "$(median p99 "$name")"
  printf "%s: median %.0f events/s over %d runs (min %.0f, max %.0f); latency medians p50 %.1f ms, p99 %.1f ms\n" \
    "$name" "$m" "$n" "$lo" "$hi" "$p50" "$p99" | tee -a "$out/log.txt"
done
