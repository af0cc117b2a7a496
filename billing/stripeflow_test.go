package billing

import (
	"context"
	"net/http"
	"net/http/httptest"
	"net/http/httputil"
	"net/url"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/creditd/creditd/fsm"
)

// keyRecorder is a reverse proxy in front of stripe-mock that records the
// idempotency key of every POST, so a test sees exactly what reached the
// provider through the real stripe-go client.
type keyRecorder struct {
	mu    sync.Mutex
	posts map[string][]string // path → keys in order
}

func startKeyRecorder(t *testing.T, mockURL string) (*keyRecorder, string) {
	t.Helper()
	u, err := url.Parse(mockURL)
	if err != nil {
		t.Fatal(err)
	}
	rec := &keyRecorder{posts: map[string][]string{}}
	proxy := httputil.NewSingleHostReverseProxy(u)
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Method == http.MethodPost {
			rec.mu.Lock()
			rec.posts[r.URL.Path] = append(rec.posts[r.URL.Path], r.Header.Get("Idempotency-Key"))
			rec.mu.Unlock()
		}
		proxy.ServeHTTP(w, r)
	}))
	t.Cleanup(srv.Close)
	return rec, srv.URL
}

func (r *keyRecorder) keys(path string) []string {
	r.mu.Lock()
	defer r.mu.Unlock()
	return slices.Clone(r.posts[path])
}

// The worker through the real Stripe client to stripe-mock. stripe-mock's
// payment intents come back declined (its fixture carries a
// last_payment_error) and its invoices as fixtures, so this checks what is
// sent and with which keys, not Stripe's flows.
func TestWorkerThroughStripeMockUsesPurchaseKeys(t *testing.T) {
	rec, url := startKeyRecorder(t, startStripeMock(t))
	prov := newTestStripe(t, url)
	f, a := newLocalFSM(t)
	seedCatalog(t, a, fsm.GrantOnPayment, testAutoTopUp)
	autoID := burnToAutoTopUp(t, a, f)
	must(t, a, fsm.StartPurchase{ID: "web1", CustomerID: "c1", Credits: 1000, Flow: fsm.FlowSelfServe})
	must(t, a, fsm.StartPurchase{ID: "inv1", CustomerID: "c1", Credits: 1000, Flow: fsm.FlowInvoice})
	startWorker(t, WorkerOptions{Provider: prov, Applier: a, State: f, MaxAttempts: 2, PollInterval: time.Hour})

	eventually(t, "the automatic charge to fail after its attempts", func() bool { return purchaseStatus(f, autoID) == fsm.PurchaseFailed })
	eventually(t, "the invoice to be issued", func() bool { return readPurchase(t, f, "inv1").ProviderRef != "" })
	eventually(t, "the on-session payment to start", func() bool { return readPurchase(t, f, "web1").ProviderRef != "" })

	pis := rec.keys("/v1/payment_intents")
	slices.Sort(pis)
	want := []string{autoID, autoID + ":attempt-2", "web1"}
	slices.Sort(want)
	if !slices.Equal(pis, want) {
		t.Fatalf("payment intent keys %v, want %v", pis, want)
	}
	if got := rec.keys("/v1/invoices"); !slices.Equal(got, []string{"inv1:invoice"}) {
		t.Fatalf("invoice keys %v, want [inv1:invoice]", got)
	}
	if got := rec.keys("/v1/invoiceitems"); !slices.Equal(got, []string{"inv1:line"}) {
		t.Fatalf("invoice item keys %v, want [inv1:line]", got)
	}
	for _, step := range []string{"finalize", "send"} {
		var got []string
		rec.mu.Lock()
		for path, ks := range rec.posts {
			if strings.HasSuffix(path, "/"+step) {
				got = append(got, ks...)
			}
		}
		rec.mu.Unlock()
		if !slices.Equal(got, []string{"inv1:" + step}) {
			t.Fatalf("%s keys %v, want [inv1:%s]", step, got, step)
		}
	}
	var cu fsm.Customer
	_ = f.View(func(v *fsm.View) error { cu, _ = v.Customer("c1"); return nil })
	if cu.AutoTopUpPaused == "" {
		t.Fatal("auto top-up not paused after the declined charges")
	}
}

// Refund events as the basil API sends them: the charge carries no refunds
// list (and may carry no purchase id), so the handler asks Stripe. Against
// stripe-mock this checks the requests' shapes through the real client.
func TestWebhookRefundLooksUpRefundsAndPurchaseAtStripeMock(t *testing.T) {
	url := startStripeMock(t)
	f, a := newLocalFSM(t)
	seedCatalog(t, a, fsm.GrantOnPayment, fsm.AutoTopUp{})
	must(t, a, fsm.StartPurchase{ID: "p1", CustomerID: "c1", Credits: 1000, Flow: fsm.FlowSelfServe})
	must(t, a, fsm.CompletePurchase{ID: "p1", Outcome: fsm.OutcomeSucceeded, ProviderRef: "pi_123"})
	h, err := NewWebhookHandler(WebhookOptions{Provider: newTestStripe(t, url), Applier: a, State: f})
	if err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name string
		ev   Event
		want string
	}{
		{"refunds are listed when the charge does not carry them",
			Event{ID: "evt_1", Type: "charge.refunded", Kind: EventChargeRefunded, PurchaseID: "p1", ObjectRef: "ch_123",
				PaymentRef: "pi_123", AmountMinor: 1000, AmountRefundedMinor: 100, Currency: "USD"},
			"revocation refund:re_"},
		// stripe-mock's payment intent and invoice payment fixtures carry no
		// creditd metadata: the look-ups are made and the event ignored.
		{"the purchase is looked up through the payment intent when the charge has no metadata through the payment intent when the charge has no metadata",
			Event{ID: "evt_2", Type: "charge.refunded", Kind: EventChargeRefunded, ObjectRef: "ch_123",
				PaymentRef: "pi_123", AmountMinor: 1000, AmountRefundedMinor: 100, Currency: "USD"},
			"not a creditd purchase"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
			defer cancel()
			code, msg := h.Handle(ctx, tc.ev)
			if code != http.StatusOK {
				t.Fatalf("status %d: %s", code, msg)
			}
			if !strings.Contains(msg, tc.want) {
				t.Fatalf("answer %q, want it to contain %q", msg, tc.want)
			}
		})
	}
}
