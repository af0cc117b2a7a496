package node

import (
	"bytes"
	"errors"
	"slices"
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

func (r *recordingSM) Apply(entries []fsm.Entry) ([][]fsm.Result, error) {
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

func (s *blockingFailSM) Apply([]fsm.Entry) ([][]fsm.Result, error) {
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
