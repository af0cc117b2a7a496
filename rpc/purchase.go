package rpc

import (
	"context"
	"log/slog"
	"time"

	"connectrpc.com/connect"

	"github.com/creditd/creditd/fsm"
	v1 "github.com/creditd/creditd/gen/creditd/v1"
)

func (a *api) PurchaseCredits(ctx context.Context, req *connect.Request[v1.PurchaseCreditsRequest]) (*connect.Response[v1.PurchaseCreditsResponse], error) {
	return handle(ctx, a.s, req, func(c *leaderClients) func(context.Context, *connect.Request[v1.PurchaseCreditsRequest]) (*connect.Response[v1.PurchaseCreditsResponse], error) {
		return c.purchase.PurchaseCredits
	}, func(ctx context.Context, m *v1.PurchaseCreditsRequest) (*v1.PurchaseCreditsResponse, error) {
		if err := firstError(checkID("idempotency_key", m.IdempotencyKey), checkID("customer_id", m.CustomerId)); err != nil {
			return nil, err
		}
		// The purchase's grant is fsm.PurchaseGrantPrefix + key: held to an
		// ordinary id's length, it stays one every tool and export accepts
		// (older, longer ones are still accepted where grants are named).
		if len(fsm.PurchaseGrantPrefix)+len(m.IdempotencyKey) > fsm.MaxIDLen {
			return nil, invalidField("idempotency_key", "must be at most %d characters: the purchase's grant is %s<key>, an id of at most %d",
				fsm.MaxIDLen-len(fsm.PurchaseGrantPrefix), fsm.PurchaseGrantPrefix, fsm.MaxIDLen)
		}
		cmd := fsm.StartPurchase{ID: m.IdempotencyKey, CustomerID: m.CustomerId}
		switch m.Flow {
		case v1.PurchaseFlow_PURCHASE_FLOW_SELF_SERVE:
			cmd.Flow = fsm.FlowSelfServe
		case v1.PurchaseFlow_PURCHASE_FLOW_INVOICE:
			cmd.Flow = fsm.FlowInvoice
		default:
			return nil, invalidField("flow", "must be PURCHASE_FLOW_SELF_SERVE or PURCHASE_FLOW_INVOICE")
		}
		// The customer's plan (and so the credit type and its scale) can
		// change: a follower's state may not have the latest, nor may a
		// leader that has not applied the whole log yet, so the leader
		// prices the purchase once it is current (on a follower this is
		// *node.NotLeaderError: forwarded).
		if err := a.s.n.LinearizableRead(ctx); err != nil {
			return nil, err
		}
		var ctID string
		var scale uint8
		err := a.s.preRead(ctx, func(v *fsm.View) error {
			c, err := v.Customer(m.CustomerId)
			if err != nil {
				if fsm.CodeOf(err) == fsm.CodeNotFound {
					return notFoundField("customer_id", "no customer %s", m.CustomerId)
				}
				return err
			}
			if c.PlanID == "" {
				return preconditionField("customer_id", "customer %s has no plan to price a purchase", m.CustomerId)
			}
			p, err := v.Plan(c.PlanID)
			if err != nil {
				return err
			}
			ctID = p.CreditTypeID
			scale, err = newScales(v).of("customer_id", ctID)
			return err
		})
		if err != nil {
			return nil, err
		}
		if cmd.Credits, err = parseAmount("credits", m.Credits, scale, false, false); err != nil {
			return nil, err
		}
		res, err := a.s.apply(ctx, cmd)
		if err != nil {
			// The state machine calls the key "id" (it is the purchase's
			// id); the caller sent it as idempotency_key.
			return nil, inCredits(renamedField(err, "id", "idempotency_key"), ctID, scale)
		}
		return &v1.PurchaseCreditsResponse{Purchase: purchasePB(*res.Value.(*fsm.Purchase), scale), Duplicate: res.Duplicate}, nil
	})
}

func (a *api) GetPurchase(ctx context.Context, req *connect.Request[v1.GetPurchaseRequest]) (*connect.Response[v1.GetPurchaseResponse], error) {
	return handle(ctx, a.s, req, func(c *leaderClients) func(context.Context, *connect.Request[v1.GetPurchaseRequest]) (*connect.Response[v1.GetPurchaseResponse], error) {
		return c.purchase.GetPurchase
	}, func(ctx context.Context, m *v1.GetPurchaseRequest) (*v1.GetPurchaseResponse, error) {
		if err := checkID("id", m.Id); err != nil {
			return nil, err
		}
		stale, err := checkConsistency("consistency", m.Consistency)
		if err != nil {
			return nil, err
		}
		out := &v1.GetPurchaseResponse{}
		err = a.s.read(ctx, stale, func(v *fsm.View) error {
			p, err := v.Purchase(m.Id)
			if err != nil {
				if fsm.CodeOf(err) == fsm.CodeNotFound {
					return notFoundField("id", "no purchase %s", m.Id)
				}
				return err
			}
			out.Purchase = purchasePB(p, newScales(v).known(p.CreditTypeID))
			out.AppliedIndex = v.AppliedIndex()
			return nil
		})
		if err != nil {
			return nil, err
		}
		out.PaymentAction = a.paymentAction(ctx, out.Purchase)
		return out, nil
	})
}

// paymentLookupTimeout bounds the billing provider call of GetPurchase.
const paymentLookupTimeout = 5 * time.Second

// paymentAction asks the billing side how to complete a pending self-serve
// payment that has started. The purchase itself is the answer's point: when
// the lookup fails, it is logged and the action left out, not the request
// failed.
func (a *api) paymentAction(ctx context.Context, p *v1.Purchase) *v1.PaymentAction {
	if a.s.opts.Payments == nil || p.Flow != v1.PurchaseFlow_PURCHASE_FLOW_SELF_SERVE ||
		p.Status != v1.PurchaseStatus_PURCHASE_STATUS_PENDING || p.ProviderRef == "" {
		return nil
	}
	ctx, cancel := context.WithTimeout(ctx, paymentLookupTimeout)
	defer cancel()
	act, err := a.s.opts.Payments(ctx, p.Id)
	if err != nil {
		a.s.log.WarnContext(ctx, "payment action lookup failed", slog.String("purchase_id", p.Id),
			slog.String("request_id", requestIDFrom(ctx)), slog.Any("err", err))
		return nil
	}
	if act.ClientSecret == "" && act.CheckoutURL == "" {
		return nil
	}
	return &v1.PaymentAction{ClientSecret: act.ClientSecret, CheckoutUrl: act.CheckoutURL, ProviderStatus: act.ProviderStatus}
}

func (a *api) CompletePurchase(ctx context.Context, req *connect.Request[v1.CompletePurchaseRequest]) (*connect.Response[v1.CompletePurchaseResponse], error) {
	return handle(ctx, a.s, req, func(c *leaderClients) func(context.Context, *connect.Request[v1.CompletePurchaseRequest]) (*connect.Response[v1.CompletePurchaseResponse], error) {
		return c.purchase.CompletePurchase
	}, a.completePurchase)
}

func (a *api) completePurchase(ctx context.Context, m *v1.CompletePurchaseRequest) (*v1.CompletePurchaseResponse, error) {
	if err := firstError(checkID("id", m.Id), checkText("provider_ref", m.ProviderRef, fsm.MaxNameLen),
		checkText("provider_status", m.ProviderStatus, fsm.MaxNameLen),
		checkReason("failure_reason", m.FailureReason)); err != nil {
		return nil, err
	}
	outcome, err := purchaseOutcomeFSM("outcome", m.Outcome)
	if err != nil {
		return nil, err
	}
	// The state machine asks for a reason only when a pending purchase
	// fails; the API asks every time, so that a call's validity does not
	// depend on a state the caller may not have seen, and refuses a reason
	// that would be silently dropped.
	switch {
	case outcome == fsm.OutcomeFailed && m.FailureReason == "":
		return nil, invalidField("failure_reason", "is required when a purchase fails")
	case outcome != fsm.OutcomeFailed && m.FailureReason != "":
		return nil, invalidField("failure_reason", "must be empty unless outcome is PURCHASE_OUTCOME_FAILED")
	}
	var scale uint8
	err = a.s.preRead(ctx, func(v *fsm.View) error {
		p, err := v.Purchase(m.Id)
		if err != nil {
			if fsm.CodeOf(err) == fsm.CodeNotFound {
				return notFoundField("id", "no purchase %s", m.Id)
			}
			return err
		}
		// The state machine would treat an invoice outcome of a card
		// payment as progress (issued) or success (paid); from an operator
		// that is a mistake of method, so it is refused. A purchase's flow
		// never changes, so any replica's copy decides this.
		if (outcome == fsm.OutcomeInvoiceIssued || outcome == fsm.OutcomeInvoicePaid) && p.Flow != fsm.FlowInvoice {
			return preconditionField("outcome", "purchase %s is not an invoice purchase; report PURCHASE_OUTCOME_SUCCEEDED or PURCHASE_OUTCOME_FAILED", m.Id)
		}
		scale, err = newScales(v).of("id", p.CreditTypeID)
		return err
	})
	if err != nil {
		return nil, err
	}
	status := m.ProviderStatus
	if status == "" {
		status = operatorStatus(outcome)
	}
	res, err := a.s.apply(ctx, fsm.CompletePurchase{ID: m.Id, Outcome: outcome, ProviderRef: m.ProviderRef,
		ProviderStatus: status, FailureReason: m.FailureReason})
	if err != nil {
		return nil, err
	}
	return &v1.CompletePurchaseResponse{Purchase: purchasePB(*res.Value.(*fsm.Purchase), scale), Duplicate: res.Duplicate}, nil
}

// operatorStatus is the provider status an operator's final report records
// when it carries none. The state machine keeps the old status when a
// report has none (a webhook or worker repeating itself must not erase
// it), so without this a purchase the manual connector left "awaiting
// operator" would still say so once it succeeded or failed. The wording
// follows the billing side's "<state>: <detail>". Reports that leave the
// purchase pending (progress, invoice issued) keep the old status.
func operatorStatus(o fsm.PurchaseOutcome) string {
	switch o {
	case fsm.OutcomeSucceeded:
		return "succeeded: reported by operator"
	case fsm.OutcomeInvoicePaid:
		return "paid: reported by operator"
	case fsm.OutcomeFailed:
		return "failed: reported by operator"
	}
	return ""
}

func purchaseOutcomeFSM(field string, o v1.PurchaseOutcome) (fsm.PurchaseOutcome, error) {
	switch o {
	case v1.PurchaseOutcome_PURCHASE_OUTCOME_PROGRESS:
		return fsm.OutcomeProgress, nil
	case v1.PurchaseOutcome_PURCHASE_OUTCOME_SUCCEEDED:
		return fsm.OutcomeSucceeded, nil
	case v1.PurchaseOutcome_PURCHASE_OUTCOME_FAILED:
		return fsm.OutcomeFailed, nil
	case v1.PurchaseOutcome_PURCHASE_OUTCOME_INVOICE_ISSUED:
		return fsm.OutcomeInvoiceIssued, nil
	case v1.PurchaseOutcome_PURCHASE_OUTCOME_INVOICE_PAID:
		return fsm.OutcomeInvoicePaid, nil
	}
	return 0, invalidField(field, "must be PURCHASE_OUTCOME_PROGRESS, _SUCCEEDED, _FAILED, _INVOICE_ISSUED or _INVOICE_PAID")
}
