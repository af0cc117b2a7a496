package rpc

import (
	"bytes"
	"errors"
	"slices"
	"strings"
	"testing"
	"time"

	"connectrpc.com/connect"
	"google.golang.org/protobuf/types/known/durationpb"
	"google.golang.org/protobuf/types/known/timestamppb"

	v1 "github.com/creditd/creditd/gen/creditd/v1"
)

// setupCatalog creates the credit type, feature, plan and customer the
// tests share: "ai-credits" of scale 2, "gpt-tokens" at 0.002 credits per
// token, plan "pro" at 0.01 USD per credit, customer "acme".
func setupCatalog(t testing.TB, c *clients) {
	t.Helper()
	call(t, c.catalog.CreateCreditType, &v1.CreateCreditTypeRequest{Id: "ai-credits", Name: "AI credits", Scale: 2})
	call(t, c.catalog.UpsertFeature, &v1.UpsertFeatureRequest{Id: "gpt-tokens", Name: "GPT tokens", CreditTypeId: "ai-credits", Rate: "0.002"})
	call(t, c.catalog.UpsertPlan, &v1.UpsertPlanRequest{Plan: &v1.Plan{
		Id: "pro", Name: "Pro", CreditTypeId: "ai-credits", Currency: "USD", PricePerCredit: "0.01",
		MinPurchase: "100", MaxPurchase: "100000", DefaultExpiry: durationpb.New(365 * 24 * time.Hour),
	}})
	call(t, c.catalog.UpsertCustomer, &v1.UpsertCustomerRequest{Id: "acme", Name: "Acme", BillingRef: "cus_123", PlanId: "pro"})
}

// TestEveryMethodOnOneNode walks every method through a real Connect client
// over HTTP/2 against a real single-node cluster.
func TestEveryMethodOnOneNode(t *testing.T) {
	s := startSingle(t, nodeOpts{})
	c := newClients(s.url, "")
	setupCatalog(t, c)

	// Catalog reads.
	cu := call(t, c.catalog.GetCustomer, &v1.GetCustomerRequest{Id: "acme"})
	if cu.Customer.PlanId != "pro" || cu.Customer.BillingRef != "cus_123" || cu.AppliedIndex == 0 {
		t.Fatalf("GetCustomer = %v", cu)
	}
	fs := call(t, c.catalog.ListFeatures, &v1.ListFeaturesRequest{Consistency: v1.Consistency_CONSISTENCY_STALE})
	if len(fs.Features) != 1 || fs.Features[0].Rate != "0.002" {
		t.Fatalf("ListFeatures = %v", fs)
	}
	// Auto top-up amounts are in the plan's credit type; money in its currency.
	up := call(t, c.catalog.UpsertCustomer, &v1.UpsertCustomerRequest{Id: "beta", PlanId: "pro", AutoTopUp: &v1.AutoTopUp{
		Enabled: true, Threshold: "100", Mode: v1.AutoTopUpMode_AUTO_TOP_UP_MODE_TO_TARGET, Amount: "500.5", MonthlyCap: "49.99"}})
	if a := up.Customer.AutoTopUp; a == nil || a.Threshold != "100.00" || a.Amount != "500.50" || a.MonthlyCap != "49.99" ||
		a.Mode != v1.AutoTopUpMode_AUTO_TOP_UP_MODE_TO_TARGET {
		t.Fatalf("UpsertCustomer auto top-up = %v", up.Customer)
	}
	// Creating the same credit type again returns it.
	again := call(t, c.catalog.CreateCreditType, &v1.CreateCreditTypeRequest{Id: "ai-credits", Name: "AI credits", Scale: 2})
	if again.CreditType.Scale != 2 {
		t.Fatalf("CreateCreditType again = %v", again)
	}

	// Grants: paid and promotional; a replay is a duplicate.
	paid := &v1.CreateGrantRequest{Id: "g-paid", CustomerId: "acme", CreditTypeId: "ai-credits",
		Category: v1.GrantCategory_GRANT_CATEGORY_PAID, Amount: "1000", CostBasis: "0.01", Currency: "USD"}
	g := call(t, c.grant.CreateGrant, paid)
	if g.Duplicate || g.Grant.Remaining != "1000.00" || g.Grant.Deferred != "10.00" || g.Grant.Status != v1.GrantStatus_GRANT_STATUS_ACTIVE {
		t.Fatalf("CreateGrant paid = %v", g)
	}
	if g2 := call(t, c.grant.CreateGrant, paid); !g2.Duplicate || g2.Grant.Id != "g-paid" {
		t.Fatalf("CreateGrant replay = %v, want duplicate", g2)
	}
	call(t, c.grant.CreateGrant, &v1.CreateGrantRequest{Id: "g-promo", CustomerId: "acme", CreditTypeId: "ai-credits",
		Category: v1.GrantCategory_GRANT_CATEGORY_PROMOTIONAL, Amount: "50",
		ExpiresAt: timestamppb.New(time.Now().Add(30 * 24 * time.Hour))})

	// Usage: 10,000 tokens = 20.00 credits from the promotional grant
	// (it expires first), 5.5 credits directly, a denial, a rejection.
	usage := &v1.ReportUsageRequest{Events: []*v1.UsageEvent{
		{Id: "ev-1", CustomerId: "acme", FeatureId: "gpt-tokens", Quantity: 10000, EventTime: timestamppb.Now()},
		{Id: "ev-2", CustomerId: "acme", CreditTypeId: "ai-credits", Credits: "5.5"},
		{Id: "ev-3", CustomerId: "acme", FeatureId: "gpt-tokens", Quantity: 100_000_000},
		{Id: "ev-4", CustomerId: "nobody", FeatureId: "gpt-tokens", Quantity: 1},
	}}
	r := call(t, c.usage.ReportUsage, usage)
	if len(r.Results) != 4 {
		t.Fatalf("ReportUsage: %d results", len(r.Results))
	}
	if e := r.Results[0]; e.Status != v1.EventStatus_EVENT_STATUS_BURNED || e.Credits != "20.00" || len(e.Burns) != 1 ||
		e.Burns[0].GrantId != "g-promo" || e.BalanceAfter != "1030.00" {
		t.Fatalf("event 1 = %v", e)
	}
	if e := r.Results[1]; e.Status != v1.EventStatus_EVENT_STATUS_BURNED || e.Credits != "5.50" || e.AvailableAfter != "1024.50" {
		t.Fatalf("event 2 = %v", e)
	}
	if e := r.Results[2]; e.Status != v1.EventStatus_EVENT_STATUS_DENIED || e.Available != "1024.50" || e.Reason == "" {
		t.Fatalf("event 3 = %v", e)
	}
	if e := r.Results[3]; e.Status != v1.EventStatus_EVENT_STATUS_REJECTED || e.ErrorCode != "not_found" || e.Field != "customer_id" {
		t.Fatalf("event 4 = %v", e)
	}
	replay := call(t, c.usage.ReportUsage, &v1.ReportUsageRequest{Events: usage.Events[:1]})
	if e := replay.Results[0]; !e.Duplicate || e.Status != v1.EventStatus_EVENT_STATUS_BURNED || e.BalanceAfter != "1030.00" {
		t.Fatalf("replayed event = %v, want the original result marked duplicate", e)
	}

	// An unknown credit type is a rejection too, not an error.
	unk := call(t, c.usage.ReportUsage, &v1.ReportUsageRequest{Events: []*v1.UsageEvent{{Id: "ev-5", CustomerId: "acme", CreditTypeId: "nope", Credits: "1"}}})
	if e := unk.Results[0]; e.Status != v1.EventStatus_EVENT_STATUS_REJECTED || e.ErrorCode != "not_found" || e.Field != "credit_type_id" {
		t.Fatalf("event of an unknown credit type = %v", e)
	}

	// Check changes nothing.
	ck := call(t, c.usage.Check, &v1.CheckRequest{CustomerId: "acme", FeatureId: "gpt-tokens", Quantity: 1000})
	if !ck.Allowed || ck.Credits != "2.00" || ck.Available != "1024.50" {
		t.Fatalf("Check = %v", ck)
	}
	if ck := call(t, c.usage.Check, &v1.CheckRequest{CustomerId: "acme", CreditTypeId: "ai-credits", Credits: "5000",
		Consistency: v1.Consistency_CONSISTENCY_STALE}); ck.Allowed || ck.Reason == "" {
		t.Fatalf("Check of too much = %v", ck)
	}

	// Reserve, settle; reserve, release; reserve too much.
	res := call(t, c.usage.Reserve, &v1.ReserveRequest{Id: "r-1", CustomerId: "acme", CreditTypeId: "ai-credits", Credits: "100",
		Ttl: durationpb.New(time.Minute)})
	if res.Reservation.Amount != "100.00" || res.Reservation.Status != v1.ReservationStatus_RESERVATION_STATUS_HELD {
		t.Fatalf("Reserve = %v", res)
	}
	if b := call(t, c.balance.GetBalance, &v1.GetBalanceRequest{CustomerId: "acme", CreditTypeId: "ai-credits"}); b.Reserved != "100.00" || b.Available != "924.50" {
		t.Fatalf("balance while reserved = %v", b)
	}
	st := call(t, c.usage.Settle, &v1.SettleRequest{ReservationId: "r-1", Actual: &v1.SettleRequest_Credits{Credits: "10"}})
	if st.Reservation.Status != v1.ReservationStatus_RESERVATION_STATUS_SETTLED || st.Reservation.SettledAmount != "10.00" {
		t.Fatalf("Settle = %v", st)
	}
	call(t, c.usage.Reserve, &v1.ReserveRequest{Id: "r-2", CustomerId: "acme", FeatureId: "gpt-tokens", Quantity: 5000})
	rel := call(t, c.usage.Release, &v1.ReleaseRequest{ReservationId: "r-2"})
	if rel.Reservation.Status != v1.ReservationStatus_RESERVATION_STATUS_RELEASED || rel.Reservation.Amount != "10.00" {
		t.Fatalf("Release = %v", rel)
	}
	ce := callErr(t, c.usage.Reserve, &v1.ReserveRequest{Id: "r-3", CustomerId: "acme", CreditTypeId: "ai-credits", Credits: "99999"})
	if ce == nil || ce.Code() != connect.CodeFailedPrecondition {
		t.Fatalf("Reserve too much: %v, want FailedPrecondition", ce)
	}
	ic := insufficientDetail(t, ce)
	if ic.Available != "1014.50" || ic.Needed != "99999.00" || ic.CreditTypeId != "ai-credits" {
		t.Fatalf("InsufficientCredits = %v", ic)
	}

	// Balance: 1000 paid + 24.50 promo - 10 settled (from the promo).
	b := call(t, c.balance.GetBalance, &v1.GetBalanceRequest{CustomerId: "acme", CreditTypeId: "ai-credits"})
	if b.Balance != "1014.50" || b.Available != "1014.50" || b.Reserved != "0.00" || len(b.Grants) != 2 || b.Grants[0].Id != "g-promo" {
		t.Fatalf("GetBalance = %v", b)
	}

	// Revoke the rest of the promotional grant.
	rv := call(t, c.grant.RevokeGrant, &v1.RevokeGrantRequest{GrantId: "g-promo", Reason: "promo ended", RequestId: "rv-1"})
	if rv.Grant.Status != v1.GrantStatus_GRANT_STATUS_REVOKED || rv.Grant.Remaining != "0.00" {
		t.Fatalf("RevokeGrant = %v", rv)
	}

	// List grants one per page.
	var ids []string
	req := &v1.ListGrantsRequest{CustomerId: "acme", PageSize: 1}
	for {
		page := call(t, c.grant.ListGrants, req)
		for _, g := range page.Grants {
			ids = append(ids, g.Id)
		}
		if page.NextPageToken == "" {
			break
		}
		req.PageToken = page.NextPageToken
	}
	if len(ids) != 2 || ids[0] != "g-paid" || ids[1] != "g-promo" {
		t.Fatalf("ListGrants pages = %v", ids)
	}
	active := call(t, c.grant.ListGrants, &v1.ListGrantsRequest{Statuses: []v1.GrantStatus{v1.GrantStatus_GRANT_STATUS_REVOKED}})
	if len(active.Grants) != 1 || active.Grants[0].Id != "g-promo" {
		t.Fatalf("ListGrants revoked = %v", active.Grants)
	}

	// The ledger, paginated, in order.
	var entries []*v1.LedgerEntry
	lreq := &v1.ListEntriesRequest{CustomerId: "acme", PageSize: 2}
	for {
		page := call(t, c.ledger.ListEntries, lreq)
		entries = append(entries, page.Entries...)
		if page.NextPageToken == "" {
			break
		}
		lreq.PageToken = page.NextPageToken
	}
	// grant, grant, burn, burn, burn (settle), revoke
	kinds := []v1.EntryKind{v1.EntryKind_ENTRY_KIND_GRANT, v1.EntryKind_ENTRY_KIND_GRANT, v1.EntryKind_ENTRY_KIND_BURN,
		v1.EntryKind_ENTRY_KIND_BURN, v1.EntryKind_ENTRY_KIND_BURN, v1.EntryKind_ENTRY_KIND_REVOKE}
	if len(entries) != len(kinds) {
		t.Fatalf("ListEntries: %d entries, want %d: %v", len(entries), len(kinds), entries)
	}
	for i, e := range entries {
		if e.Kind != kinds[i] || (i > 0 && e.Seq <= entries[i-1].Seq) {
			t.Fatalf("entry %d = %v, want kind %v in sequence order", i, e, kinds[i])
		}
	}
	if last := entries[len(entries)-1]; last.BalanceAfter != "1000.00" || last.Amount != "-14.50" {
		t.Fatalf("revoke entry = %v", last)
	}

	// Purchases: recorded pending for the billing worker.
	p := call(t, c.purchase.PurchaseCredits, &v1.PurchaseCreditsRequest{IdempotencyKey: "buy-1", CustomerId: "acme", Credits: "500",
		Flow: v1.PurchaseFlow_PURCHASE_FLOW_SELF_SERVE})
	if p.Purchase.Status != v1.PurchaseStatus_PURCHASE_STATUS_PENDING || p.Purchase.Total != "5.00" || p.Purchase.Currency != "USD" {
		t.Fatalf("PurchaseCredits = %v", p)
	}
	gp := call(t, c.purchase.GetPurchase, &v1.GetPurchaseRequest{Id: "buy-1"})
	if gp.Purchase.Credits != "500.00" || gp.Purchase.Flow != v1.PurchaseFlow_PURCHASE_FLOW_SELF_SERVE {
		t.Fatalf("GetPurchase = %v", gp)
	}

	// Cluster.
	status := call(t, c.cluster.GetStatus, &v1.GetStatusRequest{})
	if status.NodeId != "n1" || status.State != "Leader" || !status.Ready || status.LastSeq != entries[len(entries)-1].Seq ||
		!strings.HasPrefix(status.ClusterId, "cluster-") {
		t.Fatalf("GetStatus = %v", status)
	}
	stream, err := c.cluster.SaveSnapshot(ctxT(t), connect.NewRequest(&v1.SaveSnapshotRequest{}))
	if err != nil {
		t.Fatal(err)
	}
	var snap bytes.Buffer
	for stream.Receive() {
		snap.Write(stream.Msg().Chunk)
	}
	if err := stream.Err(); err != nil || snap.Len() == 0 {
		t.Fatalf("SaveSnapshot: %d bytes, %v", snap.Len(), err)
	}
	if ce := callErr(t, c.cluster.RemoveMember, &v1.RemoveMemberRequest{NodeId: "n9"}); ce == nil || ce.Code() != connect.CodeNotFound {
		t.Fatalf("RemoveMember unknown: %v, want NotFound", ce)
	}
	if ce := callErr(t, c.cluster.TransferLeadership, &v1.TransferLeadershipRequest{NodeId: "n9"}); ce == nil || ce.Code() != connect.CodeNotFound {
		t.Fatalf("TransferLeadership to unknown: %v, want NotFound", ce)
	}
}

func insufficientDetail(t testing.TB, ce *connect.Error) *v1.InsufficientCredits {
	t.Helper()
	for _, d := range ce.Details() {
		v, err := d.Value()
		if err != nil {
			t.Fatalf("detail: %v", err)
		}
		if ic, ok := v.(*v1.InsufficientCredits); ok {
			return ic
		}
	}
	t.Fatalf("no InsufficientCredits detail in %v", ce)
	return nil
}

func fieldDetail(ce *connect.Error) (*v1.FieldViolation, error) {
	for _, d := range ce.Details() {
		v, err := d.Value()
		if err != nil {
			return nil, err
		}
		if fv, ok := v.(*v1.FieldViolation); ok {
			return fv, nil
		}
	}
	return nil, errors.New("no FieldViolation detail")
}

// ListFeatures pages through the catalog in id order; a page size of 0
// gives up to 1,000, so a small catalog still comes whole in one call.
func TestListFeaturesPagesInIDOrder(t *testing.T) {
	s := startSingle(t, nodeOpts{})
	c := newClients(s.url, "")
	setupCatalog(t, c) // gpt-tokens
	for _, id := range []string{"a-images", "z-audio", "m-search", "b-embed"} {
		call(t, c.catalog.UpsertFeature, &v1.UpsertFeatureRequest{Id: id, Name: id, CreditTypeId: "ai-credits", Rate: "1"})
	}
	want := []string{"a-images", "b-embed", "gpt-tokens", "m-search", "z-audio"}
	ids := func(fs []*v1.Feature) (out []string) {
		for _, f := range fs {
			out = append(out, f.Id)
		}
		return out
	}
	whole := call(t, c.catalog.ListFeatures, &v1.ListFeaturesRequest{})
	if got := ids(whole.Features); !slices.Equal(got, want) || whole.NextPageToken != "" {
		t.Fatalf("one call: %v (next %q), want %v and no next page", got, whole.NextPageToken, want)
	}
	var paged []string
	req := &v1.ListFeaturesRequest{PageSize: 2, Consistency: v1.Consistency_CONSISTENCY_STALE}
	for pages := 1; ; pages++ {
		r := call(t, c.catalog.ListFeatures, req)
		if len(r.Features) > 2 || pages > 3 {
			t.Fatalf("page %d has %d features (size 2, 5 features)", pages, len(r.Features))
		}
		paged = append(paged, ids(r.Features)...)
		if r.NextPageToken == "" {
			break
		}
		req.PageToken = r.NextPageToken
	}
	if !slices.Equal(paged, want) {
		t.Fatalf("pages of 2: %v, want %v", paged, want)
	}

	grantToken := grantPageToken("g-1")
	for _, tc := range []struct {
		name  string
		req   *v1.ListFeaturesRequest
		field string
	}{
		{"page size over 1000", &v1.ListFeaturesRequest{PageSize: 1001}, "page_size"},
		{"negative page size", &v1.ListFeaturesRequest{PageSize: -1}, "page_size"},
		{"not a token", &v1.ListFeaturesRequest{PageToken: "%%%"}, "page_token"},
		{"a ListGrants token", &v1.ListFeaturesRequest{PageToken: grantToken}, "page_token"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			err := callErr(t, c.catalog.ListFeatures, tc.req)
			if err.Code() != connect.CodeInvalidArgument || !strings.HasPrefix(err.Message(), tc.field+":") {
				t.Fatalf("got %v, want INVALID_ARGUMENT naming %s", err, tc.field)
			}
		})
	}
}
