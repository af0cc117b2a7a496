package node

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"sync"
	"time"

	"github.com/creditd/creditd/fsm"
	"github.com/hashicorp/memberlist"
	"github.com/hashicorp/raft"
)

// leadershipLoop starts the leader's work when this node wins an election
// and stops it (cancelling its context) when leadership goes.
func (n *Node) leadershipLoop() {
	var cancel context.CancelFunc // non-nil while leading
	stopLeading := func() {
		if cancel == nil {
			return
		}
		// Under leaderMu, with the leadership's context: a write pause
		// ending (resumeWrites) cannot make the node writable again after
		// this.
		n.leaderMu.Lock()
		n.writable.Store(false)
		wg := n.leaderWG
		n.leaderCtx, n.leaderWG, n.leaderTasksStarted, n.leaderCaughtUp = nil, nil, false, false
		n.leaderMu.Unlock()
		n.rfsm.setLeading(false, n.cfg.FollowerApplyWait)
		cancel()
		wg.Wait()
		cancel = nil
		n.logger.Info("stopped leading")
	}
	for {
		select {
		case <-n.stop:
			stopLeading()
			return
		case isLeader := <-n.raft.LeaderCh():
			if !isLeader {
				stopLeading()
				continue
			}
			// LeaderCh keeps only the latest value: true while leading means
			// leadership was lost and won again in a newer term, whose
			// earlier entries must be caught up on afresh.
			stopLeading()
			// The leader's callers wait for their results: apply at once,
			// answer before the state commits.
			n.rfsm.setLeading(true, 0)
			ctx, c := context.WithCancel(context.Background())
			cancel = c
			wg := &sync.WaitGroup{}
			n.leaderMu.Lock()
			n.leaderCtx, n.leaderWG = ctx, wg
			n.leaderMu.Unlock()
			wg.Add(1)
			go func() {
				defer wg.Done()
				n.lead(ctx, wg)
			}()
		}
	}
}

// lead prepares a new leader: a barrier makes sure every entry of earlier
// terms is applied, so fsm.LastTime is final and stamps never go back;
// only then are writes accepted and the leader's workers started.
func (n *Node) lead(ctx context.Context, wg *sync.WaitGroup) {
	n.logger.Info("elected leader; catching up before accepting writes")
	for {
		err := n.waitFuture(ctx, n.raft.Barrier(n.cfg.ApplyTimeout))
		if err == nil {
			break
		}
		if ctx.Err() != nil {
			return
		}
		n.logger.Warn("leader barrier failed; retrying", "err", err)
		select {
		case <-ctx.Done():
			return
		case <-time.After(200 * time.Millisecond):
		}
	}
	// The barrier means raft delivered every earlier entry; the applier
	// may still be applying them.
	if !n.rfsm.flush(ctx.Done()) {
		return
	}
	// Not a plain store: leadership may have ended since the flush, and a
	// node left writable after it would stamp writes of a later term
	// before catching up on it.
	if !n.resumeWrites(ctx) {
		return
	}
	n.logger.Info("leading", "applied_index", n.applied.Load(), "last_time", n.sm.LastTime().Time())

	// The first tick also moves the applied index past the term's no-op
	// and the barrier (which the state machine never sees), so
	// linearizable reads can complete without waiting for other traffic.
	n.tick(ctx)
	wg.Add(2)
	go func() { defer wg.Done(); n.tickLoop(ctx) }()
	go func() { defer wg.Done(); n.reconcileLoop(ctx) }()

	// Under the lock that RunOnLeader takes: a task registered meanwhile
	// is started once, here or there.
	n.leaderMu.Lock()
	if n.leaderCtx != ctx {
		n.leaderMu.Unlock()
		return
	}
	tasks := slices.Clone(n.onLeader)
	n.leaderTasksStarted = true
	n.leaderMu.Unlock()
	for _, t := range tasks {
		n.startLeaderTask(ctx, wg, t)
	}
}

func (n *Node) startLeaderTask(ctx context.Context, wg *sync.WaitGroup, t leaderTask) {
	wg.Add(1)
	go func() {
		defer wg.Done()
		n.logger.Info("starting leader task", "task", t.name)
		t.fn(ctx)
		n.logger.Info("leader task stopped", "task", t.name)
	}()
}

// RunOnLeader runs fn, in its own goroutine, each time this node becomes
// a leader ready for writes, and cancels fn's ctx when leadership is lost
// or the node shuts down. fn must return soon after ctx ends; leadership
// changes wait for it.
func (n *Node) RunOnLeader(name string, fn func(ctx context.Context)) {
	t := leaderTask{name: name, fn: fn}
	n.leaderMu.Lock()
	defer n.leaderMu.Unlock()
	n.onLeader = append(n.onLeader, t)
	if n.leaderCtx != nil && n.leaderTasksStarted {
		n.startLeaderTask(n.leaderCtx, n.leaderWG, t)
	}
}

func (n *Node) tickLoop(ctx context.Context) {
	if n.cfg.TickInterval < 0 {
		return
	}
	t := time.NewTicker(n.cfg.TickInterval)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
			n.tick(ctx)
		}
	}
}

func (n *Node) tick(ctx context.Context) {
	data, err := fsm.EncodeCommand(fsm.Tick{})
	if err != nil {
		n.logger.Error("encode tick", "err", err)
		return
	}
	res, err := n.batch.submit(ctx, data)
	switch {
	case err != nil && ctx.Err() == nil:
		n.logger.Warn("tick failed", "err", err)
	case res.Err != nil:
		n.logger.Warn("tick rejected", "err", res.Err)
	}
}

func (n *Node) kickReconcile() {
	select {
	case n.reconcileC <- struct{}{}:
	default:
	}
}

// reconcileLoop brings the raft configuration in line with the gossip pool
// on every gossip event and every few seconds (dead-member timeouts).
func (n *Node) reconcileLoop(ctx context.Context) {
	t := time.NewTicker(2 * time.Second)
	defer t.Stop()
	var foreign foreignMembers
	for {
		if err := n.reconcileLogging(ctx, &foreign); err != nil && ctx.Err() == nil {
			n.logger.Warn("reconcile membership", "err", err)
		}
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		case <-n.reconcileC:
		}
	}
}

// reconcile applies the membership rules:
//   - an alive member not in raft is added: a voter while there are fewer
//     than Config.Voters, else a non-voter;
//   - a member whose raft address changed is re-added with the new one,
//     and so is this node;
//   - a member that left gracefully is removed;
//   - a member dead longer than DeadServerTimeout is removed, but only if
//     the alive voters would still be a quorum of the smaller configuration;
//   - while there are fewer voters than Config.Voters, alive non-voters are
//     promoted.
func (n *Node) reconcile(ctx context.Context) error {
	return n.reconcileLogging(ctx, &foreignMembers{})
}

// reconcileLogging is reconcile, logging the members of other clusters it
// leaves out through foreign (reconcileLoop keeps one per term).
func (n *Node) reconcileLogging(ctx context.Context, foreign *foreignMembers) error {
	f := n.raft.GetConfiguration()
	if err := f.Error(); err != nil {
		return fmt.Errorf("read raft configuration: %w", err)
	}
	servers := map[string]raft.Server{}
	voters := 0
	for _, s := range f.Configuration().Servers {
		servers[string(s.ID)] = s
		if s.Suffrage == raft.Voter {
			voters++
		}
	}
	members := n.members.list()
	// A member whose state machine failed gossips on with its raft stopped
	// (Failed): it is no healthy voter, and none is added or promoted.
	alive := func(id string) bool {
		if id == n.id {
			return true
		}
		mi, ok := n.members.get(id)
		return ok && mi.state == memberlist.StateAlive && !mi.meta.Failed
	}
	timeout := n.cfg.ApplyTimeout
	var errs []error
	change := func(what, id string, fut raft.Future) {
		if err := n.waitFuture(ctx, fut); err != nil {
			errs = append(errs, fmt.Errorf("%s %s: %w", what, id, err))
			return
		}
		n.logger.Info("membership changed", "change", what, "member", id)
	}

	// This node is in no member table of its own (gossip reports the
	// others), so the rule below never corrected its own address: started
	// on another raft address than the configuration names (moved, or a
	// restored data dir served with another address than the restore's),
	// a leader kept the old one as long as it led, and a leadership
	// transfer to it, or the next leader's appends, went there.
	if s, in := servers[n.id]; in && s.Suffrage == raft.Voter && string(s.Address) != n.raftAddr {
		change("update own voter address", n.id, n.raft.AddVoter(s.ID, raft.ServerAddress(n.raftAddr), 0, timeout))
	}

	for _, mi := range members {
		id := mi.meta.ID
		s, in := servers[id]
		switch {
		case mi.state == memberlist.StateAlive && !in:
			if n.recentlyRemoved(id) || mi.meta.Failed {
				// A failed member an operator removed stays out: its raft
				// is stopped until it is restarted, when it announces
				// itself healthy again.
				continue
			}
			if why := n.ofAnotherCluster(mi.meta, true); why != "" {
				foreign.note(n, id, mi.meta, why)
				continue
			}
			if voters < n.cfg.Voters {
				change("add voter", id, n.raft.AddVoter(raft.ServerID(id), raft.ServerAddress(mi.meta.Raft), 0, timeout))
				voters++
			} else {
				change("add non-voter", id, n.raft.AddNonvoter(raft.ServerID(id), raft.ServerAddress(mi.meta.Raft), 0, timeout))
			}
		case mi.state == memberlist.StateAlive && string(s.Address) != mi.meta.Raft:
			if why := n.ofAnotherCluster(mi.meta, false); why != "" {
				foreign.note(n, id, mi.meta, why)
				continue
			}
			if s.Suffrage == raft.Voter {
				change("update voter address", id, n.raft.AddVoter(raft.ServerID(id), raft.ServerAddress(mi.meta.Raft), 0, timeout))
			} else {
				change("update non-voter address", id, n.raft.AddNonvoter(raft.ServerID(id), raft.ServerAddress(mi.meta.Raft), 0, timeout))
			}
		case mi.state == memberlist.StateLeft && in:
			change("remove left member", id, n.raft.RemoveServer(raft.ServerID(id), 0, timeout))
			if s.Suffrage == raft.Voter {
				voters--
			}
		case mi.state == memberlist.StateDead && in && time.Since(mi.since) > n.cfg.DeadServerTimeout:
			if s.Suffrage == raft.Voter {
				healthy := 0
				for sid, srv := range servers {
					if srv.Suffrage == raft.Voter && alive(sid) {
						healthy++
					}
				}
				if healthy < (voters-1)/2+1 {
					n.logger.Warn("not removing a dead voter: the rest would not be a quorum",
						"member", id, "alive_voters", healthy, "voters", voters)
					continue
				}
				voters--
			}
			change("remove dead member", id, n.raft.RemoveServer(raft.ServerID(id), 0, timeout))
		}
	}

	if voters < n.cfg.Voters {
		ids := make([]string, 0, len(servers))
		for id := range servers {
			ids = append(ids, id)
		}
		slices.Sort(ids)
		for _, id := range ids {
			s := servers[id]
			if voters >= n.cfg.Voters {
				break
			}
			if s.Suffrage == raft.Nonvoter && alive(id) {
				change("promote to voter", id, n.raft.AddVoter(s.ID, s.Address, 0, timeout))
				voters++
			}
		}
	}
	return errors.Join(errs...)
}

// ofAnotherCluster says why alive member m, announcing itself, is of
// another cluster than this node's, so that the leader must neither add it
// to its raft configuration nor move a server of its configuration to m's
// raft address, or "" if it is not. Gossip refuses only a node that
// announces another id while this one has an id (otherCluster), so the
// pools still merged, and the leader took the other cluster's node, when:
//   - m announces an id and this node has none: a cluster formed by a
//     build before cluster ids, upgraded, has none (the cluster every
//     deployment had at the upgrade), and a data dir restored from its
//     snapshot on a former member's gossip address, or a --join to
//     another cluster's node, met it;
//   - m is in a raft cluster (InCluster) but announces no id while this
//     node has one (adding only): a node of another cluster running a
//     build before cluster ids. A node of this cluster announces its id
//     once it is in the configuration (adoptClusterID), and a new node
//     is in no raft cluster before it is added, whatever its build.
//
// A member moved to another raft address that announces no id (an older
// build of this cluster) is moved as before.
func (n *Node) ofAnotherCluster(m nodeMeta, adding bool) string {
	if n.cfg.noClusterID {
		return ""
	}
	mine := n.clusterID()
	switch {
	case m.Cluster != "" && m.Cluster != mine:
		if mine == "" {
			return fmt.Sprintf("it is of cluster %s, and this cluster has no id (formed by an older build)", m.Cluster)
		}
		return fmt.Sprintf("it is of cluster %s, and this node of cluster %s", m.Cluster, mine)
	case adding && m.Cluster == "" && m.InCluster && mine != "":
		return fmt.Sprintf("it is in a raft cluster of its own that has no id (a node of an older build), and this node "+
			"is of cluster %s", mine)
	}
	return ""
}

// foreignMembers logs the members reconcile leaves out as of another
// cluster, each once per otherClusterLogEvery: reconcile runs every 2 s.
type foreignMembers struct {
	logged map[string]time.Time // member id and why → last logged
}

func (f *foreignMembers) note(n *Node, id string, m nodeMeta, why string) {
	key := id + "\x00" + why
	now := time.Now()
	if last, ok := f.logged[key]; ok && now.Sub(last) < otherClusterLogEvery {
		return
	}
	if f.logged == nil || len(f.logged) >= maxRefusalsLogged {
		f.logged = map[string]time.Time{}
	}
	f.logged[key] = now
	n.logger.Error("not adding a gossip member of another creditd cluster to the raft configuration: "+why+
		" (logged again in "+otherClusterLogEvery.String()+" if it goes on)",
		"member", id, "raft", m.Raft, "cluster", n.clusterID(), "their_cluster", m.Cluster)
}

func (n *Node) recentlyRemoved(id string) bool {
	n.removedMu.Lock()
	defer n.removedMu.Unlock()
	at, ok := n.removed[id]
	if ok && time.Since(at) > 10*time.Minute {
		delete(n.removed, id)
		return false
	}
	return ok
}

// RemoveMember removes a server from the raft configuration (leader only).
// A removed node leaves the gossip pool (a leader's raft stops; a follower
// notices it is out of the configuration: removedWhileRunning), and this
// leader does not add it back for 10 minutes even if it keeps gossiping.
func (n *Node) RemoveMember(ctx context.Context, id string) error {
	if id == "" {
		return fmt.Errorf("remove member: id is required")
	}
	if !n.IsLeader() {
		return n.notLeader()
	}
	f := n.raft.GetConfiguration()
	if err := f.Error(); err != nil {
		return fmt.Errorf("remove member %s: read configuration: %w", id, err)
	}
	servers := f.Configuration().Servers
	if !slices.ContainsFunc(servers, func(s raft.Server) bool { return string(s.ID) == id }) {
		return fmt.Errorf("remove member %s: %w", id, ErrUnknownMember)
	}
	// Raft refuses a configuration without a voter, with an error that
	// reads like a failure; this says what the operator asked for.
	if !slices.ContainsFunc(servers, func(s raft.Server) bool { return string(s.ID) != id && s.Suffrage == raft.Voter }) {
		return fmt.Errorf("remove member %s: %w", id, ErrLastVoter)
	}
	n.removedMu.Lock()
	n.removed[id] = time.Now()
	n.removedMu.Unlock()
	if err := n.waitFuture(ctx, n.raft.RemoveServer(raft.ServerID(id), 0, n.cfg.ApplyTimeout)); err != nil {
		return n.mapRaftErr("remove member "+id, err)
	}
	n.logger.Info("membership changed", "change", "remove member (operator)", "member", id)
	n.kickReconcile() // promote a non-voter if a voter went
	return nil
}

// ErrUnknownMember is returned for a member id not in the configuration.
var ErrUnknownMember = errors.New("node: no such member")

// ErrLastVoter is returned for the removal of the only voter: the cluster
// would have no one to elect.
var ErrLastVoter = errors.New("node: the only voter cannot be removed")

// TransferLeadership hands leadership to id, or to the most up-to-date
// voter when id is "" (leader only). Writes pause first (handOver): those
// arriving meanwhile wait, then go to the new leader.
func (n *Node) TransferLeadership(ctx context.Context, id string) error {
	if !n.IsLeader() {
		return n.notLeader()
	}
	var transfer func() raft.Future
	switch {
	case id == n.id:
		return fmt.Errorf("transfer leadership to %s: %w", id, ErrTransferToSelf)
	case id == "":
		if n.otherVoters() == 0 {
			return fmt.Errorf("transfer leadership: %w", ErrNoOtherVoter)
		}
		transfer = n.raft.LeadershipTransfer
	default:
		f := n.raft.GetConfiguration()
		if err := f.Error(); err != nil {
			return fmt.Errorf("transfer leadership: read configuration: %w", err)
		}
		i := slices.IndexFunc(f.Configuration().Servers, func(s raft.Server) bool { return string(s.ID) == id })
		if i < 0 {
			return fmt.Errorf("transfer leadership to %s: %w", id, ErrUnknownMember)
		}
		s := f.Configuration().Servers[i]
		if s.Suffrage != raft.Voter {
			return fmt.Errorf("transfer leadership to %s: %w", id, ErrNotAVoter)
		}
		transfer = func() raft.Future { return n.raft.LeadershipTransferToServer(s.ID, s.Address) }
	}
	if err := n.handOver(ctx, transfer, true); err != nil {
		if ctx.Err() != nil {
			return fmt.Errorf("transfer leadership: %w", err)
		}
		return fmt.Errorf("transfer leadership: %w: %w", ErrTransferFailed, err)
	}
	return nil
}

// handOver runs a leadership transfer with writes paused. Raft refuses
// every write while a transfer is under way, and fails the entries still
// in flight when the leader steps down (their outcome unknown to their
// callers), so first no new entry is appended (writable off: new writes
// wait in awaitWritable, then go to the new leader), and the entries in
// flight resolve. When it ends, writes resume (if resume is set) for the
// leadership current then, once caught up, if the transfer failed or that
// leadership began after the transfer did: resumeWrites left a leadership
// caught up during the transfer paused, and nothing else would resume it.
// That leadership may be one raft had granted before the leadership loop
// saw it (handOver then found none), or one won again in a newer term.
func (n *Node) handOver(ctx context.Context, transfer func() raft.Future, resume bool) error {
	n.leaderMu.Lock()
	term := n.leaderCtx
	n.handingOver++
	n.writable.Store(false)
	n.leaderMu.Unlock()
	n.batch.awaitIdle(ctx, n.cfg.ApplyTimeout)
	// A caller that gave up while the entries resolved is told the
	// transfer failed: it is not started behind its back.
	err := ctx.Err()
	if err == nil {
		err = n.waitFuture(ctx, transfer())
	}
	n.leaderMu.Lock()
	defer n.leaderMu.Unlock()
	n.handingOver--
	cur := n.leaderCtx
	// A transfer that succeeded leaves the leadership it handed over
	// paused until the leadership loop sees it end.
	handedOver := err == nil && (term == nil || cur == term)
	if resume && !handedOver && cur != nil && cur.Err() == nil && n.leaderCaughtUp && n.handingOver == 0 && n.rfsm.failure() == nil {
		n.writable.Store(true)
	}
	return err
}

// resumeWrites records that the leadership whose context is term has caught
// up on earlier terms, and makes the node take writes unless leadership is
// being handed over or the state machine has failed (stateMachineFailed
// clears writable under the same lock; the node is leaving raft). It
// reports false, doing nothing, when that leadership has ended
// (stopLeading clears leaderCtx under the same lock).
func (n *Node) resumeWrites(term context.Context) bool {
	n.leaderMu.Lock()
	defer n.leaderMu.Unlock()
	if n.leaderCtx != term || term.Err() != nil {
		return false
	}
	n.leaderCaughtUp = true
	if n.handingOver == 0 && n.rfsm.failure() == nil {
		n.writable.Store(true)
	}
	return true
}
