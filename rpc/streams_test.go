package rpc

import (
	"context"
	"fmt"
	"net/http"
	"testing"
	"time"

	"connectrpc.com/connect"

	v1 "github.com/creditd/creditd/gen/creditd/v1"
	"github.com/creditd/creditd/gen/creditd/v1/creditdv1connect"
)

// stalledStreamClients are clients over HTTP/2 with 64 KiB receive windows
// whose streams the test never reads: the server's writes block on flow
// control once the window is full, as with a client that stopped reading.
func stalledStreamClients(url string) (*clients, *http.Transport) {
	var p http.Protocols
	p.SetUnencryptedHTTP2(true)
	tr := &http.Transport{Protocols: &p, HTTP2: &http.HTTP2Config{
		MaxReceiveBufferPerStream: 64 << 10, MaxReceiveBufferPerConnection: 64 << 10}}
	hc := &http.Client{Transport: tr}
	return &clients{
		ledger:  creditdv1connect.NewLedgerServiceClient(hc, url),
		cluster: creditdv1connect.NewClusterServiceClient(hc, url),
	}, tr
}

// burnEntries writes n burn entries (about 150 bytes each on the wire):
// more than a stalled client's window holds.
func burnEntries(t *testing.T, c *clients, n int) {
	t.Helper()
	setupCatalog(t, c)
	call(t, c.grant.CreateGrant, &v1.CreateGrantRequest{Id: "g-big", CustomerId: "acme", CreditTypeId: "ai-credits",
		Category: v1.GrantCategory_GRANT_CATEGORY_PROMOTIONAL, Amount: "1000000"})
	for b := 0; b < n/1000; b++ {
		evs := make([]*v1.UsageEvent, 1000)
		for i := range evs {
			evs[i] = &v1.UsageEvent{Id: fmt.Sprintf("e-%d-%d", b, i), CustomerId: "acme", FeatureId: "gpt-tokens", Quantity: 1000}
		}
		if res := call(t, c.usage.ReportUsage, &v1.ReportUsageRequest{Events: evs}); res.Results[0].Status != v1.EventStatus_EVENT_STATUS_BURNED {
			t.Fatalf("event not burned: %v", res.Results[0])
		}
	}
}

// A client that stops reading a stream loses it after StreamWriteTimeout:
// its WatchEntries slot comes back, and a SaveSnapshot stops holding the
// state file (a snapshot install on the node would wait for it).
func TestAStalledStreamIsCutAfterItsWriteTimeout(t *testing.T) {
	s := startSingle(t, nodeOpts{rpc: Options{StreamWriteTimeout: time.Second}})
	burnEntries(t, newClients(s.url, ""), 5000)
	sc, tr := stalledStreamClients(s.url)
	defer tr.CloseIdleConnections()
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()

	watch, err := sc.ledger.WatchEntries(ctx, connect.NewRequest(&v1.WatchEntriesRequest{}))
	if err != nil {
		t.Fatal(err)
	}
	defer watch.Close()
	waitFor(t, 30*time.Second, "the watch to take its slot", func() bool { return len(s.srv.watch) == 1 })
	waitFor(t, 60*time.Second, "the stalled watch to be cut and give its slot back", func() bool { return len(s.srv.watch) == 0 })

	snap, err := sc.cluster.SaveSnapshot(ctx, connect.NewRequest(&v1.SaveSnapshotRequest{}))
	if err != nil {
		t.Fatal(err)
	}
	defer snap.Close()
	// A snapshot of the node holds its state file; once the stalled stream
	// is cut, a full snapshot to a reader that keeps up is served as usual.
	waitFor(t, 60*time.Second, "a snapshot to be served after the stalled one", func() bool {
		sctx, scancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer scancel()
		st, err := newClients(s.url, "").cluster.SaveSnapshot(sctx, connect.NewRequest(&v1.SaveSnapshotRequest{}))
		if err != nil {
			return false
		}
		defer st.Close()
		n := 0
		for st.Receive() {
			n += len(st.Msg().Chunk)
		}
		return st.Err() == nil && n > 0
	})
}

// Server.Close ends streams whose client stopped reading at once (their
// write deadline becomes now), so http.Server.Shutdown does not wait for
// them.
func TestCloseEndsStalledStreams(t *testing.T) {
	for _, which := range []string{"WatchEntries", "SaveSnapshot"} {
		t.Run(which, func(t *testing.T) {
			s := startSingle(t, nodeOpts{}) // the default write timeout, 30s, is not what ends them
			burnEntries(t, newClients(s.url, ""), 5000)
			sc, tr := stalledStreamClients(s.url)
			defer tr.CloseIdleConnections()
			ctx, cancel := context.WithCancel(context.Background())
			defer cancel()
			if which == "WatchEntries" {
				st, err := sc.ledger.WatchEntries(ctx, connect.NewRequest(&v1.WatchEntriesRequest{}))
				if err != nil {
					t.Fatal(err)
				}
				defer st.Close()
				waitFor(t, 30*time.Second, "the stream to take its slot", func() bool { return len(s.srv.watch) == 1 })
			} else {
				st, err := sc.cluster.SaveSnapshot(ctx, connect.NewRequest(&v1.SaveSnapshotRequest{}))
				if err != nil {
					t.Fatal(err)
				}
				defer st.Close()
				waitFor(t, 30*time.Second, "the snapshot stream to be served", func() bool {
					s.srv.streams.mu.Lock()
					defer s.srv.streams.mu.Unlock()
					return len(s.srv.streams.active) == 1
				})
				time.Sleep(500 * time.Millisecond) // into the full window: it blocks however the timing goes
			}
			s.srv.Close()
			sctx, scancel := context.WithTimeout(context.Background(), 15*time.Second)
			defer scancel()
			if err := s.http.Shutdown(sctx); err != nil {
				t.Fatalf("15s after Server.Close, http.Server.Shutdown: %v (a %s whose client stopped reading still runs)", err, which)
			}
		})
	}
}

// A watch that the server's Close ends says so (UNAVAILABLE): a stream that
// simply ended would read as the end of the ledger, and a client would not
// know to resume elsewhere.
func TestAWatchEndedByTheServersCloseIsUnavailable(t *testing.T) {
	s := startSingle(t, nodeOpts{})
	setupCatalog(t, newClients(s.url, ""))
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	st, err := newClients(s.url, "").ledger.WatchEntries(ctx, connect.NewRequest(&v1.WatchEntriesRequest{}))
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	waitFor(t, 30*time.Second, "the watch to take its slot", func() bool { return len(s.srv.watch) == 1 })
	s.srv.Close()
	for st.Receive() {
	}
	if code := connect.CodeOf(st.Err()); code != connect.CodeUnavailable {
		t.Fatalf("the watch ended by Close: %v; want unavailable", st.Err())
	}
}

// One API key cannot take every WatchEntries slot of a node: past its own
// limit it is refused, while another key still gets streams, and a stream
// it closes gives the slot back.
func TestOneKeyCannotTakeEveryWatchSlot(t *testing.T) {
	keyA, keyB := "read-key-aaaaaaaaaaaaaaaa", "read-key-bbbbbbbbbbbbbbbb"
	s := startSingle(t, nodeOpts{rpc: Options{
		APIKeys:           []APIKey{{Scope: ScopeRead, Key: keyA}, {Scope: ScopeRead, Key: keyB}},
		MaxWatchers:       8,
		MaxWatchersPerKey: 2,
	}})
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	open := func(key string) *connect.ServerStreamForClient[v1.WatchEntriesResponse] {
		t.Helper()
		st, err := newClients(s.url, key).ledger.WatchEntries(ctx, connect.NewRequest(&v1.WatchEntriesRequest{}))
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { st.Close() })
		return st
	}
	refused := func(key string) {
		t.Helper()
		st := open(key)
		for st.Receive() {
		}
		if code := connect.CodeOf(st.Err()); code != connect.CodeResourceExhausted {
			t.Fatalf("a stream past the key's limit: %v; want resource_exhausted", st.Err())
		}
	}
	held := func(n int) func() bool { return func() bool { return len(s.srv.watch) == n } }

	first := open(keyA)
	open(keyA)
	waitFor(t, 30*time.Second, "key A's two streams", held(2))
	refused(keyA)
	open(keyB)
	waitFor(t, 30*time.Second, "key B's stream beside them", held(3))

	first.Close()
	waitFor(t, 30*time.Second, "key A's closed stream to give its slot back", held(2))
	open(keyA)
	waitFor(t, 30*time.Second, "key A's new stream", held(3))
}

// TestAQuietWatchOutlivesItsWriteTimeout: the write deadline of a stream's
// message is lifted once it is written. An HTTP/2 stream whose deadline
// passes is reset even while it has nothing to write, so a WatchEntries
// stream that saw no new entry for StreamWriteTimeout (30 s: a quiet
// customer's filter, a quiet night) was cut with INTERNAL, in every
// protocol over HTTP/2.
func TestAQuietWatchOutlivesItsWriteTimeout(t *testing.T) {
	const timeout = time.Second
	s := startSingle(t, nodeOpts{rpc: Options{StreamWriteTimeout: timeout}})
	c := newClients(s.url, "")
	setupCatalog(t, c)
	grant := func(id string) {
		call(t, c.grant.CreateGrant, &v1.CreateGrantRequest{Id: id, CustomerId: "acme", CreditTypeId: "ai-credits",
			Category: v1.GrantCategory_GRANT_CATEGORY_PROMOTIONAL, Amount: "5"})
	}
	grant("g-early")
	protocols := map[string][]connect.ClientOption{"connect": nil, "grpc": {connect.WithGRPC()}, "grpc-web": {connect.WithGRPCWeb()}}
	streams := map[string]*connect.ServerStreamForClient[v1.WatchEntriesResponse]{}
	for name, opts := range protocols {
		stream, err := newClients(s.url, "", opts...).ledger.WatchEntries(ctxT(t), connect.NewRequest(&v1.WatchEntriesRequest{}))
		if err != nil {
			t.Fatalf("%s: %v", name, err)
		}
		defer stream.Close()
		if !stream.Receive() || stream.Msg().Entries[0].GrantId != "g-early" {
			t.Fatalf("%s: first message %v, %v; want the grant g-early", name, stream.Msg(), stream.Err())
		}
		streams[name] = stream
	}
	// Quiet for longer than the write timeout (a slower machine waits
	// longer, which only makes the test stricter).
	time.Sleep(3 * timeout)
	grant("g-late")
	for name, stream := range streams {
		if !stream.Receive() {
			t.Fatalf("%s: the quiet stream ended: %v", name, stream.Err())
		}
		if es := stream.Msg().Entries; len(es) == 0 || es[0].GrantId != "g-late" {
			t.Fatalf("%s: entries %v, want the grant g-late", name, es)
		}
	}
}

// TestSnapshotStreamsAreBounded: a node serves at most MaxSnapshotStreams
// SaveSnapshot streams at once (each reads the whole state file and holds a
// read transaction on it); one more is RESOURCE_EXHAUSTED, and a stream
// that ends gives its slot back. Snapshots saved from a cron job that
// overlap (each slower than the period) piled up without bound.
func TestSnapshotStreamsAreBounded(t *testing.T) {
	s := startSingle(t, nodeOpts{rpc: Options{MaxSnapshotStreams: 2}})
	burnEntries(t, newClients(s.url, ""), 5000)
	sc, tr := stalledStreamClients(s.url)
	defer tr.CloseIdleConnections()
	var cancels []context.CancelFunc
	defer func() {
		for _, c := range cancels {
			c()
		}
	}()
	for i := range 2 {
		ctx, cancel := context.WithCancel(context.Background())
		cancels = append(cancels, cancel)
		st, err := sc.cluster.SaveSnapshot(ctx, connect.NewRequest(&v1.SaveSnapshotRequest{}))
		if err != nil {
			t.Fatal(err)
		}
		defer st.Close()
		waitFor(t, 30*time.Second, fmt.Sprintf("snapshot stream %d to be served", i+1), func() bool { return activeStreams(s) == i+1 })
	}
	read := func() error {
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		st, err := newClients(s.url, "").cluster.SaveSnapshot(ctx, connect.NewRequest(&v1.SaveSnapshotRequest{}))
		if err != nil {
			return err
		}
		defer st.Close()
		for st.Receive() {
		}
		return st.Err()
	}
	if err := read(); connect.CodeOf(err) != connect.CodeResourceExhausted {
		t.Fatalf("a third snapshot while two are served: %v; want resource_exhausted", err)
	}
	cancels[0]()
	waitFor(t, 30*time.Second, "the cancelled stream's slot to come back", func() bool { return activeStreams(s) == 1 })
	if err := read(); err != nil {
		t.Fatalf("a snapshot once a slot is free: %v", err)
	}
}

// activeStreams counts the streams a server serves.
func activeStreams(s *testServer) int {
	s.srv.streams.mu.Lock()
	defer s.srv.streams.mu.Unlock()
	return len(s.srv.streams.active)
}
