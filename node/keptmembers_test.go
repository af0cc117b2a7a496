package node

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/creditd/creditd/fsm"
)

// A write of the kept gossip members still in progress when Shutdown's
// time ran out went on after Shutdown had released the data dir's lock: a
// new process holding the dir by then had its file replaced by the old
// one's. The lock now goes only once that write has ended, and no write
// starts after Shutdown. The node joins another (a node keeps no member
// but itself alone) and runs the caller's state machine, so that Shutdown
// itself releases the lock (with its own state file, a close cut short by
// the time leaves the release to a goroutine as well).
func TestAKeptMembersWriteInProgressKeepsTheDataDirLockedPastShutdown(t *testing.T) {
	f, err := fsm.Open(filepath.Join(t.TempDir(), "kept.db"), fsm.Options{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = f.Close() })
	c := newTestCluster(t)
	dir := filepath.Join(c.dir, "kept")
	n1 := c.start("n1", func(cfg *Config) { cfg.BootstrapExpect = 1 })

	entered, release, written := make(chan struct{}), make(chan struct{}), make(chan struct{})
	var first sync.Once
	var mu sync.Mutex
	var writtenUnlocked []string // the writes made while the dir was not locked
	writes := 0
	n := c.start("kept", func(cfg *Config) {
		cfg.Join = []string{n1.GossipAddr()}
		cfg.StateMachine = FSMStateMachine{F: f}
		cfg.keptMembersWriter = func(path, content string) error {
			held := false
			first.Do(func() { held = true; close(entered); <-release })
			// The file is written now: the dir must still be this node's.
			unlock, err := lockDataDir(dir)
			mu.Lock()
			writes++
			switch {
			case err == nil:
				writtenUnlocked = append(writtenUnlocked, content)
				_ = unlock()
			case !errors.Is(err, ErrDataDirInUse):
				writtenUnlocked = append(writtenUnlocked, fmt.Sprintf("%s (lock: %v)", content, err))
			}
			mu.Unlock()
			err = writeFileSynced(path, content)
			if held {
				close(written)
			}
			return err
		}
	})
	select {
	case <-entered:
	case <-time.After(time.Minute):
		t.Fatal("the joining node wrote no kept members within a minute of its start")
	}

	// Shutdown's time is up before it starts: it returns without waiting
	// for the write.
	c.mu.Lock()
	c.nodes["kept"].down = true
	c.mu.Unlock()
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	err = n.Shutdown(ctx)
	if err == nil || !errors.Is(err, context.Canceled) || !strings.Contains(err.Error(), keptMembersFile) {
		t.Errorf("Shutdown = %v, want context.Canceled naming the %s write still in progress", err, keptMembersFile)
	}
	close(release)
	select {
	case <-written:
	case <-time.After(time.Minute):
		t.Fatal("the write held at Shutdown did not end within a minute of its release")
	}
	mu.Lock()
	if len(writtenUnlocked) > 0 {
		t.Errorf("%s written after Shutdown released the data dir's lock: %q", keptMembersFile, writtenUnlocked)
	}
	mu.Unlock()
	waitFor(t, time.Minute, "the data dir's lock to be released once the write has ended", func() bool {
		unlock, err := lockDataDir(dir)
		if err != nil {
			return false
		}
		_ = unlock()
		return true
	})
	mu.Lock()
	defer mu.Unlock()
	if writes != 1 {
		t.Errorf("%d writes of %s, want the one in progress at Shutdown", writes, keptMembersFile)
	}
	if _, err := os.Stat(filepath.Join(dir, keptMembersFile)); err != nil {
		t.Errorf("the write in progress at Shutdown did not finish: %v", err)
	}
}
