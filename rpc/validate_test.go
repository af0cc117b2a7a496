package rpc

import (
	"context"
	"fmt"
	"strings"
	"testing"
	"time"

	"connectrpc.com/connect"
	"google.golang.org/protobuf/types/known/durationpb"
	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/creditd/creditd/fsm"
	v1 "github.com/creditd/creditd/gen/creditd/v1"
)

// errorCase is one request that must fail with code, naming field.
type errorCase struct {
	name  string
	send  func(ctx context.Context, c *clients) error
	code  connect.Code
	field string
}

func unaryErr[Req, Res any](fn func(context.Context, *connect.Request[Req]) (*connect.Response[Res], error), m *Req) func(context.Context, *clients) error {
	return func(ctx context.Context, _ *clients) error {
		_, err := fn(ctx, connect.NewRequest(m))
		return err
	}
}

func validationCases(c *clients) []errorCase {
	long := strings.Repeat("x", 129)
	paid := func(mod func(*v1.CreateGrantRequest)) *v1.CreateGrantRequest {
		r := &v1.CreateGrantRequest{Id: "gv", CustomerId: "acme", CreditTypeId: "ai-credits",
			Category: v1.GrantCategory_GRANT_CATEGORY_PAID, Amount: "10", CostBasis: "0.01", Currency: "USD"}
		mod(r)
		return r
	}
	ev := func(mod func(*v1.UsageEvent)) *v1.ReportUsageRequest {
		e := &v1.UsageEvent{Id: "ev", CustomerId: "acme", FeatureId: "gpt-tokens", Quantity: 1}
		mod(e)
		return &v1.ReportUsageRequest{Events: []*v1.UsageEvent{{Id: "ok", CustomerId: "acme", FeatureId: "gpt-tokens"}, e}}
	}
	tooMany := &v1.ReportUsageRequest{}
	for i := range 10001 {
		tooMany.Events = append(tooMany.Events, &v1.UsageEvent{Id: fmt.Sprint("e", i), CustomerId: "acme", FeatureId: "gpt-tokens"})
	}
	// Within 10,000 events and the message limit, but more than the 1 MiB
	// a log entry holds.
	tooBig := &v1.ReportUsageRequest{}
	for i := range 10000 {
		tooBig.Events = append(tooBig.Events, &v1.UsageEvent{Id: fmt.Sprintf("%0128d", i), CustomerId: "acme", FeatureId: "gpt-tokens"})
	}
	inv, nf, pre := connect.CodeInvalidArgument, connect.CodeNotFound, connect.CodeFailedPrecondition
	return []errorCase{
		{"a credit type needs an id", unaryErr(c.catalog.CreateCreditType, &v1.CreateCreditTypeRequest{Name: "x"}), inv, "id"},
		{"an id has a charset", unaryErr(c.catalog.CreateCreditType, &v1.CreateCreditTypeRequest{Id: "bad id"}), inv, "id"},
		{"an id has a length limit", unaryErr(c.catalog.CreateCreditType, &v1.CreateCreditTypeRequest{Id: long}), inv, "id"},
		{"a scale is at most 9", unaryErr(c.catalog.CreateCreditType, &v1.CreateCreditTypeRequest{Id: "c2", Scale: 10}), inv, "scale"},
		{"a name has a length limit", unaryErr(c.catalog.CreateCreditType, &v1.CreateCreditTypeRequest{Id: "c2", Name: strings.Repeat("n", 257)}), inv, "name"},
		{"a credit type's scale never changes", unaryErr(c.catalog.CreateCreditType, &v1.CreateCreditTypeRequest{Id: "ai-credits", Name: "AI credits", Scale: 3}), connect.CodeAlreadyExists, "id"},
		{"a rate is not negative", unaryErr(c.catalog.UpsertFeature, &v1.UpsertFeatureRequest{Id: "f", CreditTypeId: "ai-credits", Rate: "-1"}), inv, "rate"},
		{"a rate is a number", unaryErr(c.catalog.UpsertFeature, &v1.UpsertFeatureRequest{Id: "f", CreditTypeId: "ai-credits", Rate: "1e3"}), inv, "rate"},
		{"a rate has at most 12 places", unaryErr(c.catalog.UpsertFeature, &v1.UpsertFeatureRequest{Id: "f", CreditTypeId: "ai-credits", Rate: "0.0000000000001"}), inv, "rate"},
		{"a feature's credit type exists", unaryErr(c.catalog.UpsertFeature, &v1.UpsertFeatureRequest{Id: "f", CreditTypeId: "nope", Rate: "1"}), nf, "credit_type_id"},
		{"a plan is required", unaryErr(c.catalog.UpsertPlan, &v1.UpsertPlanRequest{}), inv, "plan"},
		{"a currency is ISO 4217", unaryErr(c.catalog.UpsertPlan, &v1.UpsertPlanRequest{Plan: &v1.Plan{Id: "p", CreditTypeId: "ai-credits", Currency: "usd", PricePerCredit: "1"}}), inv, "plan.currency"},
		{"a plan's amounts are in the scale", unaryErr(c.catalog.UpsertPlan, &v1.UpsertPlanRequest{Plan: &v1.Plan{Id: "p", CreditTypeId: "ai-credits", Currency: "USD", PricePerCredit: "1", MinPurchase: "1.234"}}), inv, "plan.min_purchase"},
		{"a plan's credit type exists", unaryErr(c.catalog.UpsertPlan, &v1.UpsertPlanRequest{Plan: &v1.Plan{Id: "p", CreditTypeId: "nope", Currency: "USD", PricePerCredit: "1"}}), nf, "plan.credit_type_id"},
		{"a plan's price is positive", unaryErr(c.catalog.UpsertPlan, &v1.UpsertPlanRequest{Plan: &v1.Plan{Id: "p", CreditTypeId: "ai-credits", Currency: "USD", PricePerCredit: "0"}}), inv, "plan.price_per_credit"},
		{"an auto top-up needs a plan", unaryErr(c.catalog.UpsertCustomer, &v1.UpsertCustomerRequest{Id: "c", AutoTopUp: &v1.AutoTopUp{Enabled: true}}), inv, "auto_top_up"},
		{"a customer's plan exists", unaryErr(c.catalog.UpsertCustomer, &v1.UpsertCustomerRequest{Id: "c", PlanId: "nope"}), nf, "plan_id"},
		{"an unknown customer is not found", unaryErr(c.catalog.GetCustomer, &v1.GetCustomerRequest{Id: "nobody"}), nf, "id"},
		{"an amount has at most the scale's places", unaryErr(c.grant.CreateGrant, paid(func(r *v1.CreateGrantRequest) { r.Amount = "1.234" })), inv, "amount"},
		{"a grant's amount is positive", unaryErr(c.grant.CreateGrant, paid(func(r *v1.CreateGrantRequest) { r.Amount = "0" })), inv, "amount"},
		{"an amount is not negative", unaryErr(c.grant.CreateGrant, paid(func(r *v1.CreateGrantRequest) { r.Amount = "-5" })), inv, "amount"},
		{"an amount has a range", unaryErr(c.grant.CreateGrant, paid(func(r *v1.CreateGrantRequest) { r.Amount = "99999999999999999999" })), inv, "amount"},
		{"an amount is a plain decimal", unaryErr(c.grant.CreateGrant, paid(func(r *v1.CreateGrantRequest) { r.Amount = "1,5" })), inv, "amount"},
		{"a grant has a category", unaryErr(c.grant.CreateGrant, paid(func(r *v1.CreateGrantRequest) { r.Category = 0 })), inv, "category"},
		{"an unknown enum number is refused", unaryErr(c.grant.CreateGrant, paid(func(r *v1.CreateGrantRequest) { r.Category = 42 })), inv, "category"},
		{"a paid grant has a currency", unaryErr(c.grant.CreateGrant, paid(func(r *v1.CreateGrantRequest) { r.Currency = "" })), inv, "currency"},
		{"a paid grant has a cost basis", unaryErr(c.grant.CreateGrant, paid(func(r *v1.CreateGrantRequest) { r.CostBasis = "" })), inv, "cost_basis"},
		{"a priority is at most 1000", unaryErr(c.grant.CreateGrant, paid(func(r *v1.CreateGrantRequest) { r.Priority = 1001 })), inv, "priority"},
		{"a grant expires after it starts", unaryErr(c.grant.CreateGrant, paid(func(r *v1.CreateGrantRequest) {
			r.EffectiveAt = timestamppb.New(time.Date(2030, 1, 2, 0, 0, 0, 0, time.UTC))
			r.ExpiresAt = timestamppb.New(time.Date(2030, 1, 1, 0, 0, 0, 0, time.UTC))
		})), inv, "expires_at"},
		{"a time is plausible", unaryErr(c.grant.CreateGrant, paid(func(r *v1.CreateGrantRequest) {
			r.EffectiveAt = timestamppb.New(time.Date(1990, 1, 1, 0, 0, 0, 0, time.UTC))
		})), inv, "effective_at"},
		{"a time is valid", unaryErr(c.grant.CreateGrant, paid(func(r *v1.CreateGrantRequest) { r.ExpiresAt = &timestamppb.Timestamp{Nanos: -1} })), inv, "expires_at"},
		{"a grant's customer exists", unaryErr(c.grant.CreateGrant, paid(func(r *v1.CreateGrantRequest) { r.CustomerId = "nobody" })), nf, "customer_id"},
		{"a grant's credit type exists", unaryErr(c.grant.CreateGrant, paid(func(r *v1.CreateGrantRequest) { r.CreditTypeId = "nope" })), nf, "credit_type_id"},
		{"a grant id reused with another payload conflicts", unaryErr(c.grant.CreateGrant, paid(func(r *v1.CreateGrantRequest) { r.Id = "g-seed"; r.Amount = "11" })), connect.CodeAlreadyExists, "id"},
		{"a batch is not empty", unaryErr(c.usage.ReportUsage, &v1.ReportUsageRequest{}), inv, "events"},
		{"a batch has at most 10,000 events", unaryErr(c.usage.ReportUsage, tooMany), inv, "events"},
		{"a batch fits in one log entry", unaryErr(c.usage.ReportUsage, tooBig), inv, "events"},
		{"an event's customer id has a charset", unaryErr(c.usage.ReportUsage, ev(func(e *v1.UsageEvent) { e.CustomerId = "a/b" })), inv, "events[1].customer_id"},
		{"an event's id is required", unaryErr(c.usage.ReportUsage, ev(func(e *v1.UsageEvent) { e.Id = "" })), inv, "events[1].id"},
		{"an event names a feature or a credit type, not both", unaryErr(c.usage.ReportUsage, ev(func(e *v1.UsageEvent) { e.CreditTypeId = "ai-credits" })), inv, "events[1].credit_type_id"},
		{"an event's credits are in the scale", unaryErr(c.usage.ReportUsage, ev(func(e *v1.UsageEvent) {
			e.FeatureId, e.Quantity, e.CreditTypeId, e.Credits = "", 0, "ai-credits", "0.001"
		})), inv, "events[1].credits"},
		{"an event's quantity is not negative", unaryErr(c.usage.ReportUsage, ev(func(e *v1.UsageEvent) { e.Quantity = -1 })), inv, "events[1].quantity"},
		{"an event's time is plausible", unaryErr(c.usage.ReportUsage, ev(func(e *v1.UsageEvent) { e.EventTime = &timestamppb.Timestamp{Seconds: 1} })), inv, "events[1].event_time"},
		{"a check names a feature", unaryErr(c.usage.Check, &v1.CheckRequest{CustomerId: "acme"}), inv, "feature_id"},
		{"a consistency is known", unaryErr(c.usage.Check, &v1.CheckRequest{CustomerId: "acme", FeatureId: "gpt-tokens", Consistency: 9}), inv, "consistency"},
		{"a check's customer exists", unaryErr(c.usage.Check, &v1.CheckRequest{CustomerId: "nobody", FeatureId: "gpt-tokens"}), nf, "customer_id"},
		// One credit per unit: the cost exceeds fsm.MaxAmount without
		// overflowing int64 on the way.
		{"a check's cost has the limit a burn has", unaryErr(c.usage.Check, &v1.CheckRequest{CustomerId: "acme", FeatureId: "units", Quantity: fsm.MaxAmount/100 + 1}), inv, "quantity"},
		{"a reservation in credits holds some", unaryErr(c.usage.Reserve, &v1.ReserveRequest{Id: "r", CustomerId: "acme", CreditTypeId: "ai-credits", Credits: "0"}), inv, "credits"},
		{"a reservation of a feature holds some credits", unaryErr(c.usage.Reserve, &v1.ReserveRequest{Id: "r", CustomerId: "acme", FeatureId: "gpt-tokens"}), inv, "quantity"},
		{"a hold lasts at most 24 hours", unaryErr(c.usage.Reserve, &v1.ReserveRequest{Id: "r", CustomerId: "acme", FeatureId: "gpt-tokens", Ttl: durationpb.New(25 * time.Hour)}), inv, "ttl"},
		{"a reservation's feature exists", unaryErr(c.usage.Reserve, &v1.ReserveRequest{Id: "r", CustomerId: "acme", FeatureId: "nope"}), nf, "feature_id"},
		{"a settlement gives the actual usage", unaryErr(c.usage.Settle, &v1.SettleRequest{ReservationId: "r"}), inv, "quantity"},
		{"a settlement's reservation exists", unaryErr(c.usage.Settle, &v1.SettleRequest{ReservationId: "nope", Actual: &v1.SettleRequest_Quantity{Quantity: 1}}), nf, "reservation_id"},
		{"a release's reservation exists", unaryErr(c.usage.Release, &v1.ReleaseRequest{ReservationId: "nope"}), nf, "reservation_id"},
		{"a reason has a length limit", unaryErr(c.grant.RevokeGrant, &v1.RevokeGrantRequest{GrantId: "g-seed", Reason: strings.Repeat("r", 1025)}), inv, "reason"},
		{"a revoked grant exists", unaryErr(c.grant.RevokeGrant, &v1.RevokeGrantRequest{GrantId: "nope"}), nf, "grant_id"},
		{"a page has at most 1000 items", unaryErr(c.grant.ListGrants, &v1.ListGrantsRequest{PageSize: 1001}), inv, "page_size"},
		{"a page token comes from the list", unaryErr(c.grant.ListGrants, &v1.ListGrantsRequest{PageToken: "garbage"}), inv, "page_token"},
		{"a status is known", unaryErr(c.grant.ListGrants, &v1.ListGrantsRequest{Statuses: []v1.GrantStatus{v1.GrantStatus_GRANT_STATUS_ACTIVE, 99}}), inv, "statuses[1]"},
		{"a ledger credit type needs a customer", unaryErr(c.ledger.ListEntries, &v1.ListEntriesRequest{CreditTypeId: "ai-credits"}), inv, "credit_type_id"},
		{"a ledger range is ordered", unaryErr(c.ledger.ListEntries, &v1.ListEntriesRequest{FromSeq: 5, ToSeq: 2}), inv, "to_seq"},
		{"a grant token is not a ledger token", unaryErr(c.ledger.ListEntries, &v1.ListEntriesRequest{PageToken: grantPageToken("g-seed")}), inv, "page_token"},
		{"a purchase names its flow", unaryErr(c.purchase.PurchaseCredits, &v1.PurchaseCreditsRequest{IdempotencyKey: "k", CustomerId: "acme", Credits: "100"}), inv, "flow"},
		{"an automatic purchase is creditd's to start", unaryErr(c.purchase.PurchaseCredits, &v1.PurchaseCreditsRequest{IdempotencyKey: "k", CustomerId: "acme", Credits: "100", Flow: v1.PurchaseFlow_PURCHASE_FLOW_AUTO}), inv, "flow"},
		{"a purchase needs a plan", unaryErr(c.purchase.PurchaseCredits, &v1.PurchaseCreditsRequest{IdempotencyKey: "k", CustomerId: "no-plan", Credits: "100", Flow: v1.PurchaseFlow_PURCHASE_FLOW_INVOICE}), connect.CodeFailedPrecondition, "customer_id"},
		{"a purchase's key is not an automatic top-up's", unaryErr(c.purchase.PurchaseCredits, &v1.PurchaseCreditsRequest{IdempotencyKey: "auto-7-0-0", CustomerId: "acme", Credits: "100", Flow: v1.PurchaseFlow_PURCHASE_FLOW_INVOICE}), inv, "idempotency_key"},
		{"a grant's id is not a purchase's grant's", unaryErr(c.grant.CreateGrant, paid(func(r *v1.CreateGrantRequest) { r.Id = "purchase:k" })), inv, "id"},
		{"a purchase's key is an id", unaryErr(c.purchase.PurchaseCredits, &v1.PurchaseCreditsRequest{IdempotencyKey: "k k", CustomerId: "acme", Credits: "100", Flow: v1.PurchaseFlow_PURCHASE_FLOW_INVOICE}), inv, "idempotency_key"},
		{"an unknown purchase is not found", unaryErr(c.purchase.GetPurchase, &v1.GetPurchaseRequest{Id: "nope"}), nf, "id"},
		{"a removed member is named", unaryErr(c.cluster.RemoveMember, &v1.RemoveMemberRequest{}), inv, "node_id"},
		{"a leadership transfer needs another voter", unaryErr(c.cluster.TransferLeadership, &v1.TransferLeadershipRequest{}), pre, "node_id"},
		{"a leadership transfer names another node", unaryErr(c.cluster.TransferLeadership, &v1.TransferLeadershipRequest{NodeId: "n1"}), inv, "node_id"},
		{"a leadership transfer names a member", unaryErr(c.cluster.TransferLeadership, &v1.TransferLeadershipRequest{NodeId: "n9"}), nf, "node_id"},
		{"a watch's credit type needs a customer", func(ctx context.Context, c *clients) error {
			s, err := c.ledger.WatchEntries(ctx, connect.NewRequest(&v1.WatchEntriesRequest{CreditTypeId: "ai-credits"}))
			if err != nil {
				return err
			}
			defer s.Close()
			for s.Receive() {
			}
			return s.Err()
		}, inv, "credit_type_id"},
	}
}

// TestValidationErrorsNameTheField sends each invalid request and checks
// its code and the FieldViolation detail (and the "field: " message).
func TestValidationErrorsNameTheField(t *testing.T) {
	s := startSingle(t, nodeOpts{})
	c := newClients(s.url, "")
	setupCatalog(t, c)
	call(t, c.catalog.UpsertCustomer, &v1.UpsertCustomerRequest{Id: "no-plan"})
	call(t, c.catalog.UpsertFeature, &v1.UpsertFeatureRequest{Id: "units", Name: "Units", CreditTypeId: "ai-credits", Rate: "1"})
	call(t, c.grant.CreateGrant, &v1.CreateGrantRequest{Id: "g-seed", CustomerId: "acme", CreditTypeId: "ai-credits",
		Category: v1.GrantCategory_GRANT_CATEGORY_PAID, Amount: "10", CostBasis: "0.01", Currency: "USD"})
	for _, tc := range validationCases(c) {
		t.Run(tc.name, func(t *testing.T) {
			err := tc.send(ctxT(t), c)
			if connect.CodeOf(err) != tc.code {
				t.Fatalf("got %v, want %v", err, tc.code)
			}
			ce := err.(*connect.Error)
			if !strings.HasPrefix(ce.Message(), tc.field+": ") {
				t.Errorf("message %q does not start with %q", ce.Message(), tc.field+": ")
			}
			fv, derr := fieldDetail(ce)
			if derr != nil || fv.Field != tc.field {
				t.Errorf("FieldViolation = %v (%v), want field %q", fv, derr, tc.field)
			}
			if ce.Meta().Get(RequestIDHeader) == "" {
				t.Errorf("error carries no %s", RequestIDHeader)
			}
		})
	}
}

// TestMessageSizeLimit: a message above MaxMessageBytes is refused before
// it is decoded (Connect's RESOURCE_EXHAUSTED, as gRPC does).
func TestMessageSizeLimit(t *testing.T) {
	s := startSingle(t, nodeOpts{rpc: Options{MaxMessageBytes: 64 << 10}})
	c := newClients(s.url, "")
	big := &v1.ReportUsageRequest{}
	for i := range 1000 {
		big.Events = append(big.Events, &v1.UsageEvent{Id: fmt.Sprintf("%0128d", i), CustomerId: "acme", FeatureId: "gpt-tokens"})
	}
	if ce := callErr(t, c.usage.ReportUsage, big); ce == nil || ce.Code() != connect.CodeResourceExhausted {
		t.Fatalf("oversized batch: %v, want ResourceExhausted", ce)
	}
}

// TestDecimalMessages: a refused decimal is one sentence that names the
// field, quotes the text and says what is wrong with it once.
func TestDecimalMessages(t *testing.T) {
	amount := func(s string, scale uint8) error { _, err := parseAmount("amount", s, scale, false, false); return err }
	rate := func(s string) error { _, err := parseDecimal("rate", s, false); return err }
	signed := func(s string) error { _, err := parseSignedAmount("amount", s, 2); return err }
	for _, tc := range []struct {
		err  error
		want string
	}{
		{amount("1.234", 2), `amount: "1.234" has 3 decimal places, more than the 2 allowed`},
		{amount("1.5", 0), `amount: "1.5" must be a whole number, without decimal places`},
		{amount("1,5", 2), `amount: "1,5" is not a plain decimal number like "12.50"`},
		{amount("1a.234", 2), `amount: "1a.234" is not a plain decimal number like "12.50"`},
		{amount("5.", 2), `amount: "5." is not a plain decimal number like "12.50"`},
		{amount("7e2", 0), `amount: "7e2" is not a plain decimal number like "12"`},
		{checkAmountText("credits", "0.1234567891"), `credits: "0.1234567891" has 10 decimal places, more than the 9 allowed`},
		{checkAmountText("credits", "x"), `credits: "x" is not a plain decimal number like "12.5"`},
		{rate("0.0000000000001"), `rate: "0.0000000000001" has 13 decimal places, more than the 12 allowed`},
		{rate("1e3"), `rate: "1e3" is not a plain decimal number like "0.0025"`},
		// A signed amount is quoted as sent, sign included.
		{signed("-12.505"), `amount: "-12.505" has 3 decimal places, more than the 2 allowed`},
		{signed("+1,5"), `amount: "+1,5" is not a plain decimal number like "12.50"`},
	} {
		if tc.err == nil || tc.err.Error() != tc.want {
			t.Errorf("error %v, want %q", tc.err, tc.want)
		}
	}

	// As a client gets it: the field path, then the sentence.
	s := startSingle(t, nodeOpts{})
	c := newClients(s.url, "")
	setupCatalog(t, c)
	ce := callErr(t, c.grant.CreateGrant, &v1.CreateGrantRequest{Id: "g", CustomerId: "acme", CreditTypeId: "ai-credits",
		Category: v1.GrantCategory_GRANT_CATEGORY_PROMOTIONAL, Amount: "1.234"})
	if want := `amount: "1.234" has 3 decimal places, more than the 2 allowed`; ce == nil || ce.Message() != want {
		t.Fatalf("CreateGrant of 1.234 credits: %v, want message %q", ce, want)
	}
}
