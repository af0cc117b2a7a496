package main

import (
	"context"
	"crypto/tls"
	"errors"
	"flag"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"os"
	"strconv"
	"strings"
	"time"

	"github.com/creditd/creditd/billing"
	"github.com/creditd/creditd/node"
	"github.com/creditd/creditd/rpc"
	"golang.org/x/net/netutil"
)

const serveHelp = `
Runs one creditd node: the Raft log, gossip membership and the API (Connect,
gRPC and gRPC-Web on one port, plus /healthz and /readyz): cleartext HTTP/2
(h2c), or TLS with --tls-cert and --tls-key (HTTP/2 and HTTP/1.1; the pair is
read again when its files change). With TLS, followers forward writes to the
leader over HTTPS, trusting --tls-ca (or the system's roots): every node of
a cluster serves TLS or none does. Raft and gossip are cleartext always: keep
them on a private network.

With no flags it starts a single-node cluster: data in ./creditd-data, the
API on 127.0.0.1:7420, Raft on 127.0.0.1:7421, gossip on 127.0.0.1:7422.
Stopping and starting it again keeps every balance.

A node started with --join finds the cluster through any member's gossip
address and waits to be added by the leader. --bootstrap-expect N forms a
new cluster once N fresh nodes have met; a node that already has state never
forms a second cluster. The leader keeps --voters voters; other nodes are
non-voters, promoted when a voter goes.

Purchases are carried out by the billing connector (--billing): manual (the
default: an operator completes them) or stripe. With --export-to URL the
leader exports the ledger to Parquet every --export-every.

SIGTERM (or Ctrl-C): a leader hands leadership over first, in-flight
requests finish (or are forwarded to the new leader), then the node stops.
--shutdown-timeout bounds the handover and the requests (connections still
busy after it are closed), and then, again, the node's stop.

Examples:
  creditd serve
  # a 3-node cluster on one machine:
  creditd serve --node-id a --data-dir a --rpc-addr 127.0.0.1:7420 --raft-addr 127.0.0.1:7421 --gossip-addr 127.0.0.1:7422
  creditd serve --node-id b --data-dir b --rpc-addr 127.0.0.1:7430 --raft-addr 127.0.0.1:7431 --gossip-addr 127.0.0.1:7432 --join 127.0.0.1:7422
  creditd serve --node-id c --data-dir c --rpc-addr 127.0.0.1:7440 --raft-addr 127.0.0.1:7441 --gossip-addr 127.0.0.1:7442 --join 127.0.0.1:7422
  # Stripe, and an hourly Parquet export:
  CREDITD_STRIPE_SECRET_KEY_FILE=/etc/creditd/stripe-key CREDITD_STRIPE_WEBHOOK_SECRET_FILE=/etc/creditd/whsec \
    creditd serve --billing stripe --export-to file:///var/lib/creditd-export --export-every 1h
  # the same with the environment:
  CREDITD_DATA_DIR=/var/lib/creditd CREDITD_JOIN=10.0.0.1:7422 creditd serve
  # /readyz says 503 on a follower more than 100 entries behind (default 1024):
  creditd serve --join 10.0.0.1:7422 --ready-max-lag 100
  # the API over TLS; the certificate names 10.0.0.2, the advertised host:
  creditd serve --rpc-addr 10.0.0.2:7420 --tls-cert /etc/creditd/node.pem --tls-key /etc/creditd/node-key.pem \
    --tls-ca /etc/creditd/ca.pem --join 10.0.0.1:7422`

// serveFlags are serve's flags; snapshot restore shares the node's.
type serveFlags struct {
	nodeID, dataDir                   string
	rpcAddr, raftAddr, gossipAddr     string
	advRPC, advRaft, advGossip        string
	join                              listFlag
	bootstrapExpect                   autoInt
	voters                            int
	deadServerTimeout                 time.Duration
	leaveOnTerminate                  bool
	groupCommit                       bool
	batchMaxCommands, batchMaxBytes   int
	batchMaxWait                      time.Duration
	batchMaxInflight, batchQueue      int
	tickInterval                      time.Duration
	snapshotThreshold, trailingLogs   uint64
	snapshotInterval                  time.Duration
	heartbeatTimeout, electionTimeout time.Duration
	leaderWait, shutdownTimeout       time.Duration
	requestTimeout                    boundedDuration
	readyMaxLag                       int
	followerApplyWait                 time.Duration
	maxConnections                    int
	apiKeysFile                       string
	logFormat, logLevel               string
	billing                           string
	logStore                          string
	stateFsync                        bool
	debugAddr                         string
	export                            exportSchedule
	tls                               serveTLSFlags
}

// addNodeFlags registers the flags that say which node and data dir.
func addNodeFlags(fs *flag.FlagSet, f *serveFlags) {
	fs.StringVar(&f.nodeID, "node-id", "", "this node's id in the cluster, kept in DATA_DIR/node-id; a data dir refuses another id (default: the kept one, else a generated one)")
	fs.StringVar(&f.dataDir, "data-dir", "creditd-data", "directory for the Raft log, snapshots and the state")
	fs.StringVar(&f.raftAddr, "raft-addr", "127.0.0.1:7421", "Raft listen address (host:port)")
	fs.StringVar(&f.advRaft, "advertise-raft-addr", "", "Raft address other nodes dial, when it differs from --raft-addr")
	fs.StringVar(&f.logFormat, "log-format", "text", "log format: text or json")
	fs.StringVar(&f.logLevel, "log-level", "info", "log level: debug, info, warn or error")
}

func runServe(ctx context.Context, args []string) error {
	var f serveFlags
	fs := newServeFlagSet(&f)
	if err := parseFlags(fs, args); err != nil {
		return err
	}
	if fs.NArg() > 0 {
		return fmt.Errorf("serve: unexpected argument %q: %w", fs.Arg(0), errUsage)
	}
	if f.maxConnections < 1 || f.maxConnections > maxMaxConnections {
		return fmt.Errorf("serve: --max-connections %d is outside 1..%d", f.maxConnections, maxMaxConnections)
	}
	if f.followerApplyWait < 0 || f.followerApplyWait > time.Second {
		return fmt.Errorf("serve: --follower-apply-wait %s is outside 0..1s (0 applies at once)", f.followerApplyWait)
	}
	if f.readyMaxLag < 0 {
		return fmt.Errorf("serve: --ready-max-lag %d is negative: want a number of log entries, 0 for none", f.readyMaxLag)
	}
	if f.tickInterval < minTickInterval || f.tickInterval > maxTickInterval {
		return fmt.Errorf("serve: --tick-interval %s is outside %s..%s", f.tickInterval, minTickInterval, maxTickInterval)
	}
	if f.shutdownTimeout < minShutdownTimeout || f.shutdownTimeout > maxShutdownTimeout {
		return fmt.Errorf("serve: --shutdown-timeout %s is outside %s..%s", f.shutdownTimeout, minShutdownTimeout, maxShutdownTimeout)
	}
	if err := checkSnapshotFlags(f.snapshotThreshold, f.snapshotInterval, f.trailingLogs); err != nil {
		return err
	}
	if err := checkNodeFlags(&f); err != nil {
		return err
	}
	if err := f.export.check(); err != nil {
		return fmt.Errorf("serve: %w", err)
	}
	if err := checkAdvertisableRPCAddr(f.rpcAddr, f.advRPC); err != nil {
		return err
	}
	if err := f.tls.check(f.advRPC); err != nil {
		return err
	}
	logger, err := newLogger(os.Stderr, f.logFormat, f.logLevel)
	if err != nil {
		return err
	}
	return serve(ctx, f, logger)
}

// newServeFlagSet is serve's flag set, filling f.
func newServeFlagSet(f *serveFlags) *flag.FlagSet {
	fs := newFlagSet("serve", "serve [flags]", serveHelp)
	addNodeFlags(fs, f)
	fs.StringVar(&f.rpcAddr, "rpc-addr", "127.0.0.1:7420", "API listen address (host:port); on all interfaces (0.0.0.0, [::]) it needs --advertise-rpc-addr")
	fs.StringVar(&f.advRPC, "advertise-rpc-addr", "", "API address other nodes forward writes to and \"creditd status\" asks, when it differs from --rpc-addr: a host they reach, as host:port (no scheme: https with --tls-cert, http without)")
	fs.StringVar(&f.gossipAddr, "gossip-addr", "127.0.0.1:7422", "gossip (memberlist) listen address, TCP and UDP")
	fs.StringVar(&f.advGossip, "advertise-gossip-addr", "", "gossip address other nodes use, when it differs from --gossip-addr")
	fs.Var(&f.join, "join", "gossip address(es) of existing members, host:port[,host:port]; retried until another member answers (this node's own address is skipped). A node with Raft state also rejoins the members kept in its data dir, so restarts need no --join")
	fs.Var(&f.bootstrapExpect, "bootstrap-expect", "form a new cluster when `N` fresh nodes have met (default: 1 without --join, else 0 = wait to be added)")
	fs.StringVar(&f.logStore, "log-store", node.LogStoreBolt, "where the Raft log lives: bolt (raft-boltdb) or wal (raft-wal); a data dir keeps the one it was created with")
	fs.BoolVar(&f.stateFsync, "state-fsync", false, "fsync the state file (fsm.db) on every apply; off, the Raft log carries durability and the state is rebuilt from snapshot and log after a machine restart")
	fs.IntVar(&f.voters, "voters", 5, "how many voters the leader keeps; other members are non-voters")
	fs.DurationVar(&f.deadServerTimeout, "dead-server-timeout", 30*time.Minute, "remove a member dead this long from Raft (only if a quorum remains)")
	fs.BoolVar(&f.leaveOnTerminate, "leave-on-terminate", false, "on SIGTERM leave the cluster for good (the leader removes this node)")
	fs.BoolVar(&f.groupCommit, "group-commit", true, "gather concurrent writes into one log entry (false: one entry per write)")
	fs.IntVar(&f.batchMaxCommands, "batch-max-commands", 1024, "most commands in one log entry")
	fs.IntVar(&f.batchMaxBytes, "batch-max-bytes", 1<<20, "most bytes of commands in one log entry")
	fs.DurationVar(&f.batchMaxWait, "batch-max-wait", 0, "how long to wait for more commands once one is queued (0: take what is queued)")
	fs.IntVar(&f.batchMaxInflight, "batch-max-inflight", 8, "log entries replicating at once")
	fs.IntVar(&f.batchQueue, "batch-queue", 16384, "writes waiting for the batcher before new ones are refused")
	fs.DurationVar(&f.tickInterval, "tick-interval", time.Second, fmt.Sprintf("how often the leader moves log time (expiries, reservation timeouts); %s to %s", minTickInterval, maxTickInterval))
	fs.Uint64Var(&f.snapshotThreshold, "snapshot-threshold", 8192, "snapshot and compact the log after this many entries (at least 1)")
	fs.DurationVar(&f.snapshotInterval, "snapshot-interval", 30*time.Second, fmt.Sprintf("how often to check --snapshot-threshold; %s to %s", minSnapshotInterval, maxSnapshotInterval))
	fs.Uint64Var(&f.trailingLogs, "trailing-logs", 10240, "entries kept after a snapshot for followers that lag a little (at least 1)")
	fs.DurationVar(&f.heartbeatTimeout, "heartbeat-timeout", time.Second, "Raft heartbeat timeout")
	fs.DurationVar(&f.electionTimeout, "election-timeout", time.Second, "Raft election timeout")
	fs.DurationVar(&f.leaderWait, "leader-wait", 5*time.Second, "how long a write waits for a leader before failing with Unavailable")
	fs.DurationVar(&f.shutdownTimeout, "shutdown-timeout", 30*time.Second, fmt.Sprintf("how long SIGTERM waits for the leadership handover and in-flight requests (connections still busy then are closed), and then at most for the node to stop; %s to %s", minShutdownTimeout, maxShutdownTimeout))
	f.requestTimeout = boundedDuration{d: defaultRequestTimeout, min: minRequestTimeout, max: maxRequestTimeout}
	fs.Var(&f.requestTimeout, "request-timeout", fmt.Sprintf("`duration` bounding one unary API call: reading the request, the handler, writing the answer (DEADLINE_EXCEEDED past it; WatchEntries streams are not bounded); %s to %s",
		minRequestTimeout, maxRequestTimeout))
	fs.IntVar(&f.maxConnections, "max-connections", defaultMaxConnections, "most API connections open at once; past it new ones wait in the kernel's accept queue until one closes")
	fs.DurationVar(&f.followerApplyWait, "follower-apply-wait", 20*time.Millisecond, "how long a follower gathers committed entries to apply them together (less CPU per event; its reads trail by up to this); 0: apply at once; at most 1s")
	fs.IntVar(&f.readyMaxLag, "ready-max-lag", 1024, "a follower more log entries than this behind the commit index it knows is not ready (/readyz 503); 0: ready only with everything applied")
	fs.StringVar(&f.billing, "billing", "manual", "billing connector: "+strings.Join(billing.ConnectorNames(), " or ")+
		" (stripe reads CREDITD_STRIPE_SECRET_KEY and CREDITD_STRIPE_WEBHOOK_SECRET, or their _FILE variants)")
	f.export.addFlags(fs)
	fs.StringVar(&f.debugAddr, "debug-addr", "", "serve Go profiles (/debug/pprof/) on this address, unauthenticated: loopback only (default: off)")
	fs.StringVar(&f.apiKeysFile, "api-keys-file", "", "file of API keys, one scope:key per line (also CREDITD_API_KEYS); none = loopback clients only")
	f.tls.addFlags(fs)
	return fs
}

// readyMaxLag maps --ready-max-lag to node.Config.ReadyMaxLag, where 0
// means the default and a negative value none.
func readyMaxLag(entries int) int {
	if entries == 0 {
		return -1
	}
	return entries
}

// API connections: the default leaves room for a large fleet of callers
// (each HTTP/2 connection carries up to 250 calls at once) while bounding
// what idle and slow clients can hold: ≈ 10–20 KB of buffers each when idle.
const (
	defaultMaxConnections = 4096
	maxMaxConnections     = 1 << 20
)

// --tick-interval's range. Below 10ms node.Config refuses it (every tick
// is a log entry); past an hour expiries and reservation timeouts come due
// that much late on a cluster without traffic. There is no "off": node
// reads a negative interval as no ticks at all, a setting for benchmarks.
const (
	minTickInterval = 10 * time.Millisecond
	maxTickInterval = time.Hour
)

// --shutdown-timeout's range. The handover and draining of requests get a
// context of this length, and so does stopping the node: at 0 or less it
// has expired already, so a leader hands nothing over, no request finishes
// and the node's goroutines are not waited for; below a second there is no
// time for an election. Past 10 minutes supervisors have
// long since sent SIGKILL (systemd waits 90s, Kubernetes 30s by default).
const (
	minShutdownTimeout = time.Second
	maxShutdownTimeout = 10 * time.Minute
)

// --snapshot-interval's range: raft itself refuses checks under 5ms, and
// past a day the log between snapshots (and a restart's replay) grows
// with the traffic of that day whatever --snapshot-threshold says.
const (
	minSnapshotInterval = time.Second
	maxSnapshotInterval = 24 * time.Hour
)

// checkSnapshotFlags refuses the snapshot settings node.Config would
// otherwise read as "the default": a 0 there means unset, so
// --snapshot-threshold 0 or --trailing-logs 0 would silently become 8192
// and 10240 instead of what was asked.
func checkSnapshotFlags(threshold uint64, interval time.Duration, trailing uint64) error {
	if threshold == 0 {
		return fmt.Errorf("serve: --snapshot-threshold 0: want at least 1 log entry")
	}
	if trailing == 0 {
		return fmt.Errorf("serve: --trailing-logs 0: want at least 1 log entry (a follower further behind gets a snapshot)")
	}
	if interval < minSnapshotInterval || interval > maxSnapshotInterval {
		return fmt.Errorf("serve: --snapshot-interval %s is outside %s..%s", interval, minSnapshotInterval, maxSnapshotInterval)
	}
	return nil
}

// checkAdvertisableRPCAddr refuses an API address that names no host. The
// node advertises --advertise-rpc-addr, else the address the API listens
// on; followers forward writes to it and "creditd status" asks each member
// there, so 0.0.0.0, [::] or an empty host would send them to themselves.
// raft refuses such a --raft-addr for the same reason ("not advertisable").
func checkAdvertisableRPCAddr(listen, advertise string) error {
	if advertise != "" {
		if namesNoHost(advertise) {
			return fmt.Errorf("serve: --advertise-rpc-addr %q names no host: give the host:port other nodes reach this node's API at", advertise)
		}
		return nil
	}
	if namesNoHost(listen) {
		return fmt.Errorf("serve: --rpc-addr %q listens on every interface and names no host other nodes can reach: give --advertise-rpc-addr with the host:port they reach this node's API at", listen)
	}
	return nil
}

// namesNoHost says whether addr's host is empty or unspecified. A
// malformed addr is left to net.Listen and node.Config, which name it.
func namesNoHost(addr string) bool {
	host, _, err := net.SplitHostPort(addr)
	if err != nil {
		return false
	}
	ip := net.ParseIP(host)
	return host == "" || (ip != nil && ip.IsUnspecified())
}

// followerApplyWait maps --follower-apply-wait to
// node.Config.FollowerApplyWait, where 0 means the default and a negative
// value none.
func followerApplyWait(d time.Duration) time.Duration {
	if d == 0 {
		return -1
	}
	return d
}

func serve(ctx context.Context, f serveFlags, logger *slog.Logger) error {
	keys, err := rpc.LoadAPIKeys(f.apiKeysFile, os.Getenv(rpc.EnvAPIKeys))
	if err != nil {
		return err
	}
	// The pair is checked before the node joins anyone: a wrong file
	// stops the start here, naming it.
	srvTLS, err := f.tls.load(logger)
	if err != nil {
		return err
	}
	stopDebug, err := startDebugServer(f.debugAddr, logger)
	if err != nil {
		return err
	}
	defer stopDebug()
	// Listen for the API first: with port 0 the advertised address is only
	// known now, and the node advertises it to the others.
	ln, err := net.Listen("tcp", f.rpcAddr)
	if err != nil {
		return fmt.Errorf("listen for the API on %s: %w", f.rpcAddr, err)
	}
	// Every connection costs buffers and goroutines; HTTP/2 already bounds
	// the requests on one (250 streams), this bounds the connections.
	ln = netutil.LimitListener(ln, f.maxConnections)
	defer ln.Close()
	advRPC := f.advRPC
	if advRPC == "" {
		advRPC = ln.Addr().String()
	}
	if srvTLS != nil {
		srvTLS.warnIfHostNotNamed(advRPC, logger)
	}
	expect := f.bootstrapExpect.n
	if !f.bootstrapExpect.set {
		expect = 0
		if len(f.join) == 0 {
			expect = 1
		}
	}
	cfg := node.Config{
		NodeID:              f.nodeID,
		DataDir:             f.dataDir,
		RaftAddr:            f.raftAddr,
		AdvertiseRaftAddr:   f.advRaft,
		GossipAddr:          f.gossipAddr,
		AdvertiseGossipAddr: f.advGossip,
		RPCAddr:             advRPC,
		Join:                f.join,
		BootstrapExpect:     expect,
		Voters:              f.voters,
		DeadServerTimeout:   f.deadServerTimeout,
		LogStore:            f.logStore,
		StateFsync:          f.stateFsync,
		LeaveOnShutdown:     f.leaveOnTerminate,
		Batch: node.BatchConfig{
			Disabled:    !f.groupCommit,
			MaxCommands: f.batchMaxCommands,
			MaxBytes:    f.batchMaxBytes,
			MaxWait:     f.batchMaxWait,
			MaxInflight: f.batchMaxInflight,
			QueueSize:   f.batchQueue,
		},
		TickInterval:      f.tickInterval,
		SnapshotThreshold: f.snapshotThreshold,
		SnapshotInterval:  f.snapshotInterval,
		TrailingLogs:      f.trailingLogs,
		HeartbeatTimeout:  f.heartbeatTimeout,
		ElectionTimeout:   f.electionTimeout,
		LeaderWait:        f.leaderWait,
		ReadyMaxLag:       readyMaxLag(f.readyMaxLag),
		FollowerApplyWait: followerApplyWait(f.followerApplyWait),
		Logger:            logger,
	}
	n, err := node.Start(ctx, cfg)
	if err != nil {
		return err
	}
	stopCtx := func() (context.Context, context.CancelFunc) {
		return context.WithTimeout(context.Background(), f.shutdownTimeout)
	}
	fail := func(err error) error {
		sctx, cancel := stopCtx()
		defer cancel()
		return errors.Join(err, n.Shutdown(sctx))
	}
	closeExport, err := f.export.start(ctx, n, logger)
	if err != nil {
		return fail(err)
	}
	defer closeExport()
	// The purchase worker runs whenever this node leads; the connector's
	// webhook routes are served by every node (a follower forwards).
	// With TLS on, followers forward writes and webhooks to the leader
	// over HTTPS: the advertised API addresses are host:port, and the
	// scheme is the cluster's (every node serves TLS or none does).
	var peerTLS *tls.Config
	if srvTLS != nil {
		peerTLS = srvTLS.peers
	}
	billOpts := billing.AttachOptions{ForwardTLS: peerTLS}
	billOpts.Webhook.ForwardClient = webhookForwardClient(peerTLS)
	bill, err := billing.Attach(n, f.billing, billing.Config{Getenv: os.Getenv, Logger: logger}, billOpts)
	if err != nil {
		return fail(fmt.Errorf("billing connector %q: %w", f.billing, err))
	}
	api, err := rpc.New(n, rpc.Options{APIKeys: keys, Logger: logger, Extra: bill.Routes, RequestTimeout: f.requestTimeout.d, ForwardTLS: peerTLS,
		Payments: func(ctx context.Context, id string) (rpc.PaymentAction, error) {
			p, err := bill.PaymentAction(ctx, id)
			return rpc.PaymentAction{ClientSecret: p.ClientSecret, CheckoutURL: p.CheckoutURL, ProviderStatus: p.ProviderStatus}, err
		}})
	if err != nil {
		return fail(err)
	}
	// rpc's server: header, idle and header-size limits that do not cut
	// WatchEntries streams (rpc bounds each unary call itself).
	hs := rpc.NewHTTPServer("", api.Handler())
	hs.ErrorLog = slog.NewLogLogger(logger.Handler(), slog.LevelWarn)
	serveErr := make(chan error, 1)
	if srvTLS != nil {
		hs.TLSConfig = srvTLS.keys.ServerConfig()
		go func() { serveErr <- hs.ServeTLS(ln, "", "") }()
	} else {
		go func() { serveErr <- hs.Serve(ln) }()
	}
	logger.Info("serving the API", "addr", ln.Addr().String(), "advertised", advRPC, "tls", srvTLS != nil)

	select {
	case <-ctx.Done():
		logger.Info("signal received; stopping")
	case err = <-serveErr:
		logger.Error("API server failed", "err", err)
	}
	sctx, cancel := stopCtx()
	defer cancel()
	var errs []error
	if err != nil && !errors.Is(err, http.ErrServerClosed) {
		errs = append(errs, fmt.Errorf("serve the API: %w", err))
	}
	// Leadership goes first, so writes arriving while in-flight requests
	// finish are forwarded to the new leader instead of waiting here.
	if n.IsLeader() && len(n.Status().Members) > 1 {
		if err := n.TransferLeadership(sctx, ""); err != nil {
			logger.Warn("leadership transfer before shutdown failed", "err", err)
		}
	}
	api.Close()
	switch err := hs.Shutdown(sctx); {
	case errors.Is(err, context.DeadlineExceeded) || errors.Is(err, context.Canceled):
		// Shutdown only waits for connections to go idle: a client that
		// stopped reading a stream (a snapshot download) would hold its
		// handler, and the state the handler reads, for good.
		errs = append(errs, fmt.Errorf("stop the API: closing the connections still busy after --shutdown-timeout %s: %w", f.shutdownTimeout, err))
		if err := hs.Close(); err != nil {
			errs = append(errs, fmt.Errorf("close the API's connections: %w", err))
		}
	case err != nil:
		errs = append(errs, fmt.Errorf("stop the API: %w", err))
	}
	// The node gets a budget of its own: one the API used up would stop it
	// without waiting for its goroutines, or for the handlers just cut off
	// to let go of the state, which the next start then treats as after a
	// crash.
	nctx, ncancel := stopCtx()
	defer ncancel()
	if err := n.Shutdown(nctx); err != nil {
		errs = append(errs, fmt.Errorf("stop the node: %w", err))
	}
	return errors.Join(errs...)
}

// --request-timeout's range. Below a second a write waiting out a leader
// election (--leader-wait, 5s) fails as DEADLINE_EXCEEDED, and normal
// calls on a loaded node would too; above an hour a stuck client or a
// cluster without quorum holds a handler, and its connection, for hours.
const (
	defaultRequestTimeout = 60 * time.Second // rpc.Options' own default
	minRequestTimeout     = time.Second
	maxRequestTimeout     = time.Hour
)

// boundedDuration is a duration flag refused outside [min, max], so a
// mistake (0, a negative value, "600h") fails at start with the flag
// named, not as timeouts on every request.
type boundedDuration struct {
	d, min, max time.Duration
}

func (b *boundedDuration) String() string {
	if b == nil {
		return ""
	}
	return b.d.String()
}

func (b *boundedDuration) Set(s string) error {
	d, err := time.ParseDuration(s)
	if err != nil {
		return errors.New("not a duration like 30s or 2m")
	}
	if d < b.min || d > b.max {
		return fmt.Errorf("%s is out of range: want %s to %s", d, b.min, b.max)
	}
	b.d = d
	return nil
}

// autoInt is a count flag whose default depends on other flags: unset, its
// help shows no made-up default (--bootstrap-expect once said "(default
// -1)"), and a negative value is refused rather than read as "unset".
type autoInt struct {
	n   int
	set bool
}

func (a *autoInt) String() string {
	if a == nil || !a.set {
		return ""
	}
	return strconv.Itoa(a.n)
}

func (a *autoInt) Set(s string) error {
	n, err := strconv.Atoi(s)
	if err != nil {
		return errors.New("not a whole number")
	}
	if n < 0 {
		return errors.New("must not be negative")
	}
	a.n, a.set = n, true
	return nil
}
