package export

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/creditd/creditd/export/internal/ledgergen"
	"github.com/creditd/creditd/fsm"
)

func day(n int) time.Time { return ledgergen.Start.Time().AddDate(0, 0, n) }

func TestReportTiesOutAndIsTheSameFromTheStateAndFromTheExport(t *testing.T) {
	g := newGen(t, 11)
	run(t, g, 4000, 40*time.Minute) // ≈ 53 hours: three dates
	pools, grants, _, err := g.Check()
	if err != nil {
		t.Fatal(err)
	}
	b := openDir(t, t.TempDir())
	exportOnce(t, FromFSM(g.F), b, smallFiles())

	for _, p := range []struct {
		name     string
		from, to time.Time
	}{
		{"everything", day(-1), day(30)},
		{"the first day", day(0), day(1)},
		{"the second day", day(1), day(2)},
		{"a period after the ledger", day(10), day(11)},
	} {
		t.Run(p.name, func(t *testing.T) {
			fromState, err := ReportFromSource(testCtx(t), FromFSM(g.F), p.from, p.to, nil)
			if err != nil {
				t.Fatal(err)
			}
			fromExport, err := ReportFromExport(testCtx(t), b, "", p.from, p.to, nil)
			if err != nil {
				t.Fatal(err)
			}
			if len(fromState.Rows) == 0 || len(fromState.Rows) != len(fromExport.Rows) {
				t.Fatalf("%d rows from the state, %d from the export", len(fromState.Rows), len(fromExport.Rows))
			}
			for i := range fromState.Rows {
				if fromState.Rows[i] != fromExport.Rows[i] {
					t.Errorf("row %d differs:\n state  %+v\n export %+v", i, fromState.Rows[i], fromExport.Rows[i])
				}
			}
		})
	}

	// Over everything, the closing figures are the state's.
	rep, err := ReportFromSource(testCtx(t), FromFSM(g.F), day(-1), day(30), nil)
	if err != nil {
		t.Fatal(err)
	}
	balance := map[string]int64{}
	deferred := map[[2]string]int64{}
	for k, v := range pools {
		balance[k[1]] += v
	}
	for _, gr := range grants {
		deferred[[2]string{gr.CreditTypeID, gr.Currency}] += gr.DeferredMicros
	}
	gotBal := map[string]int64{}
	var paid, promo, burned, recognized int64
	for _, r := range rep.Rows {
		gotBal[r.CreditTypeID] += r.ClosingBalance
		if r.ClosingDeferred != deferred[[2]string{r.CreditTypeID, r.Currency}] {
			t.Errorf("%s/%s: closing deferred %d, grants hold %d", r.CreditTypeID, r.Currency, r.ClosingDeferred, deferred[[2]string{r.CreditTypeID, r.Currency}])
		}
		if r.OpeningBalance != 0 || r.OpeningDeferred != 0 {
			t.Errorf("%s/%s opens at %d/%d before the first entry", r.CreditTypeID, r.Currency, r.OpeningBalance, r.OpeningDeferred)
		}
		paid += r.GrantedPaid
		promo += r.GrantedPromotional
		burned += r.Burned
		recognized += r.Recognized
	}
	for ct, v := range balance {
		if gotBal[ct] != v {
			t.Errorf("%s: closing balance %d, pools hold %d", ct, gotBal[ct], v)
		}
	}
	if paid == 0 || promo == 0 || burned == 0 || recognized == 0 {
		t.Errorf("a flow is empty (paid %d, promotional %d, burned %d, recognized %d): the test covers too little", paid, promo, burned, recognized)
	}

	// Consecutive periods chain: one's closing is the next one's opening.
	d1, _ := ReportFromSource(testCtx(t), FromFSM(g.F), day(0), day(1), nil)
	d2, _ := ReportFromSource(testCtx(t), FromFSM(g.F), day(1), day(2), nil)
	closing := map[[2]string][2]int64{}
	for _, r := range d1.Rows {
		closing[[2]string{r.CreditTypeID, r.Currency}] = [2]int64{r.ClosingBalance, r.ClosingDeferred}
	}
	for _, r := range d2.Rows {
		if c := closing[[2]string{r.CreditTypeID, r.Currency}]; c != [2]int64{r.OpeningBalance, r.OpeningDeferred} {
			t.Errorf("%s/%s: day 1 closes at %v, day 2 opens at %d/%d", r.CreditTypeID, r.Currency, c, r.OpeningBalance, r.OpeningDeferred)
		}
	}
}

func TestReportRefusesALedgerThatDoesNotTieOut(t *testing.T) {
	usd := func(e fsm.LedgerEntry) fsm.LedgerEntry {
		e.CustomerID, e.CreditTypeID, e.Currency, e.CostBasis = "c", "ai", "USD", fsm.Decimal{Coef: 10, Scale: 2}
		return e
	}
	good := []fsm.LedgerEntry{
		usd(fsm.LedgerEntry{Seq: 1, Time: 10, GrantID: "g", Kind: fsm.EntryGrant, Amount: 1000, BalanceAfter: 1000, MoneyMicros: 1_000_000}),
		usd(fsm.LedgerEntry{Seq: 2, Time: 20, GrantID: "g", Kind: fsm.EntryBurn, Amount: -333, BalanceAfter: 667, MoneyMicros: -333_000}),
	}
	for _, tc := range []struct {
		name   string
		change func(es []fsm.LedgerEntry)
		want   string
	}{
		{"a balance that does not follow from the amounts", func(es []fsm.LedgerEntry) { es[1].BalanceAfter = 668 }, "balance_after"},
		{"money that is not remaining × cost basis", func(es []fsm.LedgerEntry) { es[1].MoneyMicros = -333_001 }, "deferred revenue"},
		{"a gap in the sequence", func(es []fsm.LedgerEntry) { es[1].Seq = 3 }, "gap"},
		{"a burn that adds credits", func(es []fsm.LedgerEntry) { es[1].Amount, es[1].BalanceAfter = 1, 1001 }, "positive"},
		{"money without a currency", func(es []fsm.LedgerEntry) { es[0].Currency = "" }, "currency"},
		{"a grant burned before it is granted", func(es []fsm.LedgerEntry) { es[0], es[1] = es[1], es[0]; es[0].Seq, es[1].Seq = 1, 2 }, "before its grant"},
		{"time going backwards", func(es []fsm.LedgerEntry) { es[1].Time = 5 }, "backwards"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			es := append([]fsm.LedgerEntry(nil), good...)
			tc.change(es)
			r, _ := NewReconciler(time.UnixMicro(0), time.UnixMicro(100))
			var err error
			for i := range es {
				if err = r.Add(&Movement{LedgerEntry: es[i], Scale: 2, Category: fsm.Paid}); err != nil {
					break
				}
			}
			if err == nil {
				_, err = r.Finish()
			}
			var ie *IdentityError
			if !errors.As(err, &ie) || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("got %v, want an identity error about %q", err, tc.want)
			}
		})
	}
	r, _ := NewReconciler(time.UnixMicro(0), time.UnixMicro(100))
	for i := range good {
		if err := r.Add(&Movement{LedgerEntry: good[i], Scale: 2, Category: fsm.Paid}); err != nil {
			t.Fatal(err)
		}
	}
	rep, err := r.Finish()
	if err != nil {
		t.Fatal(err)
	}
	want := Row{CreditTypeID: "ai", Currency: "USD", Scale: 2, GrantedPaid: 1000, Burned: 333, ClosingBalance: 667,
		DeferredGranted: 1_000_000, Recognized: 333_000, ClosingDeferred: 667_000}
	if len(rep.Rows) != 1 || rep.Rows[0] != want {
		t.Fatalf("report %+v, want %+v", rep.Rows, want)
	}
}

func TestDeferredMicrosRoundsHalfEven(t *testing.T) {
	for _, tc := range []struct {
		remaining int64
		cb        fsm.Decimal
		scale     uint8
		want      int64
	}{
		{1, fsm.Decimal{Coef: 5, Scale: 7}, 0, 0}, // 0.5 micro → 0 (even)
		{3, fsm.Decimal{Coef: 5, Scale: 7}, 0, 2}, // 1.5 → 2
		{5, fsm.Decimal{Coef: 5, Scale: 7}, 0, 2}, // 2.5 → 2
		{7, fsm.Decimal{Coef: 5, Scale: 7}, 0, 4}, // 3.5 → 4
		{1, fsm.Decimal{Coef: 6, Scale: 7}, 0, 1}, // 0.6 → 1
		{150, fsm.Decimal{Coef: 1, Scale: 0}, 2, 1_500_000},
		{1 << 60, fsm.Decimal{Coef: 123456789, Scale: 12}, 9, 142_335_986_928}, // 1152921504.606846976 × 0.000123456789
	} {
		got, err := deferredMicros(tc.remaining, tc.cb, tc.scale)
		if err != nil || got != tc.want {
			t.Errorf("deferredMicros(%d, %s, %d) = %d, %v; want %d", tc.remaining, tc.cb, tc.scale, got, err, tc.want)
		}
	}
}

// The table once ended the empty line between its two parts with the
// tabwriter's padding: 130 spaces that editors and diffs flag.
func TestReportTableHasNoTrailingSpaces(t *testing.T) {
	rep := Report{
		From: time.Date(2026, 11, 1, 0, 0, 0, 0, time.UTC), To: time.Date(2026, 12, 1, 0, 0, 0, 0, time.UTC),
		AsOf: time.Date(2026, 11, 26, 0, 0, 0, 0, time.UTC), LastSeq: 7, Entries: 7,
		Rows: []Row{
			{CreditTypeID: "ai-credits", Scale: 2, GrantedPromotional: 5000, ClosingBalance: 5000},
			{CreditTypeID: "ai-credits", Currency: "USD", Scale: 2, GrantedPaid: 200000, Burned: 90600, Revoked: 10000, ClosingBalance: 99400,
				DeferredGranted: 20_000000, Recognized: 9_060000, Refunded: 1_000000, ClosingDeferred: 9_940000},
		},
	}
	var out strings.Builder
	if err := rep.WriteTable(&out); err != nil {
		t.Fatal(err)
	}
	lines := strings.Split(out.String(), "\n")
	for i, l := range lines {
		if strings.HasSuffix(l, " ") {
			t.Errorf("line %d ends with spaces: %q", i+1, l)
		}
	}
	// The columns of both tables still line up: "= closing" and the last
	// figure of each row end at the same column.
	var ends []int
	for _, l := range lines {
		if s := strings.TrimSpace(l); strings.HasPrefix(s, "CREDITS") || strings.HasPrefix(s, "DEFERRED REVENUE") || strings.HasPrefix(s, "ai-credits") {
			ends = append(ends, len([]rune(l)))
		}
	}
	if len(ends) != 5 || ends[0] != ends[1] || ends[1] != ends[2] || ends[3] != ends[4] {
		t.Errorf("line widths %v: the rows do not line up with their headers\n%s", ends, out.String())
	}
	if !strings.Contains(out.String(), "994.00") || !strings.Contains(out.String(), "9.940000") {
		t.Errorf("figures missing:\n%s", out.String())
	}
}

// overflowingCut is a ledger fsm accepts: eight customers, each granted 2^60
// units (fsm.MaxAmount, the largest single grant) of a scale-9 credit type,
// so every pool balance fits an int64 while the credit type's total
// (8 × 2^60 = 2^63 units ≈ 9.2 billion credits) does not.
func overflowingCut() *memCut {
	const n = 8
	ts := ledgergen.Start + 1
	cut := &memCut{types: map[string]fsm.CreditType{"gpu": {ID: "gpu", Scale: 9}}}
	for i := range n {
		c, id := fmt.Sprintf("c%d", i), fmt.Sprintf("g%d", i)
		cut.grants = append(cut.grants, fsm.Grant{ID: id, CustomerID: c, CreditTypeID: "gpu", Category: fsm.Promotional,
			Amount: fsm.MaxAmount, Remaining: fsm.MaxAmount, Status: fsm.GrantActive, EffectiveAt: ts, CreatedAt: ts, UpdatedAt: ts})
		cut.entries = append(cut.entries, fsm.LedgerEntry{Seq: uint64(i + 1), Time: ts, CustomerID: c, CreditTypeID: "gpu",
			GrantID: id, Kind: fsm.EntryGrant, Amount: fsm.MaxAmount, BalanceAfter: fsm.MaxAmount, CauseKind: fsm.CauseGrant, CauseID: id})
	}
	return cut
}

// Past 2^63 units per credit type the report's int64 figures once wrapped
// around, both identities still held modulo 2^64, and the report printed
// negative "granted" credits with exit status 0. It refuses them instead,
// naming the figure; the exported rows (DECIMAL(38,9)) hold them exactly.
func TestAReportRefusesTotalsThatOverflow(t *testing.T) {
	cut := overflowingCut()
	b := openDir(t, t.TempDir())
	exportOnce(t, cut, b, Options{})
	for _, tc := range []struct {
		name   string
		report func() (*Report, error)
	}{
		{"from the state", func() (*Report, error) { return ReportFromSource(testCtx(t), cut, day(0), day(1), nil) }},
		{"from the export", func() (*Report, error) { return ReportFromExport(testCtx(t), b, "", day(0), day(1), nil) }},
	} {
		t.Run(tc.name, func(t *testing.T) {
			rep, err := tc.report()
			var oe *OverflowError
			if !errors.As(err, &oe) || oe.Seq != 8 || !strings.Contains(err.Error(), "granted_promotional of gpu/-") {
				t.Fatalf("got %v (report %+v), want an overflow error naming granted_promotional of gpu/- at entry 8", err, rep)
			}
		})
	}
}

// The figures a ledger can push past int64 one at a time, fed to the
// reconciler directly (fsm would not make most of these ledgers): each is
// refused by name, and a credit type whose total passes int64 while each of
// its rows fits still reports.
func TestAReportRefusesEachFigureThatOverflowsAndOnlyThose(t *testing.T) {
	const maxInt64 = 1<<63 - 1
	grant := func(seq uint64, t fsm.Timestamp, customer, id, currency string, amount, balanceAfter int64) fsm.LedgerEntry {
		return fsm.LedgerEntry{Seq: seq, Time: t, CustomerID: customer, CreditTypeID: "ai", GrantID: id, Kind: fsm.EntryGrant,
			Amount: amount, BalanceAfter: balanceAfter, Currency: currency}
	}
	burn := func(seq uint64, t fsm.Timestamp, id string, amount, balanceAfter int64) fsm.LedgerEntry {
		return fsm.LedgerEntry{Seq: seq, Time: t, CustomerID: "c", CreditTypeID: "ai", GrantID: id, Kind: fsm.EntryBurn,
			Amount: -amount, BalanceAfter: balanceAfter}
	}
	for _, tc := range []struct {
		name    string
		entries []fsm.LedgerEntry
		want    string // the figure named; "" = the report is computed
	}{
		{"granted credits", []fsm.LedgerEntry{
			grant(1, 10, "c", "g1", "", maxInt64, maxInt64), burn(2, 11, "g1", maxInt64, 0), grant(3, 12, "c", "g2", "", 1, 1),
		}, "granted_promotional of ai/-"},
		{"burned credits while the balance fits", []fsm.LedgerEntry{
			grant(1, 1, "c", "g1", "", maxInt64, maxInt64), // before the period: the opening balance
			burn(2, 10, "g1", maxInt64, 0), grant(3, 11, "c", "g2", "", 1, 1), burn(4, 12, "g2", 1, 0),
		}, "burned of ai/-"},
		{"the balance of a row", []fsm.LedgerEntry{
			grant(1, 1, "c1", "g1", "", maxInt64, maxInt64), grant(2, 1, "c2", "g2", "", 1, 1),
		}, "balance of ai/-"},
		{"a credit type past int64 whose rows each fit", []fsm.LedgerEntry{
			grant(1, 10, "c1", "g1", "USD", maxInt64, maxInt64), grant(2, 10, "c2", "g2", "EUR", maxInt64, maxInt64),
		}, ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			r, err := NewReconciler(time.UnixMicro(5), time.UnixMicro(100))
			if err != nil {
				t.Fatal(err)
			}
			for i := range tc.entries {
				m := Movement{LedgerEntry: tc.entries[i], Scale: 2, Category: fsm.Promotional}
				if m.Currency != "" {
					m.Category = fsm.Paid // at cost basis 0: no money
				}
				if err = r.Add(&m); err != nil {
					break
				}
			}
			var rep *Report
			if err == nil {
				rep, err = r.Finish()
			}
			if tc.want == "" {
				if err != nil || len(rep.Rows) != 2 || rep.Rows[0].ClosingBalance != maxInt64 || rep.Rows[1].ClosingBalance != maxInt64 {
					t.Fatalf("got %v, %+v; want both rows closing at %d", err, rep, int64(maxInt64))
				}
				return
			}
			var oe *OverflowError
			if !errors.As(err, &oe) || !strings.Contains(oe.Figure, tc.want) {
				t.Fatalf("got %v (report %+v), want an overflow error naming %s", err, rep, tc.want)
			}
		})
	}
}

// A destination without a manifest (a mistyped --export path, an export that
// never ran) once read as an empty ledger: the report "tied out" over
// nothing, and opening it created the mistyped directory. Readers refuse it;
// the export itself still creates its directory.
func TestAReportFromADestinationWithoutAnExportIsRefused(t *testing.T) {
	missing := filepath.Join(t.TempDir(), "exprots") // typo of "exports"
	if _, err := OpenExport(testCtx(t), missing); !errors.Is(err, ErrNoExport) ||
		!strings.Contains(err.Error(), "no export at "+missing+": no manifest.json") {
		t.Errorf("open %s for reading: %v, want %v", missing, err, ErrNoExport)
	}
	if _, err := os.Stat(missing); !os.IsNotExist(err) {
		t.Errorf("opening %s for reading created it: %v", missing, err)
	}

	// An existing directory without a manifest, opened as a writer would.
	empty := t.TempDir()
	b := openDir(t, empty)
	if _, err := OpenExport(testCtx(t), empty); !errors.Is(err, ErrNoExport) {
		t.Errorf("open the empty %s for reading: %v, want %v", empty, err, ErrNoExport)
	}
	if rep, err := ReportFromExport(testCtx(t), b, "", day(0), day(30), nil); !errors.Is(err, ErrNoExport) {
		t.Errorf("report from a destination without an export: %+v, %v; want %v", rep, err, ErrNoExport)
	}
	if _, err := ScanExport(testCtx(t), b, "", func(*Movement) error { return nil }); !errors.Is(err, ErrNoExport) {
		t.Errorf("scan a destination without an export: %v, want %v", err, ErrNoExport)
	}

	// Writers create the directory, and once exported to, it reads.
	dest := filepath.Join(t.TempDir(), "exports")
	exportOnce(t, overflowingCut(), openDir(t, dest), Options{})
	r, err := OpenExport(testCtx(t), dest)
	if err != nil {
		t.Fatalf("open the export at %s for reading: %v", dest, err)
	}
	r.Close()
}
