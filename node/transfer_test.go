package node

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/creditd/creditd/fsm"
	"github.com/hashicorp/raft"
)

// TestWritesOnTheLeaderDuringALeadershipTransferGoToTheNextLeader: while
// leadership is handed over (an operator's TransferLeadership, or a leader's
// SIGTERM), writers keep calling Apply on the node that led. Each write
// either succeeds there or fails with *NotLeaderError naming the new leader
// (rpc forwards it, nothing of it was done), never with ErrNoLeader or an
// unknown outcome: raft refuses every append while a transfer is under way,
// and fails the entries still in flight when the leader steps down, so
// writes pause first and the entries in flight resolve.
func TestWritesOnTheLeaderDuringALeadershipTransferGoToTheNextLeader(t *testing.T) {
	c := newTestCluster(t)
	c.startThree(nil)
	setupLedger(c)
	old := c.leader()

	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	var (
		stop     atomic.Bool
		ok, away atomic.Int64
		mu       sync.Mutex
		wrong    []error
		wg       sync.WaitGroup
	)
	for w := range 16 {
		wg.Go(func() {
			for i := 0; !stop.Load(); i++ {
				_, err := old.Apply(ctx, burn(fmt.Sprintf("w%d-%d", w, i)))
				var nl *NotLeaderError
				switch {
				case err == nil:
					ok.Add(1)
				case errors.As(err, &nl) && nl.LeaderID != old.ID() && nl.LeaderRPCAddr != "":
					away.Add(1)
					time.Sleep(5 * time.Millisecond)
				default:
					mu.Lock()
					wrong = append(wrong, err)
					mu.Unlock()
				}
			}
		})
	}
	waitFor(t, time.Minute, "writes on the leader", func() bool { return ok.Load() >= 200 })
	if err := old.TransferLeadership(ctx, ""); err != nil {
		t.Errorf("transfer leadership: %v", err)
	}
	waitFor(t, time.Minute, "writes turned to the new leader", func() bool { return away.Load() >= 50 })
	stop.Store(true)
	wg.Wait()
	if len(wrong) > 0 {
		t.Fatalf("%d of %d writes failed otherwise than with NotLeaderError naming the new leader; first: %v",
			len(wrong), int(ok.Load()+away.Load())+len(wrong), wrong[0])
	}
}

// TestALeaderTaskRegisteredAsTheNodeTakesTheLeadRunsOnce: RunOnLeader
// called while a new leader starts its work (it takes writes, and has not
// started its tasks yet) starts the task once, not once itself and again
// with the leader's tasks.
func TestALeaderTaskRegisteredAsTheNodeTakesTheLeadRunsOnce(t *testing.T) {
	for round := range 5 {
		c := newTestCluster(t)
		n := c.start(fmt.Sprintf("solo%d", round), func(cfg *Config) { cfg.BootstrapExpect = 1 })
		// Registered before the election: started by the leader's start,
		// first of its tasks.
		marker := make(chan struct{})
		n.RunOnLeader("marker", func(ctx context.Context) { close(marker); <-ctx.Done() })
		var starts atomic.Int32
		for !n.writable.Load() {
			time.Sleep(time.Microsecond)
		}
		n.RunOnLeader("task", func(ctx context.Context) { starts.Add(1); <-ctx.Done() })
		<-marker
		c.mustApply(fsm.CreateCreditType{ID: "cr", Name: "Credits"}) // time for a second start to show
		waitFor(t, 30*time.Second, "the task to start", func() bool { return starts.Load() >= 1 })
		if got := starts.Load(); got != 1 {
			t.Fatalf("round %d: the task was started %d times in one leadership; want 1", round, got)
		}
	}
}

// heldFuture is a raft future the test resolves.
type heldFuture chan error

func (f heldFuture) Error() error { return <-f }

// TestALeaderThatCatchesUpWhileHandingOverTakesNoWrites: a transfer asked
// of a leader still catching up on earlier terms (lead's barrier and flush)
// keeps writes paused when the catch-up ends during it (raft would refuse
// them all), and a transfer that fails gives the node its writes back.
func TestALeaderThatCatchesUpWhileHandingOverTakesNoWrites(t *testing.T) {
	c := newTestCluster(t)
	c.startThree(nil)
	l := c.leader()
	l.leaderMu.Lock()
	term := l.leaderCtx
	l.leaderMu.Unlock()

	fut := make(heldFuture, 1)
	done := make(chan error, 1)
	go func() {
		done <- l.handOver(context.Background(), func() raft.Future { return fut }, true)
	}()
	waitFor(t, 30*time.Second, "writes to pause", func() bool { return !l.writable.Load() })
	// What lead does once it has applied every earlier entry.
	if !l.resumeWrites(term) {
		t.Fatal("resumeWrites: the leadership ended")
	}
	if l.writable.Load() {
		t.Fatal("writable while leadership is being handed over: raft refuses every write then")
	}
	fut <- errors.New("the target did not take over")
	if err := <-done; err == nil {
		t.Fatal("handOver hid the transfer's failure")
	}
	if !l.writable.Load() {
		t.Fatal("a leader whose transfer failed takes no writes")
	}
}
