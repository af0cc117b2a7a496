package billing

import (
	"bytes"
	"context"
	"io"
	"net"
	"net/http"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"connectrpc.com/connect"

	"github.com/creditd/creditd/export"
	"github.com/creditd/creditd/fsm"
	v1 "github.com/creditd/creditd/gen/creditd/v1"
	"github.com/creditd/creditd/gen/creditd/v1/creditdv1connect"
	"github.com/creditd/creditd/node"
	"github.com/creditd/creditd/rpc"
	"github.com/stripe/stripe-go/v82/webhook"
)

// sandboxProvider moves money through the recording fake (stripe-mock keeps
// no state, so it cannot settle a payment) and verifies webhooks with the
// real Stripe connector.
type sandboxProvider struct {
	*fakeProvider
	hooks *Stripe
}

func (s sandboxProvider) ParseWebhook(payload []byte, h http.Header) (Event, error) {
	return s.hooks.ParseWebhook(payload, h)
}

// goLive is one node serving the API and the webhook on a loopback port,
// with the purchase worker running on it as leader.
type goLive struct {
	t        *testing.T
	n        *node.Node
	url      string
	prov     sandboxProvider
	attached *Attached
	catalog  creditdv1connect.CatalogServiceClient
	usage    creditdv1connect.UsageServiceClient
	balance  creditdv1connect.BalanceServiceClient
	ledger   creditdv1connect.LedgerServiceClient
	purchase creditdv1connect.PurchaseServiceClient
	hc       *http.Client
}

// apiNode is a node serving the API and billing's routes on loopback, wired
// as cmd/creditd wires it: the worker on the leader, the webhook on the
// API's mux.
type apiNode struct {
	n        *node.Node
	url      string
	attached *Attached
}

func startAPINode(t *testing.T, id string, bootstrapExpect int, join []string, prov Provider) apiNode {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	n, err := node.Start(ctx, node.Config{NodeID: id, DataDir: filepath.Join(t.TempDir(), id),
		RaftAddr: "127.0.0.1:0", GossipAddr: "127.0.0.1:0", RPCAddr: ln.Addr().String(),
		BootstrapExpect: bootstrapExpect, Join: join,
		HeartbeatTimeout: time.Second, ElectionTimeout: time.Second, LeaderLeaseTimeout: time.Second,
		LeaderWait: 5 * time.Second, TickInterval: -1, Logger: testLogger()})
	if err != nil {
		ln.Close()
		t.Fatalf("start node %s: %v", id, err)
	}
	attached, err := AttachProvider(n, prov, testLogger(), AttachOptions{
		Worker: WorkerOptions{ScanInterval: 50 * time.Millisecond, PollInterval: time.Hour}})
	if err != nil {
		t.Fatal(err)
	}
	srv, err := rpc.New(n, rpc.Options{Logger: testLogger(), Extra: attached.Routes})
	if err != nil {
		t.Fatalf("rpc.New: %v", err)
	}
	hs := rpc.NewHTTPServer("", srv.Handler())
	served := make(chan struct{})
	go func() { defer close(served); _ = hs.Serve(ln) }()
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		srv.Close()
		_ = hs.Shutdown(ctx)
		<-served
		_ = n.Shutdown(ctx)
	})
	return apiNode{n: n, url: "http://" + ln.Addr().String(), attached: attached}
}

func newSandbox(t *testing.T) sandboxProvider {
	t.Helper()
	hooks, err := NewStripe(StripeOptions{SecretKey: Secret{testStripeKey}, WebhookSecret: Secret{testWebhookSecret},
		URL: "http://127.0.0.1:1"})
	if err != nil {
		t.Fatal(err)
	}
	return sandboxProvider{fakeProvider: newFakeProvider(), hooks: hooks}
}

func h2cClient() *http.Client {
	var p http.Protocols
	p.SetUnencryptedHTTP2(true)
	return &http.Client{Transport: &http.Transport{Protocols: &p}, Timeout: 60 * time.Second}
}

func startGoLive(t *testing.T) *goLive {
	t.Helper()
	prov := newSandbox(t)
	an := startAPINode(t, "n1", 1, nil, prov)
	hc := h2cClient()
	url := an.url
	g := &goLive{t: t, n: an.n, url: url, prov: prov, hc: hc, attached: an.attached,
		catalog:  creditdv1connect.NewCatalogServiceClient(hc, url),
		usage:    creditdv1connect.NewUsageServiceClient(hc, url),
		balance:  creditdv1connect.NewBalanceServiceClient(hc, url),
		ledger:   creditdv1connect.NewLedgerServiceClient(hc, url),
		purchase: creditdv1connect.NewPurchaseServiceClient(hc, url)}
	eventually(t, "the node to lead", func() bool { return an.n.IsLeader() && an.n.Ready() })
	return g
}

func (g *goLive) ctx() context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	g.t.Cleanup(cancel)
	return ctx
}

// webhook posts a signed Stripe event to the server's webhook route.
func (g *goLive) webhook(id, typ string, obj map[string]any) {
	g.t.Helper()
	payload := stripeEventJSON(g.t, id, typ, obj)
	sp := webhook.GenerateTestSignedPayload(&webhook.UnsignedPayload{Payload: payload, Secret: testWebhookSecret, Timestamp: time.Now()})
	req, err := http.NewRequestWithContext(g.ctx(), http.MethodPost, g.url+WebhookPath, bytes.NewReader(payload))
	if err != nil {
		g.t.Fatal(err)
	}
	req.Header.Set("Stripe-Signature", sp.Header)
	resp, err := g.hc.Do(req)
	if err != nil {
		g.t.Fatalf("post %s: %v", typ, err)
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(resp.Body)
	if resp.StatusCode != http.StatusOK {
		g.t.Fatalf("webhook %s: status %d: %s", typ, resp.StatusCode, body)
	}
}

func (g *goLive) getBalance() *v1.GetBalanceResponse {
	g.t.Helper()
	res, err := g.balance.GetBalance(g.ctx(), connect.NewRequest(&v1.GetBalanceRequest{CustomerId: "acme", CreditTypeId: "ai"}))
	if err != nil {
		g.t.Fatalf("GetBalance: %v", err)
	}
	return res.Msg
}

func (g *goLive) getPurchase(id string) *v1.Purchase {
	g.t.Helper()
	res, err := g.purchase.GetPurchase(g.ctx(), connect.NewRequest(&v1.GetPurchaseRequest{Id: id}))
	if err != nil {
		g.t.Fatalf("GetPurchase %s: %v", id, err)
	}
	return res.Msg.Purchase
}

// ledgerKinds lists the customer's ledger entries as (kind, amount, money).
func (g *goLive) ledgerEntries() []*v1.LedgerEntry {
	g.t.Helper()
	res, err := g.ledger.ListEntries(g.ctx(), connect.NewRequest(&v1.ListEntriesRequest{CustomerId: "acme", PageSize: 100}))
	if err != nil {
		g.t.Fatalf("ListEntries: %v", err)
	}
	return res.Msg.Entries
}

func (g *goLive) expectBalance(step string, balance, available string) {
	g.t.Helper()
	b := g.getBalance()
	if b.Balance != balance || b.Available != available {
		g.t.Fatalf("%s: balance %s available %s, want %s and %s", step, b.Balance, b.Available, balance, available)
	}
}

func (g *goLive) expectLedgerTail(step string, want ...[3]string) {
	g.t.Helper()
	es := g.ledgerEntries()
	if len(es) < len(want) {
		g.t.Fatalf("%s: ledger has %d entries, want at least %d", step, len(es), len(want))
	}
	tail := es[len(es)-len(want):]
	for i, w := range want {
		e := tail[i]
		got := [3]string{e.Kind.String(), e.Amount, e.BalanceAfter}
		if got != w {
			g.t.Fatalf("%s: ledger entry %d (seq %d) = %v, want %v", step, i, e.Seq, got, w)
		}
	}
}

// The go-live path through the API: purchase → grant → burn → automatic
// top-up → refund and revocation → export, checking balances and the ledger
// at each step and the reconciliation of the exported ledger at the end.
func TestGoLiveThroughTheAPI(t *testing.T) {
	g := startGoLive(t)
	ctx := g.ctx()

	// The catalog: AI credits at 0.01 USD, auto top-up of 500 below 100.
	if _, err := g.catalog.CreateCreditType(ctx, connect.NewRequest(&v1.CreateCreditTypeRequest{Id: "ai", Name: "AI credits"})); err != nil {
		t.Fatalf("CreateCreditType: %v", err)
	}
	if _, err := g.catalog.UpsertPlan(ctx, connect.NewRequest(&v1.UpsertPlanRequest{Plan: &v1.Plan{Id: "pro", Name: "Pro",
		CreditTypeId: "ai", Currency: "USD", PricePerCredit: "0.01", MinPurchase: "100", MaxPurchase: "100000",
		InvoiceGrant: v1.InvoiceGrantPolicy_INVOICE_GRANT_POLICY_ON_PAYMENT, Overdraft: v1.OverdraftPolicy_OVERDRAFT_POLICY_DENY}})); err != nil {
		t.Fatalf("UpsertPlan: %v", err)
	}
	if _, err := g.catalog.UpsertCustomer(ctx, connect.NewRequest(&v1.UpsertCustomerRequest{Id: "acme", Name: "Acme",
		BillingRef: "cus_acme", PlanId: "pro", AutoTopUp: &v1.AutoTopUp{Enabled: true, Threshold: "100",
			Mode: v1.AutoTopUpMode_AUTO_TOP_UP_MODE_FIXED, Amount: "500", MonthlyCap: "100"}})); err != nil {
		t.Fatalf("UpsertCustomer: %v", err)
	}

	// 1. Self-serve purchase of 1000 credits: the worker starts the payment,
	// the customer pays on-session, the webhook completes it.
	pr, err := g.purchase.PurchaseCredits(ctx, connect.NewRequest(&v1.PurchaseCreditsRequest{IdempotencyKey: "buy-1",
		CustomerId: "acme", Credits: "1000", Flow: v1.PurchaseFlow_PURCHASE_FLOW_SELF_SERVE}))
	if err != nil {
		t.Fatalf("PurchaseCredits: %v", err)
	}
	if tot := pr.Msg.Purchase.Total; tot != "10.00" {
		t.Fatalf("purchase total %q, want 10.00 (1000 credits at 0.01 USD)", tot)
	}
	g.expectBalance("before payment", "0", "0")
	var piRef string
	eventually(t, "the worker to start the payment", func() bool {
		piRef = g.getPurchase("buy-1").ProviderRef
		return piRef != ""
	})
	act, err := g.attached.PaymentAction(ctx, "buy-1")
	if err != nil || act.ClientSecret == "" {
		t.Fatalf("PaymentAction = %+v, %v", act, err)
	}
	g.webhook("evt_pay1", "payment_intent.succeeded", paymentIntentObj(piRef, "buy-1", "succeeded"))
	p := g.getPurchase("buy-1")
	if p.Status != v1.PurchaseStatus_PURCHASE_STATUS_SUCCEEDED || p.GrantId == "" || p.ProviderStatus != "succeeded" {
		t.Fatalf("purchase after payment = %v", p)
	}
	g.expectBalance("after the purchase", "1000", "1000")
	g.expectLedgerTail("after the purchase", [3]string{"ENTRY_KIND_GRANT", "1000", "1000"})

	// 2. Burn 950: available falls below 100 and fsm starts an automatic
	// top-up of 500, which the worker charges off-session.
	ur, err := g.usage.ReportUsage(ctx, connect.NewRequest(&v1.ReportUsageRequest{Events: []*v1.UsageEvent{
		{Id: "use-1", CustomerId: "acme", CreditTypeId: "ai", Credits: "950"}}}))
	if err != nil || ur.Msg.Results[0].Status != v1.EventStatus_EVENT_STATUS_BURNED {
		t.Fatalf("ReportUsage = %v, %v", ur, err)
	}
	cu, err := g.catalog.GetCustomer(ctx, connect.NewRequest(&v1.GetCustomerRequest{Id: "acme"}))
	if err != nil {
		t.Fatal(err)
	}
	autoID := cu.Msg.Customer.AutoPendingPurchaseId
	if autoID == "" && cu.Msg.Customer.AutoTopUpLast == "" {
		// The worker (scanning every 50 ms) may have charged and completed
		// the top-up before this read, which no longer names it pending:
		// the provider's one charge does.
		if keys, _ := g.prov.chargeKeys(); len(keys) == 1 {
			autoID = keys[0]
		}
	}
	if !strings.HasPrefix(autoID, "auto-") {
		t.Fatalf("no automatic top-up started: pending %q, last %q", autoID, cu.Msg.Customer.AutoTopUpLast)
	}
	eventually(t, "the automatic top-up to be charged", func() bool {
		return g.getPurchase(autoID).Status == v1.PurchaseStatus_PURCHASE_STATUS_SUCCEEDED
	})
	keys, distinct := g.prov.chargeKeys()
	if len(keys) != 1 || keys[0] != autoID || distinct != 1 {
		t.Fatalf("charges %v (%d distinct), want one keyed %s", keys, distinct, autoID)
	}
	g.expectBalance("after the automatic top-up", "550", "550")
	g.expectLedgerTail("after the automatic top-up",
		[3]string{"ENTRY_KIND_BURN", "-950", "50"}, [3]string{"ENTRY_KIND_GRANT", "500", "550"})
	// The charge's webhook arrives after the worker completed it: no-op.
	autoPI := g.getPurchase(autoID).ProviderRef
	g.webhook("evt_auto", "payment_intent.succeeded", paymentIntentObj(autoPI, autoID, "succeeded"))
	g.expectBalance("after the late webhook", "550", "550")

	// 3. Half of the automatic top-up is refunded (2.50 of 5.00 USD): 250
	// of its 500 credits are revoked, once, however often it is told.
	autoGrant := g.getPurchase(autoID).GrantId
	refund := map[string]any{"id": "ch_auto", "object": "charge", "amount": 500, "amount_refunded": 250, "currency": "usd",
		"status": "succeeded", "payment_intent": autoPI, "metadata": map[string]string{MetadataPurchaseID: autoID},
		"refunds": map[string]any{"object": "list", "has_more": false, "data": []map[string]any{
			{"id": "re_half", "object": "refund", "amount": 250, "currency": "usd", "status": "succeeded", "created": 1}}}}
	g.webhook("evt_refund", "charge.refunded", refund)
	g.webhook("evt_refund", "charge.refunded", refund)       // replay
	g.webhook("evt_refund_again", "charge.refunded", refund) // duplicate
	g.expectBalance("after the refund", "300", "300")
	es := g.ledgerEntries()
	last := es[len(es)-1]
	if last.Kind != v1.EntryKind_ENTRY_KIND_REVOKE || last.Amount != "-250" || last.GrantId != autoGrant ||
		last.BalanceAfter != "300" || last.CauseId != "refund:re_half" {
		t.Fatalf("last ledger entry %v, want the revocation of 250 from %s", last, autoGrant)
	}
	revokes := 0
	for _, e := range es {
		if e.Kind == v1.EntryKind_ENTRY_KIND_REVOKE {
			revokes++
		}
	}
	if revokes != 1 {
		t.Fatalf("%d revocations in the ledger, want 1", revokes)
	}
	// Money: the revocation removes 2.50 USD of deferred revenue.
	if last.Money != "-2.50" {
		t.Fatalf("revocation money %q, want -2.50 USD", last.Money)
	}

	// 4. Export the ledger to Parquet and reconcile it: the identities hold
	// in credits and in money, with the refund as revoked credits and
	// refunded deferred revenue.
	dst, err := export.OpenDestination(ctx, t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	defer dst.Close()
	ex, err := export.New(export.FromFSM(g.n.FSM()), dst, export.Options{})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := ex.Run(ctx); err != nil {
		t.Fatalf("export: %v", err)
	}
	rep, err := export.ReportFromExport(ctx, dst, t.TempDir(), time.Unix(0, 0), time.Now().Add(time.Hour), nil)
	if err != nil {
		t.Fatalf("reconcile the export: %v", err)
	}
	var usd *export.Row
	for i := range rep.Rows {
		if rep.Rows[i].CreditTypeID == "ai" && rep.Rows[i].Currency == "USD" {
			usd = &rep.Rows[i]
		}
	}
	if usd == nil {
		t.Fatalf("no ai/USD row in the report: %+v", rep.Rows)
	}
	want := export.Row{CreditTypeID: "ai", Currency: "USD", Scale: usd.Scale,
		GrantedPaid: 1500, Burned: 950, Revoked: 250, ClosingBalance: 300,
		DeferredGranted: 15_000_000, Recognized: 9_500_000, Refunded: 2_500_000, ClosingDeferred: 3_000_000}
	if *usd != want {
		t.Fatalf("reconciliation row\n got %+v\nwant %+v", *usd, want)
	}
}

// postWebhook signs and posts a Stripe event to a node's webhook route.
func postWebhook(t *testing.T, hc *http.Client, baseURL string, payload []byte) (int, string) {
	t.Helper()
	sp := webhook.GenerateTestSignedPayload(&webhook.UnsignedPayload{Payload: payload, Secret: testWebhookSecret, Timestamp: time.Now()})
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, baseURL+WebhookPath, bytes.NewReader(payload))
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set("Stripe-Signature", sp.Header)
	resp, err := hc.Do(req)
	if err != nil {
		t.Fatalf("post webhook: %v", err)
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(body)
}

// Stripe sends a webhook to whichever node the load balancer picks: a
// follower verifies it and forwards it to the leader over the API port.
func TestClusterWebhookOnAFollowerReachesTheLeader(t *testing.T) {
	prov := newSandbox(t)
	first := startAPINode(t, "n1", 3, nil, prov)
	nodes := []apiNode{first,
		startAPINode(t, "n2", 3, []string{first.n.GossipAddr()}, prov),
		startAPINode(t, "n3", 3, []string{first.n.GossipAddr()}, prov)}
	var leader, follower apiNode
	eventually(t, "a leader and a ready follower", func() bool {
		leader, follower = apiNode{}, apiNode{}
		for _, an := range nodes {
			switch {
			case an.n.IsLeader() && an.n.Ready():
				leader = an
			case !an.n.IsLeader() && an.n.Ready():
				follower = an
			}
		}
		return leader.n != nil && follower.n != nil
	})
	c := &billingCluster{t: t, nodes: []*node.Node{nodes[0].n, nodes[1].n, nodes[2].n}, down: map[*node.Node]bool{}}
	seedCatalog(t, c, fsm.GrantOnPayment, fsm.AutoTopUp{})
	must(t, c, fsm.StartPurchase{ID: "p1", CustomerID: "c1", Credits: 1000, Flow: fsm.FlowSelfServe})

	payload := stripeEventJSON(t, "evt_fwd", "payment_intent.succeeded", paymentIntentObj("pi_x", "p1", "succeeded"))
	code, body := postWebhook(t, h2cClient(), follower.url, payload)
	if code != http.StatusOK {
		t.Fatalf("webhook at follower: status %d: %s", code, body)
	}
	if st := purchaseStatus(leader.n.FSM(), "p1"); st != fsm.PurchaseSucceeded {
		t.Fatalf("purchase %s on the leader after the follower answered 200, want succeeded", st)
	}
	// A bad signature is refused by the follower itself.
	sp := webhook.GenerateTestSignedPayload(&webhook.UnsignedPayload{Payload: payload, Secret: "whsec_wrong", Timestamp: time.Now()})
	req, _ := http.NewRequest(http.MethodPost, follower.url+WebhookPath, bytes.NewReader(payload))
	req.Header.Set("Stripe-Signature", sp.Header)
	resp, err := h2cClient().Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusBadRequest {
		t.Fatalf("bad signature at follower: status %d, want 400", resp.StatusCode)
	}
}
