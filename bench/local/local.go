// Package local starts an in-process creditd cluster on loopback for
// `creditd bench --local N` and the bench package's tests: N nodes, each
// with its API on a real TCP port, data in a temporary directory, fsync
// on, as in production. It is wiring, like cmd/creditd, so it imports node
// and rpc; package bench itself only talks to the API.
//
// One process for all nodes keeps a CPU profile of the whole cluster in
// one file and tears down cleanly; the nodes still talk to each other and
// to the load generator over TCP, as separate processes would.
package local

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"sync"
	"time"

	"github.com/creditd/creditd/node"
	"github.com/creditd/creditd/rpc"
)

// Options configure a local cluster.
type Options struct {
	// Nodes is the cluster size, 1..9.
	Nodes int
	// Dir holds the nodes' data dirs; "" = a new temporary directory,
	// removed by Close.
	Dir string
	// Noop runs the no-op state machine: replication, fsync and the API
	// with nothing applied (the ceiling).
	Noop bool
	// NoopEventCost makes the no-op state machine spend this much CPU per
	// usage event it applies (node.NewCostlyNoopStateMachine); 0 = none.
	NoopEventCost time.Duration
	// NoSync turns fsync off (never for published figures).
	NoSync bool
	// StateFsync fsyncs each node's state file on every apply, as
	// creditd serve --state-fsync does.
	StateFsync bool
	// FollowerApplyWait is node.Config.FollowerApplyWait (0 = the
	// node's default, negative = apply at once).
	FollowerApplyWait time.Duration
	// LogStore is where the nodes keep their Raft log (node.LogStoreBolt,
	// the default, or node.LogStoreWAL).
	LogStore string
	// Batch is the nodes' group commit configuration (zero = defaults).
	Batch node.BatchConfig
	// Logger gets the nodes' logs; nil = discard.
	Logger *slog.Logger
}

// Cluster is a running local cluster.
type Cluster struct {
	dir     string
	tempDir bool
	nodes   []*server
}

type server struct {
	n      *node.Node
	api    *rpc.Server
	http   *http.Server
	url    string
	served chan struct{}
}

// Start starts the nodes and waits until one leads and all are ready.
func Start(ctx context.Context, o Options) (*Cluster, error) {
	if o.Nodes < 1 || o.Nodes > 9 {
		return nil, fmt.Errorf("local cluster: %d nodes is outside 1..9", o.Nodes)
	}
	if o.Logger == nil {
		o.Logger = slog.New(slog.DiscardHandler)
	}
	c := &Cluster{dir: o.Dir}
	if c.dir == "" {
		d, err := os.MkdirTemp("", "creditd-bench-")
		if err != nil {
			return nil, fmt.Errorf("local cluster: make a data dir: %w", err)
		}
		c.dir, c.tempDir = d, true
	}
	var join []string
	for i := 0; i < o.Nodes; i++ {
		s, err := c.startNode(ctx, o, fmt.Sprintf("n%d", i+1), join)
		if err != nil {
			return nil, errors.Join(err, c.Close(context.Background()))
		}
		c.nodes = append(c.nodes, s)
		if i == 0 {
			join = []string{s.n.GossipAddr()}
		}
	}
	deadline := time.Now().Add(60 * time.Second)
	for !c.ready() {
		if time.Now().After(deadline) {
			return nil, errors.Join(errors.New("local cluster: no ready leader after 60s"), c.Close(context.Background()))
		}
		select {
		case <-ctx.Done():
			return nil, errors.Join(ctx.Err(), c.Close(context.Background()))
		case <-time.After(20 * time.Millisecond):
		}
	}
	return c, nil
}

func (c *Cluster) startNode(ctx context.Context, o Options, id string, join []string) (*server, error) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return nil, fmt.Errorf("local cluster: listen for %s's API: %w", id, err)
	}
	cfg := node.Config{
		NodeID:            id,
		DataDir:           filepath.Join(c.dir, id),
		RaftAddr:          "127.0.0.1:0",
		GossipAddr:        "127.0.0.1:0",
		RPCAddr:           ln.Addr().String(),
		BootstrapExpect:   o.Nodes,
		Join:              join,
		Batch:             o.Batch,
		NoSync:            o.NoSync,
		StateFsync:        o.StateFsync,
		LogStore:          o.LogStore,
		FollowerApplyWait: o.FollowerApplyWait,
		Logger:            o.Logger.With("node", id),
	}
	if o.Noop {
		cfg.StateMachine = node.NewCostlyNoopStateMachine(o.NoopEventCost)
		// Ticks would be applied as nothing; leave them out of the ceiling.
		cfg.TickInterval = -1
	}
	n, err := node.Start(ctx, cfg)
	if err != nil {
		ln.Close()
		return nil, fmt.Errorf("local cluster: start %s: %w", id, err)
	}
	api, err := rpc.New(n, rpc.Options{Logger: o.Logger.With("node", id)})
	if err != nil {
		ln.Close()
		return nil, errors.Join(fmt.Errorf("local cluster: API of %s: %w", id, err), n.Shutdown(ctx))
	}
	s := &server{n: n, api: api, http: rpc.NewHTTPServer("", api.Handler()), url: "http://" + ln.Addr().String(),
		served: make(chan struct{})}
	go func() {
		defer close(s.served)
		_ = s.http.Serve(ln)
	}()
	return s, nil
}

func (c *Cluster) ready() bool {
	leaders := 0
	for _, s := range c.nodes {
		if !s.n.Ready() {
			return false
		}
		if s.n.IsLeader() {
			leaders++
		}
	}
	return leaders == 1
}

// URLs are the nodes' API base URLs, leader first.
func (c *Cluster) URLs() []string {
	var out []string
	for _, s := range c.nodes {
		if s.n.IsLeader() {
			out = append([]string{s.url}, out...)
		} else {
			out = append(out, s.url)
		}
	}
	return out
}

// Close stops every node and removes a temporary data dir.
func (c *Cluster) Close(ctx context.Context) error {
	ctx, cancel := context.WithTimeout(ctx, 60*time.Second)
	defer cancel()
	var errs []error
	var wg sync.WaitGroup
	var mu sync.Mutex
	for _, s := range c.nodes {
		wg.Go(func() {
			s.api.Close()
			err := errors.Join(s.http.Shutdown(ctx), s.n.Shutdown(ctx))
			<-s.served
			if err != nil {
				mu.Lock()
				errs = append(errs, err)
				mu.Unlock()
			}
		})
	}
	wg.Wait()
	c.nodes = nil
	if c.tempDir {
		if err := os.RemoveAll(c.dir); err != nil {
			errs = append(errs, fmt.Errorf("local cluster: remove %s: %w", c.dir, err))
		}
	}
	return errors.Join(errs...)
}
