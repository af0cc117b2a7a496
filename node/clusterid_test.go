package node

import (
	"bytes"
	"context"
	"log/slog"
	"path/filepath"
	"slices"
	"testing"
	"time"

	"github.com/hashicorp/memberlist"
)

// A member of one cluster restarted with a --join that names a node of
// another creditd cluster (a typo) must not merge the two: each leader
// adds the members it sees in gossip to its raft configuration, so a
// merged pool put the other cluster's node in it, and that node followed
// a leader whose log is not its own.
func TestAJoinToAnotherClustersNodeAddsNeitherToTheOther(t *testing.T) {
	a, b := newTestCluster(t), newTestCluster(t)
	aLogs, bLogs := newLogCapture(), newLogCapture()
	a.start("a1", func(cfg *Config) { cfg.BootstrapExpect = 1 })
	setupLedger(a)
	b1 := b.start("b1", func(cfg *Config) { cfg.BootstrapExpect = 1; cfg.Logger = slog.New(bLogs) })
	setupLedger(b)

	a.shutdown("a1")
	a1 := a.restart("a1", func(cfg *Config) { cfg.Join = []string{b1.GossipAddr()}; cfg.Logger = slog.New(aLogs) })
	clustersStayApart(t, []*Node{a1}, []*Node{b1}, 3, aLogs, bLogs)
}

// A data dir restored from a snapshot (a new cluster of one) and served on
// the --gossip-addr a member of the old cluster had, without --join: the
// old cluster's nodes still ask that dead member to rejoin (reconnectLoop),
// and reach the restored node there. Restored under the member's own id
// (a member's dir restored in place) or under a new one.
func TestARestoredNodeOnAFormerMembersGossipAddressJoinsNeitherCluster(t *testing.T) {
	for _, tt := range []struct {
		name, id string
	}{
		{"under the former member's id", "a2"},
		{"under a new id", "r1"},
	} {
		t.Run(tt.name, func(t *testing.T) {
			a, aLogs, rLogs := newTestCluster(t), newLogCapture(), newLogCapture()
			a1 := a.start("a1", func(cfg *Config) {
				cfg.Logger = slog.New(aLogs)
				cfg.BootstrapExpect = 1
				cfg.Voters = 1 // a1 keeps its quorum alone once a2 is gone
				cfg.GossipReconnectInterval = 200 * time.Millisecond
			})
			setupLedger(a)
			a.mustApply(burn("before-backup"))
			a2Gossip := freeGossipAddr(t)
			a.start("a2", func(cfg *Config) {
				cfg.GossipAddr = a2Gossip
				cfg.Join = []string{a1.GossipAddr()}
			})
			waitFor(t, time.Minute, "a2 in a1's configuration", func() bool { return serverAddr(a1, "a2") != "" })
			restored := restoreOnAFormerMembersGossipAddress(t, a, a1, a2Gossip, tt.id, 20990, rLogs)
			clustersStayApart(t, []*Node{a1}, []*Node{restored}, 1, aLogs, rLogs)

			// a1 asks a2 to rejoin every 200 ms; its address being another
			// cluster's node's, it is asked again only in 10 minutes: every
			// try was a refused merge on both sides and an ERROR on the
			// restored node.
			merges, _ := restored.gossip.refused.counts()
			passes := a1.gossip.reconnectPasses.Load()
			waitFor(t, time.Minute, "a1 to go through 10 more reconnect passes", func() bool {
				return a1.gossip.reconnectPasses.Load() >= passes+10
			})
			if now, _ := restored.gossip.refused.counts(); now != merges {
				t.Errorf("the restored node refused %d merges with a1's pool during a1's 10 reconnect passes, want none", now-merges)
			}
		})
	}
}

// clustersStayApart fails the test as soon as a node of one side has a node
// of the other in its raft configuration or holds it alive in its member
// table (by raft address: the two sides may share ids), until the first
// node of each side leads its own cluster and every node has refused the
// other side's pool minMerges times (each refusal is a join that merged
// the pools before), and checks that a refusal was logged naming both
// clusters' ids.
func clustersStayApart(t *testing.T, a, b []*Node, minMerges int, logs ...*logCapture) {
	t.Helper()
	refused := func() bool {
		if !a[0].IsLeader() || !b[0].IsLeader() {
			return false
		}
		for _, n := range append(slices.Clone(a), b...) {
			if merges, _ := n.gossip.refused.counts(); merges < minMerges {
				return false
			}
		}
		return true
	}
	waitFor(t, 3*time.Minute, "each cluster to lead itself and refuse the other's nodes", func() bool {
		for _, side := range []struct{ mine, theirs []*Node }{{a, b}, {b, a}} {
			for _, n := range side.mine {
				for _, o := range side.theirs {
					if id := foreignIn(n, o); id != "" {
						t.Fatalf("%s took %s of the other cluster (raft %s) as its member %s: configuration %v, member table %v",
							n.ID(), o.ID(), o.RaftAddr(), id, raftConfig(t, n), n.members.list())
					}
				}
			}
		}
		return refused()
	})
	for i, l := range logs {
		mine, theirs := a[0].clusterID(), b[0].clusterID()
		if i > 0 {
			mine, theirs = theirs, mine
		}
		if mine == "" || theirs == "" || mine == theirs {
			t.Fatalf("cluster ids %q and %q: want two, different", mine, theirs)
		}
		if l.find("ERROR", "refused to merge with the gossip pool of another creditd cluster", mine, theirs) == "" {
			t.Errorf("no refusal logged naming this cluster %s and the other %s", mine, theirs)
		}
	}
}

// foreignIn is the id under which n holds o in its raft configuration or
// as an alive member, or "".
func foreignIn(n, o *Node) string {
	f := n.raft.GetConfiguration()
	if f.Error() == nil {
		for _, s := range f.Configuration().Servers {
			if string(s.Address) == o.RaftAddr() {
				return string(s.ID)
			}
		}
	}
	members := n.members.list()
	i := slices.IndexFunc(members, func(mi memberInfo) bool {
		return mi.state == memberlist.StateAlive && mi.meta.Raft == o.RaftAddr()
	})
	if i >= 0 {
		return members[i].meta.ID
	}
	return ""
}

// Every member of a cluster carries one id, with no coordinator: nodes
// that bootstrap together derive it from the configuration they all
// compute, a node joined later adopts it once it is in the configuration,
// each keeps it across a restart, and a data dir restored from a snapshot
// of the cluster is another cluster, with an id of its own.
func TestEveryMemberOfAClusterCarriesItsID(t *testing.T) {
	c := newTestCluster(t)
	c.startThree(nil)
	setupLedger(c)
	c.start("n4", func(cfg *Config) { cfg.Join = []string{c.node("n1").GossipAddr()} })
	var id string
	waitFor(t, 2*time.Minute, "every node to carry one cluster id, in its gossip metadata too", func() bool {
		id = c.node("n1").clusterID()
		for _, n := range c.up() {
			if n.clusterID() != id || id == "" {
				return false
			}
			for _, mi := range n.members.list() {
				if mi.meta.Cluster != id {
					return false
				}
			}
		}
		return true
	})
	for _, n := range []string{"n2", "n4"} {
		stored, err := loadClusterID(c.node(n).store)
		if err != nil || stored != id {
			t.Fatalf("%s keeps cluster id %q (%v), want %q", n, stored, err, id)
		}
	}
	c.shutdown("n4")
	if n4 := c.restart("n4", nil); n4.clusterID() != id {
		t.Errorf("n4 restarted with cluster id %q, want %q", n4.clusterID(), id)
	}

	var saved bytes.Buffer
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	if err := c.leader().SaveSnapshot(ctx, &saved); err != nil {
		t.Fatalf("save: %v", err)
	}
	cfg := testConfig("r1", filepath.Join(t.TempDir(), "r1"), 20989)
	cfg.RaftAddr = freeAddr(t)
	if err := RestoreDataDir(cfg, &saved); err != nil {
		t.Fatalf("restore data dir: %v", err)
	}
	r := newTestCluster(t)
	if got := r.start("r1", func(c *Config) { *c = cfg }).clusterID(); got == "" || got == id {
		t.Errorf("the restored node's cluster id is %q, want a new one (the snapshot's cluster is %s)", got, id)
	}
}

// The id of a bootstrapped cluster is a function of its configuration
// alone (ids and raft addresses): nodes that computed one configuration
// have one id, whatever else they announced meanwhile.
func TestTheBootstrapConfigurationAloneMakesTheClusterID(t *testing.T) {
	peers := func(rpc, lastRaft string) []nodeMeta {
		return []nodeMeta{{ID: "n1", Raft: "10.0.0.1:7000", RPC: rpc}, {ID: "n2", Raft: "10.0.0.2:7000"}, {ID: "n3", Raft: lastRaft}}
	}
	one, same, other := clusterIDOf(peers("a", "10.0.0.3:7000")), clusterIDOf(peers("b", "10.0.0.3:7000")),
		clusterIDOf(peers("a", "10.0.0.4:7000"))
	if one != same {
		t.Errorf("one configuration gives %s and %s", one, same)
	}
	if one == other {
		t.Errorf("two configurations give one id %s", one)
	}
}

// Nodes that carry no cluster id (an older build, during a rolling
// upgrade) are accepted, both ways: an older node joins a cluster that
// has an id, and a node of this build joins a cluster of older nodes
// (which then has no id to adopt).
func TestMembersWithoutAClusterIDAreAccepted(t *testing.T) {
	for _, tt := range []struct {
		name             string
		oldFirst, oldNew bool
	}{
		{"an older node joins a cluster with an id", false, true},
		{"a node of this build joins a cluster of older nodes", true, false},
	} {
		t.Run(tt.name, func(t *testing.T) {
			c := newTestCluster(t)
			first := c.start("n1", func(cfg *Config) { cfg.BootstrapExpect = 1; cfg.noClusterID = tt.oldFirst })
			setupLedger(c)
			joined := c.start("n2", func(cfg *Config) { cfg.Join = []string{first.GossipAddr()}; cfg.noClusterID = tt.oldNew })
			waitFor(t, time.Minute, "n2 in n1's configuration, knowing the leader", func() bool {
				_, rpc := joined.Leader()
				return serverAddr(first, "n2") != "" && rpc != ""
			})
			c.mustApply(burn("with-both"))
			if dumps := c.waitConverged(); len(dumps) != 2 {
				t.Fatalf("got dumps of %d replicas, want 2", len(dumps))
			}
			if got, want := joined.clusterID(), first.clusterID(); tt.oldFirst && got != "" || !tt.oldFirst && got != "" && got != want {
				t.Errorf("n2's cluster id is %q (n1's %q)", got, want)
			}
		})
	}
}

// restoreOnAFormerMembersGossipAddress saves a1's snapshot, crashes a's
// member a2 (on gossip address a2Gossip), waits until a1 holds it dead, and
// starts, as node id on that gossip address, a data dir restored from the
// snapshot: a new cluster, on an address the old one still asks a2 to
// rejoin at.
func restoreOnAFormerMembersGossipAddress(t *testing.T, a *testCluster, a1 *Node, a2Gossip, id string, port int, logs slog.Handler) *Node {
	t.Helper()
	var saved bytes.Buffer
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	if err := a1.SaveSnapshot(ctx, &saved); err != nil {
		t.Fatalf("save: %v", err)
	}
	a.crash("a2")
	waitFor(t, time.Minute, "a1 to hold a2 dead", func() bool {
		mi, ok := a1.members.get("a2")
		return ok && mi.state == memberlist.StateDead
	})
	cfg := testConfig(id, filepath.Join(t.TempDir(), id), port)
	cfg.RaftAddr = freeAddr(t)
	cfg.GossipAddr = a2Gossip
	if err := RestoreDataDir(cfg, &saved); err != nil {
		t.Fatalf("restore data dir: %v", err)
	}
	return newTestCluster(t).start(id, func(c *Config) { *c = cfg; c.Logger = slog.New(logs) })
}
