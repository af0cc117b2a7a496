package fsm

import (
	"bytes"
	"fmt"

	bolt "go.etcd.io/bbolt"
)

// View is a consistent read transaction over the state.
type View struct {
	tx  *bolt.Tx
	now Timestamp
	lr  *ledgerReader // last ledger block read, for lookups by seq
}

func newView(tx *bolt.Tx) *View {
	m := tx.Bucket(bMeta)
	return &View{tx: tx, now: Timestamp(getU64(m, metaTime))}
}

// AppliedIndex, LastSeq and LastTime as seen by this view.
func (v *View) AppliedIndex() uint64 { return getU64(v.tx.Bucket(bMeta), metaApplied) }
func (v *View) LastSeq() uint64      { return getU64(v.tx.Bucket(bMeta), metaSeq) }
func (v *View) LastTime() Timestamp  { return v.now }

func getRec[T any, P interface {
	*T
	decode(*dec)
}](v *View, bucket []byte, field, id string) (T, error) {
	var r T
	raw := v.tx.Bucket(bucket).Get([]byte(id))
	if raw == nil {
		return r, notFound(field, "no %s %s", kindName(bucket), id)
	}
	d := dec{b: raw}
	P(&r).decode(&d)
	if d.err != nil {
		return r, fmt.Errorf("decode %s %q: %w", bucket, id, d.err)
	}
	return r, nil
}

func kindName(bucket []byte) string {
	switch string(bucket) {
	case string(bCreditType):
		return "credit type"
	case string(bFeature):
		return "feature"
	case string(bPlan):
		return "plan"
	case string(bCustomer):
		return "customer"
	case string(bGrant):
		return "grant"
	case string(bResv):
		return "reservation"
	case string(bPurchase):
		return "purchase"
	}
	return string(bucket)
}

func (v *View) CreditType(id string) (CreditType, error) {
	return getRec[CreditType](v, bCreditType, "credit_type_id", id)
}
func (v *View) Feature(id string) (Feature, error) {
	return getRec[Feature](v, bFeature, "feature_id", id)
}
func (v *View) Plan(id string) (Plan, error) { return getRec[Plan](v, bPlan, "plan_id", id) }
func (v *View) Customer(id string) (Customer, error) {
	return getRec[Customer](v, bCustomer, "customer_id", id)
}
func (v *View) Grant(id string) (Grant, error) {
	g, err := getRec[Grant](v, bGrant, "grant_id", id)
	if err != nil {
		return g, err
	}
	return g, v.overlayTally(&g)
}

// overlayTally lays the grant's tally in its pool record, if any, over the
// values its own record holds (see grantTally).
func (v *View) overlayTally(g *Grant) error {
	p, err := v.pool(g.CustomerID, g.CreditTypeID)
	if err != nil {
		return fmt.Errorf("decode pool of grant %q: %w", g.ID, err)
	}
	p.overlay(g)
	return nil
}
func (v *View) Reservation(id string) (Reservation, error) {
	return getRec[Reservation](v, bResv, "reservation_id", id)
}
func (v *View) Purchase(id string) (Purchase, error) {
	return getRec[Purchase](v, bPurchase, "purchase_id", id)
}

// ListFeatures lists up to limit features (1..1000) in id order, from the
// first id after after; nextAfter is the last one listed when more follow.
func (v *View) ListFeatures(after string, limit int) (features []Feature, nextAfter string, err error) {
	if limit <= 0 || limit > 1000 {
		limit = 1000
	}
	c := v.tx.Bucket(bFeature).Cursor()
	k, raw := c.Seek([]byte(after))
	if after != "" && k != nil && string(k) == after {
		k, raw = c.Next()
	}
	for ; k != nil; k, raw = c.Next() {
		if len(features) == limit {
			return features, features[len(features)-1].ID, nil
		}
		var f Feature
		d := dec{b: raw}
		f.decode(&d)
		if d.err != nil {
			return nil, "", d.err
		}
		features = append(features, f)
	}
	return features, "", nil
}

func (v *View) pool(customerID, creditTypeID string) (Pool, error) {
	raw := v.tx.Bucket(bPool).Get(poolKey(customerID, creditTypeID))
	if raw == nil {
		return Pool{CustomerID: customerID, CreditTypeID: creditTypeID}, nil
	}
	var p Pool
	d := dec{b: raw}
	p.decode(&d)
	return p, d.err
}

// liveGrants sums a pool's live grants that may burn now and, when list
// is set, lists them in burn order (Check needs only the sum).
func (v *View) liveGrants(customerID, creditTypeID string, list bool) ([]Grant, int64, error) {
	var out []Grant
	var usable int64
	p, err := v.pool(customerID, creditTypeID)
	if err != nil {
		return nil, 0, err
	}
	prefix := burnPrefix(customerID, creditTypeID)
	c := v.tx.Bucket(bBurnOrder).Cursor()
	for k, id := c.Seek(prefix); k != nil && bytes.HasPrefix(k, prefix); k, id = c.Next() {
		g, err := getRec[Grant](v, bGrant, "grant_id", string(id))
		if err != nil {
			return nil, 0, err
		}
		p.overlay(&g)
		if canBurn(&g, v.now) {
			usable += g.Remaining
		}
		if list {
			out = append(out, g)
		}
	}
	return out, usable, nil
}

// Balance is a pool's balance, available, reserved and live grants in burn
// order, as of the last applied time. A customer with no pool of this
// credit type has a zero balance.
func (v *View) Balance(customerID, creditTypeID string) (Balance, error) {
	if _, err := v.Customer(customerID); err != nil {
		return Balance{}, err
	}
	if _, err := v.CreditType(creditTypeID); err != nil {
		return Balance{}, err
	}
	p, err := v.pool(customerID, creditTypeID)
	if err != nil {
		return Balance{}, err
	}
	grants, usable, err := v.liveGrants(customerID, creditTypeID, true)
	if err != nil {
		return Balance{}, err
	}
	return Balance{CustomerID: customerID, CreditTypeID: creditTypeID, Balance: p.Balance,
		Available: usable - p.Reserved - p.Overdraft, Reserved: p.Reserved, Overdraft: p.Overdraft, Grants: grants,
		AsOf: v.now, AppliedIndex: v.AppliedIndex()}, nil
}

// BalanceAt is a pool's balance right after ledger sequence seq (the as-of
// balance): the balance_after of its last entry at or before seq.
func (v *View) BalanceAt(customerID, creditTypeID string, seq uint64) (int64, error) {
	var bal int64
	err := v.poolSeqsBack(customerID, creditTypeID, seq, func(s uint64) (bool, error) {
		e, err := v.entry(s)
		bal = e.BalanceAfter
		return false, err
	})
	return bal, err
}

// BalanceAtTime is a pool's balance at the end of log time t.
func (v *View) BalanceAtTime(customerID, creditTypeID string, t Timestamp) (int64, error) {
	var bal int64
	err := v.poolSeqsBack(customerID, creditTypeID, ^uint64(0), func(s uint64) (bool, error) {
		e, err := v.entry(s)
		if err != nil || e.Time > t {
			return true, err
		}
		bal = e.BalanceAfter
		return false, nil
	})
	return bal, err
}

// Check answers whether usage would be allowed now, changing nothing:
// either featureID and quantity, or creditTypeID and credits.
func (v *View) Check(customerID, featureID string, quantity int64, creditTypeID string, credits int64) (CheckResult, error) {
	cu, err := v.Customer(customerID)
	if err != nil {
		return CheckResult{}, err
	}
	if featureID != "" {
		f, err := v.Feature(featureID)
		if err != nil {
			return CheckResult{}, err
		}
		ct, err := v.CreditType(f.CreditTypeID)
		if err != nil {
			return CheckResult{}, err
		}
		if quantity < 0 {
			return CheckResult{}, invalid("quantity", "must not be negative")
		}
		var cerr *Error
		if credits, cerr = usageCost(quantity, f.Rate, ct.Scale); cerr != nil {
			return CheckResult{}, cerr
		}
		creditTypeID = f.CreditTypeID
	} else if _, err := v.CreditType(creditTypeID); err != nil {
		return CheckResult{}, err
	}
	p, err := v.pool(customerID, creditTypeID)
	if err != nil {
		return CheckResult{}, err
	}
	_, usable, err := v.liveGrants(customerID, creditTypeID, false)
	if err != nil {
		return CheckResult{}, err
	}
	floor := int64(0)
	if cu.PlanID != "" {
		if pl, err := v.Plan(cu.PlanID); err == nil && pl.CreditTypeID == creditTypeID && pl.Overdraft == OverdraftAllow {
			floor = -pl.OverdraftLimit
		}
	}
	available := usable - p.Reserved - p.Overdraft
	r := CheckResult{CreditTypeID: creditTypeID, Credits: credits, Available: available, Floor: floor}
	r.Allowed = available-credits >= floor
	if !r.Allowed {
		r.Reason = "not enough credits"
	}
	return r, nil
}

func matchStatus(s GrantStatus, want []GrantStatus) bool {
	if len(want) == 0 {
		return true
	}
	for _, w := range want {
		if s == w {
			return true
		}
	}
	return false
}

// ListGrants pages through grants in id order (within a customer when
// CustomerID is set). nextAfter is "" on the last page.
func (v *View) ListGrants(f GrantFilter) (grants []Grant, nextAfter string, err error) {
	limit := f.Limit
	if limit <= 0 || limit > 1000 {
		limit = 1000
	}
	var c *bolt.Cursor
	var prefix, start []byte
	if f.CustomerID != "" {
		c = v.tx.Bucket(bCustGrant).Cursor()
		prefix = append([]byte(f.CustomerID), 0)
		start = append(bytes.Clone(prefix), f.After...)
	} else {
		c = v.tx.Bucket(bGrant).Cursor()
		start = []byte(f.After)
	}
	k, _ := c.Seek(start)
	if f.After != "" && k != nil && bytes.Equal(k, start) {
		k, _ = c.Next()
	}
	for ; k != nil && bytes.HasPrefix(k, prefix); k, _ = c.Next() {
		id := string(k[len(prefix):])
		g, err := v.Grant(id)
		if err != nil {
			return nil, "", err
		}
		if (f.CreditTypeID != "" && g.CreditTypeID != f.CreditTypeID) || !matchStatus(g.Status, f.Status) {
			continue
		}
		if len(grants) == limit {
			return grants, grants[len(grants)-1].ID, nil
		}
		grants = append(grants, g)
	}
	return grants, "", nil
}

// Ledger pages through ledger entries in sequence order; next is the
// FromSeq of the following page (0 when there is none).
func (v *View) Ledger(f LedgerFilter) (entries []LedgerEntry, next uint64, err error) {
	limit := f.Limit
	if limit <= 0 || limit > 10000 {
		limit = 10000
	}
	add := func(e LedgerEntry) bool {
		if len(entries) == limit {
			next = e.Seq
			return false
		}
		entries = append(entries, e)
		return true
	}
	if f.CustomerID == "" {
		err = v.ScanLedger(f.FromSeq, f.ToSeq, func(e *LedgerEntry) error {
			if !add(*e) {
				return errStop
			}
			return nil
		})
		if err == errStop {
			err = nil
		}
		return entries, next, err
	}
	seqs, err := v.customerSeqs(f.CustomerID, f.CreditTypeID, f.FromSeq, f.ToSeq, limit+1)
	if err != nil {
		return nil, 0, err
	}
	for _, seq := range seqs {
		e, err := v.entry(seq)
		if err != nil {
			return nil, 0, err
		}
		if !add(e) {
			break
		}
	}
	return entries, next, nil
}

type stopError struct{}

func (stopError) Error() string { return "stop" }

var errStop error = stopError{}

// ScanGrants calls fn for every grant in id order. The grant is reused.
func (v *View) ScanGrants(fn func(g *Grant) error) error {
	var g Grant
	// A customer's grants are usually neighbours in id order ("c1-g0",
	// "c1-g1"): their pool is read once for all of them.
	var p Pool
	havePool := false
	return v.tx.Bucket(bGrant).ForEach(func(k, raw []byte) error {
		d := dec{b: raw}
		g.decode(&d)
		if d.err != nil {
			return fmt.Errorf("decode grant %q: %w", k, d.err)
		}
		if !havePool || p.CustomerID != g.CustomerID || p.CreditTypeID != g.CreditTypeID {
			var err error
			if p, err = v.pool(g.CustomerID, g.CreditTypeID); err != nil {
				return fmt.Errorf("decode pool of grant %q: %w", k, err)
			}
			havePool = true
		}
		p.overlay(&g)
		return fn(&g)
	})
}

// PendingPurchases lists pending purchases in id order, at most limit.
func (v *View) PendingPurchases(limit int) ([]Purchase, error) {
	return v.PendingPurchasesAfter("", limit)
}

// PendingPurchasesAfter lists pending purchases with ids after after, in id
// order, at most limit: a worker pages through all of them with it.
func (v *View) PendingPurchasesAfter(after string, limit int) ([]Purchase, error) {
	var out []Purchase
	c := v.tx.Bucket(bPurPending).Cursor()
	k, _ := c.Seek([]byte(after))
	if after != "" && k != nil && string(k) == after {
		k, _ = c.Next()
	}
	for ; k != nil && len(out) < limit; k, _ = c.Next() {
		p, err := v.Purchase(string(k))
		if err != nil {
			return nil, err
		}
		out = append(out, p)
	}
	return out, nil
}
