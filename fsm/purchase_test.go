package fsm

import (
	"strings"
	"testing"
	"time"
)

func TestPurchases(t *testing.T) {
	t.Run("a successful self-serve purchase makes a paid grant at the plan's price and expiry", func(t *testing.T) {
		h := newHarness(t)
		h.seed()
		h.ok(UpsertPlan{Plan: Plan{ID: "pro", CreditTypeID: "ai", Currency: "USD", PricePerCredit: mustDec("0.10"),
			MinPurchaseCredits: 100, MaxPurchaseCredits: 100000, DefaultExpiry: 365 * 24 * time.Hour}})
		p := h.ok(StartPurchase{ID: "buy1", CustomerID: "c1", Credits: 5000, Flow: FlowSelfServe}).Value.(*Purchase)
		if p.Status != PurchasePending || p.TotalMicros != 5_000_000 || p.UnitPrice.String() != "0.10" {
			t.Fatalf("%+v", p)
		}
		var pending []Purchase
		h.f.View(func(v *View) (err error) { pending, err = v.PendingPurchases(10); return })
		if len(pending) != 1 || pending[0].ID != "buy1" {
			t.Fatalf("pending %+v", pending)
		}
		h.ok(StartPurchase{ID: "buy2", CustomerID: "c1", Credits: 100})
		h.ok(StartPurchase{ID: "buy3", CustomerID: "c1", Credits: 100})
		h.f.View(func(v *View) (err error) { pending, err = v.PendingPurchasesAfter("buy1", 1); return })
		if len(pending) != 1 || pending[0].ID != "buy2" {
			t.Fatalf("second page %+v", pending)
		}
		p = h.ok(CompletePurchase{ID: "buy1", Outcome: OutcomeSucceeded, ProviderRef: "pi_1", ProviderStatus: "succeeded"}).Value.(*Purchase)
		if p.Status != PurchaseSucceeded || p.GrantID == "" || p.ProviderRef != "pi_1" {
			t.Fatalf("%+v", p)
		}
		g := h.grant(p.GrantID)
		if g.Category != Paid || g.Amount != 5000 || g.CostBasis.String() != "0.10" || g.Currency != "USD" ||
			g.ExpiresAt != h.now+Timestamp((365*24*time.Hour).Microseconds()) || g.SourceKind != SourcePurchase || g.SourceRef != "buy1" {
			t.Fatalf("%+v", g)
		}
		if r := h.ok(CompletePurchase{ID: "buy1", Outcome: OutcomeSucceeded}); !r.Duplicate {
			t.Fatal("a repeated success granted twice")
		}
		h.fails(CompletePurchase{ID: "buy1", Outcome: OutcomeFailed, FailureReason: "late"}, CodeFailedPrecondition, "outcome")
		h.f.View(func(v *View) (err error) { pending, err = v.PendingPurchases(10); return })
		if len(pending) != 2 || pending[0].ID != "buy2" {
			t.Fatalf("still pending %+v", pending)
		}
	})
	t.Run("plan limits", func(t *testing.T) {
		h := newHarness(t)
		h.seed()
		h.fails(StartPurchase{ID: "b", CustomerID: "c1", Credits: 99, Flow: FlowSelfServe}, CodeInvalid, "credits")
		h.fails(StartPurchase{ID: "b", CustomerID: "c1", Credits: 1_000_000_01, Flow: FlowSelfServe}, CodeInvalid, "credits")
		h.fails(StartPurchase{ID: "b", CustomerID: "c1", Credits: 100, Flow: FlowAuto}, CodeInvalid, "flow")
		h.ok(UpsertCustomer{ID: "noplan"})
		h.fails(StartPurchase{ID: "b", CustomerID: "noplan", Credits: 100}, CodeFailedPrecondition, "customer_id")
		h.ok(StartPurchase{ID: "b", CustomerID: "c1", Credits: 100})
		if r := h.ok(StartPurchase{ID: "b", CustomerID: "c1", Credits: 100}); !r.Duplicate {
			t.Fatal("retry was not a duplicate")
		}
		h.fails(StartPurchase{ID: "b", CustomerID: "c1", Credits: 200}, CodeConflict, "id")
	})
	for _, tt := range []struct {
		policy    InvoiceGrantPolicy
		grantedOn PurchaseOutcome
	}{{GrantOnIssue, OutcomeInvoiceIssued}, {GrantOnPayment, OutcomeInvoicePaid}} {
		t.Run("invoice grants on "+map[InvoiceGrantPolicy]string{GrantOnIssue: "issue", GrantOnPayment: "payment"}[tt.policy], func(t *testing.T) {
			h := newHarness(t)
			h.seed()
			h.ok(UpsertPlan{Plan: Plan{ID: "pro", CreditTypeID: "ai", Currency: "USD", PricePerCredit: mustDec("0.10"),
				InvoiceGrant: tt.policy}})
			h.ok(StartPurchase{ID: "inv1", CustomerID: "c1", Credits: 1000, Flow: FlowInvoice})
			p := h.ok(CompletePurchase{ID: "inv1", Outcome: OutcomeInvoiceIssued, ProviderRef: "in_1", ProviderStatus: "open"}).Value.(*Purchase)
			if (p.Status == PurchaseSucceeded) != (tt.grantedOn == OutcomeInvoiceIssued) {
				t.Fatalf("after issue: %+v", p)
			}
			p = h.ok(CompletePurchase{ID: "inv1", Outcome: OutcomeInvoicePaid, ProviderStatus: "paid"}).Value.(*Purchase)
			if p.Status != PurchaseSucceeded || p.GrantID != "purchase:inv1" {
				t.Fatalf("after payment: %+v", p)
			}
			if g := h.grant(p.GrantID); g.SourceKind != SourceInvoice || g.Amount != 1000 {
				t.Fatalf("%+v", g)
			}
			if b := h.balance("c1", "ai"); b.Balance != 1000 {
				t.Fatalf("granted twice? %+v", b)
			}
		})
	}
	t.Run("a failed purchase records the reason and grants nothing", func(t *testing.T) {
		h := newHarness(t)
		h.seed()
		h.ok(StartPurchase{ID: "b", CustomerID: "c1", Credits: 100})
		h.fails(CompletePurchase{ID: "b", Outcome: OutcomeFailed}, CodeInvalid, "failure_reason")
		h.fails(CompletePurchase{ID: "b", Outcome: OutcomeInvoicePaid}, CodeFailedPrecondition, "outcome") // not an invoice
		p := h.ok(CompletePurchase{ID: "b", Outcome: OutcomeFailed, FailureReason: "card_declined"}).Value.(*Purchase)
		if p.Status != PurchaseFailed || p.FailureReason != "card_declined" || p.GrantID != "" {
			t.Fatalf("%+v", p)
		}
		h.fails(CompletePurchase{ID: "b", Outcome: OutcomeSucceeded}, CodeFailedPrecondition, "outcome")
		h.fails(CompletePurchase{ID: "nope", Outcome: OutcomeSucceeded}, CodeNotFound, "id")
	})
}

// autoTopUpHarness is seed with 1,000 paid credits for c1, then settings s
// (granted first: from entry version 5 on, settings that find available
// below the threshold start the top-up themselves).
func autoTopUpHarness(t *testing.T, s AutoTopUp) *harness {
	h := newHarness(t)
	h.seed()
	h.paid("g", 1000, "0.10")
	h.ok(UpsertCustomer{ID: "c1", PlanID: "pro", AutoTopUp: s})
	return h
}

func TestAutoTopUp(t *testing.T) {
	fixed := AutoTopUp{Enabled: true, ThresholdCredits: 300, Mode: TopUpFixed, AmountCredits: 2000}
	t.Run("a burn below the threshold starts one automatic purchase", func(t *testing.T) {
		h := autoTopUpHarness(t, fixed)
		h.burnCredits("e1", 600) // 400 left: above
		if c := h.customer("c1"); c.AutoPendingPurchase != "" {
			t.Fatalf("started above threshold: %+v", c)
		}
		h.burnCredits("e2", 200) // 200 left: below
		c := h.customer("c1")
		if c.AutoPendingPurchase == "" || c.AutoSpendMicros != 2_000_000 {
			t.Fatalf("%+v", c)
		}
		var p Purchase
		h.f.View(func(v *View) (err error) { p, err = v.Purchase(c.AutoPendingPurchase); return })
		if p.Flow != FlowAuto || p.Credits != 2000 || p.Status != PurchasePending || p.TotalMicros != 2_000_000 {
			t.Fatalf("%+v", p)
		}
		h.burnCredits("e3", 10)
		if c := h.customer("c1"); !strings.HasPrefix(c.AutoTopUpLast, "already pending") {
			t.Fatalf("%+v", c)
		}
		h.ok(CompletePurchase{ID: p.ID, Outcome: OutcomeSucceeded, ProviderRef: "pi_auto"})
		if b := h.balance("c1", "ai"); b.Available != 2190 {
			t.Fatalf("%+v", b)
		}
		if c := h.customer("c1"); c.AutoPendingPurchase != "" {
			t.Fatalf("%+v", c)
		}
	})
	t.Run("the monthly cap stops top-ups and resets next month", func(t *testing.T) {
		s := fixed
		s.MonthlyCapMicros = 3_000_000
		h := autoTopUpHarness(t, s)
		h.burnCredits("e1", 800)
		first := h.customer("c1").AutoPendingPurchase
		h.ok(CompletePurchase{ID: first, Outcome: OutcomeSucceeded})
		h.burnCredits("e2", 2000) // 200 left again: 2 + 2 > 3 USD
		if c := h.customer("c1"); c.AutoPendingPurchase != "" || c.AutoTopUpLast != "monthly cap reached" {
			t.Fatalf("%+v", c)
		}
		h.now = TimestampOf(time.Date(2026, 2, 1, 0, 0, 0, 0, time.UTC))
		h.burnCredits("e3", 1)
		if c := h.customer("c1"); c.AutoPendingPurchase == "" || c.AutoSpendMonth != 202602 || c.AutoSpendMicros != 2_000_000 {
			t.Fatalf("%+v", c)
		}
	})
	t.Run("a failed automatic charge pauses auto top-up until resumed", func(t *testing.T) {
		h := autoTopUpHarness(t, fixed)
		h.burnCredits("e1", 800)
		id := h.customer("c1").AutoPendingPurchase
		h.ok(CompletePurchase{ID: id, Outcome: OutcomeFailed, FailureReason: "card_declined"})
		c := h.customer("c1")
		if c.AutoTopUpPaused == "" || c.AutoPendingPurchase != "" || c.AutoSpendMicros != 0 {
			t.Fatalf("%+v", c)
		}
		h.burnCredits("e2", 1)
		if c := h.customer("c1"); c.AutoPendingPurchase != "" || !strings.HasPrefix(c.AutoTopUpLast, "paused") {
			t.Fatalf("%+v", c)
		}
		h.ok(UpsertCustomer{ID: "c1", PlanID: "pro", AutoTopUp: fixed, ResumeAutoTopUp: true})
		h.burnCredits("e3", 1)
		if c := h.customer("c1"); c.AutoPendingPurchase == "" {
			t.Fatalf("not resumed: %+v", c)
		}
	})
	t.Run("to-target tops up to the target", func(t *testing.T) {
		h := autoTopUpHarness(t, AutoTopUp{Enabled: true, ThresholdCredits: 300, Mode: TopUpToTarget, AmountCredits: 5000})
		h.burnCredits("e1", 900) // 100 left → buy 4900
		var p Purchase
		h.f.View(func(v *View) (err error) { p, err = v.Purchase(h.customer("c1").AutoPendingPurchase); return })
		if p.Credits != 4900 {
			t.Fatalf("%+v", p)
		}
	})
	t.Run("disabled records why", func(t *testing.T) {
		h := autoTopUpHarness(t, AutoTopUp{Enabled: false, ThresholdCredits: 300, AmountCredits: 100})
		h.burnCredits("e1", 900)
		if c := h.customer("c1"); c.AutoPendingPurchase != "" || c.AutoTopUpLast != "disabled" {
			t.Fatalf("%+v", c)
		}
	})
	t.Run("the plan's defaults apply to a customer with no settings", func(t *testing.T) {
		h := newHarness(t)
		h.seed()
		h.ok(UpsertPlan{Plan: Plan{ID: "pro", CreditTypeID: "ai", Currency: "USD", PricePerCredit: mustDec("0.10"), AutoTopUp: fixed}})
		h.paid("g", 1000, "0.10")
		h.burnCredits("e1", 900)
		if c := h.customer("c1"); c.AutoPendingPurchase == "" {
			t.Fatalf("%+v", c)
		}
	})
}

// A purchase id of MaxIDLen makes a grant id longer than MaxIDLen; the
// grant must still be revocable and adjustable (refunds, corrections).
func TestAPurchaseGrantWithTheLongestIDCanBeRefunded(t *testing.T) {
	h := newHarness(t)
	h.seed()
	key := strings.Repeat("k", MaxIDLen)
	h.ok(StartPurchase{ID: key, CustomerID: "c1", Credits: 100, Flow: FlowSelfServe})
	p := h.ok(CompletePurchase{ID: key, Outcome: OutcomeSucceeded}).Value.(*Purchase)
	if len(p.GrantID) <= MaxIDLen {
		t.Fatalf("grant id %q is not over MaxIDLen: the test no longer covers the case", p.GrantID)
	}
	h.ok(RevokeGrant{GrantID: p.GrantID, Amount: 1, Reason: "refund", RequestID: "refund-1"})
	h.ok(Adjust{ID: "adj-1", GrantID: p.GrantID, Amount: -1, Reason: "correction"})
	if g := h.grant(p.GrantID); g.Remaining != 98 {
		t.Errorf("remaining %d after a revocation and an adjustment of 1 each, want 98", g.Remaining)
	}
	for _, id := range []string{
		PurchaseGrantPrefix + strings.Repeat("k", MaxIDLen+1), // no purchase has such an id
		strings.Repeat("g", MaxIDLen+1),
		PurchaseGrantPrefix + "bad id",
	} {
		h.fails(RevokeGrant{GrantID: id, Amount: 1, Reason: "refund"}, CodeInvalid, "grant_id")
	}
}

// drainScenario leaves customer c1 (on plan "pro" with auto top-up
// settings fixed) with no credits and no automatic purchase pending, its
// auto top-up free to start one, in one of the ways credits go below the
// threshold without a burn that starts a top-up.
type drainScenario struct {
	name  string
	drain func(h *harness)
}

// drained is a harness whose customer c1, on settings fixed, the scenario
// has drained, checked: nothing available, nothing pending, not paused. Its
// UpsertCustomers are version 4 entries, as builds before version 5 wrote
// them: from version 5 on, one that finds available below the threshold
// starts the top-up itself.
func (sc drainScenario) drained(t *testing.T, fixed AutoTopUp) *harness {
	t.Helper()
	h := newHarness(t)
	h.seed()
	h.okInVersion4(UpsertCustomer{ID: "c1", PlanID: "pro", AutoTopUp: fixed})
	sc.drain(h)
	if b := h.balance("c1", "ai"); b.Available != 0 {
		t.Fatalf("set-up left %d available, want 0", b.Available)
	}
	if c := h.customer("c1"); c.AutoPendingPurchase != "" || c.AutoTopUpPaused != "" {
		t.Fatalf("set-up left a purchase pending or auto top-up paused: %+v", c)
	}
	return h
}

func drainScenarios(t *testing.T, fixed AutoTopUp) []drainScenario {
	return []drainScenario{
		{"the credits expired", func(h *harness) {
			h.paid("g", 1000, "0.10", func(c *CreateGrant) { c.ExpiresAt = at(time.Hour) })
			h.burnCredits("e0", 100) // 900 left: above the threshold
			h.now = at(time.Hour)
			h.ok(Tick{})
		}},
		{"a refund revoked them", func(h *harness) {
			h.paid("g", 1000, "0.10")
			h.ok(RevokeGrant{GrantID: "g", Reason: "refund", RequestID: "refund-1"})
		}},
		{"the monthly cap reset", func(h *harness) {
			s := fixed
			s.MonthlyCapMicros = 3_000_000
			h.okInVersion4(UpsertCustomer{ID: "c1", PlanID: "pro", AutoTopUp: s})
			h.paid("g", 1000, "0.10")
			h.burnCredits("e0", 800) // below: the first top-up, 2 USD
			h.ok(CompletePurchase{ID: h.customer("c1").AutoPendingPurchase, Outcome: OutcomeSucceeded})
			h.burnCredits("e1", 2200) // 0 left; a second would make 4 USD > 3
			if c := h.customer("c1"); c.AutoTopUpLast != "monthly cap reached" {
				t.Fatalf("set-up: %+v", c)
			}
			h.now = TimestampOf(time.Date(2026, 2, 1, 0, 0, 0, 0, time.UTC))
		}},
		{"auto top-up was resumed after a failed charge", func(h *harness) {
			h.paid("g", 1000, "0.10")
			h.burnCredits("e0", 800)
			h.ok(CompletePurchase{ID: h.customer("c1").AutoPendingPurchase, Outcome: OutcomeFailed, FailureReason: "card_declined"})
			h.burnCredits("e1", 200) // 0 left, paused
			h.okInVersion4(UpsertCustomer{ID: "c1", PlanID: "pro", AutoTopUp: fixed, ResumeAutoTopUp: true})
		}},
	}
}

// A customer with auto top-up on whose available is below the threshold
// with nothing pending gets a top-up at its next usage event, also when that
// event is denied. Only burns started one, so a customer whose credits went
// below the threshold without a burn (they expired, a refund revoked them,
// the monthly cap reset, auto top-up was resumed after a failed charge) and
// who has nothing left to burn on a plan that denies had every event denied
// and was never topped up again.
func TestADeniedEventStartsTheAutoTopUpItWaitsFor(t *testing.T) {
	fixed := AutoTopUp{Enabled: true, ThresholdCredits: 300, Mode: TopUpFixed, AmountCredits: 2000}
	for _, tc := range drainScenarios(t, fixed) {
		t.Run(tc.name, func(t *testing.T) {
			h := tc.drained(t, fixed)
			if r := h.burnCredits("e9", 50); r.Status != EventDenied {
				t.Fatalf("event with nothing available: %+v, want denied", r)
			}
			c := h.customer("c1")
			if c.AutoPendingPurchase == "" {
				t.Fatalf("no automatic purchase started by a denied event below the threshold (last: %q)", c.AutoTopUpLast)
			}
			var p Purchase
			if err := h.f.View(func(v *View) (err error) { p, err = v.Purchase(c.AutoPendingPurchase); return }); err != nil {
				t.Fatal(err)
			}
			if p.Flow != FlowAuto || p.Credits != 2000 || p.Status != PurchasePending {
				t.Fatalf("automatic purchase %+v, want 2000 credits pending", p)
			}
			// A retry of the denied event is its duplicate: no second purchase.
			h.burnCredits("e9", 50)
			if again := h.customer("c1"); again.AutoPendingPurchase != c.AutoPendingPurchase || again.AutoSpendMicros != c.AutoSpendMicros {
				t.Fatalf("the retry changed the customer: %+v, was %+v", again, c)
			}
		})
	}
}

// An entry is applied by the rules of its version, whichever build applies
// it: a denied event in an entry of version 1 (proposed by a build before
// denied events started top-ups) starts none, so replicas still on that
// build and upgraded ones replaying the same log agree; the same event in an
// entry of the current version starts one.
func TestAnEntryIsAppliedByTheRulesOfItsVersion(t *testing.T) {
	h := newHarness(t)
	h.seed()
	h.paid("g", 1000, "0.10")
	h.ok(UpsertCustomer{ID: "c1", PlanID: "pro", AutoTopUp: AutoTopUp{Enabled: true, ThresholdCredits: 300,
		Mode: TopUpFixed, AmountCredits: 2000}})
	h.ok(RevokeGrant{GrantID: "g", Reason: "refund", RequestID: "refund-1"})
	deny := func(version byte, id string) {
		t.Helper()
		e := h.entry(BurnUsage{Events: []UsageEvent{{ID: id, CustomerID: "c1", CreditTypeID: "ai", Credits: 50}}})
		e.Data[0] = version
		rs, err := h.f.Apply([]Entry{e})
		if err != nil {
			t.Fatalf("version %d: %v", version, err)
		}
		if r := rs[0][0]; r.Err != nil || r.Value.([]EventResult)[0].Status != EventDenied {
			t.Fatalf("version %d: %+v, want the event denied", version, r)
		}
	}
	deny(1, "e1")
	if c := h.customer("c1"); c.AutoPendingPurchase != "" {
		t.Fatalf("a denied event in a version 1 entry started purchase %s", c.AutoPendingPurchase)
	}
	deny(entryVersion, "e2")
	if c := h.customer("c1"); c.AutoPendingPurchase == "" {
		t.Fatalf("a denied event in a version %d entry started no purchase (last: %q)", entryVersion, c.AutoTopUpLast)
	}
}
