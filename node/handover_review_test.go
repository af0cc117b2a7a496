package node

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/hashicorp/raft"
)

// TestAFailedTransferGivesWritesBackToALeadershipThatBeganDuringIt: a
// transfer paused writes, and while it was under way the node's
// leadership loop started a leadership (one raft had already granted when
// the transfer was asked, the loop not yet seeing it; or one won again in
// a newer term) that caught up: resumeWrites left it paused, as it must
// while a transfer is under way. When the transfer then fails, that
// leadership takes writes again; it was left paused until it ended, every
// write waiting LeaderWait and failing with ErrNoLeader.
func TestAFailedTransferGivesWritesBackToALeadershipThatBeganDuringIt(t *testing.T) {
	for _, tc := range []struct {
		name string
		// before sets the leadership handOver sees; it returns the one
		// the loop then starts.
		before func(l *Node, current context.Context) (started context.Context)
	}{
		{"not yet seen by the loop when the transfer began", func(l *Node, current context.Context) context.Context {
			l.leaderCtx, l.leaderCaughtUp = nil, false
			return current
		}},
		{"won again in a newer term during the transfer", func(l *Node, current context.Context) context.Context {
			return nil // set after handOver began, below
		}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c := newTestCluster(t)
			c.startThree(nil)
			l := c.leader()

			l.leaderMu.Lock()
			current := l.leaderCtx
			started := tc.before(l, current)
			l.leaderMu.Unlock()

			fut := make(heldFuture, 1)
			done := make(chan error, 1)
			go func() {
				done <- l.handOver(context.Background(), func() raft.Future { return fut }, true)
			}()
			waitFor(t, 30*time.Second, "the hand-over to begin", func() bool {
				l.leaderMu.Lock()
				defer l.leaderMu.Unlock()
				return l.handingOver == 1
			})

			// What leadershipLoop does when it starts a leadership.
			l.leaderMu.Lock()
			var cancel context.CancelFunc
			if started == nil {
				started, cancel = context.WithCancel(context.Background())
				defer cancel()
			}
			l.leaderCtx, l.leaderCaughtUp = started, false
			l.leaderMu.Unlock()
			// What lead does once that leadership has caught up.
			if !l.resumeWrites(started) {
				t.Fatal("resumeWrites: the leadership ended")
			}
			if l.writable.Load() {
				t.Fatal("writable while leadership is being handed over")
			}

			fut <- errors.New("the target did not take over")
			if err := <-done; err == nil {
				t.Fatal("handOver hid the transfer's failure")
			}
			writable := l.writable.Load()

			// Give the node its own leadership back before it stops.
			l.leaderMu.Lock()
			l.leaderCtx, l.leaderCaughtUp = current, true
			l.writable.Store(l.handingOver == 0)
			l.leaderMu.Unlock()
			if !writable {
				t.Fatal("a caught-up leader whose transfer failed takes no writes")
			}
		})
	}
}

// TestATransferWhoseCallerGaveUpIsNotStarted: handOver first waits (up to
// ApplyTimeout) for the entries in flight; a caller whose context ended
// meanwhile (an RPC's deadline, a cancelled operator) is told the transfer
// failed, so it must not be started then: it was, raft handing leadership
// over after the caller was told it had not, and the writes resumed by the
// failure refused by raft while that transfer ran.
func TestATransferWhoseCallerGaveUpIsNotStarted(t *testing.T) {
	c := newTestCluster(t)
	c.startThree(nil)
	l := c.leader()
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	started := false
	err := l.handOver(ctx, func() raft.Future {
		started = true
		f := make(heldFuture, 1)
		f <- errors.New("the target did not take over")
		return f
	}, true)
	if !errors.Is(err, context.Canceled) {
		t.Errorf("handOver: %v; want the caller's context.Canceled", err)
	}
	if started {
		t.Error("the transfer was started for a caller that had given up")
	}
	if !l.writable.Load() {
		t.Error("writes were not given back")
	}
}
