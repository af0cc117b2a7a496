#!/bin/bash
# One run per row, the current binary; compare rows with each other.
out=/tmp/s7/grow
base="--local 3 --warmup 3s --duration 15s --json --mix report=100"
run() { name=$1; shift
  /tmp/s7/creditd bench $base "$@" > $out/$name.json 2> $out/$name.err
  echo "$(date -u +%H:%M:%S) load $(cut -d' ' -f1 /proc/loadavg) $name $*: $(grep -o '"events_per_sec": [0-9.]*' $out/$name.json | head -1)" | tee -a $out/log.txt
}
run b1000-start --batch 1000 --concurrency 16
run b1 --batch 1 --concurrency 16
run b10 --batch 10 --concurrency 16
run b100 --batch 100 --concurrency 16
run b10000 --batch 10000 --concurrency 2
run grants10 --batch 1000 --concurrency 16 --grants 10
run grants100 --batch 1000 --concurrency 16 --grants 100
run cust1e4 --batch 1000 --concurrency 16 --customers 10000
run cust1e5 --batch 1000 --concurrency 16 --customers 100000
run zipf --batch 1000 --concurrency 16 --zipf 1.1
run random-ids --batch 1000 --concurrency 16 --random-ids
run b1000-end --batch 1000 --concurrency 16
