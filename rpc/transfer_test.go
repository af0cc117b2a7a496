package rpc

import (
	"context"
	"fmt"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"connectrpc.com/connect"

	v1 "github.com/creditd/creditd/gen/creditd/v1"
)

// TestWritesDuringLeadershipTransfersAreServedOrForwarded: clients keep
// writing to every node while an operator hands leadership on three times
// (as a rolling restart does, one SIGTERM per leader). No write fails: the
// leader pauses writes and lets those in flight finish before it hands
// over, writes that arrive meanwhile wait and go to the new leader, and a
// write a follower forwarded to the leader that was just replaced, which
// refuses it without doing anything, is forwarded again to the new one.
// Each write is applied once (the balance counts them).
func TestWritesDuringLeadershipTransfersAreServedOrForwarded(t *testing.T) {
	all := startThree(t, nodeOpts{})
	setupCatalog(t, newClients(all[0].url, ""))
	call(t, newClients(all[0].url, "").grant.CreateGrant, &v1.CreateGrantRequest{Id: "g", CustomerId: "acme", CreditTypeId: "ai-credits",
		Category: v1.GrantCategory_GRANT_CATEGORY_PROMOTIONAL, Amount: "1000000"})

	var (
		stop  atomic.Bool
		acked atomic.Int64
		mu    sync.Mutex
		errs  []error
		wg    sync.WaitGroup
	)
	for w := range 12 {
		c := newClients(all[w%len(all)].url, "")
		wg.Go(func() {
			for i := 0; !stop.Load(); i++ {
				_, err := c.usage.ReportUsage(context.Background(), connect.NewRequest(&v1.ReportUsageRequest{Events: []*v1.UsageEvent{
					{Id: fmt.Sprintf("w%d-%d", w, i), CustomerId: "acme", CreditTypeId: "ai-credits", Credits: "0.01"}}}))
				if err != nil {
					mu.Lock()
					errs = append(errs, err)
					mu.Unlock()
					continue
				}
				acked.Add(1)
			}
		})
	}
	for round := range 3 {
		before := acked.Load()
		waitFor(t, time.Minute, "writes before the transfer", func() bool { return acked.Load() >= before+100 })
		var leader *testServer
		waitFor(t, time.Minute, "a leader", func() bool {
			for _, s := range all {
				if s.n.IsLeader() {
					leader = s
					return true
				}
			}
			return false
		})
		call(t, newClients(leader.url, "").cluster.TransferLeadership, &v1.TransferLeadershipRequest{})
		t.Logf("round %d: leadership handed over by %s", round, leader.id)
	}
	before := acked.Load()
	waitFor(t, time.Minute, "writes after the last transfer", func() bool { return acked.Load() >= before+100 })
	stop.Store(true)
	wg.Wait()
	if len(errs) > 0 {
		t.Fatalf("%d of %d writes failed during the transfers; first: %v", len(errs), len(errs)+int(acked.Load()), errs[0])
	}
	b := call(t, newClients(all[0].url, "").balance.GetBalance, &v1.GetBalanceRequest{CustomerId: "acme", CreditTypeId: "ai-credits"})
	cents := 1000000*100 - acked.Load()
	if want := fmt.Sprintf("%d.%02d", cents/100, cents%100); b.Balance != want {
		t.Fatalf("balance %s after %d writes of 0.01; want %s (each applied once)", b.Balance, acked.Load(), want)
	}
}
