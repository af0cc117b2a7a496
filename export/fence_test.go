package export

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"gocloud.dev/blob"

	"github.com/creditd/creditd/export/internal/ledgergen"
)

// A run builds on the committed export: it carries the manifest's day lists
// into the manifest it commits. It once committed on top of a missing or
// damaged list (which every report then refused); it refuses instead,
// naming the list and what is wrong, and writes, deletes and commits
// nothing. Every list the manifest names is looked for in the listing the
// sweep does anyway; the newest list of each kind, and one more of each the
// watermark picks, are read and checked whole.
func TestARunRefusesToBuildOnAMissingOrDamagedCommittedExport(t *testing.T) {
	md := exportOverDays(t, 45, 3, 2, smallFiles())
	m, err := ReadManifest(testCtx(t), md.b)
	if err != nil || len(m.LedgerDays) < 3 || len(m.GrantSnapshotDays) < 3 {
		t.Fatalf("manifest %+v, %v: want closed days", m, err)
	}
	newestDay, newestSnaps := m.LedgerDays[len(m.LedgerDays)-1], m.GrantSnapshotDays[len(m.GrantSnapshotDays)-1]
	picked := m.LedgerDays[m.WatermarkSeq%uint64(len(m.LedgerDays))]
	oldestSnaps := m.GrantSnapshotDays[0]
	if picked.Key == newestDay.Key {
		t.Fatalf("the watermark %d picks the newest list: choose a seed that picks another", m.WatermarkSeq)
	}
	type damage func(t *testing.T, dir string)
	remove := func(key string) damage {
		return func(t *testing.T, dir string) {
			if err := os.Remove(filepath.Join(dir, filepath.FromSlash(key))); err != nil {
				t.Fatal(err)
			}
		}
	}
	replace := func(key string, with func(old []byte) []byte) damage {
		return func(t *testing.T, dir string) {
			path := filepath.Join(dir, filepath.FromSlash(key))
			if err := os.WriteFile(path, with(readFile(t, dir, key)), 0o644); err != nil {
				t.Fatal(err)
			}
		}
	}
	for _, tc := range []struct {
		name       string
		nothingNew bool // no entry past the watermark: the run would commit nothing anyway
		key        string
		damage     damage
		want       error
		what       string
	}{
		{"an old ledger day's list missing, nothing new to export", true, m.LedgerDays[0].Key, remove(m.LedgerDays[0].Key), ErrDamagedList, "missing"},
		{"an old ledger day's list missing", false, m.LedgerDays[0].Key, remove(m.LedgerDays[0].Key), ErrDamagedList, "missing"},
		{"an old snapshot day's list missing", false, oldestSnaps.Key, remove(oldestSnaps.Key), ErrDamagedList, "missing"},
		{"the newest ledger day's list truncated", false, newestDay.Key,
			replace(newestDay.Key, func(old []byte) []byte { return old[:len(old)/2] }), ErrDamagedList, "SHA-256"},
		{"the newest snapshot day's list replaced by another day's", false, newestSnaps.Key,
			replace(newestSnaps.Key, func([]byte) []byte { return readFile(t, md.dir, oldestSnaps.Key) }), ErrDamagedList, "SHA-256"},
		{"the list the watermark picks edited", false, picked.Key,
			replace(picked.Key, func(old []byte) []byte { return []byte(strings.Replace(string(old), `"rows": `, `"rows": 1`, 1)) }),
			ErrDamagedList, "SHA-256"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if !tc.nothingNew && m.WatermarkSeq == md.g.F.LastSeq() {
				run(t, md.g, 50, 2*time.Hour) // the open day stays open
			}
			if tc.nothingNew && m.WatermarkSeq != md.g.F.LastSeq() {
				t.Fatal("the cases with nothing new go first")
			}
			dir := copyTree(t, md.dir)
			tc.damage(t, dir)
			before := treeFiles(t, dir)
			e, err := New(FromFSM(md.g.F), openDir(t, dir), smallFiles())
			if err != nil {
				t.Fatal(err)
			}
			_, err = e.Run(testCtx(t))
			if !errors.Is(err, tc.want) || !strings.Contains(err.Error(), tc.key) || !strings.Contains(err.Error(), tc.what) {
				t.Fatalf("run: %v; want %v naming %s: %s", err, tc.want, tc.key, tc.what)
			}
			sameTrees(t, "before and after the refused run", before, treeFiles(t, dir))
		})
	}
}

// pause holds a run at one point (a hook) until released, once.
type pause struct {
	reached, release chan struct{}
	once             sync.Once
}

func newPause() *pause { return &pause{reached: make(chan struct{}), release: make(chan struct{})} }

func (p *pause) wait() { p.once.Do(func() { close(p.reached); <-p.release }) }

// startRun runs an export in the background.
func startRun(t *testing.T, src Source, b *blob.Bucket, opts Options) <-chan error {
	t.Helper()
	e, err := New(src, b, opts)
	if err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() { _, err := e.Run(testCtx(t)); done <- err }()
	return done
}

// awaitPause waits until the run reaches p, failing if it ends first.
func awaitPause(t *testing.T, what string, p *pause, done <-chan error) {
	t.Helper()
	select {
	case <-p.reached:
	case err := <-done:
		t.Fatalf("the run ended (%v) before %s", err, what)
	}
}

// Two exporters overlapping against one destination (the scheduled export
// on the old and the new leader at a leadership change, a manual export
// while serve exports) were not coordinated: the run that committed last
// replaced the other's newer manifest, or left its parts of other sizes
// inside the watermark, and a sweep deleted what the other run had stored
// (committed or about to be). Now a run commits only over the manifest it
// started from, byte for byte, and only naming objects that are there; a
// sweep deletes only while the manifest is still the one it read. The run
// that loses is refused with ErrConcurrentExport, commits nothing and
// removes what it stored that the winner's manifest does not name.
func TestOverlappingExportersNeverCommitOverEachOtherNorDeleteWhatTheOtherCommitted(t *testing.T) {
	for _, tc := range []struct {
		name string
		// pauseA holds run A at its read barrier (before its sweep) or
		// after its first stored object; run B goes whole meanwhile.
		atBarrier bool
		// bCrashes: B crashes after its first object (after its sweep),
		// committing nothing.
		bCrashes bool
		// aBehind: A exports from a replica whose cut is before B's.
		aBehind bool
		want    string // in A's error
	}{
		{name: "B's sweep removes A's stored part, then B commits", want: "is gone"},
		{name: "B's sweep removes A's stored part, then B crashes before committing", bCrashes: true, want: "is gone"},
		{name: "B commits before A, from a replica behind, sweeps", atBarrier: true, aBehind: true, want: "the manifest changed"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			g, replica := newGen(t, 39), newGen(t, 39)
			dir := t.TempDir()
			b := openDir(t, dir)
			for _, x := range []*ledgergen.Gen{g, replica} {
				run(t, x, 300, 2*time.Hour) // day 0 up to 12:00
			}
			exportOnce(t, FromFSM(g.F), b, smallFiles())
			_, _, w, _ := g.Check()
			committed := readRoot(t, dir)
			for _, x := range []*ledgergen.Gen{g, replica} {
				run(t, x, 200, 2*time.Hour) // up to 20:00
			}
			run(t, g, 400, 2*time.Hour) // into day 1: g's cut closes day 0

			srcA := FromFSM(g.F)
			if tc.aBehind {
				srcA = FromFSM(replica.F)
			}
			p := newPause()
			optsA := smallFiles()
			if tc.atBarrier {
				optsA.Barrier = func(ctx context.Context) error { p.wait(); return nil }
			} else {
				optsA.AfterObject = func(string) error { p.wait(); return nil }
			}
			doneA := startRun(t, srcA, b, optsA)
			awaitPause(t, "its pause", p, doneA)

			// B, with other part sizes: its parts have other names than A's.
			optsB := smallFiles()
			optsB.FileRows = 250
			if tc.bCrashes {
				optsB.AfterObject = func(string) error { return errCrash }
			}
			eB, err := New(FromFSM(g.F), b, optsB)
			if err != nil {
				t.Fatal(err)
			}
			if _, err := eB.Run(testCtx(t)); (err != nil) != tc.bCrashes || (tc.bCrashes && !errors.Is(err, errCrash)) {
				t.Fatalf("run B: %v", err)
			}
			if !tc.bCrashes {
				committed = readRoot(t, dir)
			}
			close(p.release)
			err = <-doneA
			if !errors.Is(err, ErrConcurrentExport) || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("run A: %v; want %v: %s", err, ErrConcurrentExport, tc.want)
			}
			if got := readRoot(t, dir); string(got) != string(committed) {
				t.Fatalf("A committed over the manifest:\n%s\nwant\n%s", got, committed)
			}
			// The manifest reads whole, naming only objects that are there,
			// and A left nothing that the next run's sweep would not find.
			last := w
			if !tc.bCrashes {
				_, _, last, _ = g.Check()
				checkManifestMatchesFiles(t, dir, b, last)
				checkExactlyOnce(t, ledgerRows(t, dir), last)
			}
			checkReadable(t, dir, last)
			exportOnce(t, FromFSM(g.F), b, smallFiles())
			_, _, last, _ = g.Check()
			checkManifestMatchesFiles(t, dir, b, last)
			checkExactlyOnce(t, ledgerRows(t, dir), last)
			checkReadable(t, dir, last)
		})
	}
}
