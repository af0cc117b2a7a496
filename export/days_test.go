package export

import (
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"gocloud.dev/blob"

	"github.com/creditd/creditd/export/internal/ledgergen"
	"github.com/creditd/creditd/fsm"
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

// The first day list a run stores under prefix is followed by a crash,
// before the manifest that names it is committed.
func crashAtList(prefix string) Options {
	opts := smallFiles()
	opts.AfterObject = func(key string) error {
		if strings.HasPrefix(key, prefix) {
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
		{name: "after a ledger day's list, rerun at the same cut", crash: ledgerListsPrefix},
		{name: "after a snapshot day's list, rerun after more writes", crash: grantsListsPrefix, more: true},
		{name: "rerun with other part sizes", crash: ledgerListsPrefix, otherParts: true},
		{name: "rerun from a replica whose cut leaves the day open", crash: ledgerListsPrefix, behind: true},
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
			lists := dayListsOnDisk(t, dir)
			i := slices.IndexFunc(lists, func(k string) bool { return strings.HasPrefix(k, tc.crash+"date=2026-03-01-") })
			if i < 0 {
				t.Fatalf("the crash left lists %v; want the one of day 0 it stored", lists)
			}
			orphan := lists[i]
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
			// A list is named for its content: the rerun's list of day 0
			// has the crashed run's name if and only if it has its bytes.
			if tc.crash == ledgerListsPrefix && !tc.behind {
				if renamed := m.LedgerDays[0].Key != orphan; renamed != tc.otherParts {
					t.Errorf("the rerun's list of day 0 is %s, the crashed run's was %s; want another name only for other parts", m.LedgerDays[0].Key, orphan)
				}
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
	var list DayList
	if err := json.Unmarshal(read(day0), &list); err != nil {
		t.Fatal(err)
	}
	list.LedgerParts = list.LedgerParts[:len(list.LedgerParts)-1]
	shortData, _ := encodeJSON(&list)
	short := ledgerListKey(m.LedgerDays[0].Date, hexSHA256(shortData))
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
		{"a list a part short, whose name and digest the manifest was edited to match", short, func() {
			write(short, shortData)
			root := *m
			root.LedgerDays = slices.Clone(m.LedgerDays)
			root.LedgerDays[0].SHA256, root.LedgerDays[0].Key = hexSHA256(shortData), short
			data, _ := encodeJSON(&root)
			write(ManifestKey, data)
		}, "the manifest says"},
		{"a damaged snapshot day list", snaps0, func() { write(snaps0, []byte("{")) }, "SHA-256"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			saved := map[string][]byte{day0: read(day0), snaps0: read(snaps0), ManifestKey: read(ManifestKey)}
			defer func() {
				for k, data := range saved {
					write(k, data)
				}
				os.Remove(path(short))
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
	open, closed := m.LedgerParts[0].Date, m.LedgerDays[0]
	sum := strings.Repeat("0123456789abcdef", 4)
	orphans := []string{
		ledgerListKey(open, sum), grantsListKey(open, sum), ledgerListKey("2030-01-01", sum),
		ledgerListKey(closed.Date, sum), // another list of a committed day
		closed.Key + ".18a2b3c4d5e6f708.tmp", grantsListKey(open, sum) + ".0123456789abcdef.tmp",
	}
	others := []string{
		"ledger/date=" + open + "/notes.json",
		listsPrefix + "notes.json", ledgerListsPrefix + "date=" + open + ".json", closed.Key + ".bak",
		ledgerListsPrefix + "date=" + open + "-" + strings.ToUpper(sum[:listHashChars]) + ".json",
	}
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

// A run that closes two days (lists for both, ledger and snapshots), under
// each retention, crashed after every object it stores, and after its
// commit at every deletion: the export reads as committed after the crash,
// and the rerun leaves exactly what a run without a crash leaves, byte for
// byte, and reports as the state does.
func TestACrashAtAnyObjectOfADayClosingRunIsCompletedByTheNextOne(t *testing.T) {
	if testing.Short() {
		t.Skip("about 30 crashed runs")
	}
	g := newGen(t, 41)
	base := t.TempDir()
	b0 := openDir(t, base)
	run(t, g, 300, 2*time.Hour) // day 0 up to 12:00
	exportOnce(t, FromFSM(g.F), b0, smallFiles())
	run(t, g, 200, 2*time.Hour) // up to 20:00
	exportOnce(t, FromFSM(g.F), b0, smallFiles())
	run(t, g, 400, 2*time.Hour) // into day 1 (12:00): day 0 closed
	exportOnce(t, FromFSM(g.F), b0, smallFiles())
	_, _, w, _ := g.Check()
	run(t, g, 1200, 2*time.Hour) // into day 3: days 1 and 2 close
	_, _, last, _ := g.Check()
	fromState, err := ReportFromSource(testCtx(t), FromFSM(g.F), day(-1), day(30), nil)
	if err != nil {
		t.Fatal(err)
	}

	// 0: lists for both days; 1: a whole snapshot day and manifest
	// snapshots dropped; 3: the retention cuts into day 0's list.
	for _, keep := range []int{0, 1, 3} {
		// The run without a crash.
		clean := copyTree(t, base)
		opts := smallFiles()
		opts.KeepGrantSnapshots = keep
		res := exportOnce(t, FromFSM(g.F), openDir(t, clean), opts)
		want := treeFiles(t, clean)
		objects := len(res.Parts) + 1 + 2*len(res.ClosedDays)
		for k := 1; k <= objects; k++ {
			dir := copyTree(t, base)
			b := openDir(t, dir)
			o := opts
			stored := 0
			o.AfterObject = func(key string) error {
				if stored++; stored == k {
					return errCrash
				}
				return nil
			}
			e, err := New(FromFSM(g.F), b, o)
			if err != nil {
				t.Fatal(err)
			}
			_, err = e.Run(testCtx(t))
			if !errors.Is(err, errCrash) {
				if stored < k {
					break // fewer objects than counted (no snapshot list)
				}
				t.Fatalf("keep %d, crash after object %d: %v", keep, k, err)
			}
			checkReadable(t, dir, w)
			exportOnce(t, FromFSM(g.F), b, opts)
			checkManifestMatchesFiles(t, dir, b, last)
			checkExactlyOnce(t, ledgerRows(t, dir), last)
			sameTrees(t, "crash then rerun vs no crash", want, treeFiles(t, dir))
			fromExport, err := ReportFromExport(testCtx(t), b, "", day(-1), day(30), nil)
			if err != nil || !slices.Equal(fromState.Rows, fromExport.Rows) {
				t.Errorf("keep %d, crash after object %d: report from the export %v differs from the state's", keep, k, err)
			}
		}
		// A crash after the commit, after i of the deletions that follow
		// it: the files the run removed after i are still there.
		before := treeFiles(t, base)
		for i := 0; i <= len(res.Removed); i++ {
			dir := copyTree(t, clean)
			for _, key := range res.Removed[i:] {
				p := filepath.Join(dir, filepath.FromSlash(key))
				os.MkdirAll(filepath.Dir(p), 0o755)
				if err := os.WriteFile(p, before[key], 0o644); err != nil {
					t.Fatal(err)
				}
			}
			checkReadable(t, dir, last)
			b := openDir(t, dir)
			exportOnce(t, FromFSM(g.F), b, opts) // nothing new: the sweep only
			checkManifestMatchesFiles(t, dir, b, last)
			sameTrees(t, "crash after the commit, then a run", want, treeFiles(t, dir))
		}
	}
}

// Retention turned on, changed and turned off across days and runs, from
// two replicas that applied the same log: every run leaves exactly the
// files its manifest covers, keeps the newest N snapshots (or every one
// since retention was last applied), and both destinations hold the same
// bytes.
func TestRetentionChangesAcrossDaysKeepTheNewestAndReplicasAgree(t *testing.T) {
	if testing.Short() {
		t.Skip("60 runs")
	}
	a, r := newGen(t, 42), newGen(t, 42)
	da, dr := t.TempDir(), t.TempDir()
	ba, br := openDir(t, da), openDir(t, dr)
	// keep per run, four runs a day (6 hours apart), 7 days.
	plan := []int{0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 5, 5, 5, 5, 5, 0, 0, 0, 0, 0, 2, 0, 0, 0, 0, 1000, 1000, 9, 0, 0}
	var kept []string
	for i, keep := range plan {
		for _, x := range []*ledgergen.Gen{a, r} {
			run(t, x, 150, 2*time.Hour) // 3 log entries, 6 hours
		}
		opts := smallFiles()
		opts.KeepGrantSnapshots = keep
		res := exportOnce(t, FromFSM(a.F), ba, opts)
		exportOnce(t, FromFSM(r.F), br, opts)
		kept = append(kept, res.Grants.Key)
		if keep > 0 && len(kept) > keep {
			kept = kept[len(kept)-keep:]
		}
		_, _, last, _ := a.Check()
		checkManifestMatchesFiles(t, da, ba, last)
		if got := committedSnapshots(t, da); !slices.Equal(got, kept) {
			t.Fatalf("run %d (keep %d): snapshots %v, want %v", i, keep, got, kept)
		}
		sameTrees(t, "replicas", treeFiles(t, da), treeFiles(t, dr))
	}
	_, _, last, _ := a.Check()
	checkExactlyOnce(t, ledgerRows(t, da), last)
	fromState, err := ReportFromSource(testCtx(t), FromFSM(a.F), day(-1), day(30), nil)
	if err != nil {
		t.Fatal(err)
	}
	fromExport, err := ReportFromExport(testCtx(t), ba, "", day(-1), day(30), nil)
	if err != nil || !slices.Equal(fromState.Rows, fromExport.Rows) {
		t.Errorf("the report from the export (%v) differs from the state's", err)
	}
}

// Log time exactly at midnight belongs to the new day, and a ledger with
// days without entries closes only the days it has: every list holds the
// entries of its date alone, each closed as soon as, and only when, the cut
// reaches a later day; a run with no new entries after midnight closes
// nothing.
func TestDaysCloseAtMidnightExactlyAndAcrossDaysWithoutEntries(t *testing.T) {
	g := newGen(t, 43)
	dir := t.TempDir()
	b := openDir(t, dir)
	steps := []struct {
		commands int
		step     time.Duration
		closed   int // closed days after the run
	}{
		{50, 12 * time.Hour, 0},  // day 0 12:00
		{50, 12 * time.Hour, 1},  // day 1 00:00:00 exactly: day 0 closed
		{50, time.Hour, 1},       // day 1 01:00
		{50, 71 * time.Hour, 2},  // day 4 00:00 exactly: days 2, 3 have no entries
		{0, 0, 2},                // no new entry
		{50, 24 * time.Hour, 3},  // day 5 00:00
		{50, 120 * time.Hour, 4}, // day 10 00:00
	}
	for i, s := range steps {
		if s.commands > 0 {
			run(t, g, s.commands, s.step)
		}
		exportOnce(t, FromFSM(g.F), b, smallFiles())
		_, _, last, _ := g.Check()
		m := checkManifestMatchesFiles(t, dir, b, last)
		if len(m.LedgerDays) != s.closed || len(m.GrantSnapshotDays) > s.closed {
			t.Fatalf("run %d: %d ledger days, %d snapshot days closed, want %d", i, len(m.LedgerDays), len(m.GrantSnapshotDays), s.closed)
		}
		byFile := map[string]string{}
		if err := m.EachLedgerPart(testCtx(t), b, func(p Part) error { byFile[p.Key] = p.Date; return nil }); err != nil {
			t.Fatal(err)
		}
		for _, r := range ledgerRows(t, dir) {
			if date := time.UnixMicro(r.timeMicros).UTC().Format(time.DateOnly); byFile[r.file] != date {
				t.Fatalf("entry %d at %s is in %s, listed as of %q", r.seq, date, r.file, byFile[r.file])
			}
		}
	}
}

// format1Near builds a format 1 manifest (what creditd wrote before day
// lists) just under size bytes: runs of one entry each, perDay a day, every
// run's part and snapshot listed, as a destination exported every minute
// for months reached the limit and stopped taking runs. It returns the
// manifest's bytes, its watermark and the day after its last one.
func format1Near(t *testing.T, size, perDay int) ([]byte, uint64, time.Time) {
	t.Helper()
	type snap1 struct {
		Key   string `json:"key"`
		Seq   uint64 `json:"seq"`
		Rows  int64  `json:"rows"`
		Bytes int64  `json:"bytes"`
	}
	start := ledgergen.Start.Time()
	old := format1{Format: 1, AppliedIndex: 1, LogTime: start.Format(time.RFC3339Nano)}
	add := func() {
		seq := uint64(len(old.LedgerParts)) + 1
		date := start.AddDate(0, 0, int(seq-1)/perDay).Format(time.DateOnly)
		old.LedgerParts = append(old.LedgerParts, Part{Key: partKey(date, seq, seq), Date: date, FirstSeq: seq, LastSeq: seq, Rows: 1, Bytes: 123_456})
		old.GrantSnapshots = append(old.GrantSnapshots, snap1{Key: grantsKey(seq), Seq: seq, Rows: 12_345, Bytes: 345_678})
		old.WatermarkSeq = seq
	}
	enc := func() []byte {
		data, err := encodeJSON(&old)
		if err != nil {
			t.Fatal(err)
		}
		return data
	}
	add()
	one := len(enc())
	add()
	per := len(enc()) - one
	for range (size-one)/per - 2 {
		add()
	}
	data := enc()
	for len(data) > size {
		// Longer numbers further on: drop the runs over, and a few more.
		drop := (len(data)-size)/(per+10) + 1
		old.LedgerParts, old.GrantSnapshots = old.LedgerParts[:len(old.LedgerParts)-drop], old.GrantSnapshots[:len(old.GrantSnapshots)-drop]
		old.WatermarkSeq -= uint64(drop)
		data = enc()
	}
	if len(data) > size || len(data) < size-200*per {
		t.Fatalf("built a format 1 manifest of %d bytes, want just under %d", len(data), size)
	}
	days := (int(old.WatermarkSeq) + perDay - 1) / perDay
	return data, old.WatermarkSeq, start.AddDate(0, 0, days)
}

// A format 1 destination at the limit the old creditd stopped at (it
// refused to commit past 64 MiB) is upgraded by the next run: every closed
// day into its list, the manifest small again, under each retention.
func TestAFormat1ManifestAtTheLimitIsUpgradedByTheNextRun(t *testing.T) {
	if testing.Short() {
		t.Skip("a 64 MiB manifest")
	}
	data, w, next := format1Near(t, maxManifestBytes, 1440)
	for _, tc := range []struct {
		keep    int
		sameDay bool // the run's entries are of the last day of the format 1 manifest
	}{{0, false}, {MaxKeepGrantSnapshots, false}} {
		keep := tc.keep
		dir := t.TempDir()
		if err := os.WriteFile(filepath.Join(dir, ManifestKey), data, 0o644); err != nil {
			t.Fatal(err)
		}
		b := openDir(t, dir)
		ts := fsm.TimestampOf(next.Add(time.Hour))
		if tc.sameDay {
			ts = fsm.TimestampOf(next.Add(-time.Minute))
		}
		cut := &memCut{types: map[string]fsm.CreditType{"ai": {ID: "ai", Scale: 2}}}
		for i := range uint64(5) {
			cut.entries = append(cut.entries, fsm.LedgerEntry{Seq: w + 1 + i, Time: ts, CustomerID: "c", CreditTypeID: "ai",
				Kind: fsm.EntryBurn, Amount: -1, BalanceAfter: -int64(i + 1), CauseKind: fsm.CauseUsage, CauseID: "e"})
		}
		e, err := New(cut, b, Options{KeepGrantSnapshots: keep})
		if err != nil {
			t.Fatal(err)
		}
		res, err := e.Run(testCtx(t))
		if err != nil {
			t.Fatalf("keep %d: the upgrade run: %v", keep, err)
		}
		m, err := ReadManifest(testCtx(t), b)
		if err != nil || m.Format != formatVersion || m.WatermarkSeq != w+5 {
			t.Fatalf("keep %d: after the upgrade: %+v, %v", keep, m.WatermarkSeq, err)
		}
		n := 0
		if err := m.EachLedgerPart(testCtx(t), b, func(Part) error { n++; return nil }); err != nil || n != int(w)+1 {
			t.Fatalf("keep %d: %d parts (%v), want %d", keep, n, err, w+1)
		}
		n = 0
		if err := m.EachGrantSnapshot(testCtx(t), b, func(Snapshot) error { n++; return nil }); err != nil {
			t.Fatal(err)
		}
		want := int(w) + 1
		if keep > 0 {
			want = min(keep, want)
		}
		if n != want {
			t.Errorf("keep %d: %d snapshots, want %d", keep, n, want)
		}
		if len(res.ClosedDays) < 100 || len(readRoot(t, dir)) > 20<<20 {
			t.Errorf("keep %d: %d days closed, manifest of %d bytes", keep, len(res.ClosedDays), len(readRoot(t, dir)))
		}
	}
}

// Warehouses that load a folder rather than a glob (Athena, Redshift
// Spectrum and Hive external tables with LOCATION …/ledger/, Spark and
// Databricks reading …/ledger as a dataset partitioned by date=, BigQuery
// with uris …/ledger/*) read every file under it that is not hidden
// (Hadoop's convention: a name starting with "_" or "."), and take the
// directories below as partitions of one key. So ledger/ holds only
// date=… folders of Parquet parts and grants/ only snapshot=… folders of
// Parquet snapshots; the day lists are in the hidden _lists/ at the root.
func TestAFolderLoaderFindsOnlyParquetUnderLedgerAndGrants(t *testing.T) {
	md := exportOverDays(t, 44, 2, 2, smallFiles())
	m, err := ReadManifest(testCtx(t), md.b)
	if err != nil || len(m.LedgerDays) == 0 || len(m.GrantSnapshotDays) == 0 {
		t.Fatalf("manifest %+v, %v: want closed days with lists", m, err)
	}
	for _, d := range slices.Concat(m.LedgerDays, m.GrantSnapshotDays) {
		if !strings.HasPrefix(d.Key, "_") {
			t.Errorf("the list %s is not in a hidden folder", d.Key)
		}
	}
	root, err := os.ReadDir(md.dir)
	if err != nil {
		t.Fatal(err)
	}
	for _, e := range root {
		if name := e.Name(); name != ManifestKey && name != "ledger" && name != "grants" && name != "_lists" {
			t.Errorf("%s at the root of the export", name)
		}
	}
	for _, table := range []struct{ prefix, partition string }{{"ledger", "date="}, {"grants", "snapshot="}} {
		root := filepath.Join(md.dir, table.prefix)
		err := filepath.WalkDir(root, func(path string, d fs.DirEntry, err error) error {
			if err != nil {
				return err
			}
			rel, _ := filepath.Rel(md.dir, path)
			rel = filepath.ToSlash(rel)
			name := d.Name()
			if path == root || name[0] == '_' || name[0] == '.' {
				return nil
			}
			if d.IsDir() {
				if !strings.HasPrefix(name, table.partition) || filepath.Dir(path) != root {
					t.Errorf("%s: a partition folder of another key than %s in the %s table", rel, table.partition, table.prefix)
				}
				return nil
			}
			data, err := os.ReadFile(path)
			if err != nil {
				return err
			}
			if len(data) < 8 || string(data[:4]) != "PAR1" || string(data[len(data)-4:]) != "PAR1" {
				t.Errorf("%s is not Parquet, and not hidden: a loader of %s/ reads it as a data file", rel, table.prefix)
			}
			return nil
		})
		if err != nil {
			t.Fatal(err)
		}
	}
}

// emptyFolders lists the folders under dir that hold nothing.
func emptyFolders(t *testing.T, dir string) []string {
	t.Helper()
	var empty []string
	err := filepath.WalkDir(dir, func(path string, d fs.DirEntry, err error) error {
		if err != nil || !d.IsDir() {
			return err
		}
		if entries, err := os.ReadDir(path); err == nil && len(entries) == 0 {
			rel, _ := filepath.Rel(dir, path)
			empty = append(empty, filepath.ToSlash(rel))
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	return empty
}

// Under a retention every run deletes a snapshot (and, when it drops a
// closed day, the day's lists), and the sweep deletes what a crashed run
// left; in a directory destination each lives in a folder of its own
// (grants/snapshot=N/, a new day's ledger/date=D/), which must go with it,
// or one more empty folder would stay per run, forever, for every sweep to
// walk.
func TestRetentionAndTheSweepLeaveNoEmptyFolders(t *testing.T) {
	md := exportOverDays(t, 45, 2, 3, smallFiles())
	opts := smallFiles()
	opts.KeepGrantSnapshots = 1
	for range 4 {
		run(t, md.g, 100, 2*time.Hour)
		res := exportOnce(t, FromFSM(md.g.F), md.b, opts)
		if len(res.Removed) == 0 {
			t.Fatal("the run removed nothing: the test covers nothing")
		}
	}
	if empty := emptyFolders(t, md.dir); len(empty) > 0 {
		t.Errorf("retention left %d empty folders behind: %v", len(empty), empty)
	}
	if _, err := os.Stat(filepath.Join(md.dir, "_lists", "grants")); !os.IsNotExist(err) {
		t.Errorf("_lists/grants/ stays after its last list was dropped: %v", err)
	}

	// A crashed run's part of a later day and its snapshot, alone in their
	// folders, then the sweep.
	_, _, last, _ := md.g.Check()
	for _, key := range []string{partKey("2030-01-01", last+1, last+9), grantsKey(last + 9)} {
		path := filepath.Join(md.dir, filepath.FromSlash(key))
		if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(path, []byte("PAR1"), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	run(t, md.g, 50, time.Hour)
	exportOnce(t, FromFSM(md.g.F), md.b, opts)
	_, _, last, _ = md.g.Check()
	checkManifestMatchesFiles(t, md.dir, md.b, last)
	if empty := emptyFolders(t, md.dir); len(empty) > 0 {
		t.Errorf("the sweep left %d empty folders behind: %v", len(empty), empty)
	}
}

// hookSource calls beforeScan before every ledger scan of its cuts: a run
// scans its range (W, C] right after its sweep, before it writes anything.
type hookSource struct {
	Source
	beforeScan func(from, to uint64)
}

func (s hookSource) Read(fn func(Cut) error) error {
	return s.Source.Read(func(c Cut) error { return fn(hookCut{c, s.beforeScan}) })
}

type hookCut struct {
	Cut
	beforeScan func(from, to uint64)
}

func (c hookCut) ScanLedger(from, to uint64, fn func(*fsm.LedgerEntry) error) error {
	c.beforeScan(from, to)
	return c.Cut.ScanLedger(from, to, fn)
}

// Two exporters that overlap (one exporter per destination is the rule,
// but a leadership change can break it for a moment) close the same day
// with other part sizes: each writes its own list of it. Named for their
// content, neither list replaces the other. With one name per day the
// second list replaced the first under the manifest that named it: a
// damaged list, refused by every later run and report. The run that
// commits second is now refused (the manifest is no longer the one it
// started from) and removes its own list and parts, which the committed
// manifest does not name.
func TestOverlappingExportersNeverReplaceAListTheManifestNames(t *testing.T) {
	g := newGen(t, 38)
	dir := t.TempDir()
	b := openDir(t, dir)
	run(t, g, 300, 2*time.Hour) // day 0 up to 12:00
	exportOnce(t, FromFSM(g.F), b, smallFiles())
	_, _, w, _ := g.Check()
	run(t, g, 400, 2*time.Hour) // into day 1: day 0 closed

	// B sweeps and stops; A sweeps, writes its parts and its list of day
	// 0, and stops; B writes its own and commits; then A tries to.
	bSwept, bGo, aListed, aGo := make(chan struct{}), make(chan struct{}), make(chan struct{}), make(chan struct{})
	var once sync.Once
	srcB := hookSource{FromFSM(g.F), func(from, _ uint64) {
		if from == w+1 {
			once.Do(func() { close(bSwept); <-bGo })
		}
	}}
	optsB := smallFiles()
	optsB.FileRows = 250
	optsA := smallFiles()
	var aList string
	optsA.AfterObject = func(key string) error {
		if strings.HasPrefix(key, ledgerListsPrefix) {
			aList = key
			close(aListed)
			<-aGo
		}
		return nil
	}
	start := func(src Source, opts Options) <-chan error {
		e, err := New(src, b, opts)
		if err != nil {
			t.Fatal(err)
		}
		done := make(chan error, 1)
		go func() { _, err := e.Run(testCtx(t)); done <- err }()
		return done
	}
	await := func(what string, ch <-chan struct{}, done <-chan error) {
		t.Helper()
		select {
		case <-ch:
		case err := <-done:
			t.Fatalf("the run ended (%v) before %s", err, what)
		}
	}
	doneB := start(srcB, optsB)
	await("B's sweep", bSwept, doneB)
	doneA := start(FromFSM(g.F), optsA)
	await("A's list", aListed, doneA)
	close(bGo)
	if err := <-doneB; err != nil {
		t.Fatalf("exporter B: %v", err)
	}
	bRoot := readRoot(t, dir)
	close(aGo)
	if err := <-doneA; !errors.Is(err, ErrConcurrentExport) || !strings.Contains(err.Error(), "the manifest changed") {
		t.Fatalf("exporter A: %v; want %v: the manifest changed", err, ErrConcurrentExport)
	}

	// B's manifest stands and reads whole, with B's list of day 0; A's
	// list and parts are gone: the files are exactly B's.
	_, _, last, _ := g.Check()
	if string(readRoot(t, dir)) != string(bRoot) {
		t.Fatal("A replaced B's manifest")
	}
	m := checkManifestMatchesFiles(t, dir, b, last)
	checkExactlyOnce(t, ledgerRows(t, dir), last)
	if len(m.LedgerDays) != 1 || m.LedgerDays[0].Key == aList {
		t.Fatalf("closed days %+v; want B's list of day 0, not A's %s", m.LedgerDays, aList)
	}
	checkReadable(t, dir, last)
	run(t, g, 50, time.Hour)
	exportOnce(t, FromFSM(g.F), b, smallFiles())
	_, _, last, _ = g.Check()
	checkManifestMatchesFiles(t, dir, b, last)
	checkReadable(t, dir, last)
}

// The sweep looks for uncommitted parts only in the date folders a run can
// have written: from the last committed part's date on (an uncommitted
// part holds entries past the watermark, and log time never goes
// backwards). Folders of earlier days are not listed, so a destination
// exported every minute does not list half a million parts a year on every
// run. A part-named object in an earlier day's folder is therefore left as
// it is, which it can only be if someone else put it there.
func TestTheSweepListsOnlyTheDaysARunCanHaveWritten(t *testing.T) {
	md := exportOverDays(t, 37, 2, 2, smallFiles())
	m, err := ReadManifest(testCtx(t), md.b)
	if err != nil {
		t.Fatal(err)
	}
	open, closed, w := m.LedgerParts[len(m.LedgerParts)-1].Date, m.LedgerDays[0].Date, m.WatermarkSeq
	swept := []string{partKey(open, w+1, w+5), partKey(open, w+6, w+9) + ".0123456789abcdef.tmp"}
	unlisted := partKey(closed, w+1, w+5)
	for _, k := range append(slices.Clone(swept), unlisted) {
		path := filepath.Join(md.dir, filepath.FromSlash(k))
		if err := os.WriteFile(path, []byte("PAR1"), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	run(t, md.g, 50, 2*time.Hour) // the open day stays open
	res := exportOnce(t, FromFSM(md.g.F), md.b, smallFiles())
	for _, k := range swept {
		if !slices.Contains(res.Removed, k) {
			t.Errorf("%s, uncommitted in the open day's folder, was not removed (removed: %v)", k, res.Removed)
		}
	}
	if slices.Contains(res.Removed, unlisted) {
		t.Errorf("%s in the closed day %s's folder was removed: the sweep listed a day no run can add to", unlisted, closed)
	}
}

// The sweep once listed every object under grants/ on every run: with
// every snapshot kept, a run a minute adds half a million snapshot folders
// a year, all listed every minute. It now lists, by prefixes of the
// zero-padded seqs in their names, only the snapshots from the last closed
// snapshot day on, up to the cut (at most 10 prefixes): where a snapshot
// past the watermark, or an uncommitted one of the open day, can be. A
// snapshot-named object between two older closed days is therefore left
// as it is (only someone else can have put it there). Under a retention,
// grants/ holds about the snapshots kept, and it is listed whole, so a
// snapshot the retention dropped whose deletion was cut short is still
// removed.
func TestTheSweepListsOnlyTheSnapshotsARunCanHaveWritten(t *testing.T) {
	plant := func(t *testing.T, dir string, keys ...string) {
		t.Helper()
		for _, k := range keys {
			path := filepath.Join(dir, filepath.FromSlash(k))
			if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
				t.Fatal(err)
			}
			if err := os.WriteFile(path, []byte("PAR1"), 0o644); err != nil {
				t.Fatal(err)
			}
		}
	}
	t.Run("every snapshot kept", func(t *testing.T) {
		md := exportOverDays(t, 39, 3, 2, smallFiles())
		m, err := ReadManifest(testCtx(t), md.b)
		if err != nil {
			t.Fatal(err)
		}
		days, w := m.GrantSnapshotDays, m.WatermarkSeq
		if len(days) < 3 || days[0].LastSeq+1 >= days[1].FirstSeq {
			t.Fatalf("snapshot days %+v: want three, the first two with a gap between them", days)
		}
		swept := []string{grantsKey(w + 3), grantsKey(w+5) + ".0123456789abcdef.tmp"}
		// Uncommitted in the open day, inside the watermark.
		if open := days[len(days)-1].LastSeq + 1; !slices.ContainsFunc(m.GrantSnapshots, func(s Snapshot) bool { return s.Seq == open }) {
			swept = append(swept, grantsKey(open))
		} else {
			t.Fatalf("the open day's first entry %d has a snapshot: the test needs another ledger", open)
		}
		unlisted := grantsKey(days[0].LastSeq + 1) // uncommitted, between two closed days
		plant(t, md.dir, append(slices.Clone(swept), unlisted)...)
		run(t, md.g, 50, 2*time.Hour) // the open day stays open
		res := exportOnce(t, FromFSM(md.g.F), md.b, smallFiles())
		if res.ToSeq < w+5 {
			t.Fatalf("the run's cut %d is not past the planted snapshots", res.ToSeq)
		}
		for _, k := range swept {
			if !slices.Contains(res.Removed, k) {
				t.Errorf("%s, uncommitted past the watermark, was not removed (removed: %v)", k, res.Removed)
			}
		}
		if slices.Contains(res.Removed, unlisted) {
			t.Errorf("%s, between the closed days %s and %s, was removed: the sweep listed snapshots no run can add to",
				unlisted, days[0].Date, days[1].Date)
		}
		_, _, last, _ := md.g.Check()
		checkReadable(t, md.dir, last)
	})
	t.Run("under a retention", func(t *testing.T) {
		opts := smallFiles()
		opts.KeepGrantSnapshots = 2
		md := exportOverDays(t, 39, 2, 2, opts)
		m, err := ReadManifest(testCtx(t), md.b)
		if err != nil {
			t.Fatal(err)
		}
		leftover := grantsKey(m.GrantSnapshots[0].Seq - 1) // dropped, its deletion cut short
		plant(t, md.dir, leftover)
		run(t, md.g, 50, 2*time.Hour)
		res := exportOnce(t, FromFSM(md.g.F), md.b, opts)
		if !slices.Contains(res.Removed, leftover) {
			t.Errorf("%s, left by a retention, was not removed (removed: %v)", leftover, res.Removed)
		}
	})
}

// seqPrefixes covers every seq of a range with at most maxSweepPrefixes
// name prefixes, each seq once, reaching back no further than the floor
// unless that would take more prefixes.
func TestSeqPrefixesCoverTheRangeOnceWithFewPrefixes(t *testing.T) {
	pfx := func(v uint64, digits int) string { return fmt.Sprintf("p%0*d", digits, v) }
	for _, tc := range []struct {
		name            string
		floor, from, to uint64
		want            []string // nil: only the properties are checked
		reachBelowFloor bool
	}{
		{"blocks from the floor's on", 1250, 1751, 1900, []string{pfx(17, 18), pfx(18, 18), pfx(19, 18)}, false},
		{"a floor far back takes one prefix", 0, 1751, 1900, []string{"p"}, false},
		{"a range inside one block", 1700, 1751, 1760, []string{pfx(17, 18)}, false},
		{"from equals to", 1751, 1751, 1751, []string{pfx(1751, 20)}, false},
		{"from after to is taken as from", 10, 20, 5, []string{pfx(2, 19)}, false},
		{"a floor just below from", 1750, 1751, 1900, nil, false},
		{"a long range after a short day reaches below the floor, in 10 prefixes", 1_000_000_005, 1_000_000_006, 1_999_999_999, nil, true},
		{"a long range from a round floor", 999_999_990, 999_999_991, 1_234_567_890, nil, false},
		{"the largest seqs", 18446744073709551000, 18446744073709551600, 18446744073709551615, nil, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got := seqPrefixes("p", tc.floor, tc.from, tc.to)
			if tc.want != nil && !slices.Equal(got, tc.want) {
				t.Fatalf("prefixes %v, want %v", got, tc.want)
			}
			if len(got) > maxSweepPrefixes {
				t.Fatalf("%d prefixes, more than %d: %v", len(got), maxSweepPrefixes, got)
			}
			to := max(tc.to, tc.from)
			covering := func(seq uint64) int {
				name := "p" + fmt.Sprintf("%020d", seq)
				n := 0
				for _, p := range got {
					if strings.HasPrefix(name, p) {
						n++
					}
				}
				return n
			}
			for _, seq := range []uint64{tc.from, to, tc.from + (to-tc.from)/3, tc.from + (to-tc.from)/2, to - (to-tc.from)/7} {
				if n := covering(seq); n != 1 {
					t.Errorf("seq %d is covered by %d of %v, want 1", seq, n, got)
				}
			}
			for seq := tc.from; seq-tc.from < 5000; seq++ {
				if n := covering(seq); n != 1 {
					t.Fatalf("seq %d is covered by %d of %v, want 1", seq, n, got)
				}
				if seq == to {
					break
				}
			}
			if !tc.reachBelowFloor && tc.floor > 0 && covering(tc.floor-1) != 0 {
				t.Errorf("%v reaches below the floor %d", got, tc.floor)
			}
		})
	}
}
