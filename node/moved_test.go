package node

import (
	"bytes"
	"context"
	"path/filepath"
	"testing"
	"time"

	"github.com/hashicorp/memberlist"
	"github.com/hashicorp/raft"
)

// serverAddr is id's address in n's latest raft configuration, "" if it
// is not there.
func serverAddr(n *Node, id string) string {
	f := n.raft.GetConfiguration()
	if f.Error() != nil {
		return ""
	}
	for _, s := range f.Configuration().Servers {
		if string(s.ID) == id {
			return string(s.Address)
		}
	}
	return ""
}

// A node started again on its data dir with another --raft-addr (moved to
// another port or host) is reached at the new address: the leader's
// reconcile re-adds it there from its gossip metadata, every node's
// configuration says so, it catches up on what it missed, and it counts
// for the quorum: with the leader gone, it and the third node elect a
// leader and commit. Moved to another host, its gossip address changes
// too: memberlist refuses a member's name at a new address while it holds
// the old one. The others took the node back only once memberlist had
// dropped the old address's dead entry (GossipToTheDeadTime, 30 s after
// the death) and the node's next push-pull (every 30 s) had brought its
// state: 52 s after its restart, measured. They now give the name to the
// new address once the old one has been dead for deadNodeReclaimTime, and
// ask the node to rejoin at the address its name was claimed from. Here
// memberlist keeps dead entries and pushes state only once an hour, so
// only that brings the node back.
func TestANodeStartedOnANewRaftAddressIsReachedThereAndCountsForTheQuorum(t *testing.T) {
	for _, tt := range []struct {
		name      string
		gossipToo bool
	}{
		{"on a new raft port", false},
		{"on new raft and gossip ports", true},
	} {
		t.Run(tt.name, func(t *testing.T) { testMoved(t, tt.gossipToo) })
	}
}

func testMoved(t *testing.T, gossipToo bool) {
	const wait = 2 * time.Minute
	c := newTestCluster(t)
	c.startThree(func(cfg *Config) {
		if gossipToo {
			cfg.memberlistConfig = func(mc *memberlist.Config) {
				mc.GossipToTheDeadTime = time.Hour
				mc.PushPullInterval = time.Hour
			}
		}
	})
	setupLedger(c)
	c.mustApply(burn("before-move"))
	leader := c.leader()
	moved := "n3"
	if leader.ID() == moved {
		moved = "n2"
	}
	oldAddr := c.node(moved).RaftAddr()
	c.shutdown(moved)
	c.mustApply(burn("while-away"))

	newAddr := freeAddr(t)
	n := c.restart(moved, func(cfg *Config) {
		cfg.RaftAddr = newAddr
		if gossipToo {
			cfg.GossipAddr = "127.0.0.1:0"
		}
	})
	if n.RaftAddr() != newAddr || newAddr == oldAddr {
		t.Fatalf("%s listens for raft on %s, want the new %s (old %s)", moved, n.RaftAddr(), newAddr, oldAddr)
	}
	for _, up := range c.up() {
		waitFor(t, wait, up.ID()+"'s configuration to have "+moved+" at "+newAddr, func() bool {
			return serverAddr(up, moved) == newAddr
		})
	}
	waitFor(t, wait, moved+" to know the leader's API address (to forward writes)", func() bool {
		_, rpc := n.Leader()
		return rpc != ""
	})
	if got := raftConfig(t, c.leader())[moved]; got != raft.Voter {
		t.Errorf("%s is a %v in the leader's configuration, want a voter", moved, got)
	}
	c.mustApply(burn("after-move"))
	c.waitConverged()

	// The old leader goes: the other two must elect one of them through
	// the addresses they hold and commit a write, which needs the moved
	// node's vote and its append.
	gone := c.leader().ID()
	c.crash(gone)
	c.mustApply(burn("moved-in-the-majority"))
	dumps := c.waitConverged()
	if len(dumps) != 2 {
		t.Fatalf("got dumps of %d replicas, want the 2 left", len(dumps))
	}
	counts := usageCounts(t, n)
	for _, id := range []string{"before-move", "while-away", "after-move", "moved-in-the-majority"} {
		if counts[id] != 1 {
			t.Errorf("%s: event %s is in its ledger %d times, want 1", moved, id, counts[id])
		}
	}
}

// A data dir restored with one raft address (RestoreDataDir's) and served
// with another: the node leads its restored cluster alone, and a leader is
// in no member table of its own (gossip reports the others), so the
// reconcile that re-adds a moved member never corrected the leader's own
// entry: its configuration, and that of every node joining it, named the
// restore's address for as long as it led, where a leadership transfer to
// it, or the next leader's appends, went. The leader now corrects its own
// address too.
func TestARestoredNodeServedOnAnotherRaftAddressIsNamedThereWhileItLeads(t *testing.T) {
	saved := savedSnapshot(t)
	cfg := testConfig("r1", filepath.Join(t.TempDir(), "r1"), 20997)
	cfg.RaftAddr = freeAddr(t)
	restoredAt := cfg.RaftAddr
	if err := RestoreDataDir(cfg, bytes.NewReader(saved)); err != nil {
		t.Fatalf("restore data dir: %v", err)
	}
	c := newTestCluster(t)
	servedAt := freeAddr(t)
	r1 := c.start("r1", func(c *Config) { *c = cfg; c.RaftAddr = servedAt })
	if servedAt == restoredAt {
		t.Fatalf("the restore and the serve use one address, %s", servedAt)
	}
	c.mustApply(burn("restored-cluster"))
	for _, id := range []string{"r2", "r3"} {
		c.start(id, func(c *Config) { c.Join = []string{r1.GossipAddr()} })
	}
	for _, up := range c.up() {
		waitFor(t, time.Minute, up.ID()+"'s configuration to have r1 at "+servedAt, func() bool {
			return serverAddr(up, "r1") == servedAt && serverAddr(up, "r2") != "" && serverAddr(up, "r3") != ""
		})
	}
	c.mustApply(burn("three-nodes"))
	c.waitConverged()
	// Leadership leaves r1 and comes back to it through the address the
	// configuration names.
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	if err := r1.TransferLeadership(ctx, "r2"); err != nil {
		t.Fatalf("transfer to r2: %v", err)
	}
	waitFor(t, time.Minute, "r2 to lead", func() bool { return c.node("r2").IsLeader() })
	if err := c.node("r2").TransferLeadership(ctx, "r1"); err != nil {
		t.Fatalf("transfer back to r1: %v", err)
	}
	waitFor(t, time.Minute, "r1 to lead again", r1.IsLeader)
	c.mustApply(burn("back-on-r1"))
	if dumps := c.waitConverged(); len(dumps) != 3 {
		t.Fatalf("got dumps of %d replicas, want 3", len(dumps))
	}
}
