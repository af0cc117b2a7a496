package rpc

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"net"
	"net/http"
	"sync"
	"time"

	"connectrpc.com/connect"

	"github.com/creditd/creditd/gen/creditd/v1/creditdv1connect"
	"github.com/creditd/creditd/node"
)

// ForwardedHeader marks a request a follower forwarded to the leader, with
// the follower's id. A node that is not the leader refuses such a request
// (UNAVAILABLE) rather than forwarding it again: leadership is moving, and
// a second hop could loop.
const ForwardedHeader = "Creditd-Forwarded-By"

// notLeaderHeader is on the answer of a node that refused a forwarded
// request because it does not lead (any more): nothing of the request was
// done there, so the follower sends it again, to the leader it learns.
const notLeaderHeader = "Creditd-Not-Leader"

// maxForwards bounds how often one request is forwarded: leadership may
// move on once more while it is on its way.
const maxForwards = 3

const (
	// maxLeaderClients bounds the cache of per-address clients; leaders
	// change rarely, so a full cache is simply emptied.
	maxLeaderClients = 16
	// leaderWait bounds how long a follower waits to learn the leader's
	// address before answering UNAVAILABLE.
	leaderWait = 5 * time.Second
)

// leaderClients are Connect clients of one leader address.
type leaderClients struct {
	catalog  creditdv1connect.CatalogServiceClient
	usage    creditdv1connect.UsageServiceClient
	grant    creditdv1connect.GrantServiceClient
	balance  creditdv1connect.BalanceServiceClient
	ledger   creditdv1connect.LedgerServiceClient
	purchase creditdv1connect.PurchaseServiceClient
	cluster  creditdv1connect.ClusterServiceClient
}

type forwarder struct {
	s         *Server
	transport *http.Transport
	client    *http.Client
	scheme    string
	mu        sync.Mutex
	clients   map[string]*leaderClients
}

func newForwarder(s *Server) *forwarder {
	var p http.Protocols
	scheme := "http"
	if s.opts.ForwardTLS != nil {
		p.SetHTTP2(true)
		scheme = "https"
	} else {
		p.SetUnencryptedHTTP2(true)
	}
	tr := &http.Transport{
		Protocols:             &p,
		DialContext:           (&net.Dialer{Timeout: 5 * time.Second, KeepAlive: 30 * time.Second}).DialContext,
		TLSClientConfig:       cloneTLS(s.opts.ForwardTLS),
		TLSHandshakeTimeout:   5 * time.Second,
		ResponseHeaderTimeout: s.opts.ForwardTimeout,
		IdleConnTimeout:       90 * time.Second,
		MaxIdleConnsPerHost:   64,
	}
	return &forwarder{
		s:         s,
		transport: tr,
		client:    &http.Client{Transport: ExplainSchemeMismatch(tr)},
		scheme:    scheme,
		clients:   make(map[string]*leaderClients),
	}
}

func cloneTLS(c *tls.Config) *tls.Config {
	if c == nil {
		return nil
	}
	return c.Clone()
}

func (f *forwarder) close() { f.transport.CloseIdleConnections() }

func (f *forwarder) clientsFor(addr string) *leaderClients {
	f.mu.Lock()
	defer f.mu.Unlock()
	if c, ok := f.clients[addr]; ok {
		return c
	}
	if len(f.clients) >= maxLeaderClients {
		clear(f.clients)
	}
	base := f.scheme + "://" + addr
	opts := []connect.ClientOption{
		connect.WithReadMaxBytes(f.s.opts.answerMaxBytes()),
		connect.WithSendMaxBytes(f.s.opts.MaxMessageBytes),
	}
	c := &leaderClients{
		catalog:  creditdv1connect.NewCatalogServiceClient(f.client, base, opts...),
		usage:    creditdv1connect.NewUsageServiceClient(f.client, base, opts...),
		grant:    creditdv1connect.NewGrantServiceClient(f.client, base, opts...),
		balance:  creditdv1connect.NewBalanceServiceClient(f.client, base, opts...),
		ledger:   creditdv1connect.NewLedgerServiceClient(f.client, base, opts...),
		purchase: creditdv1connect.NewPurchaseServiceClient(f.client, base, opts...),
		cluster:  creditdv1connect.NewClusterServiceClient(f.client, base, opts...),
	}
	f.clients[addr] = c
	return c
}

// misconfigured names a forwarding failure that retrying cannot mend:
// the leader and this node disagree on TLS (every node of a cluster serves
// TLS or none does), or this node does not trust the leader's certificate.
// FAILED_PRECONDITION, so that clients stop rather than retry. nil for
// other failures.
func (f *forwarder) misconfigured(addr string, err error) error {
	var mismatch *SchemeMismatchError
	var verr *tls.CertificateVerificationError
	switch {
	case errors.As(err, &mismatch) && mismatch.ServerTLS:
		return connect.NewError(connect.CodeFailedPrecondition, fmt.Errorf(
			"forward to the leader at %s: the leader serves TLS and this node does not: every node of a cluster must serve TLS (creditd serve --tls-cert) or none: %w", addr, mismatch))
	case errors.As(err, &mismatch):
		return connect.NewError(connect.CodeFailedPrecondition, fmt.Errorf(
			"forward to the leader at %s: this node serves TLS and the leader does not: every node of a cluster must serve TLS (creditd serve --tls-cert) or none: %w", addr, mismatch))
	case errors.As(err, &verr):
		return connect.NewError(connect.CodeFailedPrecondition, fmt.Errorf(
			"forward to the leader at %s: its TLS certificate is not trusted by this node (creditd serve --tls-ca names the CA; the certificate must name the advertised host): %w", addr, verr))
	}
	return nil
}

// leaderAddr is where to forward: the address in nl, or, when no leader is
// known yet (an election) or it is stale (the one that refused the request
// as not the leader), the one learned within leaderWait.
func (s *Server) leaderAddr(ctx context.Context, nl *node.NotLeaderError, stale string) (string, error) {
	if nl.LeaderRPCAddr != "" && nl.LeaderRPCAddr != stale {
		return nl.LeaderRPCAddr, nil
	}
	wait := time.NewTimer(leaderWait)
	defer wait.Stop()
	poll := time.NewTicker(20 * time.Millisecond)
	defer poll.Stop()
	for {
		id, addr := s.n.Leader()
		if id == s.n.ID() {
			// An election this node won while the request waited: not a
			// bug (INTERNAL) but a retry, which this node will now serve.
			return "", connect.NewError(connect.CodeUnavailable,
				errors.New("this node became the leader while the request waited to be forwarded; retry"))
		}
		if addr != "" && addr != stale {
			return addr, nil
		}
		select {
		case <-ctx.Done():
			return "", ctx.Err()
		case <-wait.C:
			return "", node.ErrNoLeader
		case <-poll.C:
		}
	}
}

// handle runs a method locally, and when the local node is not the leader
// forwards the same request to the leader with call. local returns the
// response message or any error; errors are mapped to Connect codes here.
// A request the leader it went to refused as no longer the leader (nothing
// done there) is run again: locally, if this node leads now, or forwarded
// to the new leader.
func handle[Req, Res any](
	ctx context.Context, s *Server, req *connect.Request[Req],
	call func(*leaderClients) func(context.Context, *connect.Request[Req]) (*connect.Response[Res], error),
	local func(context.Context, *Req) (*Res, error),
) (*connect.Response[Res], error) {
	stale := "" // the address of a former leader that refused the request
	for forwards := 1; ; forwards++ {
		res, err := local(ctx, req.Msg)
		if err == nil {
			return connect.NewResponse(res), nil
		}
		var nl *node.NotLeaderError
		if !errors.As(err, &nl) || call == nil {
			return nil, s.toConnect(ctx, err)
		}
		if from := req.Header().Get(ForwardedHeader); from != "" {
			ce := connect.NewError(connect.CodeUnavailable,
				fmt.Errorf("forwarded by %s to a node that is not the leader (leadership is moving); retry", from))
			ce.Meta().Set(notLeaderHeader, s.n.ID())
			return nil, ce
		}
		addr, err := s.leaderAddr(ctx, nl, stale)
		if err != nil {
			return nil, s.toConnect(ctx, err)
		}
		out, err := forward(ctx, s, req, call, addr)
		var ce *connect.Error
		if forwards < maxForwards && errors.As(err, &ce) && ce.Code() == connect.CodeUnavailable && ce.Meta().Get(notLeaderHeader) != "" {
			stale = addr
			continue
		}
		return out, err
	}
}

// forward sends req to the leader at addr with call, carrying the caller's
// key and the request id.
func forward[Req, Res any](
	ctx context.Context, s *Server, req *connect.Request[Req],
	call func(*leaderClients) func(context.Context, *connect.Request[Req]) (*connect.Response[Res], error),
	addr string,
) (*connect.Response[Res], error) {
	ctx, cancel := context.WithTimeout(ctx, s.opts.ForwardTimeout)
	defer cancel()
	fwd := connect.NewRequest(req.Msg)
	for _, h := range []string{"Authorization", RequestIDHeader} {
		if v := req.Header().Get(h); v != "" {
			fwd.Header().Set(h, v)
		}
	}
	if rid := requestIDFrom(ctx); rid != "" {
		fwd.Header().Set(RequestIDHeader, rid)
	}
	fwd.Header().Set(ForwardedHeader, s.n.ID())
	s.metrics.forwarded.Add(1)
	out, err := call(s.fwd.clientsFor(addr))(ctx, fwd)
	if err != nil {
		if err := s.fwd.misconfigured(addr, err); err != nil {
			return nil, err
		}
		var ce *connect.Error
		if errors.As(err, &ce) {
			// The leader's own answer (or a transport failure the client
			// already classified): pass it on, with its details.
			return nil, ce
		}
		return nil, connect.NewError(connect.CodeUnavailable, fmt.Errorf("forward to leader at %s: %w", addr, err))
	}
	return connect.NewResponse(out.Msg), nil
}
