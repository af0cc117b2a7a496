package node

import (
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// A node killed and then started after the machine rebooted must not trust
// a state file written without fsync: it sets it aside and rebuilds from its
// snapshot and log. The torn file is simulated by garbage: reading it would
// fail or diverge.
func TestStateFileFromAnEarlierBootIsRebuiltFromSnapshotAndLog(t *testing.T) {
	if bootID() == "" {
		t.Skip("no boot id on this system: every apply is fsynced and the state file is always trusted")
	}
	cases := []struct {
		name      string
		snapshots bool
	}{
		{"after snapshots compacted the log", true},
		{"before any snapshot", false},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			c := newTestCluster(t)
			c.startThree(func(cfg *Config) {
				cfg.Batch.Disabled = true
				if tc.snapshots {
					cfg.SnapshotThreshold = 32
					cfg.TrailingLogs = 8
					cfg.SnapshotInterval = 100 * time.Millisecond
				}
			})
			setupLedger(c)
			for i := range 100 {
				c.mustApply(burn(fmt.Sprintf("before-%d", i)))
			}
			l := c.leader()
			var follower string
			for _, n := range c.up() {
				if n != l {
					follower = n.ID()
				}
			}
			if tc.snapshots {
				waitFor(t, 60*time.Second, "a snapshot on the follower", func() bool {
					return c.node(follower).Status().LastSnapshotIndex > 32
				})
			}
			dir := c.all()[indexOf(c, follower)].cfg.DataDir
			c.crash(follower)

			state := filepath.Join(dir, stateFileName)
			if err := os.WriteFile(state+stateMarkerSuffix, []byte("some-earlier-boot\n"), 0o600); err != nil {
				t.Fatal(err)
			}
			if err := CheckStateFile(dir); err == nil {
				t.Error("CheckStateFile trusts a state file from an earlier boot")
			}
			if err := os.WriteFile(state, []byte(strings.Repeat("torn", 4096)), 0o600); err != nil {
				t.Fatal(err)
			}

			n := c.restart(follower, nil)
			c.mustApply(burn("after-restart"))
			c.waitConverged()
			if got := len(usageCounts(t, n)); got != 101 {
				t.Errorf("rebuilt follower has %d usage events, want 101", got)
			}
			aside, _ := filepath.Glob(state + ".untrusted-*")
			if len(aside) != 1 {
				t.Errorf("set-aside state files: %v, want one", aside)
			}
			if b, _ := os.ReadFile(state + stateMarkerSuffix); strings.TrimSpace(string(b)) != bootID() {
				t.Errorf("marker after restart %q, want this boot's id", b)
			}
		})
	}
}

func indexOf(c *testCluster, id string) int {
	for i, tn := range c.all() {
		if tn.n.ID() == id {
			return i
		}
	}
	c.t.Fatalf("no node %s", id)
	return -1
}

// A clean shutdown syncs the state and marks it, so a later boot trusts it;
// with StateFsync the marker says synced from the start.
func TestStateMarkerSaysSyncedAfterCleanShutdownOrWithStateFsync(t *testing.T) {
	if bootID() == "" {
		t.Skip("no boot id on this system")
	}
	for _, fsyncEach := range []bool{false, true} {
		t.Run(fmt.Sprintf("StateFsync=%v", fsyncEach), func(t *testing.T) {
			c := newTestCluster(t)
			n := c.start("solo", func(cfg *Config) {
				cfg.BootstrapExpect = 1
				cfg.StateFsync = fsyncEach
			})
			setupLedger(c)
			dir := c.all()[0].cfg.DataDir
			marker := filepath.Join(dir, stateFileName+stateMarkerSuffix)
			want := bootID()
			if fsyncEach {
				want = stateSynced
			}
			if b, _ := os.ReadFile(marker); strings.TrimSpace(string(b)) != want {
				t.Errorf("marker while running %q, want %q", b, want)
			}
			c.shutdown("solo")
			if b, _ := os.ReadFile(marker); strings.TrimSpace(string(b)) != stateSynced {
				t.Errorf("marker after shutdown %q, want %q", b, stateSynced)
			}
			if err := CheckStateFile(dir); err != nil {
				t.Errorf("CheckStateFile after a clean shutdown: %v", err)
			}
			n = c.restart("solo", nil)
			if got := len(usageCounts(t, n)); got != 0 {
				t.Errorf("%d usage events, want 0", got)
			}
			if aside, _ := filepath.Glob(filepath.Join(dir, stateFileName+".untrusted-*")); len(aside) != 0 {
				t.Errorf("a synced state file was set aside: %v", aside)
			}
		})
	}
}
