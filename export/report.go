package export

import (
	"context"
	"fmt"
	"math/big"
	"math/bits"
	"slices"
	"strings"
	"time"

	"github.com/creditd/creditd/fsm"
)

// Movement is one ledger entry as the report reads it: the entry plus the
// facts it needs that the entry does not carry (its credit type's scale, its
// grant's category). Both the fsm and the Parquet export yield these.
type Movement struct {
	fsm.LedgerEntry
	Scale    uint8
	Category fsm.GrantCategory // meaningful when GrantID != ""
}

// Row is one line of the reconciliation report: one credit type and one
// currency over the period. Credits are integer units of the credit type's
// scale; money is integer micros of the currency.
//
// Credits without a currency (promotional grants and the overdraft, usage
// burned beyond the grants) form the row with Currency "".
//
// The identities, checked for every row:
//
//	closing = opening + granted_paid + granted_promotional − burned − expired − revoked + adjusted + overdraft_repaid
//	closing_deferred = opening_deferred + deferred_granted − recognized − breakage − refunded + adjusted_money
//
// overdraft_repaid moves credits from a new grant's row to the row without
// currency when the grant covers the pool's overdraft; it sums to zero over
// a credit type.
type Row struct {
	CreditTypeID string
	Currency     string
	Scale        uint8

	OpeningBalance     int64
	GrantedPaid        int64
	GrantedPromotional int64
	Burned             int64
	Expired            int64
	Revoked            int64
	Adjusted           int64
	OverdraftRepaid    int64
	ClosingBalance     int64

	OpeningDeferred int64
	DeferredGranted int64
	Recognized      int64
	Breakage        int64
	Refunded        int64
	AdjustedMoney   int64
	ClosingDeferred int64
}

// Report is the reconciliation of a period [From, To).
type Report struct {
	From, To time.Time
	// LastSeq is the last ledger sequence read; Entries those in the period.
	LastSeq uint64
	Entries int64
	// AsOf is the log time of the state the ledger was read from (the
	// cut, or the export's last run). Before To, the period is not over:
	// later entries may still fall into it.
	AsOf time.Time
	Rows []Row // by credit type, then currency
}

// IdentityError reports a broken identity or a ledger inconsistency: the
// report refuses to print figures that do not tie out.
type IdentityError struct {
	Seq uint64 // entry where it was found; 0 for a period total
	Msg string
}

func (e *IdentityError) Error() string {
	if e.Seq != 0 {
		return fmt.Sprintf("reconciliation failed at ledger entry %d: %s", e.Seq, e.Msg)
	}
	return "reconciliation failed: " + e.Msg
}

// OverflowError reports a figure that leaves the int64 range of its units
// (about ±9.2e18): the report cannot be computed in int64 units, and is
// refused rather than printed with a figure that wrapped around.
type OverflowError struct {
	Seq    uint64 // entry that made it overflow; 0 for a period total
	Figure string // which figure, of which row, pool, credit type or grant
}

func (e *OverflowError) Error() string {
	at := ""
	if e.Seq != 0 {
		at = fmt.Sprintf(" at ledger entry %d", e.Seq)
	}
	return fmt.Sprintf("the report cannot be computed in int64 units: %s leaves the int64 range%s; sum the exported Parquet rows (DECIMAL(38,9)) instead", e.Figure, at)
}

// addInt64 and subInt64 return a+b and a−b, and false when that leaves the
// int64 range.
func addInt64(a, b int64) (int64, bool) {
	s := a + b
	return s, (s >= a) == (b >= 0)
}

func subInt64(a, b int64) (int64, bool) {
	d := a - b
	return d, (d <= a) == (b >= 0)
}

// wideSum is a 128-bit sum. A credit type's balance over all its pools is
// only checked against its rows', never printed: it may pass int64 while
// every row fits.
type wideSum struct {
	hi int64
	lo uint64
}

func (w *wideSum) add(v int64) {
	lo, carry := bits.Add64(w.lo, uint64(v), 0)
	w.lo, w.hi = lo, w.hi+v>>63+int64(carry)
}

func (w wideSum) String() string {
	v := new(big.Int).Lsh(big.NewInt(w.hi), 64)
	return v.Add(v, new(big.Int).SetUint64(w.lo)).String()
}

type groupKey struct{ creditType, currency string }

// rowFigure names a figure of a report row, as overflow errors show it.
func rowFigure(k groupKey, name string) string {
	return fmt.Sprintf("%s of %s/%s", name, k.creditType, currencyLabel(k.currency))
}

// rowSums folds a movement into a row's figures with checked additions and
// keeps the first figure that left the int64 range, so that the flows read
// as plain sums and are checked once.
type rowSums struct{ over string }

func (s *rowSums) add(dst *int64, v int64, k groupKey, name string) {
	if sum, ok := addInt64(*dst, v); ok {
		*dst = sum
	} else if s.over == "" {
		s.over = rowFigure(k, name)
	}
}

func (s *rowSums) sub(dst *int64, v int64, k groupKey, name string) {
	if d, ok := subInt64(*dst, v); ok {
		*dst = d
	} else if s.over == "" {
		s.over = rowFigure(k, name)
	}
}

func (s *rowSums) addAt(sums map[groupKey]int64, k groupKey, v int64, name string) {
	sum := sums[k]
	s.add(&sum, v, k, name)
	sums[k] = sum
}

type grantTrack struct {
	remaining int64
	money     int64
	costBasis fsm.Decimal
	scale     uint8
	category  fsm.GrantCategory
	currency  string
	creditTyp string
}

// Reconciler folds ledger movements, in sequence order, into a Report. It
// checks every movement as it goes: the pool's balance chain, each grant's
// remaining credits and deferred revenue (remaining × cost basis, rounded
// half-even: recomputed here independently of fsm), sign conventions per
// kind; and at both ends of the period that the rows add up to the pools.
// Memory: one small record per pool and per grant.
type Reconciler struct {
	from, to fsm.Timestamp
	phase    int // 0 before the period, 1 in it, 2 after
	rows     map[groupKey]*Row
	balances map[groupKey]int64 // running credits per row
	deferred map[groupKey]int64 // running money per row
	pools    map[groupKey]int64 // (customer, credit type) → balance after its last entry
	ctBal    map[string]wideSum // credit type → Σ pool balances
	grants   map[string]*grantTrack
	scales   map[string]uint8
	lastSeq  uint64
	lastTime fsm.Timestamp
	entries  int64
}

// NewReconciler reconciles the period [from, to), both UTC instants.
func NewReconciler(from, to time.Time) (*Reconciler, error) {
	if !from.Before(to) {
		return nil, fmt.Errorf("report: --from %s must be before --to %s", from.Format(time.DateOnly), to.Format(time.DateOnly))
	}
	return &Reconciler{
		from: fsm.TimestampOf(from), to: fsm.TimestampOf(to),
		rows: map[groupKey]*Row{}, balances: map[groupKey]int64{}, deferred: map[groupKey]int64{},
		pools: map[groupKey]int64{}, ctBal: map[string]wideSum{}, grants: map[string]*grantTrack{},
		scales: map[string]uint8{},
	}, nil
}

// Done reports whether the period is over: later movements change nothing.
func (r *Reconciler) Done() bool { return r.phase == 2 }

func (r *Reconciler) row(k groupKey, scale uint8) *Row {
	row := r.rows[k]
	if row == nil {
		row = &Row{CreditTypeID: k.creditType, Currency: k.currency, Scale: scale}
		r.rows[k] = row
	}
	return row
}

// Add folds one movement in. Movements must come in sequence order without
// gaps, starting at 1.
func (r *Reconciler) Add(m *Movement) error {
	fail := func(format string, args ...any) error {
		return &IdentityError{Seq: m.Seq, Msg: fmt.Sprintf(format, args...)}
	}
	if m.Seq != r.lastSeq+1 {
		return fail("follows entry %d: the ledger has a gap or is out of order", r.lastSeq)
	}
	if m.Time < r.lastTime {
		return fail("log time goes backwards")
	}
	r.lastSeq, r.lastTime = m.Seq, m.Time
	for r.phase < 2 && m.Time >= r.boundary() {
		if err := r.cross(); err != nil {
			return err
		}
	}
	if r.phase == 2 {
		return nil // after the period: nothing more to fold in
	}
	if s, ok := r.scales[m.CreditTypeID]; ok && s != m.Scale {
		return fail("credit type %s has scale %d here and %d before", m.CreditTypeID, m.Scale, s)
	}
	r.scales[m.CreditTypeID] = m.Scale

	if m.Currency == "" && m.MoneyMicros != 0 {
		return fail("money %d without a currency", m.MoneyMicros)
	}
	key := groupKey{m.CreditTypeID, m.Currency}
	// Signs per kind, then the flows.
	var (
		in     = r.phase == 1
		row    = r.row(key, m.Scale)
		noCur  = groupKey{m.CreditTypeID, ""}
		amount = m.Amount
		money  = m.MoneyMicros
		sums   rowSums
	)
	if m.Kind != fsm.EntryRepay && m.Repaid != 0 {
		return fail("%s entry with repaid %d", kindName(m.Kind), m.Repaid)
	}
	switch m.Kind {
	case fsm.EntryGrant:
		if amount < 0 || money < 0 {
			return fail("grant with negative amount or money")
		}
		if in {
			if m.Category == fsm.Paid {
				sums.add(&row.GrantedPaid, amount, key, "granted_paid")
			} else {
				sums.add(&row.GrantedPromotional, amount, key, "granted_promotional")
			}
			sums.add(&row.DeferredGranted, money, key, "deferred_granted")
		}
	case fsm.EntryBurn, fsm.EntryExpire, fsm.EntryRevoke:
		if amount > 0 || money > 0 {
			return fail("%s with positive amount or money", kindName(m.Kind))
		}
		if in {
			switch m.Kind {
			case fsm.EntryBurn:
				sums.sub(&row.Burned, amount, key, "burned")
				sums.sub(&row.Recognized, money, key, "recognized")
			case fsm.EntryExpire:
				sums.sub(&row.Expired, amount, key, "expired")
				sums.sub(&row.Breakage, money, key, "breakage")
			default:
				sums.sub(&row.Revoked, amount, key, "revoked")
				sums.sub(&row.Refunded, money, key, "refunded")
			}
		}
	case fsm.EntryAdjust:
		if in {
			sums.add(&row.Adjusted, amount, key, "adjusted")
			sums.add(&row.AdjustedMoney, money, key, "adjusted_money")
		}
	case fsm.EntryRepay:
		if amount != 0 || m.Repaid <= 0 || money > 0 {
			return fail("repay must have amount 0, repaid > 0 and money ≤ 0")
		}
		// The grant's credits cover the overdraft, held in the row without
		// currency; its money is recognized revenue.
		sums.addAt(r.balances, key, -m.Repaid, "balance")
		sums.addAt(r.balances, noCur, m.Repaid, "balance")
		if in {
			sums.sub(&row.OverdraftRepaid, m.Repaid, key, "overdraft_repaid")
			sums.add(&r.row(noCur, m.Scale).OverdraftRepaid, m.Repaid, noCur, "overdraft_repaid")
			sums.sub(&row.Recognized, money, key, "recognized")
		}
	default:
		return fail("unknown entry kind %d", m.Kind)
	}
	if sums.over != "" {
		return &OverflowError{Seq: m.Seq, Figure: sums.over}
	}
	if m.GrantID == "" {
		if m.Kind != fsm.EntryBurn || m.Amount > 0 || m.MoneyMicros != 0 || m.Currency != "" {
			return fail("an entry without a grant must be an overdraft burn without money")
		}
	} else if err := r.trackGrant(m); err != nil {
		return err
	}

	// The pool's balance chain: each entry moves the balance by its amount.
	pk := groupKey{m.CustomerID, m.CreditTypeID}
	prev := r.pools[pk]
	// A sum past int64 cannot equal an int64 balance_after: checked, it
	// never ties out by wrapping around.
	if next, ok := addInt64(prev, m.Amount); !ok || next != m.BalanceAfter {
		return fail("pool %s/%s: balance %d + amount %d ≠ balance_after %d", m.CustomerID, m.CreditTypeID, prev, m.Amount, m.BalanceAfter)
	}
	r.pools[pk] = m.BalanceAfter
	ct := r.ctBal[m.CreditTypeID]
	ct.add(m.Amount)
	r.ctBal[m.CreditTypeID] = ct

	sums.addAt(r.balances, key, amount, "balance")
	sums.addAt(r.deferred, key, money, "deferred revenue")
	if sums.over != "" {
		return &OverflowError{Seq: m.Seq, Figure: sums.over}
	}
	if in {
		r.entries++
	}
	return nil
}

// trackGrant checks the grant's remaining credits and deferred revenue.
func (r *Reconciler) trackGrant(m *Movement) error {
	g := r.grants[m.GrantID]
	if g == nil {
		if m.Kind != fsm.EntryGrant {
			return &IdentityError{Seq: m.Seq, Msg: fmt.Sprintf("grant %s moves before its grant entry", m.GrantID)}
		}
		g = &grantTrack{costBasis: m.CostBasis, scale: m.Scale, category: m.Category, currency: m.Currency, creditTyp: m.CreditTypeID}
		r.grants[m.GrantID] = g
	} else if m.Kind == fsm.EntryGrant {
		return &IdentityError{Seq: m.Seq, Msg: fmt.Sprintf("grant %s granted twice", m.GrantID)}
	}
	if g.costBasis != m.CostBasis || g.currency != m.Currency || g.creditTyp != m.CreditTypeID {
		return &IdentityError{Seq: m.Seq, Msg: fmt.Sprintf("grant %s changed cost basis, currency or credit type", m.GrantID)}
	}
	moved, ok1 := subInt64(m.Amount, m.Repaid)
	remaining, ok2 := addInt64(g.remaining, moved)
	money, ok3 := addInt64(g.money, m.MoneyMicros)
	if !ok1 || !ok2 || !ok3 {
		return &OverflowError{Seq: m.Seq, Figure: fmt.Sprintf("the remaining credits or deferred revenue of grant %s", m.GrantID)}
	}
	g.remaining, g.money = remaining, money
	if g.remaining < 0 {
		return &IdentityError{Seq: m.Seq, Msg: fmt.Sprintf("grant %s remaining %d is negative", m.GrantID, g.remaining)}
	}
	want := int64(0)
	if g.category == fsm.Paid {
		var err error
		if want, err = deferredMicros(g.remaining, g.costBasis, g.scale); err != nil {
			return &IdentityError{Seq: m.Seq, Msg: fmt.Sprintf("grant %s: %v", m.GrantID, err)}
		}
	}
	if g.money != want {
		return &IdentityError{Seq: m.Seq, Msg: fmt.Sprintf("grant %s deferred revenue %d micros ≠ remaining %d × cost basis %s = %d micros",
			m.GrantID, g.money, g.remaining, g.costBasis, want)}
	}
	return nil
}

// deferredMicros is round_half_even(remaining × 10^-scale × costBasis × 10^6),
// computed with big integers: an implementation apart from fsm's, so that a
// rounding bug in either shows up here.
func deferredMicros(remaining int64, cb fsm.Decimal, scale uint8) (int64, error) {
	num := new(big.Int).Mul(big.NewInt(remaining), big.NewInt(cb.Coef))
	num.Mul(num, new(big.Int).Exp(big.NewInt(10), big.NewInt(fsm.MoneyScale), nil))
	den := new(big.Int).Exp(big.NewInt(10), big.NewInt(int64(scale)+int64(cb.Scale)), nil)
	q, rem := new(big.Int).QuoRem(num, den, new(big.Int))
	twice := new(big.Int).Lsh(rem.Abs(rem), 1)
	if c := twice.Cmp(den); c > 0 || (c == 0 && q.Bit(0) == 1) {
		if num.Sign() < 0 {
			q.Sub(q, big.NewInt(1))
		} else {
			q.Add(q, big.NewInt(1))
		}
	}
	if !q.IsInt64() {
		return 0, fmt.Errorf("deferred revenue overflows int64")
	}
	return q.Int64(), nil
}

func (r *Reconciler) boundary() fsm.Timestamp {
	if r.phase == 0 {
		return r.from
	}
	return r.to
}

// cross closes one end of the period: it records the opening (or closing)
// figures of every row and checks them against the pools' balances.
func (r *Reconciler) cross() error {
	for k := range r.balances {
		r.row(k, r.scales[k.creditType])
	}
	perType := map[string]wideSum{}
	for k, row := range r.rows {
		bal, def := r.balances[k], r.deferred[k]
		sum := perType[k.creditType]
		sum.add(bal)
		perType[k.creditType] = sum
		if r.phase == 0 {
			row.OpeningBalance, row.OpeningDeferred = bal, def
		} else {
			row.ClosingBalance, row.ClosingDeferred = bal, def
		}
	}
	for ct, sum := range perType {
		if sum != r.ctBal[ct] {
			return &IdentityError{Msg: fmt.Sprintf("credit type %s: rows hold %s, pools hold %s", ct, sum, r.ctBal[ct])}
		}
	}
	// Deferred revenue of every grant, recomputed, must add up to the rows'.
	want := map[groupKey]int64{}
	var sums rowSums
	for _, g := range r.grants {
		sums.addAt(want, groupKey{g.creditTyp, g.currency}, g.money, "deferred revenue of its grants")
	}
	if sums.over != "" {
		return &OverflowError{Figure: sums.over}
	}
	for k := range r.rows {
		if want[k] != r.deferred[k] {
			return &IdentityError{Msg: fmt.Sprintf("%s/%s: grants defer %d micros, rows %d", k.creditType, k.currency, want[k], r.deferred[k])}
		}
	}
	r.phase++
	return nil
}

// Finish closes the period and checks both identities on every row.
func (r *Reconciler) Finish() (*Report, error) {
	for r.phase < 2 {
		if err := r.cross(); err != nil {
			return nil, err
		}
	}
	rep := &Report{From: r.from.Time(), To: r.to.Time(), LastSeq: r.lastSeq, Entries: r.entries}
	for _, row := range r.rows {
		// In big integers: every figure fits an int64, their partial sums
		// need not, and an identity must not hold only modulo 2^64.
		credits := exactSum([]int64{row.OpeningBalance, row.GrantedPaid, row.GrantedPromotional, row.Adjusted, row.OverdraftRepaid},
			[]int64{row.Burned, row.Expired, row.Revoked})
		if !credits.IsInt64() || credits.Int64() != row.ClosingBalance {
			return nil, &IdentityError{Msg: fmt.Sprintf("%s/%s credits: opening %d + granted %d + %d − burned %d − expired %d − revoked %d + adjusted %d + repaid %d = %d ≠ closing %d",
				row.CreditTypeID, row.Currency, row.OpeningBalance, row.GrantedPaid, row.GrantedPromotional, row.Burned, row.Expired,
				row.Revoked, row.Adjusted, row.OverdraftRepaid, credits, row.ClosingBalance)}
		}
		money := exactSum([]int64{row.OpeningDeferred, row.DeferredGranted, row.AdjustedMoney},
			[]int64{row.Recognized, row.Breakage, row.Refunded})
		if !money.IsInt64() || money.Int64() != row.ClosingDeferred {
			return nil, &IdentityError{Msg: fmt.Sprintf("%s/%s money: opening %d + granted %d − recognized %d − breakage %d − refunded %d + adjusted %d = %d ≠ closing %d micros",
				row.CreditTypeID, row.Currency, row.OpeningDeferred, row.DeferredGranted, row.Recognized, row.Breakage, row.Refunded,
				row.AdjustedMoney, money, row.ClosingDeferred)}
		}
		rep.Rows = append(rep.Rows, *row)
	}
	slices.SortFunc(rep.Rows, func(a, b Row) int {
		if c := strings.Compare(a.CreditTypeID, b.CreditTypeID); c != 0 {
			return c
		}
		return strings.Compare(a.Currency, b.Currency)
	})
	return rep, nil
}

// exactSum is Σ plus − Σ minus, exactly.
func exactSum(plus, minus []int64) *big.Int {
	sum, v := new(big.Int), new(big.Int)
	for _, p := range plus {
		sum.Add(sum, v.SetInt64(p))
	}
	for _, m := range minus {
		sum.Sub(sum, v.SetInt64(m))
	}
	return sum
}

// checkGrants compares the reconciler's view of every grant with the
// state's, when the period reaches the end of the ledger.
func (r *Reconciler) checkGrants(c Cut) error {
	seen := 0
	err := c.ScanGrants(func(g *fsm.Grant) error {
		t := r.grants[g.ID]
		if t == nil {
			if g.Amount == 0 && g.Remaining == 0 {
				return nil
			}
			return &IdentityError{Msg: fmt.Sprintf("grant %s is in the state but not in the ledger", g.ID)}
		}
		seen++
		if t.remaining != g.Remaining || t.money != g.DeferredMicros {
			return &IdentityError{Msg: fmt.Sprintf("grant %s: ledger says remaining %d and deferred %d, state says %d and %d",
				g.ID, t.remaining, t.money, g.Remaining, g.DeferredMicros)}
		}
		return nil
	})
	if err != nil {
		return err
	}
	if seen != len(r.grants) {
		return &IdentityError{Msg: fmt.Sprintf("the ledger names %d grants, the state holds %d of them", len(r.grants), seen)}
	}
	return nil
}

// ReportFromSource reconciles [from, to) from one cut of a replica's state.
// When the period reaches past the last entry, it also ties every grant's
// remaining credits and deferred revenue to the state.
func ReportFromSource(ctx context.Context, src Source, from, to time.Time, progressOut *Progress) (*Report, error) {
	r, err := NewReconciler(from, to)
	if err != nil {
		return nil, err
	}
	var rep *Report
	err = src.Read(func(c Cut) error {
		look := newLookups(c)
		progressOut.setTotal(int64(c.LastSeq()))
		var m Movement
		n := 0
		err := c.ScanLedger(1, c.LastSeq(), func(e *fsm.LedgerEntry) error {
			if r.Done() {
				return errStopScan
			}
			if n++; n%4096 == 0 {
				if err := ctx.Err(); err != nil {
					return err
				}
			}
			m.LedgerEntry = *e
			if m.Scale, err = look.scale(e.CreditTypeID); err != nil {
				return fmt.Errorf("credit type of entry %d: %w", e.Seq, err)
			}
			m.Category = 0
			if e.GrantID != "" {
				f, err := look.grant(e.GrantID)
				if err != nil {
					return fmt.Errorf("grant of entry %d: %w", e.Seq, err)
				}
				m.Category = f.category
			}
			progressOut.add(1)
			return r.Add(&m)
		})
		if err != nil && err != errStopScan {
			return err
		}
		atEnd := !r.Done()
		if rep, err = r.Finish(); err != nil {
			return err
		}
		rep.AsOf = c.LastTime().Time()
		if atEnd {
			return r.checkGrants(c)
		}
		return nil
	})
	progressOut.done()
	return rep, err
}

var errStopScan = fmt.Errorf("stop scan")
