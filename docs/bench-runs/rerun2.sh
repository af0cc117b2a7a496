#!/bin/bash
# Half of the second series' peak (21,864 events/s = 21.9 req/s of 1,000 events), and open-loop points for the plot.
cd "$(dirname "$0")"
C="--warmup 3s --duration 15s"
./run.sh b-half1000 3 --batch 1000 --concurrency 16 --mix report=100 --rate 10.9 $C
for r in 5 16; do ./run.sh b-rate1000-$r 1 --batch 1000 --concurrency 16 --mix report=100 --rate $r $C; done
for r in 50 100 150; do ./run.sh b-nooprate1000-$r 1 --noop --batch 1000 --concurrency 16 --rate $r $C; done
for r in 500 1000; do ./run.sh b-ratesingle-$r 1 --batch 1 --concurrency 256 --mix report=100 --rate $r $C; done
for r in 1000 2500; do ./run.sh b-noopratesingle-$r 1 --noop --batch 1 --concurrency 256 --rate $r $C; done
./run.sh b-mix64 1 --concurrency 64 $C
