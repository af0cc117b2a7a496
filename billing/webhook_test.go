package billing

import (
	"bytes"
	"context"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/creditd/creditd/fsm"
	"github.com/stripe/stripe-go/v82"
	"github.com/stripe/stripe-go/v82/webhook"
)

// webhookRig is a webhook endpoint over a real FSM, served on loopback.
type webhookRig struct {
	t       *testing.T
	f       *fsm.FSM
	a       *localApplier
	h       *WebhookHandler
	srv     *httptest.Server
	created int64
}

func newWebhookRig(t *testing.T, policy fsm.InvoiceGrantPolicy, seen int) *webhookRig {
	t.Helper()
	f, a := newLocalFSM(t)
	seedCatalog(t, a, policy, fsm.AutoTopUp{})
	// Every payload here carries what the handler needs, but for the
	// charge's disputes, which a refund lists: none.
	api := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Method != http.MethodGet || r.URL.Path != "/v1/disputes" {
			writeStripeError(w, http.StatusNotFound, "invalid_request_error", "no route "+r.URL.Path)
			return
		}
		w.Header().Set("Content-Type", "application/json")
		_, _ = w.Write([]byte(`{"object":"list","url":"/v1/disputes","has_more":false,"data":[]}`))
	}))
	t.Cleanup(api.Close)
	p, err := NewStripe(StripeOptions{SecretKey: Secret{testStripeKey}, WebhookSecret: Secret{testWebhookSecret},
		URL: api.URL})
	if err != nil {
		t.Fatal(err)
	}
	h, err := NewWebhookHandler(WebhookOptions{Provider: p, Applier: a, State: f, SeenEvents: seen})
	if err != nil {
		t.Fatal(err)
	}
	srv := httptest.NewServer(h)
	t.Cleanup(srv.Close)
	return &webhookRig{t: t, f: f, a: a, h: h, srv: srv, created: 1_764_000_000}
}

func stripeEventJSON(t *testing.T, id, typ string, obj map[string]any) []byte {
	return mustJSON(t, map[string]any{"id": id, "object": "event", "api_version": stripe.APIVersion,
		"type": typ, "created": time.Now().Unix(), "livemode": false, "data": map[string]any{"object": obj}})
}

func paymentIntentObj(id, purchase, status string) map[string]any {
	o := map[string]any{"id": id, "object": "payment_intent", "status": status, "amount": 1000, "currency": "usd",
		"metadata": map[string]string{MetadataPurchaseID: purchase}}
	if status == "requires_payment_method" {
		o["last_payment_error"] = map[string]any{"type": "card_error", "code": "card_declined", "message": "Your card was declined."}
	}
	return o
}

func invoiceObj(id, purchase, status string) map[string]any {
	return map[string]any{"id": id, "object": "invoice", "status": status, "amount_due": 1000, "currency": "usd",
		"metadata": map[string]string{MetadataPurchaseID: purchase}}
}

type refundSpec struct {
	id      string
	amount  int64
	created int64
}

// chargeObj is charge id of purchase's payment, pi_<purchase>, with these
// refunds.
func chargeObj(id, purchase string, refunds ...refundSpec) map[string]any {
	var data []map[string]any
	var total int64
	for _, r := range refunds {
		data = append(data, map[string]any{"id": r.id, "object": "refund", "amount": r.amount, "currency": "usd",
			"status": "succeeded", "created": r.created, "charge": id})
		total += r.amount
	}
	return map[string]any{"id": id, "object": "charge", "amount": 1000, "amount_refunded": total, "currency": "usd",
		"status": "succeeded", "refunded": total == 1000, "payment_intent": "pi_" + purchase,
		"metadata": map[string]string{MetadataPurchaseID: purchase},
		"refunds":  map[string]any{"object": "list", "data": data, "has_more": false}}
}

// post signs payload with secret at ts and posts it.
func (r *webhookRig) post(payload []byte, secret string, ts time.Time) (int, string) {
	r.t.Helper()
	sp := webhook.GenerateTestSignedPayload(&webhook.UnsignedPayload{Payload: payload, Secret: secret, Timestamp: ts})
	req, err := http.NewRequest(http.MethodPost, r.srv.URL+WebhookPath, bytes.NewReader(payload))
	if err != nil {
		r.t.Fatal(err)
	}
	req.Header.Set("Stripe-Signature", sp.Header)
	req.Header.Set("Content-Type", "application/json")
	resp, err := r.srv.Client().Do(req)
	if err != nil {
		r.t.Fatalf("post webhook: %v", err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, strings.TrimSpace(string(b))
}

func (r *webhookRig) send(id, typ string, obj map[string]any) (int, string) {
	r.t.Helper()
	return r.post(stripeEventJSON(r.t, id, typ, obj), testWebhookSecret, time.Now())
}

func (r *webhookRig) mustSend(id, typ string, obj map[string]any) string {
	r.t.Helper()
	code, msg := r.send(id, typ, obj)
	if code != http.StatusOK {
		r.t.Fatalf("event %s (%s): status %d: %s", id, typ, code, msg)
	}
	return msg
}

func (r *webhookRig) start(id string, flow fsm.PurchaseFlow) {
	r.t.Helper()
	must(r.t, r.a, fsm.StartPurchase{ID: id, CustomerID: "c1", Credits: 1000, Flow: flow})
}

func TestWebhookSignatures(t *testing.T) {
	r := newWebhookRig(t, fsm.GrantOnPayment, 0)
	r.start("p1", fsm.FlowSelfServe)
	payload := stripeEventJSON(t, "evt_sig", "payment_intent.succeeded", paymentIntentObj("pi_1", "p1", "succeeded"))

	tests := []struct {
		name     string
		payload  []byte
		secret   string
		ts       time.Time
		wantCode int
	}{
		{"a payload signed with another secret is refused", payload, "whsec_wrong", time.Now(), http.StatusBadRequest},
		{"a signature older than the tolerance is refused", payload, testWebhookSecret, time.Now().Add(-10 * time.Minute), http.StatusBadRequest},
		{"a tampered payload is refused", bytes.Replace(payload, []byte(`"p1"`), []byte(`"p2"`), 1), "", time.Now(), http.StatusBadRequest},
		{"a good signature is applied", payload, testWebhookSecret, time.Now(), http.StatusOK},
		{"a replay of an applied event is answered and not applied again", payload, testWebhookSecret, time.Now(), http.StatusOK},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			var code int
			var msg string
			if tc.secret == "" {
				// Sign the original, send the tampered body.
				sp := webhook.GenerateTestSignedPayload(&webhook.UnsignedPayload{Payload: payload, Secret: testWebhookSecret, Timestamp: tc.ts})
				req, _ := http.NewRequest(http.MethodPost, r.srv.URL+WebhookPath, bytes.NewReader(tc.payload))
				req.Header.Set("Stripe-Signature", sp.Header)
				resp, err := r.srv.Client().Do(req)
				if err != nil {
					t.Fatal(err)
				}
				resp.Body.Close()
				code = resp.StatusCode
			} else {
				code, msg = r.post(tc.payload, tc.secret, tc.ts)
			}
			if code != tc.wantCode {
				t.Fatalf("status %d (%s), want %d", code, msg, tc.wantCode)
			}
		})
	}
	if p := readPurchase(t, r.f, "p1"); p.Status != fsm.PurchaseSucceeded || p.ProviderRef != "pi_1" {
		t.Fatalf("purchase = %+v, want succeeded with pi_1", p)
	}
	completions := 0
	for _, c := range r.a.applied {
		if _, ok := c.(fsm.CompletePurchase); ok {
			completions++
		}
	}
	if completions != 1 {
		t.Fatalf("%d CompletePurchase commands, want 1 (the replay must not be applied)", completions)
	}
	if n := countGrants(t, r.f); n != 1 {
		t.Fatalf("%d grants, want 1", n)
	}

	t.Run("an event of another API version is refused saying so", func(t *testing.T) {
		old := bytes.Replace(payload, []byte(stripe.APIVersion), []byte("2020-08-27"), 1)
		code, msg := r.post(old, testWebhookSecret, time.Now())
		if code != http.StatusBadRequest || !strings.Contains(msg, "API version") || strings.Contains(msg, "signature") {
			t.Fatalf("status %d (%s), want 400 naming the API version", code, msg)
		}
	})
	t.Run("no signature header is refused", func(t *testing.T) {
		resp, err := r.srv.Client().Post(r.srv.URL+WebhookPath, "application/json", bytes.NewReader(payload))
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if resp.StatusCode != http.StatusBadRequest {
			t.Fatalf("status %d, want 400", resp.StatusCode)
		}
	})
	t.Run("GET is not allowed", func(t *testing.T) {
		resp, err := r.srv.Client().Get(r.srv.URL + WebhookPath)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if resp.StatusCode != http.StatusMethodNotAllowed {
			t.Fatalf("status %d, want 405", resp.StatusCode)
		}
	})
	t.Run("an oversized body is refused", func(t *testing.T) {
		big := bytes.Repeat([]byte("x"), DefaultMaxWebhookBytes+1)
		code, _ := r.post(big, testWebhookSecret, time.Now())
		if code != http.StatusBadRequest {
			t.Fatalf("status %d, want 400", code)
		}
	})
}

func TestWebhookDuplicateEventsGrantOnce(t *testing.T) {
	r := newWebhookRig(t, fsm.GrantOnPayment, 0)
	r.start("p1", fsm.FlowSelfServe)
	// Stripe may send two events (different ids) about one payment, and
	// the worker may report it too: one grant.
	r.mustSend("evt_a", "payment_intent.succeeded", paymentIntentObj("pi_1", "p1", "succeeded"))
	msg := r.mustSend("evt_b", "payment_intent.succeeded", paymentIntentObj("pi_1", "p1", "succeeded"))
	if !strings.Contains(msg, "already") {
		t.Fatalf("second event answered %q, want it to say the purchase was already succeeded", msg)
	}
	if n := countGrants(t, r.f); n != 1 {
		t.Fatalf("%d grants, want 1", n)
	}
	g := readGrant(t, r.f, readPurchase(t, r.f, "p1").GrantID)
	if g.Amount != 1000 || g.Category != fsm.Paid {
		t.Fatalf("grant = %+v, want 1000 paid credits", g)
	}
}

func TestWebhookOutOfOrderEventsConverge(t *testing.T) {
	t.Run("a late payment failure does not undo a success", func(t *testing.T) {
		r := newWebhookRig(t, fsm.GrantOnPayment, 0)
		r.start("p1", fsm.FlowSelfServe)
		r.mustSend("evt_ok", "payment_intent.succeeded", paymentIntentObj("pi_1", "p1", "succeeded"))
		r.mustSend("evt_fail", "payment_intent.payment_failed", paymentIntentObj("pi_1", "p1", "requires_payment_method"))
		if p := readPurchase(t, r.f, "p1"); p.Status != fsm.PurchaseSucceeded {
			t.Fatalf("purchase %s, want succeeded", p.Status)
		}
	})
	t.Run("a failed attempt before a success ends succeeded", func(t *testing.T) {
		r := newWebhookRig(t, fsm.GrantOnPayment, 0)
		r.start("p1", fsm.FlowSelfServe)
		r.mustSend("evt_fail", "payment_intent.payment_failed", paymentIntentObj("pi_1", "p1", "requires_payment_method"))
		if p := readPurchase(t, r.f, "p1"); p.Status != fsm.PurchasePending || !strings.Contains(p.ProviderStatus, "card_declined") {
			t.Fatalf("after the failed attempt purchase = %+v, want pending with the decline recorded", p)
		}
		r.mustSend("evt_ok", "payment_intent.succeeded", paymentIntentObj("pi_1", "p1", "succeeded"))
		if p := readPurchase(t, r.f, "p1"); p.Status != fsm.PurchaseSucceeded {
			t.Fatalf("purchase %s, want succeeded", p.Status)
		}
	})
	for _, policy := range []fsm.InvoiceGrantPolicy{fsm.GrantOnIssue, fsm.GrantOnPayment} {
		for _, order := range [][]string{{"invoice.finalized", "invoice.paid"}, {"invoice.paid", "invoice.finalized"}} {
			name := "invoice " + strings.Join(order, " then ") + " with grant on " + map[fsm.InvoiceGrantPolicy]string{fsm.GrantOnIssue: "issue", fsm.GrantOnPayment: "payment"}[policy]
			t.Run(name, func(t *testing.T) {
				r := newWebhookRig(t, policy, 0)
				r.start("inv1", fsm.FlowInvoice)
				for i, typ := range order {
					status := "open"
					if typ == "invoice.paid" {
						status = "paid"
					}
					r.mustSend("evt_"+string(rune('a'+i)), typ, invoiceObj("in_1", "inv1", status))
				}
				p := readPurchase(t, r.f, "inv1")
				if p.Status != fsm.PurchaseSucceeded || p.ProviderRef != "in_1" {
					t.Fatalf("purchase = %+v, want succeeded with in_1", p)
				}
				if n := countGrants(t, r.f); n != 1 {
					t.Fatalf("%d grants, want 1", n)
				}
			})
		}
	}
	t.Run("refund events in either order revoke the same credits", func(t *testing.T) {
		var remaining [2]int64
		for i, swap := range []bool{false, true} {
			r := newWebhookRig(t, fsm.GrantOnPayment, 0)
			r.start("p1", fsm.FlowSelfServe)
			r.mustSend("evt_ok", "payment_intent.succeeded", paymentIntentObj("pi_p1", "p1", "succeeded"))
			first := chargeObj("ch_1", "p1", refundSpec{"re_1", 300, 10})
			second := chargeObj("ch_1", "p1", refundSpec{"re_1", 300, 10}, refundSpec{"re_2", 200, 20})
			if swap {
				first, second = second, first
			}
			r.mustSend("evt_r1", "charge.refunded", first)
			r.mustSend("evt_r2", "charge.refunded", second)
			g := readGrant(t, r.f, "purchase:p1")
			if g.Revoked != 500 {
				t.Fatalf("revoked %d credits, want 500 (300 + 200 of 1000 cents on 1000 credits)", g.Revoked)
			}
			remaining[i] = g.Remaining
		}
		if remaining[0] != remaining[1] || remaining[0] != 500 {
			t.Fatalf("remaining %v, want 500 in both orders", remaining)
		}
	})
}

func TestWebhookRefundRevokesInProportionOnce(t *testing.T) {
	r := newWebhookRig(t, fsm.GrantOnPayment, 0)
	r.start("p1", fsm.FlowSelfServe)
	r.mustSend("evt_ok", "payment_intent.succeeded", paymentIntentObj("pi_p1", "p1", "succeeded"))
	// 2.50 of 10.00 USD back: a quarter of 1000 credits.
	r.mustSend("evt_r1", "charge.refunded", chargeObj("ch_1", "p1", refundSpec{"re_1", 250, 10}))
	if g := readGrant(t, r.f, "purchase:p1"); g.Revoked != 250 || g.Remaining != 750 {
		t.Fatalf("grant revoked %d remaining %d, want 250 and 750", g.Revoked, g.Remaining)
	}
	// The same refund, in a new event id (not a replay): applied once.
	r.mustSend("evt_r1b", "charge.refunded", chargeObj("ch_1", "p1", refundSpec{"re_1", 250, 10}))
	if g := readGrant(t, r.f, "purchase:p1"); g.Revoked != 250 {
		t.Fatalf("repeated refund revoked again: %d", g.Revoked)
	}
	// The rest refunded: the grant's remainder goes.
	r.mustSend("evt_r2", "charge.refunded", chargeObj("ch_1", "p1", refundSpec{"re_1", 250, 10}, refundSpec{"re_2", 750, 20}))
	g := readGrant(t, r.f, "purchase:p1")
	if g.Revoked != 1000 || g.Remaining != 0 || g.Status != fsm.GrantRevoked {
		t.Fatalf("grant = %+v, want all 1000 revoked", g)
	}
	var revokes int
	if err := r.f.View(func(v *fsm.View) error {
		es, _, err := v.Ledger(fsm.LedgerFilter{CustomerID: "c1", Limit: 100})
		for _, e := range es {
			if e.Kind == fsm.EntryRevoke {
				revokes++
				if e.MoneyMicros >= 0 {
					t.Errorf("revoke entry %+v removes no deferred revenue", e)
				}
			}
		}
		return err
	}); err != nil {
		t.Fatal(err)
	}
	if revokes != 2 {
		t.Fatalf("%d revoke ledger entries, want 2 (one per refund)", revokes)
	}
}

func TestWebhookUnpaidInvoices(t *testing.T) {
	t.Run("a voided invoice granted on issue loses its remainder", func(t *testing.T) {
		r := newWebhookRig(t, fsm.GrantOnIssue, 0)
		r.start("inv1", fsm.FlowInvoice)
		r.mustSend("evt_fin", "invoice.finalized", invoiceObj("in_1", "inv1", "open"))
		must(t, r.a, fsm.BurnUsage{Events: []fsm.UsageEvent{{ID: "u1", CustomerID: "c1", CreditTypeID: "ai", Credits: 100}}})
		r.mustSend("evt_void", "invoice.voided", invoiceObj("in_1", "inv1", "void"))
		g := readGrant(t, r.f, "purchase:inv1")
		if g.Revoked != 900 || g.Burned != 100 || g.Status != fsm.GrantRevoked {
			t.Fatalf("grant = %+v, want 900 revoked after 100 burned", g)
		}
		// Marked uncollectible too: nothing more to revoke, answered 200.
		r.mustSend("evt_unc", "invoice.marked_uncollectible", invoiceObj("in_1", "inv1", "uncollectible"))
		if g2 := readGrant(t, r.f, "purchase:inv1"); g2.Revoked != 900 {
			t.Fatalf("revoked %d after the second event, want 900", g2.Revoked)
		}
	})
	t.Run("an uncollectible invoice that grants on payment fails the purchase", func(t *testing.T) {
		r := newWebhookRig(t, fsm.GrantOnPayment, 0)
		r.start("inv1", fsm.FlowInvoice)
		r.mustSend("evt_fin", "invoice.finalized", invoiceObj("in_1", "inv1", "open"))
		r.mustSend("evt_unc", "invoice.marked_uncollectible", invoiceObj("in_1", "inv1", "uncollectible"))
		p := readPurchase(t, r.f, "inv1")
		if p.Status != fsm.PurchaseFailed || !strings.Contains(p.FailureReason, "uncollectible") {
			t.Fatalf("purchase = %+v, want failed as uncollectible", p)
		}
		if n := countGrants(t, r.f); n != 0 {
			t.Fatalf("%d grants, want none", n)
		}
	})
}

func TestWebhookIgnoresWhatIsNotOurs(t *testing.T) {
	r := newWebhookRig(t, fsm.GrantOnPayment, 0)
	tests := []struct {
		name string
		typ  string
		obj  map[string]any
		want string
	}{
		{"an event type billing does not act on", "customer.created", map[string]any{"id": "cus_1", "object": "customer"}, "ignored"},
		{"a payment without a creditd purchase id", "payment_intent.succeeded", map[string]any{"id": "pi_x", "object": "payment_intent", "status": "succeeded"}, "not a creditd purchase"},
		{"a payment naming an unknown purchase", "payment_intent.succeeded", paymentIntentObj("pi_y", "nope", "succeeded"), "unknown"},
	}
	for i, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			msg := r.mustSend("evt_ign_"+string(rune('a'+i)), tc.typ, tc.obj)
			if !strings.Contains(msg, tc.want) {
				t.Fatalf("answer %q, want it to contain %q", msg, tc.want)
			}
		})
	}
}

func TestWebhookRetriesAfterAClusterError(t *testing.T) {
	r := newWebhookRig(t, fsm.GrantOnPayment, 0)
	r.start("p1", fsm.FlowSelfServe)
	r.a.mu.Lock()
	r.a.failNext = 1
	r.a.mu.Unlock()
	code, msg := r.send("evt_1", "payment_intent.succeeded", paymentIntentObj("pi_1", "p1", "succeeded"))
	if code != http.StatusServiceUnavailable {
		t.Fatalf("status %d (%s), want 503 while the cluster cannot apply", code, msg)
	}
	// The provider's retry of the same event id must be applied, not
	// taken for a replay.
	r.mustSend("evt_1", "payment_intent.succeeded", paymentIntentObj("pi_1", "p1", "succeeded"))
	if p := readPurchase(t, r.f, "p1"); p.Status != fsm.PurchaseSucceeded {
		t.Fatalf("purchase %s after the retry, want succeeded", p.Status)
	}
}

func TestWebhookSeenSetIsBounded(t *testing.T) {
	r := newWebhookRig(t, fsm.GrantOnPayment, 2)
	for _, id := range []string{"p1", "p2", "p3"} {
		r.start(id, fsm.FlowSelfServe)
		r.mustSend("evt_"+id, "payment_intent.succeeded", paymentIntentObj("pi_"+id, id, "succeeded"))
	}
	if n := r.h.seen.len(); n != 2 {
		t.Fatalf("seen set holds %d ids, want its limit 2", n)
	}
	// evt_p1 was forgotten: its replay reaches fsm, which applies it once.
	msg := r.mustSend("evt_p1", "payment_intent.succeeded", paymentIntentObj("pi_p1", "p1", "succeeded"))
	if !strings.Contains(msg, "already") {
		t.Fatalf("replay beyond the seen set answered %q, want fsm's duplicate", msg)
	}
	if n := countGrants(t, r.f); n != 3 {
		t.Fatalf("%d grants, want 3", n)
	}
}

func TestWebhookFollowerForwardsToLeader(t *testing.T) {
	r := newWebhookRig(t, fsm.GrantOnPayment, 0)
	r.start("p1", fsm.FlowSelfServe)
	leaderAddr := strings.TrimPrefix(r.srv.URL, "http://")
	// A follower: same provider, an applier that must never be called.
	follower, err := NewWebhookHandler(WebhookOptions{Provider: r.h.o.Provider, Applier: refusingApplier{t}, State: r.f,
		Leader: func() (bool, string) { return false, leaderAddr }})
	if err != nil {
		t.Fatal(err)
	}
	fsrv := httptest.NewServer(follower)
	defer fsrv.Close()
	payload := stripeEventJSON(t, "evt_fwd", "payment_intent.succeeded", paymentIntentObj("pi_1", "p1", "succeeded"))
	sp := webhook.GenerateTestSignedPayload(&webhook.UnsignedPayload{Payload: payload, Secret: testWebhookSecret, Timestamp: time.Now()})
	req, _ := http.NewRequestWithContext(context.Background(), http.MethodPost, fsrv.URL+WebhookPath, bytes.NewReader(payload))
	req.Header.Set("Stripe-Signature", sp.Header)
	resp, err := fsrv.Client().Do(req)
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("status %d (%s), want 200 from the leader", resp.StatusCode, body)
	}
	if p := readPurchase(t, r.f, "p1"); p.Status != fsm.PurchaseSucceeded {
		t.Fatalf("purchase %s, want succeeded by the leader", p.Status)
	}
}

type refusingApplier struct{ t *testing.T }

func (a refusingApplier) Apply(context.Context, fsm.Command) (fsm.Result, error) {
	a.t.Error("a follower applied a command")
	return fsm.Result{}, errNoLeaderForTest
}

// Stripe does not order events: a refund that comes before the payment's
// success is refused for now (503, so Stripe sends it again) and revokes
// once the purchase has its grant.
func TestARefundDeliveredBeforeThePaymentsSuccessRevokesOnItsRetry(t *testing.T) {
	r := newWebhookRig(t, fsm.GrantOnPayment, 0)
	r.start("p1", fsm.FlowSelfServe)
	// Stripe does not order events: the full refund's charge.refunded comes
	// first (payment_intent.succeeded was answered 503 and is retried later,
	// or is simply delivered late).
	refund := chargeObj("ch_1", "p1", refundSpec{"re_1", 1000, 10})
	code, msg := r.send("evt_refund", "charge.refunded", refund)
	r.mustSend("evt_paid", "payment_intent.succeeded", paymentIntentObj("pi_p1", "p1", "succeeded"))
	if code != http.StatusServiceUnavailable {
		t.Fatalf("a refund of a purchase still pending was answered %d %q; want 503 so that Stripe sends it again", code, msg)
	}
	r.mustSend("evt_refund", "charge.refunded", refund)
	g := readGrant(t, r.f, "purchase:p1")
	if g.Revoked != 1000 || g.Remaining != 0 {
		t.Fatalf("the whole charge was refunded, but the grant has revoked %d, remaining %d (want 1000 revoked, 0 remaining)",
			g.Revoked, g.Remaining)
	}
}

// Refunds are ordered by creation second, then id, and Stripe's ids are not
// ordered in time: a refund made in the same second as an earlier one but
// sorting before it changes the earlier one's share by a unit after it was
// revoked. The refunds of the whole charge must still revoke the whole grant.
func TestRefundsOfOneSecondThatAddUpToTheChargeRevokeTheWholeGrant(t *testing.T) {
	r := newWebhookRig(t, fsm.GrantOnPayment, 0)
	price, err := fsm.ParseDecimal("0.003", 6)
	if err != nil {
		t.Fatal(err)
	}
	must(t, r.a, fsm.UpsertPlan{Plan: fsm.Plan{ID: "cheap", Name: "Cheap", CreditTypeID: "ai", Currency: "USD",
		PricePerCredit: price, MinPurchaseCredits: 1, MaxPurchaseCredits: 1_000_000}})
	must(t, r.a, fsm.UpsertCustomer{ID: "c3", Name: "Three", BillingRef: "cus_3", PlanID: "cheap"})
	// 1000 credits for 3.00 USD.
	must(t, r.a, fsm.StartPurchase{ID: "p3", CustomerID: "c3", Credits: 1000, Flow: fsm.FlowSelfServe})
	r.mustSend("evt_paid", "payment_intent.succeeded", paymentIntentObj("pi_p3", "p3", "succeeded"))
	// re_Z (2.00) is made first, re_A (1.00) a moment later, in the same second.
	reZ := refundSpec{"re_Z", 200, 10}
	reA := refundSpec{"re_A", 100, 10}
	r.mustSend("evt_rz", "charge.refunded", chargeObj("ch_3", "p3", reZ))
	r.mustSend("evt_ra", "charge.refunded", chargeObj("ch_3", "p3", reZ, reA))
	g := readGrant(t, r.f, "purchase:p3")
	if g.Revoked != 1000 {
		t.Fatalf("3.00 of 3.00 USD refunded, but %d of 1000 credits revoked (%d remain)", g.Revoked, g.Remaining)
	}
}
