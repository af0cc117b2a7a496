package node

import (
	"bytes"
	"context"
	"errors"
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
