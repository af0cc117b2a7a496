package billing

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"sync"
	"testing"
	"time"
)

// fakeProvider records every call and behaves like Stripe's idempotency:
// a key seen before returns its first result without a second charge.
type fakeProvider struct {
	mu       sync.Mutex
	calls    []fakeCall
	byKey    map[string]Payment // charges and payments made, by idempotency key
	invoices map[string]Invoice // by idempotency key
	byRef    map[string]Payment // current state of payments, by ref
	invByRef map[string]Invoice
	nextRef  int
	charges  int // charges made (a repeated key makes none)
	// declineNext declines the next n new charges.
	declineNext int
	// processNext leaves the next n new charges processing.
	processNext int
	// timeoutAfterCharge makes the next n charge calls do the charge and
	// then report a timeout, as a lost response would.
	timeoutAfterCharge int
	// afterCharge runs after a charge is made, before the call returns.
	afterCharge func(key string)
}

type fakeCall struct{ method, key string }

func newFakeProvider() *fakeProvider {
	return &fakeProvider{byKey: map[string]Payment{}, invoices: map[string]Invoice{},
		byRef: map[string]Payment{}, invByRef: map[string]Invoice{}}
}

var errFakeTimeout = errors.New("fake provider: timeout (the charge was made)")

func (f *fakeProvider) Name() string { return "fake" }

func (f *fakeProvider) EnsureCustomer(_ context.Context, c CustomerInfo) (string, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.calls = append(f.calls, fakeCall{"customer", c.ID})
	if c.ProviderRef != "" {
		return c.ProviderRef, nil
	}
	return "cus_" + c.ID, nil
}

func (f *fakeProvider) ChargeOffSession(ctx context.Context, req PaymentRequest) (Payment, error) {
	f.mu.Lock()
	f.calls = append(f.calls, fakeCall{"charge", req.IdempotencyKey})
	p, seen := f.byKey[req.IdempotencyKey]
	if !seen {
		f.nextRef++
		p = Payment{Ref: fmt.Sprintf("pi_%d", f.nextRef), PurchaseID: req.PurchaseID, Status: PaymentSucceeded,
			ProviderStatus: "succeeded", AmountMinor: req.AmountMicros / 10_000, Currency: req.Currency}
		switch {
		case f.declineNext > 0:
			f.declineNext--
			p.Status, p.ProviderStatus, p.FailureReason, p.Retryable = PaymentFailed, "requires_payment_method", "card_declined", true
		case f.processNext > 0:
			f.processNext--
			p.Status, p.ProviderStatus = PaymentPending, "processing"
		}
		f.byKey[req.IdempotencyKey] = p
		f.byRef[p.Ref] = p
		f.charges++
	}
	timeout := f.timeoutAfterCharge > 0
	if timeout {
		f.timeoutAfterCharge--
	}
	hook := f.afterCharge
	f.mu.Unlock()
	if hook != nil {
		hook(req.IdempotencyKey)
	}
	if timeout {
		return Payment{}, errFakeTimeout
	}
	return p, ctx.Err()
}

func (f *fakeProvider) StartOnSession(_ context.Context, req PaymentRequest) (Payment, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.calls = append(f.calls, fakeCall{"start", req.IdempotencyKey})
	p, seen := f.byKey[req.IdempotencyKey]
	if !seen {
		f.nextRef++
		p = Payment{Ref: fmt.Sprintf("pi_%d", f.nextRef), PurchaseID: req.PurchaseID, Status: PaymentPending,
			ProviderStatus: "requires_payment_method", ClientSecret: fmt.Sprintf("pi_%d_secret", f.nextRef)}
		f.byKey[req.IdempotencyKey] = p
		f.byRef[p.Ref] = p
	}
	return p, nil
}

func (f *fakeProvider) CreateInvoice(_ context.Context, req InvoiceRequest) (Invoice, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.calls = append(f.calls, fakeCall{"invoice", req.IdempotencyKey})
	inv, seen := f.invoices[req.IdempotencyKey]
	if !seen {
		f.nextRef++
		inv = Invoice{Ref: fmt.Sprintf("in_%d", f.nextRef), PurchaseID: req.PurchaseID, Status: InvoiceOpen, ProviderStatus: "open"}
		f.invoices[req.IdempotencyKey] = inv
		f.invByRef[inv.Ref] = inv
	}
	return inv, nil
}

// FindPayments lists the purchase's payments, newest (highest ref number)
// first; the fake never forgets a key, so the worker's look-up finds only
// what its own keys made.
func (f *fakeProvider) FindPayments(_ context.Context, req PaymentRequest) ([]Payment, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.calls = append(f.calls, fakeCall{"find", req.PurchaseID})
	var out []Payment
	for i := f.nextRef; i > 0; i-- {
		if p, ok := f.byRef[fmt.Sprintf("pi_%d", i)]; ok && p.PurchaseID == req.PurchaseID {
			out = append(out, p)
		}
	}
	return out, nil
}

func (f *fakeProvider) LookupPayment(_ context.Context, ref string) (Payment, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.calls = append(f.calls, fakeCall{"lookup", ref})
	p, ok := f.byRef[ref]
	if !ok {
		return Payment{}, fmt.Errorf("no payment %s: %w", ref, ErrPermanent)
	}
	return p, nil
}

func (f *fakeProvider) CancelPayment(_ context.Context, ref string) (Payment, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.calls = append(f.calls, fakeCall{"cancel", ref})
	p, ok := f.byRef[ref]
	if !ok {
		return Payment{}, fmt.Errorf("no payment %s: %w", ref, ErrPermanent)
	}
	if p.Status != PaymentSucceeded {
		p.Status, p.ProviderStatus = PaymentCanceled, "canceled"
		f.byRef[ref] = p
	}
	return p, nil
}

func (f *fakeProvider) LookupInvoice(_ context.Context, ref string) (Invoice, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.calls = append(f.calls, fakeCall{"lookup-invoice", ref})
	inv, ok := f.invByRef[ref]
	if !ok {
		return Invoice{}, fmt.Errorf("no invoice %s: %w", ref, ErrPermanent)
	}
	return inv, nil
}

func (f *fakeProvider) Refunds(context.Context, string) ([]Refund, error) { return nil, nil }

func (f *fakeProvider) Disputes(context.Context, string) ([]Dispute, error) { return nil, nil }

func (f *fakeProvider) LookupDispute(_ context.Context, ref string) (Dispute, error) {
	return Dispute{}, fmt.Errorf("no dispute %s: %w", ref, ErrPermanent)
}

func (f *fakeProvider) ParseWebhook([]byte, http.Header) (Event, error) {
	return Event{}, ErrBadSignature
}

// setPayment changes a payment's state at the "provider" (the customer paid).
func (f *fakeProvider) setPayment(ref string, status PaymentStatus, word string) {
	f.mu.Lock()
	defer f.mu.Unlock()
	p := f.byRef[ref]
	p.Status, p.ProviderStatus = status, word
	p.Retryable = status == PaymentFailed
	f.byRef[ref] = p
}

func (f *fakeProvider) setInvoice(ref string, status InvoiceStatus) {
	f.mu.Lock()
	defer f.mu.Unlock()
	inv := f.invByRef[ref]
	inv.Status, inv.ProviderStatus = status, status.String()
	f.invByRef[ref] = inv
}

// chargeKeys lists the keys of charge calls, in order, and how many distinct
// charges were made.
func (f *fakeProvider) chargeKeys() (keys []string, distinct int) {
	f.mu.Lock()
	defer f.mu.Unlock()
	for _, c := range f.calls {
		if c.method == "charge" {
			keys = append(keys, c.key)
		}
	}
	return keys, f.charges
}

// eventually waits for cond, checking it after each short pause; it fails
// the test after a generous bound meant only to stop a hung test.
func eventually(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(60 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(10 * time.Millisecond)
	}
}
