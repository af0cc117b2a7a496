package export

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/parquet-go/parquet-go"

	"github.com/creditd/creditd/export/internal/ledgergen"
	"github.com/creditd/creditd/fsm"
)

func TestExportHoldsEveryEntryOnceAndTiesToThePools(t *testing.T) {
	g := newGen(t, 1)
	run(t, g, 3000, 30*time.Minute) // ≈ 30 hours of log time: several dates
	pools, grants, last, err := g.Check()
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	b := openDir(t, dir)
	res := exportOnce(t, FromFSM(g.F), b, smallFiles())
	if res.ToSeq != last || res.Entries != int64(last) || len(res.Parts) < 3 {
		t.Fatalf("exported %d..%d (%d entries, %d parts), ledger ends at %d", res.FromSeq, res.ToSeq, res.Entries, len(res.Parts), last)
	}
	checkManifestMatchesFiles(t, dir, b, last)
	rows := ledgerRows(t, dir)
	checkExactlyOnce(t, rows, last)

	sums := map[[2]string]int64{}
	kinds := map[string]int{}
	for _, r := range rows {
		k := [2]string{r.customer, r.ct}
		sums[k] += unitsAt(t, r.amount, r.scale)
		if got := unitsAt(t, r.balanceAfter, r.scale); got != sums[k] {
			t.Fatalf("entry %d: balance_after %d, running sum %d", r.seq, got, sums[k])
		}
		date := time.UnixMicro(r.timeMicros).UTC().Format(time.DateOnly)
		if !strings.HasPrefix(r.file, "ledger/date="+date+"/") {
			t.Fatalf("entry %d of %s is in %s", r.seq, date, r.file)
		}
		kinds[r.kind]++
	}
	for k, bal := range pools {
		if sums[k] != bal {
			t.Errorf("pool %v: Σ amount in the export %d, fsm balance %d", k, sums[k], bal)
		}
	}
	for _, kind := range []string{"grant", "burn", "expire", "revoke", "adjust", "repay"} {
		if kinds[kind] == 0 {
			t.Errorf("the generated ledger has no %s entry; the test would not cover it", kind)
		}
	}

	// The grants snapshot holds every grant as the state does.
	snaps := readFiles(t, dir, "grants")
	if len(snaps) != 1 {
		t.Fatalf("%d grants snapshots, want 1", len(snaps))
	}
	c := func(n string) int { return colIndex(GrantColumns, n) }
	for _, rs := range snaps {
		if len(rs) != len(grants) {
			t.Fatalf("snapshot has %d grants, fsm %d", len(rs), len(grants))
		}
		for i, r := range rs {
			want := grants[i]
			scale := int64(r[c("credit_scale")].Int32())
			if id := string(r[c("grant_id")].ByteArray()); id != want.ID {
				t.Fatalf("row %d is grant %s, want %s", i, id, want.ID)
			}
			if got := unitsAt(t, decimal(r[c("remaining")].ByteArray()), scale); got != want.Remaining {
				t.Errorf("grant %s remaining %d, fsm %d", want.ID, got, want.Remaining)
			}
			if got := decimal(r[c("deferred_revenue")].ByteArray()).Int64(); got != want.DeferredMicros {
				t.Errorf("grant %s deferred %d, fsm %d", want.ID, got, want.DeferredMicros)
			}
			if got := string(r[c("status")].ByteArray()); got != statusName(want.Status) {
				t.Errorf("grant %s status %s, fsm %s", want.ID, got, statusName(want.Status))
			}
			if got := r[c("snapshot_seq")].Int64(); got != int64(last) {
				t.Errorf("snapshot_seq %d, want %d", got, last)
			}
		}
	}
}

func TestIncrementalExportsWriteEachEntryExactlyOnce(t *testing.T) {
	g := newGen(t, 2)
	dir := t.TempDir()
	b := openDir(t, dir)
	var prev uint64
	for i := range 3 {
		run(t, g, 800, 20*time.Minute)
		_, _, last, err := g.Check()
		if err != nil {
			t.Fatal(err)
		}
		res := exportOnce(t, FromFSM(g.F), b, smallFiles())
		if res.FromSeq != prev+1 || res.ToSeq != last {
			t.Fatalf("run %d exported %d..%d, want %d..%d", i, res.FromSeq, res.ToSeq, prev+1, last)
		}
		prev = last
		checkManifestMatchesFiles(t, dir, b, last)
		checkExactlyOnce(t, ledgerRows(t, dir), last)
	}
	// Nothing new: nothing written, not even a grants snapshot.
	res := exportOnce(t, FromFSM(g.F), b, smallFiles())
	if res.Entries != 0 || len(res.Parts) != 0 || res.Grants != nil {
		t.Fatalf("a run with nothing new wrote %+v", res)
	}
	m := checkManifestMatchesFiles(t, dir, b, prev)
	if len(m.GrantSnapshots) != 3 {
		t.Errorf("%d grants snapshots, want 3", len(m.GrantSnapshots))
	}
}

var errCrash = errors.New("simulated crash")

func TestAFailedRunLeavesNoDuplicateAndTheNextCompletesIt(t *testing.T) {
	for _, tc := range []struct {
		name    string
		failAt  int  // fail after storing this many objects
		writeIn bool // new writes between the crash and the rerun
	}{
		{"after the first part, rerun at the same cut", 1, false},
		{"after the third part, with writes before the rerun", 3, true},
		{"after the grants snapshot, before the manifest", 1 << 30, true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			g := newGen(t, 3)
			dir := t.TempDir()
			b := openDir(t, dir)
			run(t, g, 500, 20*time.Minute)
			exportOnce(t, FromFSM(g.F), b, smallFiles())
			_, _, w, _ := g.Check()
			run(t, g, 1500, 20*time.Minute)

			opts := smallFiles()
			stored := 0
			opts.AfterObject = func(key string) error {
				stored++
				if stored == tc.failAt || (tc.failAt > 100 && strings.HasPrefix(key, "grants/")) {
					return errCrash
				}
				return nil
			}
			e, err := New(FromFSM(g.F), b, opts)
			if err != nil {
				t.Fatal(err)
			}
			if _, err := e.Run(testCtx(t)); !errors.Is(err, errCrash) {
				t.Fatalf("run: %v, want the simulated crash", err)
			}
			// The crash left complete parts past the watermark, and the
			// manifest where it was.
			m, err := ReadManifest(testCtx(t), b)
			if err != nil || m.WatermarkSeq != w {
				t.Fatalf("manifest after the crash: %+v, %v; want watermark %d", m, err, w)
			}
			if tc.writeIn {
				run(t, g, 300, 20*time.Minute)
			}
			_, _, last, _ := g.Check()
			res := exportOnce(t, FromFSM(g.F), b, smallFiles())
			if len(res.Removed) == 0 {
				t.Errorf("the rerun removed nothing; the crash should have left objects")
			}
			checkManifestMatchesFiles(t, dir, b, last)
			checkExactlyOnce(t, ledgerRows(t, dir), last)
		})
	}
}

// The helper process: exports the state given in the environment, reporting
// each stored object on stdout, and hangs after the second until killed.
func TestHelperProcessExport(t *testing.T) {
	state, dest := os.Getenv("CREDITD_EXPORT_HELPER_STATE"), os.Getenv("CREDITD_EXPORT_HELPER_DEST")
	if state == "" {
		t.Skip("helper process for TestKilledExportLeavesNoDuplicateOrGap")
	}
	f, err := fsm.Open(state, fsm.Options{NoSync: true})
	if err != nil {
		t.Fatal(err)
	}
	b := openDir(t, dest)
	opts := smallFiles()
	n := 0
	hang := make(chan struct{}) // never closed: the parent kills this process
	opts.AfterObject = func(key string) error {
		fmt.Printf("stored %s\n", key)
		if n++; n == 2 {
			<-hang
		}
		return nil
	}
	e, _ := New(FromFSM(f), b, opts)
	e.Run(testCtx(t))
}

func TestKilledExportLeavesNoDuplicateOrGap(t *testing.T) {
	if testing.Short() {
		t.Skip("starts a process")
	}
	statePath := filepath.Join(t.TempDir(), "state.db")
	dir := t.TempDir()
	g, err := ledgergen.Open(statePath, 4)
	if err != nil {
		t.Fatal(err)
	}
	run(t, g, 2000, 20*time.Minute)
	g.Close() // the child takes the state file's lock

	cmd := exec.Command(os.Args[0], "-test.run=^TestHelperProcessExport$", "-test.v")
	cmd.Env = append(os.Environ(), "CREDITD_EXPORT_HELPER_STATE="+statePath, "CREDITD_EXPORT_HELPER_DEST="+dir)
	out, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	sc := bufio.NewScanner(out)
	stored := 0
	for stored < 2 && sc.Scan() {
		if strings.HasPrefix(sc.Text(), "stored ") {
			stored++
		}
	}
	if stored < 2 {
		cmd.Process.Kill()
		cmd.Wait()
		t.Fatalf("the helper stored %d objects before exiting", stored)
	}
	if err := cmd.Process.Kill(); err != nil {
		t.Fatal(err)
	}
	cmd.Wait()
	if _, err := os.Stat(filepath.Join(dir, ManifestKey)); !os.IsNotExist(err) {
		t.Fatalf("a manifest exists after the kill: %v", err)
	}

	g, err = ledgergen.Open(statePath, 5)
	if err != nil {
		t.Fatal(err)
	}
	defer g.Close()
	run(t, g, 300, 20*time.Minute)
	_, _, last, _ := g.Check()
	b := openDir(t, dir)
	res := exportOnce(t, FromFSM(g.F), b, smallFiles())
	if len(res.Removed) < 2 {
		t.Errorf("the rerun removed %v; the killed run left 2 parts", res.Removed)
	}
	checkManifestMatchesFiles(t, dir, b, last)
	checkExactlyOnce(t, ledgerRows(t, dir), last)
}

func TestReplicasThatAppliedTheSameLogExportTheSameBytes(t *testing.T) {
	a, b := newGen(t, 6), newGen(t, 6)
	run(t, a, 1500, 30*time.Minute)
	run(t, b, 1500, 30*time.Minute)
	da, db := t.TempDir(), t.TempDir()
	exportOnce(t, FromFSM(a.F), openDir(t, da), smallFiles())
	exportOnce(t, FromFSM(b.F), openDir(t, db), smallFiles())
	files := 0
	err := filepath.WalkDir(da, func(path string, d os.DirEntry, err error) error {
		if err != nil || d.IsDir() {
			return err
		}
		rel, _ := filepath.Rel(da, path)
		x, _ := os.ReadFile(path)
		y, err := os.ReadFile(filepath.Join(db, rel))
		if err != nil {
			return err
		}
		if !bytes.Equal(x, y) {
			t.Errorf("%s differs between the replicas", rel)
		}
		files++
		return nil
	})
	if err != nil || files < 4 {
		t.Fatalf("compared %d files: %v", files, err)
	}
}

// Two replicas whose ledgers are the same (same entries, same last one)
// but whose states are not: one has applied a later Tick that activated a
// pending grant, a change that writes no ledger entry. A snapshot cannot be
// cut at an older applied index (the state file holds only the current
// state), so each is its replica's state at its cut: the ledger parts are
// the same bytes, and every grant's amounts agree with the ledger up to
// snapshot_seq on both, but the activated grant's status and updated_at
// are those of the later Tick on one replica only.
func TestReplicasWithTheSameLedgerWriteTheSamePartsAndSnapshotAmounts(t *testing.T) {
	var fs [2]*fsm.FSM
	t0 := ledgergen.Start
	hour := fsm.Timestamp(time.Hour.Microseconds())
	for i := range fs {
		f, err := fsm.Open(filepath.Join(t.TempDir(), "state.db"), fsm.Options{NoSync: true})
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { f.Close() })
		apply(t, f, t0, fsm.CreateCreditType{ID: "ai", Name: "ai", Scale: 2}, fsm.UpsertCustomer{ID: "acme", Name: "acme"})
		apply(t, f, t0+1, fsm.CreateGrant{ID: "g-now", CustomerID: "acme", CreditTypeID: "ai", Category: fsm.Promotional, Amount: 100, SourceKind: fsm.SourceManual},
			fsm.CreateGrant{ID: "g-later", CustomerID: "acme", CreditTypeID: "ai", Category: fsm.Promotional, Amount: 100, SourceKind: fsm.SourceManual, EffectiveAt: t0 + hour})
		fs[i] = f
	}
	// Replica 1 applies the next log entry: a Tick that activates g-later.
	apply(t, fs[1], t0+2*hour, fsm.Tick{})
	if fs[0].LastSeq() != fs[1].LastSeq() {
		t.Fatalf("the Tick wrote ledger entries (%d vs %d): the test needs the ledgers equal", fs[0].LastSeq(), fs[1].LastSeq())
	}
	var dirs [2]string
	for i, f := range fs {
		dirs[i] = t.TempDir()
		exportOnce(t, FromFSM(f), openDir(t, dirs[i]), Options{})
	}

	parts := [2]map[string][]byte{}
	for i, dir := range dirs {
		parts[i] = map[string][]byte{}
		for k, data := range treeFiles(t, dir) {
			if strings.HasPrefix(k, ledgerPrefix) {
				parts[i][k] = data
			}
		}
	}
	if len(parts[0]) == 0 {
		t.Fatal("no ledger part: the test covers nothing")
	}
	sameTrees(t, "ledger parts of the replicas", parts[0], parts[1])

	snaps := [2]map[string][]parquet.Row{readFiles(t, dirs[0], "grants"), readFiles(t, dirs[1], "grants")}
	key := grantsKey(fs[0].LastSeq())
	a, b := snaps[0][key], snaps[1][key]
	if len(snaps[0]) != 1 || len(snaps[1]) != 1 || len(a) != 2 || len(b) != 2 {
		t.Fatalf("snapshots %d and %d, %s of %d and %d rows; want one of both grants on each replica", len(snaps[0]), len(snaps[1]), key, len(a), len(b))
	}
	mayDiffer := map[string]bool{"status": true, "updated_at": true}
	var differ []string
	for i := range a {
		grant := string(a[i][colIndex(GrantColumns, "grant_id")].ByteArray())
		for j, col := range GrantColumns {
			if parquet.Equal(a[i][j], b[i][j]) {
				continue
			}
			if !mayDiffer[col.Name] {
				t.Errorf("grant %s: %s is %v on one replica, %v on the other", grant, col.Name, a[i][j], b[i][j])
			}
			differ = append(differ, grant+"."+col.Name)
		}
	}
	// What the Tick changed, and nothing else. Should it ever stop
	// differing, README's promise on snapshots can say more.
	if want := []string{"g-later.status", "g-later.updated_at"}; !slices.Equal(differ, want) {
		t.Errorf("the snapshots differ in %v; want %v", differ, want)
	}
}

func TestReplicaBehindTheWatermarkRefusesToExport(t *testing.T) {
	ahead, behind := newGen(t, 7), newGen(t, 7)
	run(t, ahead, 600, time.Minute)
	run(t, behind, 300, time.Minute)
	b := openDir(t, t.TempDir())
	exportOnce(t, FromFSM(ahead.F), b, Options{})
	e, _ := New(FromFSM(behind.F), b, Options{})
	_, err := e.Run(testCtx(t))
	if !errors.Is(err, ErrBehind) {
		t.Fatalf("export from a lagging replica: %v, want ErrBehind", err)
	}
	// From here a lagging replica and another ledger's longer export look
	// the same; the error says both.
	if !strings.Contains(err.Error(), "another, longer ledger's export") {
		t.Fatalf("ErrBehind does not mention another ledger's export: %v", err)
	}
}

func TestOptionsOutOfRangeAreRefused(t *testing.T) {
	b := openDir(t, t.TempDir())
	for _, o := range []Options{{RowGroupRows: -1}, {FileRows: MaxFileRows + 1}, {BatchRows: -5},
		{KeepGrantSnapshots: -1}, {KeepGrantSnapshots: MaxKeepGrantSnapshots + 1}} {
		if _, err := New(&memCut{}, b, o); err == nil {
			t.Errorf("New accepted %+v", o)
		}
	}
}

func TestProgressIsPrintedOnlyWhereAsked(t *testing.T) {
	g := newGen(t, 8)
	run(t, g, 300, time.Minute)
	var out bytes.Buffer
	opts := Options{Progress: &out}
	exportOnce(t, FromFSM(g.F), openDir(t, t.TempDir()), opts)
	_, _, last, _ := g.Check()
	if want := fmt.Sprintf("export: %d/%d entries (100%%)", last, last); !strings.Contains(out.String(), want) {
		t.Errorf("progress %q lacks %q", out.String(), want)
	}
}

// An interval of 0 (a caller's zero value) runs hourly instead of panicking
// in time.NewTicker: the first run happens at once.
func TestEveryWithoutAnIntervalRunsAtOnceAndDoesNotPanic(t *testing.T) {
	g := newGen(t, 3)
	run(t, g, 20, time.Minute)
	b := openDir(t, t.TempDir())
	e, err := New(FromFSM(g.F), b, Options{})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(testCtx(t))
	defer cancel()
	done := make(chan any, 1)
	go func() {
		defer func() { done <- recover() }()
		e.Every(0)(ctx)
	}()
	_, _, last, _ := g.Check()
	deadline := time.Now().Add(time.Minute)
	for {
		select {
		case p := <-done:
			t.Fatalf("Every(0) ended before it was cancelled (panic: %v)", p)
		default:
		}
		if m, err := ReadManifest(testCtx(t), b); err == nil && m.WatermarkSeq == last {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("Every(0) did not export at once")
		}
		time.Sleep(10 * time.Millisecond)
	}
	cancel()
	if p := <-done; p != nil {
		t.Fatalf("Every(0) panicked: %v", p)
	}
}

func TestEveryKeepsTheDestinationCaughtUpUntilCancelled(t *testing.T) {
	g := newGen(t, 12)
	run(t, g, 200, time.Minute)
	b := openDir(t, t.TempDir())
	e, err := New(FromFSM(g.F), b, Options{})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(testCtx(t))
	stopped := make(chan struct{})
	go func() {
		defer close(stopped)
		e.Every(20 * time.Millisecond)(ctx)
	}()
	awaitWatermark := func() {
		t.Helper()
		_, _, last, _ := g.Check()
		deadline := time.Now().Add(time.Minute)
		for {
			m, err := ReadManifest(testCtx(t), b)
			if err == nil && m.WatermarkSeq == last {
				return
			}
			if time.Now().After(deadline) {
				t.Fatalf("the scheduled export did not reach entry %d: %+v, %v", last, m, err)
			}
			time.Sleep(10 * time.Millisecond)
		}
	}
	awaitWatermark()
	run(t, g, 200, time.Minute) // written while the loop runs
	awaitWatermark()
	cancel()
	<-stopped
}

func TestADestinationOfAnotherLedgerIsRefused(t *testing.T) {
	mine, other := newGen(t, 13), newGen(t, 14)
	run(t, mine, 300, time.Minute)
	run(t, other, 600, time.Minute)
	b := openDir(t, t.TempDir())
	exportOnce(t, FromFSM(mine.F), b, Options{})
	e, _ := New(FromFSM(other.F), b, Options{})
	if _, err := e.Run(testCtx(t)); !errors.Is(err, ErrForeignDestination) {
		t.Fatalf("export of another ledger onto this destination: %v, want ErrForeignDestination", err)
	}
}

func TestOldGrantSnapshotsGoPastRetention(t *testing.T) {
	g := newGen(t, 15)
	dir := t.TempDir()
	b := openDir(t, dir)
	var last uint64
	for range 4 {
		run(t, g, 200, time.Minute)
		exportOnce(t, FromFSM(g.F), b, Options{KeepGrantSnapshots: 2})
		_, _, last, _ = g.Check()
	}
	m := checkManifestMatchesFiles(t, dir, b, last)
	if len(m.GrantSnapshots) != 2 || m.GrantSnapshots[1].Seq != last {
		t.Fatalf("snapshots %+v, want the 2 newest ending at %d", m.GrantSnapshots, last)
	}
	checkExactlyOnce(t, ledgerRows(t, dir), last)
}

func TestExtremeValuesSurviveTheRoundTrip(t *testing.T) {
	const maxUnits = fsm.MaxAmount
	ts := fsm.TimestampOf(time.Date(2026, 12, 31, 23, 59, 59, 999999000, time.UTC))
	cut := &memCut{
		types: map[string]fsm.CreditType{"whole": {ID: "whole", Scale: 0}, "fine": {ID: "fine", Scale: fsm.MaxCreditScale}},
		grants: []fsm.Grant{
			{ID: "g-fine", CustomerID: "c", CreditTypeID: "fine", Category: fsm.Paid, Amount: maxUnits, Remaining: maxUnits,
				CostBasis: fsm.Decimal{Coef: 999_999_999_999, Scale: 12}, Currency: "JPY", SourceKind: fsm.SourceInvoice, SourceRef: "in_1"},
			{ID: "g-whole", CustomerID: "c", CreditTypeID: "whole", Category: fsm.Promotional, Amount: maxUnits, Remaining: maxUnits},
		},
	}
	cut.entries = []fsm.LedgerEntry{
		{Seq: 1, Time: ts, CustomerID: "c", CreditTypeID: "fine", GrantID: "g-fine", Kind: fsm.EntryGrant, Amount: maxUnits,
			BalanceAfter: maxUnits, CostBasis: fsm.Decimal{Coef: 999_999_999_999, Scale: 12}, Currency: "JPY",
			MoneyMicros: 1<<63 - 1, CauseKind: fsm.CauseGrant, CauseID: "g-fine", SourceKind: fsm.SourceInvoice, SourceRef: "in_1"},
		{Seq: 2, Time: ts, CustomerID: "c", CreditTypeID: "whole", GrantID: "g-whole", Kind: fsm.EntryGrant, Amount: maxUnits,
			BalanceAfter: maxUnits, CauseKind: fsm.CauseGrant, CauseID: "g-whole"},
		{Seq: 3, Time: ts + 1, CustomerID: "c", CreditTypeID: "whole", Kind: fsm.EntryBurn, Amount: -maxUnits,
			BalanceAfter: -maxUnits, CauseKind: fsm.CauseUsage, CauseID: "ev", Reason: "overdraft"},
		{Seq: 4, Time: ts + 2, CustomerID: "c", CreditTypeID: "fine", GrantID: "g-fine", Kind: fsm.EntryRepay, Repaid: 1,
			BalanceAfter: maxUnits, CostBasis: fsm.Decimal{Coef: 999_999_999_999, Scale: 12}, Currency: "JPY",
			MoneyMicros: -1 << 63, CauseKind: fsm.CauseGrant, CauseID: "g-fine", SourceKind: fsm.SourceInvoice, SourceRef: "in_1"},
	}
	b := openDir(t, t.TempDir())
	exportOnce(t, cut, b, Options{})
	var got []fsm.LedgerEntry
	if _, err := ScanExport(testCtx(t), b, "", func(m *Movement) error {
		got = append(got, m.LedgerEntry)
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	if len(got) != len(cut.entries) {
		t.Fatalf("read back %d entries of %d", len(got), len(cut.entries))
	}
	for i, want := range cut.entries {
		g := got[i]
		// Cost bases come back at their smallest scale; compare values.
		if g.CostBasis.Cmp(want.CostBasis) != 0 {
			t.Errorf("entry %d: cost basis %s, want %s", want.Seq, g.CostBasis, want.CostBasis)
		}
		g.CostBasis = want.CostBasis
		if g != want {
			t.Errorf("entry %d:\n got  %+v\n want %+v", want.Seq, g, want)
		}
	}
}

// A run killed while committing leaves fileblob's temporary file of the
// manifest ("manifest.json.<hex>.tmp") at the root; the next run's sweep
// removes it, as it does the parts', and leaves every other object there.
func TestSweepRemovesTheManifestsTemporaryFileOfAKilledRun(t *testing.T) {
	g := newGen(t, 21)
	run(t, g, 100, time.Minute)
	dir := t.TempDir()
	b := openDir(t, dir)
	exportOnce(t, FromFSM(g.F), b, Options{})
	// What fileblob (NoTempDir) leaves when killed inside the manifest's
	// WriteAll and inside a part's upload, and objects that are not ours.
	manifestTmp := ManifestKey + ".18a2b3c4d5e6f708.tmp"
	partTmp := partKey("2026-03-01", 1000, 2000) + ".18a2b3c4d5e6f709.tmp"
	others := []string{ManifestKey + ".bak", ManifestKey + ".backup.tmp", "notes.tmp"}
	for _, k := range append([]string{manifestTmp, partTmp}, others...) {
		if err := os.MkdirAll(filepath.Dir(filepath.Join(dir, k)), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(filepath.Join(dir, k), []byte(`{"format": 1, "watermark_seq": 12`), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	run(t, g, 100, time.Minute)
	res := exportOnce(t, FromFSM(g.F), b, Options{})
	for _, k := range []string{manifestTmp, partTmp} {
		if !slices.Contains(res.Removed, k) {
			t.Errorf("the temporary file %s of a killed run was not removed (removed: %v)", k, res.Removed)
		}
		if _, err := os.Stat(filepath.Join(dir, k)); !os.IsNotExist(err) {
			t.Errorf("%s is still there: %v", k, err)
		}
	}
	for _, k := range others {
		if _, err := os.Stat(filepath.Join(dir, k)); err != nil {
			t.Errorf("%s, not an object of ours, was touched: %v", k, err)
		}
	}
}

// manifestOfSize returns a valid manifest whose encoding is exactly size
// bytes: one part 1..99999, then parts of one entry each, all of one day
// (the open day's parts stay in the manifest), as a day of runs a second
// would list. Parts of six-digit seqs encode to the same length but for the
// digits of their size in bytes, which take it to the byte.
func manifestOfSize(t *testing.T, size int) *Manifest {
	t.Helper()
	const date, first = "2026-03-01", 99_999
	m := &Manifest{Format: formatVersion, LogTime: date + "T00:00:00Z", LedgerDays: []Day{}, GrantSnapshotDays: []Day{}, GrantSnapshots: []Snapshot{},
		LedgerParts: []Part{{Key: partKey(date, 1, first), Date: date, FirstSeq: 1, LastSeq: first, Rows: first, Bytes: 1_000_000}}}
	encoded := func() int {
		data, err := encodeJSON(m)
		if err != nil {
			t.Fatal(err)
		}
		return len(data)
	}
	add := func(n int) {
		for range n {
			seq := m.LedgerParts[len(m.LedgerParts)-1].LastSeq + 1
			m.LedgerParts = append(m.LedgerParts, Part{Key: partKey(date, seq, seq), Date: date, FirstSeq: seq, LastSeq: seq, Rows: 1, Bytes: 1_000_000})
			m.WatermarkSeq = seq
		}
	}
	add(1)
	base := encoded()
	add(1)
	perPart := encoded() - base
	base += perPart
	add((size - base) / perPart)
	for i := range (size - base) % perPart {
		m.LedgerParts[i+1].Bytes *= 10 // one more digit
	}
	if got := encoded(); got != size {
		t.Fatalf("built a manifest of %d bytes, want %d", got, size)
	}
	return m
}

// The manifest gains a part at every run of the day still open (closed days
// move to day lists), and ReadManifest refuses one above maxManifestBytes. A run once committed the
// manifest that crossed the limit, and every later export and report failed
// on it for good. Whatever is committed reads back: a manifest at the limit
// commits, and the run that would take it past fails, saying what to do, and
// leaves it in place.
func TestEveryCommittedManifestCanBeReadBack(t *testing.T) {
	if testing.Short() {
		t.Skip("writes a 64 MiB manifest")
	}
	ctx := testCtx(t)
	b := openDir(t, t.TempDir())
	full := manifestOfSize(t, maxManifestBytes)
	if err := writeManifest(ctx, b, full); err != nil {
		t.Fatalf("commit a manifest of exactly the %d bytes a reader accepts: %v", maxManifestBytes, err)
	}
	w := full.WatermarkSeq

	// Ten new entries: the run reads that manifest, and its own would list
	// one more part and snapshot.
	ts := ledgergen.Start + 1
	cut := &memCut{types: map[string]fsm.CreditType{"ai": {ID: "ai", Scale: 2}},
		grants: []fsm.Grant{{ID: "g", CustomerID: "c", CreditTypeID: "ai", Category: fsm.Promotional, Amount: 100, Remaining: 91,
			Status: fsm.GrantActive, EffectiveAt: ts, CreatedAt: ts, UpdatedAt: ts}}}
	for i := range uint64(10) {
		kind, amount, bal := fsm.EntryBurn, int64(-1), int64(100-i)
		if i == 0 {
			kind, amount, bal = fsm.EntryGrant, 100, 100
		}
		cut.entries = append(cut.entries, fsm.LedgerEntry{Seq: w + 1 + i, Time: ts, CustomerID: "c", CreditTypeID: "ai", GrantID: "g",
			Kind: kind, Amount: amount, BalanceAfter: bal, CauseKind: fsm.CauseUsage, CauseID: fmt.Sprint("e", i)})
	}
	e, err := New(cut, b, Options{})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := e.Run(ctx); !errors.Is(err, ErrManifestTooLarge) || !strings.Contains(err.Error(), "export less often") {
		t.Fatalf("the run past the limit: %v; want %v saying what to do", err, ErrManifestTooLarge)
	}
	m, err := ReadManifest(ctx, b)
	if err != nil || m.WatermarkSeq != w {
		t.Fatalf("after the refused run: %v; want the last manifest, at watermark %d", err, w)
	}

	// The open day's runs filled it: the first run once the day is closed
	// moves the day's parts, the committed ones and its own, into the
	// day's list, and commits again.
	next := ledgergen.Start + fsm.Timestamp(25*time.Hour.Microseconds())
	for i := range uint64(5) {
		cut.entries = append(cut.entries, fsm.LedgerEntry{Seq: w + 11 + i, Time: next, CustomerID: "c", CreditTypeID: "ai", GrantID: "g",
			Kind: fsm.EntryBurn, Amount: -1, BalanceAfter: int64(90 - i), CauseKind: fsm.CauseUsage, CauseID: fmt.Sprint("f", i)})
	}
	cut.grants[0].Remaining = 86
	res, err := e.Run(ctx)
	if err != nil {
		t.Fatalf("the run that closes the day: %v", err)
	}
	root, err := b.ReadAll(ctx, ManifestKey)
	if err != nil {
		t.Fatal(err)
	}
	if m, err = ReadManifest(ctx, b); err != nil || m.WatermarkSeq != w+15 || len(res.ClosedDays) != 1 || len(m.LedgerParts) != 1 || len(root) > 1<<20 {
		t.Fatalf("after the run that closes the day: watermark %d, %d days closed, %d open parts, a manifest of %d bytes (%v)",
			m.WatermarkSeq, len(res.ClosedDays), len(m.LedgerParts), len(root), err)
	}
	parts := 0
	if err := m.EachLedgerPart(ctx, b, func(Part) error { parts++; return nil }); err != nil || parts != len(full.LedgerParts)+2 {
		t.Fatalf("%d parts read (%v), want the %d committed, the closed day's last and the open day's", parts, err, len(full.LedgerParts))
	}
}

// A scheduled run refused because another exporter committed meanwhile
// (ErrConcurrentExport) waited for the next tick, up to 168 h, although the
// next run simply goes on from the other's manifest. It is now tried again
// after 5 s, then 10, 20 and 40 s, at most 4 times, and then the schedule
// resumes; other failures wait for the schedule as before. The other
// exporter's commit is a rewrite of the manifest from the read barrier,
// which a run calls right after reading it; the loop's waits are recorded,
// not slept.
func TestAScheduledRunRefusedByAnotherExportersCommitIsTriedAgainSoon(t *testing.T) {
	const s = time.Second
	for _, tc := range []struct {
		name      string
		refusals  int   // runs whose manifest another exporter replaces
		barrier   error // what the read barrier fails with
		wantWaits []time.Duration
		wantRuns  int
		committed bool
	}{
		{"refused once: tried again after 5 s, and committed", 1, nil, []time.Duration{5 * s}, 2, true},
		{"refused every time: 4 more tries, then the schedule", 1000, nil, []time.Duration{5 * s, 10 * s, 20 * s, 40 * s}, 5, false},
		{"another failure waits for the schedule", 0, errors.New("no leader"), nil, 1, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			g := newGen(t, 16)
			run(t, g, 200, time.Minute)
			ctx, cancel := context.WithCancel(testCtx(t))
			defer cancel()
			b := openDir(t, t.TempDir())
			runs := 0
			opts := Options{Barrier: func(ctx context.Context) error {
				runs++
				if tc.barrier != nil {
					return tc.barrier
				}
				if runs > tc.refusals {
					return nil
				}
				data, err := b.ReadAll(ctx, ManifestKey)
				if err != nil {
					return writeManifest(ctx, b, &Manifest{Format: formatVersion})
				}
				return b.WriteAll(ctx, ManifestKey, append(data, '\n'), nil)
			}}
			e, err := New(FromFSM(g.F), b, opts)
			if err != nil {
				t.Fatal(err)
			}
			var waits []time.Duration
			scheduled := make(chan time.Duration, 1)
			e.wait = func(ctx context.Context, d time.Duration) bool {
				if d > concurrentRetryMax {
					scheduled <- d
					<-ctx.Done()
					return false
				}
				waits = append(waits, d)
				return true
			}
			done := make(chan struct{})
			go func() { defer close(done); e.Every(time.Hour)(ctx) }()
			select {
			case <-scheduled:
			case <-done:
				t.Fatal("the loop ended before it waited for its schedule")
			}
			if !slices.Equal(waits, tc.wantWaits) || runs != tc.wantRuns {
				t.Errorf("%d runs, waiting %v between them; want %d runs, waiting %v", runs, waits, tc.wantRuns, tc.wantWaits)
			}
			m, err := ReadManifest(ctx, b)
			_, _, last, _ := g.Check()
			if err != nil || (m.WatermarkSeq == last) != tc.committed {
				t.Errorf("watermark %d of %d (%v); committed: want %v", m.WatermarkSeq, last, err, tc.committed)
			}
			cancel()
			<-done
		})
	}
}

// The end of leadership (the loop's context cancelled) ends a wait to try
// again at once, and no run follows.
func TestTheEndOfLeadershipEndsTheWaitToTryAgain(t *testing.T) {
	g := newGen(t, 17)
	run(t, g, 100, time.Minute)
	ctx, cancel := context.WithCancel(testCtx(t))
	defer cancel()
	b := openDir(t, t.TempDir())
	runs := 0
	e, err := New(FromFSM(g.F), b, Options{Barrier: func(ctx context.Context) error {
		runs++
		return writeManifest(ctx, b, &Manifest{Format: formatVersion}) // another exporter's commit
	}})
	if err != nil {
		t.Fatal(err)
	}
	waiting := make(chan time.Duration, 1)
	e.wait = func(ctx context.Context, d time.Duration) bool {
		waiting <- d
		return sleep(ctx, d)
	}
	done := make(chan struct{})
	go func() { defer close(done); e.Every(time.Hour)(ctx) }()
	if d := <-waiting; d != concurrentRetryFirst {
		t.Fatalf("the loop waits %s after a refused run, want %s", d, concurrentRetryFirst)
	}
	cancel()
	<-done
	if runs != 1 {
		t.Errorf("%d runs, want 1: none after the context ended", runs)
	}
	if sleep(ctx, 168*time.Hour) {
		t.Error("a wait under an ended context did not end at once")
	}
}
