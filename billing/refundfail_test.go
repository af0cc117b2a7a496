package billing

import (
	"context"
	"encoding/json"
	"errors"
	"net/http"
	"net/http/httptest"
	"net/http/httputil"
	"net/url"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/creditd/creditd/export"
	"github.com/creditd/creditd/fsm"
)

// refundDesk stands in front of stripe-mock and answers the two reads a
// refund event makes with what the test says Stripe holds: the charge's
// refunds (GET /v1/refunds?charge=…) and the payment intent, carrying the
// creditd purchase id. Everything else goes to stripe-mock, so the real
// stripe-go client decodes real Stripe shapes.
type refundDesk struct {
	mu      sync.Mutex
	refunds map[string][]map[string]any // charge → refunds, as Stripe lists them
	intents map[string]string           // payment intent → purchase id
	lists   int
}

func startRefundDesk(t *testing.T) (*refundDesk, string) {
	t.Helper()
	u, err := url.Parse(startStripeMock(t))
	if err != nil {
		t.Fatal(err)
	}
	d := &refundDesk{refunds: map[string][]map[string]any{}, intents: map[string]string{}}
	proxy := httputil.NewSingleHostReverseProxy(u)
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Method == http.MethodGet && r.URL.Path == "/v1/refunds" {
			d.mu.Lock()
			data := d.refunds[r.URL.Query().Get("charge")]
			d.lists++
			d.mu.Unlock()
			w.Header().Set("Content-Type", "application/json")
			_ = json.NewEncoder(w).Encode(map[string]any{"object": "list", "url": "/v1/refunds", "has_more": false, "data": data})
			return
		}
		if id, ok := strings.CutPrefix(r.URL.Path, "/v1/payment_intents/"); ok && r.Method == http.MethodGet {
			d.mu.Lock()
			purchase, known := d.intents[id]
			d.mu.Unlock()
			if known {
				// stripe-mock's own payment intent, with the metadata
				// creditd set when it created it.
				rec := httptest.NewRecorder()
				proxy.ServeHTTP(rec, r)
				var pi map[string]any
				if err := json.Unmarshal(rec.Body.Bytes(), &pi); err != nil {
					http.Error(w, "stripe-mock answered no payment intent: "+err.Error(), http.StatusBadGateway)
					return
				}
				pi["id"], pi["status"], pi["last_payment_error"] = id, "succeeded", nil
				pi["metadata"] = map[string]string{MetadataPurchaseID: purchase}
				w.Header().Set("Content-Type", "application/json")
				_ = json.NewEncoder(w).Encode(pi)
				return
			}
		}
		proxy.ServeHTTP(w, r)
	}))
	t.Cleanup(srv.Close)
	return d, srv.URL
}

// set records the refunds Stripe holds for a charge.
func (d *refundDesk) set(charge string, refunds ...map[string]any) {
	d.mu.Lock()
	defer d.mu.Unlock()
	d.refunds[charge] = refunds
}

func refundObj(id, charge, pi string, amount, created int64, status string) map[string]any {
	return map[string]any{"id": id, "object": "refund", "amount": amount, "currency": "usd", "status": status,
		"created": created, "charge": charge, "payment_intent": pi}
}

// refundFailRig is a webhook endpoint over a real FSM whose connector talks
// to the refund desk, with purchase p1 of 1000 credits for 10.00 USD paid
// through pi_p1 (charge ch_1).
type refundFailRig struct {
	*webhookRig
	desk *refundDesk
}

func newRefundFailRig(t *testing.T) *refundFailRig {
	t.Helper()
	desk, url := startRefundDesk(t)
	f, a := newLocalFSM(t)
	seedCatalog(t, a, fsm.GrantOnPayment, fsm.AutoTopUp{})
	h, err := NewWebhookHandler(WebhookOptions{Provider: newTestStripe(t, url), Applier: a, State: f})
	if err != nil {
		t.Fatal(err)
	}
	srv := httptest.NewServer(h)
	t.Cleanup(srv.Close)
	r := &refundFailRig{webhookRig: &webhookRig{t: t, f: f, a: a, h: h, srv: srv}, desk: desk}
	desk.intents["pi_p1"] = "p1"
	r.start("p1", fsm.FlowSelfServe)
	r.mustSend("evt_paid", "payment_intent.succeeded", paymentIntentObj("pi_p1", "p1", "succeeded"))
	return r
}

// refunded sends charge.refunded for ch_1 carrying these refunds, as the
// charge's snapshot.
func (r *refundFailRig) refunded(evt string, refunds ...map[string]any) string {
	r.t.Helper()
	var total int64
	for _, x := range refunds {
		if x["status"] != "failed" && x["status"] != "canceled" {
			total += x["amount"].(int64)
		}
	}
	ch := map[string]any{"id": "ch_1", "object": "charge", "amount": 1000, "amount_refunded": total, "currency": "usd",
		"status": "succeeded", "payment_intent": "pi_p1", "metadata": map[string]string{MetadataPurchaseID: "p1"},
		"refunds": map[string]any{"object": "list", "data": refunds, "has_more": false}}
	r.desk.set("ch_1", refunds...)
	return r.mustSend(evt, "charge.refunded", ch)
}

// failed tells, as Stripe does, that one refund failed: the desk lists it
// as failed from now on, and a refund.failed event carries it.
func (r *refundFailRig) failed(evt, typ string, refund map[string]any, others ...map[string]any) string {
	r.t.Helper()
	f := map[string]any{}
	for k, v := range refund {
		f[k] = v
	}
	f["status"] = "failed"
	r.desk.set("ch_1", append([]map[string]any{f}, others...)...)
	return r.mustSend(evt, typ, f)
}

func (r *refundFailRig) balance() int64 {
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

func (r *refundFailRig) ledger() []fsm.LedgerEntry {
	r.t.Helper()
	var es []fsm.LedgerEntry
	if err := r.f.View(func(v *fsm.View) error {
		var err error
		es, _, err = v.Ledger(fsm.LedgerFilter{CustomerID: "c1", Limit: 1000})
		return err
	}); err != nil {
		r.t.Fatal(err)
	}
	return es
}

// reconcile runs the reconciliation report over the whole ledger, which
// checks every entry, the credit and money identities, and ties every
// grant's remaining credits and deferred revenue to the state; it returns
// the ai/USD row.
func (r *refundFailRig) reconcile() export.Row {
	r.t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	rep, err := export.ReportFromSource(ctx, export.FromFSM(r.f), time.Unix(0, 0), time.Now().Add(time.Hour), nil)
	if err != nil {
		r.t.Fatalf("reconciliation: %v", err)
	}
	for _, row := range rep.Rows {
		if row.CreditTypeID == "ai" && row.Currency == "USD" {
			if row.ClosingBalance != row.OpeningBalance+row.GrantedPaid+row.GrantedPromotional-row.Burned-row.Expired-
				row.Revoked+row.Adjusted+row.OverdraftRepaid ||
				row.ClosingDeferred != row.OpeningDeferred+row.DeferredGranted-row.Recognized-row.Breakage-
					row.Refunded+row.AdjustedMoney {
				r.t.Fatalf("row does not tie: %+v", row)
			}
			return row
		}
	}
	r.t.Fatalf("no ai/USD row in %+v", rep.Rows)
	return export.Row{}
}

func TestRefundThatFailsGivesBackWhatItRevoked(t *testing.T) {
	r := newRefundFailRig(t)
	re1 := refundObj("re_1", "ch_1", "pi_p1", 300, 10, "succeeded")
	r.refunded("evt_r1", re1)
	if b := r.balance(); b != 700 {
		t.Fatalf("balance %d after refunding 3.00 of 10.00, want 700", b)
	}
	msg := r.failed("evt_f1", "refund.failed", re1)
	if !strings.Contains(msg, "300 credits given back") {
		t.Fatalf("answer %q, want the 300 credits given back", msg)
	}
	if b := r.balance(); b != 1000 {
		t.Fatalf("balance %d after the refund failed, want 1000", b)
	}
	g := readGrant(t, r.f, "refund-failed:re_1")
	orig := readGrant(t, r.f, "purchase:p1")
	if g.Amount != 300 || g.Category != fsm.Paid || g.Currency != "USD" || g.CostBasis != orig.CostBasis ||
		g.SourceKind != orig.SourceKind || g.SourceRef != orig.SourceRef || g.DeferredMicros != 3_000_000 {
		t.Fatalf("give-back grant %+v, want 300 paid credits at the purchase's cost basis (3.00 USD deferred)", g)
	}
	es := r.ledger()
	last := es[len(es)-1]
	if last.Kind != fsm.EntryGrant || last.Amount != 300 || last.MoneyMicros != 3_000_000 ||
		last.CauseID != "refund-failed:re_1" || last.BalanceAfter != 1000 {
		t.Fatalf("last ledger entry %+v, want the 300 credits and 3.00 USD given back, caused by refund-failed:re_1", last)
	}

	// Told again in every way Stripe may tell it: nothing more comes back.
	n := len(es)
	r.failed("evt_f1", "refund.failed", re1)          // the same event again
	r.failed("evt_f1b", "refund.updated", re1)        // another event about it
	r.failed("evt_f1c", "charge.refund.updated", re1) // and the charge's
	failedRe1 := refundObj("re_1", "ch_1", "pi_p1", 300, 10, "failed")
	r.refunded("evt_r1b", failedRe1) // a charge snapshot listing it as failed
	r.refunded("evt_r1", re1)        // the first event replayed
	r.refunded("evt_r1_stale", re1)  // its snapshot in another event: the revocation is not made again
	if b, m := r.balance(), len(r.ledger()); b != 1000 || m != n {
		t.Fatalf("balance %d and %d ledger entries after the failure was told again, want 1000 and %d", b, m, n)
	}

	row := r.reconcile()
	want := export.Row{CreditTypeID: "ai", Currency: "USD", Scale: row.Scale, GrantedPaid: 1300, Revoked: 300,
		ClosingBalance: 1000, DeferredGranted: 13_000_000, Refunded: 3_000_000, ClosingDeferred: 10_000_000}
	if row != want {
		t.Fatalf("reconciliation row\n got %+v\nwant %+v", row, want)
	}
}

func TestRefundThatFailsGivesBackOnlyWhatWasTaken(t *testing.T) {
	r := newRefundFailRig(t)
	// 800 credits burned, then the whole purchase refunded: its share is
	// 1000 credits but only the 200 left are taken.
	must(t, r.a, fsm.BurnUsage{Events: []fsm.UsageEvent{{ID: "u1", CustomerID: "c1", CreditTypeID: "ai", Credits: 800}}})
	re1 := refundObj("re_1", "ch_1", "pi_p1", 1000, 10, "succeeded")
	r.refunded("evt_r1", re1)
	if g := readGrant(t, r.f, "purchase:p1"); g.Revoked != 200 || g.Status != fsm.GrantRevoked {
		t.Fatalf("grant %+v, want 200 revoked", g)
	}
	msg := r.failed("evt_f1", "refund.failed", re1)
	if !strings.Contains(msg, "200 credits given back") {
		t.Fatalf("answer %q, want the 200 credits taken given back", msg)
	}
	if b := r.balance(); b != 200 {
		t.Fatalf("balance %d, want the 200 credits back (the 800 burned stay burned)", b)
	}
	row := r.reconcile()
	want := export.Row{CreditTypeID: "ai", Currency: "USD", Scale: row.Scale, GrantedPaid: 1200, Burned: 800, Revoked: 200,
		ClosingBalance: 200, DeferredGranted: 12_000_000, Recognized: 8_000_000, Refunded: 2_000_000, ClosingDeferred: 2_000_000}
	if row != want {
		t.Fatalf("reconciliation row\n got %+v\nwant %+v", row, want)
	}
}

func TestRefundsAfterAFailedOneStillRevokeTheirShare(t *testing.T) {
	t.Run("the purchase's grant still holds the share", func(t *testing.T) {
		r := newRefundFailRig(t)
		re1 := refundObj("re_1", "ch_1", "pi_p1", 300, 10, "succeeded")
		r.refunded("evt_r1", re1)
		r.failed("evt_f1", "refund.failed", re1)
		// 5.00 of 10.00 refunded now: the failed 3.00 counts for nothing,
		// so half the credits go.
		failedRe1 := refundObj("re_1", "ch_1", "pi_p1", 300, 10, "failed")
		r.refunded("evt_r2", failedRe1, refundObj("re_2", "ch_1", "pi_p1", 500, 20, "succeeded"))
		if b := r.balance(); b != 500 {
			t.Fatalf("balance %d, want 500 after half of the purchase was refunded", b)
		}
		if g := readGrant(t, r.f, "refund-failed:re_1"); g.Remaining != 300 {
			t.Fatalf("give-back grant %+v, want its 300 untouched (the purchase's grant covered the share)", g)
		}
		r.reconcile()
	})
	t.Run("the failed refund had emptied the purchase's grant", func(t *testing.T) {
		r := newRefundFailRig(t)
		re1 := refundObj("re_1", "ch_1", "pi_p1", 1000, 10, "succeeded")
		r.refunded("evt_r1", re1)
		r.failed("evt_f1", "refund.failed", re1)
		if b := r.balance(); b != 1000 {
			t.Fatalf("balance %d after the full refund failed, want 1000", b)
		}
		failedRe1 := refundObj("re_1", "ch_1", "pi_p1", 1000, 10, "failed")
		re2 := refundObj("re_2", "ch_1", "pi_p1", 400, 20, "succeeded")
		r.refunded("evt_r2", failedRe1, re2)
		if b := r.balance(); b != 600 {
			t.Fatalf("balance %d after 4.00 of 10.00 refunded, want 600", b)
		}
		r.refunded("evt_r2b", failedRe1, re2) // told again: once
		re3 := refundObj("re_3", "ch_1", "pi_p1", 600, 30, "succeeded")
		r.refunded("evt_r3", failedRe1, re2, re3)
		if b := r.balance(); b != 0 {
			t.Fatalf("balance %d after the rest was refunded, want 0", b)
		}
		var froms []string
		for _, e := range r.ledger() {
			if e.Kind == fsm.EntryRevoke && e.GrantID == "refund-failed:re_1" {
				froms = append(froms, e.CauseID)
			}
		}
		if strings.Join(froms, ",") != "refund:re_2:from:re_1,refund:re_3:from:re_1" {
			t.Fatalf("revocations from the given-back credits %v, want re_2's then re_3's", froms)
		}
		row := r.reconcile()
		if row.ClosingBalance != 0 || row.ClosingDeferred != 0 || row.Revoked != 2000 || row.GrantedPaid != 2000 {
			t.Fatalf("reconciliation row %+v, want 2000 granted and revoked, nothing left", row)
		}
	})
	t.Run("a refund that failed later in the order gives back what it took", func(t *testing.T) {
		r := newRefundFailRig(t)
		re1 := refundObj("re_1", "ch_1", "pi_p1", 200, 10, "succeeded")
		re2 := refundObj("re_2", "ch_1", "pi_p1", 300, 20, "succeeded")
		r.refunded("evt_r2", re1, re2)
		if b := r.balance(); b != 500 {
			t.Fatalf("balance %d, want 500", b)
		}
		msg := r.failed("evt_f2", "refund.failed", re2, re1)
		if !strings.Contains(msg, "300 credits given back") {
			t.Fatalf("answer %q, want re_2's 300 credits given back", msg)
		}
		if b := r.balance(); b != 800 {
			t.Fatalf("balance %d, want 800 (only re_1's 200 stay revoked)", b)
		}
		r.reconcile()
	})
}

// An endpoint subscribed to charge.refunded alone learns of the failure
// from the charge's next snapshot, and gives back the same.
func TestRefundFailureToldByTheChargeAlone(t *testing.T) {
	r := newRefundFailRig(t)
	r.refunded("evt_r1", refundObj("re_1", "ch_1", "pi_p1", 250, 10, "succeeded"))
	msg := r.refunded("evt_r2", refundObj("re_1", "ch_1", "pi_p1", 250, 10, "failed"),
		refundObj("re_2", "ch_1", "pi_p1", 100, 20, "succeeded"))
	if !strings.Contains(msg, "250 credits given back") {
		t.Fatalf("answer %q, want re_1's 250 credits given back", msg)
	}
	if b := r.balance(); b != 900 {
		t.Fatalf("balance %d, want 900 (re_2's 100 alone revoked)", b)
	}
	r.reconcile()
}

// The give-back reads the refunds at Stripe for a refund event, and a
// refund that never revoked anything gives nothing back.
func TestRefundThatFailsBeforeItRevokedGivesNothing(t *testing.T) {
	r := newRefundFailRig(t)
	re1 := refundObj("re_1", "ch_1", "pi_p1", 300, 10, "succeeded")
	msg := r.failed("evt_f1", "refund.failed", re1)
	if strings.Contains(msg, "given back") {
		t.Fatalf("answer %q: nothing was revoked, so nothing comes back", msg)
	}
	if b, n := r.balance(), countGrants(t, r.f); b != 1000 || n != 1 {
		t.Fatalf("balance %d and %d grants, want 1000 and the purchase's alone", b, n)
	}
	r.desk.mu.Lock()
	lists := r.desk.lists
	r.desk.mu.Unlock()
	if lists == 0 {
		t.Fatal("the refunds of the charge were not read at the provider")
	}
	// The charge's snapshot from before the failure, delivered late,
	// revokes; the next event listing the refund as failed gives it back.
	r.refunded("evt_stale", re1)
	if b := r.balance(); b != 700 {
		t.Fatalf("balance %d after the stale snapshot, want 700", b)
	}
	if msg := r.failed("evt_f1b", "refund.updated", re1); !strings.Contains(msg, "300 credits given back") {
		t.Fatalf("answer %q, want the 300 credits given back", msg)
	}
	if b := r.balance(); b != 1000 {
		t.Fatalf("balance %d, want 1000", b)
	}
	r.reconcile()
	// A pending refund's update is left to charge.refunded.
	if msg := r.mustSend("evt_u1", "refund.updated", refundObj("re_9", "ch_1", "pi_p1", 100, 40, "pending")); !strings.Contains(msg, "charge.refunded") {
		t.Fatalf("answer %q, want a counting refund's update left to charge.refunded", msg)
	}
}

// fsm forgets a revocation's request id after its idempotency retention;
// a second refund of the charge weeks later must not revoke the first
// one's share again.
func TestALaterRefundWeeksAfterDoesNotRevokeTheFirstAgain(t *testing.T) {
	r := newRefundFailRig(t)
	re1 := refundObj("re_1", "ch_1", "pi_p1", 300, 10, "succeeded")
	r.refunded("evt_r1", re1)
	r.a.mu.Lock()
	r.a.now = r.a.now.Add(15 * 24 * time.Hour) // past fsm's retention (7 days, seen for up to 14)
	r.a.mu.Unlock()
	must(t, r.a, fsm.Tick{})
	r.refunded("evt_r2", re1, refundObj("re_2", "ch_1", "pi_p1", 200, 20, "succeeded"))
	if g := readGrant(t, r.f, "purchase:p1"); g.Revoked != 500 {
		t.Fatalf("revoked %d credits, want 500 (300 + 200 of 1000 cents on 1000 credits)", g.Revoked)
	}
	// And a failure told weeks later still gives back once.
	msg := r.failed("evt_f1", "refund.failed", re1, refundObj("re_2", "ch_1", "pi_p1", 200, 20, "succeeded"))
	if !strings.Contains(msg, "300 credits given back") {
		t.Fatalf("answer %q, want re_1's 300 credits given back", msg)
	}
	if b := r.balance(); b != 800 {
		t.Fatalf("balance %d, want 800", b)
	}
	r.reconcile()
}

// A charge's only refund told again weeks later, after fsm forgot its
// revocation's request id and the node the event id, is found in the
// ledger: it does not revoke again.
func TestAChargesOnlyRefundToldAgainWeeksLaterDoesNotRevokeAgain(t *testing.T) {
	r := newRefundFailRig(t)
	re1 := refundObj("re_1", "ch_1", "pi_p1", 300, 10, "succeeded")
	r.refunded("evt_r1", re1)
	r.a.mu.Lock()
	r.a.now = r.a.now.Add(15 * 24 * time.Hour) // past fsm's retention (7 days, seen for up to 14)
	r.a.mu.Unlock()
	must(t, r.a, fsm.Tick{})
	if msg := r.refunded("evt_r1_later", re1); !strings.Contains(msg, "already applied") {
		t.Fatalf("answer %q, want the revocation already applied", msg)
	}
	if g := readGrant(t, r.f, "purchase:p1"); g.Revoked != 300 {
		t.Fatalf("revoked %d credits, want 300 once", g.Revoked)
	}
	r.reconcile()
}

func TestFirstSeqAt(t *testing.T) {
	f, a := newLocalFSM(t)
	seedCatalog(t, a, fsm.GrantOnPayment, fsm.AutoTopUp{})
	must(t, a, fsm.CreateGrant{ID: "g", CustomerID: "c1", CreditTypeID: "ai", Category: fsm.Promotional, Amount: 100})
	// Two burns in one command share their log time.
	must(t, a, fsm.BurnUsage{Events: []fsm.UsageEvent{{ID: "u1", CustomerID: "c1", CreditTypeID: "ai", Credits: 1},
		{ID: "u2", CustomerID: "c1", CreditTypeID: "ai", Credits: 1}}})
	must(t, a, fsm.BurnUsage{Events: []fsm.UsageEvent{{ID: "u3", CustomerID: "c1", CreditTypeID: "ai", Credits: 1}}})
	var es []fsm.LedgerEntry
	if err := f.View(func(v *fsm.View) error {
		var err error
		es, _, err = v.Ledger(fsm.LedgerFilter{})
		return err
	}); err != nil || len(es) != 4 {
		t.Fatalf("ledger %+v, %v: want 4 entries", es, err)
	}
	tests := []struct {
		name string
		at   fsm.Timestamp
		want uint64
	}{
		{"before the first entry", es[0].Time - 1, es[0].Seq},
		{"at the first entry", es[0].Time, es[0].Seq},
		{"at a time two entries share: the first of them", es[2].Time, es[1].Seq},
		{"between two entries: the later", es[0].Time + 1, es[1].Seq},
		{"at the last entry", es[3].Time, es[3].Seq},
		{"after the last entry: none", es[3].Time + 1, 0},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			var got uint64
			if err := f.View(func(v *fsm.View) error {
				var err error
				got, err = firstSeqAt(v, tc.at)
				return err
			}); err != nil {
				t.Fatal(err)
			}
			if got != tc.want {
				t.Fatalf("firstSeqAt(%d) = %d, want %d (entries %+v)", tc.at, got, tc.want, es)
			}
		})
	}
}

// A refund that could take nothing (the grant was used up) takes its share
// from the credits a failed refund gives back, as it would have taken them
// had the failed refund never counted; a canceled refund is a failed one.
func TestACanceledRefundsCreditsGoToARefundThatFoundNothing(t *testing.T) {
	r := newRefundFailRig(t)
	must(t, r.a, fsm.BurnUsage{Events: []fsm.UsageEvent{{ID: "u1", CustomerID: "c1", CreditTypeID: "ai", Credits: 900}}})
	reA := refundObj("re_a", "ch_1", "pi_p1", 500, 10, "succeeded")
	reB := refundObj("re_b", "ch_1", "pi_p1", 500, 20, "succeeded")
	r.refunded("evt_ra", reA)
	r.refunded("evt_rb", reA, reB)
	if b := r.balance(); b != 0 {
		t.Fatalf("balance %d, want 0 (re_a took the 100 left)", b)
	}
	canceled := refundObj("re_a", "ch_1", "pi_p1", 500, 10, "canceled")
	r.desk.set("ch_1", canceled, reB)
	msg := r.mustSend("evt_ca", "charge.refund.updated", canceled)
	if !strings.Contains(msg, "100 credits given back") {
		t.Fatalf("answer %q, want re_a's 100 credits given back", msg)
	}
	if b := r.balance(); b != 0 {
		t.Fatalf("balance %d, want 0: re_b's share of 500 takes the 100 given back", b)
	}
	var causes []string
	for _, e := range r.ledger() {
		if e.GrantID == "refund-failed:re_a" {
			causes = append(causes, e.Kind.String()+" "+e.CauseID)
		}
	}
	if len(causes) != 2 || !strings.HasSuffix(causes[1], "refund:re_b:from:re_a") {
		t.Fatalf("entries on the give-back grant %v, want its grant then re_b's revocation", causes)
	}
	r.reconcile()
}

func TestTheRevocationsReadStopsAtTheDeadline(t *testing.T) {
	f, a := newLocalFSM(t)
	seedCatalog(t, a, fsm.GrantOnPayment, fsm.AutoTopUp{})
	must(t, a, fsm.CreateGrant{ID: "g", CustomerID: "c1", CreditTypeID: "ai", Category: fsm.Promotional, Amount: 100})
	h := &WebhookHandler{o: WebhookOptions{State: f}}
	g := readGrant(t, f, "g")
	if err := h.readMoves(context.Background(), newPurchaseMoves(g)); err != nil {
		t.Fatalf("readMoves: %v", err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	if err := h.readMoves(ctx, newPurchaseMoves(g)); !errors.Is(err, context.Canceled) {
		t.Fatalf("readMoves past its deadline = %v, want context.Canceled", err)
	}
}
