package rpc

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"sort"
	"sync"
	"sync/atomic"
	"time"

	"connectrpc.com/connect"

	"github.com/creditd/creditd/node"
)

// RequestIDHeader carries a request's id; a valid one from the client is
// kept (and forwarded to the leader), otherwise one is made.
const RequestIDHeader = "X-Request-Id"

type requestIDKey struct{}

func requestIDFrom(ctx context.Context) string {
	id, _ := ctx.Value(requestIDKey{}).(string)
	return id
}

func newRequestID() string {
	var b [12]byte
	_, _ = rand.Read(b[:]) // crypto/rand.Read never fails (Go ≥ 1.24)
	return hex.EncodeToString(b[:])
}

func validRequestID(s string) bool {
	return len(s) > 0 && len(s) <= 128 && validIDChars(s)
}

func validIDChars(s string) bool {
	for i := 0; i < len(s); i++ {
		c := s[i]
		if !(c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '.' || c == '_' || c == ':' || c == '-') {
			return false
		}
	}
	return true
}

// observer is the interceptor carrying request ids, auth, logging and
// metrics, in that order, for unary and streaming calls alike. On the
// server's API routes front has done the first two before Connect read the
// request (frontCall); the observer then logs and counts.
type observer struct {
	s *Server
}

// frontCall is what front learned of a call, for the observer.
type frontCall struct {
	rid  string
	seen atomic.Bool // the observer saw the call: Connect decoded it
}

type frontCallKey struct{}

func (o *observer) begin(ctx context.Context, procedure, peer string, h http.Header) (context.Context, string, error) {
	if fc, ok := ctx.Value(frontCallKey{}).(*frontCall); ok {
		fc.seen.Store(true)
		return ctx, fc.rid, nil
	}
	rid := h.Get(RequestIDHeader)
	if !validRequestID(rid) {
		rid = newRequestID()
	}
	ctx = context.WithValue(ctx, requestIDKey{}, rid)
	ctx, err := o.s.auth.authorize(ctx, procedure, peer, h.Get("Authorization"))
	return ctx, rid, err
}

// errRefusedWhileDecoding stands for what Connect answered a call it
// refused before the observer saw it (a body that does not decode, or is
// over MaxMessageBytes), in logs and metrics.
var errRefusedWhileDecoding = connect.NewError(connect.CodeInvalidArgument, errors.New("refused while reading the request"))

// front identifies and authorizes an API call before Connect reads its
// body: an anonymous client must not make the server read and decode up to
// MaxMessageBytes, and gets UNAUTHENTICATED whatever it sent. Every answer
// carries the request id, a refusal or a body that does not decode
// included, and every call is logged and counted.
func (s *Server) front(h http.Handler) http.Handler {
	o := &observer{s: s}
	errs := connect.NewErrorWriter()
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		start := time.Now()
		proc, peer := r.URL.Path, r.RemoteAddr
		ctx, rid, err := o.begin(r.Context(), proc, peer, r.Header)
		w.Header().Set(RequestIDHeader, rid)
		if err != nil {
			o.end(ctx, proc, peer, rid, start, err)
			_ = errs.Write(w, r, err)
			return
		}
		fc := &frontCall{rid: rid}
		h.ServeHTTP(w, r.WithContext(context.WithValue(ctx, frontCallKey{}, fc)))
		if !fc.seen.Load() {
			o.end(ctx, proc, peer, rid, start, errRefusedWhileDecoding)
		}
	})
}

func (o *observer) end(ctx context.Context, procedure, peer, rid string, start time.Time, err error) {
	code := connect.CodeOf(err)
	if err == nil {
		code = 0
	}
	o.s.metrics.observe(procedure, code, time.Since(start))
	level := slog.LevelDebug
	switch {
	case code == connect.CodeInternal || code == connect.CodeUnknown || code == connect.CodeDataLoss:
		level = slog.LevelError
	case err != nil:
		level = slog.LevelInfo
	}
	if !o.s.log.Enabled(ctx, level) {
		return
	}
	attrs := []slog.Attr{
		slog.String("procedure", procedure),
		slog.String("request_id", rid),
		slog.String("peer", peer),
		slog.String("principal", principalFrom(ctx)),
		slog.Duration("duration", time.Since(start)),
	}
	if err != nil {
		attrs = append(attrs, slog.String("code", code.String()), slog.String("err", err.Error()))
	}
	o.s.log.LogAttrs(ctx, level, "rpc", attrs...)
}

func (o *observer) WrapUnary(next connect.UnaryFunc) connect.UnaryFunc {
	return func(ctx context.Context, req connect.AnyRequest) (connect.AnyResponse, error) {
		if req.Spec().IsClient {
			return next(ctx, req)
		}
		start := time.Now()
		proc, peer := req.Spec().Procedure, req.Peer().Addr
		// A client without a deadline must not hold a handler forever
		// (a write waiting on a cluster that lost its quorum).
		if d, ok := ctx.Deadline(); !ok || time.Until(d) > o.s.opts.RequestTimeout {
			var cancel context.CancelFunc
			ctx, cancel = context.WithTimeout(ctx, o.s.opts.RequestTimeout)
			defer cancel()
		}
		ctx, rid, err := o.begin(ctx, proc, peer, req.Header())
		var res connect.AnyResponse
		if err == nil {
			res, err = next(ctx, req)
		}
		o.end(ctx, proc, peer, rid, start, err)
		if _, fronted := ctx.Value(frontCallKey{}).(*frontCall); fronted {
			return res, err // front has put the id on the answer
		}
		if err != nil {
			var ce *connect.Error
			if errors.As(err, &ce) {
				ce.Meta().Set(RequestIDHeader, rid)
			}
			return nil, err
		}
		res.Header().Set(RequestIDHeader, rid)
		return res, nil
	}
}

func (o *observer) WrapStreamingClient(next connect.StreamingClientFunc) connect.StreamingClientFunc {
	return next
}

func (o *observer) WrapStreamingHandler(next connect.StreamingHandlerFunc) connect.StreamingHandlerFunc {
	return func(ctx context.Context, conn connect.StreamingHandlerConn) error {
		start := time.Now()
		proc, peer := conn.Spec().Procedure, conn.Peer().Addr
		ctx, rid, err := o.begin(ctx, proc, peer, conn.RequestHeader())
		conn.ResponseHeader().Set(RequestIDHeader, rid)
		if err == nil {
			err = next(ctx, conn)
		}
		o.end(ctx, proc, peer, rid, start, err)
		return err
	}
}

// metrics counts calls by procedure and code, and their total time; enough
// for a dashboard's rates and mean latencies (GET /metrics, Prometheus text).
type metrics struct {
	mu    sync.Mutex
	procs map[string]*procMetrics
	// forwarded counts requests sent on to the leader.
	forwarded atomic.Uint64
}

type procMetrics struct {
	byCode  [17]atomic.Uint64 // index: connect.Code, 0 = ok
	totalNs atomic.Uint64
}

func newMetrics() *metrics { return &metrics{procs: make(map[string]*procMetrics)} }

func (m *metrics) proc(name string) *procMetrics {
	m.mu.Lock()
	defer m.mu.Unlock()
	p := m.procs[name]
	if p == nil {
		p = &procMetrics{}
		m.procs[name] = p
	}
	return p
}

func (m *metrics) observe(procedure string, code connect.Code, d time.Duration) {
	p := m.proc(procedure)
	if int(code) >= len(p.byCode) {
		code = connect.CodeUnknown
	}
	p.byCode[code].Add(1)
	p.totalNs.Add(uint64(d.Nanoseconds()))
}

func (m *metrics) writeTo(w io.Writer) {
	m.mu.Lock()
	names := make([]string, 0, len(m.procs))
	for n := range m.procs {
		names = append(names, n)
	}
	m.mu.Unlock()
	sort.Strings(names)
	fmt.Fprintln(w, "# TYPE creditd_rpc_requests_total counter")
	for _, n := range names {
		p := m.proc(n)
		for c := range p.byCode {
			if v := p.byCode[c].Load(); v > 0 {
				code := "ok"
				if c > 0 {
					code = connect.Code(c).String()
				}
				fmt.Fprintf(w, "creditd_rpc_requests_total{procedure=%q,code=%q} %d\n", n, code, v)
			}
		}
	}
	fmt.Fprintln(w, "# TYPE creditd_rpc_duration_seconds_sum counter")
	for _, n := range names {
		fmt.Fprintf(w, "creditd_rpc_duration_seconds_sum{procedure=%q} %g\n", n, float64(m.proc(n).totalNs.Load())/1e9)
	}
	fmt.Fprintln(w, "# TYPE creditd_rpc_forwarded_total counter")
	fmt.Fprintf(w, "creditd_rpc_forwarded_total %d\n", m.forwarded.Load())
}

// writeNodeMetrics prints the node's write totals: with the rates of their
// sums, a dashboard shows where a write's time goes (time to commit, to
// apply) and how many commands group commit puts in an entry.
func writeNodeMetrics(w io.Writer, st node.WriteStats) {
	for _, m := range []struct {
		name, help string
		v          any
	}{
		{"creditd_write_entries_total", "log entries this node appended as leader", st.Entries},
		{"creditd_write_commands_total", "commands in them", st.Commands},
		{"creditd_write_applied_entries_total", "entries that committed and were applied", st.Applied},
		{"creditd_write_commit_seconds_sum", "time from append to commit, summed over applied entries", st.Commit.Seconds()},
		{"creditd_write_apply_seconds_sum", "time from commit to results, summed over applied entries", st.Apply.Seconds()},
	} {
		fmt.Fprintf(w, "# HELP %s %s\n# TYPE %s counter\n%s %v\n", m.name, m.help, m.name, m.name, m.v)
	}
}
