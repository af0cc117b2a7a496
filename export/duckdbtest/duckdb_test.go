package duckdbtest

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	_ "github.com/duckdb/duckdb-go/v2"

	"github.com/creditd/creditd/export"
	"github.com/creditd/creditd/export/internal/ledgergen"
	"github.com/creditd/creditd/fsm"
)

// at9 formats integer units of scale s as DuckDB prints a DECIMAL(38,9).
func at9(units int64, s uint8) string {
	str := fsm.FormatUnits(units, s)
	if s == 0 {
		str += "."
	}
	return str + strings.Repeat("0", 9-int(s))
}

func money(micros int64) string { return fsm.FormatUnits(micros, fsm.MoneyScale) }

type fixture struct {
	t   *testing.T
	ctx context.Context
	gen *ledgergen.Gen
	dir string
	db  *sql.DB
}

func newFixture(t *testing.T) *fixture {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Minute)
	t.Cleanup(cancel)
	g, err := ledgergen.Open(filepath.Join(t.TempDir(), "state.db"), 42)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { g.Close() })
	db, err := sql.Open("duckdb", "")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { db.Close() })
	return &fixture{t: t, ctx: ctx, gen: g, dir: t.TempDir(), db: db}
}

func (f *fixture) export(opts export.Options) (export.Result, error) {
	b, err := export.OpenDestination(f.ctx, f.dir)
	if err != nil {
		f.t.Fatal(err)
	}
	defer b.Close()
	e, err := export.New(export.FromFSM(f.gen.F), b, opts)
	if err != nil {
		f.t.Fatal(err)
	}
	return e.Run(f.ctx)
}

// ledger is the table expression of every exported ledger file: what a
// warehouse globbing the destination loads.
func (f *fixture) ledger() string {
	return fmt.Sprintf("read_parquet('%s/ledger/*/*.parquet', hive_partitioning = false)", f.dir)
}

func (f *fixture) grants(seq uint64) string {
	return fmt.Sprintf("read_parquet('%s/grants/snapshot=%020d/grants.parquet')", f.dir, seq)
}

func (f *fixture) query(q string, args ...any) *sql.Rows {
	f.t.Helper()
	rows, err := f.db.QueryContext(f.ctx, q, args...)
	if err != nil {
		f.t.Fatalf("%v\n%s", err, q)
	}
	return rows
}

func (f *fixture) one(q string, dst ...any) {
	f.t.Helper()
	if err := f.db.QueryRowContext(f.ctx, q).Scan(dst...); err != nil {
		f.t.Fatalf("%v\n%s", err, q)
	}
}

// checkExactlyOnce: sequences 1..last, each once, across all files.
func (f *fixture) checkExactlyOnce(last uint64) {
	f.t.Helper()
	var n, distinct, lo, hi int64
	f.one(fmt.Sprintf("SELECT count(*), count(DISTINCT seq), min(seq), max(seq) FROM %s", f.ledger()), &n, &distinct, &lo, &hi)
	if n != int64(last) || distinct != n || lo != 1 || hi != int64(last) {
		f.t.Fatalf("DuckDB reads %d rows, %d distinct sequences, %d..%d; the ledger has 1..%d", n, distinct, lo, hi, last)
	}
}

func TestDuckDBReadsIncrementalExportsExactlyOnceAndTheyTieOut(t *testing.T) {
	f := newFixture(t)
	opts := export.Options{FileRows: 2000, RowGroupRows: 500}

	// Three runs with writes between them; the second is cut short after
	// its first part (a crash before the manifest) and completed by a rerun
	// after more writes.
	for run := range 3 {
		if err := f.gen.Run(1500, 25*time.Minute); err != nil {
			t.Fatal(err)
		}
		if run == 1 {
			crash := opts
			crash.AfterObject = func(string) error { return errors.New("simulated crash") }
			if _, err := f.export(crash); err == nil {
				t.Fatal("the crashing run succeeded")
			}
			if err := f.gen.Run(200, 25*time.Minute); err != nil {
				t.Fatal(err)
			}
		}
		if _, err := f.export(opts); err != nil {
			t.Fatalf("run %d: %v", run, err)
		}
		_, _, last, err := f.gen.Check()
		if err != nil {
			t.Fatal(err)
		}
		f.checkExactlyOnce(last)
	}
	pools, grants, last, err := f.gen.Check()
	if err != nil {
		t.Fatal(err)
	}

	t.Run("per-pool sums equal the state's balances", func(t *testing.T) {
		rows := f.query(fmt.Sprintf(`
			SELECT customer_id, credit_type_id, any_value(credit_scale)::INTEGER,
			       sum(amount)::VARCHAR, arg_max(balance_after, seq)::VARCHAR
			FROM %s GROUP BY ALL ORDER BY ALL`, f.ledger()))
		defer rows.Close()
		seen := 0
		for rows.Next() {
			var cust, ct, sum, lastBalance string
			var scale uint8
			if err := rows.Scan(&cust, &ct, &scale, &sum, &lastBalance); err != nil {
				t.Fatal(err)
			}
			want := at9(pools[[2]string{cust, ct}], scale)
			if sum != want || lastBalance != want {
				t.Errorf("pool %s/%s: Σ amount %s, last balance_after %s; state %s", cust, ct, sum, lastBalance, want)
			}
			seen++
		}
		if err := rows.Err(); err != nil {
			t.Fatal(err)
		}
		if seen != len(pools) {
			t.Errorf("DuckDB sees %d pools, the state %d", seen, len(pools))
		}
	})

	// What a loader of the folders does (Hive and Athena tables, Spark's
	// read.parquet(".../ledger")): every file under ledger/ and grants/ is
	// read as Parquet, the folders below as one partition key each. The
	// day lists are out of its way, under _lists/.
	t.Run("the ledger and grants folders load whole as partitioned tables", func(t *testing.T) {
		var n, distinct, days int64
		f.one(fmt.Sprintf("SELECT count(*), count(DISTINCT seq), count(DISTINCT date) FROM read_parquet('%s/ledger/**', hive_partitioning = true)", f.dir),
			&n, &distinct, &days)
		if n != int64(last) || distinct != n || days < 2 {
			t.Errorf("the ledger folder loads %d rows, %d distinct, of %d days; the ledger has %d entries over several days", n, distinct, days, last)
		}
		var snapshots, mislabelled int64
		f.one(fmt.Sprintf("SELECT count(DISTINCT snapshot), count(*) FILTER (snapshot::BIGINT <> snapshot_seq) FROM read_parquet('%s/grants/**', hive_partitioning = true)", f.dir),
			&snapshots, &mislabelled)
		if snapshots != 3 || mislabelled != 0 {
			t.Errorf("the grants folder loads %d snapshots (3 runs), %d rows in another snapshot's folder", snapshots, mislabelled)
		}
	})

	// What a loader that wants only committed data does (README, Layout),
	// with DuckDB's JSON reader: the manifest's closed days, each list
	// checked against its digest, then the open day's parts.
	t.Run("the manifest and its day lists name exactly the committed ledger", func(t *testing.T) {
		json := func(key string) string { return fmt.Sprintf("read_json('%s')", filepath.Join(f.dir, key)) }
		var lists, parts []string
		rows := f.query(fmt.Sprintf("SELECT d.key, d.sha256 FROM (SELECT unnest(ledger_days) AS d FROM %s)", json(export.ManifestKey)))
		for rows.Next() {
			var key, sum, got string
			if err := rows.Scan(&key, &sum); err != nil {
				t.Fatal(err)
			}
			if !strings.HasPrefix(key, "_lists/ledger/") {
				t.Errorf("the list %s is not under _lists/ledger/", key)
			}
			f.one(fmt.Sprintf("SELECT sha256(content) FROM read_text('%s')", filepath.Join(f.dir, key)), &got)
			if got != sum {
				t.Errorf("%s has SHA-256 %s, the manifest says %s", key, got, sum)
			}
			lists = append(lists, key)
		}
		if err := rows.Err(); err != nil {
			t.Fatal(err)
		}
		rows.Close()
		if len(lists) == 0 {
			t.Fatal("no closed day in the manifest: the test covers nothing")
		}
		for _, key := range append(lists, export.ManifestKey) {
			rows := f.query(fmt.Sprintf("SELECT p.key FROM (SELECT unnest(ledger_parts) AS p FROM %s)", json(key)))
			for rows.Next() {
				var part string
				if err := rows.Scan(&part); err != nil {
					t.Fatal(err)
				}
				parts = append(parts, "'"+filepath.Join(f.dir, part)+"'")
			}
			if err := rows.Err(); err != nil {
				t.Fatal(err)
			}
			rows.Close()
		}
		var n, distinct, lo, hi int64
		f.one(fmt.Sprintf("SELECT count(*), count(DISTINCT seq), min(seq), max(seq) FROM read_parquet([%s])", strings.Join(parts, ", ")), &n, &distinct, &lo, &hi)
		if n != int64(last) || distinct != n || lo != 1 || hi != int64(last) {
			t.Errorf("the %d parts the manifest names hold %d rows, %d distinct, %d..%d; the ledger has 1..%d", len(parts), n, distinct, lo, hi, last)
		}
	})

	t.Run("every grant's remaining and deferred revenue follow from its entries", func(t *testing.T) {
		var grantsRows, mismatches int64
		f.one(fmt.Sprintf(`
			WITH l AS (SELECT grant_id, sum(amount - repaid) AS remaining, sum(money_amount) AS deferred
			           FROM %s WHERE grant_id IS NOT NULL GROUP BY grant_id)
			SELECT count(*), count(*) FILTER (l.grant_id IS NULL OR l.remaining <> g.remaining OR l.deferred <> g.deferred_revenue)
			FROM %s g LEFT JOIN l USING (grant_id)`, f.ledger(), f.grants(last)), &grantsRows, &mismatches)
		if grantsRows != int64(len(grants)) || mismatches != 0 {
			t.Errorf("grants snapshot: %d rows (state %d), %d disagree with the ledger", grantsRows, len(grants), mismatches)
		}
	})

	// The reconciliation in SQL, per credit type and currency, over a
	// period and over everything; it must equal creditd's report figure
	// for figure and satisfy both identities exactly.
	for _, p := range []struct {
		name     string
		from, to time.Time
	}{
		{"over the second day", ledgergen.Start.Time().AddDate(0, 0, 1), ledgergen.Start.Time().AddDate(0, 0, 2)},
		{"over everything", ledgergen.Start.Time().AddDate(-1, 0, 0), ledgergen.Start.Time().AddDate(1, 0, 0)},
	} {
		t.Run("reconciliation "+p.name, func(t *testing.T) {
			rep, err := export.ReportFromSource(f.ctx, export.FromFSM(f.gen.F), p.from, p.to, nil)
			if err != nil {
				t.Fatal(err)
			}
			want := map[[2]string][]string{}
			for _, r := range rep.Rows {
				var figs []string
				for _, v := range []int64{r.OpeningBalance, r.GrantedPaid, r.GrantedPromotional, r.Burned, r.Expired, r.Revoked, r.Adjusted, r.OverdraftRepaid, r.ClosingBalance} {
					figs = append(figs, at9(v, r.Scale))
				}
				for _, v := range []int64{r.OpeningDeferred, r.DeferredGranted, r.Recognized, r.Breakage, r.Refunded, r.AdjustedMoney, r.ClosingDeferred} {
					figs = append(figs, money(v))
				}
				want[[2]string{r.CreditTypeID, r.Currency}] = figs
			}
			rows := f.query(fmt.Sprintf(reconcileSQL, f.ledger()), p.from, p.to)
			defer rows.Close()
			seen := 0
			for rows.Next() {
				var ct, cur string
				figs := make([]string, 16)
				var credOK, moneyOK bool
				dst := []any{&ct, &cur}
				for i := range figs {
					dst = append(dst, &figs[i])
				}
				dst = append(dst, &credOK, &moneyOK)
				if err := rows.Scan(dst...); err != nil {
					t.Fatal(err)
				}
				if !credOK || !moneyOK {
					t.Errorf("%s/%s: identity broken in SQL (credits %v, money %v): %v", ct, cur, credOK, moneyOK, figs)
				}
				if w := want[[2]string{ct, cur}]; strings.Join(w, " ") != strings.Join(figs, " ") {
					t.Errorf("%s/%s:\n DuckDB  %v\n creditd %v", ct, cur, figs, w)
				}
				seen++
			}
			if err := rows.Err(); err != nil {
				t.Fatal(err)
			}
			if seen != len(want) || seen == 0 {
				t.Errorf("DuckDB has %d rows, creditd's report %d", seen, len(want))
			}

			// The report's own Parquet form reads back the same.
			path := filepath.Join(t.TempDir(), "report.parquet")
			out, err := os.Create(path)
			if err != nil {
				t.Fatal(err)
			}
			if err := rep.WriteParquet(out); err != nil {
				t.Fatal(err)
			}
			if err := out.Close(); err != nil {
				t.Fatal(err)
			}
			rows2 := f.query(fmt.Sprintf(`SELECT credit_type_id, coalesce(currency, ''), closing_balance::VARCHAR, closing_deferred::VARCHAR
				FROM read_parquet('%s') ORDER BY ALL`, path))
			defer rows2.Close()
			n := 0
			for rows2.Next() {
				var ct, cur, closing, deferred string
				if err := rows2.Scan(&ct, &cur, &closing, &deferred); err != nil {
					t.Fatal(err)
				}
				if w := want[[2]string{ct, cur}]; w == nil || w[8] != closing || w[15] != deferred {
					t.Errorf("report.parquet %s/%s: closing %s, deferred %s; want %v", ct, cur, closing, deferred, w)
				}
				n++
			}
			if n != len(want) {
				t.Errorf("report.parquet has %d rows, want %d", n, len(want))
			}
		})
	}
}

// reconcileSQL computes the report from the ledger files alone. A repay
// moves credits from its grant's row to the row without currency (where the
// overdraft lives), so it appears twice in `moves`. $1 and $2 bound the
// period [from, to).
const reconcileSQL = `
WITH l AS (SELECT *, coalesce(currency, '') AS cur FROM %s),
moves AS (
	SELECT credit_type_id, cur, time, kind, grant_category, amount - repaid AS credits, money_amount AS money FROM l
	UNION ALL
	SELECT credit_type_id, '', time, 'repaid_in', NULL, repaid, 0 FROM l WHERE kind = 'repay'
),
r AS (
	SELECT credit_type_id, cur,
		coalesce(sum(credits) FILTER (time < $1), 0) AS opening,
		coalesce(sum(credits) FILTER (time >= $1 AND time < $2 AND kind = 'grant' AND grant_category = 'paid'), 0) AS granted_paid,
		coalesce(sum(credits) FILTER (time >= $1 AND time < $2 AND kind = 'grant' AND grant_category = 'promotional'), 0) AS granted_promo,
		coalesce(-sum(credits) FILTER (time >= $1 AND time < $2 AND kind = 'burn'), 0) AS burned,
		coalesce(-sum(credits) FILTER (time >= $1 AND time < $2 AND kind = 'expire'), 0) AS expired,
		coalesce(-sum(credits) FILTER (time >= $1 AND time < $2 AND kind = 'revoke'), 0) AS revoked,
		coalesce(sum(credits) FILTER (time >= $1 AND time < $2 AND kind = 'adjust'), 0) AS adjusted,
		coalesce(sum(credits) FILTER (time >= $1 AND time < $2 AND kind IN ('repay', 'repaid_in')), 0) AS repaid,
		coalesce(sum(credits) FILTER (time < $2), 0) AS closing,
		coalesce(sum(money) FILTER (time < $1), 0) AS opening_deferred,
		coalesce(sum(money) FILTER (time >= $1 AND time < $2 AND kind = 'grant'), 0) AS deferred_granted,
		coalesce(-sum(money) FILTER (time >= $1 AND time < $2 AND kind IN ('burn', 'repay')), 0) AS recognized,
		coalesce(-sum(money) FILTER (time >= $1 AND time < $2 AND kind = 'expire'), 0) AS breakage,
		coalesce(-sum(money) FILTER (time >= $1 AND time < $2 AND kind = 'revoke'), 0) AS refunded,
		coalesce(sum(money) FILTER (time >= $1 AND time < $2 AND kind = 'adjust'), 0) AS adjusted_money,
		coalesce(sum(money) FILTER (time < $2), 0) AS closing_deferred
	FROM moves GROUP BY ALL
)
SELECT credit_type_id, cur,
	opening::DECIMAL(38,9)::VARCHAR, granted_paid::DECIMAL(38,9)::VARCHAR, granted_promo::DECIMAL(38,9)::VARCHAR,
	burned::DECIMAL(38,9)::VARCHAR, expired::DECIMAL(38,9)::VARCHAR, revoked::DECIMAL(38,9)::VARCHAR,
	adjusted::DECIMAL(38,9)::VARCHAR, repaid::DECIMAL(38,9)::VARCHAR, closing::DECIMAL(38,9)::VARCHAR,
	opening_deferred::DECIMAL(38,6)::VARCHAR, deferred_granted::DECIMAL(38,6)::VARCHAR, recognized::DECIMAL(38,6)::VARCHAR,
	breakage::DECIMAL(38,6)::VARCHAR, refunded::DECIMAL(38,6)::VARCHAR, adjusted_money::DECIMAL(38,6)::VARCHAR,
	closing_deferred::DECIMAL(38,6)::VARCHAR,
	opening + granted_paid + granted_promo - burned - expired - revoked + adjusted + repaid = closing,
	opening_deferred + deferred_granted - recognized - breakage - refunded + adjusted_money = closing_deferred
FROM r ORDER BY ALL`
