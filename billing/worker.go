package billing

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/creditd/creditd/fsm"
)

// Defaults and limits of the purchase worker.
const (
	DefaultWorkerConcurrency = 4
	DefaultCallTimeout       = 30 * time.Second
	DefaultScanInterval      = 2 * time.Second
	// minScanGap bounds how often applies (Wake) can trigger a scan.
	minScanGap             = 100 * time.Millisecond
	DefaultScanLimit       = 10000
	DefaultMaxAttempts     = 4
	DefaultRetryBackoff    = time.Minute
	DefaultMaxRetryBackoff = time.Hour
	// DefaultTransientBackoff is the wait before retrying a call whose
	// outcome is unknown (timeout, 5xx, lost leader) with the same key.
	DefaultTransientBackoff = 5 * time.Second
	DefaultPollInterval     = 5 * time.Minute
	// DefaultOnSessionTTL is how long a self-serve payment may wait for
	// the customer before it is canceled and the purchase fails, so
	// abandoned checkouts do not pile up in the pending set.
	DefaultOnSessionTTL = 24 * time.Hour
	// MaxWorkerConcurrency bounds concurrent provider calls.
	MaxWorkerConcurrency = 64
	// DefaultKeyWindow is how long after a purchase started the worker
	// relies on idempotency keys alone. Stripe keeps a key for 24 hours;
	// the hour under it covers clock skew between the leader that started
	// the purchase and the one retrying, and the call itself.
	DefaultKeyWindow = 23 * time.Hour
	// MaxKeyWindow is Stripe's key retention: a longer window would trust
	// keys Stripe may have forgotten.
	MaxKeyWindow = 24 * time.Hour
)

// WorkerOptions configure the purchase worker.
type WorkerOptions struct {
	Provider Provider
	Applier  Applier
	State    StateReader
	Logger   *slog.Logger
	// Concurrency bounds purchases carried out at once (1..64; 0 = 4).
	Concurrency int
	// CallTimeout bounds each provider call and each Apply.
	CallTimeout time.Duration
	// ScanInterval is how often pending purchases are read when nothing
	// wakes the worker sooner.
	ScanInterval time.Duration
	// ScanLimit bounds the pending purchases read per scan. fsm lists
	// pending purchases in id order without a cursor, so the limit must
	// exceed the purchases that stay pending for long (unpaid invoices),
	// or later ones would wait behind them.
	ScanLimit int
	// Wake, when set, returns a channel closed after the next apply
	// (node.AppliedNotify), so new purchases start without waiting for the
	// next scan.
	Wake func() <-chan struct{}
	// MaxAttempts bounds the charges tried for one automatic top-up before
	// it fails and auto top-up pauses for the customer.
	MaxAttempts int
	// RetryBackoff is the wait after the first declined automatic charge;
	// it doubles per attempt up to MaxRetryBackoff.
	RetryBackoff    time.Duration
	MaxRetryBackoff time.Duration
	// TransientBackoff is the wait before retrying a call whose outcome is
	// unknown, with the same idempotency key.
	TransientBackoff time.Duration
	// PollInterval is how often a purchase waiting at the provider (an
	// on-session payment, an unpaid invoice) is looked up, in case its
	// webhook was lost.
	PollInterval time.Duration
	// OnSessionTTL bounds how long a self-serve payment waits for the
	// customer (0 = 24h).
	OnSessionTTL time.Duration
	// InvoiceDaysUntilDue is the payment term of invoices (0 = 30).
	InvoiceDaysUntilDue int64
	// KeyWindow is how long after a purchase started its idempotency keys
	// are trusted to be remembered by the provider (0 = 23 h, at most
	// 24 h). Past it, a money-moving call is preceded by a look-up for
	// what an earlier request made (keysMayBeForgotten).
	KeyWindow time.Duration
	// Now is the clock for backoff and for a purchase's age against
	// KeyWindow and OnSessionTTL; nil = time.Now.
	Now func() time.Time
}

// Worker carries out pending purchases with the provider. Run it on the
// leader alone: node.RunOnLeader("billing", w.Run).
type Worker struct {
	o   WorkerOptions
	log *slog.Logger
}

// NewWorker checks the options and builds a worker.
func NewWorker(o WorkerOptions) (*Worker, error) {
	if o.Provider == nil || o.Applier == nil || o.State == nil {
		return nil, errors.New("billing: worker needs Provider, Applier and State")
	}
	if o.Concurrency < 0 || o.Concurrency > MaxWorkerConcurrency {
		return nil, fmt.Errorf("billing: worker concurrency %d is outside 0..%d", o.Concurrency, MaxWorkerConcurrency)
	}
	if o.CallTimeout < 0 || o.ScanInterval < 0 || o.ScanLimit < 0 || o.MaxAttempts < 0 || o.RetryBackoff < 0 ||
		o.MaxRetryBackoff < 0 || o.TransientBackoff < 0 || o.PollInterval < 0 || o.OnSessionTTL < 0 || o.InvoiceDaysUntilDue < 0 ||
		o.KeyWindow < 0 {
		return nil, errors.New("billing: worker limits must not be negative")
	}
	if o.KeyWindow > MaxKeyWindow {
		return nil, fmt.Errorf("billing: worker key window %v is longer than the provider keeps keys (%v)", o.KeyWindow, MaxKeyWindow)
	}
	def := func(d *time.Duration, v time.Duration) {
		if *d == 0 {
			*d = v
		}
	}
	if o.Concurrency == 0 {
		o.Concurrency = DefaultWorkerConcurrency
	}
	def(&o.CallTimeout, DefaultCallTimeout)
	def(&o.ScanInterval, DefaultScanInterval)
	def(&o.RetryBackoff, DefaultRetryBackoff)
	def(&o.MaxRetryBackoff, DefaultMaxRetryBackoff)
	def(&o.TransientBackoff, DefaultTransientBackoff)
	def(&o.PollInterval, DefaultPollInterval)
	def(&o.OnSessionTTL, DefaultOnSessionTTL)
	def(&o.KeyWindow, DefaultKeyWindow)
	if o.ScanLimit == 0 {
		o.ScanLimit = DefaultScanLimit
	}
	if o.MaxAttempts == 0 {
		o.MaxAttempts = DefaultMaxAttempts
	}
	if o.InvoiceDaysUntilDue == 0 {
		o.InvoiceDaysUntilDue = defaultDaysUntilDue
	}
	if o.Now == nil {
		o.Now = time.Now
	}
	log := o.Logger
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	return &Worker{o: o, log: log.With("component", "billing-worker", "provider", o.Provider.Name())}, nil
}

// task is the worker's memory of one pending purchase, kept for one term of
// leadership. What must survive a leader change (the charge attempt) is in
// the replicated state instead.
type task struct {
	busy   bool
	nextAt time.Time // not before
	parked bool      // needs an operator; not retried this term
}

// pendingItem is a pending purchase with the customer it bills.
type pendingItem struct {
	p  fsm.Purchase
	cu fsm.Customer
}

// Run carries out pending purchases until ctx ends (leadership lost or
// shutdown), then waits for the calls in flight to return.
func (w *Worker) Run(ctx context.Context) {
	w.log.Info("purchase worker started")
	defer w.log.Info("purchase worker stopped")
	var (
		mu    sync.Mutex
		tasks = map[string]*task{}
		wg    sync.WaitGroup
		sem   = make(chan struct{}, w.o.Concurrency)
	)
	defer wg.Wait()
	timer := time.NewTimer(0)
	defer timer.Stop()
	for {
		var wake <-chan struct{}
		if w.o.Wake != nil {
			wake = w.o.Wake()
		}
		select {
		case <-ctx.Done():
			return
		case <-timer.C:
		case <-wake:
			// Coalesce bursts of applies into one scan.
			select {
			case <-ctx.Done():
				return
			case <-time.After(minScanGap):
			}
		}
		items, err := w.pending()
		if err != nil {
			// Keep the tasks as they are: forgetting them would forget each
			// purchase's wait, and the next scan would call the provider
			// for all of them at once.
			w.log.Warn("read pending purchases", "err", err)
			timer.Reset(w.o.ScanInterval)
			continue
		}
		now := w.o.Now()
		mu.Lock()
		live := make(map[string]bool, len(items))
		var due []pendingItem
		for _, it := range items {
			live[it.p.ID] = true
			t := tasks[it.p.ID]
			if t == nil {
				t = &task{nextAt: w.resumeAt(it.p)}
				tasks[it.p.ID] = t
			}
			if t.busy || t.parked || now.Before(t.nextAt) {
				continue
			}
			t.busy = true
			due = append(due, it)
		}
		for id, t := range tasks {
			if !live[id] && !t.busy {
				delete(tasks, id)
			}
		}
		mu.Unlock()
		for _, it := range due {
			select {
			case sem <- struct{}{}:
			case <-ctx.Done():
				return
			}
			wg.Add(1)
			go func(it pendingItem) {
				defer wg.Done()
				defer func() { <-sem }()
				next, parked := w.process(ctx, it)
				mu.Lock()
				if t := tasks[it.p.ID]; t != nil {
					t.busy, t.nextAt, t.parked = false, next, parked
				}
				mu.Unlock()
			}(it)
		}
		timer.Reset(w.o.ScanInterval)
	}
}

func (w *Worker) pending() ([]pendingItem, error) {
	var out []pendingItem
	err := w.o.State.View(func(v *fsm.View) error {
		ps, err := v.PendingPurchases(w.o.ScanLimit)
		if err != nil {
			return err
		}
		for _, p := range ps {
			cu, err := v.Customer(p.CustomerID)
			if err != nil {
				return fmt.Errorf("customer %s of purchase %s: %w", p.CustomerID, p.ID, err)
			}
			out = append(out, pendingItem{p: p, cu: cu})
		}
		return nil
	})
	return out, err
}

// attemptRE reads back where an automatic charge is, as the worker records
// it in the purchase's ProviderStatus: "declined (attempt 2/4): …",
// "processing (attempt 3/4): …", or "charging (attempt 2/4) at cus_…" while
// the attempt's request is sent and its outcome not yet known. Keeping it in
// the replicated state lets a new leader go on from there.
var attemptRE = regexp.MustCompile(`^(declined|processing|charging) \(attempt (\d+)/\d+\)`)

// chargeState returns what the recorded status says: the last attempt
// whose outcome is known, and whether it is still processing at the
// provider (0, false = none yet). An attempt being charged is not known yet:
// it is made again, under its key.
func chargeState(providerStatus string) (attempt int, processing bool) {
	m := attemptRE.FindStringSubmatch(providerStatus)
	if m == nil {
		return 0, false
	}
	n, err := strconv.Atoi(m[2])
	if err != nil || n < 1 {
		return 0, false
	}
	if m[1] == "charging" {
		return n - 1, false
	}
	return n, m[1] == "processing"
}

// billedAtRE reads back the provider customer a purchase's request in
// flight was sent to, as the worker records it before sending the first
// request of an attempt whose outcome is not known yet: "charging (attempt
// 2/4) at cus_…" (automatic), "starting at cus_…" (self-serve, invoice).
var billedAtRE = regexp.MustCompile(`^(?:charging \(attempt \d+/\d+\)|starting) at (\S+)$`)

// billedAt returns the provider customer the purchase's request in flight
// went to, if the recorded status names one.
func billedAt(p fsm.Purchase) (string, bool) {
	m := billedAtRE.FindStringSubmatch(p.ProviderStatus)
	if m == nil {
		return "", false
	}
	return m[1], true
}

// declinedAttempt is the attempt a charge was declined at (0 if none, or
// if an attempt is in flight: processing, or being charged).
func declinedAttempt(providerStatus string) int {
	if !strings.HasPrefix(providerStatus, "declined ") {
		return 0
	}
	n, _ := chargeState(providerStatus)
	return n
}

// backoff is the wait after the n-th declined attempt.
func (w *Worker) backoff(n int) time.Duration {
	d := w.o.RetryBackoff
	for i := 1; i < n && d < w.o.MaxRetryBackoff; i++ {
		d *= 2
	}
	return min(d, w.o.MaxRetryBackoff)
}

// resumeAt is when a purchase first seen this term is due: a declined
// automatic charge waits out its backoff from when the decline was
// recorded (log time), so a new leader neither hurries nor restarts it.
func (w *Worker) resumeAt(p fsm.Purchase) time.Time {
	if p.Flow == fsm.FlowAuto {
		if n := declinedAttempt(p.ProviderStatus); n > 0 {
			return p.UpdatedAt.Time().Add(w.backoff(n))
		}
	}
	return time.Time{}
}

// chargeKey is the idempotency key of attempt n of a purchase's automatic
// charge: the purchase id itself for the first, so a retry after a timeout
// or a leader change reuses it; a derived key for each new attempt after a
// decline (the provider would replay the decline for a reused key).
func chargeKey(purchaseID string, attempt int) string {
	if attempt <= 1 {
		return purchaseID
	}
	return purchaseID + ":attempt-" + strconv.Itoa(attempt)
}

// process carries a purchase one step further. It returns when it is next
// due, and whether it needs an operator.
func (w *Worker) process(ctx context.Context, it pendingItem) (time.Time, bool) {
	p := it.p
	log := w.log.With("purchase", p.ID, "flow", p.Flow.String())
	// A request whose outcome is unknown was sent to the customer the
	// status names: it is sent there again, under its key, and looked for
	// there, even if the customer was linked to another provider customer
	// since (Stripe refuses a key with another customer, and a look-up there
	// would miss what the first request made). The link of the moment
	// takes effect for the next attempt.
	custRef, pinned := billedAt(p)
	var err error
	if !pinned {
		custRef, err = w.customerRef(ctx, it.cu)
	}
	if err == nil {
		switch p.Flow {
		case fsm.FlowAuto:
			err = w.auto(ctx, p, custRef, log)
		case fsm.FlowSelfServe:
			err = w.selfServe(ctx, p, custRef, log)
		case fsm.FlowInvoice:
			err = w.invoice(ctx, p, custRef, log)
		default:
			err = fmt.Errorf("unknown flow %v: %w", p.Flow, ErrPermanent)
		}
	}
	now := w.o.Now()
	var wait waitError
	switch {
	case err == nil:
		return now.Add(w.o.PollInterval), false
	case errors.Is(err, errNotPending):
		return now.Add(w.o.TransientBackoff), false
	case errors.As(err, &wait):
		return now.Add(wait.d), false
	case errors.Is(err, ErrOperatorAction):
		w.progress(ctx, p, "", "awaiting operator", log)
		log.Info("purchase left to an operator")
		return time.Time{}, true
	case errors.Is(err, ErrPermanent):
		log.Warn("purchase failed permanently", "err", err)
		w.apply(ctx, fsm.CompletePurchase{ID: p.ID, Outcome: fsm.OutcomeFailed,
			FailureReason: clip(err.Error(), fsm.MaxReasonLen)}, log)
		return now.Add(w.o.TransientBackoff), false
	}
	// Unknown outcome: same key again after a pause.
	log.Warn("purchase step failed; will retry with the same key", "err", err)
	return now.Add(w.o.TransientBackoff), false
}

// waitError asks for the purchase to be looked at again after d.
type waitError struct{ d time.Duration }

func (e waitError) Error() string { return "wait " + e.d.String() }

// customerRef returns the provider's id of the customer, creating the
// provider customer and recording its id in the state when there is none.
func (w *Worker) customerRef(ctx context.Context, cu fsm.Customer) (string, error) {
	if cu.BillingRef != "" {
		return cu.BillingRef, nil
	}
	cctx, cancel := context.WithTimeout(ctx, w.o.CallTimeout)
	defer cancel()
	ref, err := w.o.Provider.EnsureCustomer(cctx, CustomerInfo{ID: cu.ID, Name: cu.Name})
	if err != nil {
		return "", fmt.Errorf("ensure provider customer for %s: %w", cu.ID, err)
	}
	if ref == "" {
		return "", nil
	}
	// UpsertCustomer replaces the settings, so read them again just before
	// writing: the window in which an operator's change could be undone is
	// one local read and one apply. ResumeAutoTopUp stays false so a pause
	// is not lifted by this write. A ref set meanwhile wins.
	var now fsm.Customer
	if err := w.o.State.View(func(v *fsm.View) error {
		var err error
		now, err = v.Customer(cu.ID)
		return err
	}); err != nil {
		return "", fmt.Errorf("re-read customer %s: %w", cu.ID, err)
	}
	if now.BillingRef != "" {
		return now.BillingRef, nil
	}
	res, err := w.o.Applier.Apply(cctx, fsm.UpsertCustomer{ID: now.ID, Name: now.Name, BillingRef: ref,
		PlanID: now.PlanID, AutoTopUp: now.AutoTopUp})
	if err != nil {
		return "", fmt.Errorf("record provider customer %s for %s: %w", ref, cu.ID, err)
	}
	if res.Err != nil {
		return "", fmt.Errorf("record provider customer %s for %s: %w", ref, cu.ID, res.Err)
	}
	return ref, nil
}

func (w *Worker) call(ctx context.Context) (context.Context, context.CancelFunc) {
	return context.WithTimeout(ctx, w.o.CallTimeout)
}

// describe is the text of the customer's payment or invoice line: the
// credits in their credit type's scale and name. It is the same on every
// retry, as Stripe requires of a request sent again under one idempotency
// key: a credit type's name and scale never change.
func (w *Worker) describe(p fsm.Purchase) (string, error) {
	ct, found, err := readRecord(w.o.State, "credit type", p.CreditTypeID, (*fsm.View).CreditType)
	if err == nil && !found {
		err = fmt.Errorf("purchase %s names credit type %s, which does not exist", p.ID, p.CreditTypeID)
	}
	if err != nil {
		return "", err
	}
	return fmt.Sprintf("creditd purchase %s: %s %s", p.ID, fsm.FormatUnits(p.Credits, ct.Scale), ct.Name), nil
}

// auto charges the saved payment method, retrying declines with backoff up
// to MaxAttempts, then fails the purchase (fsm pauses auto top-up).
func (w *Worker) auto(ctx context.Context, p fsm.Purchase, custRef string, log *slog.Logger) error {
	reached, processing := chargeState(p.ProviderStatus)
	if processing && p.ProviderRef != "" {
		// The attempt is in flight at the provider (a bank debit, say):
		// look it up rather than charge again.
		cctx, cancel := w.call(ctx)
		pay, err := w.o.Provider.LookupPayment(cctx, p.ProviderRef)
		cancel()
		if err != nil {
			return fmt.Errorf("look up payment %s: %w", p.ProviderRef, err)
		}
		return w.charged(ctx, p, pay, reached, log)
	}
	attempt := reached + 1
	p, err := w.pin(ctx, p, custRef, fmt.Sprintf("charging (attempt %d/%d) at %s", attempt, w.o.MaxAttempts, custRef), log)
	if err != nil {
		return err
	}
	looked := w.keysMayBeForgotten(p)
	if looked {
		// A retry under a forgotten key would charge again if the lost
		// request went through: its payment decides, if there is one.
		pays, err := w.findPayments(ctx, p, custRef)
		if err != nil {
			return err
		}
		if pay, found := attemptPayment(pays, p.ProviderRef); found {
			log.Warn("payment of an earlier request found past the key window; not charging again",
				"attempt", attempt, "ref", pay.Ref, "status", pay.Status.String())
			return w.charged(ctx, p, pay, attempt, log)
		}
	}
	desc, err := w.describe(p)
	if err != nil {
		return err
	}
	cctx, cancel := w.call(ctx)
	pay, err := w.o.Provider.ChargeOffSession(cctx, PaymentRequest{PurchaseID: p.ID, CustomerRef: custRef,
		AmountMicros: p.TotalMicros, Currency: p.Currency, Description: desc,
		IdempotencyKey: chargeKey(p.ID, attempt), StartedAt: p.CreatedAt.Time()})
	cancel()
	if err != nil {
		return fmt.Errorf("charge attempt %d: %w", attempt, err)
	}
	if pay.NotSent && !looked {
		// A final answer the provider never gave (no card left to charge)
		// says nothing of an earlier request for this attempt whose answer
		// was lost: it may have charged the card before the card was
		// removed. Its payment decides, if there is one.
		pays, err := w.findPayments(ctx, p, custRef)
		if err != nil {
			return err
		}
		if found, ok := attemptPayment(pays, p.ProviderRef); ok {
			log.Warn("payment of an earlier request found where the charge could not be sent; going on from it",
				"attempt", attempt, "ref", found.Ref, "status", found.Status.String(), "unsent", pay.ProviderStatus)
			return w.charged(ctx, p, found, attempt, log)
		}
	}
	log.Info("automatic charge", "attempt", attempt, "status", pay.Status.String(), "ref", pay.Ref)
	return w.charged(ctx, p, pay, attempt, log)
}

// keysMayBeForgotten reports whether the provider may have forgotten a key
// of the purchase. Every key of a purchase is first sent after the purchase
// was started, so its start (log time, in the replicated state: it survives
// leader changes and restarts) bounds the age of each from above. The bound
// is loose for later attempts' keys, which costs only a look-up.
//
// Past the window, each call the worker makes under a key either looks
// first or is safe to repeat:
//   - ChargeOffSession: the purchase's payments are looked up first
//     (attemptPayment); a new charge is made only if none can move money;
//   - StartOnSession: looked up first too, though a second payment could
//     not charge (only the recorded one's client secret is handed out);
//   - CreateInvoice: the connector finds the invoice and its line (Resume);
//   - CancelPayment: cancelling moves no money, and a payment canceled
//     already is answered as such (Stripe refuses it; it is looked up);
//   - EnsureCustomer: moves no money; at worst a second, empty provider
//     customer is made, the first one's id having never been recorded.
//
// Refunds are made by people at the provider, never by creditd, which only
// reads them; there is no refund call to repeat.
func (w *Worker) keysMayBeForgotten(p fsm.Purchase) bool {
	return w.o.Now().Sub(p.CreatedAt.Time()) >= w.o.KeyWindow
}

// findPayments asks the provider for the purchase's payments, newest first.
func (w *Worker) findPayments(ctx context.Context, p fsm.Purchase, custRef string) ([]Payment, error) {
	cctx, cancel := w.call(ctx)
	defer cancel()
	pays, err := w.o.Provider.FindPayments(cctx, PaymentRequest{PurchaseID: p.ID, CustomerRef: custRef,
		StartedAt: p.CreatedAt.Time()})
	if err != nil {
		return nil, fmt.Errorf("look for the payments earlier requests of purchase %s made: %w", p.ID, err)
	}
	return pays, nil
}

// attemptPayment picks, among the purchase's payments (newest first), the
// one that is the outcome of the charge attempt about to be retried: one
// that succeeded or may still succeed, else the newest if it is not the
// decline already recorded (lastRef). Attempts are made one after another,
// each only once the one before was recorded as declined, so a failed
// payment newer than the recorded one is this attempt's. Not found: no
// payment of the purchase can move money, and charging cannot charge twice.
func attemptPayment(pays []Payment, lastRef string) (Payment, bool) {
	for _, want := range []PaymentStatus{PaymentSucceeded, PaymentPending} {
		for _, pay := range pays {
			if pay.Status == want {
				return pay, true
			}
		}
	}
	if len(pays) > 0 && pays[0].Ref != lastRef {
		return pays[0], true
	}
	return Payment{}, false
}

// charged acts on the state of charge attempt n: complete on success,
// retry a decline after a backoff while attempts remain, fail otherwise,
// and record an attempt still processing.
func (w *Worker) charged(ctx context.Context, p fsm.Purchase, pay Payment, attempt int, log *slog.Logger) error {
	switch pay.Status {
	case PaymentSucceeded:
		return w.apply(ctx, fsm.CompletePurchase{ID: p.ID, Outcome: fsm.OutcomeSucceeded, ProviderRef: pay.Ref,
			ProviderStatus: clip(pay.ProviderStatus, fsm.MaxNameLen)}, log)
	case PaymentFailed, PaymentCanceled:
		reason := pay.FailureReason
		if reason == "" {
			reason = pay.ProviderStatus
		}
		if pay.Status == PaymentFailed && pay.Retryable && attempt < w.o.MaxAttempts {
			status := fmt.Sprintf("declined (attempt %d/%d): %s", attempt, w.o.MaxAttempts, reason)
			if err := w.apply(ctx, fsm.CompletePurchase{ID: p.ID, Outcome: fsm.OutcomeProgress, ProviderRef: pay.Ref,
				ProviderStatus: clip(status, fsm.MaxNameLen)}, log); err != nil {
				return err
			}
			return waitError{w.backoff(attempt)}
		}
		return w.fail(ctx, p, fmt.Sprintf("charge declined after %d attempt(s): %s", attempt, reason), log)
	}
	status := fmt.Sprintf("processing (attempt %d/%d): %s", attempt, w.o.MaxAttempts, pay.ProviderStatus)
	return w.progress(ctx, p, pay.Ref, clip(status, fsm.MaxNameLen), log)
}

// selfServe starts the on-session payment once, then polls it in case its
// webhook is lost.
func (w *Worker) selfServe(ctx context.Context, p fsm.Purchase, custRef string, log *slog.Logger) error {
	if p.ProviderRef != "" {
		if w.o.Now().Sub(p.CreatedAt.Time()) > w.o.OnSessionTTL {
			return w.abandon(ctx, p, log)
		}
		return w.pollPayment(ctx, p, log)
	}
	p, err := w.pin(ctx, p, custRef, "starting at "+custRef, log)
	if err != nil {
		return err
	}
	var pay Payment
	if w.keysMayBeForgotten(p) {
		// A payment started here moves no money until the customer
		// confirms it with the client secret creditd hands out for the
		// recorded one only; an earlier start whose answer was lost is
		// still taken up, so it is the one polled and canceled, not left
		// beside a second.
		pays, err := w.findPayments(ctx, p, custRef)
		if err != nil {
			return err
		}
		if found, ok := attemptPayment(pays, ""); ok {
			log.Warn("payment of an earlier request found past the key window; not starting another", "ref", found.Ref)
			pay = found
		}
	}
	if pay.Ref == "" {
		desc, err := w.describe(p)
		if err != nil {
			return err
		}
		cctx, cancel := w.call(ctx)
		pay, err = w.o.Provider.StartOnSession(cctx, PaymentRequest{PurchaseID: p.ID, CustomerRef: custRef,
			AmountMicros: p.TotalMicros, Currency: p.Currency, Description: desc, IdempotencyKey: p.ID,
			StartedAt: p.CreatedAt.Time()})
		cancel()
		if err != nil {
			return fmt.Errorf("start on-session payment: %w", err)
		}
	}
	if pay.Status == PaymentSucceeded {
		return w.apply(ctx, fsm.CompletePurchase{ID: p.ID, Outcome: fsm.OutcomeSucceeded, ProviderRef: pay.Ref,
			ProviderStatus: clip(pay.ProviderStatus, fsm.MaxNameLen)}, log)
	}
	return w.progress(ctx, p, pay.Ref, pay.ProviderStatus, log)
}

func (w *Worker) pollPayment(ctx context.Context, p fsm.Purchase, log *slog.Logger) error {
	cctx, cancel := w.call(ctx)
	pay, err := w.o.Provider.LookupPayment(cctx, p.ProviderRef)
	cancel()
	if err != nil {
		return fmt.Errorf("look up payment %s: %w", p.ProviderRef, err)
	}
	switch pay.Status {
	case PaymentSucceeded:
		return w.apply(ctx, fsm.CompletePurchase{ID: p.ID, Outcome: fsm.OutcomeSucceeded, ProviderRef: pay.Ref,
			ProviderStatus: clip(pay.ProviderStatus, fsm.MaxNameLen)}, log)
	case PaymentCanceled:
		return w.fail(ctx, p, "payment "+pay.Ref+" was canceled", log)
	}
	return nil
}

// abandon cancels a self-serve payment the customer did not complete in
// time and fails the purchase. Cancelling first means a customer who pays
// at the last moment is either charged and granted, or not charged.
func (w *Worker) abandon(ctx context.Context, p fsm.Purchase, log *slog.Logger) error {
	cctx, cancel := w.call(ctx)
	pay, err := w.o.Provider.CancelPayment(cctx, p.ProviderRef)
	cancel()
	if err != nil {
		return fmt.Errorf("cancel abandoned payment %s: %w", p.ProviderRef, err)
	}
	switch pay.Status {
	case PaymentSucceeded:
		return w.apply(ctx, fsm.CompletePurchase{ID: p.ID, Outcome: fsm.OutcomeSucceeded, ProviderRef: pay.Ref,
			ProviderStatus: clip(pay.ProviderStatus, fsm.MaxNameLen)}, log)
	case PaymentCanceled:
		return w.fail(ctx, p, fmt.Sprintf("not paid within %s; payment %s canceled", w.o.OnSessionTTL, p.ProviderRef), log)
	}
	// Still processing (a bank debit cannot be canceled and takes days to
	// settle): look again at the pace of any pending payment.
	log.Info("abandoned payment cannot be canceled yet", "ref", p.ProviderRef, "status", pay.ProviderStatus)
	return waitError{w.o.PollInterval}
}

// invoice creates and finalizes the invoice once (keys derived from the
// purchase id), reports it issued, then polls it until paid or abandoned.
func (w *Worker) invoice(ctx context.Context, p fsm.Purchase, custRef string, log *slog.Logger) error {
	if p.ProviderRef != "" {
		cctx, cancel := w.call(ctx)
		inv, err := w.o.Provider.LookupInvoice(cctx, p.ProviderRef)
		cancel()
		if err != nil {
			return fmt.Errorf("look up invoice %s: %w", p.ProviderRef, err)
		}
		switch inv.Status {
		case InvoicePaid:
			return w.apply(ctx, fsm.CompletePurchase{ID: p.ID, Outcome: fsm.OutcomeInvoicePaid, ProviderRef: inv.Ref,
				ProviderStatus: clip(inv.ProviderStatus, fsm.MaxNameLen)}, log)
		case InvoiceVoid, InvoiceUncollectible:
			return w.fail(ctx, p, "invoice "+inv.Ref+" "+inv.Status.String(), log)
		}
		return nil
	}
	p, err := w.pin(ctx, p, custRef, "starting at "+custRef, log)
	if err != nil {
		return err
	}
	desc, err := w.describe(p)
	if err != nil {
		return err
	}
	cctx, cancel := w.call(ctx)
	// Past the key window a retry would make a second invoice, or a second
	// line on the first: the connector looks for them first (Resume).
	inv, err := w.o.Provider.CreateInvoice(cctx, InvoiceRequest{PurchaseID: p.ID, CustomerRef: custRef,
		AmountMicros: p.TotalMicros, Currency: p.Currency, Description: desc,
		DaysUntilDue: w.o.InvoiceDaysUntilDue, IdempotencyKey: p.ID,
		StartedAt: p.CreatedAt.Time(), Resume: w.keysMayBeForgotten(p)})
	cancel()
	if err != nil {
		return fmt.Errorf("create invoice: %w", err)
	}
	if inv.Status == InvoiceVoid || inv.Status == InvoiceUncollectible {
		// Found when resuming past the key window: someone voided the
		// invoice at the provider while its answer was lost.
		return w.fail(ctx, p, "invoice "+inv.Ref+" "+inv.Status.String(), log)
	}
	outcome := fsm.OutcomeInvoiceIssued
	if inv.Status == InvoicePaid {
		outcome = fsm.OutcomeInvoicePaid
	}
	return w.apply(ctx, fsm.CompletePurchase{ID: p.ID, Outcome: outcome, ProviderRef: inv.Ref,
		ProviderStatus: clip(inv.ProviderStatus, fsm.MaxNameLen)}, log)
}

// errNotPending ends a step whose purchase was completed meanwhile (by a
// webhook, an operator): nothing is sent for it.
var errNotPending = errors.New("purchase no longer pending")

// pin records, before the first request of an attempt is sent, the provider
// customer it goes to (status, which billedAt reads back), unless the
// status already names it: a retry must go where the first request went.
// A purchase completed meanwhile is not carried further (errNotPending).
// Nothing is recorded for a connector without customers (custRef "").
func (w *Worker) pin(ctx context.Context, p fsm.Purchase, custRef, status string, log *slog.Logger) (fsm.Purchase, error) {
	if custRef == "" || p.ProviderStatus == status {
		return p, nil
	}
	status = clip(status, fsm.MaxNameLen)
	cctx, cancel := w.call(ctx)
	defer cancel()
	res, err := w.o.Applier.Apply(cctx, fsm.CompletePurchase{ID: p.ID, Outcome: fsm.OutcomeProgress, ProviderStatus: status})
	if err != nil {
		return p, fmt.Errorf("record the customer %s of purchase %s before sending: %w", custRef, p.ID, err)
	}
	now, ok := res.Value.(*fsm.Purchase)
	if res.Err != nil || res.Duplicate || !ok || now == nil || now.Status != fsm.PurchasePending {
		log.Info("purchase no longer pending; nothing sent", "err", res.Err)
		return p, errNotPending
	}
	p.ProviderStatus = status
	return p, nil
}

func (w *Worker) fail(ctx context.Context, p fsm.Purchase, reason string, log *slog.Logger) error {
	log.Warn("purchase failed", "reason", reason)
	return w.apply(ctx, fsm.CompletePurchase{ID: p.ID, Outcome: fsm.OutcomeFailed,
		FailureReason: clip(reason, fsm.MaxReasonLen)}, log)
}

func (w *Worker) progress(ctx context.Context, p fsm.Purchase, ref, status string, log *slog.Logger) error {
	if (ref == "" || ref == p.ProviderRef) && status == p.ProviderStatus {
		return nil
	}
	return w.apply(ctx, fsm.CompletePurchase{ID: p.ID, Outcome: fsm.OutcomeProgress, ProviderRef: ref,
		ProviderStatus: clip(status, fsm.MaxNameLen)}, log)
}

// apply proposes a command. A cluster error is returned (the step is
// retried with the same key); a domain refusal is final — the purchase was
// completed otherwise, e.g. by a webhook — and is only logged.
func (w *Worker) apply(ctx context.Context, c fsm.CompletePurchase, log *slog.Logger) error {
	cctx, cancel := w.call(ctx)
	defer cancel()
	res, err := w.o.Applier.Apply(cctx, c)
	if err != nil {
		return fmt.Errorf("propose %s for purchase %s: %w", outcomeName(c.Outcome), c.ID, err)
	}
	switch {
	case res.Err != nil && paysMoney(c.Outcome):
		// Money came in for a purchase that ended without credits.
		log.Error("payment succeeded for a purchase that cannot take it: money in, no credits; an operator refunds or grants",
			"ref", c.ProviderRef, "outcome", outcomeName(c.Outcome), "err", res.Err)
	case res.Err != nil:
		log.Warn("purchase report refused", "outcome", outcomeName(c.Outcome), "err", res.Err)
	}
	return nil
}

// PaymentAction returns what a front end needs to complete a self-serve
// purchase (the payment's client secret or checkout URL), once the worker
// has started its payment. rpc reaches it through an interface of its own.
func PaymentAction(ctx context.Context, prov Provider, state StateReader, purchaseID string) (Payment, error) {
	var p fsm.Purchase
	if err := state.View(func(v *fsm.View) error {
		var err error
		p, err = v.Purchase(purchaseID)
		return err
	}); err != nil {
		return Payment{}, fmt.Errorf("read purchase %s: %w", purchaseID, err)
	}
	if p.Flow != fsm.FlowSelfServe {
		return Payment{}, fmt.Errorf("purchase %s is %s; only self-serve purchases have a payment action", p.ID, p.Flow)
	}
	if p.ProviderRef == "" {
		return Payment{Status: PaymentPending, PurchaseID: p.ID}, nil
	}
	return prov.LookupPayment(ctx, p.ProviderRef)
}
