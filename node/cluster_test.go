package node

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/creditd/creditd/fsm"
	"github.com/hashicorp/memberlist"
	"github.com/hashicorp/raft"
)

// setupLedger creates a credit type, a customer and a grant big enough for
// every test's usage.
func setupLedger(c *testCluster) {
	c.mustApply(fsm.CreateCreditType{ID: "cr", Name: "Credits", Scale: 0})
	c.mustApply(fsm.UpsertCustomer{ID: "c1", Name: "Customer One"})
	c.mustApply(fsm.CreateGrant{ID: "g1", CustomerID: "c1", CreditTypeID: "cr", Category: fsm.Promotional, Amount: 1_000_000_000})
}

func burn(id string) fsm.Command {
	return fsm.BurnUsage{Events: []fsm.UsageEvent{{ID: id, CustomerID: "c1", CreditTypeID: "cr", Credits: 1}}}
}

// burned reports whether a BurnUsage result burned its one event.
func burned(res fsm.Result) bool {
	ers, ok := res.Value.([]fsm.EventResult)
	return res.Err == nil && ok && len(ers) == 1 && ers[0].Status == fsm.EventBurned
}

// usageCounts counts ledger entries per usage event id on one replica, and
// checks that ledger time never goes backwards.
func usageCounts(t *testing.T, n *Node) map[string]int {
	t.Helper()
	counts := map[string]int{}
	var lastTime fsm.Timestamp
	err := n.FSM().View(func(v *fsm.View) error {
		return v.ScanLedger(0, 0, func(e *fsm.LedgerEntry) error {
			if e.Time < lastTime {
				return fmt.Errorf("ledger seq %d at %v goes back before %v", e.Seq, e.Time.Time(), lastTime.Time())
			}
			lastTime = e.Time
			if e.CauseKind == fsm.CauseUsage {
				counts[e.CauseID]++
			}
			return nil
		})
	})
	if err != nil {
		t.Fatalf("scan ledger of %s: %v", n.ID(), err)
	}
	return counts
}

func TestKillingTheLeaderUnderLoadLosesNoAcknowledgedWrite(t *testing.T) {
	c := newTestCluster(t)
	c.startThree(nil)
	setupLedger(c)
	first := c.leader()

	const clients, perClient = 32, 40
	var (
		mu      sync.Mutex
		acked   = map[string]bool{}
		total   atomic.Int64
		killed  = make(chan struct{})
		wg      sync.WaitGroup
		errsMu  sync.Mutex
		errList []error
	)
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	for w := range clients {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range perClient {
				id := fmt.Sprintf("e-%02d-%03d", w, i)
				// A retry with the same event id is idempotent, so an
				// unknown outcome is resolved by sending again.
				res, err := c.apply(ctx, burn(id))
				if err != nil || !burned(res) {
					errsMu.Lock()
					errList = append(errList, fmt.Errorf("event %s: %v %v", id, err, res.Err))
					errsMu.Unlock()
					return
				}
				mu.Lock()
				acked[id] = true
				mu.Unlock()
				if total.Add(1) == clients*perClient/3 {
					close(killed)
				}
			}
		}()
	}
	<-killed
	c.crash(first.ID())
	wg.Wait()
	if len(errList) > 0 {
		t.Fatalf("%d writes failed, first: %v", len(errList), errList[0])
	}
	second := c.leader()
	if second.ID() == first.ID() {
		t.Fatalf("the crashed node %s still leads", first.ID())
	}

	c.waitConverged()
	for _, n := range c.up() {
		counts := usageCounts(t, n)
		for id := range acked {
			if counts[id] != 1 {
				t.Errorf("%s: acknowledged event %s is in the ledger %d times", n.ID(), id, counts[id])
			}
		}
		for id, k := range counts {
			if k != 1 {
				t.Errorf("%s: event %s is in the ledger %d times", n.ID(), id, k)
			}
		}
	}

	// The crashed node comes back, catches up and holds the same bytes.
	c.restart(first.ID(), nil)
	c.mustApply(burn("after-restart"))
	dumps := c.waitConverged()
	if len(dumps) != 3 {
		t.Fatalf("got dumps of %d replicas, want 3", len(dumps))
	}
	counts := usageCounts(t, c.node(first.ID()))
	if len(counts) != len(acked)+1 {
		t.Errorf("restarted replica has %d usage events, want %d", len(counts), len(acked)+1)
	}
}

func TestFiveNodesFormByJoinAndKeepQuorumAsMembersChange(t *testing.T) {
	c := newTestCluster(t)
	mod := func(cfg *Config) {
		cfg.Voters = 3
		cfg.DeadServerTimeout = time.Hour
	}
	n1 := c.start("n1", func(cfg *Config) { mod(cfg); cfg.BootstrapExpect = 1 })
	for _, id := range []string{"n2", "n3", "n4", "n5"} {
		c.start(id, func(cfg *Config) { mod(cfg); cfg.Join = []string{n1.GossipAddr()} })
	}
	countSuffrage := func(conf map[string]raft.ServerSuffrage) (voters, nonvoters int) {
		for _, s := range conf {
			if s == raft.Voter {
				voters++
			} else {
				nonvoters++
			}
		}
		return
	}
	waitConfig := func(what string, want func(conf map[string]raft.ServerSuffrage) bool) {
		t.Helper()
		waitFor(t, 90*time.Second, what, func() bool {
			l := c.leader()
			return want(raftConfig(t, l))
		})
	}
	waitConfig("3 voters and 2 non-voters", func(conf map[string]raft.ServerSuffrage) bool {
		v, nv := countSuffrage(conf)
		return v == 3 && nv == 2
	})
	setupLedger(c)
	c.mustApply(burn("before-changes"))

	// An operator removes a voter that is not the leader: a non-voter is
	// promoted so there are 3 voters again.
	l := c.leader()
	var victim string
	for id, s := range raftConfig(t, l) {
		if s == raft.Voter && id != l.ID() {
			victim = id
			break
		}
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if err := l.RemoveMember(ctx, victim); err != nil {
		t.Fatalf("remove %s: %v", victim, err)
	}
	c.crash(victim)
	waitConfig("a non-voter promoted after removing "+victim, func(conf map[string]raft.ServerSuffrage) bool {
		v, nv := countSuffrage(conf)
		_, still := conf[victim]
		return !still && v == 3 && nv == 1
	})
	c.mustApply(burn("after-remove"))

	// A voter leaves gracefully: the leader removes it and promotes the
	// last non-voter.
	l = c.leader()
	var leaver string
	for id, s := range raftConfig(t, l) {
		if s == raft.Voter && id != l.ID() {
			leaver = id
			break
		}
	}
	c.mu.Lock()
	c.nodes[leaver].n.cfg.LeaveOnShutdown = true
	c.nodes[leaver].down = true
	c.mu.Unlock()
	// A shutdown of its own: the waits above may have used most of ctx.
	sctx, scancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer scancel()
	if err := c.node(leaver).Shutdown(sctx); err != nil {
		t.Fatalf("shut down %s: %v", leaver, err)
	}
	waitConfig(leaver+" removed after leaving", func(conf map[string]raft.ServerSuffrage) bool {
		v, nv := countSuffrage(conf)
		_, still := conf[leaver]
		return !still && v == 3 && nv == 0
	})
	c.mustApply(burn("after-leave"))

	// A new node joins as a non-voter: there are enough voters.
	c.start("n6", func(cfg *Config) { mod(cfg); cfg.Join = []string{c.leader().GossipAddr()} })
	waitConfig("n6 added as a non-voter", func(conf map[string]raft.ServerSuffrage) bool {
		return conf["n6"] == raft.Nonvoter
	})
	c.mustApply(burn("after-add"))
	dumps := c.waitConverged()
	if len(dumps) != 4 {
		t.Fatalf("got %d replicas, want 4", len(dumps))
	}
	for _, n := range c.up() {
		counts := usageCounts(t, n)
		for _, id := range []string{"before-changes", "after-remove", "after-leave", "after-add"} {
			if counts[id] != 1 {
				t.Errorf("%s: event %s is in the ledger %d times, want 1", n.ID(), id, counts[id])
			}
		}
	}
}

func TestNodeBehindCompactedLogCatchesUpFromSnapshot(t *testing.T) {
	c := newTestCluster(t)
	c.startThree(func(cfg *Config) {
		cfg.SnapshotThreshold = 32
		cfg.TrailingLogs = 8
		cfg.SnapshotInterval = 100 * time.Millisecond
		cfg.Batch.Disabled = true // one entry per write, so the log grows
	})
	setupLedger(c)
	l := c.leader()
	var follower string
	for _, n := range c.up() {
		if n != l {
			follower = n.ID()
			break
		}
	}
	behind := c.node(follower).raft.LastIndex()
	c.crash(follower)
	for i := range 200 {
		c.mustApply(burn(fmt.Sprintf("while-down-%d", i)))
	}
	l = c.leader()
	waitFor(t, 60*time.Second, "the leader to compact its log past the follower", func() bool {
		first, err := l.store.FirstIndex()
		return err == nil && first > behind+1
	})
	n := c.restart(follower, nil)
	c.mustApply(burn("after-catch-up"))
	c.waitConverged()
	if st := n.Status(); st.LastSnapshotIndex <= behind {
		t.Errorf("restarted follower's last snapshot index is %d, want it past %d (installed from the leader)", st.LastSnapshotIndex, behind)
	}
	if got := len(usageCounts(t, n)); got != 201 {
		t.Errorf("restarted follower has %d usage events, want 201", got)
	}
}

// countingSM counts what raft hands the state machine.
type countingSM struct {
	StateMachine
	restores     atomic.Int64
	maxIndexSeen atomic.Uint64
	minIndexSeen atomic.Uint64
}

func (s *countingSM) Apply(entries []fsm.Entry, answer func([][]fsm.Result)) ([][]fsm.Result, error) {
	for _, e := range entries {
		if s.minIndexSeen.Load() == 0 || e.Index < s.minIndexSeen.Load() {
			s.minIndexSeen.Store(e.Index)
		}
		s.maxIndexSeen.Store(max(s.maxIndexSeen.Load(), e.Index))
	}
	return s.StateMachine.Apply(entries, answer)
}

func (s *countingSM) Restore(r io.Reader) error {
	s.restores.Add(1)
	return s.StateMachine.Restore(r)
}

func TestRestartResumesFromItsOwnStateWithoutRestoringOrReplayingAll(t *testing.T) {
	dir := t.TempDir()
	open := func() (*fsm.FSM, *countingSM) {
		f, err := fsm.Open(filepath.Join(dir, "state.db"), fsm.Options{})
		if err != nil {
			t.Fatal(err)
		}
		return f, &countingSM{StateMachine: FSMStateMachine{F: f}}
	}
	c := newTestCluster(t)
	f1, sm1 := open()
	c.start("solo", func(cfg *Config) {
		cfg.BootstrapExpect = 1
		cfg.SnapshotThreshold = 32
		cfg.TrailingLogs = 8
		cfg.SnapshotInterval = 100 * time.Millisecond
		cfg.Batch.Disabled = true
		cfg.StateMachine = sm1
	})
	n := c.node("solo")
	n.fsm = f1 // let the harness read it; the node does not own it
	setupLedger(c)
	for i := range 100 {
		c.mustApply(burn(fmt.Sprintf("e%d", i)))
	}
	waitFor(t, 60*time.Second, "a snapshot", func() bool { return n.Status().LastSnapshotIndex > 32 })
	snapIndex := n.Status().LastSnapshotIndex
	c.shutdown("solo")
	if err := f1.Close(); err != nil { // the node does not own it
		t.Fatal(err)
	}
	applied := f1.AppliedIndex()

	f2, sm2 := open()
	n2 := c.restart("solo", func(cfg *Config) { cfg.StateMachine = sm2 })
	n2.fsm = f2
	c.mustApply(burn("after-restart"))
	if got := sm2.restores.Load(); got != 0 {
		t.Errorf("restart restored %d snapshots, want 0: the state file already held them", got)
	}
	if lo := sm2.minIndexSeen.Load(); lo <= snapIndex {
		t.Errorf("restart handed entry %d to the state machine, at or below the snapshot index %d: history replayed", lo, snapIndex)
	}
	if f2.AppliedIndex() <= applied {
		t.Errorf("applied index %d after restart and a write, want above %d", f2.AppliedIndex(), applied)
	}
	if got := len(usageCounts(t, n2)); got != 101 {
		t.Errorf("%d usage events after restart, want 101", got)
	}
}

func TestWritesFailWithNoLeaderWithinTheBoundWhenQuorumIsLost(t *testing.T) {
	c := newTestCluster(t)
	c.startThree(nil)
	setupLedger(c)
	l := c.leader()
	for _, n := range c.up() {
		if n != l {
			c.crash(n.ID())
		}
	}
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	// The first write may still be accepted into the old leader's log
	// before it steps down: its outcome is unknown, which is also
	// ErrNoLeader. Later writes find no leader at all.
	for i := range 3 {
		_, err := l.Apply(ctx, burn(fmt.Sprintf("no-quorum-%d", i)))
		if !errors.Is(err, ErrNoLeader) {
			t.Fatalf("write %d without quorum: got %v, want ErrNoLeader", i, err)
		}
		if ctx.Err() != nil {
			t.Fatalf("write %d hung until the test's deadline", i)
		}
	}
	if err := l.LinearizableRead(ctx); !errors.Is(err, ErrNoLeader) && !errors.As(err, new(*NotLeaderError)) {
		t.Fatalf("linearizable read without quorum: got %v", err)
	}
}

func TestFollowersNameTheLeaderAndLinearizableReadsSeeAcknowledgedWrites(t *testing.T) {
	c := newTestCluster(t)
	c.startThree(nil)
	setupLedger(c)
	l := c.leader()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	for _, n := range c.up() {
		if n == l {
			continue
		}
		waitFor(t, 30*time.Second, "a follower to know the leader's API address", func() bool {
			_, addr := n.Leader()
			return addr != ""
		})
		_, err := n.Apply(ctx, burn("to-follower"))
		var nl *NotLeaderError
		if !errors.As(err, &nl) {
			t.Fatalf("write on follower %s: got %v, want *NotLeaderError", n.ID(), err)
		}
		if nl.LeaderID != l.ID() || nl.LeaderRPCAddr != l.cfg.RPCAddr {
			t.Errorf("follower %s names leader %s at %s, want %s at %s", n.ID(), nl.LeaderID, nl.LeaderRPCAddr, l.ID(), l.cfg.RPCAddr)
		}
		if err := n.LinearizableRead(ctx); !errors.As(err, &nl) {
			t.Errorf("linearizable read on follower: got %v, want *NotLeaderError", err)
		}
	}
	res, err := l.Apply(ctx, burn("to-leader"))
	if err != nil || !burned(res) {
		t.Fatalf("write on leader: %v %v", err, res.Err)
	}
	if err := l.LinearizableRead(ctx); err != nil {
		t.Fatalf("linearizable read: %v", err)
	}
	if usageCounts(t, l)["to-leader"] != 1 {
		t.Errorf("a linearizable read after an acknowledged write does not see it")
	}
	st := l.Status()
	if st.State != "Leader" || len(st.Members) != 3 || !st.Ready {
		t.Errorf("leader status = %+v", st)
	}
}

func TestGroupCommitPutsConcurrentCommandsInFewerEntriesWithOwnResults(t *testing.T) {
	c := newTestCluster(t)
	c.start("solo", func(cfg *Config) {
		cfg.BootstrapExpect = 1
		cfg.Batch.MaxInflight = 1
		cfg.Batch.MaxWait = 50 * time.Millisecond
	})
	setupLedger(c)
	l := c.leader()
	before := l.raft.LastIndex()
	const writers = 64
	var wg sync.WaitGroup
	results := make([]fsm.Result, writers)
	errs := make([]error, writers)
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	for i := range writers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			// Every other event is for an unknown customer: each caller
			// must get its own result, not its neighbour's.
			cust := "c1"
			if i%2 == 1 {
				cust = "nobody"
			}
			results[i], errs[i] = l.Apply(ctx, fsm.BurnUsage{Events: []fsm.UsageEvent{{ID: fmt.Sprintf("g%d", i), CustomerID: cust, CreditTypeID: "cr", Credits: 1}}})
		}()
	}
	wg.Wait()
	for i := range writers {
		if errs[i] != nil {
			t.Fatalf("writer %d: %v", i, errs[i])
		}
		ers, _ := results[i].Value.([]fsm.EventResult)
		if len(ers) != 1 || ers[0].EventID != fmt.Sprintf("g%d", i) {
			t.Fatalf("writer %d got someone else's result: %+v", i, results[i])
		}
		if wantBurned := i%2 == 0; (ers[0].Status == fsm.EventBurned) != wantBurned {
			t.Errorf("writer %d: status %v, want burned=%v", i, ers[0].Status, wantBurned)
		}
	}
	if entries := l.raft.LastIndex() - before; entries >= writers {
		t.Errorf("%d commands took %d log entries; group commit should need fewer", writers, entries)
	}
}

func TestLeaderTicksWithoutTrafficAndTimeNeverGoesBack(t *testing.T) {
	c := newTestCluster(t)
	c.start("solo", func(cfg *Config) {
		cfg.BootstrapExpect = 1
		cfg.TickInterval = 20 * time.Millisecond
	})
	l := c.leader()
	start := l.FSM().LastTime()
	waitFor(t, 30*time.Second, "ticks to move log time", func() bool {
		return l.FSM().LastTime() > start+fsm.Timestamp(40*time.Millisecond/time.Microsecond)
	})
	// Stamps stay ahead of applied time even if the clock were behind.
	prev := l.FSM().LastTime()
	c.mustApply(fsm.CreateCreditType{ID: "cr", Name: "Credits"})
	if got := l.FSM().LastTime(); got <= prev {
		t.Errorf("log time went from %v to %v", prev.Time(), got.Time())
	}
}

func TestSaveAndRestoreSnapshotIntoANewCluster(t *testing.T) {
	saved := savedSnapshot(t)
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()

	fresh := newTestCluster(t)
	fresh.start("b1", func(cfg *Config) { cfg.BootstrapExpect = 1 })
	l := fresh.leader()
	if err := l.RestoreSnapshot(ctx, bytes.NewReader(saved)); err != nil {
		t.Fatalf("restore: %v", err)
	}
	fresh.mustApply(burn("new-after-restore"))
	counts := usageCounts(t, l)
	if len(counts) != 21 || counts["new-after-restore"] != 1 {
		t.Errorf("restored cluster has usage %v, want the 20 old events and the new one", len(counts))
	}
}

func freeAddr(t *testing.T) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	return ln.Addr().String()
}

func TestRestoreDataDirStartsANewClusterFromASavedSnapshot(t *testing.T) {
	saved := savedSnapshot(t)

	cfg := testConfig("r1", filepath.Join(t.TempDir(), "r1"), 20999)
	cfg.RaftAddr = freeAddr(t)
	if err := RestoreDataDir(cfg, bytes.NewReader(saved)); err != nil {
		t.Fatalf("restore data dir: %v", err)
	}
	if err := RestoreDataDir(cfg, bytes.NewReader(saved)); err == nil {
		t.Fatalf("a second restore into the same data dir succeeded")
	}
	fresh := newTestCluster(t)
	// Started without its id, as "creditd snapshot restore" told users to:
	// the restored data dir keeps it (a new random id would name no member
	// of the restored configuration, and the node would never lead).
	fresh.start("r1", func(c *Config) { *c = cfg; c.NodeID = "" })
	fresh.mustApply(burn("new-after-restore"))
	counts := usageCounts(t, fresh.leader())
	if len(counts) != 21 || counts["new-after-restore"] != 1 {
		t.Errorf("restored cluster has %d usage events, want the 20 old ones and the new one", len(counts))
	}
	// A second node joins the restored cluster and catches up.
	fresh.start("r2", func(c *Config) { c.Join = []string{fresh.node("r1").GossipAddr()} })
	fresh.mustApply(burn("after-join"))
	fresh.waitConverged()
}

func TestTheDataDirKeepsTheNodeID(t *testing.T) {
	dir := t.TempDir()
	if id, err := dataDirNodeID(dir, "a"); err != nil || id != "a" {
		t.Fatalf("first start as a: %q, %v", id, err)
	}
	if id, err := dataDirNodeID(dir, ""); err != nil || id != "a" {
		t.Errorf("a start without an id: %q, %v; want the kept a", id, err)
	}
	if id, err := dataDirNodeID(dir, "a"); err != nil || id != "a" {
		t.Errorf("a start as a again: %q, %v", id, err)
	}
	if _, err := dataDirNodeID(dir, "b"); err == nil || !strings.Contains(err.Error(), `belongs to node "a"`) {
		t.Errorf("a start as b: %v; want a refusal naming a", err)
	}
	other := t.TempDir()
	gen, err := dataDirNodeID(other, "")
	if err != nil || !strings.HasPrefix(gen, "node-") {
		t.Fatalf("generated: %q, %v", gen, err)
	}
	if again, err := dataDirNodeID(other, ""); err != nil || again != gen {
		t.Errorf("the generated id is not kept: %q then %q, %v", gen, again, err)
	}
}

// TestACrashedNodeWithoutJoinIsFoundAgainAfterBeingDeclaredDead: the node
// that bootstrapped the pool has no Join; once the others have declared it
// dead, its fresh memberlist after a restart knows nobody, and only the
// others asking it to rejoin bring it back (without that it could not
// forward writes, and the leader would remove it from raft while it runs).
func TestACrashedNodeWithoutJoinIsFoundAgainAfterBeingDeclaredDead(t *testing.T) {
	c := newTestCluster(t)
	c.startThree(func(cfg *Config) { cfg.GossipReconnectInterval = 200 * time.Millisecond })
	setupLedger(c)
	c.crash("n1")
	for _, id := range []string{"n2", "n3"} {
		n := c.node(id)
		waitFor(t, time.Minute, id+" declaring n1 dead", func() bool {
			mi, ok := n.members.get("n1")
			return ok && mi.state == memberlist.StateDead
		})
	}
	// memberlist keeps gossiping to a dead member for a while, which can
	// reintroduce it by chance; past that window only a rejoin can.
	time.Sleep(memberlist.DefaultLANConfig().GossipToTheDeadTime + 5*time.Second)
	n1 := c.restart("n1", nil)
	waitFor(t, time.Minute, "the restarted n1 to see the others and the leader's API address", func() bool {
		for _, id := range []string{"n2", "n3"} {
			if mi, ok := n1.members.get(id); !ok || mi.state != memberlist.StateAlive {
				return false
			}
		}
		_, rpc := n1.Leader()
		return rpc != ""
	})
	for _, id := range []string{"n2", "n3"} {
		n := c.node(id)
		waitFor(t, time.Minute, id+" seeing n1 alive again", func() bool {
			mi, ok := n.members.get("n1")
			return ok && mi.state == memberlist.StateAlive
		})
	}
	c.mustApply(burn("after-rejoin"))
	if dumps := c.waitConverged(); len(dumps) != 3 {
		t.Fatalf("got dumps of %d replicas, want 3", len(dumps))
	}
}

// TestAMemberRemovedWhileDeadIsAddedBackWhenItReturns: the leader removes
// a member dead past DeadServerTimeout; when it comes back with its old
// state, gossip shows it alive and not in the configuration, and the
// leader adds it again; it catches up on what it missed.
func TestAMemberRemovedWhileDeadIsAddedBackWhenItReturns(t *testing.T) {
	c := newTestCluster(t)
	c.startThree(func(cfg *Config) { cfg.DeadServerTimeout = time.Second })
	setupLedger(c)
	victim := "n3"
	if c.leader().ID() == victim {
		victim = "n2"
	}
	inConfig := func() bool {
		f := c.leader().raft.GetConfiguration()
		if f.Error() != nil {
			return false
		}
		return slices.ContainsFunc(f.Configuration().Servers, func(s raft.Server) bool { return string(s.ID) == victim })
	}
	c.crash(victim)
	waitFor(t, time.Minute, "the leader to remove the dead "+victim, func() bool { return !inConfig() })
	c.mustApply(burn("while-removed"))
	c.restart(victim, nil)
	waitFor(t, time.Minute, "the leader to add "+victim+" back", inConfig)
	c.mustApply(burn("after-return"))
	if dumps := c.waitConverged(); len(dumps) != 3 {
		t.Fatalf("got dumps of %d replicas, want 3", len(dumps))
	}
	counts := usageCounts(t, c.node(victim))
	for _, id := range []string{"while-removed", "after-return"} {
		if counts[id] != 1 {
			t.Errorf("%s: event %s is in its ledger %d times, want 1", victim, id, counts[id])
		}
	}
}

// TestASnapshotOfNothingAppliedIsRefused: a node still waiting for its
// cluster has applied no entry; a snapshot of it could be restored nowhere,
// so SaveSnapshot says why instead of streaming one.
func TestASnapshotOfNothingAppliedIsRefused(t *testing.T) {
	c := newTestCluster(t)
	n := c.start("n1", func(cfg *Config) { cfg.BootstrapExpect = 3 }) // alone: never bootstraps
	var buf bytes.Buffer
	err := n.SaveSnapshot(context.Background(), &buf)
	if !errors.Is(err, ErrNothingApplied) {
		t.Fatalf("got %v, want ErrNothingApplied", err)
	}
	if buf.Len() != 0 {
		t.Fatalf("%d bytes streamed before the refusal", buf.Len())
	}
}
