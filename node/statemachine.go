package node

import (
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"sync"
	"sync/atomic"
	"time"

	"github.com/creditd/creditd/fsm"
	"github.com/hashicorp/raft"
)

// StateMachine is what node replicates into. *fsm.FSM satisfies it through
// FSMStateMachine; NewNoopStateMachine measures raft alone.
type StateMachine interface {
	// Apply applies entries in order; results[i][j] is command j of entry
	// i. Entries at or below AppliedIndex are skipped. An error is a
	// storage failure after which the state machine is not used again.
	// If answer is not nil, Apply may hand it the results once, before it
	// has stored them (fsm.FSM.ApplyAnswering): the leader answers its
	// callers while the state commits.
	Apply(entries []fsm.Entry, answer func([][]fsm.Result)) ([][]fsm.Result, error)
	AppliedIndex() uint64
	// LastTime is the log time of the last applied entry.
	LastTime() fsm.Timestamp
	// Snapshot starts a consistent snapshot, safe to stream while applies
	// go on.
	Snapshot() (StateSnapshot, error)
	// Restore replaces the whole state, applied index included.
	Restore(r io.Reader) error
}

// StateSnapshot is a consistent copy being streamed.
type StateSnapshot interface {
	WriteTo(w io.Writer) (int64, error)
	Release()
}

// FSMStateMachine adapts *fsm.FSM to StateMachine.
type FSMStateMachine struct{ F *fsm.FSM }

func (s FSMStateMachine) Apply(e []fsm.Entry, answer func([][]fsm.Result)) ([][]fsm.Result, error) {
	return s.F.ApplyAnswering(e, answer)
}
func (s FSMStateMachine) AppliedIndex() uint64      { return s.F.AppliedIndex() }
func (s FSMStateMachine) LastTime() fsm.Timestamp   { return s.F.LastTime() }
func (s FSMStateMachine) Restore(r io.Reader) error { return s.F.Restore(r) }
func (s FSMStateMachine) Snapshot() (StateSnapshot, error) {
	snap, err := s.F.Snapshot()
	if err != nil {
		return nil, err
	}
	return snap, nil
}

// FSM is the fsm applied into: a Config.StateMachine with this method (an
// FSMStateMachine, or a type that embeds one to wrap its Apply) is read
// through Node.FSM.
func (s FSMStateMachine) FSM() *fsm.FSM { return s.F }

// NoopStateMachine decodes nothing and keeps only its applied index: the
// ceiling of replication plus fsync. Each entry yields nil results; the
// batcher answers each caller with an empty fsm.Result.
type NoopStateMachine struct {
	applied  atomic.Uint64
	perEvent time.Duration
}

// NewNoopStateMachine returns a state machine that applies nothing.
func NewNoopStateMachine() *NoopStateMachine { return &NoopStateMachine{} }

// NewCostlyNoopStateMachine returns a no-op state machine that decodes each
// entry and then spends perEvent of CPU per usage event in it (and per
// other command) before it counts the entry applied. It stands for a state
// machine whose apply costs that much, to find the apply cost a cluster's
// throughput and latency targets allow (creditd bench --noop-event-cost).
func NewCostlyNoopStateMachine(perEvent time.Duration) *NoopStateMachine {
	return &NoopStateMachine{perEvent: perEvent}
}

func (s *NoopStateMachine) Apply(entries []fsm.Entry, _ func([][]fsm.Result)) ([][]fsm.Result, error) {
	if s.perEvent > 0 {
		events := 0
		for _, e := range entries {
			if len(e.Data) == 0 { // as fsm: the leader's empty entry of its term
				continue
			}
			_, cmds, err := fsm.DecodeEntry(e.Data)
			if err != nil {
				return nil, fmt.Errorf("decode entry %d: %w", e.Index, err)
			}
			for _, c := range cmds {
				if b, ok := c.(fsm.BurnUsage); ok {
					events += len(b.Events)
				} else {
					events++
				}
			}
		}
		spendCPU(time.Duration(events) * s.perEvent)
	}
	if len(entries) > 0 {
		s.applied.Store(entries[len(entries)-1].Index)
	}
	return make([][]fsm.Result, len(entries)), nil
}
func (s *NoopStateMachine) AppliedIndex() uint64    { return s.applied.Load() }
func (s *NoopStateMachine) LastTime() fsm.Timestamp { return 0 }
func (s *NoopStateMachine) Snapshot() (StateSnapshot, error) {
	return noopSnapshot(s.applied.Load()), nil
}
func (s *NoopStateMachine) Restore(r io.Reader) error {
	var b [8]byte
	if _, err := io.ReadFull(r, b[:]); err != nil {
		return fmt.Errorf("restore noop state: %w", err)
	}
	s.applied.Store(binary.BigEndian.Uint64(b[:]))
	return nil
}

type noopSnapshot uint64

func (s noopSnapshot) WriteTo(w io.Writer) (int64, error) {
	var b [8]byte
	binary.BigEndian.PutUint64(b[:], uint64(s))
	n, err := w.Write(b[:])
	return int64(n), err
}
func (noopSnapshot) Release() {}

// raftFSM adapts a StateMachine to raft.BatchingFSM.
//
// raft hands the FSM one batch per commit and waits for it before the next;
// with several entries committing at slightly different times that would
// be one state transaction and one fsync per commit, in series. Instead
// ApplyBatch queues the batch and returns at once with pending responses,
// and one applier goroutine merges whatever batches are queued into one
// StateMachine.Apply (one transaction, one fsync). Order is kept (one
// queue, one applier). Everything that must see all delivered entries
// applied — snapshots, restores, a new leader's catch-up — calls flush
// first.
type raftFSM struct {
	sm StateMachine
	// onApplied is called with the highest index applied, after each apply.
	onApplied func(index uint64)

	queue chan *applyJob
	// gatherFor is how long the applier gathers committed batches before
	// applying them together (nanoseconds; 0 = apply what is queued at
	// once). Followers set it (Config.FollowerApplyWait), the leader never:
	// its callers wait for the results.
	gatherFor atomic.Int64
	// hurry ends a gathering wait at once (buffered 1): flush, and a node
	// taking the lead, need everything applied now.
	hurry chan struct{}
	// answerEarly hands results to their waiters once computed, before the
	// state commits (StateMachine.Apply's answer). The leader sets it: its
	// callers wait. A follower's results wait for nobody, and answering
	// early would only make its reads wait for its commits.
	answerEarly atomic.Bool

	submitted atomic.Uint64 // jobs queued (raft's FSM goroutine only writes)
	completed atomic.Uint64 // jobs applied
	doneMu    sync.Mutex
	doneCh    chan struct{} // closed and replaced when completed moves

	mu sync.Mutex // serializes use of sm
	// failed is the first storage failure; afterwards nothing is applied.
	// Set under mu; atomic so that readiness probes never wait behind a
	// long apply or restore.
	failed atomic.Pointer[error]
	// onFailed, if set, is called (with mu held) each time a failure is
	// recorded, after failure() returns it: the node wakes what waits for
	// an apply, which will not come.
	onFailed func(err error)
}

// Bounds of one merged apply.
const (
	applyQueueLen     = 4096
	maxMergedEntries  = 8192
	maxMergedJobBatch = 256
	// maxMergedBytes bounds the entry bytes of one StateMachine.Apply (one
	// state transaction); a larger merge, even of one raft batch, is
	// applied in several. The heap of a transaction follows the distinct
	// pages it dirties: at 10⁶ customers one Apply of 8 entries of 1,000
	// usage events (≈ 50 KB each) peaked at 139 MB of heap, 32 at 432 MB,
	// 64 at 732 MB, and a follower catching up is handed up to 256 entries
	// at once. 512 KiB is ≈ 10 such entries (≈ 25 % less apply time per
	// event than one at a time) or thousands of small ones, which is where
	// merging pays most.
	maxMergedBytes = 512 << 10
)

type applyJob struct {
	entries []fsm.Entry
	pending *pendingApply
}

// size is the bytes of the job's commands.
func (j *applyJob) size() int {
	n := 0
	for _, e := range j.entries {
		n += len(e.Data)
	}
	return n
}

// pendingApply is the response raft hands back through
// ApplyFuture.Response() for every log of one batch; the results are there
// once done is closed.
type pendingApply struct {
	done    chan struct{}
	results [][]fsm.Result // per entry of the batch
	err     error
}

// pendingEntry is one log's response: its batch and its place in it.
type pendingEntry struct {
	p *pendingApply
	i int
}

// wait returns the entry's results once applied, once: it drops the
// batch's reference to them. raft's log cache holds a pointer into the
// leader's future of each cached entry, and the future holds this response,
// so answered results stayed reachable for as long as their entry was cached:
// 87 MB of usage results on the leader of the 10⁶-customer run (512 cached
// entries of 1,000 events), ten times that with 10,000-event batches.
func (e pendingEntry) wait() ([]fsm.Result, error) {
	<-e.p.done
	if e.p.err != nil {
		return nil, e.p.err
	}
	r := e.p.results[e.i]
	e.p.results[e.i] = nil // each waiter clears only its own slot
	return r, nil
}

var _ raft.BatchingFSM = (*raftFSM)(nil)

func newRaftFSM(sm StateMachine, onApplied func(uint64)) *raftFSM {
	return &raftFSM{sm: sm, onApplied: onApplied, queue: make(chan *applyJob, applyQueueLen), hurry: make(chan struct{}, 1),
		doneCh: make(chan struct{})}
}

// setLeading switches the applier between the leader's ways (apply at
// once, answer as soon as results are computed) and a follower's (gather
// for followerWait, answer after the commit).
func (f *raftFSM) setLeading(leading bool, followerWait time.Duration) {
	f.answerEarly.Store(leading)
	if leading {
		f.setGather(0)
	} else {
		f.setGather(followerWait)
	}
}

// setGather sets how long the applier gathers batches before applying
// them (0: at once, and ends a wait in progress).
func (f *raftFSM) setGather(d time.Duration) {
	f.gatherFor.Store(int64(max(d, 0)))
	if d <= 0 {
		f.hurryUp()
	}
}

func (f *raftFSM) hurryUp() {
	select {
	case f.hurry <- struct{}{}:
	default: // one pending is enough
	}
}

func (f *raftFSM) ApplyBatch(logs []*raft.Log) []any {
	entries := make([]fsm.Entry, len(logs))
	for i, l := range logs {
		entries[i].Index = l.Index
		// Configuration entries carry no command but still move the
		// applied index, so linearizable reads see them as applied.
		if l.Type == raft.LogCommand {
			entries[i].Data = l.Data
		}
	}
	p := &pendingApply{done: make(chan struct{})}
	f.submitted.Add(1)
	f.queue <- &applyJob{entries: entries, pending: p} // bounded: backpressure on raft
	resps := make([]any, len(logs))
	for i := range resps {
		resps[i] = pendingEntry{p: p, i: i}
	}
	return resps
}

func (f *raftFSM) Apply(l *raft.Log) any { return f.ApplyBatch([]*raft.Log{l})[0] }

// run is the applier goroutine; it returns once stop is closed and the
// queue is empty (raft has stopped delivering by then).
func (f *raftFSM) run(stop <-chan struct{}) {
	for {
		var first *applyJob
		select {
		case first = <-f.queue:
		case <-stop:
			select {
			case first = <-f.queue:
			default:
				return
			}
		}
		jobs := []*applyJob{first}
		n, size := len(first.entries), first.size()
		full := func() bool {
			return len(jobs) >= maxMergedJobBatch || n >= maxMergedEntries || size >= maxMergedBytes
		}
		add := func(j *applyJob) {
			jobs = append(jobs, j)
			n += len(j.entries)
			size += j.size()
		}
		gatherQueued := func() {
			for !full() {
				select {
				case j := <-f.queue:
					add(j)
				default:
					return
				}
			}
		}
		gatherQueued()
		// A follower waits a little for more: applying several entries in
		// one state transaction costs less per event than one at a time
		// (fewer commits, each dirty page written once), and on a host
		// the replicas share, a follower that applies later leaves the
		// cores to the leader, whose callers are waiting. Its reads trail
		// by at most the wait.
		if d := time.Duration(f.gatherFor.Load()); d > 0 && !full() {
			t := time.NewTimer(d)
		wait:
			for !full() {
				select {
				case j := <-f.queue:
					add(j)
				case <-t.C:
					break wait
				case <-f.hurry:
					break wait
				case <-stop:
					break wait
				}
			}
			t.Stop()
			gatherQueued() // what a hurry or the timer raced with
		}
		f.applyJobs(jobs, n)
	}
}

func (f *raftFSM) applyJobs(jobs []*applyJob, n int) {
	defer func() {
		f.completed.Add(uint64(len(jobs)))
		f.doneMu.Lock()
		close(f.doneCh)
		f.doneCh = make(chan struct{})
		f.doneMu.Unlock()
	}()
	f.mu.Lock()
	defer f.mu.Unlock()
	answered := 0 // jobs whose waiters have their results
	failAll := func(err error) {
		for _, j := range jobs[answered:] {
			j.pending.err = err
			close(j.pending.done)
		}
	}
	if failed := f.failure(); failed != nil {
		failAll(failed)
		return
	}
	entries := jobs[0].entries
	if len(jobs) > 1 {
		entries = make([]fsm.Entry, 0, n)
		for _, j := range jobs {
			entries = append(entries, j.entries...)
		}
	}
	// computed has the results of entries[:upTo]; answer hands each job
	// whose entries all lie there its results and wakes its waiters.
	computed := make([][]fsm.Result, len(entries))
	jobEnd := len(jobs[0].entries) // entries up to the end of jobs[answered]
	answer := func(upTo int) {
		for answered < len(jobs) && jobEnd <= upTo {
			j := jobs[answered]
			j.pending.results = computed[jobEnd-len(j.entries) : jobEnd]
			close(j.pending.done)
			answered++
			if answered < len(jobs) {
				jobEnd += len(jobs[answered].entries)
			}
		}
	}
	if err := f.applyBounded(entries, computed, answer); err != nil {
		// Keep the state what is on disk: a restart re-applies from the
		// state's own applied index. Applying later entries over a gap
		// would diverge from the other replicas. Results already handed
		// out stand: every replica computes the same from the same log.
		failAll(f.fail(fmt.Errorf("%w: apply entries %d..%d: %w", ErrStateMachineFailed, entries[0].Index, entries[len(entries)-1].Index, err)))
		return
	}
	f.onApplied(entries[len(entries)-1].Index)
	answer(len(entries)) // those not answered early: a follower's, or a state machine's that never does
}

// applyBounded applies entries in order, in as few StateMachine.Apply calls
// as maxMergedBytes allows (an entry larger than it goes alone), putting
// their results in results (one slot per entry) and calling answer(upTo)
// whenever results[:upTo] are final: on the leader as soon as the state
// machine has computed them, before it commits. On an error, the calls
// before it have been applied: the state is still a prefix of the log, and
// a restart re-applies from its applied index.
func (f *raftFSM) applyBounded(entries []fsm.Entry, results [][]fsm.Result, answer func(upTo int)) error {
	early := f.answerEarly.Load()
	for start := 0; start < len(entries); {
		end, size := start+1, len(entries[start].Data)
		for end < len(entries) && size+len(entries[end].Data) <= maxMergedBytes {
			size += len(entries[end].Data)
			end++
		}
		part := entries[start:end]
		var answerPart func([][]fsm.Result)
		answeredPart := false
		if early {
			answerPart = func(rs [][]fsm.Result) {
				if len(rs) == len(part) && !answeredPart { // else Apply's own check fails below
					answeredPart = true
					copy(results[start:end], rs)
					answer(end)
				}
			}
		}
		rs, err := f.sm.Apply(part, answerPart)
		if err == nil && len(rs) != len(part) {
			err = fmt.Errorf("state machine returned %d results for %d entries", len(rs), len(part))
		}
		if err != nil {
			return err
		}
		// Answered slots are the waiters' now (each clears its own); the
		// rest are answered once the applied index has moved: a
		// follower's (nobody waits there but raft) and those of a state
		// machine that does not answer early.
		if !answeredPart {
			copy(results[start:end], rs)
		}
		start = end
	}
	return nil
}

// flush waits until every batch queued so far is applied (or ctx-less: it
// relies on the applier running, which it does until after raft stops).
func (f *raftFSM) flush(stop <-chan struct{}) bool {
	target := f.submitted.Load()
	for {
		f.doneMu.Lock()
		ch := f.doneCh
		f.doneMu.Unlock()
		if f.completed.Load() >= target {
			return true
		}
		// Again on every wake: a batch counted in target may reach the
		// queue only after the applier took the last hurry.
		f.hurryUp()
		select {
		case <-ch:
		case <-stop:
			return false
		}
	}
}

func (f *raftFSM) failure() error {
	if p := f.failed.Load(); p != nil {
		return *p
	}
	return nil
}

// fail records err as the state machine's failure (nil clears it) and
// returns it. Called with mu held.
func (f *raftFSM) fail(err error) error {
	if err == nil {
		f.failed.Store(nil)
		return nil
	}
	f.failed.Store(&err)
	if f.onFailed != nil {
		f.onFailed(err)
	}
	return err
}

func (f *raftFSM) Snapshot() (raft.FSMSnapshot, error) {
	// raft names the snapshot after the last index it delivered; the
	// state must hold all of it.
	f.flush(nil)
	s, index, err := f.snapshot()
	if err != nil {
		return nil, err
	}
	return &raftSnapshot{s: s, index: index}, nil
}

// snapshot starts a state snapshot together with the applied index it
// holds; holding mu keeps an apply from slipping in between.
func (f *raftFSM) snapshot() (StateSnapshot, uint64, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if failed := f.failure(); failed != nil {
		return nil, 0, failed
	}
	s, err := f.sm.Snapshot()
	if err != nil {
		return nil, 0, fmt.Errorf("start state snapshot: %w", err)
	}
	return s, f.sm.AppliedIndex(), nil
}

func (f *raftFSM) Restore(rc io.ReadCloser) error {
	defer rc.Close()
	f.flush(nil)
	index, err := readSnapshotHeader(rc)
	if err != nil {
		return err
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	if err := f.sm.Restore(rc); err != nil {
		// A half-restored state is unusable; stop applying until restart.
		return f.fail(fmt.Errorf("%w: restore snapshot: %w", ErrStateMachineFailed, err))
	}
	if got := f.sm.AppliedIndex(); got != index {
		return f.fail(fmt.Errorf("%w: restored snapshot says applied index %d, state says %d", ErrStateMachineFailed, index, got))
	}
	f.fail(nil)
	f.onApplied(index)
	return nil
}

// Snapshots (raft's and the ones operators save) are framed with a header
// naming the state's applied index, so a restart can tell whether its state
// file already holds a snapshot without reading it, and a restore into a new
// cluster can place the state past the index it already covers.
const snapshotMagic = "CRDSNAP1"

const snapshotHeaderLen = len(snapshotMagic) + 8

func writeSnapshotHeader(w io.Writer, index uint64) (int64, error) {
	var b [snapshotHeaderLen]byte
	copy(b[:], snapshotMagic)
	binary.BigEndian.PutUint64(b[len(snapshotMagic):], index)
	n, err := w.Write(b[:])
	return int64(n), err
}

func readSnapshotHeader(r io.Reader) (uint64, error) {
	var b [snapshotHeaderLen]byte
	if _, err := io.ReadFull(r, b[:]); err != nil {
		return 0, fmt.Errorf("read snapshot header: %w", err)
	}
	if string(b[:len(snapshotMagic)]) != snapshotMagic {
		return 0, fmt.Errorf("read snapshot header: not a creditd snapshot (magic %q)", b[:len(snapshotMagic)])
	}
	return binary.BigEndian.Uint64(b[len(snapshotMagic):]), nil
}

type raftSnapshot struct {
	s     StateSnapshot
	index uint64
}

func (s *raftSnapshot) Persist(sink raft.SnapshotSink) error {
	if _, err := writeSnapshotHeader(sink, s.index); err != nil {
		return errors.Join(fmt.Errorf("write snapshot header: %w", err), sink.Cancel())
	}
	if _, err := s.s.WriteTo(sink); err != nil {
		return errors.Join(fmt.Errorf("write snapshot: %w", err), sink.Cancel())
	}
	if err := sink.Close(); err != nil {
		return fmt.Errorf("close snapshot: %w", err)
	}
	return nil
}

func (s *raftSnapshot) Release() { s.s.Release() }
