package billing

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"net/url"
	"strings"
	"time"

	"github.com/stripe/stripe-go/v82"
	"github.com/stripe/stripe-go/v82/webhook"
)

// Environment variables the stripe connector reads. Each secret may instead
// be given as a file path in NAME_FILE.
const (
	EnvStripeSecretKey     = "CREDITD_STRIPE_SECRET_KEY"
	EnvStripeWebhookSecret = "CREDITD_STRIPE_WEBHOOK_SECRET"
	EnvStripeAPIURL        = "CREDITD_STRIPE_API_URL"
)

// Limits of the stripe connector.
const (
	// defaultStripeHTTPTimeout bounds one HTTP call when the caller's
	// context has no earlier deadline.
	defaultStripeHTTPTimeout = 30 * time.Second
	// maxRefundsListed bounds the refunds read for one charge.
	maxRefundsListed = 100
	// maxDisputesListed bounds the disputes read for one charge (Stripe
	// opens one per charge; inquiries and re-opened ones are few).
	maxDisputesListed = 10
	// maxStripeAmountMinor is Stripe's largest amount (eight digits).
	maxStripeAmountMinor = 99_999_999
	// defaultDaysUntilDue is the payment term of invoices.
	defaultDaysUntilDue = 30
)

// Stripe is the connector to Stripe through stripe-go's client.
type Stripe struct {
	client           *stripe.Client
	webhookSecret    Secret
	webhookTolerance time.Duration
}

// StripeOptions configure a Stripe connector built directly (tests);
// NewStripeFromConfig reads the same from the environment.
type StripeOptions struct {
	SecretKey        Secret
	WebhookSecret    Secret
	URL              string // API base URL; "" = Stripe's
	HTTPClient       *http.Client
	WebhookTolerance time.Duration
}

// NewStripeFromConfig builds the connector from CREDITD_STRIPE_SECRET_KEY,
// CREDITD_STRIPE_WEBHOOK_SECRET (or their _FILE forms) and the API URL.
func NewStripeFromConfig(cfg Config) (*Stripe, error) {
	key, err := LoadSecret(cfg, EnvStripeSecretKey)
	if err != nil {
		return nil, err
	}
	if key.Empty() {
		return nil, fmt.Errorf("%s (or %s_FILE) is not set", EnvStripeSecretKey, EnvStripeSecretKey)
	}
	whsec, err := LoadSecret(cfg, EnvStripeWebhookSecret)
	if err != nil {
		return nil, err
	}
	if whsec.Empty() {
		return nil, fmt.Errorf("%s (or %s_FILE) is not set: webhooks could not be verified", EnvStripeWebhookSecret, EnvStripeWebhookSecret)
	}
	u := cfg.StripeURL
	if u == "" && cfg.Getenv != nil {
		u = cfg.Getenv(EnvStripeAPIURL)
	}
	return NewStripe(StripeOptions{SecretKey: key, WebhookSecret: whsec, URL: u,
		HTTPClient: cfg.HTTPClient, WebhookTolerance: cfg.WebhookTolerance})
}

// NewStripe builds the connector.
func NewStripe(o StripeOptions) (*Stripe, error) {
	if o.SecretKey.Empty() {
		return nil, errors.New("stripe: secret key is empty")
	}
	if o.WebhookSecret.Empty() {
		return nil, errors.New("stripe: webhook secret is empty")
	}
	if o.WebhookTolerance < 0 {
		return nil, fmt.Errorf("stripe: webhook tolerance %v is negative", o.WebhookTolerance)
	}
	if o.WebhookTolerance == 0 {
		o.WebhookTolerance = webhook.DefaultTolerance
	}
	hc := o.HTTPClient
	if hc == nil {
		hc = &http.Client{Timeout: defaultStripeHTTPTimeout}
	}
	bc := &stripe.BackendConfig{
		HTTPClient: hc,
		// Our worker retries with the same idempotency key; one quick
		// retry in the client covers a dropped connection.
		MaxNetworkRetries: stripe.Int64(1),
		// stripe-go's own logging is off: errors come back to the caller,
		// which logs them with context and without secrets.
		LeveledLogger: &stripe.LeveledLogger{Level: stripe.LevelNull},
	}
	if o.URL != "" {
		pu, err := url.Parse(o.URL)
		if err != nil || (pu.Scheme != "http" && pu.Scheme != "https") || pu.Host == "" {
			return nil, fmt.Errorf("stripe: API URL %q is not an http(s) URL", o.URL)
		}
		bc.URL = stripe.String(strings.TrimRight(o.URL, "/"))
	}
	client := stripe.NewClient(o.SecretKey.Reveal(), stripe.WithBackends(stripe.NewBackendsWithConfig(bc)))
	return &Stripe{client: client, webhookSecret: o.WebhookSecret, webhookTolerance: o.WebhookTolerance}, nil
}

func (*Stripe) Name() string { return "stripe" }

// EnsureCustomer creates the Stripe customer for c unless it has one. The
// idempotency key is derived from the creditd customer id, so two leaders
// racing (or a retry) create one customer.
func (s *Stripe) EnsureCustomer(ctx context.Context, c CustomerInfo) (string, error) {
	if c.ProviderRef != "" {
		return c.ProviderRef, nil
	}
	if c.ID == "" {
		return "", fmt.Errorf("stripe: ensure customer: id is empty: %w", ErrPermanent)
	}
	// The keyed create carries only what never changes: a retry after a
	// lost answer must send the same parameters, and the customer may be
	// renamed in between. The name follows as an update, which is safe to
	// repeat.
	p := &stripe.CustomerCreateParams{Metadata: map[string]string{MetadataCustomerID: c.ID}}
	p.SetIdempotencyKey("creditd-customer:" + c.ID)
	cust, err := s.client.V1Customers.Create(ctx, p)
	if err != nil {
		return "", fmt.Errorf("stripe: create customer for %s: %w", c.ID, classify(err))
	}
	if c.Name != "" && cust.Name != c.Name {
		if _, err := s.client.V1Customers.Update(ctx, cust.ID, &stripe.CustomerUpdateParams{Name: stripe.String(c.Name)}); err != nil {
			return "", fmt.Errorf("stripe: name customer %s of %s: %w", cust.ID, c.ID, classify(err))
		}
	}
	return cust.ID, nil
}

// defaultPaymentMethod finds the payment method to charge off-session: the
// customer's invoice default, else the first saved card.
func (s *Stripe) defaultPaymentMethod(ctx context.Context, customerRef string) (string, error) {
	cust, err := s.client.V1Customers.Retrieve(ctx, customerRef, nil)
	if err != nil {
		return "", fmt.Errorf("stripe: retrieve customer %s: %w", customerRef, classify(err))
	}
	if cust.InvoiceSettings != nil && cust.InvoiceSettings.DefaultPaymentMethod != nil &&
		cust.InvoiceSettings.DefaultPaymentMethod.ID != "" {
		return cust.InvoiceSettings.DefaultPaymentMethod.ID, nil
	}
	// Cards only: a bank debit charged off-session stays processing for days.
	lp := &stripe.CustomerListPaymentMethodsParams{Customer: stripe.String(customerRef), Type: stripe.String("card")}
	lp.Limit = stripe.Int64(1)
	for pm, err := range s.client.V1Customers.ListPaymentMethods(ctx, lp) {
		if err != nil {
			return "", fmt.Errorf("stripe: list payment methods of %s: %w", customerRef, classify(err))
		}
		return pm.ID, nil
	}
	return "", nil
}

func (s *Stripe) paymentParams(req PaymentRequest) (*stripe.PaymentIntentCreateParams, error) {
	if req.PurchaseID == "" || req.IdempotencyKey == "" {
		return nil, fmt.Errorf("stripe: purchase id and idempotency key are required: %w", ErrPermanent)
	}
	if req.CustomerRef == "" {
		return nil, fmt.Errorf("stripe: purchase %s: customer has no Stripe id: %w", req.PurchaseID, ErrPermanent)
	}
	amount, err := MicrosToMinor(req.AmountMicros, req.Currency)
	if err != nil || amount <= 0 || amount > maxStripeAmountMinor {
		return nil, fmt.Errorf("stripe: purchase %s: amount %d micros %s is not chargeable: %w",
			req.PurchaseID, req.AmountMicros, req.Currency, ErrPermanent)
	}
	p := &stripe.PaymentIntentCreateParams{
		Amount:   stripe.Int64(amount),
		Currency: stripe.String(strings.ToLower(req.Currency)),
		Customer: stripe.String(req.CustomerRef),
		Metadata: map[string]string{MetadataPurchaseID: req.PurchaseID},
	}
	if req.Description != "" {
		p.Description = stripe.String(req.Description)
	}
	p.SetIdempotencyKey(req.IdempotencyKey)
	return p, nil
}

// ChargeOffSession creates and confirms a PaymentIntent on the customer's
// saved payment method with off_session set.
func (s *Stripe) ChargeOffSession(ctx context.Context, req PaymentRequest) (Payment, error) {
	p, err := s.paymentParams(req)
	if err != nil {
		return Payment{}, err
	}
	pm, err := s.defaultPaymentMethod(ctx, req.CustomerRef)
	if err != nil {
		return Payment{}, err
	}
	if pm == "" {
		// Nothing is sent, so Stripe does not answer for the key: a request
		// sent under it before the card was removed may have charged it.
		return Payment{PurchaseID: req.PurchaseID, Status: PaymentFailed, ProviderStatus: "no_payment_method",
			FailureReason: "customer has no saved payment method", Retryable: false, NotSent: true}, nil
	}
	p.PaymentMethod = stripe.String(pm)
	p.OffSession = stripe.Bool(true)
	p.Confirm = stripe.Bool(true)
	pi, err := s.client.V1PaymentIntents.Create(ctx, p)
	if err != nil {
		var se *stripe.Error
		if errors.As(err, &se) && se.Type == stripe.ErrorTypeCard {
			// A decline: the outcome is known.
			pay := Payment{PurchaseID: req.PurchaseID, Status: PaymentFailed, ProviderStatus: string(se.Code),
				FailureReason: declineReason(se), Retryable: se.Code != stripe.ErrorCodeAuthenticationRequired}
			if se.PaymentIntent != nil {
				pay.Ref = se.PaymentIntent.ID
			}
			return pay, nil
		}
		if errors.As(err, &se) && se.Type == stripe.ErrorTypeIdempotency && se.HTTPStatusCode != http.StatusConflict {
			// The key was sent before with other parameters: a retry after a
			// lost answer, with the customer's default card changed since.
			// The first request reached Stripe and may have charged the
			// card, so its payment decides, not this refusal.
			return s.findCharge(ctx, req)
		}
		return Payment{}, fmt.Errorf("stripe: charge purchase %s: %w", req.PurchaseID, classify(err))
	}
	return paymentOf(pi), nil
}

// Bounds of the look-ups for what an earlier request made.
const (
	// maxChargeSearch bounds the PaymentIntents read to find a purchase's:
	// the customer's, created since the purchase started.
	maxChargeSearch = 1000
	// maxInvoiceSearch bounds the invoices read to find a purchase's.
	maxInvoiceSearch = 1000
	// maxInvoiceItems bounds the items read on one invoice creditd made
	// (it adds one).
	maxInvoiceItems = 100
	// listPage is the page size of those look-ups.
	listPage = 100
	// createdSlack widens the look-ups by creation time: Stripe stamps
	// objects with its clock, a purchase carries its leader's.
	createdSlack = time.Hour
)

// createdSince is the creation-time filter of a look-up for a purchase's
// objects; nil (no filter) when the start is unknown.
func createdSince(startedAt time.Time) *stripe.RangeQueryParams {
	if startedAt.IsZero() {
		return nil
	}
	return &stripe.RangeQueryParams{GreaterThanOrEqual: startedAt.Add(-createdSlack).Unix()}
}

// FindPayments lists the purchase's PaymentIntents among the customer's
// created since the purchase started (less createdSlack), newest first, up
// to the first that succeeded. Listing, unlike Stripe's search, sees a
// payment as soon as it exists. A customer with more than maxChargeSearch
// payments since then is an error (one of the purchase's could be beyond
// them), unless a payment of the purchase that succeeded came before the
// bound.
func (s *Stripe) FindPayments(ctx context.Context, req PaymentRequest) ([]Payment, error) {
	if req.PurchaseID == "" || req.CustomerRef == "" {
		return nil, fmt.Errorf("stripe: find payments: purchase id and customer are required: %w", ErrPermanent)
	}
	lp := &stripe.PaymentIntentListParams{Customer: stripe.String(req.CustomerRef), CreatedRange: createdSince(req.StartedAt)}
	lp.Limit = stripe.Int64(listPage)
	var out []Payment
	n := 0
	for pi, err := range s.client.V1PaymentIntents.List(ctx, lp) {
		if err != nil {
			return nil, fmt.Errorf("stripe: list payments of %s to find purchase %s: %w", req.CustomerRef, req.PurchaseID, classify(err))
		}
		if n++; n > maxChargeSearch {
			return nil, fmt.Errorf("stripe: %s has more than %d payments since purchase %s started: cannot tell which are the purchase's",
				req.CustomerRef, maxChargeSearch, req.PurchaseID)
		}
		if pi.Metadata[MetadataPurchaseID] == req.PurchaseID {
			pay := paymentOf(pi)
			out = append(out, pay)
			if pay.Status == PaymentSucceeded {
				// It decides (the worker takes a payment that succeeded
				// first), whatever the older ones are: the answer is in
				// hand, however many payments are left to list.
				return out, nil
			}
		}
	}
	return out, nil
}

// findCharge looks for the PaymentIntent an earlier request for the
// purchase created (the newest of the purchase's). None found means the
// outcome is still unknown: an error the worker retries.
func (s *Stripe) findCharge(ctx context.Context, req PaymentRequest) (Payment, error) {
	pays, err := s.FindPayments(ctx, req)
	if err != nil {
		return Payment{}, err
	}
	if len(pays) == 0 {
		return Payment{}, fmt.Errorf("stripe: purchase %s: key %s was used with other parameters and no payment of %s names the purchase yet",
			req.PurchaseID, req.IdempotencyKey, req.CustomerRef)
	}
	return pays[0], nil
}

// StartOnSession creates a PaymentIntent for the customer to confirm in the
// front end with its client secret.
func (s *Stripe) StartOnSession(ctx context.Context, req PaymentRequest) (Payment, error) {
	p, err := s.paymentParams(req)
	if err != nil {
		return Payment{}, err
	}
	p.AutomaticPaymentMethods = &stripe.PaymentIntentCreateAutomaticPaymentMethodsParams{Enabled: stripe.Bool(true)}
	// Saving the method lets later automatic top-ups charge it off-session.
	p.SetupFutureUsage = stripe.String(string(stripe.PaymentIntentSetupFutureUsageOffSession))
	pi, err := s.client.V1PaymentIntents.Create(ctx, p)
	if err != nil {
		return Payment{}, fmt.Errorf("stripe: start payment of purchase %s: %w", req.PurchaseID, classify(err))
	}
	return paymentOf(pi), nil
}

// CreateInvoice creates a draft invoice, adds one line for the credits,
// finalizes it and sends it to the customer. Each step has its own key derived from req.IdempotencyKey,
// so a retry after any step resumes without a second invoice or line.
//
// With req.Resume the keys may be forgotten (Stripe keeps them 24 hours), so
// a retry would make a second invoice, or a second line on the first: the
// purchase's invoice is looked up first, its line too while it is a draft,
// and only what is missing is made. A finalized invoice is not finalized
// again; an open one is sent again, since whether the lost request sent it
// cannot be read (at worst the customer gets the same invoice twice, which
// is paid once).
func (s *Stripe) CreateInvoice(ctx context.Context, req InvoiceRequest) (Invoice, error) {
	if req.PurchaseID == "" || req.IdempotencyKey == "" {
		return Invoice{}, fmt.Errorf("stripe: purchase id and idempotency key are required: %w", ErrPermanent)
	}
	if req.CustomerRef == "" {
		return Invoice{}, fmt.Errorf("stripe: purchase %s: customer has no Stripe id: %w", req.PurchaseID, ErrPermanent)
	}
	amount, err := MicrosToMinor(req.AmountMicros, req.Currency)
	if err != nil || amount <= 0 || amount > maxStripeAmountMinor {
		return Invoice{}, fmt.Errorf("stripe: purchase %s: amount %d micros %s is not invoiceable: %w",
			req.PurchaseID, req.AmountMicros, req.Currency, ErrPermanent)
	}
	days := req.DaysUntilDue
	if days <= 0 {
		days = defaultDaysUntilDue
	}
	meta := map[string]string{MetadataPurchaseID: req.PurchaseID}
	ip := &stripe.InvoiceCreateParams{
		Customer:                    stripe.String(req.CustomerRef),
		Currency:                    stripe.String(strings.ToLower(req.Currency)),
		CollectionMethod:            stripe.String(string(stripe.InvoiceCollectionMethodSendInvoice)),
		DaysUntilDue:                stripe.Int64(days),
		AutoAdvance:                 stripe.Bool(false),
		PendingInvoiceItemsBehavior: stripe.String("exclude"),
		Metadata:                    meta,
	}
	ip.SetIdempotencyKey(req.IdempotencyKey + ":invoice")
	var inv *stripe.Invoice
	if req.Resume {
		if inv, err = s.findInvoice(ctx, req); err != nil {
			return Invoice{}, err
		}
	}
	resumed := inv != nil
	if !resumed {
		if inv, err = s.client.V1Invoices.Create(ctx, ip); err != nil {
			return Invoice{}, fmt.Errorf("stripe: create invoice for purchase %s: %w", req.PurchaseID, classify(err))
		}
	}
	if !resumed || inv.Status == stripe.InvoiceStatusDraft {
		hasLine := false
		if resumed {
			if hasLine, err = s.hasLine(ctx, inv.ID, req.PurchaseID); err != nil {
				return Invoice{}, err
			}
		}
		if !hasLine {
			lp := &stripe.InvoiceItemCreateParams{
				Customer: stripe.String(req.CustomerRef),
				Invoice:  stripe.String(inv.ID),
				Amount:   stripe.Int64(amount),
				Currency: stripe.String(strings.ToLower(req.Currency)),
				Metadata: meta,
			}
			if req.Description != "" {
				lp.Description = stripe.String(req.Description)
			}
			lp.SetIdempotencyKey(req.IdempotencyKey + ":line")
			if _, err := s.client.V1InvoiceItems.Create(ctx, lp); err != nil {
				return Invoice{}, fmt.Errorf("stripe: add line to invoice %s of purchase %s: %w", inv.ID, req.PurchaseID, classify(err))
			}
		}
		fp := &stripe.InvoiceFinalizeInvoiceParams{AutoAdvance: stripe.Bool(false)}
		fp.SetIdempotencyKey(req.IdempotencyKey + ":finalize")
		fin, err := s.client.V1Invoices.FinalizeInvoice(ctx, inv.ID, fp)
		if err != nil {
			return Invoice{}, fmt.Errorf("stripe: finalize invoice %s of purchase %s: %w", inv.ID, req.PurchaseID, classify(err))
		}
		inv = fin
	}
	if resumed && inv.Status != stripe.InvoiceStatusOpen {
		// Paid, void or uncollectible since: nothing to send.
		return invoiceFor(inv, req.PurchaseID), nil
	}
	// Finalizing with auto_advance off sends nothing: send it, so the
	// customer gets the invoice and its payment page.
	sp := &stripe.InvoiceSendInvoiceParams{}
	sp.SetIdempotencyKey(req.IdempotencyKey + ":send")
	sent, err := s.client.V1Invoices.SendInvoice(ctx, inv.ID, sp)
	if err != nil {
		err = fmt.Errorf("stripe: send invoice %s of purchase %s: %w", inv.ID, req.PurchaseID, classify(err))
		if errors.Is(err, ErrPermanent) {
			return Invoice{}, s.voidUnsent(ctx, inv.ID, req, err)
		}
		return Invoice{}, err
	}
	return invoiceFor(sent, req.PurchaseID), nil
}

// voidUnsent voids a finalized invoice Stripe refused to send (the
// customer has no email address, say), before the purchase fails for
// sendErr: left open it would stay a receivable at Stripe for a purchase
// creditd failed, and paid later it would bring money in for no credits.
// Until it is voided the error is not permanent, so the purchase is
// retried (each step under its key) rather than failed beside an open
// invoice.
func (s *Stripe) voidUnsent(ctx context.Context, invoiceID string, req InvoiceRequest, sendErr error) error {
	vp := &stripe.InvoiceVoidInvoiceParams{}
	vp.SetIdempotencyKey(req.IdempotencyKey + ":void")
	if _, err := s.client.V1Invoices.VoidInvoice(ctx, invoiceID, vp); err != nil {
		// Not the permanent send error: the purchase is retried.
		return fmt.Errorf("stripe: void invoice %s of purchase %s, which could not be sent (%v): %v",
			invoiceID, req.PurchaseID, sendErr, err)
	}
	return fmt.Errorf("%w; invoice %s voided", sendErr, invoiceID)
}

func invoiceFor(inv *stripe.Invoice, purchaseID string) Invoice {
	out := invoiceOf(inv)
	if out.PurchaseID == "" {
		out.PurchaseID = purchaseID
	}
	return out
}

// findInvoice returns the invoice an earlier request made for the purchase
// (nil if none): the first of the customer's invoices created since the
// purchase started whose metadata names it.
func (s *Stripe) findInvoice(ctx context.Context, req InvoiceRequest) (*stripe.Invoice, error) {
	lp := &stripe.InvoiceListParams{Customer: stripe.String(req.CustomerRef), CreatedRange: createdSince(req.StartedAt)}
	lp.Limit = stripe.Int64(listPage)
	n := 0
	for inv, err := range s.client.V1Invoices.List(ctx, lp) {
		if err != nil {
			return nil, fmt.Errorf("stripe: list invoices of %s to find purchase %s: %w", req.CustomerRef, req.PurchaseID, classify(err))
		}
		if n++; n > maxInvoiceSearch {
			return nil, fmt.Errorf("stripe: %s has more than %d invoices since purchase %s started: cannot tell which is the purchase's",
				req.CustomerRef, maxInvoiceSearch, req.PurchaseID)
		}
		if inv.Metadata[MetadataPurchaseID] == req.PurchaseID {
			return inv, nil
		}
	}
	return nil, nil
}

// hasLine reports whether a draft invoice already carries the purchase's
// line (an invoice item whose metadata names it).
func (s *Stripe) hasLine(ctx context.Context, invoiceID, purchaseID string) (bool, error) {
	lp := &stripe.InvoiceItemListParams{Invoice: stripe.String(invoiceID)}
	lp.Limit = stripe.Int64(listPage)
	n := 0
	for it, err := range s.client.V1InvoiceItems.List(ctx, lp) {
		if err != nil {
			return false, fmt.Errorf("stripe: list lines of invoice %s of purchase %s: %w", invoiceID, purchaseID, classify(err))
		}
		if n++; n > maxInvoiceItems {
			return false, fmt.Errorf("stripe: invoice %s of purchase %s has more than %d lines", invoiceID, purchaseID, maxInvoiceItems)
		}
		if it.Metadata[MetadataPurchaseID] == purchaseID {
			return true, nil
		}
	}
	return false, nil
}

// LookupPayment reads a PaymentIntent. When its metadata has no purchase id
// (a payment Stripe made for an invoice), the invoice it paid is asked.
func (s *Stripe) LookupPayment(ctx context.Context, ref string) (Payment, error) {
	if ref == "" {
		return Payment{}, fmt.Errorf("stripe: look up payment: ref is empty: %w", ErrPermanent)
	}
	pi, err := s.client.V1PaymentIntents.Retrieve(ctx, ref, nil)
	if err != nil {
		return Payment{}, fmt.Errorf("stripe: retrieve payment intent %s: %w", ref, classify(err))
	}
	pay := paymentOf(pi)
	if pay.PurchaseID == "" {
		lp := &stripe.InvoicePaymentListParams{Payment: &stripe.InvoicePaymentListPaymentParams{
			Type: stripe.String("payment_intent"), PaymentIntent: stripe.String(ref)}}
		lp.Limit = stripe.Int64(1)
		lp.AddExpand("data.invoice")
		for ip, err := range s.client.V1InvoicePayments.List(ctx, lp) {
			if err != nil {
				return Payment{}, fmt.Errorf("stripe: find invoice paid by %s: %w", ref, classify(err))
			}
			if ip.Invoice != nil {
				pay.InvoiceRef = ip.Invoice.ID
				pay.PurchaseID = ip.Invoice.Metadata[MetadataPurchaseID]
			}
			break
		}
	}
	return pay, nil
}

// CancelPayment cancels a PaymentIntent as abandoned. A payment that
// succeeded meanwhile cannot be canceled; its state is returned instead.
// Its key may be forgotten on a retry more than a day later, which is safe:
// a cancel moves no money, and one repeated on a canceled payment is refused
// as an unexpected state and answered by a look-up.
func (s *Stripe) CancelPayment(ctx context.Context, ref string) (Payment, error) {
	if ref == "" {
		return Payment{}, fmt.Errorf("stripe: cancel payment: ref is empty: %w", ErrPermanent)
	}
	cp := &stripe.PaymentIntentCancelParams{CancellationReason: stripe.String("abandoned")}
	cp.SetIdempotencyKey("creditd-cancel:" + ref)
	pi, err := s.client.V1PaymentIntents.Cancel(ctx, ref, cp)
	if err != nil {
		var se *stripe.Error
		if errors.As(err, &se) && se.Code == stripe.ErrorCodePaymentIntentUnexpectedState {
			return s.LookupPayment(ctx, ref)
		}
		return Payment{}, fmt.Errorf("stripe: cancel payment intent %s: %w", ref, classify(err))
	}
	return paymentOf(pi), nil
}

// LookupInvoice reads an invoice.
func (s *Stripe) LookupInvoice(ctx context.Context, ref string) (Invoice, error) {
	if ref == "" {
		return Invoice{}, fmt.Errorf("stripe: look up invoice: ref is empty: %w", ErrPermanent)
	}
	inv, err := s.client.V1Invoices.Retrieve(ctx, ref, nil)
	if err != nil {
		return Invoice{}, fmt.Errorf("stripe: retrieve invoice %s: %w", ref, classify(err))
	}
	return invoiceOf(inv), nil
}

// Refunds lists a charge's refunds (at most maxRefundsListed).
func (s *Stripe) Refunds(ctx context.Context, chargeRef string) ([]Refund, error) {
	if chargeRef == "" {
		return nil, fmt.Errorf("stripe: list refunds: charge is empty: %w", ErrPermanent)
	}
	lp := &stripe.RefundListParams{Charge: stripe.String(chargeRef)}
	lp.Limit = stripe.Int64(maxRefundsListed)
	return listOfCharge(s.client.V1Refunds.List(ctx, lp), chargeRef, "refunds", maxRefundsListed, refundOf)
}

// listOfCharge reads a list of a charge's objects (refunds, disputes), at
// most limit of them: more is an error, not a cut.
func listOfCharge[T, U any](list stripe.Seq2[*T, error], chargeRef, what string, limit int, of func(*T) U) ([]U, error) {
	var out []U
	for v, err := range list {
		if err != nil {
			return nil, fmt.Errorf("stripe: list %s of %s: %w", what, chargeRef, classify(err))
		}
		if len(out) == limit {
			return nil, fmt.Errorf("stripe: charge %s has more than %d %s", chargeRef, limit, what)
		}
		out = append(out, of(v))
	}
	return out, nil
}

// LookupDispute reads a dispute. Whether its money is with the card holder
// is read from its balance transactions (a withdrawal, then a reinstatement
// if the merchant won), the money's own record; a dispute lost counts as
// withdrawn whatever they say.
func (s *Stripe) LookupDispute(ctx context.Context, ref string) (Dispute, error) {
	if ref == "" {
		return Dispute{}, fmt.Errorf("stripe: look up dispute: ref is empty: %w", ErrPermanent)
	}
	d, err := s.client.V1Disputes.Retrieve(ctx, ref, nil)
	if err != nil {
		return Dispute{}, fmt.Errorf("stripe: retrieve dispute %s: %w", ref, classify(err))
	}
	return disputeOf(d), nil
}

// Disputes lists a charge's disputes (at most maxDisputesListed), each with
// its money read as LookupDispute reads it (a list carries the balance
// transactions too).
func (s *Stripe) Disputes(ctx context.Context, chargeRef string) ([]Dispute, error) {
	if chargeRef == "" {
		return nil, fmt.Errorf("stripe: list disputes: charge is empty: %w", ErrPermanent)
	}
	lp := &stripe.DisputeListParams{Charge: stripe.String(chargeRef)}
	lp.Limit = stripe.Int64(maxDisputesListed)
	return listOfCharge(s.client.V1Disputes.List(ctx, lp), chargeRef, "disputes", maxDisputesListed, disputeOf)
}

func disputeOf(d *stripe.Dispute) Dispute {
	out := Dispute{ID: d.ID, AmountMinor: d.Amount, Currency: strings.ToUpper(string(d.Currency)),
		ProviderStatus: string(d.Status), Created: d.Created}
	if d.Charge != nil {
		out.ChargeRef = d.Charge.ID
	}
	if d.PaymentIntent != nil {
		out.PaymentRef = d.PaymentIntent.ID
	}
	withdrawn := d.Status == stripe.DisputeStatusLost
	for _, bt := range d.BalanceTransactions {
		switch {
		case bt == nil:
		case bt.Amount < 0:
			withdrawn = true
		case bt.Amount > 0:
			out.Reinstated = true
		}
	}
	out.HoldsFunds = withdrawn && !out.Reinstated
	return out
}

// ParseWebhook verifies the Stripe-Signature header with the webhook secret
// and the tolerance window, then maps the event.
func (s *Stripe) ParseWebhook(payload []byte, header http.Header) (Event, error) {
	sig := header.Get("Stripe-Signature")
	if sig == "" {
		return Event{}, fmt.Errorf("stripe: no Stripe-Signature header: %w", ErrBadSignature)
	}
	// Signature first, so that a signature problem is told apart from an
	// event this client cannot read (another API version).
	if err := webhook.ValidatePayloadWithTolerance(payload, sig, s.webhookSecret.Reveal(), s.webhookTolerance); err != nil {
		return Event{}, fmt.Errorf("stripe: %v: %w", err, ErrBadSignature)
	}
	ev, err := webhook.ConstructEventWithOptions(payload, sig, s.webhookSecret.Reveal(),
		webhook.ConstructEventOptions{Tolerance: s.webhookTolerance})
	if err != nil {
		return Event{}, fmt.Errorf("stripe: event refused (the webhook endpoint must use API version %s): %v",
			stripe.APIVersion, err)
	}
	return eventOf(ev)
}

// eventOf maps a verified Stripe event onto a neutral Event.
func eventOf(ev stripe.Event) (Event, error) {
	out := Event{ID: ev.ID, Type: string(ev.Type)}
	if ev.ID == "" {
		return Event{}, errors.New("stripe: event has no id")
	}
	if ev.Data == nil {
		return Event{}, fmt.Errorf("stripe: event %s has no data", ev.ID)
	}
	switch ev.Type {
	case stripe.EventTypePaymentIntentSucceeded, stripe.EventTypePaymentIntentPaymentFailed:
		var pi stripe.PaymentIntent
		if err := json.Unmarshal(ev.Data.Raw, &pi); err != nil {
			return Event{}, fmt.Errorf("stripe: event %s: decode payment intent: %w", ev.ID, err)
		}
		p := paymentOf(&pi)
		out.Kind = EventPaymentSucceeded
		if ev.Type == stripe.EventTypePaymentIntentPaymentFailed {
			out.Kind = EventPaymentFailed
		}
		out.PurchaseID, out.ObjectRef, out.ProviderStatus, out.FailureReason = p.PurchaseID, p.Ref, p.ProviderStatus, p.FailureReason
		out.AmountMinor, out.Currency = p.AmountMinor, p.Currency
	case stripe.EventTypeInvoiceFinalized, stripe.EventTypeInvoicePaid, stripe.EventTypeInvoiceVoided,
		stripe.EventTypeInvoiceMarkedUncollectible:
		var inv stripe.Invoice
		if err := json.Unmarshal(ev.Data.Raw, &inv); err != nil {
			return Event{}, fmt.Errorf("stripe: event %s: decode invoice: %w", ev.ID, err)
		}
		i := invoiceOf(&inv)
		switch ev.Type {
		case stripe.EventTypeInvoiceFinalized:
			out.Kind = EventInvoiceFinalized
		case stripe.EventTypeInvoicePaid:
			out.Kind = EventInvoicePaid
		case stripe.EventTypeInvoiceVoided:
			out.Kind = EventInvoiceVoided
		default:
			out.Kind = EventInvoiceUncollectible
		}
		out.PurchaseID, out.ObjectRef, out.ProviderStatus = i.PurchaseID, i.Ref, i.ProviderStatus
		out.AmountMinor, out.Currency = i.AmountMinor, i.Currency
	case stripe.EventTypeChargeRefunded:
		var ch stripe.Charge
		if err := json.Unmarshal(ev.Data.Raw, &ch); err != nil {
			return Event{}, fmt.Errorf("stripe: event %s: decode charge: %w", ev.ID, err)
		}
		out.Kind = EventChargeRefunded
		out.ObjectRef = ch.ID
		out.PurchaseID = ch.Metadata[MetadataPurchaseID]
		if ch.PaymentIntent != nil {
			out.PaymentRef = ch.PaymentIntent.ID
		}
		out.AmountMinor, out.AmountRefundedMinor = ch.Amount, ch.AmountRefunded
		out.Currency = strings.ToUpper(string(ch.Currency))
		out.ProviderStatus = string(ch.Status)
		if ch.Refunds != nil {
			for _, r := range ch.Refunds.Data {
				out.Refunds = append(out.Refunds, refundOf(r))
			}
			out.RefundsComplete = !ch.Refunds.HasMore
		}
	case stripe.EventTypeRefundFailed, stripe.EventTypeRefundUpdated, stripe.EventTypeChargeRefundUpdated:
		var r stripe.Refund
		if err := json.Unmarshal(ev.Data.Raw, &r); err != nil {
			return Event{}, fmt.Errorf("stripe: event %s: decode refund: %w", ev.ID, err)
		}
		if r.ID == "" {
			return Event{}, fmt.Errorf("stripe: event %s: refund has no id", ev.ID)
		}
		out.Kind = EventRefundUpdated
		if r.Charge != nil {
			out.ObjectRef = r.Charge.ID
			out.PurchaseID = r.Charge.Metadata[MetadataPurchaseID] // set only when the charge is expanded
		}
		if r.PaymentIntent != nil {
			out.PaymentRef = r.PaymentIntent.ID
		}
		out.Currency = strings.ToUpper(string(r.Currency))
		out.ProviderStatus = string(r.Status)
		out.Refunds = []Refund{refundOf(&r)}
	case stripe.EventTypeChargeDisputeFundsWithdrawn, stripe.EventTypeChargeDisputeFundsReinstated,
		stripe.EventTypeChargeDisputeClosed:
		var d stripe.Dispute
		if err := json.Unmarshal(ev.Data.Raw, &d); err != nil {
			return Event{}, fmt.Errorf("stripe: event %s: decode dispute: %w", ev.ID, err)
		}
		if d.ID == "" {
			return Event{}, fmt.Errorf("stripe: event %s: dispute has no id", ev.ID)
		}
		x := disputeOf(&d)
		out.Kind = EventDisputeChanged
		out.ObjectRef, out.PaymentRef = x.ID, x.PaymentRef
		out.AmountMinor, out.Currency, out.ProviderStatus = x.AmountMinor, x.Currency, x.ProviderStatus
	default:
		out.Kind = EventIgnored
	}
	return out, nil
}

func paymentOf(pi *stripe.PaymentIntent) Payment {
	p := Payment{Ref: pi.ID, ProviderStatus: string(pi.Status), ClientSecret: pi.ClientSecret,
		AmountMinor: pi.Amount, Currency: strings.ToUpper(string(pi.Currency))}
	if pi.Metadata != nil {
		p.PurchaseID = pi.Metadata[MetadataPurchaseID]
	}
	switch pi.Status {
	case stripe.PaymentIntentStatusSucceeded:
		p.Status = PaymentSucceeded
	case stripe.PaymentIntentStatusCanceled:
		p.Status = PaymentCanceled
	case stripe.PaymentIntentStatusRequiresPaymentMethod:
		if pi.LastPaymentError != nil {
			p.Status = PaymentFailed
			p.FailureReason = declineReason(pi.LastPaymentError)
			p.Retryable = pi.LastPaymentError.Code != stripe.ErrorCodeAuthenticationRequired
		}
	}
	return p
}

func invoiceOf(inv *stripe.Invoice) Invoice {
	i := Invoice{Ref: inv.ID, ProviderStatus: string(inv.Status), HostedURL: inv.HostedInvoiceURL,
		AmountMinor: inv.AmountDue, Currency: strings.ToUpper(string(inv.Currency))}
	if inv.Metadata != nil {
		i.PurchaseID = inv.Metadata[MetadataPurchaseID]
	}
	switch inv.Status {
	case stripe.InvoiceStatusOpen:
		i.Status = InvoiceOpen
	case stripe.InvoiceStatusPaid:
		i.Status = InvoicePaid
	case stripe.InvoiceStatusVoid:
		i.Status = InvoiceVoid
	case stripe.InvoiceStatusUncollectible:
		i.Status = InvoiceUncollectible
	default:
		i.Status = InvoiceDraft
	}
	return i
}

func refundOf(r *stripe.Refund) Refund {
	return Refund{ID: r.ID, AmountMinor: r.Amount, Currency: strings.ToUpper(string(r.Currency)),
		Counts:  r.Status != stripe.RefundStatusFailed && r.Status != stripe.RefundStatusCanceled,
		Created: r.Created}
}

func declineReason(e *stripe.Error) string {
	parts := []string{}
	if e.Code != "" {
		parts = append(parts, string(e.Code))
	}
	if e.DeclineCode != "" {
		parts = append(parts, string(e.DeclineCode))
	}
	if e.Msg != "" {
		parts = append(parts, e.Msg)
	}
	if len(parts) == 0 {
		return "declined"
	}
	return strings.Join(parts, ": ")
}

// classify marks Stripe errors that a retry cannot fix as ErrPermanent:
// malformed requests (400, 404) and a key reused with other parameters.
// Everything else (network, 409 lock, 429, 5xx, and 401 — a key an operator
// will fix) is left transient: the worker retries it with the same key.
func classify(err error) error {
	var se *stripe.Error
	if !errors.As(err, &se) {
		return err
	}
	switch {
	case se.Type == stripe.ErrorTypeIdempotency && se.HTTPStatusCode != http.StatusConflict:
		return fmt.Errorf("%w (%w)", err, ErrPermanent)
	case se.Type == stripe.ErrorTypeInvalidRequest &&
		(se.HTTPStatusCode == http.StatusBadRequest || se.HTTPStatusCode == http.StatusNotFound):
		return fmt.Errorf("%w (%w)", err, ErrPermanent)
	}
	return err
}
