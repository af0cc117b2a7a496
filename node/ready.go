package node

import (
	"fmt"
	"io"
	"sync/atomic"
	"time"

	"github.com/hashicorp/raft"
)

// readiness holds what decides whether a node should take traffic.
type readiness struct {
	closing  bool
	failure  error
	writable bool // leads and may stamp writes
	selfID   string
	leaderID string
	// leaderRPCAddr is the leader's API address as gossip told it.
	leaderRPCAddr string
	// restoring is set while raft receives a snapshot from the leader and
	// restores it into the state.
	restoring bool
	// commitIndex is raft's commit index as this node knows it: 0 after a
	// start until the leader has told it one (raft does not persist it).
	commitIndex  uint64
	appliedIndex uint64
	// appliedSinceStart is set once this process has applied an entry or
	// restored a snapshot.
	appliedSinceStart bool
	// maxLag is how many entries the applied index may trail commitIndex.
	maxLag uint64
	// idConflict is a recent conflict over this node's id in gossip (two
	// nodes with the same --node-id): it says why a node waits for ever.
	idConflict string
}

// check returns whether the node is ready and, when not, why: the rule
// below, followed by a recent conflict over this node's id. The conflict
// never makes a node unready by itself: a running node must not stop
// serving because a second one was started under its id.
func (r readiness) check() (bool, string) {
	ok, why := r.rule()
	if !ok && r.idConflict != "" {
		why += "; " + r.idConflict
	}
	return ok, why
}

// rule returns whether the node is ready and, when not, why.
//
// A leader is ready once it may stamp writes. A follower is ready when it
// knows the leader and its API address (rpc forwards writes there), is not
// installing a snapshot, and has caught up with the commit index it knows:
// a follower that trails it by more than maxLag entries serves reads from
// an old state. A follower that has applied nothing since it started must
// have applied everything it knows committed: a brand-new node has applied
// nothing yet, and a restarted one holds what its state file held.
func (r readiness) rule() (bool, string) {
	switch {
	case r.closing:
		return false, "shutting down"
	case r.failure != nil:
		return false, fmt.Sprintf("state machine failed: %v", r.failure)
	case r.writable:
		return true, ""
	case r.leaderID == "":
		return false, "no leader known"
	case r.leaderID == r.selfID:
		return false, "leading, not taking writes: still applying earlier terms' entries, or handing leadership over"
	case r.leaderRPCAddr == "":
		return false, fmt.Sprintf("leader %s known, its API address not yet (gossip)", r.leaderID)
	case r.restoring:
		return false, "installing a snapshot from the leader"
	case r.commitIndex == 0:
		return false, "no commit index heard from the leader yet"
	case r.appliedIndex >= r.commitIndex:
		return true, ""
	case !r.appliedSinceStart:
		return false, fmt.Sprintf("applied %d of %d committed, nothing applied since start", r.appliedIndex, r.commitIndex)
	case r.commitIndex-r.appliedIndex > r.maxLag:
		return false, fmt.Sprintf("applied %d of %d committed, more than %d behind", r.appliedIndex, r.commitIndex, r.maxLag)
	}
	return true, ""
}

// readiness gathers this node's inputs to the rule.
func (n *Node) readiness() readiness {
	r := readiness{
		closing:           n.closing.Load(),
		writable:          n.writable.Load(),
		selfID:            n.id,
		restoring:         n.restoring.Load(),
		appliedSinceStart: n.appliedSinceStart.Load(),
		maxLag:            n.cfg.readyMaxLag(),
		failure:           n.rfsm.failure(), // atomic: never waits behind an apply or restore
		idConflict:        n.gossip.recentIDConflict(time.Now()),
	}
	r.leaderID, r.leaderRPCAddr = n.Leader()
	// Applied before commit: both only grow, so a lag measured this way is
	// never understated.
	r.appliedIndex = n.applied.Load()
	r.commitIndex = n.raft.CommitIndex()
	return r
}

// Ready reports whether this node should take traffic now: it leads and is
// ready to stamp writes, or it follows a known leader, whose API address it
// knows, and has caught up (see readiness.check).
func (n *Node) Ready() bool {
	ok, _ := n.readiness().check()
	return ok
}

// Readiness is Ready with the reason when not ready ("" when ready), e.g.
// "installing a snapshot from the leader" or "applied 120 of 5000
// committed, more than 1024 behind".
func (n *Node) Readiness() (ready bool, reason string) {
	return n.readiness().check()
}

// trackedFSM is the state machine as raft sees it: it keeps the node's
// restoring flag set while a snapshot is restored into the state.
type trackedFSM struct {
	*raftFSM
	restoring *atomic.Bool
}

func (f trackedFSM) Restore(rc io.ReadCloser) error {
	f.restoring.Store(true)
	defer f.restoring.Store(false)
	return f.raftFSM.Restore(rc)
}

// trackedSnapshots is the snapshot store as raft sees it: raft receives a
// leader's snapshot into it before it hands the snapshot to the state
// machine, which can take long for a large state; the node is restoring
// from then on. A snapshot raft creates past the applied index is one the
// state does not hold yet (the leader's, or an operator's restore); one
// this node takes of its own state is at or below the applied index.
type trackedSnapshots struct {
	raft.SnapshotStore
	restoring *atomic.Bool
	applied   *atomic.Uint64
}

func (s trackedSnapshots) Create(version raft.SnapshotVersion, index, term uint64, conf raft.Configuration,
	confIndex uint64, trans raft.Transport) (raft.SnapshotSink, error) {
	sink, err := s.SnapshotStore.Create(version, index, term, conf, confIndex, trans)
	if err != nil || index <= s.applied.Load() {
		return sink, err
	}
	s.restoring.Store(true)
	return trackedSink{SnapshotSink: sink, restoring: s.restoring}, nil
}

// trackedSink clears the restoring flag when a received snapshot fails;
// once it is complete, trackedFSM.Restore clears it after the restore.
type trackedSink struct {
	raft.SnapshotSink
	restoring *atomic.Bool
}

func (s trackedSink) Cancel() error {
	s.restoring.Store(false)
	return s.SnapshotSink.Cancel()
}

func (s trackedSink) Close() error {
	err := s.SnapshotSink.Close()
	if err != nil {
		s.restoring.Store(false)
	}
	return err
}
