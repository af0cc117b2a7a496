package node

import (
	"bytes"
	"errors"
	"slices"
	"sync/atomic"
	"testing"
	"time"

	"github.com/creditd/creditd/fsm"
	"github.com/hashicorp/raft"
)

// recordingSM answers each entry with its index and records every Apply.
type recordingSM struct {
	*NoopStateMachine
	calls [][]uint64 // entry indexes per Apply
	sizes []int      // entry bytes per Apply
}

func (r *recordingSM) Apply(entries []fsm.Entry, _ func([][]fsm.Result)) ([][]fsm.Result, error) {
	res := make([][]fsm.Result, len(entries))
	var idx []uint64
	size := 0
	for i, e := range entries {
		idx = append(idx, e.Index)
		size += len(e.Data)
		res[i] = []fsm.Result{{Value: e.Index}}
	}
	r.calls, r.sizes = append(r.calls, idx), append(r.sizes, size)
	return res, nil
}

// runRecordingFSM starts a raftFSM's applier over a recordingSM, stopped
// when the test ends.
func runRecordingFSM(t *testing.T) (*recordingSM, *raftFSM) {
	t.Helper()
	sm := &recordingSM{NoopStateMachine: NewNoopStateMachine()}
	f := newRaftFSM(sm, func(uint64) {})
	stop := make(chan struct{})
	done := make(chan struct{})
	go func() { defer close(done); f.run(stop) }()
	t.Cleanup(func() { close(stop); <-done })
	return sm, f
}

func TestLargeBatchesApplyInBoundedTransactionsWithEveryResultInPlace(t *testing.T) {
	sm, f := runRecordingFSM(t)

	// One raft batch as a lagging follower gets it: 40 entries of 50 KB
	// (1,000-event entries), one larger than the bound, then small ones.
	var logs []*raft.Log
	add := func(n, size int) {
		for range n {
			logs = append(logs, &raft.Log{Index: uint64(len(logs) + 1), Type: raft.LogCommand, Data: bytes.Repeat([]byte{1}, size)})
		}
	}
	add(40, 50<<10)
	add(1, maxMergedBytes+1)
	add(200, 100)
	resps := f.ApplyBatch(logs)
	for i, r := range resps {
		res, err := r.(pendingEntry).wait()
		if err != nil || len(res) != 1 || res[0].Value != logs[i].Index {
			t.Fatalf("entry %d: results %+v, %v; want its own index", logs[i].Index, res, err)
		}
	}
	var order []uint64
	for i, c := range sm.calls {
		if len(c) > 1 && sm.sizes[i] > maxMergedBytes {
			t.Errorf("apply %d: %d entries of %d bytes in all, above the bound %d", i, len(c), sm.sizes[i], maxMergedBytes)
		}
		order = append(order, c...)
	}
	want := make([]uint64, len(logs))
	for i := range want {
		want[i] = uint64(i + 1)
	}
	if !slices.Equal(order, want) {
		t.Fatalf("entries applied in order %v, want 1..%d once each", order, len(logs))
	}
	// 40 × 50 KB need 4 transactions of 10, the large one its own, and
	// the small ones fit in one.
	if len(sm.calls) != 6 {
		t.Errorf("%d applies (entries per apply: %v); want 6", len(sm.calls), lens(sm.calls))
	}
}

func lens(calls [][]uint64) []int {
	out := make([]int, len(calls))
	for i, c := range calls {
		out[i] = len(c)
	}
	return out
}

// blockingFailSM holds its first Apply until release is closed, then fails.
type blockingFailSM struct {
	*NoopStateMachine
	entered chan struct{}
	release chan struct{}
}

func (s *blockingFailSM) Apply([]fsm.Entry, func([][]fsm.Result)) ([][]fsm.Result, error) {
	close(s.entered)
	<-s.release
	return nil, errors.New("disk on fire")
}

func TestAFailedApplyStopsApplyingAndIsSeenWithoutWaitingForTheLock(t *testing.T) {
	sm := &blockingFailSM{NoopStateMachine: NewNoopStateMachine(), entered: make(chan struct{}), release: make(chan struct{})}
	f := newRaftFSM(sm, func(uint64) {})
	stop := make(chan struct{})
	done := make(chan struct{})
	go func() { defer close(done); f.run(stop) }()
	defer func() { close(stop); <-done }()

	first := f.ApplyBatch([]*raft.Log{{Index: 1, Type: raft.LogCommand, Data: []byte{1}}})
	<-sm.entered
	// The apply holds f.mu now; a probe must still get an answer (this
	// call would deadlock the test if failure took the lock).
	if err := f.failure(); err != nil {
		t.Fatalf("failure during a healthy apply = %v, want nil", err)
	}
	close(sm.release)
	if _, err := first[0].(pendingEntry).wait(); !errors.Is(err, ErrStateMachineFailed) {
		t.Fatalf("failed apply answered %v, want ErrStateMachineFailed", err)
	}
	if err := f.failure(); !errors.Is(err, ErrStateMachineFailed) {
		t.Fatalf("failure after a failed apply = %v, want ErrStateMachineFailed", err)
	}
	// Nothing is applied after a failure: the next entry gets the same error
	// without reaching the state machine (its Apply would close entered twice).
	next := f.ApplyBatch([]*raft.Log{{Index: 2, Type: raft.LogCommand, Data: []byte{2}}})
	if _, err := next[0].(pendingEntry).wait(); !errors.Is(err, ErrStateMachineFailed) {
		t.Fatalf("entry after the failure answered %v, want ErrStateMachineFailed", err)
	}
}

// raft's log cache keeps the leader's future of every cached entry, and the
// future keeps its response: once a waiter has its results, the response
// must no longer reach them, or every cached entry's results stay in memory.
func TestAnsweredResultsAreNotKeptByTheResponse(t *testing.T) {
	_, f := runRecordingFSM(t)

	logs := []*raft.Log{{Index: 1, Type: raft.LogCommand, Data: []byte{1}}, {Index: 2, Type: raft.LogCommand, Data: []byte{1}}}
	resps := f.ApplyBatch(logs)
	first := resps[0].(pendingEntry)
	res, err := first.wait()
	if err != nil || len(res) != 1 || res[0].Value != uint64(1) {
		t.Fatalf("entry 1: %+v, %v", res, err)
	}
	if first.p.results[0] != nil {
		t.Error("entry 1's results are still reachable from its response after they were taken")
	}
	// The other entry of the same raft batch is answered as before.
	if res, err := resps[1].(pendingEntry).wait(); err != nil || len(res) != 1 || res[0].Value != uint64(2) {
		t.Fatalf("entry 2: %+v, %v", res, err)
	}
}

// waitOrFail fails the test if done is not closed within a minute: the
// waits below would otherwise last their full minute.
func waitOrFail(t *testing.T, what string, done <-chan struct{}) {
	t.Helper()
	select {
	case <-done:
	case <-time.After(time.Minute):
		t.Fatalf("%s: still waiting after a minute", what)
	}
}

func TestAFollowerAppliesWhatArrivesWithinItsWaitInOneTransaction(t *testing.T) {
	sm, f := runRecordingFSM(t)
	f.setGather(time.Hour)
	// Two commits of one entry each, as raft delivers them to a follower.
	f.ApplyBatch([]*raft.Log{{Index: 1, Type: raft.LogCommand, Data: []byte{1}}})
	f.ApplyBatch([]*raft.Log{{Index: 2, Type: raft.LogCommand, Data: []byte{2}}})
	// Nothing is applied before the wait ends; flush ends it at once.
	done := make(chan struct{})
	go func() { defer close(done); f.flush(nil) }()
	waitOrFail(t, "flush during a follower's wait", done)
	if len(sm.calls) != 1 || !slices.Equal(sm.calls[0], []uint64{1, 2}) {
		t.Errorf("applies %v; want both entries in one", sm.calls)
	}
}

func TestTakingTheLeadEndsAFollowersWait(t *testing.T) {
	_, f := runRecordingFSM(t)
	f.setGather(time.Hour)
	resp := f.ApplyBatch([]*raft.Log{{Index: 1, Type: raft.LogCommand, Data: []byte{1}}})[0].(pendingEntry)
	// Let the applier start its hour's wait. Should it not have yet, it
	// reads the new setting and the test passes without a wait to end: a
	// slow machine can only make this test weaker, never fail it wrongly.
	time.Sleep(50 * time.Millisecond)
	f.setGather(0) // as leadershipLoop does on election
	done := make(chan struct{})
	go func() { defer close(done); resp.wait() }()
	waitOrFail(t, "the entry's result after taking the lead", done)
	// From now on entries apply as they come, with no flush.
	resp = f.ApplyBatch([]*raft.Log{{Index: 2, Type: raft.LogCommand, Data: []byte{2}}})[0].(pendingEntry)
	done = make(chan struct{})
	go func() { defer close(done); resp.wait() }()
	waitOrFail(t, "a leader's entry", done)
}

// committingSM answers each Apply early (each entry's result is its index),
// then holds its "commit" until the test releases it (or aborts).
type committingSM struct {
	*NoopStateMachine
	answered chan []uint64 // the entries of each early answer
	release  chan struct{} // one receive per commit
	abort    chan struct{} // closed: commit everything at once
}

func (s *committingSM) Apply(entries []fsm.Entry, answer func([][]fsm.Result)) ([][]fsm.Result, error) {
	res := make([][]fsm.Result, len(entries))
	var idx []uint64
	for i, e := range entries {
		res[i] = []fsm.Result{{Value: e.Index}}
		idx = append(idx, e.Index)
	}
	if answer != nil {
		answer(res)
	}
	select {
	case s.answered <- idx:
		select {
		case <-s.release:
		case <-s.abort:
		}
	case <-s.abort:
	}
	if _, err := s.NoopStateMachine.Apply(entries, nil); err != nil { // moves its applied index
		return nil, err
	}
	return res, nil
}

// isDone reports whether an entry's waiter has been woken.
func isDone(e pendingEntry) bool {
	select {
	case <-e.p.done:
		return true
	default:
		return false
	}
}

// The leader's callers get their results once the state machine has
// computed them, before its commit: each job when every one of its entries
// is computed, even when a merge is applied in several parts. A follower
// (whose results wait for nobody) hands them out after the commit, so its
// state machine does not make its reads wait for commits.
func TestTheLeaderAnswersBeforeTheStateCommits(t *testing.T) {
	for _, leading := range []bool{true, false} {
		t.Run(map[bool]string{true: "leader", false: "follower"}[leading], func(t *testing.T) {
			sm := &committingSM{NoopStateMachine: NewNoopStateMachine(), answered: make(chan []uint64),
				release: make(chan struct{}), abort: make(chan struct{})}
			var applied atomic.Uint64
			f := newRaftFSM(sm, func(i uint64) { applied.Store(i) })
			f.setLeading(leading, 0)
			// Two raft batches queued before the applier starts, so one
			// merge takes both: job A one small entry, job B two large
			// ones. maxMergedBytes splits the merge into [1 2] and [3]:
			// job B spans both parts.
			large := bytes.Repeat([]byte{1}, maxMergedBytes/2+1)
			a := f.ApplyBatch([]*raft.Log{{Index: 1, Type: raft.LogCommand, Data: []byte{1}}})
			b := f.ApplyBatch([]*raft.Log{{Index: 2, Type: raft.LogCommand, Data: large}, {Index: 3, Type: raft.LogCommand, Data: large}})
			stop, done := make(chan struct{}), make(chan struct{})
			go func() { defer close(done); f.run(stop) }()
			defer func() { close(sm.abort); close(stop); <-done }()

			jobA, jobB := a[0].(pendingEntry), b[1].(pendingEntry)
			for _, part := range []struct {
				entries      []uint64
				aDone, bDone bool // as the leader answers once the part is computed, before its commit
			}{
				{[]uint64{1, 2}, true, false}, // B's entry 3 is not computed yet
				{[]uint64{3}, true, true},
			} {
				var got []uint64
				select {
				case got = <-sm.answered:
				case <-time.After(time.Minute):
					t.Fatal("no apply within a minute")
				}
				if !slices.Equal(got, part.entries) {
					t.Fatalf("applied %v, want %v", got, part.entries)
				}
				wantA, wantB := part.aDone && leading, part.bDone && leading
				if isDone(jobA) != wantA || isDone(jobB) != wantB {
					t.Errorf("entries %v computed, not committed: job A answered %v, job B %v; want %v, %v",
						part.entries, isDone(jobA), isDone(jobB), wantA, wantB)
				}
				if got := applied.Load(); got != 0 {
					t.Errorf("entries %v computed, not committed: applied index already %d", part.entries, got)
				}
				sm.release <- struct{}{}
			}
			for i, r := range append(a, b...) {
				res, err := r.(pendingEntry).wait()
				if err != nil || len(res) != 1 || res[0].Value != uint64(i+1) {
					t.Fatalf("entry %d: %+v, %v; want its own index", i+1, res, err)
				}
			}
			f.flush(nil) // the leader's answers came before the last commit's end
			if got := applied.Load(); got != 3 {
				t.Errorf("applied index %d after both commits, want 3", got)
			}
		})
	}
}

// answerThenFailSM answers early, then fails its commit.
type answerThenFailSM struct{ *NoopStateMachine }

func (s answerThenFailSM) Apply(entries []fsm.Entry, answer func([][]fsm.Result)) ([][]fsm.Result, error) {
	res := make([][]fsm.Result, len(entries))
	for i, e := range entries {
		res[i] = []fsm.Result{{Value: e.Index}}
	}
	if answer != nil {
		answer(res)
	}
	return nil, errors.New("disk on fire")
}

// A commit that fails after the leader answered leaves the answers as they
// were (the log commands them; a restart re-applies them to the same
// results), fails every entry not yet answered, and stops the applier.
func TestACommitFailingAfterTheAnswerKeepsTheAnswerAndStopsApplying(t *testing.T) {
	f := newRaftFSM(answerThenFailSM{NewNoopStateMachine()}, func(uint64) {})
	f.setLeading(true, 0)
	// One merge of two parts: the failure of the first leaves the second
	// unapplied and unanswered.
	large := bytes.Repeat([]byte{1}, maxMergedBytes/2+1)
	resps := f.ApplyBatch([]*raft.Log{{Index: 1, Type: raft.LogCommand, Data: large}, {Index: 2, Type: raft.LogCommand, Data: large}})
	other := f.ApplyBatch([]*raft.Log{{Index: 3, Type: raft.LogCommand, Data: []byte{1}}})
	stop, done := make(chan struct{}), make(chan struct{})
	go func() { defer close(done); f.run(stop) }()
	defer func() { close(stop); <-done }()

	// Entries 1 and 2 are one job: it spans both parts, so it is not
	// answered by the first part's results, and fails with the commit.
	if _, err := resps[0].(pendingEntry).wait(); !errors.Is(err, ErrStateMachineFailed) {
		t.Fatalf("a job half computed when the commit failed answered %v, want ErrStateMachineFailed", err)
	}
	if _, err := other[0].(pendingEntry).wait(); !errors.Is(err, ErrStateMachineFailed) {
		t.Fatalf("a later job answered %v, want ErrStateMachineFailed", err)
	}

	// A job answered before its commit failed keeps its results.
	g := newRaftFSM(answerThenFailSM{NewNoopStateMachine()}, func(uint64) {})
	g.setLeading(true, 0)
	first := g.ApplyBatch([]*raft.Log{{Index: 1, Type: raft.LogCommand, Data: []byte{1}}})
	stop2, done2 := make(chan struct{}), make(chan struct{})
	go func() { defer close(done2); g.run(stop2) }()
	defer func() { close(stop2); <-done2 }()
	if res, err := first[0].(pendingEntry).wait(); err != nil || len(res) != 1 || res[0].Value != uint64(1) {
		t.Fatalf("a job answered before its commit failed: %+v, %v; want its result", res, err)
	}
	g.flush(nil)
	if err := g.failure(); !errors.Is(err, ErrStateMachineFailed) {
		t.Fatalf("failure after a failed commit = %v, want ErrStateMachineFailed", err)
	}
	next := g.ApplyBatch([]*raft.Log{{Index: 2, Type: raft.LogCommand, Data: []byte{2}}})
	if _, err := next[0].(pendingEntry).wait(); !errors.Is(err, ErrStateMachineFailed) {
		t.Fatalf("an entry after the failure answered %v, want ErrStateMachineFailed", err)
	}
}
