#!/bin/bash
cd /work/main
bench/paired-run.sh 3 /tmp/s7/peak1000 "--warmup 3s --duration 15s --batch 1000 --concurrency 16 --mix report=100" creditd=/tmp/s7/creditd noop=/tmp/s7/noop
bench/paired-run.sh 3 /tmp/s7/peak1 "--warmup 3s --duration 15s --batch 1 --concurrency 256 --mix report=100" creditd=/tmp/s7/creditd noop=/tmp/s7/noop
