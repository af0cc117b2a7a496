package node

import (
	"context"
	"testing"
	"time"

	"github.com/hashicorp/memberlist"
)

// TestAFollowerRemovedWhileRunningLeavesThePool: raft keeps a follower the
// leader removed running, outside the configuration; it must leave the
// gossip pool, or it stays an alive member that the leader adds back as
// soon as its removal is 10 minutes old (members remove undone while the
// operator thinks the node gone).
func TestAFollowerRemovedWhileRunningLeavesThePool(t *testing.T) {
	c := newTestCluster(t)
	c.startThree(nil)
	l := c.leader()
	var f *Node
	for _, n := range c.up() {
		if n != l {
			f = n
			break
		}
	}
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	if err := l.RemoveMember(ctx, f.ID()); err != nil {
		t.Fatal(err)
	}
	waitFor(t, time.Minute, "the removed follower to leave the gossip pool", func() bool {
		mi, ok := l.members.get(f.ID())
		return ok && mi.state == memberlist.StateLeft
	})
	if _, in := raftConfig(t, l)[f.ID()]; in {
		t.Fatalf("%s is in the raft configuration again", f.ID())
	}
}
