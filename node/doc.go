// Package node owns one creditd process's place in the cluster: the Raft
// log and its stores, membership by gossip, the group-commit batcher that
// turns many callers' commands into one log entry, the leader's clock and
// ticks, snapshots, and the workers that run only on the leader. It adapts
// package fsm to raft; nothing else in creditd imports hashicorp/raft or
// memberlist.
//
// It must never interpret commands (fsm does), never serve the API (rpc
// does) and never forward requests itself: on a follower it answers
// *NotLeaderError naming the leader's API address, and rpc forwards.
//
// # Versions
//
// creditd uses hashicorp/raft v1.7.3 with memberlist v0.6.0 and
// raft-boltdb/v2 v2.3.1 (option (b) in STACK.md). raft v1.8.0 and
// memberlist v0.7.0 need go-metrics v0.7.0, which deleted the package
// raft-boltdb imports; the other way out is a replace directive pinning
// go-metrics back plus a build tag on every build, which every engineer,
// the CI and `go install` users would have to remember. The older pair
// builds with plain `go build`, and the 1.8 changes (mostly metrics and
// prevote tuning) buy this project nothing it needs.
//
// # Where the state lives
//
// DataDir holds raft.db (raft-boltdb: the log and raft's stable state,
// fsync on every append), snapshots/ (raft's file snapshot store), fsm.db
// (the state machine, which stores its applied index in the same bbolt
// transaction as the state) and node-id. Because fsm knows its own applied
// index, raft runs with NoSnapshotRestoreOnStart: a restart does not
// restore a snapshot the state file already holds, and the entries raft
// replays from the last snapshot index are skipped by fsm up to its applied
// index, so nothing is applied twice and history is not replayed.
//
// fsm.db is committed without fsync (the raft log is the durable record);
// its marker fsm.db.boot names the boot whose page cache may hold unsynced
// commits, and a state file from an earlier boot that was not closed
// cleanly is set aside and rebuilt from the newest snapshot and the log
// (statefile.go; Config.StateFsync restores an fsync per apply).
//
// # Writes
//
// Apply hands an encoded command to the batcher. One dispatcher goroutine
// gathers queued commands (bounded by count, bytes and a short wait), stamps
// them with the leader's time — never earlier than the last applied entry's
// time, so log time never goes backwards, even across leader changes — and
// appends them to raft as one entry. Up to MaxInflight entries are in
// flight at once, so one entry's replication overlaps the next one's disk
// write. One applier goroutine merges the entries raft commits into one
// state transaction as well.
package node
