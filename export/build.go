package export

import (
	"fmt"

	"github.com/apache/arrow-go/v18/arrow"
	"github.com/apache/arrow-go/v18/arrow/array"
	"github.com/apache/arrow-go/v18/arrow/decimal128"
	"github.com/apache/arrow-go/v18/arrow/memory"

	"github.com/creditd/creditd/fsm"
)

// FormatError reports a value that cannot be exported exactly.
type FormatError struct {
	Seq   uint64 // ledger sequence, 0 for grants
	Field string
	Msg   string
}

func (e *FormatError) Error() string {
	if e.Seq != 0 {
		return fmt.Sprintf("export: ledger entry %d: %s: %s", e.Seq, e.Field, e.Msg)
	}
	return fmt.Sprintf("export: %s: %s", e.Field, e.Msg)
}

var pow10Num = func() [costBasisScale + 1]decimal128.Num {
	var p [costBasisScale + 1]decimal128.Num
	v := uint64(1)
	for i := range p {
		p[i] = decimal128.FromU64(v)
		v *= 10
	}
	return p
}()

// scaled converts v × 10^-from to a decimal128 at scale to (to ≥ from): an
// exact widening, since int64 × 10^12 fits 128 bits.
func scaled(v int64, from, to uint8) (decimal128.Num, error) {
	if from > to {
		return decimal128.Num{}, fmt.Errorf("scale %d above the column's %d", from, to)
	}
	n := decimal128.FromI64(v)
	if from == to {
		return n, nil
	}
	return n.Mul(pow10Num[to-from]), nil
}

// ledgerBuilder turns ledger entries into Arrow record batches.
type ledgerBuilder struct {
	b *array.RecordBuilder

	seq, creditScale                                      *array.Int64Builder
	scale32                                               *array.Int32Builder
	time                                                  *array.TimestampBuilder
	customer, creditType, grant, category, kind, currency *array.StringBuilder
	causeKind, causeID, sourceKind, sourceRef, reason     *array.StringBuilder
	amount, repaid, balanceAfter, costBasis, money        *array.Decimal128Builder
}

func newLedgerBuilder(mem memory.Allocator) *ledgerBuilder {
	b := array.NewRecordBuilder(mem, ledgerSchema)
	f := func(name string) array.Builder {
		idx := ledgerSchema.FieldIndices(name)
		if len(idx) != 1 {
			panic("export: ledger schema has no single column " + name)
		}
		return b.Field(idx[0])
	}
	return &ledgerBuilder{
		b:            b,
		seq:          f("seq").(*array.Int64Builder),
		time:         f("time").(*array.TimestampBuilder),
		customer:     f("customer_id").(*array.StringBuilder),
		creditType:   f("credit_type_id").(*array.StringBuilder),
		scale32:      f("credit_scale").(*array.Int32Builder),
		grant:        f("grant_id").(*array.StringBuilder),
		category:     f("grant_category").(*array.StringBuilder),
		kind:         f("kind").(*array.StringBuilder),
		amount:       f("amount").(*array.Decimal128Builder),
		repaid:       f("repaid").(*array.Decimal128Builder),
		balanceAfter: f("balance_after").(*array.Decimal128Builder),
		costBasis:    f("cost_basis").(*array.Decimal128Builder),
		currency:     f("currency").(*array.StringBuilder),
		money:        f("money_amount").(*array.Decimal128Builder),
		causeKind:    f("cause_kind").(*array.StringBuilder),
		causeID:      f("cause_id").(*array.StringBuilder),
		sourceKind:   f("source_kind").(*array.StringBuilder),
		sourceRef:    f("source_ref").(*array.StringBuilder),
		reason:       f("reason").(*array.StringBuilder),
	}
}

func appendOptional(b *array.StringBuilder, s string) {
	if s == "" {
		b.AppendNull()
		return
	}
	b.Append(s)
}

func appendDecimal(b *array.Decimal128Builder, v int64, from, to uint8, seq uint64, field string) error {
	n, err := scaled(v, from, to)
	if err != nil {
		return &FormatError{Seq: seq, Field: field, Msg: err.Error()}
	}
	b.Append(n)
	return nil
}

// add appends one entry; scale is its credit type's, cat its grant's
// category (ignored when the entry has no grant).
func (lb *ledgerBuilder) add(e *fsm.LedgerEntry, scale uint8, cat fsm.GrantCategory) error {
	if e.Seq > 1<<63-1 {
		return &FormatError{Seq: e.Seq, Field: "seq", Msg: "above the int64 range"}
	}
	lb.seq.Append(int64(e.Seq))
	lb.time.Append(arrow.Timestamp(e.Time))
	lb.customer.Append(e.CustomerID)
	lb.creditType.Append(e.CreditTypeID)
	lb.scale32.Append(int32(scale))
	if e.GrantID == "" {
		lb.grant.AppendNull()
		lb.category.AppendNull()
		lb.sourceKind.AppendNull()
	} else {
		lb.grant.Append(e.GrantID)
		lb.category.Append(categoryName(cat))
		lb.sourceKind.Append(sourceName(e.SourceKind))
	}
	lb.kind.Append(kindName(e.Kind))
	if err := appendDecimal(lb.amount, e.Amount, scale, creditsScale, e.Seq, "amount"); err != nil {
		return err
	}
	if err := appendDecimal(lb.repaid, e.Repaid, scale, creditsScale, e.Seq, "repaid"); err != nil {
		return err
	}
	if err := appendDecimal(lb.balanceAfter, e.BalanceAfter, scale, creditsScale, e.Seq, "balance_after"); err != nil {
		return err
	}
	if e.CostBasis.Coef < 0 {
		return &FormatError{Seq: e.Seq, Field: "cost_basis", Msg: "negative"}
	}
	if err := appendDecimal(lb.costBasis, e.CostBasis.Coef, e.CostBasis.Scale, costBasisScale, e.Seq, "cost_basis"); err != nil {
		return err
	}
	appendOptional(lb.currency, e.Currency)
	if err := appendDecimal(lb.money, e.MoneyMicros, moneyScale, moneyScale, e.Seq, "money_amount"); err != nil {
		return err
	}
	lb.causeKind.Append(causeName(e.CauseKind))
	appendOptional(lb.causeID, e.CauseID)
	appendOptional(lb.sourceRef, e.SourceRef)
	appendOptional(lb.reason, e.Reason)
	return nil
}

func (lb *ledgerBuilder) rows() int { return lb.seq.Len() }

// batch returns the rows appended so far and resets the builder, sized for
// another batch of n rows so that appends do not grow buffers row by row.
func (lb *ledgerBuilder) batch(n int) arrow.RecordBatch {
	rec := lb.b.NewRecordBatch()
	lb.b.Reserve(n)
	return rec
}

func (lb *ledgerBuilder) release() { lb.b.Release() }

// grantBuilder turns grants into Arrow record batches.
type grantBuilder struct {
	b *array.RecordBuilder
}

func newGrantBuilder(mem memory.Allocator) *grantBuilder {
	return &grantBuilder{b: array.NewRecordBuilder(mem, grantSchema)}
}

func (gb *grantBuilder) field(i int) array.Builder { return gb.b.Field(i) }

// add appends one grant as of the cut at snapshotSeq.
func (gb *grantBuilder) add(g *fsm.Grant, scale uint8, snapshotSeq uint64) error {
	i := 0
	next := func() array.Builder { b := gb.b.Field(i); i++; return b }
	credits := func(v int64, field string) error {
		n, err := scaled(v, scale, creditsScale)
		if err != nil {
			return &FormatError{Field: "grant " + g.ID + " " + field, Msg: err.Error()}
		}
		next().(*array.Decimal128Builder).Append(n)
		return nil
	}
	ts := func(t fsm.Timestamp, optional bool) {
		b := next().(*array.TimestampBuilder)
		if optional && t == 0 {
			b.AppendNull()
			return
		}
		b.Append(arrow.Timestamp(t))
	}
	next().(*array.Int64Builder).Append(int64(snapshotSeq))
	next().(*array.StringBuilder).Append(g.ID)
	next().(*array.StringBuilder).Append(g.CustomerID)
	next().(*array.StringBuilder).Append(g.CreditTypeID)
	next().(*array.Int32Builder).Append(int32(scale))
	next().(*array.StringBuilder).Append(categoryName(g.Category))
	next().(*array.StringBuilder).Append(statusName(g.Status))
	for _, c := range []struct {
		v    int64
		name string
	}{{g.Amount, "amount"}, {g.Remaining, "remaining"}, {g.Burned, "burned"}, {g.Expired, "expired"}, {g.Revoked, "revoked"}, {g.Adjusted, "adjusted"}} {
		if err := credits(c.v, c.name); err != nil {
			return err
		}
	}
	cb, err := scaled(g.CostBasis.Coef, g.CostBasis.Scale, costBasisScale)
	if err != nil || g.CostBasis.Coef < 0 {
		return &FormatError{Field: "grant " + g.ID + " cost_basis", Msg: fmt.Sprintf("cannot export %s", g.CostBasis)}
	}
	next().(*array.Decimal128Builder).Append(cb)
	appendOptional(next().(*array.StringBuilder), g.Currency)
	next().(*array.Decimal128Builder).Append(decimal128.FromI64(g.DeferredMicros))
	next().(*array.Int64Builder).Append(int64(g.Priority))
	ts(g.EffectiveAt, false)
	ts(g.ExpiresAt, true)
	next().(*array.StringBuilder).Append(sourceName(g.SourceKind))
	appendOptional(next().(*array.StringBuilder), g.SourceRef)
	appendOptional(next().(*array.StringBuilder), g.Reason)
	ts(g.CreatedAt, false)
	ts(g.UpdatedAt, false)
	if i != len(GrantColumns) {
		panic(fmt.Sprintf("export: grant row filled %d of %d columns", i, len(GrantColumns)))
	}
	return nil
}

func (gb *grantBuilder) rows() int                { return gb.b.Field(0).Len() }
func (gb *grantBuilder) batch() arrow.RecordBatch { return gb.b.NewRecordBatch() }
func (gb *grantBuilder) release()                 { gb.b.Release() }
