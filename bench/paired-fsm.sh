#!/usr/bin/env bash
# Alternated runs of the state machine's apply benchmarks in two or more test
# binaries (`go test -c -o BIN ./fsm/` at each commit to compare), and the
# median time per batch of each: see bench/paired-run.sh for why alternate.
#
# Usage:
#   bench/paired-fsm.sh ROUNDS 'BENCH REGEXP' NAME=TEST_BINARY[:VAR=VALUE] ...
# Example:
#   git worktree add /tmp/old <commit> && (cd /tmp/old && go test -c -o /tmp/old.test ./fsm/)
#   go test -c -o /tmp/new.test ./fsm/
#   bench/paired-fsm.sh 6 'Apply/batch_of_1000_events_over_1000_pools,_1_grant$' old=/tmp/old.test new=/tmp/new.test
set -euo pipefail

[ $# -ge 3 ] || { sed -n '2,12p' "$0" >&2; exit 2; }
rounds=$1 re=$2
shift 2
results=$(mktemp)
trap 'rm -f "$results"' EXIT
for r in $(seq "$rounds"); do
  for v in "$@"; do
    name=${v%%=*} rest=${v#*=}
    bin=${rest%%:*} envs=()
    [[ $rest == *:* ]] && envs=("${rest#*:}")
    env "${envs[@]}" "$bin" -test.run '^$' -test.bench "$re" -test.benchtime 100x |
      awk -v n="$name" '/^Benchmark/ {print n, $1, $3}' >> "$results"
  done
done
echo "load $(cut -d' ' -f1-3 /proc/loadavg) at the end; ms per op, median of $rounds alternated runs:"
sort -k2,2 -k1,1 -k3,3n "$results" | awk '
  {key = $2 " " $1; v[key, ++n[key]] = $3 / 1e6; if (!(key in seen)) {seen[key] = 1; order[++k] = key}}
  END {for (i = 1; i <= k; i++) {key = order[i]; c = n[key];
    m = (c % 2) ? v[key, (c + 1) / 2] : (v[key, c / 2] + v[key, c / 2 + 1]) / 2;
    printf "%-80s %8.2f ms  (min %.2f, max %.2f)\n", key, m, v[key, 1], v[key, c]}}'
