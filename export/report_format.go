package export

import (
	"bufio"
	"bytes"
	"encoding/csv"
	"fmt"
	"io"
	"strconv"
	"text/tabwriter"
	"time"

	"github.com/apache/arrow-go/v18/arrow"
	"github.com/apache/arrow-go/v18/arrow/array"
	"github.com/apache/arrow-go/v18/arrow/memory"

	"github.com/creditd/creditd/fsm"
)

// ReportColumns is the schema of the report in csv and Parquet, in order.
// Credits are decimals in credits; money in currency units.
var ReportColumns = []Column{
	{"period_from", timestampType, false, false, "start of the period (inclusive), UTC"},
	{"period_to", timestampType, false, false, "end of the period (exclusive), UTC"},
	{"credit_type_id", arrow.BinaryTypes.String, false, true, "credit type"},
	{"currency", arrow.BinaryTypes.String, true, true, "currency of the grants; null (empty in csv) for credits without one: promotional grants and the overdraft"},
	{"opening_balance", creditsType, false, false, "credits held at period_from"},
	{"granted_paid", creditsType, false, false, "credits granted by paid grants"},
	{"granted_promotional", creditsType, false, false, "credits granted by promotional grants"},
	{"burned", creditsType, false, false, "credits burned by usage (including usage burned into overdraft)"},
	{"expired", creditsType, false, false, "credits expired"},
	{"revoked", creditsType, false, false, "credits revoked (refunds)"},
	{"adjusted", creditsType, false, false, "signed operator adjustments"},
	{"overdraft_repaid", creditsType, false, false, "credits moved from new grants to cover overdraft: − on the grant's row, + on the row without currency"},
	{"closing_balance", creditsType, false, false, "credits held at period_to"},
	{"opening_deferred", moneyType, false, false, "deferred revenue at period_from"},
	{"deferred_granted", moneyType, false, false, "deferred revenue added by paid grants"},
	{"recognized", moneyType, false, false, "revenue recognized by burns and overdraft repayments"},
	{"breakage", moneyType, false, false, "deferred revenue of expired credits"},
	{"refunded", moneyType, false, false, "deferred revenue removed by revocations"},
	{"adjusted_money", moneyType, false, false, "signed change of deferred revenue by adjustments"},
	{"closing_deferred", moneyType, false, false, "deferred revenue at period_to"},
}

// credits and money of a row in ReportColumns order (after the keys).
func (r *Row) credits() []int64 {
	return []int64{r.OpeningBalance, r.GrantedPaid, r.GrantedPromotional, r.Burned, r.Expired, r.Revoked,
		r.Adjusted, r.OverdraftRepaid, r.ClosingBalance}
}

func (r *Row) money() []int64 {
	return []int64{r.OpeningDeferred, r.DeferredGranted, r.Recognized, r.Breakage, r.Refunded, r.AdjustedMoney, r.ClosingDeferred}
}

func currencyLabel(c string) string {
	if c == "" {
		return "-"
	}
	return c
}

// WriteTable writes the report for people: credits, then deferred revenue.
func (rep *Report) WriteTable(w io.Writer) error {
	bw := bufio.NewWriter(w)
	fmt.Fprintf(bw, "Reconciliation %s to %s (UTC, end exclusive): %d entries in the period, ledger read through entry %d; state as of %s\n\n",
		rep.From.Format(time.RFC3339), rep.To.Format(time.RFC3339), rep.Entries, rep.LastSeq, rep.AsOf.Format(time.RFC3339))
	// One tabwriter for both tables so that their columns line up; its
	// right-aligned padding fills the empty line between them and the empty
	// trailing cells with spaces, which trimTrailingSpaces takes off again.
	var table bytes.Buffer
	tw := tabwriter.NewWriter(&table, 2, 0, 2, ' ', tabwriter.AlignRight)
	fmt.Fprintln(tw, "CREDITS\tcurrency\topening\t+ paid\t+ promotional\t− burned\t− expired\t− revoked\t± adjusted\t± repaid\t= closing\t")
	for i := range rep.Rows {
		r := &rep.Rows[i]
		fmt.Fprintf(tw, "%s\t%s\t", r.CreditTypeID, currencyLabel(r.Currency))
		for _, v := range r.credits() {
			fmt.Fprintf(tw, "%s\t", fsm.FormatUnits(v, r.Scale))
		}
		fmt.Fprintln(tw)
	}
	fmt.Fprintln(tw, "\t\t\t\t\t\t\t\t\t\t\t")
	fmt.Fprintln(tw, "DEFERRED REVENUE\tcurrency\topening\t+ granted\t− recognized\t− breakage\t− refunded\t± adjusted\t= closing\t")
	for i := range rep.Rows {
		r := &rep.Rows[i]
		if r.Currency == "" {
			continue // no money without a currency
		}
		fmt.Fprintf(tw, "%s\t%s\t", r.CreditTypeID, r.Currency)
		for _, v := range r.money() {
			fmt.Fprintf(tw, "%s\t", fsm.FormatUnits(v, fsm.MoneyScale))
		}
		fmt.Fprintln(tw)
	}
	if err := tw.Flush(); err != nil {
		return err
	}
	bw.Write(trimTrailingSpaces(table.Bytes()))
	fmt.Fprintln(bw, "\nChecked on every row: opening + granted − burned − expired − revoked ± adjusted ± repaid = closing (credits)")
	fmt.Fprintln(bw, "and opening + granted − recognized − breakage − refunded ± adjusted = closing (deferred revenue).")
	return bw.Flush()
}

// trimTrailingSpaces removes the spaces at the end of every line of text.
func trimTrailingSpaces(text []byte) []byte {
	var out []byte
	for line := range bytes.Lines(text) {
		body, nl := bytes.CutSuffix(line, []byte("\n"))
		out = append(out, bytes.TrimRight(body, " ")...)
		if nl {
			out = append(out, '\n')
		}
	}
	return out
}

// WriteCSV writes the report as csv with a header of ReportColumns names.
func (rep *Report) WriteCSV(w io.Writer) error {
	cw := csv.NewWriter(w)
	header := make([]string, len(ReportColumns))
	for i, c := range ReportColumns {
		header[i] = c.Name
	}
	if err := cw.Write(header); err != nil {
		return err
	}
	for i := range rep.Rows {
		r := &rep.Rows[i]
		rec := []string{rep.From.Format(time.RFC3339), rep.To.Format(time.RFC3339), r.CreditTypeID, r.Currency}
		for _, v := range r.credits() {
			rec = append(rec, fsm.FormatUnits(v, r.Scale))
		}
		for _, v := range r.money() {
			rec = append(rec, fsm.FormatUnits(v, fsm.MoneyScale))
		}
		if err := cw.Write(rec); err != nil {
			return err
		}
	}
	cw.Flush()
	return cw.Error()
}

// WriteParquet writes the report as one Parquet file of ReportColumns.
func (rep *Report) WriteParquet(w io.Writer) error {
	mem := memory.NewGoAllocator()
	schema := arrowSchema(ReportColumns)
	b := array.NewRecordBuilder(mem, schema)
	defer b.Release()
	for i := range rep.Rows {
		r := &rep.Rows[i]
		b.Field(0).(*array.TimestampBuilder).Append(arrow.Timestamp(rep.From.UnixMicro()))
		b.Field(1).(*array.TimestampBuilder).Append(arrow.Timestamp(rep.To.UnixMicro()))
		b.Field(2).(*array.StringBuilder).Append(r.CreditTypeID)
		appendOptional(b.Field(3).(*array.StringBuilder), r.Currency)
		col := 4
		for _, v := range r.credits() {
			n, err := scaled(v, r.Scale, creditsScale)
			if err != nil {
				return fmt.Errorf("report %s: %w", r.CreditTypeID, err)
			}
			b.Field(col).(*array.Decimal128Builder).Append(n)
			col++
		}
		for _, v := range r.money() {
			n, _ := scaled(v, moneyScale, moneyScale)
			b.Field(col).(*array.Decimal128Builder).Append(n)
			col++
		}
	}
	fw, err := newFileWriter(nonCloser{w}, schema, ReportColumns, mem, DefaultRowGroupRows,
		map[string]string{"creditd.report.entries": strconv.FormatInt(rep.Entries, 10)})
	if err != nil {
		return err
	}
	if err := fw.write(b.NewRecordBatch()); err != nil {
		return err
	}
	return fw.close()
}
