package fsm

import "strings"

// DefaultPurchasePriority is the priority of grants made by purchases.
const DefaultPurchasePriority = 0

func (a *applier) storePurchase(p *Purchase) {
	a.put(a.tx.Bucket(bPurchase), []byte(p.ID), a.encodeRec(p))
	if p.Status == PurchasePending {
		a.put(a.tx.Bucket(bPurPending), []byte(p.ID), nil)
	} else {
		a.del(a.tx.Bucket(bPurPending), []byte(p.ID))
	}
}

func (a *applier) loadPurchase(id string) *Purchase {
	raw := a.tx.Bucket(bPurchase).Get([]byte(id))
	if raw == nil {
		return nil
	}
	p := &Purchase{}
	d := dec{b: raw}
	p.decode(&d)
	if d.err != nil {
		a.err = d.err
		return nil
	}
	return p
}

func (a *applier) startPurchase(c StartPurchase) (*Purchase, bool, error) {
	if err := firstErr(checkID("id", c.ID), checkID("customer_id", c.CustomerID),
		checkAmount("credits", c.Credits, false)); err != nil {
		return nil, false, err
	}
	if c.Flow != FlowSelfServe && c.Flow != FlowInvoice {
		return nil, false, invalid("flow", "must be self_serve or invoice (automatic purchases start themselves)")
	}
	if strings.HasPrefix(c.ID, AutoPurchasePrefix) {
		return nil, false, invalid("id", "ids beginning %q name automatic top-ups; choose another", AutoPurchasePrefix)
	}
	h := a.payloadHash(func(e *enc) { encodeCommandBody(e, c) })
	if _, found, same := a.idemLookup(idemPurchase, c.ID, h); found {
		if !same {
			return nil, false, conflict("id", "purchase %s was started with a different payload", c.ID)
		}
		if p := a.loadPurchase(c.ID); p != nil {
			return p, true, nil
		}
	}
	if a.loadPurchase(c.ID) != nil {
		return nil, false, &Error{Code: CodeAlreadyExists, Field: "id", Msg: "purchase " + c.ID + " exists"}
	}
	cu := a.customer(c.CustomerID)
	if cu == nil {
		return nil, false, notFound("customer_id", "no customer %s", c.CustomerID)
	}
	if cu.PlanID == "" {
		return nil, false, precondition("customer_id", "customer %s has no plan to price credits", c.CustomerID)
	}
	pl := a.plan(cu.PlanID)
	if pl == nil {
		return nil, false, notFound("customer_id", "customer %s names missing plan %s", c.CustomerID, cu.PlanID)
	}
	if c.Credits < pl.MinPurchaseCredits {
		return nil, false, invalid("credits", "plan %s sells at least %s credits", pl.ID, FormatUnits(pl.MinPurchaseCredits, a.scaleOf(pl.CreditTypeID)))
	}
	if pl.MaxPurchaseCredits > 0 && c.Credits > pl.MaxPurchaseCredits {
		return nil, false, invalid("credits", "plan %s sells at most %s credits", pl.ID, FormatUnits(pl.MaxPurchaseCredits, a.scaleOf(pl.CreditTypeID)))
	}
	cost, err := moneyFor(c.Credits, pl.PricePerCredit, a.scaleOf(pl.CreditTypeID))
	if err != nil || cost > MaxAmount {
		return nil, false, invalid("credits", "credits × price overflows")
	}
	p := &Purchase{ID: c.ID, CustomerID: cu.ID, PlanID: pl.ID, CreditTypeID: pl.CreditTypeID, Credits: c.Credits,
		UnitPrice: pl.PricePerCredit, Currency: pl.Currency, TotalMicros: cost, Flow: c.Flow, Status: PurchasePending,
		CreatedAt: a.now, UpdatedAt: a.now}
	a.storePurchase(p)
	a.idemStore(idemPurchase, c.ID, h, nil)
	return p, false, nil
}

// grantsOn reports whether an outcome makes the purchase's grant.
func grantsOn(p *Purchase, pl *Plan, o PurchaseOutcome) bool {
	switch o {
	case OutcomeSucceeded:
		return true
	case OutcomeInvoiceIssued:
		return pl != nil && pl.InvoiceGrant == GrantOnIssue
	case OutcomeInvoicePaid:
		return true
	}
	return false
}

func (a *applier) completePurchase(c CompletePurchase) (*Purchase, bool, error) {
	if err := firstErr(checkID("id", c.ID), checkText("provider_ref", c.ProviderRef, MaxNameLen),
		checkText("provider_status", c.ProviderStatus, MaxNameLen),
		checkText("failure_reason", c.FailureReason, MaxReasonLen)); err != nil {
		return nil, false, err
	}
	if c.Outcome > OutcomeInvoicePaid {
		return nil, false, invalid("outcome", "unknown outcome %d", c.Outcome)
	}
	p := a.loadPurchase(c.ID)
	if p == nil {
		return nil, false, notFound("id", "no purchase %s", c.ID)
	}
	pl := a.plan(p.PlanID)
	if (c.Outcome == OutcomeInvoiceIssued || c.Outcome == OutcomeInvoicePaid) && p.Flow != FlowInvoice {
		return nil, false, precondition("outcome", "purchase %s is a %s purchase, not an invoice", p.ID, p.Flow)
	}
	if p.Status != PurchasePending {
		// Webhooks and workers repeat themselves and arrive out of order: a
		// report that agrees with the end state is a no-op; one that
		// contradicts it is refused.
		switch {
		case p.Status == PurchaseSucceeded && c.Outcome != OutcomeFailed:
			return p, true, nil
		case p.Status == PurchaseFailed && (c.Outcome == OutcomeFailed || c.Outcome == OutcomeProgress):
			return p, true, nil
		}
		return nil, false, precondition("outcome", "purchase %s already %s", p.ID, p.Status)
	}
	if c.ProviderRef != "" {
		p.ProviderRef = c.ProviderRef
	}
	if c.ProviderStatus != "" {
		p.ProviderStatus = c.ProviderStatus
	}
	p.UpdatedAt = a.now
	switch {
	case c.Outcome == OutcomeFailed:
		if c.FailureReason == "" {
			return nil, false, invalid("failure_reason", "is required when a purchase fails")
		}
		p.Status = PurchaseFailed
		p.FailureReason = c.FailureReason
		if p.Flow == FlowAuto {
			if cu := a.customer(p.CustomerID); cu != nil {
				if cu.AutoPendingPurchase == p.ID {
					cu.AutoPendingPurchase = ""
				}
				if cu.AutoSpendMonth == monthOf(p.CreatedAt) {
					cu.AutoSpendMicros -= p.TotalMicros
				}
				cu.AutoTopUpPaused = "automatic charge for purchase " + p.ID + " failed: " + c.FailureReason
				a.clearSettledPendingReason(cu, p)
				a.touchCustomer(cu)
			}
		}
	case grantsOn(p, pl, c.Outcome):
		if err := a.grantPurchase(p, pl); err != nil {
			return nil, false, err
		}
	}
	a.storePurchase(p)
	return p, false, nil
}

func (a *applier) grantPurchase(p *Purchase, pl *Plan) error {
	if a.customer(p.CustomerID) == nil {
		return notFound("id", "purchase %s names missing customer %s", p.ID, p.CustomerID)
	}
	g := &Grant{ID: PurchaseGrantPrefix + p.ID, CustomerID: p.CustomerID, CreditTypeID: p.CreditTypeID, Category: Paid,
		Amount: p.Credits, Remaining: p.Credits, CostBasis: p.UnitPrice, Currency: p.Currency,
		Priority: DefaultPurchasePriority, EffectiveAt: a.now, SourceKind: SourcePurchase, SourceRef: p.ID,
		CreatedAt: a.now}
	if p.Flow == FlowInvoice {
		g.SourceKind = SourceInvoice
	}
	if pl != nil && pl.DefaultExpiry > 0 {
		g.ExpiresAt = a.now + Timestamp(pl.DefaultExpiry.Microseconds())
	}
	if a.grant(g.ID) != nil {
		return precondition("id", "grant %s exists", g.ID)
	}
	if err := a.addGrant(g, CausePurchase, p.ID); err != nil {
		return err
	}
	p.Status = PurchaseSucceeded
	p.GrantID = g.ID
	if p.Flow == FlowAuto {
		if cu := a.customer(p.CustomerID); cu != nil {
			changed := a.clearSettledPendingReason(cu, p)
			if cu.AutoPendingPurchase == p.ID {
				cu.AutoPendingPurchase = ""
				changed = true
			}
			if changed {
				a.touchCustomer(cu)
			}
		}
	}
	return nil
}

// clearSettledPendingReason clears the customer's auto_top_up_last when it
// says automatic purchase p is pending, p having settled (entries of version
// 5 on): GetCustomer went on naming a pending purchase that had succeeded or
// failed until the customer's next auto top-up check. It reports whether it
// cleared it.
func (a *applier) clearSettledPendingReason(cu *Customer, p *Purchase) bool {
	if a.rules < rulesSettledClearsPending || cu.AutoTopUpLast != lastAlreadyPending+p.ID {
		return false
	}
	cu.AutoTopUpLast = ""
	return true
}
