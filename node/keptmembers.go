package node

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"path/filepath"
	"slices"
	"time"

	"github.com/hashicorp/memberlist"
)

// keptMembersFile is where a node keeps the gossip addresses of the members
// it knows, as serf's snapshot does for Consul: a node restarted without
// Join knew no member until one of theirs happened to push its state to it
// (memberlist's push-pull, every 30 s to one random member: 13 to 78 s
// measured), and until then it could not tell the leader's API address, so
// it was not ready and failed what it forwards. The Raft configuration holds
// raft addresses only, and no rule maps those to gossip addresses.
const keptMembersFile = "gossip-members.json"

// Bounds on the kept members: one address of any live member is enough to
// rejoin the pool, so a few dozen cover any cluster.
const (
	maxKeptMembers      = 64
	maxKeptMembersBytes = 64 << 10
	keptMembersVersion  = 1
	// keepMembersDelay gathers the events of one change (a join reports
	// every member of the pool at once) into one write.
	keepMembersDelay = 500 * time.Millisecond
)

type keptMember struct {
	ID     string `json:"id"`
	Gossip string `json:"gossip"`
}

type keptMembersDoc struct {
	Version int          `json:"v"`
	Members []keptMember `json:"members"`
}

// loadKeptMembers reads DATA_DIR/gossip-members.json; none yet is no error.
func loadKeptMembers(dir string) ([]keptMember, error) {
	path := filepath.Join(dir, keptMembersFile)
	f, err := os.Open(path)
	if errors.Is(err, os.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("read kept gossip members: %w", err)
	}
	defer f.Close()
	b, err := io.ReadAll(io.LimitReader(f, maxKeptMembersBytes+1))
	if err != nil {
		return nil, fmt.Errorf("read kept gossip members %s: %w", path, err)
	}
	if len(b) > maxKeptMembersBytes {
		return nil, fmt.Errorf("kept gossip members %s: over %d bytes", path, maxKeptMembersBytes)
	}
	var doc keptMembersDoc
	if err := json.Unmarshal(b, &doc); err != nil {
		return nil, fmt.Errorf("kept gossip members %s: %w", path, err)
	}
	if doc.Version != keptMembersVersion {
		return nil, fmt.Errorf("kept gossip members %s: version %d, want %d", path, doc.Version, keptMembersVersion)
	}
	for i, m := range doc.Members {
		if _, _, err := net.SplitHostPort(m.Gossip); err != nil || m.ID == "" {
			return nil, fmt.Errorf("kept gossip members %s: member %d (id %q) has no valid gossip address %q", path, i, m.ID, m.Gossip)
		}
	}
	if len(doc.Members) > maxKeptMembers {
		doc.Members = doc.Members[:maxKeptMembers]
	}
	return doc.Members, nil
}

// encodeKeptMembers is the file's content for members.
func encodeKeptMembers(members []keptMember) ([]byte, error) {
	if members == nil {
		members = []keptMember{}
	}
	b, err := json.Marshal(keptMembersDoc{Version: keptMembersVersion, Members: members})
	if err != nil {
		return nil, fmt.Errorf("encode kept gossip members: %w", err)
	}
	return b, nil
}

// keep lists the members worth asking to rejoin after a restart: every one
// not gone for good (left), alive ones first, at most maxKeptMembers.
func (t *memberTable) keep() []keptMember {
	var alive, other []keptMember
	for _, mi := range t.list() {
		if mi.state == memberlist.StateLeft || mi.gossipAddr == "" {
			continue
		}
		km := keptMember{ID: mi.meta.ID, Gossip: mi.gossipAddr}
		if mi.state == memberlist.StateAlive {
			alive = append(alive, km)
		} else {
			other = append(other, km)
		}
	}
	out := append(alive, other...)
	if len(out) > maxKeptMembers {
		out = out[:maxKeptMembers]
	}
	return out
}

// signalChange tells keepMembersLoop that the table changed.
func (t *memberTable) signalChange() {
	select {
	case t.changed <- struct{}{}:
	default:
	}
}

// keepMembersLoop writes the members the table holds to keptMembersFile,
// whole (temporary file, fsync, rename), when they change. A failed write is
// logged and tried again at the next change: the file only speeds a restart
// up, Join still works without it.
func (n *Node) keepMembersLoop() {
	path := filepath.Join(n.cfg.DataDir, keptMembersFile)
	var last []byte
	for {
		select {
		case <-n.stop:
			return
		case <-n.members.changed:
		}
		select {
		case <-n.stop:
			return
		case <-time.After(keepMembersDelay):
		}
		b, err := encodeKeptMembers(n.members.keep())
		if err != nil {
			n.logger.Warn("keep gossip members", "err", err)
			continue
		}
		if bytes.Equal(b, last) {
			continue
		}
		if err := n.writeKeptMembers(path, b); err != nil {
			n.logger.Warn("keep gossip members for the next start", "file", path, "err", err)
			continue
		}
		last = b
	}
}

// writeKeptMembers writes the file unless the node has left the pool or
// is shut down.
func (n *Node) writeKeptMembers(path string, b []byte) error {
	n.members.keptMu.Lock()
	defer n.members.keptMu.Unlock()
	if n.members.keptForgotten || n.members.keptStopped {
		return nil
	}
	if n.cfg.keptMembersWriter != nil {
		return n.cfg.keptMembersWriter(path, string(b))
	}
	return writeFileSynced(path, string(b))
}

// forgetKeptMembers removes the kept members for good: the node is leaving
// the pool. Once the node is shut down it leaves the file alone: the data
// dir may be another process's by then.
func (n *Node) forgetKeptMembers() error {
	n.members.keptMu.Lock()
	defer n.members.keptMu.Unlock()
	if n.members.keptStopped {
		return nil
	}
	n.members.keptForgotten = true
	path := filepath.Join(n.cfg.DataDir, keptMembersFile)
	if err := os.Remove(path); err != nil && !errors.Is(err, os.ErrNotExist) {
		return fmt.Errorf("remove %s: %w", path, err)
	}
	return syncDir(n.cfg.DataDir)
}

// stopKeepingMembers stops keptMembersFile's writes and its removal for
// good, before Shutdown releases the data dir's lock: a new process may
// hold the dir after that, and a write finishing then would replace its
// file with this one's (and share its temporary file). A write may still
// be in progress when Shutdown's time ran out before keepMembersLoop
// returned; the channel is closed once none is and none can start.
func (n *Node) stopKeepingMembers() <-chan struct{} {
	t := n.members
	done := make(chan struct{})
	if t.keptMu.TryLock() {
		t.keptStopped = true
		t.keptMu.Unlock()
		close(done)
		return done
	}
	go func() {
		defer close(done)
		t.keptMu.Lock()
		t.keptStopped = true
		t.keptMu.Unlock()
	}()
	return done
}

// forgetEarlierKeptMembers removes keptMembersFile from a data dir restored
// from a snapshot that has not run yet: left by the node that used the dir
// before, it names that node's cluster. Only left out of the first start
// (joinAddrs), it stayed in the file, which is written when the member
// table changes: a restored node running alone sees no other member, so
// its next start, once it had run, rejoined that cluster and forked it.
func (n *Node) forgetEarlierKeptMembers() error {
	path := filepath.Join(n.cfg.DataDir, keptMembersFile)
	if err := os.Remove(path); err != nil {
		if errors.Is(err, os.ErrNotExist) {
			return nil
		}
		return fmt.Errorf("remove the gossip members an earlier node kept in the restored data dir: %w", err)
	}
	n.logger.Warn("not rejoining the gossip members kept in the data dir, and removing them: it was restored from a snapshot as a new cluster, and they are another cluster's",
		"file", path)
	if err := syncDir(n.cfg.DataDir); err != nil {
		return fmt.Errorf("remove the gossip members an earlier node kept in the restored data dir: %w", err)
	}
	return nil
}

// joinAddrs is what the node joins at start: Config.Join, and when it has
// raft state, the members it kept (keptMembersFile), so that a restart
// without Join finds the pool at once. A kept file that cannot be read is
// logged and left out. A data dir restored from a snapshot that has not
// run yet is a new cluster: a kept file the dir held from an earlier node
// names that node's cluster, which it would fork (errRestoredJoins); Start
// has removed it (forgetEarlierKeptMembers).
func (n *Node) joinAddrs(hasState bool) []string {
	addrs := slices.Clone(n.cfg.Join)
	if !hasState || n.restoredNotRun {
		return addrs
	}
	kept, err := loadKeptMembers(n.cfg.DataDir)
	if err != nil {
		n.logger.Warn("not rejoining the gossip members kept in the data dir; relying on --join and the others to find this node", "err", err)
		return addrs
	}
	var added []string
	for _, km := range kept {
		if km.ID == n.id || slices.Contains(addrs, km.Gossip) {
			continue
		}
		addrs = append(addrs, km.Gossip)
		added = append(added, km.Gossip)
	}
	if len(added) > 0 {
		n.logger.Info("rejoining the gossip members kept in the data dir", "members", added)
	}
	return addrs
}
