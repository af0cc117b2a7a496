package node

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/creditd/creditd/fsm"
	"github.com/hashicorp/memberlist"
	"github.com/hashicorp/raft"
)

// Node is one running member of a creditd cluster.
type Node struct {
	cfg    Config
	id     string
	logger *slog.Logger

	fsm   *fsm.FSM   // nil when Config.StateMachine replaced it
	state *stateFile // the open fsm.db; nil when Config.StateMachine replaced it
	sm    StateMachine
	rfsm  *raftFSM
	raft  *raft.Raft
	// stateClosed is closed once shutdown has closed the state file, which
	// may be after Shutdown returned (a snapshot stream held it open).
	stateClosed chan struct{}
	// unlockDir releases the data dir's lock, once the state is closed.
	unlockDir func() error
	store     logStore
	snaps     *raft.FileSnapshotStore
	transport *raftTransport
	ml        *memberlist.Memberlist
	gossip    *gossip
	batch     *batcher

	raftAddr   string // advertised
	gossipAddr string // advertised

	// applied is the highest raft index the state machine has applied
	// (including configuration entries, which carry no command).
	applied   atomic.Uint64
	appliedMu sync.Mutex
	appliedCh chan struct{}
	// appliedSinceStart is set by the first apply or restore of this
	// process; restoring while a snapshot is received and restored (both
	// for Ready).
	appliedSinceStart atomic.Bool
	restoring         atomic.Bool
	// restoredNotRun is set when the data dir is a snapshot restore that
	// has not run yet (a new cluster of one): it joins nobody, neither
	// through Join (errRestoredJoins) nor the kept members (joinAddrs).
	restoredNotRun bool
	// cluster is this node's cluster id (clusterid.go); unset while it has
	// none.
	cluster atomic.Pointer[string]

	// writable is set while this node leads and has applied everything
	// committed before its term (so fsm.LastTime is final for earlier
	// terms and stamps cannot go backwards).
	writable atomic.Bool
	closing  atomic.Bool

	members *memberTable

	leaderMu  sync.Mutex
	leaderCtx context.Context // nil unless leading
	leaderWG  *sync.WaitGroup
	// leaderTasksStarted is set once this leadership started the onLeader
	// tasks; RunOnLeader starts a later one itself.
	leaderTasksStarted bool
	// leaderCaughtUp is set once this leadership has applied every entry
	// of earlier terms (lead); handingOver counts transfers under way.
	// writable is set only when the one holds and the other is 0.
	leaderCaughtUp bool
	handingOver    int
	onLeader       []leaderTask
	reconcileC     chan struct{}
	// removed remembers members removed by an operator, so the leader does
	// not add them back while they still gossip.
	removedMu sync.Mutex
	removed   map[string]time.Time

	// leavingRaft is set once a failed state machine has made this node
	// leave raft (leaveRaftAfterFailure). stopRaftOnce stops raft once,
	// for that and for Shutdown, and every caller waits for it.
	leavingRaft atomic.Bool
	// started is set, under startMu, once Start has set up everything
	// leaveRaftAfterFailure uses (raft, gossip, the batcher): a failure
	// before that (raft delivers entries while Start goes on) leaves the
	// start of leaveRaftAfterFailure to Start.
	startMu      sync.Mutex
	started      bool
	stopRaftOnce sync.Once
	stopRaftErr  error
	raftStopped  chan struct{} // closed once stopRaft has stopped raft

	stop chan struct{} // closed by Shutdown
	// The applier stops only after raft, which may still deliver entries
	// while it shuts down.
	applierStop chan struct{}
	applierDone chan struct{}
	wg          sync.WaitGroup
	shutOnce    sync.Once
	shutErr     error
}

type leaderTask struct {
	name string
	fn   func(ctx context.Context)
}

// Start opens the node's stores, starts raft and gossip, and returns while
// the cluster forms in the background (Ready reports when writes can go).
// On error everything opened is closed again.
func Start(ctx context.Context, cfg Config) (n *Node, err error) {
	cfg.setDefaults()
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	if err := os.MkdirAll(cfg.DataDir, 0o750); err != nil {
		return nil, fmt.Errorf("create data dir %s: %w", cfg.DataDir, err)
	}
	unlockDir, err := lockDataDir(cfg.DataDir)
	if err != nil {
		return nil, err
	}
	defer func() {
		if err != nil {
			_ = unlockDir() // after the closers below
		}
	}()
	if cfg.NodeID, err = dataDirNodeID(cfg.DataDir, cfg.NodeID); err != nil {
		return nil, err
	}
	n = &Node{
		cfg:         cfg,
		id:          cfg.NodeID,
		logger:      cfg.Logger.With("node", cfg.NodeID),
		appliedCh:   make(chan struct{}),
		members:     newMemberTable(),
		reconcileC:  make(chan struct{}, 1),
		removed:     map[string]time.Time{},
		stop:        make(chan struct{}),
		applierStop: make(chan struct{}),
		raftStopped: make(chan struct{}),
		unlockDir:   unlockDir,
	}
	var closers []func() error
	defer func() {
		if err != nil {
			for i := len(closers) - 1; i >= 0; i-- {
				_ = closers[i]()
			}
		}
	}()

	n.sm = cfg.StateMachine
	if n.sm == nil {
		st, err := openStateFile(cfg.DataDir, cfg.StateFsync, n.logger)
		if err != nil {
			return nil, err
		}
		closers = append(closers, st.close)
		n.state, n.fsm, n.sm = st, st.f, FSMStateMachine{F: st.f}
	} else if r, ok := n.sm.(interface{ FSM() *fsm.FSM }); ok {
		n.fsm = r.FSM() // read through FSM; the caller owns and closes it
	}
	n.applied.Store(n.sm.AppliedIndex())
	n.rfsm = newRaftFSM(n.sm, n.markApplied)
	n.rfsm.onFailed = n.stateMachineFailed
	n.rfsm.setLeading(false, cfg.FollowerApplyWait) // every node starts as a follower
	// The goroutine and the closers use locals: on an error Start returns
	// nil, which clears the named result n before the deferred closers run.
	rfsm, applierStop, applierDone := n.rfsm, n.applierStop, make(chan struct{})
	n.applierDone = applierDone
	go func() {
		defer close(applierDone)
		rfsm.run(applierStop)
	}()
	closers = append(closers, func() error { close(applierStop); <-applierDone; return nil })

	n.store, err = openLogStore(cfg.DataDir, cfg.LogStore, cfg.NoSync)
	if err != nil {
		return nil, err
	}
	closers = append(closers, n.store.Close)
	var logs raft.LogStore = n.store
	if cfg.LogCacheEntries > 0 {
		if logs, err = raft.NewLogCache(cfg.LogCacheEntries, n.store); err != nil {
			return nil, fmt.Errorf("create log cache: %w", err)
		}
	}
	n.snaps, err = raft.NewFileSnapshotStoreWithLogger(cfg.DataDir, cfg.SnapshotRetain, newHclog(n.logger, "raft-snapshots"))
	if err != nil {
		return nil, fmt.Errorf("open snapshot store in %s: %w", cfg.DataDir, err)
	}
	if err := n.catchUpFromLocalSnapshot(); err != nil {
		return nil, err
	}
	if err := ctx.Err(); err != nil {
		return nil, err
	}

	var advertise net.Addr
	if cfg.AdvertiseRaftAddr != "" {
		if advertise, err = net.ResolveTCPAddr("tcp", cfg.AdvertiseRaftAddr); err != nil {
			return nil, fmt.Errorf("resolve AdvertiseRaftAddr %q: %w", cfg.AdvertiseRaftAddr, err)
		}
	}
	tcp, err := raft.NewTCPTransportWithConfig(cfg.RaftAddr, advertise, &raft.NetworkTransportConfig{
		MaxPool: 8, Timeout: 10 * time.Second, Logger: newHclog(n.logger, "raft-net"),
		ServerAddressProvider: cfg.raftDialAddrs})
	if err != nil {
		return nil, fmt.Errorf("listen for raft on %s: %w", cfg.RaftAddr, err)
	}
	n.transport = &raftTransport{NetworkTransport: tcp}
	closers = append(closers, n.transport.Close)
	n.raftAddr = string(n.transport.LocalAddr())

	hasState, err := raft.HasExistingState(logs, n.store, n.snaps)
	if err != nil {
		return nil, fmt.Errorf("check raft state: %w", err)
	}
	if hasState {
		if n.restoredNotRun, err = restoredNotRun(logs, n.store); err != nil {
			return nil, fmt.Errorf("check raft state: %w", err)
		}
		if n.restoredNotRun {
			if len(cfg.Join) > 0 {
				return nil, errRestoredJoins(cfg.DataDir, cfg.Join)
			}
			if err := n.forgetEarlierKeptMembers(); err != nil {
				return nil, err
			}
		}
	}

	if !cfg.noClusterID {
		switch {
		case hasState:
			id, err := loadClusterID(n.store)
			if err != nil {
				return nil, err
			}
			if id == "" && n.restoredNotRun { // restored by an older build
				if id, err = newClusterID(); err != nil {
					return nil, err
				}
				if err := saveClusterID(n.store, id); err != nil {
					return nil, err
				}
			}
			if id != "" {
				n.cluster.Store(&id)
			}
		case cfg.BootstrapExpect == 1:
			id, err := newClusterID() // kept once bootstrapped, below
			if err != nil {
				return nil, err
			}
			n.cluster.Store(&id)
		}
	}

	rc := raft.DefaultConfig()
	rc.LocalID = raft.ServerID(n.id)
	rc.HeartbeatTimeout = cfg.HeartbeatTimeout
	rc.ElectionTimeout = cfg.ElectionTimeout
	rc.LeaderLeaseTimeout = cfg.LeaderLeaseTimeout
	rc.SnapshotThreshold = cfg.SnapshotThreshold
	rc.SnapshotInterval = cfg.SnapshotInterval
	rc.TrailingLogs = cfg.TrailingLogs
	rc.NoSnapshotRestoreOnStart = true
	// Unbuffered apply channel: with BatchApplyCh a future sent just
	// before shutdown can sit in the buffer and never resolve, leaving its
	// caller waiting. raft still gathers concurrent applies into one disk
	// write (its leader loop drains every sender that is ready).
	rc.BatchApplyCh = false
	rc.MaxAppendEntries = 256
	rc.Logger = newHclog(n.logger, "raft")
	n.raft, err = raft.NewRaft(rc, trackedFSM{n.rfsm, &n.restoring}, logs, n.store,
		trackedSnapshots{SnapshotStore: n.snaps, restoring: &n.restoring, applied: &n.applied}, n.transport)
	if err != nil {
		return nil, fmt.Errorf("start raft: %w", err)
	}
	r := n.raft
	closers = append(closers, func() error { return r.Shutdown().Error() })

	if err := n.startGossip(hasState); err != nil {
		return nil, err
	}
	closers = append(closers, n.ml.Shutdown)

	if !hasState && cfg.BootstrapExpect == 1 {
		conf := raft.Configuration{Servers: []raft.Server{{ID: raft.ServerID(n.id), Address: raft.ServerAddress(n.raftAddr), Suffrage: raft.Voter}}}
		if err := n.raft.BootstrapCluster(conf).Error(); err != nil {
			return nil, fmt.Errorf("bootstrap single-node cluster: %w", err)
		}
		if id := n.clusterID(); id != "" {
			if err := saveClusterID(n.store, id); err != nil {
				return nil, fmt.Errorf("bootstrap single-node cluster: %w", err)
			}
		}
		n.logger.Info("bootstrapped a new cluster", "voters", 1, "cluster", n.clusterID())
	}

	n.batch = newBatcher(n)
	n.goRun(n.batch.run)
	n.goRun(n.leadershipLoop)
	n.goRun(n.monitorLoop)
	if !hasState && cfg.BootstrapExpect > 1 {
		n.goRun(n.bootstrapLoop)
	}
	if len(n.gossip.joinAddrs) > 0 { // Join, and the members kept from the last run
		n.goRun(n.joinLoop)
	}
	n.goRun(n.reconnectLoop)
	n.goRun(n.keepMembersLoop)
	n.startMu.Lock()
	n.started = true
	if n.leavingRaft.Load() { // the state machine failed while Start went on
		n.goRun(n.leaveRaftAfterFailure)
	}
	n.startMu.Unlock()
	n.logger.Info("node started", "raft", n.raftAddr, "gossip", n.gossipAddr, "rpc", cfg.RPCAddr, "cluster", n.clusterID(),
		"data_dir", cfg.DataDir, "existing_state", hasState, "applied_index", n.sm.AppliedIndex())
	return n, nil
}

// catchUpFromLocalSnapshot restores the newest local snapshot when it is
// ahead of the state file: raft installed it (from a leader) but the node
// stopped before the state caught up. Otherwise the state already holds it
// and NoSnapshotRestoreOnStart skips the restore.
func (n *Node) catchUpFromLocalSnapshot() error {
	metas, err := n.snaps.List()
	if err != nil {
		return fmt.Errorf("list snapshots: %w", err)
	}
	if len(metas) == 0 {
		return nil
	}
	_, rc, err := n.snaps.Open(metas[0].ID)
	if err != nil {
		return fmt.Errorf("open snapshot %s: %w", metas[0].ID, err)
	}
	defer rc.Close()
	index, err := readSnapshotHeader(rc)
	if err != nil {
		return fmt.Errorf("snapshot %s: %w", metas[0].ID, err)
	}
	if index <= n.sm.AppliedIndex() {
		return nil
	}
	n.logger.Info("state is behind the newest snapshot; restoring it", "snapshot", metas[0].ID,
		"snapshot_applied_index", index, "state_applied_index", n.sm.AppliedIndex())
	if err := n.sm.Restore(rc); err != nil {
		return fmt.Errorf("restore snapshot %s: %w", metas[0].ID, err)
	}
	n.applied.Store(n.sm.AppliedIndex())
	return nil
}

// nodeIDFile is where a data dir keeps its node's id.
const nodeIDFile = "node-id"

// KeptNodeID is the id of the node a data dir belongs to (see
// dataDirNodeID), for tools that name it, such as snapshot restore.
func KeptNodeID(dir string) (string, error) {
	id, err := keptNodeID(dir)
	if err == nil && id == "" {
		err = fmt.Errorf("data dir %s keeps no node id (%s)", dir, nodeIDFile)
	}
	return id, err
}

// keptNodeID is the id in DATA_DIR/node-id, or "" when there is none yet.
func keptNodeID(dir string) (string, error) {
	path := filepath.Join(dir, nodeIDFile)
	b, err := os.ReadFile(path)
	switch {
	case errors.Is(err, os.ErrNotExist):
		return "", nil
	case err != nil:
		return "", fmt.Errorf("read node id: %w", err)
	}
	kept := strings.TrimSpace(string(b))
	if kept == "" || len(kept) > 128 {
		return "", fmt.Errorf("node id file %s holds an invalid id %q", path, kept)
	}
	return kept, nil
}

// dataDirNodeID is the node's id: the one given, else the one kept in
// DATA_DIR/node-id, else a new one. A given id is kept there too, so that a
// later start without --node-id (as "snapshot restore --node-id a" then
// "serve --data-dir d" once did) keeps the id raft knows the node by rather
// than generating one that no configuration names: such a node never votes
// nor leads. A given id that differs from the kept one is refused for the
// same reason, and so is a data dir holding a node's state but no id file
// when no id is given.
func dataDirNodeID(dir, given string) (string, error) {
	id, keep, err := nodeIDFor(dir, given)
	if err != nil || !keep {
		return id, err
	}
	return id, keepNodeID(dir, id)
}

// nodeIDFor resolves the node's id as dataDirNodeID does, without writing
// it; keep says it is not yet in DATA_DIR/node-id.
func nodeIDFor(dir, given string) (id string, keep bool, err error) {
	kept, err := keptNodeID(dir)
	switch {
	case err != nil:
		return "", false, err
	case kept != "" && given != "" && given != kept:
		return "", false, fmt.Errorf("node id %q: data dir %s belongs to node %q (%s); start it with that id, or use an empty data dir",
			given, dir, kept, filepath.Join(dir, nodeIDFile))
	case kept != "":
		return kept, false, nil
	case given != "":
		return given, true, nil
	}
	for _, name := range []string{"raft.db", "raft-wal", "snapshots", "fsm.db"} {
		if exists(filepath.Join(dir, name)) {
			return "", false, fmt.Errorf("data dir %s holds a node's state (%s) but no %s file: start it with --node-id set to "+
				"the id that node had (a new id would be in no raft configuration, so the node would never vote nor lead)",
				dir, name, nodeIDFile)
		}
	}
	var r [6]byte
	if _, err := rand.Read(r[:]); err != nil {
		return "", false, fmt.Errorf("generate node id: %w", err)
	}
	return "node-" + hex.EncodeToString(r[:]), true, nil
}

// keepNodeID writes DATA_DIR/node-id whole and durably: an id lost with the
// page cache would leave the node's state under no id.
func keepNodeID(dir, id string) error {
	if err := writeFileSynced(filepath.Join(dir, nodeIDFile), id); err != nil {
		return fmt.Errorf("write node id: %w", err)
	}
	return nil
}

// isClosed reports whether c is closed, without waiting.
func isClosed(c <-chan struct{}) bool {
	select {
	case <-c:
		return true
	default:
		return false
	}
}

func (n *Node) goRun(fn func()) {
	n.wg.Add(1)
	go func() {
		defer n.wg.Done()
		fn()
	}()
}

func (n *Node) markApplied(index uint64) {
	n.appliedSinceStart.Store(true)
	for {
		cur := n.applied.Load()
		if index <= cur || n.applied.CompareAndSwap(cur, index) {
			break
		}
	}
	n.wakeApplyWaiters()
}

func (n *Node) wakeApplyWaiters() {
	n.appliedMu.Lock()
	close(n.appliedCh)
	n.appliedCh = make(chan struct{})
	n.appliedMu.Unlock()
}

// stateMachineFailed is told each failure the state machine records: the
// applied index will not move again, so whoever waits for it (a
// linearizable read, a WatchEntries stream) is woken to see Failure.
//
// The node also leaves raft (leaveRaftAfterFailure), in a goroutine of
// its own: this runs with the applier's lock held, in the applier or in
// raft's FSM goroutine (a restore), which raft's shutdown waits for. A
// failure while Start is still setting the node up leaves that goroutine
// to Start's end: raft delivers entries from NewRaft on, before the
// gossip, the batcher and n.raft itself are set.
func (n *Node) stateMachineFailed(err error) {
	n.logger.Error("state machine failed: this node applies nothing more until it is restarted", "err", err)
	// No entry is appended from now on: new writes are told the failure
	// (awaitWritable), and no leadership resumes them (resumeWrites).
	n.leaderMu.Lock()
	n.writable.Store(false)
	n.leaderMu.Unlock()
	n.wakeApplyWaiters()
	n.startMu.Lock()
	defer n.startMu.Unlock()
	if !n.closing.Load() && n.leavingRaft.CompareAndSwap(false, true) && n.started {
		n.goRun(n.leaveRaftAfterFailure)
	}
}

// leaveRaftAfterFailure takes a node whose state machine failed out of the
// cluster's raft until it is restarted, so that the others go on without
// it as they would without a dead node. Left in raft, a failed leader kept
// leading: followers forwarded every write to it, and it committed them
// but answered each with the failure, so the cluster took no write until
// it was restarted. A failed follower leaves too: its log is complete, so
// it could win the next election (after a leader's loss, or as the most
// up-to-date target of a leadership transfer, which raft grants without
// asking) and be a failed leader again; raft has no way to keep a voter
// from campaigning (a longer heartbeat timeout would also keep it loyal
// to a dead leader, refusing every vote). Out of raft it neither votes
// nor takes entries: it counts as down for quorum, as a dead node does.
//
// A leader first hands leadership over (best effort, bounded by
// ApplyTimeout for its entries in flight and ElectionTimeout for raft's
// transfer), so the others need not wait out an election timeout. The
// node's API, probes and gossip stay up, saying why it is not ready.
func (n *Node) leaveRaftAfterFailure() {
	if n.closing.Load() {
		return // Shutdown stops raft
	}
	// The others learn it first: their leader neither counts it as a
	// healthy voter nor adds it back once an operator removed it (it stays
	// an alive gossip member, with its raft stopped).
	if err := n.gossip.setMeta(n.localMeta(true)); err != nil {
		n.logger.Error("announce the state machine's failure in gossip", "err", err)
	} else if err := n.ml.UpdateNode(5 * time.Second); err != nil {
		n.logger.Warn("announce the state machine's failure in gossip", "err", err)
	}
	did := "left the cluster's raft until restarted"
	switch {
	case n.raft.State() != raft.Leader:
	case n.otherVoters() == 0:
		// The entries in flight resolve first (with the failure): raft
		// leaves the futures of entries it has committed but not yet
		// handed to the state machine unresolved when it stops.
		n.batch.awaitIdle(context.Background(), n.cfg.ApplyTimeout)
		did = "led alone (no other voter to hand leadership to); " + did
	default:
		ctx, cancel := context.WithTimeout(context.Background(), n.cfg.ApplyTimeout+n.cfg.ElectionTimeout)
		defer cancel()
		go func() { // Shutdown ends the wait
			select {
			case <-n.stop:
				cancel()
			case <-ctx.Done():
			}
		}()
		if err := n.handOver(ctx, n.raft.LeadershipTransfer, false); err != nil {
			did = fmt.Sprintf("could not hand leadership over (%v), so the others elect a leader once their election timeout passes; %s", err, did)
		} else {
			did = fmt.Sprintf("handed leadership to %s and %s", n.newLeaderAfterHandover(ctx), did)
		}
	}
	if err := n.stopRaft(); err != nil {
		n.logger.Error("state machine failed; could not leave the cluster's raft", "err", err)
		return
	}
	n.logger.Error("state machine failed; "+did, "err", n.rfsm.failure())
}

// newLeaderAfterHandover waits, within ElectionTimeout, to hear which node
// leads after this one handed leadership over, for the log.
func (n *Node) newLeaderAfterHandover(ctx context.Context) string {
	deadline := time.NewTimer(n.cfg.ElectionTimeout)
	defer deadline.Stop()
	poll := time.NewTicker(20 * time.Millisecond)
	defer poll.Stop()
	for {
		if _, id := n.raft.LeaderWithID(); id != "" && string(id) != n.id {
			return string(id)
		}
		select {
		case <-poll.C:
		case <-deadline.C:
			return "another voter (not yet known here)"
		case <-ctx.Done():
			return "another voter (not yet known here)"
		}
	}
}

// stopRaft shuts raft down once; every caller waits until it has stopped.
// A second raft.Shutdown returns at once, before the first has stopped
// raft's goroutines, and the log store must not be closed under them.
func (n *Node) stopRaft() error {
	n.stopRaftOnce.Do(func() {
		n.stopRaftErr = n.raft.Shutdown().Error()
		close(n.raftStopped)
	})
	return n.stopRaftErr
}

// Failure is the state machine's failure (an error matching
// ErrStateMachineFailed: a storage failure in an apply, its commit or a
// restore), nil while it is healthy. After one the node applies nothing
// until it is restarted: its state stays what it was, however far the
// cluster goes on.
func (n *Node) Failure() error { return n.rfsm.failure() }

// AppliedNotify returns a channel closed after the next apply, or when the
// state machine fails (Failure); call it again for the one after.
func (n *Node) AppliedNotify() <-chan struct{} {
	n.appliedMu.Lock()
	defer n.appliedMu.Unlock()
	return n.appliedCh
}

// WriteStats are totals over the writes this node has put in the log as
// leader, for rates and mean times (Prometheus counters, /metrics).
type WriteStats struct {
	// Entries and Commands were appended by group commit (one entry
	// carries Commands/Entries commands on average).
	Entries, Commands uint64
	// Applied entries committed and were applied; Commit is their total
	// time from append until raft committed them, Apply from then until
	// their results were ready.
	Applied       uint64
	Commit, Apply time.Duration
}

// WriteStats returns the write totals since the node started.
func (n *Node) WriteStats() WriteStats {
	c := &n.batch.stats
	return WriteStats{
		Entries: c.entries.Load(), Commands: c.commands.Load(), Applied: c.applied.Load(),
		Commit: time.Duration(c.commitNs.Load()), Apply: time.Duration(c.applyNs.Load()),
	}
}

// AppliedIndex is the highest raft index this replica has applied.
func (n *Node) AppliedIndex() uint64 { return n.applied.Load() }

// FSM returns the state machine for reads (nil when Config.StateMachine
// replaced it with one that has no FSM method).
func (n *Node) FSM() *fsm.FSM { return n.fsm }

// ID is this node's id.
func (n *Node) ID() string { return n.id }

// RaftAddr and GossipAddr are the advertised addresses (useful with port 0).
func (n *Node) RaftAddr() string   { return n.raftAddr }
func (n *Node) GossipAddr() string { return n.gossipAddr }

// IsLeader reports whether this node is the raft leader.
func (n *Node) IsLeader() bool { return n.raft.State() == raft.Leader }

// Leader returns the leader's id and API address ("" when unknown).
func (n *Node) Leader() (id, rpcAddr string) {
	_, lid := n.raft.LeaderWithID()
	id = string(lid)
	if id == "" {
		return "", ""
	}
	if id == n.id {
		return id, n.cfg.RPCAddr
	}
	if m, ok := n.members.get(id); ok {
		return id, m.meta.RPC
	}
	return id, ""
}

// notLeader is the error for a request this node cannot serve as leader:
// *NotLeaderError naming the leader, or ErrNoLeader when none is known.
func (n *Node) notLeader() error {
	id, addr := n.Leader()
	if id == "" || id == n.id {
		if err := n.rfsm.failure(); err != nil {
			// Its raft is stopped (leaveRaftAfterFailure): "no leader"
			// would send the caller to wait for an election here.
			return fmt.Errorf("this node knows no leader: %w", err)
		}
		return fmt.Errorf("%w: this node does not lead and knows no leader", ErrNoLeader)
	}
	return &NotLeaderError{LeaderID: id, LeaderRPCAddr: addr}
}

// awaitWritable waits, up to LeaderWait, until this node can stamp writes
// or another node is known to lead (then *NotLeaderError).
func (n *Node) awaitWritable(ctx context.Context) error {
	if n.writable.Load() && !n.closing.Load() {
		return nil // the hot path: no timers
	}
	deadline := time.NewTimer(n.cfg.LeaderWait)
	defer deadline.Stop()
	poll := time.NewTicker(20 * time.Millisecond)
	defer poll.Stop()
	for {
		if n.closing.Load() {
			return ErrShuttingDown
		}
		if err := n.rfsm.failure(); err != nil {
			return err
		}
		if n.writable.Load() {
			return nil
		}
		if n.raft.State() != raft.Leader {
			if id, addr := n.Leader(); id != "" && id != n.id && addr != "" {
				return &NotLeaderError{LeaderID: id, LeaderRPCAddr: addr}
			}
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("wait for a leader: %w", ctx.Err())
		case <-n.stop:
			return ErrShuttingDown
		case <-deadline.C:
			return fmt.Errorf("%w: none usable within %s", ErrNoLeader, n.cfg.LeaderWait)
		case <-poll.C:
		}
	}
}

// Apply replicates one command and returns its result. On the leader the
// command is group-committed with other callers' commands into one log
// entry. On a follower it returns *NotLeaderError; with no leader within
// Config.LeaderWait an error matching ErrNoLeader. When ctx ends after the
// command was handed to raft, the command may still be applied.
func (n *Node) Apply(ctx context.Context, cmd fsm.Command) (fsm.Result, error) {
	data, err := fsm.EncodeCommand(cmd)
	if err != nil {
		return fsm.Result{}, fmt.Errorf("encode %T: %w", cmd, err)
	}
	// A write the node took while it led, and that leadership moved before
	// it reached the log (errNotAppended), goes to the next leader as one
	// arriving now would: awaitWritable names it (*NotLeaderError) or
	// waits for it. A few rounds at most: leadership does not move often.
	for round := 1; ; round++ {
		if err := n.awaitWritable(ctx); err != nil {
			return fsm.Result{}, err
		}
		res, err := n.batch.submit(ctx, data)
		if round == maxApplyRounds || !errors.Is(err, errNotAppended) {
			return res, err
		}
	}
}

// maxApplyRounds bounds how often Apply sends a write again that was not
// appended because leadership moved.
const maxApplyRounds = 3

// LinearizableRead returns once this node has confirmed it still leads
// and has applied everything committed when the read began, so a read of
// the FSM after it sees every write acknowledged before it. On a follower
// it returns *NotLeaderError. On a node whose state machine has failed it
// returns the failure (ErrStateMachineFailed): its state will not reach
// the commit index, also when the failure comes while the read waits.
func (n *Node) LinearizableRead(ctx context.Context) error {
	if err := n.rfsm.failure(); err != nil {
		return err
	}
	if err := n.awaitWritable(ctx); err != nil {
		return err
	}
	readIndex := n.raft.CommitIndex()
	if err := n.waitFuture(ctx, n.raft.VerifyLeader()); err != nil {
		return n.mapRaftErr("confirm leadership", err)
	}
	for n.applied.Load() < readIndex {
		ch := n.AppliedNotify()
		if n.applied.Load() >= readIndex {
			break
		}
		if err := n.rfsm.failure(); err != nil { // recorded before ch is closed
			return fmt.Errorf("wait for apply of index %d: %w", readIndex, err)
		}
		select {
		case <-ch:
		case <-ctx.Done():
			return fmt.Errorf("wait for apply of index %d: %w", readIndex, ctx.Err())
		case <-n.stop:
			return ErrShuttingDown
		}
	}
	return nil
}

// waitFuture waits for a raft future without outliving ctx or raft.
// raft does not resolve every future when it stops: one it had queued but
// not taken stays unresolved (VerifyLeader's and LeadershipTransfer's
// channels are buffered), so a linearizable read that asked just before a
// failed state machine stopped raft waited until its deadline. The
// goroutine waiting for such a future stays.
func (n *Node) waitFuture(ctx context.Context, f raft.Future) error {
	done := make(chan error, 1)
	go func() { done <- f.Error() }()
	select {
	case err := <-done:
		return err
	case <-ctx.Done():
		return ctx.Err()
	case <-n.raftStopped:
		select {
		case err := <-done:
			return err
		default:
			return raft.ErrRaftShutdown
		}
	}
}

func (n *Node) mapRaftErr(doing string, err error) error {
	switch {
	case err == nil:
		return nil
	case errors.Is(err, raft.ErrNotLeader):
		return n.notLeader()
	case errors.Is(err, raft.ErrLeadershipLost):
		return fmt.Errorf("%s: %w: %w: %w", doing, ErrNoLeader, ErrOutcomeUnknown, err)
	case errors.Is(err, raft.ErrLeadershipTransferInProgress):
		// Refused before anything was done: the outcome is known.
		return fmt.Errorf("%s: %w: a leadership transfer is under way: %w", doing, ErrNoLeader, err)
	case errors.Is(err, raft.ErrRaftShutdown):
		if failure := n.rfsm.failure(); failure != nil {
			// Raft stopped because the state machine failed
			// (leaveRaftAfterFailure): that is what the caller must hear.
			return fmt.Errorf("%s: %w", doing, failure)
		}
		return fmt.Errorf("%s: %w", doing, ErrShuttingDown)
	case errors.Is(err, raft.ErrEnqueueTimeout):
		return fmt.Errorf("%s: %w: %w", doing, ErrNoLeader, err)
	}
	return fmt.Errorf("%s: %w", doing, err)
}

// Status is a point-in-time view of this node and the cluster as it sees it.
type Status struct {
	NodeID            string
	RaftAddr          string
	GossipAddr        string
	RPCAddr           string
	State             string // Leader, Follower, Candidate, Shutdown
	Ready             bool
	NotReadyReason    string // why not Ready ("" when ready)
	LeaderID          string
	LeaderRPCAddr     string
	Term              uint64
	CommitIndex       uint64
	AppliedIndex      uint64
	LastLogIndex      uint64
	LastSnapshotIndex uint64
	LastContact       time.Time // zero on the leader, or when never contacted
	// ClusterID is the id this node's cluster announces in gossip
	// (clusterid.go); "" while it has none (a node not yet in a cluster, or
	// a cluster formed by a build before cluster ids).
	ClusterID string
	Members   []Member
}

// Member is one server of the raft configuration or of the gossip pool.
type Member struct {
	ID       string
	RaftAddr string
	RPCAddr  string
	Suffrage string // voter, nonvoter, or none (gossiping, not in raft)
	Gossip   string // alive, suspect, dead, left, or unknown
	Leader   bool
}

// Status reports this node's view.
func (n *Node) Status() Status {
	st := Status{
		NodeID:       n.id,
		RaftAddr:     n.raftAddr,
		GossipAddr:   n.gossipAddr,
		RPCAddr:      n.cfg.RPCAddr,
		State:        n.raft.State().String(),
		AppliedIndex: n.applied.Load(),
		Term:         n.raft.CurrentTerm(),
		CommitIndex:  n.raft.CommitIndex(),
		LastLogIndex: n.raft.LastIndex(),
		ClusterID:    n.clusterID(),
	}
	st.LeaderID, st.LeaderRPCAddr = n.Leader()
	st.Ready, st.NotReadyReason = n.Readiness()
	if s, ok := n.raft.Stats()["last_snapshot_index"]; ok {
		st.LastSnapshotIndex, _ = strconv.ParseUint(s, 10, 64)
	}
	if n.raft.State() != raft.Leader {
		st.LastContact = n.raft.LastContact()
	}
	seen := map[string]bool{}
	if f := n.raft.GetConfiguration(); f.Error() == nil {
		for _, s := range f.Configuration().Servers {
			id := string(s.ID)
			seen[id] = true
			m := Member{ID: id, RaftAddr: string(s.Address), Suffrage: "voter", Gossip: "unknown", Leader: id == st.LeaderID}
			if s.Suffrage != raft.Voter {
				m.Suffrage = "nonvoter"
			}
			n.fillGossip(&m)
			st.Members = append(st.Members, m)
		}
	}
	for _, mi := range n.members.list() {
		if seen[mi.meta.ID] {
			continue
		}
		m := Member{ID: mi.meta.ID, RaftAddr: mi.meta.Raft, Suffrage: "none"}
		n.fillGossip(&m)
		st.Members = append(st.Members, m)
	}
	return st
}

func (n *Node) fillGossip(m *Member) {
	if m.ID == n.id {
		m.RPCAddr, m.Gossip = n.cfg.RPCAddr, "alive"
		return
	}
	if mi, ok := n.members.get(m.ID); ok {
		m.RPCAddr, m.Gossip = mi.meta.RPC, stateName(mi.state)
	}
}

// SaveSnapshot streams a consistent snapshot of the state to w, in the
// format RestoreSnapshot and raft's snapshots use. It needs no leader.
func (n *Node) SaveSnapshot(ctx context.Context, w io.Writer) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	s, index, err := n.rfsm.snapshot()
	if err != nil {
		return fmt.Errorf("save snapshot: %w", err)
	}
	defer s.Release()
	if index == 0 {
		return fmt.Errorf("save snapshot: %w", ErrNothingApplied)
	}
	if _, err := writeSnapshotHeader(w, index); err != nil {
		return fmt.Errorf("save snapshot header: %w", err)
	}
	if _, err := s.WriteTo(ctxWriter{ctx, n.stop, w}); err != nil {
		return fmt.Errorf("save snapshot at index %d: %w", index, err)
	}
	return nil
}

// ctxWriter stops a long stream once its context ends or the node shuts
// down.
type ctxWriter struct {
	ctx  context.Context
	stop <-chan struct{}
	w    io.Writer
}

func (c ctxWriter) Write(p []byte) (int, error) {
	if err := c.ctx.Err(); err != nil {
		return 0, err
	}
	select {
	case <-c.stop:
		return 0, ErrShuttingDown
	default:
	}
	return c.w.Write(p)
}

// RestoreSnapshot replaces the whole cluster's state with a snapshot saved
// by SaveSnapshot (disaster recovery into a new cluster). Leader only. The
// raft index moves past both the cluster's log and the snapshot's own
// applied index, so the state never skips entries that follow.
func (n *Node) RestoreSnapshot(ctx context.Context, r io.Reader) error {
	if err := n.awaitWritable(ctx); err != nil {
		return err
	}
	index, err := readSnapshotHeader(r)
	if err != nil {
		return err
	}
	// raft.Restore needs the exact size up front, so the stream is spooled
	// to a file in the data dir first (a snapshot may not fit in memory).
	tmp, err := os.CreateTemp(n.cfg.DataDir, "restore-*.snap")
	if err != nil {
		return fmt.Errorf("restore snapshot: spool: %w", err)
	}
	defer os.Remove(tmp.Name())
	defer tmp.Close()
	if _, err := writeSnapshotHeader(tmp, index); err != nil {
		return fmt.Errorf("restore snapshot: spool: %w", err)
	}
	size, err := io.Copy(tmp, ctxReader{ctx, r})
	if err != nil {
		return fmt.Errorf("restore snapshot: spool: %w", err)
	}
	if _, err := tmp.Seek(0, io.SeekStart); err != nil {
		return fmt.Errorf("restore snapshot: spool: %w", err)
	}
	meta := &raft.SnapshotMeta{Version: raft.SnapshotVersionMax, Index: index, Term: n.raft.CurrentTerm(), Size: size + int64(snapshotHeaderLen)}
	if err := n.raft.Restore(meta, tmp, n.cfg.ApplyTimeout); err != nil {
		return n.mapRaftErr("restore snapshot", err)
	}
	n.logger.Warn("restored the cluster's state from a snapshot", "snapshot_applied_index", index)
	// Move the applied index past raft's restore index, for reads.
	if _, err := n.batch.submit(ctx, mustEncode(fsm.Tick{})); err != nil {
		return fmt.Errorf("tick after restore: %w", err)
	}
	return nil
}

// ContextReader reads r until ctx is done, then fails with ctx's error:
// every later read, and one that was under way when ctx ended (and failed
// for it), so a long copy of a snapshot stops when its caller gives up.
func ContextReader(ctx context.Context, r io.Reader) io.Reader { return ctxReader{ctx, r} }

type ctxReader struct {
	ctx context.Context
	r   io.Reader
}

func (c ctxReader) Read(p []byte) (int, error) {
	if err := c.ctx.Err(); err != nil {
		return 0, err
	}
	n, err := c.r.Read(p)
	if err != nil && c.ctx.Err() != nil {
		return n, c.ctx.Err()
	}
	return n, err
}

func mustEncode(c fsm.Command) []byte {
	b, err := fsm.EncodeCommand(c)
	if err != nil {
		// Encoding a fixed, field-less command cannot fail unless fsm is
		// broken; the callers turn a nil entry into an error result.
		return nil
	}
	return b
}

// Shutdown stops the node. A leader first hands leadership to another
// voter; queued writes fail with ErrShuttingDown or *NotLeaderError (so
// callers can retry on the new leader); writes already in raft finish or
// fail with ErrOutcomeUnknown. Shutdown waits for every goroutine it
// started, bounded by ctx.
func (n *Node) Shutdown(ctx context.Context) error {
	n.shutOnce.Do(func() { n.shutErr = n.shutdown(ctx) })
	return n.shutErr
}

func (n *Node) shutdown(ctx context.Context) error {
	n.logger.Info("shutting down")
	var errs []error
	if n.raft.State() == raft.Leader && n.otherVoters() > 0 {
		// New writes wait for the next leader, and go on waiting if the
		// transfer fails: this node is stopping.
		if err := n.handOver(ctx, n.raft.LeadershipTransfer, false); err != nil {
			n.logger.Warn("leadership transfer failed; shutting down as leader", "err", err)
		} else {
			n.logger.Info("handed leadership over")
		}
	}
	n.closing.Store(true)
	close(n.stop)
	n.batch.drain(ctx) // in-flight entries resolve; queued ones fail clearly
	if n.cfg.LeaveOnShutdown {
		if err := n.leaveGossip(); err != nil {
			errs = append(errs, fmt.Errorf("leave gossip: %w", err))
		}
	}
	if err := n.stopRaft(); err != nil { // maybe stopped already (leaveRaftAfterFailure)
		errs = append(errs, fmt.Errorf("stop raft: %w", err))
	}
	close(n.applierStop)
	<-n.applierDone
	if err := n.ml.Shutdown(); err != nil {
		errs = append(errs, fmt.Errorf("stop gossip: %w", err))
	}
	done := make(chan struct{})
	go func() { n.wg.Wait(); close(done) }()
	select {
	case <-done:
	case <-ctx.Done():
		errs = append(errs, fmt.Errorf("wait for node goroutines: %w", ctx.Err()))
	}
	// Released, the data dir may be another process's at once: nothing of
	// this node may write in it after that.
	keptStopped := n.stopKeepingMembers()
	if err := n.transport.Close(); err != nil {
		errs = append(errs, fmt.Errorf("close raft transport: %w", err))
	}
	if err := n.store.Close(); err != nil {
		errs = append(errs, fmt.Errorf("close raft log: %w", err))
	}
	if n.state != nil {
		// A snapshot stream holds the state open until its writer returns,
		// and a client that stopped reading can hold that write for ever:
		// the wait is bounded by ctx like the rest. A state left open is
		// not marked clean, so the next start treats it as after a crash.
		closed := make(chan error, 1)
		n.stateClosed = make(chan struct{})
		go func() {
			defer close(n.stateClosed)
			closed <- n.state.close()
		}()
		select {
		case err := <-closed:
			if err != nil {
				errs = append(errs, fmt.Errorf("close state: %w", err))
			}
		case <-ctx.Done():
			errs = append(errs, fmt.Errorf("close state: not closed within the shutdown's time (a snapshot stream may still read it): %w", ctx.Err()))
			// The dir stays locked until the state is closed after all.
			go func() { <-n.stateClosed; <-keptStopped; _ = n.unlockDir() }()
			n.logger.Info("stopped")
			return errors.Join(errs...)
		}
	}
	if !isClosed(keptStopped) {
		select {
		case <-keptStopped:
		case <-ctx.Done():
			errs = append(errs, fmt.Errorf("release data dir lock: a write of %s is still in progress; the lock goes once it ends: %w", keptMembersFile, ctx.Err()))
			go func() { <-keptStopped; _ = n.unlockDir() }()
			n.logger.Info("stopped")
			return errors.Join(errs...)
		}
	}
	if err := n.unlockDir(); err != nil {
		errs = append(errs, fmt.Errorf("release data dir lock: %w", err))
	}
	n.logger.Info("stopped")
	return errors.Join(errs...)
}

func (n *Node) otherVoters() int {
	f := n.raft.GetConfiguration()
	if f.Error() != nil {
		return 0
	}
	c := 0
	for _, s := range f.Configuration().Servers {
		if s.Suffrage == raft.Voter && string(s.ID) != n.id {
			c++
		}
	}
	return c
}
