package node

import (
	"bytes"
	"context"
	"errors"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// A data dir restored from a snapshot (RestoreDataDir) is a new cluster of
// one: started with Join into the running cluster it came from, under its
// member's id on a new raft address, it elected itself before the leader
// reached it and led the cluster's members at the cluster's own term 2, so
// two leaders wrote different entries under one index and term; a write it
// acknowledged reached no other ledger and the replicas diverged. Start now
// refuses Join on such a dir until it has run, naming the way out; started
// alone first, it is the restored cluster's first node, and Join is then
// accepted like on any node with state.
func TestARestoredDataDirIsRefusedJoinUntilItHasRun(t *testing.T) {
	saved := savedSnapshot(t)
	cfg := testConfig("r1", filepath.Join(t.TempDir(), "r1"), 20998)
	cfg.RaftAddr = freeAddr(t)
	if err := RestoreDataDir(cfg, bytes.NewReader(saved)); err != nil {
		t.Fatalf("restore data dir: %v", err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()

	withJoin := cfg
	withJoin.Join = []string{freeAddr(t)}
	n, err := Start(ctx, withJoin)
	if err == nil {
		_ = n.Shutdown(ctx)
		t.Fatal("a restored data dir that has not run started with Join")
	}
	for _, want := range []string{"--join", "restored from a snapshot", "without --join", "empty data dir"} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("Start with Join on a restored dir: %v; want it to say %q", err, want)
		}
	}
	if errors.Is(err, ErrDataDirInUse) {
		t.Fatalf("the refused start left the dir locked: %v", err)
	}

	// Refused, the dir is as the restore left it: started alone it leads
	// the restored cluster, and started again it may join others.
	c := newTestCluster(t)
	c.start("r1", func(c *Config) { *c = cfg })
	c.mustApply(burn("restored-cluster"))
	c.shutdown("r1")
	c.restart("r1", func(c *Config) { c.Join = withJoin.Join })
	c.mustApply(burn("after-restart-with-join"))
	counts := usageCounts(t, c.leader())
	if len(counts) != 22 {
		t.Errorf("the restored node holds %d usage events, want the 20 restored and 2 new", len(counts))
	}
}

// A restored data dir that still held the gossip members kept by the node
// that used it before (its stores deleted, the rest left) rejoined them at
// its first start, without any Join: the same fork as through Join. They
// are now left out, with a warning.
func TestARestoredDataDirDoesNotRejoinTheMembersAnEarlierNodeKeptThere(t *testing.T) {
	c, cfg := restoredDirKeepingAnotherClustersMembers(t, 20996)
	logs := newLogCapture()
	r1 := c.start("r1", func(c *Config) { *c = cfg; c.Logger = slog.New(logs) })
	if got := r1.gossip.joinAddrs; len(got) != 0 {
		t.Errorf("the restored node joins %v, want nobody", got)
	}
	if l := logs.find("WARN", "not rejoining the gossip members kept", keptMembersFile); l == "" {
		t.Errorf("no warning says why the kept members of %s are left out", keptMembersFile)
	}
	waitFor(t, time.Minute, "the restored node to lead its own cluster", r1.IsLeader)
}

// The kept members of the node that used a restored dir before were left
// out of its first start only (restoredNotRun), and kept in the file: the
// file is written when the member table changes, and a restored node
// running alone sees no other member, so at its next start, having run,
// it rejoined them, the fork its first start had been kept from. The
// first start now removes them.
func TestARestoredDataDirDoesNotRejoinAnEarlierNodesMembersWhenRestarted(t *testing.T) {
	c, cfg := restoredDirKeepingAnotherClustersMembers(t, 20994)
	dir := cfg.DataDir
	r1 := c.start("r1", func(c *Config) { *c = cfg })
	waitFor(t, time.Minute, "the restored node to lead its own cluster", r1.IsLeader)
	c.shutdown("r1")

	r1 = c.restart("r1", nil)
	if r1.restoredNotRun {
		t.Fatal("the restored node has run, and is still taken for a restore that has not")
	}
	if got := r1.gossip.joinAddrs; len(got) != 0 {
		t.Errorf("the restored node, restarted, joins %v (the earlier node's members), want nobody", got)
	}
	members, err := loadKeptMembers(dir)
	if err != nil {
		t.Fatal(err)
	}
	for _, m := range members {
		if m.ID == "o1" {
			t.Errorf("%s still names the earlier node's member %v", keptMembersFile, m)
		}
	}
}

// restoredDirKeepingAnotherClustersMembers starts a one-node cluster o1 and
// restores a snapshot into a data dir for r1 that still holds the gossip
// members an earlier node kept there (o1), as a dir reused after its stores
// were deleted would. It returns the cluster and r1's config, not started.
func restoredDirKeepingAnotherClustersMembers(t *testing.T, port int) (*testCluster, Config) {
	t.Helper()
	saved := savedSnapshot(t)
	c := newTestCluster(t)
	other := c.start("o1", func(cfg *Config) { cfg.BootstrapExpect = 1 })

	dir := filepath.Join(t.TempDir(), "r1")
	kept, err := encodeKeptMembers([]keptMember{{ID: "o1", Gossip: other.GossipAddr()}})
	if err != nil {
		t.Fatal(err)
	}
	if err := os.MkdirAll(dir, 0o750); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, keptMembersFile), kept, 0o600); err != nil {
		t.Fatal(err)
	}
	cfg := testConfig("r1", dir, port)
	cfg.RaftAddr = freeAddr(t)
	if err := RestoreDataDir(cfg, bytes.NewReader(saved)); err != nil {
		t.Fatalf("restore data dir: %v", err)
	}
	return c, cfg
}
