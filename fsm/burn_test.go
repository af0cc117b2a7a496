package fsm

import (
	"bytes"
	"encoding/hex"
	"fmt"
	"slices"
	"testing"
	"time"
)

func at(d time.Duration) Timestamp { return t0 + Timestamp(d.Microseconds()) }

func TestBurnOrder(t *testing.T) {
	type g struct {
		id       string
		paid     bool
		priority uint32
		expires  Timestamp
		effects  Timestamp
	}
	tests := []struct {
		name   string
		grants []g // created in this order, one entry apart
		want   string
	}{
		{"lower priority number first", []g{{id: "a", priority: 5}, {id: "b", priority: 1}}, "b"},
		{"earliest expiry first", []g{{id: "a", expires: at(48 * time.Hour)}, {id: "b", expires: at(24 * time.Hour)}}, "b"},
		{"grants that never expire last", []g{{id: "a"}, {id: "b", expires: at(999 * time.Hour)}}, "b"},
		{"promotional before paid", []g{{id: "a", paid: true}, {id: "b"}}, "b"},
		{"earliest effective first", []g{{id: "a", effects: t0 - 10}, {id: "b", effects: t0 - 20}}, "b"},
		{"oldest first", []g{{id: "b"}, {id: "a"}}, "b"},
		{"priority beats expiry", []g{{id: "a", priority: 2, expires: at(time.Hour)}, {id: "b", priority: 1}}, "b"},
		{"expiry beats category", []g{{id: "a", expires: at(2 * time.Hour)}, {id: "b", paid: true, expires: at(time.Hour)}}, "b"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			h := newHarness(t)
			h.seed()
			for _, gr := range tt.grants {
				mod := func(c *CreateGrant) {
					c.Priority, c.ExpiresAt, c.EffectiveAt = gr.priority, gr.expires, gr.effects
				}
				if gr.paid {
					h.paid(gr.id, 100, "0.10", mod)
				} else {
					h.promo(gr.id, 100, mod)
				}
				h.after(time.Second)
			}
			r := h.burnCredits("e1", 10)
			if len(r.Burns) != 1 || r.Burns[0].GrantID != tt.want {
				t.Fatalf("burned %+v, want from %s", r.Burns, tt.want)
			}
		})
	}
	t.Run("grant id breaks the last tie", func(t *testing.T) {
		h := newHarness(t)
		h.seed()
		// Same entry: same created time.
		h.apply(CreateGrant{ID: "z", CustomerID: "c1", CreditTypeID: "ai", Amount: 100},
			CreateGrant{ID: "m", CustomerID: "c1", CreditTypeID: "ai", Amount: 100})
		if r := h.burnCredits("e1", 10); r.Burns[0].GrantID != "m" {
			t.Fatalf("burned %+v", r.Burns)
		}
	})
}

func TestBurnSpanningGrantsWritesAnEntryPerGrant(t *testing.T) {
	h := newHarness(t)
	h.seed()
	h.promo("p", 300)
	h.paid("q", 1000, "0.10")
	r := h.burnCredits("e1", 500)
	if len(r.Burns) != 2 || r.Burns[0] != (GrantBurn{"p", 300}) || r.Burns[1] != (GrantBurn{"q", 200}) {
		t.Fatalf("burns %+v", r.Burns)
	}
	es := h.ledger("c1")
	burns := es[len(es)-2:]
	if burns[0].Kind != EntryBurn || burns[0].Amount != -300 || burns[0].GrantID != "p" || burns[0].BalanceAfter != 1000 ||
		burns[0].MoneyMicros != 0 || burns[0].CauseID != "e1" {
		t.Fatalf("first burn entry %+v", burns[0])
	}
	// 2.00 credits of a 0.10 USD/credit grant recognize 0.20 USD.
	if burns[1].Amount != -200 || burns[1].GrantID != "q" || burns[1].BalanceAfter != 800 || burns[1].MoneyMicros != -200_000 {
		t.Fatalf("second burn entry %+v", burns[1])
	}
	if g := h.grant("p"); g.Status != GrantDepleted || g.Remaining != 0 {
		t.Fatalf("promo grant %+v", g)
	}
}

func TestUsageCreditsFromFeatureRoundUp(t *testing.T) {
	h := newHarness(t)
	h.seed()
	h.ok(UpsertFeature{ID: "img", CreditTypeID: "ai", Rate: mustDec("0.005")}) // half a unit per image
	h.promo("p", 1000)
	r := h.ok(BurnUsage{Events: []UsageEvent{
		{ID: "e1", CustomerID: "c1", FeatureID: "img", Quantity: 1},
		{ID: "e2", CustomerID: "c1", FeatureID: "img", Quantity: 2},
		{ID: "e3", CustomerID: "c1", FeatureID: "tokens", Quantity: 250},
	}}).Value.([]EventResult)
	if r[0].Credits != 1 || r[1].Credits != 1 || r[2].Credits != 250 {
		t.Fatalf("credits %d %d %d", r[0].Credits, r[1].Credits, r[2].Credits)
	}
}

func TestEnforcement(t *testing.T) {
	t.Run("an event the pool cannot cover is denied whole", func(t *testing.T) {
		h := newHarness(t)
		h.seed()
		h.promo("p", 100)
		r := h.burnCredits("e1", 101)
		if r.Status != EventDenied || r.Available != 100 || len(r.Burns) != 0 {
			t.Fatalf("%+v", r)
		}
		if b := h.balance("c1", "ai"); b.Balance != 100 || b.Available != 100 {
			t.Fatalf("balance changed: %+v", b)
		}
	})
	t.Run("events in a batch see the ones before them", func(t *testing.T) {
		h := newHarness(t)
		h.seed()
		h.promo("p", 100)
		rs := h.ok(BurnUsage{Events: []UsageEvent{
			{ID: "e1", CustomerID: "c1", CreditTypeID: "ai", Credits: 60},
			{ID: "e2", CustomerID: "c1", CreditTypeID: "ai", Credits: 60},
			{ID: "e3", CustomerID: "c1", CreditTypeID: "ai", Credits: 40},
		}}).Value.([]EventResult)
		if rs[0].Status != EventBurned || rs[1].Status != EventDenied || rs[2].Status != EventBurned || rs[2].BalanceAfter != 0 {
			t.Fatalf("%+v", rs)
		}
	})
	t.Run("overdraft down to the plan's limit, repaid by the next grant", func(t *testing.T) {
		h := newHarness(t)
		h.seed()
		h.ok(UpsertPlan{Plan: Plan{ID: "od", CreditTypeID: "ai", Currency: "USD", PricePerCredit: mustDec("0.10"),
			Overdraft: OverdraftAllow, OverdraftLimit: 50}})
		h.ok(UpsertCustomer{ID: "c1", PlanID: "od"})
		h.promo("p", 100)
		if r := h.burnCredits("e1", 130); r.Status != EventBurned || r.BalanceAfter != -30 || r.AvailableAfter != -30 ||
			len(r.Burns) != 2 || r.Burns[1] != (GrantBurn{"", 30}) {
			t.Fatalf("%+v", r)
		}
		if r := h.burnCredits("e2", 21); r.Status != EventDenied {
			t.Fatalf("went below the limit: %+v", r)
		}
		h.burnCredits("e3", 20)
		g := h.paid("q", 1000, "0.10")
		if g.Remaining != 950 {
			t.Fatalf("grant did not repay the overdraft: %+v", g)
		}
		b := h.balance("c1", "ai")
		if b.Balance != 950 || b.Overdraft != 0 || b.Available != 950 {
			t.Fatalf("%+v", b)
		}
		es := h.ledger("c1")
		last := es[len(es)-1]
		if last.Kind != EntryRepay || last.Repaid != 50 || last.Amount != 0 || last.BalanceAfter != 950 || last.MoneyMicros != -50_000 {
			t.Fatalf("repay entry %+v", last)
		}
	})
	t.Run("a plan for another credit type allows no overdraft", func(t *testing.T) {
		h := newHarness(t)
		h.seed()
		h.ok(CreateCreditType{ID: "gpu", Scale: 0})
		h.ok(UpsertPlan{Plan: Plan{ID: "od", CreditTypeID: "gpu", Currency: "USD", PricePerCredit: mustDec("1"),
			Overdraft: OverdraftAllow, OverdraftLimit: 50}})
		h.ok(UpsertCustomer{ID: "c1", PlanID: "od"})
		if r := h.burnCredits("e1", 1); r.Status != EventDenied {
			t.Fatalf("%+v", r)
		}
	})
}

func TestUsageIdempotency(t *testing.T) {
	h := newHarness(t)
	h.seed()
	h.promo("p", 100)
	first := h.burnCredits("e1", 30)
	again := h.burnCredits("e1", 30)
	if !again.Duplicate || again.BalanceAfter != first.BalanceAfter || len(again.Burns) != 1 {
		t.Fatalf("replay %+v", again)
	}
	if b := h.balance("c1", "ai"); b.Balance != 70 {
		t.Fatalf("replay burned again: %+v", b)
	}
	other := h.burnCredits("e1", 31)
	if other.Status != EventRejected || other.Code != CodeConflict || other.Field != "event_id" {
		t.Fatalf("reuse with another payload: %+v", other)
	}
	// A denial is remembered too: the same event is not retried into a burn.
	h.burnCredits("big", 1000)
	h.promo("more", 5000)
	if r := h.burnCredits("big", 1000); r.Status != EventDenied || !r.Duplicate {
		t.Fatalf("%+v", r)
	}
}

func TestIdempotencyRecordsArePrunedAfterRetention(t *testing.T) {
	h := newHarness(t)
	h.seed()
	h.promo("p", 100)
	h.burnCredits("e1", 10)
	// Records are honoured for at least the retention window...
	h.after(DefaultIdempotencyRetention - time.Second)
	h.ok(Tick{})
	if r := h.burnCredits("e1", 10); !r.Duplicate {
		t.Fatal("pruned too early")
	}
	// ...and at most twice it; then Tick deletes them from the state.
	h.now = t0 + 2*Timestamp(DefaultIdempotencyRetention.Microseconds()) + 1
	h.ok(Tick{})
	h.ok(Tick{})
	if bytes.Contains(h.dump(), []byte(hex.EncodeToString([]byte("ue1")))) {
		t.Fatal("the record is still stored")
	}
	if r := h.burnCredits("e1", 10); r.Duplicate || r.Status != EventBurned {
		t.Fatalf("not pruned: %+v", r)
	}
}

// Where a new idempotency generation begins within an Apply that read the
// old one, lookups go to the new pair of generations. A cursor left open on
// the generation before the old one once served them: a retry of an event
// of the generation that just ended went unrecognised and burned again.
func TestLookupsWhereAGenerationBeginsWithinOneApply(t *testing.T) {
	burn := func(id string, credits int64) BurnUsage {
		return BurnUsage{Events: []UsageEvent{{ID: id, CustomerID: "c1", CreditTypeID: "ai", Credits: credits}}}
	}
	tests := []struct {
		name      string
		new       []Command // in the entry where the next generation begins
		duplicate bool      // whether the last event is a duplicate
		balance   int64
	}{
		{"a retry of the generation that ended", []Command{burn("e1", 10)}, true, 1000 - 200 - 10 - 1},
		{"a new event after a Tick pruned the oldest generation", []Command{Tick{}, burn("e2", 5)}, false, 1000 - 200 - 10 - 1 - 5},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			h := newHarness(t)
			h.seed()
			h.promo("p", 1000)
			window := int64(DefaultIdempotencyRetention.Microseconds())
			generation := func(g int64) Timestamp { return Timestamp((int64(t0)/window + g) * window) }
			h.now = generation(1)
			older := make([]UsageEvent, 200) // more than fits inline in its page
			for i := range older {
				older[i] = UsageEvent{ID: fmt.Sprintf("older-%03d", i), CustomerID: "c1", CreditTypeID: "ai", Credits: 1}
			}
			h.ok(BurnUsage{Events: older})
			h.now = generation(2)
			h.burnCredits("e1", 10)
			h.now = generation(2) + 1
			old := h.entry(burn("x", 1))
			h.now = generation(3)
			rs, err := h.f.Apply([]Entry{old, h.entry(tt.new...)})
			if err != nil {
				t.Fatal(err)
			}
			last := rs[1][len(tt.new)-1].Value.([]EventResult)[0]
			if last.Duplicate != tt.duplicate || last.Status != EventBurned {
				t.Fatalf("got %+v, want duplicate=%v", last, tt.duplicate)
			}
			if b := h.balance("c1", "ai"); b.Balance != tt.balance {
				t.Fatalf("balance %d, want %d", b.Balance, tt.balance)
			}
		})
	}
}

func TestRejectedEvents(t *testing.T) {
	h := newHarness(t)
	h.seed()
	h.promo("p", 100)
	tests := []struct {
		name  string
		ev    UsageEvent
		code  Code
		field string
	}{
		{"bad id", UsageEvent{ID: "a b", CustomerID: "c1", CreditTypeID: "ai", Credits: 1}, CodeInvalid, "event_id"},
		{"unknown customer", UsageEvent{ID: "x1", CustomerID: "nobody", CreditTypeID: "ai", Credits: 1}, CodeNotFound, "customer_id"},
		{"unknown feature", UsageEvent{ID: "x2", CustomerID: "c1", FeatureID: "nope", Quantity: 1}, CodeNotFound, "feature_id"},
		{"unknown credit type", UsageEvent{ID: "x3", CustomerID: "c1", CreditTypeID: "nope", Credits: 1}, CodeNotFound, "credit_type_id"},
		{"both feature and credit type", UsageEvent{ID: "x4", CustomerID: "c1", FeatureID: "tokens", CreditTypeID: "ai", Quantity: 1}, CodeInvalid, "feature_id"},
		{"neither", UsageEvent{ID: "x5", CustomerID: "c1"}, CodeInvalid, "feature_id"},
		{"negative quantity", UsageEvent{ID: "x6", CustomerID: "c1", FeatureID: "tokens", Quantity: -1}, CodeInvalid, "quantity"},
		{"negative credits", UsageEvent{ID: "x7", CustomerID: "c1", CreditTypeID: "ai", Credits: -1}, CodeInvalid, "credits"},
		{"huge quantity", UsageEvent{ID: "x8", CustomerID: "c1", FeatureID: "tokens", Quantity: 1 << 62}, CodeInvalid, "quantity"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			before := stripMeta(h.dump())
			r := h.ok(BurnUsage{Events: []UsageEvent{tt.ev}}).Value.([]EventResult)[0]
			if r.Status != EventRejected || r.Code != tt.code || r.Field != tt.field {
				t.Fatalf("%+v", r)
			}
			if string(before) != string(stripMeta(h.dump())) {
				t.Fatal("a rejected event changed the state")
			}
		})
	}
	h.fails(BurnUsage{}, CodeInvalid, "events")
	// Too many events cannot be put in an entry (TestEncodeCommandRefusesWhatAnEntryCannotCarry).
	if _, err := EncodeCommand(BurnUsage{Events: make([]UsageEvent, MaxEventsPerBatch+1)}); err == nil || err.(*Error).Field != "events" {
		t.Fatalf("a batch of %d events: %v, want refused on events", MaxEventsPerBatch+1, err)
	}
}

func TestExpiryAndEffectiveTimes(t *testing.T) {
	h := newHarness(t)
	h.seed()
	h.paid("soon", 1000, "0.10", func(c *CreateGrant) { c.ExpiresAt = at(time.Hour) })
	h.promo("later", 500, func(c *CreateGrant) { c.EffectiveAt = at(2 * time.Hour) })
	if b := h.balance("c1", "ai"); b.Available != 1000 || b.Balance != 1500 {
		t.Fatalf("a grant not yet effective counts: %+v", b)
	}
	h.burnCredits("e1", 300)
	h.now = at(time.Hour) // exactly at expires_at: no longer usable, even before a Tick
	if r := h.burnCredits("e2", 1); r.Status != EventDenied {
		t.Fatalf("expired grant burned: %+v", r)
	}
	h.ok(Tick{})
	g := h.grant("soon")
	if g.Status != GrantExpired || g.Remaining != 0 || g.Expired != 700 || g.DeferredMicros != 0 {
		t.Fatalf("%+v", g)
	}
	es := h.ledger("c1")
	exp := es[len(es)-1]
	if exp.Kind != EntryExpire || exp.Amount != -700 || exp.MoneyMicros != -700_000 || exp.BalanceAfter != 500 {
		t.Fatalf("expiry entry %+v (breakage is the deferred revenue left)", exp)
	}
	h.now = at(2 * time.Hour)
	h.ok(Tick{})
	if g := h.grant("later"); g.Status != GrantActive {
		t.Fatalf("%+v", g)
	}
	if r := h.burnCredits("e3", 500); r.Status != EventBurned {
		t.Fatalf("%+v", r)
	}
}

func TestRevocation(t *testing.T) {
	h := newHarness(t)
	h.seed()
	h.paid("g", 1000, "0.10")
	h.burnCredits("e1", 400)
	g := h.ok(RevokeGrant{GrantID: "g", Reason: "refund"}).Value.(*Grant)
	if g.Status != GrantRevoked || g.Revoked != 600 || g.Remaining != 0 {
		t.Fatalf("%+v", g)
	}
	es := h.ledger("c1")
	if e := es[len(es)-1]; e.Kind != EntryRevoke || e.Amount != -600 || e.MoneyMicros != -600_000 || e.Reason != "refund" {
		t.Fatalf("%+v", e)
	}
	if r := h.burnCredits("e2", 1); r.Status != EventDenied {
		t.Fatal("a revoked grant burned")
	}
	h.fails(RevokeGrant{GrantID: "g"}, CodeFailedPrecondition, "grant_id")
	h.fails(RevokeGrant{GrantID: "nope"}, CodeNotFound, "grant_id")

	h.promo("small", 10)
	h.burnCredits("e3", 10)
	h.fails(RevokeGrant{GrantID: "small"}, CodeFailedPrecondition, "grant_id") // depleted
	h.promo("exp", 10, func(c *CreateGrant) { c.ExpiresAt = h.now + 1 })
	h.after(time.Second)
	h.ok(Tick{})
	h.fails(RevokeGrant{GrantID: "exp"}, CodeFailedPrecondition, "grant_id") // expired

	t.Run("a partial revocation with a request id applies once", func(t *testing.T) {
		h.paid("part", 1000, "0.10")
		rv := RevokeGrant{GrantID: "part", Amount: 250, Reason: "partial refund", RequestID: "re_1"}
		h.ok(rv)
		if r := h.ok(rv); !r.Duplicate {
			t.Fatal("not a duplicate")
		}
		if g := h.grant("part"); g.Remaining != 750 || g.Status != GrantActive || g.Revoked != 250 {
			t.Fatalf("%+v", g)
		}
		rv.Amount = 300
		h.fails(rv, CodeConflict, "request_id")
	})
}

func TestAdjust(t *testing.T) {
	h := newHarness(t)
	h.seed()
	h.paid("g", 1000, "0.10")
	h.ok(Adjust{ID: "adj1", GrantID: "g", Amount: -1000, Reason: "duplicate grant"})
	if g := h.grant("g"); g.Status != GrantDepleted || g.Amount != 0 || g.DeferredMicros != 0 {
		t.Fatalf("%+v", g)
	}
	h.ok(Adjust{ID: "adj2", GrantID: "g", Amount: 200, Reason: "goodwill"})
	if g := h.grant("g"); g.Status != GrantActive || g.Remaining != 200 || g.Adjusted != -800 {
		t.Fatalf("%+v", g)
	}
	if r := h.ok(Adjust{ID: "adj2", GrantID: "g", Amount: 200, Reason: "goodwill"}); !r.Duplicate {
		t.Fatal("replay applied twice")
	}
	h.fails(Adjust{ID: "adj3", GrantID: "g", Amount: -201, Reason: "x"}, CodeFailedPrecondition, "amount")
	h.fails(Adjust{ID: "adj4", GrantID: "g", Amount: 5}, CodeInvalid, "reason")
	h.fails(Adjust{ID: "adj5", GrantID: "g", Amount: 0, Reason: "x"}, CodeInvalid, "amount")
	h.fails(Adjust{ID: "adj2", GrantID: "g", Amount: 7, Reason: "x"}, CodeConflict, "id")
	es := h.ledger("c1")
	if e := es[len(es)-1]; e.Kind != EntryAdjust || e.Amount != 200 || e.MoneyMicros != 200_000 || e.Reason != "goodwill" {
		t.Fatalf("%+v", e)
	}
}

func TestBalanceHistory(t *testing.T) {
	h := newHarness(t)
	h.seed()
	h.promo("p", 1000)
	seqAfterGrant := h.f.LastSeq()
	tGrant := h.now
	h.after(time.Minute)
	h.burnCredits("e1", 100)
	h.after(time.Minute)
	h.burnCredits("e2", 200)
	err := h.f.View(func(v *View) error {
		for _, c := range []struct {
			seq  uint64
			want int64
		}{{0, 0}, {seqAfterGrant, 1000}, {seqAfterGrant + 1, 900}, {seqAfterGrant + 2, 700}, {1 << 40, 700}} {
			if got, err := v.BalanceAt("c1", "ai", c.seq); err != nil || got != c.want {
				return fmt.Errorf("BalanceAt(%d) = %d, %v; want %d", c.seq, got, err, c.want)
			}
		}
		for _, c := range []struct {
			t    Timestamp
			want int64
		}{{tGrant - 1, 0}, {tGrant, 1000}, {tGrant + Timestamp(90*time.Second/time.Microsecond), 900}, {h.now, 700}} {
			if got, err := v.BalanceAtTime("c1", "ai", c.t); err != nil || got != c.want {
				return fmt.Errorf("BalanceAtTime(%d) = %d, %v; want %d", c.t, got, err, c.want)
			}
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
}

// A command's result is the record as that command left it: the node hands
// it to an RPC goroutine that reads it while later entries are applied, so
// it must not be the applier's cached record, which they go on changing.
func TestResultsAreSnapshotsNotLiveRecords(t *testing.T) {
	h := newHarness(t)
	h.seed()
	g := h.paid("g1", 1000, "0.10")
	cu := h.ok(UpsertCustomer{ID: "c1", PlanID: "pro", Name: "first"}).Value.(*Customer)
	revoked := h.ok(RevokeGrant{GrantID: "g1", Amount: 100, Reason: "partial refund"}).Value.(*Grant)

	h.burnCredits("e1", 300)
	h.ok(UpsertCustomer{ID: "c1", PlanID: "pro", Name: "second"})

	tests := []struct {
		name      string
		got, want any
	}{
		{"created grant's remaining", g.Remaining, int64(1000)},
		{"created grant's burned", g.Burned, int64(0)},
		{"revoked grant's remaining", revoked.Remaining, int64(900)},
		{"customer's name", cu.Name, "first"},
	}
	for _, tt := range tests {
		if tt.got != tt.want {
			t.Errorf("%s = %v after later entries, want %v (the result aliases live state)", tt.name, tt.got, tt.want)
		}
	}
}

// Results' burns share slabs of memory (burnSpace): neither a later Apply
// nor a caller appending to one result may change another result's burns.
func TestResultsBurnsDoNotShareRoom(t *testing.T) {
	h := newHarness(t)
	h.seed()
	h.promo("p1", 100, func(c *CreateGrant) { c.Priority = 1 })
	h.promo("p2", 1000, func(c *CreateGrant) { c.Priority = 2 })
	first := h.ok(BurnUsage{Events: []UsageEvent{
		{ID: "e1", CustomerID: "c1", CreditTypeID: "ai", Credits: 150}, // p1 then p2
		{ID: "e2", CustomerID: "c1", CreditTypeID: "ai", Credits: 10},  // p2
	}}).Value.([]EventResult)
	want := []GrantBurn{{GrantID: "p1", Amount: 100}, {GrantID: "p2", Amount: 50}}
	if !slices.Equal(first[0].Burns, want) || !slices.Equal(first[1].Burns, []GrantBurn{{GrantID: "p2", Amount: 10}}) {
		t.Fatalf("burns %+v and %+v", first[0].Burns, first[1].Burns)
	}
	for i := 0; i < 600; i++ { // more than one slab's worth
		h.burnCredits(fmt.Sprintf("later-%d", i), 1)
	}
	_ = append(first[0].Burns, GrantBurn{GrantID: "appended", Amount: 1})
	if !slices.Equal(first[0].Burns, want) || !slices.Equal(first[1].Burns, []GrantBurn{{GrantID: "p2", Amount: 10}}) {
		t.Fatalf("burns changed after later entries and an append: %+v and %+v", first[0].Burns, first[1].Burns)
	}
}

// A burn reads what it needs of a pool's live grants, not all of them for
// every event: it summed every live grant's remainder per event, so 1,000
// events on a pool of 100,000 live grants took 1.6 s of apply (every other
// pool's events waiting behind them) where one grant took 3 ms. Counted in
// grants summed rather than timed: at most a load and a recount of the list
// per batch here, whether the events leave the grants active or use them up
// one by one, behind a grant not yet effective.
func TestABurnDoesNotReadEveryLiveGrantOfItsPool(t *testing.T) {
	const grants, events = 10_000, 1_000
	for _, tc := range []struct {
		name   string
		amount int64 // of each grant; each event burns 1
	}{
		{"events that leave the grants active", 1000},
		{"events that use a grant up each", 1},
	} {
		t.Run(tc.name, func(t *testing.T) {
			h := newHarness(t)
			h.seed()
			// First in burn order (it expires first), not effective yet: every
			// burn passes it.
			h.promo("later", 5, func(c *CreateGrant) { c.EffectiveAt, c.ExpiresAt = at(time.Hour), at(12*time.Hour) })
			var cmds []Command
			for i := 0; i < grants; i++ {
				cmds = append(cmds, CreateGrant{ID: fmt.Sprintf("g%05d", i), CustomerID: "c1", CreditTypeID: "ai",
					Category: Promotional, Amount: tc.amount, ExpiresAt: at(48 * time.Hour)})
				if len(cmds) == 2000 {
					h.apply(cmds...)
					cmds = nil
				}
			}
			for _, c := range []Command{CreateGrant{ID: "first", CustomerID: "c1", CreditTypeID: "ai", Category: Promotional,
				Amount: 1, ExpiresAt: at(24 * time.Hour)}, Tick{}} {
				h.ok(c)
			}
			var evs []UsageEvent
			for i := 0; i < events; i++ {
				evs = append(evs, UsageEvent{ID: fmt.Sprintf("e%d", i), CustomerID: "c1", CreditTypeID: "ai", Credits: 1})
			}
			before := h.f.ap.grantsSummed
			rs := h.ok(BurnUsage{Events: evs}).Value.([]EventResult)
			if summed := h.f.ap.grantsSummed - before; summed > 2*(grants+2) {
				t.Errorf("%d events summed %d live grants; want at most %d (a load and a recount)", events, summed, 2*(grants+2))
			}
			want := int64(grants)*tc.amount + 1
			for i, r := range rs {
				wantGrant := fmt.Sprintf("g%05d", i-1)
				if tc.amount == 1000 {
					wantGrant = "g00000"
				}
				if i == 0 {
					wantGrant = "first"
				}
				want--
				if r.Status != EventBurned || len(r.Burns) != 1 || r.Burns[0].GrantID != wantGrant || r.AvailableAfter != want {
					t.Fatalf("event %d: %+v, want a burn from %s leaving %d available", i, r, wantGrant, want)
				}
			}
			if b := h.balance("c1", "ai"); b.Available != want {
				t.Fatalf("available %d after the batch, want %d", b.Available, want)
			}
		})
	}
}
