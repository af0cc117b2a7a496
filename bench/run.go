package bench

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"math"
	"math/rand/v2"
	"net/http"
	"net/url"
	"sync"
	"sync/atomic"
	"time"

	"connectrpc.com/connect"

	v1 "github.com/creditd/creditd/gen/creditd/v1"
)

// The catalog the run creates (the same on every run, so runs against one
// cluster share it: CreateCreditType and the upserts are idempotent).
const (
	creditTypeID = "bench-credits"
	featureID    = "bench-tokens"
	planID       = "bench-plan"
	// creditScale is the credit type's scale: amounts have 2 decimals.
	creditScale = 2
	// featureRate is credits per unit; quantities are 1..maxQuantity.
	featureRate = "0.25"
	maxQuantity = 8
	// setupGrantCredits is what each customer starts with, split over its
	// grants: enough that a long run at full speed on one hot customer
	// is never denied (10^9 credits at ≤ 2 credits per event).
	setupGrantCredits = 1_000_000_000
	// loadGrantCredits is the amount of each grant of the grant operation.
	loadGrantCredits = "100"
	// reserveTTL outlives any run's tail, so no hold expires mid-check.
	reserveTTL = 30 * time.Minute

	maxAttempts     = 5
	setupParallel   = 128
	verifyParallel  = 32
	clientsPerConn  = 32
	resolveAttempts = 10
	// resolveTimeout bounds resending the writes of unknown outcome: the
	// verification is to end with a verdict, not wait on a sick cluster.
	resolveTimeout = 2 * time.Minute
)

const (
	phaseWarmup int32 = iota
	phaseMeasure
	phaseStop
)

// runner is the state of one run shared by its clients.
type runner struct {
	cfg       Config
	scheme    string
	leader    *endpoint   // writes and linearizable reads of setup and verification
	nodes     []*endpoint // every node, for the replica check
	conns     [][]*endpoint
	hcs       []*http.Client
	customers []string // ids by index

	// granted and burned are the credits (units) each customer was given
	// and was acknowledged to burn, as the clients saw it.
	granted []atomic.Int64
	burned  []atomic.Int64

	phase    atomic.Int32
	schedN   atomic.Int64 // next slot when --rate is set
	loadT0   time.Time
	interval time.Duration
	// stopped is closed when phase reaches phaseStop: it wakes the
	// clients that sleep to their next slot.
	stopped chan struct{}
	// windowEnd is when the measured window ends, from loadT0, once it
	// has started (until then, math.MaxInt64). No slot is taken past it.
	windowEnd atomic.Int64

	liveReqs, liveEvents, liveErrors atomic.Int64

	mu         sync.Mutex
	unresolved []func(context.Context) error // writes of unknown outcome, idempotent to resend

	// leaderWrites is the leader's write split over the measured load
	// (nil if its /metrics could not be read).
	leaderWrites *LeaderWrites
}

func (r *runner) logf(format string, args ...any) {
	if r.cfg.Log != nil {
		fmt.Fprintf(r.cfg.Log, format+"\n", args...)
	}
}

// Run sets the cluster up, drives it and verifies it. The error is about
// the run itself (bad config, cluster unreachable, setup failed); a failed
// verification is in the report (Report.Err).
func Run(ctx context.Context, cfg Config) (*Report, error) {
	cfg.Defaults()
	if cfg.Noop {
		cfg.Mix = Mix{OpReport: 1}
		cfg.SkipVerify = true
	}
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	u, _ := url.Parse(cfg.Addr)
	r := &runner{cfg: cfg, scheme: u.Scheme}
	defer r.close()
	rep := &Report{
		RunID: cfg.RunID, Addr: cfg.Addr, Noop: cfg.Noop, NoopEventCostUs: float64(cfg.NoopEventCost) / float64(time.Microsecond), Customers: cfg.Customers, Grants: cfg.GrantsPerCustomer,
		Zipf: cfg.Zipf, Concurrency: cfg.Concurrency, Rate: cfg.Rate, Batch: cfg.Batch, Mix: cfg.Mix.String(),
		Seed: cfg.Seed, Spread: cfg.Spread, RandomIDs: cfg.RandomIDs, Started: time.Now().UTC(),
	}
	if cfg.Existing != "" {
		// GrantsPerCustomer holds its unused default: the customers'
		// grants are whatever the existing run gave them.
		rep.Existing, rep.Grants = cfg.Existing, 0
	}
	if err := r.discover(ctx); err != nil {
		return nil, err
	}
	rep.Nodes = len(r.nodes)
	r.customers = make([]string, cfg.Customers)
	owner := cfg.RunID
	if cfg.Existing != "" {
		owner = cfg.Existing
	}
	for i := range r.customers {
		r.customers[i] = CustomerID(owner, i)
	}
	r.granted = make([]atomic.Int64, cfg.Customers)
	r.burned = make([]atomic.Int64, cfg.Customers)

	t0 := time.Now()
	switch {
	case cfg.Noop:
	case cfg.Existing != "":
		r.logf("setup: reading the starting balances of %d existing customers (%s)", cfg.Customers, CustomerID(cfg.Existing, 0))
		if err := r.readStartingBalances(ctx); err != nil {
			return nil, err
		}
	default:
		r.logf("setup: catalog and %d customers × %d grants", cfg.Customers, cfg.GrantsPerCustomer)
		if err := r.setup(ctx); err != nil {
			return nil, err
		}
	}
	rep.SetupSec = time.Since(t0).Seconds()

	stats, warm, measured, err := r.load(ctx)
	if err != nil {
		return nil, err
	}
	rep.WarmupSec, rep.MeasuredSec = warm.Seconds(), measured.Seconds()
	total := newOpStats()
	for _, op := range allOps {
		s := stats[op]
		if s.requests == 0 && len(s.errors) == 0 {
			continue
		}
		rep.Ops = append(rep.Ops, opReport(op, s, rep.MeasuredSec))
		total.merge(s)
	}
	rep.Total = opReport("total", total, rep.MeasuredSec)
	rep.LeaderWrites = r.leaderWrites

	if !cfg.SkipVerify {
		r.logf("verify: resolving %d writes of unknown outcome, then checking %d balances on %d nodes",
			len(r.unresolved), cfg.Customers, len(r.nodes))
		rep.Verify = r.verify(ctx)
	}
	return rep, nil
}

func (r *runner) close() {
	for _, hc := range r.hcs {
		closeHTTPClient(hc)
	}
}

// discover finds the leader and every node through the given address.
// wontChangeByWaiting says a failed call is the client's configuration
// (its key, the CA it trusts), not a cluster still starting: a minute of
// retries would only hide it.
func wontChangeByWaiting(err error) bool {
	switch connect.CodeOf(err) {
	case connect.CodeUnauthenticated, connect.CodePermissionDenied, connect.CodeUnimplemented:
		return true
	}
	var verify *tls.CertificateVerificationError
	var unknownCA x509.UnknownAuthorityError
	var badHost x509.HostnameError
	var invalid x509.CertificateInvalidError
	return errors.As(err, &verify) || errors.As(err, &unknownCA) || errors.As(err, &badHost) || errors.As(err, &invalid)
}

func (r *runner) discover(ctx context.Context) error {
	nConns := (r.cfg.Concurrency + clientsPerConn - 1) / clientsPerConn
	setupHC := newHTTPClient(r.cfg.RootCAs)
	r.hcs = append(r.hcs, setupHC)
	first := newEndpoint("", r.cfg.Addr, setupHC, r.cfg.APIKey)
	var st *v1.GetStatusResponse
	deadline := time.Now().Add(60 * time.Second)
	for {
		cctx, cancel := context.WithTimeout(ctx, 10*time.Second)
		res, err := first.cluster.GetStatus(cctx, connect.NewRequest(&v1.GetStatusRequest{}))
		cancel()
		if err == nil && res.Msg.LeaderRpcAddr != "" {
			st = res.Msg
			break
		}
		if err == nil {
			err = errors.New("no leader known yet")
		}
		if ctx.Err() != nil || time.Now().After(deadline) || wontChangeByWaiting(err) {
			return errf(err, "bench: find the cluster's leader through %s", r.cfg.Addr)
		}
		time.Sleep(200 * time.Millisecond)
	}
	type member struct{ id, url string }
	var members []member
	for _, m := range st.Members {
		if m.RpcAddr == "" || m.Suffrage == "none" || m.Gossip == "dead" || m.Gossip == "left" {
			continue
		}
		members = append(members, member{m.Id, rpcURL(r.scheme, m.RpcAddr)})
	}
	leaderURL := rpcURL(r.scheme, st.LeaderRpcAddr)
	if len(members) == 0 {
		members = []member{{st.NodeId, r.cfg.Addr}}
	}
	for c := 0; c < nConns; c++ {
		hc := newHTTPClient(r.cfg.RootCAs)
		r.hcs = append(r.hcs, hc)
		var eps []*endpoint
		for _, m := range members {
			ep := newEndpoint(m.id, m.url, hc, r.cfg.APIKey)
			if m.url == leaderURL {
				// The leader first: without --spread, load goes there.
				eps = append([]*endpoint{ep}, eps...)
			} else {
				eps = append(eps, ep)
			}
		}
		if eps[0].url != leaderURL {
			eps = append([]*endpoint{newEndpoint(st.LeaderId, leaderURL, hc, r.cfg.APIKey)}, eps...)
		}
		r.conns = append(r.conns, eps)
	}
	r.leader = newEndpoint(st.LeaderId, leaderURL, setupHC, r.cfg.APIKey)
	for _, ep := range r.conns[0] {
		r.nodes = append(r.nodes, newEndpoint(ep.id, ep.url, setupHC, r.cfg.APIKey))
	}
	r.logf("cluster: leader %s at %s, %d node(s)", st.LeaderId, leaderURL, len(r.nodes))
	return nil
}

// attempt runs fn with retries for transient failures; for setup and
// verification, where the error ends the run.
func attempt(ctx context.Context, timeout time.Duration, attempts int, fn func(context.Context) error) error {
	var err error
	for i := 0; i < attempts; i++ {
		cctx, cancel := context.WithTimeout(ctx, timeout)
		err = fn(cctx)
		cancel()
		if err == nil || !retryable(err) || ctx.Err() != nil {
			return err
		}
		if !sleepCtx(ctx, backoff(i)) {
			return ctx.Err()
		}
	}
	return err
}

func backoff(attempt int) time.Duration {
	d := 20 * time.Millisecond << min(attempt, 6)
	return min(d, time.Second)
}

// sleepLoad sleeps like sleepCtx, and also ends when the load stops.
func (r *runner) sleepLoad(ctx context.Context, d time.Duration) bool {
	return sleepUntil(ctx, d, r.stopped)
}

func sleepCtx(ctx context.Context, d time.Duration) bool { return sleepUntil(ctx, d, nil) }

// sleepUntil sleeps d; false when ctx ends or stop is closed first (a nil
// stop never is).
func sleepUntil(ctx context.Context, d time.Duration, stop <-chan struct{}) bool {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
		return true
	case <-ctx.Done():
		return false
	case <-stop:
		return false
	}
}

// parallel runs fn(i) for i in [0, n) on up to workers goroutines; the
// first error stops the rest.
func parallel(ctx context.Context, n, workers int, fn func(ctx context.Context, i int) error) error {
	ctx, cancel := context.WithCancelCause(ctx)
	defer cancel(nil)
	var next atomic.Int64
	var wg sync.WaitGroup
	for w := 0; w < min(workers, n); w++ {
		wg.Go(func() {
			for ctx.Err() == nil {
				i := int(next.Add(1) - 1)
				if i >= n {
					return
				}
				if err := fn(ctx, i); err != nil {
					cancel(err)
					return
				}
			}
		})
	}
	wg.Wait()
	if err := context.Cause(ctx); err != nil && !errors.Is(err, context.Canceled) {
		return err
	}
	return ctx.Err()
}

// setup creates the catalog and the customers with their grants.
func (r *runner) setup(ctx context.Context) error {
	ep, to := r.leader, r.cfg.RequestTimeout
	steps := []struct {
		what string
		fn   func(context.Context) error
	}{
		{"create credit type " + creditTypeID, func(ctx context.Context) error {
			_, err := ep.catalog.CreateCreditType(ctx, connect.NewRequest(&v1.CreateCreditTypeRequest{
				Id: creditTypeID, Name: CreditTypeName, Scale: creditScale}))
			return err
		}},
		{"upsert feature " + featureID, func(ctx context.Context) error {
			_, err := ep.catalog.UpsertFeature(ctx, connect.NewRequest(&v1.UpsertFeatureRequest{
				Id: featureID, Name: FeatureName, CreditTypeId: creditTypeID, Rate: featureRate}))
			return err
		}},
		{"upsert plan " + planID, func(ctx context.Context) error {
			_, err := ep.catalog.UpsertPlan(ctx, connect.NewRequest(&v1.UpsertPlanRequest{Plan: &v1.Plan{
				Id: planID, Name: PlanName, CreditTypeId: creditTypeID, Currency: PlanCurrency, PricePerCredit: PlanPricePerCredit,
				Overdraft: v1.OverdraftPolicy_OVERDRAFT_POLICY_DENY}}))
			return err
		}},
	}
	for _, s := range steps {
		if err := attempt(ctx, to, maxAttempts, s.fn); err != nil {
			return errf(err, "bench setup: %s", s.what)
		}
	}
	amount := formatUnits(GrantUnits(r.cfg.GrantsPerCustomer), creditScale)
	return parallel(ctx, r.cfg.Customers, setupParallel, func(ctx context.Context, i int) error {
		id := r.customers[i]
		err := attempt(ctx, to, maxAttempts, func(ctx context.Context) error {
			_, err := ep.catalog.UpsertCustomer(ctx, connect.NewRequest(&v1.UpsertCustomerRequest{Id: id, Name: id, PlanId: planID}))
			return err
		})
		if err != nil {
			return errf(err, "bench setup: upsert customer %s", id)
		}
		for g := 0; g < r.cfg.GrantsPerCustomer; g++ {
			gid := GrantID(id, g)
			var units int64
			err := attempt(ctx, to, maxAttempts, func(ctx context.Context) error {
				res, err := ep.grant.CreateGrant(ctx, connect.NewRequest(&v1.CreateGrantRequest{
					Id: gid, CustomerId: id, CreditTypeId: creditTypeID, Category: v1.GrantCategory_GRANT_CATEGORY_PROMOTIONAL,
					Amount: amount, Priority: GrantPriority(g)}))
				if err != nil {
					return err
				}
				units, err = parseUnits(res.Msg.Grant.GetAmount(), creditScale)
				return err
			})
			if err != nil {
				return errf(err, "bench setup: create grant %s", gid)
			}
			r.granted[i].Add(units)
		}
		return nil
	})
}

// readStartingBalances is the setup of a run on existing customers: what
// each holds now (linearizable, from the leader) counts as granted, so the
// verification checks this run's burns against it as if the run had made
// the grants itself. A customer that does not exist fails the read (the
// server answers NotFound), so a wrong --existing or --customers stops the
// run here instead of measuring denials.
func (r *runner) readStartingBalances(ctx context.Context) error {
	to := r.cfg.RequestTimeout
	return parallel(ctx, r.cfg.Customers, verifyParallel, func(ctx context.Context, i int) error {
		id := r.customers[i]
		return attempt(ctx, to, maxAttempts, func(ctx context.Context) error {
			res, err := r.leader.balance.GetBalance(ctx, connect.NewRequest(&v1.GetBalanceRequest{
				CustomerId: id, CreditTypeId: creditTypeID, Consistency: v1.Consistency_CONSISTENCY_LINEARIZABLE}))
			if err != nil {
				return errf(err, "bench setup: starting balance of %s", id)
			}
			b, err := parseUnits(res.Msg.Balance, creditScale)
			if err != nil {
				return errf(err, "bench setup: starting balance of %s", id)
			}
			r.granted[i].Store(b)
			return nil
		})
	})
}

// load runs warmup then the measured window and returns the merged
// per-operation stats of the measured window.
func (r *runner) load(ctx context.Context) (map[Op]*opStats, time.Duration, time.Duration, error) {
	cfg := r.cfg
	var weights []Op
	for _, op := range mixOps {
		for i := 0; i < cfg.Mix[op]; i++ {
			weights = append(weights, op)
		}
	}
	if cfg.Rate > 0 {
		r.interval = time.Duration(float64(time.Second) / cfg.Rate)
	}
	workers := make([]*worker, cfg.Concurrency)
	for i := range workers {
		rng := rand.New(rand.NewPCG(cfg.Seed, uint64(i)+1))
		w := &worker{r: r, id: i, rng: rng, eps: r.conns[i%len(r.conns)], ops: weights,
			// Its own source, so --random-ids leaves the workload as it is.
			idRng: rand.New(rand.NewPCG(cfg.Seed^0x1d5, uint64(i)+1)),
			stats: map[Op]*opStats{}, warm: map[Op]*opStats{}}
		if cfg.Zipf > 0 {
			w.zipf = rand.NewZipf(rng, cfg.Zipf, 1, uint64(cfg.Customers-1))
		}
		for _, op := range allOps {
			w.stats[op], w.warm[op] = newOpStats(), newOpStats()
		}
		workers[i] = w
	}

	if cfg.BeforeLoad != nil {
		cfg.BeforeLoad()
	}
	stopProgress := r.startProgress()
	r.phase.Store(phaseWarmup)
	r.stopped = make(chan struct{})
	r.loadT0 = time.Now()
	r.windowEnd.Store(math.MaxInt64)
	if cfg.Warmup == 0 {
		r.phase.Store(phaseMeasure)
	}
	var wg sync.WaitGroup
	for _, w := range workers {
		wg.Go(func() { w.run(ctx) })
	}
	r.logf("load: %d clients, warmup %s, measuring %s", cfg.Concurrency, cfg.Warmup, cfg.Duration)
	sleepCtx(ctx, cfg.Warmup)
	writesAtStart, startErr := readWriteCounters(ctx, r.hcs[0], r.leader.url)
	t1 := time.Now()
	r.windowEnd.Store(int64(t1.Sub(r.loadT0) + cfg.Duration))
	r.phase.Store(phaseMeasure)
	sleepCtx(ctx, cfg.Duration)
	t2 := time.Now()
	r.phase.Store(phaseStop)
	close(r.stopped)
	writesAtEnd, endErr := readWriteCounters(ctx, r.hcs[0], r.leader.url)
	if err := errors.Join(startErr, endErr); err != nil {
		r.logf("load: the leader's write split is left out: %v", err)
	} else {
		r.leaderWrites = leaderWrites(writesAtStart, writesAtEnd)
	}
	wg.Wait()
	stopProgress()
	if cfg.AfterLoad != nil {
		cfg.AfterLoad()
	}
	if err := ctx.Err(); err != nil {
		return nil, 0, 0, errf(err, "bench: interrupted")
	}
	out := map[Op]*opStats{}
	for _, op := range allOps {
		out[op] = newOpStats()
		for _, w := range workers {
			out[op].merge(w.stats[op])
		}
	}
	return out, t1.Sub(r.loadT0), t2.Sub(t1), nil
}

// startProgress prints a live line once a second while load runs.
func (r *runner) startProgress() (stop func()) {
	if r.cfg.Progress == nil {
		return func() {}
	}
	done := make(chan struct{})
	var wg sync.WaitGroup
	wg.Go(func() {
		t := time.NewTicker(time.Second)
		defer t.Stop()
		var lastReqs, lastEvents int64
		for {
			select {
			case <-done:
				fmt.Fprint(r.cfg.Progress, "\r\033[K")
				return
			case <-t.C:
			}
			reqs, events := r.liveReqs.Load(), r.liveEvents.Load()
			phase := map[int32]string{phaseWarmup: "warmup", phaseMeasure: "measure", phaseStop: "stopping"}[r.phase.Load()]
			fmt.Fprintf(r.cfg.Progress, "\r\033[K%-8s %6.0fs  %9d req/s  %10d events/s  %d errors",
				phase, time.Since(r.loadT0).Seconds(), reqs-lastReqs, events-lastEvents, r.liveErrors.Load())
			lastReqs, lastEvents = reqs, events
		}
	})
	return func() { close(done); wg.Wait() }
}
