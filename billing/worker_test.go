package billing

import (
	"context"
	"errors"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/creditd/creditd/fsm"
)

var testAutoTopUp = fsm.AutoTopUp{Enabled: true, ThresholdCredits: 100, Mode: fsm.TopUpFixed, AmountCredits: 500}

// startWorker runs a worker until the test ends.
func startWorker(t *testing.T, o WorkerOptions) context.CancelFunc {
	t.Helper()
	if o.ScanInterval == 0 {
		o.ScanInterval = 20 * time.Millisecond
	}
	if o.RetryBackoff == 0 {
		o.RetryBackoff = 10 * time.Millisecond
	}
	if o.TransientBackoff == 0 {
		o.TransientBackoff = 10 * time.Millisecond
	}
	if o.PollInterval == 0 {
		o.PollInterval = 20 * time.Millisecond
	}
	if o.Logger == nil {
		o.Logger = testLogger()
	}
	w, err := NewWorker(o)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { w.Run(ctx); close(done) }()
	stop := func() { cancel(); <-done }
	t.Cleanup(stop)
	return stop
}

// burnToAutoTopUp gives c1 200 promotional credits and burns 150, which
// leaves 50 available, below the threshold of 100: fsm starts an automatic
// purchase of 500 credits. It returns the purchase id.
func burnToAutoTopUp(t *testing.T, a Applier, s StateReader) string {
	t.Helper()
	must(t, a, fsm.CreateGrant{ID: "promo", CustomerID: "c1", CreditTypeID: "ai", Category: fsm.Promotional, Amount: 200})
	must(t, a, fsm.BurnUsage{Events: []fsm.UsageEvent{{ID: "u1", CustomerID: "c1", CreditTypeID: "ai", Credits: 150}}})
	var cu fsm.Customer
	if err := s.View(func(v *fsm.View) error {
		var err error
		cu, err = v.Customer("c1")
		return err
	}); err != nil {
		t.Fatal(err)
	}
	if cu.AutoPendingPurchase == "" {
		t.Fatalf("no automatic purchase started: %q", cu.AutoTopUpLast)
	}
	return cu.AutoPendingPurchase
}

func purchaseStatus(s StateReader, id string) fsm.PurchaseStatus {
	var st fsm.PurchaseStatus = 255
	_ = s.View(func(v *fsm.View) error {
		p, err := v.Purchase(id)
		st = p.Status
		return err
	})
	return st
}

func TestWorkerChargesAnAutomaticTopUpOnce(t *testing.T) {
	f, a := newLocalFSM(t)
	seedCatalog(t, a, fsm.GrantOnPayment, testAutoTopUp)
	id := burnToAutoTopUp(t, a, f)
	prov := newFakeProvider()
	startWorker(t, WorkerOptions{Provider: prov, Applier: a, State: f})
	eventually(t, "the automatic purchase to succeed", func() bool { return purchaseStatus(f, id) == fsm.PurchaseSucceeded })
	keys, distinct := prov.chargeKeys()
	if len(keys) != 1 || keys[0] != id || distinct != 1 {
		t.Fatalf("charge keys %v (%d distinct), want one charge keyed by the purchase id %s", keys, distinct, id)
	}
	p := readPurchase(t, f, id)
	g := readGrant(t, f, p.GrantID)
	if g.Amount != 500 || g.Category != fsm.Paid || p.TotalMicros != 5_000_000 {
		t.Fatalf("grant %+v for purchase %+v, want 500 paid credits for 5 USD", g, p)
	}
}

func TestWorkerRetriesATimedOutChargeWithTheSameKey(t *testing.T) {
	f, a := newLocalFSM(t)
	seedCatalog(t, a, fsm.GrantOnPayment, testAutoTopUp)
	id := burnToAutoTopUp(t, a, f)
	prov := newFakeProvider()
	prov.timeoutAfterCharge = 2
	startWorker(t, WorkerOptions{Provider: prov, Applier: a, State: f})
	eventually(t, "the automatic purchase to succeed", func() bool { return purchaseStatus(f, id) == fsm.PurchaseSucceeded })
	keys, distinct := prov.chargeKeys()
	if len(keys) != 3 || distinct != 1 {
		t.Fatalf("charge keys %v (%d distinct charges), want 3 calls making 1 charge", keys, distinct)
	}
	for _, k := range keys {
		if k != id {
			t.Fatalf("charge keys %v, want every retry keyed %s", keys, id)
		}
	}
}

func TestWorkerDeclinedChargesRetryThenPauseAutoTopUp(t *testing.T) {
	tests := []struct {
		name       string
		declines   int
		wantStatus fsm.PurchaseStatus
		wantKeys   []string
	}{
		{"a decline then a success succeeds on the second attempt", 1, fsm.PurchaseSucceeded, []string{"", ":attempt-2"}},
		{"declines up to the limit fail the purchase", 3, fsm.PurchaseFailed, []string{"", ":attempt-2", ":attempt-3"}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			f, a := newLocalFSM(t)
			seedCatalog(t, a, fsm.GrantOnPayment, testAutoTopUp)
			id := burnToAutoTopUp(t, a, f)
			prov := newFakeProvider()
			prov.declineNext = tc.declines
			startWorker(t, WorkerOptions{Provider: prov, Applier: a, State: f, MaxAttempts: 3})
			eventually(t, "the purchase to end", func() bool { return purchaseStatus(f, id) != fsm.PurchasePending })
			if st := purchaseStatus(f, id); st != tc.wantStatus {
				t.Fatalf("purchase %s, want %s", st, tc.wantStatus)
			}
			keys, _ := prov.chargeKeys()
			if len(keys) != len(tc.wantKeys) {
				t.Fatalf("charge keys %v, want %d", keys, len(tc.wantKeys))
			}
			for i, k := range keys {
				if k != id+tc.wantKeys[i] {
					t.Fatalf("charge keys %v, want %v after %s", keys, tc.wantKeys, id)
				}
			}
			var cu fsm.Customer
			_ = f.View(func(v *fsm.View) error { cu, _ = v.Customer("c1"); return nil })
			paused := cu.AutoTopUpPaused != ""
			if paused != (tc.wantStatus == fsm.PurchaseFailed) {
				t.Fatalf("auto top-up paused = %q, want paused only after a failed purchase", cu.AutoTopUpPaused)
			}
			if paused && !strings.Contains(cu.AutoTopUpPaused, "card_declined") {
				t.Fatalf("pause reason %q does not say why", cu.AutoTopUpPaused)
			}
		})
	}
}

// The attempt a declined automatic charge reached is in the replicated
// state: a new leader resumes at the next attempt once the backoff since
// the recorded decline has passed, instead of starting over.
func TestWorkerNewTermResumesDeclinedChargesAtTheNextAttempt(t *testing.T) {
	f, a := newLocalFSM(t)
	seedCatalog(t, a, fsm.GrantOnPayment, testAutoTopUp)
	id := burnToAutoTopUp(t, a, f)
	prov := newFakeProvider()
	prov.declineNext = 1
	stop := startWorker(t, WorkerOptions{Provider: prov, Applier: a, State: f, MaxAttempts: 3, RetryBackoff: time.Hour})
	eventually(t, "the decline to be recorded", func() bool {
		return strings.HasPrefix(readPurchase(t, f, id).ProviderStatus, "declined (attempt 1/3)")
	})
	stop()
	later := func() time.Time { return time.Now().Add(2 * time.Hour) }
	startWorker(t, WorkerOptions{Provider: prov, Applier: a, State: f, MaxAttempts: 3, RetryBackoff: time.Hour, Now: later})
	eventually(t, "the purchase to succeed", func() bool { return purchaseStatus(f, id) == fsm.PurchaseSucceeded })
	keys, distinct := prov.chargeKeys()
	if want := []string{id, id + ":attempt-2"}; !slices.Equal(keys, want) || distinct != 2 {
		t.Fatalf("charge keys %v (%d charges), want %v", keys, distinct, want)
	}
}

// A charge that is processing (a bank debit) is looked up, not charged
// again; when it fails, it counts as a declined attempt.
func TestWorkerProcessingChargeIsPolledThenRetriedWhenItFails(t *testing.T) {
	f, a := newLocalFSM(t)
	seedCatalog(t, a, fsm.GrantOnPayment, testAutoTopUp)
	id := burnToAutoTopUp(t, a, f)
	prov := newFakeProvider()
	prov.processNext = 1
	startWorker(t, WorkerOptions{Provider: prov, Applier: a, State: f, MaxAttempts: 3})
	eventually(t, "the processing attempt to be recorded", func() bool {
		return strings.HasPrefix(readPurchase(t, f, id).ProviderStatus, "processing (attempt 1/3)")
	})
	ref := readPurchase(t, f, id).ProviderRef
	prov.setPayment(ref, PaymentFailed, "requires_payment_method")
	eventually(t, "the purchase to succeed on the next attempt", func() bool { return purchaseStatus(f, id) == fsm.PurchaseSucceeded })
	keys, distinct := prov.chargeKeys()
	if want := []string{id, id + ":attempt-2"}; !slices.Equal(keys, want) || distinct != 2 {
		t.Fatalf("charge keys %v (%d charges), want %v", keys, distinct, want)
	}
}

func TestWorkerSelfServeStartsOncePollsAndCompletes(t *testing.T) {
	f, a := newLocalFSM(t)
	seedCatalog(t, a, fsm.GrantOnPayment, fsm.AutoTopUp{})
	must(t, a, fsm.StartPurchase{ID: "web1", CustomerID: "c1", Credits: 1000, Flow: fsm.FlowSelfServe})
	prov := newFakeProvider()
	startWorker(t, WorkerOptions{Provider: prov, Applier: a, State: f})
	eventually(t, "the payment to be started", func() bool { return readPurchase(t, f, "web1").ProviderRef != "" })
	p := readPurchase(t, f, "web1")
	act, err := PaymentAction(context.Background(), prov, f, "web1")
	if err != nil || act.ClientSecret == "" {
		t.Fatalf("PaymentAction = %+v, %v; want a client secret", act, err)
	}
	// The customer pays; the webhook is lost; the worker's poll finds it.
	prov.setPayment(p.ProviderRef, PaymentSucceeded, "succeeded")
	eventually(t, "the purchase to succeed", func() bool { return purchaseStatus(f, "web1") == fsm.PurchaseSucceeded })
	prov.mu.Lock()
	defer prov.mu.Unlock()
	starts := 0
	for _, c := range prov.calls {
		if c.method == "start" {
			starts++
		}
	}
	if starts != 1 {
		t.Fatalf("%d payments started, want 1", starts)
	}
}

func TestWorkerCancelsAbandonedSelfServePayments(t *testing.T) {
	f, a := newLocalFSM(t)
	seedCatalog(t, a, fsm.GrantOnPayment, fsm.AutoTopUp{})
	must(t, a, fsm.StartPurchase{ID: "web1", CustomerID: "c1", Credits: 1000, Flow: fsm.FlowSelfServe})
	prov := newFakeProvider()
	startWorker(t, WorkerOptions{Provider: prov, Applier: a, State: f, OnSessionTTL: time.Millisecond})
	eventually(t, "the abandoned purchase to fail", func() bool { return purchaseStatus(f, "web1") == fsm.PurchaseFailed })
	p := readPurchase(t, f, "web1")
	if !strings.Contains(p.FailureReason, "not paid within") {
		t.Fatalf("failure reason %q, want it to say the payment was abandoned", p.FailureReason)
	}
	if pay, _ := prov.LookupPayment(context.Background(), p.ProviderRef); pay.Status != PaymentCanceled {
		t.Fatalf("payment %s is %s at the provider, want canceled before the purchase failed", p.ProviderRef, pay.Status)
	}
}

func TestWorkerInvoiceIsIssuedThenPaid(t *testing.T) {
	f, a := newLocalFSM(t)
	seedCatalog(t, a, fsm.GrantOnPayment, fsm.AutoTopUp{})
	must(t, a, fsm.StartPurchase{ID: "inv1", CustomerID: "c1", Credits: 1000, Flow: fsm.FlowInvoice})
	prov := newFakeProvider()
	startWorker(t, WorkerOptions{Provider: prov, Applier: a, State: f})
	eventually(t, "the invoice to be issued", func() bool { return readPurchase(t, f, "inv1").ProviderRef != "" })
	p := readPurchase(t, f, "inv1")
	if p.Status != fsm.PurchasePending || countGrants(t, f) != 0 {
		t.Fatalf("purchase %+v granted before payment under a grant-on-payment plan", p)
	}
	prov.setInvoice(p.ProviderRef, InvoicePaid)
	eventually(t, "the purchase to succeed", func() bool { return purchaseStatus(f, "inv1") == fsm.PurchaseSucceeded })
	if n := countGrants(t, f); n != 1 {
		t.Fatalf("%d grants, want 1", n)
	}
}

func TestWorkerRecordsTheProviderCustomer(t *testing.T) {
	f, a := newLocalFSM(t)
	seedCatalog(t, a, fsm.GrantOnPayment, fsm.AutoTopUp{})
	must(t, a, fsm.UpsertCustomer{ID: "c2", Name: "Beta", PlanID: "pro"})
	must(t, a, fsm.StartPurchase{ID: "inv2", CustomerID: "c2", Credits: 100, Flow: fsm.FlowInvoice})
	prov := newFakeProvider()
	startWorker(t, WorkerOptions{Provider: prov, Applier: a, State: f})
	eventually(t, "the invoice to be issued", func() bool { return readPurchase(t, f, "inv2").ProviderRef != "" })
	var cu fsm.Customer
	_ = f.View(func(v *fsm.View) error { cu, _ = v.Customer("c2"); return nil })
	if cu.BillingRef != "cus_c2" || cu.PlanID != "pro" || cu.Name != "Beta" {
		t.Fatalf("customer %+v, want billing ref cus_c2 and its other settings kept", cu)
	}
}

func TestWorkerWithManualConnectorLeavesPurchasesToAnOperator(t *testing.T) {
	f, a := newLocalFSM(t)
	seedCatalog(t, a, fsm.GrantOnPayment, testAutoTopUp)
	id := burnToAutoTopUp(t, a, f)
	must(t, a, fsm.StartPurchase{ID: "deal1", CustomerID: "c1", Credits: 1000, Flow: fsm.FlowInvoice})
	startWorker(t, WorkerOptions{Provider: NewManual(), Applier: a, State: f})
	for _, pid := range []string{id, "deal1"} {
		eventually(t, "the purchase to await an operator", func() bool {
			return readPurchase(t, f, pid).ProviderStatus == "awaiting operator"
		})
		if st := purchaseStatus(f, pid); st != fsm.PurchasePending {
			t.Fatalf("purchase %s is %s, want pending for the operator", pid, st)
		}
	}
	// The operator completes the deal.
	must(t, a, fsm.CompletePurchase{ID: "deal1", Outcome: fsm.OutcomeInvoicePaid, ProviderRef: "wire-42"})
	if st := purchaseStatus(f, "deal1"); st != fsm.PurchaseSucceeded {
		t.Fatalf("deal1 %s after the operator, want succeeded", st)
	}
}

// A leader that dies between the provider call and the commit of its
// result: the next term's worker charges again with the same key and the
// provider returns the first charge.
func TestWorkerNewTermFinishesWhatTheLastLeftWithTheSameKey(t *testing.T) {
	f, a := newLocalFSM(t)
	seedCatalog(t, a, fsm.GrantOnPayment, testAutoTopUp)
	id := burnToAutoTopUp(t, a, f)
	prov := newFakeProvider()
	var once sync.Once
	charged := make(chan struct{})
	prov.afterCharge = func(string) {
		once.Do(func() {
			// Leadership is lost: the result cannot be committed.
			a.mu.Lock()
			a.failNext = 1 << 30
			a.mu.Unlock()
			close(charged)
		})
	}
	stop1 := startWorker(t, WorkerOptions{Provider: prov, Applier: a, State: f})
	<-charged
	stop1()
	if st := purchaseStatus(f, id); st != fsm.PurchasePending {
		t.Fatalf("purchase %s after the lost term, want still pending", st)
	}
	a.mu.Lock()
	a.failNext = 0
	a.mu.Unlock()
	startWorker(t, WorkerOptions{Provider: prov, Applier: a, State: f})
	eventually(t, "the new term to complete the purchase", func() bool { return purchaseStatus(f, id) == fsm.PurchaseSucceeded })
	keys, distinct := prov.chargeKeys()
	if distinct != 1 || len(keys) < 2 {
		t.Fatalf("charge keys %v (%d distinct charges), want ≥2 calls with one charge", keys, distinct)
	}
	for _, k := range keys {
		if k != id {
			t.Fatalf("charge keys %v, want all %s", keys, id)
		}
	}
	if n := countGrants(t, f); n != 2 { // the promotional grant and the purchase's
		t.Fatalf("%d grants, want 2", n)
	}
}

func TestNewWorkerRefusesBadOptions(t *testing.T) {
	f, a := newLocalFSM(t)
	tests := []struct {
		name string
		o    WorkerOptions
	}{
		{"no provider", WorkerOptions{Applier: a, State: f}},
		{"too much concurrency", WorkerOptions{Provider: NewManual(), Applier: a, State: f, Concurrency: 1000}},
		{"a negative timeout", WorkerOptions{Provider: NewManual(), Applier: a, State: f, CallTimeout: -1}},
		{"a key window longer than Stripe keeps keys", WorkerOptions{Provider: NewManual(), Applier: a, State: f, KeyWindow: 25 * time.Hour}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			if _, err := NewWorker(tc.o); err == nil {
				t.Fatal("accepted")
			}
		})
	}
}

type describingProvider struct {
	*fakeProvider
	mu    sync.Mutex
	descs []string
}

func (d *describingProvider) note(s string) {
	d.mu.Lock()
	defer d.mu.Unlock()
	d.descs = append(d.descs, s)
}

func (d *describingProvider) CreateInvoice(ctx context.Context, req InvoiceRequest) (Invoice, error) {
	d.note(req.Description)
	return d.fakeProvider.CreateInvoice(ctx, req)
}

func (d *describingProvider) descriptions() []string {
	d.mu.Lock()
	defer d.mu.Unlock()
	return append([]string(nil), d.descs...)
}

// The text on the customer's invoice line or payment gives the credits in
// their credit type's scale and name, not the state machine's units.
func TestInvoiceLinesShowCreditsInTheirScale(t *testing.T) {
	f, a := newLocalFSM(t)
	price, err := fsm.ParseDecimal("0.01", 6)
	if err != nil {
		t.Fatal(err)
	}
	// As in the README's go-live: credits with two decimal places.
	must(t, a, fsm.CreateCreditType{ID: "ai-credits", Name: "AI credits", Scale: 2})
	must(t, a, fsm.UpsertPlan{Plan: fsm.Plan{ID: "pro", Name: "Pro", CreditTypeID: "ai-credits", Currency: "USD",
		PricePerCredit: price, MinPurchaseCredits: 100_00, MaxPurchaseCredits: 100_000_00}})
	must(t, a, fsm.UpsertCustomer{ID: "acme", Name: "Acme", BillingRef: "cus_acme", PlanID: "pro"})
	// PurchaseCredits with credits "1000" (rpc parses it to 100000 units).
	res := must(t, a, fsm.StartPurchase{ID: "inv-1", CustomerID: "acme", Credits: 1000_00, Flow: fsm.FlowInvoice})
	if p := res.Value.(*fsm.Purchase); p.TotalMicros != 10_000_000 {
		t.Fatalf("purchase total %d micros, want 10 USD", p.TotalMicros)
	}
	prov := &describingProvider{fakeProvider: newFakeProvider()}
	startWorker(t, WorkerOptions{Provider: prov, Applier: a, State: f, PollInterval: time.Hour})
	eventually(t, "the invoice to be created", func() bool { return len(prov.descriptions()) > 0 })
	d := prov.descriptions()[0]
	if want := "creditd purchase inv-1: 1000.00 AI credits"; d != want {
		t.Fatalf("the invoice line for 1000.00 credits reads %q, want %q", d, want)
	}
}

type processingProvider struct {
	*fakeProvider
	cancels int
}

func (p *processingProvider) CancelPayment(_ context.Context, ref string) (Payment, error) {
	p.cancels++
	return Payment{Ref: ref, Status: PaymentPending, ProviderStatus: "processing"}, nil
}

// A self-serve payment past its time limit that Stripe cannot cancel (a
// bank debit still processing) is looked at again at the poll interval, not
// every transient backoff.
func TestAProcessingPaymentPastItsTimeLimitIsPolledAtThePollInterval(t *testing.T) {
	f, a := newLocalFSM(t)
	seedCatalog(t, a, fsm.GrantOnPayment, fsm.AutoTopUp{})
	must(t, a, fsm.StartPurchase{ID: "web1", CustomerID: "c1", Credits: 1000, Flow: fsm.FlowSelfServe})
	must(t, a, fsm.CompletePurchase{ID: "web1", Outcome: fsm.OutcomeProgress, ProviderRef: "pi_1", ProviderStatus: "processing"})
	prov := &processingProvider{fakeProvider: newFakeProvider()}
	now := time.Now().Add(48 * time.Hour) // past the 24 h TTL
	w, err := NewWorker(WorkerOptions{Provider: prov, Applier: a, State: f, Now: func() time.Time { return now }})
	if err != nil {
		t.Fatal(err)
	}
	var cu fsm.Customer
	_ = f.View(func(v *fsm.View) error { cu, _ = v.Customer("c1"); return nil })
	next, _ := w.process(context.Background(), pendingItem{p: readPurchase(t, f, "web1"), cu: cu})
	if wait := next.Sub(now); wait < DefaultPollInterval {
		t.Fatalf("a processing payment past its time limit is looked at again after %v (cancel calls: %d), want the poll interval %v",
			wait, prov.cancels, DefaultPollInterval)
	}
}

// flakyState fails its reads while failing is set, and counts reads.
type flakyState struct {
	f       *fsm.FSM
	failing atomic.Bool
	failed  atomic.Int64
	read    atomic.Int64
}

func (s *flakyState) View(fn func(v *fsm.View) error) error {
	if s.failing.Load() {
		s.failed.Add(1)
		return errors.New("flaky state: read failed")
	}
	s.read.Add(1)
	return s.f.View(fn)
}

// A scan that cannot read the pending purchases leaves each purchase's wait
// as it was: the next scan must not call the provider for all of them.
func TestAFailedScanKeepsEachPurchasesWait(t *testing.T) {
	f, a := newLocalFSM(t)
	seedCatalog(t, a, fsm.GrantOnPayment, fsm.AutoTopUp{})
	must(t, a, fsm.StartPurchase{ID: "web1", CustomerID: "c1", Credits: 1000, Flow: fsm.FlowSelfServe})
	prov := newFakeProvider()
	state := &flakyState{f: f}
	startWorker(t, WorkerOptions{Provider: prov, Applier: a, State: state, PollInterval: time.Hour})
	eventually(t, "the payment to be started", func() bool { return readPurchase(t, f, "web1").ProviderRef != "" })

	state.failing.Store(true)
	eventually(t, "three scans to fail", func() bool { return state.failed.Load() >= 3 })
	state.failing.Store(false)
	readsBefore := state.read.Load()
	eventually(t, "three scans to read again", func() bool { return state.read.Load() >= readsBefore+3 })

	prov.mu.Lock()
	defer prov.mu.Unlock()
	for _, c := range prov.calls {
		if c.method == "lookup" {
			t.Fatalf("the payment was looked up after the failed scans, an hour before its poll: calls %v", prov.calls)
		}
	}
}

// The status the worker records is read back by a new leader: the last
// attempt whose outcome is known, whether one is processing, the customer a
// request in flight went to, and how long to wait. An attempt being charged
// (its outcome unknown) is made again at once, under its key, at the
// customer it was sent to; only a decline waits out its backoff.
func TestRecordedChargeStatusReadBack(t *testing.T) {
	w, err := NewWorker(WorkerOptions{Provider: newFakeProvider(), Applier: &localApplier{}, State: &localApplier{}})
	if err != nil {
		t.Fatal(err)
	}
	declined := fsm.Purchase{Flow: fsm.FlowAuto, ProviderStatus: "declined (attempt 2/4): card_declined", UpdatedAt: fsm.TimestampOf(time.Unix(1000, 0))}
	for _, tc := range []struct {
		status     string
		reached    int
		processing bool
		customer   string
		waits      bool
	}{
		{"", 0, false, "", false},
		{"declined (attempt 2/4): card_declined", 2, false, "", true},
		{"processing (attempt 3/4): processing", 3, true, "", false},
		{"charging (attempt 3/4) at cus_123", 2, false, "cus_123", false},
		{"charging (attempt 1/4) at cus_123", 0, false, "cus_123", false},
		{"starting at cus_9", 0, false, "cus_9", false},
		{"requires_payment_method", 0, false, "", false},
	} {
		p := declined
		p.ProviderStatus = tc.status
		n, processing := chargeState(tc.status)
		cust, pinned := billedAt(p)
		waits := !w.resumeAt(p).IsZero()
		if n != tc.reached || processing != tc.processing || cust != tc.customer || pinned != (tc.customer != "") || waits != tc.waits {
			t.Errorf("%q: reached %d processing %v customer %q waits %v; want %d %v %q %v",
				tc.status, n, processing, cust, waits, tc.reached, tc.processing, tc.customer, tc.waits)
		}
	}
}
