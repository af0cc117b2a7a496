package fsm

import (
	"fmt"
	"math/rand/v2"
	"slices"
	"testing"
	"time"
)

// The per-pool ledger index (open run in the pool record, full runs in
// pool_ledger) must answer every customer query exactly as a scan of the
// whole ledger does: pages of any size, credit type filters, seq ranges,
// and as-of balances by seq and by time.
func TestCustomerLedgerQueriesMatchAFullScan(t *testing.T) {
	h := newHarness(t)
	h.ok(CreateCreditType{ID: "ai", Scale: 0})
	h.ok(CreateCreditType{ID: "gpu", Scale: 0})
	customers := []string{"a", "b", "c"}
	for _, cu := range customers {
		h.ok(UpsertCustomer{ID: cu})
		for _, ct := range []string{"ai", "gpu"} {
			h.ok(CreateGrant{ID: cu + "-" + ct, CustomerID: cu, CreditTypeID: ct, Amount: 1 << 40})
		}
	}
	rng := rand.New(rand.NewPCG(7, 9))
	// Uneven traffic, so pools fill their runs at different times and
	// some end with a full run exactly.
	for i := range 150 {
		var evs []UsageEvent
		for j := range 1 + rng.IntN(9) {
			cu := customers[min(rng.IntN(5), 2)]
			ct := []string{"ai", "gpu"}[rng.IntN(2)]
			evs = append(evs, UsageEvent{ID: fmt.Sprintf("e%d-%d", i, j), CustomerID: cu, CreditTypeID: ct, Credits: 1 + int64(rng.IntN(5))})
		}
		h.after(time.Second).apply(BurnUsage{Events: evs})
	}

	var all []LedgerEntry
	err := h.f.View(func(v *View) error {
		return v.ScanLedger(0, 0, func(e *LedgerEntry) error { all = append(all, *e); return nil })
	})
	if err != nil {
		t.Fatal(err)
	}
	want := func(cu, ct string, from, to uint64) []uint64 {
		var out []uint64
		for _, e := range all {
			if e.CustomerID == cu && (ct == "" || e.CreditTypeID == ct) && e.Seq >= from && (to == 0 || e.Seq <= to) {
				out = append(out, e.Seq)
			}
		}
		return out
	}
	last := all[len(all)-1].Seq
	for _, cu := range customers {
		for _, ct := range []string{"", "ai", "gpu"} {
			for _, limit := range []int{1, 7, 32, 33, 1000} {
				for _, r := range [][2]uint64{{0, 0}, {5, 0}, {last / 3, 2 * last / 3}, {last, 0}, {last + 1, 0}} {
					name := fmt.Sprintf("%s/%s/limit %d/seq %d..%d", cu, ct, limit, r[0], r[1])
					var got []uint64
					from := r[0]
					for page := 0; ; page++ {
						var es []LedgerEntry
						var next uint64
						err := h.f.View(func(v *View) (err error) {
							es, next, err = v.Ledger(LedgerFilter{CustomerID: cu, CreditTypeID: ct, FromSeq: from, ToSeq: r[1], Limit: limit})
							return
						})
						if err != nil {
							t.Fatalf("%s: %v", name, err)
						}
						for _, e := range es {
							got = append(got, e.Seq)
						}
						if next == 0 {
							break
						}
						if len(es) != limit || page > len(all) {
							t.Fatalf("%s: page of %d with next %d", name, len(es), next)
						}
						from = next
					}
					if w := want(cu, ct, r[0], r[1]); !slices.Equal(got, w) {
						t.Errorf("%s: got %v, want %v", name, got, w)
					}
				}
			}
		}
	}

	// As-of balances: the balance_after of the pool's last entry at or
	// before the seq (or time); 0 before its first.
	err = h.f.View(func(v *View) error {
		for _, cu := range customers {
			for _, ct := range []string{"ai", "gpu"} {
				for seq := uint64(0); seq <= last+1; seq++ {
					var want int64
					for _, e := range all {
						if e.Seq <= seq && e.CustomerID == cu && e.CreditTypeID == ct {
							want = e.BalanceAfter
						}
					}
					if got, err := v.BalanceAt(cu, ct, seq); err != nil || got != want {
						return fmt.Errorf("BalanceAt(%s, %s, %d) = %d, %v; want %d", cu, ct, seq, got, err, want)
					}
				}
				for i := 0; i < len(all); i += 7 {
					at := all[i].Time
					var want int64
					for _, e := range all {
						if e.Time <= at && e.CustomerID == cu && e.CreditTypeID == ct {
							want = e.BalanceAfter
						}
					}
					if got, err := v.BalanceAtTime(cu, ct, at); err != nil || got != want {
						return fmt.Errorf("BalanceAtTime(%s, %s, %v) = %d, %v; want %d", cu, ct, at.Time(), got, err, want)
					}
				}
			}
		}
		return nil
	})
	if err != nil {
		t.Error(err)
	}
}
