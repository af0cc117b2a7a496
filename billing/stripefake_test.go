package billing

// Connector behaviours that need Stripe to answer in a particular way
// (remembered idempotency keys, particular saved payment methods), played by
// small fake servers: stripe-mock checks shapes but keeps no state.

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"net/http/httptest"
	"sync"
	"testing"
	"time"

	"github.com/creditd/creditd/fsm"
)

// Stripe refuses three-decimal amounts (BHD, JOD, KWD, OMR, TND) that do
// not end in 0, and ISK amounts that are not whole krónur (multiples of 100):
// https://docs.stripe.com/currencies. Amounts are rounded to those steps.
func TestStripeAmountsAreMultiplesOfTheCurrencysStep(t *testing.T) {
	s := newTestStripe(t, "http://127.0.0.1:1")
	for _, tc := range []struct {
		currency string
		micros   int64
		multiple int64
	}{
		{"KWD", 1_234_500, 10}, // 1.2345 KWD: 12345 credits at 0.0001 KWD
		{"BHD", 7_777_000, 10}, // 7.777 BHD
		{"ISK", 12_340_000, 100},
	} {
		p, err := s.paymentParams(PaymentRequest{PurchaseID: "p1", IdempotencyKey: "p1", CustomerRef: "cus_1",
			AmountMicros: tc.micros, Currency: tc.currency})
		if err != nil {
			t.Fatalf("%s: %v", tc.currency, err)
		}
		if *p.Amount%tc.multiple != 0 {
			t.Errorf("%d micros %s sent to Stripe as amount %d, which Stripe refuses (must be a multiple of %d)",
				tc.micros, tc.currency, *p.Amount, tc.multiple)
		}
	}
}

// idemStripe plays Stripe's idempotency-key checks, which stripe-mock (it
// keeps no state) cannot: a key's first request is remembered, a retry with
// the same parameters gets its answer, with others an idempotency_error.
type idemStripe struct {
	mu      sync.Mutex
	pm      string
	bodies  map[string]string // idempotency key → form body of its first request
	results map[string][]byte
}

func (s *idemStripe) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	s.mu.Lock()
	defer s.mu.Unlock()
	w.Header().Set("Content-Type", "application/json")
	switch {
	case r.Method == http.MethodGet && r.URL.Path == "/v1/customers/cus_123":
		_ = json.NewEncoder(w).Encode(map[string]any{"id": "cus_123", "object": "customer",
			"invoice_settings": map[string]any{"default_payment_method": s.pm}})
	case r.Method == http.MethodPost && r.URL.Path == "/v1/payment_intents":
		_ = r.ParseForm()
		body := r.PostForm.Encode()
		key := r.Header.Get("Idempotency-Key")
		if first, seen := s.bodies[key]; seen {
			if first != body {
				writeStripeError(w, http.StatusBadRequest, "idempotency_error", "Keys for idempotent requests can only be used with the same parameters they were first used with.")
				return
			}
			_, _ = w.Write(s.results[key])
			return
		}
		s.bodies[key] = body
		pi, _ := json.Marshal(map[string]any{"id": "pi_1", "object": "payment_intent", "status": "succeeded",
			"amount": 500, "currency": "usd", "payment_method": r.PostForm.Get("payment_method"),
			"metadata": map[string]string{MetadataPurchaseID: r.PostForm.Get("metadata[" + MetadataPurchaseID + "]")}})
		s.results[key] = pi
		// The card is charged; the answer is lost (a 500: outcome unknown).
		// Meanwhile the customer makes another card the default.
		s.pm = "pm_new"
		w.Header().Set("Stripe-Should-Retry", "false")
		writeStripeError(w, http.StatusInternalServerError, "api_error", "internal error")
	case r.Method == http.MethodGet && r.URL.Path == "/v1/payment_intents":
		var data []json.RawMessage
		if r.URL.Query().Get("customer") == "cus_123" {
			for _, pi := range s.results {
				data = append(data, pi)
			}
		}
		_ = json.NewEncoder(w).Encode(map[string]any{"object": "list", "url": r.URL.Path, "has_more": false, "data": data})
	default:
		writeStripeError(w, http.StatusNotFound, "invalid_request_error", "no route "+r.URL.Path)
	}
}

func (s *idemStripe) charged() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return len(s.results)
}

// A charge whose answer was lost is retried with the same key; if the
// customer's default card changed meanwhile, Stripe refuses the retry as a
// key reused with other parameters. The first request charged the card, so
// the purchase must succeed from that payment, not fail.
func TestARetriedChargeRefusedForOtherParametersFindsTheFirstPayment(t *testing.T) {
	fake := &idemStripe{pm: "pm_old", bodies: map[string]string{}, results: map[string][]byte{}}
	srv := httptest.NewServer(fake)
	t.Cleanup(srv.Close)
	prov := newTestStripe(t, srv.URL)
	f, a := newLocalFSM(t)
	seedCatalog(t, a, fsm.GrantOnPayment, testAutoTopUp)
	id := burnToAutoTopUp(t, a, f)
	startWorker(t, WorkerOptions{Provider: prov, Applier: a, State: f, PollInterval: time.Hour})
	// Either the purchase ends, or the worker keeps retrying (which would
	// be fine): stop looking after a few retries.
	eventually(t, "the purchase to end", func() bool { return purchaseStatus(f, id) != fsm.PurchasePending })
	p := readPurchase(t, f, id)
	if p.Status != fsm.PurchaseSucceeded || p.ProviderRef != "pi_1" {
		t.Fatalf("the card was charged (%d payment intent under key %s) but the purchase is %v (ref %q, %q)",
			fake.charged(), id, p.Status, p.ProviderRef, p.FailureReason)
	}
}

// cardGoneStripe charges the card and loses the answer (a 500 after the
// payment intent is made); meanwhile the customer removes the card, so the
// customer has no default payment method and no saved card at the retry. A
// customer that starts with no card (pm "") is never charged.
type cardGoneStripe struct {
	mu      sync.Mutex
	pm      string
	bodies  map[string]string
	results map[string][]byte
	pis     []json.RawMessage
	lists   int
}

func (s *cardGoneStripe) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	s.mu.Lock()
	defer s.mu.Unlock()
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("Stripe-Should-Retry", "false")
	_ = r.ParseForm()
	switch {
	case r.Method == http.MethodGet && r.URL.Path == "/v1/customers/cus_123":
		var pm any
		if s.pm != "" {
			pm = s.pm
		}
		_ = json.NewEncoder(w).Encode(map[string]any{"id": "cus_123", "object": "customer",
			"invoice_settings": map[string]any{"default_payment_method": pm}})
	case r.Method == http.MethodGet && r.URL.Path == "/v1/customers/cus_123/payment_methods":
		data := []any{}
		if s.pm != "" {
			data = append(data, map[string]any{"id": s.pm, "object": "payment_method", "type": "card"})
		}
		_ = json.NewEncoder(w).Encode(map[string]any{"object": "list", "url": r.URL.Path, "has_more": false, "data": data})
	case r.Method == http.MethodPost && r.URL.Path == "/v1/payment_intents":
		key, body := r.Header.Get("Idempotency-Key"), r.PostForm.Encode()
		if first, seen := s.bodies[key]; seen {
			if first != body {
				writeStripeError(w, http.StatusBadRequest, "idempotency_error", "Keys for idempotent requests can only be used with the same parameters they were first used with.")
				return
			}
			_, _ = w.Write(s.results[key])
			return
		}
		s.bodies[key] = body
		pi, _ := json.Marshal(map[string]any{"id": fmt.Sprintf("pi_%d", len(s.pis)+1), "object": "payment_intent",
			"status": "succeeded", "amount": 500, "currency": "usd", "customer": "cus_123", "created": time.Now().Unix(),
			"metadata": map[string]string{MetadataPurchaseID: r.PostForm.Get("metadata[" + MetadataPurchaseID + "]")}})
		s.results[key] = pi
		s.pis = append(s.pis, pi)
		s.pm = "" // the customer removes the card while the answer is lost
		writeStripeError(w, http.StatusInternalServerError, "api_error", "internal error")
	case r.Method == http.MethodGet && r.URL.Path == "/v1/payment_intents":
		s.lists++
		data := []json.RawMessage{}
		for i := len(s.pis) - 1; i >= 0; i-- {
			data = append(data, s.pis[i])
		}
		_ = json.NewEncoder(w).Encode(map[string]any{"object": "list", "url": r.URL.Path, "has_more": false, "data": data})
	default:
		writeStripeError(w, http.StatusNotFound, "invalid_request_error", "no route "+r.URL.Path)
	}
}

// An automatic charge whose answer was lost is retried with the same key a
// few seconds later, well inside Stripe's key window. The customer removed
// the card in between: the retry cannot be sent, and the connector's "no
// payment method" is no answer of Stripe's about the first request, which
// charged the card. The worker looks for the purchase's payments and
// completes the purchase from pi_1, instead of failing it and pausing auto
// top-up while the customer paid. A customer who never had a card, with no
// payment of the purchase to find, still fails.
func TestAChargeWhoseAnswerWasLostIsNotFailedWhenTheCardIsRemovedBeforeItsRetry(t *testing.T) {
	tests := []struct {
		name       string
		pm         string
		wantStatus fsm.PurchaseStatus
		wantRef    string
	}{
		{"the card removed after the first request charged it: its payment completes the purchase",
			"pm_old", fsm.PurchaseSucceeded, "pi_1"},
		{"no card ever, no payment found: the purchase fails for want of a card", "", fsm.PurchaseFailed, ""},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			fake := &cardGoneStripe{pm: tc.pm, bodies: map[string]string{}, results: map[string][]byte{}}
			srv := httptest.NewServer(fake)
			t.Cleanup(srv.Close)
			prov := newTestStripe(t, srv.URL)
			f, a := newLocalFSM(t)
			seedCatalog(t, a, fsm.GrantOnPayment, testAutoTopUp)
			id := burnToAutoTopUp(t, a, f)
			start := readPurchase(t, f, id).CreatedAt.Time()
			step := func(at time.Time) {
				t.Helper()
				w, err := NewWorker(WorkerOptions{Provider: prov, Applier: a, State: f, Logger: testLogger(),
					Now: func() time.Time { return at }})
				if err != nil {
					t.Fatal(err)
				}
				var cu fsm.Customer
				if err := f.View(func(v *fsm.View) error { cu, err = v.Customer("c1"); return err }); err != nil {
					t.Fatal(err)
				}
				ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
				defer cancel()
				w.process(ctx, pendingItem{p: readPurchase(t, f, id), cu: cu})
			}
			step(start.Add(time.Second))
			if tc.pm != "" {
				if p := readPurchase(t, f, id); p.Status != fsm.PurchasePending {
					t.Fatalf("purchase %s after a lost answer, want pending", p.Status)
				}
				step(start.Add(6 * time.Second)) // the worker's retry, 5 s later
			}
			p := readPurchase(t, f, id)
			fake.mu.Lock()
			charged, lists := len(fake.pis), fake.lists
			fake.mu.Unlock()
			if p.Status != tc.wantStatus || p.ProviderRef != tc.wantRef {
				t.Fatalf("purchase %s (ref %q, %q) with %d payment intents at Stripe; want %s with %q",
					p.Status, p.ProviderRef, p.FailureReason, charged, tc.wantStatus, tc.wantRef)
			}
			if lists == 0 {
				t.Fatal("the purchase's payments were not looked for before taking the missing card for final")
			}
		})
	}
}

// pmListStripe answers a customer with no default payment method and a
// bank account and a card saved; stripe-mock's fixtures cannot say this.
type pmListStripe struct {
	mu      sync.Mutex
	charged string
}

func (s *pmListStripe) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	w.Header().Set("Content-Type", "application/json")
	switch {
	case r.Method == http.MethodGet && r.URL.Path == "/v1/customers/cus_123":
		_ = json.NewEncoder(w).Encode(map[string]any{"id": "cus_123", "object": "customer",
			"invoice_settings": map[string]any{"default_payment_method": nil}})
	case r.Method == http.MethodGet && r.URL.Path == "/v1/customers/cus_123/payment_methods":
		bank := map[string]any{"id": "pm_bank", "object": "payment_method", "type": "us_bank_account"}
		card := map[string]any{"id": "pm_card", "object": "payment_method", "type": "card"}
		data := []any{bank, card} // newest first, as Stripe lists them
		if typ := r.URL.Query().Get("type"); typ == "card" {
			data = []any{card}
		}
		_ = json.NewEncoder(w).Encode(map[string]any{"object": "list", "url": r.URL.Path, "has_more": false, "data": data})
	case r.Method == http.MethodPost && r.URL.Path == "/v1/payment_intents":
		_ = r.ParseForm()
		s.mu.Lock()
		s.charged = r.PostForm.Get("payment_method")
		s.mu.Unlock()
		_ = json.NewEncoder(w).Encode(map[string]any{"id": "pi_1", "object": "payment_intent", "status": "succeeded",
			"amount": 500, "currency": "usd"})
	default:
		writeStripeError(w, http.StatusNotFound, "invalid_request_error", "no route "+r.URL.Path)
	}
}

// With no default payment method an automatic top-up charges the first
// saved card, never a bank account (whose debit stays processing for days).
func TestOffSessionChargesFallBackToASavedCardOnly(t *testing.T) {
	fake := &pmListStripe{}
	srv := httptest.NewServer(fake)
	t.Cleanup(srv.Close)
	s := newTestStripe(t, srv.URL)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if _, err := s.ChargeOffSession(ctx, PaymentRequest{PurchaseID: "auto-1", CustomerRef: "cus_123",
		AmountMicros: 5_000_000, Currency: "USD", IdempotencyKey: "auto-1"}); err != nil {
		t.Fatal(err)
	}
	fake.mu.Lock()
	defer fake.mu.Unlock()
	if fake.charged != "pm_card" {
		t.Fatalf("charged payment method %q, want the first saved card pm_card", fake.charged)
	}
}

// customerStripe plays Stripe's customers with its idempotency-key checks:
// the first create's answer is lost (a 500 after the customer is made).
type customerStripe struct {
	mu        sync.Mutex
	bodies    map[string]string // idempotency key → form body of its first create
	customers map[string]map[string]any
	lost      int // answers still to lose
}

func (s *customerStripe) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	s.mu.Lock()
	defer s.mu.Unlock()
	w.Header().Set("Content-Type", "application/json")
	_ = r.ParseForm()
	switch {
	case r.Method == http.MethodPost && r.URL.Path == "/v1/customers":
		key, body := r.Header.Get("Idempotency-Key"), r.PostForm.Encode()
		if first, seen := s.bodies[key]; seen {
			if first != body {
				writeStripeError(w, http.StatusBadRequest, "idempotency_error", "Keys for idempotent requests can only be used with the same parameters they were first used with.")
				return
			}
			_ = json.NewEncoder(w).Encode(s.customers["cus_1"])
			return
		}
		s.bodies[key] = body
		s.customers["cus_1"] = map[string]any{"id": "cus_1", "object": "customer", "name": r.PostForm.Get("name")}
		if s.lost > 0 {
			s.lost--
			w.Header().Set("Stripe-Should-Retry", "false")
			writeStripeError(w, http.StatusInternalServerError, "api_error", "internal error")
			return
		}
		_ = json.NewEncoder(w).Encode(s.customers["cus_1"])
	case r.Method == http.MethodPost && r.URL.Path == "/v1/customers/cus_1":
		c := s.customers["cus_1"]
		if name := r.PostForm.Get("name"); name != "" {
			c["name"] = name
		}
		_ = json.NewEncoder(w).Encode(c)
	default:
		writeStripeError(w, http.StatusNotFound, "invalid_request_error", "no route "+r.URL.Path)
	}
}

// A customer renamed between a create whose answer was lost and its retry
// is still created once, under its key, and ends with the new name.
func TestACustomerRenamedBeforeTheCreatesRetryIsCreatedOnce(t *testing.T) {
	fake := &customerStripe{bodies: map[string]string{}, customers: map[string]map[string]any{}, lost: 1}
	srv := httptest.NewServer(fake)
	t.Cleanup(srv.Close)
	s := newTestStripe(t, srv.URL)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if _, err := s.EnsureCustomer(ctx, CustomerInfo{ID: "acme", Name: "Acme"}); err == nil {
		t.Fatal("the first create's answer was lost, yet EnsureCustomer succeeded")
	}
	ref, err := s.EnsureCustomer(ctx, CustomerInfo{ID: "acme", Name: "Acme Inc."})
	if err != nil || ref != "cus_1" {
		t.Fatalf("retry after a rename = %q, %v; want cus_1", ref, err)
	}
	fake.mu.Lock()
	defer fake.mu.Unlock()
	if len(fake.customers) != 1 || fake.customers["cus_1"]["name"] != "Acme Inc." {
		t.Fatalf("customers at Stripe: %v; want cus_1 named Acme Inc.", fake.customers)
	}
}

// writeStripeError answers as Stripe answers an error.
func writeStripeError(w http.ResponseWriter, status int, typ, msg string) {
	w.WriteHeader(status)
	_ = json.NewEncoder(w).Encode(map[string]any{"error": map[string]any{"type": typ, "message": msg}})
}
