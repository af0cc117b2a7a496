package export

import (
	"slices"
	"strconv"

	"github.com/creditd/creditd/fsm"
)

// The strings below are part of the export format: finance queries filter on
// them. Never rename, only add.

func kindName(k fsm.EntryKind) string {
	switch k {
	case fsm.EntryGrant:
		return "grant"
	case fsm.EntryBurn:
		return "burn"
	case fsm.EntryExpire:
		return "expire"
	case fsm.EntryRevoke:
		return "revoke"
	case fsm.EntryAdjust:
		return "adjust"
	case fsm.EntryRepay:
		return "repay"
	}
	return "kind_" + strconv.Itoa(int(k))
}

func parseKind(s string) (fsm.EntryKind, bool) {
	for k := fsm.EntryGrant; k <= fsm.EntryRepay; k++ {
		if kindName(k) == s {
			return k, true
		}
	}
	return 0, false
}

func categoryName(c fsm.GrantCategory) string {
	switch c {
	case fsm.Promotional:
		return "promotional"
	case fsm.Paid:
		return "paid"
	}
	return "category_" + strconv.Itoa(int(c))
}

func statusName(s fsm.GrantStatus) string {
	switch s {
	case fsm.GrantPending:
		return "pending"
	case fsm.GrantActive:
		return "active"
	case fsm.GrantDepleted:
		return "depleted"
	case fsm.GrantExpired:
		return "expired"
	case fsm.GrantRevoked:
		return "revoked"
	}
	return "status_" + strconv.Itoa(int(s))
}

func sourceName(s fsm.SourceKind) string {
	switch s {
	case fsm.SourceManual:
		return "manual"
	case fsm.SourcePurchase:
		return "purchase"
	case fsm.SourceInvoice:
		return "invoice"
	case fsm.SourcePayment:
		return "payment"
	}
	return "source_" + strconv.Itoa(int(s))
}

func causeName(c fsm.CauseKind) string {
	switch c {
	case fsm.CauseNone:
		return "none"
	case fsm.CauseUsage:
		return "usage"
	case fsm.CauseReservation:
		return "reservation"
	case fsm.CausePurchase:
		return "purchase"
	case fsm.CauseGrant:
		return "grant"
	case fsm.CauseRevoke:
		return "revoke"
	case fsm.CauseAdjust:
		return "adjust"
	case fsm.CauseTick:
		return "tick"
	}
	return "cause_" + strconv.Itoa(int(c))
}

func sortedKeys(m map[string]string) []string {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	slices.Sort(keys)
	return keys
}

func parseCause(s string) (fsm.CauseKind, bool) {
	for c := fsm.CauseNone; c <= fsm.CauseTick; c++ {
		if causeName(c) == s {
			return c, true
		}
	}
	return 0, false
}

func parseSource(s string) (fsm.SourceKind, bool) {
	for k := fsm.SourceManual; k <= fsm.SourcePayment; k++ {
		if sourceName(k) == s {
			return k, true
		}
	}
	return 0, false
}
