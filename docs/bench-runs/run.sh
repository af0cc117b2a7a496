#!/bin/bash
# Usage: run.sh NAME REPEATS creditd-bench-flags...
# Writes NAME-i.json and NAME-i.log here; runs one after another.
cd "$(dirname "$0")"
name=$1; reps=$2; shift 2
for i in $(seq 1 "$reps"); do
  echo "== $name-$i $(date -u +%H:%M:%S) load $(cut -d' ' -f1-3 /proc/loadavg)" >&2
  /tmp/creditd bench --local 3 --json "$@" > "$name-$i.json" 2> "$name-$i.log"
  echo "   rc=$? $(python3 -c "
import json,sys
r=json.load(open('$name-$i.json'))
o=[x for x in r['ops'] if x['op']=='report'][0]
print('events/s %.0f req/s %.1f p50 %.1f p99 %.1f ms verify %s load %s' % (o['events_per_sec'], o['requests_per_sec'], o['latency_ms']['p50'], o['latency_ms']['p99'], (r.get('verify') or {}).get('ok'), r['machine'].get('loadavg_before')))
" 2>&1)" >&2
done
