package node

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/creditd/creditd/fsm"
	"github.com/hashicorp/memberlist"
	"github.com/hashicorp/raft"
)

// failableThree starts a three-node cluster whose nodes apply into fsms
// the test holds, each through a failableSM (smfailure_test.go) that fails
// every Apply at once once its failing is set.
func failableThree(t *testing.T) (*testCluster, map[string]*failableSM) {
	t.Helper()
	sms := map[string]*failableSM{}
	for _, id := range []string{"n1", "n2", "n3"} {
		// Opened before the cluster so that they are closed after its
		// nodes stop (cleanups run last first); the nodes do not own them.
		f, err := fsm.Open(filepath.Join(t.TempDir(), id+".db"), fsm.Options{})
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { _ = f.Close() })
		held := make(chan struct{})
		close(held) // a failing Apply fails at once
		sms[id] = &failableSM{FSMStateMachine: FSMStateMachine{F: f}, held: held, entered: make(chan struct{}, 1)}
	}
	c := newTestCluster(t)
	c.startThree(func(cfg *Config) { cfg.StateMachine = sms[cfg.NodeID] })
	setupLedger(c)
	c.mustApply(burn("before"))
	return c, sms
}

// healthyLeader waits for a node other than failed that leads and takes
// writes.
func healthyLeader(t *testing.T, c *testCluster, failed *Node) *Node {
	t.Helper()
	var l *Node
	waitFor(t, 90*time.Second, "a healthy node to lead and take writes", func() bool {
		for _, n := range c.up() {
			if n != failed && n.writable.Load() {
				l = n
				return true
			}
		}
		return false
	})
	return l
}

// applyThroughHealthy writes cmd through the healthy nodes as a client
// would, following leadership among them until ctx ends; the failed node
// is never asked.
func applyThroughHealthy(ctx context.Context, c *testCluster, failed *Node, cmd fsm.Command) error {
	var last error
	for ctx.Err() == nil {
		for _, n := range c.up() {
			if n == failed {
				continue
			}
			res, err := n.Apply(ctx, cmd)
			var nl *NotLeaderError
			switch {
			case err == nil && res.Err != nil:
				return res.Err
			case err == nil:
				return nil
			case errors.As(err, &nl), errors.Is(err, ErrNoLeader):
				last = err
			default:
				return err
			}
		}
		time.Sleep(20 * time.Millisecond)
	}
	return errors.Join(ctx.Err(), last)
}

// wantAppliedOnHealthy waits until every node but failed has applied the
// usage events ids, each once.
func wantAppliedOnHealthy(t *testing.T, c *testCluster, failed *Node, ids ...string) {
	t.Helper()
	for _, n := range c.up() {
		if n == failed {
			continue
		}
		waitFor(t, 90*time.Second, n.ID()+" to apply "+strings.Join(ids, ", "), func() bool {
			counts := usageCounts(t, n)
			for _, id := range ids {
				if counts[id] != 1 {
					return false
				}
			}
			return true
		})
	}
}

// watchFailedNode checks, for a while, that the failed node does not lead
// and stays not ready saying why, while the healthy nodes write; an
// operator's transfer of leadership to it is refused. The window is what
// several election timeouts of the healthy nodes take, not a bound on
// anything.
func watchFailedNode(t *testing.T, c *testCluster, failed *Node) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	check := func(when string) {
		t.Helper()
		if failed.IsLeader() {
			t.Fatalf("%s: the node whose state machine failed leads again", when)
		}
		if ready, why := failed.Readiness(); ready || !strings.Contains(why, "state machine failed") {
			t.Fatalf("%s: the failed node's readiness is %v %q, want not ready, state machine failed", when, ready, why)
		}
	}
	l := healthyLeader(t, c, failed)
	if err := l.TransferLeadership(ctx, failed.ID()); err == nil {
		t.Errorf("the healthy leader handed leadership to the failed node %s", failed.ID())
	}
	check("after a transfer of leadership to it")
	until := time.Now().Add(10 * c.node(l.ID()).cfg.ElectionTimeout)
	for i := 0; time.Now().Before(until); i++ {
		check("while the cluster writes")
		if err := applyThroughHealthy(ctx, c, failed, burn(fmt.Sprintf("watch-%d", i))); err != nil {
			t.Fatalf("a write through the healthy nodes while the failed node is out: %v", err)
		}
		time.Sleep(100 * time.Millisecond)
	}
	check("at the end")
	if st := failed.Status(); st.State != raft.Shutdown.String() || st.Ready {
		t.Errorf("the failed node's status: state %s, ready %v; want %s, not ready", st.State, st.Ready, raft.Shutdown)
	}
	// It was not removed: it stays a voter that is down, and in the gossip
	// pool, so that its restart finds the members it kept.
	if s := raftConfig(t, c.node(l.ID()))[failed.ID()]; s != raft.Voter {
		t.Errorf("the failed node in the healthy leader's configuration: %v, want a voter", s)
	}
	if mi, ok := c.node(l.ID()).members.get(failed.ID()); !ok || mi.state != memberlist.StateAlive {
		t.Errorf("the failed node in the healthy leader's gossip members: %+v (known %v), want alive", mi, ok)
	}
}

// A leader whose state machine fails (a full disk) hands leadership over
// and leaves raft until it is restarted: it stayed the leader, taking every
// write the followers forwarded, committing it and answering each caller
// with the failure, so the cluster took no write until an operator
// restarted it. Now a healthy node leads, a write through it is applied on
// both healthy nodes, and the failed node stays out and not ready.
func TestALeaderWhoseStateMachineFailsHandsOverAndLeavesRaft(t *testing.T) {
	c, sms := failableThree(t)
	failed := c.leader()
	sms[failed.ID()].failing.Store(true)

	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	// The entry commits before it is applied: the healthy nodes apply it,
	// and the caller hears the failure.
	if _, err := failed.Apply(ctx, burn("lost")); !errors.Is(err, ErrStateMachineFailed) {
		t.Fatalf("the write whose apply failed on the leader: %v, want ErrStateMachineFailed", err)
	}
	if _, err := failed.Apply(ctx, burn("refused")); !errors.Is(err, ErrStateMachineFailed) {
		t.Errorf("a write on the failed node: %v, want ErrStateMachineFailed", err)
	}

	l := healthyLeader(t, c, failed)
	if err := applyThroughHealthy(ctx, c, failed, burn("after")); err != nil {
		t.Fatalf("a write through the healthy nodes once %s leads: %v", l.ID(), err)
	}
	wantAppliedOnHealthy(t, c, failed, "before", "lost", "after")
	watchFailedNode(t, c, failed)
	if got := usageCounts(t, failed); got["before"] != 1 || got["after"] != 0 {
		t.Errorf("the failed node's ledger has %v, want only what it applied before the failure", got)
	}
}

// failAFollower starts three nodes, makes a follower's state machine fail
// while a write ("during") goes through the healthy ones, and waits until
// the failed follower has left raft.
func failAFollower(ctx context.Context, t *testing.T) (c *testCluster, failed *Node) {
	t.Helper()
	c, sms := failableThree(t)
	l := c.leader()
	for _, n := range c.up() {
		if n != l {
			failed = n
			break
		}
	}
	sms[failed.ID()].failing.Store(true)
	if err := applyThroughHealthy(ctx, c, failed, burn("during")); err != nil {
		t.Fatalf("a write while a follower fails: %v", err)
	}
	waitFor(t, 90*time.Second, "the follower's state machine to fail", func() bool { return failed.Failure() != nil })
	waitFor(t, 90*time.Second, "the failed follower to leave raft", func() bool {
		return failed.Status().State == raft.Shutdown.String()
	})
	return c, failed
}

// A follower whose state machine fails leaves raft as well: left in it, it
// kept a complete log, so an election (or a transfer, which picks the most
// up-to-date voter) could make it a failed leader. The cluster goes on
// writing with the two healthy nodes.
func TestAFollowerWhoseStateMachineFailsLeavesRaftAndTheClusterGoesOn(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	c, failed := failAFollower(ctx, t)
	if err := applyThroughHealthy(ctx, c, failed, burn("after")); err != nil {
		t.Fatalf("a write once the failed follower left raft: %v", err)
	}
	wantAppliedOnHealthy(t, c, failed, "before", "during", "after")
	// Membership calls on it name the failure, not "no leader".
	for what, err := range map[string]error{
		"remove a member":     failed.RemoveMember(ctx, c.leader().ID()),
		"transfer leadership": failed.TransferLeadership(ctx, ""),
	} {
		if !errors.Is(err, ErrStateMachineFailed) {
			t.Errorf("%s on the failed node: %v, want ErrStateMachineFailed", what, err)
		}
	}
	watchFailedNode(t, c, failed)
}

// An operator who removes a node whose state machine failed keeps it out.
// The failed node gossips on, alive, with its raft stopped (it cannot see
// its removal, so it does not leave the pool), and the leader added it
// back, a voter that is down, once the removal was 10 minutes old
// (recentlyRemoved) — undoing the operator's removal — and would promote it
// as a non-voter and count it as a healthy voter likewise. It now announces
// its failure in gossip, and the leader adds no member that does.
func TestAFailedNodeAnOperatorRemovedIsNotAddedBack(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	c, failed := failAFollower(ctx, t)
	l := healthyLeader(t, c, failed)
	waitFor(t, 90*time.Second, "the leader to hear of the failure through gossip", func() bool {
		mi, ok := l.members.get(failed.ID())
		return ok && mi.meta.Failed
	})
	if err := l.RemoveMember(ctx, failed.ID()); err != nil {
		t.Fatalf("remove the failed node: %v", err)
	}
	// Ten minutes on: the removal no longer keeps it out by itself.
	l.removedMu.Lock()
	l.removed[failed.ID()] = time.Now().Add(-11 * time.Minute)
	l.removedMu.Unlock()
	if err := l.reconcile(ctx); err != nil {
		t.Fatalf("reconcile: %v", err)
	}
	if s, in := raftConfig(t, l)[failed.ID()]; in {
		t.Errorf("the failed node an operator removed is back in the configuration as a %v", s)
	}
	if mi, ok := l.members.get(failed.ID()); !ok || mi.state != memberlist.StateAlive {
		t.Errorf("the failed node in the leader's gossip members: %+v (known %v), want alive", mi, ok)
	}
}

// signalHandler discards every record, and closes seen once one's message
// begins with prefix.
type signalHandler struct {
	prefix string
	once   *sync.Once
	seen   chan struct{}
}

func (h signalHandler) Enabled(context.Context, slog.Level) bool { return true }
func (h signalHandler) Handle(_ context.Context, r slog.Record) error {
	if strings.HasPrefix(r.Message, h.prefix) {
		h.once.Do(func() { close(h.seen) })
	}
	return nil
}
func (h signalHandler) WithAttrs([]slog.Attr) slog.Handler { return h }
func (h signalHandler) WithGroup(string) slog.Handler      { return h }

// A state machine that fails while Start is still setting the node up (a
// restart onto a full disk: raft hands the log to the state machine as
// soon as it runs) started leaveRaftAfterFailure on a half-built node: it
// read n.raft and the batcher while Start was still writing them (a leader
// alone dereferenced a nil batcher). Start now starts it once the node is
// set up, and the node leaves raft as after any other failure.
func TestAStateMachineFailingWhileItsNodeStartsLeavesRaftOnceStarted(t *testing.T) {
	f, err := fsm.Open(filepath.Join(t.TempDir(), "solo.db"), fsm.Options{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = f.Close() })
	held := make(chan struct{})
	close(held) // a failing Apply fails at once
	sm := &failableSM{FSMStateMachine: FSMStateMachine{F: f}, held: held, entered: make(chan struct{}, 1)}
	c := newTestCluster(t)
	c.start("solo", func(cfg *Config) {
		cfg.BootstrapExpect = 1
		cfg.StateMachine = sm
	})
	setupLedger(c)
	c.mustApply(burn("before"))
	c.shutdown("solo")

	sm.failing.Store(true)
	failed := make(chan struct{})
	n := c.restart("solo", func(cfg *Config) {
		cfg.Logger = slog.New(signalHandler{prefix: "state machine failed: this node applies nothing more", once: &sync.Once{}, seen: failed})
		// Start waits here, raft running, until the state machine has
		// failed on the log raft hands it again.
		cfg.memberlistConfig = func(*memberlist.Config) {
			select {
			case <-failed:
			case <-time.After(time.Minute):
			}
		}
	})
	select {
	case <-failed:
	default:
		t.Fatal("the node started before its state machine failed")
	}
	waitFor(t, 90*time.Second, "the failed node to leave raft", func() bool {
		return n.Status().State == raft.Shutdown.String()
	})
	if err := n.Failure(); !errors.Is(err, ErrStateMachineFailed) {
		t.Errorf("Failure() = %v, want ErrStateMachineFailed", err)
	}
	if ready, why := n.Readiness(); ready || !strings.Contains(why, "state machine failed") {
		t.Errorf("readiness: %v %q, want not ready, state machine failed", ready, why)
	}
}
