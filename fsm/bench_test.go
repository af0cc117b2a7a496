package fsm

import (
	"fmt"
	"testing"
	"time"
)

// benchState seeds pools customers with grants grants each, plenty of
// credits, and returns a harness whose next entries burn from them.
func benchState(b *testing.B, pools, grantsPerPool int, sync bool) *harness {
	b.Helper()
	h := newHarness(b)
	if sync {
		h.f.Close()
		f, err := Open(b.TempDir()+"/state.db", Options{})
		if err != nil {
			b.Fatal(err)
		}
		b.Cleanup(func() { f.Close() })
		h.f = f
	}
	h.ok(CreateCreditType{ID: "ai", Scale: 2})
	h.ok(UpsertFeature{ID: "tokens", CreditTypeID: "ai", Rate: mustDec("0.001")})
	var cmds []Command
	for p := 0; p < pools; p++ {
		cu := fmt.Sprintf("cust-%07d", p)
		cmds = append(cmds, UpsertCustomer{ID: cu})
		for g := 0; g < grantsPerPool; g++ {
			cmds = append(cmds, CreateGrant{ID: fmt.Sprintf("%s-g%d", cu, g), CustomerID: cu, CreditTypeID: "ai",
				Category: Paid, Amount: 1 << 40, CostBasis: mustDec("0.01"), Currency: "USD", Priority: uint32(g % 3)})
		}
		if len(cmds) > 5000 {
			h.apply(cmds...)
			cmds = cmds[:0]
		}
	}
	if len(cmds) > 0 {
		h.apply(cmds...)
	}
	return h
}

func benchBurn(b *testing.B, pools, grants, batch int, sync bool) {
	benchBurnIDs(b, pools, grants, batch, sync, false)
}

// benchBurnIDs is benchBurn with event ids in increasing order (as
// `creditd bench` makes them) or, with randomIDs, scattered over the key
// space like the UUIDs most clients send.
func benchBurnIDs(b *testing.B, pools, grants, batch int, sync, randomIDs bool) {
	benchBurnAfter(b, pools, grants, batch, sync, randomIDs, 0)
}

// benchBurnAfter is benchBurnIDs on a state that first burned history
// batches and then moved one idempotency retention window on: every new
// event then misses in the current generation and in the previous one,
// where history's records are (a cluster's steady state after a week).
func benchBurnAfter(b *testing.B, pools, grants, batch int, sync, randomIDs bool, history int) {
	benchBurnMerged(b, pools, grants, batch, sync, randomIDs, history, 1)
}

// benchBurnMerged is benchBurnAfter with perApply entries handed to each
// Apply (one state transaction), as a replica's applier merges entries
// that are queued when it comes round; ns/op stays per entry.
func benchBurnMerged(b *testing.B, pools, grants, batch int, sync, randomIDs bool, history, perApply int) {
	benchBurnWindowsOn(b, pools, grants, batch, sync, randomIDs, history, perApply, 1)
}

// benchBurnWindowsOn is benchBurnMerged moving windows retention windows on
// after the history: two and the history's generation is one no lookup
// sees, which the new entries prune as they store (pruneInStep).
func benchBurnWindowsOn(b *testing.B, pools, grants, batch int, sync, randomIDs bool, history, perApply, windows int) {
	h := benchState(b, pools, grants, sync)
	next := 0
	batchAt := func() Entry {
		evs := make([]UsageEvent, batch)
		for j := range evs {
			id := fmt.Sprintf("ev-%d", next)
			if randomIDs {
				// A bijection of next, so ids never repeat.
				id = fmt.Sprintf("%016x", uint64(next)*0x9E3779B97F4A7C15)
			}
			evs[j] = UsageEvent{ID: id, CustomerID: fmt.Sprintf("cust-%07d", next%pools),
				FeatureID: "tokens", Quantity: 1500}
			next++
		}
		return h.entry(BurnUsage{Events: evs})
	}
	if history > 0 {
		for range history {
			if _, err := h.f.Apply([]Entry{batchAt()}); err != nil {
				b.Fatal(err)
			}
		}
		h.after(time.Duration(windows) * DefaultIdempotencyRetention)
	}
	entries := make([]Entry, (b.N+perApply-1)/perApply*perApply)
	for i := range entries {
		entries[i] = batchAt()
	}
	b.ReportAllocs()
	before := h.f.db.Stats().TxStats
	b.ResetTimer()
	// How long a leader's callers wait for their answers (ApplyAnswering
	// hands them out before the state is written and committed).
	var toAnswer time.Duration
	var began time.Time
	answered := func([][]Result) { toAnswer += time.Since(began) }
	for i := 0; i < len(entries); i += perApply {
		began = time.Now()
		rs, err := h.f.ApplyAnswering(entries[i:i+perApply], answered)
		if err != nil {
			b.Fatal(err)
		}
		if ev := rs[0][0].Value.([]EventResult); ev[0].Status != EventBurned {
			b.Fatalf("%+v", ev[0])
		}
	}
	b.StopTimer()
	b.ReportMetric(float64(b.N*batch)/b.Elapsed().Seconds(), "events/s")
	b.ReportMetric(float64(toAnswer.Nanoseconds())/float64(b.N), "answer-ns/op")
	after := h.f.db.Stats().TxStats
	// Pages written per entry: what the state file's writeback costs.
	written := after.Sub(&before)
	b.ReportMetric(float64(written.GetPageCount())/float64(b.N), "pages/op")
}

// BenchmarkApply measures apply alone (state file without fsync) and, for
// the 1,000-event batch, with fsync as in production.
func BenchmarkApply(b *testing.B) {
	b.Run("one event", func(b *testing.B) { benchBurn(b, 100, 3, 1, false) })
	b.Run("batch of 1000 events", func(b *testing.B) { benchBurn(b, 100, 3, 1000, false) })
	b.Run("batch of 1000 events with fsync", func(b *testing.B) { benchBurn(b, 100, 3, 1000, true) })
	// The shape of `creditd bench`'s default run: 1,000 customers, one grant each.
	b.Run("batch of 1000 events over 1000 pools, 1 grant", func(b *testing.B) { benchBurn(b, 1000, 1, 1000, false) })
	// The same with ids scattered like UUIDs: each event's idempotency
	// record lands in its own leaf page.
	b.Run("batch of 1000 events over 1000 pools, 1 grant, random ids", func(b *testing.B) { benchBurnIDs(b, 1000, 1, 1000, false, true) })
	// The default shape a retention window after 200,000 events: each new
	// event also looks for its id in the previous generation.
	b.Run("batch of 1000 events over 1000 pools, 1 grant, a week on", func(b *testing.B) { benchBurnAfter(b, 1000, 1, 1000, false, false, 200) })
	// Two windows on: each entry also prunes 1,000 of history's records.
	b.Run("batch of 1000 events over 1000 pools, 1 grant, two weeks on", func(b *testing.B) { benchBurnWindowsOn(b, 1000, 1, 1000, false, false, 200, 1, 2) })
	b.Run("batch of 1000 events over 1000 pools, 1 grant, 8 entries per apply", func(b *testing.B) { benchBurnMerged(b, 1000, 1, 1000, false, false, 0, 8) })
	b.Run("batch of 1000 events over 10000 pools", func(b *testing.B) { benchBurn(b, 10000, 3, 1000, false) })
	b.Run("batch of 1000 events, 100 grants per pool", func(b *testing.B) { benchBurn(b, 100, 100, 1000, false) })
}

// BenchmarkReadPool measures the reads that walk a pool's live grants:
// Check needs only their sum, Balance lists them too.
func BenchmarkReadPool(b *testing.B) {
	for _, grants := range []int{10, 1000} {
		h := newHarness(b)
		h.seed()
		const perEntry = 500
		for i := 0; i < grants; i += perEntry {
			var cmds []Command
			for j := i; j < min(i+perEntry, grants); j++ {
				cmds = append(cmds, CreateGrant{ID: fmt.Sprintf("g%06d", j), CustomerID: "c1", CreditTypeID: "ai",
					Category: Promotional, Amount: 100})
			}
			for _, r := range h.apply(cmds...) {
				if r.Err != nil {
					b.Fatal(r.Err)
				}
			}
		}
		b.Run(fmt.Sprintf("Check, %d grants", grants), func(b *testing.B) {
			b.ReportAllocs()
			for b.Loop() {
				if err := h.f.View(func(v *View) error {
					r, err := v.Check("c1", "", 0, "ai", 100)
					if err == nil && r.Available != int64(grants)*100 {
						err = fmt.Errorf("available %d", r.Available)
					}
					return err
				}); err != nil {
					b.Fatal(err)
				}
			}
		})
		b.Run(fmt.Sprintf("Balance, %d grants", grants), func(b *testing.B) {
			b.ReportAllocs()
			for b.Loop() {
				if err := h.f.View(func(v *View) error {
					bal, err := v.Balance("c1", "ai")
					if err == nil && len(bal.Grants) != grants {
						err = fmt.Errorf("%d grants", len(bal.Grants))
					}
					return err
				}); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}
