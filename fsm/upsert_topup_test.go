package fsm

import (
	"bytes"
	"fmt"
	"testing"
)

// upsertInBoth sets up two harnesses alike (seed, then setUp), applies u to
// one in an entry of the current version and to the other in a version 4
// entry, and requires it to succeed in both. It requires the version 4
// upsert to have changed c1's settings alone, leaving its auto top-up
// bookkeeping and the purchases as they were (as every build before version
// 5 did), and the two states to differ at most in the auto top-up's records.
// It returns the current version's harness, its dump and c1 before u, and
// the customer u answered there.
func upsertInBoth(t *testing.T, setUp func(h *harness), u UpsertCustomer) (*harness, []byte, Customer, Customer) {
	t.Helper()
	var hs [2]*harness
	var answers [2]Customer
	var dumpsBefore [2][]byte
	var before Customer // the same in both
	for i, version := range []byte{entryVersion, 4} {
		h := newHarness(t)
		h.seed()
		setUp(h)
		before = h.customer(u.ID)
		dumpBefore := h.dump()
		res := h.applyAs(version, u)[0]
		cu, ok := res.Value.(*Customer)
		if res.Err != nil || !ok {
			t.Fatalf("UpsertCustomer %s in a version %d entry: %+v (%v)", u.ID, version, res, res.Err)
		}
		if version == 4 {
			if got, want := h.customer(u.ID), withSettings(before, u, h.now); got != want {
				t.Fatalf("an UpsertCustomer in a version 4 entry left\n%+v\nwant its settings alone changed\n%+v", got, want)
			}
			if !bytes.Equal(onlySections(dumpBefore, "purchases", "purchases_pending"), onlySections(h.dump(), "purchases", "purchases_pending")) {
				t.Fatal("an UpsertCustomer in a version 4 entry changed the purchases")
			}
		}
		hs[i], answers[i], dumpsBefore[i] = h, *cu, dumpBefore
	}
	if a, b := withoutSections(hs[0].dump(), topUpSections...), withoutSections(hs[1].dump(), topUpSections...); !bytes.Equal(a, b) {
		t.Fatal("the UpsertCustomer's state outside the auto top-up's records differs between an entry of the current version and a version 4 entry")
	}
	return hs[0], dumpsBefore[0], before, answers[0]
}

// okInVersion4 applies c as a version 4 entry and fails the test on a domain
// error: a set-up's UpsertCustomer that gives c1 settings (or resumes them)
// while available is below the threshold, for a test of what the command
// after it does with that. From version 5 on the upsert would start the
// top-up itself (TestAnUpsertThatFindsAvailableBelowTheThresholdStartsTheAutoTopUp).
func (h *harness) okInVersion4(c Command) Result {
	h.t.Helper()
	r := h.applyAs(4, c)[0]
	if r.Err != nil {
		h.t.Fatalf("%T in a version 4 entry: %v", c, r.Err)
	}
	return r
}

// withSettings is customer cu as upsert u at time now leaves it when it
// starts no top-up and records no reason.
func withSettings(cu Customer, u UpsertCustomer, now Timestamp) Customer {
	cu.Name, cu.BillingRef, cu.PlanID, cu.AutoTopUp = u.Name, u.BillingRef, u.PlanID, u.AutoTopUp
	cu.AutoTopUp.Own = cu.AutoTopUp.Own || cu.AutoTopUp.hasSettings()
	if u.ResumeAutoTopUp {
		cu.AutoTopUpPaused = ""
	}
	cu.UpdatedAt = now
	return cu
}

// An UpsertCustomer after which an existing customer's auto top-up settings
// find available (its plan's credit type's grants that may burn, less what
// is held and overdrawn) below the threshold starts the top-up (entries of
// version 5 on), with the purchase a burn leaving it there starts: id
// auto-<index>-<command>-0, sized from that available. It started none, so
// an operator turning auto top-up on for a customer with nothing left (own
// settings, or a plan whose default has it on), raising its threshold or
// resuming it saw nothing happen until the customer's next burn, denial,
// refused Reserve or Settle, or hold. The customer is answered with the
// purchase pending.
func TestAnUpsertThatFindsAvailableBelowTheThresholdStartsTheAutoTopUp(t *testing.T) {
	fixed := AutoTopUp{Enabled: true, ThresholdCredits: 300, Mode: TopUpFixed, AmountCredits: 2000}
	toTarget := AutoTopUp{Enabled: true, ThresholdCredits: 300, Mode: TopUpToTarget, AmountCredits: 2000}
	autoPlan := func(id, creditType string) UpsertPlan {
		return UpsertPlan{Plan: Plan{ID: id, CreditTypeID: creditType, Currency: "USD", PricePerCredit: mustDec("0.10"),
			MinPurchaseCredits: 100, AutoTopUp: fixed}}
	}
	for _, tc := range []struct {
		name  string
		setUp func(h *harness)
		u     UpsertCustomer
		// wantPlan, wantCreditType and wantCredits are the purchase's, at
		// 0.10 USD a credit.
		wantPlan, wantCreditType string
		wantCredits              int64
	}{
		{"own settings turned on for a customer that never had credits",
			func(h *harness) {}, UpsertCustomer{ID: "c1", PlanID: "pro", AutoTopUp: fixed}, "pro", "ai", 2000},
		{"own settings turned on below the threshold, up to a target",
			func(h *harness) { h.paid("g", 100, "0.10") },
			UpsertCustomer{ID: "c1", PlanID: "pro", AutoTopUp: toTarget}, "pro", "ai", 1900},
		{"holds count as a Reserve counts them",
			func(h *harness) {
				h.paid("g", 1000, "0.10")
				h.ok(Reserve{ID: "r0", CustomerID: "c1", CreditTypeID: "ai", Credits: 800})
			},
			UpsertCustomer{ID: "c1", PlanID: "pro", AutoTopUp: toTarget}, "pro", "ai", 1800},
		{"a plan whose default has it on, assigned",
			func(h *harness) { h.ok(autoPlan("auto", "ai")); h.paid("g", 100, "0.10") },
			UpsertCustomer{ID: "c1", PlanID: "auto"}, "auto", "ai", 2000},
		{"the threshold raised above available",
			func(h *harness) {
				h.paid("g", 200, "0.10")
				h.ok(UpsertCustomer{ID: "c1", PlanID: "pro", AutoTopUp: AutoTopUp{Enabled: true, ThresholdCredits: 100,
					Mode: TopUpFixed, AmountCredits: 2000}}) // 200 left: at or above 100
			},
			UpsertCustomer{ID: "c1", PlanID: "pro", AutoTopUp: fixed}, "pro", "ai", 2000},
		{"a paused top-up resumed",
			func(h *harness) {
				h.paid("g", 1000, "0.10")
				h.ok(UpsertCustomer{ID: "c1", PlanID: "pro", AutoTopUp: fixed})
				h.burnCredits("e0", 800) // 200 left: a top-up starts
				h.ok(CompletePurchase{ID: h.customer("c1").AutoPendingPurchase, Outcome: OutcomeFailed, FailureReason: "card_declined"})
			},
			UpsertCustomer{ID: "c1", PlanID: "pro", AutoTopUp: fixed, ResumeAutoTopUp: true}, "pro", "ai", 2000},
		{"the pool of the plan's credit type is the one that counts",
			func(h *harness) {
				h.ok(CreateCreditType{ID: "xp", Name: "XP", Scale: 2})
				h.ok(autoPlan("xp-auto", "xp"))
				h.paid("g", 5000, "0.10") // of ai
			},
			UpsertCustomer{ID: "c1", PlanID: "xp-auto"}, "xp-auto", "xp", 2000},
	} {
		t.Run(tc.name, func(t *testing.T) {
			h, _, before, answer := upsertInBoth(t, tc.setUp, tc.u)
			if before.AutoPendingPurchase != "" || before.AutoTopUpLast != "" {
				t.Fatalf("set-up left c1 %+v, want no pending top-up nor last reason", before)
			}
			wantID := fmt.Sprintf("%s%d-0-0", AutoPurchasePrefix, h.index) // the upsert's entry, command 0
			cost := tc.wantCredits * 1000                                  // 0.10 USD a credit, 2 decimals: 1,000 micros a unit
			want := Purchase{ID: wantID, CustomerID: "c1", PlanID: tc.wantPlan, CreditTypeID: tc.wantCreditType,
				Credits: tc.wantCredits, UnitPrice: mustDec("0.10"), Currency: "USD", TotalMicros: cost, Flow: FlowAuto,
				Status: PurchasePending, CreatedAt: h.now, UpdatedAt: h.now}
			if ps := h.pendingPurchases(); len(ps) != 1 || ps[0] != want {
				t.Fatalf("pending purchases %+v, want only\n%+v", ps, want)
			}
			c := h.customer("c1")
			wantCustomer := withSettings(before, tc.u, h.now)
			wantCustomer.AutoPendingPurchase, wantCustomer.AutoTopUpLast = wantID, ""
			wantCustomer.AutoSpendMonth, wantCustomer.AutoSpendMicros = monthOf(h.now), cost
			if before.AutoSpendMonth == monthOf(h.now) {
				wantCustomer.AutoSpendMicros += before.AutoSpendMicros
			}
			if c != wantCustomer || answer != c {
				t.Fatalf("customer\n%+v\nanswered\n%+v\nwant\n%+v", c, answer, wantCustomer)
			}
		})
	}
}

// An UpsertCustomer checks the auto top-up under the conditions a burn does
// and otherwise records why not: nothing when available is at or above the
// threshold or the customer has no auto top-up, the reason when it is
// disabled, paused, already pending or over the monthly cap. In a version 4
// entry it changes the settings alone.
func TestAnUpsertChecksTheAutoTopUpAsABurnDoes(t *testing.T) {
	fixed := AutoTopUp{Enabled: true, ThresholdCredits: 300, Mode: TopUpFixed, AmountCredits: 2000}
	startedOne := func(h *harness) {
		h.paid("g", 1000, "0.10")
		h.ok(UpsertCustomer{ID: "c1", PlanID: "pro", AutoTopUp: fixed})
		h.burnCredits("e0", 800) // 200 left: auto-7-0-0 starts
	}
	for _, tc := range []struct {
		name  string
		setUp func(h *harness)
		u     UpsertCustomer
		// wantLast is the reason recorded; unchanged means the auto top-up
		// bookkeeping stays as it was.
		wantLast  string
		unchanged bool
	}{
		{name: "available above the threshold starts nothing",
			setUp: func(h *harness) { h.paid("g", 1000, "0.10") },
			u:     UpsertCustomer{ID: "c1", PlanID: "pro", AutoTopUp: fixed}, unchanged: true},
		{name: "available at the threshold starts nothing",
			setUp: func(h *harness) { h.paid("g", 300, "0.10") },
			u:     UpsertCustomer{ID: "c1", PlanID: "pro", AutoTopUp: fixed}, unchanged: true},
		{name: "a customer whose plan has no auto top-up starts nothing",
			setUp: func(h *harness) {}, u: UpsertCustomer{ID: "c1", PlanID: "pro"}, unchanged: true},
		{name: "a customer without a plan starts nothing",
			setUp: func(h *harness) {}, u: UpsertCustomer{ID: "c1"}, unchanged: true},
		{name: "disabled is recorded",
			setUp: func(h *harness) {},
			u: UpsertCustomer{ID: "c1", PlanID: "pro", AutoTopUp: AutoTopUp{Enabled: false, ThresholdCredits: 300,
				Mode: TopUpFixed, AmountCredits: 2000}},
			wantLast: "disabled"},
		{name: "paused is recorded, without a resume",
			setUp: func(h *harness) {
				startedOne(h)
				h.ok(CompletePurchase{ID: "auto-7-0-0", Outcome: OutcomeFailed, FailureReason: "card_declined"})
			},
			u:        UpsertCustomer{ID: "c1", PlanID: "pro", AutoTopUp: fixed},
			wantLast: "paused: automatic charge for purchase auto-7-0-0 failed: card_declined"},
		{name: "a pending top-up is recorded, and no second one starts",
			setUp:    startedOne,
			u:        UpsertCustomer{ID: "c1", PlanID: "pro", AutoTopUp: fixed},
			wantLast: "already pending: auto-7-0-0"},
		{name: "the monthly cap is recorded",
			setUp: func(h *harness) {},
			u: UpsertCustomer{ID: "c1", PlanID: "pro", AutoTopUp: AutoTopUp{Enabled: true, ThresholdCredits: 300,
				Mode: TopUpFixed, AmountCredits: 2000, MonthlyCapMicros: 1_999_999}},
			wantLast: "monthly cap reached"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			h, dumpBefore, before, answer := upsertInBoth(t, tc.setUp, tc.u)
			if before.AutoTopUpLast != "" {
				t.Fatalf("set-up left the last reason %q", before.AutoTopUpLast)
			}
			c := h.customer("c1")
			wantCustomer := withSettings(before, tc.u, h.now)
			if !tc.unchanged {
				wantCustomer.AutoTopUpLast = tc.wantLast
			}
			if c != wantCustomer || answer != c {
				t.Fatalf("customer\n%+v\nanswered\n%+v\nwant\n%+v", c, answer, wantCustomer)
			}
			if !bytes.Equal(onlySections(dumpBefore, "purchases", "purchases_pending"), onlySections(h.dump(), "purchases", "purchases_pending")) {
				t.Fatal("the upsert changed the purchases")
			}
		})
	}
}

// An UpsertCustomer that creates the customer starts no top-up, whatever its
// settings: customers are created before their first credits are granted or
// bought (the README's first steps, a plan's trial grant), and would be
// charged before those came. The customer's next check starts it; in
// entries of version 5 that includes its next UpsertCustomer.
func TestCreatingACustomerStartsNoAutoTopUp(t *testing.T) {
	fixed := AutoTopUp{Enabled: true, ThresholdCredits: 300, Mode: TopUpFixed, AmountCredits: 2000}
	h := newHarness(t)
	h.seed()
	h.ok(UpsertPlan{Plan: Plan{ID: "auto", CreditTypeID: "ai", Currency: "USD", PricePerCredit: mustDec("0.10"),
		MinPurchaseCredits: 100, AutoTopUp: fixed}})
	for _, u := range []UpsertCustomer{
		{ID: "own", PlanID: "pro", AutoTopUp: fixed},
		{ID: "plans", PlanID: "auto"},
	} {
		cu := h.ok(u).Value.(*Customer)
		if c := h.customer(u.ID); c.AutoPendingPurchase != "" || c.AutoTopUpLast != "" || c.AutoSpendMicros != 0 || *cu != c {
			t.Fatalf("creating %s: %+v (answered %+v), want no top-up and no reason", u.ID, c, *cu)
		}
	}
	if ps := h.pendingPurchases(); len(ps) != 0 {
		t.Fatalf("pending purchases %+v after creating customers, want none", ps)
	}
	h.ok(UpsertCustomer{ID: "own", Name: "Own Inc.", PlanID: "pro", AutoTopUp: fixed})
	if c := h.customer("own"); c.AutoPendingPurchase != fmt.Sprintf("%s%d-0-0", AutoPurchasePrefix, h.index) {
		t.Fatalf("the next upsert of a customer created with auto top-up on and nothing available: %+v, want the top-up started", c)
	}
}

// An UpsertCustomer has no idempotency key: a retry applies again. A retry
// of the upsert that started a top-up finds it pending and starts no second
// one (auto_top_up_last says so until the purchase settles); once it is
// paid, a further retry finds available above the threshold.
func TestARetriedUpsertStartsNoSecondAutoTopUp(t *testing.T) {
	h := newHarness(t)
	h.seed()
	u := UpsertCustomer{ID: "c1", PlanID: "pro", AutoTopUp: AutoTopUp{Enabled: true, ThresholdCredits: 300,
		Mode: TopUpFixed, AmountCredits: 2000}}
	first := *h.ok(u).Value.(*Customer)
	id := fmt.Sprintf("%s%d-0-0", AutoPurchasePrefix, h.index)
	if first.AutoPendingPurchase != id || first.AutoSpendMicros != 2_000_000 {
		t.Fatalf("the upsert: %+v, want %s started for 2,000,000 micros", first, id)
	}
	for i := range 2 {
		again := *h.ok(u).Value.(*Customer)
		want := first
		want.AutoTopUpLast, want.UpdatedAt = "already pending: "+id, h.now
		if again != want {
			t.Fatalf("retry %d: %+v\nwant %+v", i+1, again, want)
		}
		if ps := h.pendingPurchases(); len(ps) != 1 || ps[0].ID != id {
			t.Fatalf("pending purchases after retry %d: %+v, want only %s", i+1, ps, id)
		}
	}
	h.ok(CompletePurchase{ID: id, Outcome: OutcomeSucceeded})
	if c := h.customer("c1"); c.AutoPendingPurchase != "" || c.AutoTopUpLast != "" {
		t.Fatalf("after %s succeeded: %+v, want nothing pending and no reason", id, c)
	}
	after := *h.ok(u).Value.(*Customer)
	if after.AutoPendingPurchase != "" || after.AutoTopUpLast != "" || after.AutoSpendMicros != 2_000_000 {
		t.Fatalf("a retry once the top-up is paid: %+v, want nothing started", after)
	}
	if ps := h.pendingPurchases(); len(ps) != 0 {
		t.Fatalf("pending purchases %+v, want none", ps)
	}
}

// When the customer's pending automatic purchase settles (succeeded or
// failed), an auto_top_up_last of "already pending: <its id>" is cleared in
// the same command (entries of version 5 on). It stayed until the next check
// overwrote it, so GetCustomer named as pending a purchase that had been paid
// or had failed. Other reasons stay, as does the pending reason when another
// purchase of the customer settles; a version 4 entry keeps it, as before.
func TestASettledAutoTopUpClearsItsAlreadyPendingReason(t *testing.T) {
	fixed := AutoTopUp{Enabled: true, ThresholdCredits: 300, Mode: TopUpFixed, AmountCredits: 2000}
	const pending = "already pending: auto-7-0-0"
	for _, tc := range []struct {
		name    string
		version byte
		// extra runs after auto-7-0-0 started and a burn found it pending.
		extra    func(h *harness)
		complete CompletePurchase
		wantLast string
	}{
		{"paid, in a version 5 entry", 5, nil,
			CompletePurchase{ID: "auto-7-0-0", Outcome: OutcomeSucceeded}, ""},
		{"failed, in a version 5 entry", 5, nil,
			CompletePurchase{ID: "auto-7-0-0", Outcome: OutcomeFailed, FailureReason: "card_declined"}, ""},
		{"paid, in a version 4 entry", 4, nil,
			CompletePurchase{ID: "auto-7-0-0", Outcome: OutcomeSucceeded}, pending},
		{"failed, in a version 4 entry", 4, nil,
			CompletePurchase{ID: "auto-7-0-0", Outcome: OutcomeFailed, FailureReason: "card_declined"}, pending},
		{"another reason stays", 5,
			func(h *harness) {
				h.ok(UpsertCustomer{ID: "c1", PlanID: "pro", AutoTopUp: AutoTopUp{Enabled: false, ThresholdCredits: 300,
					Mode: TopUpFixed, AmountCredits: 2000}}) // records disabled
			},
			CompletePurchase{ID: "auto-7-0-0", Outcome: OutcomeSucceeded}, "disabled"},
		{"a self-serve purchase settling leaves the automatic one's reason", 5,
			func(h *harness) {
				h.ok(StartPurchase{ID: "buy-1", CustomerID: "c1", Credits: 500, Flow: FlowSelfServe})
			},
			CompletePurchase{ID: "buy-1", Outcome: OutcomeSucceeded}, pending},
	} {
		t.Run(tc.name, func(t *testing.T) {
			// hs[0] applies the settlement in an entry of tc.version, hs[1]
			// in a version 4 entry.
			var hs [2]*harness
			for i := range hs {
				x := newHarness(t)
				x.seed()
				x.paid("g", 1000, "0.10")
				x.ok(UpsertCustomer{ID: "c1", PlanID: "pro", AutoTopUp: fixed})
				x.burnCredits("e0", 800) // 200 left: auto-7-0-0 starts
				x.burnCredits("e1", 10)
				if c := x.customer("c1"); c.AutoPendingPurchase != "auto-7-0-0" || c.AutoTopUpLast != pending {
					t.Fatalf("set-up: %+v, want auto-7-0-0 pending and the burn after it saying so", c)
				}
				if tc.extra != nil {
					tc.extra(x)
				}
				version := tc.version
				if i == 1 {
					version = 4
				}
				if r := x.applyAs(version, tc.complete)[0]; r.Err != nil || r.Duplicate {
					t.Fatalf("CompletePurchase in a version %d entry: %+v (%v)", version, r, r.Err)
				}
				hs[i] = x
			}
			h, old := hs[0], hs[1]
			c := h.customer("c1")
			if c.AutoTopUpLast != tc.wantLast {
				t.Fatalf("last reason %q, want %q (customer %+v)", c.AutoTopUpLast, tc.wantLast, c)
			}
			// The reason is all that differs from what the command did
			// before version 5.
			want := old.customer("c1")
			want.AutoTopUpLast = tc.wantLast
			if c != want {
				t.Fatalf("customer\n%+v\nwant what a version 4 entry leaves, but for the reason\n%+v", c, want)
			}
			if !bytes.Equal(withoutSections(old.dump(), "customers"), withoutSections(h.dump(), "customers")) {
				t.Fatal("the settlement changed more than the customer's reason")
			}
		})
	}
}

// Each entry version keeps the rules it was proposed under: an
// UpsertCustomer that finds available below the threshold starts the
// top-up, and a settled automatic purchase clears its pending reason, only
// in entries of version 5 on.
func TestEachEntryVersionKeepsItsUpsertAndSettlementRules(t *testing.T) {
	fixed := AutoTopUp{Enabled: true, ThresholdCredits: 300, Mode: TopUpFixed, AmountCredits: 2000}
	for _, version := range []byte{1, 2, 3, 4, 5} {
		t.Run(fmt.Sprintf("an upsert in a version %d entry", version), func(t *testing.T) {
			h := newHarness(t)
			h.seed()
			var e Entry
			if version == 1 {
				e = v1UpsertCustomer(h, "c1", "pro", fixed)
			} else {
				e = h.entry(UpsertCustomer{ID: "c1", PlanID: "pro", AutoTopUp: fixed})
				e.Data[0] = version
			}
			rs, err := h.f.Apply([]Entry{e})
			if err != nil || rs[0][0].Err != nil {
				t.Fatalf("apply: %v %+v", err, rs)
			}
			c := h.customer("c1")
			if started := c.AutoPendingPurchase != ""; started != (version >= 5) {
				t.Fatalf("top-up started: %v, want %v (%+v)", started, version >= 5, c)
			}
			if want := fmt.Sprintf("%s%d-0-0", AutoPurchasePrefix, e.Index); version >= 5 && c.AutoPendingPurchase != want {
				t.Fatalf("purchase %s, want %s", c.AutoPendingPurchase, want)
			}
		})
		for _, outcome := range []PurchaseOutcome{OutcomeSucceeded, OutcomeFailed} {
			t.Run(fmt.Sprintf("a purchase %s in a version %d entry", map[PurchaseOutcome]string{OutcomeSucceeded: "paid", OutcomeFailed: "failed"}[outcome], version), func(t *testing.T) {
				h := newHarness(t)
				h.seed()
				h.paid("g", 1000, "0.10")
				h.ok(UpsertCustomer{ID: "c1", PlanID: "pro", AutoTopUp: fixed})
				h.burnCredits("e0", 800)
				h.burnCredits("e1", 10) // already pending: auto-7-0-0
				complete := CompletePurchase{ID: "auto-7-0-0", Outcome: outcome}
				if outcome == OutcomeFailed {
					complete.FailureReason = "card_declined"
				}
				if r := h.applyAs(version, complete)[0]; r.Err != nil {
					t.Fatalf("CompletePurchase: %v", r.Err)
				}
				want := "already pending: auto-7-0-0"
				if version >= 5 {
					want = ""
				}
				if c := h.customer("c1"); c.AutoPendingPurchase != "" || c.AutoTopUpLast != want {
					t.Fatalf("customer %+v, want nothing pending and the last reason %q", c, want)
				}
			})
		}
	}
}

// Upserts that start, find pending and leave alone top-ups, and settlements
// that clear or (in version 4 entries) keep pending reasons, among other
// commands in the same entries and with version 4 entries between version 5
// ones, leave replicas that apply the log grouped into Apply calls in any
// way byte-identical, with the same answers.
func TestUpsertTopUpsAreTheSameOnEveryReplica(t *testing.T) {
	s := AutoTopUp{Enabled: true, ThresholdCredits: 300, Mode: TopUpToTarget, AmountCredits: 2000}
	w := &logWriter{now: t0}
	entry := w.entryOfVersion
	promo := func(id, customer string, amount int64) CreateGrant {
		return CreateGrant{ID: id, CustomerID: customer, CreditTypeID: "ai", Category: Promotional, Amount: amount}
	}
	denied := func(id, customer string) BurnUsage {
		return BurnUsage{Events: []UsageEvent{{ID: id, CustomerID: customer, CreditTypeID: "ai", Credits: 50}}}
	}
	// 1: the catalog; c1 to c4 created (nothing starts on creation).
	entry(entryVersion, CreateCreditType{ID: "ai", Name: "AI", Scale: 2},
		UpsertPlan{Plan: Plan{ID: "pro", CreditTypeID: "ai", Currency: "USD", PricePerCredit: mustDec("0.10"), MinPurchaseCredits: 100}},
		UpsertPlan{Plan: Plan{ID: "auto", CreditTypeID: "ai", Currency: "USD", PricePerCredit: mustDec("0.10"), MinPurchaseCredits: 100, AutoTopUp: s}},
		UpsertCustomer{ID: "c1", PlanID: "pro"}, UpsertCustomer{ID: "c2", PlanID: "pro"},
		UpsertCustomer{ID: "c3", PlanID: "pro"}, UpsertCustomer{ID: "c4", PlanID: "pro", AutoTopUp: s},
		promo("g1", "c1", 100), promo("g3", "c3", 1000))
	// 2: c1 turns it on (auto-2-0-0, 1900 up to 2000 from 100), c2 takes
	// the plan that has it on (auto-2-1-0, 2000), c1's retry finds its
	// pending, c3 has 1000 (above).
	entry(entryVersion, UpsertCustomer{ID: "c1", PlanID: "pro", AutoTopUp: s}, UpsertCustomer{ID: "c2", PlanID: "auto"},
		UpsertCustomer{ID: "c1", PlanID: "pro", AutoTopUp: s}, UpsertCustomer{ID: "c3", PlanID: "pro", AutoTopUp: s})
	// 3, version 4: c4's upsert starts nothing; c2's denied event finds
	// auto-2-1-0 pending; c4's starts auto-3-2-0.
	entry(4, UpsertCustomer{ID: "c4", Name: "Four", PlanID: "pro", AutoTopUp: s}, denied("e1", "c2"), denied("e2", "c4"))
	// 4, version 4: c4's denied event finds it pending, and it is paid:
	// the reason stays.
	entry(4, denied("e3", "c4"), CompletePurchase{ID: "auto-3-2-0", Outcome: OutcomeSucceeded})
	// 5: c1's is paid (its reason goes), c2's fails (its reason goes).
	entry(entryVersion, CompletePurchase{ID: "auto-2-0-0", Outcome: OutcomeSucceeded},
		CompletePurchase{ID: "auto-2-1-0", Outcome: OutcomeFailed, FailureReason: "card_declined"})
	// 6: c2 resumed: auto-6-1-0 (2000).
	entry(entryVersion, promo("g5", "c3", 1), UpsertCustomer{ID: "c2", PlanID: "auto", ResumeAutoTopUp: true})
	entry(entryVersion, Tick{})

	ps, cs := replayAlikeAndRead(t, w.log, "c1", "c2", "c3", "c4")
	if len(ps) != 1 || ps[0].ID != "auto-6-1-0" || ps[0].CustomerID != "c2" || ps[0].Credits != 2000 {
		t.Fatalf("pending %+v; want only auto-6-1-0, c2's, for 2000 credits", ps)
	}
	for id, want := range map[string]struct {
		pending, last string
		spent         int64
	}{
		"c1": {"", "", 1_900_000},
		"c2": {"auto-6-1-0", "", 2_000_000}, // the failed charge is not spent
		"c3": {"", "", 0},
		"c4": {"", "already pending: auto-3-2-0", 2_000_000}, // kept: settled in a version 4 entry
	} {
		if c := cs[id]; c.AutoPendingPurchase != want.pending || c.AutoTopUpLast != want.last || c.AutoSpendMicros != want.spent {
			t.Errorf("%s: pending %q, last %q, spent %d; want %q, %q, %d", id, c.AutoPendingPurchase, c.AutoTopUpLast,
				c.AutoSpendMicros, want.pending, want.last, want.spent)
		}
	}
}
