package billing

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/creditd/creditd/fsm"
)

// The movements of a purchase's disputes, by deterministic id, so that each
// is made once whichever event reports it and however late:
//
//   - "dispute:<dispute id>" revokes the dispute's share from the purchase's
//     grant while the disputed money is with the card holder (request id of
//     a RevokeGrant, and so the cause of its ledger entry);
//   - "dispute-won:<dispute id>" is the grant that gives back what that
//     revocation took once the money is back with the merchant (a dispute
//     won); a grant id is never forgotten, so the credits come back once.
const (
	disputeRequestPrefix  = "dispute:"
	disputeGiveBackPrefix = "dispute-won:"
)

func disputeRequestID(disputeID string) string { return disputeRequestPrefix + disputeID }

func disputeGiveBackID(disputeID string) string { return disputeGiveBackPrefix + disputeID }

// dispute brings the purchase's credits in line with a dispute as it stands
// at the provider, whichever of its events this is. A dispute's events are
// not ordered (its reinstatement can come before its withdrawal), and its
// closing comes weeks after the withdrawal, when fsm has forgotten the
// revocation's request id; so the dispute is read again, and what was
// revoked is read from the ledger:
//
//   - money with the card holder (withdrawn, or the dispute lost): the
//     dispute's share is revoked, unless the ledger shows it was; what the
//     purchase's grant cannot cover is taken from the credits given back for
//     the charge's failed refunds and won disputes (makeUp);
//   - money back with the merchant (the dispute won): what the revocation
//     took is given back, as a grant made once, and refunds of the charge
//     whose share found nothing while the dispute held the credits take it
//     from that grant (makeUp);
//   - no money moved (an inquiry, a dispute prevented by a refund, which
//     charge.refunded revokes): nothing.
//
// Credits burned before the revocation stay burned, as with a refund: a
// revocation takes at most what remains, and the give-back returns exactly
// what it took.
func (h *WebhookHandler) dispute(ctx context.Context, p fsm.Purchase, ev Event) (string, error) {
	if p.Status == fsm.PurchasePending {
		// Stripe does not order events: the payment's success may not have
		// come yet. Refused for now, the event is sent again.
		return "", fmt.Errorf("purchase %s is still pending: dispute %s waits for its grant", p.ID, ev.ObjectRef)
	}
	if p.Status != fsm.PurchaseSucceeded || p.GrantID == "" {
		return "purchase " + p.ID + " has no grant to revoke", nil
	}
	reqID, backID := disputeRequestID(ev.ObjectRef), disputeGiveBackID(ev.ObjectRef)
	if !fsm.ValidID(reqID) || !fsm.ValidID(backID) || !fsm.ValidID(fromRequestID(reqID, backID)) {
		// Stripe's ids are far shorter; clipping could merge two disputes.
		h.log.Error("dispute id too long or malformed to revoke by", "dispute", ev.ObjectRef, "purchase", p.ID)
		return "dispute " + clip(ev.ObjectRef, 64) + ": id not usable; nothing revoked", nil
	}
	d, err := h.o.Provider.LookupDispute(ctx, ev.ObjectRef)
	if err != nil {
		if errors.Is(err, ErrPermanent) {
			return "dispute " + ev.ObjectRef + " not found at the provider; ignored", nil
		}
		return "", fmt.Errorf("look up dispute %s: %w", ev.ObjectRef, err)
	}
	if d.Currency != "" && !strings.EqualFold(d.Currency, p.Currency) {
		h.log.Error("dispute currency differs from the purchase's", "purchase", p.ID, "dispute", d.ID,
			"dispute_currency", d.Currency, "purchase_currency", p.Currency)
		return "dispute currency " + d.Currency + " is not the purchase's " + p.Currency + "; ignored", nil
	}
	totalMinor, err := MicrosToMinor(p.TotalMicros, p.Currency)
	if err != nil {
		return "", fmt.Errorf("purchase %s total: %w", p.ID, err)
	}
	if totalMinor <= 0 {
		return "purchase " + p.ID + " cost nothing; no dispute share to revoke", nil
	}
	og, err := h.purchaseGrant(p)
	if err != nil {
		return "", err
	}
	// The revocation was made on an event about the dispute, so not before
	// the dispute was created (less the clocks' skew): the ledger is read
	// from there, which is seldom far from where the revocation is.
	since := og.CreatedAt
	if d.Created > 0 {
		since = max(since, fsm.TimestampOf(time.Unix(d.Created, 0).Add(-createdSlack)))
	}
	// The charge's refunds, listed once, when the dispute's share or what
	// came up short is reckoned.
	var refunds []Refund
	listed := d.ChargeRef == ""
	chargeRefunds := func() ([]Refund, error) {
		if !listed {
			if refunds, err = h.o.Provider.Refunds(ctx, d.ChargeRef); err != nil {
				return nil, fmt.Errorf("list refunds of charge %s of dispute %s: %w", d.ChargeRef, d.ID, err)
			}
			listed = true
		}
		return refunds, nil
	}
	var notes []string
	if d.HoldsFunds {
		done, err := h.disputeRevoked(ctx, og, since, reqID)
		if err != nil {
			return "", err
		}
		if done {
			notes = append(notes, "revocation "+reqID+" already applied")
		} else {
			refunds, err := chargeRefunds()
			if err != nil {
				return "", err
			}
			note, err := h.revokeDispute(ctx, p, og, d, reqID, totalMinor, refunds)
			if err != nil {
				return "", err
			}
			notes = append(notes, note)
			// Read it again: had the dispute been won meanwhile, the
			// reinstatement's event could have found nothing to give back.
			if d, err = h.o.Provider.LookupDispute(ctx, d.ID); err != nil {
				return "", fmt.Errorf("look up dispute %s again after revoking: %w", ev.ObjectRef, err)
			}
		}
	}
	if !d.HoldsFunds && !d.Reinstated {
		if len(notes) == 0 {
			return "dispute " + d.ID + " is " + d.ProviderStatus + " and holds no money; nothing to do", nil
		}
		return strings.Join(notes, "; "), nil
	}
	// What the dispute's revocations took, and whether the charge's
	// movements came up short, is read from the ledger from the purchase's
	// grant on: its refunds may have revoked before the dispute was opened.
	// A dispute that holds funds needs it only when there are credits given
	// back to take from.
	m := newPurchaseMoves(og)
	if d.Reinstated {
		if err := h.readMoves(ctx, m); err != nil {
			return "", err
		}
		note, err := h.giveBackDispute(ctx, og, d, m.takenBy(reqID), backID)
		if err != nil {
			return "", err
		}
		notes = append(notes, note)
	}
	backs, err := h.givenBackGrants(ctx, og)
	if err != nil {
		return "", err
	}
	if len(backs) > 0 {
		if err := h.readMoves(ctx, m); err != nil {
			return "", err
		}
		held, err := h.heldDisputes(ctx, p, m, &d, d.ChargeRef)
		if err != nil {
			return "", err
		}
		refunds, err := chargeRefunds()
		if err != nil {
			return "", err
		}
		ds, revs, err := chargeShares(p, totalMinor, d.ChargeRef, refunds, held)
		if err != nil {
			return "", err
		}
		moves, whole := movementsOf(d.ChargeRef, ds, revs)
		more, err := h.makeUp(ctx, p, m, moves, whole, backs)
		if err != nil {
			return "", err
		}
		notes = append(notes, more...)
	}
	return strings.Join(notes, "; "), nil
}

// revokeDispute revokes the dispute's share of the purchase's grant, on the
// running total after the charge's refunds (DisputeShare). What the grant
// cannot cover is left to makeUp.
//
// Refunds revoked while the dispute held funds counted its money first, so
// one of them may have taken a credit of rounding that the share after them
// counts again: a dispute whose share found nothing to revoke before (no
// ledger entry says it was reckoned) is told again after such a refund. So
// the share is made up by what the refunds revoked took more or less than
// their shares on a total without the dispute, one credit each at most (a
// larger gap is a grant they found short, not rounding). A refund that took
// nothing is not counted: not revoked yet, it reckons the dispute itself.
func (h *WebhookHandler) revokeDispute(ctx context.Context, p fsm.Purchase, og fsm.Grant, d Dispute, reqID string,
	totalMinor int64, refunds []Refund) (string, error) {
	var refundedMinor int64
	for _, r := range refunds {
		if r.Counts && r.AmountMinor > 0 {
			refundedMinor = min(refundedMinor+r.AmountMinor, totalMinor)
		}
	}
	credits, err := DisputeShare(p.Credits, totalMinor, refundedMinor, d.AmountMinor)
	if err != nil {
		return "", fmt.Errorf("dispute %s of purchase %s: %w", d.ID, p.ID, err)
	}
	if refundedMinor > 0 {
		alone, err := RevocationsForRefunds(p.Credits, totalMinor, 0, refunds)
		if err != nil {
			return "", fmt.Errorf("refunds of charge %s of dispute %s: %w", d.ChargeRef, d.ID, err)
		}
		m := newPurchaseMoves(og)
		if err := h.readMoves(ctx, m); err != nil {
			return "", err
		}
		for _, rv := range alone {
			if took := m.takenBy(clip(refundRequestID(rv.RefundID), fsm.MaxIDLen)); took > 0 {
				credits += min(max(rv.Credits-took, -1), 1)
			}
		}
		credits = max(credits, 0)
	}
	if credits == 0 {
		return "dispute " + d.ID + " revokes no credits", nil // Amount 0 would mean "all that remains"
	}
	return h.revoke(ctx, fsm.RevokeGrant{GrantID: p.GrantID, Amount: credits,
		Reason: clip("dispute "+d.ID+" of charge "+d.ChargeRef, fsm.MaxReasonLen), RequestID: reqID})
}

// giveBackDispute gives back, for a dispute won, what its revocations took
// (taken, from the purchase's grant and from credits given back before), as
// grant backID made like the purchase's.
func (h *WebhookHandler) giveBackDispute(ctx context.Context, og fsm.Grant, d Dispute, taken int64, backID string) (string, error) {
	if _, exists, err := h.readGrant(backID); err != nil {
		return "", err
	} else if exists {
		return "credits of dispute " + d.ID + " already given back", nil
	}
	if taken <= 0 {
		return "dispute " + d.ID + " won; it revoked nothing, so nothing is given back", nil
	}
	res, err := h.o.Applier.Apply(ctx, giveBackGrant(og, backID, taken))
	if err != nil {
		return "", fmt.Errorf("give back %d credits of dispute %s (grant %s): %w", taken, d.ID, backID, err)
	}
	switch {
	case res.Err != nil && (fsm.CodeOf(res.Err) == fsm.CodeAlreadyExists || fsm.CodeOf(res.Err) == fsm.CodeConflict):
		return "credits of dispute " + d.ID + " already given back", nil
	case res.Err != nil:
		// The purchase's grant expired meanwhile (its credits would have
		// expired too), or the pool cannot take them: final.
		h.log.Warn("credits of a won dispute not given back", "dispute", d.ID, "grant", og.ID, "credits", taken, "err", res.Err)
		return fmt.Sprintf("dispute %s won; %d credits not given back: %v", d.ID, taken, res.Err), nil
	case res.Duplicate:
		return "credits of dispute " + d.ID + " already given back", nil
	}
	return fmt.Sprintf("dispute %s won: %d credits given back as grant %s", d.ID, taken, backID), nil
}

// disputeRevoked reads the pool's ledger from since on for a revocation of
// the dispute (reqID, or one of its steps from given-back credits) of the
// purchase whose grant is og, stopping at the first. The ledger, unlike
// fsm's request ids, never forgets.
func (h *WebhookHandler) disputeRevoked(ctx context.Context, og fsm.Grant, since fsm.Timestamp, reqID string) (bool, error) {
	done := false
	err := h.o.State.View(func(v *fsm.View) error {
		from, err := firstSeqAt(v, since)
		if err != nil {
			return err
		}
		for from != 0 && !done {
			// A long ledger must not outlive the webhook's deadline:
			// Stripe retries, and the retry starts over.
			if err := ctx.Err(); err != nil {
				return err
			}
			es, next, err := v.Ledger(fsm.LedgerFilter{CustomerID: og.CustomerID, CreditTypeID: og.CreditTypeID,
				FromSeq: from, Limit: ledgerPageForRefunds})
			if err != nil {
				return err
			}
			for _, e := range es {
				if e.Kind == fsm.EntryRevoke && e.CauseKind == fsm.CauseRevoke && e.SourceRef == og.SourceRef &&
					e.SourceKind == og.SourceKind && (e.CauseID == reqID || strings.HasPrefix(e.CauseID, reqID+fromSeparator)) {
					done = true
					break
				}
			}
			from = next
		}
		return nil
	})
	if err != nil {
		return false, fmt.Errorf("read the revocation %s in %s/%s: %w", reqID, og.CustomerID, og.CreditTypeID, err)
	}
	return done, nil
}
