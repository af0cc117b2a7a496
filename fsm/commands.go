package fsm

import "time"

// Command is one change to the state. Each type below is a command; the
// type switch in apply is the table of contents of what creditd can do.
type Command interface{ commandType() CommandType }

// CommandType tags a command in its encoding. Values are part of the log
// format: never renumber, only append.
type CommandType uint8

const (
	CmdCreateCreditType CommandType = iota + 1
	CmdUpsertFeature
	CmdUpsertPlan
	CmdUpsertCustomer
	CmdCreateGrant
	CmdRevokeGrant
	CmdBurnUsage
	CmdReserve
	CmdSettle
	CmdRelease
	CmdStartPurchase
	CmdCompletePurchase
	CmdTick
	CmdAdjust
	CmdNoop
)

// CreateCreditType creates a credit type; its scale can never change.
type CreateCreditType struct {
	ID    string
	Name  string
	Scale uint8
}

// UpsertFeature creates or replaces a feature. Its credit type cannot change.
type UpsertFeature struct {
	ID           string
	Name         string
	CreditTypeID string
	Rate         Decimal
}

// UpsertPlan creates or replaces a plan. Its credit type cannot change.
type UpsertPlan struct{ Plan Plan }

// UpsertCustomer creates or replaces a customer's settings. Counters kept by
// the state (auto top-up spend, pending purchase) are preserved. Setting
// ResumeAutoTopUp clears a pause left by a failed automatic charge. One that
// replaces an existing customer's settings and finds available below their
// auto top-up threshold starts the top-up, or records why not, as a burn
// leaving it there does (entries of version 5 on); one that creates the
// customer starts nothing.
type UpsertCustomer struct {
	ID              string
	Name            string
	BillingRef      string
	PlanID          string
	AutoTopUp       AutoTopUp
	ResumeAutoTopUp bool
}

// CreateGrant puts credits into a pool. ID is also its idempotency key.
type CreateGrant struct {
	ID           string
	CustomerID   string
	CreditTypeID string
	Category     GrantCategory
	Amount       int64
	CostBasis    Decimal
	Currency     string
	Priority     uint32
	EffectiveAt  Timestamp // 0 = the command's time
	ExpiresAt    Timestamp // 0 = never
	SourceKind   SourceKind
	SourceRef    string
}

// RevokeGrant removes credits from a grant: all that remains when Amount is
// 0, else up to Amount (a partial refund). RequestID, when set, makes a retry
// return the first result instead of revoking again.
type RevokeGrant struct {
	GrantID   string
	Amount    int64
	Reason    string
	RequestID string
}

// UsageEvent is usage reported for a customer: either a feature and a
// quantity, or a credit type and credits directly.
type UsageEvent struct {
	ID           string
	CustomerID   string
	FeatureID    string
	Quantity     int64
	CreditTypeID string
	Credits      int64
	EventTime    Timestamp // as reported; informational
}

// BurnUsage burns credits for a batch of usage events, in order.
type BurnUsage struct{ Events []UsageEvent }

// Reserve holds credits for up to TTL. Either FeatureID and Quantity, or
// CreditTypeID and Credits. One refused for lack of credits while available
// is below the customer's auto top-up threshold starts the top-up, as a
// denied usage event does, and holds nothing; one whose hold leaves available
// below the threshold starts it too (entries of version 4 on), as a burn
// does.
type Reserve struct {
	ID           string
	CustomerID   string
	FeatureID    string
	Quantity     int64
	CreditTypeID string
	Credits      int64
	TTL          time.Duration // 0 = DefaultReservationTTL
}

// Settle burns the actual usage of a reservation and frees the rest. Either
// Quantity (of the reservation's feature) or Credits, with UseCredits set.
// One refused for lack of credits (more than its hold, the difference not
// available) keeps its hold and, while available is below the customer's
// auto top-up threshold, starts the top-up.
type Settle struct {
	ReservationID string
	Quantity      int64
	Credits       int64
	UseCredits    bool
}

// Release frees all credits of a reservation.
type Release struct{ ReservationID string }

// StartPurchase records a purchase to be carried out by the billing worker.
// The price comes from the customer's plan. ID is the idempotency key.
type StartPurchase struct {
	ID         string
	CustomerID string
	Credits    int64
	Flow       PurchaseFlow
}

// PurchaseOutcome is what the billing side reports about a purchase.
type PurchaseOutcome uint8

const (
	// OutcomeProgress records provider details without a decision.
	OutcomeProgress PurchaseOutcome = iota
	// OutcomeSucceeded: the money is in; the paid grant is made.
	OutcomeSucceeded
	// OutcomeFailed: the purchase ends without credits.
	OutcomeFailed
	// OutcomeInvoiceIssued: the invoice is final; grants on issue.
	OutcomeInvoiceIssued
	// OutcomeInvoicePaid: the invoice is paid; grants on payment.
	OutcomeInvoicePaid
)

// CompletePurchase reports the billing side's result for a purchase. One
// that settles an automatic purchase (succeeded or failed) clears its
// customer's auto_top_up_last if that says it is pending (entries of version
// 5 on).
type CompletePurchase struct {
	ID             string
	Outcome        PurchaseOutcome
	ProviderRef    string
	ProviderStatus string
	FailureReason  string
}

// Tick moves log time: it activates grants whose effective time has come,
// expires grants and reservations whose time has passed and prunes old
// idempotency records.
type Tick struct{}

// Adjust is an operator's signed correction to a grant's credits.
type Adjust struct {
	ID      string
	GrantID string
	Amount  int64
	Reason  string
}

// Noop changes nothing but the applied index; it measures the ceiling of the
// replication path.
type Noop struct{}

func (CreateCreditType) commandType() CommandType { return CmdCreateCreditType }
func (UpsertFeature) commandType() CommandType    { return CmdUpsertFeature }
func (UpsertPlan) commandType() CommandType       { return CmdUpsertPlan }
func (UpsertCustomer) commandType() CommandType   { return CmdUpsertCustomer }
func (CreateGrant) commandType() CommandType      { return CmdCreateGrant }
func (RevokeGrant) commandType() CommandType      { return CmdRevokeGrant }
func (BurnUsage) commandType() CommandType        { return CmdBurnUsage }
func (Reserve) commandType() CommandType          { return CmdReserve }
func (Settle) commandType() CommandType           { return CmdSettle }
func (Release) commandType() CommandType          { return CmdRelease }
func (StartPurchase) commandType() CommandType    { return CmdStartPurchase }
func (CompletePurchase) commandType() CommandType { return CmdCompletePurchase }
func (Tick) commandType() CommandType             { return CmdTick }
func (Adjust) commandType() CommandType           { return CmdAdjust }
func (Noop) commandType() CommandType             { return CmdNoop }

// Result is the outcome of one command. Err is a *Error for domain
// failures; the command then changed nothing, except that a Reserve or a
// Settle refused for lack of credits (CodeInsufficient) may have started its
// customer's auto top-up (entries of version 3 on). Value holds, by command:
// CreateCreditType *CreditType, UpsertFeature *Feature, UpsertPlan *Plan,
// UpsertCustomer *Customer, CreateGrant *Grant, RevokeGrant *Grant,
// BurnUsage []EventResult, Reserve *Reservation, Settle *Reservation,
// Release *Reservation, StartPurchase *Purchase, CompletePurchase *Purchase,
// Adjust *Grant, Tick and Noop nil.
type Result struct {
	Value any
	Err   error
	// Duplicate is set when an idempotency key was seen before and Value is
	// the original result.
	Duplicate bool
}
