package billing

// Retries past Stripe's 24 h idempotency-key retention, played by a fake
// Stripe that forgets its keys when told to (a day passing): stripe-mock
// keeps no state, so it can neither remember a key nor forget one.

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"net/http/httptest"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/creditd/creditd/fsm"
)

// forgetfulStripe remembers each idempotency key's answer until forget(),
// keeps every object it made, and can lose an answer (the object is made,
// the client sees a 500) or fail before making anything.
type forgetfulStripe struct {
	mu       sync.Mutex
	now      func() time.Time
	keys     map[string][]byte // idempotency key → answer of its first request
	bodies   map[string]string // idempotency key → parameters of its first request
	pis      []map[string]any  // oldest first, as made
	invoices []map[string]any
	items    []map[string]any
	piStatus string            // status of new payment intents
	lose     map[string]int    // route → answers still to lose after the effect
	failFor  map[string]int    // route → requests still to fail before any effect
	refuse   map[string]string // route → why Stripe refuses it (a 400), every time
	requests []string          // route of every request, in order
	sends    int
}

func newForgetfulStripe() *forgetfulStripe {
	return &forgetfulStripe{now: time.Now, keys: map[string][]byte{}, bodies: map[string]string{}, piStatus: "succeeded",
		lose: map[string]int{}, failFor: map[string]int{}, refuse: map[string]string{}}
}

// forget drops every remembered key, as Stripe does 24 hours after a key's
// first use; the objects stay.
func (s *forgetfulStripe) forget() {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.keys, s.bodies = map[string][]byte{}, map[string]string{}
}

func (s *forgetfulStripe) count(what string) int {
	s.mu.Lock()
	defer s.mu.Unlock()
	switch what {
	case "pis":
		return len(s.pis)
	case "invoices":
		return len(s.invoices)
	case "items":
		return len(s.items)
	case "sends":
		return s.sends
	}
	panic("count " + what)
}

func (s *forgetfulStripe) requested(route string) int {
	s.mu.Lock()
	defer s.mu.Unlock()
	n := 0
	for _, r := range s.requests {
		if r == route {
			n++
		}
	}
	return n
}

// route names a request: "charge", "list-payments", "invoice", "line",
// "finalize", "send", "list-invoices", "list-lines", "customer".
func route(r *http.Request) (name, id string) {
	parts := strings.Split(strings.Trim(r.URL.Path, "/"), "/")
	switch {
	case r.Method == http.MethodGet && len(parts) == 3 && parts[1] == "customers":
		return "customer", parts[2]
	case r.URL.Path == "/v1/payment_intents":
		if r.Method == http.MethodPost {
			return "charge", ""
		}
		return "list-payments", ""
	case r.URL.Path == "/v1/invoices":
		if r.Method == http.MethodPost {
			return "invoice", ""
		}
		return "list-invoices", ""
	case r.URL.Path == "/v1/invoiceitems":
		if r.Method == http.MethodPost {
			return "line", ""
		}
		return "list-lines", ""
	case r.Method == http.MethodPost && len(parts) == 4 && parts[1] == "invoices" && (parts[3] == "finalize" || parts[3] == "send" || parts[3] == "void"):
		return parts[3], parts[2]
	}
	return r.Method + " " + r.URL.Path, ""
}

func (s *forgetfulStripe) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	s.mu.Lock()
	defer s.mu.Unlock()
	w.Header().Set("Content-Type", "application/json")
	// A 500 the client must not retry on its own: the worker decides.
	w.Header().Set("Stripe-Should-Retry", "false")
	_ = r.ParseForm()
	name, id := route(r)
	s.requests = append(s.requests, name)
	if s.failFor[name] > 0 {
		s.failFor[name]--
		writeStripeError(w, http.StatusInternalServerError, "api_error", "internal error")
		return
	}
	if why := s.refuse[name]; why != "" {
		writeStripeError(w, http.StatusBadRequest, "invalid_request_error", why)
		return
	}
	key := r.Header.Get("Idempotency-Key")
	if r.Method == http.MethodPost && key != "" {
		if answer, seen := s.keys[key]; seen {
			if s.bodies[key] != r.PostForm.Encode() {
				writeStripeError(w, http.StatusBadRequest, "idempotency_error",
					"Keys for idempotent requests can only be used with the same parameters they were first used with.")
				return
			}
			_, _ = w.Write(answer)
			return
		}
	}
	obj, status := s.serve(name, id, r)
	answer, _ := json.Marshal(obj)
	if r.Method == http.MethodPost && key != "" && status == http.StatusOK {
		s.keys[key], s.bodies[key] = answer, r.PostForm.Encode()
	}
	if status == http.StatusOK && s.lose[name] > 0 {
		s.lose[name]--
		writeStripeError(w, http.StatusInternalServerError, "api_error", "internal error")
		return
	}
	w.WriteHeader(status)
	_, _ = w.Write(answer)
}

func (s *forgetfulStripe) serve(name, id string, r *http.Request) (any, int) {
	f := r.PostForm
	meta := map[string]string{MetadataPurchaseID: f.Get("metadata[" + MetadataPurchaseID + "]")}
	created := s.now().Unix()
	switch name {
	case "customer":
		return map[string]any{"id": id, "object": "customer",
			"invoice_settings": map[string]any{"default_payment_method": "pm_card"}}, http.StatusOK
	case "charge":
		pi := map[string]any{"id": fmt.Sprintf("pi_%d", len(s.pis)+1), "object": "payment_intent", "status": s.piStatus,
			"amount": 500, "currency": "usd", "customer": f.Get("customer"), "created": created, "metadata": meta}
		s.pis = append(s.pis, pi)
		return pi, http.StatusOK
	case "list-payments":
		return s.list(s.pis, r, "customer"), http.StatusOK
	case "invoice":
		inv := map[string]any{"id": fmt.Sprintf("in_%d", len(s.invoices)+1), "object": "invoice", "status": "draft",
			"amount_due": int64(0), "currency": "usd", "customer": f.Get("customer"), "created": created, "metadata": meta}
		s.invoices = append(s.invoices, inv)
		return inv, http.StatusOK
	case "list-invoices":
		return s.list(s.invoices, r, "customer"), http.StatusOK
	case "line":
		inv := s.invoice(f.Get("invoice"))
		if inv == nil || inv["status"] != "draft" {
			return map[string]any{"error": map[string]any{"type": "invalid_request_error", "message": "invoice is not a draft"}}, http.StatusBadRequest
		}
		amount, _ := strconv.ParseInt(f.Get("amount"), 10, 64)
		inv["amount_due"] = inv["amount_due"].(int64) + amount
		it := map[string]any{"id": fmt.Sprintf("ii_%d", len(s.items)+1), "object": "invoiceitem", "amount": amount,
			"invoice": f.Get("invoice"), "created": created, "metadata": meta}
		s.items = append(s.items, it)
		return it, http.StatusOK
	case "list-lines":
		return s.list(s.items, r, "invoice"), http.StatusOK
	case "void":
		inv := s.invoice(id)
		if inv == nil || inv["status"] != "open" {
			return map[string]any{"error": map[string]any{"type": "invalid_request_error",
				"message": "invoice " + id + " cannot be voided"}}, http.StatusBadRequest
		}
		inv["status"] = "void"
		return inv, http.StatusOK
	case "finalize", "send":
		inv := s.invoice(id)
		if inv == nil || (name == "finalize" && inv["status"] != "draft") || (name == "send" && inv["status"] != "open") {
			return map[string]any{"error": map[string]any{"type": "invalid_request_error",
				"message": "invoice " + id + " cannot be " + name + "ed"}}, http.StatusBadRequest
		}
		if name == "finalize" {
			inv["status"] = "open"
		} else {
			s.sends++
		}
		return inv, http.StatusOK
	}
	return map[string]any{"error": map[string]any{"type": "invalid_request_error", "message": "no route " + name}}, http.StatusNotFound
}

func (s *forgetfulStripe) invoice(id string) map[string]any {
	for _, inv := range s.invoices {
		if inv["id"] == id {
			return inv
		}
	}
	return nil
}

// list answers a list request newest first, filtered by the owner field
// (customer or invoice) and created[gte], in one page.
func (s *forgetfulStripe) list(objs []map[string]any, r *http.Request, owner string) map[string]any {
	q := r.URL.Query()
	since, _ := strconv.ParseInt(q.Get("created[gte]"), 10, 64)
	data := []map[string]any{}
	for i := len(objs) - 1; i >= 0; i-- {
		o := objs[i]
		if want := q.Get(owner); want != "" && o[owner] != want {
			continue
		}
		if o["created"].(int64) < since {
			continue
		}
		data = append(data, o)
	}
	return map[string]any{"object": "list", "url": r.URL.Path, "has_more": false, "data": data}
}

// keyWindowRig is a purchase, a forgetful Stripe and a way to carry the
// purchase one step, each step by a new worker (a new leader: nothing but the
// replicated state carries over) at a chosen time.
type keyWindowRig struct {
	t     *testing.T
	f     *fsm.FSM
	a     *localApplier
	fake  *forgetfulStripe
	prov  *Stripe
	extra WorkerOptions
}

func newKeyWindowRig(t *testing.T, auto fsm.AutoTopUp) *keyWindowRig {
	t.Helper()
	fake := newForgetfulStripe()
	srv := httptest.NewServer(fake)
	t.Cleanup(srv.Close)
	f, a := newLocalFSM(t)
	seedCatalog(t, a, fsm.GrantOnPayment, auto)
	return &keyWindowRig{t: t, f: f, a: a, fake: fake, prov: newTestStripe(t, srv.URL)}
}

// step has a new worker, whose clock reads at, carry purchase id one step.
func (r *keyWindowRig) step(id string, at time.Time) {
	r.t.Helper()
	o := r.extra
	o.Provider, o.Applier, o.State, o.Logger = r.prov, r.a, r.f, testLogger()
	o.Now = func() time.Time { return at }
	w, err := NewWorker(o)
	if err != nil {
		r.t.Fatal(err)
	}
	var cu fsm.Customer
	if err := r.f.View(func(v *fsm.View) error { cu, err = v.Customer("c1"); return err }); err != nil {
		r.t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	w.process(ctx, pendingItem{p: readPurchase(r.t, r.f, id), cu: cu})
}

// dayLater is past Stripe's key retention, seen from the purchase's start.
func dayLater(r *keyWindowRig, id string) time.Time {
	return readPurchase(r.t, r.f, id).CreatedAt.Time().Add(25 * time.Hour)
}

// An automatic charge whose outcome stayed unknown for more than a day is
// retried under a key Stripe has forgotten. The purchase's payments are
// looked up first: one the lost request made decides; a new charge is made
// only when none can move money.
func TestAnAutomaticChargeRetriedPastTheKeyWindowDoesNotChargeTwice(t *testing.T) {
	tests := []struct {
		name string
		// setup runs before the first step (made at the purchase's start).
		setup        func(r *keyWindowRig, id string)
		wantRef      string
		wantPayments int
	}{
		{"the first request charged the card and its answer was lost: its payment completes the purchase",
			func(r *keyWindowRig, _ string) { r.fake.lose["charge"] = 1 }, "pi_1", 1},
		{"the first request never reached Stripe: the retry looks, finds nothing, and charges once",
			func(r *keyWindowRig, _ string) { r.fake.failFor["charge"] = 1 }, "pi_1", 1},
		{"a later attempt's charge whose answer was lost completes the purchase, not a third payment",
			func(r *keyWindowRig, id string) {
				r.declineFirstAttempt(id)
				r.fake.lose["charge"] = 1
			}, "pi_2", 2},
		{"the decline recorded for the attempt before is not taken for this attempt's outcome",
			func(r *keyWindowRig, id string) {
				r.declineFirstAttempt(id)
				r.fake.failFor["charge"] = 1
			}, "pi_2", 2},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			r := newKeyWindowRig(t, testAutoTopUp)
			id := burnToAutoTopUp(t, r.a, r.f)
			tc.setup(r, id)
			r.step(id, readPurchase(t, r.f, id).CreatedAt.Time().Add(time.Minute))
			if st := purchaseStatus(r.f, id); st != fsm.PurchasePending {
				t.Fatalf("purchase %s after a lost answer, want pending", st)
			}
			r.fake.forget()
			r.step(id, dayLater(r, id))
			p := readPurchase(t, r.f, id)
			if p.Status != fsm.PurchaseSucceeded || p.ProviderRef != tc.wantRef {
				t.Fatalf("purchase %s with %q (%s), want succeeded with %s", p.Status, p.ProviderRef, p.ProviderStatus, tc.wantRef)
			}
			if n := r.fake.count("pis"); n != tc.wantPayments {
				t.Fatalf("%d payment intents at Stripe, want %d: the customer was charged again under a forgotten key", n, tc.wantPayments)
			}
			if r.fake.requested("list-payments") == 0 {
				t.Fatal("the payments were not looked up before a charge past the key window")
			}
		})
	}
}

// declineFirstAttempt records attempt 1 of the automatic purchase as
// declined, with its payment (pi_1, declined) at Stripe.
func (r *keyWindowRig) declineFirstAttempt(id string) {
	r.t.Helper()
	r.fake.mu.Lock()
	r.fake.pis = append(r.fake.pis, map[string]any{"id": "pi_1", "object": "payment_intent", "status": "requires_payment_method",
		"amount": 500, "currency": "usd", "customer": "cus_123", "created": time.Now().Unix(),
		"metadata":           map[string]string{MetadataPurchaseID: id},
		"last_payment_error": map[string]any{"type": "card_error", "code": "card_declined"}})
	r.fake.mu.Unlock()
	must(r.t, r.a, fsm.CompletePurchase{ID: id, Outcome: fsm.OutcomeProgress, ProviderRef: "pi_1",
		ProviderStatus: "declined (attempt 1/4): card_declined"})
}

// An invoice whose creation stopped at some step for more than a day is
// resumed, not made again: the purchase's invoice and its line are looked up
// first, and the customer gets one invoice with one line.
func TestAnInvoiceRetriedPastTheKeyWindowIsNotMadeTwice(t *testing.T) {
	for _, lost := range []string{"invoice", "line", "finalize", "send"} {
		t.Run("the answer to the "+lost+" step was lost", func(t *testing.T) {
			r := newKeyWindowRig(t, fsm.AutoTopUp{})
			must(t, r.a, fsm.StartPurchase{ID: "inv1", CustomerID: "c1", Credits: 1000, Flow: fsm.FlowInvoice})
			r.fake.lose[lost] = 1
			r.step("inv1", readPurchase(t, r.f, "inv1").CreatedAt.Time().Add(time.Minute))
			if ref := readPurchase(t, r.f, "inv1").ProviderRef; ref != "" {
				t.Fatalf("invoice %s recorded after a lost answer", ref)
			}
			r.fake.forget()
			r.step("inv1", dayLater(r, "inv1"))
			p := readPurchase(t, r.f, "inv1")
			if p.ProviderRef != "in_1" || p.ProviderStatus != "open" {
				t.Fatalf("purchase recorded invoice %q (%s), want in_1 open", p.ProviderRef, p.ProviderStatus)
			}
			if inv, items := r.fake.count("invoices"), r.fake.count("items"); inv != 1 || items != 1 {
				t.Fatalf("%d invoices with %d lines at Stripe, want 1 with 1: the customer is billed twice", inv, items)
			}
			if r.fake.count("sends") == 0 {
				t.Fatal("the invoice was never sent")
			}
		})
	}
}

// An invoice voided at Stripe while the answer that made it was lost is not
// issued again, nor recorded as issued: the purchase fails.
func TestAnInvoiceVoidedWhileItsAnswerWasLostFailsThePurchase(t *testing.T) {
	r := newKeyWindowRig(t, fsm.AutoTopUp{})
	must(t, r.a, fsm.StartPurchase{ID: "inv1", CustomerID: "c1", Credits: 1000, Flow: fsm.FlowInvoice})
	r.fake.lose["send"] = 1
	r.step("inv1", readPurchase(t, r.f, "inv1").CreatedAt.Time().Add(time.Minute))
	r.fake.forget()
	r.fake.mu.Lock()
	r.fake.invoices[0]["status"] = "void"
	r.fake.mu.Unlock()
	r.step("inv1", dayLater(r, "inv1"))
	if p := readPurchase(t, r.f, "inv1"); p.Status != fsm.PurchaseFailed || !strings.Contains(p.FailureReason, "in_1 void") {
		t.Fatalf("purchase %s (%q, ref %q), want failed for the voided in_1", p.Status, p.FailureReason, p.ProviderRef)
	}
	if n := r.fake.count("invoices"); n != 1 {
		t.Fatalf("%d invoices at Stripe, want 1", n)
	}
}

// A self-serve payment whose start stayed unknown past the key window is
// taken up, not started a second time beside it (and it is the one the
// worker then polls or cancels). KeyWindow is an option.
func TestASelfServePaymentStartedPastTheKeyWindowIsStartedOnce(t *testing.T) {
	r := newKeyWindowRig(t, fsm.AutoTopUp{})
	r.extra.KeyWindow = time.Hour
	r.fake.piStatus = "requires_payment_method"
	must(t, r.a, fsm.StartPurchase{ID: "web1", CustomerID: "c1", Credits: 1000, Flow: fsm.FlowSelfServe})
	r.fake.lose["charge"] = 1
	start := readPurchase(t, r.f, "web1").CreatedAt.Time()
	r.step("web1", start.Add(time.Minute))
	r.fake.forget()
	r.step("web1", start.Add(2*time.Hour))
	if p := readPurchase(t, r.f, "web1"); p.ProviderRef != "pi_1" {
		t.Fatalf("purchase recorded payment %q, want the first one, pi_1", p.ProviderRef)
	}
	if n := r.fake.count("pis"); n != 1 {
		t.Fatalf("%d payment intents for one self-serve purchase, want 1", n)
	}
}

// Past the key window the worker lists the customer's payment intents since
// the purchase started and refuses to decide when there are more than 1,000,
// so that "none found" never means "not looked far enough". A payment of the
// purchase that succeeded decides whatever the rest of the list holds: found
// before the bound (here the newest, listed first), it completes the
// purchase, and no second charge is made.
func TestAPaymentThatSucceededIsFoundPastTheListingBound(t *testing.T) {
	r := newKeyWindowRig(t, testAutoTopUp)
	id := burnToAutoTopUp(t, r.a, r.f)
	r.fake.mu.Lock()
	for i := range maxChargeSearch {
		// The customer's other payments since the purchase started
		// (self-serve purchases, say): none of this purchase's.
		r.fake.pis = append(r.fake.pis, map[string]any{"id": fmt.Sprintf("pi_other_%d", i), "object": "payment_intent",
			"status": "succeeded", "amount": 500, "currency": "usd", "customer": "cus_123", "created": time.Now().Unix(),
			"metadata": map[string]string{MetadataPurchaseID: fmt.Sprintf("web-%d", i)}})
	}
	r.fake.mu.Unlock()
	r.fake.lose["charge"] = 1 // the card is charged; the answer is lost
	r.step(id, readPurchase(t, r.f, id).CreatedAt.Time().Add(time.Minute))
	r.fake.forget()
	r.step(id, dayLater(r, id))
	p := readPurchase(t, r.f, id)
	want := fmt.Sprintf("pi_%d", maxChargeSearch+1)
	if p.Status != fsm.PurchaseSucceeded || p.ProviderRef != want {
		t.Fatalf("purchase %s (ref %q) although its payment %s succeeded and was the first listed; want succeeded",
			p.Status, p.ProviderRef, want)
	}
	if n := r.fake.count("pis"); n != maxChargeSearch+1 {
		t.Fatalf("%d payment intents at Stripe, want %d (no second charge)", n, maxChargeSearch+1)
	}
}

// relink points c1 at another Stripe customer, as an operator's
// UpsertCustomer does.
func (r *keyWindowRig) relink(ref string) {
	r.t.Helper()
	var cu fsm.Customer
	if err := r.f.View(func(v *fsm.View) error {
		var err error
		cu, err = v.Customer("c1")
		return err
	}); err != nil {
		r.t.Fatal(err)
	}
	must(r.t, r.a, fsm.UpsertCustomer{ID: cu.ID, Name: cu.Name, BillingRef: ref, PlanID: cu.PlanID, AutoTopUp: cu.AutoTopUp})
}

// A customer linked to another Stripe customer while a request of a
// purchase has an unknown outcome (its answer lost) must not have the
// purchase carried out again at the new one: the first request may have
// charged the old customer's card, or sent it an invoice. The retry goes
// where the first request went, under its key (Stripe would refuse the key
// with another customer), and past the key window the look-up searches
// there; the relink takes effect for the next purchase.
func TestAPurchaseInFlightWhenItsCustomerIsRelinkedIsCarriedOutWhereItStarted(t *testing.T) {
	for _, tc := range []struct {
		name  string
		start func(r *keyWindowRig) string
		lost  string
		check func(t *testing.T, r *keyWindowRig, p fsm.Purchase)
	}{
		{"an automatic charge whose answer was lost", func(r *keyWindowRig) string { return burnToAutoTopUp(r.t, r.a, r.f) },
			"charge", func(t *testing.T, r *keyWindowRig, p fsm.Purchase) {
				if p.Status != fsm.PurchaseSucceeded || p.ProviderRef != "pi_1" || r.fake.count("pis") != 1 {
					t.Fatalf("purchase %s with %q (%s), %d payment intents; want succeeded by pi_1 alone: "+
						"the card of cus_123 was charged", p.Status, p.ProviderRef, p.ProviderStatus, r.fake.count("pis"))
				}
			}},
		{"an invoice whose send was lost", func(r *keyWindowRig) string {
			must(r.t, r.a, fsm.StartPurchase{ID: "inv1", CustomerID: "c1", Credits: 1000, Flow: fsm.FlowInvoice})
			return "inv1"
		}, "send", func(t *testing.T, r *keyWindowRig, p fsm.Purchase) {
			if p.Status != fsm.PurchasePending || p.ProviderRef != "in_1" || r.fake.count("invoices") != 1 {
				t.Fatalf("purchase %s with %q (%s %s), %d invoices; want pending on in_1 alone: cus_123 was sent it",
					p.Status, p.ProviderRef, p.ProviderStatus, p.FailureReason, r.fake.count("invoices"))
			}
		}},
		{"a self-serve payment whose start was lost", func(r *keyWindowRig) string {
			r.fake.piStatus = "requires_payment_method"
			must(r.t, r.a, fsm.StartPurchase{ID: "web1", CustomerID: "c1", Credits: 1000, Flow: fsm.FlowSelfServe})
			return "web1"
		}, "charge", func(t *testing.T, r *keyWindowRig, p fsm.Purchase) {
			if p.Status != fsm.PurchasePending || p.ProviderRef != "pi_1" || r.fake.count("pis") != 1 {
				t.Fatalf("purchase %s with %q (%s %s), %d payment intents; want pending on pi_1 alone",
					p.Status, p.ProviderRef, p.ProviderStatus, p.FailureReason, r.fake.count("pis"))
			}
		}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			r := newKeyWindowRig(t, testAutoTopUp)
			id := tc.start(r)
			start := readPurchase(t, r.f, id).CreatedAt.Time()
			r.fake.lose[tc.lost] = 1
			r.step(id, start.Add(time.Minute))
			r.relink("cus_456")
			r.step(id, start.Add(2*time.Minute))
			if p := readPurchase(t, r.f, id); p.Status == fsm.PurchasePending && p.ProviderRef == "" {
				r.fake.forget()
				r.step(id, dayLater(r, id))
			}
			tc.check(t, r, readPurchase(t, r.f, id))
			r.fake.mu.Lock()
			defer r.fake.mu.Unlock()
			for _, o := range append(append([]map[string]any(nil), r.fake.pis...), r.fake.invoices...) {
				if o["customer"] != "cus_123" {
					t.Fatalf("%s made for %v, want cus_123, where the purchase started", o["id"], o["customer"])
				}
			}
		})
	}
}

// An invoice Stripe refuses to send (the customer has no email address)
// fails the purchase, and is voided: left open, it would stay a receivable
// at Stripe for a purchase creditd failed, and paid (from the customer
// portal, say) it would bring money in for no credits.
func TestAnInvoiceStripeRefusesToSendIsVoidedWhenThePurchaseFails(t *testing.T) {
	r := newKeyWindowRig(t, fsm.AutoTopUp{})
	must(t, r.a, fsm.StartPurchase{ID: "inv1", CustomerID: "c1", Credits: 1000, Flow: fsm.FlowInvoice})
	r.fake.refuse["send"] = "Customer cus_123 has no email address"
	r.step("inv1", readPurchase(t, r.f, "inv1").CreatedAt.Time().Add(time.Minute))
	p := readPurchase(t, r.f, "inv1")
	if p.Status != fsm.PurchaseFailed || !strings.Contains(p.FailureReason, "no email") {
		t.Fatalf("purchase %s (%q), want failed saying why", p.Status, p.FailureReason)
	}
	r.fake.mu.Lock()
	defer r.fake.mu.Unlock()
	if len(r.fake.invoices) != 1 || r.fake.invoices[0]["status"] != "void" {
		t.Fatalf("invoices at Stripe %v, want in_1 voided", r.fake.invoices)
	}
}
