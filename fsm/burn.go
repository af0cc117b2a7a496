package fsm

import (
	"bytes"
	"math"
	"strconv"
)

// poolGrants returns what a pool's grants hold that may burn now (live,
// effective, unexpired). The pool's live grants are read from the burn
// order index once and kept with the cached pool, with their sum: it holds
// until a grant's effective_at or expires_at comes, a burn takes from it
// (takeFromGrant), or a grant changes otherwise (forgetUsable). Summing every
// live grant for every event made a pool of 100,000 grants cost 1.6 ms an
// event. A recount drops the grants that left the live set (only indexLive
// brings one back, and it drops the list).
func (a *applier) poolGrants(p *Pool) (usable int64) {
	if !p.liveLoaded {
		live := a.loadLiveGrants(p)
		if a.err != nil {
			return 0
		}
		p.live, p.liveLoaded, p.usableOK = live, true, false
	}
	if p.usableOK && a.now < p.usableUntil {
		return p.usable
	}
	until := Timestamp(math.MaxInt64)
	live := p.live[:0]
	for _, g := range p.live {
		a.grantsSummed++
		if !isLive(g.Status) {
			continue
		}
		live = append(live, g)
		if canBurn(g, a.now) {
			usable += g.Remaining
		}
		if g.EffectiveAt > a.now {
			until = min(until, g.EffectiveAt)
		}
		if g.ExpiresAt != 0 && g.ExpiresAt > a.now {
			until = min(until, g.ExpiresAt)
		}
	}
	clear(p.live[len(live):])
	p.live = live
	p.usable, p.usableUntil, p.usableOK = usable, until, true
	return usable
}

// available is what a pool's customer may still burn or hold now: the
// credits its grants hold that may burn, less the reserved and the overdrawn.
func (a *applier) available(p *Pool) int64 {
	return a.poolGrants(p) - p.Reserved - p.Overdraft
}

// forgetUsable drops a pool's sum of usable credits after a change to one
// of its grants other than a burn (see poolGrants).
func forgetUsable(p *Pool) { p.usableOK = false }

func (a *applier) loadLiveGrants(p *Pool) []*Grant {
	var live []*Grant
	prefix := burnPrefix(p.CustomerID, p.CreditTypeID)
	c := a.bBurnOrder.Cursor()
	for k, v := c.Seek(prefix); k != nil && bytes.HasPrefix(k, prefix); k, v = c.Next() {
		// Look in the cache first: indexing a map with string(v) does not
		// allocate, while a.grant's string argument would.
		g, ok := a.grants[string(v)]
		if !ok {
			g = a.grant(string(v))
		}
		if g == nil {
			if a.err == nil {
				a.err = errIndex("burn order names missing grant " + string(v))
			}
			return nil
		}
		live = append(live, g)
	}
	return live
}

type errIndex string

func (e errIndex) Error() string { return "index corrupt: " + string(e) }

// canBurn says whether g's credits may burn at now: a live grant within
// [effective_at, expires_at). A pending grant burns from its effective_at
// on, before the Tick that marks it active (and repays any overdraft from
// it), as an expired one stops at its expires_at before its Tick.
func canBurn(g *Grant, now Timestamp) bool {
	return isLive(g.Status) && g.Remaining > 0 && g.EffectiveAt <= now && (g.ExpiresAt == 0 || now < g.ExpiresAt)
}

// floorOf is the lowest a pool's available may fall: −limit when the
// customer's plan for this credit type allows overdraft, else 0.
func (a *applier) floorOf(cu *Customer, creditTypeID string) int64 {
	if cu == nil || cu.PlanID == "" {
		return 0
	}
	pl := a.plan(cu.PlanID)
	if pl == nil || pl.CreditTypeID != creditTypeID || pl.Overdraft != OverdraftAllow {
		return 0
	}
	return -pl.OverdraftLimit
}

// burn takes credits from the grants that may burn, in order, and puts any
// shortfall on the pool's overdraft; the caller has checked it is allowed
// (poolGrants). Grants it finds used up leave the pool's live list.
func (a *applier) burn(p *Pool, credits int64, cause CauseKind, causeID string, burns []GrantBurn) []GrantBurn {
	left := credits
	live, kept, i := p.live, 0, 0
	for ; i < len(live) && left > 0; i++ {
		g := live[i]
		if canBurn(g, a.now) {
			take := min(g.Remaining, left)
			money := a.takeFromGrant(p, g, take)
			p.Balance -= take
			left -= take
			a.appendLedger(p, &LedgerEntry{CustomerID: p.CustomerID, CreditTypeID: p.CreditTypeID, GrantID: g.ID,
				Kind: EntryBurn, Amount: -take, BalanceAfter: p.Balance, CostBasis: g.CostBasis, Currency: g.Currency,
				MoneyMicros: money, CauseKind: cause, CauseID: causeID, SourceKind: g.SourceKind, SourceRef: g.SourceRef})
			burns = append(burns, GrantBurn{GrantID: g.ID, Amount: take})
		}
		if isLive(g.Status) {
			live[kept] = g
			kept++
		}
	}
	if kept < i {
		kept += copy(live[kept:], live[i:])
		clear(live[kept:])
		p.live = live[:kept]
	}
	if left > 0 {
		p.Overdraft += left
		p.Balance -= left
		a.appendLedger(p, &LedgerEntry{CustomerID: p.CustomerID, CreditTypeID: p.CreditTypeID, Kind: EntryBurn,
			Amount: -left, BalanceAfter: p.Balance, CauseKind: cause, CauseID: causeID, Reason: "overdraft"})
		burns = append(burns, GrantBurn{Amount: left})
	}
	a.touchPool(p)
	return burns
}

// usageCredits resolves an event's credit type and credits.
func (a *applier) usageCredits(featureID string, quantity int64, creditTypeID string, credits int64) (string, int64, *Error) {
	switch {
	case featureID != "" && creditTypeID != "":
		return "", 0, invalid("feature_id", "give either a feature and quantity or a credit type and credits, not both")
	case featureID != "":
		if err := firstErr(checkID("feature_id", featureID), checkAmount("quantity", quantity, true)); err != nil {
			return "", 0, err.(*Error)
		}
		if credits != 0 {
			return "", 0, invalid("credits", "must be empty when a feature is given")
		}
		f := a.feature(featureID)
		if f == nil {
			return "", 0, notFound("feature_id", "no feature %s", featureID)
		}
		ct := a.creditType(f.CreditTypeID)
		if ct == nil {
			return "", 0, notFound("feature_id", "feature %s names missing credit type %s", featureID, f.CreditTypeID)
		}
		n, err := usageCost(quantity, f.Rate, ct.Scale)
		if err != nil {
			return "", 0, err
		}
		return f.CreditTypeID, n, nil
	case creditTypeID != "":
		if err := firstErr(checkID("credit_type_id", creditTypeID), checkAmount("credits", credits, true)); err != nil {
			return "", 0, err.(*Error)
		}
		if quantity != 0 {
			return "", 0, invalid("quantity", "must be empty when credits are given")
		}
		if a.creditType(creditTypeID) == nil {
			return "", 0, notFound("credit_type_id", "no credit type %s", creditTypeID)
		}
		return creditTypeID, credits, nil
	}
	return "", 0, invalid("feature_id", "is required (or credit_type_id and credits)")
}

// usageCost is what quantity units of a feature at rate cost, in units of
// a credit type of scale; beyond MaxAmount it is refused on "quantity".
// Burns, reservations and checks all price usage through it.
func usageCost(quantity int64, rate Decimal, scale uint8) (int64, *Error) {
	n, err := creditsFor(quantity, rate, scale)
	if err != nil || n > MaxAmount {
		return 0, invalid("quantity", "quantity × rate is too large")
	}
	return n, nil
}

func (a *applier) burnUsage(c BurnUsage) ([]EventResult, error) {
	if len(c.Events) == 0 {
		return nil, invalid("events", "must not be empty")
	}
	if len(c.Events) > MaxEventsPerBatch {
		return nil, invalid("events", "at most %d per batch", MaxEventsPerBatch)
	}
	results := make([]EventResult, len(c.Events))
	for i := range c.Events {
		a.burnEvent(&c.Events[i], i, &results[i])
		if a.err != nil {
			return nil, nil
		}
	}
	return results, nil
}

func reject(r *EventResult, err *Error) {
	r.Status, r.Code, r.Field, r.Reason = EventRejected, err.Code, err.Field, err.Msg
}

func (a *applier) burnEvent(ev *UsageEvent, pos int, r *EventResult) {
	r.EventID = ev.ID
	if err := checkID("event_id", ev.ID); err != nil {
		reject(r, err)
		return
	}
	h := a.payloadHash(func(e *enc) { encodeUsageEvent(e, ev) })
	if stored, found, same := a.idemLookup(idemUsage, ev.ID, h); found {
		if !same {
			reject(r, conflict("event_id", "event %s was reported before with a different payload", ev.ID))
			return
		}
		d := dec{b: stored}
		r.decode(&d)
		if d.err != nil {
			a.err = d.err
			return
		}
		r.Duplicate = true
		return
	}
	if err := checkID("customer_id", ev.CustomerID); err != nil {
		reject(r, err)
		return
	}
	cu := a.customer(ev.CustomerID)
	if cu == nil {
		reject(r, notFound("customer_id", "no customer %s", ev.CustomerID))
		return
	}
	ctID, credits, err := a.usageCredits(ev.FeatureID, ev.Quantity, ev.CreditTypeID, ev.Credits)
	if err != nil {
		reject(r, err)
		return
	}
	r.CreditTypeID, r.Credits = ctID, credits
	p := a.pool(ev.CustomerID, ctID)
	available := a.available(p)
	floor := a.floorOf(cu, ctID)
	if available-credits < floor {
		scale := a.scaleOf(ctID)
		r.Status, r.Available = EventDenied, available
		r.Reason = "not enough credits: available " + FormatUnits(available, scale) +
			", needed " + FormatUnits(credits, scale)
		r.BalanceAfter, r.AvailableAfter = p.Balance, available
		// A denial is demand: credits that left without a burn (expired,
		// revoked) or a top-up held back then (paused, capped) would
		// otherwise wait for a burn that a plan which denies never allows.
		if a.rules >= rulesDeniedEventTopsUp {
			a.maybeAutoTopUp(cu, p, available, pos)
		}
	} else {
		r.Status = EventBurned
		if credits > 0 {
			r.Burns = a.keepBurns(a.burn(p, credits, CauseUsage, ev.ID, a.burnSpace()))
		}
		r.BalanceAfter, r.AvailableAfter = p.Balance, available-credits
		if credits > 0 {
			a.maybeAutoTopUp(cu, p, r.AvailableAfter, pos)
		}
	}
	a.buf.b = a.buf.b[:0]
	r.encode(&a.buf)
	a.idemStore(idemUsage, ev.ID, h, a.buf.b)
}

// effectiveAutoTopUp is the customer's settings, or the plan's defaults when
// the customer has none of its own.
func effectiveAutoTopUp(cu *Customer, pl *Plan) AutoTopUp {
	if cu.AutoTopUp != (AutoTopUp{}) {
		return cu.AutoTopUp
	}
	return pl.AutoTopUp
}

func monthOf(t Timestamp) int32 {
	tt := t.Time()
	return int32(tt.Year()*100 + int(tt.Month()))
}

// lastAlreadyPending begins the auto_top_up_last of a check that found a
// top-up pending; the pending purchase's id follows.
const lastAlreadyPending = "already pending: "

func (a *applier) setAutoTopUpLast(cu *Customer, why string) {
	if cu.AutoTopUpLast != why {
		cu.AutoTopUpLast = why
		a.touchCustomer(cu)
	}
}

// maybeAutoTopUp starts an automatic purchase when a burn or a Reserve's
// hold leaves available below the customer's threshold, a usage event is
// denied or a Reserve or Settle refused while it is below, or an
// UpsertCustomer finds it below, or records why it did not. pos tells
// apart the purchases one command may start (a batch's events); the id is
// unique because a log index and a command's place in its entry name one
// command.
func (a *applier) maybeAutoTopUp(cu *Customer, p *Pool, available int64, pos int) {
	if cu.PlanID == "" {
		return
	}
	pl := a.plan(cu.PlanID)
	if pl == nil || pl.CreditTypeID != p.CreditTypeID {
		return
	}
	s := effectiveAutoTopUp(cu, pl)
	if available >= s.ThresholdCredits {
		return
	}
	switch {
	case !s.Enabled:
		a.setAutoTopUpLast(cu, "disabled")
		return
	case cu.AutoTopUpPaused != "":
		a.setAutoTopUpLast(cu, "paused: "+cu.AutoTopUpPaused)
		return
	case cu.AutoPendingPurchase != "":
		a.setAutoTopUpLast(cu, lastAlreadyPending+cu.AutoPendingPurchase)
		return
	}
	credits := s.AmountCredits
	if s.Mode == TopUpToTarget {
		credits = s.AmountCredits - available
	}
	credits = max(credits, pl.MinPurchaseCredits, 1)
	if pl.MaxPurchaseCredits > 0 {
		credits = min(credits, pl.MaxPurchaseCredits)
	}
	cost, err := moneyFor(credits, pl.PricePerCredit, a.scaleOf(pl.CreditTypeID))
	if err != nil || credits > MaxAmount || cost > MaxAmount { // as StartPurchase bounds them
		a.setAutoTopUpLast(cu, "top-up cost overflows")
		return
	}
	month := monthOf(a.now)
	spent := cu.AutoSpendMicros
	if cu.AutoSpendMonth != month {
		spent = 0
	}
	spentAfter, err := addChecked(spent, cost)
	if err != nil || (s.MonthlyCapMicros > 0 && spentAfter > s.MonthlyCapMicros) {
		a.setAutoTopUpLast(cu, "monthly cap reached")
		return
	}
	id := AutoPurchasePrefix + strconv.FormatUint(a.index, 10) + "-" + strconv.Itoa(a.cmdPos) + "-" + strconv.Itoa(pos)
	if a.loadPurchase(id) != nil { // only a state from before AutoPurchasePrefix was reserved
		a.setAutoTopUpLast(cu, "purchase id "+id+" is taken")
		return
	}
	pu := &Purchase{ID: id, CustomerID: cu.ID, PlanID: pl.ID, CreditTypeID: pl.CreditTypeID, Credits: credits,
		UnitPrice: pl.PricePerCredit, Currency: pl.Currency, TotalMicros: cost, Flow: FlowAuto,
		Status: PurchasePending, CreatedAt: a.now, UpdatedAt: a.now}
	a.storePurchase(pu)
	cu.AutoSpendMonth, cu.AutoSpendMicros = month, spentAfter
	cu.AutoPendingPurchase = id
	cu.AutoTopUpLast = ""
	a.touchCustomer(cu)
}

// burnSlabSize is how many GrantBurns one slab holds: most events burn one
// grant, so a slab serves hundreds of results.
const burnSlabSize = 512

// burnSpace returns empty room for one event's burns at the free end of a
// shared slab: one allocation per slab instead of one per event. The slab is
// never rewound, so results already answered keep their burns.
func (a *applier) burnSpace() []GrantBurn {
	if cap(a.burnSlab)-len(a.burnSlab) < 8 {
		a.burnSlab = make([]GrantBurn, 0, burnSlabSize)
	}
	return a.burnSlab[len(a.burnSlab):]
}

// keepBurns claims the slab room burns used (unless appending outgrew it
// and moved them) and caps them, so a caller appending to one result's
// burns cannot write into the next one's.
func (a *applier) keepBurns(burns []GrantBurn) []GrantBurn {
	n := len(burns)
	if n == 0 {
		return nil
	}
	if free := a.burnSlab[len(a.burnSlab):cap(a.burnSlab)]; n <= len(free) && &free[0] == &burns[0] {
		a.burnSlab = a.burnSlab[:len(a.burnSlab)+n]
	}
	return burns[:n:n]
}
