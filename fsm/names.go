package fsm

func (s GrantStatus) String() string {
	switch s {
	case GrantPending:
		return "pending"
	case GrantActive:
		return "active"
	case GrantDepleted:
		return "depleted"
	case GrantExpired:
		return "expired"
	case GrantRevoked:
		return "revoked"
	}
	return "unknown"
}

func (c GrantCategory) String() string {
	if c == Paid {
		return "paid"
	}
	return "promotional"
}

func (k SourceKind) String() string {
	switch k {
	case SourceManual:
		return "manual"
	case SourcePurchase:
		return "purchase"
	case SourceInvoice:
		return "invoice"
	case SourcePayment:
		return "payment"
	}
	return "unknown"
}

func (k EntryKind) String() string {
	switch k {
	case EntryGrant:
		return "grant"
	case EntryBurn:
		return "burn"
	case EntryExpire:
		return "expire"
	case EntryRevoke:
		return "revoke"
	case EntryAdjust:
		return "adjust"
	case EntryRepay:
		return "repay"
	}
	return "unknown"
}

func (k CauseKind) String() string {
	switch k {
	case CauseNone:
		return ""
	case CauseUsage:
		return "usage"
	case CauseReservation:
		return "reservation"
	case CausePurchase:
		return "purchase"
	case CauseGrant:
		return "grant"
	case CauseRevoke:
		return "revoke"
	case CauseAdjust:
		return "adjust"
	case CauseTick:
		return "tick"
	}
	return "unknown"
}

func (s ReservationStatus) String() string {
	switch s {
	case ReservationHeld:
		return "held"
	case ReservationSettled:
		return "settled"
	case ReservationReleased:
		return "released"
	case ReservationExpired:
		return "expired"
	}
	return "unknown"
}

func (f PurchaseFlow) String() string {
	switch f {
	case FlowSelfServe:
		return "self_serve"
	case FlowInvoice:
		return "invoice"
	case FlowAuto:
		return "auto"
	}
	return "unknown"
}

func (s PurchaseStatus) String() string {
	switch s {
	case PurchasePending:
		return "pending"
	case PurchaseSucceeded:
		return "succeeded"
	case PurchaseFailed:
		return "failed"
	}
	return "unknown"
}

func (s EventStatus) String() string {
	switch s {
	case EventBurned:
		return "burned"
	case EventDenied:
		return "denied"
	case EventRejected:
		return "rejected"
	}
	return "unknown"
}
