package billing

import (
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
