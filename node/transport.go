package node

import (
	"errors"
	"sync"

	"github.com/hashicorp/raft"
)

// errHeartbeatAfterClose answers a heartbeat that arrives once the
// transport is closed; the leader counts it as a failed contact.
var errHeartbeatAfterClose = errors.New("raft transport closed")

// raftTransport is raft's TCP transport with a gate on the heartbeat fast
// path. raft runs heartbeats on the transport's connection goroutines, not
// on its main loop, so raft.Shutdown does not wait for them: a heartbeat
// that passed raft's shutdown check can still save the current term after
// Shutdown returned, and raft panics if the log store is closed by then
// ("failed to save current term: database not open", hashicorp/raft#717).
// Close waits for heartbeats in flight and turns later ones away, so the
// log store can be closed after it.
type raftTransport struct {
	*raft.NetworkTransport

	mu     sync.RWMutex // held for reading by each heartbeat in flight
	closed bool
}

// SetHeartbeatHandler wraps raft's handler with the gate.
func (t *raftTransport) SetHeartbeatHandler(handle func(raft.RPC)) {
	if handle == nil {
		t.NetworkTransport.SetHeartbeatHandler(nil)
		return
	}
	t.NetworkTransport.SetHeartbeatHandler(func(rpc raft.RPC) {
		t.mu.RLock()
		defer t.mu.RUnlock()
		if t.closed {
			rpc.Respond(nil, errHeartbeatAfterClose)
			return
		}
		handle(rpc)
	})
}

// Close stops the transport and returns once no heartbeat is in raft's
// hands. raft's own shutdown calls it after its goroutines have stopped;
// node closes the log store only after it.
func (t *raftTransport) Close() error {
	t.mu.Lock()
	t.closed = true
	t.mu.Unlock()
	return t.NetworkTransport.Close()
}
