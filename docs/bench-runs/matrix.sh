#!/bin/bash
# The measurement matrix behind README-bench.md, in the order it was run.
cd "$(dirname "$0")"
C="--warmup 3s --duration 15s"
./run.sh noop1000 3 --noop --batch 1000 --concurrency 16 $C
./run.sh noopsingle256 3 --noop --batch 1 --concurrency 256 $C
./run.sh half1000 3 --batch 1000 --concurrency 16 --mix report=100 --rate 2.65 $C
for r in 1 4; do ./run.sh rate1000-$r 1 --batch 1000 --concurrency 16 --mix report=100 --rate $r $C; done
for r in 25 50; do ./run.sh nooprate1000-$r 1 --noop --batch 1000 --concurrency 16 --rate $r $C; done
for r in 200 400; do ./run.sh ratesingle-$r 1 --batch 1 --concurrency 256 --mix report=100 --rate $r $C; done
./run.sh mix64 1 --concurrency 64 $C
for b in 1 10 100 10000; do ./run.sh batch-$b 1 --batch $b --concurrency 16 --mix report=100 $C; done
for g in 10 100; do ./run.sh grants-$g 1 --grants $g --batch 1000 --concurrency 16 --mix report=100 $C; done
for n in 10000 100000; do ./run.sh customers-$n 1 --customers $n --batch 1000 --concurrency 16 --mix report=100 $C; done
