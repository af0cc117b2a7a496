package fsm

import "strings"

func (a *applier) scaleOf(creditTypeID string) uint8 {
	if ct := a.creditType(creditTypeID); ct != nil {
		return ct.Scale
	}
	return 0
}

// deferredFor is a grant's deferred revenue at a given remainder.
func (a *applier) deferredFor(g *Grant, remaining int64) (int64, error) {
	if g.Category != Paid {
		return 0, nil
	}
	return moneyFor(remaining, g.CostBasis, a.scaleOf(g.CreditTypeID))
}

func (a *applier) indexLive(g *Grant) {
	// Only a cached pool can hold a list (poolGrants reads it once).
	if p, ok := a.pools[string(poolKey(g.CustomerID, g.CreditTypeID))]; ok {
		p.live, p.liveLoaded = nil, false
	}
	a.put(a.bBurnOrder, burnKey(g), []byte(g.ID))
	if g.ExpiresAt != 0 {
		a.put(a.tx.Bucket(bGrantExp), timeIDKey(g.ExpiresAt, g.ID), nil)
	}
}

func (a *applier) unindexLive(g *Grant) {
	a.del(a.bBurnOrder, burnKey(g))
	if g.ExpiresAt != 0 {
		a.del(a.tx.Bucket(bGrantExp), timeIDKey(g.ExpiresAt, g.ID))
	}
}

func isLive(s GrantStatus) bool { return s == GrantPending || s == GrantActive }

func grantHash(a *applier, c *CreateGrant) [16]byte {
	return a.payloadHash(func(e *enc) { encodeCommandBody(e, *c) })
}

func (a *applier) createGrant(c CreateGrant) (*Grant, bool, error) {
	if err := firstErr(checkID("id", c.ID), checkID("customer_id", c.CustomerID), checkID("credit_type_id", c.CreditTypeID),
		checkAmount("amount", c.Amount, false), checkDecimal("cost_basis", c.CostBasis),
		checkText("source_ref", c.SourceRef, MaxNameLen)); err != nil {
		return nil, false, err
	}
	if strings.HasPrefix(c.ID, PurchaseGrantPrefix) {
		return nil, false, invalid("id", "ids beginning %q name the grants of purchases; choose another", PurchaseGrantPrefix)
	}
	switch c.Category {
	case Paid:
		if c.CostBasis.IsZero() {
			return nil, false, invalid("cost_basis", "is required for paid grants")
		}
		if err := checkCurrency("currency", c.Currency); err != nil {
			return nil, false, err
		}
	case Promotional:
		if !c.CostBasis.IsZero() || c.Currency != "" {
			return nil, false, invalid("cost_basis", "must be zero (and currency empty) for promotional grants")
		}
	default:
		return nil, false, invalid("category", "must be paid or promotional")
	}
	if c.Priority > MaxGrantPriority {
		return nil, false, invalid("priority", "must be 0 to %d", MaxGrantPriority)
	}
	if c.SourceKind > SourcePayment {
		return nil, false, invalid("source_kind", "must be manual, purchase, invoice or payment")
	}
	// A retry is answered before the checks against the time: one of a
	// grant that has expired since must return it, not refuse it.
	h := grantHash(a, &c)
	if _, found, same := a.idemLookup(idemGrant, c.ID, h); found {
		if !same {
			return nil, false, conflict("id", "grant %s was created with a different payload", c.ID)
		}
		if g := a.grant(c.ID); g != nil {
			return g, true, nil
		}
	}
	eff := c.EffectiveAt
	if eff == 0 {
		eff = a.now
	}
	if c.ExpiresAt != 0 && c.ExpiresAt <= eff {
		return nil, false, invalid("expires_at", "must be after effective_at")
	}
	if c.ExpiresAt != 0 && c.ExpiresAt <= a.now {
		return nil, false, invalid("expires_at", "is in the past")
	}
	if a.grant(c.ID) != nil {
		return nil, false, &Error{Code: CodeAlreadyExists, Field: "id", Msg: "grant " + c.ID + " exists"}
	}
	if a.customer(c.CustomerID) == nil {
		return nil, false, notFound("customer_id", "no customer %s", c.CustomerID)
	}
	if a.creditType(c.CreditTypeID) == nil {
		return nil, false, notFound("credit_type_id", "no credit type %s", c.CreditTypeID)
	}
	g := &Grant{ID: c.ID, CustomerID: c.CustomerID, CreditTypeID: c.CreditTypeID, Category: c.Category,
		Amount: c.Amount, Remaining: c.Amount, CostBasis: c.CostBasis, Currency: c.Currency, Priority: c.Priority,
		EffectiveAt: eff, ExpiresAt: c.ExpiresAt, SourceKind: c.SourceKind, SourceRef: c.SourceRef, CreatedAt: a.now}
	if err := a.addGrant(g, CauseGrant, c.ID); err != nil {
		return nil, false, err
	}
	a.idemStore(idemGrant, c.ID, h, nil)
	return g, false, nil
}

// addGrant stores a new grant, writes its ledger entry and, if it is
// effective now, repays the pool's overdraft from it.
func (a *applier) addGrant(g *Grant, cause CauseKind, causeID string) error {
	deferred, err := a.deferredFor(g, g.Remaining)
	if err != nil {
		return invalid("amount", "amount × cost_basis overflows")
	}
	p := a.pool(g.CustomerID, g.CreditTypeID)
	bal, err := addChecked(p.Balance, g.Amount)
	if err != nil {
		return invalid("amount", "pool balance would overflow")
	}
	g.DeferredMicros = deferred
	g.Status = GrantActive
	if g.EffectiveAt > a.now {
		g.Status = GrantPending
		a.put(a.tx.Bucket(bGrantStart), timeIDKey(g.EffectiveAt, g.ID), nil)
	}
	a.grants[g.ID] = g
	a.touchGrant(g)
	a.put(a.tx.Bucket(bCustGrant), poolKey(g.CustomerID, g.ID), nil)
	a.indexLive(g)
	p.Balance = bal
	a.touchPool(p)
	a.appendLedger(p, &LedgerEntry{CustomerID: g.CustomerID, CreditTypeID: g.CreditTypeID, GrantID: g.ID,
		Kind: EntryGrant, Amount: g.Amount, BalanceAfter: p.Balance, CostBasis: g.CostBasis, Currency: g.Currency,
		MoneyMicros: deferred, CauseKind: cause, CauseID: causeID, SourceKind: g.SourceKind, SourceRef: g.SourceRef})
	if g.Status == GrantActive {
		a.repayOverdraft(p, g, cause, causeID)
	}
	return nil
}

// repayOverdraft covers the pool's overdraft from a grant that has just
// become active (or grown): one repay entry, balance unchanged, naming what
// brought the credits (the purchase, grant request or adjustment, or the
// Tick that made them effective).
func (a *applier) repayOverdraft(p *Pool, g *Grant, cause CauseKind, causeID string) {
	// An expired grant repays nothing (its credits are breakage, not
	// revenue), also before the Tick that writes its expiry.
	if p.Overdraft == 0 || g.Remaining == 0 || (g.ExpiresAt != 0 && a.now >= g.ExpiresAt) {
		return
	}
	repay := min(p.Overdraft, g.Remaining)
	money := a.takeFromGrant(p, g, repay)
	p.Overdraft -= repay
	a.touchPool(p)
	a.appendLedger(p, &LedgerEntry{CustomerID: g.CustomerID, CreditTypeID: g.CreditTypeID, GrantID: g.ID,
		Kind: EntryRepay, Repaid: repay, BalanceAfter: p.Balance, CostBasis: g.CostBasis, Currency: g.Currency,
		MoneyMicros: money, CauseKind: cause, CauseID: causeID, SourceKind: g.SourceKind, SourceRef: g.SourceRef})
}

// takeFromGrant burns n credits of g (n ≤ remaining) and returns the change
// to its deferred revenue (≤ 0). Marks the grant depleted at zero.
func (a *applier) takeFromGrant(p *Pool, g *Grant, n int64) int64 {
	if p.usableOK && canBurn(g, a.now) {
		p.usable -= n
	} else {
		forgetUsable(p)
	}
	before := g.DeferredMicros
	g.Remaining -= n
	after, err := a.deferredFor(g, g.Remaining)
	if err != nil { // cannot happen: remaining only shrank since it fit
		a.err = err
	}
	g.DeferredMicros = after
	g.Burned += n
	if g.Remaining == 0 && isLive(g.Status) {
		if g.Status == GrantPending { // burned whole before its activation's Tick
			a.del(a.tx.Bucket(bGrantStart), timeIDKey(g.EffectiveAt, g.ID))
		}
		g.Status = GrantDepleted
		a.unindexLive(g)
		a.touchGrant(g)
	} else {
		a.tallyBurn(p, g)
	}
	return after - before
}

func (a *applier) revokeGrant(c RevokeGrant) (*Grant, bool, error) {
	if err := firstErr(checkGrantID("grant_id", c.GrantID), checkAmount("amount", c.Amount, true),
		checkText("reason", c.Reason, MaxReasonLen), checkOptionalID("request_id", c.RequestID)); err != nil {
		return nil, false, err
	}
	var h [16]byte
	if c.RequestID != "" {
		h = a.payloadHash(func(e *enc) { encodeCommandBody(e, c) })
		if _, found, same := a.idemLookup(idemRevoke, c.RequestID, h); found {
			if !same {
				return nil, false, conflict("request_id", "revocation %s was made with a different payload", c.RequestID)
			}
			return a.grant(c.GrantID), true, nil
		}
	}
	g := a.grant(c.GrantID)
	if g == nil {
		return nil, false, notFound("grant_id", "no grant %s", c.GrantID)
	}
	if !isLive(g.Status) {
		return nil, false, precondition("grant_id", "grant %s is %s; only pending or active grants can be revoked", g.ID, g.Status)
	}
	n := g.Remaining
	if c.Amount != 0 && c.Amount < n {
		n = c.Amount
	}
	before := g.DeferredMicros
	after, _ := a.deferredFor(g, g.Remaining-n)
	p := a.pool(g.CustomerID, g.CreditTypeID)
	forgetUsable(p)
	g.Remaining -= n
	g.DeferredMicros = after
	g.Revoked += n
	if g.Remaining == 0 {
		a.unindexLive(g)
		if g.Status == GrantPending {
			a.del(a.tx.Bucket(bGrantStart), timeIDKey(g.EffectiveAt, g.ID))
		}
		g.Status = GrantRevoked
		g.Reason = c.Reason
	}
	a.touchGrant(g)
	p.Balance -= n
	a.touchPool(p)
	cause := c.RequestID
	a.appendLedger(p, &LedgerEntry{CustomerID: g.CustomerID, CreditTypeID: g.CreditTypeID, GrantID: g.ID,
		Kind: EntryRevoke, Amount: -n, BalanceAfter: p.Balance, CostBasis: g.CostBasis, Currency: g.Currency,
		MoneyMicros: after - before, CauseKind: CauseRevoke, CauseID: cause, SourceKind: g.SourceKind,
		SourceRef: g.SourceRef, Reason: c.Reason})
	if c.RequestID != "" {
		a.idemStore(idemRevoke, c.RequestID, h, nil)
	}
	return g, false, nil
}

func (a *applier) adjust(c Adjust) (*Grant, bool, error) {
	if err := firstErr(checkID("id", c.ID), checkGrantID("grant_id", c.GrantID),
		checkText("reason", c.Reason, MaxReasonLen)); err != nil {
		return nil, false, err
	}
	if c.Amount == 0 {
		return nil, false, invalid("amount", "must not be zero")
	}
	if c.Amount > MaxAmount || c.Amount < -MaxAmount {
		return nil, false, invalid("amount", "is out of range")
	}
	if c.Reason == "" {
		return nil, false, invalid("reason", "is required for an adjustment")
	}
	h := a.payloadHash(func(e *enc) { encodeCommandBody(e, c) })
	if _, found, same := a.idemLookup(idemAdjust, c.ID, h); found {
		if !same {
			return nil, false, conflict("id", "adjustment %s was made with a different payload", c.ID)
		}
		return a.grant(c.GrantID), true, nil
	}
	g := a.grant(c.GrantID)
	if g == nil {
		return nil, false, notFound("grant_id", "no grant %s", c.GrantID)
	}
	if !isLive(g.Status) && g.Status != GrantDepleted {
		return nil, false, precondition("grant_id", "grant %s is %s; only live or depleted grants can be adjusted", g.ID, g.Status)
	}
	rem := g.Remaining + c.Amount
	if rem < 0 {
		return nil, false, precondition("amount", "grant %s has %d remaining; cannot remove %d", g.ID, g.Remaining, -c.Amount)
	}
	amt, err := addChecked(g.Amount, c.Amount)
	if err != nil || amt > MaxAmount {
		return nil, false, invalid("amount", "grant amount would overflow")
	}
	p := a.pool(g.CustomerID, g.CreditTypeID)
	bal, err := addChecked(p.Balance, c.Amount)
	if err != nil {
		return nil, false, invalid("amount", "pool balance would overflow")
	}
	after, err := a.deferredFor(g, rem)
	if err != nil {
		return nil, false, invalid("amount", "remaining × cost_basis overflows")
	}
	before := g.DeferredMicros
	wasDepleted := g.Status == GrantDepleted
	forgetUsable(p)
	g.Remaining, g.Amount, g.DeferredMicros = rem, amt, after
	g.Adjusted += c.Amount
	switch {
	case wasDepleted && rem > 0 && g.EffectiveAt > a.now:
		// Depleted before its effective_at: pending again, to be activated.
		g.Status = GrantPending
		a.indexLive(g)
		a.put(a.tx.Bucket(bGrantStart), timeIDKey(g.EffectiveAt, g.ID), nil)
	case wasDepleted && rem > 0:
		g.Status = GrantActive
		a.indexLive(g)
	case g.Status == GrantActive && rem == 0:
		g.Status = GrantDepleted
		a.unindexLive(g)
	case g.Status == GrantPending && rem == 0:
		// Nothing left to activate: depleted now, out of every index.
		g.Status = GrantDepleted
		a.unindexLive(g)
		a.del(a.tx.Bucket(bGrantStart), timeIDKey(g.EffectiveAt, g.ID))
	}
	a.touchGrant(g)
	p.Balance = bal
	a.touchPool(p)
	a.appendLedger(p, &LedgerEntry{CustomerID: g.CustomerID, CreditTypeID: g.CreditTypeID, GrantID: g.ID,
		Kind: EntryAdjust, Amount: c.Amount, BalanceAfter: p.Balance, CostBasis: g.CostBasis, Currency: g.Currency,
		MoneyMicros: after - before, CauseKind: CauseAdjust, CauseID: c.ID, SourceKind: g.SourceKind,
		SourceRef: g.SourceRef, Reason: c.Reason})
	a.idemStore(idemAdjust, c.ID, h, nil)
	if g.Status == GrantActive {
		a.repayOverdraft(p, g, CauseAdjust, c.ID)
	}
	return g, false, nil
}
