#!/bin/bash
# Window C (session 8, 27a836e). It ran as the same loads as window B's
# script (docs/bench-runs/s7/b/run.sh) with /tmp/s8/creditd built from
# 27a836e and /tmp/s8/noop a wrapper adding --noop; bench/targets.sh is that
# script made reusable (the no-op ceiling through CREDITD_NOOP=true):
cd "$(dirname "$0")/../../../.."
go build -o /tmp/s8/creditd ./cmd/creditd
bench/targets.sh /tmp/s8/c /tmp/s8/creditd
