package node

import (
	"testing"
	"time"

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
// too: memberlist refuses a member's name at a new address until it has
// dropped the old one's dead entry (GossipToTheDeadTime, 30 s after the
// death), so the others take the node back only then (52 s after its
// restart, measured), hence the longer wait there.
func TestANodeStartedOnANewRaftAddressIsReachedThereAndCountsForTheQuorum(t *testing.T) {
	for _, tt := range []struct {
		name      string
		gossipToo bool
		wait      time.Duration
	}{
		{"on a new raft port", false, time.Minute},
		{"on new raft and gossip ports", true, 3 * time.Minute},
	} {
		t.Run(tt.name, func(t *testing.T) { testMoved(t, tt.gossipToo, tt.wait) })
	}
}

func testMoved(t *testing.T, gossipToo bool, wait time.Duration) {
	c := newTestCluster(t)
	c.startThree(nil)
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
