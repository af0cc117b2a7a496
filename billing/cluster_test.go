package billing

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"github.com/creditd/creditd/fsm"
	"github.com/creditd/creditd/node"
)

func testLogger() *slog.Logger {
	if os.Getenv("CREDITD_TEST_LOG") == "" {
		return slog.New(slog.DiscardHandler)
	}
	return slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelDebug}))
}

// billingCluster is three real nodes on loopback, each running the
// purchase worker while it leads, all billing through one provider.
type billingCluster struct {
	t     *testing.T
	mu    sync.Mutex
	nodes []*node.Node
	down  map[*node.Node]bool
}

func startBillingCluster(t *testing.T, prov Provider) *billingCluster {
	t.Helper()
	c := &billingCluster{t: t, down: map[*node.Node]bool{}}
	// Made before the shutdown is registered, so it is removed after every
	// node has stopped (cleanups run last first).
	dir := t.TempDir()
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
		defer cancel()
		for _, n := range c.nodes {
			if !c.isDown(n) {
				_ = n.Shutdown(ctx)
			}
		}
	})
	var join []string
	for i := 1; i <= 3; i++ {
		id := fmt.Sprintf("n%d", i)
		cfg := node.Config{
			NodeID: id, DataDir: filepath.Join(dir, id),
			RaftAddr: "127.0.0.1:0", GossipAddr: "127.0.0.1:0",
			// No API is served here; the address only has to be well formed.
			RPCAddr:         fmt.Sprintf("127.0.0.1:%d", 1+i),
			BootstrapExpect: 3, Join: join,
			HeartbeatTimeout: time.Second, ElectionTimeout: time.Second, LeaderLeaseTimeout: time.Second,
			LeaderWait: 5 * time.Second, TickInterval: -1, Logger: testLogger(),
		}
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		n, err := node.Start(ctx, cfg)
		cancel()
		if err != nil {
			t.Fatalf("start %s: %v", id, err)
		}
		c.nodes = append(c.nodes, n)
		if join == nil {
			join = []string{n.GossipAddr()}
		}
		w, err := NewWorker(WorkerOptions{Provider: prov, Applier: n, State: n.FSM(), Wake: n.AppliedNotify,
			ScanInterval: 50 * time.Millisecond, TransientBackoff: 20 * time.Millisecond, Logger: testLogger()})
		if err != nil {
			t.Fatal(err)
		}
		n.RunOnLeader("billing", w.Run)
	}
	return c
}

func (c *billingCluster) isDown(n *node.Node) bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.down[n]
}

// leader waits for a node that leads and takes writes.
func (c *billingCluster) leader() *node.Node {
	c.t.Helper()
	var l *node.Node
	eventually(c.t, "a leader ready for writes", func() bool {
		for _, n := range c.nodes {
			if !c.isDown(n) && n.IsLeader() && n.Ready() {
				l = n
				return true
			}
		}
		return false
	})
	return l
}

// Apply is a client that finds the leader and retries across leader
// changes, as rpc's forwarding does.
func (c *billingCluster) Apply(ctx context.Context, cmd fsm.Command) (fsm.Result, error) {
	var last error
	for ctx.Err() == nil {
		for _, n := range c.nodes {
			if c.isDown(n) || !n.IsLeader() {
				continue
			}
			res, err := n.Apply(ctx, cmd)
			var nl *node.NotLeaderError
			if err == nil || !(errors.As(err, &nl) || errors.Is(err, node.ErrNoLeader) || errors.Is(err, node.ErrShuttingDown)) {
				return res, err
			}
			last = err
		}
		time.Sleep(20 * time.Millisecond)
	}
	return fsm.Result{}, fmt.Errorf("no leader took %T: %v (%w)", cmd, last, ctx.Err())
}

func (c *billingCluster) View(fn func(v *fsm.View) error) error {
	return c.leader().FSM().View(fn)
}

// The exactly-once test of issue #5: the leader dies after the provider
// charged and before CompletePurchase commits; the new leader completes the
// purchase with the same idempotency key; one grant, one charge per key.
func TestClusterLeaderDiesBetweenChargeAndCommit(t *testing.T) {
	prov := newFakeProvider()
	charged := make(chan string, 1)
	release := make(chan struct{})
	var once sync.Once
	prov.afterCharge = func(key string) {
		first := false
		once.Do(func() { first = true })
		if !first {
			return
		}
		charged <- key
		<-release // the old leader's worker holds its result until killed
	}
	c := startBillingCluster(t, prov)
	ctx, cancel := context.WithTimeout(context.Background(), 120*time.Second)
	defer cancel()
	old := c.leader()

	seedCatalog(t, c, fsm.GrantOnPayment, testAutoTopUp)
	id := burnToAutoTopUp(t, c, old.FSM())

	var key string
	select {
	case key = <-charged:
	case <-ctx.Done():
		t.Fatal("the leader's worker never charged")
	}
	if key != id {
		t.Fatalf("first charge keyed %q, want the purchase id %q", key, id)
	}
	// Kill the leader while its worker holds the provider's answer.
	c.mu.Lock()
	c.down[old] = true
	c.mu.Unlock()
	shut := make(chan error, 1)
	go func() {
		sctx, scancel := context.WithTimeout(context.Background(), 60*time.Second)
		defer scancel()
		shut <- old.Shutdown(sctx)
	}()

	// A new leader's worker finishes the purchase.
	var newLeader *node.Node
	eventually(t, "a new leader to complete the purchase", func() bool {
		for _, n := range c.nodes {
			if n != old && n.IsLeader() && n.Ready() {
				newLeader = n
			}
		}
		return newLeader != nil && purchaseStatus(newLeader.FSM(), id) == fsm.PurchaseSucceeded
	})
	close(release)
	if err := <-shut; err != nil {
		t.Logf("old leader shutdown: %v", err)
	}

	keys, distinct := prov.chargeKeys()
	if distinct != 1 {
		t.Fatalf("%d charges made (keys %v), want exactly 1", distinct, keys)
	}
	for _, k := range keys {
		if k != id {
			t.Fatalf("charge keys %v, want every call keyed %s", keys, id)
		}
	}
	if len(keys) < 2 {
		t.Fatalf("charge keys %v: the new leader did not call the provider again", keys)
	}
	// Exactly one purchase grant, on every live replica.
	for _, n := range c.nodes {
		if n == old {
			continue
		}
		eventually(t, "the replica to apply the completion", func() bool { return purchaseStatus(n.FSM(), id) == fsm.PurchaseSucceeded })
		grants := 0
		if err := n.FSM().View(func(v *fsm.View) error {
			return v.ScanGrants(func(g *fsm.Grant) error {
				if g.SourceKind == fsm.SourcePurchase && g.SourceRef == id {
					grants++
				}
				return nil
			})
		}); err != nil {
			t.Fatal(err)
		}
		if grants != 1 {
			t.Fatalf("%d grants for purchase %s, want 1", grants, id)
		}
	}
}
