package fsm

import (
	"errors"
	"fmt"
	"strings"
	"testing"
)

func TestCommandValidation(t *testing.T) {
	h := newHarness(t)
	h.seed()
	h.promo("p", 100)
	long := strings.Repeat("x", MaxIDLen+1)
	plan := func(mod func(*Plan)) UpsertPlan {
		p := Plan{ID: "p2", CreditTypeID: "ai", Currency: "USD", PricePerCredit: mustDec("0.1")}
		mod(&p)
		return UpsertPlan{Plan: p}
	}
	grant := func(mod func(*CreateGrant)) CreateGrant {
		g := CreateGrant{ID: "g2", CustomerID: "c1", CreditTypeID: "ai", Category: Paid, Amount: 10, CostBasis: mustDec("0.1"), Currency: "USD"}
		mod(&g)
		return g
	}
	tests := []struct {
		name  string
		cmd   Command
		code  Code
		field string
	}{
		{"credit type id required", CreateCreditType{Name: "x"}, CodeInvalid, "id"},
		{"credit type id charset", CreateCreditType{ID: "a/b"}, CodeInvalid, "id"},
		{"credit type id length", CreateCreditType{ID: long}, CodeInvalid, "id"},
		{"credit type scale", CreateCreditType{ID: "x", Scale: 10}, CodeInvalid, "scale"},
		{"credit type scale cannot change", CreateCreditType{ID: "ai", Name: "AI credits", Scale: 3}, CodeAlreadyExists, "id"},
		{"feature credit type unknown", UpsertFeature{ID: "f", CreditTypeID: "nope", Rate: mustDec("1")}, CodeNotFound, "credit_type_id"},
		{"feature rate scale", UpsertFeature{ID: "f", CreditTypeID: "ai", Rate: Decimal{Coef: 1, Scale: 13}}, CodeInvalid, "rate"},
		{"feature rate negative", UpsertFeature{ID: "f", CreditTypeID: "ai", Rate: Decimal{Coef: -1}}, CodeInvalid, "rate"},
		{"plan currency", plan(func(p *Plan) { p.Currency = "usd" }), CodeInvalid, "currency"},
		{"plan price zero", plan(func(p *Plan) { p.PricePerCredit = Decimal{} }), CodeInvalid, "price_per_credit"},
		{"plan max below min", plan(func(p *Plan) { p.MinPurchaseCredits, p.MaxPurchaseCredits = 10, 5 }), CodeInvalid, "max_purchase"},
		{"plan overdraft limit without overdraft", plan(func(p *Plan) { p.OverdraftLimit = 5 }), CodeInvalid, "overdraft_limit"},
		{"plan negative expiry", plan(func(p *Plan) { p.DefaultExpiry = -1 }), CodeInvalid, "default_expiry"},
		{"plan unknown credit type", plan(func(p *Plan) { p.CreditTypeID = "nope" }), CodeNotFound, "credit_type_id"},
		{"plan auto top-up without amount", plan(func(p *Plan) { p.AutoTopUp = AutoTopUp{Enabled: true} }), CodeInvalid, "auto_top_up.amount"},
		{"plan target at threshold", plan(func(p *Plan) {
			p.AutoTopUp = AutoTopUp{Enabled: true, Mode: TopUpToTarget, ThresholdCredits: 5, AmountCredits: 5}
		}), CodeInvalid, "auto_top_up.amount"},
		{"customer unknown plan", UpsertCustomer{ID: "c2", PlanID: "nope"}, CodeNotFound, "plan_id"},
		{"customer auto top-up without plan", UpsertCustomer{ID: "c2", AutoTopUp: AutoTopUp{Enabled: true, AmountCredits: 1}}, CodeInvalid, "auto_top_up.enabled"},
		{"customer name too long", UpsertCustomer{ID: "c2", Name: strings.Repeat("n", MaxNameLen+1)}, CodeInvalid, "name"},
		{"customer name not UTF-8", UpsertCustomer{ID: "c2", Name: "\xff"}, CodeInvalid, "name"},
		{"grant amount zero", grant(func(g *CreateGrant) { g.Amount = 0 }), CodeInvalid, "amount"},
		{"grant amount too large", grant(func(g *CreateGrant) { g.Amount = MaxAmount + 1 }), CodeInvalid, "amount"},
		{"paid grant without cost basis", grant(func(g *CreateGrant) { g.CostBasis = Decimal{} }), CodeInvalid, "cost_basis"},
		{"paid grant without currency", grant(func(g *CreateGrant) { g.Currency = "" }), CodeInvalid, "currency"},
		{"promotional grant with cost basis", grant(func(g *CreateGrant) { g.Category = Promotional }), CodeInvalid, "cost_basis"},
		{"grant category", grant(func(g *CreateGrant) { g.Category = 9 }), CodeInvalid, "category"},
		{"grant priority", grant(func(g *CreateGrant) { g.Priority = MaxGrantPriority + 1 }), CodeInvalid, "priority"},
		{"grant expires before effective", grant(func(g *CreateGrant) { g.EffectiveAt = t0 + 100; g.ExpiresAt = t0 + 50 }), CodeInvalid, "expires_at"},
		{"grant already expired", grant(func(g *CreateGrant) { g.EffectiveAt = t0 - 100; g.ExpiresAt = t0 - 50 }), CodeInvalid, "expires_at"},
		{"grant unknown customer", grant(func(g *CreateGrant) { g.CustomerID = "nobody" }), CodeNotFound, "customer_id"},
		{"grant unknown credit type", grant(func(g *CreateGrant) { g.CreditTypeID = "nope" }), CodeNotFound, "credit_type_id"},
		{"grant id taken by another grant", grant(func(g *CreateGrant) { g.ID = "p" }), CodeConflict, "id"},
		{"grant money overflows", grant(func(g *CreateGrant) { g.Amount = MaxAmount; g.CostBasis = mustDec("1000000") }), CodeInvalid, "amount"},
		{"revoke request id charset", RevokeGrant{GrantID: "p", RequestID: "a b"}, CodeInvalid, "request_id"},
		{"revoke reason too long", RevokeGrant{GrantID: "p", Reason: strings.Repeat("r", MaxReasonLen+1)}, CodeInvalid, "reason"},
		{"complete purchase outcome", CompletePurchase{ID: "x", Outcome: 99}, CodeInvalid, "outcome"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			parent := h.t
			h.t = t
			defer func() { h.t = parent }()
			h.fails(tt.cmd, tt.code, tt.field)
		})
	}
}

func TestFeatureAndPlanKeepTheirCreditType(t *testing.T) {
	h := newHarness(t)
	h.seed()
	h.ok(CreateCreditType{ID: "gpu", Scale: 0})
	h.fails(UpsertFeature{ID: "tokens", CreditTypeID: "gpu", Rate: mustDec("1")}, CodeFailedPrecondition, "credit_type_id")
	h.fails(UpsertPlan{Plan: Plan{ID: "pro", CreditTypeID: "gpu", Currency: "USD", PricePerCredit: mustDec("1")}}, CodeFailedPrecondition, "credit_type_id")
	// Same settings again is a no-op, not an error.
	h.ok(CreateCreditType{ID: "gpu", Scale: 0})
}

func TestUnknownEntryVersionIsRefused(t *testing.T) {
	for _, v := range []byte{0, entryVersion + 1, 255} {
		h := newHarness(t)
		e := h.entry(Tick{})
		e.Data[0] = v
		before := h.f.AppliedIndex()
		if _, err := h.f.Apply([]Entry{e}); !errors.Is(err, ErrUnknownVersion) {
			t.Fatalf("version %d: got %v", v, err)
		}
		if h.f.AppliedIndex() != before {
			t.Fatalf("version %d: applied index moved", v)
		}
	}
}

func TestMalformedEntryIsRejectedTheSameEverywhere(t *testing.T) {
	h := newHarness(t)
	rs, err := h.f.Apply([]Entry{{Index: 1, Data: []byte{1, 0, 1, 99, 0}}})
	if err != nil || len(rs[0]) != 1 || CodeOf(rs[0][0].Err) != CodeInvalid {
		t.Fatalf("%v %v", rs, err)
	}
	if h.f.AppliedIndex() != 1 {
		t.Fatal("the applied index must still move")
	}
}

func TestEntriesAtOrBelowTheAppliedIndexAreSkipped(t *testing.T) {
	h := newHarness(t)
	h.seed()
	h.promo("p", 100)
	e := h.entry(BurnUsage{Events: []UsageEvent{{ID: "e1", CustomerID: "c1", CreditTypeID: "ai", Credits: 10}}})
	if _, err := h.f.Apply([]Entry{e}); err != nil {
		t.Fatal(err)
	}
	rs, err := h.f.Apply([]Entry{e})
	if err != nil || rs[0] != nil {
		t.Fatalf("re-applied: %v %v", rs, err)
	}
	if b := h.balance("c1", "ai"); b.Balance != 90 {
		t.Fatalf("%+v", b)
	}
}

func TestCommandEncodingRoundTrips(t *testing.T) {
	cmds := []Command{
		CreateCreditType{ID: "ai", Name: "AI", Scale: 2},
		UpsertFeature{ID: "f", Name: "F", CreditTypeID: "ai", Rate: mustDec("0.25")},
		UpsertPlan{Plan: Plan{ID: "p", CreditTypeID: "ai", Currency: "EUR", PricePerCredit: mustDec("1.5"), MinPurchaseCredits: 1,
			MaxPurchaseCredits: 9, DefaultExpiry: 3600e9, InvoiceGrant: GrantOnIssue, Overdraft: OverdraftAllow, OverdraftLimit: 5,
			AutoTopUp: AutoTopUp{Enabled: true, ThresholdCredits: 1, Mode: TopUpToTarget, AmountCredits: 3, MonthlyCapMicros: 7}}},
		UpsertCustomer{ID: "c", Name: "C", BillingRef: "cus_1", PlanID: "p", ResumeAutoTopUp: true},
		CreateGrant{ID: "g", CustomerID: "c", CreditTypeID: "ai", Category: Paid, Amount: 5, CostBasis: mustDec("2"),
			Currency: "EUR", Priority: 3, EffectiveAt: 10, ExpiresAt: 20, SourceKind: SourceInvoice, SourceRef: "in_1"},
		RevokeGrant{GrantID: "g", Amount: 2, Reason: "r", RequestID: "q"},
		BurnUsage{Events: []UsageEvent{{ID: "e", CustomerID: "c", FeatureID: "f", Quantity: 3, EventTime: 99}}},
		Reserve{ID: "r", CustomerID: "c", CreditTypeID: "ai", Credits: 4, TTL: 60e9},
		Settle{ReservationID: "r", Credits: 3, UseCredits: true},
		Release{ReservationID: "r"},
		StartPurchase{ID: "s", CustomerID: "c", Credits: 4, Flow: FlowInvoice},
		CompletePurchase{ID: "s", Outcome: OutcomeInvoicePaid, ProviderRef: "in", ProviderStatus: "paid", FailureReason: "x"},
		Tick{}, Adjust{ID: "a", GrantID: "g", Amount: -3, Reason: "fix"}, Noop{},
	}
	enc := make([][]byte, len(cmds))
	for i, c := range cmds {
		enc[i], _ = EncodeCommand(c)
	}
	ts, got, err := DecodeEntry(EncodeEntry(12345, enc))
	if err != nil || ts != 12345 || len(got) != len(cmds) {
		t.Fatalf("%v %d %d", err, ts, len(got))
	}
	for i := range cmds {
		if a, b := fmtCmd(cmds[i]), fmtCmd(got[i]); a != b {
			t.Errorf("command %d: %s != %s", i, a, b)
		}
	}
}

func fmtCmd(c Command) string { return strings.ReplaceAll(sprintf("%T%+v", c, c), " ", "") }

var sprintf = fmt.Sprintf

// A command EncodeCommand accepts decodes: the leader puts many callers'
// commands into one entry, and an entry the decoder refuses is refused
// whole, every command in it. EncodeCommand encoded strings over the log's
// 4,096-byte limit and batches of more than MaxEventsPerBatch events, which
// made one caller's command fail every other caller's in the same entry.
func TestEncodeCommandRefusesWhatAnEntryCannotCarry(t *testing.T) {
	long := strings.Repeat("x", maxStringLen+1)
	many := make([]UsageEvent, MaxEventsPerBatch+1)
	for i := range many {
		many[i] = UsageEvent{ID: "e", CustomerID: "c", CreditTypeID: "ai", Credits: 1}
	}
	for _, c := range []Command{
		RevokeGrant{GrantID: "g", Reason: long},
		CompletePurchase{ID: "p", Outcome: OutcomeFailed, FailureReason: long},
		UpsertCustomer{ID: "c", Name: long},
		BurnUsage{Events: []UsageEvent{{ID: "e", CustomerID: long, CreditTypeID: "ai", Credits: 1}}},
		BurnUsage{Events: many},
	} {
		b, err := EncodeCommand(c)
		if err == nil {
			other, _ := EncodeCommand(Noop{})
			_, _, derr := DecodeEntry(EncodeEntry(1, [][]byte{other, b}))
			t.Errorf("EncodeCommand(%T) accepted a command that makes its entry undecodable (%v)", c, derr)
			continue
		}
		if CodeOf(err) != CodeInvalid {
			t.Errorf("EncodeCommand(%T): %v, want an invalid-argument error", c, err)
		}
	}
	// At the limits it still encodes, and decodes.
	edge := strings.Repeat("x", maxStringLen)
	b, err := EncodeCommand(RevokeGrant{GrantID: "g", Reason: edge})
	if err != nil {
		t.Fatal(err)
	}
	if _, _, err := DecodeEntry(EncodeEntry(1, [][]byte{b})); err != nil {
		t.Fatal(err)
	}
}
