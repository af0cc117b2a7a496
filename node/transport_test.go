package node

import (
	"sync/atomic"
	"testing"
	"time"

	"github.com/hashicorp/raft"
)

// A heartbeat runs on a transport goroutine, outside raft's shutdown; the
// log store may be closed only once none is running (hashicorp/raft#717).
func TestClosingTheTransportWaitsForHeartbeatsAndTurnsLaterOnesAway(t *testing.T) {
	listen := func(t *testing.T) *raft.NetworkTransport {
		tr, err := raft.NewTCPTransport("127.0.0.1:0", nil, 2, 10*time.Second, nil)
		if err != nil {
			t.Fatalf("listen: %v", err)
		}
		t.Cleanup(func() { _ = tr.Close() })
		return tr
	}
	leader := listen(t)
	follower := &raftTransport{NetworkTransport: listen(t)}

	entered := make(chan struct{}, 2)
	release := make(chan struct{})
	var handled, finished atomic.Int32
	follower.SetHeartbeatHandler(func(rpc raft.RPC) {
		handled.Add(1)
		entered <- struct{}{}
		<-release
		finished.Add(1)
		rpc.Respond(&raft.AppendEntriesResponse{Term: 1, Success: true}, nil)
	})
	go func() { // drain what is not a heartbeat; nothing should come
		for rpc := range follower.Consumer() {
			rpc.Respond(nil, nil)
		}
	}()

	heartbeat := func() error {
		req := &raft.AppendEntriesRequest{RPCHeader: raft.RPCHeader{Addr: []byte(leader.LocalAddr())}, Term: 1}
		var resp raft.AppendEntriesResponse
		return leader.AppendEntries("follower", follower.LocalAddr(), req, &resp)
	}
	first := make(chan error, 1)
	go func() { first <- heartbeat() }()
	select {
	case <-entered:
	case <-time.After(30 * time.Second):
		t.Fatal("the first heartbeat never reached the handler")
	}

	closed := make(chan int32, 1)
	go func() {
		if err := follower.Close(); err != nil {
			t.Errorf("close: %v", err)
		}
		closed <- finished.Load()
	}()
	time.Sleep(100 * time.Millisecond) // give an ungated Close the time to return
	close(release)
	if n := <-closed; n != 1 {
		t.Fatal("Close returned while a heartbeat was still in raft's handler")
	}
	// The heartbeat in flight gets its answer, or its connection closes if
	// raft's connection goroutine sees the shutdown first (EOF): either is
	// fine for the leader, which sends another.
	<-first

	// The leader's pooled connection is still served after Close.
	if err := heartbeat(); err == nil {
		t.Fatal("a heartbeat after Close succeeded")
	}
	if n := handled.Load(); n != 1 {
		t.Fatalf("raft's handler ran %d times, want once: a heartbeat after Close reached it", n)
	}
}
