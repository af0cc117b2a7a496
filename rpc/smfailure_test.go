package rpc

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"path/filepath"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"connectrpc.com/connect"
	"connectrpc.com/grpchealth"

	"github.com/creditd/creditd/fsm"
	v1 "github.com/creditd/creditd/gen/creditd/v1"
	"github.com/creditd/creditd/node"
)

// failableSM applies into a real fsm until failing is set; from then on
// every Apply fails as a full disk would, applying nothing. It embeds
// node.FSMStateMachine, so the node serves reads from that fsm.
type failableSM struct {
	node.FSMStateMachine
	failing atomic.Bool
}

func (s *failableSM) Apply(entries []fsm.Entry, answer func([][]fsm.Result)) ([][]fsm.Result, error) {
	if s.failing.Load() {
		return nil, errors.New("write fsm.db: no space left on device")
	}
	return s.FSMStateMachine.Apply(entries, answer)
}

// failableNodes makes each node started with it apply into an fsm the test
// holds, through a failableSM recorded under the node's id. The fsm is
// closed after the node has stopped (cleanups run last first, and
// startServer registers the node's after this runs).
func failableNodes(t testing.TB, sms map[string]*failableSM) func(*node.Config) {
	return func(cfg *node.Config) {
		f, err := fsm.Open(filepath.Join(t.TempDir(), cfg.NodeID+".db"), fsm.Options{})
		if err != nil {
			t.Fatalf("open the state of %s: %v", cfg.NodeID, err)
		}
		t.Cleanup(func() { _ = f.Close() })
		sm := &failableSM{FSMStateMachine: node.FSMStateMachine{F: f}}
		sms[cfg.NodeID] = sm
		cfg.StateMachine = sm
	}
}

// watchAll receives a stream's entries until it ends, and its end.
func watchAll(stream *connect.ServerStreamForClient[v1.WatchEntriesResponse]) ([]*v1.LedgerEntry, error) {
	var es []*v1.LedgerEntry
	for stream.Receive() {
		es = append(es, stream.Msg().Entries...)
	}
	return es, stream.Err()
}

// wantStateMachineFailed checks that err is UNAVAILABLE saying that the
// state machine of node id failed.
func wantStateMachineFailed(t testing.TB, what, id string, err error) {
	t.Helper()
	if connect.CodeOf(err) != connect.CodeUnavailable || !strings.Contains(err.Error(), "the state machine on node "+id+" failed") {
		t.Errorf("%s: %v, want UNAVAILABLE saying the state machine on node %s failed", what, err, id)
	}
}

// On a node whose state machine failed (a full disk) nothing is applied any
// more. An open WatchEntries stream sends what was applied before the
// failure, then ends with UNAVAILABLE (it stayed open and silent until the
// process restarted, so a follower of the ledger never went to another
// node); a new one fails at once. Reads fail as promptly with UNAVAILABLE,
// linearizable ones (they waited for an index that never comes, until
// their deadline) and stale ones (they answered from a state that would
// never move, with nothing to say so); so do writes and snapshots (they
// were INTERNAL); the probes say the node is not ready and why.
func TestANodeWhoseStateMachineFailedSaysSoToEveryCaller(t *testing.T) {
	sms := map[string]*failableSM{}
	s := startSingle(t, nodeOpts{nodeConfig: failableNodes(t, sms)})
	sm := sms[s.id]
	c := newClients(s.url, "")
	setupCatalog(t, c)
	call(t, c.grant.CreateGrant, &v1.CreateGrantRequest{Id: "g1", CustomerId: "acme", CreditTypeId: "ai-credits",
		Category: v1.GrantCategory_GRANT_CATEGORY_PAID, Amount: "100000", CostBasis: "0.01", Currency: "USD"})
	// More entries than one message holds (watchBatch), so that some may
	// still be unsent when the failure comes.
	var events []*v1.UsageEvent
	for i := range watchBatch + 100 {
		events = append(events, &v1.UsageEvent{Id: fmt.Sprintf("e%d", i), CustomerId: "acme", CreditTypeId: "ai-credits", Credits: "1"})
	}
	ctx := ctxT(t)
	stream, err := c.ledger.WatchEntries(ctx, connect.NewRequest(&v1.WatchEntriesRequest{FromSeq: 1}))
	if err != nil {
		t.Fatal(err)
	}
	call(t, c.usage.ReportUsage, &v1.ReportUsageRequest{Events: events})
	lastSeq := s.n.FSM().LastSeq()

	sm.failing.Store(true)
	_, err = c.usage.ReportUsage(ctxT(t), connect.NewRequest(&v1.ReportUsageRequest{Events: []*v1.UsageEvent{
		{Id: "lost", CustomerId: "acme", CreditTypeId: "ai-credits", Credits: "1"}}}))
	wantStateMachineFailed(t, "a write whose apply failed", s.id, err)
	if s.n.Failure() == nil {
		t.Fatal("the node does not report its state machine's failure")
	}

	seen, err := watchAll(stream)
	wantStateMachineFailed(t, "the open stream's end", s.id, err)
	if err == nil || !strings.Contains(err.Error(), "resume from the last seq seen on another node") {
		t.Errorf("the open stream ended with %v, want it to say to resume from the last seq on another node", err)
	}
	if len(seen) == 0 || seen[len(seen)-1].Seq != lastSeq || uint64(len(seen)) != lastSeq {
		t.Errorf("the open stream sent %d entries before it ended, want all %d applied before the failure", len(seen), lastSeq)
	}

	stale := v1.Consistency_CONSISTENCY_STALE
	for _, tc := range []struct {
		name string
		do   func(ctx context.Context) error
	}{
		{"a new WatchEntries", func(ctx context.Context) error {
			st, err := c.ledger.WatchEntries(ctx, connect.NewRequest(&v1.WatchEntriesRequest{FromSeq: 1}))
			if err != nil {
				return err
			}
			if _, err := watchAll(st); err != nil {
				return err
			}
			return errors.New("the stream ended without an error")
		}},
		{"a linearizable ListEntries", func(ctx context.Context) error {
			_, err := c.ledger.ListEntries(ctx, connect.NewRequest(&v1.ListEntriesRequest{}))
			return err
		}},
		{"a stale ListEntries", func(ctx context.Context) error {
			_, err := c.ledger.ListEntries(ctx, connect.NewRequest(&v1.ListEntriesRequest{Consistency: stale}))
			return err
		}},
		{"a linearizable GetBalance", func(ctx context.Context) error {
			_, err := c.balance.GetBalance(ctx, connect.NewRequest(&v1.GetBalanceRequest{CustomerId: "acme", CreditTypeId: "ai-credits"}))
			return err
		}},
		{"a stale GetBalance", func(ctx context.Context) error {
			_, err := c.balance.GetBalance(ctx, connect.NewRequest(&v1.GetBalanceRequest{CustomerId: "acme", CreditTypeId: "ai-credits", Consistency: stale}))
			return err
		}},
		{"a write", func(ctx context.Context) error {
			_, err := c.grant.CreateGrant(ctx, connect.NewRequest(&v1.CreateGrantRequest{Id: "g2", CustomerId: "acme", CreditTypeId: "ai-credits",
				Category: v1.GrantCategory_GRANT_CATEGORY_PROMOTIONAL, Amount: "1"}))
			return err
		}},
		{"SaveSnapshot", func(ctx context.Context) error {
			st, err := c.cluster.SaveSnapshot(ctx, connect.NewRequest(&v1.SaveSnapshotRequest{}))
			if err != nil {
				return err
			}
			for st.Receive() {
			}
			if err := st.Err(); err != nil {
				return err
			}
			return errors.New("the snapshot was saved")
		}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			wantStateMachineFailed(t, tc.name, s.id, tc.do(ctxT(t)))
		})
	}

	res, err := http.Get(s.url + "/readyz")
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(res.Body)
	res.Body.Close()
	if res.StatusCode != http.StatusServiceUnavailable || !strings.Contains(string(body), "state machine failed") {
		t.Errorf("GET /readyz = %d %q, want 503 saying the state machine failed", res.StatusCode, body)
	}
	hres, err := grpchealth.NewClient(h2c(), s.url, connect.WithGRPC()).Check(ctxT(t), &grpchealth.CheckRequest{})
	if err != nil || hres.Status != grpchealth.StatusNotServing {
		t.Errorf("gRPC health check: %v %v, want NOT_SERVING", hres, err)
	}
	st := call(t, c.cluster.GetStatus, &v1.GetStatusRequest{})
	if st.Ready || !strings.Contains(st.NotReadyReason, "state machine failed") || st.LastSeq != lastSeq {
		t.Errorf("GetStatus: ready %v (%q), last seq %d; want not ready, state machine failed, %d", st.Ready, st.NotReadyReason, st.LastSeq, lastSeq)
	}
}

// The exporter's case: it follows the ledger on a follower whose state
// machine fails while the cluster goes on. Its stream ends with UNAVAILABLE,
// and it resumes on another node from the last seq it saw, losing nothing.
func TestAWatcherOfAFailedFollowerResumesOnAnotherNode(t *testing.T) {
	sms := map[string]*failableSM{}
	nodes := startThree(t, nodeOpts{nodeConfig: failableNodes(t, sms)})
	leader, follower := nodes[0], nodes[1]
	lc, fc := newClients(leader.url, ""), newClients(follower.url, "")
	setupCatalog(t, lc)
	call(t, lc.grant.CreateGrant, &v1.CreateGrantRequest{Id: "g1", CustomerId: "acme", CreditTypeId: "ai-credits",
		Category: v1.GrantCategory_GRANT_CATEGORY_PAID, Amount: "100", CostBasis: "0.01", Currency: "USD"})
	want := leader.n.FSM().LastSeq()

	ctx := ctxT(t)
	stream, err := fc.ledger.WatchEntries(ctx, connect.NewRequest(&v1.WatchEntriesRequest{FromSeq: 1}))
	if err != nil {
		t.Fatal(err)
	}
	var seen []*v1.LedgerEntry
	for len(seen) == 0 || seen[len(seen)-1].Seq < want {
		if !stream.Receive() {
			t.Fatalf("the follower's stream ended before the grant: %v", stream.Err())
		}
		seen = append(seen, stream.Msg().Entries...)
	}

	sms[follower.id].failing.Store(true)
	// The leader and the other follower commit it; the failed follower
	// cannot apply it.
	call(t, lc.usage.ReportUsage, &v1.ReportUsageRequest{Events: []*v1.UsageEvent{
		{Id: "after", CustomerId: "acme", CreditTypeId: "ai-credits", Credits: "1"}}})
	rest, err := watchAll(stream)
	wantStateMachineFailed(t, "the end of the failed follower's stream", follower.id, err)
	if t.Failed() {
		t.FailNow()
	}
	seen = append(seen, rest...)
	last := seen[len(seen)-1].Seq

	_, err = fc.balance.GetBalance(ctxT(t), connect.NewRequest(&v1.GetBalanceRequest{CustomerId: "acme", CreditTypeId: "ai-credits",
		Consistency: v1.Consistency_CONSISTENCY_STALE}))
	wantStateMachineFailed(t, "a stale read on the failed follower", follower.id, err)

	resumed, err := lc.ledger.WatchEntries(ctx, connect.NewRequest(&v1.WatchEntriesRequest{FromSeq: last + 1}))
	if err != nil {
		t.Fatal(err)
	}
	if !resumed.Receive() {
		t.Fatalf("the stream resumed on the leader ended: %v", resumed.Err())
	}
	if e := resumed.Msg().Entries[0]; e.Seq != last+1 || e.CauseId != "after" {
		t.Fatalf("the resumed stream's first entry is %v, want seq %d for the event after the failure", e, last+1)
	}
	for i, e := range seen {
		if e.Seq != uint64(i+1) {
			t.Fatalf("the failed follower's stream sent seq %d as entry %d", e.Seq, i+1)
		}
	}
	// The healthy nodes stay ready.
	waitFor(t, 60*time.Second, "the leader and the other follower to be ready", func() bool { return leader.n.Ready() && nodes[2].n.Ready() })
}
