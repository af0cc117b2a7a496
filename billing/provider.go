package billing

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"sort"
	"time"
)

// MetadataPurchaseID is the metadata key that carries the creditd purchase id
// on every object a connector creates (payment intents, invoices, invoice
// items), so that webhooks can be mapped back to the purchase.
const MetadataPurchaseID = "creditd_purchase_id"

// MetadataCustomerID carries the creditd customer id on provider customers.
const MetadataCustomerID = "creditd_customer_id"

// Provider is a billing system creditd sells credits through. Every method
// that moves money takes an idempotency key derived from the purchase id, so
// calling it again after a timeout or a leader change returns the first
// result instead of charging again.
type Provider interface {
	// Name is the connector's registry name.
	Name() string
	// EnsureCustomer returns the provider's id for the customer, creating
	// the customer when c.ProviderRef is empty.
	EnsureCustomer(ctx context.Context, c CustomerInfo) (string, error)
	// ChargeOffSession charges the customer's saved payment method without
	// the customer present. A decline is a Payment with StatusFailed, not an
	// error; an error means the outcome is unknown and the call may be
	// retried with the same key.
	ChargeOffSession(ctx context.Context, req PaymentRequest) (Payment, error)
	// StartOnSession starts a payment the customer completes in the caller's
	// front end (Payment.ClientSecret or Payment.CheckoutURL).
	StartOnSession(ctx context.Context, req PaymentRequest) (Payment, error)
	// CreateInvoice creates and finalizes an invoice with one line for the
	// credits; keys for each step are derived from req.IdempotencyKey.
	// With req.Resume it first looks for what earlier requests made and
	// makes only what is missing.
	CreateInvoice(ctx context.Context, req InvoiceRequest) (Invoice, error)
	// FindPayments lists the payments the provider holds for req.PurchaseID
	// at req.CustomerRef, created since req.StartedAt, newest first. The
	// worker asks before it charges again under a key the provider may
	// have forgotten. The list stops at the first payment of the purchase
	// that succeeded, which decides whatever older ones are; otherwise a
	// list that could not be read to its end is an error, never a shorter
	// list: "none" must mean none.
	FindPayments(ctx context.Context, req PaymentRequest) ([]Payment, error)
	// LookupPayment returns a payment's current state.
	LookupPayment(ctx context.Context, ref string) (Payment, error)
	// CancelPayment cancels an on-session payment the customer abandoned,
	// so it can no longer succeed; it returns the payment's state after.
	CancelPayment(ctx context.Context, ref string) (Payment, error)
	// LookupInvoice returns an invoice's current state.
	LookupInvoice(ctx context.Context, ref string) (Invoice, error)
	// Refunds lists the refunds of a charge (a provider-side payment
	// attempt), for a refund event that does not carry them.
	Refunds(ctx context.Context, chargeRef string) ([]Refund, error)
	// LookupDispute returns a dispute as it stands now: dispute events
	// come in any order, so each is acted on from the current state, not
	// from the snapshot it carries.
	LookupDispute(ctx context.Context, ref string) (Dispute, error)
	// Disputes lists a charge's disputes as they stand now. A dispute
	// whose share found nothing to revoke (the purchase's credits burned)
	// leaves no ledger entry, yet its money is with the card holder: the
	// charge's refunds must count it all the same.
	Disputes(ctx context.Context, chargeRef string) ([]Dispute, error)
	// ParseWebhook verifies a webhook's signature (with a tolerance window
	// against replays of old payloads) and parses it into a neutral event.
	// A verification failure matches ErrBadSignature.
	ParseWebhook(payload []byte, header http.Header) (Event, error)
}

// ErrBadSignature is returned by ParseWebhook for a payload whose signature
// is missing, wrong or outside the tolerance window.
var ErrBadSignature = errors.New("webhook signature not valid")

// ErrOperatorAction is returned by connectors that cannot carry out a
// purchase themselves (manual): an operator completes it.
var ErrOperatorAction = errors.New("purchase needs an operator")

// ErrPermanent marks a provider error that retrying cannot fix (a malformed
// request, a missing customer); the worker fails the purchase instead of
// retrying.
var ErrPermanent = errors.New("permanent provider error")

// CustomerInfo identifies a creditd customer to a provider.
type CustomerInfo struct {
	ID          string // creditd customer id
	Name        string
	ProviderRef string // the provider's id, if known
}

// PaymentRequest asks for a payment of a purchase.
type PaymentRequest struct {
	PurchaseID     string
	CustomerRef    string // the provider's customer id
	AmountMicros   int64  // money micros (fsm.MoneyScale)
	Currency       string // ISO 4217, upper case
	Description    string
	IdempotencyKey string
	// StartedAt is when the purchase was started (its log time): no
	// payment of it is older, which bounds the look-ups for one.
	StartedAt time.Time
}

// InvoiceRequest asks for an invoice with one line for a purchase's credits.
type InvoiceRequest struct {
	PurchaseID     string
	CustomerRef    string
	AmountMicros   int64
	Currency       string
	Description    string // the line's text, e.g. "1000 AI credits"
	DaysUntilDue   int64
	IdempotencyKey string
	// StartedAt is when the purchase was started (its log time): no
	// invoice of it is older.
	StartedAt time.Time
	// Resume says the provider may have forgotten the keys of earlier
	// requests for this invoice (the purchase is older than the worker's
	// KeyWindow): the invoice and line they made are looked up and reused,
	// and a step is made only if its result is missing.
	Resume bool
}

// PaymentStatus is a payment's state in provider-neutral terms.
type PaymentStatus uint8

const (
	// PaymentPending: no decision yet (processing, waiting for the customer).
	PaymentPending PaymentStatus = iota
	// PaymentSucceeded: the money is in.
	PaymentSucceeded
	// PaymentFailed: this attempt failed; Payment.Retryable says whether a
	// new attempt may succeed.
	PaymentFailed
	// PaymentCanceled: the payment will never complete.
	PaymentCanceled
)

func (s PaymentStatus) String() string {
	switch s {
	case PaymentPending:
		return "pending"
	case PaymentSucceeded:
		return "succeeded"
	case PaymentFailed:
		return "failed"
	case PaymentCanceled:
		return "canceled"
	}
	return fmt.Sprintf("PaymentStatus(%d)", uint8(s))
}

// Payment is the state of one payment at the provider.
type Payment struct {
	Ref            string // payment intent id
	PurchaseID     string // from the provider's metadata, if present
	Status         PaymentStatus
	ProviderStatus string // the provider's own word for it
	FailureReason  string
	// Retryable is set on a failed off-session charge that a later attempt
	// may turn (a decline), and clear when no attempt can (no saved payment
	// method).
	Retryable bool
	// NotSent is set on a final answer the provider never gave: the
	// connector answered for it without sending the request (no saved
	// payment method to charge). An earlier request under the same key may
	// have reached the provider all the same.
	NotSent      bool
	ClientSecret string // on-session: for the front end's payment form
	CheckoutURL  string // on-session: a hosted page, where the provider has one
	AmountMinor  int64
	Currency     string
	// InvoiceRef is the invoice the payment paid, when the connector looked
	// it up (LookupPayment of a payment without a purchase id of its own).
	InvoiceRef string
}

// InvoiceStatus is an invoice's state in provider-neutral terms.
type InvoiceStatus uint8

const (
	InvoiceDraft InvoiceStatus = iota
	InvoiceOpen                // finalized, not yet paid
	InvoicePaid
	InvoiceVoid
	InvoiceUncollectible
)

func (s InvoiceStatus) String() string {
	switch s {
	case InvoiceDraft:
		return "draft"
	case InvoiceOpen:
		return "open"
	case InvoicePaid:
		return "paid"
	case InvoiceVoid:
		return "void"
	case InvoiceUncollectible:
		return "uncollectible"
	}
	return fmt.Sprintf("InvoiceStatus(%d)", uint8(s))
}

// Invoice is the state of one invoice at the provider.
type Invoice struct {
	Ref            string
	PurchaseID     string
	Status         InvoiceStatus
	ProviderStatus string
	HostedURL      string
	AmountMinor    int64
	Currency       string
}

// Refund is one refund of a charge.
type Refund struct {
	ID          string
	AmountMinor int64
	Currency    string
	// Counts is false for refunds that failed or were canceled: they give
	// no money back and revoke nothing, and the credits their revocation
	// took, if it was made while they still counted, are given back.
	Counts  bool
	Created int64 // provider time, seconds; orders refunds of one charge
}

// Dispute is a card holder's dispute of a charge (a chargeback, or an
// inquiry that moves no money).
type Dispute struct {
	ID             string
	ChargeRef      string
	PaymentRef     string // the charge's payment intent
	AmountMinor    int64  // the disputed amount, in the charge's currency
	Currency       string
	ProviderStatus string
	// HoldsFunds is set while the disputed money is with the card holder:
	// withdrawn from the merchant and not given back (a dispute lost, or
	// not yet decided).
	HoldsFunds bool
	// Reinstated is set once withdrawn money came back (a dispute won).
	Reinstated bool
	Created    int64 // provider time, seconds
}

// EventKind is a webhook event in provider-neutral terms.
type EventKind uint8

const (
	EventIgnored EventKind = iota // a type billing does not act on
	EventPaymentSucceeded
	EventPaymentFailed
	EventInvoiceFinalized
	EventInvoicePaid
	EventInvoiceVoided
	EventInvoiceUncollectible
	EventChargeRefunded
	// EventRefundUpdated: one refund changed (refund.failed, refund.updated,
	// charge.refund.updated); Event.Refunds holds it.
	EventRefundUpdated
	// EventDisputeChanged: money of a dispute moved or it closed
	// (charge.dispute.funds_withdrawn, .funds_reinstated, .closed);
	// Event.ObjectRef is the dispute.
	EventDisputeChanged
)

func (k EventKind) String() string {
	switch k {
	case EventIgnored:
		return "ignored"
	case EventPaymentSucceeded:
		return "payment succeeded"
	case EventPaymentFailed:
		return "payment failed"
	case EventInvoiceFinalized:
		return "invoice finalized"
	case EventInvoicePaid:
		return "invoice paid"
	case EventInvoiceVoided:
		return "invoice voided"
	case EventInvoiceUncollectible:
		return "invoice uncollectible"
	case EventChargeRefunded:
		return "charge refunded"
	case EventRefundUpdated:
		return "refund updated"
	case EventDisputeChanged:
		return "dispute changed"
	}
	return fmt.Sprintf("EventKind(%d)", uint8(k))
}

// Event is a verified webhook event.
type Event struct {
	ID             string // the provider's event id: the replay key
	Type           string // the provider's event type
	Kind           EventKind
	PurchaseID     string // from metadata; may be empty for refunds and disputes
	ObjectRef      string // payment intent, invoice, charge or dispute id
	PaymentRef     string // for refunds and disputes: the charge's payment intent
	ProviderStatus string
	FailureReason  string
	// Refund events: the charge's amounts and, when the payload carries
	// them, its refunds.
	AmountMinor         int64
	AmountRefundedMinor int64
	Currency            string
	Refunds             []Refund
	RefundsComplete     bool // Refunds lists every refund of the charge
}

// Config is what connectors are built from. Secrets are read through Getenv
// and ReadFile so that tests and the process wire them alike.
type Config struct {
	// Getenv reads the environment (os.Getenv in production).
	Getenv func(string) string
	// ReadFile reads a secret file; nil reads at most a byte more than a
	// secret may have (production).
	ReadFile func(string) ([]byte, error)
	// StripeURL overrides the Stripe API's base URL (stripe-mock in tests);
	// CREDITD_STRIPE_API_URL sets it too.
	StripeURL string
	// HTTPClient is used for provider calls; nil = a client with a 30 s
	// timeout.
	HTTPClient *http.Client
	// WebhookTolerance bounds the age of a signed webhook; 0 = 5 minutes.
	WebhookTolerance time.Duration
	Logger           *slog.Logger
}

// Constructor builds a connector from its configuration.
type Constructor func(Config) (Provider, error)

// Connectors lists the connectors by registry name. It builds a new map on
// each call, so nothing global can be changed by a caller.
func Connectors() map[string]Constructor {
	return map[string]Constructor{
		"stripe": func(c Config) (Provider, error) { return NewStripeFromConfig(c) },
		"manual": func(Config) (Provider, error) { return NewManual(), nil },
	}
}

// ConnectorNames lists the registry names in order, for flag help.
func ConnectorNames() []string {
	m := Connectors()
	names := make([]string, 0, len(m))
	for n := range m {
		names = append(names, n)
	}
	sort.Strings(names)
	return names
}

// Open builds the connector registered under name.
func Open(name string, cfg Config) (Provider, error) {
	ctor, ok := Connectors()[name]
	if !ok {
		return nil, fmt.Errorf("billing: unknown connector %q (known: %v)", name, ConnectorNames())
	}
	p, err := ctor(cfg)
	if err != nil {
		return nil, fmt.Errorf("billing: open connector %q: %w", name, err)
	}
	return p, nil
}
