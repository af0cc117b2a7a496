package billing

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"strings"
	"sync"
	"time"

	"github.com/creditd/creditd/fsm"
)

// Applier submits a command to the cluster; *node.Node satisfies it. On a
// node that does not lead, Apply fails and the caller retries elsewhere.
type Applier interface {
	Apply(ctx context.Context, cmd fsm.Command) (fsm.Result, error)
}

// StateReader reads the replicated state; *fsm.FSM satisfies it.
type StateReader interface {
	View(fn func(v *fsm.View) error) error
}

// Limits of the webhook endpoint.
const (
	// DefaultMaxWebhookBytes bounds a webhook body; Stripe's events are far
	// smaller.
	DefaultMaxWebhookBytes = 512 << 10
	// DefaultSeenEvents bounds the replay set. Beyond it, the oldest ids are
	// forgotten and a replay is caught by the commands' own idempotency
	// (purchase ids, refund request ids) instead.
	DefaultSeenEvents = 10000
	// DefaultWebhookTimeout bounds the work done for one event.
	DefaultWebhookTimeout = 15 * time.Second
	// forwardedHeader marks a webhook a follower passed to the leader, so a
	// second hop is refused instead of looping.
	forwardedHeader = "X-Creditd-Forwarded"
	// WebhookPath is where the Stripe webhook is mounted.
	WebhookPath = "/webhooks/stripe"
)

// WebhookOptions configure a WebhookHandler.
type WebhookOptions struct {
	Provider Provider
	Applier  Applier
	State    StateReader
	// Leader, when set, reports whether this node leads and, if not, the
	// leader's API address (host:port). A follower verifies a webhook and
	// forwards it there, since only the leader applies commands.
	Leader func() (isLeader bool, leaderAddr string)
	// ReadBarrier, when set, returns once this node leads and has applied
	// every committed entry (node's LinearizableRead). The handler decides
	// from the state it reads: a leader just elected may not have applied
	// the entries of earlier terms yet, and would answer "unknown purchase"
	// for one made a moment before. nil = none (a local FSM in tests).
	ReadBarrier func(ctx context.Context) error
	// ForwardClient carries forwarded webhooks; nil = a client with the
	// handler's timeout.
	ForwardClient *http.Client
	// ForwardHTTPS forwards over HTTPS (the cluster's API serves TLS).
	ForwardHTTPS bool
	Logger       *slog.Logger
	SeenEvents   int           // 0 = DefaultSeenEvents
	Timeout      time.Duration // 0 = DefaultWebhookTimeout
	MaxBodyBytes int64         // 0 = DefaultMaxWebhookBytes
}

// WebhookHandler serves POST /webhooks/stripe: it verifies each event, drops
// replays, and maps the event onto purchase completions and revocations.
//
// Responses: 200 when the event is applied, ignored, or a replay (so the
// provider stops sending it); 400 for a bad signature or body; 405 for other
// methods; 503 when the cluster could not take the command now (the provider
// retries later, and the event is not marked seen).
type WebhookHandler struct {
	o    WebhookOptions
	log  *slog.Logger
	seen *seenSet
}

// NewWebhookHandler checks the options and builds the handler.
func NewWebhookHandler(o WebhookOptions) (*WebhookHandler, error) {
	if o.Provider == nil || o.Applier == nil || o.State == nil {
		return nil, errors.New("billing: webhook handler needs Provider, Applier and State")
	}
	if o.SeenEvents < 0 || o.Timeout < 0 || o.MaxBodyBytes < 0 {
		return nil, errors.New("billing: webhook limits must not be negative")
	}
	if o.SeenEvents == 0 {
		o.SeenEvents = DefaultSeenEvents
	}
	if o.Timeout == 0 {
		o.Timeout = DefaultWebhookTimeout
	}
	if o.MaxBodyBytes == 0 {
		o.MaxBodyBytes = DefaultMaxWebhookBytes
	}
	if o.ForwardClient == nil {
		o.ForwardClient = &http.Client{Timeout: o.Timeout}
	}
	log := o.Logger
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	return &WebhookHandler{o: o, log: log.With("component", "billing-webhook", "provider", o.Provider.Name()),
		seen: newSeenSet(o.SeenEvents)}, nil
}

func (h *WebhookHandler) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	if r.Method != http.MethodPost {
		w.Header().Set("Allow", http.MethodPost)
		http.Error(w, "method not allowed", http.StatusMethodNotAllowed)
		return
	}
	body, err := io.ReadAll(http.MaxBytesReader(w, r.Body, h.o.MaxBodyBytes))
	if err != nil {
		http.Error(w, fmt.Sprintf("body: read failed or larger than %d bytes", h.o.MaxBodyBytes), http.StatusBadRequest)
		return
	}
	ev, err := h.o.Provider.ParseWebhook(body, r.Header)
	if err != nil {
		h.log.Info("webhook refused", "err", err)
		if errors.Is(err, ErrBadSignature) {
			http.Error(w, "signature: not valid or outside the tolerance window", http.StatusBadRequest)
			return
		}
		// The provider shows this answer to the operator: say why.
		http.Error(w, "event refused: "+clip(err.Error(), 1024), http.StatusBadRequest)
		return
	}
	if h.o.Leader != nil {
		if lead, addr := h.o.Leader(); !lead {
			h.forward(w, r, body, addr, ev)
			return
		}
	}
	ctx, cancel := context.WithTimeout(r.Context(), h.o.Timeout)
	defer cancel()
	code, msg := h.Handle(ctx, ev)
	http.Error(w, msg, code)
}

// Handle applies one verified event and returns the HTTP status and message
// to answer with.
func (h *WebhookHandler) Handle(ctx context.Context, ev Event) (int, string) {
	if h.o.ReadBarrier != nil {
		if err := h.o.ReadBarrier(ctx); err != nil {
			h.log.Warn("webhook not applied: this node cannot read the latest state; the provider will retry", "event", ev.ID, "err", err)
			return http.StatusServiceUnavailable, "not applied now, retry: read the latest state: " + err.Error()
		}
	}
	switch h.seen.begin(ev.ID) {
	case seenDone:
		return http.StatusOK, "duplicate event " + ev.ID + ": already applied"
	case seenBusy:
		return http.StatusConflict, "event " + ev.ID + " is being applied"
	}
	note, err := h.apply(ctx, ev)
	if err != nil {
		h.seen.abort(ev.ID)
		h.log.Warn("webhook not applied; the provider will retry", "event", ev.ID, "type", ev.Type, "err", err)
		return http.StatusServiceUnavailable, "not applied now, retry: " + err.Error()
	}
	h.seen.done(ev.ID)
	h.log.Info("webhook applied", "event", ev.ID, "type", ev.Type, "purchase", ev.PurchaseID, "result", note)
	return http.StatusOK, note
}

// forward passes a verified webhook to the leader unchanged (its signature
// is checked again there).
func (h *WebhookHandler) forward(w http.ResponseWriter, r *http.Request, body []byte, addr string, ev Event) {
	if addr == "" || r.Header.Get(forwardedHeader) != "" {
		http.Error(w, "no leader to apply the event; retry", http.StatusServiceUnavailable)
		return
	}
	ctx, cancel := context.WithTimeout(r.Context(), h.o.Timeout)
	defer cancel()
	scheme := "http://"
	if h.o.ForwardHTTPS {
		scheme = "https://"
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, scheme+addr+WebhookPath, bytes.NewReader(body))
	if err != nil {
		http.Error(w, "forward: "+err.Error(), http.StatusServiceUnavailable)
		return
	}
	for _, k := range []string{"Stripe-Signature", "Content-Type"} {
		if v := r.Header.Get(k); v != "" {
			req.Header.Set(k, v)
		}
	}
	req.Header.Set(forwardedHeader, "1")
	resp, err := h.o.ForwardClient.Do(req)
	if err != nil {
		h.log.Warn("forward webhook to leader failed", "event", ev.ID, "leader", addr, "err", err)
		http.Error(w, "forward to leader failed; retry", http.StatusServiceUnavailable)
		return
	}
	defer resp.Body.Close()
	msg, _ := io.ReadAll(io.LimitReader(resp.Body, 4096))
	w.Header().Set("Content-Type", "text/plain; charset=utf-8")
	w.WriteHeader(resp.StatusCode)
	_, _ = w.Write(msg)
}

// apply maps an event onto commands. It returns a note for the response, or
// an error when the provider should send the event again later. Domain
// refusals (a purchase already completed the other way, a grant already
// used up) are final answers, not errors: retrying cannot change them.
func (h *WebhookHandler) apply(ctx context.Context, ev Event) (string, error) {
	if ev.Kind == EventIgnored {
		return "event type " + ev.Type + " ignored", nil
	}
	purchaseID := ev.PurchaseID
	movesMoney := ev.Kind == EventChargeRefunded || ev.Kind == EventRefundUpdated || ev.Kind == EventDisputeChanged
	var pay *Payment // the refunded or disputed payment, once looked up
	if purchaseID == "" && movesMoney && ev.PaymentRef != "" {
		got, err := h.o.Provider.LookupPayment(ctx, ev.PaymentRef)
		if err != nil {
			if errors.Is(err, ErrPermanent) {
				return "payment " + ev.PaymentRef + " not found at the provider; ignored", nil
			}
			return "", fmt.Errorf("look up payment %s of %s: %w", ev.PaymentRef, ev.ObjectRef, err)
		}
		purchaseID, pay = got.PurchaseID, &got
	}
	if purchaseID == "" {
		return "no " + MetadataPurchaseID + " on " + ev.ObjectRef + ": not a creditd purchase; ignored", nil
	}
	p, found, err := h.purchase(purchaseID)
	if err != nil {
		return "", err
	}
	if !found {
		h.log.Warn("webhook names an unknown purchase", "event", ev.ID, "purchase", purchaseID)
		return "purchase " + purchaseID + " unknown; ignored", nil
	}
	if movesMoney {
		if note, other, err := h.otherPayment(ctx, p, ev, pay); err != nil || other {
			return note, err
		}
	}
	if ev.Kind == EventPaymentSucceeded || ev.Kind == EventInvoicePaid {
		if note, other := h.paidTwice(p, ev); other {
			return note, nil
		}
	}
	switch ev.Kind {
	case EventPaymentSucceeded:
		return h.complete(ctx, fsm.CompletePurchase{ID: p.ID, Outcome: fsm.OutcomeSucceeded,
			ProviderRef: ev.ObjectRef, ProviderStatus: clip(ev.ProviderStatus, fsm.MaxNameLen)})
	case EventPaymentFailed:
		// A failed attempt is not the end of a payment: the customer may
		// retry on the same payment intent, and an automatic charge is
		// retried by the worker, which alone decides when it has failed. So
		// the failure is recorded as progress on a self-serve purchase and
		// left to the worker otherwise; making it final here would let an
		// earlier failure, delivered late, refuse a later success.
		if p.Flow != fsm.FlowSelfServe || p.Status != fsm.PurchasePending {
			return "payment failure of a " + p.Flow.String() + " purchase left to the worker", nil
		}
		return h.complete(ctx, fsm.CompletePurchase{ID: p.ID, Outcome: fsm.OutcomeProgress, ProviderRef: ev.ObjectRef,
			ProviderStatus: clip(ev.ProviderStatus+": "+ev.FailureReason, fsm.MaxNameLen)})
	case EventInvoiceFinalized:
		if p.Flow != fsm.FlowInvoice {
			return "invoice event for a " + p.Flow.String() + " purchase ignored", nil
		}
		return h.complete(ctx, fsm.CompletePurchase{ID: p.ID, Outcome: fsm.OutcomeInvoiceIssued,
			ProviderRef: ev.ObjectRef, ProviderStatus: clip(ev.ProviderStatus, fsm.MaxNameLen)})
	case EventInvoicePaid:
		if p.Flow != fsm.FlowInvoice {
			return "invoice event for a " + p.Flow.String() + " purchase ignored", nil
		}
		return h.complete(ctx, fsm.CompletePurchase{ID: p.ID, Outcome: fsm.OutcomeInvoicePaid,
			ProviderRef: ev.ObjectRef, ProviderStatus: clip(ev.ProviderStatus, fsm.MaxNameLen)})
	case EventInvoiceVoided, EventInvoiceUncollectible:
		if p.Flow != fsm.FlowInvoice {
			return "invoice event for a " + p.Flow.String() + " purchase ignored", nil
		}
		return h.invoiceUnpaid(ctx, p, ev)
	case EventChargeRefunded:
		return h.refund(ctx, p, ev)
	case EventRefundUpdated:
		return h.refundUpdated(ctx, p, ev)
	case EventDisputeChanged:
		return h.dispute(ctx, p, ev)
	}
	return "event kind " + ev.Kind.String() + " ignored", nil
}

// otherPayment tells whether the payment a refund or a dispute returns
// money of is not the one that completed the purchase (its ProviderRef; for
// an invoice, the payment of the invoice, as LookupPayment resolves it): a
// second payment of the purchase, a duplicate charge, whose metadata names
// the purchase too. That money paid for none of the purchase's credits, so
// its refunds and disputes move none of them; the answer says why, and the
// error logged asks an operator to decide what the second payment was for.
// When either payment is unknown there is nothing to tell them apart by.
func (h *WebhookHandler) otherPayment(ctx context.Context, p fsm.Purchase, ev Event, pay *Payment) (string, bool, error) {
	if p.Status != fsm.PurchaseSucceeded || p.ProviderRef == "" || ev.PaymentRef == "" {
		return "", false, nil
	}
	paidBy := ev.PaymentRef
	if p.Flow == fsm.FlowInvoice {
		if pay == nil {
			got, err := h.o.Provider.LookupPayment(ctx, ev.PaymentRef)
			if errors.Is(err, ErrPermanent) {
				return "payment " + ev.PaymentRef + " not found at the provider; ignored", true, nil
			}
			if err != nil {
				return "", false, fmt.Errorf("look up the invoice paid by %s of %s: %w", ev.PaymentRef, ev.ObjectRef, err)
			}
			pay = &got
		}
		if pay.InvoiceRef == "" {
			return "", false, nil
		}
		paidBy = pay.InvoiceRef
	}
	if paidBy == p.ProviderRef {
		return "", false, nil
	}
	h.log.Error("refund or dispute of a payment that did not complete its purchase: no credits moved; an operator decides",
		"event", ev.ID, "type", ev.Type, "object", ev.ObjectRef, "payment", ev.PaymentRef, "paid", paidBy,
		"purchase", p.ID, "purchase_ref", p.ProviderRef)
	what := "payment " + ev.PaymentRef
	if paidBy != ev.PaymentRef {
		what += " (of invoice " + paidBy + ")"
	}
	return fmt.Sprintf("%s returns money of %s, not of %s, which completed purchase %s: no credits moved; "+
		"left to an operator", ev.ObjectRef, what, p.ProviderRef, p.ID), true, nil
}

// paidTwice tells whether a payment (or an invoice paid) names a purchase
// another payment already completed: a second charge of the purchase (a
// duplicate), money in that buys no credits. The purchase is left as it
// is; the error logged asks an operator to refund it.
func (h *WebhookHandler) paidTwice(p fsm.Purchase, ev Event) (string, bool) {
	if p.Status != fsm.PurchaseSucceeded || p.ProviderRef == "" || ev.ObjectRef == "" || ev.ObjectRef == p.ProviderRef {
		return "", false
	}
	h.log.Error("a second payment of a purchase already paid: the customer was charged twice; an operator refunds one",
		"event", ev.ID, "type", ev.Type, "payment", ev.ObjectRef, "purchase", p.ID, "purchase_ref", p.ProviderRef)
	return fmt.Sprintf("%s pays purchase %s, already paid by %s: no credits granted for it; left to an operator",
		ev.ObjectRef, p.ID, p.ProviderRef), true
}

func (h *WebhookHandler) purchase(id string) (fsm.Purchase, bool, error) {
	return readRecord(h.o.State, "purchase", id, (*fsm.View).Purchase)
}

// complete proposes a CompletePurchase. fsm makes a report that agrees with
// the purchase's end state a no-op, and refuses one that contradicts it.
func (h *WebhookHandler) complete(ctx context.Context, c fsm.CompletePurchase) (string, error) {
	res, err := h.o.Applier.Apply(ctx, c)
	if err != nil {
		return "", fmt.Errorf("complete purchase %s: %w", c.ID, err)
	}
	if res.Err != nil {
		if paysMoney(c.Outcome) {
			// Money came in for a purchase that ended without credits.
			h.log.Error("payment succeeded for a purchase that cannot take it: money in, no credits; an operator refunds or grants",
				"purchase", c.ID, "ref", c.ProviderRef, "outcome", outcomeName(c.Outcome), "err", res.Err)
		} else {
			h.log.Warn("purchase completion refused", "purchase", c.ID, "outcome", outcomeName(c.Outcome), "err", res.Err)
		}
		return "purchase " + c.ID + ": " + res.Err.Error(), nil
	}
	if res.Duplicate {
		return "purchase " + c.ID + " already in that state", nil
	}
	return "purchase " + c.ID + ": " + outcomeName(c.Outcome) + " recorded", nil
}

// invoiceUnpaid handles a voided or uncollectible invoice: a purchase still
// waiting for the invoice fails; one granted on issue loses what remains of
// its grant.
func (h *WebhookHandler) invoiceUnpaid(ctx context.Context, p fsm.Purchase, ev Event) (string, error) {
	what := "voided"
	if ev.Kind == EventInvoiceUncollectible {
		what = "marked uncollectible"
	}
	reason := "invoice " + ev.ObjectRef + " " + what
	switch {
	case p.Status == fsm.PurchasePending:
		return h.complete(ctx, fsm.CompletePurchase{ID: p.ID, Outcome: fsm.OutcomeFailed, ProviderRef: ev.ObjectRef,
			ProviderStatus: clip(ev.ProviderStatus, fsm.MaxNameLen), FailureReason: clip(reason, fsm.MaxReasonLen)})
	case p.Status == fsm.PurchaseSucceeded && p.GrantID != "":
		// One request id for both events of one invoice: an uncollectible
		// invoice that is later voided revokes once.
		return h.revoke(ctx, fsm.RevokeGrant{GrantID: p.GrantID, Reason: clip("invoice "+ev.ObjectRef+" not paid", fsm.MaxReasonLen),
			RequestID: clip("invoice-unpaid:"+ev.ObjectRef, fsm.MaxIDLen)})
	}
	return "purchase " + p.ID + " is " + p.Status.String() + "; nothing to do", nil
}

// refund brings the purchase's credits in line with the charge's refunds
// (settleRefunds).
func (h *WebhookHandler) refund(ctx context.Context, p fsm.Purchase, ev Event) (string, error) {
	if p.Status == fsm.PurchasePending {
		// Stripe does not order events: a refund can come before the
		// payment's success. Refused for now, it is sent again once the
		// success event or the worker has made the grant.
		return "", fmt.Errorf("purchase %s is still pending: the refunds of charge %s wait for its grant", p.ID, ev.ObjectRef)
	}
	if p.Status != fsm.PurchaseSucceeded || p.GrantID == "" {
		return "purchase " + p.ID + " has no grant to revoke", nil
	}
	if ev.Currency != "" && !strings.EqualFold(ev.Currency, p.Currency) {
		h.log.Error("refund currency differs from the purchase's", "purchase", p.ID, "charge", ev.ObjectRef,
			"charge_currency", ev.Currency, "purchase_currency", p.Currency)
		return "charge currency " + ev.Currency + " is not the purchase's " + p.Currency + "; ignored", nil
	}
	refunds := ev.Refunds
	if !ev.RefundsComplete {
		listed, err := h.o.Provider.Refunds(ctx, ev.ObjectRef)
		if err != nil {
			return "", fmt.Errorf("list refunds of charge %s: %w", ev.ObjectRef, err)
		}
		refunds = mergeRefunds(listed, ev.Refunds)
	}
	return h.settleRefunds(ctx, p, ev.ObjectRef, refunds)
}

// settleRefunds brings the purchase's credits in line with the charge's
// refunds: first the credits that refunds which no longer count (failed,
// canceled) had revoked are given back; then each counting refund revokes
// credits in proportion to the money it returned (RevocationsForRefunds),
// once per refund id, on a running total that counts the money of the
// charge's disputes holding funds first; last, refunds and disputes whose
// share found the purchase's grant emptied take it from the credits given
// back for failed refunds and won disputes (makeUp).
func (h *WebhookHandler) settleRefunds(ctx context.Context, p fsm.Purchase, chargeRef string, refunds []Refund) (string, error) {
	totalMinor, err := MicrosToMinor(p.TotalMicros, p.Currency)
	if err != nil {
		return "", fmt.Errorf("purchase %s total: %w", p.ID, err)
	}
	if totalMinor <= 0 {
		return "purchase " + p.ID + " cost nothing; no refund share to revoke", nil
	}
	og, err := h.purchaseGrant(p)
	if err != nil {
		return "", err
	}
	// fsm forgets a revocation's request id after its idempotency retention
	// (7 to 14 days of log time), and every event about a charge lists all
	// its refunds: a refund weeks after the first would revoke the first
	// one's share again. When the charge has more than one refund, or credits
	// of the purchase were revoked before (this refund's, told again, or a
	// dispute's), the ledger says which revocations were made. When neither,
	// nothing of the purchase was ever revoked: there is nothing to give
	// back, no dispute that holds its credits and no credits given back.
	var m *purchaseMoves
	if len(refunds) > 1 || og.Revoked > 0 {
		m = newPurchaseMoves(og)
		if err := h.readMoves(ctx, m); err != nil {
			return "", err
		}
	}
	notes, err := h.giveBackFailed(ctx, p, m, chargeRef, refunds)
	if err != nil {
		return "", err
	}
	held, err := h.heldDisputes(ctx, p, m, nil, chargeRef)
	if err != nil {
		return "", err
	}
	ds, revs, err := chargeShares(p, totalMinor, chargeRef, refunds, held)
	if err != nil {
		return "", err
	}
	moves, whole := movementsOf(chargeRef, ds, revs)
	if m != nil {
		settleOrderRounding(revs, ds, m)
	}
	for _, rv := range revs {
		if rv.Credits == 0 {
			continue // Amount 0 would mean "all that remains".
		}
		req := clip(refundRequestID(rv.RefundID), fsm.MaxIDLen)
		if m != nil && m.takenBy(req) > 0 {
			notes = append(notes, "revocation "+req+" already applied")
			continue
		}
		note, err := h.revoke(ctx, fsm.RevokeGrant{GrantID: p.GrantID, Amount: rv.Credits,
			Reason:    clip("refund "+rv.RefundID+" of charge "+chargeRef, fsm.MaxReasonLen),
			RequestID: req})
		if err != nil {
			return "", err
		}
		notes = append(notes, note)
	}
	if m != nil {
		backs, err := h.givenBackGrants(ctx, og)
		if err != nil {
			return "", err
		}
		more, err := h.makeUp(ctx, p, m, moves, whole, backs)
		if err != nil {
			return "", err
		}
		notes = append(notes, more...)
	}
	if len(notes) == 0 {
		return "no refund of charge " + chargeRef + " revokes credits", nil
	}
	return strings.Join(notes, "; "), nil
}

// purchaseGrant reads the grant a succeeded purchase made.
func (h *WebhookHandler) purchaseGrant(p fsm.Purchase) (fsm.Grant, error) {
	og, found, err := h.readGrant(p.GrantID)
	if err != nil {
		return fsm.Grant{}, err
	}
	if !found {
		return fsm.Grant{}, fmt.Errorf("purchase %s names grant %s, which does not exist", p.ID, p.GrantID)
	}
	return og, nil
}

// refundUpdated handles an event about one refund. A refund that failed or
// was canceled gives back what its revocation took; the charge's refunds
// are read again so that later refunds take their share from the credits
// given back. Other changes are left to charge.refunded, which carries the
// revocations.
func (h *WebhookHandler) refundUpdated(ctx context.Context, p fsm.Purchase, ev Event) (string, error) {
	if len(ev.Refunds) != 1 {
		return "", fmt.Errorf("refund event %s carries %d refunds, want 1", ev.ID, len(ev.Refunds))
	}
	r := ev.Refunds[0]
	if r.Counts {
		return "refund " + r.ID + " is " + ev.ProviderStatus + "; revocations follow charge.refunded", nil
	}
	if ev.ObjectRef == "" {
		// No charge to list: give back this refund's credits alone.
		if p.Status != fsm.PurchaseSucceeded || p.GrantID == "" {
			return "purchase " + p.ID + " has no grant; refund " + r.ID + " revoked nothing", nil
		}
		og, err := h.purchaseGrant(p)
		if err != nil {
			return "", err
		}
		var m *purchaseMoves
		if og.Revoked > 0 {
			m = newPurchaseMoves(og)
			if err := h.readMoves(ctx, m); err != nil {
				return "", err
			}
		}
		notes, err := h.giveBackFailed(ctx, p, m, "", ev.Refunds)
		if err != nil || len(notes) == 0 {
			return "refund " + r.ID + " revoked nothing; nothing to give back", err
		}
		return strings.Join(notes, "; "), nil
	}
	return h.refund(ctx, p, ev)
}

func (h *WebhookHandler) revoke(ctx context.Context, c fsm.RevokeGrant) (string, error) {
	res, err := h.o.Applier.Apply(ctx, c)
	if err != nil {
		return "", fmt.Errorf("revoke grant %s (%s): %w", c.GrantID, c.RequestID, err)
	}
	if res.Err != nil && fsm.CodeOf(res.Err) == fsm.CodeConflict {
		// Made before with another amount: a refund that failed since
		// changed the running total this share is computed on. The first
		// revocation stands.
		return "revocation " + c.RequestID + " already applied (with the share computed then)", nil
	}
	if res.Err != nil {
		// A grant already used up, expired or revoked has nothing left to
		// take back; the ledger shows why.
		h.log.Warn("revocation refused", "grant", c.GrantID, "request", c.RequestID, "err", res.Err)
		return "revoke " + c.RequestID + ": " + res.Err.Error(), nil
	}
	if res.Duplicate {
		return "revocation " + c.RequestID + " already applied", nil
	}
	return fmt.Sprintf("revocation %s applied", c.RequestID), nil
}

// paysMoney says the outcome reports money received.
func paysMoney(o fsm.PurchaseOutcome) bool {
	return o == fsm.OutcomeSucceeded || o == fsm.OutcomeInvoicePaid
}

func outcomeName(o fsm.PurchaseOutcome) string {
	switch o {
	case fsm.OutcomeProgress:
		return "progress"
	case fsm.OutcomeSucceeded:
		return "succeeded"
	case fsm.OutcomeFailed:
		return "failed"
	case fsm.OutcomeInvoiceIssued:
		return "invoice issued"
	case fsm.OutcomeInvoicePaid:
		return "invoice paid"
	}
	return fmt.Sprintf("outcome %d", o)
}

// clip cuts s to at most n bytes, on a rune boundary, so provider text never
// makes fsm refuse a command for length.
func clip(s string, n int) string {
	if len(s) <= n {
		return s
	}
	for n > 0 && (s[n]&0xC0) == 0x80 {
		n--
	}
	return s[:n]
}

// seenSet remembers event ids: those applied (bounded, oldest forgotten
// first) and those being applied right now.
type seenSet struct {
	mu      sync.Mutex
	limit   int
	applied map[string]struct{}
	order   []string // ring of done ids, oldest at head
	head    int
	busy    map[string]struct{}
}

type seenState uint8

const (
	seenNew seenState = iota
	seenBusy
	seenDone
)

func newSeenSet(limit int) *seenSet {
	return &seenSet{limit: limit, applied: make(map[string]struct{}, limit), busy: map[string]struct{}{}}
}

// begin claims id for applying, unless it is done or claimed.
func (s *seenSet) begin(id string) seenState {
	s.mu.Lock()
	defer s.mu.Unlock()
	if _, ok := s.applied[id]; ok {
		return seenDone
	}
	if _, ok := s.busy[id]; ok {
		return seenBusy
	}
	s.busy[id] = struct{}{}
	return seenNew
}

func (s *seenSet) abort(id string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	delete(s.busy, id)
}

func (s *seenSet) done(id string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	delete(s.busy, id)
	if _, ok := s.applied[id]; ok {
		return
	}
	if len(s.order) < s.limit {
		s.order = append(s.order, id)
	} else {
		delete(s.applied, s.order[s.head])
		s.order[s.head] = id
		s.head = (s.head + 1) % s.limit
	}
	s.applied[id] = struct{}{}
}

func (s *seenSet) len() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return len(s.applied)
}
