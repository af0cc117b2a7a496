package fsm

import (
	"fmt"
	"os"
	"path/filepath"
	"reflect"
	"strconv"
	"strings"
	"testing"
	"time"

	bolt "go.etcd.io/bbolt"
)

func rssFileKB(t *testing.T) int {
	t.Helper()
	b, err := os.ReadFile("/proc/self/status")
	if err != nil {
		t.Skip("no /proc/self/status here")
	}
	for _, l := range strings.Split(string(b), "\n") {
		if f := strings.Fields(l); len(f) >= 2 && f[0] == "RssFile:" {
			kb, _ := strconv.Atoi(f[1])
			return kb
		}
	}
	t.Skip("no RssFile in /proc/self/status")
	return 0
}

// A state file without a stored freelist (a restored snapshot, or one
// written by an older creditd) is read whole at open to rebuild the
// freelist; Open must not leave all those pages resident in the process.
func TestOpenLeavesOnlyTheWorkingSetResident(t *testing.T) {
	h := newHarness(t)
	h.ok(CreateCreditType{ID: "ai", Scale: 0})
	var cmds []Command
	for i := range 5000 {
		cu := fmt.Sprintf("cust-%06d", i)
		cmds = append(cmds, UpsertCustomer{ID: cu})
		for g := range 3 {
			cmds = append(cmds, CreateGrant{ID: fmt.Sprintf("%s-g%d", cu, g), CustomerID: cu, CreditTypeID: "ai", Amount: 1000})
		}
	}
	h.apply(cmds...)
	path := h.f.path
	h.f.Close()

	db, err := bolt.Open(path, 0o600, &bolt.Options{NoFreelistSync: true})
	if err != nil {
		t.Fatal(err)
	}
	if err := db.Update(func(tx *bolt.Tx) error { return tx.Bucket(bMeta).Put([]byte("x"), nil) }); err != nil {
		t.Fatal(err)
	}
	db.Close()
	st, err := os.Stat(path)
	if err != nil {
		t.Fatal(err)
	}

	before := rssFileKB(t)
	f, err := Open(path, Options{NoSync: true})
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	grew := rssFileKB(t) - before
	if limit := int(st.Size() / 1024 / 4); grew > limit {
		t.Errorf("opening a %d KB state file left %d KB more of it resident, want under %d KB", st.Size()/1024, grew, limit)
	}
}

// poolPageFill is how full the pools bucket's leaf pages are.
func poolPageFill(t *testing.T, h *harness) float64 {
	t.Helper()
	var st bolt.BucketStats
	if err := h.f.db.View(func(tx *bolt.Tx) error { st = tx.Bucket(bPool).Stats(); return nil }); err != nil {
		t.Fatal(err)
	}
	return float64(st.LeafInuse) / float64(st.LeafAlloc)
}

// Pools loaded in key order fill their pages; pools that then grow in
// place (each burn adds to the pool's run of ledger sequences) must not
// leave a trail of nearly empty pages, which every batch touching most
// pools would rewrite. Both fail with one split point for all pools: at
// 90 % the pages end 17 % full (50 % here), at 50 % the load leaves them
// 49 % full (88 % here).
func TestPoolPagesStayFullWhenLoadedAndWhenGrownInPlace(t *testing.T) {
	h := newHarness(t)
	h.ok(CreateCreditType{ID: "ai", Scale: 2})
	h.ok(UpsertFeature{ID: "tokens", CreditTypeID: "ai", Rate: mustDec("0.001")})
	const pools = 1000
	var cmds []Command
	for p := range pools {
		cu := fmt.Sprintf("cust-%07d", p)
		cmds = append(cmds, UpsertCustomer{ID: cu}, CreateGrant{ID: cu + "-g", CustomerID: cu, CreditTypeID: "ai",
			Category: Paid, Amount: 1 << 40, CostBasis: mustDec("0.01"), Currency: "USD"})
	}
	h.apply(cmds...)
	if fill := poolPageFill(t, h); fill < 0.8 {
		t.Errorf("pools loaded in key order: pages %.1f %% full, want ≥ 80 %%", 100*fill)
	}
	next := 0
	for range 100 {
		evs := make([]UsageEvent, 1000)
		for j := range evs {
			evs[j] = UsageEvent{ID: fmt.Sprintf("ev-%d", next), CustomerID: fmt.Sprintf("cust-%07d", (next*7919)%pools),
				FeatureID: "tokens", Quantity: 1500}
			next++
		}
		h.apply(BurnUsage{Events: evs})
	}
	if fill := poolPageFill(t, h); fill < 0.4 {
		t.Errorf("pools after 100 batches of in-place growth: pages %.1f %% full, want ≥ 40 %%", 100*fill)
	}
}

// TestASecondOpenOfTheSameFileSaysWhoHoldsIt: two processes on one data dir
// would corrupt it; the second waits for the file's lock, then says why.
func TestASecondOpenOfTheSameFileSaysWhoHoldsIt(t *testing.T) {
	path := filepath.Join(t.TempDir(), "state.db")
	f, err := Open(path, Options{NoSync: true})
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	_, err = Open(path, Options{NoSync: true})
	if err == nil || !strings.Contains(err.Error(), "another process holds its lock") {
		t.Fatalf("got %v, want an error saying another process holds the file", err)
	}
}

// ApplyAnswering hands out results before its transaction commits; a
// reader who was answered and then reads must still see what it was
// answered, and the answers must be Apply's results.
func TestAReadBegunAfterAnEarlyAnswerSeesTheAnsweredState(t *testing.T) {
	h := newHarness(t)
	h.seed()
	h.promo("g1", 1000)
	e := h.entry(BurnUsage{Events: []UsageEvent{{ID: "u1", CustomerID: "c1", CreditTypeID: "ai", Credits: 300}}})

	var answered [][]Result
	var readBalance int64
	var readIndex, indexAtAnswer, seqAtAnswer, storedAtAnswer uint64
	seqBefore := h.f.LastSeq()
	read := make(chan error, 1)
	results, err := h.f.ApplyAnswering([]Entry{e}, func(rs [][]Result) {
		answered = rs
		indexAtAnswer, seqAtAnswer = h.f.AppliedIndex(), h.f.LastSeq()
		// The committed state, read as no View may read it here (a View
		// would wait for the commit that waits for this answer).
		if err := h.f.ViewCommitted(func(v *View) error { storedAtAnswer = v.AppliedIndex(); return nil }); err != nil {
			t.Error(err)
		}
		// A caller woken by this answer reads at once, while the
		// transaction has yet to write and commit.
		started := make(chan struct{})
		go func() {
			close(started)
			read <- h.f.View(func(v *View) error {
				b, err := v.Balance("c1", "ai")
				readBalance, readIndex = b.Balance, b.AppliedIndex
				return err
			})
		}()
		<-started
		// Let the read reach its transaction before this Apply commits:
		// should the goroutine run later, the read only starts after the
		// commit and the test still passes (it cannot fail wrongly).
		time.Sleep(20 * time.Millisecond)
	})
	if err != nil {
		t.Fatal(err)
	}
	if err := <-read; err != nil {
		t.Fatal(err)
	}
	seqAfter := h.f.LastSeq()
	// The accessors move with the answer, the stored state with the commit.
	if indexAtAnswer != e.Index || seqAtAnswer != seqAfter || seqAfter == seqBefore {
		t.Errorf("at the answer: applied index %d, last seq %d; want the entry's %d and the seq after it %d (before it %d)",
			indexAtAnswer, seqAtAnswer, e.Index, seqAfter, seqBefore)
	}
	if storedAtAnswer >= e.Index {
		t.Errorf("the stored applied index at the answer = %d, want it below the entry's %d (answered before the commit)", storedAtAnswer, e.Index)
	}
	if len(answered) != 1 || len(answered[0]) != 1 || len(results[0]) != 1 || !reflect.DeepEqual(answered, results) {
		t.Fatalf("answered %+v, Apply returned %+v; want the same results", answered, results)
	}
	if got := answered[0][0].Value.([]EventResult)[0]; got.Status != EventBurned || got.Credits != 300 {
		t.Fatalf("answered %+v, want 300 credits burned", got)
	}
	if readBalance != 700 || readIndex != e.Index {
		t.Errorf("a read begun after the answer saw balance %d at index %d, want 700 at %d", readBalance, readIndex, e.Index)
	}
}
