package main

import (
	"context"
	"encoding/csv"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"log/slog"
	"maps"
	"net"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/creditd/creditd/export"
	"github.com/creditd/creditd/fsm"
	"github.com/creditd/creditd/rpc"
)

// stoppedNode writes a small ledger into dataDir/fsm.db, as a node would.
func stoppedNode(t *testing.T, dataDir string) {
	t.Helper()
	f, err := fsm.Open(filepath.Join(dataDir, "fsm.db"), fsm.Options{NoSync: true})
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	day := fsm.TimestampOf(time.Date(2026, 11, 2, 9, 0, 0, 0, time.UTC))
	cmds := [][]fsm.Command{
		{fsm.CreateCreditType{ID: "ai", Name: "AI", Scale: 2}, fsm.UpsertCustomer{ID: "c1", Name: "c1"}},
		{fsm.CreateGrant{ID: "paid", CustomerID: "c1", CreditTypeID: "ai", Category: fsm.Paid, Amount: 10000,
			CostBasis: fsm.Decimal{Coef: 25, Scale: 3}, Currency: "USD"},
			fsm.CreateGrant{ID: "promo", CustomerID: "c1", CreditTypeID: "ai", Amount: 500}},
		{fsm.BurnUsage{Events: []fsm.UsageEvent{{ID: "e1", CustomerID: "c1", CreditTypeID: "ai", Credits: 800}}}},
		{fsm.RevokeGrant{GrantID: "paid", Amount: 1000, Reason: "refund"}},
	}
	for i, cs := range cmds {
		var enc [][]byte
		for _, c := range cs {
			b, err := fsm.EncodeCommand(c)
			if err != nil {
				t.Fatal(err)
			}
			enc = append(enc, b)
		}
		rs, err := f.Apply([]fsm.Entry{{Index: uint64(i + 1), Data: fsm.EncodeEntry(day+fsm.Timestamp(i)*3_600_000_000, enc)}})
		if err != nil {
			t.Fatal(err)
		}
		for _, r := range rs[0] {
			if r.Err != nil {
				t.Fatal(r.Err)
			}
		}
	}
}

func TestExportThenReportFromTheExportAndFromTheDataDir(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	dataDir, dest, tmp := t.TempDir(), t.TempDir(), t.TempDir()
	stoppedNode(t, dataDir)
	for i := range 2 { // the second run finds nothing new
		if err := run(ctx, []string{"export", "--data-dir", dataDir, "--to", dest, "--progress", "never"}, io.Discard); err != nil {
			t.Fatalf("export run %d: %v", i, err)
		}
	}
	if _, err := os.Stat(filepath.Join(dest, "ledger", "date=2026-11-02")); err != nil {
		t.Fatal(err)
	}
	var reports [][][]string
	for _, source := range [][]string{{"--export", dest}, {"--data-dir", dataDir}} {
		out := filepath.Join(tmp, "r.csv")
		args := append([]string{"report", "--from", "2026-11-01", "--to", "2026-11-30", "--format", "csv", "--out", out}, source...)
		if err := run(ctx, args, io.Discard); err != nil {
			t.Fatalf("report from %v: %v", source, err)
		}
		f, err := os.Open(out)
		if err != nil {
			t.Fatal(err)
		}
		recs, err := csv.NewReader(f).ReadAll()
		f.Close()
		if err != nil {
			t.Fatal(err)
		}
		reports = append(reports, recs)
	}
	if !slices.EqualFunc(reports[0], reports[1], slices.Equal) {
		t.Fatalf("the report from the export differs from the one from the data dir:\n%v\n%v", reports[0], reports[1])
	}
	// The burn of 8.00 takes the promotional 5.00 first (same priority, no
	// expiry: promotional before paid), then 3.00 paid; 10.00 paid revoked.
	// Money at 0.025 USD per credit.
	want := map[string][]string{
		"USD": {"ai", "USD", "0.00", "100.00", "0.00", "3.00", "0.00", "10.00", "0.00", "0.00", "87.00",
			"0.000000", "2.500000", "0.075000", "0.000000", "0.250000", "0.000000", "2.175000"},
		"": {"ai", "", "0.00", "0.00", "5.00", "5.00", "0.00", "0.00", "0.00", "0.00", "0.00",
			"0.000000", "0.000000", "0.000000", "0.000000", "0.000000", "0.000000", "0.000000"},
	}
	for _, rec := range reports[0][1:] {
		if got := rec[2:]; !slices.Equal(got, want[rec[3]]) {
			t.Errorf("row %v\n want %v", got, want[rec[3]])
		}
	}
	if len(reports[0]) != 3 {
		t.Errorf("report has %d lines, want a header and 2 rows", len(reports[0]))
	}
}

func TestReportRefusesBadFlags(t *testing.T) {
	ctx := context.Background()
	for _, args := range [][]string{
		{"report", "--to", "2026-11-30"},
		{"report", "--from", "2026-11-30", "--to", "2026-11-01"},
		{"report", "--from", "2026-11-01", "--to", "2026-11-30", "--format", "xml"},
		{"report", "--from", "11/01/2026", "--to", "2026-11-30"},
		{"export"},
	} {
		if err := run(ctx, args, io.Discard); err == nil {
			t.Errorf("%v: accepted", args)
		}
	}
}

// A first export of a small ledger said "1 parts"; the summary counts in
// the right number.
func TestExportSummaryCountsInTheRightNumber(t *testing.T) {
	tests := []struct {
		res  export.Result
		want string
	}{
		{export.Result{FromSeq: 1, ToSeq: 7, Entries: 7, Parts: []export.Part{{Bytes: 4527}}, Grants: &export.Snapshot{Rows: 3}, Elapsed: 20 * time.Millisecond},
			"exported ledger entries 1..7 (7 entries, 1 part, 4527 bytes) and 3 grants to file:///x in 20ms"},
		{export.Result{FromSeq: 8, ToSeq: 8, Entries: 1, Parts: []export.Part{{Bytes: 1}, {Bytes: 2}}, Grants: &export.Snapshot{Rows: 1}},
			"exported ledger entries 8..8 (1 entry, 2 parts, 3 bytes) and 1 grant to file:///x in 0s"},
	}
	for _, tt := range tests {
		if got := exportSummary(tt.res, "file:///x"); got != tt.want {
			t.Errorf("got  %q\nwant %q", got, tt.want)
		}
	}
}

// TestExportChecksTheDestinationBeforeFetchingTheSource: a wrong --to is
// reported at once, not after a snapshot of the cluster was fetched (here
// the node is not even running).
func TestExportChecksTheDestinationBeforeFetchingTheSource(t *testing.T) {
	err := runExport(context.Background(), []string{"--addr", "127.0.0.1:1", "--to", "ftp://finance/creditd"})
	if err == nil || !strings.Contains(err.Error(), "ftp") || strings.Contains(err.Error(), "snapshot of") {
		t.Fatalf("got %v, want an error about the ftp destination", err)
	}
}

// A mistyped --export once printed an empty report that "tied out" and
// created the mistyped directory; it fails, naming the location.
func TestReportFromAnExportThatDoesNotExistFails(t *testing.T) {
	missing := filepath.Join(t.TempDir(), "exprots")
	args := []string{"report", "--from", "2026-11-01", "--to", "2026-11-30", "--format", "csv", "--out", filepath.Join(t.TempDir(), "r.csv"), "--export", missing}
	err := run(context.Background(), args, io.Discard)
	if !errors.Is(err, export.ErrNoExport) || !strings.Contains(err.Error(), "no export at "+missing+": no manifest.json") {
		t.Fatalf("report --export %s: %v; want no export at %s", missing, err, missing)
	}
	if _, err := os.Stat(missing); !os.IsNotExist(err) {
		t.Errorf("report --export created %s: %v", missing, err)
	}
}

// Snapshots kept under a retention stay in the manifest itself, so a
// retention past export.MaxKeepGrantSnapshots is refused at once, naming the
// flag, by export and by serve's schedule.
func TestExportRefusesARetentionOfTooManyGrantSnapshotsNamingTheFlag(t *testing.T) {
	tooMany := fmt.Sprint(export.MaxKeepGrantSnapshots + 1)
	err := run(context.Background(), []string{"export", "--to", t.TempDir(), "--data-dir", t.TempDir(), "--keep-grant-snapshots", tooMany}, io.Discard)
	if !errors.Is(err, errUsage) || !strings.Contains(err.Error(), "--keep-grant-snapshots "+tooMany) {
		t.Errorf("export --keep-grant-snapshots %s: %v; want a usage error naming the flag", tooMany, err)
	}
	s := exportSchedule{to: t.TempDir(), every: time.Hour, keep: export.MaxKeepGrantSnapshots + 1}
	if _, err := s.start(context.Background(), nil, slog.Default()); !errors.Is(err, errUsage) || !strings.Contains(err.Error(), "--export-keep-grant-snapshots") {
		t.Errorf("serve --export-keep-grant-snapshots %s: %v; want a usage error naming the flag", tooMany, err)
	}
	for _, keep := range []int{0, export.MaxKeepGrantSnapshots} {
		if err := checkKeepSnapshots("--keep-grant-snapshots", keep); err != nil {
			t.Errorf("a retention of %d refused: %v", keep, err)
		}
	}
}

// Row counts out of range are refused naming the flag before anything is
// opened or fetched: the source here is a node nobody runs, so a run that
// went as far as the fetch would fail on that instead, and the destination
// is not created.
func TestExportRefusesRowCountsOutOfRangeNamingTheFlagBeforeFetching(t *testing.T) {
	for _, tc := range []struct{ flag, value string }{
		{"--row-group-rows", "0"},
		{"--row-group-rows", fmt.Sprint(export.MaxRowGroupRows + 1)},
		{"--file-rows", "-1"},
		{"--file-rows", fmt.Sprint(export.MaxFileRows + 1)},
	} {
		to := filepath.Join(t.TempDir(), "not-made")
		err := run(context.Background(), []string{"export", "--to", to, "--addr", "http://127.0.0.1:1", "--timeout", "5s", tc.flag, tc.value}, io.Discard)
		if !errors.Is(err, errUsage) || !strings.Contains(err.Error(), tc.flag+" "+tc.value) {
			t.Errorf("export %s %s: %v; want a usage error naming the flag", tc.flag, tc.value, err)
		}
		if _, err := os.Stat(to); !os.IsNotExist(err) {
			t.Errorf("export %s %s created its destination: %v", tc.flag, tc.value, err)
		}
	}
}

// appendEntries applies one log entry per command to the stopped node's
// state in dataDir, an hour apart from at.
func appendEntries(t *testing.T, dataDir string, at time.Time, cmds ...fsm.Command) {
	t.Helper()
	f, err := fsm.Open(filepath.Join(dataDir, "fsm.db"), fsm.Options{NoSync: true})
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	for i, c := range cmds {
		b, err := fsm.EncodeCommand(c)
		if err != nil {
			t.Fatal(err)
		}
		ts := fsm.TimestampOf(at.Add(time.Duration(i) * time.Hour))
		rs, err := f.Apply([]fsm.Entry{{Index: f.AppliedIndex() + 1, Data: fsm.EncodeEntry(ts, [][]byte{b})}})
		if err != nil {
			t.Fatal(err)
		}
		if rs[0][0].Err != nil {
			t.Fatal(rs[0][0].Err)
		}
	}
}

// An export run once committed a new manifest on top of a missing day
// list, while report refused the destination for it. Both refuse it now,
// naming the list, and the manifest stays as it was.
func TestExportAndReportRefuseADestinationWhoseDayListIsMissing(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	dataDir, dest := t.TempDir(), t.TempDir()
	stoppedNode(t, dataDir)
	burn := func(id string) fsm.Command {
		return fsm.BurnUsage{Events: []fsm.UsageEvent{{ID: id, CustomerID: "c1", CreditTypeID: "ai", Credits: 1}}}
	}
	exportRun := func() error {
		return run(ctx, []string{"export", "--data-dir", dataDir, "--to", dest, "--progress", "never"}, io.Discard)
	}
	if err := exportRun(); err != nil {
		t.Fatal(err)
	}
	appendEntries(t, dataDir, time.Date(2026, 11, 3, 9, 0, 0, 0, time.UTC), burn("e2")) // closes 2026-11-02
	if err := exportRun(); err != nil {
		t.Fatal(err)
	}
	lists, err := filepath.Glob(filepath.Join(dest, "_lists", "ledger", "date=2026-11-02-*.json"))
	if err != nil || len(lists) != 1 {
		t.Fatalf("day lists of 2026-11-02: %v, %v; want one", lists, err)
	}
	if err := os.Remove(lists[0]); err != nil {
		t.Fatal(err)
	}
	manifest, err := os.ReadFile(filepath.Join(dest, export.ManifestKey))
	if err != nil {
		t.Fatal(err)
	}
	appendEntries(t, dataDir, time.Date(2026, 11, 3, 12, 0, 0, 0, time.UTC), burn("e3"))

	key := "_lists/ledger/" + filepath.Base(lists[0])
	err = exportRun()
	if !errors.Is(err, export.ErrDamagedList) || !strings.Contains(err.Error(), key) || !strings.Contains(err.Error(), "missing") {
		t.Errorf("export: %v; want %v naming %s: missing", err, export.ErrDamagedList, key)
	}
	if after, _ := os.ReadFile(filepath.Join(dest, export.ManifestKey)); string(after) != string(manifest) {
		t.Errorf("the refused export committed a manifest")
	}
	err = run(ctx, []string{"report", "--from", "2026-11-01", "--to", "2026-11-30", "--format", "csv",
		"--out", filepath.Join(t.TempDir(), "r.csv"), "--export", dest, "--progress", "never"}, io.Discard)
	if !errors.Is(err, export.ErrDamagedList) || !strings.Contains(err.Error(), key) {
		t.Errorf("report: %v; want %v naming %s", err, export.ErrDamagedList, key)
	}
}

// A failed export (the node unreachable, or refusing) left the destination
// directory it had created before fetching anything, empty: it looked like
// an export. It removes what it created, and only that: a directory that
// was there stays, as does a previous export in it.
func TestAFailedExportLeavesNoDestinationItCreated(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	n, open := soloNode(t, ctx)
	// The same node behind an API that takes keys: a read key may not
	// save a snapshot (admin).
	const readKey = "export-test-read-key-0123456789"
	api, err := rpc.New(n, rpc.Options{APIKeys: []rpc.APIKey{{Scope: rpc.ScopeRead, Key: readKey}},
		Logger: slog.New(slog.NewTextHandler(io.Discard, nil))})
	if err != nil {
		t.Fatal(err)
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	hs := rpc.NewHTTPServer("", api.Handler())
	go hs.Serve(ln)
	t.Cleanup(func() { hs.Close() })

	root := t.TempDir()
	previous := filepath.Join(root, "previous")
	if err := run(ctx, []string{"export", "--addr", open, "--to", previous, "--progress", "never", "--temp-dir", t.TempDir()}, io.Discard); err != nil {
		t.Fatal(err)
	}
	before := dirFiles(t, previous)
	for _, tc := range []struct {
		name string
		args []string
		says string
	}{
		{"the node unreachable", []string{"--addr", "127.0.0.1:1"}, "snapshot of 127.0.0.1:1"},
		{"the node refusing the key", []string{"--addr", ln.Addr().String(), "--api-key", readKey}, "permission_denied"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			dir := t.TempDir()
			existing := filepath.Join(dir, "existing")
			if err := os.Mkdir(existing, 0o755); err != nil {
				t.Fatal(err)
			}
			for _, dest := range []string{filepath.Join(dir, "new", "export"), "file://" + filepath.Join(dir, "new2"), existing, previous} {
				args := append([]string{"export", "--to", dest, "--progress", "never", "--temp-dir", t.TempDir()}, tc.args...)
				if err := run(ctx, args, io.Discard); err == nil || !strings.Contains(err.Error(), tc.says) {
					t.Fatalf("export --to %s: %v; want an error saying %q", dest, err, tc.says)
				}
			}
			entries, err := os.ReadDir(dir)
			if err != nil {
				t.Fatal(err)
			}
			var left []string
			for _, e := range entries {
				left = append(left, e.Name())
			}
			if !slices.Equal(left, []string{"existing"}) {
				t.Errorf("%s holds %v after the failed exports; want only the directory that was there", dir, left)
			}
			if got := dirFiles(t, existing); len(got) != 0 {
				t.Errorf("the existing directory holds %v", got)
			}
			if got := dirFiles(t, previous); !maps.Equal(got, before) {
				t.Errorf("the previous export changed: %v, was %v", got, before)
			}
		})
	}
}

// dirFiles is every file under dir, by its path in it, with its content.
func dirFiles(t *testing.T, dir string) map[string]string {
	t.Helper()
	files := map[string]string{}
	err := filepath.WalkDir(dir, func(p string, d fs.DirEntry, err error) error {
		if err != nil || d.IsDir() {
			return err
		}
		b, err := os.ReadFile(p)
		files[strings.TrimPrefix(p, dir)] = string(b)
		return err
	})
	if err != nil {
		t.Fatal(err)
	}
	return files
}
