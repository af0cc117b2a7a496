package billing

import (
	"context"
	"fmt"
	"net/http"
)

// Manual is the connector for deals paid outside any provider: it moves no
// money and receives no webhooks. Purchases stay pending until an operator
// completes them (CompletePurchase through the API).
type Manual struct{}

// NewManual returns the manual connector.
func NewManual() *Manual { return &Manual{} }

func (*Manual) Name() string { return "manual" }

// EnsureCustomer keeps whatever reference the operator set; there is no
// provider to create a customer at.
func (*Manual) EnsureCustomer(_ context.Context, c CustomerInfo) (string, error) {
	return c.ProviderRef, nil
}

func (*Manual) ChargeOffSession(context.Context, PaymentRequest) (Payment, error) {
	return Payment{}, ErrOperatorAction
}

func (*Manual) StartOnSession(context.Context, PaymentRequest) (Payment, error) {
	return Payment{}, ErrOperatorAction
}

func (*Manual) CreateInvoice(context.Context, InvoiceRequest) (Invoice, error) {
	return Invoice{}, ErrOperatorAction
}

func (*Manual) FindPayments(_ context.Context, req PaymentRequest) ([]Payment, error) {
	return nil, fmt.Errorf("find payments of purchase %q: %w", req.PurchaseID, ErrOperatorAction)
}

func (*Manual) LookupPayment(_ context.Context, ref string) (Payment, error) {
	return Payment{}, fmt.Errorf("look up payment %q: %w", ref, ErrOperatorAction)
}

func (*Manual) CancelPayment(_ context.Context, ref string) (Payment, error) {
	return Payment{}, fmt.Errorf("cancel payment %q: %w", ref, ErrOperatorAction)
}

func (*Manual) LookupInvoice(_ context.Context, ref string) (Invoice, error) {
	return Invoice{}, fmt.Errorf("look up invoice %q: %w", ref, ErrOperatorAction)
}

func (*Manual) Refunds(_ context.Context, chargeRef string) ([]Refund, error) {
	return nil, fmt.Errorf("list refunds of %q: %w", chargeRef, ErrOperatorAction)
}

func (*Manual) LookupDispute(_ context.Context, ref string) (Dispute, error) {
	return Dispute{}, fmt.Errorf("look up dispute %q: %w", ref, ErrOperatorAction)
}

func (*Manual) Disputes(_ context.Context, chargeRef string) ([]Dispute, error) {
	return nil, fmt.Errorf("list disputes of %q: %w", chargeRef, ErrOperatorAction)
}

// ParseWebhook rejects everything: the manual connector has no signing
// secret, so no payload can be trusted.
func (*Manual) ParseWebhook([]byte, http.Header) (Event, error) {
	return Event{}, fmt.Errorf("manual connector receives no webhooks: %w", ErrBadSignature)
}
