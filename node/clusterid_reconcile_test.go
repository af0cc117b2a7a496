package node

import (
	"log/slog"
	"testing"
	"time"

	"github.com/hashicorp/memberlist"
)

// A cluster formed by a build before cluster ids has none after the
// upgrade (every deployment's cluster at the upgrade), so its nodes accept
// every pool, and a node with an id accepts nodes that announce none: a
// --join from such a cluster's node to a node of a cluster with an id (a
// typo) still merged the two pools. Each leader must still keep the other
// cluster's node out of its raft configuration: the one with an id
// because the node is in a raft cluster of its own and announces no id,
// the one without because the node announces an id. Before, each added
// the other's node as a voter within a second.
func TestAJoinBetweenAClusterFormedByAnOlderBuildAndOneWithAnIDAddsNeitherToTheOther(t *testing.T) {
	a, b := newTestCluster(t), newTestCluster(t)
	aLogs, bLogs := newLogCapture(), newLogCapture()
	a.start("a1", func(cfg *Config) { cfg.BootstrapExpect = 1; cfg.noClusterID = true })
	setupLedger(a)
	a.shutdown("a1")
	b1 := b.start("b1", func(cfg *Config) { cfg.BootstrapExpect = 1; cfg.Logger = slog.New(bLogs) })
	setupLedger(b)

	// a1 upgraded to this build, restarted with a --join naming b1.
	a1 := a.restart("a1", func(cfg *Config) {
		cfg.noClusterID = false
		cfg.Join = []string{b1.GossipAddr()}
		cfg.Logger = slog.New(aLogs)
	})
	if id := a1.clusterID(); id != "" {
		t.Fatalf("a1, of a cluster formed by an older build, has cluster id %q", id)
	}
	const leftOut = "not adding a gossip member of another creditd cluster to the raft configuration"
	waitFor(t, 3*time.Minute, "each leader to leave the other's node out of its configuration", func() bool {
		for _, p := range [][2]*Node{{a1, b1}, {b1, a1}} {
			if serverAddr(p[0], p[1].ID()) != "" {
				t.Fatalf("%s took %s of the other cluster into its configuration: %v", p[0].ID(), p[1].ID(), raftConfig(t, p[0]))
			}
		}
		return a1.IsLeader() && b1.IsLeader() &&
			aLogs.find("ERROR", leftOut, "member=b1", b1.clusterID()) != "" &&
			bLogs.find("ERROR", leftOut, "member=a1", "older build") != ""
	})
	if got := raftConfig(t, a1); len(got) != 1 {
		t.Errorf("a1's configuration is %v, want a1 alone", got)
	}
	if got := raftConfig(t, b1); len(got) != 1 {
		t.Errorf("b1's configuration is %v, want b1 alone", got)
	}
}

// A data dir restored from a snapshot of a cluster formed by an older
// build (a new cluster, with an id) and served on a former member's
// --gossip-addr: the old cluster's upgraded node, which has no id, asks
// that member to rejoin there and merges the restored node's pool. Its
// leader must not take the restored node's id, which it took for its own
// cluster's, having none, when the restored node announced it under the
// id of a server of its configuration; nor move that former member to the
// restored node's raft address (restored under the member's id), nor add
// the restored node (under a new id); and the restored node must not add
// the old cluster's node. Before, a1's configuration held r1; and, a1
// having adopted the restored node's id, a2 at the restored node's raft
// address.
func TestARestoredNodeMeetingAClusterFormedByAnOlderBuildJoinsNeither(t *testing.T) {
	for _, tt := range []struct {
		name, id string
	}{
		{"under the former member's id", "a2"},
		{"under a new id", "r1"},
	} {
		t.Run(tt.name, func(t *testing.T) {
			a, aLogs, rLogs := newTestCluster(t), newLogCapture(), newLogCapture()
			a1 := a.start("a1", func(cfg *Config) {
				cfg.noClusterID = true
				cfg.BootstrapExpect = 1
				cfg.Voters = 1 // a1 keeps its quorum alone once a2 is gone
				cfg.GossipReconnectInterval = 200 * time.Millisecond
			})
			setupLedger(a)
			a.mustApply(burn("before-backup"))
			a2Gossip := freeGossipAddr(t)
			a.start("a2", func(cfg *Config) {
				cfg.noClusterID = true
				cfg.GossipAddr = a2Gossip
				cfg.Join = []string{a1.GossipAddr()}
			})
			waitFor(t, time.Minute, "a2 in a1's configuration", func() bool { return serverAddr(a1, "a2") != "" })
			a2Raft := serverAddr(a1, "a2")
			// a1 upgraded to this build.
			a.shutdown("a1")
			a1 = a.restart("a1", func(cfg *Config) { cfg.noClusterID = false; cfg.Logger = slog.New(aLogs) })
			if id := a1.clusterID(); id != "" {
				t.Fatalf("a1, of a cluster formed by an older build, has cluster id %q", id)
			}
			waitFor(t, time.Minute, "a1 to lead and hold a2 alive", func() bool {
				mi, ok := a1.members.get("a2")
				return a1.IsLeader() && ok && mi.state == memberlist.StateAlive
			})
			restored := restoreOnAFormerMembersGossipAddress(t, a, a1, a2Gossip, tt.id, 20988, rLogs)
			const leftOut = "not adding a gossip member of another creditd cluster to the raft configuration"
			waitFor(t, 3*time.Minute, "each leader to leave the other's node out of its configuration", func() bool {
				if id := a1.clusterID(); id != "" {
					t.Fatalf("a1, of a cluster formed by an older build, took cluster id %q (the restored node's is %s)", id, restored.clusterID())
				}
				if id := foreignIn(a1, restored); id != "" && serverAddr(a1, id) == restored.RaftAddr() {
					t.Fatalf("a1 took the restored node as its member %s: configuration %v", id, raftConfig(t, a1))
				}
				if got := serverAddr(a1, "a2"); got != a2Raft {
					t.Fatalf("a1's configuration names a2 at %s, want %s (the restored node's is %s)", got, a2Raft, restored.RaftAddr())
				}
				if serverAddr(restored, "a1") != "" {
					t.Fatalf("the restored node took a1 into its configuration: %v", raftConfig(t, restored))
				}
				return a1.IsLeader() && restored.IsLeader() &&
					aLogs.find("ERROR", leftOut, "member="+tt.id, restored.clusterID()) != "" &&
					rLogs.find("ERROR", leftOut, "member=a1", "older build") != ""
			})
		})
	}
}
