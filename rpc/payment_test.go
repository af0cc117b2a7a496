package rpc

import (
	"context"
	"errors"
	"testing"

	"github.com/creditd/creditd/fsm"
	v1 "github.com/creditd/creditd/gen/creditd/v1"
)

// TestGetPurchaseShowsThePaymentAction: once the billing worker has started
// a self-serve payment, GetPurchase carries what the front end needs.
func TestGetPurchaseShowsThePaymentAction(t *testing.T) {
	lookups := map[string]error{"buy-2": errors.New("provider down")}
	pay := func(_ context.Context, id string) (PaymentAction, error) {
		if err := lookups[id]; err != nil {
			return PaymentAction{}, err
		}
		return PaymentAction{ClientSecret: "pi_1_secret_x", ProviderStatus: "requires_action"}, nil
	}
	s := startSingle(t, nodeOpts{rpc: Options{Payments: pay}})
	c := newClients(s.url, "")
	setupCatalog(t, c)
	for _, id := range []string{"buy-1", "buy-2"} {
		call(t, c.purchase.PurchaseCredits, &v1.PurchaseCreditsRequest{IdempotencyKey: id, CustomerId: "acme", Credits: "100",
			Flow: v1.PurchaseFlow_PURCHASE_FLOW_SELF_SERVE})
	}
	if got := call(t, c.purchase.GetPurchase, &v1.GetPurchaseRequest{Id: "buy-1"}); got.PaymentAction != nil {
		t.Fatalf("payment action before the payment started: %v", got.PaymentAction)
	}
	// The billing worker records the provider's payment (as it does through
	// node.Apply).
	for _, id := range []string{"buy-1", "buy-2"} {
		res, err := s.n.Apply(ctxT(t), fsm.CompletePurchase{ID: id, Outcome: fsm.OutcomeProgress, ProviderRef: "pi_" + id, ProviderStatus: "requires_action"})
		if err != nil || res.Err != nil {
			t.Fatalf("record payment: %v %v", err, res.Err)
		}
	}
	got := call(t, c.purchase.GetPurchase, &v1.GetPurchaseRequest{Id: "buy-1"})
	if a := got.PaymentAction; a == nil || a.ClientSecret != "pi_1_secret_x" || a.ProviderStatus != "requires_action" {
		t.Fatalf("payment action = %v", got.PaymentAction)
	}
	// A failed lookup leaves the action out; the purchase is still answered.
	got = call(t, c.purchase.GetPurchase, &v1.GetPurchaseRequest{Id: "buy-2"})
	if got.PaymentAction != nil || got.Purchase.ProviderRef != "pi_buy-2" {
		t.Fatalf("GetPurchase with a failing lookup = %v", got)
	}
}
