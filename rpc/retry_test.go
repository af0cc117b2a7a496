package rpc

import (
	"bytes"
	"compress/gzip"
	"context"
	"encoding/base64"
	"fmt"
	"net/http"
	"net/url"
	"strings"
	"sync"
	"testing"

	"connectrpc.com/connect"
	"google.golang.org/protobuf/proto"

	"github.com/creditd/creditd/fsm"
	v1 "github.com/creditd/creditd/gen/creditd/v1"
)

// ledgerCount counts a customer's ledger entries of one kind and cause id.
func ledgerCount(t testing.TB, c *clients, customer string, kind v1.EntryKind, causeID string) int {
	t.Helper()
	n := 0
	req := &v1.ListEntriesRequest{CustomerId: customer, PageSize: 1000}
	for {
		res := call(t, c.ledger.ListEntries, req)
		for _, e := range res.Entries {
			if e.Kind == kind && e.CauseId == causeID {
				n++
			}
		}
		if res.NextPageToken == "" {
			return n
		}
		req.PageToken = res.NextPageToken
	}
}

// concurrently sends the same request from n goroutines, spread over the
// nodes given, and returns the answers (every one must succeed).
func concurrently[Req, Res any](t *testing.T, n int, nodes []*clients, fn func(*clients) func(context.Context, *connect.Request[Req]) (*connect.Response[Res], error), m *Req) []*Res {
	t.Helper()
	out := make([]*Res, n)
	errs := make([]error, n)
	start := make(chan struct{})
	var wg sync.WaitGroup
	for i := range n {
		wg.Go(func() {
			<-start
			// Each goroutine sends its own copy: the messages must not be
			// shared between concurrent marshallers.
			req := connect.NewRequest(proto.Clone(any(m).(proto.Message)).(any).(*Req))
			res, err := fn(nodes[i%len(nodes)])(ctxT(t), req)
			if err != nil {
				errs[i] = err
				return
			}
			out[i] = res.Msg
		})
	}
	close(start)
	wg.Wait()
	for i, err := range errs {
		if err != nil {
			t.Fatalf("%T retry %d: %v", m, i, err)
		}
	}
	return out
}

// sameExceptDuplicate checks that every answer equals the first once their
// duplicate flags are cleared, and that exactly one (the first applied)
// says it is not a duplicate. clear clears the flag and returns it.
func sameExceptDuplicate[Res any](t *testing.T, what string, answers []*Res, clear func(*Res) bool) {
	t.Helper()
	originals := 0
	var first proto.Message
	for i, a := range answers {
		c := proto.Clone(any(a).(proto.Message))
		if !clear(any(c).(*Res)) {
			originals++
		}
		if i == 0 {
			first = c
			continue
		}
		if !proto.Equal(first, c) {
			t.Fatalf("%s: answer %d differs:\n%v\nfirst:\n%v", what, i, c, first)
		}
	}
	if originals != 1 {
		t.Fatalf("%s: %d answers are not duplicates, want exactly 1", what, originals)
	}
}

// TestConcurrentRetriesApplyOnce sends every write, the same request from
// several goroutines at once through all three nodes of a cluster (two
// forward to the leader), and checks that it took effect once and that
// every caller got the same answer.
func TestConcurrentRetriesApplyOnce(t *testing.T) {
	if testing.Short() {
		t.Skip("starts a 3-node cluster")
	}
	servers := startThree(t, nodeOpts{})
	var nodes []*clients
	for _, s := range servers {
		nodes = append(nodes, newClients(s.url, ""))
	}
	c := nodes[0]
	setupCatalog(t, c)
	const n = 9

	grants := concurrently(t, n, nodes, func(c *clients) func(context.Context, *connect.Request[v1.CreateGrantRequest]) (*connect.Response[v1.CreateGrantResponse], error) {
		return c.grant.CreateGrant
	}, &v1.CreateGrantRequest{Id: "g-once", CustomerId: "acme", CreditTypeId: "ai-credits",
		Category: v1.GrantCategory_GRANT_CATEGORY_PAID, Amount: "1000", CostBasis: "0.01", Currency: "USD"})
	sameExceptDuplicate(t, "CreateGrant", grants, func(r *v1.CreateGrantResponse) bool { d := r.Duplicate; r.Duplicate = false; return d })
	if got := ledgerCount(t, c, "acme", v1.EntryKind_ENTRY_KIND_GRANT, "g-once"); got != 1 {
		t.Fatalf("%d grant entries for g-once, want 1", got)
	}

	batch := &v1.ReportUsageRequest{}
	for i := range 50 {
		batch.Events = append(batch.Events, &v1.UsageEvent{Id: fmt.Sprint("ev-once-", i), CustomerId: "acme", FeatureId: "gpt-tokens", Quantity: 1000})
	}
	usage := concurrently(t, n, nodes, func(c *clients) func(context.Context, *connect.Request[v1.ReportUsageRequest]) (*connect.Response[v1.ReportUsageResponse], error) {
		return c.usage.ReportUsage
	}, batch)
	// Every batch is all originals or all duplicates.
	sameExceptDuplicate(t, "ReportUsage", usage, func(r *v1.ReportUsageResponse) bool {
		d := r.Results[0].Duplicate
		for _, e := range r.Results {
			if e.Duplicate != d {
				t.Fatalf("a batch mixes duplicates and originals: %v", r)
			}
			e.Duplicate = false
		}
		return d
	})
	if r := usage[0].Results[49]; r.Status != v1.EventStatus_EVENT_STATUS_BURNED || r.BalanceAfter != "900.00" {
		t.Fatalf("last event = %v, want burned to 900.00 (50 × 2.00 once)", r)
	}
	if b := call(t, c.balance.GetBalance, &v1.GetBalanceRequest{CustomerId: "acme", CreditTypeId: "ai-credits"}); b.Balance != "900.00" {
		t.Fatalf("balance %s after the retried batch, want 900.00", b.Balance)
	}

	res := concurrently(t, n, nodes, func(c *clients) func(context.Context, *connect.Request[v1.ReserveRequest]) (*connect.Response[v1.ReserveResponse], error) {
		return c.usage.Reserve
	}, &v1.ReserveRequest{Id: "r-once", CustomerId: "acme", CreditTypeId: "ai-credits", Credits: "100"})
	sameExceptDuplicate(t, "Reserve", res, func(r *v1.ReserveResponse) bool { d := r.Duplicate; r.Duplicate = false; return d })
	if b := call(t, c.balance.GetBalance, &v1.GetBalanceRequest{CustomerId: "acme", CreditTypeId: "ai-credits"}); b.Reserved != "100.00" {
		t.Fatalf("reserved %s after the retried reservation, want 100.00", b.Reserved)
	}

	// Settle has no duplicate flag: every answer is the settled reservation.
	settled := concurrently(t, n, nodes, func(c *clients) func(context.Context, *connect.Request[v1.SettleRequest]) (*connect.Response[v1.SettleResponse], error) {
		return c.usage.Settle
	}, &v1.SettleRequest{ReservationId: "r-once", Actual: &v1.SettleRequest_Credits{Credits: "40"}})
	for i, s := range settled {
		if !proto.Equal(s, settled[0]) {
			t.Fatalf("Settle answer %d = %v, first %v", i, s, settled[0])
		}
	}
	if got := ledgerCount(t, c, "acme", v1.EntryKind_ENTRY_KIND_BURN, "r-once"); got != 1 {
		t.Fatalf("%d burn entries for r-once, want 1", got)
	}
	if b := call(t, c.balance.GetBalance, &v1.GetBalanceRequest{CustomerId: "acme", CreditTypeId: "ai-credits"}); b.Balance != "860.00" || b.Reserved != "0.00" {
		t.Fatalf("balance %s reserved %s after the retried settlement, want 860.00 and 0.00", b.Balance, b.Reserved)
	}

	call(t, c.usage.Reserve, &v1.ReserveRequest{Id: "r-release", CustomerId: "acme", CreditTypeId: "ai-credits", Credits: "10"})
	released := concurrently(t, n, nodes, func(c *clients) func(context.Context, *connect.Request[v1.ReleaseRequest]) (*connect.Response[v1.ReleaseResponse], error) {
		return c.usage.Release
	}, &v1.ReleaseRequest{ReservationId: "r-release"})
	for i, s := range released {
		if !proto.Equal(s, released[0]) {
			t.Fatalf("Release answer %d = %v, first %v", i, s, released[0])
		}
	}

	revoked := concurrently(t, n, nodes, func(c *clients) func(context.Context, *connect.Request[v1.RevokeGrantRequest]) (*connect.Response[v1.RevokeGrantResponse], error) {
		return c.grant.RevokeGrant
	}, &v1.RevokeGrantRequest{GrantId: "g-once", Amount: "10", Reason: "refund", RequestId: "rev-once"})
	sameExceptDuplicate(t, "RevokeGrant", revoked, func(r *v1.RevokeGrantResponse) bool { d := r.Duplicate; r.Duplicate = false; return d })
	if got := ledgerCount(t, c, "acme", v1.EntryKind_ENTRY_KIND_REVOKE, "rev-once"); got != 1 {
		t.Fatalf("%d revoke entries for rev-once, want 1", got)
	}

	adjusted := concurrently(t, n, nodes, func(c *clients) func(context.Context, *connect.Request[v1.AdjustGrantRequest]) (*connect.Response[v1.AdjustGrantResponse], error) {
		return c.grant.AdjustGrant
	}, &v1.AdjustGrantRequest{Id: "adj-once", GrantId: "g-once", Amount: "-5", Reason: "correction"})
	sameExceptDuplicate(t, "AdjustGrant", adjusted, func(r *v1.AdjustGrantResponse) bool { d := r.Duplicate; r.Duplicate = false; return d })
	if got := ledgerCount(t, c, "acme", v1.EntryKind_ENTRY_KIND_ADJUST, "adj-once"); got != 1 {
		t.Fatalf("%d adjust entries for adj-once, want 1", got)
	}

	bought := concurrently(t, n, nodes, func(c *clients) func(context.Context, *connect.Request[v1.PurchaseCreditsRequest]) (*connect.Response[v1.PurchaseCreditsResponse], error) {
		return c.purchase.PurchaseCredits
	}, &v1.PurchaseCreditsRequest{IdempotencyKey: "p-once", CustomerId: "acme", Credits: "500", Flow: v1.PurchaseFlow_PURCHASE_FLOW_INVOICE})
	sameExceptDuplicate(t, "PurchaseCredits", bought, func(r *v1.PurchaseCreditsResponse) bool { d := r.Duplicate; r.Duplicate = false; return d })

	completed := concurrently(t, n, nodes, func(c *clients) func(context.Context, *connect.Request[v1.CompletePurchaseRequest]) (*connect.Response[v1.CompletePurchaseResponse], error) {
		return c.purchase.CompletePurchase
	}, &v1.CompletePurchaseRequest{Id: "p-once", Outcome: v1.PurchaseOutcome_PURCHASE_OUTCOME_SUCCEEDED, ProviderRef: "wire-1"})
	sameExceptDuplicate(t, "CompletePurchase", completed, func(r *v1.CompletePurchaseResponse) bool {
		d := r.Duplicate
		r.Duplicate = false
		return d
	})
	if got := ledgerCount(t, c, "acme", v1.EntryKind_ENTRY_KIND_GRANT, "p-once"); got != 1 {
		t.Fatalf("%d grant entries for purchase p-once, want 1", got)
	}
	if b := call(t, c.balance.GetBalance, &v1.GetBalanceRequest{CustomerId: "acme", CreditTypeId: "ai-credits"}); b.Balance != "1345.00" {
		// 860 − 10 revoked − 5 adjusted + 500 bought.
		t.Fatalf("balance %s at the end, want 1345.00", b.Balance)
	}
}

// TestConcurrentConflictingWrites sends the same id with different
// payloads at once: exactly one payload wins, every other caller gets
// ALREADY_EXISTS naming the id (or, for usage events, a rejection), and
// the winner is what is stored.
func TestConcurrentConflictingWrites(t *testing.T) {
	s := startSingle(t, nodeOpts{})
	c := newClients(s.url, "")
	setupCatalog(t, c)
	const n = 8
	type outcome struct {
		amount string
		err    error
	}
	results := make(chan outcome, n)
	start := make(chan struct{})
	var wg sync.WaitGroup
	for i := range n {
		wg.Go(func() {
			<-start
			amount := fmt.Sprint(100 + i)
			_, err := c.grant.CreateGrant(ctxT(t), connect.NewRequest(&v1.CreateGrantRequest{Id: "g-race", CustomerId: "acme",
				CreditTypeId: "ai-credits", Category: v1.GrantCategory_GRANT_CATEGORY_PROMOTIONAL, Amount: amount}))
			results <- outcome{amount, err}
		})
	}
	close(start)
	wg.Wait()
	close(results)
	var winner string
	for r := range results {
		switch {
		case r.err == nil && winner == "":
			winner = r.amount
		case r.err == nil:
			t.Fatalf("two payloads won: %s and %s", winner, r.amount)
		default:
			wantErr(t, "a losing payload", r.err.(*connect.Error), connect.CodeAlreadyExists, "id")
		}
	}
	b := call(t, c.balance.GetBalance, &v1.GetBalanceRequest{CustomerId: "acme", CreditTypeId: "ai-credits"})
	if winner == "" || b.Balance != winner+".00" || len(b.Grants) != 1 {
		t.Fatalf("winner %q, balance %s, %d grants", winner, b.Balance, len(b.Grants))
	}

	// Usage events: the losers are results (rejected), not errors, and
	// only the winner burned.
	answers := make(chan *v1.EventResult, n)
	start = make(chan struct{})
	for i := range n {
		wg.Go(func() {
			<-start
			res, err := c.usage.ReportUsage(ctxT(t), connect.NewRequest(&v1.ReportUsageRequest{Events: []*v1.UsageEvent{
				{Id: "ev-race", CustomerId: "acme", CreditTypeId: "ai-credits", Credits: fmt.Sprint(1 + i)}}}))
			if err != nil {
				t.Errorf("ReportUsage: %v", err)
				return
			}
			answers <- res.Msg.Results[0]
		})
	}
	close(start)
	wg.Wait()
	close(answers)
	burned := 0
	for r := range answers {
		switch r.Status {
		case v1.EventStatus_EVENT_STATUS_BURNED:
			burned++
		case v1.EventStatus_EVENT_STATUS_REJECTED:
			if r.ErrorCode != "already_exists" || r.Field != "id" {
				t.Fatalf("a losing event = %v", r)
			}
		default:
			t.Fatalf("event = %v", r)
		}
	}
	if burned != 1 {
		t.Fatalf("%d events burned, want 1", burned)
	}
	if got := ledgerCount(t, c, "acme", v1.EntryKind_ENTRY_KIND_BURN, "ev-race"); got != 1 {
		t.Fatalf("%d burn entries for ev-race, want 1", got)
	}
}

// TestHostileBatches covers what a batch may legally hold that a client
// might get wrong: the same event id twice, at the limits of ids and
// amounts, and totals that would overflow.
func TestHostileBatches(t *testing.T) {
	s := startSingle(t, nodeOpts{})
	c := newClients(s.url, "")
	setupCatalog(t, c)
	call(t, c.grant.CreateGrant, &v1.CreateGrantRequest{Id: "g-1", CustomerId: "acme", CreditTypeId: "ai-credits",
		Category: v1.GrantCategory_GRANT_CATEGORY_PROMOTIONAL, Amount: "1000"})

	// The same id twice in one batch: the second is a replay of the first
	// (same payload) or a rejection (another payload), never a second burn.
	r := call(t, c.usage.ReportUsage, &v1.ReportUsageRequest{Events: []*v1.UsageEvent{
		{Id: "twice", CustomerId: "acme", FeatureId: "gpt-tokens", Quantity: 1000},
		{Id: "twice", CustomerId: "acme", FeatureId: "gpt-tokens", Quantity: 1000},
		{Id: "twice", CustomerId: "acme", FeatureId: "gpt-tokens", Quantity: 2000},
	}})
	first, again, other := r.Results[0], r.Results[1], r.Results[2]
	if first.Status != v1.EventStatus_EVENT_STATUS_BURNED || first.Duplicate || first.BalanceAfter != "998.00" {
		t.Fatalf("first = %v, want burned to 998.00", first)
	}
	if !again.Duplicate {
		t.Fatalf("same id, same payload = %v, want a duplicate", again)
	}
	replay := proto.Clone(again).(*v1.EventResult)
	replay.Duplicate = false
	if !proto.Equal(replay, first) {
		t.Fatalf("same id, same payload = %v, want the first result %v", again, first)
	}
	if other.Status != v1.EventStatus_EVENT_STATUS_REJECTED || other.ErrorCode != "already_exists" || other.Field != "id" {
		t.Fatalf("same id, other payload = %v, want rejected already_exists on id (the event's field)", other)
	}
	if got := ledgerCount(t, c, "acme", v1.EntryKind_ENTRY_KIND_BURN, "twice"); got != 1 {
		t.Fatalf("%d burns for the event sent twice, want 1", got)
	}

	// Limits are inclusive: an id of 128 characters, an amount of
	// fsm.MaxAmount units.
	id128 := strings.Repeat("i", fsm.MaxIDLen)
	call(t, c.catalog.UpsertCustomer, &v1.UpsertCustomerRequest{Id: id128, PlanId: "pro"})
	g := call(t, c.grant.CreateGrant, &v1.CreateGrantRequest{Id: id128, CustomerId: id128, CreditTypeId: "ai-credits",
		Category: v1.GrantCategory_GRANT_CATEGORY_PROMOTIONAL, Amount: maxUnitsText})
	if g.Grant.Remaining != maxUnitsText {
		t.Fatalf("grant of the maximum = %v", g.Grant)
	}
	u := call(t, c.usage.ReportUsage, &v1.ReportUsageRequest{Events: []*v1.UsageEvent{
		{Id: id128, CustomerId: id128, CreditTypeId: "ai-credits", Credits: maxUnitsText}}})
	if e := u.Results[0]; e.Status != v1.EventStatus_EVENT_STATUS_BURNED || e.BalanceAfter != "0.00" {
		t.Fatalf("burn of the maximum = %v, want burned to 0.00", e)
	}

	// The longest purchase key makes a grant id of 128 characters, which
	// the grant methods take.
	key := strings.Repeat("k", fsm.MaxIDLen-len("purchase:"))
	call(t, c.purchase.PurchaseCredits, &v1.PurchaseCreditsRequest{IdempotencyKey: key, CustomerId: "acme", Credits: "100", Flow: v1.PurchaseFlow_PURCHASE_FLOW_INVOICE})
	done := call(t, c.purchase.CompletePurchase, &v1.CompletePurchaseRequest{Id: key, Outcome: v1.PurchaseOutcome_PURCHASE_OUTCOME_SUCCEEDED})
	if len(done.Purchase.GrantId) != fsm.MaxIDLen {
		t.Fatalf("purchase grant id %q", done.Purchase.GrantId)
	}
	call(t, c.grant.RevokeGrant, &v1.RevokeGrantRequest{GrantId: done.Purchase.GrantId, Amount: "1", Reason: "refund"})
	call(t, c.grant.AdjustGrant, &v1.AdjustGrantRequest{Id: "adj-long", GrantId: done.Purchase.GrantId, Amount: "1", Reason: "fix"})

	// A pool holds at most what int64 can: seven grants of the maximum
	// fit (7 × 2^60 < 2^63), the eighth is refused on its amount, and the
	// pool is as the seven left it.
	call(t, c.catalog.UpsertCustomer, &v1.UpsertCustomerRequest{Id: "whale", PlanId: "pro"})
	for i := range 7 {
		call(t, c.grant.CreateGrant, &v1.CreateGrantRequest{Id: fmt.Sprint("whale-", i), CustomerId: "whale", CreditTypeId: "ai-credits",
			Category: v1.GrantCategory_GRANT_CATEGORY_PROMOTIONAL, Amount: maxUnitsText})
	}
	before := call(t, c.balance.GetBalance, &v1.GetBalanceRequest{CustomerId: "whale", CreditTypeId: "ai-credits"})
	ce := callErr(t, c.grant.CreateGrant, &v1.CreateGrantRequest{Id: "whale-7", CustomerId: "whale", CreditTypeId: "ai-credits",
		Category: v1.GrantCategory_GRANT_CATEGORY_PROMOTIONAL, Amount: maxUnitsText})
	wantErr(t, "the grant that would overflow the pool", ce, connect.CodeInvalidArgument, "amount")
	ce = callErr(t, c.grant.AdjustGrant, &v1.AdjustGrantRequest{Id: "whale-adj", GrantId: "whale-0", Amount: "+1", Reason: "more"})
	wantErr(t, "an adjustment past the grant maximum", ce, connect.CodeInvalidArgument, "amount")
	after := call(t, c.balance.GetBalance, &v1.GetBalanceRequest{CustomerId: "whale", CreditTypeId: "ai-credits"})
	if before.Balance != after.Balance || len(after.Grants) != 7 {
		t.Fatalf("balance %s → %s, %d grants after refused overflows", before.Balance, after.Balance, len(after.Grants))
	}
	// A batch whose events each fit but whose sum does not: each event is
	// judged on what is left, so the sum never overflows.
	big := &v1.ReportUsageRequest{}
	for i := range 9 {
		big.Events = append(big.Events, &v1.UsageEvent{Id: fmt.Sprint("whale-ev-", i), CustomerId: "whale", CreditTypeId: "ai-credits", Credits: maxUnitsText})
	}
	res := call(t, c.usage.ReportUsage, big)
	for i, e := range res.Results {
		want := v1.EventStatus_EVENT_STATUS_BURNED
		if i >= 7 {
			want = v1.EventStatus_EVENT_STATUS_DENIED
		}
		if e.Status != want {
			t.Fatalf("event %d of the overflowing batch = %v, want %v", i, e, want)
		}
	}
}

// TestOversizedBodies: a body over the limit is refused before it is
// decoded, whatever its encoding, and a small gzip body that inflates past
// the limit is refused too (no decompression bomb).
func TestOversizedBodies(t *testing.T) {
	const limit = 64 << 10
	s := startSingle(t, nodeOpts{rpc: Options{MaxMessageBytes: limit}})
	c := newClients(s.url, "")
	setupCatalog(t, c)
	proc := "/creditd.v1.UsageService/ReportUsage"

	var sb strings.Builder
	sb.WriteString(`{"events":[`)
	for i := 0; sb.Len() <= limit; i++ {
		if i > 0 {
			sb.WriteByte(',')
		}
		fmt.Fprintf(&sb, `{"id":"big-%d","customerId":"acme","featureId":"gpt-tokens","quantity":"1"}`, i)
	}
	sb.WriteString(`]}`)
	jsonBody := []byte(sb.String())
	err := rawPost(ctxT(t), s.url, proc, "application/json", jsonBody, nil)
	if connect.CodeOf(err) != connect.CodeResourceExhausted {
		t.Fatalf("JSON body of %d bytes: %v, want resource_exhausted", len(jsonBody), err)
	}

	// 16 MiB of zeros in a string field gzip to ≈ 16 KiB.
	m := &v1.ReportUsageRequest{Events: []*v1.UsageEvent{{Id: "bomb", CustomerId: "acme", FeatureId: "gpt-tokens",
		Credits: strings.Repeat("0", 16<<20)}}}
	b, merr := proto.Marshal(m)
	if merr != nil {
		t.Fatal(merr)
	}
	var gz bytes.Buffer
	zw := gzip.NewWriter(&gz)
	if _, err := zw.Write(b); err != nil {
		t.Fatal(err)
	}
	if err := zw.Close(); err != nil {
		t.Fatal(err)
	}
	if gz.Len() >= limit {
		t.Fatalf("the bomb compresses to %d bytes, not below the limit", gz.Len())
	}
	err = rawPost(ctxT(t), s.url, proc, "application/proto", gz.Bytes(), http.Header{"Content-Encoding": {"gzip"}})
	if code := connect.CodeOf(err); code != connect.CodeResourceExhausted && code != connect.CodeInvalidArgument {
		t.Fatalf("gzip bomb: %v, want resource_exhausted", err)
	}
	t.Logf("gzip bomb of %d bytes: %v", gz.Len(), err)
	// The same bomb in JSON, which strictJSON uncompresses before Connect
	// (no further than the limit), as a POST and as a Connect GET.
	jsonBomb := `{"events":[{"id":"bomb","customerId":"acme","featureId":"gpt-tokens","credits":"` + strings.Repeat("0", 16<<20) + `"}]}`
	gz.Reset()
	zw.Reset(&gz)
	if _, err := zw.Write([]byte(jsonBomb)); err != nil {
		t.Fatal(err)
	}
	if err := zw.Close(); err != nil {
		t.Fatal(err)
	}
	err = rawPost(ctxT(t), s.url, proc, "application/json", gz.Bytes(), http.Header{"Content-Encoding": {"gzip"}})
	if connect.CodeOf(err) != connect.CodeResourceExhausted {
		t.Fatalf("JSON gzip bomb: %v, want resource_exhausted", err)
	}
	q := url.Values{"connect": {"v1"}, "encoding": {"json"}, "base64": {"1"}, "compression": {"gzip"},
		"message": {base64.RawURLEncoding.EncodeToString(gz.Bytes())}}
	req, rerr := http.NewRequestWithContext(ctxT(t), http.MethodGet, s.url+"/creditd.v1.BalanceService/GetBalance?"+q.Encode(), nil)
	if rerr != nil {
		t.Fatal(rerr)
	}
	if err := rawDo(h2c(), req); connect.CodeOf(err) != connect.CodeResourceExhausted {
		t.Fatalf("JSON gzip bomb in a GET: %v, want resource_exhausted", err)
	}
	// Nothing of either was applied.
	if b := call(t, c.balance.GetBalance, &v1.GetBalanceRequest{CustomerId: "acme", CreditTypeId: "ai-credits"}); b.Balance != "0.00" {
		t.Fatalf("balance %s after refused bodies", b.Balance)
	}
}
