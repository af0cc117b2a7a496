package fsm

import (
	"fmt"
	"path/filepath"
	"testing"
	"time"
)

// Pruning in step never deletes a record a lookup still sees: a log of
// entries of the current version (which, from version 2, prune as many old
// records as they store) answers exactly as the same log written as version
// 1 entries (which leave pruning to Ticks, at most maxPruneBatch each and
// only of generations no lookup sees), however either is grouped into Apply
// calls, with generations turning over within one Apply. The log starts no
// automatic top-up (its customers have no plan), the only other rules the
// versions differ by (its first entry, with customers, stays as it is:
// their layout differs by version).
func TestPruningInStepAnswersAsNoPruningDoes(t *testing.T) {
	for _, retention := range []time.Duration{10 * time.Minute, 30 * time.Minute} {
		for _, seed := range []uint64{3, 11} {
			t.Run(fmt.Sprintf("retention %s, seed %d", retention, seed), func(t *testing.T) {
				v2 := idemChurnLog(seed, 400)
				v1 := make([]Entry, len(v2))
				for i, e := range v2 {
					d := append([]byte(nil), e.Data...)
					if i > 0 { // the first sets up, with an UpsertCustomer laid out as of version 2
						d[0] = 1
					}
					v1[i] = Entry{Index: e.Index, Data: d}
				}
				opts := Options{NoSync: true, IdempotencyRetention: retention}
				answers := func(log []Entry, perApply int) []string {
					f, err := Open(filepath.Join(t.TempDir(), "state.db"), opts)
					if err != nil {
						t.Fatal(err)
					}
					defer f.Close()
					var got []string
					applyAll(t, f, log, perApply, func(rs [][]Result) {
						for _, r := range rs {
							got = append(got, resultsText(t, r))
						}
					})
					return got
				}
				want := answers(v1, 1)
				for _, perApply := range []int{1, 37} {
					got := answers(v2, perApply)
					for i := range want {
						if got[i] != want[i] {
							t.Fatalf("%d entries per Apply: entry %d answered\n%s\nwithout pruning in step\n%s", perApply, i+1, got[i], want[i])
						}
					}
				}
			})
		}
	}
}
