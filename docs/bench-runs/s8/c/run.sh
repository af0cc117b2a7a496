#!/bin/bash
# Window C (session 8, 27a836e). Before running:
#   go build -o /tmp/s8/creditd ./cmd/creditd
#   printf '#!/bin/sh\nexec /tmp/s8/creditd "$@" --noop\n' > /tmp/s8/noop && chmod +x /tmp/s8/noop
cd /work/main
O=/tmp/s8/c
bench/paired-run.sh 3 $O/peak1000 "--warmup 3s --duration 15s --batch 1000 --concurrency 16 --mix report=100" creditd=/tmp/s8/creditd noop=/tmp/s8/noop
bench/paired-run.sh 3 $O/peak1 "--warmup 3s --duration 15s --batch 1 --concurrency 256 --mix report=100" creditd=/tmp/s8/creditd noop=/tmp/s8/noop
med() { for f in $1/creditd-*.json; do grep -o '"events_per_sec": [0-9.]*' $f | head -1 | cut -d' ' -f2; done | sort -n | sed -n 2p; }
p1000=$(med $O/peak1000); p1=$(med $O/peak1)
h1000=$(python3 -c "print(round($p1000/2000,1))"); q1000=$(python3 -c "print(round($p1000/4000,1))"); h1=$(python3 -c "print(round($p1/2))")
echo "rates: half1000 $h1000 quarter1000 $q1000 half1 $h1"
bench/paired-run.sh 3 $O/half1000 "--warmup 3s --duration 15s --batch 1000 --concurrency 16 --rate $h1000 --mix report=100" creditd=/tmp/s8/creditd noop=/tmp/s8/noop
bench/paired-run.sh 3 $O/quarter1000 "--warmup 3s --duration 15s --batch 1000 --concurrency 16 --rate $q1000 --mix report=100" creditd=/tmp/s8/creditd
bench/paired-run.sh 3 $O/half1 "--warmup 3s --duration 15s --batch 1 --concurrency 256 --rate $h1 --mix report=100" creditd=/tmp/s8/creditd noop=/tmp/s8/noop
