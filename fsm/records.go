package fsm

import (
	"fmt"
	"time"
)

func durationOf(v int64) time.Duration { return time.Duration(v) }

// Stored records: one version byte, then the fields in order. decode*
// functions fill a value the caller owns so hot paths can reuse it.

func (c *CreditType) encode(e *enc) {
	e.u8(recordVersion)
	e.str(c.ID)
	e.str(c.Name)
	e.u8(c.Scale)
	e.ts(c.CreatedAt)
}

func (c *CreditType) decode(d *dec) {
	checkVersion(d)
	*c = CreditType{ID: d.str(), Name: d.str(), Scale: d.u8(), CreatedAt: d.ts()}
}

func (f *Feature) encode(e *enc) {
	e.u8(recordVersion)
	e.str(f.ID)
	e.str(f.Name)
	e.str(f.CreditTypeID)
	e.dec(f.Rate)
	e.ts(f.UpdatedAt)
}

func (f *Feature) decode(d *dec) {
	checkVersion(d)
	*f = Feature{ID: d.str(), Name: d.str(), CreditTypeID: d.str(), Rate: d.decimal(), UpdatedAt: d.ts()}
}

func (p *Plan) encode(e *enc) {
	e.u8(recordVersion)
	encodePlan(e, p)
}

func (p *Plan) decode(d *dec) {
	checkVersion(d)
	*p = decodePlan(d)
}

// customerRecordVersion 2 ends with AutoTopUp.Own. A customer record is
// written as version 1, as before, unless its settings are its own with
// nothing set, which version 1 cannot say: a version 1 record's settings are
// the customer's own iff not all zero. So a state built from entries of
// version 1 is byte for byte what older builds made, and an older build
// refuses (ErrUnknownVersion) only the records it would misread.
const customerRecordVersion = 2

func (c *Customer) encode(e *enc) {
	own := c.AutoTopUp.Own && !c.AutoTopUp.hasSettings()
	if own {
		e.u8(customerRecordVersion)
	} else {
		e.u8(recordVersion)
	}
	e.str(c.ID)
	e.str(c.Name)
	e.str(c.BillingRef)
	e.str(c.PlanID)
	encodeAutoTopUp(e, c.AutoTopUp)
	e.str(c.AutoTopUpPaused)
	e.str(c.AutoTopUpLast)
	e.iv(int64(c.AutoSpendMonth))
	e.iv(c.AutoSpendMicros)
	e.str(c.AutoPendingPurchase)
	e.ts(c.CreatedAt)
	e.ts(c.UpdatedAt)
	if own {
		e.bool(true)
	}
}

func (c *Customer) decode(d *dec) {
	v := d.u8()
	if d.err == nil && v != recordVersion && v != customerRecordVersion {
		d.fail(fmt.Errorf("%w: customer record version %d", ErrUnknownVersion, v))
		return
	}
	*c = Customer{ID: d.str(), Name: d.str(), BillingRef: d.str(), PlanID: d.str(), AutoTopUp: decodeAutoTopUp(d),
		AutoTopUpPaused: d.str(), AutoTopUpLast: d.str(), AutoSpendMonth: int32(d.iv()), AutoSpendMicros: d.iv(),
		AutoPendingPurchase: d.str(), CreatedAt: d.ts(), UpdatedAt: d.ts()}
	if v == recordVersion {
		c.AutoTopUp.Own = c.AutoTopUp.hasSettings()
	} else {
		c.AutoTopUp.Own = d.bool()
	}
}

// poolRecordVersion 2 adds the grant tallies; version 1 (state format 2)
// has none and still reads.
const poolRecordVersion = 2

func (p *Pool) encode(e *enc) {
	e.u8(poolRecordVersion)
	e.str(p.CustomerID)
	e.str(p.CreditTypeID)
	e.iv(p.Balance)
	e.iv(p.Reserved)
	e.iv(p.Overdraft)
	e.ts(p.UpdatedAt)
	p.run.encode(e)
	e.uv(uint64(len(p.tallies)))
	for i := range p.tallies {
		t := &p.tallies[i]
		if t.g != nil {
			t.remaining, t.deferred, t.burned, t.updatedAt = t.g.Remaining, t.g.DeferredMicros, t.g.Burned, t.g.UpdatedAt
		}
		e.str(t.grantID)
		e.iv(t.remaining)
		e.iv(t.deferred)
		e.iv(t.burned)
		e.ts(t.updatedAt)
	}
}

func (p *Pool) decode(d *dec) {
	v := d.u8()
	if d.err == nil && v != 1 && v != poolRecordVersion {
		d.fail(fmt.Errorf("%w: pool record version %d", ErrUnknownVersion, v))
		return
	}
	*p = Pool{CustomerID: d.str(), CreditTypeID: d.str(), Balance: d.iv(), Reserved: d.iv(), Overdraft: d.iv(),
		UpdatedAt: d.ts()}
	p.run.decode(d)
	if v == 1 {
		return
	}
	n := d.uv()
	if n > maxTallies {
		d.fail(fmt.Errorf("pool record: %d grant tallies", n))
		return
	}
	if n > 0 {
		p.tallies = make([]grantTally, n)
	}
	for i := range p.tallies {
		p.tallies[i] = grantTally{grantID: d.str(), remaining: d.iv(), deferred: d.iv(), burned: d.iv(), updatedAt: d.ts()}
	}
}

// overlay puts the tally's values, if the pool holds one for g, on g.
func (p *Pool) overlay(g *Grant) *grantTally {
	for i := range p.tallies {
		if t := &p.tallies[i]; t.grantID == g.ID {
			g.Remaining, g.DeferredMicros, g.Burned, g.UpdatedAt = t.remaining, t.deferred, t.burned, t.updatedAt
			return t
		}
	}
	return nil
}

func (g *Grant) encode(e *enc) {
	e.u8(recordVersion)
	e.str(g.ID)
	e.str(g.CustomerID)
	e.str(g.CreditTypeID)
	e.u8(uint8(g.Category))
	e.iv(g.Amount)
	e.iv(g.Remaining)
	e.dec(g.CostBasis)
	e.str(g.Currency)
	e.iv(g.DeferredMicros)
	e.uv(uint64(g.Priority))
	e.ts(g.EffectiveAt)
	e.ts(g.ExpiresAt)
	e.u8(uint8(g.SourceKind))
	e.str(g.SourceRef)
	e.u8(uint8(g.Status))
	e.iv(g.Burned)
	e.iv(g.Expired)
	e.iv(g.Revoked)
	e.iv(g.Adjusted)
	e.str(g.Reason)
	e.ts(g.CreatedAt)
	e.ts(g.UpdatedAt)
}

func (g *Grant) decode(d *dec) {
	checkVersion(d)
	*g = Grant{ID: d.str(), CustomerID: d.str(), CreditTypeID: d.str(), Category: GrantCategory(d.u8()),
		Amount: d.iv(), Remaining: d.iv(), CostBasis: d.decimal(), Currency: d.str(), DeferredMicros: d.iv(),
		Priority: d.u32(), EffectiveAt: d.ts(), ExpiresAt: d.ts(), SourceKind: SourceKind(d.u8()),
		SourceRef: d.str(), Status: GrantStatus(d.u8()), Burned: d.iv(), Expired: d.iv(), Revoked: d.iv(),
		Adjusted: d.iv(), Reason: d.str(), CreatedAt: d.ts(), UpdatedAt: d.ts()}
}

func (r *Reservation) encode(e *enc) {
	e.u8(recordVersion)
	e.str(r.ID)
	e.str(r.CustomerID)
	e.str(r.CreditTypeID)
	e.str(r.FeatureID)
	e.iv(r.Amount)
	e.iv(r.SettledAmount)
	e.u8(uint8(r.Status))
	e.ts(r.ExpiresAt)
	e.ts(r.CreatedAt)
	e.ts(r.UpdatedAt)
}

func (r *Reservation) decode(d *dec) {
	checkVersion(d)
	*r = Reservation{ID: d.str(), CustomerID: d.str(), CreditTypeID: d.str(), FeatureID: d.str(), Amount: d.iv(),
		SettledAmount: d.iv(), Status: ReservationStatus(d.u8()), ExpiresAt: d.ts(), CreatedAt: d.ts(),
		UpdatedAt: d.ts()}
}

func (p *Purchase) encode(e *enc) {
	e.u8(recordVersion)
	e.str(p.ID)
	e.str(p.CustomerID)
	e.str(p.PlanID)
	e.str(p.CreditTypeID)
	e.iv(p.Credits)
	e.dec(p.UnitPrice)
	e.str(p.Currency)
	e.iv(p.TotalMicros)
	e.u8(uint8(p.Flow))
	e.u8(uint8(p.Status))
	e.str(p.ProviderRef)
	e.str(p.ProviderStatus)
	e.str(p.FailureReason)
	e.str(p.GrantID)
	e.ts(p.CreatedAt)
	e.ts(p.UpdatedAt)
}

func (p *Purchase) decode(d *dec) {
	checkVersion(d)
	*p = Purchase{ID: d.str(), CustomerID: d.str(), PlanID: d.str(), CreditTypeID: d.str(), Credits: d.iv(),
		UnitPrice: d.decimal(), Currency: d.str(), TotalMicros: d.iv(), Flow: PurchaseFlow(d.u8()),
		Status: PurchaseStatus(d.u8()), ProviderRef: d.str(), ProviderStatus: d.str(), FailureReason: d.str(),
		GrantID: d.str(), CreatedAt: d.ts(), UpdatedAt: d.ts()}
}

func (l *LedgerEntry) encode(e *enc) {
	e.u8(recordVersion)
	e.uv(l.Seq)
	e.ts(l.Time)
	e.str(l.CustomerID)
	e.str(l.CreditTypeID)
	e.str(l.GrantID)
	e.u8(uint8(l.Kind))
	e.iv(l.Amount)
	e.iv(l.Repaid)
	e.iv(l.BalanceAfter)
	e.dec(l.CostBasis)
	e.str(l.Currency)
	e.iv(l.MoneyMicros)
	e.u8(uint8(l.CauseKind))
	e.str(l.CauseID)
	e.u8(uint8(l.SourceKind))
	e.str(l.SourceRef)
	e.str(l.Reason)
}

func (l *LedgerEntry) decode(d *dec) {
	checkVersion(d)
	*l = LedgerEntry{Seq: d.uv(), Time: d.ts(), CustomerID: d.str(), CreditTypeID: d.str(), GrantID: d.str(),
		Kind: EntryKind(d.u8()), Amount: d.iv(), Repaid: d.iv(), BalanceAfter: d.iv(), CostBasis: d.decimal(),
		Currency: d.str(), MoneyMicros: d.iv(), CauseKind: CauseKind(d.u8()), CauseID: d.str(),
		SourceKind: SourceKind(d.u8()), SourceRef: d.str(), Reason: d.str()}
}

func (r *EventResult) encode(e *enc) {
	e.str(r.EventID)
	e.u8(uint8(r.Status))
	e.str(r.CreditTypeID)
	e.iv(r.Credits)
	e.uv(uint64(len(r.Burns)))
	for _, b := range r.Burns {
		e.str(b.GrantID)
		e.iv(b.Amount)
	}
	e.iv(r.BalanceAfter)
	e.iv(r.AvailableAfter)
	e.str(r.Reason)
	e.iv(r.Available)
}

func (r *EventResult) decode(d *dec) {
	*r = EventResult{EventID: d.str(), Status: EventStatus(d.u8()), CreditTypeID: d.str(), Credits: d.iv()}
	n := d.uv()
	if n > uint64(len(d.b)) {
		d.fail(errTruncated)
		return
	}
	if n > 0 {
		r.Burns = make([]GrantBurn, n)
		for i := range r.Burns {
			r.Burns[i] = GrantBurn{GrantID: d.str(), Amount: d.iv()}
		}
	}
	r.BalanceAfter = d.iv()
	r.AvailableAfter = d.iv()
	r.Reason = d.str()
	r.Available = d.iv()
}

func checkVersion(d *dec) {
	if v := d.u8(); d.err == nil && v != recordVersion {
		d.fail(fmt.Errorf("%w: record version %d", ErrUnknownVersion, v))
	}
}
