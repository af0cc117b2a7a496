package billing

import (
	"context"
	"fmt"
	"sort"
	"strings"

	"github.com/creditd/creditd/fsm"
)

// The movements of a purchase's refunds, by deterministic id, so that each
// is made once whichever event reports it and however often:
//
//   - "refund:<refund id>" revokes the refund's share from the purchase's
//     grant (request id of a RevokeGrant);
//   - "refund-failed:<refund id>" is the grant that gives back what that
//     revocation took when the refund fails or is canceled afterwards; a grant
//     id is never forgotten, unlike a request id, so the credits come back
//     once;
//   - "refund:<refund id>:from:<failed refund id>" takes, from such a grant,
//     what a later refund's share could not find on the purchase's grant
//     (which a revocation may have emptied before its refund failed).
const (
	refundRequestPrefix  = "refund:"
	giveBackGrantPrefix  = "refund-failed:"
	refundFromSeparator  = ":from:"
	ledgerPageForRefunds = 10000
)

func refundRequestID(refundID string) string { return refundRequestPrefix + refundID }

func giveBackGrantID(refundID string) string { return giveBackGrantPrefix + refundID }

func refundFromRequestID(refundID, failedRefundID string) string {
	return refundRequestPrefix + refundID + refundFromSeparator + failedRefundID
}

// mergeRefunds adds to the refunds listed at the provider those an event
// carried. A refund either reports as not counting wins: failed and
// canceled are final at Stripe, so the other report is the older one.
func mergeRefunds(listed, carried []Refund) []Refund {
	out := append([]Refund(nil), listed...)
	for _, c := range carried {
		found := false
		for i := range out {
			if out[i].ID == c.ID {
				found = true
				if !c.Counts {
					out[i].Counts = false
				}
			}
		}
		if !found {
			out = append(out, c)
		}
	}
	return out
}

// givenBack is a grant that gave back the credits of a failed refund.
type givenBack struct {
	refundID string
	grantID  string
}

// refundTaken reads from the pool's ledger the credits the refunds'
// revocations took, by request id ("refund:<id>", "refund:<id>:from:<other>").
// The ledger, not a recomputed share, is what a revocation really took: at
// most what remained of the grant. It reads the pool's entries from the
// purchase's grant's creation (since) on, so it is called only for charges
// with more than one refund or a refund that no longer counts.
func (h *WebhookHandler) refundTaken(ctx context.Context, customerID, creditTypeID string, since fsm.Timestamp) (map[string]int64, error) {
	taken := map[string]int64{}
	err := h.o.State.View(func(v *fsm.View) error {
		from, err := firstSeqAt(v, since)
		if err != nil {
			return err
		}
		for from != 0 {
			// A long ledger must not outlive the webhook's deadline:
			// Stripe retries, and the retry starts over.
			if err := ctx.Err(); err != nil {
				return err
			}
			es, next, err := v.Ledger(fsm.LedgerFilter{CustomerID: customerID, CreditTypeID: creditTypeID,
				FromSeq: from, Limit: ledgerPageForRefunds})
			if err != nil {
				return err
			}
			for _, e := range es {
				if e.Kind == fsm.EntryRevoke && e.CauseKind == fsm.CauseRevoke &&
					strings.HasPrefix(e.CauseID, refundRequestPrefix) {
					taken[e.CauseID] -= e.Amount // revocations are negative
				}
			}
			from = next
		}
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("read the refund revocations of %s/%s: %w", customerID, creditTypeID, err)
	}
	return taken, nil
}

// firstSeqAt finds, by binary search on the ledger (whose log time never
// goes back), the first sequence whose time is at or after t: 0 when there
// is none. It spares reading a pool's entries from before the purchase.
func firstSeqAt(v *fsm.View, t fsm.Timestamp) (uint64, error) {
	timeAt := func(seq uint64) (fsm.Timestamp, error) {
		var at fsm.Timestamp
		found := false
		err := v.ScanLedger(seq, seq, func(e *fsm.LedgerEntry) error {
			at, found = e.Time, true
			return nil
		})
		if err == nil && !found {
			err = fmt.Errorf("ledger entry %d is missing", seq)
		}
		return at, err
	}
	lo, hi := uint64(1), v.LastSeq()+1 // the answer is in [lo, hi]; hi = none
	for lo < hi {
		mid := lo + (hi-lo)/2
		at, err := timeAt(mid)
		if err != nil {
			return 0, err
		}
		if at >= t {
			hi = mid
		} else {
			lo = mid + 1
		}
	}
	if lo > v.LastSeq() {
		return 0, nil
	}
	return lo, nil
}

// takenBy sums what one refund's revocations took: from the purchase's
// grant and from grants that gave back failed refunds' credits.
func takenBy(taken map[string]int64, refundID string) int64 {
	n := taken[refundRequestID(refundID)]
	prefix := refundRequestID(refundID) + refundFromSeparator
	for cause, t := range taken {
		if strings.HasPrefix(cause, prefix) {
			n += t
		}
	}
	return n
}

func (h *WebhookHandler) readGrant(id string) (fsm.Grant, bool, error) {
	return readRecord(h.o.State, "grant", id, (*fsm.View).Grant)
}

// readRecord reads one record through get; a record that is not there is
// (zero, false, nil), any other failure an error naming what was read.
func readRecord[T any](state StateReader, what, id string, get func(*fsm.View, string) (T, error)) (T, bool, error) {
	var rec T
	err := state.View(func(v *fsm.View) error {
		var err error
		rec, err = get(v, id)
		return err
	})
	var zero T
	if fsm.CodeOf(err) == fsm.CodeNotFound {
		return zero, false, nil
	}
	if err != nil {
		return zero, false, fmt.Errorf("read %s %s: %w", what, id, err)
	}
	return rec, true, nil
}

// giveBackFailed gives back, for each refund that no longer counts, the
// credits its revocation took, as a grant "refund-failed:<refund id>" like
// the purchase's own (category, cost basis, currency, priority, expiry,
// source), so its deferred revenue comes back with it and the ledger shows
// a paid grant caused by that id beside the revocation "refund:<refund id>".
// Credits burned before the revocation were never taken and do not come
// back. It returns notes for the answer and the give-back grants that
// exist, in refund order, for later refunds to take their share from.
func (h *WebhookHandler) giveBackFailed(ctx context.Context, p fsm.Purchase, chargeRef string, refunds []Refund) ([]string, []givenBack, error) {
	var failed []Refund
	for _, r := range refunds {
		if !r.Counts {
			failed = append(failed, r)
		}
	}
	if len(failed) == 0 {
		return nil, nil, nil
	}
	sort.Slice(failed, func(i, j int) bool {
		if failed[i].Created != failed[j].Created {
			return failed[i].Created < failed[j].Created
		}
		return failed[i].ID < failed[j].ID
	})
	og, found, err := h.readGrant(p.GrantID)
	if err != nil {
		return nil, nil, err
	}
	if !found {
		return nil, nil, fmt.Errorf("purchase %s names grant %s, which does not exist", p.ID, p.GrantID)
	}
	var taken map[string]int64
	var notes []string
	var backs []givenBack
	for _, r := range failed {
		id := giveBackGrantID(r.ID)
		if !fsm.ValidID(id) || !fsm.ValidID(refundFromRequestID(r.ID, r.ID)) {
			// Stripe's ids are far shorter; clipping could merge two refunds.
			h.log.Error("refund id too long or malformed to give its credits back", "refund", r.ID, "purchase", p.ID)
			notes = append(notes, "refund "+clip(r.ID, 64)+": id not usable; nothing given back")
			continue
		}
		if _, exists, err := h.readGrant(id); err != nil {
			return nil, nil, err
		} else if exists {
			backs = append(backs, givenBack{refundID: r.ID, grantID: id})
			continue
		}
		if taken == nil {
			if taken, err = h.refundTaken(ctx, og.CustomerID, og.CreditTypeID, og.CreatedAt); err != nil {
				return nil, nil, err
			}
		}
		n := takenBy(taken, r.ID)
		if n <= 0 {
			continue // never revoked: nothing to give back
		}
		res, err := h.o.Applier.Apply(ctx, giveBackGrant(og, id, n))
		if err != nil {
			return nil, nil, fmt.Errorf("give back %d credits of refund %s (grant %s): %w", n, r.ID, id, err)
		}
		switch {
		case res.Err != nil && (fsm.CodeOf(res.Err) == fsm.CodeAlreadyExists || fsm.CodeOf(res.Err) == fsm.CodeConflict):
			// A concurrent delivery made it first.
			backs = append(backs, givenBack{refundID: r.ID, grantID: id})
		case res.Err != nil:
			// The purchase's grant expired meanwhile (its credits would
			// have expired too), or the pool cannot take them: final.
			h.log.Warn("credits of a failed refund not given back", "refund", r.ID, "charge", chargeRef,
				"purchase", p.ID, "credits", n, "err", res.Err)
			notes = append(notes, fmt.Sprintf("refund %s no longer counts; %d credits not given back: %v", r.ID, n, res.Err))
		default:
			backs = append(backs, givenBack{refundID: r.ID, grantID: id})
			if res.Duplicate {
				notes = append(notes, "credits of refund "+r.ID+" already given back")
			} else {
				notes = append(notes, fmt.Sprintf("refund %s no longer counts: %d credits given back as grant %s", r.ID, n, id))
			}
		}
	}
	return notes, backs, nil
}

// giveBackGrant is the grant id that gives back n credits a revocation took
// from the purchase's grant og, made like it (category, cost basis,
// currency, priority, expiry, source), so the matching deferred revenue
// comes back with them and the ledger ties it to the purchase.
func giveBackGrant(og fsm.Grant, id string, n int64) fsm.CreateGrant {
	return fsm.CreateGrant{ID: id, CustomerID: og.CustomerID, CreditTypeID: og.CreditTypeID, Category: og.Category,
		Amount: n, CostBasis: og.CostBasis, Currency: og.Currency, Priority: og.Priority, ExpiresAt: og.ExpiresAt,
		SourceKind: og.SourceKind, SourceRef: og.SourceRef}
}

// revokeFromGivenBack takes what a refund's share did not find on the
// purchase's grant from the credits given back for failed refunds, in
// refund order, one request id per grant. Each amount is the share less
// what the refund's revocations before it took, by the ledger, which is
// fixed once those are applied: a retried event repeats the same commands,
// and a step the ledger already shows is not made again.
func (h *WebhookHandler) revokeFromGivenBack(ctx context.Context, p fsm.Purchase, chargeRef string,
	rv refundRevocation, backs []givenBack) ([]string, error) {
	og, found, err := h.readGrant(p.GrantID)
	if err != nil || !found {
		return nil, err
	}
	taken, err := h.refundTaken(ctx, og.CustomerID, og.CreditTypeID, og.CreatedAt)
	if err != nil {
		return nil, err
	}
	var notes []string
	before := taken[refundRequestID(rv.RefundID)]
	for _, b := range backs {
		req := refundFromRequestID(rv.RefundID, b.refundID)
		if t := taken[req]; t > 0 {
			before += t
			continue
		}
		rest := rv.Credits - before
		if rest <= 0 {
			break
		}
		g, found, err := h.readGrant(b.grantID)
		if err != nil {
			return nil, err
		}
		if !found || (g.Status != fsm.GrantPending && g.Status != fsm.GrantActive) {
			continue
		}
		note, err := h.revoke(ctx, fsm.RevokeGrant{GrantID: b.grantID, Amount: rest,
			Reason: clip("refund "+rv.RefundID+" of charge "+chargeRef+", from the credits given back for refund "+
				b.refundID, fsm.MaxReasonLen),
			RequestID: req})
		if err != nil {
			return nil, err
		}
		notes = append(notes, note)
		if taken, err = h.refundTaken(ctx, og.CustomerID, og.CreditTypeID, og.CreatedAt); err != nil {
			return nil, err
		}
		before += taken[req]
	}
	return notes, nil
}

// settleOrderRounding lets the last refund not yet revoked make up what the
// refunds already revoked took more or less than their share now. Refunds
// are ordered by creation second, then id, and Stripe's ids are not ordered
// in time: a share computed before a refund of the same second was known
// can differ from its share now by one unit, and the whole refund must
// still revoke the whole grant. A larger gap is a revocation the grant
// could not cover, which is not made up.
func settleOrderRounding(revs []refundRevocation, done map[string]int64) {
	last, gap := -1, int64(0)
	for i, rv := range revs {
		took, ok := done[clip(refundRequestID(rv.RefundID), fsm.MaxIDLen)]
		if !ok || took == 0 {
			last = i
			continue
		}
		gap += min(max(rv.Credits-took, -1), 1)
	}
	if last >= 0 && gap != 0 {
		revs[last].Credits = max(revs[last].Credits+gap, 0)
	}
}
