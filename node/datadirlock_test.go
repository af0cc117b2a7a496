package node

import (
	"bytes"
	"context"
	"errors"
	"os"
	"path/filepath"
	"testing"
	"time"
)

// A second node started on a running node's data dir is turned away
// before it reads or writes anything there: the state marker and the node
// id stay as the running node wrote them (the marker was rewritten before
// bbolt's lock refused the second start). A restore into the dir is turned
// away too. Once the first node has stopped, the dir is free again.
func TestADataDirIsUsedByOneNodeAtATime(t *testing.T) {
	c := newTestCluster(t)
	c.start("solo", func(cfg *Config) {
		cfg.BootstrapExpect = 1
		cfg.StateFsync = true // marker "synced": a second start without it would write its boot id
	})
	setupLedger(c)
	cfg := c.all()[0].cfg
	dir := cfg.DataDir
	files := []string{stateFileName + stateMarkerSuffix, nodeIDFile}
	before := map[string][]byte{}
	for _, name := range files {
		b, err := os.ReadFile(filepath.Join(dir, name))
		if err != nil {
			t.Fatal(err)
		}
		before[name] = b
	}

	second := cfg
	second.StateFsync = false
	second.RaftAddr, second.GossipAddr = "127.0.0.1:0", "127.0.0.1:0"
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if n, err := Start(ctx, second); !errors.Is(err, ErrDataDirInUse) {
		if n != nil {
			_ = n.Shutdown(ctx)
		}
		t.Fatalf("second Start on a running node's dir: %v; want ErrDataDirInUse", err)
	}
	for _, name := range files {
		if b, _ := os.ReadFile(filepath.Join(dir, name)); !bytes.Equal(b, before[name]) {
			t.Errorf("%s changed by the refused start: %q, was %q", name, b, before[name])
		}
	}
	restore := cfg
	restore.RaftAddr = "127.0.0.1:17999"
	if err := RestoreDataDir(restore, bytes.NewReader(savedSnapshot(t))); !errors.Is(err, ErrDataDirInUse) {
		t.Fatalf("restore into a running node's dir: %v; want ErrDataDirInUse", err)
	}

	c.shutdown("solo")
	n := c.restart("solo", nil)
	if got := len(usageCounts(t, n)); got != 0 {
		t.Errorf("%d usage events after the restart, want 0", got)
	}
}

// A restore that fails in a new dir leaves it as it found it, lock file
// included, and a restore that succeeds releases the lock for the node.
func TestRestoreTakesTheDataDirLockAndLeavesNoLockFileOnFailure(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "new")
	cfg := testConfig("r1", dir, 20900)
	cfg.RaftAddr = "127.0.0.1:17998"
	if err := RestoreDataDir(cfg, bytes.NewReader([]byte("not a snapshot"))); err == nil {
		t.Fatal("restore of garbage succeeded")
	}
	if _, err := os.Stat(filepath.Join(dir, dataDirLockFile)); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("lock file after a failed restore into a new dir: %v; want none", err)
	}
	if err := RestoreDataDir(cfg, bytes.NewReader(savedSnapshot(t))); err != nil {
		t.Fatalf("restore: %v", err)
	}
	unlock, err := lockDataDir(dir)
	if err != nil {
		t.Fatalf("the dir after a restore: %v; want it free", err)
	}
	if err := unlock(); err != nil {
		t.Fatal(err)
	}
}
