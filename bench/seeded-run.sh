#!/usr/bin/env bash
# The memory run of issue #7: a 3-node cluster of separate `creditd serve`
# processes holding CUSTOMERS customers with GRANTS grants each, driven by
# `creditd bench`, with each node's resident memory (anonymous and
# file-backed apart) and Go heap profile taken after the load and after the
# verification (which reads every customer's balance on every node).
#
# The setup is seeded offline (`creditd bench seed`, a snapshot file) and
# restored into the first node; the other two join and catch up from that
# snapshot. Through the API the same setup would be 4 million single writes.
#
# Usage, from the repository root:
#   bench/seeded-run.sh [DIR]            # default DIR /tmp/creditd-seeded
# Environment: CUSTOMERS (1000000), GRANTS (3), RUN_ID (m1),
#   BENCH_FLAGS (--batch 1000 --concurrency 16 --mix report=100 --warmup 3s --duration 30s),
#   SERVE_FLAGS (extra flags for every node), KEEP=1 leaves the nodes running.
# DIR gets the binary, the snapshot (kept: a second run reuses it), the
# data dirs a b c, the nodes' logs, bench.json, rss.txt, rss-samples.txt and
# heap profiles (heap-load-*: as the load ends; heap-after-*: at the end,
# after a GC) with their tops in heap-*.txt.
set -euo pipefail

repo=$(cd "$(dirname "$0")/.." && pwd)
dir=${1:-/tmp/creditd-seeded}
customers=${CUSTOMERS:-1000000}
grants=${GRANTS:-3}
run_id=${RUN_ID:-m1}
bench_flags=${BENCH_FLAGS:---batch 1000 --concurrency 16 --mix report=100 --warmup 3s --duration 30s}
serve_flags=${SERVE_FLAGS:-}
snap="seed-$run_id-$customers-$grants.snap"

mkdir -p "$dir"
cd "$dir"
bin=$dir/creditd
(cd "$repo" && go build -o "$bin" ./cmd/creditd)

log() { echo "== $(date -u +%H:%M:%S) load $(cut -d' ' -f1-3 /proc/loadavg): $*" | tee -a rss.txt >&2; }

if [ ! -f "$snap" ]; then
  log "seeding $customers customers × $grants grants"
  /usr/bin/time -f "seed: %e s wall, %M KB peak RSS" "$bin" bench seed --customers "$customers" --grants "$grants" \
    --run-id "$run_id" --out "$snap" 2>&1 | grep -v '^seed: [0-9]* of' | tee -a rss.txt
fi

pids=()
stop_nodes() {
  [ "${KEEP:-0}" = 1 ] && { echo "nodes left running: ${pids[*]}" >&2; return; }
  for p in "${pids[@]}"; do kill -TERM "$p" 2>/dev/null || true; done
  for p in "${pids[@]}"; do wait "$p" 2>/dev/null || true; done
}
trap stop_nodes EXIT

# node NAME BASEPORT [serve flags…]: API on BASEPORT, raft +1, gossip +2, profiles +9.
node() {
  local name=$1 base=$2; shift 2
  # shellcheck disable=SC2086
  "$bin" serve --node-id "$name" --data-dir "$name" --rpc-addr "127.0.0.1:$base" --raft-addr "127.0.0.1:$((base + 1))" \
    --gossip-addr "127.0.0.1:$((base + 2))" --debug-addr "127.0.0.1:$((base + 9))" --log-level warn $serve_flags "$@" \
    > "$name.log" 2>&1 &
  pids+=($!)
  eval "pid_$name=$!"
}

applied() { # PORT: the node's applied index (0 while it does not answer)
  curl -fs -H 'Content-Type: application/json' -d '{}' "http://127.0.0.1:$1/creditd.v1.ClusterService/GetStatus" 2> /dev/null |
    sed -n 's/.*"appliedIndex":"\([0-9]*\)".*/\1/p' | grep . || echo 0
}

wait_ready() { # PORT [INDEX]: until /readyz answers 200 and the node has applied INDEX
  # A follower is "ready" once it knows a leader, even while it still
  # installs the leader's snapshot: the applied index says it has it.
  for _ in $(seq 1 1800); do
    if curl -fs "http://127.0.0.1:$1/readyz" > /dev/null && [ "$(applied "$1")" -ge "${2:-0}" ]; then return 0; fi
    sleep 1
  done
  echo "node on port $1 not ready (or not at index ${2:-0}) after 30 minutes" >&2
  return 1
}

declare -A port=([a]=17320 [b]=17330 [c]=17340)

rss() { # WHEN: per node, the kernel's resident set split and the Go runtime's view
  log "$1"
  for n in a b c; do
    local pid_var="pid_$n"
    printf '%s pid %s: %s\n' "$n" "${!pid_var}" "$(grep -E '^(VmHWM|VmRSS|RssAnon|RssFile|RssShmem)' "/proc/${!pid_var}/status" | tr -s ' \t' ' ' | paste -sd ' ')" | tee -a rss.txt
    curl -fs "http://127.0.0.1:$((port[$n] + 9))/debug/pprof/heap?debug=1" | grep -E '^# (HeapAlloc|HeapInuse|HeapSys|HeapReleased|Sys|NumGC) ' | paste -sd ' ' | sed "s/^/$n go: /" | tee -a rss.txt
    ls -l "$n"/fsm.db "$n"/raft.db 2>/dev/null | awk '{printf "%s %s bytes\n", $NF, $5}' | paste -sd ' ' | sed "s/^/$n files: /" | tee -a rss.txt
  done
}

heap() { # TAG [QUERY]: a heap profile of each node, and its top
  for n in a b c; do
    curl -fs "http://127.0.0.1:$((port[$n] + 9))/debug/pprof/heap${2:-}" > "heap-$1-$n.pb.gz"
    go tool pprof -top -inuse_space "$bin" "heap-$1-$n.pb.gz" 2>/dev/null | head -25 > "heap-$1-$n.txt"
  done
}

rm -rf a b c
log "restoring $snap into a"
# Flags before FILE: Go's flag parsing stops at the first argument that is not one.
"$bin" snapshot restore --data-dir a --node-id a --raft-addr 127.0.0.1:17321 --log-level warn "$snap"
node a "${port[a]}"
wait_ready "${port[a]}"
node b "${port[b]}" --join 127.0.0.1:17322
node c "${port[c]}" --join 127.0.0.1:17322
wait_ready "${port[b]}" "$(applied "${port[a]}")"
wait_ready "${port[c]}" "$(applied "${port[a]}")"
rss "3 nodes ready (b and c caught up from the snapshot)"

# Sample every node's resident set every 2 s while the bench runs:
# VmHWM is the peak of the total, but not of its anonymous part.
sampler() {
  while :; do
    for n in a b c; do
      local pid_var="pid_$n"
      awk -v n="$n" -v t="$(date +%s)" '/^(RssAnon|RssFile):/ {v[$1]=$2} END {print t, n, v["RssAnon:"], v["RssFile:"]}' "/proc/${!pid_var}/status"
    done
    sleep 2
  done
}
sampler > rss-samples.txt 2>/dev/null &
sampler_pid=$!
# Once the load ends (the bench logs "verify:"), a heap profile of each node
# without a forced GC: what the load left, bbolt's dirty pages included.
( until grep -q '^verify:' bench.log 2> /dev/null; do sleep 1; done; heap load ) &
watcher_pid=$!

log "bench --existing $run_id --customers $customers $bench_flags"
# The run reads every starting balance on the leader, drives the load, then
# verifies: every balance on the leader, then on each node (stale reads),
# so every node has touched all of its state by the end.
# shellcheck disable=SC2086
"$bin" bench --addr "http://127.0.0.1:${port[a]}" --existing "$run_id" --customers "$customers" $bench_flags --json \
  > bench.json 2> bench.log || { kill "$sampler_pid" "$watcher_pid"; cat bench.log >&2; exit 1; }
kill "$sampler_pid"
kill "$watcher_pid" 2> /dev/null || true # done long ago unless the run never verified
rss "after the bench run (load, then verification over all customers on every node)"
awk '{if ($3 > a[$2]) a[$2] = $3; if ($4 > f[$2]) f[$2] = $4} END {for (n in a) printf "%s peak RssAnon %d kB, peak RssFile %d kB (2 s samples)\n", n, a[n], f[n]}' \
  rss-samples.txt | sort | tee -a rss.txt
heap after '?gc=1'
log "done: $dir/rss.txt, bench.json, bench.log, heap-load-*.txt, heap-after-*.txt"
