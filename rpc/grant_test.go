package rpc

import (
	"fmt"
	"strings"
	"sync"
	"testing"

	"connectrpc.com/connect"

	"github.com/creditd/creditd/fsm"
	v1 "github.com/creditd/creditd/gen/creditd/v1"
)

// A purchase keyed with MaxIDLen characters (allowed before keys were held to
// 119) made a grant whose id is longer than other ids: refunds, corrections
// and ListGrants' page tokens must still work with it.
func TestAPurchaseGrantWithALongIDCanBeRefundedAndListed(t *testing.T) {
	s := startSingle(t, nodeOpts{})
	c := newClients(s.url, "")
	setupCatalog(t, c)
	key := strings.Repeat("k", fsm.MaxIDLen)
	for _, cmd := range []fsm.Command{
		fsm.StartPurchase{ID: key, CustomerID: "acme", Credits: 10000, Flow: fsm.FlowSelfServe},
		fsm.CompletePurchase{ID: key, Outcome: fsm.OutcomeSucceeded, ProviderStatus: "succeeded"},
	} {
		if res, err := s.n.Apply(ctxT(t), cmd); err != nil || res.Err != nil {
			t.Fatalf("%T: %v %v", cmd, err, res.Err)
		}
	}
	grantID := fsm.PurchaseGrantPrefix + key
	call(t, c.grant.CreateGrant, &v1.CreateGrantRequest{Id: "zz-promo", CustomerId: "acme", CreditTypeId: "ai-credits",
		Category: v1.GrantCategory_GRANT_CATEGORY_PROMOTIONAL, Amount: "1"})
	page := call(t, c.grant.ListGrants, &v1.ListGrantsRequest{CustomerId: "acme", PageSize: 1})
	if len(page.Grants) != 1 || page.Grants[0].Id != grantID || page.NextPageToken == "" {
		t.Fatalf("first page %v", page)
	}
	next := call(t, c.grant.ListGrants, &v1.ListGrantsRequest{CustomerId: "acme", PageSize: 1, PageToken: page.NextPageToken})
	if len(next.Grants) != 1 || next.Grants[0].Id != "zz-promo" {
		t.Fatalf("second page %v", next)
	}
	call(t, c.grant.RevokeGrant, &v1.RevokeGrantRequest{GrantId: grantID, Amount: "1.00", Reason: "refund", RequestId: "refund-1"})
	adj := call(t, c.grant.AdjustGrant, &v1.AdjustGrantRequest{Id: "adj-1", GrantId: grantID, Amount: "-1.00", Reason: "correction"})
	if adj.Grant.Remaining != "98.00" {
		t.Errorf("remaining %s after a revocation and an adjustment of 1.00 each, want 98.00", adj.Grant.Remaining)
	}
	e := callErr(t, c.grant.RevokeGrant, &v1.RevokeGrantRequest{GrantId: fsm.PurchaseGrantPrefix + key + "k", Amount: "1", Reason: "refund"})
	if e.Code() != connect.CodeInvalidArgument || !strings.HasPrefix(e.Message(), "grant_id:") {
		t.Errorf("a grant id no purchase can have: %v", e)
	}
}

// GetBalance lists at most maxBalanceGrants grants, the next to burn, and
// says when there are more; the balance still counts every grant.
func TestGetBalanceListsAtMostAThousandGrantsAndSaysWhenThereAreMore(t *testing.T) {
	s := startSingle(t, nodeOpts{})
	c := newClients(s.url, "")
	setupCatalog(t, c)
	const n = maxBalanceGrants + 1
	var wg sync.WaitGroup
	errs := make(chan error, n)
	ids := make(chan int, n)
	for i := range n {
		ids <- i
	}
	close(ids)
	for range 8 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range ids {
				_, err := c.grant.CreateGrant(ctxT(t), connect.NewRequest(&v1.CreateGrantRequest{Id: fmt.Sprintf("g%04d", i),
					CustomerId: "acme", CreditTypeId: "ai-credits", Category: v1.GrantCategory_GRANT_CATEGORY_PROMOTIONAL,
					Amount: "1", Priority: uint32(i % 7)}))
				if err != nil {
					errs <- err
				}
			}
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Fatalf("create grant: %v", err)
	}

	b := call(t, c.balance.GetBalance, &v1.GetBalanceRequest{CustomerId: "acme", CreditTypeId: "ai-credits"})
	if len(b.Grants) != maxBalanceGrants || !b.GrantsTruncated || b.Balance != fmt.Sprintf("%d.00", n) {
		t.Fatalf("GetBalance: %d grants, truncated %v, balance %s; want %d, true, %d.00", len(b.Grants), b.GrantsTruncated, b.Balance, maxBalanceGrants, n)
	}
	if first := b.Grants[0]; first.Priority != 0 {
		t.Fatalf("the first grant listed has priority %d: not the next to burn", first.Priority)
	}

	call(t, c.grant.RevokeGrant, &v1.RevokeGrantRequest{GrantId: "g0000", Reason: "test"})
	b = call(t, c.balance.GetBalance, &v1.GetBalanceRequest{CustomerId: "acme", CreditTypeId: "ai-credits"})
	if len(b.Grants) != maxBalanceGrants || b.GrantsTruncated {
		t.Fatalf("with %d live grants: %d listed, truncated %v", maxBalanceGrants, len(b.Grants), b.GrantsTruncated)
	}
}

// An event that burns across more grants than a result lists names the
// first maxBurnsListed, counts the rest, and answers a retry the same; the
// ledger has every burn.
func TestAUsageResultListsTheFirstBurnsAndCountsTheRest(t *testing.T) {
	s := startSingle(t, nodeOpts{})
	c := newClients(s.url, "")
	setupCatalog(t, c)
	const grants = maxBurnsListed + 4
	for i := range grants {
		call(t, c.grant.CreateGrant, &v1.CreateGrantRequest{Id: fmt.Sprintf("g%02d", i), CustomerId: "acme",
			CreditTypeId: "ai-credits", Category: v1.GrantCategory_GRANT_CATEGORY_PROMOTIONAL, Amount: "1", Priority: uint32(i)})
	}
	usage := &v1.ReportUsageRequest{Events: []*v1.UsageEvent{
		{Id: "ev-wide", CustomerId: "acme", CreditTypeId: "ai-credits", Credits: fmt.Sprint(grants)}}}
	for _, attempt := range []string{"first", "retry"} {
		r := call(t, c.usage.ReportUsage, usage).Results[0]
		if r.Status != v1.EventStatus_EVENT_STATUS_BURNED || len(r.Burns) != maxBurnsListed || r.BurnsOmitted != grants-maxBurnsListed {
			t.Fatalf("%s: status %v, %d burns listed, %d omitted; want burned, %d, %d", attempt, r.Status, len(r.Burns),
				r.BurnsOmitted, maxBurnsListed, grants-maxBurnsListed)
		}
		for i, b := range r.Burns {
			if want := fmt.Sprintf("g%02d", i); b.GrantId != want || b.Amount != "1.00" {
				t.Fatalf("%s: burn %d = %v, want 1.00 from %s", attempt, i, b, want)
			}
		}
		if r.Duplicate != (attempt == "retry") {
			t.Fatalf("%s: duplicate = %v", attempt, r.Duplicate)
		}
	}
	entries := call(t, c.ledger.ListEntries, &v1.ListEntriesRequest{CustomerId: "acme", PageSize: 1000})
	burned := 0
	for _, e := range entries.Entries {
		if e.CauseId == "ev-wide" {
			burned++
		}
	}
	if burned != grants {
		t.Fatalf("the ledger has %d entries caused by the event, want %d", burned, grants)
	}
}
