package node

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"path/filepath"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/creditd/creditd/fsm"
	"github.com/hashicorp/raft"
)

func TestReadinessRule(t *testing.T) {
	// A follower of leader l, caught up at index 500, allowed 100 behind.
	follower := func(mod func(*readiness)) readiness {
		r := readiness{selfID: "f", leaderID: "l", leaderRPCAddr: "127.0.0.1:7420",
			commitIndex: 500, appliedIndex: 500, appliedSinceStart: true, maxLag: 100}
		mod(&r)
		return r
	}
	tests := []struct {
		name   string
		in     readiness
		ready  bool
		reason string // a part of the reason when not ready
	}{
		{"a follower that has applied everything committed is ready", follower(func(*readiness) {}), true, ""},
		{"a follower within the lag bound is ready", follower(func(r *readiness) { r.appliedIndex = 400 }), true, ""},
		{"a follower past the lag bound is not", follower(func(r *readiness) { r.appliedIndex = 399 }), false, "applied 399 of 500 committed"},
		{"a follower with no lag allowed must have applied everything",
			follower(func(r *readiness) { r.maxLag, r.appliedIndex = 0, 499 }), false, "applied 499 of 500"},
		{"a follower installing a snapshot is not, even with an old state caught up",
			follower(func(r *readiness) { r.restoring = true }), false, "installing a snapshot"},
		{"a brand-new node that has heard no commit index is not",
			follower(func(r *readiness) { r.commitIndex, r.appliedIndex, r.appliedSinceStart = 0, 0, false }), false, "no commit index"},
		{"a restarted node that has not heard the leader's commit index is not",
			follower(func(r *readiness) { r.commitIndex, r.appliedSinceStart = 0, false }), false, "no commit index"},
		{"a brand-new node given entries it has not applied is not, even within the bound",
			follower(func(r *readiness) { r.commitIndex, r.appliedIndex, r.appliedSinceStart = 50, 0, false }), false, "nothing applied since start"},
		{"a restarted node whose state holds everything committed is ready without applying",
			follower(func(r *readiness) { r.appliedIndex, r.appliedSinceStart = 600, false }), true, ""},
		{"a follower that knows no leader is not", follower(func(r *readiness) { r.leaderID, r.leaderRPCAddr = "", "" }), false, "no leader known"},
		{"a follower that does not know the leader's API address is not",
			follower(func(r *readiness) { r.leaderRPCAddr = "" }), false, "API address"},
		{"a writable leader is ready whatever its lag",
			readiness{selfID: "l", leaderID: "l", writable: true, commitIndex: 5000, appliedIndex: 1}, true, ""},
		{"a fresh single-node cluster's leader is ready once writable",
			readiness{selfID: "l", leaderID: "l", leaderRPCAddr: "x", writable: true, commitIndex: 1, appliedIndex: 1, appliedSinceStart: true}, true, ""},
		{"a leader not yet writable is not",
			readiness{selfID: "l", leaderID: "l", leaderRPCAddr: "x", commitIndex: 3, appliedIndex: 3, appliedSinceStart: true}, false, "leading"},
		{"a node shutting down is not", follower(func(r *readiness) { r.closing = true }), false, "shutting down"},
		{"a node whose state machine failed is not",
			follower(func(r *readiness) { r.failure = errors.New("disk full") }), false, "disk full"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			ready, reason := tt.in.check()
			if ready != tt.ready {
				t.Fatalf("ready = %v (%q), want %v", ready, reason, tt.ready)
			}
			if ready && reason != "" {
				t.Errorf("ready with a reason %q", reason)
			}
			if !ready && !strings.Contains(reason, tt.reason) {
				t.Errorf("reason %q, want it to mention %q", reason, tt.reason)
			}
		})
	}
}

// gatedRestoreSM holds a snapshot restore until released, so a test can
// look at the node while raft installs a snapshot.
type gatedRestoreSM struct {
	StateMachine
	entered chan struct{} // closed when the first restore starts
	release chan struct{} // closed by the test
}

func (s *gatedRestoreSM) Restore(r io.Reader) error {
	select {
	case <-s.entered:
	default:
		close(s.entered)
	}
	select {
	case <-s.release:
	case <-time.After(2 * time.Minute): // a failed test must not hang raft forever
		return errors.New("test never released the restore")
	}
	return s.StateMachine.Restore(r)
}

func TestJoinerIsNotReadyUntilItHasRestoredAndCaughtUp(t *testing.T) {
	// The joiner's state is opened first so that it is closed after the
	// cluster's cleanup has stopped the node (cleanups run last first).
	f, err := fsm.Open(filepath.Join(t.TempDir(), "n2.db"), fsm.Options{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = f.Close() }) // the node does not own it
	c := newTestCluster(t)
	compacting := func(cfg *Config) {
		cfg.SnapshotThreshold = 32
		cfg.TrailingLogs = 8
		cfg.SnapshotInterval = 100 * time.Millisecond
		cfg.Batch.Disabled = true // one entry per write, so the log grows
		cfg.Voters = 1            // the joiner is a non-voter: the leader commits while its restore is held
	}
	n1 := c.start("n1", func(cfg *Config) { compacting(cfg); cfg.BootstrapExpect = 1 })
	setupLedger(c)
	for i := range 100 {
		c.mustApply(burn(fmt.Sprintf("before-join-%d", i)))
	}
	waitFor(t, 60*time.Second, "the leader to compact its log", func() bool {
		first, err := n1.store.FirstIndex()
		return err == nil && first > 1
	})
	leaderIndex := n1.AppliedIndex()

	sm := &gatedRestoreSM{StateMachine: FSMStateMachine{F: f}, entered: make(chan struct{}), release: make(chan struct{})}
	released := false
	defer func() {
		if !released {
			close(sm.release)
		}
	}()
	n2 := c.start("n2", func(cfg *Config) {
		compacting(cfg)
		cfg.Join = []string{n1.GossipAddr()}
		cfg.StateMachine = sm
		cfg.ReadyMaxLag = -1 // ready only once everything it knows committed is applied
	})
	n2.fsm = f // let the harness read it
	if ready, reason := n2.Readiness(); ready {
		t.Fatalf("a node that has just joined is ready (%q)", reason)
	}

	select {
	case <-sm.entered:
	case <-time.After(90 * time.Second):
		t.Fatal("the joiner never started restoring the leader's snapshot")
	}
	// raft is inside the restore: the leader is known, the state is empty.
	if id, _ := n2.Leader(); id != "n1" {
		t.Errorf("while restoring the joiner names leader %q, want n1", id)
	}
	if ready, reason := n2.Readiness(); ready || !strings.Contains(reason, "installing a snapshot") {
		t.Errorf("while restoring: ready %v (%q), want not ready, installing a snapshot", ready, reason)
	}
	if st := n2.Status(); st.Ready || st.NotReadyReason == "" {
		t.Errorf("while restoring the status says ready %v (%q), want not ready with a reason", st.Ready, st.NotReadyReason)
	}
	close(sm.release)
	released = true

	waitFor(t, 60*time.Second, "the joiner to be ready", n2.Ready)
	if got := n2.AppliedIndex(); got < leaderIndex {
		t.Errorf("ready at applied index %d, before the leader's %d at the join", got, leaderIndex)
	}
	if got := len(usageCounts(t, n2)); got != 100 {
		t.Errorf("ready joiner holds %d usage events, want 100", got)
	}
	if st := n2.Status(); !st.Ready || st.NotReadyReason != "" {
		t.Errorf("status of the ready joiner: ready %v, reason %q", st.Ready, st.NotReadyReason)
	}
}

// TestReceivingALeadersSnapshotCountsAsRestoring: raft writes a snapshot
// from the leader into the store before it restores it; the node counts as
// restoring from then on, and not for its own snapshots.
func TestReceivingALeadersSnapshotCountsAsRestoring(t *testing.T) {
	var restoring atomic.Bool
	var applied atomic.Uint64
	applied.Store(100)
	_, trans := raft.NewInmemTransport("")
	defer trans.Close()
	store := trackedSnapshots{SnapshotStore: raft.NewInmemSnapshotStore(), restoring: &restoring, applied: &applied}
	create := func(index uint64) raft.SnapshotSink {
		t.Helper()
		sink, err := store.Create(raft.SnapshotVersionMax, index, 1, raft.Configuration{}, 1, trans)
		if err != nil {
			t.Fatalf("create snapshot at %d: %v", index, err)
		}
		return sink
	}

	if err := create(100).Close(); err != nil || restoring.Load() {
		t.Fatalf("own snapshot at the applied index: close %v, restoring %v; want no error, not restoring", err, restoring.Load())
	}
	sink := create(500)
	if !restoring.Load() {
		t.Fatal("receiving a snapshot past the applied index does not count as restoring")
	}
	if err := sink.Cancel(); err != nil || restoring.Load() {
		t.Fatalf("cancelled receive: %v, restoring %v; want not restoring", err, restoring.Load())
	}
	if err := create(500).Close(); err != nil || !restoring.Load() {
		t.Fatalf("received snapshot: close %v, restoring %v; want restoring until the state machine has restored it", err, restoring.Load())
	}
	f := trackedFSM{raftFSM: newRaftFSM(NewNoopStateMachine(), func(uint64) {}), restoring: &restoring}
	var b bytes.Buffer
	if _, err := writeSnapshotHeader(&b, 500); err != nil {
		t.Fatal(err)
	}
	if _, err := noopSnapshot(500).WriteTo(&b); err != nil {
		t.Fatal(err)
	}
	if err := f.Restore(io.NopCloser(&b)); err != nil || restoring.Load() {
		t.Fatalf("restore: %v, restoring %v; want done, not restoring", err, restoring.Load())
	}
}
