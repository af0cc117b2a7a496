package fsm

import (
	"bytes"
	"fmt"
	"math/rand/v2"
	"path/filepath"
	"testing"
	"time"
)

// harshLog is randomLog with a harsher mix: many small grants per pool (so
// tallies overflow maxTallies), frequent ticks, expiries that land within a
// few entries, revokes and adjusts with request ids that repeat, customer
// level auto top-up, invoice purchases and completions of the automatic
// purchases the log itself starts. It applies the log to a scratch state as
// it goes, to know which purchases are pending.
func harshLog(tb testing.TB, seed uint64, entries int) []Entry {
	scratch := openAt(tb, tb.TempDir())
	var pending []string
	rng := rand.New(rand.NewPCG(seed, seed^0x1234567))
	customers := []string{"c0", "c1", "c2"}
	w := &logWriter{now: t0}
	enc := w.add
	flush := func() {
		w.endEntry()
		if _, err := scratch.Apply(w.log[len(w.log)-1:]); err != nil {
			tb.Fatal(err)
		}
		pending = pending[:0]
		err := scratch.View(func(v *View) error {
			ps, err := v.PendingPurchases(100)
			for _, p := range ps {
				pending = append(pending, p.ID)
			}
			return err
		})
		if err != nil {
			tb.Fatal(err)
		}
	}
	enc(CreateCreditType{ID: "ai", Name: "AI", Scale: 2})
	enc(CreateCreditType{ID: "gpu", Name: "GPU", Scale: 0})
	enc(UpsertFeature{ID: "tokens", CreditTypeID: "ai", Rate: mustDec("0.013")})
	enc(UpsertFeature{ID: "secs", CreditTypeID: "gpu", Rate: mustDec("2")})
	enc(UpsertPlan{Plan: Plan{ID: "deny", CreditTypeID: "ai", Currency: "USD", PricePerCredit: mustDec("0.0137"),
		MinPurchaseCredits: 100, AutoTopUp: AutoTopUp{Enabled: true, ThresholdCredits: 500, AmountCredits: 3000, MonthlyCapMicros: 5_000_000}}})
	enc(UpsertPlan{Plan: Plan{ID: "od", CreditTypeID: "gpu", Currency: "EUR", PricePerCredit: mustDec("0.3"),
		Overdraft: OverdraftAllow, OverdraftLimit: 40, InvoiceGrant: GrantOnIssue, DefaultExpiry: time.Hour,
		AutoTopUp: AutoTopUp{Enabled: true, ThresholdCredits: 20, Mode: TopUpToTarget, AmountCredits: 200}}})
	for i, c := range customers {
		enc(UpsertCustomer{ID: c, PlanID: []string{"deny", "od", "deny"}[i]})
	}
	flush()
	grants, resvs, purchases := 0, 0, 0
	pick := func(n int) int { return rng.IntN(n) }
	for len(w.log) < entries {
		w.now += Timestamp(rng.IntN(300_000_000))
		now := w.now
		for n := 1 + pick(4); n > 0; n-- {
			ci := pick(len(customers))
			cu := customers[ci]
			ct := []string{"ai", "gpu"}[pick(2)]
			switch k := pick(100); {
			case k < 20:
				grants++
				g := CreateGrant{ID: fmt.Sprintf("g%d", grants), CustomerID: cu, CreditTypeID: ct, Amount: int64(1 + pick(1500)),
					Priority: uint32(pick(6))}
				if pick(2) == 0 {
					g.Category, g.CostBasis, g.Currency = Paid, Decimal{Coef: int64(1 + pick(999)), Scale: uint8(pick(7))}, "USD"
				}
				if pick(2) == 0 {
					g.ExpiresAt = now + Timestamp(1+pick(1800))*1e6
				}
				if pick(4) == 0 {
					g.EffectiveAt = now + Timestamp(pick(900))*1e6
				}
				if pick(8) == 0 { // a retry of an earlier grant
					g.ID = fmt.Sprintf("g%d", 1+pick(grants))
				}
				enc(g)
			case k < 50:
				enc(randomUsage(pick, customers, ct, 12, 3000, 2000, 120))
			case k < 56:
				resvs++
				enc(Reserve{ID: fmt.Sprintf("r%d", resvs), CustomerID: cu, CreditTypeID: ct, Credits: int64(1 + pick(100)),
					TTL: time.Duration(1+pick(900)) * time.Second})
			case k < 61:
				enc(Settle{ReservationID: fmt.Sprintf("r%d", 1+pick(resvs+1)), Credits: int64(pick(150)), UseCredits: true})
			case k < 63:
				enc(Release{ReservationID: fmt.Sprintf("r%d", 1+pick(resvs+1))})
			case k < 67:
				enc(RevokeGrant{GrantID: fmt.Sprintf("g%d", 1+pick(grants+1)), Amount: int64(pick(2) * pick(100)), Reason: "refund",
					RequestID: []string{"", fmt.Sprintf("v%d", pick(50))}[pick(2)]})
			case k < 72:
				enc(Adjust{ID: fmt.Sprintf("a%d", pick(300)), GrantID: fmt.Sprintf("g%d", 1+pick(grants+1)),
					Amount: int64(pick(200) - 80), Reason: "fix"})
			case k < 76:
				purchases++
				enc(StartPurchase{ID: fmt.Sprintf("p%d", purchases), CustomerID: cu, Credits: int64(100 + pick(500)),
					Flow: PurchaseFlow(pick(2))})
			case k < 84:
				id := fmt.Sprintf("p%d", 1+pick(purchases+1))
				if len(pending) > 0 && pick(3) > 0 {
					id = pending[pick(len(pending))]
				} else if pick(2) == 0 {
					id = fmt.Sprintf("auto-%d-%d-%d", 1+pick(len(w.log)+1), pick(3), pick(6))
				}
				outcome := []PurchaseOutcome{OutcomeSucceeded, OutcomeFailed, OutcomeProgress, OutcomeInvoiceIssued, OutcomeInvoicePaid}[pick(5)]
				enc(CompletePurchase{ID: id, Outcome: outcome, FailureReason: "declined"})
			case k < 94:
				enc(Tick{})
			default:
				c := UpsertCustomer{ID: cu, PlanID: []string{"deny", "od", ""}[pick(3)], ResumeAutoTopUp: pick(2) == 0}
				if c.PlanID != "" && pick(2) == 0 {
					c.AutoTopUp = AutoTopUp{Enabled: pick(3) > 0, ThresholdCredits: int64(pick(300)), AmountCredits: int64(301 + pick(500)),
						Mode: AutoTopUpMode(pick(2)), MonthlyCapMicros: int64(pick(2) * pick(100_000_000))}
				}
				enc(c)
			}
		}
		flush()
	}
	return w.log
}

func TestInvariantsOverHarshLogs(t *testing.T) {
	for seed := uint64(1); seed <= 8; seed++ {
		t.Run(fmt.Sprintf("seed %d", seed), func(t *testing.T) {
			f := openAt(t, t.TempDir())
			log := harshLog(t, seed, 600)
			applyAll(t, f, log, 3, func(rs [][]Result) { checkInvariants(t, f) })
		})
	}
}

func TestHarshLogsAnswerTheSameHoweverGrouped(t *testing.T) {
	for seed := uint64(1); seed <= 4; seed++ {
		t.Run(fmt.Sprintf("seed %d", seed), func(t *testing.T) {
			requireTheSameHoweverGrouped(t, harshLog(t, seed, 500), Options{NoSync: true, IdempotencyRetention: 20 * time.Minute})
		})
	}
}

// A replica that reopens its state every few entries (cold caches) and one
// that restores from a snapshot midway must end as the warm one.
func TestColdCachesAndARestoreEndAsTheWarmReplica(t *testing.T) {
	for seed := uint64(1); seed <= 4; seed++ {
		t.Run(fmt.Sprintf("seed %d", seed), func(t *testing.T) {
			log := harshLog(t, seed, 500)
			opts := Options{NoSync: true, IdempotencyRetention: 20 * time.Minute}
			warm, err := Open(filepath.Join(t.TempDir(), "s.db"), opts)
			if err != nil {
				t.Fatal(err)
			}
			defer warm.Close()
			applyAll(t, warm, log, 1, nil)
			want := dumpOf(t, warm)

			dir := t.TempDir()
			for i := 0; i < len(log); i += 3 {
				c, err := Open(filepath.Join(dir, "s.db"), opts)
				if err != nil {
					t.Fatal(err)
				}
				applyAll(t, c, log[i:min(i+3, len(log))], 2, nil)
				c.Close()
			}
			c, err := Open(filepath.Join(dir, "s.db"), opts)
			if err != nil {
				t.Fatal(err)
			}
			defer c.Close()
			if !bytes.Equal(want, dumpOf(t, c)) {
				t.Fatal("cold replica differs")
			}

			// Restore midway into a replica that has a warm cache of a
			// different history.
			a, err := Open(filepath.Join(t.TempDir(), "s.db"), opts)
			if err != nil {
				t.Fatal(err)
			}
			defer a.Close()
			applyAll(t, a, log[:250], 5, nil)
			snap, err := a.Snapshot()
			if err != nil {
				t.Fatal(err)
			}
			var buf bytes.Buffer
			_, err = snap.WriteTo(&buf)
			snap.Release()
			if err != nil {
				t.Fatal(err)
			}
			b, err := Open(filepath.Join(t.TempDir(), "s.db"), opts)
			if err != nil {
				t.Fatal(err)
			}
			defer b.Close()
			applyAll(t, b, log[:400], 5, nil)
			if err := b.Restore(&buf); err != nil {
				t.Fatal(err)
			}
			applyAll(t, b, log[250:], 5, nil)
			if !bytes.Equal(want, dumpOf(t, b)) {
				t.Fatal("restored replica differs")
			}
		})
	}
}

// checkMoreInvariants: a pool's reserved is the sum of its held
// reservations; a succeeded purchase's grant exists and carries its credits;
// a customer's pending automatic purchase is pending; spend is not negative.
func checkMoreInvariants(t testing.TB, f *FSM) {
	t.Helper()
	err := f.View(func(v *View) error {
		held := map[string]int64{}
		err := v.tx.Bucket(bResv).ForEach(func(k, raw []byte) error {
			var r Reservation
			d := dec{b: raw}
			r.decode(&d)
			if r.Status == ReservationHeld {
				held[string(poolKey(r.CustomerID, r.CreditTypeID))] += r.Amount
			}
			return d.err
		})
		if err != nil {
			return err
		}
		err = v.tx.Bucket(bPool).ForEach(func(k, raw []byte) error {
			var p Pool
			d := dec{b: raw}
			p.decode(&d)
			if p.Reserved != held[string(k)] {
				return fmt.Errorf("pool %q reserved %d, held reservations %d", k, p.Reserved, held[string(k)])
			}
			return d.err
		})
		if err != nil {
			return err
		}
		err = v.tx.Bucket(bPurchase).ForEach(func(k, raw []byte) error {
			var p Purchase
			d := dec{b: raw}
			p.decode(&d)
			if p.Status == PurchaseSucceeded {
				g, err := v.Grant(p.GrantID)
				if err != nil {
					return fmt.Errorf("purchase %s: %v", p.ID, err)
				}
				if g.Amount-g.Adjusted != p.Credits || g.SourceRef != p.ID {
					return fmt.Errorf("purchase %s of %d credits has grant %s of %d from %s", p.ID, p.Credits, g.ID, g.Amount, g.SourceRef)
				}
			}
			return d.err
		})
		if err != nil {
			return err
		}
		return v.tx.Bucket(bCustomer).ForEach(func(k, raw []byte) error {
			var c Customer
			d := dec{b: raw}
			c.decode(&d)
			if c.AutoSpendMicros < 0 {
				return fmt.Errorf("customer %s spent %d", c.ID, c.AutoSpendMicros)
			}
			if c.AutoPendingPurchase != "" {
				p, err := v.Purchase(c.AutoPendingPurchase)
				if err != nil || p.Status != PurchasePending || p.CustomerID != c.ID {
					return fmt.Errorf("customer %s: pending auto purchase %s is %v %v", c.ID, c.AutoPendingPurchase, p.Status, err)
				}
			}
			return d.err
		})
	})
	if err != nil {
		t.Fatal(err)
	}
}

func TestHoldsPurchasesAndTopUpsStayConsistentOverHarshLogs(t *testing.T) {
	for seed := uint64(1); seed <= 10; seed++ {
		t.Run(fmt.Sprintf("seed %d", seed), func(t *testing.T) {
			f := openAt(t, t.TempDir())
			log := harshLog(t, seed, 600)
			applyAll(t, f, log, 1, func(rs [][]Result) { checkMoreInvariants(t, f) })
		})
	}
}

// Ids in the namespaces creditd names things in itself are refused: a
// grant made by hand as "purchase:buy1" would make the paid purchase buy1
// fail to complete, and a purchase started as "auto-9-0-0" was overwritten
// by the automatic top-up of that name.
func TestIdsInThePurchasesNamespacesAreRefused(t *testing.T) {
	h := newHarness(t)
	h.seed()
	tests := []struct {
		name string
		cmd  Command
	}{
		{"a grant named like a purchase's", CreateGrant{ID: PurchaseGrantPrefix + "buy1", CustomerID: "c1", CreditTypeID: "ai",
			Category: Promotional, Amount: 10}},
		{"a purchase named like an automatic top-up", StartPurchase{ID: AutoPurchasePrefix + "9-0-0", CustomerID: "c1",
			Credits: 5000, Flow: FlowInvoice}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			h.fails(tt.cmd, CodeInvalid, "id")
		})
	}
	// And the purchase the grant's id names completes.
	h.ok(StartPurchase{ID: "buy1", CustomerID: "c1", Credits: 1000, Flow: FlowSelfServe})
	h.ok(CompletePurchase{ID: "buy1", Outcome: OutcomeSucceeded, ProviderRef: "pi_1"})
	if g := h.grant(PurchaseGrantPrefix + "buy1"); g.Amount != 1000 {
		t.Fatalf("purchase grant %+v", g)
	}
}

// Ledger by customer from a sequence inside the pool's last full run, where
// that run is the last key of pool_ledger.
func TestLedgerReadsFromInsideAPoolsLastRun(t *testing.T) {
	h := newHarness(t)
	h.seed()
	h.ok(UpsertCustomer{ID: "zz"})
	h.ok(CreateGrant{ID: "gz", CustomerID: "zz", CreditTypeID: "ai", Amount: 1_000_000})
	for i := 0; i < 3*poolRunMax; i++ {
		h.ok(BurnUsage{Events: []UsageEvent{{ID: fmt.Sprintf("z%d", i), CustomerID: "zz", CreditTypeID: "ai", Credits: 1}}})
	}
	all := h.ledger("zz")
	if len(all) != 3*poolRunMax+1 {
		t.Fatalf("%d entries", len(all))
	}
	for from := 0; from < len(all); from++ {
		var es []LedgerEntry
		h.f.View(func(v *View) (err error) {
			es, _, err = v.Ledger(LedgerFilter{CustomerID: "zz", FromSeq: all[from].Seq})
			return
		})
		if len(es) != len(all)-from {
			t.Fatalf("from seq %d (entry %d): %d entries, want %d", all[from].Seq, from, len(es), len(all)-from)
		}
		var bal int64
		h.f.View(func(v *View) (err error) { bal, err = v.BalanceAt("zz", "ai", all[from].Seq); return })
		if bal != all[from].BalanceAfter {
			t.Fatalf("balance at %d: %d, want %d", all[from].Seq, bal, all[from].BalanceAfter)
		}
	}
}

// The monthly cap check once added spend and cost unchecked: at int64's
// edge the sum wrapped negative and a top-up far over the cap started.
func TestTheMonthlyTopUpCapHoldsAtTheEdgeOfInt64(t *testing.T) {
	h := newHarness(t)
	h.ok(CreateCreditType{ID: "big", Scale: 0})
	h.ok(UpsertPlan{Plan: Plan{ID: "cheap", CreditTypeID: "big", Currency: "USD", PricePerCredit: mustDec("0.000008")}})
	capMicros := MaxAmount // 2^60 micros
	h.ok(UpsertCustomer{ID: "c", PlanID: "cheap", AutoTopUp: AutoTopUp{Enabled: true, ThresholdCredits: 100,
		AmountCredits: 1 << 57, MonthlyCapMicros: capMicros}})
	h.ok(CreateGrant{ID: "g", CustomerID: "c", CreditTypeID: "big", Amount: 10})
	h.ok(BurnUsage{Events: []UsageEvent{{ID: "e1", CustomerID: "c", CreditTypeID: "big", Credits: 1}}})
	first := h.customer("c")
	if first.AutoSpendMicros != capMicros || first.AutoPendingPurchase == "" {
		t.Fatalf("first top-up: %+v", first)
	}
	h.ok(CompletePurchase{ID: first.AutoPendingPurchase, Outcome: OutcomeSucceeded})
	// The cap is spent. Another top-up of any cost must be refused.
	h.ok(UpsertCustomer{ID: "c", PlanID: "cheap", AutoTopUp: AutoTopUp{Enabled: true, ThresholdCredits: 1 << 58,
		AmountCredits: 1<<60 - 1, MonthlyCapMicros: capMicros}})
	h.ok(BurnUsage{Events: []UsageEvent{{ID: "e2", CustomerID: "c", CreditTypeID: "big", Credits: 1}}})
	c := h.customer("c")
	if c.AutoPendingPurchase != "" || c.AutoSpendMicros < 0 {
		var p Purchase
		h.f.View(func(v *View) (err error) { p, err = v.Purchase(c.AutoPendingPurchase); return })
		t.Fatalf("monthly cap %d micros, already spent: started %s of %d micros; spend now %d, last %q",
			capMicros, p.ID, p.TotalMicros, c.AutoSpendMicros, c.AutoTopUpLast)
	}
}
