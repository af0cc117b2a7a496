package fsm

import "time"

func (a *applier) loadReservation(id string) *Reservation {
	raw := a.tx.Bucket(bResv).Get([]byte(id))
	if raw == nil {
		return nil
	}
	r := &Reservation{}
	d := dec{b: raw}
	r.decode(&d)
	if d.err != nil {
		a.err = d.err
		return nil
	}
	return r
}

func (a *applier) storeReservation(r *Reservation) {
	r.UpdatedAt = a.now
	a.put(a.tx.Bucket(bResv), []byte(r.ID), a.encodeRec(r))
}

func (a *applier) reserve(c Reserve) (*Reservation, bool, error) {
	if err := firstErr(checkID("id", c.ID), checkID("customer_id", c.CustomerID)); err != nil {
		return nil, false, err
	}
	ttl := c.TTL
	if ttl == 0 {
		ttl = DefaultReservationTTL
	}
	if ttl < 0 || ttl > MaxReservationTTL {
		return nil, false, invalid("ttl", "must be between 0 and %s", MaxReservationTTL)
	}
	if ttl < time.Microsecond {
		// Log time counts microseconds: the hold would expire as it is made.
		return nil, false, invalid("ttl", "must be at least 1µs (0 = %s)", DefaultReservationTTL)
	}
	h := a.payloadHash(func(e *enc) { encodeCommandBody(e, c) })
	if _, found, same := a.idemLookup(idemReservation, c.ID, h); found {
		if !same {
			return nil, false, conflict("id", "reservation %s was made with a different payload", c.ID)
		}
		if r := a.loadReservation(c.ID); r != nil {
			return r, true, nil
		}
	}
	if a.loadReservation(c.ID) != nil {
		return nil, false, &Error{Code: CodeAlreadyExists, Field: "id", Msg: "reservation " + c.ID + " exists"}
	}
	cu := a.customer(c.CustomerID)
	if cu == nil {
		return nil, false, notFound("customer_id", "no customer %s", c.CustomerID)
	}
	ctID, credits, verr := a.usageCredits(c.FeatureID, c.Quantity, c.CreditTypeID, c.Credits)
	if verr != nil {
		return nil, false, verr
	}
	if credits == 0 {
		field := "credits"
		if c.FeatureID != "" {
			field = "quantity"
		}
		return nil, false, invalid(field, "a reservation must hold some credits")
	}
	p := a.pool(c.CustomerID, ctID)
	available := a.available(p)
	if available-credits < a.floorOf(cu, ctID) {
		// A refusal is demand, as a denied usage event is (burnEvent): a
		// customer who only reserves, left below the threshold without a
		// burn, would otherwise wait for a top-up no Reserve of theirs
		// starts. Only the top-up is recorded: the Reserve has changed
		// nothing, and changes nothing.
		if a.rules >= rulesRefusalTopsUp {
			a.maybeAutoTopUp(cu, p, available, 0)
		}
		return nil, false, insufficient(available, credits)
	}
	reserved, err := addChecked(p.Reserved, credits)
	if err != nil {
		field := "credits"
		if c.FeatureID != "" {
			field = "quantity"
		}
		return nil, false, invalid(field, "the pool's reserved credits would overflow")
	}
	r := &Reservation{ID: c.ID, CustomerID: c.CustomerID, CreditTypeID: ctID, FeatureID: c.FeatureID, Amount: credits,
		Status: ReservationHeld, ExpiresAt: a.now + Timestamp(ttl.Microseconds()), CreatedAt: a.now}
	p.Reserved = reserved
	a.touchPool(p)
	a.storeReservation(r)
	a.put(a.tx.Bucket(bResvExp), timeIDKey(r.ExpiresAt, r.ID), nil)
	a.idemStore(idemReservation, c.ID, h, nil)
	// A hold lowers available as a burn does: a customer holding many
	// reservations at once (an LLM API's) would otherwise be topped up
	// only once a Reserve of theirs had been refused.
	if a.rules >= rulesHoldTopsUp {
		a.maybeAutoTopUp(cu, p, available-credits, 0)
	}
	return r, false, nil
}

// heldReservation loads a reservation for Settle or Release; done is true
// when it was already settled or released, which makes a retry a no-op.
func (a *applier) heldReservation(id string, want ReservationStatus) (r *Reservation, done bool, err error) {
	if e := checkID("reservation_id", id); e != nil {
		return nil, false, e
	}
	r = a.loadReservation(id)
	if r == nil {
		return nil, false, notFound("reservation_id", "no reservation %s", id)
	}
	switch r.Status {
	case ReservationHeld:
		if a.now >= r.ExpiresAt {
			return nil, false, precondition("reservation_id", "reservation %s expired at %s", id, r.ExpiresAt.Time())
		}
		return r, false, nil
	case want:
		return r, true, nil
	}
	return nil, false, precondition("reservation_id", "reservation %s is %s", id, r.Status)
}

func (a *applier) freeHold(r *Reservation) *Pool {
	p := a.pool(r.CustomerID, r.CreditTypeID)
	p.Reserved -= r.Amount
	a.touchPool(p)
	a.del(a.tx.Bucket(bResvExp), timeIDKey(r.ExpiresAt, r.ID))
	return p
}

func (a *applier) settle(c Settle) (*Reservation, bool, error) {
	r, done, err := a.heldReservation(c.ReservationID, ReservationSettled)
	if err != nil {
		return nil, false, err
	}
	credits, field, verr := a.settleCredits(r, c)
	if verr != nil {
		return nil, false, verr
	}
	if done {
		// A retry settles for what the first settle did; a settle for
		// another amount is a different request under the same key.
		if credits != r.SettledAmount {
			scale := a.scaleOf(r.CreditTypeID)
			return nil, false, conflict(field, "reservation %s was settled for %s credits; this settle asks for %s",
				r.ID, FormatUnits(r.SettledAmount, scale), FormatUnits(credits, scale))
		}
		return r, true, nil
	}
	p := a.pool(r.CustomerID, r.CreditTypeID)
	a.poolGrants(p) // loads the live grants burn takes from
	if extra := credits - r.Amount; extra > 0 {
		available := a.available(p) // excludes this hold
		cu := a.customer(r.CustomerID)
		if available-extra < a.floorOf(cu, r.CreditTypeID) {
			// A refused Settle is demand too (a reply longer than its
			// hold); the hold stays and nothing else changes.
			if a.rules >= rulesRefusalTopsUp && cu != nil {
				a.maybeAutoTopUp(cu, p, available, 0)
			}
			return nil, false, insufficient(available, extra)
		}
	}
	a.freeHold(r)
	if credits > 0 {
		a.burn(p, credits, CauseReservation, r.ID, nil)
	}
	r.Status, r.SettledAmount = ReservationSettled, credits
	a.storeReservation(r)
	if cu := a.customer(r.CustomerID); cu != nil && credits > 0 {
		a.maybeAutoTopUp(cu, p, a.available(p), 0)
	}
	return r, false, nil
}

func (a *applier) release(c Release) (*Reservation, bool, error) {
	r, done, err := a.heldReservation(c.ReservationID, ReservationReleased)
	if err != nil || done {
		return r, done, err
	}
	a.freeHold(r)
	r.Status = ReservationReleased
	a.storeReservation(r)
	return r, false, nil
}

// settleCredits is what a Settle burns from reservation r, and the field
// that says so. A quantity is priced at the feature's rate now, so a retry
// after the rate changed can ask for another amount than the first settle
// burned (and is refused as a conflict rather than burning again).
func (a *applier) settleCredits(r *Reservation, c Settle) (int64, string, error) {
	if c.UseCredits {
		if c.Quantity != 0 {
			return 0, "", invalid("quantity", "give either quantity or credits")
		}
		if e := checkAmount("credits", c.Credits, true); e != nil {
			return 0, "", e
		}
		return c.Credits, "credits", nil
	}
	if c.Credits != 0 {
		return 0, "", invalid("credits", "set use_credits to settle in credits")
	}
	if r.FeatureID == "" {
		return 0, "", invalid("quantity", "reservation %s was made in credits; settle in credits", r.ID)
	}
	_, n, verr := a.usageCredits(r.FeatureID, c.Quantity, "", 0)
	if verr != nil {
		return 0, "", verr
	}
	return n, "quantity", nil
}
