package export

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"time"

	"github.com/apache/arrow-go/v18/arrow"
	"github.com/apache/arrow-go/v18/arrow/array"
	"github.com/apache/arrow-go/v18/arrow/decimal128"
	"github.com/apache/arrow-go/v18/arrow/memory"
	"github.com/apache/arrow-go/v18/parquet/file"
	"github.com/apache/arrow-go/v18/parquet/pqarrow"
	"gocloud.dev/blob"

	"github.com/creditd/creditd/fsm"
)

// ScanExport reads the committed ledger of an export back, in sequence
// order, as movements: the report computed from them equals the one computed
// from the state. Only the parts the manifest lists are read, closed days'
// through their day lists (a damaged one is refused, ErrDamagedList); a
// destination without a manifest yields ErrNoExport. tempDir holds one
// downloaded part at a time ("" = os.TempDir()).
func ScanExport(ctx context.Context, b *blob.Bucket, tempDir string, fn func(m *Movement) error) (*Manifest, error) {
	man, err := readExportManifest(ctx, b)
	if err != nil {
		return nil, err
	}
	return man, scanManifest(ctx, b, man, tempDir, fn)
}

func scanManifest(ctx context.Context, b *blob.Bucket, man *Manifest, tempDir string, fn func(m *Movement) error) error {
	return man.EachLedgerPart(ctx, b, func(p Part) error {
		if err := scanPart(ctx, b, p, tempDir, fn); err != nil {
			return fmt.Errorf("read %s: %w", p.Key, err)
		}
		return nil
	})
}

func scanPart(ctx context.Context, b *blob.Bucket, p Part, tempDir string, fn func(m *Movement) error) error {
	f, err := os.CreateTemp(tempDir, "creditd-read-*.parquet")
	if err != nil {
		return err
	}
	defer func() { f.Close(); os.Remove(f.Name()) }()
	r, err := b.NewReader(ctx, p.Key, nil)
	if err != nil {
		return err
	}
	_, err = io.Copy(f, r)
	r.Close()
	if err != nil {
		return err
	}
	pf, err := file.NewParquetReader(f)
	if err != nil {
		return err
	}
	defer pf.Close()
	mem := memory.NewGoAllocator()
	fr, err := pqarrow.NewFileReader(pf, pqarrow.ArrowReadProperties{BatchSize: DefaultBatchRows}, mem)
	if err != nil {
		return err
	}
	sc, err := fr.Schema()
	if err != nil {
		return err
	}
	if err := sameColumns(sc, ledgerSchema); err != nil {
		return err
	}
	rr, err := fr.GetRecordReader(ctx, nil, nil)
	if err != nil {
		return err
	}
	defer rr.Release()
	var (
		m    Movement
		rows int64
		next = p.FirstSeq
	)
	for rr.Next() {
		rec := rr.RecordBatch()
		cols, err := ledgerColumnsOf(rec)
		if err != nil {
			return err
		}
		for i := 0; i < int(rec.NumRows()); i++ {
			if err := cols.movement(i, &m); err != nil {
				return err
			}
			if m.Seq != next {
				return fmt.Errorf("row %d has sequence %d, expected %d", rows, m.Seq, next)
			}
			next++
			rows++
			if err := fn(&m); err != nil {
				return err
			}
		}
		if err := ctx.Err(); err != nil {
			return err
		}
	}
	if err := rr.Err(); err != nil && err != io.EOF {
		return err
	}
	if rows != p.Rows || next-1 != p.LastSeq {
		return fmt.Errorf("holds %d rows up to %d; the manifest says %d rows up to %d", rows, next-1, p.Rows, p.LastSeq)
	}
	return nil
}

func str(a *array.String, i int) string {
	if a.IsNull(i) {
		return ""
	}
	return a.Value(i)
}

// units converts a decimal at scale `from` back to an int64 at scale `to`
// (to ≤ from), failing if that would drop digits or leave the int64 range.
func units(n decimal128.Num, from, to uint8) (int64, error) {
	q, rem := n, decimal128.Num{}
	if from != to {
		q, rem = n.Div(pow10Num[from-to])
	}
	hi, lo := q.HighBits(), q.LowBits()
	fits := (hi == 0 && lo <= 1<<63-1) || (hi == -1 && lo >= 1<<63)
	if rem != (decimal128.Num{}) || !fits {
		return 0, fmt.Errorf("%s is not a whole number of units at scale %d in int64", n.ToString(int32(from)), to)
	}
	return int64(lo), nil
}

// costBasis converts a scale-12 decimal to the smallest scale that holds it.
func costBasis(n decimal128.Num) (fsm.Decimal, error) {
	scale := uint8(costBasisScale)
	for scale > 0 {
		q, rem := n.Div(pow10Num[1])
		if rem != (decimal128.Num{}) {
			break
		}
		n, scale = q, scale-1
	}
	v, err := units(n, 0, 0)
	return fsm.Decimal{Coef: v, Scale: scale}, err
}

// ledgerCols are a record batch's ledger columns, resolved once per batch.
type ledgerCols struct {
	seq                                                  *array.Int64
	time                                                 *array.Timestamp
	scale                                                *array.Int32
	customer, creditType, grant, category, kind          *array.String
	currency, causeID, sourceRef, reason                 *array.String
	causeKind, sourceKind                                *array.String
	amount, repaid, balanceAfter, costBasis, moneyAmount *array.Decimal128
}

func ledgerColumnsOf(rec arrow.RecordBatch) (c ledgerCols, err error) {
	defer func() {
		// A column of another type is a file this creditd did not write
		// (sameColumns checked the schema first, so this is a safety net).
		if p := recover(); p != nil {
			err = fmt.Errorf("unexpected column layout: %v", p)
		}
	}()
	get := func(name string) arrow.Array {
		idx := rec.Schema().FieldIndices(name)
		if len(idx) != 1 {
			panic("no single column " + name)
		}
		return rec.Column(idx[0])
	}
	s := func(name string) *array.String { return get(name).(*array.String) }
	d := func(name string) *array.Decimal128 { return get(name).(*array.Decimal128) }
	c = ledgerCols{
		seq: get("seq").(*array.Int64), time: get("time").(*array.Timestamp), scale: get("credit_scale").(*array.Int32),
		customer: s("customer_id"), creditType: s("credit_type_id"), grant: s("grant_id"), category: s("grant_category"),
		kind: s("kind"), currency: s("currency"), causeID: s("cause_id"), sourceRef: s("source_ref"), reason: s("reason"),
		causeKind: s("cause_kind"), sourceKind: s("source_kind"),
		amount: d("amount"), repaid: d("repaid"), balanceAfter: d("balance_after"), costBasis: d("cost_basis"),
		moneyAmount: d("money_amount"),
	}
	return c, nil
}

func (c *ledgerCols) movement(i int, m *Movement) error {
	seq := c.seq.Value(i)
	fail := func(field string, err error) error {
		return &FormatError{Seq: uint64(seq), Field: field, Msg: err.Error()}
	}
	scale := c.scale.Value(i)
	if scale < 0 || scale > fsm.MaxCreditScale {
		return fail("credit_scale", fmt.Errorf("%d out of range", scale))
	}
	kind, ok := parseKind(c.kind.Value(i))
	if !ok {
		return fail("kind", fmt.Errorf("unknown kind %q", c.kind.Value(i)))
	}
	*m = Movement{Scale: uint8(scale)}
	e := &m.LedgerEntry
	e.Seq = uint64(seq)
	e.Time = fsm.Timestamp(c.time.Value(i))
	e.CustomerID = c.customer.Value(i)
	e.CreditTypeID = c.creditType.Value(i)
	e.GrantID = str(c.grant, i)
	if str(c.category, i) == "paid" {
		m.Category = fsm.Paid
	}
	e.Kind = kind
	var err error
	for _, d := range []struct {
		name string
		col  *array.Decimal128
		dst  *int64
	}{{"amount", c.amount, &e.Amount}, {"repaid", c.repaid, &e.Repaid}, {"balance_after", c.balanceAfter, &e.BalanceAfter}} {
		if *d.dst, err = units(d.col.Value(i), creditsScale, uint8(scale)); err != nil {
			return fail(d.name, err)
		}
	}
	if e.CostBasis, err = costBasis(c.costBasis.Value(i)); err != nil {
		return fail("cost_basis", err)
	}
	e.Currency = str(c.currency, i)
	if e.MoneyMicros, err = units(c.moneyAmount.Value(i), moneyScale, moneyScale); err != nil {
		return fail("money_amount", err)
	}
	if e.CauseKind, ok = parseCause(c.causeKind.Value(i)); !ok {
		return fail("cause_kind", fmt.Errorf("unknown cause %q", c.causeKind.Value(i)))
	}
	if sk := str(c.sourceKind, i); sk != "" {
		if e.SourceKind, ok = parseSource(sk); !ok {
			return fail("source_kind", fmt.Errorf("unknown source %q", sk))
		}
	}
	e.CauseID = str(c.causeID, i)
	e.SourceRef = str(c.sourceRef, i)
	e.Reason = str(c.reason, i)
	return nil
}

// ReportFromExport reconciles [from, to) from an export's committed ledger;
// a destination without a manifest yields ErrNoExport. progress may be nil.
func ReportFromExport(ctx context.Context, b *blob.Bucket, tempDir string, from, to time.Time, progress *Progress) (*Report, error) {
	r, err := NewReconciler(from, to)
	if err != nil {
		return nil, err
	}
	man, err := readExportManifest(ctx, b)
	if err != nil {
		return nil, err
	}
	progress.setTotal(int64(man.WatermarkSeq))
	err = scanManifest(ctx, b, man, tempDir, func(m *Movement) error {
		if r.Done() {
			return errStopScan
		}
		progress.add(1)
		return r.Add(m)
	})
	progress.done()
	if err != nil && !errors.Is(err, errStopScan) {
		return nil, err
	}
	rep, err := r.Finish()
	if err != nil {
		return nil, err
	}
	if man.LogTime != "" {
		if rep.AsOf, err = time.Parse(time.RFC3339Nano, man.LogTime); err != nil {
			return nil, fmt.Errorf("manifest log_time %q: %w", man.LogTime, err)
		}
	}
	return rep, nil
}

// sameColumns compares names, types and nullability; the Parquet reader adds
// field metadata that makes schemas unequal otherwise.
func sameColumns(got, want *arrow.Schema) error {
	if got.NumFields() != want.NumFields() {
		return fmt.Errorf("%d columns, this creditd writes %d", got.NumFields(), want.NumFields())
	}
	for i, f := range got.Fields() {
		w := want.Field(i)
		if f.Name != w.Name || !arrow.TypeEqual(f.Type, w.Type) || f.Nullable != w.Nullable {
			return fmt.Errorf("column %d is %s %s, this creditd writes %s %s", i, f.Name, f.Type, w.Name, w.Type)
		}
	}
	return nil
}
