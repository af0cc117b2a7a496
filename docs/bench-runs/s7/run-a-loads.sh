#!/bin/bash
cd /work/main
bench/paired-run.sh 3 /tmp/s7/half1000 "--warmup 3s --duration 15s --batch 1000 --concurrency 16 --rate 33.7 --mix report=100" creditd=/tmp/s7/creditd noop=/tmp/s7/noop
bench/paired-run.sh 3 /tmp/s7/quarter1000 "--warmup 3s --duration 15s --batch 1000 --concurrency 16 --rate 16.8 --mix report=100" creditd=/tmp/s7/creditd
bench/paired-run.sh 3 /tmp/s7/half1 "--warmup 3s --duration 15s --batch 1 --concurrency 256 --rate 1975 --mix report=100" creditd=/tmp/s7/creditd noop=/tmp/s7/noop
