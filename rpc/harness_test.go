package rpc

import (
	"context"
	"errors"
	"log/slog"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"connectrpc.com/connect"

	"github.com/creditd/creditd/gen/creditd/v1/creditdv1connect"
	"github.com/creditd/creditd/node"
)

func testLogger() *slog.Logger {
	if os.Getenv("CREDITD_TEST_LOG") == "" {
		return slog.New(slog.DiscardHandler)
	}
	return slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelDebug}))
}

// testServer is one node with its API served on a real loopback port.
type testServer struct {
	id   string
	n    *node.Node
	srv  *Server
	http *http.Server
	url  string
}

type nodeOpts struct {
	bootstrapExpect int
	join            []string
	rpc             Options
	nodeConfig      func(*node.Config)
}

// startServer starts a node and its API. The API listener is opened first
// so that the node can advertise its real address to the others.
func startServer(t testing.TB, id string, o nodeOpts) *testServer {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatalf("listen: %v", err)
	}
	cfg := node.Config{
		NodeID:             id,
		DataDir:            filepath.Join(t.TempDir(), id),
		RaftAddr:           "127.0.0.1:0",
		GossipAddr:         "127.0.0.1:0",
		RPCAddr:            ln.Addr().String(),
		BootstrapExpect:    o.bootstrapExpect,
		Join:               o.join,
		HeartbeatTimeout:   time.Second,
		ElectionTimeout:    time.Second,
		LeaderLeaseTimeout: time.Second,
		LeaderWait:         5 * time.Second,
		TickInterval:       -1,
		Logger:             testLogger(),
	}
	if o.nodeConfig != nil {
		o.nodeConfig(&cfg)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	n, err := node.Start(ctx, cfg)
	if err != nil {
		ln.Close()
		t.Fatalf("start node %s: %v", id, err)
	}
	if o.rpc.Logger == nil {
		o.rpc.Logger = testLogger()
	}
	srv, err := New(n, o.rpc)
	if err != nil {
		t.Fatalf("rpc.New: %v", err)
	}
	hs := NewHTTPServer("", srv.Handler())
	served := make(chan struct{})
	go func() {
		defer close(served)
		_ = hs.Serve(ln)
	}()
	ts := &testServer{id: id, n: n, srv: srv, http: hs, url: "http://" + ln.Addr().String()}
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		srv.Close()
		_ = hs.Shutdown(ctx)
		<-served
		_ = n.Shutdown(ctx)
	})
	return ts
}

// startSingle starts a one-node cluster and waits until it takes writes.
func startSingle(t testing.TB, o nodeOpts) *testServer {
	t.Helper()
	o.bootstrapExpect = 1
	s := startServer(t, "n1", o)
	waitFor(t, 60*time.Second, "the single node to lead", func() bool { return s.n.IsLeader() && s.n.Ready() })
	return s
}

// startThree starts a 3-node cluster and returns its servers, leader first.
func startThree(t testing.TB, o nodeOpts) []*testServer {
	t.Helper()
	o.bootstrapExpect = 3
	first := startServer(t, "n1", o)
	o.join = []string{first.n.GossipAddr()}
	all := []*testServer{first, startServer(t, "n2", o), startServer(t, "n3", o)}
	var out []*testServer
	waitFor(t, 60*time.Second, "a leader and two ready followers", func() bool {
		out = out[:0]
		var followers []*testServer
		for _, s := range all {
			switch {
			case !s.n.Ready():
				return false
			case s.n.IsLeader():
				out = append(out, s)
			default:
				followers = append(followers, s)
			}
		}
		if len(out) != 1 {
			return false
		}
		out = append(out, followers...)
		return len(out) == 3
	})
	return out
}

// waitFor polls cond until it holds, failing the test after timeout.
func waitFor(t testing.TB, timeout time.Duration, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out after %s waiting for %s", timeout, what)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

var (
	h2cOnce   sync.Once
	h2cClient *http.Client
)

// h2c is an HTTP/2 cleartext client, as gRPC and Connect clients use.
func h2c() *http.Client {
	h2cOnce.Do(func() {
		var p http.Protocols
		p.SetUnencryptedHTTP2(true)
		h2cClient = &http.Client{Transport: &http.Transport{Protocols: &p, MaxIdleConnsPerHost: 128}, Timeout: 60 * time.Second}
	})
	return h2cClient
}

// bearer adds an API key to every request of a client.
type bearer string

func (b bearer) WrapUnary(next connect.UnaryFunc) connect.UnaryFunc {
	return func(ctx context.Context, req connect.AnyRequest) (connect.AnyResponse, error) {
		if b != "" {
			req.Header().Set("Authorization", "Bearer "+string(b))
		}
		return next(ctx, req)
	}
}

func (b bearer) WrapStreamingClient(next connect.StreamingClientFunc) connect.StreamingClientFunc {
	return func(ctx context.Context, spec connect.Spec) connect.StreamingClientConn {
		conn := next(ctx, spec)
		if b != "" {
			conn.RequestHeader().Set("Authorization", "Bearer "+string(b))
		}
		return conn
	}
}

func (b bearer) WrapStreamingHandler(next connect.StreamingHandlerFunc) connect.StreamingHandlerFunc {
	return next
}

// clients of every service at one node.
type clients struct {
	catalog  creditdv1connect.CatalogServiceClient
	usage    creditdv1connect.UsageServiceClient
	grant    creditdv1connect.GrantServiceClient
	balance  creditdv1connect.BalanceServiceClient
	ledger   creditdv1connect.LedgerServiceClient
	purchase creditdv1connect.PurchaseServiceClient
	cluster  creditdv1connect.ClusterServiceClient
}

func newClients(url, key string, extra ...connect.ClientOption) *clients {
	opts := append([]connect.ClientOption{connect.WithInterceptors(bearer(key))}, extra...)
	hc := h2c()
	return &clients{
		catalog:  creditdv1connect.NewCatalogServiceClient(hc, url, opts...),
		usage:    creditdv1connect.NewUsageServiceClient(hc, url, opts...),
		grant:    creditdv1connect.NewGrantServiceClient(hc, url, opts...),
		balance:  creditdv1connect.NewBalanceServiceClient(hc, url, opts...),
		ledger:   creditdv1connect.NewLedgerServiceClient(hc, url, opts...),
		purchase: creditdv1connect.NewPurchaseServiceClient(hc, url, opts...),
		cluster:  creditdv1connect.NewClusterServiceClient(hc, url, opts...),
	}
}

func ctxT(t testing.TB) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	t.Cleanup(cancel)
	return ctx
}

// call sends msg with fn and fails the test on an error.
func call[Req, Res any](t testing.TB, fn func(context.Context, *connect.Request[Req]) (*connect.Response[Res], error), msg *Req) *Res {
	t.Helper()
	res, err := fn(ctxT(t), connect.NewRequest(msg))
	if err != nil {
		t.Fatalf("%T: %v", msg, err)
	}
	return res.Msg
}

// callErr sends msg with fn and returns the Connect error (nil if none).
func callErr[Req, Res any](t testing.TB, fn func(context.Context, *connect.Request[Req]) (*connect.Response[Res], error), msg *Req) *connect.Error {
	t.Helper()
	_, err := fn(ctxT(t), connect.NewRequest(msg))
	if err == nil {
		return nil
	}
	ce := new(connect.Error)
	if !errors.As(err, &ce) {
		t.Fatalf("%T: not a Connect error: %v", msg, err)
	}
	return ce
}
