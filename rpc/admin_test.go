package rpc

import (
	"context"
	"net/http"
	"os"
	"strings"
	"testing"

	"connectrpc.com/connect"

	"github.com/creditd/creditd/fsm"
	v1 "github.com/creditd/creditd/gen/creditd/v1"
)

// wantErr fails the test unless ce has the code and, when field is set, a
// FieldViolation naming that field.
func wantErr(t testing.TB, what string, ce *connect.Error, code connect.Code, field string) {
	t.Helper()
	if ce == nil {
		t.Fatalf("%s: succeeded, want %v", what, code)
	}
	if ce.Code() != code {
		t.Fatalf("%s: %v, want %v", what, ce, code)
	}
	if field == "" {
		return
	}
	fv, err := fieldDetail(ce)
	if err != nil || fv.Field != field {
		t.Fatalf("%s: field violation %v (%v), want field %s; error %v", what, fv, err, field, ce)
	}
	if !strings.HasPrefix(ce.Message(), field+": ") {
		t.Fatalf("%s: message %q does not start with %q", what, ce.Message(), field+": ")
	}
}

// TestCompletePurchase completes purchases by hand, as an operator does
// with the manual connector, through a Connect client against a real node.
func TestCompletePurchase(t *testing.T) {
	s := startSingle(t, nodeOpts{})
	c := newClients(s.url, "")
	setupCatalog(t, c)
	buy := func(id string, flow v1.PurchaseFlow) {
		t.Helper()
		call(t, c.purchase.PurchaseCredits, &v1.PurchaseCreditsRequest{IdempotencyKey: id, CustomerId: "acme", Credits: "500", Flow: flow})
	}
	balance := func() string {
		t.Helper()
		return call(t, c.balance.GetBalance, &v1.GetBalanceRequest{CustomerId: "acme", CreditTypeId: "ai-credits"}).Balance
	}

	// A wire transfer arrived: the purchase succeeds and grants.
	buy("buy-1", v1.PurchaseFlow_PURCHASE_FLOW_SELF_SERVE)
	done := &v1.CompletePurchaseRequest{Id: "buy-1", Outcome: v1.PurchaseOutcome_PURCHASE_OUTCOME_SUCCEEDED,
		ProviderRef: "wire-2026-0042", ProviderStatus: "wire received"}
	r := call(t, c.purchase.CompletePurchase, done)
	if p := r.Purchase; r.Duplicate || p.Status != v1.PurchaseStatus_PURCHASE_STATUS_SUCCEEDED || p.GrantId != "purchase:buy-1" ||
		p.Credits != "500.00" || p.Total != "5.00" || p.ProviderRef != "wire-2026-0042" || p.ProviderStatus != "wire received" {
		t.Fatalf("CompletePurchase = %v", r)
	}
	if b := balance(); b != "500.00" {
		t.Fatalf("balance after the purchase = %s, want 500.00", b)
	}
	// GetPurchase answers the same message.
	if gp := call(t, c.purchase.GetPurchase, &v1.GetPurchaseRequest{Id: "buy-1"}); gp.Purchase.GrantId != r.Purchase.GrantId ||
		gp.Purchase.Status != r.Purchase.Status {
		t.Fatalf("GetPurchase = %v, want %v", gp.Purchase, r.Purchase)
	}
	// Replays, and reports that agree with the end state, change nothing.
	for _, o := range []v1.PurchaseOutcome{v1.PurchaseOutcome_PURCHASE_OUTCOME_SUCCEEDED, v1.PurchaseOutcome_PURCHASE_OUTCOME_PROGRESS} {
		again := call(t, c.purchase.CompletePurchase, &v1.CompletePurchaseRequest{Id: "buy-1", Outcome: o})
		if !again.Duplicate || again.Purchase.Status != v1.PurchaseStatus_PURCHASE_STATUS_SUCCEEDED || again.Purchase.ProviderRef != "wire-2026-0042" {
			t.Fatalf("CompletePurchase %v again = %v, want the purchase marked duplicate", o, again)
		}
	}
	if b := balance(); b != "500.00" {
		t.Fatalf("balance after replays = %s, want 500.00 (granted once)", b)
	}

	// An invoice paid elsewhere: issued (progress, the plan grants on
	// payment), then paid.
	buy("inv-1", v1.PurchaseFlow_PURCHASE_FLOW_INVOICE)
	issued := call(t, c.purchase.CompletePurchase, &v1.CompletePurchaseRequest{Id: "inv-1",
		Outcome: v1.PurchaseOutcome_PURCHASE_OUTCOME_INVOICE_ISSUED, ProviderRef: "INV-7", ProviderStatus: "open"})
	if issued.Purchase.Status != v1.PurchaseStatus_PURCHASE_STATUS_PENDING || issued.Purchase.ProviderRef != "INV-7" {
		t.Fatalf("invoice issued = %v, want pending with the reference", issued)
	}
	paid := call(t, c.purchase.CompletePurchase, &v1.CompletePurchaseRequest{Id: "inv-1",
		Outcome: v1.PurchaseOutcome_PURCHASE_OUTCOME_INVOICE_PAID, ProviderStatus: "paid"})
	if p := paid.Purchase; p.Status != v1.PurchaseStatus_PURCHASE_STATUS_SUCCEEDED || p.ProviderRef != "INV-7" || p.ProviderStatus != "paid" {
		t.Fatalf("invoice paid = %v", paid)
	}

	// A deal that fell through fails with its reason; then it stays failed.
	buy("buy-2", v1.PurchaseFlow_PURCHASE_FLOW_SELF_SERVE)
	failed := call(t, c.purchase.CompletePurchase, &v1.CompletePurchaseRequest{Id: "buy-2",
		Outcome: v1.PurchaseOutcome_PURCHASE_OUTCOME_FAILED, FailureReason: "wire never arrived"})
	if p := failed.Purchase; failed.Duplicate || p.Status != v1.PurchaseStatus_PURCHASE_STATUS_FAILED || p.FailureReason != "wire never arrived" || p.GrantId != "" {
		t.Fatalf("failed purchase = %v", failed)
	}
	if again := call(t, c.purchase.CompletePurchase, &v1.CompletePurchaseRequest{Id: "buy-2",
		Outcome: v1.PurchaseOutcome_PURCHASE_OUTCOME_FAILED, FailureReason: "wire never arrived"}); !again.Duplicate {
		t.Fatalf("failing a failed purchase again = %v, want duplicate", again)
	}
	buy("buy-3", v1.PurchaseFlow_PURCHASE_FLOW_SELF_SERVE)

	for _, tc := range []struct {
		name  string
		req   *v1.CompletePurchaseRequest
		code  connect.Code
		field string
	}{
		{"an unknown purchase", &v1.CompletePurchaseRequest{Id: "nope", Outcome: v1.PurchaseOutcome_PURCHASE_OUTCOME_SUCCEEDED},
			connect.CodeNotFound, "id"},
		{"failing a succeeded purchase", &v1.CompletePurchaseRequest{Id: "buy-1", Outcome: v1.PurchaseOutcome_PURCHASE_OUTCOME_FAILED, FailureReason: "chargeback"},
			connect.CodeFailedPrecondition, "outcome"},
		{"succeeding a failed purchase", &v1.CompletePurchaseRequest{Id: "buy-2", Outcome: v1.PurchaseOutcome_PURCHASE_OUTCOME_SUCCEEDED},
			connect.CodeFailedPrecondition, "outcome"},
		{"failure without a reason", &v1.CompletePurchaseRequest{Id: "buy-3", Outcome: v1.PurchaseOutcome_PURCHASE_OUTCOME_FAILED},
			connect.CodeInvalidArgument, "failure_reason"},
		{"a reason without failure", &v1.CompletePurchaseRequest{Id: "buy-3", Outcome: v1.PurchaseOutcome_PURCHASE_OUTCOME_SUCCEEDED, FailureReason: "x"},
			connect.CodeInvalidArgument, "failure_reason"},
		{"no outcome", &v1.CompletePurchaseRequest{Id: "buy-3"}, connect.CodeInvalidArgument, "outcome"},
		{"an unknown outcome", &v1.CompletePurchaseRequest{Id: "buy-3", Outcome: 99}, connect.CodeInvalidArgument, "outcome"},
		{"an invoice outcome of a card purchase", &v1.CompletePurchaseRequest{Id: "buy-3", Outcome: v1.PurchaseOutcome_PURCHASE_OUTCOME_INVOICE_PAID},
			connect.CodeFailedPrecondition, "outcome"},
		{"a bad id", &v1.CompletePurchaseRequest{Id: "buy 3", Outcome: v1.PurchaseOutcome_PURCHASE_OUTCOME_SUCCEEDED},
			connect.CodeInvalidArgument, "id"},
		{"a long provider reference", &v1.CompletePurchaseRequest{Id: "buy-3", Outcome: v1.PurchaseOutcome_PURCHASE_OUTCOME_PROGRESS,
			ProviderRef: strings.Repeat("r", 257)}, connect.CodeInvalidArgument, "provider_ref"},
		{"a long failure reason", &v1.CompletePurchaseRequest{Id: "buy-3", Outcome: v1.PurchaseOutcome_PURCHASE_OUTCOME_FAILED,
			FailureReason: strings.Repeat("r", 1025)}, connect.CodeInvalidArgument, "failure_reason"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			wantErr(t, tc.name, callErr(t, c.purchase.CompletePurchase, tc.req), tc.code, tc.field)
		})
	}
	// None of the refusals changed anything.
	if p := call(t, c.purchase.GetPurchase, &v1.GetPurchaseRequest{Id: "buy-3"}).Purchase; p.Status != v1.PurchaseStatus_PURCHASE_STATUS_PENDING {
		t.Fatalf("buy-3 after refused reports = %v, want pending", p)
	}
	if b := balance(); b != "1000.00" {
		t.Fatalf("balance = %s, want 1000.00 (buy-1 and inv-1)", b)
	}
}

// TestCompleteAutomaticTopUp completes the purchase creditd's automatic
// top-up started, as on a machine without Stripe.
func TestCompleteAutomaticTopUp(t *testing.T) {
	s := startSingle(t, nodeOpts{})
	c := newClients(s.url, "")
	setupCatalog(t, c)
	call(t, c.catalog.UpsertCustomer, &v1.UpsertCustomerRequest{Id: "acme", Name: "Acme", PlanId: "pro", AutoTopUp: &v1.AutoTopUp{
		Enabled: true, Threshold: "100", Mode: v1.AutoTopUpMode_AUTO_TOP_UP_MODE_FIXED, Amount: "500"}})
	call(t, c.grant.CreateGrant, &v1.CreateGrantRequest{Id: "g1", CustomerId: "acme", CreditTypeId: "ai-credits",
		Category: v1.GrantCategory_GRANT_CATEGORY_PROMOTIONAL, Amount: "150"})
	call(t, c.usage.ReportUsage, &v1.ReportUsageRequest{Events: []*v1.UsageEvent{{Id: "e1", CustomerId: "acme", CreditTypeId: "ai-credits", Credits: "60"}}})
	pending := call(t, c.catalog.GetCustomer, &v1.GetCustomerRequest{Id: "acme"}).Customer.AutoPendingPurchaseId
	if pending == "" {
		t.Fatal("no automatic purchase started below the threshold")
	}
	r := call(t, c.purchase.CompletePurchase, &v1.CompletePurchaseRequest{Id: pending, Outcome: v1.PurchaseOutcome_PURCHASE_OUTCOME_SUCCEEDED,
		ProviderRef: "manual"})
	if p := r.Purchase; p.Flow != v1.PurchaseFlow_PURCHASE_FLOW_AUTO || p.Status != v1.PurchaseStatus_PURCHASE_STATUS_SUCCEEDED || p.Credits != "500.00" {
		t.Fatalf("completed top-up = %v", p)
	}
	if b := call(t, c.balance.GetBalance, &v1.GetBalanceRequest{CustomerId: "acme", CreditTypeId: "ai-credits"}); b.Balance != "590.00" {
		t.Fatalf("balance after the top-up = %v, want 590.00", b)
	}
	if cu := call(t, c.catalog.GetCustomer, &v1.GetCustomerRequest{Id: "acme"}).Customer; cu.AutoPendingPurchaseId != "" {
		t.Fatalf("customer still waits for %s", cu.AutoPendingPurchaseId)
	}
}

// TestOperatorReportReplacesTheConnectorStatus: the manual connector leaves
// a purchase "awaiting operator"; the operator's final report, sent without
// a provider status of its own, must not leave that status on a purchase
// that has ended. One the operator gives is kept as given.
func TestOperatorReportReplacesTheConnectorStatus(t *testing.T) {
	s := startSingle(t, nodeOpts{})
	c := newClients(s.url, "")
	setupCatalog(t, c)
	for _, id := range []string{"buy-1", "buy-2", "buy-3", "inv-1"} {
		flow := v1.PurchaseFlow_PURCHASE_FLOW_SELF_SERVE
		if id == "inv-1" {
			flow = v1.PurchaseFlow_PURCHASE_FLOW_INVOICE
		}
		call(t, c.purchase.PurchaseCredits, &v1.PurchaseCreditsRequest{IdempotencyKey: id, CustomerId: "acme", Credits: "100", Flow: flow})
		// What the billing worker records for the manual connector
		// (billing/worker.go, ErrOperatorAction), through node.Apply as
		// it does.
		res, err := s.n.Apply(ctxT(t), fsm.CompletePurchase{ID: id, Outcome: fsm.OutcomeProgress, ProviderStatus: "awaiting operator"})
		if err != nil || res.Err != nil {
			t.Fatalf("record awaiting operator for %s: %v %v", id, err, res.Err)
		}
	}
	for _, tc := range []struct {
		req        *v1.CompletePurchaseRequest
		wantStatus v1.PurchaseStatus
		want       string
	}{
		{&v1.CompletePurchaseRequest{Id: "buy-1", Outcome: v1.PurchaseOutcome_PURCHASE_OUTCOME_SUCCEEDED, ProviderRef: "x"},
			v1.PurchaseStatus_PURCHASE_STATUS_SUCCEEDED, "succeeded: reported by operator"},
		{&v1.CompletePurchaseRequest{Id: "buy-2", Outcome: v1.PurchaseOutcome_PURCHASE_OUTCOME_FAILED, FailureReason: "wire never arrived"},
			v1.PurchaseStatus_PURCHASE_STATUS_FAILED, "failed: reported by operator"},
		{&v1.CompletePurchaseRequest{Id: "buy-3", Outcome: v1.PurchaseOutcome_PURCHASE_OUTCOME_SUCCEEDED, ProviderStatus: "wire received"},
			v1.PurchaseStatus_PURCHASE_STATUS_SUCCEEDED, "wire received"},
		// Issued is not the end: the purchase still waits for the operator.
		{&v1.CompletePurchaseRequest{Id: "inv-1", Outcome: v1.PurchaseOutcome_PURCHASE_OUTCOME_INVOICE_ISSUED, ProviderRef: "INV-7"},
			v1.PurchaseStatus_PURCHASE_STATUS_PENDING, "awaiting operator"},
		{&v1.CompletePurchaseRequest{Id: "inv-1", Outcome: v1.PurchaseOutcome_PURCHASE_OUTCOME_INVOICE_PAID},
			v1.PurchaseStatus_PURCHASE_STATUS_SUCCEEDED, "paid: reported by operator"},
	} {
		p := call(t, c.purchase.CompletePurchase, tc.req).Purchase
		if p.Status != tc.wantStatus || p.ProviderStatus != tc.want {
			t.Fatalf("CompletePurchase %s %v: status %v, provider status %q; want %v, %q", tc.req.Id, tc.req.Outcome,
				p.Status, p.ProviderStatus, tc.wantStatus, tc.want)
		}
		if g := call(t, c.purchase.GetPurchase, &v1.GetPurchaseRequest{Id: tc.req.Id}).Purchase; g.ProviderStatus != tc.want {
			t.Fatalf("GetPurchase %s: provider status %q, want %q", tc.req.Id, g.ProviderStatus, tc.want)
		}
	}
	// A replay of a finished purchase changes nothing, its status included.
	again := call(t, c.purchase.CompletePurchase, &v1.CompletePurchaseRequest{Id: "buy-3", Outcome: v1.PurchaseOutcome_PURCHASE_OUTCOME_SUCCEEDED})
	if !again.Duplicate || again.Purchase.ProviderStatus != "wire received" {
		t.Fatalf("replay of buy-3 = %v, want duplicate with %q", again, "wire received")
	}
}

// TestAdjustGrant makes signed corrections through a Connect client against
// a real node and finds them in the ledger.
func TestAdjustGrant(t *testing.T) {
	s := startSingle(t, nodeOpts{})
	c := newClients(s.url, "")
	setupCatalog(t, c)
	call(t, c.grant.CreateGrant, &v1.CreateGrantRequest{Id: "g-paid", CustomerId: "acme", CreditTypeId: "ai-credits",
		Category: v1.GrantCategory_GRANT_CATEGORY_PAID, Amount: "100", CostBasis: "0.01", Currency: "USD"})
	call(t, c.grant.CreateGrant, &v1.CreateGrantRequest{Id: "g-gone", CustomerId: "acme", CreditTypeId: "ai-credits",
		Category: v1.GrantCategory_GRANT_CATEGORY_PROMOTIONAL, Amount: "1"})
	call(t, c.grant.RevokeGrant, &v1.RevokeGrantRequest{GrantId: "g-gone", Reason: "test"})

	// Take 12.5 credits away; the grant and its deferred revenue shrink.
	down := &v1.AdjustGrantRequest{Id: "adj-1", GrantId: "g-paid", Amount: "-12.5", Reason: "double-counted batch 7"}
	r := call(t, c.grant.AdjustGrant, down)
	if g := r.Grant; r.Duplicate || g.Remaining != "87.50" || g.Amount != "87.50" || g.Deferred != "0.875" || g.Adjusted != "-12.50" {
		t.Fatalf("AdjustGrant -12.5 = %v", r)
	}
	// A replay changes nothing and says so.
	if again := call(t, c.grant.AdjustGrant, down); !again.Duplicate || again.Grant.Remaining != "87.50" {
		t.Fatalf("AdjustGrant replay = %v, want duplicate", again)
	}
	// Give 2.25 back, with a plus sign.
	if up := call(t, c.grant.AdjustGrant, &v1.AdjustGrantRequest{Id: "adj-2", GrantId: "g-paid", Amount: "+2.25", Reason: "goodwill"}); up.Grant.Remaining != "89.75" {
		t.Fatalf("AdjustGrant +2.25 = %v", up)
	}
	es := call(t, c.ledger.ListEntries, &v1.ListEntriesRequest{CustomerId: "acme"}).Entries
	var adj []*v1.LedgerEntry
	for _, e := range es {
		if e.Kind == v1.EntryKind_ENTRY_KIND_ADJUST {
			adj = append(adj, e)
		}
	}
	if len(adj) != 2 || adj[0].Amount != "-12.50" || adj[0].CauseId != "adj-1" || adj[0].Reason != "double-counted batch 7" ||
		adj[0].Money != "-0.125" || adj[0].BalanceAfter != "87.50" || adj[1].Amount != "2.25" || adj[1].BalanceAfter != "89.75" {
		t.Fatalf("adjust entries = %v", adj)
	}

	for _, tc := range []struct {
		name  string
		req   *v1.AdjustGrantRequest
		code  connect.Code
		field string
	}{
		{"an unknown grant", &v1.AdjustGrantRequest{Id: "a", GrantId: "nope", Amount: "1", Reason: "r"}, connect.CodeNotFound, "grant_id"},
		{"no reason", &v1.AdjustGrantRequest{Id: "a", GrantId: "g-paid", Amount: "1"}, connect.CodeInvalidArgument, "reason"},
		{"a long reason", &v1.AdjustGrantRequest{Id: "a", GrantId: "g-paid", Amount: "1", Reason: strings.Repeat("r", 1025)}, connect.CodeInvalidArgument, "reason"},
		{"zero", &v1.AdjustGrantRequest{Id: "a", GrantId: "g-paid", Amount: "-0.00", Reason: "r"}, connect.CodeInvalidArgument, "amount"},
		{"no amount", &v1.AdjustGrantRequest{Id: "a", GrantId: "g-paid", Reason: "r"}, connect.CodeInvalidArgument, "amount"},
		{"a sign alone", &v1.AdjustGrantRequest{Id: "a", GrantId: "g-paid", Amount: "-", Reason: "r"}, connect.CodeInvalidArgument, "amount"},
		{"two signs", &v1.AdjustGrantRequest{Id: "a", GrantId: "g-paid", Amount: "--1", Reason: "r"}, connect.CodeInvalidArgument, "amount"},
		{"more places than the scale", &v1.AdjustGrantRequest{Id: "a", GrantId: "g-paid", Amount: "-1.001", Reason: "r"}, connect.CodeInvalidArgument, "amount"},
		{"not a number", &v1.AdjustGrantRequest{Id: "a", GrantId: "g-paid", Amount: "1e3", Reason: "r"}, connect.CodeInvalidArgument, "amount"},
		{"too large", &v1.AdjustGrantRequest{Id: "a", GrantId: "g-paid", Amount: "-99999999999999999999", Reason: "r"}, connect.CodeInvalidArgument, "amount"},
		{"a bad id", &v1.AdjustGrantRequest{Id: "a b", GrantId: "g-paid", Amount: "1", Reason: "r"}, connect.CodeInvalidArgument, "id"},
		{"no id", &v1.AdjustGrantRequest{GrantId: "g-paid", Amount: "1", Reason: "r"}, connect.CodeInvalidArgument, "id"},
		{"more than remains", &v1.AdjustGrantRequest{Id: "a", GrantId: "g-paid", Amount: "-100", Reason: "r"}, connect.CodeFailedPrecondition, "amount"},
		{"a revoked grant", &v1.AdjustGrantRequest{Id: "a", GrantId: "g-gone", Amount: "1", Reason: "r"}, connect.CodeFailedPrecondition, "grant_id"},
		{"an id reused with another amount", &v1.AdjustGrantRequest{Id: "adj-1", GrantId: "g-paid", Amount: "-1", Reason: "double-counted batch 7"},
			connect.CodeAlreadyExists, "id"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			wantErr(t, tc.name, callErr(t, c.grant.AdjustGrant, tc.req), tc.code, tc.field)
		})
	}
	// The shortfall is written in the credit type's scale.
	ce := callErr(t, c.grant.AdjustGrant, &v1.AdjustGrantRequest{Id: "a", GrantId: "g-paid", Amount: "-100", Reason: "r"})
	if want := "amount: grant g-paid has 89.75 remaining; cannot remove 100.00"; ce == nil || ce.Message() != want {
		t.Fatalf("too large a removal: %v, want %q", ce, want)
	}
	if g := call(t, c.grant.ListGrants, &v1.ListGrantsRequest{CustomerId: "acme",
		Statuses: []v1.GrantStatus{v1.GrantStatus_GRANT_STATUS_ACTIVE}}).Grants[0]; g.Id != "g-paid" || g.Remaining != "89.75" {
		t.Fatalf("grant after refused adjustments = %v", g)
	}
}

// TestAdminMethodsNeedTheAdminScope: ingest and read keys are refused
// before anything is read or changed.
func TestAdminMethodsNeedTheAdminScope(t *testing.T) {
	keys := []APIKey{{Scope: ScopeIngest, Key: ingestKey}, {Scope: ScopeRead, Key: readKey}, {Scope: ScopeAdmin, Key: adminKey}}
	s := startSingle(t, nodeOpts{rpc: Options{APIKeys: keys}})
	setupCatalog(t, newClients(s.url, adminKey))
	complete := func(ctx context.Context, c *clients) error {
		_, err := c.purchase.CompletePurchase(ctx, connect.NewRequest(&v1.CompletePurchaseRequest{Id: "nope",
			Outcome: v1.PurchaseOutcome_PURCHASE_OUTCOME_SUCCEEDED}))
		return err
	}
	adjust := func(ctx context.Context, c *clients) error {
		_, err := c.grant.AdjustGrant(ctx, connect.NewRequest(&v1.AdjustGrantRequest{Id: "a", GrantId: "nope", Amount: "1", Reason: "r"}))
		return err
	}
	for _, tc := range []struct {
		name string
		key  string
		op   func(context.Context, *clients) error
		want connect.Code
	}{
		{"ingest may not complete purchases", ingestKey, complete, connect.CodePermissionDenied},
		{"read may not complete purchases", readKey, complete, connect.CodePermissionDenied},
		{"admin may complete purchases", adminKey, complete, connect.CodeNotFound}, // authorized; the purchase does not exist
		{"no key may not complete purchases", "", complete, connect.CodeUnauthenticated},
		{"ingest may not adjust grants", ingestKey, adjust, connect.CodePermissionDenied},
		{"read may not adjust grants", readKey, adjust, connect.CodePermissionDenied},
		{"admin may adjust grants", adminKey, adjust, connect.CodeNotFound},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if err := tc.op(ctxT(t), newClients(s.url, tc.key)); connect.CodeOf(err) != tc.want {
				t.Fatalf("got %v, want %v", err, tc.want)
			}
		})
	}
}

// TestOperatorMethodsWithJSON is the README's operator section as curl
// sends it: complete a purchase paid by wire, then correct a grant. With
// CREDITD_WALKTHROUGH_ADMIN=file it writes the transcript there.
func TestOperatorMethodsWithJSON(t *testing.T) {
	s := startSingle(t, nodeOpts{})
	c := &curl{t: t, base: s.url}
	c.ok("/creditd.v1.CatalogService/CreateCreditType", `{"id":"ai-credits","name":"AI credits","scale":2}`)
	c.ok("/creditd.v1.CatalogService/UpsertPlan", `{"plan":{"id":"pro","name":"Pro","creditTypeId":"ai-credits","currency":"USD","pricePerCredit":"0.01","minPurchase":"100","defaultExpiry":"31536000s"}}`)
	c.ok("/creditd.v1.CatalogService/UpsertCustomer", `{"id":"acme","name":"Acme Inc.","planId":"pro"}`)
	if os.Getenv("CREDITD_WALKTHROUGH_ADMIN") != "" {
		c.transcript = &strings.Builder{}
	}
	c.ok("/creditd.v1.PurchaseService/PurchaseCredits", `{"idempotencyKey":"deal-2026-11","customerId":"acme","credits":"5000","flow":"PURCHASE_FLOW_INVOICE"}`)
	p := c.ok("/creditd.v1.PurchaseService/CompletePurchase", `{"id":"deal-2026-11","outcome":"PURCHASE_OUTCOME_SUCCEEDED","providerRef":"wire-2026-0042","providerStatus":"wire received"}`)
	if get(p, "purchase", "status") != "PURCHASE_STATUS_SUCCEEDED" || get(p, "purchase", "grantId") != "purchase:deal-2026-11" {
		t.Fatalf("CompletePurchase = %v", p)
	}
	a := c.ok("/creditd.v1.GrantService/AdjustGrant", `{"id":"fix-2026-11-1","grantId":"purchase:deal-2026-11","amount":"-250","reason":"contract says 4,750 credits"}`)
	if get(a, "grant", "remaining") != "4750.00" || get(a, "grant", "adjusted") != "-250.00" {
		t.Fatalf("AdjustGrant = %v", a)
	}
	l := c.ok("/creditd.v1.LedgerService/ListEntries", `{"customerId":"acme"}`)
	if get(l, "entries", "0", "kind") != "ENTRY_KIND_GRANT" || get(l, "entries", "1", "kind") != "ENTRY_KIND_ADJUST" ||
		get(l, "entries", "1", "amount") != "-250.00" || get(l, "entries", "1", "money") != "-2.50" {
		t.Fatalf("ListEntries = %v", l)
	}
	code, e := c.post("/creditd.v1.PurchaseService/CompletePurchase", `{"id":"deal-2026-11","outcome":"PURCHASE_OUTCOME_FAILED","failureReason":"wire recalled"}`)
	if code != http.StatusBadRequest || e["code"] != "failed_precondition" {
		t.Fatalf("failing a succeeded purchase: %d %v", code, e)
	}
	code, e = c.post("/creditd.v1.GrantService/AdjustGrant", `{"id":"fix-2026-11-2","grantId":"purchase:deal-2026-11","amount":"-5000","reason":"typo"}`)
	if code != http.StatusBadRequest || e["code"] != "failed_precondition" || e["message"] != "amount: grant purchase:deal-2026-11 has 4750.00 remaining; cannot remove 5000.00" {
		t.Fatalf("removing more than remains: %d %v", code, e)
	}

	// An automatic top-up with no provider to charge: below 1,000 available
	// credits, buy 2,000; the operator completes the purchase it starts.
	c.ok("/creditd.v1.CatalogService/UpsertCustomer", `{"id":"acme","name":"Acme Inc.","planId":"pro","autoTopUp":{"enabled":true,"threshold":"1000","mode":"AUTO_TOP_UP_MODE_FIXED","amount":"2000"}}`)
	c.ok("/creditd.v1.UsageService/ReportUsage", `{"events":[{"id":"batch-1","customerId":"acme","creditTypeId":"ai-credits","credits":"4000"}]}`)
	cu := c.ok("/creditd.v1.CatalogService/GetCustomer", `{"id":"acme"}`)
	auto, _ := get(cu, "customer", "autoPendingPurchaseId").(string)
	if auto == "" {
		t.Fatalf("no automatic purchase pending: %v", cu)
	}
	ap := c.ok("/creditd.v1.PurchaseService/CompletePurchase", `{"id":"`+auto+`","outcome":"PURCHASE_OUTCOME_SUCCEEDED","providerRef":"manual"}`)
	if get(ap, "purchase", "flow") != "PURCHASE_FLOW_AUTO" || get(ap, "purchase", "status") != "PURCHASE_STATUS_SUCCEEDED" ||
		get(ap, "purchase", "providerStatus") != "succeeded: reported by operator" {
		t.Fatalf("CompletePurchase of the top-up = %v", ap)
	}
	if b := c.ok("/creditd.v1.BalanceService/GetBalance", `{"customerId":"acme","creditTypeId":"ai-credits"}`); get(b, "balance") != "2750.00" {
		t.Fatalf("balance after the top-up = %v, want 2750.00", b)
	}
	if path := os.Getenv("CREDITD_WALKTHROUGH_ADMIN"); path != "" {
		if err := os.WriteFile(path, []byte(c.transcript.String()), 0o644); err != nil {
			t.Fatal(err)
		}
	}
}
