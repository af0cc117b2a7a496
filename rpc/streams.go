package rpc

import (
	"context"
	"net/http"
	"sync"
	"time"
)

// defaultStreamWriteTimeout bounds each message a stream sends. A client
// that stops reading blocks the handler's write (HTTP/2 flow control) for
// ever otherwise: a WatchEntries slot, and for SaveSnapshot the state
// file's read lock, which a snapshot install on the node then waits for.
const defaultStreamWriteTimeout = 30 * time.Second

// streamCloseGrace is how long a stream has, once Close is called, to write
// its last message: a reader that keeps up gets the stream's end (and its
// code); one that stopped reading is cut then.
const streamCloseGrace = time.Second

type streamControlKey struct{}

// streamControls are the response controllers of the streams being served,
// so that Close can end their writes at once.
type streamControls struct {
	timeout time.Duration // per message
	mu      sync.Mutex
	active  map[*http.ResponseController]struct{}
	closed  bool
}

// track registers a stream's controller; the returned func forgets it.
func (c *streamControls) track(rc *http.ResponseController) (untrack func()) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.active == nil {
		c.active = map[*http.ResponseController]struct{}{}
	}
	c.active[rc] = struct{}{}
	if c.closed {
		_ = rc.SetWriteDeadline(time.Now().Add(streamCloseGrace))
	}
	return func() {
		c.mu.Lock()
		defer c.mu.Unlock()
		delete(c.active, rc)
	}
}

// armSend gives the next message of the stream served under ctx its write
// deadline; after close, at most the close's grace. Under the lock, so that
// Close's deadline cannot be pushed back by a send that began before it.
func (c *streamControls) armSend(ctx context.Context) {
	rc, ok := ctx.Value(streamControlKey{}).(*http.ResponseController)
	if !ok {
		return
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	d := time.Now().Add(c.timeout)
	if c.closed {
		d = time.Now().Add(min(streamCloseGrace, c.timeout))
	}
	// An error means the writer takes no deadlines (not a network
	// connection): nothing to bound.
	_ = rc.SetWriteDeadline(d)
}

// disarmSend lifts the write deadline armSend gave the message just
// written: an HTTP/2 stream whose write deadline passes is reset even while
// it has nothing to write, and a WatchEntries stream may wait for minutes
// between entries (a quiet customer). After Close the close's deadline
// stays. (SaveSnapshot's messages follow each other at once: it only arms.)
func (c *streamControls) disarmSend(ctx context.Context) {
	rc, ok := ctx.Value(streamControlKey{}).(*http.ResponseController)
	if !ok {
		return
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	if !c.closed {
		_ = rc.SetWriteDeadline(time.Time{})
	}
}

// send writes one message of the stream served under ctx within the
// stream's write timeout.
func (c *streamControls) send(ctx context.Context, write func() error) error {
	c.armSend(ctx)
	defer c.disarmSend(ctx)
	return write()
}

// close ends every stream's pending and later writes after the grace.
func (c *streamControls) close() {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.closed = true
	for rc := range c.active {
		_ = rc.SetWriteDeadline(time.Now().Add(streamCloseGrace))
	}
}
