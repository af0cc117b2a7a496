package node

import (
	"context"
	"errors"
	"path/filepath"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/creditd/creditd/fsm"
)

// failableSM applies into a real fsm until failing is set; from then on an
// Apply waits until held is closed and fails as a full disk would, applying
// nothing. It embeds FSMStateMachine, so the node reads that fsm (Node.FSM).
type failableSM struct {
	FSMStateMachine
	failing atomic.Bool
	held    chan struct{}
	entered chan struct{} // buffered 1: a failing Apply has begun
}

func (s *failableSM) Apply(entries []fsm.Entry, answer func([][]fsm.Result)) ([][]fsm.Result, error) {
	if !s.failing.Load() {
		return s.FSMStateMachine.Apply(entries, answer)
	}
	select {
	case s.entered <- struct{}{}:
	default:
	}
	<-s.held
	return nil, errors.New("write fsm.db: no space left on device")
}

// A node whose state machine failed applies nothing more, so whatever waits
// for its applied index must be told instead of waiting for ever: a
// linearizable read (it waited for an index that never comes, up to its
// caller's deadline), one begun later, and AppliedNotify's waiters
// (WatchEntries streams in rpc); the node says it is not ready and why.
func TestAFailedStateMachineEndsReadsAndWakesWhoWaitsForAnApply(t *testing.T) {
	// Opened before the cluster so that it is closed after the node stops
	// (cleanups run last first); the node does not own it.
	f, err := fsm.Open(filepath.Join(t.TempDir(), "solo.db"), fsm.Options{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = f.Close() })
	sm := &failableSM{FSMStateMachine: FSMStateMachine{F: f}, held: make(chan struct{}), entered: make(chan struct{}, 1)}
	released := false
	defer func() {
		if !released {
			close(sm.held)
		}
	}()
	c := newTestCluster(t)
	n := c.start("solo", func(cfg *Config) {
		cfg.BootstrapExpect = 1
		cfg.StateMachine = sm
	})
	if n.FSM() != f {
		t.Fatal("FSM() of a node whose StateMachine embeds FSMStateMachine is not that fsm")
	}
	setupLedger(c)
	c.mustApply(burn("before"))
	if err := n.LinearizableRead(context.Background()); err != nil || n.Failure() != nil {
		t.Fatalf("healthy node: read %v, failure %v", err, n.Failure())
	}

	sm.failing.Store(true)
	writeErr := make(chan error, 1)
	go func() {
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
		defer cancel()
		_, err := n.Apply(ctx, burn("lost"))
		writeErr <- err
	}()
	select {
	case <-sm.entered: // committed, being applied: the commit index is past the applied one
	case <-time.After(time.Minute):
		t.Fatal("the write never reached the state machine")
	}
	woken := n.AppliedNotify()
	readErr := make(chan error, 1)
	go func() {
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
		defer cancel()
		readErr <- n.LinearizableRead(ctx)
	}()
	if err := n.Failure(); err != nil {
		t.Fatalf("failure before the apply failed: %v", err)
	}
	close(sm.held)
	released = true

	if err := <-writeErr; !errors.Is(err, ErrStateMachineFailed) {
		t.Fatalf("the write whose apply failed: %v, want ErrStateMachineFailed", err)
	}
	if err := <-readErr; !errors.Is(err, ErrStateMachineFailed) {
		t.Errorf("a linearizable read begun before the failure: %v, want ErrStateMachineFailed", err)
	}
	waitOrFail(t, "AppliedNotify's channel after the failure", woken)
	if err := n.Failure(); !errors.Is(err, ErrStateMachineFailed) {
		t.Errorf("Failure() = %v, want ErrStateMachineFailed", err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	if err := n.LinearizableRead(ctx); !errors.Is(err, ErrStateMachineFailed) {
		t.Errorf("a linearizable read begun after the failure: %v, want ErrStateMachineFailed", err)
	}
	if ready, reason := n.Readiness(); ready || !strings.Contains(reason, "state machine failed") {
		t.Errorf("readiness after the failure: %v %q, want not ready, state machine failed", ready, reason)
	}
	if st := n.Status(); st.Ready || !strings.Contains(st.NotReadyReason, "state machine failed") {
		t.Errorf("status after the failure: ready %v (%q), want not ready, state machine failed", st.Ready, st.NotReadyReason)
	}
	// What was applied before the failure is still there to read.
	if got := usageCounts(t, n)["before"]; got != 1 {
		t.Errorf("the event applied before the failure has %d ledger entries, want 1", got)
	}
}
