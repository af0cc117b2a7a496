package rpc

import (
	"context"
	"errors"
	"fmt"

	"connectrpc.com/connect"

	"github.com/creditd/creditd/fsm"
	v1 "github.com/creditd/creditd/gen/creditd/v1"
	"github.com/creditd/creditd/node"
)

// usageTarget validates the "feature and quantity, or credit type and
// credits" pair shared by usage events, checks and reservations. It
// returns the credit type when given directly (credits still as text).
func usageTarget(prefix, featureID string, quantity int64, creditTypeID, credits string) error {
	switch {
	case featureID != "" && creditTypeID != "":
		return invalidField(prefix+"credit_type_id", "give either feature_id and quantity, or credit_type_id and credits, not both")
	case featureID != "":
		if credits != "" {
			return invalidField(prefix+"credits", "must be empty with feature_id (give quantity)")
		}
		return firstError(checkID(prefix+"feature_id", featureID), checkQuantity(prefix+"quantity", quantity))
	case creditTypeID != "":
		if quantity != 0 {
			return invalidField(prefix+"quantity", "must be 0 with credit_type_id (give credits)")
		}
		if credits == "" {
			return invalidField(prefix+"credits", "is required with credit_type_id")
		}
		return checkID(prefix+"credit_type_id", creditTypeID)
	}
	return invalidField(prefix+"feature_id", "is required (or credit_type_id and credits)")
}

// checkEvent validates one event's fields, named without their
// events[i]. prefix.
func checkEvent(e *v1.UsageEvent) (fsm.Timestamp, error) {
	if err := firstError(checkID("id", e.Id), checkID("customer_id", e.CustomerId),
		usageTarget("", e.FeatureId, e.Quantity, e.CreditTypeId, e.Credits)); err != nil {
		return 0, err
	}
	return parseTime("event_time", e.EventTime)
}

func (a *api) ReportUsage(ctx context.Context, req *connect.Request[v1.ReportUsageRequest]) (*connect.Response[v1.ReportUsageResponse], error) {
	return handle(ctx, a.s, req, func(c *leaderClients) func(context.Context, *connect.Request[v1.ReportUsageRequest]) (*connect.Response[v1.ReportUsageResponse], error) {
		return c.usage.ReportUsage
	}, a.reportUsage)
}

func (a *api) reportUsage(ctx context.Context, m *v1.ReportUsageRequest) (*v1.ReportUsageResponse, error) {
	n := len(m.Events)
	if n == 0 {
		return nil, invalidField("events", "must not be empty")
	}
	if n > fsm.MaxEventsPerBatch {
		return nil, invalidField("events", "has %d events; at most %d per batch", n, fsm.MaxEventsPerBatch)
	}
	events := make([]fsm.UsageEvent, n)
	direct := false // any event in credits, whose amount needs a scale
	for i, e := range m.Events {
		if e == nil {
			return nil, invalidField(fmt.Sprintf("events[%d]", i), "is null")
		}
		// Field paths are built only for an error: a batch of 10,000 valid
		// events costs no formatting.
		t, err := checkEvent(e)
		if err != nil {
			return nil, prefixed(fmt.Sprintf("events[%d].", i), err)
		}
		events[i] = fsm.UsageEvent{ID: e.Id, CustomerID: e.CustomerId, FeatureID: e.FeatureId, Quantity: e.Quantity,
			CreditTypeID: e.CreditTypeId, EventTime: t}
		direct = direct || e.CreditTypeId != ""
	}
	if direct {
		err := a.s.preReadConfirming(ctx, func(v *fsm.View, confirmed bool) error {
			sc := newScales(v)
			for i, e := range m.Events {
				if e.CreditTypeId == "" {
					continue
				}
				scale, err := sc.of("credit_type_id", e.CreditTypeId)
				if fsm.CodeOf(err) == fsm.CodeNotFound {
					// Unknown here: the state machine rejects the event
					// (a result, not an error), once the leader, caught
					// up, agrees. Until then the event would be burned
					// as 0 credits if the credit type exists after all.
					if !confirmed {
						return err
					}
					// But a malformed amount fails the whole batch
					// whatever its credit type: without a scale, it must
					// read as an amount in some scale.
					if err := checkAmountText("credits", e.Credits); err != nil {
						return prefixed(fmt.Sprintf("events[%d].", i), err)
					}
					continue
				}
				if err != nil {
					return err
				}
				if events[i].Credits, err = parseAmount("credits", e.Credits, scale, false, true); err != nil {
					return prefixed(fmt.Sprintf("events[%d].", i), err)
				}
			}
			return nil
		})
		if err != nil {
			return nil, err
		}
	}
	res, err := a.s.apply(ctx, fsm.BurnUsage{Events: events})
	if big := (*node.CommandTooLargeError)(nil); errors.As(err, &big) {
		return nil, invalidField("events", "%d events encode to %d bytes, more than the %d bytes a log entry holds; send fewer per call", n, big.Size, big.Limit)
	}
	if err != nil {
		return nil, err
	}
	results, ok := res.Value.([]fsm.EventResult)
	if !ok || len(results) != n {
		return nil, fmt.Errorf("burn usage: %d results for %d events", len(results), n)
	}
	f, err := a.s.state()
	if err != nil {
		return nil, err
	}
	scaleOf, err := resultScales(f, results)
	if err != nil {
		return nil, err
	}
	return &v1.ReportUsageResponse{Results: eventResultsPB(results, scaleOf)}, nil
}

// resultScales reads the scales of the credit types that results name.
// Credit types never change once created, so the last committed state has
// them without waiting for the commit of the entry that produced results
// (the leader answers before that commit, fsm.FSM.ApplyAnswering); only one
// created in that same entry is missing there, and then the read waits for
// the commit.
func resultScales(f *fsm.FSM, results []fsm.EventResult) (func(creditTypeID string) uint8, error) {
	scales := make(map[string]uint8, 2)
	missing := false
	read := func(v *fsm.View) error {
		missing = false
		for i := range results {
			id := results[i].CreditTypeID
			if id == "" {
				continue
			}
			if _, ok := scales[id]; ok {
				continue
			}
			ct, err := v.CreditType(id)
			if fsm.CodeOf(err) == fsm.CodeNotFound {
				missing = true
				continue
			}
			if err != nil {
				return fmt.Errorf("read the scale of credit type %s: %w", id, err)
			}
			scales[id] = ct.Scale
		}
		return nil
	}
	if err := f.ViewCommitted(read); err != nil {
		return nil, err
	}
	if missing {
		if err := f.View(read); err != nil {
			return nil, err
		}
	}
	return func(id string) uint8 { return scales[id] }, nil
}

func (a *api) Check(ctx context.Context, req *connect.Request[v1.CheckRequest]) (*connect.Response[v1.CheckResponse], error) {
	return handle(ctx, a.s, req, func(c *leaderClients) func(context.Context, *connect.Request[v1.CheckRequest]) (*connect.Response[v1.CheckResponse], error) {
		return c.usage.Check
	}, func(ctx context.Context, m *v1.CheckRequest) (*v1.CheckResponse, error) {
		if err := firstError(checkID("customer_id", m.CustomerId), usageTarget("", m.FeatureId, m.Quantity, m.CreditTypeId, m.Credits)); err != nil {
			return nil, err
		}
		stale, err := checkConsistency("consistency", m.Consistency)
		if err != nil {
			return nil, err
		}
		out := &v1.CheckResponse{}
		err = a.s.read(ctx, stale, func(v *fsm.View) error {
			sc := newScales(v)
			var credits int64
			if m.CreditTypeId != "" {
				scale, err := sc.of("credit_type_id", m.CreditTypeId)
				if err != nil {
					return err
				}
				if credits, err = parseAmount("credits", m.Credits, scale, false, true); err != nil {
					return err
				}
			}
			r, err := v.Check(m.CustomerId, m.FeatureId, m.Quantity, m.CreditTypeId, credits)
			if err != nil {
				return err
			}
			scale := sc.known(r.CreditTypeID)
			out.Allowed = r.Allowed
			out.CreditTypeId = r.CreditTypeID
			out.Credits = units(r.Credits, scale)
			out.Available = units(r.Available, scale)
			out.Floor = units(r.Floor, scale)
			out.Reason = r.Reason
			out.AppliedIndex = v.AppliedIndex()
			return nil
		})
		return out, err
	})
}

func (a *api) Reserve(ctx context.Context, req *connect.Request[v1.ReserveRequest]) (*connect.Response[v1.ReserveResponse], error) {
	return handle(ctx, a.s, req, func(c *leaderClients) func(context.Context, *connect.Request[v1.ReserveRequest]) (*connect.Response[v1.ReserveResponse], error) {
		return c.usage.Reserve
	}, func(ctx context.Context, m *v1.ReserveRequest) (*v1.ReserveResponse, error) {
		if err := firstError(checkID("id", m.Id), checkID("customer_id", m.CustomerId),
			usageTarget("", m.FeatureId, m.Quantity, m.CreditTypeId, m.Credits)); err != nil {
			return nil, err
		}
		ttl, err := parseDuration("ttl", m.Ttl, fsm.MaxReservationTTL)
		if err != nil {
			return nil, err
		}
		cmd := fsm.Reserve{ID: m.Id, CustomerID: m.CustomerId, FeatureID: m.FeatureId, Quantity: m.Quantity,
			CreditTypeID: m.CreditTypeId, TTL: ttl}
		var ctID string
		var scale uint8
		err = a.s.preRead(ctx, func(v *fsm.View) error {
			ctID = m.CreditTypeId
			if m.FeatureId != "" {
				f, err := v.Feature(m.FeatureId)
				if err != nil {
					if fsm.CodeOf(err) == fsm.CodeNotFound {
						return notFoundField("feature_id", "no feature %s", m.FeatureId)
					}
					return err
				}
				ctID = f.CreditTypeID
			}
			var err error
			if scale, err = newScales(v).of("credit_type_id", ctID); err != nil {
				return err
			}
			if m.CreditTypeId != "" {
				cmd.Credits, err = parseAmount("credits", m.Credits, scale, false, true)
			}
			return err
		})
		if err != nil {
			return nil, err
		}
		res, err := a.s.apply(ctx, cmd)
		if err != nil {
			return nil, inCredits(err, ctID, scale)
		}
		return &v1.ReserveResponse{Reservation: reservationPB(*res.Value.(*fsm.Reservation), scale), Duplicate: res.Duplicate}, nil
	})
}

// reservationScale reads a reservation's credit type and its scale.
func (a *api) reservationScale(ctx context.Context, id string) (ctID string, scale uint8, err error) {
	err = a.s.preRead(ctx, func(v *fsm.View) error {
		r, err := v.Reservation(id)
		if err != nil {
			if fsm.CodeOf(err) == fsm.CodeNotFound {
				return notFoundField("reservation_id", "no reservation %s", id)
			}
			return err
		}
		ctID = r.CreditTypeID
		scale, err = newScales(v).of("reservation_id", ctID)
		return err
	})
	return ctID, scale, err
}

func (a *api) Settle(ctx context.Context, req *connect.Request[v1.SettleRequest]) (*connect.Response[v1.SettleResponse], error) {
	return handle(ctx, a.s, req, func(c *leaderClients) func(context.Context, *connect.Request[v1.SettleRequest]) (*connect.Response[v1.SettleResponse], error) {
		return c.usage.Settle
	}, func(ctx context.Context, m *v1.SettleRequest) (*v1.SettleResponse, error) {
		if err := checkID("reservation_id", m.ReservationId); err != nil {
			return nil, err
		}
		cmd := fsm.Settle{ReservationID: m.ReservationId}
		switch act := m.Actual.(type) {
		case *v1.SettleRequest_Quantity:
			if err := checkQuantity("quantity", act.Quantity); err != nil {
				return nil, err
			}
			cmd.Quantity = act.Quantity
		case *v1.SettleRequest_Credits:
			cmd.UseCredits = true
		default:
			return nil, invalidField("quantity", "is required (or credits)")
		}
		ctID, scale, err := a.reservationScale(ctx, m.ReservationId)
		if err != nil {
			return nil, err
		}
		if cmd.UseCredits {
			if cmd.Credits, err = parseAmount("credits", m.GetCredits(), scale, false, true); err != nil {
				return nil, err
			}
		}
		res, err := a.s.apply(ctx, cmd)
		if err != nil {
			return nil, inCredits(err, ctID, scale)
		}
		return &v1.SettleResponse{Reservation: reservationPB(*res.Value.(*fsm.Reservation), scale)}, nil
	})
}

func (a *api) Release(ctx context.Context, req *connect.Request[v1.ReleaseRequest]) (*connect.Response[v1.ReleaseResponse], error) {
	return handle(ctx, a.s, req, func(c *leaderClients) func(context.Context, *connect.Request[v1.ReleaseRequest]) (*connect.Response[v1.ReleaseResponse], error) {
		return c.usage.Release
	}, func(ctx context.Context, m *v1.ReleaseRequest) (*v1.ReleaseResponse, error) {
		if err := checkID("reservation_id", m.ReservationId); err != nil {
			return nil, err
		}
		_, scale, err := a.reservationScale(ctx, m.ReservationId)
		if err != nil {
			return nil, err
		}
		res, err := a.s.apply(ctx, fsm.Release{ReservationID: m.ReservationId})
		if err != nil {
			return nil, err
		}
		return &v1.ReleaseResponse{Reservation: reservationPB(*res.Value.(*fsm.Reservation), scale)}, nil
	})
}
