package fsm

import (
	"bytes"
	"fmt"
	"testing"
	"time"
)

// withoutSections drops the named buckets from a dump, and meta (the applied
// index and time move with every entry).
func withoutSections(d []byte, names ...string) []byte {
	skip := map[string]bool{"meta": true}
	for _, n := range names {
		skip[n] = true
	}
	var out []byte
	keep := true
	for _, line := range bytes.SplitAfter(d, []byte("\n")) {
		if len(line) > 2 && line[0] == '[' && bytes.HasSuffix(line, []byte("]\n")) {
			keep = !skip[string(line[1:len(line)-2])]
		}
		if keep {
			out = append(out, line...)
		}
	}
	return out
}

// reserveRefused applies r as one entry, requires it refused for lack of
// credits exactly as a Reserve that starts no top-up is (available 0,
// needed r.Credits) and requires that it reserved nothing.
func reserveRefused(t *testing.T, h *harness, r Reserve) {
	t.Helper()
	res := h.apply(r)[0]
	e, ok := res.Err.(*Error)
	want := insufficient(0, r.Credits)
	if !ok || e.Code != want.Code || e.Field != want.Field || e.Msg != want.Msg || e.Available != want.Available || e.Needed != want.Needed {
		t.Fatalf("Reserve %s: %+v (%v), want refused as %v", r.ID, res, res.Err, want)
	}
	if res.Value != nil || res.Duplicate {
		t.Fatalf("Reserve %s refused with a value: %+v", r.ID, res)
	}
	if err := h.f.View(func(v *View) error { _, err := v.Reservation(r.ID); return err }); CodeOf(err) != CodeNotFound {
		t.Fatalf("Reserve %s was refused, but the reservation reads back (%v)", r.ID, err)
	}
	if b := h.balance(r.CustomerID, r.CreditTypeID); b.Reserved != 0 {
		t.Fatalf("Reserve %s was refused, but %d credits are reserved", r.ID, b.Reserved)
	}
}

func (h *harness) pendingPurchases() []Purchase {
	h.t.Helper()
	var ps []Purchase
	if err := h.f.View(func(v *View) (err error) { ps, err = v.PendingPurchases(100); return }); err != nil {
		h.t.Fatal(err)
	}
	return ps
}

// A customer who only reserves (LLM calls: Reserve, then Settle) and whose
// available is below the auto top-up threshold with nothing pending gets the
// top-up when a Reserve of theirs is refused for lack of credits, as a denied
// usage event gives it (TestADeniedEventStartsTheAutoTopUpItWaitsFor). A
// refused Reserve started none, so such a customer left with nothing by an
// expiry, a refund, a reset monthly cap or a resumed top-up had every Reserve
// refused and was never topped up. The Reserve itself is still refused as
// before, reserves nothing, and only the top-up's records change; a retry of
// it starts no second purchase.
func TestARefusedReserveStartsTheAutoTopUpItWaitsFor(t *testing.T) {
	fixed := AutoTopUp{Enabled: true, ThresholdCredits: 300, Mode: TopUpFixed, AmountCredits: 2000}
	scenarios := append([]drainScenario{{"no credits were ever granted", func(h *harness) {}}}, drainScenarios(t, fixed)...)
	for _, tc := range scenarios {
		t.Run(tc.name, func(t *testing.T) {
			h := tc.drained(t, fixed)
			before := h.customer("c1")
			pendingBefore := len(h.pendingPurchases())
			dumpBefore := h.dump()

			r := Reserve{ID: "r1", CustomerID: "c1", CreditTypeID: "ai", Credits: 50}
			reserveRefused(t, h, r)
			wantID := fmt.Sprintf("%s%d-0-0", AutoPurchasePrefix, h.index) // the Reserve's entry, command 0
			c := h.customer("c1")
			if c.AutoPendingPurchase != wantID {
				t.Fatalf("pending automatic purchase %q after a refused Reserve below the threshold, want %s (last: %q)",
					c.AutoPendingPurchase, wantID, c.AutoTopUpLast)
			}
			var p Purchase
			if err := h.f.View(func(v *View) (err error) { p, err = v.Purchase(wantID); return }); err != nil {
				t.Fatal(err)
			}
			want := Purchase{ID: wantID, CustomerID: "c1", PlanID: "pro", CreditTypeID: "ai", Credits: 2000,
				UnitPrice: mustDec("0.10"), Currency: "USD", TotalMicros: 2_000_000, Flow: FlowAuto,
				Status: PurchasePending, CreatedAt: h.now, UpdatedAt: h.now}
			if p != want {
				t.Fatalf("automatic purchase\n%+v\nwant\n%+v", p, want)
			}
			// The customer changed only in its auto top-up bookkeeping.
			wantCustomer := before
			wantCustomer.AutoPendingPurchase, wantCustomer.AutoTopUpLast = wantID, ""
			wantCustomer.AutoSpendMonth = monthOf(h.now)
			wantCustomer.AutoSpendMicros = 2_000_000
			if before.AutoSpendMonth == wantCustomer.AutoSpendMonth {
				wantCustomer.AutoSpendMicros += before.AutoSpendMicros
			}
			wantCustomer.UpdatedAt = h.now
			if c != wantCustomer {
				t.Fatalf("customer\n%+v\nwant\n%+v", c, wantCustomer)
			}
			// Nothing else: no pool, hold, expiry, ledger or idempotency
			// record of the Reserve.
			if !bytes.Equal(withoutSections(dumpBefore, "customers", "purchases", "purchases_pending"),
				withoutSections(h.dump(), "customers", "purchases", "purchases_pending")) {
				t.Fatal("the refused Reserve changed more than the customer and its purchase")
			}
			if n := len(h.pendingPurchases()); n != pendingBefore+1 {
				t.Fatalf("%d purchases pending, want %d", n, pendingBefore+1)
			}

			// A retry of the refused Reserve is refused again and finds the
			// top-up pending: no second purchase, no second spend.
			reserveRefused(t, h, r)
			again := h.customer("c1")
			if again.AutoPendingPurchase != wantID || again.AutoSpendMicros != c.AutoSpendMicros ||
				again.AutoTopUpLast != "already pending: "+wantID {
				t.Fatalf("the retry changed the top-up: %+v, was %+v", again, c)
			}
			if n := len(h.pendingPurchases()); n != pendingBefore+1 {
				t.Fatalf("%d purchases pending after the retry, want %d", n, pendingBefore+1)
			}

			// Once the top-up is paid, the retry holds the credits.
			h.ok(CompletePurchase{ID: wantID, Outcome: OutcomeSucceeded})
			if res := h.ok(r).Value.(*Reservation); res.Amount != 50 || res.Status != ReservationHeld {
				t.Fatalf("the Reserve after the top-up: %+v", res)
			}
		})
	}
}

// A refused Reserve starts the top-up under the conditions a denied usage
// event does, and otherwise records why not, as a burn would: nothing when
// available is at or above the threshold (even though the Reserve asks for
// more), the reason when auto top-up is off, paused, already pending or over
// the monthly cap.
func TestARefusedReserveChecksTheAutoTopUpAsADeniedEventDoes(t *testing.T) {
	fixed := AutoTopUp{Enabled: true, ThresholdCredits: 300, Mode: TopUpFixed, AmountCredits: 2000}
	for _, tc := range []struct {
		name     string
		settings AutoTopUp
		// setUp leaves c1 with its auto top-up check's last reason empty.
		setUp   func(h *harness)
		credits int64
		// wantLast is the reason recorded; unchanged means the Reserve
		// changes nothing at all.
		wantLast  string
		unchanged bool
	}{
		{name: "available above the threshold but below the reservation starts nothing",
			settings: AutoTopUp{Enabled: true, ThresholdCredits: 100, Mode: TopUpFixed, AmountCredits: 2000},
			setUp:    func(h *harness) { h.paid("g", 200, "0.10") }, credits: 500, unchanged: true},
		{name: "available at the threshold starts nothing",
			settings: fixed, setUp: func(h *harness) { h.paid("g", 300, "0.10") }, credits: 301, unchanged: true},
		{name: "a customer whose plan has no auto top-up starts nothing",
			setUp: func(h *harness) {}, credits: 50, unchanged: true},
		{name: "a customer without a plan starts nothing",
			setUp: func(h *harness) { h.ok(UpsertCustomer{ID: "c1"}) }, credits: 50, unchanged: true},
		{name: "disabled is recorded",
			settings: AutoTopUp{Enabled: false, ThresholdCredits: 300, Mode: TopUpFixed, AmountCredits: 2000},
			setUp:    func(h *harness) {}, credits: 50, wantLast: "disabled"},
		{name: "paused is recorded",
			settings: fixed,
			setUp: func(h *harness) {
				h.paid("g", 1000, "0.10")
				h.burnCredits("e0", 800) // 200 left: a top-up starts
				id := h.customer("c1").AutoPendingPurchase
				h.ok(CompletePurchase{ID: id, Outcome: OutcomeFailed, FailureReason: "card_declined"})
				h.ok(RevokeGrant{GrantID: "g", Reason: "refund", RequestID: "refund-1"}) // 0 left, no burn
			},
			credits: 50, wantLast: "paused: automatic charge for purchase auto-7-0-0 failed: card_declined"},
		{name: "a pending top-up is recorded, and no second one starts",
			settings: fixed,
			setUp: func(h *harness) {
				h.paid("g", 1000, "0.10")
				h.burnCredits("e0", 800) // 200 left: a top-up starts
				h.ok(RevokeGrant{GrantID: "g", Reason: "refund", RequestID: "refund-1"})
			},
			credits: 50, wantLast: "already pending: auto-7-0-0"},
		{name: "the monthly cap is recorded",
			settings: AutoTopUp{Enabled: true, ThresholdCredits: 300, Mode: TopUpFixed, AmountCredits: 2000, MonthlyCapMicros: 1_999_999},
			setUp:    func(h *harness) {}, credits: 50, wantLast: "monthly cap reached"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			h := newHarness(t)
			h.seed()
			if tc.settings != (AutoTopUp{}) {
				h.okInVersion4(UpsertCustomer{ID: "c1", PlanID: "pro", AutoTopUp: tc.settings})
			}
			tc.setUp(h)
			before := h.customer("c1")
			if before.AutoTopUpLast != "" {
				t.Fatalf("set-up left the last reason %q", before.AutoTopUpLast)
			}
			pending := h.pendingPurchases()
			r := Reserve{ID: "r1", CustomerID: "c1", CreditTypeID: "ai", Credits: tc.credits}
			if tc.unchanged {
				h.fails(r, CodeInsufficient, "")
				return
			}
			dumpBefore := h.dump()
			reserveRefused(t, h, r)
			c := h.customer("c1")
			wantCustomer := before
			wantCustomer.AutoTopUpLast, wantCustomer.UpdatedAt = tc.wantLast, h.now
			if c != wantCustomer {
				t.Fatalf("customer\n%+v\nwant\n%+v", c, wantCustomer)
			}
			if got := h.pendingPurchases(); fmt.Sprint(got) != fmt.Sprint(pending) {
				t.Fatalf("pending purchases %+v, were %+v", got, pending)
			}
			if !bytes.Equal(withoutSections(dumpBefore, "customers"), withoutSections(h.dump(), "customers")) {
				t.Fatal("the refused Reserve changed more than the customer's last reason")
			}
		})
	}
}

// Each entry version keeps the auto top-up rules it was proposed under: a
// Reserve whose hold leaves available below the threshold starts the top-up
// only in entries of version 4 on, a refused Reserve in entries of version 3
// on, a denied usage event in entries of version 2 on. An older log replays
// as it did, and replicas still on an older build (which refuse newer
// entries) never see an entry whose rules they do not know.
func TestEachEntryVersionKeepsItsAutoTopUpRules(t *testing.T) {
	refused := Reserve{ID: "r1", CustomerID: "c1", CreditTypeID: "ai", Credits: 50}
	held := Reserve{ID: "r1", CustomerID: "c1", CreditTypeID: "ai", Credits: 800} // of 1,000: 200 left
	deny := BurnUsage{Events: []UsageEvent{{ID: "e1", CustomerID: "c1", CreditTypeID: "ai", Credits: 50}}}
	for _, tc := range []struct {
		version   byte
		cmd       Command
		wantStart bool
	}{
		{1, held, false},
		{2, held, false},
		{3, held, false},
		{4, held, true},
		{1, refused, false},
		{2, refused, false},
		{3, refused, true},
		{4, refused, true},
		{1, deny, false},
		{2, deny, true},
		{3, deny, true},
		{4, deny, true},
	} {
		isHeld := tc.cmd == Command(held)
		what := "a refused Reserve"
		if isHeld {
			what = "a held Reserve"
		} else if _, isUsage := tc.cmd.(BurnUsage); isUsage {
			what = "a denied usage event"
		}
		t.Run(fmt.Sprintf("%s in a version %d entry", what, tc.version), func(t *testing.T) {
			h := newHarness(t)
			h.seed()
			h.okInVersion4(UpsertCustomer{ID: "c1", PlanID: "pro", AutoTopUp: AutoTopUp{Enabled: true, ThresholdCredits: 300,
				Mode: TopUpFixed, AmountCredits: 2000}})
			if isHeld {
				h.paid("g", 1000, "0.10")
			}
			before := stripMeta(h.dump())
			e := h.entry(tc.cmd)
			e.Data[0] = tc.version
			rs, err := h.f.Apply([]Entry{e})
			if err != nil {
				t.Fatalf("version %d: %v", tc.version, err)
			}
			switch r := rs[0][0]; {
			case isHeld:
				if r.Err != nil || r.Value.(*Reservation).Status != ReservationHeld {
					t.Fatalf("Reserve: %+v, want it held", r)
				}
			case tc.cmd == Command(refused):
				if CodeOf(r.Err) != CodeInsufficient {
					t.Fatalf("Reserve: %+v, want refused for lack of credits", r)
				}
			default:
				if r.Err != nil || r.Value.([]EventResult)[0].Status != EventDenied {
					t.Fatalf("usage: %+v, want the event denied", r)
				}
			}
			c := h.customer("c1")
			if started := c.AutoPendingPurchase != ""; started != tc.wantStart {
				t.Fatalf("top-up started: %v, want %v (%+v)", started, tc.wantStart, c)
			}
			if want := fmt.Sprintf("%s%d-0-0", AutoPurchasePrefix, e.Index); tc.wantStart && c.AutoPendingPurchase != want {
				t.Fatalf("purchase %s, want %s", c.AutoPendingPurchase, want)
			}
			if tc.wantStart {
				return
			}
			if tc.cmd == Command(refused) && !bytes.Equal(before, stripMeta(h.dump())) {
				t.Fatalf("a refused Reserve in a version %d entry changed the state", tc.version)
			}
			if isHeld && !bytes.Equal(onlySections(before, topUpSections...), onlySections(h.dump(), topUpSections...)) {
				t.Fatalf("a held Reserve in a version %d entry changed the auto top-up's records", tc.version)
			}
		})
	}
}

// Refused Reserves that start, find pending, find paused and start again
// top-ups, among other commands in the same entries, leave replicas that
// apply the log grouped into Apply calls in any way byte-identical, with the
// same answers.
func TestRefusedReservesTopUpTheSameOnEveryReplica(t *testing.T) {
	s := AutoTopUp{Enabled: true, ThresholdCredits: 300, Mode: TopUpToTarget, AmountCredits: 2000}
	w := &logWriter{now: t0}
	entry := func(cmds ...Command) {
		for _, c := range cmds {
			w.add(c)
		}
		w.endEntry()
		w.now += Timestamp(time.Minute.Microseconds())
	}
	resv := func(id, customer string, credits int64) Reserve {
		return Reserve{ID: id, CustomerID: customer, CreditTypeID: "ai", Credits: credits}
	}
	entry(CreateCreditType{ID: "ai", Name: "AI", Scale: 2},
		UpsertPlan{Plan: Plan{ID: "pro", CreditTypeID: "ai", Currency: "USD", PricePerCredit: mustDec("0.10"), MinPurchaseCredits: 100}},
		UpsertCustomer{ID: "c1", PlanID: "pro", AutoTopUp: s}, UpsertCustomer{ID: "c2", PlanID: "pro", AutoTopUp: s},
		CreateGrant{ID: "g2", CustomerID: "c2", CreditTypeID: "ai", Category: Promotional, Amount: 100})
	// 2: c1 refused (auto-2-0-0), c2 refused (auto-2-1-0, up to 2000 from 100), c1's retry finds it pending.
	entry(resv("r1", "c1", 50), resv("r2", "c2", 500), resv("r1", "c1", 50))
	// 3: c1's top-up paid, its Reserve holds; c2's fails (paused), its retry is refused.
	entry(CompletePurchase{ID: "auto-2-0-0", Outcome: OutcomeSucceeded}, resv("r1", "c1", 50),
		CompletePurchase{ID: "auto-2-1-0", Outcome: OutcomeFailed, FailureReason: "card_declined"}, resv("r2", "c2", 500))
	// 4: c2 resumed, which starts auto-4-0-0 (1900 credits: up to 2000 from
	// 100; entries of version 5 on); its retry finds it pending.
	entry(UpsertCustomer{ID: "c2", PlanID: "pro", AutoTopUp: s, ResumeAutoTopUp: true}, resv("r2", "c2", 500))
	entry(Tick{})

	got := requireTheSameHoweverGrouped(t, w.log, Options{NoSync: true})
	if CodeOf(got[1][0].Err) != CodeInsufficient || CodeOf(got[1][1].Err) != CodeInsufficient ||
		CodeOf(got[1][2].Err) != CodeInsufficient || got[2][1].Err != nil || CodeOf(got[2][3].Err) != CodeInsufficient ||
		CodeOf(got[3][1].Err) != CodeInsufficient {
		t.Fatalf("answers: %s", resultsText(t, got[1])+resultsText(t, got[2])+resultsText(t, got[3]))
	}
	f := openAt(t, t.TempDir())
	applyAll(t, f, w.log, 1, nil)
	var ps []Purchase
	var c1, c2 Customer
	if err := f.View(func(v *View) (err error) {
		if ps, err = v.PendingPurchases(10); err != nil {
			return err
		}
		if c1, err = v.Customer("c1"); err != nil {
			return err
		}
		c2, err = v.Customer("c2")
		return err
	}); err != nil {
		t.Fatal(err)
	}
	if len(ps) != 1 || ps[0].ID != "auto-4-0-0" || ps[0].Credits != 1900 || c2.AutoPendingPurchase != "auto-4-0-0" ||
		c2.AutoTopUpLast != "already pending: auto-4-0-0" {
		t.Fatalf("pending %+v, c2 %+v; want auto-4-0-0 for 1900 credits, found pending by the retry", ps, c2)
	}
	if c1.AutoPendingPurchase != "" || c1.AutoSpendMicros != 2_000_000 {
		t.Fatalf("c1 %+v; want one top-up of 20.00 credits (2 USD), paid", c1)
	}
}

// A Settle refused for lack of credits (a reply longer than its hold, the
// difference not available) while available is below the threshold starts
// the top-up in entries of version 3 on, and keeps its hold; in a version 2
// entry it changes nothing. A successful Reserve did not start one before
// version 4 (only a burn, a denied event or a refusal did), so a customer
// whose holds took available below the threshold was left without a top-up
// when the Settle that needed it was refused. The hold is made in an entry
// of the Settle's version: from version 4 on, it would start the top-up
// itself (TestAReserveWhoseHoldLeavesAvailableBelowTheThresholdStartsTheAutoTopUp).
func TestARefusedSettleStartsTheAutoTopUpInVersion3(t *testing.T) {
	for _, tc := range []struct {
		version   byte
		wantStart bool
	}{{2, false}, {3, true}} {
		t.Run(fmt.Sprintf("version %d", tc.version), func(t *testing.T) {
			h := newHarness(t)
			h.seed()
			h.paid("g", 1000, "0.10")
			h.ok(UpsertCustomer{ID: "c1", PlanID: "pro", AutoTopUp: AutoTopUp{Enabled: true, ThresholdCredits: 300,
				Mode: TopUpFixed, AmountCredits: 2000}})
			if r := h.applyAs(tc.version, Reserve{ID: "r1", CustomerID: "c1", CreditTypeID: "ai", Credits: 900})[0]; r.Err != nil {
				t.Fatalf("set-up: Reserve: %v", r.Err) // 100 available
			}
			if c := h.customer("c1"); c.AutoPendingPurchase != "" {
				t.Fatalf("set-up: the Reserve started a top-up: %+v", c)
			}
			before := h.dump()
			settle := Settle{ReservationID: "r1", UseCredits: true, Credits: 1200}
			e := h.entry(settle)
			e.Data[0] = tc.version
			rs, err := h.f.Apply([]Entry{e})
			if err != nil {
				t.Fatal(err)
			}
			if got, want := rs[0][0].Err, insufficient(100, 300); CodeOf(got) != CodeInsufficient || got.Error() != want.Error() {
				t.Fatalf("Settle: %v, want %v", got, want)
			}
			if b := h.balance("c1", "ai"); b.Reserved != 900 || b.Available != 100 {
				t.Fatalf("after the refused Settle: reserved %d, available %d; want the hold of 900 kept, 100 available", b.Reserved, b.Available)
			}
			c := h.customer("c1")
			if !tc.wantStart {
				if !bytes.Equal(stripMeta(before), stripMeta(h.dump())) {
					t.Fatal("a refused Settle in a version 2 entry changed the state")
				}
				return
			}
			want := fmt.Sprintf("%s%d-0-0", AutoPurchasePrefix, e.Index)
			if c.AutoPendingPurchase != want {
				t.Fatalf("pending automatic purchase %q, want %s (last %q)", c.AutoPendingPurchase, want, c.AutoTopUpLast)
			}
			if !bytes.Equal(withoutSections(before, "customers", "purchases", "purchases_pending"),
				withoutSections(h.dump(), "customers", "purchases", "purchases_pending")) {
				t.Fatal("the refused Settle changed more than the customer and its purchase")
			}
			// Once the top-up is paid, the retry burns 1,200.
			h.ok(CompletePurchase{ID: want, Outcome: OutcomeSucceeded})
			if r := h.ok(settle).Value.(*Reservation); r.Status != ReservationSettled || r.SettledAmount != 1200 {
				t.Fatalf("the Settle after the top-up: %+v", r)
			}
		})
	}
}
