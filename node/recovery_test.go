package node

import (
	"bytes"
	"context"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"
)

// stallingWriter accepts the first write (the snapshot header), then blocks
// every later write until release is closed: a client that stopped reading
// a SaveSnapshot stream (HTTP/2 flow control blocks the handler's Send the
// same way).
type stallingWriter struct {
	once    sync.Once
	started chan struct{}
	release chan struct{}
	writes  int
}

func (w *stallingWriter) Write(p []byte) (int, error) {
	w.writes++
	if w.writes == 1 {
		return len(p), nil
	}
	w.once.Do(func() { close(w.started) })
	<-w.release
	return 0, errors.New("client went away")
}

// Shutdown is bounded by its context (serve gives it --shutdown-timeout)
// even while a SaveSnapshot stream whose reader stalled holds the state
// open: SIGTERM must not hang the process.
func TestShutdownIsBoundedByItsContextWhileASnapshotStreamIsStalled(t *testing.T) {
	c := newTestCluster(t)
	n := c.start("a1", func(cfg *Config) { cfg.BootstrapExpect = 1 })
	setupLedger(c)

	w := &stallingWriter{started: make(chan struct{}), release: make(chan struct{})}
	saved := make(chan error, 1)
	go func() { saved <- n.SaveSnapshot(context.Background(), w) }()
	select {
	case <-w.started:
	case err := <-saved:
		t.Fatalf("snapshot ended before it stalled: %v", err)
	case <-time.After(30 * time.Second):
		t.Fatal("the snapshot stream never started")
	}

	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Second)
	defer cancel()
	stopped := make(chan error, 1)
	start := time.Now()
	go func() { stopped <- n.Shutdown(ctx) }()
	select {
	case err := <-stopped:
		t.Logf("Shutdown returned after %s: %v", time.Since(start).Round(time.Millisecond), err)
	case <-time.After(30 * time.Second):
		t.Errorf("Shutdown with a 3s context has not returned after 30s: it waits for a stalled SaveSnapshot stream (the process hangs on SIGTERM)")
		close(w.release) // let it finish so the test can clean up
		<-stopped
		<-saved
		return
	}
	close(w.release)
	if err := <-saved; err == nil {
		t.Error("the stalled snapshot stream ended without an error")
	}
	<-n.stateClosed // the state closes once the stream lets it go
}

// restoreNoPanic is RestoreDataDir with a panic turned into an error.
func restoreNoPanic(cfg Config, r *bytes.Reader) (err error, panicked any) {
	defer func() {
		if p := recover(); p != nil {
			panicked = p
		}
	}()
	return RestoreDataDir(cfg, r), nil
}

// A snapshot file cut short (an interrupted copy) fails "snapshot restore"
// cleanly: bbolt opens it, since its meta pages come first, and used to
// panic reading past its end (fsm's own test covers more ways to damage
// one). A live node restores through the same check.
func TestRestoreOfATruncatedSnapshotFailsWithoutPanicking(t *testing.T) {
	snap := savedSnapshot(t)
	cfg := testConfig("r1", filepath.Join(t.TempDir(), "r1"), 20999)
	cfg.RaftAddr = freeAddr(t)
	truncated := snap[:len(snap)/2]
	err, p := restoreNoPanic(cfg, bytes.NewReader(truncated))
	switch {
	case p != nil:
		t.Errorf("restore of a snapshot cut to %d of %d bytes panicked: %v", len(truncated), len(snap), p)
	case err == nil:
		t.Errorf("restore of a snapshot cut to %d of %d bytes succeeded", len(truncated), len(snap))
	}
}

// "snapshot restore" of a broken snapshot (a good header, a body that is not
// a state file) fails and leaves the data dir as it was, so the retry with
// the good file into the same dir works (it used to find raft state there
// and refuse).
func TestAFailedRestoreLeavesTheDataDirAsItWas(t *testing.T) {
	snap := savedSnapshot(t)
	dir := filepath.Join(t.TempDir(), "r1")
	cfg := testConfig("r1", dir, 20999)
	cfg.RaftAddr = freeAddr(t)

	broken := append(append([]byte(nil), snap[:snapshotHeaderLen]...), bytes.Repeat([]byte("x"), 64<<10)...)
	err, p := restoreNoPanic(cfg, bytes.NewReader(broken))
	if p != nil || err == nil {
		t.Fatalf("restore of a broken snapshot: err %v, panic %v; want an error", err, p)
	}
	t.Logf("restore of the broken snapshot: %v", err)
	left, _ := os.ReadDir(dir)
	var names []string
	for _, e := range left {
		names = append(names, e.Name())
	}
	if len(names) != 0 {
		t.Errorf("the failed restore left %v in the data dir", names)
	}
	if err := RestoreDataDir(cfg, bytes.NewReader(snap)); err != nil {
		t.Errorf("the failed restore left %v in the data dir; the retry with the good snapshot fails: %v", names, err)
	}
}

// A restore without --node-id of a file that is not a snapshot fails
// without keeping a generated node id, so the retry with --node-id a is
// not refused as another node's data dir.
func TestAFailedRestoreOfANonSnapshotKeepsNoNodeID(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "r1")
	cfg := testConfig("", dir, 20999)
	cfg.RaftAddr = freeAddr(t)
	if err := RestoreDataDir(cfg, strings.NewReader("this is not a snapshot at all")); err == nil {
		t.Fatal("a restore of a non-snapshot succeeded")
	}
	snap := savedSnapshot(t)
	cfg.NodeID = "a"
	if err := RestoreDataDir(cfg, bytes.NewReader(snap)); err != nil {
		t.Errorf("after a failed restore, the retry with --node-id a: %v", err)
	}
}

// A data dir holding a node's raft state but no node-id file (a dir of a
// build before the file, a file lost) is refused without --node-id instead
// of starting under a new random id that no raft configuration names (such
// a node never votes nor leads); with the id given, it starts as that node.
func TestARestartWithRaftStateButNoNodeIDFileNeedsTheID(t *testing.T) {
	c := newTestCluster(t)
	c.start("a1", func(cfg *Config) { cfg.BootstrapExpect = 1 })
	setupLedger(c)
	c.shutdown("a1")
	dir := filepath.Join(c.dir, "a1")
	if err := os.Remove(filepath.Join(dir, nodeIDFile)); err != nil {
		t.Fatal(err)
	}
	cfg := c.all()[0].cfg
	cfg.NodeID = ""
	cfg.BootstrapExpect = 0
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if n, err := Start(ctx, cfg); err == nil {
		defer n.Shutdown(context.Background())
		t.Fatalf("a data dir holding a1's raft state and no node-id file started as %q (raft configuration: %v)", n.ID(), raftConfig(t, n))
	} else if !strings.Contains(err.Error(), "--node-id") {
		t.Fatalf("refused, but the error does not say what to do: %v", err)
	}
	cfg.NodeID = "a1"
	n, err := Start(ctx, cfg)
	if err != nil {
		t.Fatalf("start with --node-id a1: %v", err)
	}
	defer n.Shutdown(context.Background())
	if kept, err := KeptNodeID(dir); err != nil || kept != "a1" {
		t.Fatalf("the data dir keeps node id %q, %v; want a1", kept, err)
	}
	waitFor(t, 30*time.Second, "a1 to lead its cluster again", func() bool { return n.IsLeader() })
}
