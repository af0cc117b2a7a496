package rpc

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"sync"

	"connectrpc.com/connect"

	"github.com/creditd/creditd/fsm"
	v1 "github.com/creditd/creditd/gen/creditd/v1"
)

// watchBatch bounds the entries of one WatchEntries message.
const watchBatch = 500

func checkLedgerFilter(customerID, creditTypeID string) error {
	if err := firstError(checkOptionalID("customer_id", customerID), checkOptionalID("credit_type_id", creditTypeID)); err != nil {
		return err
	}
	if creditTypeID != "" && customerID == "" {
		return invalidField("credit_type_id", "needs customer_id")
	}
	return nil
}

func entriesPB(v *fsm.View, es []fsm.LedgerEntry) []*v1.LedgerEntry {
	sc := newScales(v)
	out := make([]*v1.LedgerEntry, len(es))
	for i := range es {
		out[i] = entryPB(&es[i], sc.known(es[i].CreditTypeID))
	}
	return out
}

func (a *api) ListEntries(ctx context.Context, req *connect.Request[v1.ListEntriesRequest]) (*connect.Response[v1.ListEntriesResponse], error) {
	return handle(ctx, a.s, req, func(c *leaderClients) func(context.Context, *connect.Request[v1.ListEntriesRequest]) (*connect.Response[v1.ListEntriesResponse], error) {
		return c.ledger.ListEntries
	}, func(ctx context.Context, m *v1.ListEntriesRequest) (*v1.ListEntriesResponse, error) {
		if err := checkLedgerFilter(m.CustomerId, m.CreditTypeId); err != nil {
			return nil, err
		}
		if m.ToSeq != 0 && m.ToSeq < m.FromSeq {
			return nil, invalidField("to_seq", "is before from_seq")
		}
		f := fsm.LedgerFilter{CustomerID: m.CustomerId, CreditTypeID: m.CreditTypeId, FromSeq: m.FromSeq, ToSeq: m.ToSeq}
		var err error
		if f.Limit, err = pageSize("page_size", m.PageSize); err != nil {
			return nil, err
		}
		if m.PageToken != "" {
			if f.FromSeq, err = parseLedgerPageToken("page_token", m.PageToken); err != nil {
				return nil, err
			}
		}
		stale, err := checkConsistency("consistency", m.Consistency)
		if err != nil {
			return nil, err
		}
		out := &v1.ListEntriesResponse{}
		err = a.s.read(ctx, stale, func(v *fsm.View) error {
			es, next, err := v.Ledger(f)
			if err != nil {
				return err
			}
			out.Entries = entriesPB(v, es)
			out.NextPageToken = ledgerPageToken(next)
			out.AppliedIndex = v.AppliedIndex()
			return nil
		})
		return out, err
	})
}

// WatchEntries is served by the replica called: every replica holds the same
// ledger in the same order, so a client may watch any node (and resume from
// the last seq it saw on another). It wakes on each apply of this replica.
//
// On a replica whose state machine has failed (node.Failure) nothing is
// applied any more: a new stream fails at once, and an open one first sends
// what the replica applied before the failure (those entries are final, the
// same on every replica; each message has the stream's write timeout), then
// ends, both with UNAVAILABLE, so that the client resumes on another node
// rather than wait on a ledger that will never move here.
func (a *api) WatchEntries(ctx context.Context, req *connect.Request[v1.WatchEntriesRequest], stream *connect.ServerStream[v1.WatchEntriesResponse]) error {
	m := req.Msg
	if err := checkLedgerFilter(m.CustomerId, m.CreditTypeId); err != nil {
		return a.s.toConnect(ctx, err)
	}
	if a.s.n.Failure() != nil {
		return a.s.stateMachineFailed("resume from the last seq seen on another node")
	}
	who := principalFrom(ctx)
	if !a.s.watchers.take(who) {
		return connect.NewError(connect.CodeResourceExhausted, fmt.Errorf("API key %s holds %d WatchEntries streams on this node, its limit; close one, or try another node", strings.TrimPrefix(who, "key:"), a.s.watchers.max))
	}
	defer a.s.watchers.release(who)
	select {
	case a.s.watch <- struct{}{}:
		defer func() { <-a.s.watch }()
	default:
		return connect.NewError(connect.CodeResourceExhausted, errors.New("too many WatchEntries streams on this node; try another node or later"))
	}
	f, err := a.s.state()
	if err != nil {
		return a.s.toConnect(ctx, err)
	}
	// Between messages the stream has no write deadline (streams.send), so
	// that a quiet one lives; its end, written once this returns, has one.
	defer a.s.streams.armSend(ctx)
	// Headers now: a client's call returns once the stream is accepted,
	// not when the first entry is written, which on a quiet ledger may be
	// never.
	if err := a.s.streams.send(ctx, func() error { return stream.Send(nil) }); err != nil {
		return err
	}
	from := m.FromSeq
	if from == 0 {
		from = 1
	}
	for {
		// Take the notification channel before reading, so an apply that
		// lands between the read and the wait still wakes us.
		applied := a.s.n.AppliedNotify()
		var msg *v1.WatchEntriesResponse
		err := f.View(func(v *fsm.View) error {
			es, _, err := v.Ledger(fsm.LedgerFilter{CustomerID: m.CustomerId, CreditTypeID: m.CreditTypeId, FromSeq: from, Limit: watchBatch})
			if err != nil || len(es) == 0 {
				return err
			}
			msg = &v1.WatchEntriesResponse{Entries: entriesPB(v, es), AppliedIndex: v.AppliedIndex()}
			from = es[len(es)-1].Seq + 1
			return nil
		})
		if err != nil {
			if a.s.n.Failure() != nil {
				return a.s.stateMachineFailed("resume from the last seq seen on another node")
			}
			return a.s.toConnect(ctx, err)
		}
		if msg != nil {
			if err := a.s.streams.send(ctx, func() error { return stream.Send(msg) }); err != nil {
				return err
			}
			if len(msg.Entries) == watchBatch {
				continue // more may be waiting already
			}
		}
		// Everything applied when applied was taken has been sent. A
		// failure is recorded before applied is closed: one that comes
		// during the wait wakes it, and the next round ends here.
		if a.s.n.Failure() != nil {
			return a.s.stateMachineFailed("resume from the last seq seen on another node")
		}
		select {
		case <-applied:
		case <-ctx.Done():
			return nil
		case <-a.s.done:
			// Not the end of the ledger: the client resumes from the
			// last seq it saw, here later or on another node.
			return connect.NewError(connect.CodeUnavailable, errors.New("the server is shutting down; resume from the last seq seen, on another node or later"))
		}
	}
}

// watcherCounts is how many WatchEntries streams each API key holds.
type watcherCounts struct {
	max   int
	mu    sync.Mutex
	byKey map[string]int
}

// take counts one more stream for principal, unless its key holds max
// already. Only keys are counted: without keys the clients are loopback
// ones, the node's own operator.
func (w *watcherCounts) take(principal string) bool {
	if !strings.HasPrefix(principal, "key:") {
		return true
	}
	w.mu.Lock()
	defer w.mu.Unlock()
	if w.byKey[principal] >= w.max {
		return false
	}
	w.byKey[principal]++
	return true
}

func (w *watcherCounts) release(principal string) {
	if !strings.HasPrefix(principal, "key:") {
		return
	}
	w.mu.Lock()
	defer w.mu.Unlock()
	if w.byKey[principal]--; w.byKey[principal] <= 0 {
		delete(w.byKey, principal)
	}
}
