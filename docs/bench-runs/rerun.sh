#!/bin/bash
# Second series of the headline figures, all with one binary, interleaving creditd and the no-op
# ceiling so both see the same machine load.
cd "$(dirname "$0")"
C="--warmup 3s --duration 15s"
for i in 1 2 3; do
  ./run.sh b-peak1000-$i 1 --batch 1000 --concurrency 16 --mix report=100 $C
  ./run.sh b-noop1000-$i 1 --noop --batch 1000 --concurrency 16 $C
  ./run.sh b-single256-$i 1 --batch 1 --concurrency 256 --mix report=100 $C
  ./run.sh b-noopsingle256-$i 1 --noop --batch 1 --concurrency 256 $C
done
