package rpc

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"sync"
	"time"

	"connectrpc.com/connect"
	"connectrpc.com/grpchealth"
	"connectrpc.com/grpcreflect"

	"github.com/creditd/creditd/fsm"
	"github.com/creditd/creditd/gen/creditd/v1/creditdv1connect"
	"github.com/creditd/creditd/node"
)

// Options configure a Server. The zero value serves loopback clients only.
type Options struct {
	// APIKeys are the accepted bearer tokens. None: only loopback clients
	// are accepted (New logs a warning).
	APIKeys []APIKey
	// Logger receives request logs (errors at Info and above, successes at
	// Debug). nil = discard.
	Logger *slog.Logger
	// Extra routes mounted on the same mux (billing's POST
	// /webhooks/stripe). They bypass API-key auth: they authenticate
	// themselves.
	Extra map[string]http.Handler
	// MaxMessageBytes bounds a request message. 0 = DefaultMaxMessageBytes.
	MaxMessageBytes int
	// ForwardTimeout bounds one request forwarded to the leader (the
	// caller's deadline applies too). 0 = 30s.
	ForwardTimeout time.Duration
	// ForwardTLS, when set, makes forwarding use HTTPS with this config
	// (the cluster serves TLS); nil = cleartext HTTP/2 (h2c).
	ForwardTLS *tls.Config
	// RequestTimeout bounds a unary call: reading its request (a client
	// trickling its body holds a connection and a goroutine until then),
	// writing its answer, and its handler when the client sent no
	// deadline of its own (a client's deadline applies as sent, up to
	// this). Streams (WatchEntries, SaveSnapshot) are not bounded by it.
	// 0 = 60s.
	RequestTimeout time.Duration
	// MaxWatchers bounds concurrent WatchEntries streams on this node.
	// 0 = 256.
	MaxWatchers int
	// MaxWatchersPerKey bounds the WatchEntries streams one API key holds
	// on this node, so that a runaway consumer leaves slots for others.
	// Loopback clients of a node without keys are not bounded by it.
	// 0 = a quarter of MaxWatchers (at least 1).
	MaxWatchersPerKey int
	// MaxSnapshotStreams bounds concurrent SaveSnapshot streams on this
	// node: each reads the whole state file, and holds a read transaction
	// on it, which keeps the pages later writes free from being reused (the
	// file grows while snapshots overlap). `snapshot save`, `export --addr`
	// and `report --addr` each take one, often at the same hour. 0 = 4.
	MaxSnapshotStreams int
	// StreamWriteTimeout bounds the write of each message of a stream
	// (WatchEntries, SaveSnapshot): a client that stopped reading loses
	// its stream then. 0 = 30s.
	StreamWriteTimeout time.Duration
	// Payments, when set, looks up how a customer completes a self-serve
	// payment, for GetPurchase's payment_action (cmd/creditd adapts the
	// billing connector to it; rpc does not import billing). nil = none.
	Payments PaymentLookup
}

// PaymentLookup returns how the customer completes the self-serve payment
// of a purchase. It may call the billing provider, so it gets a deadline.
type PaymentLookup func(ctx context.Context, purchaseID string) (PaymentAction, error)

// PaymentAction is what a front end needs to complete a payment: one of
// ClientSecret and CheckoutURL, and the provider's status.
type PaymentAction struct {
	ClientSecret   string
	CheckoutURL    string
	ProviderStatus string
}

// compressMinBytes is the smallest answer worth compressing when the client
// accepts gzip.
const compressMinBytes = 1 << 20

// Server serves the creditd.v1 API of one node.
type Server struct {
	n       *node.Node
	opts    Options
	log     *slog.Logger
	auth    *authenticator
	metrics *metrics
	fwd     *forwarder
	watch   chan struct{} // semaphore of WatchEntries streams
	snaps   chan struct{} // semaphore of SaveSnapshot streams
	// watchers counts each API key's WatchEntries streams, so that one
	// key cannot take every slot of watch.
	watchers watcherCounts
	done     chan struct{} // closed by Close: ends streams
	streams  streamControls
	once     sync.Once
	handler  http.Handler
}

// New builds the API server of node n.
func New(n *node.Node, opts Options) (*Server, error) {
	if n == nil {
		return nil, errors.New("rpc: nil node")
	}
	if opts.MaxMessageBytes == 0 {
		opts.MaxMessageBytes = DefaultMaxMessageBytes
	}
	if opts.MaxMessageBytes < 1<<10 || opts.MaxMessageBytes > 256<<20 {
		return nil, fmt.Errorf("rpc: MaxMessageBytes %d out of range [1 KiB, 256 MiB]", opts.MaxMessageBytes)
	}
	if opts.ForwardTimeout == 0 {
		opts.ForwardTimeout = 30 * time.Second
	}
	if opts.ForwardTimeout < 0 {
		return nil, errors.New("rpc: negative ForwardTimeout")
	}
	if opts.RequestTimeout == 0 {
		opts.RequestTimeout = 60 * time.Second
	}
	if opts.RequestTimeout < 0 {
		return nil, errors.New("rpc: negative RequestTimeout")
	}
	if opts.MaxWatchers == 0 {
		opts.MaxWatchers = 256
	}
	if opts.StreamWriteTimeout == 0 {
		opts.StreamWriteTimeout = defaultStreamWriteTimeout
	}
	if opts.StreamWriteTimeout < 0 {
		return nil, errors.New("rpc: negative StreamWriteTimeout")
	}
	if opts.MaxWatchers < 0 || opts.MaxWatchers > 1<<16 {
		return nil, fmt.Errorf("rpc: MaxWatchers %d out of range", opts.MaxWatchers)
	}
	if opts.MaxSnapshotStreams == 0 {
		opts.MaxSnapshotStreams = 4
	}
	if opts.MaxSnapshotStreams < 0 || opts.MaxSnapshotStreams > 64 {
		return nil, fmt.Errorf("rpc: MaxSnapshotStreams %d out of range 1..64", opts.MaxSnapshotStreams)
	}
	if opts.MaxWatchersPerKey == 0 {
		opts.MaxWatchersPerKey = max(1, opts.MaxWatchers/4)
	}
	if opts.MaxWatchersPerKey < 0 || opts.MaxWatchersPerKey > opts.MaxWatchers {
		return nil, fmt.Errorf("rpc: MaxWatchersPerKey %d outside 1..MaxWatchers (%d)", opts.MaxWatchersPerKey, opts.MaxWatchers)
	}
	log := opts.Logger
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	s := &Server{
		n:       n,
		opts:    opts,
		log:     log,
		auth:    newAuthenticator(opts.APIKeys),
		metrics: newMetrics(),
		watch:   make(chan struct{}, opts.MaxWatchers),
		snaps:   make(chan struct{}, opts.MaxSnapshotStreams),
		watchers: watcherCounts{
			max:   opts.MaxWatchersPerKey,
			byKey: map[string]int{},
		},
		done: make(chan struct{}),
	}
	s.streams.timeout = opts.StreamWriteTimeout
	s.fwd = newForwarder(s)
	if len(opts.APIKeys) == 0 {
		log.Warn("no API keys configured: the API accepts only loopback clients")
	}
	h, err := s.routes()
	if err != nil {
		return nil, err
	}
	s.handler = h
	return s, nil
}

// Handler serves every service, /healthz, /readyz, /metrics, gRPC health,
// reflection and the Extra routes.
func (s *Server) Handler() http.Handler { return s.handler }

// Close ends WatchEntries (with UNAVAILABLE) and SaveSnapshot streams,
// those whose client stopped reading too (within streamCloseGrace), and
// closes idle forwarding connections. Call it before
// http.Server.Shutdown, which waits for streams to end.
func (s *Server) Close() {
	s.once.Do(func() {
		close(s.done)
		s.streams.close()
		s.fwd.close()
	})
}

func (s *Server) routes() (http.Handler, error) {
	opts := []connect.HandlerOption{
		connect.WithInterceptors(&observer{s: s}),
		connect.WithCodec(protoCodec{}),
		withStrictJSON(),
		connect.WithReadMaxBytes(s.opts.MaxMessageBytes),
		connect.WithSendMaxBytes(s.opts.answerMaxBytes()),
		// Answers go to services in the same network: gzip would cost more
		// CPU than the bytes it saves, except for the largest answers.
		connect.WithCompressMinBytes(compressMinBytes),
	}
	a := &api{s: s}
	mux := http.NewServeMux()
	for _, reg := range []func() (string, http.Handler){
		func() (string, http.Handler) { return creditdv1connect.NewCatalogServiceHandler(a, opts...) },
		func() (string, http.Handler) { return creditdv1connect.NewUsageServiceHandler(a, opts...) },
		func() (string, http.Handler) { return creditdv1connect.NewGrantServiceHandler(a, opts...) },
		func() (string, http.Handler) { return creditdv1connect.NewBalanceServiceHandler(a, opts...) },
		func() (string, http.Handler) { return creditdv1connect.NewLedgerServiceHandler(a, opts...) },
		func() (string, http.Handler) { return creditdv1connect.NewPurchaseServiceHandler(a, opts...) },
		func() (string, http.Handler) { return creditdv1connect.NewClusterServiceHandler(a, opts...) },
	} {
		path, h := reg()
		mux.Handle(path, s.bounded(s.front(s.strictJSON(h))))
	}
	// Reflection and health answer anyone (probes, grpcurl), so a client
	// trickling its body must be cut as on the API's routes. A reflection
	// exchange is short: RequestTimeout bounds it too.
	reflector := grpcreflect.NewStaticReflector(serviceNames...)
	for _, reg := range []func() (string, http.Handler){
		func() (string, http.Handler) { return grpcreflect.NewHandlerV1(reflector) },
		func() (string, http.Handler) { return grpcreflect.NewHandlerV1Alpha(reflector) },
		func() (string, http.Handler) { return grpchealth.NewHandler(&healthChecker{s: s}) },
	} {
		path, h := reg()
		mux.Handle(path, s.bounded(h))
	}
	mux.HandleFunc("GET /healthz", func(w http.ResponseWriter, _ *http.Request) {
		w.Header().Set("Content-Type", "text/plain; charset=utf-8")
		fmt.Fprintln(w, "ok")
	})
	mux.HandleFunc("GET /readyz", s.readyz)
	mux.HandleFunc("GET /metrics", func(w http.ResponseWriter, _ *http.Request) {
		w.Header().Set("Content-Type", "text/plain; version=0.0.4")
		s.metrics.writeTo(w)
		writeNodeMetrics(w, s.n.WriteStats())
	})
	for pattern, h := range s.opts.Extra {
		if h == nil {
			return nil, fmt.Errorf("rpc: Extra route %q has a nil handler", pattern)
		}
		if err := safeHandle(mux, pattern, h); err != nil {
			return nil, err
		}
	}
	return mux, nil
}

// streams are the procedures whose answers last: they are bounded by
// MaxWatchers, a write deadline per message (streamWriteTimeout) and Close,
// not RequestTimeout.
var streams = map[string]bool{
	creditdv1connect.LedgerServiceWatchEntriesProcedure:  true,
	creditdv1connect.ClusterServiceSaveSnapshotProcedure: true,
}

// bounded gives a unary call's connection read and write deadlines from
// RequestTimeout (http.Server's own timeouts would cut streams too), and a
// stream's handler the means to give each message its own write deadline
// (streamControls). net/http clears deadlines once the call ends, for the
// next request on the connection, which may be a stream.
func (s *Server) bounded(h http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		rc := http.NewResponseController(w)
		if streams[r.URL.Path] {
			defer s.streams.track(rc)()
			r = r.WithContext(context.WithValue(r.Context(), streamControlKey{}, rc))
		} else {
			now := time.Now()
			// An error means the writer cannot take deadlines (not a
			// network connection); the handler's context deadline still
			// applies. The answer may take as long again to write.
			_ = rc.SetReadDeadline(now.Add(s.opts.RequestTimeout))
			_ = rc.SetWriteDeadline(now.Add(2 * s.opts.RequestTimeout))
		}
		h.ServeHTTP(w, r)
	})
}

// safeHandle turns ServeMux's panic on a conflicting pattern into an error.
func safeHandle(mux *http.ServeMux, pattern string, h http.Handler) (err error) {
	defer func() {
		if r := recover(); r != nil {
			err = fmt.Errorf("rpc: Extra route %q: %v", pattern, r)
		}
	}()
	mux.Handle(pattern, h)
	return nil
}

var serviceNames = []string{
	creditdv1connect.CatalogServiceName,
	creditdv1connect.UsageServiceName,
	creditdv1connect.GrantServiceName,
	creditdv1connect.BalanceServiceName,
	creditdv1connect.LedgerServiceName,
	creditdv1connect.PurchaseServiceName,
	creditdv1connect.ClusterServiceName,
}

// readyz answers 200 when the node leads and takes writes, or follows a
// known leader and has caught up (node.Node.Readiness); 503 with the reason
// otherwise.
func (s *Server) readyz(w http.ResponseWriter, _ *http.Request) {
	w.Header().Set("Content-Type", "text/plain; charset=utf-8")
	if ready, reason := s.n.Readiness(); !ready {
		w.WriteHeader(http.StatusServiceUnavailable)
		fmt.Fprintln(w, "not ready: "+reason)
		return
	}
	fmt.Fprintln(w, "ready")
}

// healthChecker answers the standard gRPC health check: SERVING when the
// node is ready (as /readyz), for the whole server and for each creditd
// service.
type healthChecker struct{ s *Server }

func (h *healthChecker) Check(_ context.Context, req *grpchealth.CheckRequest) (*grpchealth.CheckResponse, error) {
	if req.Service != "" {
		known := false
		for _, n := range serviceNames {
			known = known || n == req.Service
		}
		if !known {
			return nil, connect.NewError(connect.CodeNotFound, fmt.Errorf("unknown service %s", req.Service))
		}
	}
	if h.s.n.Ready() {
		return &grpchealth.CheckResponse{Status: grpchealth.StatusServing}, nil
	}
	return &grpchealth.CheckResponse{Status: grpchealth.StatusNotServing}, nil
}

// NewHTTPServer returns an http.Server for h that speaks HTTP/1.1 and
// HTTP/2 both over TLS and in cleartext (h2c), so Connect, gRPC and
// gRPC-Web clients, curl and grpcurl all work on one port. Its timeouts
// bound slow clients without cutting long WatchEntries streams.
func NewHTTPServer(addr string, h http.Handler) *http.Server {
	var p http.Protocols
	p.SetHTTP1(true)
	p.SetHTTP2(true)
	p.SetUnencryptedHTTP2(true)
	return &http.Server{
		Addr:              addr,
		Handler:           h,
		Protocols:         &p,
		ReadHeaderTimeout: 10 * time.Second,
		IdleTimeout:       2 * time.Minute,
		MaxHeaderBytes:    64 << 10,
	}
}

// state is the local replica's state machine.
func (s *Server) state() (*fsm.FSM, error) {
	f := s.n.FSM()
	if f == nil {
		return nil, errors.New("this node runs without a state machine")
	}
	return f, nil
}

// read runs fn on the local state, after confirming with a quorum that it
// is current unless stale is set. On a follower a linearizable read
// returns *node.NotLeaderError, which the caller forwards. A node whose
// state machine failed serves neither: its state will never catch up, and
// a stale read's applied index would not tell the caller so.
func (s *Server) read(ctx context.Context, stale bool, fn func(v *fsm.View) error) error {
	if err := s.n.Failure(); err != nil {
		return err
	}
	if !stale {
		if err := s.n.LinearizableRead(ctx); err != nil {
			return err
		}
	}
	f, err := s.state()
	if err != nil {
		return err
	}
	return f.View(fn)
}

// preRead runs fn on the local state before a write, to read what the
// write needs: credit type scales, a feature's credit type, a grant's or a
// reservation's, which never change once created, so any replica's copy that
// has them is right. A NotFound may only mean that this replica has not
// applied them yet: a follower lagging the leader, or a leader elected
// before it applied the whole log (after a restart that rebuilds the state,
// or an election won with committed entries still to apply). Then the state
// is confirmed current (node.LinearizableRead: on a follower
// *node.NotLeaderError, and the request is forwarded for the leader to
// decide; on a leader, once it has applied everything committed) and fn
// runs again.
func (s *Server) preRead(ctx context.Context, fn func(v *fsm.View) error) error {
	return s.preReadConfirming(ctx, func(v *fsm.View, _ bool) error { return fn(v) })
}

// preReadConfirming is preRead with fn told whether the state is confirmed
// current, for a caller that decides for itself what a NotFound on a
// confirmed state means.
func (s *Server) preReadConfirming(ctx context.Context, fn func(v *fsm.View, confirmed bool) error) error {
	f, err := s.state()
	if err != nil {
		return err
	}
	err = f.View(func(v *fsm.View) error { return fn(v, false) })
	if fsm.CodeOf(err) != fsm.CodeNotFound {
		return err
	}
	if err := s.n.LinearizableRead(ctx); err != nil {
		return err
	}
	return f.View(func(v *fsm.View) error { return fn(v, true) })
}

// apply proposes cmd and returns its result; a domain failure is the error.
func (s *Server) apply(ctx context.Context, cmd fsm.Command) (fsm.Result, error) {
	res, err := s.n.Apply(ctx, cmd)
	if err != nil {
		return res, err
	}
	if res.Err != nil {
		return res, res.Err
	}
	return res, nil
}
