#!/usr/bin/env bash
# What an apply may cost for issue #7's batch targets, in one window: a
# creditd build against its no-op ceiling with apply costs of 0 and more
# microseconds of CPU per event on every replica (--noop-event-cost),
# alternated round by round: 1,000-event batches at peak, then each variant
# at half of its own median peak. A cost whose peak is half the ceiling's
# (0 µs) and whose p99 at half of peak is 25 ms or less is one the targets
# allow; creditd's own figures say where its apply stands among them.
#
# Usage, from anywhere:
#   bench/apply-budget.sh OUTDIR CREDITD_BINARY [ROUNDS] [COSTS]   (ROUNDS: 3; COSTS: "0 500ns 1us 2us 3us")
# Example:
#   go build -o /tmp/creditd ./cmd/creditd && bench/apply-budget.sh /tmp/budget /tmp/creditd
# OUTDIR gets peak/ and half/, each with the runs' --json reports, and
# summary.txt. WARMUP and DURATION (3s, 15s) shorten a trial.
set -euo pipefail

[ $# -ge 2 ] || { sed -n '2,15p' "$0" >&2; exit 2; }
out=$1 bin=$2 rounds=${3:-3} costs=${4:-0 500ns 1us 2us 3us}
flags="--warmup ${WARMUP:-3s} --duration ${DURATION:-15s} --mix report=100 --batch 1000 --concurrency 16"
mkdir -p "$out/peak" "$out/half"

# variant NAME: the environment of the run (creditd, or the no-op at a cost).
variants=(creditd)
for c in $costs; do variants+=("noop$c"); done
envof() {
  case $1 in
    creditd) ;;
    noop*) echo "CREDITD_NOOP=true CREDITD_NOOP_EVENT_COST=${1#noop}" ;;
  esac
}
# run DIR NAME ROUND [FLAGS]: one run, its report DIR/NAME-ROUND.json.
run() {
  local dir=$1 name=$2 r=$3 extra=${4:-}
  # shellcheck disable=SC2046,SC2086
  env $(envof "$name") "$bin" bench --local 3 $flags $extra --json > "$dir/$name-$r.json" 2> "$dir/$name-$r.err"
  printf "%s load %s round %s %s %s: %.0f events/s, p99 %.1f ms\n" "$(date -u +%H:%M:%S)" "$(cut -d' ' -f1 /proc/loadavg)" \
    "$r" "$name" "$extra" "$(field events_per_sec "$dir/$name-$r.json")" "$(field p99 "$dir/$name-$r.json")" | tee -a "$dir/log.txt"
}
# field NAME FILE: the first (the total's) value of NAME in a report.
field() { grep -o "\"$1\": [0-9.]*" "$2" | head -1 | cut -d' ' -f2; }
# median FIELD DIR NAME: the median of FIELD over NAME's reports in DIR.
median() {
  for f in "$2/$3"-*.json; do field "$1" "$f"; done |
    sort -n | awk '{v[NR] = $1} END {print (NR % 2) ? v[(NR + 1) / 2] : (v[NR / 2] + v[NR / 2 + 1]) / 2}'
}

for r in $(seq "$rounds"); do
  for v in "${variants[@]}"; do run "$out/peak" "$v" "$r"; done
done
declare -A rate
for v in "${variants[@]}"; do
  # --rate is requests per second: half the events/s over 1,000 events each.
  rate[$v]=$(awk -v p="$(median events_per_sec "$out/peak" "$v")" 'BEGIN {printf "%.1f", p / 2000}')
done
for r in $(seq "$rounds"); do
  for v in "${variants[@]}"; do run "$out/half" "$v" "$r" "--rate ${rate[$v]}"; done
done

ceiling=$(median events_per_sec "$out/peak" noop0)
{
  echo "variant, peak events/s (median of $rounds), share of the no-op ceiling, p99 at half of its peak (median), p50 there"
  for v in "${variants[@]}"; do
    peak=$(median events_per_sec "$out/peak" "$v")
    awk -v v="$v" -v p="$peak" -v c="$ceiling" -v p99="$(median p99 "$out/half" "$v")" -v p50="$(median p50 "$out/half" "$v")" \
      'BEGIN {printf "%s: %.0f events/s, %.0f %% of the ceiling; at half of peak p99 %.1f ms, p50 %.1f ms\n", v, p, 100 * p / c, p99, p50}'
  done
} | tee "$out/summary.txt"
