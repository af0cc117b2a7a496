package export

import (
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
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
