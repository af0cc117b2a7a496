package fsm

import (
	"testing"
	"time"
)

// Edges of grants, reservations and overdraft found by a second audit;
// each test failed on the code before its fix.

// odPlan puts c1 on a plan that allows overdraft down to limit.
func (h *harness) odPlan(limit int64) {
	h.t.Helper()
	h.ok(UpsertPlan{Plan: Plan{ID: "od", CreditTypeID: "ai", Currency: "USD", PricePerCredit: mustDec("0.10"),
		Overdraft: OverdraftAllow, OverdraftLimit: limit}})
	h.ok(UpsertCustomer{ID: "c1", PlanID: "od"})
}

// A retry of CreateGrant returns the original result (README, Idempotency)
// also once the grant has expired: the checks against the time come after
// the idempotency lookup (they refused the retry as invalid before).
func TestCreateGrantRetriedAfterItsExpiryIsADuplicate(t *testing.T) {
	h := newHarness(t)
	h.seed()
	c := CreateGrant{ID: "g1", CustomerID: "c1", CreditTypeID: "ai", Category: Paid, Amount: 1000,
		CostBasis: mustDec("0.10"), Currency: "USD", ExpiresAt: at(time.Hour)}
	h.ok(c)
	h.now = at(2 * time.Hour) // well within the 7-day retention
	r := h.apply(c)[0]
	if r.Err != nil || !r.Duplicate {
		t.Fatalf("retry of grant g1 after its expiry: err %v, duplicate %v; want the original grant as a duplicate", r.Err, r.Duplicate)
	}
}

// An overdraft is repaid only by credits that can burn: a grant at or past
// its expires_at is not active (README: effective_at ≤ t < expires_at). An
// Adjust of such a grant, or a Tick that activates a pending grant whose
// expiry has passed, used to repay the overdraft from credits that had
// expired, recognizing revenue instead of breakage.
func TestAnOverdraftIsNotRepaidFromAnExpiredGrant(t *testing.T) {
	t.Run("adjust of an active grant past its expiry", func(t *testing.T) {
		h := newHarness(t)
		h.seed()
		h.odPlan(1000)
		h.paid("g", 200, "0.10", func(c *CreateGrant) { c.ExpiresAt = at(time.Hour) })
		h.now = at(time.Hour) // g has expired; no Tick yet
		if r := h.burnCredits("e1", 50); r.Status != EventBurned || len(r.Burns) != 1 || r.Burns[0].GrantID != "" {
			t.Fatalf("burn after g expired: %+v", r)
		}
		h.ok(Adjust{ID: "a1", GrantID: "g", Amount: 10, Reason: "fix"})
		es := h.ledger("c1")
		if last := es[len(es)-1]; last.Kind == EntryRepay {
			t.Errorf("overdraft repaid from expired grant g: repay entry %d credits, money %d micros (recognized, not breakage)",
				last.Repaid, last.MoneyMicros)
		}
		if b := h.balance("c1", "ai"); b.Overdraft != 50 {
			t.Errorf("overdraft %d after adjusting an expired grant, want 50", b.Overdraft)
		}
	})
	t.Run("tick activating a pending grant whose expiry has passed", func(t *testing.T) {
		h := newHarness(t)
		h.seed()
		h.odPlan(1000)
		h.burnCredits("e1", 50) // overdraft 50
		h.paid("g", 200, "0.10", func(c *CreateGrant) {
			c.EffectiveAt, c.ExpiresAt = at(10*time.Minute), at(20*time.Minute)
		})
		h.now = at(30 * time.Minute)
		h.ok(Tick{})
		for _, e := range h.ledger("c1") {
			if e.Kind == EntryRepay {
				t.Errorf("tick at 30m repaid %d credits from grant %s that expired at 20m", e.Repaid, e.GrantID)
			}
		}
	})
}

// Log time counts microseconds: a TTL under one (rpc takes any duration)
// made a hold that expired as it was made, kept its credits until a Tick
// and could not be settled. It is refused, naming ttl.
func TestAReservationTTLUnderAMicrosecondIsRefused(t *testing.T) {
	h := newHarness(t)
	h.seed()
	h.promo("p", 500)
	r := h.apply(Reserve{ID: "r1", CustomerID: "c1", CreditTypeID: "ai", Credits: 100, TTL: 500 * time.Nanosecond})[0]
	if e, ok := r.Err.(*Error); !ok || e.Field != "ttl" {
		t.Fatalf("reserve with a 500ns TTL: %v; want refused naming ttl", r.Err)
	}
	if b := h.balance("c1", "ai"); b.Reserved != 0 {
		t.Fatalf("a refused reserve holds %d", b.Reserved)
	}
	r = h.apply(Reserve{ID: "r2", CustomerID: "c1", CreditTypeID: "ai", Credits: 100, TTL: time.Microsecond})[0]
	if r.Err != nil {
		t.Fatalf("reserve with a 1µs TTL: %v", r.Err)
	}
}

// A pending grant adjusted down to zero is depleted at once and leaves every
// index: it used to stay pending, and the Tick at its effective time made
// it active with nothing remaining, in the burn order for good.
func TestAPendingGrantAdjustedToZeroIsDepleted(t *testing.T) {
	h := newHarness(t)
	h.seed()
	h.promo("later", 100, func(c *CreateGrant) { c.EffectiveAt = at(time.Hour) })
	h.ok(Adjust{ID: "a1", GrantID: "later", Amount: -100, Reason: "mistake"})
	h.now = at(time.Hour)
	h.ok(Tick{})
	if g := h.grant("later"); g.Remaining == 0 && g.Status == GrantActive {
		t.Errorf("grant with 0 remaining is %s, want depleted", g.Status)
	}
	if b := h.balance("c1", "ai"); len(b.Grants) != 0 {
		t.Errorf("live grants %+v, want none", b.Grants)
	}
}

// A repay entry names what brought the credits, as the grant entry it
// follows does: for a purchase, purchase p1 (it used to say grant
// "purchase:p1", an id no grant request has).
func TestRepayEntriesNameWhatCausedThem(t *testing.T) {
	h := newHarness(t)
	h.seed()
	h.odPlan(1000)
	h.burnCredits("e1", 50) // overdraft 50
	h.ok(StartPurchase{ID: "p1", CustomerID: "c1", Credits: 100})
	h.ok(CompletePurchase{ID: "p1", Outcome: OutcomeSucceeded})
	es := h.ledger("c1")
	grant, repay := es[len(es)-2], es[len(es)-1]
	if grant.Kind != EntryGrant || repay.Kind != EntryRepay {
		t.Fatalf("last entries %+v, %+v", grant, repay)
	}
	if repay.CauseKind != grant.CauseKind || repay.CauseID != grant.CauseID {
		t.Errorf("repay of purchase p1's grant: cause %s %q; its grant entry: cause %s %q",
			repay.CauseKind, repay.CauseID, grant.CauseKind, grant.CauseID)
	}
}

// "Every sum is checked for overflow; a command that would overflow is
// refused." With an overdraft limit, holds may exceed the grants: the
// reserve that would take the pool's reserved past int64 is refused (it
// wrapped before).
func TestReservedDoesNotWrapAtTheEdgeOfInt64(t *testing.T) {
	h := newHarness(t)
	h.seed()
	h.odPlan(MaxAmount)
	for i := 0; i < 8; i++ {
		amt := MaxAmount
		if i == 7 {
			amt = MaxAmount - 1 // balance = MaxInt64 exactly
		}
		h.promo("g"+string(rune('0'+i)), amt)
	}
	for i := 0; i < 8; i++ {
		r := h.apply(Reserve{ID: "r" + string(rune('0'+i)), CustomerID: "c1", CreditTypeID: "ai", Credits: MaxAmount})[0]
		if r.Err != nil {
			continue
		}
		// 8 × 2^60 = 2^63 does not fit in int64
		if b := h.balance("c1", "ai"); b.Reserved <= 0 {
			t.Fatalf("after reserve %d (accepted), pool reserved %d, available %d", i, b.Reserved, b.Available)
		}
	}
}

// README (burn order): a grant burns while effective_at ≤ t < expires_at.
// One whose effective_at has come burns before the Tick that marks it
// active (it was left out until then, while an expired one stopped at its
// expires_at without waiting for a Tick); burned whole before that Tick it
// is depleted, and the Tick leaves it so; adjusted back up before its
// effective_at it is pending again.
func TestAGrantBurnsFromItsEffectiveTimeWithoutWaitingForATick(t *testing.T) {
	h := newHarness(t)
	h.seed()
	h.promo("later", 500, func(c *CreateGrant) { c.EffectiveAt = at(time.Hour) })
	if b := h.balance("c1", "ai"); b.Available != 0 {
		t.Fatalf("available %d before effective_at, want 0", b.Available)
	}
	h.now = at(time.Hour) // effective now; no Tick yet
	if r := h.burnCredits("e1", 100); r.Status != EventBurned || len(r.Burns) != 1 || r.Burns[0].GrantID != "later" {
		t.Fatalf("burn of 100 at the grant's effective_at: %+v", r)
	}
	// A view reads at the last applied command's time: the burn's.
	if b := h.balance("c1", "ai"); b.Available != 400 {
		t.Fatalf("available %d after the burn, want 400 (grant status %s)", b.Available, h.grant("later").Status)
	}
	if r := h.burnCredits("e2", 400); r.Status != EventBurned {
		t.Fatalf("burn of the last 400: %+v", r)
	}
	if g := h.grant("later"); g.Status != GrantDepleted || g.Remaining != 0 {
		t.Fatalf("burned whole before its Tick: %s with %d remaining, want depleted", g.Status, g.Remaining)
	}
	h.ok(Tick{})
	if g := h.grant("later"); g.Status != GrantDepleted {
		t.Fatalf("the Tick made a depleted grant %s", g.Status)
	}

	h.promo("next", 100, func(c *CreateGrant) { c.EffectiveAt = at(2 * time.Hour) })
	h.ok(Adjust{ID: "a1", GrantID: "next", Amount: -100, Reason: "withdrawn"})
	h.ok(Adjust{ID: "a2", GrantID: "next", Amount: 50, Reason: "restored in part"})
	if g := h.grant("next"); g.Status != GrantPending {
		t.Fatalf("a grant depleted and adjusted back up before its effective_at is %s, want pending", g.Status)
	}
	h.now = at(2 * time.Hour)
	h.ok(Tick{})
	if g := h.grant("next"); g.Status != GrantActive || g.Remaining != 50 {
		t.Fatalf("at its effective_at the Tick left it %s with %d", g.Status, g.Remaining)
	}

	// Burned in part before its Tick (the burn goes to the pool's tally),
	// then activated: the Tick keeps what the burn left.
	h.promo("third", 300, func(c *CreateGrant) { c.EffectiveAt = at(3 * time.Hour) })
	h.now = at(3 * time.Hour)
	if r := h.burnCredits("e3", 100); r.Status != EventBurned {
		t.Fatalf("burn of 100 from next and third: %+v", r)
	}
	h.ok(Tick{})
	b := h.balance("c1", "ai")
	var left int64
	for _, g := range b.Grants {
		left += g.Remaining
		if g.Status != GrantActive {
			t.Fatalf("grant %s is %s after its Tick", g.ID, g.Status)
		}
	}
	if left != 250 || b.Balance != 250 || b.Available != 250 {
		t.Fatalf("after burning 100 of 50 + 300: grants hold %d, balance %d, available %d; want 250 each", left, b.Balance, b.Available)
	}
}
