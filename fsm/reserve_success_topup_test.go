package fsm

import (
	"bytes"
	"fmt"
	"testing"
	"time"
)

// applyAs applies cmds as one entry of the given version and returns their
// results.
func (h *harness) applyAs(version byte, cmds ...Command) []Result {
	h.t.Helper()
	e := h.entry(cmds...)
	e.Data[0] = version
	rs, err := h.f.Apply([]Entry{e})
	if err != nil {
		h.t.Fatalf("apply a version %d entry: %v", version, err)
	}
	return rs[0]
}

// topUpSections are the buckets a started or declined auto top-up writes.
var topUpSections = []string{"customers", "purchases", "purchases_pending"}

// onlySections keeps the named buckets of a dump.
func onlySections(d []byte, names ...string) []byte {
	want := map[string]bool{}
	for _, n := range names {
		want[n] = true
	}
	var out []byte
	keep := false
	for _, line := range bytes.SplitAfter(d, []byte("\n")) {
		if len(line) > 2 && line[0] == '[' && bytes.HasSuffix(line, []byte("]\n")) {
			keep = want[string(line[1:len(line)-2])]
		}
		if keep {
			out = append(out, line...)
		}
	}
	return out
}

// heldInBoth sets up two harnesses alike (seed, c1 on plan "pro" with
// settings unless they are zero, then setUp), applies r to one in an entry
// of the current version and to the other in a version 3 entry, and requires
// r to hold its credits in both. It requires the version 3 Reserve to have
// left the auto top-up's records as they were (as every build before
// version 4 did), and the two states to differ at most there: the hold is
// the same. It returns the current version's harness, its dump and c1 before
// r, and r's reservation.
func heldInBoth(t *testing.T, settings AutoTopUp, setUp func(h *harness), r Reserve) (*harness, []byte, Customer, *Reservation) {
	t.Helper()
	var hs [2]*harness
	var held [2]*Reservation
	var dumpsBefore [2][]byte
	var before Customer // the same in both
	for i, version := range []byte{entryVersion, 3} {
		h := newHarness(t)
		h.seed()
		if settings != (AutoTopUp{}) {
			h.okInVersion4(UpsertCustomer{ID: "c1", PlanID: "pro", AutoTopUp: settings})
		}
		setUp(h)
		before = h.customer("c1")
		if before.AutoTopUpLast != "" {
			t.Fatalf("set-up left the last reason %q", before.AutoTopUpLast)
		}
		dumpBefore := h.dump()
		res := h.applyAs(version, r)[0]
		rv, ok := res.Value.(*Reservation)
		if res.Err != nil || !ok || res.Duplicate || rv.Status != ReservationHeld {
			t.Fatalf("Reserve %s in a version %d entry: %+v (%v), want it held", r.ID, version, res, res.Err)
		}
		if version == 3 && !bytes.Equal(onlySections(dumpBefore, topUpSections...), onlySections(h.dump(), topUpSections...)) {
			t.Fatalf("a Reserve in a version 3 entry changed the auto top-up's records: customer %+v, was %+v",
				h.customer("c1"), before)
		}
		hs[i], held[i], dumpsBefore[i] = h, rv, dumpBefore
	}
	if a, b := withoutSections(hs[0].dump(), topUpSections...), withoutSections(hs[1].dump(), topUpSections...); !bytes.Equal(a, b) {
		t.Fatal("the Reserve's state outside the auto top-up's records differs between an entry of the current version and a version 3 entry")
	}
	if *held[0] != *held[1] {
		t.Fatalf("the hold differs by version: %+v, and %+v in version 3", *held[0], *held[1])
	}
	return hs[0], dumpsBefore[0], before, held[0]
}

// A Reserve whose hold leaves available below the customer's auto top-up
// threshold starts the top-up (entries of version 4 on), with the purchase a
// burn leaving it there starts: id auto-<index>-<command>-0, sized by the
// available after the hold. A successful Reserve started none, so a customer
// holding many reservations at once (an LLM API's) could drain available to
// nothing through holds alone and was topped up only once a Reserve of theirs
// had been refused. The hold is version 3's; a second Reserve while the
// purchase is pending starts no other one, and a retry of the first is its
// duplicate.
func TestAReserveWhoseHoldLeavesAvailableBelowTheThresholdStartsTheAutoTopUp(t *testing.T) {
	fixed := AutoTopUp{Enabled: true, ThresholdCredits: 300, Mode: TopUpFixed, AmountCredits: 2000}
	toTarget := AutoTopUp{Enabled: true, ThresholdCredits: 300, Mode: TopUpToTarget, AmountCredits: 2000}
	for _, tc := range []struct {
		name     string
		settings AutoTopUp
		reserve  Reserve
		// wantCredits is what the purchase buys, at 0.10 USD a credit.
		wantCredits int64
	}{
		{"a fixed top-up, holding credits", fixed,
			Reserve{ID: "r1", CustomerID: "c1", CreditTypeID: "ai", Credits: 800}, 2000},
		{"a fixed top-up, holding a feature's quantity", fixed,
			Reserve{ID: "r1", CustomerID: "c1", FeatureID: "tokens", Quantity: 800}, 2000},
		{"a top-up to a target, from what the hold leaves available", toTarget,
			Reserve{ID: "r1", CustomerID: "c1", CreditTypeID: "ai", Credits: 800}, 1800},
		{"a hold leaving almost nothing, to a target", toTarget,
			Reserve{ID: "r1", CustomerID: "c1", CreditTypeID: "ai", Credits: 950}, 1950},
	} {
		t.Run(tc.name, func(t *testing.T) {
			setUp := func(h *harness) { h.paid("g", 1000, "0.10") }
			h, _, before, held := heldInBoth(t, tc.settings, setUp, tc.reserve)
			if b := h.balance("c1", "ai"); b.Reserved != held.Amount || b.Available != 1000-held.Amount {
				t.Fatalf("after the Reserve: reserved %d, available %d; want %d held", b.Reserved, b.Available, held.Amount)
			}
			wantID := fmt.Sprintf("%s%d-0-0", AutoPurchasePrefix, h.index) // the Reserve's entry, command 0
			c := h.customer("c1")
			if c.AutoPendingPurchase != wantID {
				t.Fatalf("pending automatic purchase %q after a Reserve left available below the threshold, want %s (last: %q)",
					c.AutoPendingPurchase, wantID, c.AutoTopUpLast)
			}
			cost := tc.wantCredits * 1000 // 0.10 USD a credit, 2 decimals: 1,000 micros a unit
			ps := h.pendingPurchases()
			want := Purchase{ID: wantID, CustomerID: "c1", PlanID: "pro", CreditTypeID: "ai", Credits: tc.wantCredits,
				UnitPrice: mustDec("0.10"), Currency: "USD", TotalMicros: cost, Flow: FlowAuto,
				Status: PurchasePending, CreatedAt: h.now, UpdatedAt: h.now}
			if len(ps) != 1 || ps[0] != want {
				t.Fatalf("pending purchases %+v, want only\n%+v", ps, want)
			}
			wantCustomer := before
			wantCustomer.AutoPendingPurchase, wantCustomer.AutoTopUpLast = wantID, ""
			wantCustomer.AutoSpendMonth, wantCustomer.AutoSpendMicros = monthOf(h.now), cost
			wantCustomer.UpdatedAt = h.now
			if c != wantCustomer {
				t.Fatalf("customer\n%+v\nwant\n%+v", c, wantCustomer)
			}

			// A retry of the Reserve is its duplicate and changes nothing.
			dump := h.dump()
			if res := h.ok(tc.reserve); !res.Duplicate || *res.Value.(*Reservation) != *held {
				t.Fatalf("the retry: %+v, want the duplicate of %+v", res, *held)
			}
			if !bytes.Equal(stripMeta(dump), stripMeta(h.dump())) {
				t.Fatal("the retry of the Reserve changed the state")
			}

			// Another hold while the purchase is pending starts none.
			h.ok(Reserve{ID: "r2", CustomerID: "c1", CreditTypeID: "ai", Credits: 1000 - held.Amount})
			again := h.customer("c1")
			if again.AutoPendingPurchase != wantID || again.AutoSpendMicros != cost ||
				again.AutoTopUpLast != "already pending: "+wantID {
				t.Fatalf("a second Reserve while %s is pending: %+v", wantID, again)
			}
			if ps := h.pendingPurchases(); len(ps) != 1 || ps[0].ID != wantID {
				t.Fatalf("pending purchases after a second Reserve: %+v, want only %s", ps, wantID)
			}
		})
	}
}

// A successful Reserve checks the auto top-up under the conditions a burn
// does and otherwise records why not: nothing when the hold leaves available
// at or above the threshold or the customer has no auto top-up, the reason
// when it is disabled, paused, already pending or over the monthly cap. The
// hold is the one a version 3 entry makes.
func TestASuccessfulReserveChecksTheAutoTopUpAsABurnDoes(t *testing.T) {
	fixed := AutoTopUp{Enabled: true, ThresholdCredits: 300, Mode: TopUpFixed, AmountCredits: 2000}
	grant := func(h *harness) { h.paid("g", 1000, "0.10") }
	for _, tc := range []struct {
		name     string
		settings AutoTopUp
		setUp    func(h *harness)
		credits  int64
		// wantLast is the reason recorded; unchanged means the customer
		// and purchases stay as they were.
		wantLast  string
		unchanged bool
	}{
		{name: "a hold leaving available above the threshold starts nothing",
			settings: fixed, setUp: grant, credits: 600, unchanged: true},
		{name: "a hold leaving available at the threshold starts nothing",
			settings: fixed, setUp: grant, credits: 700, unchanged: true},
		{name: "a customer whose plan has no auto top-up starts nothing",
			setUp: grant, credits: 1000, unchanged: true},
		{name: "a customer without a plan starts nothing",
			setUp: func(h *harness) { h.ok(UpsertCustomer{ID: "c1"}); grant(h) }, credits: 1000, unchanged: true},
		{name: "disabled is recorded",
			settings: AutoTopUp{Enabled: false, ThresholdCredits: 300, Mode: TopUpFixed, AmountCredits: 2000},
			setUp:    grant, credits: 800, wantLast: "disabled"},
		{name: "paused is recorded",
			settings: fixed,
			setUp: func(h *harness) {
				grant(h)
				h.burnCredits("e0", 800) // 200 left: a top-up starts
				h.ok(CompletePurchase{ID: "auto-7-0-0", Outcome: OutcomeFailed, FailureReason: "card_declined"})
			},
			credits: 100, wantLast: "paused: automatic charge for purchase auto-7-0-0 failed: card_declined"},
		{name: "a pending top-up is recorded, and no second one starts",
			settings: fixed,
			setUp: func(h *harness) {
				grant(h)
				h.burnCredits("e0", 800) // 200 left: a top-up starts
			},
			credits: 100, wantLast: "already pending: auto-7-0-0"},
		{name: "the monthly cap is recorded",
			settings: AutoTopUp{Enabled: true, ThresholdCredits: 300, Mode: TopUpFixed, AmountCredits: 2000, MonthlyCapMicros: 1_999_999},
			setUp:    grant, credits: 800, wantLast: "monthly cap reached"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			h, dumpBefore, before, _ := heldInBoth(t, tc.settings, tc.setUp,
				Reserve{ID: "r1", CustomerID: "c1", CreditTypeID: "ai", Credits: tc.credits})
			c := h.customer("c1")
			wantCustomer := before
			if !tc.unchanged {
				wantCustomer.AutoTopUpLast, wantCustomer.UpdatedAt = tc.wantLast, h.now
			}
			if c != wantCustomer {
				t.Fatalf("customer\n%+v\nwant\n%+v", c, wantCustomer)
			}
			if !bytes.Equal(onlySections(dumpBefore, "purchases", "purchases_pending"), onlySections(h.dump(), "purchases", "purchases_pending")) {
				t.Fatal("the Reserve changed the purchases")
			}
		})
	}
}

// Reserves whose holds start, find pending, find paused, are capped from
// and leave alone top-ups, among other commands in the same entries and
// with a version 3 entry between version 4 ones, leave replicas that apply
// the log grouped into Apply calls in any way byte-identical, with the same
// answers; the version 3 entry's Reserve starts nothing.
func TestHoldsTopUpTheSameOnEveryReplica(t *testing.T) {
	s := AutoTopUp{Enabled: true, ThresholdCredits: 300, Mode: TopUpToTarget, AmountCredits: 2000}
	w := &logWriter{now: t0}
	entry := w.entryOfVersion
	resv := func(id, customer string, credits int64) Reserve {
		return Reserve{ID: id, CustomerID: customer, CreditTypeID: "ai", Credits: credits}
	}
	promo := func(id, customer string, amount int64) CreateGrant {
		return CreateGrant{ID: id, CustomerID: customer, CreditTypeID: "ai", Category: Promotional, Amount: amount}
	}
	capped := s
	capped.MonthlyCapMicros = 1_000_000 // 10.00 credits
	entry(entryVersion, CreateCreditType{ID: "ai", Name: "AI", Scale: 2},
		UpsertPlan{Plan: Plan{ID: "pro", CreditTypeID: "ai", Currency: "USD", PricePerCredit: mustDec("0.10"), MinPurchaseCredits: 100}},
		UpsertCustomer{ID: "c1", PlanID: "pro", AutoTopUp: s}, UpsertCustomer{ID: "c2", PlanID: "pro", AutoTopUp: s},
		UpsertCustomer{ID: "c3", PlanID: "pro", AutoTopUp: s}, UpsertCustomer{ID: "c4", PlanID: "pro", AutoTopUp: capped},
		promo("g1", "c1", 1000), promo("g2", "c2", 1000), promo("g3", "c3", 1000), promo("g4", "c4", 1000))
	// 2: c1 holds 800 (auto-2-0-0, 1800 credits up to 2000 from 200) and
	// 100 more (already pending); c2 holds 500 (500 left, above) and 300
	// (auto-2-3-0, 1800); c4 holds 900 (1900 credits cost more than its cap).
	entry(entryVersion, resv("r1", "c1", 800), resv("r2", "c1", 100), resv("r3", "c2", 500), resv("r4", "c2", 300),
		resv("r9", "c4", 900))
	// 3, a version 3 entry: c3 holds 900 and starts nothing.
	entry(3, resv("r5", "c3", 900))
	// 4: c3 holds 50 (auto-4-0-0, 1950); c1's top-up is paid, its first
	// hold settled and its second released; c2's fails (paused), and its
	// next hold says so.
	entry(entryVersion, resv("r6", "c3", 50), CompletePurchase{ID: "auto-2-0-0", Outcome: OutcomeSucceeded},
		Settle{ReservationID: "r1", UseCredits: true, Credits: 800}, Release{ReservationID: "r2"},
		CompletePurchase{ID: "auto-2-3-0", Outcome: OutcomeFailed, FailureReason: "card_declined"}, resv("r7", "c2", 100))
	entry(entryVersion, Tick{})

	ps, cs := replayAlikeAndRead(t, w.log, "c1", "c2", "c3", "c4")
	if len(ps) != 1 || ps[0].ID != "auto-4-0-0" || ps[0].CustomerID != "c3" || ps[0].Credits != 1950 {
		t.Fatalf("pending %+v; want only auto-4-0-0, c3's, for 1950 credits", ps)
	}
	for id, want := range map[string]struct {
		pending, last string
		spent         int64
	}{
		"c1": {"", "", 1_800_000},                                                               // r2's reason goes with the purchase paid (version 5)
		"c2": {"", "paused: automatic charge for purchase auto-2-3-0 failed: card_declined", 0}, // a failed charge is not spent
		"c3": {"auto-4-0-0", "", 1_950_000},
		"c4": {"", "monthly cap reached", 0},
	} {
		if c := cs[id]; c.AutoPendingPurchase != want.pending || c.AutoTopUpLast != want.last || c.AutoSpendMicros != want.spent {
			t.Errorf("%s: pending %q, last %q, spent %d; want %q, %q, %d", id, c.AutoPendingPurchase, c.AutoTopUpLast,
				c.AutoSpendMicros, want.pending, want.last, want.spent)
		}
	}
}

// replayAlikeAndRead requires log to apply without an error and to the same
// state however its entries are grouped into Apply calls, then applies it
// once more and returns the pending purchases and the customers named.
func replayAlikeAndRead(t *testing.T, log []Entry, customers ...string) ([]Purchase, map[string]Customer) {
	t.Helper()
	got := requireTheSameHoweverGrouped(t, log, Options{NoSync: true})
	for i, rs := range got {
		for j, r := range rs {
			if r.Err != nil {
				t.Fatalf("entry %d command %d: %v", i+1, j, r.Err)
			}
		}
	}
	f := openAt(t, t.TempDir())
	applyAll(t, f, log, 1, nil)
	var ps []Purchase
	cs := map[string]Customer{}
	if err := f.View(func(v *View) (err error) {
		if ps, err = v.PendingPurchases(10); err != nil {
			return err
		}
		for _, id := range customers {
			if cs[id], err = v.Customer(id); err != nil {
				return err
			}
		}
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	return ps, cs
}

// entryOfVersion appends one entry of cmds marked as a version's (the
// layout is version 2's in every version these tests write), then moves
// the log's time a minute on.
func (w *logWriter) entryOfVersion(version byte, cmds ...Command) {
	for _, c := range cmds {
		w.add(c)
	}
	w.endEntry()
	w.log[len(w.log)-1].Data[0] = version
	w.now += Timestamp(time.Minute.Microseconds())
}
