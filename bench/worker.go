package bench

import (
	"context"
	"fmt"
	"math/rand/v2"
	"strconv"
	"time"

	"connectrpc.com/connect"
	"google.golang.org/protobuf/types/known/durationpb"

	v1 "github.com/creditd/creditd/gen/creditd/v1"
)

// worker is one client: it sends one request at a time.
type worker struct {
	r    *runner
	id   int
	rng  *rand.Rand
	zipf *rand.Zipf
	eps  []*endpoint // leader first
	next int         // round robin over eps with --spread
	ops  []Op        // the mix, one entry per unit of weight
	seq  uint64
	// idRng orders ids at random with Config.RandomIDs.
	idRng *rand.Rand
	idBuf []byte // scratch for newID

	stats map[Op]*opStats // measured window
	warm  map[Op]*opStats // warmup: counted nowhere
}

func (w *worker) run(ctx context.Context) {
	r := w.r
	for ctx.Err() == nil && r.phase.Load() != phaseStop {
		sched := time.Now()
		if r.interval > 0 {
			// Slots are taken in order: once one falls past the window,
			// every later one does, and this client is done. A slot taken
			// before the window's end is known sleeps until the stop.
			at := time.Duration(r.schedN.Add(1)-1) * r.interval
			if at > time.Duration(r.windowEnd.Load()) {
				return
			}
			sched = r.loadT0.Add(at)
			if d := time.Until(sched); d > 0 && !r.sleepLoad(ctx, d) {
				return
			}
			if r.phase.Load() == phaseStop {
				return
			}
		}
		switch w.ops[w.rng.IntN(len(w.ops))] {
		case OpReport:
			w.report(ctx, sched)
		case OpCheck:
			w.check(ctx, sched)
		case OpReserve:
			w.reserve(ctx, sched)
		case OpGrant:
			w.grant(ctx, sched)
		}
	}
}

func (w *worker) endpoint() *endpoint {
	if !w.r.cfg.Spread {
		return w.eps[0]
	}
	w.next = (w.next + 1) % len(w.eps)
	return w.eps[w.next]
}

func (w *worker) customer() int {
	if w.zipf != nil {
		return int(w.zipf.Uint64())
	}
	return w.rng.IntN(w.r.cfg.Customers)
}

// newID returns "b<run>-<kind><client>-<seq>", or with random ids
// "b<run>-<kind><16 hex digits>-<client>-<seq>". It is built in a reused
// buffer rather than by fmt: the load generator shares the cores with the
// cluster it measures, and makes an id per event.
func (w *worker) newID(kind string) string {
	w.seq++
	b := append(w.idBuf[:0], 'b')
	b = append(b, w.r.cfg.RunID...)
	b = append(b, '-')
	b = append(b, kind...)
	if w.r.cfg.RandomIDs {
		// The random part leads, so ids sort at random; client and
		// sequence after it keep them unique.
		var hex [16]byte
		r := strconv.AppendUint(hex[:0], w.idRng.Uint64(), 16)
		for range 16 - len(r) {
			b = append(b, '0')
		}
		b = append(b, r...)
		b = append(b, '-')
	}
	b = strconv.AppendInt(b, int64(w.id), 10)
	b = append(b, '-')
	b = strconv.AppendUint(b, w.seq, 10)
	w.idBuf = b
	return string(b)
}

// call sends one request, resending it on transient failures (every write
// carries an idempotency key), and measures it from sched to the answer.
// It returns the stats the call counts in (the measured window's or
// warmup's) and the last error. A write whose outcome stays unknown is
// queued for the verification to resolve.
func (w *worker) call(ctx context.Context, op Op, sched time.Time, write bool, fn func(context.Context) error) (*opStats, error) {
	r := w.r
	st := w.warm[op]
	if r.phase.Load() == phaseMeasure {
		st = w.stats[op]
	}
	var err error
	for i := 0; i < maxAttempts; i++ {
		cctx, cancel := context.WithTimeout(ctx, r.cfg.RequestTimeout)
		err = fn(cctx)
		cancel()
		// A no-op cluster has no results to give: the handler fails after
		// the command was replicated and applied. That is the answer.
		if err == nil || (r.cfg.Noop && connect.CodeOf(err) == connect.CodeInternal) {
			st.record(time.Since(sched))
			r.liveReqs.Add(1)
			return st, nil
		}
		r.liveErrors.Add(1)
		st.errors[codeName(err)]++
		if ctx.Err() != nil || !retryable(err) {
			break
		}
		if !sleepCtx(ctx, backoff(i)) {
			break
		}
	}
	if write && retryable(err) && !r.cfg.Noop {
		r.mu.Lock()
		r.unresolved = append(r.unresolved, fn)
		r.mu.Unlock()
	}
	return st, err
}

func (w *worker) report(ctx context.Context, sched time.Time) {
	r := w.r
	n := r.cfg.Batch
	events := make([]*v1.UsageEvent, n)
	custs := make([]int, n)
	for i := range events {
		c := w.customer()
		custs[i] = c
		events[i] = &v1.UsageEvent{Id: w.newID("e"), CustomerId: r.customers[c], FeatureId: featureID,
			Quantity: 1 + w.rng.Int64N(maxQuantity)}
	}
	req := &v1.ReportUsageRequest{Events: events}
	ep := w.endpoint()
	var burned, denied int64
	rejected := map[string]int64{}
	st, err := w.call(ctx, OpReport, sched, true, func(ctx context.Context) error {
		res, err := ep.usage.ReportUsage(ctx, connect.NewRequest(req))
		if err != nil {
			return err
		}
		// Account only once the whole answer checks out, so a resend after
		// a half-read answer cannot count twice.
		if len(res.Msg.Results) != n {
			return connect.NewError(connect.CodeInternal, fmt.Errorf("report: %d results for %d events", len(res.Msg.Results), n))
		}
		units := make([]int64, n)
		for i, er := range res.Msg.Results {
			if er.EventId != events[i].Id {
				return connect.NewError(connect.CodeInternal, fmt.Errorf("report: result %d is for event %q, not %q", i, er.EventId, events[i].Id))
			}
			if er.Status == v1.EventStatus_EVENT_STATUS_BURNED {
				u, err := parseUnits(er.Credits, creditScale)
				if err != nil {
					return connect.NewError(connect.CodeInternal, fmt.Errorf("report: event %s: %w", er.EventId, err))
				}
				units[i] = u
			}
		}
		for i, er := range res.Msg.Results {
			switch er.Status {
			case v1.EventStatus_EVENT_STATUS_BURNED:
				r.burned[custs[i]].Add(units[i])
				burned++
			case v1.EventStatus_EVENT_STATUS_DENIED:
				denied++
			default:
				rejected[er.ErrorCode]++
			}
		}
		return nil
	})
	if err != nil {
		return
	}
	r.liveEvents.Add(int64(n))
	st.requests++
	st.events += int64(n)
	st.burned += burned
	st.denied += denied
	for k, v := range rejected {
		st.rejected[k] += v
	}
}

func (w *worker) check(ctx context.Context, sched time.Time) {
	r := w.r
	c := w.customer()
	req := &v1.CheckRequest{CustomerId: r.customers[c], FeatureId: featureID, Quantity: 1 + w.rng.Int64N(maxQuantity)}
	ep := w.endpoint()
	allowed := false
	st, err := w.call(ctx, OpCheck, sched, false, func(ctx context.Context) error {
		res, err := ep.usage.Check(ctx, connect.NewRequest(req))
		if err == nil {
			allowed = res.Msg.Allowed
		}
		return err
	})
	if err != nil {
		return
	}
	r.liveEvents.Add(1)
	st.requests++
	st.events++
	if !allowed {
		st.denied++
	}
}

func (w *worker) grant(ctx context.Context, sched time.Time) {
	r := w.r
	c := w.customer()
	req := &v1.CreateGrantRequest{Id: w.newID("g"), CustomerId: r.customers[c], CreditTypeId: creditTypeID,
		Category: v1.GrantCategory_GRANT_CATEGORY_PROMOTIONAL, Amount: loadGrantCredits, Priority: uint32(w.rng.IntN(10))}
	ep := w.endpoint()
	st, err := w.call(ctx, OpGrant, sched, true, func(ctx context.Context) error {
		res, err := ep.grant.CreateGrant(ctx, connect.NewRequest(req))
		if err != nil {
			return err
		}
		u, err := parseUnits(res.Msg.Grant.GetAmount(), creditScale)
		if err != nil {
			return connect.NewError(connect.CodeInternal, fmt.Errorf("grant %s: %w", req.Id, err))
		}
		r.granted[c].Add(u)
		return nil
	})
	if err != nil {
		return
	}
	r.liveEvents.Add(1)
	st.requests++
	st.events++
}

// reserve holds credits, then settles part of them or (one time in four)
// releases them: three measured calls.
func (w *worker) reserve(ctx context.Context, sched time.Time) {
	r := w.r
	c := w.customer()
	q := 1 + w.rng.Int64N(maxQuantity)
	req := &v1.ReserveRequest{Id: w.newID("r"), CustomerId: r.customers[c], FeatureId: featureID, Quantity: q,
		Ttl: durationpb.New(reserveTTL)}
	ep := w.endpoint()
	denied := false
	st, err := w.call(ctx, OpReserve, sched, false, func(ctx context.Context) error {
		_, err := ep.usage.Reserve(ctx, connect.NewRequest(req))
		if connect.CodeOf(err) == connect.CodeFailedPrecondition {
			denied = true
			return nil
		}
		return err
	})
	if err != nil && retryable(err) {
		// Held or not: resend the reservation (its id makes that safe),
		// then release whatever it holds.
		w.queue(func(ctx context.Context) error {
			_, err := r.leader.usage.Reserve(ctx, connect.NewRequest(req))
			if connect.CodeOf(err) == connect.CodeFailedPrecondition {
				return nil
			}
			if err != nil {
				return err
			}
			_, err = r.leader.usage.Release(ctx, connect.NewRequest(&v1.ReleaseRequest{ReservationId: req.Id}))
			return err
		})
	}
	if err != nil {
		return
	}
	r.liveEvents.Add(1)
	st.requests++
	st.events++
	if denied {
		st.denied++
		return
	}
	if w.rng.IntN(4) == 0 {
		st, err := w.call(ctx, OpRelease, time.Now(), true, func(ctx context.Context) error {
			_, err := ep.usage.Release(ctx, connect.NewRequest(&v1.ReleaseRequest{ReservationId: req.Id}))
			return err
		})
		if err == nil {
			st.requests++
			st.events++
		}
		return
	}
	sreq := &v1.SettleRequest{ReservationId: req.Id, Actual: &v1.SettleRequest_Quantity{Quantity: w.rng.Int64N(q + 1)}}
	var settled int64
	st, err = w.call(ctx, OpSettle, time.Now(), true, func(ctx context.Context) error {
		res, err := ep.usage.Settle(ctx, connect.NewRequest(sreq))
		if err != nil {
			return err
		}
		u, err := parseUnits(res.Msg.Reservation.GetSettledAmount(), creditScale)
		if err != nil {
			return connect.NewError(connect.CodeInternal, fmt.Errorf("settle %s: %w", req.Id, err))
		}
		r.burned[c].Add(u)
		settled = u
		return nil
	})
	if err == nil {
		r.liveEvents.Add(1)
		st.requests++
		st.events++
		if settled > 0 {
			st.burned++
		}
	}
}

func (w *worker) queue(fn func(context.Context) error) {
	w.r.mu.Lock()
	w.r.unresolved = append(w.r.unresolved, fn)
	w.r.mu.Unlock()
}
