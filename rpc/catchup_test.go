package rpc

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"testing"
	"time"

	"connectrpc.com/connect"

	v1 "github.com/creditd/creditd/gen/creditd/v1"
	"github.com/creditd/creditd/node"
)

// stopServer stops a test server's API and node, as its cleanup would.
func stopServer(t testing.TB, s *testServer) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	s.srv.Close()
	_ = s.http.Shutdown(ctx)
	if err := s.n.Shutdown(ctx); err != nil {
		t.Fatalf("stop %s: %v", s.id, err)
	}
}

// untilAnswered calls fn until it answers anything but UNAVAILABLE (a node
// starting, electing itself), as a client retrying would.
func untilAnswered[Req, Res any](t testing.TB, fn func(context.Context, *connect.Request[Req]) (*connect.Response[Res], error), msg *Req) (*Res, error) {
	t.Helper()
	deadline := time.Now().Add(time.Minute)
	for {
		res, err := fn(ctxT(t), connect.NewRequest(msg))
		if connect.CodeOf(err) != connect.CodeUnavailable || time.Now().After(deadline) {
			if err != nil {
				return nil, err
			}
			return res.Msg, nil
		}
		time.Sleep(time.Millisecond)
	}
}

// TestALeaderStillReplayingItsLogAnswersWhatItHasNotAppliedYet: a node
// elected before it has applied the whole log (here a single node after a
// power loss, rebuilding its state from the log; equally a follower that
// wins an election before applying the last entries it holds) does not
// answer from its state until it has caught up. Writes read what they need
// (a reservation's credit type, the scale of a credit type given directly)
// before they are proposed; such a read that found nothing answered
// NOT_FOUND for a reservation that exists, and a usage event in credits of
// a credit type not yet replayed was burned as 0 credits, and a purchase was
// read in the scale of the customer's former plan (150 credits bought as
// 15,000).
func TestALeaderStillReplayingItsLogAnswersWhatItHasNotAppliedYet(t *testing.T) {
	if _, err := os.Stat("/proc/sys/kernel/random/boot_id"); err != nil {
		t.Skip("no boot id: the state file is fsynced on every apply and never rebuilt")
	}
	dir := filepath.Join(t.TempDir(), "n1")
	noSnapshots := func(cfg *node.Config) {
		cfg.DataDir = dir
		cfg.SnapshotThreshold = 1 << 40 // the whole log is replayed
	}
	s := startServer(t, "n1", nodeOpts{bootstrapExpect: 1, nodeConfig: noSnapshots})
	waitFor(t, time.Minute, "the node to lead", func() bool { return s.n.Ready() })
	c := newClients(s.url, "")
	setupCatalog(t, c)
	call(t, c.grant.CreateGrant, &v1.CreateGrantRequest{Id: "g", CustomerId: "acme", CreditTypeId: "ai-credits",
		Category: v1.GrantCategory_GRANT_CATEGORY_PROMOTIONAL, Amount: "100000000"})
	call(t, c.catalog.CreateCreditType, &v1.CreateCreditTypeRequest{Id: "units", Name: "Units", Scale: 0})
	call(t, c.catalog.UpsertPlan, &v1.UpsertPlanRequest{Plan: &v1.Plan{Id: "by-unit", Name: "By unit", CreditTypeId: "units",
		Currency: "USD", PricePerCredit: "1", MinPurchase: "1", MaxPurchase: "1000"}})
	call(t, c.catalog.UpsertCustomer, &v1.UpsertCustomerRequest{Id: "bob", Name: "Bob", PlanId: "pro"})
	bobIndex := s.n.AppliedIndex()
	// A long log to replay: 300 entries of 1,000 usage events.
	for b := range 300 {
		events := make([]*v1.UsageEvent, 1000)
		for i := range events {
			events[i] = &v1.UsageEvent{Id: fmt.Sprintf("fill-%d-%d", b, i), CustomerId: "acme", FeatureId: "gpt-tokens", Quantity: 5}
		}
		call(t, c.usage.ReportUsage, &v1.ReportUsageRequest{Events: events})
	}
	// What the last entries make.
	call(t, c.usage.Reserve, &v1.ReserveRequest{Id: "r1", CustomerId: "acme", CreditTypeId: "ai-credits", Credits: "3"})
	call(t, c.catalog.CreateCreditType, &v1.CreateCreditTypeRequest{Id: "late", Name: "Late credits", Scale: 2})
	call(t, c.grant.CreateGrant, &v1.CreateGrantRequest{Id: "gl", CustomerId: "acme", CreditTypeId: "late",
		Category: v1.GrantCategory_GRANT_CATEGORY_PROMOTIONAL, Amount: "100"})
	call(t, c.catalog.UpsertCustomer, &v1.UpsertCustomerRequest{Id: "bob", Name: "Bob", PlanId: "by-unit"})
	raftAddr := s.n.RaftAddr()
	stopServer(t, s)

	// A power loss: the state file was written in an earlier boot.
	if err := os.WriteFile(filepath.Join(dir, "fsm.db.boot"), []byte("an-earlier-boot\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	s = startServer(t, "n1", nodeOpts{nodeConfig: func(cfg *node.Config) { noSnapshots(cfg); cfg.RaftAddr = raftAddr }})
	c = newClients(s.url, "")
	// Asked as soon as the node leads, while it replays the log.
	for !s.n.IsLeader() {
		time.Sleep(time.Millisecond)
	}
	if s.n.Ready() {
		t.Log("the node had replayed its log before it was asked: this run shows nothing")
	}
	type answer struct {
		what string
		err  error
	}
	answers := make(chan answer, 3)
	go func() {
		res, err := untilAnswered(t, c.usage.Settle, &v1.SettleRequest{ReservationId: "r1", Actual: &v1.SettleRequest_Credits{Credits: "2"}})
		if err == nil && res.Reservation.SettledAmount != "2.00" {
			err = fmt.Errorf("settled %s, want 2.00", res.Reservation.SettledAmount)
		}
		answers <- answer{"Settle of a reservation made before the restart", err}
	}()
	go func() {
		res, err := untilAnswered(t, c.usage.ReportUsage, &v1.ReportUsageRequest{Events: []*v1.UsageEvent{
			{Id: "late-1", CustomerId: "acme", CreditTypeId: "late", Credits: "5"}}})
		if err == nil && (res.Results[0].Status != v1.EventStatus_EVENT_STATUS_BURNED || res.Results[0].BalanceAfter != "95.00") {
			err = fmt.Errorf("result %v, want burned with 95.00 left", res.Results[0])
		}
		answers <- answer{"usage in credits of a credit type made before the restart", err}
	}()
	go func() {
		// Once the replay has made bob, not yet moved him to by-unit.
		for s.n.AppliedIndex() <= bobIndex {
			time.Sleep(time.Millisecond)
		}
		res, err := untilAnswered(t, c.purchase.PurchaseCredits, &v1.PurchaseCreditsRequest{IdempotencyKey: "p-bob", CustomerId: "bob",
			Credits: "150", Flow: v1.PurchaseFlow_PURCHASE_FLOW_INVOICE})
		if err == nil && (res.Purchase.PlanId != "by-unit" || res.Purchase.Credits != "150") {
			err = fmt.Errorf("purchase of plan %s for %s credits, want 150 of by-unit", res.Purchase.PlanId, res.Purchase.Credits)
		}
		answers <- answer{"a purchase by a customer whose plan changed before the restart", err}
	}()
	var errs []error
	for range 3 {
		a := <-answers
		if a.err != nil {
			errs = append(errs, fmt.Errorf("%s: %w", a.what, a.err))
		}
	}
	if err := errors.Join(errs...); err != nil {
		t.Fatal(err)
	}
}
