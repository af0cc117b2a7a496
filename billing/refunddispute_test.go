package billing

// Refunds and disputes of one charge, told in any order. A purchase's credits
// are its grant and the grants that gave credits of it back (refund-failed:,
// dispute-won:); refunds that count and disputes that hold funds take their
// share of them on one running total of the charge's money. The tests drive
// WebhookHandler.Handle directly with neutral Events over a real FSM and a
// provider whose payments, refunds and disputes each test sets
// (chargeProvider); no stripe-mock, no wall-clock pace.

import (
	"bytes"
	"context"
	"fmt"
	"log/slog"
	"net/http"
	"sort"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/creditd/creditd/export"
	"github.com/creditd/creditd/fsm"
)

// chargeProvider is the fake provider with the reads a refund or dispute
// event makes answered from what the test says the provider holds now.
type chargeProvider struct {
	*fakeProvider
	mu       sync.Mutex
	payments map[string]Payment   // payment intent → what LookupPayment answers
	refunds  map[string][]Refund  // charge → refunds
	disputes map[string][]Dispute // dispute → states, one per look-up; the last stays
}

func (p *chargeProvider) LookupPayment(ctx context.Context, ref string) (Payment, error) {
	p.mu.Lock()
	pay, ok := p.payments[ref]
	p.mu.Unlock()
	if ok {
		return pay, nil
	}
	return p.fakeProvider.LookupPayment(ctx, ref)
}

func (p *chargeProvider) Refunds(_ context.Context, charge string) ([]Refund, error) {
	p.mu.Lock()
	defer p.mu.Unlock()
	return append([]Refund(nil), p.refunds[charge]...), nil
}

func (p *chargeProvider) LookupDispute(_ context.Context, ref string) (Dispute, error) {
	p.mu.Lock()
	defer p.mu.Unlock()
	seq := p.disputes[ref]
	if len(seq) == 0 {
		return Dispute{}, fmt.Errorf("no dispute %s: %w", ref, ErrPermanent)
	}
	d := seq[0]
	if len(seq) > 1 {
		p.disputes[ref] = seq[1:]
	}
	return d, nil
}

// pays has payment ref name purchase, as its metadata (or, for an
// invoice's payment, the invoice it paid) says.
func (p *chargeProvider) pays(ref, purchase, invoice string) {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.payments[ref] = Payment{Ref: ref, PurchaseID: purchase, InvoiceRef: invoice, Status: PaymentSucceeded,
		ProviderStatus: "succeeded"}
}

// lockedBuffer collects the handler's log lines.
type lockedBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (l *lockedBuffer) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.Write(p)
}

func (l *lockedBuffer) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.String()
}

// chargeRig is purchase p1 of c1 (credits at the plan's price, paid through
// pi_p1, charge ch_1) granted, behind a webhook handler.
type chargeRig struct {
	t       *testing.T
	f       *fsm.FSM
	a       *localApplier
	h       *WebhookHandler
	prov    *chargeProvider
	logs    *lockedBuffer
	created int64 // provider time of the disputes: the purchase's start
}

// newChargeRig sells credits of "ai" (scale 0) at price (USD a credit) and
// completes purchase p1 of credits.
func newChargeRig(t *testing.T, price string, credits int64) *chargeRig {
	t.Helper()
	f, a := newLocalFSM(t)
	pr, err := fsm.ParseDecimal(price, 6)
	if err != nil {
		t.Fatal(err)
	}
	must(t, a, fsm.CreateCreditType{ID: "ai", Name: "AI credits", Scale: 0})
	must(t, a, fsm.UpsertPlan{Plan: fsm.Plan{ID: "pro", Name: "Pro", CreditTypeID: "ai", Currency: "USD",
		PricePerCredit: pr, MinPurchaseCredits: 1, MaxPurchaseCredits: 1_000_000, InvoiceGrant: fsm.GrantOnPayment}})
	must(t, a, fsm.UpsertCustomer{ID: "c1", Name: "Acme", BillingRef: "cus_123", PlanID: "pro"})
	prov := &chargeProvider{fakeProvider: newFakeProvider(), payments: map[string]Payment{},
		refunds: map[string][]Refund{}, disputes: map[string][]Dispute{}}
	prov.pays("pi_p1", "p1", "")
	logs := &lockedBuffer{}
	h, err := NewWebhookHandler(WebhookOptions{Provider: prov, Applier: a, State: f,
		Logger: slog.New(slog.NewTextHandler(logs, nil))})
	if err != nil {
		t.Fatal(err)
	}
	r := &chargeRig{t: t, f: f, a: a, h: h, prov: prov, logs: logs}
	must(t, a, fsm.StartPurchase{ID: "p1", CustomerID: "c1", Credits: credits, Flow: fsm.FlowSelfServe})
	r.created = readPurchase(t, f, "p1").CreatedAt.Time().Unix()
	r.mustHandle(Event{ID: "evt_paid", Type: "payment_intent.succeeded", Kind: EventPaymentSucceeded, PurchaseID: "p1",
		ObjectRef: "pi_p1", ProviderStatus: "succeeded"})
	return r
}

func (r *chargeRig) handle(ev Event) (int, string) {
	r.t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	return r.h.Handle(ctx, ev)
}

func (r *chargeRig) mustHandle(ev Event) string {
	r.t.Helper()
	code, msg := r.handle(ev)
	if code != http.StatusOK {
		r.t.Fatalf("event %s (%s): status %d: %s", ev.ID, ev.Type, code, msg)
	}
	return msg
}

// dsp is dispute id of ch_1 for amount cents: withdrawn (the money with the
// card holder) or won (the money back).
func (r *chargeRig) dsp(id string, amount int64, state string) Dispute {
	d := Dispute{ID: id, ChargeRef: "ch_1", PaymentRef: "pi_p1", AmountMinor: amount, Currency: "USD", Created: r.created}
	switch state {
	case "withdrawn":
		d.ProviderStatus, d.HoldsFunds = "needs_response", true
	case "won":
		d.ProviderStatus, d.Reinstated = "won", true
	default:
		panic(state)
	}
	return d
}

// dispute has the provider hold d from now on and sends an event about it.
func (r *chargeRig) dispute(evt, typ string, d Dispute) string {
	r.t.Helper()
	r.prov.mu.Lock()
	r.prov.disputes[d.ID] = []Dispute{d}
	r.prov.mu.Unlock()
	return r.mustHandle(Event{ID: evt, Type: typ, Kind: EventDisputeChanged, ObjectRef: d.ID, PaymentRef: d.PaymentRef,
		AmountMinor: d.AmountMinor, Currency: d.Currency, ProviderStatus: d.ProviderStatus})
}

// refunded has the provider list these refunds of ch_1 and sends
// charge.refunded carrying them.
func (r *chargeRig) refunded(evt string, refunds ...Refund) string {
	r.t.Helper()
	r.prov.mu.Lock()
	r.prov.refunds["ch_1"] = refunds
	r.prov.mu.Unlock()
	return r.mustHandle(Event{ID: evt, Type: "charge.refunded", Kind: EventChargeRefunded, PurchaseID: "p1",
		ObjectRef: "ch_1", PaymentRef: "pi_p1", Currency: "USD", Refunds: refunds, RefundsComplete: true})
}

// refundFailed has the provider list refund rf of ch_1 as failed and sends
// refund.failed.
func (r *chargeRig) refundFailed(evt string, rf Refund) string {
	r.t.Helper()
	rf.Counts = false
	r.prov.mu.Lock()
	r.prov.refunds["ch_1"] = []Refund{rf}
	r.prov.mu.Unlock()
	return r.mustHandle(Event{ID: evt, Type: "refund.failed", Kind: EventRefundUpdated, PurchaseID: "p1",
		ObjectRef: "ch_1", PaymentRef: "pi_p1", Currency: "USD", ProviderStatus: "failed", Refunds: []Refund{rf}})
}

func (r *chargeRig) burn(id string, credits int64) {
	r.t.Helper()
	must(r.t, r.a, fsm.BurnUsage{Events: []fsm.UsageEvent{{ID: id, CustomerID: "c1", CreditTypeID: "ai", Credits: credits}}})
}

func (r *chargeRig) balance() int64 {
	r.t.Helper()
	var b fsm.Balance
	if err := r.f.View(func(v *fsm.View) error {
		var err error
		b, err = v.Balance("c1", "ai")
		return err
	}); err != nil {
		r.t.Fatal(err)
	}
	return b.Balance
}

// revocations lists the causes of the pool's revocations, in ledger order.
func (r *chargeRig) revocations() []string {
	r.t.Helper()
	var causes []string
	if err := r.f.View(func(v *fsm.View) error {
		es, _, err := v.Ledger(fsm.LedgerFilter{CustomerID: "c1", Limit: 1000})
		for _, e := range es {
			if e.Kind == fsm.EntryRevoke {
				causes = append(causes, fmt.Sprintf("%s %d", e.CauseID, -e.Amount))
			}
		}
		return err
	}); err != nil {
		r.t.Fatal(err)
	}
	return causes
}

// reconcile runs the reconciliation report over the whole ledger, which
// ties every grant's credits and deferred revenue to the state.
func (r *chargeRig) reconcile() {
	r.t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if _, err := export.ReportFromSource(ctx, export.FromFSM(r.f), time.Unix(0, 0), time.Now().Add(time.Hour), nil); err != nil {
		r.t.Fatalf("reconciliation: %v", err)
	}
}

func usdRefund(id string, cents, created int64) Refund {
	return Refund{ID: id, AmountMinor: cents, Currency: "USD", Counts: true, Created: created}
}

// A dispute won gives its revocation back as grant dispute-won:<id>. The
// charge refunded afterwards (Stripe lets a merchant refund a charge whose
// dispute it won) revokes the refund's share; the purchase's grant is empty
// (the dispute's revocation took it), so the share comes out of the credits
// the win gave back, as it would out of refund-failed:<id>.
func TestARefundAfterAWonDisputeTakesItsShareFromTheCreditsTheWinGaveBack(t *testing.T) {
	r := newChargeRig(t, "0.01", 1000) // 1000 credits for 10.00 USD
	r.dispute("evt_w", "charge.dispute.funds_withdrawn", r.dsp("dp_1", 1000, "withdrawn"))
	if b := r.balance(); b != 0 {
		t.Fatalf("balance %d after the withdrawal, want 0", b)
	}
	r.dispute("evt_won", "charge.dispute.funds_reinstated", r.dsp("dp_1", 1000, "won"))
	if b := r.balance(); b != 1000 {
		t.Fatalf("balance %d after the win, want 1000 given back", b)
	}
	msg := r.refunded("evt_ref", usdRefund("re_1", 1000, r.created+60))
	if b := r.balance(); b != 0 {
		t.Fatalf("the whole 10.00 USD was refunded after the dispute was won, yet the customer keeps %d credits "+
			"(the answer: %q); want 0", b, msg)
	}
	r.refunded("evt_ref_again", usdRefund("re_1", 1000, r.created+60))
	r.dispute("evt_closed", "charge.dispute.closed", r.dsp("dp_1", 1000, "won"))
	want := []string{"dispute:dp_1 1000", "refund:re_1:from:dispute-won:dp_1 1000"}
	if got := r.revocations(); strings.Join(got, ",") != strings.Join(want, ",") {
		t.Fatalf("revocations %v, want %v", got, want)
	}
	r.reconcile()
}

// A refund that failed gives its revocation back as grant
// refund-failed:<id>. The card holder then disputes the charge (the refund
// never reached them) and the money is withdrawn: the purchase's grant is
// empty (the refund's revocation took it), so the dispute's share comes out
// of the credits given back; once the dispute is won, all its revocations
// took comes back.
func TestADisputeAfterAFailedRefundTakesItsShareFromTheCreditsGivenBack(t *testing.T) {
	r := newChargeRig(t, "0.01", 1000)
	re1 := usdRefund("re_1", 1000, r.created+60)
	r.refunded("evt_ref", re1)
	if b := r.balance(); b != 0 {
		t.Fatalf("balance %d after the full refund, want 0", b)
	}
	r.refundFailed("evt_failed", re1)
	if b := r.balance(); b != 1000 {
		t.Fatalf("balance %d after the refund failed, want 1000 given back", b)
	}
	msg := r.dispute("evt_w", "charge.dispute.funds_withdrawn", r.dsp("dp_1", 1000, "withdrawn"))
	if b := r.balance(); b != 0 {
		t.Fatalf("the whole 10.00 USD is with the card holder, yet the customer keeps %d credits (the answer: %q); want 0",
			b, msg)
	}
	r.dispute("evt_w_again", "charge.dispute.closed", r.dsp("dp_1", 1000, "withdrawn"))
	if b := r.balance(); b != 0 {
		t.Fatalf("balance %d after the dispute was told again, want 0", b)
	}
	r.dispute("evt_won", "charge.dispute.funds_reinstated", r.dsp("dp_1", 1000, "won"))
	if g := readGrant(t, r.f, "dispute-won:dp_1"); g.Amount != 1000 || r.balance() != 1000 {
		t.Fatalf("give-back %+v (balance %d) after the win, want the 1000 credits the dispute took", g, r.balance())
	}
	want := []string{"refund:re_1 1000", "dispute:dp_1:from:re_1 1000"}
	if got := r.revocations(); strings.Join(got, ",") != strings.Join(want, ",") {
		t.Fatalf("revocations %v, want %v", got, want)
	}
	r.reconcile()
}

// A dispute of 6.00 of 10.00 USD revokes 600 credits; the customer burns the
// 400 left; the other 4.00 is refunded (its revocation finds the grant
// empty, since the dispute holds 600 of it); then the dispute is won and all
// 600 come back. The customer paid 6.00 net and used 400 credits, so 200 are
// left, as without the dispute: the refund takes its share from the credits
// the win gave back.
func TestARefundThatFoundNothingWhileADisputeHeldTheCreditsTakesItsShareWhenTheDisputeIsWon(t *testing.T) {
	r := newChargeRig(t, "0.01", 1000)
	r.dispute("evt_w", "charge.dispute.funds_withdrawn", r.dsp("dp_1", 600, "withdrawn"))
	r.burn("u1", 400)
	if b := r.balance(); b != 0 {
		t.Fatalf("balance %d, want 0 (1000 − 600 disputed − 400 burned)", b)
	}
	r.refunded("evt_ref", usdRefund("re_1", 400, r.created+60))
	msg := r.dispute("evt_won", "charge.dispute.funds_reinstated", r.dsp("dp_1", 600, "won"))
	if b := r.balance(); b != 200 {
		t.Fatalf("balance %d after the win (answer %q), want 200: 6.00 USD kept by the merchant buys 600 credits, "+
			"400 of them burned", b, msg)
	}
	r.dispute("evt_closed", "charge.dispute.closed", r.dsp("dp_1", 600, "won"))
	r.refunded("evt_ref_again", usdRefund("re_1", 400, r.created+60))
	if b := r.balance(); b != 200 {
		t.Fatalf("balance %d after the events were told again, want 200", b)
	}
	r.reconcile()
}

// The mirror case: 400 credits burned, 4.00 of 10.00 USD refunded (400
// revoked), then 6.00 disputed, whose share of 600 finds only 200 left. The
// refund fails and its 400 come back: the card holder has 6.00 back, so the
// dispute takes the rest of its share from them. 4.00 paid, 400 burned:
// nothing left.
func TestADisputeThatFoundTheGrantShortTakesTheRestWhenTheRefundBeforeItFails(t *testing.T) {
	r := newChargeRig(t, "0.01", 1000)
	r.burn("u1", 400)
	re1 := usdRefund("re_1", 400, r.created+60)
	r.refunded("evt_ref", re1)
	r.dispute("evt_w", "charge.dispute.funds_withdrawn", r.dsp("dp_1", 600, "withdrawn"))
	if b := r.balance(); b != 0 {
		t.Fatalf("balance %d, want 0 (1000 − 400 burned − 400 refunded − 200 disputed)", b)
	}
	msg := r.refundFailed("evt_failed", re1)
	if b := r.balance(); b != 0 {
		t.Fatalf("balance %d after the refund failed (answer %q), want 0: the dispute's share takes the 400 given back",
			b, msg)
	}
	want := []string{"refund:re_1 400", "dispute:dp_1 200", "dispute:dp_1:from:re_1 400"}
	if got := r.revocations(); strings.Join(got, ",") != strings.Join(want, ",") {
		t.Fatalf("revocations %v, want %v", got, want)
	}
	r.reconcile()
}

// A dispute of a third and a refund of the rest revoke the whole grant,
// whichever is told first: the refunds' running total counts the money of
// disputes still holding funds first.
func TestADisputeAndARefundOfTheRestRevokeTheWholeGrantInEitherOrder(t *testing.T) {
	for _, disputeFirst := range []bool{true, false} {
		name := map[bool]string{true: "the dispute first", false: "the refund first"}[disputeFirst]
		t.Run(name, func(t *testing.T) {
			r := newChargeRig(t, "0.03", 1000) // 1000 credits for 30.00 USD
			dispute := func() { r.dispute("evt_w", "charge.dispute.funds_withdrawn", r.dsp("dp_1", 1000, "withdrawn")) }
			refund := func() { r.refunded("evt_ref", usdRefund("re_1", 2000, r.created+60)) }
			if disputeFirst {
				dispute()
				refund()
			} else {
				refund()
				dispute()
			}
			g := readGrant(t, r.f, "purchase:p1")
			if g.Revoked != 1000 || r.balance() != 0 {
				t.Fatalf("10.00 USD disputed and 20.00 USD refunded of 30.00: %d of 1000 credits revoked (balance %d, %v), "+
					"want all 1000", g.Revoked, r.balance(), r.revocations())
			}
			r.refunded("evt_ref_again", usdRefund("re_1", 2000, r.created+60))
			if g := readGrant(t, r.f, "purchase:p1"); g.Revoked != 1000 {
				t.Fatalf("revoked %d after the refund was told again, want 1000", g.Revoked)
			}
		})
	}
}

// A purchase charged twice (a second payment of the purchase left at
// Stripe, whose metadata names the purchase too) is most often disputed or
// refunded as a duplicate. The purchase was paid, and granted, by its
// recorded payment: a refund or dispute of the other one moves none of its
// credits, and an operator is told.
func TestARefundOrDisputeOfAnotherPaymentOfThePurchaseMovesNoCredits(t *testing.T) {
	t.Run("a dispute of a duplicate charge", func(t *testing.T) {
		r := newChargeRig(t, "0.01", 1000)
		r.prov.pays("pi_dup", "p1", "")
		d := r.dsp("dp_dup", 1000, "withdrawn")
		d.ChargeRef, d.PaymentRef = "ch_dup", "pi_dup"
		msg := r.dispute("evt_dup", "charge.dispute.funds_withdrawn", d)
		if b := r.balance(); b != 1000 || !strings.Contains(msg, "no credits moved") {
			t.Fatalf("the dispute of pi_dup left %d of the 1000 credits pi_p1 paid for (answer %q); want 1000, saying why", b, msg)
		}
		if logs := r.logs.String(); !strings.Contains(logs, "level=ERROR") || !strings.Contains(logs, "pi_dup") {
			t.Fatalf("no error logged for an operator: %s", logs)
		}
		// The purchase's own payment disputed still revokes.
		r.dispute("evt_own", "charge.dispute.funds_withdrawn", r.dsp("dp_1", 1000, "withdrawn"))
		if b := r.balance(); b != 0 {
			t.Fatalf("balance %d after the purchase's own payment was disputed, want 0", b)
		}
	})
	t.Run("a refund of a duplicate charge, named by the charge's metadata", func(t *testing.T) {
		r := newChargeRig(t, "0.01", 1000)
		msg := r.mustHandle(Event{ID: "evt_dup", Type: "charge.refunded", Kind: EventChargeRefunded, PurchaseID: "p1",
			ObjectRef: "ch_dup", PaymentRef: "pi_dup", Currency: "USD", RefundsComplete: true,
			Refunds: []Refund{usdRefund("re_dup", 1000, r.created+60)}})
		if b := r.balance(); b != 1000 || !strings.Contains(msg, "no credits moved") {
			t.Fatalf("the refund of pi_dup left %d of the 1000 credits (answer %q); want 1000, saying why", b, msg)
		}
	})
	t.Run("a dispute of another invoice's payment", func(t *testing.T) {
		r := newChargeRig(t, "0.01", 1000)
		must(t, r.a, fsm.StartPurchase{ID: "inv1", CustomerID: "c1", Credits: 500, Flow: fsm.FlowInvoice})
		r.mustHandle(Event{ID: "evt_inv_paid", Type: "invoice.paid", Kind: EventInvoicePaid, PurchaseID: "inv1",
			ObjectRef: "in_1", ProviderStatus: "paid"})
		// Stripe's payments of invoices carry no metadata: the invoice
		// each paid names the purchase. in_2 is a second invoice of inv1.
		r.prov.pays("pi_in1", "inv1", "in_1")
		r.prov.pays("pi_in2", "inv1", "in_2")
		other := Dispute{ID: "dp_in2", ChargeRef: "ch_in2", PaymentRef: "pi_in2", AmountMinor: 500, Currency: "USD",
			Created: r.created, ProviderStatus: "needs_response", HoldsFunds: true}
		if msg := r.dispute("evt_in2", "charge.dispute.funds_withdrawn", other); !strings.Contains(msg, "no credits moved") {
			t.Fatalf("answer %q, want no credits moved for another invoice's payment", msg)
		}
		if g := readGrant(t, r.f, "purchase:inv1"); g.Revoked != 0 {
			t.Fatalf("the dispute of in_2's payment revoked %d credits of inv1, paid by in_1", g.Revoked)
		}
		own := other
		own.ID, own.ChargeRef, own.PaymentRef = "dp_in1", "ch_in1", "pi_in1"
		r.dispute("evt_in1", "charge.dispute.funds_withdrawn", own)
		if g := readGrant(t, r.f, "purchase:inv1"); g.Revoked != 500 {
			t.Fatalf("the dispute of in_1's payment revoked %d credits of inv1, want 500", g.Revoked)
		}
	})
}

// Disputes lists the disputes of a charge as the provider holds them now
// (each one's current state, not consuming LookupDispute's sequence).
func (p *chargeProvider) Disputes(_ context.Context, charge string) ([]Dispute, error) {
	p.mu.Lock()
	defer p.mu.Unlock()
	var out []Dispute
	for _, seq := range p.disputes {
		if len(seq) > 0 && seq[0].ChargeRef == charge {
			out = append(out, seq[0])
		}
	}
	sort.Slice(out, func(i, j int) bool { return out[i].ID < out[j].ID })
	return out, nil
}

// A dispute whose share finds nothing to revoke (the purchase's credits
// burned, or revoked by a refund that has not failed yet) leaves no ledger
// entry, yet its money is with the card holder: the charge's refunds must
// still count it, so that credits given back later go with that money and
// the running total rounds as in the other order.
func TestADisputeThatRevokedNothingStillCountsForTheChargesRefunds(t *testing.T) {
	t.Run("a full refund, then the charge disputed in full, then the refund fails", func(t *testing.T) {
		r := newChargeRig(t, "0.01", 1000) // 1000 credits for 10.00 USD
		re1 := usdRefund("re_1", 1000, r.created+60)
		r.refunded("evt_ref", re1)
		r.dispute("evt_w", "charge.dispute.funds_withdrawn", r.dsp("dp_1", 1000, "withdrawn"))
		if got := r.revocations(); strings.Join(got, ",") != "refund:re_1 1000" {
			t.Fatalf("revocations %v before the refund fails, want the refund's alone", got)
		}
		msg := r.refundFailed("evt_failed", re1)
		if b := r.balance(); b != 0 {
			t.Fatalf("the refund failed but the dispute holds all 10.00 USD, yet the customer keeps %d credits "+
				"(answer %q); want 0", b, msg)
		}
		r.refundFailed("evt_failed_again", re1)
		want := []string{"refund:re_1 1000", "dispute:dp_1:from:re_1 1000"}
		if got := r.revocations(); strings.Join(got, ",") != strings.Join(want, ",") {
			t.Fatalf("revocations %v, want %v", got, want)
		}
		r.dispute("evt_won", "charge.dispute.funds_reinstated", r.dsp("dp_1", 1000, "won"))
		if b := r.balance(); b != 1000 {
			t.Fatalf("balance %d after the dispute was won (refund failed, 10.00 USD with the merchant), want 1000", b)
		}
		r.reconcile()
	})
	t.Run("half refunded, the rest burned, the other half disputed, then the refund fails", func(t *testing.T) {
		r := newChargeRig(t, "0.01", 1000)
		re1 := usdRefund("re_1", 500, r.created+60)
		r.refunded("evt_ref", re1)
		r.burn("u1", 500)
		r.dispute("evt_w", "charge.dispute.funds_withdrawn", r.dsp("dp_1", 500, "withdrawn"))
		msg := r.refundFailed("evt_failed", re1)
		// 10.00 paid, 5.00 with the card holder: 5.00 buys the 500 burned.
		if b := r.balance(); b != 0 {
			t.Fatalf("balance %d after the refund failed (answer %q), want 0: the dispute's 5.00 takes the 500 given back", b, msg)
		}
		want := []string{"refund:re_1 500", "dispute:dp_1:from:re_1 500"}
		if got := r.revocations(); strings.Join(got, ",") != strings.Join(want, ",") {
			t.Fatalf("revocations %v, want %v", got, want)
		}
		r.reconcile()
	})
	// 10 credits for 10.00 USD: 0.50 disputed is worth no whole credit on
	// its own, 0.50 more refunded makes one. Either order revokes it.
	for _, disputeFirst := range []bool{true, false} {
		name := map[bool]string{true: "a dispute worth less than a credit, then a refund", false: "the refund, then the dispute"}[disputeFirst]
		t.Run(name, func(t *testing.T) {
			r := newChargeRig(t, "1.00", 10)
			dispute := func() { r.dispute("evt_w", "charge.dispute.funds_withdrawn", r.dsp("dp_1", 50, "withdrawn")) }
			refund := func() { r.refunded("evt_ref", usdRefund("re_1", 50, r.created+60)) }
			if disputeFirst {
				dispute()
				refund()
			} else {
				refund()
				dispute()
			}
			if g := readGrant(t, r.f, "purchase:p1"); g.Revoked != 1 {
				t.Fatalf("1.00 of 10.00 USD back with the card holder revoked %d of 10 credits (%v), want 1",
					g.Revoked, r.revocations())
			}
			r.refunded("evt_ref_again", usdRefund("re_1", 50, r.created+60))
			r.dispute("evt_closed", "charge.dispute.closed", r.dsp("dp_1", 50, "withdrawn"))
			if g := readGrant(t, r.f, "purchase:p1"); g.Revoked != 1 {
				t.Fatalf("revoked %d after the events were told again, want 1", g.Revoked)
			}
			r.reconcile()
		})
	}
	// Everything burned: neither the dispute nor the refund has credits to
	// take, in either order; nothing is written, the ledger's identity
	// holds, and a win gives nothing back.
	for _, disputeFirst := range []bool{true, false} {
		name := map[bool]string{true: "all burned, a dispute, then a refund", false: "all burned, a refund, then a dispute"}[disputeFirst]
		t.Run(name, func(t *testing.T) {
			r := newChargeRig(t, "0.01", 1000)
			r.burn("u1", 1000)
			dispute := func() { r.dispute("evt_w", "charge.dispute.funds_withdrawn", r.dsp("dp_1", 400, "withdrawn")) }
			refund := func() { r.refunded("evt_ref", usdRefund("re_1", 600, r.created+60)) }
			if disputeFirst {
				dispute()
				refund()
			} else {
				refund()
				dispute()
			}
			if got := r.revocations(); len(got) != 0 || r.balance() != 0 {
				t.Fatalf("revocations %v, balance %d; want none and 0", got, r.balance())
			}
			r.dispute("evt_won", "charge.dispute.funds_reinstated", r.dsp("dp_1", 400, "won"))
			if b := r.balance(); b != 0 || countGrants(t, r.f) != 1 {
				t.Fatalf("balance %d, %d grants after a win that revoked nothing; want 0 and the purchase's alone", b, countGrants(t, r.f))
			}
			r.reconcile()
		})
	}
}

// Money that came in for a purchase without buying credits (a second
// payment of a purchase already paid, a payment of a purchase that failed
// meanwhile) is not lost silently: it moves no credits, the answer says so,
// and an error is logged for an operator, who refunds or grants by hand.
func TestAPaymentThatBuysNoCreditsIsToldToAnOperator(t *testing.T) {
	t.Run("a second payment of a purchase already paid", func(t *testing.T) {
		r := newChargeRig(t, "0.01", 1000)
		msg := r.mustHandle(Event{ID: "evt_dup", Type: "payment_intent.succeeded", Kind: EventPaymentSucceeded, PurchaseID: "p1",
			ObjectRef: "pi_dup", ProviderStatus: "succeeded"})
		if b := r.balance(); b != 1000 || !strings.Contains(msg, "pi_dup") || !strings.Contains(msg, "pi_p1") {
			t.Fatalf("balance %d, answer %q; want 1000 and an answer naming both payments", b, msg)
		}
		if logs := r.logs.String(); !strings.Contains(logs, "level=ERROR") || !strings.Contains(logs, "pi_dup") {
			t.Fatalf("no error logged for an operator: %s", logs)
		}
		// The purchase's own payment told again is no news.
		r.mustHandle(Event{ID: "evt_again", Type: "payment_intent.succeeded", Kind: EventPaymentSucceeded, PurchaseID: "p1",
			ObjectRef: "pi_p1", ProviderStatus: "succeeded"})
		if n := strings.Count(r.logs.String(), "level=ERROR"); n != 1 {
			t.Fatalf("%d errors logged, want the duplicate's alone: %s", n, r.logs.String())
		}
	})
	t.Run("a payment of a purchase that failed", func(t *testing.T) {
		r := newChargeRig(t, "0.01", 1000)
		must(t, r.a, fsm.StartPurchase{ID: "p2", CustomerID: "c1", Credits: 500, Flow: fsm.FlowSelfServe})
		must(t, r.a, fsm.CompletePurchase{ID: "p2", Outcome: fsm.OutcomeFailed, FailureReason: "not paid within 24h"})
		msg := r.mustHandle(Event{ID: "evt_late", Type: "payment_intent.succeeded", Kind: EventPaymentSucceeded, PurchaseID: "p2",
			ObjectRef: "pi_p2", ProviderStatus: "succeeded"})
		if b := r.balance(); b != 1000 || !strings.Contains(msg, "failed") {
			t.Fatalf("balance %d, answer %q; want 1000 and an answer saying the purchase failed", b, msg)
		}
		if logs := r.logs.String(); !strings.Contains(logs, "level=ERROR") || !strings.Contains(logs, "pi_p2") {
			t.Fatalf("no error logged for an operator: %s", logs)
		}
	})
}
