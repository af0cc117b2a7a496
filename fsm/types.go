package fsm

import "time"

// Timestamp is a point in log time: microseconds since the Unix epoch, UTC.
// Zero means "none" where a field is optional.
type Timestamp int64

// Time converts t to a time.Time in UTC.
func (t Timestamp) Time() time.Time { return time.UnixMicro(int64(t)).UTC() }

// TimestampOf converts a time.Time to a Timestamp.
func TimestampOf(t time.Time) Timestamp { return Timestamp(t.UnixMicro()) }

// Limits on every input. rpc validates against the same numbers.
const (
	MaxIDLen          = 128
	MaxNameLen        = 256
	MaxReasonLen      = 1024
	MaxEventsPerBatch = 10000
	MaxGrantPriority  = 1000
	// MaxReservationTTL and DefaultReservationTTL bound holds.
	MaxReservationTTL     = 24 * time.Hour
	DefaultReservationTTL = time.Hour
	// DefaultIdempotencyRetention is how long (in log time) idempotency
	// records are kept before Tick prunes them.
	DefaultIdempotencyRetention = 7 * 24 * time.Hour
	// maxPruneBatch bounds the work one Tick does on idempotency records.
	maxPruneBatch = 10000
)

// CreditType is a unit customers hold, with a fixed decimal scale.
type CreditType struct {
	ID        string
	Name      string
	Scale     uint8 // 0..MaxCreditScale
	CreatedAt Timestamp
}

// Feature maps usage to a credit type at a rate in credits per unit.
type Feature struct {
	ID           string
	Name         string
	CreditTypeID string
	Rate         Decimal // credits per unit of usage
	UpdatedAt    Timestamp
}

// InvoiceGrantPolicy says when an invoice purchase's grant is made.
type InvoiceGrantPolicy uint8

const (
	GrantOnPayment InvoiceGrantPolicy = iota
	GrantOnIssue
)

// OverdraftPolicy says what happens when credits run out.
type OverdraftPolicy uint8

const (
	OverdraftDeny OverdraftPolicy = iota
	OverdraftAllow
)

// AutoTopUpMode says how an automatic top-up is sized.
type AutoTopUpMode uint8

const (
	// TopUpFixed buys Amount credits.
	TopUpFixed AutoTopUpMode = iota
	// TopUpToTarget buys what brings available back up to Amount.
	TopUpToTarget
)

// AutoTopUp holds a customer's (or a plan's default) automatic top-up settings.
type AutoTopUp struct {
	Enabled          bool
	ThresholdCredits int64 // start a top-up when available falls below this
	Mode             AutoTopUpMode
	AmountCredits    int64 // fixed amount, or target balance
	MonthlyCapMicros int64 // spend cap per UTC calendar month, money micros; 0 = no cap
	// Own marks a customer's settings as its own even when every other
	// field is zero: {Own: true} turns auto top-up off for the customer
	// whatever its plan says. A customer's settings with no Own and nothing
	// set (the zero value) are none: the customer follows its plan's. Any
	// other field set makes them its own too, so a customer read back has
	// Own set whenever it has settings of its own. A plan's settings are
	// the default and never Own (EncodeCommand refuses it).
	Own bool
}

// hasSettings reports whether any setting other than Own is given.
func (t AutoTopUp) hasSettings() bool {
	t.Own = false
	return t != AutoTopUp{}
}

// Plan is a prepaid plan for one credit type.
type Plan struct {
	ID                 string
	Name               string
	CreditTypeID       string
	Currency           string  // ISO 4217, upper case
	PricePerCredit     Decimal // per whole credit
	MinPurchaseCredits int64
	MaxPurchaseCredits int64
	DefaultExpiry      time.Duration // of purchased credits; 0 = never
	InvoiceGrant       InvoiceGrantPolicy
	Overdraft          OverdraftPolicy
	OverdraftLimit     int64 // credits the pool may go below zero, with OverdraftAllow
	AutoTopUp          AutoTopUp
	UpdatedAt          Timestamp
}

// Customer is an id from the caller's world.
type Customer struct {
	ID         string
	Name       string
	BillingRef string // the provider's customer id, if any
	PlanID     string // may be empty
	AutoTopUp  AutoTopUp
	// AutoTopUpPaused is set after a failed automatic charge; it holds the
	// reason and stops further automatic top-ups until UpsertCustomer clears it.
	AutoTopUpPaused string
	// AutoTopUpLast is why the last automatic top-up check did not start a
	// purchase ("" if it did, or none ran). "already pending: <id>" is
	// cleared when purchase <id> settles (entries of version 5 on).
	AutoTopUpLast       string
	AutoSpendMonth      int32 // YYYYMM of AutoSpendMicros
	AutoSpendMicros     int64
	AutoPendingPurchase string // id of the pending auto purchase, if any
	CreatedAt           Timestamp
	UpdatedAt           Timestamp
}

// Pool is one customer's credits of one credit type.
type Pool struct {
	CustomerID   string
	CreditTypeID string
	Balance      int64 // Σ remaining of live grants − overdraft
	Reserved     int64 // held by reservations
	Overdraft    int64 // shortfall burned beyond the grants, owed by the next grant
	UpdatedAt    Timestamp

	// run is the pool's newest ledger sequences (ledger.go): kept in the
	// pool record, which every movement rewrites anyway, until it is full.
	run seqRun

	// tallies are what burns did to grants whose own records were not
	// rewritten (see grantTally): stored with the pool.
	tallies []grantTally

	// The applier's bookkeeping for a cached pool, never stored: the
	// Apply call that last marked it dirty (see applier.epoch), its live
	// grants in burn order once read, and what they hold that may burn
	// (see poolGrants).
	dirtyIn    uint64
	live       []*Grant
	liveLoaded bool
	usable     int64
	// usable holds while usableOK and log time is before usableUntil.
	usableUntil Timestamp
	usableOK    bool
}

// grantTally is the part of a grant that a burn changes, kept in its pool's
// record instead of the grant's own. A batch of events burns from a pool and
// from its first grant: writing both records put two B+tree leaves and two
// puts per pool into every commit, and the grant's was a fifth of apply's
// time. The grant record is rewritten, and its tally dropped, when anything
// else changes it (depletion, revocation, adjustment, expiry) or when the
// pool holds maxTallies others. A tally always holds the newer values:
// readers overlay it on the grant record.
type grantTally struct {
	grantID   string
	remaining int64
	deferred  int64 // DeferredMicros
	burned    int64
	updatedAt Timestamp
	g         *Grant // the applier's cached grant once loaded; its values win
}

// maxTallies bounds a pool record's tallies: a pool burns from one grant at a
// time, so more than a few means grants being used up one after another.
const maxTallies = 4

// GrantCategory separates paid from promotional credits.
type GrantCategory uint8

const (
	Promotional GrantCategory = iota
	Paid
)

// GrantStatus is where a grant is in its life.
type GrantStatus uint8

const (
	GrantPending  GrantStatus = iota // effective_at not reached
	GrantActive                      // may burn
	GrantDepleted                    // remaining is zero
	GrantExpired
	GrantRevoked
)

// SourceKind says where a grant came from.
type SourceKind uint8

const (
	SourceManual SourceKind = iota
	SourcePurchase
	SourceInvoice
	SourcePayment
)

// Grant is credits put into a pool.
type Grant struct {
	ID             string
	CustomerID     string
	CreditTypeID   string
	Category       GrantCategory
	Amount         int64 // granted, plus adjustments
	Remaining      int64
	CostBasis      Decimal // price per credit; zero for promotional
	Currency       string  // empty for promotional
	DeferredMicros int64   // round(Remaining × CostBasis)
	Priority       uint32  // 0 is highest
	EffectiveAt    Timestamp
	ExpiresAt      Timestamp // 0 = never
	SourceKind     SourceKind
	SourceRef      string
	Status         GrantStatus
	Burned         int64
	Expired        int64
	Revoked        int64
	Adjusted       int64  // signed
	Reason         string // of the revocation, if any
	CreatedAt      Timestamp
	UpdatedAt      Timestamp

	// The applier's bookkeeping, never stored: the Apply call that last
	// marked it dirty and its place in that call's dirty list, and whether
	// it has a tally in its cached pool.
	dirtyIn   uint64
	dirtySlot int
	tallied   bool
}

// ReservationStatus is where a hold is.
type ReservationStatus uint8

const (
	ReservationHeld ReservationStatus = iota
	ReservationSettled
	ReservationReleased
	ReservationExpired
)

// Reservation holds credits for work whose cost is known only at its end.
type Reservation struct {
	ID            string
	CustomerID    string
	CreditTypeID  string
	FeatureID     string // empty when reserved in credits
	Amount        int64  // credits held
	SettledAmount int64  // credits burned at settlement
	Status        ReservationStatus
	ExpiresAt     Timestamp
	CreatedAt     Timestamp
	UpdatedAt     Timestamp
}

// PurchaseFlow says how a purchase is paid.
type PurchaseFlow uint8

const (
	FlowSelfServe PurchaseFlow = iota
	FlowInvoice
	FlowAuto
)

// PurchaseStatus is where a purchase is.
type PurchaseStatus uint8

const (
	PurchasePending PurchaseStatus = iota
	PurchaseSucceeded
	PurchaseFailed
)

// Purchase is a top-up in flight or done.
type Purchase struct {
	ID             string
	CustomerID     string
	PlanID         string
	CreditTypeID   string
	Credits        int64
	UnitPrice      Decimal
	Currency       string
	TotalMicros    int64
	Flow           PurchaseFlow
	Status         PurchaseStatus
	ProviderRef    string // payment intent or invoice id
	ProviderStatus string
	FailureReason  string
	GrantID        string
	CreatedAt      Timestamp
	UpdatedAt      Timestamp
}

// EntryKind is the kind of a ledger movement.
type EntryKind uint8

const (
	EntryGrant EntryKind = iota + 1
	EntryBurn
	EntryExpire
	EntryRevoke
	EntryAdjust
	// EntryRepay moves credits from a new grant to cover the pool's
	// overdraft: the pool balance does not change (Amount is 0), Repaid
	// credits leave the grant, and its money is recognized revenue.
	EntryRepay
)

// CauseKind names what caused a ledger entry.
type CauseKind uint8

const (
	CauseNone CauseKind = iota
	CauseUsage
	CauseReservation
	CausePurchase
	CauseGrant  // CreateGrant request
	CauseRevoke // RevokeGrant request
	CauseAdjust
	CauseTick
)

// LedgerEntry is one movement of credits.
type LedgerEntry struct {
	Seq          uint64
	Time         Timestamp
	CustomerID   string
	CreditTypeID string
	GrantID      string // empty for an overdraft shortfall
	Kind         EntryKind
	Amount       int64 // signed change to the pool balance
	Repaid       int64 // credits moved from the grant to the overdraft (EntryRepay)
	BalanceAfter int64
	CostBasis    Decimal
	Currency     string
	MoneyMicros  int64 // signed change to deferred revenue
	CauseKind    CauseKind
	CauseID      string
	SourceKind   SourceKind
	SourceRef    string
	Reason       string
}

// EventStatus is the outcome of one usage event.
type EventStatus uint8

const (
	EventBurned EventStatus = iota
	// EventDenied: the pool could not cover the event; nothing was burned.
	EventDenied
	// EventRejected: the event itself is wrong (Code and Reason say how):
	// an unknown customer or feature, a bad field, or an id reused with a
	// different payload. Rejections are not remembered, so a corrected
	// retry with the same id is applied.
	EventRejected
)

// GrantBurn is the part of a burn taken from one grant.
type GrantBurn struct {
	GrantID string // empty for the overdraft shortfall
	Amount  int64
}

// EventResult is the outcome of one usage event. A replay of a known event
// id returns the original result with Duplicate set.
type EventResult struct {
	EventID        string
	Status         EventStatus
	Duplicate      bool
	CreditTypeID   string
	Credits        int64
	Burns          []GrantBurn
	BalanceAfter   int64
	AvailableAfter int64
	Reason         string // for denials and rejections
	Available      int64  // at the time of a denial
	Code           Code   // for rejections
	Field          string // for rejections
}

// Balance is a pool's position at a time.
type Balance struct {
	CustomerID   string
	CreditTypeID string
	Balance      int64
	Available    int64
	Reserved     int64
	Overdraft    int64
	Grants       []Grant // live grants in burn order
	AsOf         Timestamp
	AppliedIndex uint64
}
