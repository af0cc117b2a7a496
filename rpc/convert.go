package rpc

import (
	"strings"

	"google.golang.org/protobuf/types/known/durationpb"
	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/creditd/creditd/fsm"
	v1 "github.com/creditd/creditd/gen/creditd/v1"
)

// scales finds credit types' scales in one read view, each once.
type scales struct {
	v     *fsm.View
	cache map[string]uint8
}

func newScales(v *fsm.View) *scales { return &scales{v: v, cache: make(map[string]uint8, 2)} }

// of returns the scale of a credit type, or a NotFound naming field.
func (s *scales) of(field, creditTypeID string) (uint8, error) {
	if sc, ok := s.cache[creditTypeID]; ok {
		return sc, nil
	}
	ct, err := s.v.CreditType(creditTypeID)
	if err != nil {
		if fsm.CodeOf(err) == fsm.CodeNotFound {
			return 0, notFoundField(field, "no credit type %s", creditTypeID)
		}
		return 0, err
	}
	s.cache[creditTypeID] = ct.Scale
	return ct.Scale, nil
}

// known is of for ids read from the state, which always name a credit type;
// 0 is a safe fallback that cannot hide an amount (it prints all digits).
func (s *scales) known(creditTypeID string) uint8 {
	sc, _ := s.of("credit_type_id", creditTypeID)
	return sc
}

func ts(t fsm.Timestamp) *timestamppb.Timestamp {
	if t == 0 {
		return nil
	}
	return timestamppb.New(t.Time())
}

// money formats micros with the cents always shown and no trailing zeros
// beyond them: 19990000 → "19.99", 1234567 → "1.234567".
func money(micros int64) string {
	s := fsm.FormatUnits(micros, fsm.MoneyScale)
	dot := strings.IndexByte(s, '.')
	end := len(s)
	for end > dot+3 && s[end-1] == '0' {
		end--
	}
	return s[:end]
}

func units(v int64, scale uint8) string { return fsm.FormatUnits(v, scale) }

func creditTypePB(c fsm.CreditType) *v1.CreditType {
	return &v1.CreditType{Id: c.ID, Name: c.Name, Scale: uint32(c.Scale), CreatedAt: ts(c.CreatedAt)}
}

func featurePB(f fsm.Feature) *v1.Feature {
	return &v1.Feature{Id: f.ID, Name: f.Name, CreditTypeId: f.CreditTypeID, Rate: f.Rate.String(), UpdatedAt: ts(f.UpdatedAt)}
}

// autoTopUpPB is nil for no settings: a plan without a default, a customer
// that follows its plan's. A customer's own settings (Own) are a message,
// however empty.
func autoTopUpPB(a fsm.AutoTopUp, scale uint8) *v1.AutoTopUp {
	if a == (fsm.AutoTopUp{}) {
		return nil
	}
	mode := v1.AutoTopUpMode_AUTO_TOP_UP_MODE_FIXED
	if a.Mode == fsm.TopUpToTarget {
		mode = v1.AutoTopUpMode_AUTO_TOP_UP_MODE_TO_TARGET
	}
	return &v1.AutoTopUp{
		Enabled:    a.Enabled,
		Threshold:  units(a.ThresholdCredits, scale),
		Mode:       mode,
		Amount:     units(a.AmountCredits, scale),
		MonthlyCap: money(a.MonthlyCapMicros),
	}
}

func planPB(p fsm.Plan, scale uint8) *v1.Plan {
	out := &v1.Plan{
		Id:             p.ID,
		Name:           p.Name,
		CreditTypeId:   p.CreditTypeID,
		Currency:       p.Currency,
		PricePerCredit: p.PricePerCredit.String(),
		MinPurchase:    units(p.MinPurchaseCredits, scale),
		MaxPurchase:    units(p.MaxPurchaseCredits, scale),
		InvoiceGrant:   v1.InvoiceGrantPolicy_INVOICE_GRANT_POLICY_ON_PAYMENT,
		Overdraft:      v1.OverdraftPolicy_OVERDRAFT_POLICY_DENY,
		OverdraftLimit: units(p.OverdraftLimit, scale),
		AutoTopUp:      autoTopUpPB(p.AutoTopUp, scale),
		UpdatedAt:      ts(p.UpdatedAt),
	}
	if p.MaxPurchaseCredits == 0 {
		out.MaxPurchase = ""
	}
	if p.DefaultExpiry > 0 {
		out.DefaultExpiry = durationpb.New(p.DefaultExpiry)
	}
	if p.InvoiceGrant == fsm.GrantOnIssue {
		out.InvoiceGrant = v1.InvoiceGrantPolicy_INVOICE_GRANT_POLICY_ON_ISSUE
	}
	if p.Overdraft == fsm.OverdraftAllow {
		out.Overdraft = v1.OverdraftPolicy_OVERDRAFT_POLICY_ALLOW
	}
	return out
}

// customerPB needs the scale of the customer's plan's credit type for the
// auto top-up amounts (0 when the customer has no plan).
func customerPB(c fsm.Customer, scale uint8) *v1.Customer {
	return &v1.Customer{
		Id:                    c.ID,
		Name:                  c.Name,
		BillingRef:            c.BillingRef,
		PlanId:                c.PlanID,
		AutoTopUp:             autoTopUpPB(c.AutoTopUp, scale),
		AutoTopUpPaused:       c.AutoTopUpPaused,
		AutoTopUpLast:         c.AutoTopUpLast,
		AutoSpendMonth:        c.AutoSpendMonth,
		AutoSpend:             money(c.AutoSpendMicros),
		AutoPendingPurchaseId: c.AutoPendingPurchase,
		CreatedAt:             ts(c.CreatedAt),
		UpdatedAt:             ts(c.UpdatedAt),
	}
}

// customerScale is the scale of the credit type of a customer's plan.
func customerScale(v *fsm.View, sc *scales, c fsm.Customer) uint8 {
	if c.PlanID == "" {
		return 0
	}
	p, err := v.Plan(c.PlanID)
	if err != nil {
		return 0
	}
	return sc.known(p.CreditTypeID)
}

func grantCategoryPB(c fsm.GrantCategory) v1.GrantCategory {
	if c == fsm.Paid {
		return v1.GrantCategory_GRANT_CATEGORY_PAID
	}
	return v1.GrantCategory_GRANT_CATEGORY_PROMOTIONAL
}

func grantStatusPB(s fsm.GrantStatus) v1.GrantStatus {
	switch s {
	case fsm.GrantPending:
		return v1.GrantStatus_GRANT_STATUS_PENDING
	case fsm.GrantActive:
		return v1.GrantStatus_GRANT_STATUS_ACTIVE
	case fsm.GrantDepleted:
		return v1.GrantStatus_GRANT_STATUS_DEPLETED
	case fsm.GrantExpired:
		return v1.GrantStatus_GRANT_STATUS_EXPIRED
	case fsm.GrantRevoked:
		return v1.GrantStatus_GRANT_STATUS_REVOKED
	}
	return v1.GrantStatus_GRANT_STATUS_UNSPECIFIED
}

func grantStatusFSM(field string, s v1.GrantStatus) (fsm.GrantStatus, error) {
	switch s {
	case v1.GrantStatus_GRANT_STATUS_PENDING:
		return fsm.GrantPending, nil
	case v1.GrantStatus_GRANT_STATUS_ACTIVE:
		return fsm.GrantActive, nil
	case v1.GrantStatus_GRANT_STATUS_DEPLETED:
		return fsm.GrantDepleted, nil
	case v1.GrantStatus_GRANT_STATUS_EXPIRED:
		return fsm.GrantExpired, nil
	case v1.GrantStatus_GRANT_STATUS_REVOKED:
		return fsm.GrantRevoked, nil
	}
	return 0, invalidField(field, "is not a grant status")
}

func sourceKindPB(k fsm.SourceKind) v1.SourceKind {
	switch k {
	case fsm.SourcePurchase:
		return v1.SourceKind_SOURCE_KIND_PURCHASE
	case fsm.SourceInvoice:
		return v1.SourceKind_SOURCE_KIND_INVOICE
	case fsm.SourcePayment:
		return v1.SourceKind_SOURCE_KIND_PAYMENT
	}
	return v1.SourceKind_SOURCE_KIND_MANUAL
}

func sourceKindFSM(field string, k v1.SourceKind) (fsm.SourceKind, error) {
	switch k {
	case v1.SourceKind_SOURCE_KIND_UNSPECIFIED, v1.SourceKind_SOURCE_KIND_MANUAL:
		return fsm.SourceManual, nil
	case v1.SourceKind_SOURCE_KIND_PURCHASE:
		return fsm.SourcePurchase, nil
	case v1.SourceKind_SOURCE_KIND_INVOICE:
		return fsm.SourceInvoice, nil
	case v1.SourceKind_SOURCE_KIND_PAYMENT:
		return fsm.SourcePayment, nil
	}
	return 0, invalidField(field, "is not a source kind")
}

func grantPB(g fsm.Grant, scale uint8) *v1.Grant {
	return &v1.Grant{
		Id:           g.ID,
		CustomerId:   g.CustomerID,
		CreditTypeId: g.CreditTypeID,
		Category:     grantCategoryPB(g.Category),
		Amount:       units(g.Amount, scale),
		Remaining:    units(g.Remaining, scale),
		CostBasis:    g.CostBasis.String(),
		Currency:     g.Currency,
		Deferred:     money(g.DeferredMicros),
		Priority:     g.Priority,
		EffectiveAt:  ts(g.EffectiveAt),
		ExpiresAt:    ts(g.ExpiresAt),
		SourceKind:   sourceKindPB(g.SourceKind),
		SourceRef:    g.SourceRef,
		Status:       grantStatusPB(g.Status),
		Burned:       units(g.Burned, scale),
		Expired:      units(g.Expired, scale),
		Revoked:      units(g.Revoked, scale),
		Adjusted:     units(g.Adjusted, scale),
		Reason:       g.Reason,
		CreatedAt:    ts(g.CreatedAt),
		UpdatedAt:    ts(g.UpdatedAt),
	}
}

func reservationPB(r fsm.Reservation, scale uint8) *v1.Reservation {
	st := v1.ReservationStatus_RESERVATION_STATUS_HELD
	switch r.Status {
	case fsm.ReservationSettled:
		st = v1.ReservationStatus_RESERVATION_STATUS_SETTLED
	case fsm.ReservationReleased:
		st = v1.ReservationStatus_RESERVATION_STATUS_RELEASED
	case fsm.ReservationExpired:
		st = v1.ReservationStatus_RESERVATION_STATUS_EXPIRED
	}
	return &v1.Reservation{
		Id:            r.ID,
		CustomerId:    r.CustomerID,
		CreditTypeId:  r.CreditTypeID,
		FeatureId:     r.FeatureID,
		Amount:        units(r.Amount, scale),
		SettledAmount: units(r.SettledAmount, scale),
		Status:        st,
		ExpiresAt:     ts(r.ExpiresAt),
		CreatedAt:     ts(r.CreatedAt),
		UpdatedAt:     ts(r.UpdatedAt),
	}
}

func purchaseFlowPB(f fsm.PurchaseFlow) v1.PurchaseFlow {
	switch f {
	case fsm.FlowInvoice:
		return v1.PurchaseFlow_PURCHASE_FLOW_INVOICE
	case fsm.FlowAuto:
		return v1.PurchaseFlow_PURCHASE_FLOW_AUTO
	}
	return v1.PurchaseFlow_PURCHASE_FLOW_SELF_SERVE
}

func purchasePB(p fsm.Purchase, scale uint8) *v1.Purchase {
	st := v1.PurchaseStatus_PURCHASE_STATUS_PENDING
	switch p.Status {
	case fsm.PurchaseSucceeded:
		st = v1.PurchaseStatus_PURCHASE_STATUS_SUCCEEDED
	case fsm.PurchaseFailed:
		st = v1.PurchaseStatus_PURCHASE_STATUS_FAILED
	}
	return &v1.Purchase{
		Id:             p.ID,
		CustomerId:     p.CustomerID,
		PlanId:         p.PlanID,
		CreditTypeId:   p.CreditTypeID,
		Credits:        units(p.Credits, scale),
		UnitPrice:      p.UnitPrice.String(),
		Currency:       p.Currency,
		Total:          money(p.TotalMicros),
		Flow:           purchaseFlowPB(p.Flow),
		Status:         st,
		ProviderRef:    p.ProviderRef,
		ProviderStatus: p.ProviderStatus,
		FailureReason:  p.FailureReason,
		GrantId:        p.GrantID,
		CreatedAt:      ts(p.CreatedAt),
		UpdatedAt:      ts(p.UpdatedAt),
	}
}

func entryKindPB(k fsm.EntryKind) v1.EntryKind {
	switch k {
	case fsm.EntryGrant:
		return v1.EntryKind_ENTRY_KIND_GRANT
	case fsm.EntryBurn:
		return v1.EntryKind_ENTRY_KIND_BURN
	case fsm.EntryExpire:
		return v1.EntryKind_ENTRY_KIND_EXPIRE
	case fsm.EntryRevoke:
		return v1.EntryKind_ENTRY_KIND_REVOKE
	case fsm.EntryAdjust:
		return v1.EntryKind_ENTRY_KIND_ADJUST
	case fsm.EntryRepay:
		return v1.EntryKind_ENTRY_KIND_REPAY
	}
	return v1.EntryKind_ENTRY_KIND_UNSPECIFIED
}

func causeKindPB(k fsm.CauseKind) v1.CauseKind {
	switch k {
	case fsm.CauseUsage:
		return v1.CauseKind_CAUSE_KIND_USAGE
	case fsm.CauseReservation:
		return v1.CauseKind_CAUSE_KIND_RESERVATION
	case fsm.CausePurchase:
		return v1.CauseKind_CAUSE_KIND_PURCHASE
	case fsm.CauseGrant:
		return v1.CauseKind_CAUSE_KIND_GRANT
	case fsm.CauseRevoke:
		return v1.CauseKind_CAUSE_KIND_REVOKE
	case fsm.CauseAdjust:
		return v1.CauseKind_CAUSE_KIND_ADJUST
	case fsm.CauseTick:
		return v1.CauseKind_CAUSE_KIND_TICK
	}
	return v1.CauseKind_CAUSE_KIND_UNSPECIFIED
}

func entryPB(e *fsm.LedgerEntry, scale uint8) *v1.LedgerEntry {
	out := &v1.LedgerEntry{
		Seq:          e.Seq,
		Time:         ts(e.Time),
		CustomerId:   e.CustomerID,
		CreditTypeId: e.CreditTypeID,
		GrantId:      e.GrantID,
		Kind:         entryKindPB(e.Kind),
		Amount:       units(e.Amount, scale),
		Repaid:       units(e.Repaid, scale),
		BalanceAfter: units(e.BalanceAfter, scale),
		CostBasis:    e.CostBasis.String(),
		Currency:     e.Currency,
		Money:        money(e.MoneyMicros),
		CauseKind:    causeKindPB(e.CauseKind),
		CauseId:      e.CauseID,
		SourceKind:   sourceKindPB(e.SourceKind),
		SourceRef:    e.SourceRef,
		Reason:       e.Reason,
	}
	return out
}

// eventResultsPB converts a batch's results; scaleOf gives a credit type's
// scale. An answer carries up to thousands of results, so the messages come
// from one slice per batch and each result's amounts share one string: an
// allocation per message and per amount was a visible share of the
// leader's CPU. Each result lists at most maxBurnsListed burns.
func eventResultsPB(results []fsm.EventResult, scaleOf func(creditTypeID string) uint8) []*v1.EventResult {
	nBurns := 0
	for i := range results {
		nBurns += min(len(results[i].Burns), maxBurnsListed)
	}
	msgs := make([]v1.EventResult, len(results))
	out := make([]*v1.EventResult, len(results))
	burnMsgs := make([]v1.GrantBurn, nBurns)
	burns := make([]*v1.GrantBurn, nBurns)
	for i := range results {
		r, m := &results[i], &msgs[i]
		out[i] = m
		var scale uint8
		if r.CreditTypeID != "" {
			scale = scaleOf(r.CreditTypeID)
		}
		m.EventId, m.Duplicate, m.CreditTypeId, m.Reason = r.EventID, r.Duplicate, r.CreditTypeID, r.Reason
		switch r.Status {
		case fsm.EventBurned:
			m.Status = v1.EventStatus_EVENT_STATUS_BURNED
		case fsm.EventDenied:
			m.Status = v1.EventStatus_EVENT_STATUS_DENIED
		case fsm.EventRejected:
			m.Status = v1.EventStatus_EVENT_STATUS_REJECTED
			m.ErrorCode = connectCodeName(r.Code)
			m.Field = r.Field
			if m.Field == "event_id" {
				// The state machine's name for the event's id; the caller
				// sent it as UsageEvent.id.
				m.Field = "id"
			}
			continue
		}
		// Room for every amount's text (≤ 21 characters each) on the stack.
		var text [(4 + maxBurnsListed) * 24]byte
		var ends [4 + maxBurnsListed]int
		b, e := text[:0], ends[:0]
		amounts := [...]int64{r.Credits, r.BalanceAfter, r.AvailableAfter, r.Available}
		for _, v := range amounts {
			b = fsm.AppendUnits(b, v, scale)
			e = append(e, len(b))
		}
		listed := r.Burns[:min(len(r.Burns), maxBurnsListed)]
		for _, g := range listed {
			b = fsm.AppendUnits(b, g.Amount, scale)
			e = append(e, len(b))
		}
		all := string(b)
		part := func(k int) string {
			if k == 0 {
				return all[:e[0]]
			}
			return all[e[k-1]:e[k]]
		}
		m.Credits, m.BalanceAfter, m.AvailableAfter = part(0), part(1), part(2)
		if r.Status == fsm.EventDenied {
			m.Available = part(3)
		}
		m.BurnsOmitted = uint32(len(r.Burns) - len(listed))
		if n := len(listed); n > 0 {
			for k, g := range listed {
				bm := &burnMsgs[k]
				bm.GrantId, bm.Amount = g.GrantID, part(len(amounts)+k)
				burns[k] = bm
			}
			m.Burns = burns[:n:n]
			burns, burnMsgs = burns[n:], burnMsgs[n:]
		}
	}
	return out
}
