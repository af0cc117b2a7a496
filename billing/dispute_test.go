package billing

import (
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"net/http/httputil"
	"net/url"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/creditd/creditd/fsm"
)

// disputeDesk stands in front of the refund desk (itself in front of
// stripe-mock) and answers GET /v1/disputes/{id} with stripe-mock's dispute
// made into what the test says Stripe holds now. states[id] is consumed one
// per look-up; the last one stays.
type disputeDesk struct {
	mu      sync.Mutex
	states  map[string][]map[string]any
	lookups int
}

func startDisputeDesk(t *testing.T, upstream string) (*disputeDesk, string) {
	t.Helper()
	u, err := url.Parse(upstream)
	if err != nil {
		t.Fatal(err)
	}
	d := &disputeDesk{states: map[string][]map[string]any{}}
	proxy := httputil.NewSingleHostReverseProxy(u)
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		id, ok := strings.CutPrefix(r.URL.Path, "/v1/disputes/")
		if !ok || r.Method != http.MethodGet {
			proxy.ServeHTTP(w, r)
			return
		}
		rec := httptest.NewRecorder()
		proxy.ServeHTTP(rec, r)
		var dp map[string]any
		if err := json.Unmarshal(rec.Body.Bytes(), &dp); err != nil {
			http.Error(w, "stripe-mock answered no dispute: "+err.Error(), http.StatusBadGateway)
			return
		}
		d.mu.Lock()
		d.lookups++
		seq := d.states[id]
		var now map[string]any
		if len(seq) > 0 {
			now = seq[0]
			if len(seq) > 1 {
				d.states[id] = seq[1:]
			}
		}
		d.mu.Unlock()
		if now == nil {
			writeStripeError(w, http.StatusNotFound, "invalid_request_error", "No such dispute: "+id)
			return
		}
		for k, v := range now {
			dp[k] = v
		}
		w.Header().Set("Content-Type", "application/json")
		_ = json.NewEncoder(w).Encode(dp)
	}))
	t.Cleanup(srv.Close)
	return d, srv.URL
}

// set says what Stripe holds for a dispute from now on, look-up after
// look-up.
func (d *disputeDesk) set(id string, states ...map[string]any) {
	d.mu.Lock()
	defer d.mu.Unlock()
	d.states[id] = states
}

// disputeObj is dispute id of charge ch_1 (pi_p1) for amount cents, with
// the balance transactions Stripe records: a withdrawal when moved is at
// least 1, and a reinstatement when it is 2.
func disputeObj(id string, amount int64, status string, moved int) map[string]any {
	var bts []map[string]any
	if moved >= 1 {
		bts = append(bts, map[string]any{"id": "txn_w_" + id, "object": "balance_transaction", "amount": -amount,
			"currency": "usd", "type": "adjustment", "reporting_category": "dispute"})
	}
	if moved >= 2 {
		bts = append(bts, map[string]any{"id": "txn_r_" + id, "object": "balance_transaction", "amount": amount,
			"currency": "usd", "type": "adjustment", "reporting_category": "dispute_reversal"})
	}
	return map[string]any{"id": id, "object": "dispute", "amount": amount, "currency": "usd", "status": status,
		"charge": "ch_1", "payment_intent": "pi_p1", "created": time.Now().Unix(), "balance_transactions": bts,
		"metadata": map[string]string{}}
}

// disputeRig is the refund rig (purchase p1: 1000 credits for 10.00 USD,
// paid through pi_p1, charge ch_1) with its connector behind the dispute
// desk.
type disputeRig struct {
	*refundFailRig
	disputes *disputeDesk
}

func newDisputeRig(t *testing.T) *disputeRig {
	t.Helper()
	refunds, refundsURL := startRefundDesk(t)
	disputes, u := startDisputeDesk(t, refundsURL)
	f, a := newLocalFSM(t)
	seedCatalog(t, a, fsm.GrantOnPayment, fsm.AutoTopUp{})
	h, err := NewWebhookHandler(WebhookOptions{Provider: newTestStripe(t, u), Applier: a, State: f})
	if err != nil {
		t.Fatal(err)
	}
	srv := httptest.NewServer(h)
	t.Cleanup(srv.Close)
	r := &disputeRig{refundFailRig: &refundFailRig{webhookRig: &webhookRig{t: t, f: f, a: a, h: h, srv: srv}, desk: refunds},
		disputes: disputes}
	refunds.intents["pi_p1"] = "p1"
	r.start("p1", fsm.FlowSelfServe)
	r.mustSend("evt_paid", "payment_intent.succeeded", paymentIntentObj("pi_p1", "p1", "succeeded"))
	return r
}

func (r *disputeRig) burn(credits int64) {
	r.t.Helper()
	must(r.t, r.a, fsm.BurnUsage{Events: []fsm.UsageEvent{{ID: "u-before-the-dispute", CustomerID: "c1",
		CreditTypeID: "ai", Credits: credits}}})
}

// sendDispute has Stripe hold state for the dispute from now on and sends
// an event of type typ carrying it.
func (r *disputeRig) sendDispute(evt, typ string, state map[string]any) string {
	r.t.Helper()
	r.disputes.set(state["id"].(string), state)
	return r.mustSend(evt, typ, state)
}

// A dispute whose money is withdrawn revokes its share of the purchase,
// once: a redelivery, and the dispute's closing weeks later (after fsm has
// forgotten the revocation's request id) revoke nothing more.
func TestADisputeWhoseMoneyIsWithdrawnRevokesItsShareOnce(t *testing.T) {
	r := newDisputeRig(t)
	r.burn(100)
	// 3.00 of the 10.00 USD disputed: 300 of the 1000 credits.
	withdrawn := disputeObj("dp_1", 300, "needs_response", 1)
	if msg := r.sendDispute("evt_w", "charge.dispute.funds_withdrawn", withdrawn); !strings.Contains(msg, "revocation dispute:dp_1 applied") {
		t.Fatalf("answer %q, want the dispute's revocation applied", msg)
	}
	if b := r.balance(); b != 600 {
		t.Fatalf("balance %d, want 600 (1000 − 100 burned − 300 disputed)", b)
	}
	if msg := r.sendDispute("evt_w", "charge.dispute.funds_withdrawn", withdrawn); !strings.Contains(msg, "duplicate") {
		t.Fatalf("redelivery answered %q, want a duplicate", msg)
	}
	r.a.mu.Lock()
	r.a.now = r.a.now.Add(15 * 24 * time.Hour) // past fsm's retention (7 days, seen for up to 14)
	r.a.mu.Unlock()
	must(t, r.a, fsm.Tick{})
	lost := disputeObj("dp_1", 300, "lost", 1)
	if msg := r.sendDispute("evt_closed", "charge.dispute.closed", lost); !strings.Contains(msg, "already applied") {
		t.Fatalf("closing answered %q, want the revocation already applied", msg)
	}
	if g := readGrant(t, r.f, "purchase:p1"); g.Revoked != 300 {
		t.Fatalf("revoked %d credits, want 300", g.Revoked)
	}
	var causes []string
	for _, e := range r.ledger() {
		if e.Kind == fsm.EntryRevoke {
			causes = append(causes, e.CauseID)
		}
	}
	if len(causes) != 1 || causes[0] != "dispute:dp_1" {
		t.Fatalf("revocations %v, want one, caused by dispute:dp_1", causes)
	}
	r.reconcile()
}

// A dispute of what a refund left revokes the rest of the grant, on the
// running total after the refund.
func TestADisputeOfWhatARefundLeftRevokesTheRest(t *testing.T) {
	r := newDisputeRig(t)
	r.refunded("evt_r1", refundObj("re_1", "ch_1", "pi_p1", 300, 10, "succeeded"))
	r.sendDispute("evt_w", "charge.dispute.funds_withdrawn", disputeObj("dp_1", 700, "needs_response", 1))
	if g := readGrant(t, r.f, "purchase:p1"); g.Revoked != 1000 || r.balance() != 0 {
		t.Fatalf("revoked %d credits (balance %d), want the whole 1000", g.Revoked, r.balance())
	}
	r.reconcile()
}

// A dispute won gives back what its withdrawal revoked, once, as a grant made
// like the purchase's; whatever order the events come in, the end is what the
// dispute is at Stripe.
func TestAWonDisputeGivesBackWhatItsWithdrawalRevoked(t *testing.T) {
	t.Run("the withdrawal revokes, the reinstatement gives back once", func(t *testing.T) {
		r := newDisputeRig(t)
		r.burn(100)
		r.sendDispute("evt_w", "charge.dispute.funds_withdrawn", disputeObj("dp_1", 1000, "needs_response", 1))
		if b := r.balance(); b != 0 {
			t.Fatalf("balance %d after the withdrawal, want 0 (the 900 left revoked)", b)
		}
		won := disputeObj("dp_1", 1000, "won", 2)
		if msg := r.sendDispute("evt_r", "charge.dispute.funds_reinstated", won); !strings.Contains(msg, "900 credits given back") {
			t.Fatalf("answer %q, want 900 credits given back", msg)
		}
		if msg := r.sendDispute("evt_closed", "charge.dispute.closed", won); !strings.Contains(msg, "already given back") {
			t.Fatalf("closing answered %q, want the credits already given back", msg)
		}
		g := readGrant(t, r.f, "dispute-won:dp_1")
		og := readGrant(t, r.f, "purchase:p1")
		if g.Amount != 900 || g.Category != fsm.Paid || g.CostBasis != og.CostBasis || g.SourceRef != "p1" || r.balance() != 900 {
			t.Fatalf("give-back %+v (balance %d), want 900 paid credits like the purchase's", g, r.balance())
		}
		r.reconcile()
	})
	t.Run("the reinstatement told first leaves nothing for the late withdrawal to revoke", func(t *testing.T) {
		r := newDisputeRig(t)
		won := disputeObj("dp_1", 1000, "won", 2)
		r.disputes.set("dp_1", won)
		r.mustSend("evt_r", "charge.dispute.funds_reinstated", won)
		r.mustSend("evt_w", "charge.dispute.funds_withdrawn", disputeObj("dp_1", 1000, "needs_response", 1))
		if g := readGrant(t, r.f, "purchase:p1"); g.Revoked != 0 || r.balance() != 1000 {
			t.Fatalf("revoked %d (balance %d) for a dispute won, want nothing", g.Revoked, r.balance())
		}
	})
	t.Run("a dispute won while its withdrawal was being revoked gives back at once", func(t *testing.T) {
		r := newDisputeRig(t)
		withdrawn := disputeObj("dp_1", 1000, "needs_response", 1)
		// Stripe holds the withdrawal at the first look-up, the win at the
		// next: the reinstatement's own event may have found nothing yet.
		r.disputes.set("dp_1", withdrawn, disputeObj("dp_1", 1000, "won", 2))
		msg := r.mustSend("evt_w", "charge.dispute.funds_withdrawn", withdrawn)
		if !strings.Contains(msg, "1000 credits given back") || r.balance() != 1000 {
			t.Fatalf("answer %q (balance %d), want the revocation given back at once", msg, r.balance())
		}
		r.reconcile()
	})
}

// An inquiry (no money moved) closing, or a dispute Stripe cannot find,
// changes nothing.
func TestADisputeThatMovedNoMoneyChangesNothing(t *testing.T) {
	r := newDisputeRig(t)
	inquiry := disputeObj("dp_1", 1000, "warning_closed", 0)
	if msg := r.sendDispute("evt_c", "charge.dispute.closed", inquiry); !strings.Contains(msg, "holds no money") {
		t.Fatalf("answer %q, want nothing done for an inquiry", msg)
	}
	if msg := r.mustSend("evt_x", "charge.dispute.funds_withdrawn", disputeObj("dp_gone", 1000, "needs_response", 1)); !strings.Contains(msg, "not found") {
		t.Fatalf("answer %q, want a dispute Stripe does not know ignored", msg)
	}
	if b := r.balance(); b != 1000 {
		t.Fatalf("balance %d, want 1000", b)
	}
}

// A dispute told before the payment's success waits for the grant (503, so
// Stripe sends it again), then revokes.
func TestADisputeDeliveredBeforeThePaymentsSuccessRevokesOnItsRetry(t *testing.T) {
	r := newDisputeRig(t)
	r.start("p2", fsm.FlowSelfServe)
	r.desk.mu.Lock()
	r.desk.intents["pi_p2"] = "p2"
	r.desk.mu.Unlock()
	dp := disputeObj("dp_2", 1000, "needs_response", 1)
	dp["payment_intent"] = "pi_p2"
	r.disputes.set("dp_2", dp)
	if code, msg := r.send("evt_w2", "charge.dispute.funds_withdrawn", dp); code != http.StatusServiceUnavailable {
		t.Fatalf("status %d (%s), want 503 while the purchase waits for its payment", code, msg)
	}
	r.mustSend("evt_paid2", "payment_intent.succeeded", paymentIntentObj("pi_p2", "p2", "succeeded"))
	r.mustSend("evt_w2", "charge.dispute.funds_withdrawn", dp)
	if g := readGrant(t, r.f, "purchase:p2"); g.Revoked != 1000 {
		t.Fatalf("revoked %d credits of p2, want 1000", g.Revoked)
	}
}
