package node

import (
	"context"
	"io"
	"net"
	"sync"
	"testing"
	"time"

	"github.com/hashicorp/raft"
)

// partition routes every ordered pair of nodes' raft traffic through a
// proxy of its own, so a test can cut a node off from its peers (both
// directions, existing connections included) and heal it again. Gossip
// and the API are not routed: clients still reach every node.
type partition struct {
	c       *testCluster
	mu      sync.Mutex
	proxies map[[2]string]*pairProxy
	cut     map[string]bool // nodes cut off from every peer
}

func newPartition(c *testCluster) *partition {
	p := &partition{c: c, proxies: map[[2]string]*pairProxy{}, cut: map[string]bool{}}
	c.t.Cleanup(func() {
		p.mu.Lock()
		defer p.mu.Unlock()
		for _, px := range p.proxies {
			px.ln.Close()
			px.closeConns()
		}
	})
	return p
}

// dialerFor is node from's raft.ServerAddressProvider.
func (p *partition) dialerFor(from string) raft.ServerAddressProvider {
	return dialVia{p: p, from: from}
}

type dialVia struct {
	p    *partition
	from string
}

func (d dialVia) ServerAddr(id raft.ServerID) (raft.ServerAddress, error) {
	px, err := d.p.proxy(d.from, string(id))
	if err != nil {
		return "", err
	}
	return raft.ServerAddress(px.ln.Addr().String()), nil
}

// proxy returns the pair's proxy, starting it on first use. Its target is
// looked up per connection: the peer may not have started yet.
func (p *partition) proxy(from, to string) (*pairProxy, error) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if px, ok := p.proxies[[2]string{from, to}]; ok {
		return px, nil
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return nil, err
	}
	px := &pairProxy{p: p, from: from, to: to, ln: ln, conns: map[net.Conn]bool{}}
	p.proxies[[2]string{from, to}] = px
	go px.serve()
	return px, nil
}

func (p *partition) blocked(from, to string) bool {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.cut[from] || p.cut[to]
}

// isolate cuts id off from every peer; heal undoes it.
func (p *partition) isolate(id string) { p.set(id, true) }
func (p *partition) heal(id string)    { p.set(id, false) }

func (p *partition) set(id string, cut bool) {
	p.mu.Lock()
	p.cut[id] = cut
	var affected []*pairProxy
	for k, px := range p.proxies {
		if k[0] == id || k[1] == id {
			affected = append(affected, px)
		}
	}
	p.mu.Unlock()
	if cut {
		for _, px := range affected {
			px.closeConns()
		}
	}
}

type pairProxy struct {
	p        *partition
	from, to string
	ln       net.Listener
	mu       sync.Mutex
	conns    map[net.Conn]bool
}

func (px *pairProxy) serve() {
	for {
		in, err := px.ln.Accept()
		if err != nil {
			return
		}
		go px.pipe(in)
	}
}

func (px *pairProxy) pipe(in net.Conn) {
	var target string
	px.p.c.mu.Lock()
	if tn, ok := px.p.c.nodes[px.to]; ok && !tn.down {
		target = tn.n.RaftAddr()
	}
	px.p.c.mu.Unlock()
	if target == "" || px.p.blocked(px.from, px.to) {
		in.Close()
		return
	}
	out, err := net.DialTimeout("tcp", target, 5*time.Second)
	if err != nil {
		in.Close()
		return
	}
	px.mu.Lock()
	px.conns[in], px.conns[out] = true, true
	px.mu.Unlock()
	done := make(chan struct{}, 2)
	go func() { _, _ = io.Copy(out, in); done <- struct{}{} }()
	go func() { _, _ = io.Copy(in, out); done <- struct{}{} }()
	<-done
	in.Close()
	out.Close()
	px.mu.Lock()
	delete(px.conns, in)
	delete(px.conns, out)
	px.mu.Unlock()
}

func (px *pairProxy) closeConns() {
	px.mu.Lock()
	defer px.mu.Unlock()
	for c := range px.conns {
		c.Close()
	}
}

// TestAnIsolatedLeaderAcknowledgesNothingAndTheMajorityGoesOn cuts the
// leader off from both followers while clients can still reach it: what
// it is sent cannot commit and must not be acknowledged, nor may it answer
// a linearizable read; the other two elect a leader and take writes; once
// healed, the old leader drops its uncommitted entry and every replica
// holds the same state, each acknowledged event exactly once.
func TestAnIsolatedLeaderAcknowledgesNothingAndTheMajorityGoesOn(t *testing.T) {
	c := newTestCluster(t)
	p := newPartition(c)
	c.startThree(func(cfg *Config) { cfg.raftDialAddrs = p.dialerFor(cfg.NodeID) })
	setupLedger(c)
	c.mustApply(burn("before"))
	old := c.leader()
	p.isolate(old.ID())

	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if res, err := old.Apply(ctx, burn("to-isolated")); err == nil {
		t.Fatalf("the isolated leader acknowledged a write: %+v", res)
	}
	if err := old.LinearizableRead(ctx); err == nil {
		t.Fatal("the isolated leader answered a linearizable read")
	}

	var others []*Node
	for _, n := range c.up() {
		if n.ID() != old.ID() {
			others = append(others, n)
		}
	}
	waitFor(t, time.Minute, "the majority to elect a leader", func() bool {
		return others[0].writable.Load() || others[1].writable.Load()
	})
	for _, n := range others {
		if n.writable.Load() {
			if _, err := n.Apply(ctx, burn("during")); err != nil {
				t.Fatalf("the new leader %s refused a write: %v", n.ID(), err)
			}
		}
	}
	if old.IsLeader() {
		t.Fatalf("%s still leads while cut off", old.ID())
	}

	p.heal(old.ID())
	c.mustApply(burn("after"))
	if dumps := c.waitConverged(); len(dumps) != 3 {
		t.Fatalf("got dumps of %d replicas, want 3", len(dumps))
	}
	for _, n := range c.up() {
		counts := usageCounts(t, n)
		for _, id := range []string{"before", "during", "after"} {
			if counts[id] != 1 {
				t.Errorf("%s: acknowledged event %s is in the ledger %d times", n.ID(), id, counts[id])
			}
		}
		if counts["to-isolated"] != 0 {
			t.Errorf("%s: the isolated leader's unacknowledged event is in the ledger", n.ID())
		}
	}
}
