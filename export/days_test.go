package export

import (
	"encoding/json"
	"errors"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"gocloud.dev/blob"

	"github.com/creditd/creditd/export/internal/ledgergen"
)

// multiDay is an export written by many runs over several UTC days.
type multiDay struct {
	g   *ledgergen.Gen
	dir string
	b   *blob.Bucket
	// daySizes is the manifest's size after each day's first run; root is
	// the manifest after the last run, which opens one more day.
	daySizes []int
	root     []byte
}

// Every multi-day export applies the same commands (12 log entries of 50
// commands a day, two hours apart) whatever its runs a day, then one entry
// in the next day and a last run: the same ledger up to the same cut.
const entriesPerDay = 12

// exportOverDays exports runsPerDay times a day for days days, checking
// after each run that the manifest keeps only the open day's parts and that
// the files match it.
func exportOverDays(t *testing.T, seed uint64, days, runsPerDay int, opts Options) *multiDay {
	t.Helper()
	md := &multiDay{g: newGen(t, seed), dir: t.TempDir()}
	md.b = openDir(t, md.dir)
	exportRun := func() {
		t.Helper()
		exportOnce(t, FromFSM(md.g.F), md.b, opts)
		_, _, last, err := md.g.Check()
		if err != nil {
			t.Fatal(err)
		}
		m := checkManifestMatchesFiles(t, md.dir, md.b, last)
		open := m.LedgerParts[len(m.LedgerParts)-1].Date
		for _, p := range m.LedgerParts {
			if p.Date != open {
				t.Fatalf("the manifest lists part %s of %s; only the open day's (%s) should be there", p.Key, p.Date, open)
			}
		}
		if n := len(m.LedgerDays); n > 0 && m.LedgerDays[n-1].Date >= open {
			t.Fatalf("closed day %s is not before the open day %s", m.LedgerDays[n-1].Date, open)
		}
	}
	for range days {
		for r := range runsPerDay {
			run(t, md.g, 50*entriesPerDay/runsPerDay, 24*time.Hour/entriesPerDay)
			exportRun()
			if r == 0 {
				md.daySizes = append(md.daySizes, len(readRoot(t, md.dir)))
			}
		}
	}
	run(t, md.g, 50, 24*time.Hour/entriesPerDay)
	exportRun()
	md.root = readRoot(t, md.dir)
	return md
}

func readRoot(t *testing.T, dir string) []byte {
	t.Helper()
	data, err := os.ReadFile(filepath.Join(dir, ManifestKey))
	if err != nil {
		t.Fatal(err)
	}
	return data
}

// The manifest once listed every part and snapshot ever written, ≈ 400 bytes
// a run: a run a minute reached the 64 MiB a reader accepts in four months,
// and the destination took no more runs. Closed days now go into day lists:
// the manifest grows by a day's summary, however many runs the day had.
func TestClosedDaysMoveIntoDayListsAndTheManifestGrowsPerDayNotPerRun(t *testing.T) {
	const days = 4
	sizes := map[int]int{}
	for _, tc := range []struct {
		name       string
		runsPerDay int
	}{
		{"two runs a day", 2},
		{"six runs a day", 6},
	} {
		t.Run(tc.name, func(t *testing.T) {
			md := exportOverDays(t, 31, days, tc.runsPerDay, smallFiles())
			_, _, last, _ := md.g.Check()
			checkExactlyOnce(t, ledgerRows(t, md.dir), last)
			var seqs []uint64
			if _, err := ScanExport(testCtx(t), md.b, "", func(m *Movement) error { seqs = append(seqs, m.Seq); return nil }); err != nil {
				t.Fatal(err)
			}
			if uint64(len(seqs)) != last || seqs[len(seqs)-1] != last {
				t.Fatalf("the manifest's parts hold %d entries, the ledger %d", len(seqs), last)
			}

			m, err := ReadManifest(testCtx(t), md.b)
			if err != nil {
				t.Fatal(err)
			}
			if m.Format != formatVersion || len(m.LedgerDays) < days || len(m.GrantSnapshotDays) < days {
				t.Fatalf("format %d with %d ledger days and %d snapshot days after %d days", m.Format, len(m.LedgerDays), len(m.GrantSnapshotDays), days)
			}
			// From the second day on, a day's first run finds the same parts
			// and snapshots of its own day in the manifest, plus one more
			// closed day: a ledger day and a snapshot day summed up, ≈ 600
			// bytes. Listing the runs' parts and snapshots would add ≈ 400
			// bytes a run.
			for i := 2; i < len(md.daySizes); i++ {
				if grown := md.daySizes[i] - md.daySizes[i-1]; grown > 700 {
					t.Errorf("day %d grew the manifest by %d bytes (sizes %v); want one day's summaries", i, grown, md.daySizes)
				}
			}
			sizes[tc.runsPerDay] = len(md.root)
		})
	}
	// Same ledger, same cut: three times the runs changes only digits
	// (counts and sizes in each day's summaries).
	if d := sizes[6] - sizes[2]; d < 0 || d > 8*days {
		t.Errorf("the manifest is %d bytes after 6 runs a day and %d after 2: it grows with the runs", sizes[6], sizes[2])
	}
}

func TestAReportOverManyDaysFromTheExportEqualsTheOneFromTheState(t *testing.T) {
	md := exportOverDays(t, 32, 4, 5, smallFiles())
	for _, p := range []struct {
		name     string
		from, to time.Time
	}{
		{"everything", day(-1), day(30)},
		{"the first day", day(0), day(1)},
		{"a day in the middle", day(2), day(3)},
		{"two days across a closed day's end", day(1), day(3)},
		{"the open day", day(4), day(5)},
	} {
		t.Run(p.name, func(t *testing.T) {
			fromState, err := ReportFromSource(testCtx(t), FromFSM(md.g.F), p.from, p.to, nil)
			if err != nil {
				t.Fatal(err)
			}
			fromExport, err := ReportFromExport(testCtx(t), md.b, "", p.from, p.to, nil)
			if err != nil {
				t.Fatal(err)
			}
			if len(fromState.Rows) == 0 || !slices.Equal(fromState.Rows, fromExport.Rows) || fromState.LastSeq != fromExport.LastSeq {
				t.Errorf("the report from the state differs from the export's:\n state  %+v\n export %+v", fromState, fromExport)
			}
		})
	}
}

// The first day list a run stores is followed by a crash, before the
// manifest that names it is committed.
func crashAtList(suffix string) Options {
	opts := smallFiles()
	opts.AfterObject = func(key string) error {
		if strings.HasSuffix(key, suffix) {
			return errCrash
		}
		return nil
	}
	return opts
}

func TestACrashBetweenADayListAndTheManifestLeavesTheExportReadableAndTheNextRunCompletesIt(t *testing.T) {
	for _, tc := range []struct {
		name  string
		crash string // the list whose storing is followed by the crash
		// before the rerun: more writes; a rerun from a replica whose
		// cut is still in the day (the orphan list names no committed
		// day); other part sizes (the list is written again, differently)
		more, behind, otherParts bool
	}{
		{name: "after a ledger day's list, rerun at the same cut", crash: "/" + ledgerListFile},
		{name: "after a snapshot day's list, rerun after more writes", crash: "/" + grantsListFile, more: true},
		{name: "rerun with other part sizes", crash: "/" + ledgerListFile, otherParts: true},
		{name: "rerun from a replica whose cut leaves the day open", crash: "/" + ledgerListFile, behind: true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			g, replica := newGen(t, 33), newGen(t, 33)
			dir := t.TempDir()
			b := openDir(t, dir)
			for _, x := range []*ledgergen.Gen{g, replica} {
				run(t, x, 300, 2*time.Hour) // day 0 up to 12:00
			}
			exportOnce(t, FromFSM(g.F), b, smallFiles())
			_, _, w, _ := g.Check()
			for _, x := range []*ledgergen.Gen{g, replica} {
				run(t, x, 200, 2*time.Hour) // day 0 up to 20:00
			}
			run(t, g, 100, 2*time.Hour) // into day 1: day 0 is closed

			e, err := New(FromFSM(g.F), b, crashAtList(tc.crash))
			if err != nil {
				t.Fatal(err)
			}
			if _, err := e.Run(testCtx(t)); !errors.Is(err, errCrash) {
				t.Fatalf("run: %v, want the simulated crash", err)
			}
			orphan := "2026-03-01/" + strings.TrimPrefix(tc.crash, "/")
			lists := dayListsOnDisk(t, dir)
			if !slices.ContainsFunc(lists, func(k string) bool { return strings.HasSuffix(k, orphan) }) {
				t.Fatalf("the crash left lists %v; want the one of day 0 it stored", lists)
			}
			// The export reads as committed: up to the watermark, once.
			var seqs []uint64
			man, err := ScanExport(testCtx(t), b, "", func(m *Movement) error { seqs = append(seqs, m.Seq); return nil })
			if err != nil || man.WatermarkSeq != w || uint64(len(seqs)) != w || len(man.LedgerDays) != 0 {
				t.Fatalf("after the crash: %d entries read, manifest %+v, %v; want 1..%d and no closed day", len(seqs), man, err, w)
			}

			src, opts := g, smallFiles()
			switch {
			case tc.more:
				run(t, g, 300, 2*time.Hour)
			case tc.otherParts:
				opts.FileRows = 250
			case tc.behind:
				src = replica
			}
			exportOnce(t, FromFSM(src.F), b, opts)
			_, _, last, _ := src.Check()
			m := checkManifestMatchesFiles(t, dir, b, last)
			checkExactlyOnce(t, ledgerRows(t, dir), last)
			if closed := len(m.LedgerDays) > 0; closed == tc.behind {
				t.Errorf("after the rerun, closed days %+v; want day 0 closed unless the replica's cut is in it", m.LedgerDays)
			}
			if tc.behind { // and the destination goes on from the other replica
				exportOnce(t, FromFSM(g.F), b, smallFiles())
				_, _, last, _ = g.Check()
				checkManifestMatchesFiles(t, dir, b, last)
				checkExactlyOnce(t, ledgerRows(t, dir), last)
			}
		})
	}
}

// format1 is the manifest as creditd wrote it before day lists (format 1):
// every part and every snapshot, snapshots without a date.
type format1 struct {
	Format          int    `json:"format"`
	WatermarkSeq    uint64 `json:"watermark_seq"`
	WatermarkDigest string `json:"watermark_digest,omitempty"`
	AppliedIndex    uint64 `json:"applied_index"`
	LogTime         string `json:"log_time,omitempty"`
	LedgerParts     []Part `json:"ledger_parts"`
	GrantSnapshots  []struct {
		Key   string `json:"key"`
		Seq   uint64 `json:"seq"`
		Rows  int64  `json:"rows"`
		Bytes int64  `json:"bytes"`
	} `json:"grant_snapshots"`
}

// asFormat1 turns an export into what creditd wrote before: the same
// Parquet files, a format 1 manifest listing them all, no day lists.
func asFormat1(t *testing.T, dir string, b *blob.Bucket) format1 {
	t.Helper()
	ctx := testCtx(t)
	m, err := ReadManifest(ctx, b)
	if err != nil {
		t.Fatal(err)
	}
	old := format1{Format: 1, WatermarkSeq: m.WatermarkSeq, WatermarkDigest: m.WatermarkDigest, AppliedIndex: m.AppliedIndex, LogTime: m.LogTime}
	if err := m.EachLedgerPart(ctx, b, func(p Part) error { old.LedgerParts = append(old.LedgerParts, p); return nil }); err != nil {
		t.Fatal(err)
	}
	if err := m.EachGrantSnapshot(ctx, b, func(s Snapshot) error {
		old.GrantSnapshots = append(old.GrantSnapshots, struct {
			Key   string `json:"key"`
			Seq   uint64 `json:"seq"`
			Rows  int64  `json:"rows"`
			Bytes int64  `json:"bytes"`
		}{s.Key, s.Seq, s.Rows, s.Bytes})
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	data, err := json.MarshalIndent(old, "", "  ")
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, ManifestKey), append(data, '\n'), 0o644); err != nil {
		t.Fatal(err)
	}
	for _, k := range dayListsOnDisk(t, dir) {
		if err := os.Remove(filepath.Join(dir, k)); err != nil {
			t.Fatal(err)
		}
	}
	return old
}

func TestAFormat1ManifestIsReadAndTheNextRunWritesFormat2(t *testing.T) {
	for _, tc := range []struct {
		name string
		keep int
	}{
		{"every snapshot kept", 0},
		{"with a snapshot retention", 3},
	} {
		t.Run(tc.name, func(t *testing.T) {
			opts := smallFiles()
			opts.KeepGrantSnapshots = tc.keep
			md := exportOverDays(t, 34, 3, 4, opts)
			old := asFormat1(t, md.dir, md.b)
			if len(old.LedgerParts) < 10 || len(old.GrantSnapshots) < 3 {
				t.Fatalf("the format 1 export lists %d parts and %d snapshots: too few to show anything", len(old.LedgerParts), len(old.GrantSnapshots))
			}

			// Readers take it as it is.
			ctx := testCtx(t)
			m, err := ReadManifest(ctx, md.b)
			if err != nil || m.Format != 1 || len(m.LedgerParts) != len(old.LedgerParts) {
				t.Fatalf("read the format 1 manifest: %+v, %v", m, err)
			}
			for _, s := range m.GrantSnapshots {
				if date, _ := m.dateAtSeq(s.Seq); s.Date == "" || s.Date != date {
					t.Errorf("snapshot %s read with date %q, its entry is of %q", s.Key, s.Date, date)
				}
			}
			ob, err := OpenExport(ctx, md.dir)
			if err != nil {
				t.Fatal(err)
			}
			defer ob.Close()
			fromExport, err := ReportFromExport(ctx, ob, "", day(-1), day(30), nil)
			if err != nil {
				t.Fatal(err)
			}
			fromState, err := ReportFromSource(ctx, FromFSM(md.g.F), day(-1), day(30), nil)
			if err != nil || !slices.Equal(fromState.Rows, fromExport.Rows) {
				t.Fatalf("the report from the format 1 export differs from the state's (%v):\n %+v\n %+v", err, fromExport.Rows, fromState.Rows)
			}
			// Nothing new: nothing written, not even the manifest.
			if res := exportOnce(t, FromFSM(md.g.F), md.b, opts); res.Entries != 0 {
				t.Fatalf("a run with nothing new exported %d entries", res.Entries)
			}

			// The next run that exports writes format 2: every closed day
			// in its list, the manifest a fraction of what it was.
			format1Size := len(readRoot(t, md.dir))
			run(t, md.g, 100, 2*time.Hour)
			res := exportOnce(t, FromFSM(md.g.F), md.b, opts)
			_, _, last, _ := md.g.Check()
			m = checkManifestMatchesFiles(t, md.dir, md.b, last)
			checkExactlyOnce(t, ledgerRows(t, md.dir), last)
			if m.Format != formatVersion || len(res.ClosedDays) < 3 || len(m.LedgerDays) != len(res.ClosedDays) {
				t.Fatalf("the run after format 1: format %d, closed %d days, the manifest has %d", m.Format, len(res.ClosedDays), len(m.LedgerDays))
			}
			if tc.keep == 0 && len(m.GrantSnapshotDays) < 3 {
				t.Errorf("%d snapshot days after keeping every snapshot for 3 days", len(m.GrantSnapshotDays))
			}
			if tc.keep > 0 && (len(m.GrantSnapshotDays) != 0 || len(m.GrantSnapshots) != tc.keep) {
				t.Errorf("with a retention of %d: %d snapshot days, %d snapshots", tc.keep, len(m.GrantSnapshotDays), len(m.GrantSnapshots))
			}
			if size := len(readRoot(t, md.dir)); size >= format1Size {
				t.Errorf("the format 2 manifest is %d bytes, the format 1 one was %d", size, format1Size)
			}
			for _, p := range m.LedgerParts {
				if p.Date != res.Parts[len(res.Parts)-1].Date {
					t.Errorf("the format 2 manifest lists part %s of a closed day", p.Key)
				}
			}
		})
	}
}

func TestADamagedOrOversizedDayListIsRefusedNamingIt(t *testing.T) {
	md := exportOverDays(t, 35, 3, 2, smallFiles())
	m, err := ReadManifest(testCtx(t), md.b)
	if err != nil || len(m.LedgerDays) < 2 || len(m.GrantSnapshotDays) < 1 {
		t.Fatalf("manifest %+v, %v: want closed days", m, err)
	}
	day0, day1, snaps0 := m.LedgerDays[0].Key, m.LedgerDays[1].Key, m.GrantSnapshotDays[0].Key
	path := func(key string) string { return filepath.Join(md.dir, filepath.FromSlash(key)) }
	read := func(key string) []byte {
		data, err := os.ReadFile(path(key))
		if err != nil {
			t.Fatal(err)
		}
		return data
	}
	write := func(key string, data []byte) {
		if err := os.WriteFile(path(key), data, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	for _, tc := range []struct {
		name   string
		key    string // the list damaged
		damage func()
		want   string
	}{
		{"a missing list", day0, func() { os.Remove(path(day0)) }, "missing"},
		{"a truncated list", day0, func() { data := read(day0); write(day0, data[:len(data)/2]) }, "SHA-256"},
		{"a list edited after it was written", day0, func() {
			write(day0, []byte(strings.Replace(string(read(day0)), `"rows": `, `"rows": 1`, 1)))
		}, "SHA-256"},
		{"another day's list in its place", day0, func() { write(day0, read(day1)) }, "SHA-256"},
		{"a list larger than a reader accepts", day0, func() {
			if err := os.Truncate(path(day0), maxListBytes+1); err != nil {
				t.Fatal(err)
			}
		}, "larger than"},
		{"a list a part short, whose digest the manifest was edited to match", day0, func() {
			var list DayList
			if err := json.Unmarshal(read(day0), &list); err != nil {
				t.Fatal(err)
			}
			list.LedgerParts = list.LedgerParts[:len(list.LedgerParts)-1]
			data, _ := encodeJSON(&list)
			write(day0, data)
			root := *m
			root.LedgerDays = slices.Clone(m.LedgerDays)
			root.LedgerDays[0].SHA256 = hexSHA256(data)
			data, _ = encodeJSON(&root)
			write(ManifestKey, data)
		}, "the manifest says"},
		{"a damaged snapshot day list", snaps0, func() { write(snaps0, []byte("{")) }, "SHA-256"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			saved := map[string][]byte{tc.key: read(tc.key), ManifestKey: read(ManifestKey)}
			defer func() {
				for k, data := range saved {
					write(k, data)
				}
			}()
			tc.damage()
			ctx := testCtx(t)
			m, err := ReadManifest(ctx, md.b)
			if err != nil {
				t.Fatal(err)
			}
			errs := []error{
				m.EachLedgerPart(ctx, md.b, func(Part) error { return nil }),
				m.EachGrantSnapshot(ctx, md.b, func(Snapshot) error { return nil }),
			}
			if tc.key != snaps0 {
				_, err := ReportFromExport(ctx, md.b, "", day(-1), day(30), nil)
				errs = append(errs[:1], err)
			} else {
				errs = errs[1:]
			}
			for _, err := range errs {
				if !errors.Is(err, ErrDamagedList) || !strings.Contains(err.Error(), tc.key) || !strings.Contains(err.Error(), tc.want) {
					t.Errorf("got %v; want %v naming %s: %s", err, ErrDamagedList, tc.key, tc.want)
				}
			}
		})
	}
	// Undamaged again, it reads.
	if _, err := ReportFromExport(testCtx(t), md.b, "", day(-1), day(30), nil); err != nil {
		t.Fatal(err)
	}
}

// Snapshots of closed days go into day lists only when every snapshot is
// kept; a retention set later drops the oldest first, whole days of them
// without reading their lists, and brings a day it cuts into back into the
// manifest (a list is never changed).
func TestARetentionSetAfterKeepingEverySnapshotKeepsTheNewest(t *testing.T) {
	for _, tc := range []struct {
		name     string
		keep     int
		cutInDay bool // the oldest kept snapshot is not its day's first
	}{
		{"more than there are: the day lists stay", 1000, false},
		{"a few: whole days go", 2, false},
		{"cutting into a day: it comes back into the manifest", 9, true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			md := exportOverDays(t, 36, 3, 4, smallFiles())
			ctx := testCtx(t)
			before, err := ReadManifest(ctx, md.b)
			if err != nil {
				t.Fatal(err)
			}
			var all []Snapshot
			if err := before.EachGrantSnapshot(ctx, md.b, func(s Snapshot) error { all = append(all, s); return nil }); err != nil {
				t.Fatal(err)
			}
			run(t, md.g, 50, 2*time.Hour)
			opts := smallFiles()
			opts.KeepGrantSnapshots = tc.keep
			res := exportOnce(t, FromFSM(md.g.F), md.b, opts)
			all = append(all, *res.Grants)
			want := all[max(len(all)-tc.keep, 0):]
			rolled := slices.ContainsFunc(before.GrantSnapshotDays, func(d Day) bool { return d.Date == want[0].Date })
			if cut := len(want) < len(all) && want[0].Date == all[len(all)-len(want)-1].Date && rolled; cut != tc.cutInDay || len(before.GrantSnapshotDays) < 2 {
				t.Fatalf("keeping %d of %d snapshots (days %+v) does not test what it says", tc.keep, len(all), before.GrantSnapshotDays)
			}

			_, _, last, _ := md.g.Check()
			m := checkManifestMatchesFiles(t, md.dir, md.b, last)
			var kept []Snapshot
			if err := m.EachGrantSnapshot(ctx, md.b, func(s Snapshot) error { kept = append(kept, s); return nil }); err != nil {
				t.Fatal(err)
			}
			if !slices.Equal(kept, want) {
				t.Errorf("kept %d snapshots, want the newest %d of %d", len(kept), len(want), len(all))
			}
			if stay := len(want) == len(all); stay != (len(m.GrantSnapshotDays) == len(before.GrantSnapshotDays)) {
				t.Errorf("%d snapshot days before, %d after keeping %d of %d", len(before.GrantSnapshotDays), len(m.GrantSnapshotDays), len(want), len(all))
			}
		})
	}
}

// A day list no manifest names (a crashed run's, or of a day a retention
// took out) is deleted by the next run's sweep, and so are the blob
// driver's temporary files of lists; the lists the manifest names and
// objects that are not ours stay as they are.
func TestTheSweepKeepsTheCommittedDayListsAndRemovesTheOthers(t *testing.T) {
	md := exportOverDays(t, 37, 2, 2, smallFiles())
	m, err := ReadManifest(testCtx(t), md.b)
	if err != nil {
		t.Fatal(err)
	}
	open := m.LedgerParts[0].Date
	orphans := []string{ledgerListKey(open), grantsListKey(open), ledgerListKey("2030-01-01"),
		ledgerListKey(m.LedgerDays[0].Date) + ".18a2b3c4d5e6f708.tmp", grantsListKey(open) + ".0123456789abcdef.tmp"}
	others := []string{"ledger/date=" + open + "/notes.json", "ledger/date=" + open + "/parts.json.bak"}
	committed := map[string][]byte{}
	for _, d := range slices.Concat(m.LedgerDays, m.GrantSnapshotDays) {
		committed[d.Key] = readFile(t, md.dir, d.Key)
	}
	for _, k := range append(slices.Clone(orphans), others...) {
		if err := os.MkdirAll(filepath.Dir(filepath.Join(md.dir, filepath.FromSlash(k))), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(filepath.Join(md.dir, filepath.FromSlash(k)), []byte(`{"format": 2}`), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	run(t, md.g, 50, 2*time.Hour) // the open day stays open
	res := exportOnce(t, FromFSM(md.g.F), md.b, smallFiles())
	if len(res.ClosedDays) != 0 {
		t.Fatalf("the run closed %+v; the test wants the day left open", res.ClosedDays)
	}
	for _, k := range orphans {
		if !slices.Contains(res.Removed, k) {
			t.Errorf("%s was not removed (removed: %v)", k, res.Removed)
		}
	}
	for k, data := range committed {
		if got := readFile(t, md.dir, k); string(got) != string(data) {
			t.Errorf("the committed list %s changed", k)
		}
	}
	for _, k := range others {
		if _, err := os.Stat(filepath.Join(md.dir, filepath.FromSlash(k))); err != nil {
			t.Errorf("%s, not an object of ours, was touched: %v", k, err)
		}
	}
}

func readFile(t *testing.T, dir, key string) []byte {
	t.Helper()
	data, err := os.ReadFile(filepath.Join(dir, filepath.FromSlash(key)))
	if err != nil {
		t.Fatal(err)
	}
	return data
}
