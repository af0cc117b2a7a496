#!/usr/bin/env bash
# creditd with each local node's state file (fsm.db) on /dev/shm and the rest (raft log) on disk.
set -euo pipefail
d=$(mktemp -d /tmp/statelink.XXXX) s=$(mktemp -d /dev/shm/statelink.XXXX)
for n in n1 n2 n3; do mkdir -p "$d/$n"; ln -s "$s/$n.db" "$d/$n/fsm.db"; done
rc=0
/tmp/s14/creditd-budget "$@" --data-dir "$d" || rc=$?
rm -rf "$d" "$s"
exit $rc
