package node

import (
	"crypto/rand"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/hashicorp/memberlist"
	"github.com/hashicorp/raft"
	raftboltdb "github.com/hashicorp/raft-boltdb/v2"
)

// A cluster's id tells its gossip pool from another creditd cluster's.
// The leader adds the members it sees in gossip to raft, so a pool merged
// with another cluster's (a --join naming one of its nodes, or a node of
// another cluster on an address this cluster's members still ask to
// rejoin, such as a data dir restored from a snapshot on a former member's
// --gossip-addr) put that cluster's nodes in this one's configuration,
// where they followed a leader whose log was not theirs. Every node
// announces its cluster's id in its gossip metadata and refuses merges
// with, and alive messages from, nodes that announce another.
//
// The id needs no coordinator: a node that forms a cluster of one
// (BootstrapExpect 1) or RestoreDataDir makes a random one; nodes that
// bootstrap together (BootstrapExpect > 1) derive it from the configuration
// they all compute (clusterIDOf); any other node (one started with Join, or
// a data dir of an older build) adopts the id its raft leader announces
// once it is in the leader's configuration (adoptClusterID). It is kept in
// raft's stable store, so it goes with the raft state: a restore, or a data
// dir whose stores were deleted, does not keep an earlier cluster's id.
// Nodes that announce no id (older builds, and nodes not yet in a cluster)
// are accepted, and a node without one accepts everyone, so rolling
// upgrades work; a cluster whose nodes all ran an older build has no id
// until one of them bootstraps anew, and stays open to any pool.

// clusterIDKey is the cluster id's key in raft's stable store (raft's own
// keys are CurrentTerm, LastVoteTerm and LastVoteCand).
var clusterIDKey = []byte("CreditdClusterID")

const maxClusterIDBytes = 64

// loadClusterID reads the cluster id from raft's stable store; "" when
// there is none.
func loadClusterID(s raft.StableStore) (string, error) {
	b, err := s.Get(clusterIDKey)
	// Never set: raft-boltdb says so with an error, raft-wal with nothing.
	if errors.Is(err, raftboltdb.ErrKeyNotFound) {
		return "", nil
	}
	if err != nil {
		return "", fmt.Errorf("read cluster id: %w", err)
	}
	id := string(b)
	if len(id) > maxClusterIDBytes || strings.IndexFunc(id, func(r rune) bool { return r < '!' || r > '~' }) >= 0 {
		return "", fmt.Errorf("read cluster id: raft's stable store holds an invalid cluster id %q", id)
	}
	return id, nil
}

func saveClusterID(s raft.StableStore, id string) error {
	if err := s.Set(clusterIDKey, []byte(id)); err != nil {
		return fmt.Errorf("save cluster id %s: %w", id, err)
	}
	return nil
}

// newClusterID is a random id for a new cluster.
func newClusterID() (string, error) {
	var r [16]byte
	if _, err := rand.Read(r[:]); err != nil {
		return "", fmt.Errorf("generate cluster id: %w", err)
	}
	return "cluster-" + hex.EncodeToString(r[:]), nil
}

// clusterIDOf is the id of a cluster bootstrapped with peers: every node
// that bootstraps it computes the same peers (bootstrapLoop), hence the
// same id. Only what raft's configuration holds goes in (ids and raft
// addresses): a random value of each node's, announced while it
// bootstraps, would make two clusters bootstrapped alike differ, but a
// node restarted while the others bootstrap announces a new one, and the
// nodes that read the old and the new one would bootstrap one raft
// configuration under two ids, refusing each other's gossip. Two clusters
// whose nodes reach each other have different addresses.
func clusterIDOf(peers []nodeMeta) string {
	h := sha256.New()
	for _, p := range peers {
		fmt.Fprintf(h, "%q %q\n", p.ID, p.Raft)
	}
	return "cluster-" + hex.EncodeToString(h.Sum(nil)[:16])
}

// clusterID is this node's cluster id, "" while it has none.
func (n *Node) clusterID() string {
	if p := n.cluster.Load(); p != nil {
		return *p
	}
	return ""
}

// setClusterID keeps id in raft's stable store; monitorLoop announces it.
func (n *Node) setClusterID(id, how string) error {
	if err := saveClusterID(n.store, id); err != nil {
		return err
	}
	n.cluster.Store(&id)
	n.logger.Info("cluster id "+how, "cluster", id)
	return nil
}

// adoptClusterID takes the id this node's raft leader announces, once
// this node, having none, is in the leader's configuration: it has joined
// the leader's cluster. Only the leader's, whose log this node takes: the
// member this node holds under the id of a server of its configuration
// need not be that server (a data dir restored from a snapshot, a new
// cluster with an id, served under a former member's id on its gossip
// address and met by the nodes of a cluster formed by an older build,
// which accept every pool), and a node that took such a member's id took
// the restored node for its member. A leader that announces none (a
// cluster formed by older builds) leaves it without one, and a node takes
// none while it leads.
func (n *Node) adoptClusterID() {
	if n.clusterID() != "" || n.cfg.noClusterID {
		return
	}
	addr, leader := n.raft.LeaderWithID()
	if leader == "" || string(leader) == n.id {
		return
	}
	f := n.raft.GetConfiguration()
	if f.Error() != nil || !slices.ContainsFunc(f.Configuration().Servers, func(s raft.Server) bool { return string(s.ID) == n.id }) {
		return
	}
	mi, ok := n.members.get(string(leader))
	if !ok || mi.state != memberlist.StateAlive || mi.meta.Cluster == "" || mi.meta.Raft != string(addr) {
		return
	}
	if err := n.setClusterID(mi.meta.Cluster, "adopted from this node's raft leader "+string(leader)); err != nil {
		n.logger.Warn("adopt the cluster id", "cluster", mi.meta.Cluster, "err", err)
	}
}

// otherCluster refuses a node that announces another cluster's id than
// this node's; nodes that announce none, and every node while this one has
// none, are accepted.
func (g *gossip) otherCluster(peer *memberlist.Node) error {
	mine := g.n.clusterID()
	if mine == "" || g.n.cfg.noClusterID {
		return nil
	}
	var meta nodeMeta
	if json.Unmarshal(peer.Meta, &meta) != nil || meta.Cluster == "" || meta.Cluster == mine {
		return nil
	}
	return &otherClusterError{member: peer.Name, addr: peer.Address(), theirs: meta.Cluster, mine: mine}
}

type otherClusterError struct{ member, addr, theirs, mine string }

func (e *otherClusterError) Error() string {
	return fmt.Sprintf("gossip member %q at %s is of cluster %s, and this node of cluster %s: "+
		"the pools of two creditd clusters are kept apart", e.member, e.addr, e.theirs, e.mine)
}

// NotifyAlive is memberlist's AliveDelegate: an alive message about a node
// of another cluster is ignored (memberlist logs it, with the error), so
// the node never enters this node's member table, whoever relayed it.
func (g *gossip) NotifyAlive(peer *memberlist.Node) error {
	if peer.Name == g.n.id {
		return nil
	}
	if err := g.otherCluster(peer); err != nil {
		g.refused.note(err.(*otherClusterError), g.n, false)
		return err
	}
	return nil
}

// NotifyMerge is memberlist's MergeDelegate: a join whose other side's pool
// holds a node of another cluster is refused whole, on either side (the
// joining node's Join fails). memberlist does not ask it for its periodic
// push-pull, which NotifyAlive covers.
func (g *gossip) NotifyMerge(peers []*memberlist.Node) error {
	var first *otherClusterError
	for _, p := range peers {
		if err := g.otherCluster(p); err != nil {
			g.refused.noteAddr(p.Address(), time.Now())
			if first == nil {
				first = err.(*otherClusterError)
			}
		}
	}
	if first == nil {
		return nil
	}
	g.refused.note(first, g.n, true)
	return fmt.Errorf("refused to merge with the gossip pool of another creditd cluster: %w", first)
}

// refusals counts and logs the nodes of other clusters refused. A node
// that keeps asking (a --join that names another cluster's node is retried
// every few seconds; a dead member's address, every
// GossipReconnectInterval) is logged once per otherClusterLogEvery.
type refusals struct {
	mu     sync.Mutex
	merges int
	alives int
	logged map[string]time.Time // their cluster id → last logged
	// at is when a gossip address was last found to be a node of another
	// cluster's (in a refused merge): reconnectLoop does not ask a dead
	// member to rejoin there for otherClusterBackoff.
	at map[string]time.Time
}

const (
	otherClusterLogEvery = 10 * time.Minute
	maxRefusalsLogged    = 64
	// otherClusterBackoff is how long reconnectLoop leaves alone an address
	// found to be another cluster's node's: the dead member it was asked
	// for is not there, and every try was a refused merge on both sides
	// (and an ERROR from memberlist on the other), every
	// GossipReconnectInterval for the 72 hours a dead member is asked.
	otherClusterBackoff = 10 * time.Minute
)

func (r *refusals) noteAddr(addr string, now time.Time) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.at == nil || len(r.at) >= maxRefusalsLogged {
		r.at = map[string]time.Time{}
	}
	r.at[addr] = now
}

// otherClusterAt reports whether addr was found to be another cluster's
// node's in the last otherClusterBackoff.
func (r *refusals) otherClusterAt(addr string, now time.Time) bool {
	r.mu.Lock()
	defer r.mu.Unlock()
	at, ok := r.at[addr]
	return ok && now.Sub(at) < otherClusterBackoff
}

func (r *refusals) note(e *otherClusterError, n *Node, merge bool) {
	r.mu.Lock()
	if merge {
		r.merges++
	} else {
		r.alives++
	}
	now := time.Now()
	last, seen := r.logged[e.theirs]
	quiet := seen && now.Sub(last) < otherClusterLogEvery
	if !quiet {
		if r.logged == nil || len(r.logged) >= maxRefusalsLogged {
			r.logged = map[string]time.Time{}
		}
		r.logged[e.theirs] = now
	}
	r.mu.Unlock()
	if quiet {
		return
	}
	what := "ignoring an alive message about a node of another creditd cluster"
	if merge {
		what = "refused to merge with the gossip pool of another creditd cluster"
	}
	n.logger.Error(what+": a --join naming a node of another cluster, or a node of another cluster (one restored from a "+
		"snapshot is a new cluster) on a gossip address this cluster's members knew; the two stay apart (logged again "+
		"in "+otherClusterLogEvery.String()+" if it goes on)",
		"cluster", e.mine, "their_cluster", e.theirs, "member", e.member, "gossip", e.addr)
}

// counts is how many merges and alive messages were refused, for tests.
func (r *refusals) counts() (merges, alives int) {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.merges, r.alives
}
