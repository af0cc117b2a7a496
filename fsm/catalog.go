package fsm

func (a *applier) createCreditType(c CreateCreditType) (*CreditType, error) {
	if err := firstErr(checkID("id", c.ID), checkText("name", c.Name, MaxNameLen)); err != nil {
		return nil, err
	}
	if c.Scale > MaxCreditScale {
		return nil, invalid("scale", "must be 0 to %d", MaxCreditScale)
	}
	if old := a.creditType(c.ID); old != nil {
		if old.Name == c.Name && old.Scale == c.Scale {
			return old, nil // a retry
		}
		return nil, &Error{Code: CodeAlreadyExists, Field: "id", Msg: "credit type " + c.ID + " exists with other settings; its scale cannot change"}
	}
	ct := &CreditType{ID: c.ID, Name: c.Name, Scale: c.Scale, CreatedAt: a.now}
	a.ctypes[c.ID] = ct
	a.markDirty(kindCreditType, ct.ID, ct)
	return ct, nil
}

func (a *applier) upsertFeature(c UpsertFeature) (*Feature, error) {
	if err := firstErr(checkID("id", c.ID), checkText("name", c.Name, MaxNameLen),
		checkID("credit_type_id", c.CreditTypeID), checkDecimal("rate", c.Rate)); err != nil {
		return nil, err
	}
	if a.creditType(c.CreditTypeID) == nil {
		return nil, notFound("credit_type_id", "no credit type %s", c.CreditTypeID)
	}
	f := a.feature(c.ID)
	if f != nil && f.CreditTypeID != c.CreditTypeID {
		return nil, precondition("credit_type_id", "feature %s burns %s; its credit type cannot change", c.ID, f.CreditTypeID)
	}
	if f == nil {
		f = &Feature{ID: c.ID}
		a.features[c.ID] = f
	}
	f.Name, f.CreditTypeID, f.Rate, f.UpdatedAt = c.Name, c.CreditTypeID, c.Rate, a.now
	a.markDirty(kindFeature, f.ID, f)
	return f, nil
}

func checkAutoTopUp(prefix string, t AutoTopUp) error {
	if err := firstErr(checkAmount(prefix+".threshold", t.ThresholdCredits, true),
		checkAmount(prefix+".amount", t.AmountCredits, true),
		checkAmount(prefix+".monthly_cap", t.MonthlyCapMicros, true)); err != nil {
		return err
	}
	if t.Mode > TopUpToTarget {
		return invalid(prefix+".mode", "must be fixed or to_target")
	}
	if t.Enabled && t.AmountCredits == 0 {
		return invalid(prefix+".amount", "must be positive when auto top-up is enabled")
	}
	if t.Enabled && t.Mode == TopUpToTarget && t.AmountCredits <= t.ThresholdCredits {
		return invalid(prefix+".amount", "the target must be above the threshold")
	}
	return nil
}

func (a *applier) upsertPlan(c UpsertPlan) (*Plan, error) {
	p := c.Plan
	if err := firstErr(checkID("id", p.ID), checkText("name", p.Name, MaxNameLen), checkID("credit_type_id", p.CreditTypeID),
		checkCurrency("currency", p.Currency), checkDecimal("price_per_credit", p.PricePerCredit),
		checkAmount("min_purchase", p.MinPurchaseCredits, true), checkAmount("max_purchase", p.MaxPurchaseCredits, true),
		checkAmount("overdraft_limit", p.OverdraftLimit, true)); err != nil {
		return nil, err
	}
	if p.PricePerCredit.IsZero() {
		return nil, invalid("price_per_credit", "must be positive")
	}
	if p.MaxPurchaseCredits != 0 && p.MaxPurchaseCredits < p.MinPurchaseCredits {
		return nil, invalid("max_purchase", "is below min_purchase")
	}
	if p.DefaultExpiry < 0 {
		return nil, invalid("default_expiry", "must not be negative")
	}
	if p.InvoiceGrant > GrantOnIssue {
		return nil, invalid("invoice_grant", "must be on_issue or on_payment")
	}
	if p.Overdraft > OverdraftAllow {
		return nil, invalid("overdraft", "must be deny or allow")
	}
	if p.Overdraft == OverdraftDeny && p.OverdraftLimit != 0 {
		return nil, invalid("overdraft_limit", "must be 0 when overdraft is denied")
	}
	if err := checkAutoTopUp("auto_top_up", p.AutoTopUp); err != nil {
		return nil, err
	}
	if a.creditType(p.CreditTypeID) == nil {
		return nil, notFound("credit_type_id", "no credit type %s", p.CreditTypeID)
	}
	old := a.plan(p.ID)
	if old != nil && old.CreditTypeID != p.CreditTypeID {
		return nil, precondition("credit_type_id", "plan %s is for %s; its credit type cannot change", p.ID, old.CreditTypeID)
	}
	if old == nil {
		old = &Plan{}
		a.plans[p.ID] = old
	}
	*old = p
	old.UpdatedAt = a.now
	a.markDirty(kindPlan, old.ID, old)
	return old, nil
}

func (a *applier) upsertCustomer(c UpsertCustomer) (*Customer, error) {
	if err := firstErr(checkID("id", c.ID), checkText("name", c.Name, MaxNameLen),
		checkText("billing_ref", c.BillingRef, MaxNameLen), checkOptionalID("plan_id", c.PlanID)); err != nil {
		return nil, err
	}
	if err := checkAutoTopUp("auto_top_up", c.AutoTopUp); err != nil {
		return nil, err
	}
	if c.PlanID != "" && a.plan(c.PlanID) == nil {
		return nil, notFound("plan_id", "no plan %s", c.PlanID)
	}
	if c.AutoTopUp.Enabled && c.PlanID == "" {
		return nil, invalid("auto_top_up.enabled", "auto top-up needs a plan to price the credits")
	}
	cu := a.customer(c.ID)
	existed := cu != nil
	if !existed {
		cu = &Customer{ID: c.ID, CreatedAt: a.now}
		a.customers[c.ID] = cu
	}
	settings := c.AutoTopUp
	// Settings with anything set are the customer's own, with or without
	// Own (as before Own existed); stored, Own says it.
	settings.Own = settings.Own || settings.hasSettings()
	cu.Name, cu.BillingRef, cu.PlanID, cu.AutoTopUp = c.Name, c.BillingRef, c.PlanID, settings
	if c.ResumeAutoTopUp {
		cu.AutoTopUpPaused = ""
	}
	a.touchCustomer(cu)
	// Settings that find available below the threshold start the top-up
	// now, as a burn leaving it there does: an operator turning auto top-up
	// on for a customer with nothing left (or raising the threshold, or
	// resuming it) would otherwise wait for the customer's next burn,
	// denial or hold. Not when the upsert creates the customer: customers
	// are created before their first credits are granted or bought, and
	// would be charged before those came.
	if a.rules >= rulesUpsertTopsUp && existed && cu.PlanID != "" {
		if pl := a.plan(cu.PlanID); pl != nil {
			p := a.pool(cu.ID, pl.CreditTypeID)
			a.maybeAutoTopUp(cu, p, a.available(p), 0)
		}
	}
	return cu, nil
}
