package node

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"sync/atomic"
	"time"

	"github.com/creditd/creditd/fsm"
	"github.com/hashicorp/raft"
)

// batcher is the group commit: one dispatcher goroutine turns queued
// commands into log entries, so log order is stamp order, and up to
// MaxInflight entries wait for raft at once.
type batcher struct {
	n        *Node
	cfg      BatchConfig
	queue    chan *request
	inflight chan struct{} // semaphore
	waiters  sync.WaitGroup
	// lastStamp is the time of the last entry handed to raft (dispatcher
	// only); entries in flight are not yet in fsm.LastTime.
	lastStamp fsm.Timestamp
	// carry is a command that did not fit the last entry (dispatcher only).
	carry *request
	// exited is closed when the dispatcher has returned.
	exited chan struct{}
	stats  writeCounters
}

// writeCounters are WriteStats' counters: entries and commands counted by
// the dispatcher as it appends, the rest by each entry's waiter.
type writeCounters struct {
	entries, commands, applied atomic.Uint64
	commitNs, applyNs          atomic.Uint64
}

type request struct {
	data []byte
	done chan response // buffered 1: the dispatcher never blocks on a caller
	// taken is set once the dispatcher has the request; from then on it
	// always answers. A request still queued when the dispatcher exits is
	// answered by its caller.
	taken atomic.Bool
}

type response struct {
	res fsm.Result
	err error
}

func newBatcher(n *Node) *batcher {
	return &batcher{
		n:        n,
		cfg:      n.cfg.Batch,
		queue:    make(chan *request, n.cfg.Batch.QueueSize),
		inflight: make(chan struct{}, n.cfg.Batch.MaxInflight),
		exited:   make(chan struct{}),
	}
}

// submit queues one encoded command and waits for its result.
func (b *batcher) submit(ctx context.Context, data []byte) (fsm.Result, error) {
	if data == nil {
		return fsm.Result{}, fmt.Errorf("submit: empty command")
	}
	if len(data) > b.cfg.MaxBytes {
		return fsm.Result{}, &CommandTooLargeError{Size: len(data), Limit: b.cfg.MaxBytes}
	}
	req := &request{data: data, done: make(chan response, 1)}
	full := time.NewTimer(b.n.cfg.LeaderWait)
	defer full.Stop()
	select {
	case b.queue <- req:
	case <-ctx.Done():
		return fsm.Result{}, fmt.Errorf("queue write: %w", ctx.Err())
	case <-b.n.stop:
		return fsm.Result{}, ErrShuttingDown
	case <-full.C:
		return fsm.Result{}, fmt.Errorf("%w: %d commands waiting for %s", ErrQueueFull, cap(b.queue), b.n.cfg.LeaderWait)
	}
	select {
	case r := <-req.done:
		return r.res, r.err
	case <-ctx.Done():
		// The command may still commit; idempotency keys make a retry safe.
		return fsm.Result{}, fmt.Errorf("wait for write: %w", ctx.Err())
	case <-b.exited:
		// Queued after the dispatcher drained the queue for shutdown:
		// nobody else will answer it.
		if !req.taken.Load() {
			return fsm.Result{}, ErrShuttingDown
		}
	}
	select {
	case r := <-req.done:
		return r.res, r.err
	case <-ctx.Done():
		return fsm.Result{}, fmt.Errorf("wait for write: %w", ctx.Err())
	}
}

func (b *batcher) run() {
	defer close(b.exited)
	for {
		first := b.carry
		b.carry = nil
		if first == nil {
			select {
			case <-b.n.stop:
				b.failQueued(ErrShuttingDown)
				return
			case first = <-b.queue:
				first.taken.Store(true)
			}
		}
		select {
		case b.inflight <- struct{}{}:
		case <-b.n.stop:
			first.done <- response{err: ErrShuttingDown}
			b.failQueued(ErrShuttingDown)
			return
		}
		batch := b.gather(first)
		if !b.n.writable.Load() {
			// Leadership went, or is being handed over, since the callers
			// checked: nothing of theirs is in the log, and Apply waits for
			// the next leader to send them there.
			err := b.n.notLeader()
			if b.n.IsLeader() {
				err = fmt.Errorf("%w: this node is handing leadership over or catching up", ErrNoLeader)
			}
			err = notAppended(err)
			for _, r := range batch {
				r.done <- response{err: err}
			}
			<-b.inflight
			continue
		}
		b.dispatch(batch)
	}
}

// gather takes what is queued now, and with MaxWait waits a little for
// more, up to the entry's bounds. A command that does not fit is carried
// over to open the next entry.
func (b *batcher) gather(first *request) []*request {
	batch := []*request{first}
	if b.cfg.Disabled {
		return batch
	}
	size := len(first.data)
	add := func(r *request) bool {
		r.taken.Store(true)
		if size+len(r.data) > b.cfg.MaxBytes {
			b.carry = r
			return false
		}
		batch = append(batch, r)
		size += len(r.data)
		return len(batch) < b.cfg.MaxCommands
	}
	for len(batch) < b.cfg.MaxCommands {
		select {
		case r := <-b.queue:
			if !add(r) {
				return batch
			}
			continue
		default:
		}
		break
	}
	if b.cfg.MaxWait <= 0 || len(batch) >= b.cfg.MaxCommands {
		return batch
	}
	wait := time.NewTimer(b.cfg.MaxWait)
	defer wait.Stop()
	for {
		select {
		case r := <-b.queue:
			if !add(r) {
				return batch
			}
		case <-wait.C:
			return batch
		case <-b.n.stop:
			return batch
		}
	}
}

// dispatch stamps the batch, appends it to raft as one entry and hands the
// future to a waiter that answers each caller. The caller holds an
// inflight slot, released by the waiter.
func (b *batcher) dispatch(batch []*request) {
	now := fsm.TimestampOf(time.Now())
	t := max(now, b.lastStamp+1, b.n.sm.LastTime()+1)
	b.lastStamp = t
	cmds := make([][]byte, len(batch))
	for i, r := range batch {
		cmds[i] = r.data
	}
	entry := fsm.EncodeEntry(t, cmds)
	start := time.Now()
	f := b.n.raft.Apply(entry, b.n.cfg.ApplyTimeout)
	b.stats.entries.Add(1)
	b.stats.commands.Add(uint64(len(batch)))
	b.waiters.Add(1)
	go func() {
		defer b.waiters.Done()
		defer func() { <-b.inflight }()
		err := f.Error()
		if err != nil {
			refused := errors.Is(err, raft.ErrNotLeader) || errors.Is(err, raft.ErrLeadershipTransferInProgress)
			err = b.n.mapRaftErr("replicate entry", err)
			if refused {
				// raft turned the entry away before appending it.
				err = notAppended(err)
			}
			for _, r := range batch {
				r.done <- response{err: err}
			}
			return
		}
		committed := time.Now()
		pe, ok := f.Response().(pendingEntry)
		var results []fsm.Result
		if ok {
			results, err = pe.wait()
			if err == nil {
				b.stats.applied.Add(1)
				b.stats.commitNs.Add(uint64(committed.Sub(start)))
				b.stats.applyNs.Add(uint64(time.Since(committed)))
			}
		} else {
			err = fmt.Errorf("replicate entry %d: unexpected response %T", f.Index(), f.Response())
		}
		switch {
		case err != nil:
		case results == nil:
			// The no-op state machine answers nothing; every command
			// succeeded in the sense that it is in the log.
			for _, r := range batch {
				r.done <- response{}
			}
			return
		case len(results) != len(batch):
			err = fmt.Errorf("replicate entry %d: state machine returned %d results for %d commands", f.Index(), len(results), len(batch))
		}
		if err != nil {
			for _, r := range batch {
				r.done <- response{err: err}
			}
			return
		}
		for i, r := range batch {
			r.done <- response{res: results[i]}
		}
		if d := time.Since(start); d > 5*time.Second {
			b.n.logger.Warn("slow log entry", "index", f.Index(), "commands", len(batch), "took", d)
		}
	}()
}

// errNotAppended marks a write that never reached the log: this node
// stopped leading, or began handing leadership over, before its entry was
// appended. Apply sends it again, to the next leader.
var errNotAppended = errors.New("node: the write was not appended")

type notAppendedError struct{ err error }

func (e notAppendedError) Error() string   { return e.err.Error() }
func (e notAppendedError) Unwrap() []error { return []error{e.err, errNotAppended} }
func notAppended(err error) error          { return notAppendedError{err} }

// awaitIdle waits, at most for bound or until ctx ends, until no entry
// is in raft: every entry appended has been answered.
func (b *batcher) awaitIdle(ctx context.Context, bound time.Duration) {
	if len(b.inflight) == 0 {
		return
	}
	deadline := time.NewTimer(bound)
	defer deadline.Stop()
	poll := time.NewTicker(5 * time.Millisecond)
	defer poll.Stop()
	for len(b.inflight) > 0 {
		select {
		case <-ctx.Done():
			return
		case <-deadline.C:
			b.n.logger.Warn("handing leadership over with entries still in flight", "entries", len(b.inflight), "waited", bound)
			return
		case <-poll.C:
		}
	}
}

// failQueued answers every queued command with err (dispatcher only).
func (b *batcher) failQueued(err error) {
	if b.carry != nil {
		b.carry.done <- response{err: err}
		b.carry = nil
	}
	for {
		select {
		case r := <-b.queue:
			r.taken.Store(true)
			r.done <- response{err: err}
		default:
			return
		}
	}
}

// drain waits, bounded by ctx, for entries already in raft to resolve.
// Called after n.stop is closed.
func (b *batcher) drain(ctx context.Context) {
	done := make(chan struct{})
	go func() {
		// The dispatcher adds waiters until it returns (it sees n.stop at
		// its next step); a Wait begun before that races with its Add.
		<-b.exited
		b.waiters.Wait()
		close(done)
	}()
	select {
	case <-done:
	case <-ctx.Done():
	}
}
