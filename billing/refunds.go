package billing

import (
	"context"
	"errors"
	"fmt"
	"slices"
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
//   - "<revocation>:from:<key>" takes, from one grant that gave credits of
//     the purchase back ("refund-failed:<id>", "dispute-won:<id>"), what a
//     refund's or a dispute's share could not find on the purchase's grant
//     (which a revocation may have emptied before its refund failed or its
//     dispute was won). The key is the failed refund's id for a
//     "refund-failed:" grant, the grant's id otherwise:
//     "refund:re_2:from:re_1", "refund:re_2:from:dispute-won:dp_1",
//     "dispute:dp_1:from:re_1".
const (
	refundRequestPrefix  = "refund:"
	giveBackGrantPrefix  = "refund-failed:"
	fromSeparator        = ":from:"
	ledgerPageForRefunds = 10000
	// giveBackGrantPage is the page size of the scan for a purchase's
	// give-back grants among its customer's grants.
	giveBackGrantPage = 100
)

func refundRequestID(refundID string) string { return refundRequestPrefix + refundID }

func giveBackGrantID(refundID string) string { return giveBackGrantPrefix + refundID }

// fromRequestID is the request id of the step of revocation reqID that
// takes from give-back grant grantID.
func fromRequestID(reqID, grantID string) string {
	key := grantID
	if refundID, ok := strings.CutPrefix(grantID, giveBackGrantPrefix); ok {
		key = refundID
	}
	return reqID + fromSeparator + key
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

// purchaseMoves is what the pool's ledger says the revocations of a
// purchase's refunds and disputes took, by request id ("refund:<id>",
// "dispute:<id>" and their ":from:" steps), on the purchase's grant and the
// grants that gave its credits back (same source). The ledger, not a
// recomputed share, is what a revocation really took: at most what remained
// of the grant; and unlike fsm's request ids it never forgets. It is read
// from the purchase's grant's creation on, then brought up to date from
// where the last read stopped.
type purchaseMoves struct {
	og       fsm.Grant
	taken    map[string]int64
	disputes []string // disputes with a revocation, in ledger order
	started  bool
	next     uint64 // the first sequence not read yet
}

func newPurchaseMoves(og fsm.Grant) *purchaseMoves {
	return &purchaseMoves{og: og, taken: map[string]int64{}}
}

// readMoves brings m up to date with the ledger.
func (h *WebhookHandler) readMoves(ctx context.Context, m *purchaseMoves) error {
	err := h.o.State.View(func(v *fsm.View) error {
		last := v.LastSeq()
		from := m.next
		if !m.started {
			var err error
			if from, err = firstSeqAt(v, m.og.CreatedAt); err != nil {
				return err
			}
		}
		for from != 0 && from <= last {
			// A long ledger must not outlive the webhook's deadline:
			// Stripe retries, and the retry starts over.
			if err := ctx.Err(); err != nil {
				return err
			}
			es, next, err := v.Ledger(fsm.LedgerFilter{CustomerID: m.og.CustomerID, CreditTypeID: m.og.CreditTypeID,
				FromSeq: from, ToSeq: last, Limit: ledgerPageForRefunds})
			if err != nil {
				return err
			}
			for i := range es {
				m.add(&es[i])
			}
			from = next
		}
		m.started, m.next = true, last+1
		return nil
	})
	if err != nil {
		return fmt.Errorf("read the revocations of purchase %s in %s/%s: %w", m.og.SourceRef, m.og.CustomerID, m.og.CreditTypeID, err)
	}
	return nil
}

func (m *purchaseMoves) add(e *fsm.LedgerEntry) {
	if e.Kind != fsm.EntryRevoke || e.CauseKind != fsm.CauseRevoke ||
		e.SourceKind != m.og.SourceKind || e.SourceRef != m.og.SourceRef {
		return
	}
	switch {
	case strings.HasPrefix(e.CauseID, refundRequestPrefix):
	case strings.HasPrefix(e.CauseID, disputeRequestPrefix):
		id, _, _ := strings.Cut(strings.TrimPrefix(e.CauseID, disputeRequestPrefix), fromSeparator)
		if !slices.Contains(m.disputes, id) {
			m.disputes = append(m.disputes, id)
		}
	default:
		return
	}
	m.taken[e.CauseID] -= e.Amount // revocations are negative
}

// takenBy sums what one revocation and its steps from give-back grants
// took.
func (m *purchaseMoves) takenBy(reqID string) int64 {
	n := m.taken[reqID]
	prefix := reqID + fromSeparator
	for cause, t := range m.taken {
		if strings.HasPrefix(cause, prefix) {
			n += t
		}
	}
	return n
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
// back. m is the purchase's moves as read so far, nil when nothing of the
// purchase was ever revoked (then there is nothing to give back). It
// returns notes for the answer.
func (h *WebhookHandler) giveBackFailed(ctx context.Context, p fsm.Purchase, m *purchaseMoves, chargeRef string, refunds []Refund) ([]string, error) {
	var failed []Refund
	for _, r := range refunds {
		if !r.Counts {
			failed = append(failed, r)
		}
	}
	if len(failed) == 0 || m == nil {
		return nil, nil
	}
	sort.Slice(failed, func(i, j int) bool {
		if failed[i].Created != failed[j].Created {
			return failed[i].Created < failed[j].Created
		}
		return failed[i].ID < failed[j].ID
	})
	var notes []string
	for _, r := range failed {
		id := giveBackGrantID(r.ID)
		if !fsm.ValidID(id) || !fsm.ValidID(fromRequestID(refundRequestID(r.ID), id)) {
			// Stripe's ids are far shorter; clipping could merge two refunds.
			h.log.Error("refund id too long or malformed to give its credits back", "refund", r.ID, "purchase", p.ID)
			notes = append(notes, "refund "+clip(r.ID, 64)+": id not usable; nothing given back")
			continue
		}
		if _, exists, err := h.readGrant(id); err != nil {
			return nil, err
		} else if exists {
			continue
		}
		n := m.takenBy(refundRequestID(r.ID))
		if n <= 0 {
			continue // never revoked: nothing to give back
		}
		res, err := h.o.Applier.Apply(ctx, giveBackGrant(m.og, id, n))
		if err != nil {
			return nil, fmt.Errorf("give back %d credits of refund %s (grant %s): %w", n, r.ID, id, err)
		}
		switch {
		case res.Err != nil && (fsm.CodeOf(res.Err) == fsm.CodeAlreadyExists || fsm.CodeOf(res.Err) == fsm.CodeConflict):
			// A concurrent delivery made it first.
		case res.Err != nil:
			// The purchase's grant expired meanwhile (its credits would
			// have expired too), or the pool cannot take them: final.
			h.log.Warn("credits of a failed refund not given back", "refund", r.ID, "charge", chargeRef,
				"purchase", p.ID, "credits", n, "err", res.Err)
			notes = append(notes, fmt.Sprintf("refund %s no longer counts; %d credits not given back: %v", r.ID, n, res.Err))
		case res.Duplicate:
			notes = append(notes, "credits of refund "+r.ID+" already given back")
		default:
			notes = append(notes, fmt.Sprintf("refund %s no longer counts: %d credits given back as grant %s", r.ID, n, id))
		}
	}
	return notes, nil
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

// givenBackGrants lists the grants that gave credits of the purchase whose
// grant is og back ("refund-failed:<id>", "dispute-won:<id>", made like og),
// oldest first: they are the purchase's credits as much as og's remainder
// is. They are found among the customer's grants by id prefix, so the scan
// reads the customer's give-back grants and at most a page of others.
func (h *WebhookHandler) givenBackGrants(ctx context.Context, og fsm.Grant) ([]fsm.Grant, error) {
	var out []fsm.Grant
	err := h.o.State.View(func(v *fsm.View) error {
		for _, prefix := range []string{giveBackGrantPrefix, disputeGiveBackPrefix} {
			after := prefix
		pages:
			for {
				if err := ctx.Err(); err != nil {
					return err
				}
				gs, next, err := v.ListGrants(fsm.GrantFilter{CustomerID: og.CustomerID, After: after, Limit: giveBackGrantPage})
				if err != nil {
					return err
				}
				for _, g := range gs {
					if !strings.HasPrefix(g.ID, prefix) {
						break pages
					}
					if g.CreditTypeID == og.CreditTypeID && g.SourceKind == og.SourceKind && g.SourceRef == og.SourceRef {
						out = append(out, g)
					}
				}
				if next == "" {
					break
				}
				after = next
			}
		}
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("list the grants that gave back credits of purchase %s: %w", og.SourceRef, err)
	}
	sort.Slice(out, func(i, j int) bool {
		if out[i].CreatedAt != out[j].CreatedAt {
			return out[i].CreatedAt < out[j].CreatedAt
		}
		return out[i].ID < out[j].ID
	})
	return out, nil
}

// heldDisputes returns the disputes of the purchase whose money is with the
// card holder, as the provider holds them now: known, the dispute an event
// is about (if it holds funds); the disputes of chargeRef the provider
// lists, since a dispute whose share found nothing to revoke (the credits
// were burned, or a refund that has not failed yet had revoked them) leaves
// no ledger entry to find it by; and those the purchase's moves show
// revoked (a dispute given back as "dispute-won:<id>" was won, which is
// final, and is not asked about). A dispute of another currency is left
// out, as it revoked nothing.
func (h *WebhookHandler) heldDisputes(ctx context.Context, p fsm.Purchase, m *purchaseMoves, known *Dispute,
	chargeRef string) ([]Dispute, error) {
	var held []Dispute
	seen := map[string]bool{}
	add := func(d Dispute) {
		if seen[d.ID] {
			return
		}
		seen[d.ID] = true
		if d.HoldsFunds && d.AmountMinor > 0 && (d.Currency == "" || strings.EqualFold(d.Currency, p.Currency)) {
			held = append(held, d)
		}
	}
	if known != nil {
		add(*known)
	}
	if chargeRef != "" {
		listed, err := h.o.Provider.Disputes(ctx, chargeRef)
		if errors.Is(err, ErrPermanent) {
			h.log.Warn("the disputes of a refunded or disputed charge could not be listed", "charge", chargeRef,
				"purchase", p.ID, "err", err)
		} else if err != nil {
			return nil, fmt.Errorf("list the disputes of charge %s of purchase %s: %w", chargeRef, p.ID, err)
		}
		for _, d := range listed {
			if d.ChargeRef == "" || d.ChargeRef == chargeRef {
				add(d)
			}
		}
	}
	if m == nil {
		return held, nil
	}
	for _, id := range m.disputes {
		if seen[id] {
			continue
		}
		if _, won, err := h.readGrant(disputeGiveBackID(id)); err != nil {
			return nil, err
		} else if won {
			continue
		}
		d, err := h.o.Provider.LookupDispute(ctx, id)
		if errors.Is(err, ErrPermanent) {
			h.log.Warn("a dispute that revoked credits of the purchase is not found at the provider", "dispute", id,
				"purchase", p.ID, "err", err)
			continue
		}
		if err != nil {
			return nil, fmt.Errorf("look up dispute %s of purchase %s: %w", id, p.ID, err)
		}
		add(d)
	}
	return held, nil
}

// chargeMovement is one movement of the charge's money back to the card
// holder (a refund that counts, a dispute that holds funds), with its share
// of the purchase's credits on the charge's running total, disputes first.
type chargeMovement struct {
	reqID   string // its revocation: "refund:<id>" or "dispute:<id>"
	what    string // for reasons: "refund re_1 of charge ch_1"
	credits int64
}

// chargeShares reckons the shares of the charge's movements on one running
// total: disputes that hold funds first, then refunds that count.
func chargeShares(p fsm.Purchase, totalMinor int64, chargeRef string, refunds []Refund, held []Dispute) ([]disputeRevocation, []refundRevocation, error) {
	ds, heldMinor, err := heldDisputeShares(p.Credits, totalMinor, held)
	if err != nil {
		return nil, nil, fmt.Errorf("disputes of purchase %s: %w", p.ID, err)
	}
	revs, err := RevocationsForRefunds(p.Credits, totalMinor, heldMinor, refunds)
	if err != nil {
		return nil, nil, fmt.Errorf("refunds of charge %s: %w", chargeRef, err)
	}
	return ds, revs, nil
}

// movementsOf lists the charge's movements in the order the running total
// counts them, and what they revoke together: ⌊C × min(T, D + R) / T⌋, as
// the shares telescope.
func movementsOf(chargeRef string, ds []disputeRevocation, revs []refundRevocation) ([]chargeMovement, int64) {
	var out []chargeMovement
	var whole int64
	for _, d := range ds {
		out = append(out, chargeMovement{reqID: disputeRequestID(d.DisputeID), what: "dispute " + d.DisputeID + " of charge " + chargeRef,
			credits: d.Credits})
		whole += d.Credits
	}
	for _, rv := range revs {
		out = append(out, chargeMovement{reqID: clip(refundRequestID(rv.RefundID), fsm.MaxIDLen),
			what: "refund " + rv.RefundID + " of charge " + chargeRef, credits: rv.Credits})
		whole += rv.Credits
	}
	return out, whole
}

// makeUp takes from the purchase's give-back grants what the charge's
// movements could not take from the purchase's grant: credits given back
// for a failed refund or a won dispute are the purchase's, and a refund or
// a dispute whose share found the grant emptied by the revocation of one
// that later failed or was won takes its share from them, as
// "<revocation>:from:<key>", one request id per grant.
//
// What is taken is bounded twice: each movement takes at most its share on
// the charge's running total less what its revocations took, and all of
// them together at most what the charge's money revokes as a whole less
// what they took, so shares reckoned in another order than the one they
// were revoked in (rounding differs by a credit) never take more than the
// whole. Every amount is read from the ledger, which is fixed once the steps
// before are applied: a retried event repeats the same commands, and a step
// the ledger already shows is not made again.
func (h *WebhookHandler) makeUp(ctx context.Context, p fsm.Purchase, m *purchaseMoves, moves []chargeMovement, whole int64,
	backs []fsm.Grant) ([]string, error) {
	if len(backs) == 0 || len(moves) == 0 {
		return nil, nil
	}
	if err := h.readMoves(ctx, m); err != nil {
		return nil, err
	}
	short := whole
	for _, mv := range moves {
		short -= m.takenBy(mv.reqID)
	}
	var notes []string
	for _, mv := range moves {
		for _, b := range backs {
			want := min(mv.credits-m.takenBy(mv.reqID), short)
			if want <= 0 {
				break
			}
			step := fromRequestID(mv.reqID, b.ID)
			if m.taken[step] > 0 {
				continue // made; counted in takenBy
			}
			if !fsm.ValidID(step) {
				h.log.Error("revocation id too long to take from given-back credits", "request", step, "purchase", p.ID)
				continue
			}
			g, found, err := h.readGrant(b.ID)
			if err != nil {
				return nil, err
			}
			if !found || (g.Status != fsm.GrantPending && g.Status != fsm.GrantActive) {
				continue
			}
			note, err := h.revoke(ctx, fsm.RevokeGrant{GrantID: b.ID, Amount: want,
				Reason:    clip(mv.what+", from the credits given back as grant "+b.ID, fsm.MaxReasonLen),
				RequestID: step})
			if err != nil {
				return nil, err
			}
			notes = append(notes, note)
			before := m.takenBy(mv.reqID)
			if err := h.readMoves(ctx, m); err != nil {
				return nil, err
			}
			short -= m.takenBy(mv.reqID) - before
		}
	}
	return notes, nil
}

// settleOrderRounding lets the last refund not yet revoked make up what the
// charge's movements already revoked took more or less than their share now.
// Refunds are ordered by creation second, then id, and Stripe's ids are not
// ordered in time: a share computed before a refund of the same second was
// known can differ from its share now by one unit; so can a dispute's or a
// refund's revoked on the money counted before it, when the dispute and the
// refunds came in another order than the running total counts them. The
// whole must still revoke the whole grant. A larger gap is a revocation the
// grant could not cover, which is not made up here.
func settleOrderRounding(revs []refundRevocation, disputes []disputeRevocation, m *purchaseMoves) {
	last, gap := -1, int64(0)
	for _, d := range disputes {
		if took := m.takenBy(disputeRequestID(d.DisputeID)); took > 0 {
			gap += min(max(d.Credits-took, -1), 1)
		}
	}
	for i, rv := range revs {
		took := m.takenBy(clip(refundRequestID(rv.RefundID), fsm.MaxIDLen))
		if took == 0 {
			last = i
			continue
		}
		gap += min(max(rv.Credits-took, -1), 1)
	}
	if last >= 0 && gap != 0 {
		revs[last].Credits = max(revs[last].Credits+gap, 0)
	}
}
