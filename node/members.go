package node

import (
	"context"
	"encoding/json"
	"fmt"
	"log"
	"log/slog"
	"net"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/hashicorp/memberlist"
	"github.com/hashicorp/raft"
)

// nodeMeta is what a node tells the others through gossip.
type nodeMeta struct {
	Version int    `json:"v"`
	ID      string `json:"id"`
	Raft    string `json:"raft"`
	RPC     string `json:"rpc"`
	// InCluster is set once the node has raft state or has seen a leader:
	// nodes that meet such a node join its cluster instead of forming one.
	InCluster bool `json:"in_cluster,omitempty"`
	// Leaving is announced just before a graceful leave: memberlist's leave
	// event does not tell a leave from a death, this flag does.
	Leaving bool `json:"leaving,omitempty"`
	// Failed is announced once the node's state machine failed and it left
	// raft until restarted (leaveRaftAfterFailure): it stays an alive
	// member, but the leader must not add it to raft (after an operator
	// removed it) nor promote it, nor count it as a healthy voter.
	Failed bool `json:"failed,omitempty"`
	// Cluster is the id of the node's cluster (clusterid.go): nodes refuse
	// the gossip of nodes that announce another. Older builds announce
	// none.
	Cluster string `json:"cluster,omitempty"`
}

type memberInfo struct {
	meta  nodeMeta
	state memberlist.NodeStateType
	since time.Time // when state last changed
	// gossipAddr is where memberlist last reached the member: a dead
	// member is asked there to rejoin (see reconnectLoop).
	gossipAddr string
}

// memberTable is this node's picture of the gossip pool, kept from
// memberlist's events (memberlist itself forgets dead and left nodes).
type memberTable struct {
	mu sync.Mutex
	m  map[string]memberInfo
	// changed is signalled (without waiting) on every change, for
	// keepMembersLoop.
	changed chan struct{}
	// keptForgotten is set once the node leaves the pool: its members are
	// no longer kept (forgetKeptMembers). keptStopped is set by Shutdown
	// before it releases the data dir (stopKeepingMembers): the file is
	// neither written nor removed after that. keptMu orders both with the
	// writes.
	keptMu        sync.Mutex
	keptForgotten bool
	keptStopped   bool
}

func newMemberTable() *memberTable {
	return &memberTable{m: map[string]memberInfo{}, changed: make(chan struct{}, 1)}
}

func (t *memberTable) get(id string) (memberInfo, bool) {
	t.mu.Lock()
	defer t.mu.Unlock()
	mi, ok := t.m[id]
	return mi, ok
}

func (t *memberTable) list() []memberInfo {
	t.mu.Lock()
	defer t.mu.Unlock()
	out := make([]memberInfo, 0, len(t.m))
	for _, mi := range t.m {
		out = append(out, mi)
	}
	slices.SortFunc(out, func(a, b memberInfo) int { return cmpString(a.meta.ID, b.meta.ID) })
	return out
}

func cmpString(a, b string) int {
	switch {
	case a < b:
		return -1
	case a > b:
		return 1
	}
	return 0
}

// update records a memberlist node; it returns false for nodes whose meta
// is not creditd's.
func (t *memberTable) update(n *memberlist.Node, state memberlist.NodeStateType) (memberInfo, bool) {
	var meta nodeMeta
	if err := json.Unmarshal(n.Meta, &meta); err != nil || meta.ID != n.Name || meta.Raft == "" {
		return memberInfo{}, false
	}
	t.mu.Lock()
	defer t.mu.Unlock()
	old, ok := t.m[n.Name]
	mi := memberInfo{meta: meta, state: state, since: time.Now(), gossipAddr: n.Address()}
	if ok && old.state == state {
		mi.since = old.since
	}
	t.m[n.Name] = mi
	t.signalChange()
	return mi, true
}

// leftMemberKeptFor is how long a member that left stays in the table
// (serf's tombstone timeout is the same 24 hours): long enough for the
// leader to remove it from raft and for status to show where it went.
const leftMemberKeptFor = 24 * time.Hour

// forget drops members that left more than leftMemberKeptFor ago or died
// more than gossipReconnectFor ago, unless raft still has them (a dead voter
// the leader cannot remove without losing the quorum), so that a pool whose
// nodes come and go under new ids does not grow the table for ever. It
// returns the ids dropped.
func (t *memberTable) forget(now time.Time, inRaft func(id string) bool) []string {
	t.mu.Lock()
	defer t.mu.Unlock()
	var gone []string
	for id, mi := range t.m {
		var keep time.Duration
		switch mi.state {
		case memberlist.StateLeft:
			keep = leftMemberKeptFor
		case memberlist.StateDead:
			keep = gossipReconnectFor
		default:
			continue
		}
		if now.Sub(mi.since) > keep && !inRaft(id) {
			delete(t.m, id)
			gone = append(gone, id)
		}
	}
	if len(gone) > 0 {
		t.signalChange()
	}
	slices.Sort(gone)
	return gone
}

// gossip implements memberlist's Delegate and EventDelegate.
type gossip struct {
	n    *Node
	meta atomic.Pointer[[]byte]
	// joinAddrs is what joinLoop joins: Config.Join, and the members kept
	// in the data dir when the node has raft state (Node.joinAddrs).
	joinAddrs []string

	// idConflict is the last conflict over this node's own id
	// (NotifyConflict), for the readiness reason.
	conflictMu   sync.Mutex
	idConflict   string
	idConflictAt time.Time

	// refused counts the nodes of other clusters refused (clusterid.go).
	refused refusals
	// reconnectPasses counts reconnectLoop's passes, for tests.
	reconnectPasses atomic.Uint64

	// movedTo is, by member id, the other gossip address its name was
	// last claimed from (NotifyConflict): where a member that moved to
	// another host is, for reconnectLoop.
	movedMu sync.Mutex
	movedTo map[string]string
}

func (g *gossip) noteMoved(id, addr string) {
	g.movedMu.Lock()
	defer g.movedMu.Unlock()
	if g.movedTo == nil || len(g.movedTo) >= maxKeptMembers {
		g.movedTo = map[string]string{}
	}
	g.movedTo[id] = addr
}

// movedAddr is the other address id's name was last claimed from, or "".
func (g *gossip) movedAddr(id string) string {
	g.movedMu.Lock()
	defer g.movedMu.Unlock()
	return g.movedTo[id]
}

func (g *gossip) forgetMoved(id string) {
	g.movedMu.Lock()
	defer g.movedMu.Unlock()
	delete(g.movedTo, id)
}

// idConflictShownFor is how long a conflict over this node's own id stays
// in its readiness reason: it recurs at each push-pull (30 s) while both
// nodes run.
const idConflictShownFor = 2 * time.Minute

// NotifyConflict is memberlist's report of two members under one name at
// two addresses; it alone logged "Conflicting address for a. Mine: … Theirs:
// …", which did not say that two nodes run with the same --node-id, and the
// second of them then waited for ever with no other word. memberlist calls
// it holding its node lock: it only logs and records.
func (g *gossip) NotifyConflict(existing, other *memberlist.Node) {
	id := existing.Name
	// The member under this node's own id in its own table is itself
	// (memberlist keeps its local node and reports the other claim here);
	// n.gossipAddr is not read, as Start sets it after memberlist runs.
	if id == g.n.id {
		why := fmt.Sprintf("another node at gossip address %s also has this node's id %q (this node's gossip address is %s): "+
			"two nodes run with the same --node-id, and the cluster takes only one of them; stop one, or give it its own "+
			"--node-id and an empty --data-dir (a node restarted on a new --gossip-addr sees this too, until the others "+
			"have held its old address dead for a few seconds)", other.Address(), id, existing.Address())
		g.conflictMu.Lock()
		g.idConflict, g.idConflictAt = why, time.Now()
		g.conflictMu.Unlock()
		g.n.logger.Error(why, "member", id, "mine", existing.Address(), "theirs", other.Address())
		return
	}
	g.noteMoved(id, other.Address())
	g.n.logger.Error(fmt.Sprintf("two gossip members claim node id %q, at %s and at %s: two nodes run with the same --node-id "+
		"(or that node restarted on a new --gossip-addr before its old address was declared dead); this node keeps the one at %s",
		id, existing.Address(), other.Address(), existing.Address()),
		"member", id, "kept", existing.Address(), "refused", other.Address())
}

// recentIDConflict is the conflict over this node's own id seen in the
// last idConflictShownFor, or "".
func (g *gossip) recentIDConflict(now time.Time) string {
	if g == nil {
		return ""
	}
	g.conflictMu.Lock()
	defer g.conflictMu.Unlock()
	if g.idConflict == "" || now.Sub(g.idConflictAt) > idConflictShownFor {
		return ""
	}
	return g.idConflict
}

func (g *gossip) NodeMeta(limit int) []byte {
	b := *g.meta.Load()
	if len(b) > limit {
		return nil
	}
	return b
}
func (g *gossip) NotifyMsg([]byte)                           {}
func (g *gossip) GetBroadcasts(overhead, limit int) [][]byte { return nil }
func (g *gossip) LocalState(join bool) []byte                { return nil }
func (g *gossip) MergeRemoteState(buf []byte, join bool)     {}

func (g *gossip) NotifyJoin(m *memberlist.Node)   { g.event(m, memberlist.StateAlive, "joined") }
func (g *gossip) NotifyUpdate(m *memberlist.Node) { g.event(m, memberlist.StateAlive, "updated") }
func (g *gossip) NotifyLeave(m *memberlist.Node) {
	// memberlist reports both a graceful leave and a death here, and its
	// Node.State does not say which; the leaving flag in the meta does.
	state := memberlist.StateDead
	var meta nodeMeta
	if m.State == memberlist.StateLeft || (json.Unmarshal(m.Meta, &meta) == nil && meta.Leaving) {
		state = memberlist.StateLeft
	}
	g.event(m, state, stateName(state))
}

func (g *gossip) event(m *memberlist.Node, state memberlist.NodeStateType, what string) {
	if m.Name == g.n.id {
		return
	}
	mi, ok := g.n.members.update(m, state)
	if !ok {
		g.n.logger.Warn("ignoring a gossip member without creditd metadata", "member", m.Name, "addr", m.Address())
		return
	}
	lvl := slog.LevelInfo
	if what == "updated" {
		lvl = slog.LevelDebug
	}
	g.n.logger.Log(context.Background(), lvl, "gossip member "+what, "member", m.Name, "raft", mi.meta.Raft, "rpc", mi.meta.RPC)
	g.n.kickReconcile()
}

func (g *gossip) setMeta(meta nodeMeta) error {
	b, err := json.Marshal(meta)
	if err != nil {
		return fmt.Errorf("encode gossip metadata: %w", err)
	}
	if len(b) > maxMetaBytes {
		return fmt.Errorf("gossip metadata is %d bytes, over memberlist's %d (shorten NodeID or addresses)", len(b), maxMetaBytes)
	}
	g.meta.Store(&b)
	return nil
}

func (n *Node) startGossip(inCluster bool) error {
	host, portStr, _ := net.SplitHostPort(n.cfg.GossipAddr)
	port, err := strconv.Atoi(portStr)
	if err != nil {
		return fmt.Errorf("GossipAddr %q: port: %w", n.cfg.GossipAddr, err)
	}
	mc := memberlist.DefaultLANConfig()
	mc.Name = n.id
	mc.BindAddr, mc.BindPort = host, port
	mc.AdvertisePort = port
	if n.cfg.AdvertiseGossipAddr != "" {
		ah, ap, _ := net.SplitHostPort(n.cfg.AdvertiseGossipAddr)
		mc.AdvertiseAddr = ah
		if mc.AdvertisePort, err = strconv.Atoi(ap); err != nil {
			return fmt.Errorf("AdvertiseGossipAddr %q: port: %w", n.cfg.AdvertiseGossipAddr, err)
		}
	}
	g := &gossip{n: n}
	n.gossip = g
	if err := g.setMeta(n.localMeta(inCluster)); err != nil {
		return err
	}
	// memberlist refuses a member's name at a new address while its old
	// one is known (NotifyConflict): with the default 0 until the old
	// one's dead entry is dropped, GossipToTheDeadTime (30 s) after the
	// death and at the next wrap of the probe list, and the node then
	// waits for its next push-pull (up to PushPullInterval, 30 s), so a
	// node moved to another host was taken back about a minute after its
	// restart. Only a dead name is reclaimed, never an alive or suspect
	// one, and a dead entry's name goes to any address once it is
	// dropped anyway; deadNodeReclaimTime leaves a node declared dead by
	// mistake (a pause) time to hear of it and refute at its address.
	mc.DeadNodeReclaimTime = deadNodeReclaimTime
	mc.Delegate = g
	mc.Events = g
	mc.Conflict = g
	mc.Alive = g
	mc.Merge = g
	mc.Logger = log.New(&levelWriter{l: n.logger, component: "memberlist"}, "", 0)
	if n.cfg.memberlistConfig != nil {
		n.cfg.memberlistConfig(mc)
	}
	if n.ml, err = memberlist.Create(mc); err != nil {
		return fmt.Errorf("start gossip on %s: %w", n.cfg.GossipAddr, err)
	}
	ln := n.ml.LocalNode()
	n.gossipAddr = net.JoinHostPort(ln.Addr.String(), strconv.Itoa(int(ln.Port)))
	g.joinAddrs = n.joinAddrs(inCluster)
	return nil
}

// deadNodeReclaimTime is how long a member must have been dead before its
// name is taken at another gossip address (memberlist's
// DeadNodeReclaimTime): a node moved to another host.
const deadNodeReclaimTime = 5 * time.Second

func (n *Node) localMeta(inCluster bool) nodeMeta {
	return nodeMeta{Version: 1, ID: n.id, Raft: n.raftAddr, RPC: n.cfg.RPCAddr, InCluster: inCluster,
		Failed: n.leavingRaft.Load(), Cluster: n.clusterID()}
}

// joinLoop joins the gossip pool through Config.Join and the members kept
// in the data dir (gossip.joinAddrs), retrying until it reaches another member:
// the others may not be up yet. This node's own address is left out, and a
// join counts only once the node knows another member (memberlist counts a
// contact with itself as a success), so "--join own,other" goes on trying
// other until it answers.
func (n *Node) joinLoop() {
	addrs := n.gossip.joinAddrs
	others := slices.DeleteFunc(slices.Clone(addrs), n.isOwnGossipAddr)
	if len(others) < len(addrs) {
		n.logger.Info("not joining through this node's own gossip address", "gossip", n.gossipAddr)
	}
	if len(others) == 0 {
		n.logger.Warn("join lists only this node's own gossip address: nothing to join; give another member's --gossip-addr",
			"join", addrs)
		return
	}
	backoff := 200 * time.Millisecond
	for attempt := 1; ; attempt++ {
		contacted, err := n.ml.Join(others)
		if contacted > 0 && n.ml.NumMembers() > 1 {
			n.logger.Info("joined the gossip pool", "through", others, "contacted", contacted)
			return
		}
		if err == nil {
			err = fmt.Errorf("contacted %d, but this node knows no other member after it", contacted)
		}
		if attempt == 1 || attempt%10 == 0 {
			attrs := []any{"join", others, "attempt", attempt, "err", err}
			if looksLikeNoGossipPort(err) {
				attrs = append(attrs, "hint", notGossipPortHint)
			}
			n.logger.Warn("join failed; retrying", attrs...)
		}
		select {
		case <-n.stop:
			return
		case <-time.After(backoff):
		}
		backoff = min(backoff*2, 5*time.Second)
	}
}

// isOwnGossipAddr reports whether addr is this node's gossip address, as
// advertised or as bound (IP literals and the very name given: another name
// that resolves to this node is caught by joinLoop's member count instead).
func (n *Node) isOwnGossipAddr(addr string) bool {
	host, port, err := net.SplitHostPort(addr)
	if err != nil {
		return false
	}
	ip := net.ParseIP(host)
	for _, own := range []string{n.gossipAddr, n.cfg.GossipAddr} {
		oh, op, err := net.SplitHostPort(own)
		if err != nil || op != port || op == "0" {
			continue
		}
		oip := net.ParseIP(oh)
		switch {
		case oh == host,
			oip != nil && ip != nil && oip.Equal(ip),
			oip != nil && ip != nil && oip.IsUnspecified() && ip.IsLoopback(): // bound to every interface
			return true
		}
	}
	return false
}

const notGossipPortHint = "an address answered in another protocol or hung up: is it a node's --gossip-addr? " +
	"(not its --rpc-addr or --raft-addr)"

// looksLikeNoGossipPort reports whether a join error is what memberlist
// says when the address is a port of another protocol: an API port answers
// its message with HTTP ("received invalid msgType (72)", 72 being 'H'), a
// raft port hangs up on it (EOF, a reset).
func looksLikeNoGossipPort(err error) bool {
	if err == nil {
		return false
	}
	s := err.Error()
	for _, sign := range []string{"invalid msgType", "EOF", "connection reset by peer"} {
		if strings.Contains(s, sign) {
			return true
		}
	}
	return false
}

// gossipReconnectFor is how long after its death a member is still asked
// to rejoin (Consul's reconnect_timeout is the same 72 hours).
const gossipReconnectFor = 72 * time.Hour

// reconnectLoop asks each dead member, every GossipReconnectInterval, to
// rejoin the pool, as serf does for memberlist. A crashed node that comes
// back after the others declared it dead starts a fresh memberlist that
// knows nobody: without --join (the node that bootstrapped the cluster
// usually has none) it would never hear of the others again, so it could
// not forward writes to the leader, and after DeadServerTimeout the leader
// would remove it from raft although it is up. Joining it from here
// exchanges full state both ways: it learns the pool, sees itself
// reported dead, and refutes that with a newer incarnation. It goes on
// for gossipReconnectFor after the death, not just DeadServerTimeout: the
// leader keeps a dead voter whose removal would cost the quorum. Left
// members never rejoin this way.
func (n *Node) reconnectLoop() {
	t := time.NewTicker(n.cfg.GossipReconnectInterval)
	defer t.Stop()
	for {
		select {
		case <-n.stop:
			return
		case <-t.C:
		}
		n.forgetGoneMembers()
		for _, mi := range n.members.list() {
			if mi.state != memberlist.StateDead || mi.gossipAddr == "" || time.Since(mi.since) > gossipReconnectFor {
				continue
			}
			// An address found to be another cluster's node's (a data dir
			// restored from a snapshot served on the member's old address)
			// is asked again only after otherClusterBackoff.
			otherCluster := func(addr string) bool { return n.gossip.refused.otherClusterAt(addr, time.Now()) }
			select {
			case <-n.stop:
				return
			default:
			}
			// A member whose name was claimed from another address (moved
			// to another host) is asked there too, once memberlist gives
			// the name to another address (deadNodeReclaimTime): else the
			// others took it back only at its own next push-pull (every 30
			// s), which carries its state to them.
			if moved := n.gossip.movedAddr(mi.meta.ID); moved != "" && moved != mi.gossipAddr && time.Since(mi.since) > deadNodeReclaimTime &&
				!otherCluster(moved) {
				_, err := n.ml.Join([]string{moved})
				if err == nil {
					n.gossip.forgetMoved(mi.meta.ID)
					n.logger.Info("reconnected a member declared dead at the other address it was claimed from (moved)",
						"member", mi.meta.ID, "gossip", moved, "old_gossip", mi.gossipAddr)
					continue
				}
				n.logger.Debug("dead member unreachable at the other address it was claimed from", "member", mi.meta.ID,
					"gossip", moved, "err", err)
			}
			if otherCluster(mi.gossipAddr) {
				continue
			}
			// Most attempts find nobody there; memberlist bounds each by its
			// TCP timeout, and Shutdown ends a pending one.
			if _, err := n.ml.Join([]string{mi.gossipAddr}); err == nil {
				n.logger.Info("reconnected a member declared dead", "member", mi.meta.ID, "gossip", mi.gossipAddr)
			} else {
				n.logger.Debug("dead member still unreachable", "member", mi.meta.ID, "gossip", mi.gossipAddr, "err", err)
			}
		}
		n.gossip.reconnectPasses.Add(1)
	}
}

// forgetGoneMembers drops long-gone members from the table (memberTable.forget).
func (n *Node) forgetGoneMembers() {
	f := n.raft.GetConfiguration()
	if err := f.Error(); err != nil {
		n.logger.Debug("not forgetting gone members: read raft configuration", "err", err)
		return
	}
	servers := f.Configuration().Servers
	inRaft := func(id string) bool {
		return slices.ContainsFunc(servers, func(s raft.Server) bool { return string(s.ID) == id })
	}
	for _, id := range n.members.forget(time.Now(), inRaft) {
		n.logger.Info("forgot a gossip member gone for long", "member", id)
	}
}

// bootstrapLoop forms a new cluster once BootstrapExpect nodes, none in a
// cluster yet, have met. Every one of them computes the same configuration
// from the same member list, so bootstrapping each is safe. If any member
// is already in a cluster, this node waits to be added instead.
func (n *Node) bootstrapLoop() {
	t := time.NewTicker(200 * time.Millisecond)
	defer t.Stop()
	for {
		select {
		case <-n.stop:
			return
		case <-t.C:
		}
		if id, _ := n.Leader(); id != "" {
			return
		}
		var peers []nodeMeta
		inCluster := false
		for _, mi := range n.members.list() {
			if mi.state != memberlist.StateAlive {
				continue
			}
			inCluster = inCluster || mi.meta.InCluster
			peers = append(peers, mi.meta)
		}
		if inCluster {
			n.logger.Info("met a node already in a cluster; waiting to be added instead of bootstrapping")
			return
		}
		peers = append(peers, n.localMeta(false))
		if len(peers) < n.cfg.BootstrapExpect {
			continue
		}
		slices.SortFunc(peers, func(a, b nodeMeta) int { return cmpString(a.ID, b.ID) })
		peers = peers[:n.cfg.BootstrapExpect]
		if !slices.ContainsFunc(peers, func(m nodeMeta) bool { return m.ID == n.id }) {
			return // the cluster forms without us; its leader adds us
		}
		var conf raft.Configuration
		for i, p := range peers {
			s := raft.Server{ID: raft.ServerID(p.ID), Address: raft.ServerAddress(p.Raft), Suffrage: raft.Voter}
			if i >= n.cfg.Voters {
				s.Suffrage = raft.Nonvoter
			}
			conf.Servers = append(conf.Servers, s)
		}
		if err := n.raft.BootstrapCluster(conf).Error(); err != nil {
			n.logger.Warn("bootstrap failed", "err", err)
			return
		}
		n.logger.Info("bootstrapped a new cluster", "servers", len(conf.Servers))
		if !n.cfg.noClusterID {
			// Were it not kept (a crash now), the node adopts the id the
			// others derived, once they announce it (adoptClusterID).
			if err := n.setClusterID(clusterIDOf(peers), "derived from the bootstrap configuration"); err != nil {
				n.logger.Warn("keep the cluster id", "err", err)
			}
		}
		return
	}
}

// monitorLoop keeps the gossip metadata current and notices when this node
// was removed from the configuration: raft shuts itself down on a leader
// that removed itself, not on a follower (removedWhileRunning).
func (n *Node) monitorLoop() {
	t := time.NewTicker(500 * time.Millisecond)
	defer t.Stop()
	announced := false
	announcedCluster := ""
	wasMember := false
	for {
		select {
		case <-n.stop:
			return
		case <-t.C:
		}
		n.adoptClusterID()
		cluster := n.clusterID()
		if !announced || cluster != announcedCluster {
			id, _ := n.Leader()
			if id != "" || n.raft.LastIndex() > 0 {
				if err := n.gossip.setMeta(n.localMeta(true)); err != nil {
					n.logger.Error("update gossip metadata", "err", err)
				} else if err := n.ml.UpdateNode(5 * time.Second); err != nil {
					n.logger.Warn("announce cluster membership", "err", err)
				} else {
					announced, announcedCluster = true, cluster
				}
			}
		}
		// A node whose state machine failed stopped its own raft
		// (leaveRaftAfterFailure): it was not removed. It stays in the
		// pool, so that the cluster keeps it as a voter that is down and
		// its restart finds the members it kept.
		if n.leavingRaft.Load() {
			continue
		}
		removed := n.raft.State() == raft.Shutdown || n.removedWhileRunning(&wasMember)
		if removed && !n.closing.Load() {
			n.logger.Warn("removed from the cluster; leaving the gossip pool")
			if err := n.leaveGossip(); err != nil {
				n.logger.Warn("leave gossip", "err", err)
			}
			return
		}
	}
}

// removedWhileRunning reports whether this follower was removed from the
// raft configuration while it ran: raft keeps a removed follower running,
// outside the configuration and with no leader, so without leaving the
// gossip pool it stayed an alive member, and the leader added it back
// once its removal was 10 minutes old (recentlyRemoved). It was a member
// earlier in this run (wasMember: a node joining sees older configurations
// without itself as it catches up), its latest configuration leaves it out,
// and no leader has been in touch for removedNoContactHeartbeats heartbeat
// timeouts (a node removed while down and added back on its return
// replays its removal, but hears from the leader meanwhile).
func (n *Node) removedWhileRunning(wasMember *bool) bool {
	f := n.raft.GetConfiguration()
	if f.Error() != nil {
		return false
	}
	servers := f.Configuration().Servers
	if slices.ContainsFunc(servers, func(s raft.Server) bool { return string(s.ID) == n.id }) {
		*wasMember = true
		return false
	}
	quiet := time.Duration(removedNoContactHeartbeats) * n.cfg.HeartbeatTimeout
	return *wasMember && len(servers) > 0 && time.Since(n.raft.LastContact()) > quiet
}

// removedNoContactHeartbeats is how many heartbeat timeouts without a
// leader, outside the configuration, make a follower removed.
const removedNoContactHeartbeats = 10

func stateName(s memberlist.NodeStateType) string {
	switch s {
	case memberlist.StateAlive:
		return "alive"
	case memberlist.StateSuspect:
		return "suspect"
	case memberlist.StateDead:
		return "dead"
	case memberlist.StateLeft:
		return "left"
	}
	return "unknown"
}

// leavePropagateDelay is how long a leaving node stays in the pool after
// its leave is sent, as serf's LeavePropagateDelay (1 s by default, Nomad's
// too): it still answers probes while the leave spreads. A member that
// stops answering before the leader has heard of the leave is declared
// dead instead, and memberlist then ignores the leave; the leader would
// keep it in raft for DeadServerTimeout.
const leavePropagateDelay = time.Second

// leaveGossip announces the leave in the metadata, then leaves, so the
// leader removes this node from raft instead of waiting for it as dead. A
// node that leaves does so for good: it forgets the members it kept, so a
// later start rejoins only through Join, as before they were kept.
func (n *Node) leaveGossip() error {
	if err := n.forgetKeptMembers(); err != nil {
		n.logger.Warn("forget the kept gossip members", "err", err)
	}
	meta := n.localMeta(true)
	meta.Leaving = true
	if err := n.gossip.setMeta(meta); err != nil {
		return err
	}
	if err := n.ml.UpdateNode(2 * time.Second); err != nil {
		return fmt.Errorf("announce leave: %w", err)
	}
	if err := n.ml.Leave(5 * time.Second); err != nil {
		return fmt.Errorf("leave: %w", err)
	}
	time.Sleep(leavePropagateDelay)
	return nil
}
