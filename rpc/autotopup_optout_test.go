package rpc

import (
	"testing"

	"connectrpc.com/connect"

	v1 "github.com/creditd/creditd/gen/creditd/v1"
)

// A customer turns its plan's auto top-up off with "autoTopUp":
// {"enabled": false}: a present auto_top_up is the customer's own settings,
// however empty. rpc made such a message the zero settings, which fsm takes
// for none of the customer's own, so the plan's top-up went on starting
// purchases below its threshold; GetCustomer showed no settings. An
// UpsertCustomer without auto_top_up goes back to the plan's.
func TestACustomerTurnsOffThePlansAutoTopUp(t *testing.T) {
	s := startSingle(t, nodeOpts{})
	setupCatalog(t, newClients(s.url, ""))
	for _, tc := range []struct {
		name     string
		customer string
		opts     []connect.ClientOption
	}{
		{"in protobuf", "acme", nil},
		{"in JSON", "beta", []connect.ClientOption{connect.WithProtoJSON()}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c := newClients(s.url, "", tc.opts...)
			call(t, c.catalog.UpsertPlan, &v1.UpsertPlanRequest{Plan: &v1.Plan{
				Id: "pro", Name: "Pro", CreditTypeId: "ai-credits", Currency: "USD", PricePerCredit: "0.01",
				MinPurchase: "100", MaxPurchase: "100000", AutoTopUp: &v1.AutoTopUp{
					Enabled: true, Threshold: "100", Mode: v1.AutoTopUpMode_AUTO_TOP_UP_MODE_FIXED, Amount: "500"}}})
			up := call(t, c.catalog.UpsertCustomer, &v1.UpsertCustomerRequest{Id: tc.customer, PlanId: "pro",
				AutoTopUp: &v1.AutoTopUp{Enabled: false}})
			if a := up.Customer.AutoTopUp; a == nil || a.Enabled {
				t.Fatalf("UpsertCustomer answered auto_top_up %v, want the customer's own, disabled", a)
			}
			if a := call(t, c.catalog.GetCustomer, &v1.GetCustomerRequest{Id: tc.customer}).Customer.AutoTopUp; a == nil || a.Enabled {
				t.Fatalf("GetCustomer auto_top_up %v, want the customer's own, disabled", a)
			}
			call(t, c.grant.CreateGrant, &v1.CreateGrantRequest{Id: "g-" + tc.customer, CustomerId: tc.customer,
				CreditTypeId: "ai-credits", Category: v1.GrantCategory_GRANT_CATEGORY_PROMOTIONAL, Amount: "150"})
			burn := func(id, credits string) {
				t.Helper()
				r := call(t, c.usage.ReportUsage, &v1.ReportUsageRequest{Events: []*v1.UsageEvent{{Id: id,
					CustomerId: tc.customer, CreditTypeId: "ai-credits", Credits: credits}}})
				if e := r.Results[0]; e.Status != v1.EventStatus_EVENT_STATUS_BURNED {
					t.Fatalf("event %s: %v", id, e)
				}
			}
			burn(tc.customer+"-1", "60") // 90 left: below the plan's 100
			if cu := call(t, c.catalog.GetCustomer, &v1.GetCustomerRequest{Id: tc.customer}).Customer; cu.AutoPendingPurchaseId != "" {
				t.Fatalf("the plan's auto top-up started %s for a customer that turned it off", cu.AutoPendingPurchaseId)
			}

			// Without auto_top_up the customer follows the plan again.
			up = call(t, c.catalog.UpsertCustomer, &v1.UpsertCustomerRequest{Id: tc.customer, PlanId: "pro"})
			if up.Customer.AutoTopUp != nil {
				t.Fatalf("UpsertCustomer without auto_top_up answered %v, want none", up.Customer.AutoTopUp)
			}
			burn(tc.customer+"-2", "1")
			if cu := call(t, c.catalog.GetCustomer, &v1.GetCustomerRequest{Id: tc.customer}).Customer; cu.AutoPendingPurchaseId == "" {
				t.Fatalf("the plan's auto top-up did not start once the customer follows it (last: %q)", cu.AutoTopUpLast)
			}
		})
	}
}
