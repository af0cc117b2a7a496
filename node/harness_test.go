package node

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"github.com/creditd/creditd/fsm"
	"github.com/hashicorp/raft"
)

// testLogger discards logs unless CREDITD_TEST_LOG is set: raft keeps
// logging for a moment after a test ends, and testing.T must not be
// written to then.
func testLogger() *slog.Logger {
	if os.Getenv("CREDITD_TEST_LOG") == "" {
		return slog.New(slog.DiscardHandler)
	}
	return slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelDebug}))
}

// testConfig is a node on loopback with ports picked by the kernel and raft
// timeouts slow enough for a loaded 2-core machine.
func testConfig(id, dir string, rpcPort int) Config {
	return Config{
		NodeID:             id,
		DataDir:            dir,
		RaftAddr:           "127.0.0.1:0",
		GossipAddr:         "127.0.0.1:0",
		RPCAddr:            fmt.Sprintf("127.0.0.1:%d", rpcPort),
		HeartbeatTimeout:   time.Second,
		ElectionTimeout:    time.Second,
		LeaderLeaseTimeout: time.Second,
		LeaderWait:         3 * time.Second,
		TickInterval:       -1,
		Logger:             testLogger(),
	}
}

type testCluster struct {
	t     testing.TB
	dir   string // the nodes' data dirs are under it
	mu    sync.Mutex
	nodes map[string]*testNode
}

type testNode struct {
	cfg  Config
	n    *Node
	down bool
}

func newTestCluster(t testing.TB) *testCluster {
	// The dir is made before the shutdown is registered, so its removal
	// (cleanups run last first) comes after every node has stopped: a node
	// still running writes snapshots and its state marker into it.
	c := &testCluster{t: t, dir: t.TempDir(), nodes: map[string]*testNode{}}
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		for _, n := range c.up() {
			_ = n.Shutdown(ctx)
		}
	})
	return c
}

// start starts node id; mod adjusts its config (join, bootstrap, …).
func (c *testCluster) start(id string, mod func(*Config)) *Node {
	c.t.Helper()
	c.mu.Lock()
	cfg := testConfig(id, filepath.Join(c.dir, id), 20000+len(c.nodes))
	c.mu.Unlock()
	if mod != nil {
		mod(&cfg)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	n, err := Start(ctx, cfg)
	if err != nil {
		c.t.Fatalf("start %s: %v", id, err)
	}
	// Restarts reuse the addresses the kernel picked the first time.
	cfg.RaftAddr, cfg.GossipAddr = n.RaftAddr(), n.GossipAddr()
	c.mu.Lock()
	c.nodes[id] = &testNode{cfg: cfg, n: n}
	c.mu.Unlock()
	return n
}

// startThree forms a 3-node cluster through gossip and bootstrap-expect.
func (c *testCluster) startThree(mod func(*Config)) {
	c.t.Helper()
	n1 := c.start("n1", func(cfg *Config) {
		cfg.BootstrapExpect = 3
		if mod != nil {
			mod(cfg)
		}
	})
	for _, id := range []string{"n2", "n3"} {
		c.start(id, func(cfg *Config) {
			cfg.BootstrapExpect = 3
			cfg.Join = []string{n1.GossipAddr()}
			if mod != nil {
				mod(cfg)
			}
		})
	}
}

func (c *testCluster) all() []*testNode {
	c.mu.Lock()
	defer c.mu.Unlock()
	out := make([]*testNode, 0, len(c.nodes))
	for _, id := range sortedKeys(c.nodes) {
		out = append(out, c.nodes[id])
	}
	return out
}

func (c *testCluster) up() []*Node {
	c.mu.Lock()
	defer c.mu.Unlock()
	var out []*Node
	for _, id := range sortedKeys(c.nodes) {
		if tn := c.nodes[id]; !tn.down {
			out = append(out, tn.n)
		}
	}
	return out
}

func (c *testCluster) node(id string) *Node {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.nodes[id].n
}

// shutdown stops a node cleanly (as SIGTERM does), within 30 s.
func (c *testCluster) shutdown(id string) {
	c.t.Helper()
	c.mu.Lock()
	tn := c.nodes[id]
	tn.down = true
	c.mu.Unlock()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if err := tn.n.Shutdown(ctx); err != nil {
		c.t.Fatalf("shut %s down: %v", id, err)
	}
}

// crash stops a node the way SIGKILL would, as far as one process allows:
// no leadership transfer, no draining, no gossip leave.
func (c *testCluster) crash(id string) {
	c.t.Helper()
	c.mu.Lock()
	tn := c.nodes[id]
	tn.down = true
	c.mu.Unlock()
	tn.n.crash()
}

func (n *Node) crash() {
	n.shutOnce.Do(func() {
		n.closing.Store(true)
		close(n.stop)
		_ = n.raft.Shutdown().Error()
		close(n.applierStop)
		<-n.applierDone
		_ = n.ml.Shutdown()
		n.wg.Wait()
		_ = n.transport.Close()
		_ = n.store.Close()
		if n.fsm != nil {
			_ = n.fsm.Close()
		}
		_ = n.unlockDir() // as the process's exit would
	})
}

// restart starts a crashed or stopped node again on its data dir and
// addresses.
func (c *testCluster) restart(id string, mod func(*Config)) *Node {
	c.t.Helper()
	c.mu.Lock()
	cfg := c.nodes[id].cfg
	c.mu.Unlock()
	cfg.BootstrapExpect = 0
	if mod != nil {
		mod(&cfg)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	n, err := Start(ctx, cfg)
	if err != nil {
		c.t.Fatalf("restart %s: %v", id, err)
	}
	c.mu.Lock()
	c.nodes[id] = &testNode{cfg: cfg, n: n}
	c.mu.Unlock()
	return n
}

// waitFor polls cond until it holds, failing the test after timeout.
func waitFor(t testing.TB, timeout time.Duration, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out after %s waiting for %s", timeout, what)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// leader waits for a node that leads and accepts writes.
func (c *testCluster) leader() *Node {
	c.t.Helper()
	var l *Node
	waitFor(c.t, 60*time.Second, "a leader ready for writes", func() bool {
		for _, n := range c.up() {
			if n.writable.Load() {
				l = n
				return true
			}
		}
		return false
	})
	return l
}

// apply is a client: it sends cmd to a leader, following NotLeaderError
// and retrying on ErrNoLeader until ctx ends, as rpc's forwarding would.
func (c *testCluster) apply(ctx context.Context, cmd fsm.Command) (fsm.Result, error) {
	var last error
	for ctx.Err() == nil {
		var target *Node
		for _, n := range c.up() {
			if n.writable.Load() {
				target = n
				break
			}
		}
		if target == nil {
			if ups := c.up(); len(ups) > 0 {
				target = ups[0]
			} else {
				return fsm.Result{}, errors.New("no node is up")
			}
		}
		res, err := target.Apply(ctx, cmd)
		var nl *NotLeaderError
		switch {
		case err == nil:
			return res, nil
		case errors.As(err, &nl), errors.Is(err, ErrNoLeader), errors.Is(err, ErrShuttingDown):
			last = err
			time.Sleep(20 * time.Millisecond)
		default:
			return res, err
		}
	}
	return fsm.Result{}, fmt.Errorf("%w (last error: %v)", ctx.Err(), last)
}

func (c *testCluster) mustApply(cmd fsm.Command) fsm.Result {
	c.t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	res, err := c.apply(ctx, cmd)
	if err != nil {
		c.t.Fatalf("apply %T: %v", cmd, err)
	}
	if res.Err != nil {
		c.t.Fatalf("apply %T: %v", cmd, res.Err)
	}
	return res
}

// waitConverged waits until every up node has applied the same index as
// the leader's commit index and returns their dumps.
func (c *testCluster) waitConverged() map[string][]byte {
	c.t.Helper()
	var dumps map[string][]byte
	waitFor(c.t, 90*time.Second, "replicas to apply the same index", func() bool {
		ups := c.up()
		var want uint64
		for _, n := range ups {
			if n.IsLeader() {
				want = n.raft.CommitIndex()
			}
		}
		if want == 0 {
			return false
		}
		for _, n := range ups {
			if n.FSM().AppliedIndex() == 0 || n.applied.Load() < want {
				return false
			}
		}
		dumps = map[string][]byte{}
		for _, n := range ups {
			var b bytes.Buffer
			if err := n.FSM().Dump(&b); err != nil {
				c.t.Fatalf("dump %s: %v", n.ID(), err)
			}
			dumps[n.ID()] = b.Bytes()
		}
		first := dumps[ups[0].ID()]
		for _, d := range dumps {
			if !bytes.Equal(d, first) {
				return false // a replica may still be applying; try again
			}
		}
		return true
	})
	return dumps
}

// raftConfig returns the leader's configuration as id → suffrage.
func raftConfig(t testing.TB, n *Node) map[string]raft.ServerSuffrage {
	t.Helper()
	f := n.raft.GetConfiguration()
	if err := f.Error(); err != nil {
		t.Fatalf("configuration: %v", err)
	}
	out := map[string]raft.ServerSuffrage{}
	for _, s := range f.Configuration().Servers {
		out[string(s.ID)] = s.Suffrage
	}
	return out
}

func sortedKeys[V any](m map[string]V) []string {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	for i := 1; i < len(keys); i++ {
		for j := i; j > 0 && keys[j] < keys[j-1]; j-- {
			keys[j], keys[j-1] = keys[j-1], keys[j]
		}
	}
	return keys
}

var _ = io.Discard

// savedSnapshot builds a small ledger on a one-node cluster and returns a
// snapshot of it.
func savedSnapshot(t *testing.T) []byte {
	t.Helper()
	old := newTestCluster(t)
	old.start("a1", func(cfg *Config) { cfg.BootstrapExpect = 1 })
	setupLedger(old)
	for i := range 20 {
		old.mustApply(burn(fmt.Sprintf("old-%d", i)))
	}
	var saved bytes.Buffer
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	if err := old.leader().SaveSnapshot(ctx, &saved); err != nil {
		t.Fatalf("save: %v", err)
	}
	return saved.Bytes()
}
