package node

import (
	"errors"
	"fmt"
)

// ErrNoLeader is returned when no leader is known within the bounded wait
// (Config.LeaderWait), or when leadership was lost while a write was in
// flight. Callers map it to Unavailable.
var ErrNoLeader = errors.New("node: no leader")

// ErrOutcomeUnknown marks a write whose entry was appended but whose leader
// lost leadership before the entry committed: it may or may not be applied.
// Errors carrying it also match ErrNoLeader. Commands with idempotency keys
// can be retried safely.
var ErrOutcomeUnknown = errors.New("node: outcome unknown")

// ErrShuttingDown is returned for writes that arrive, or are still queued,
// while the node shuts down.
var ErrShuttingDown = errors.New("node: shutting down")

// ErrQueueFull is returned when the batcher's queue stays full for the
// whole bounded wait: the leader is overloaded.
var ErrQueueFull = errors.New("node: write queue full")

// ErrNothingApplied is returned for a snapshot asked of a node whose state
// has applied no entry yet (it is starting, or waits to join a cluster):
// such a snapshot could not be restored anywhere.
var ErrNothingApplied = errors.New("node: the state has applied no entry yet")

// ErrStateMachineFailed is returned after the state machine reported a
// storage failure: the node stops applying (so its state stays what is on
// disk) and must be restarted.
var ErrStateMachineFailed = errors.New("node: state machine failed")

// CommandTooLargeError is returned for a command that does not fit in one
// log entry: Size bytes encoded, Limit = Config.Batch.MaxBytes.
type CommandTooLargeError struct{ Size, Limit int }

func (e *CommandTooLargeError) Error() string {
	return fmt.Sprintf("node: a command of %d bytes exceeds the log entry limit of %d bytes", e.Size, e.Limit)
}

// ErrNoOtherVoter, ErrTransferToSelf and ErrNotAVoter refuse a leadership
// transfer that cannot happen.
var (
	ErrNoOtherVoter   = errors.New("node: no other voter to hand leadership to")
	ErrTransferToSelf = errors.New("node: this node is the leader already")
	ErrNotAVoter      = errors.New("node: the member is not a voter")
	// ErrTransferFailed: raft could not hand leadership over (the target
	// is down or behind, another transfer is under way); this node still
	// leads, and a retry may succeed.
	ErrTransferFailed = errors.New("node: the leadership transfer did not complete")
)

// NotLeaderError is returned by writes and linearizable reads on a node that
// is not the leader. LeaderRPCAddr is the leader's API address for
// forwarding ("" when no leader is known).
type NotLeaderError struct {
	LeaderID      string
	LeaderRPCAddr string
}

func (e *NotLeaderError) Error() string {
	if e.LeaderID == "" {
		return "node: not the leader, and no leader is known"
	}
	return fmt.Sprintf("node: not the leader; leader is %s at %s", e.LeaderID, e.LeaderRPCAddr)
}
