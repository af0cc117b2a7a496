package rpc

import (
	"context"
	"errors"
	"fmt"

	"connectrpc.com/connect"

	"github.com/creditd/creditd/fsm"
	v1 "github.com/creditd/creditd/gen/creditd/v1"
)

func (a *api) CreateGrant(ctx context.Context, req *connect.Request[v1.CreateGrantRequest]) (*connect.Response[v1.CreateGrantResponse], error) {
	return handle(ctx, a.s, req, func(c *leaderClients) func(context.Context, *connect.Request[v1.CreateGrantRequest]) (*connect.Response[v1.CreateGrantResponse], error) {
		return c.grant.CreateGrant
	}, a.createGrant)
}

func (a *api) createGrant(ctx context.Context, m *v1.CreateGrantRequest) (*v1.CreateGrantResponse, error) {
	if err := firstError(checkID("id", m.Id), checkID("customer_id", m.CustomerId), checkID("credit_type_id", m.CreditTypeId),
		checkText("source_ref", m.SourceRef, fsm.MaxIDLen*2)); err != nil {
		return nil, err
	}
	cmd := fsm.CreateGrant{ID: m.Id, CustomerID: m.CustomerId, CreditTypeID: m.CreditTypeId, Priority: m.Priority, SourceRef: m.SourceRef}
	switch m.Category {
	case v1.GrantCategory_GRANT_CATEGORY_PAID:
		cmd.Category = fsm.Paid
		if err := checkCurrency("currency", m.Currency); err != nil {
			return nil, err
		}
		cmd.Currency = m.Currency
	case v1.GrantCategory_GRANT_CATEGORY_PROMOTIONAL:
		cmd.Category = fsm.Promotional
		if m.Currency != "" {
			return nil, invalidField("currency", "must be empty for a promotional grant")
		}
	default:
		return nil, invalidField("category", "must be GRANT_CATEGORY_PAID or GRANT_CATEGORY_PROMOTIONAL")
	}
	var err error
	if cmd.CostBasis, err = parseDecimal("cost_basis", m.CostBasis, true); err != nil {
		return nil, err
	}
	switch {
	case cmd.Category == fsm.Paid && cmd.CostBasis.IsZero():
		return nil, invalidField("cost_basis", "is required for a paid grant (the price per credit)")
	case cmd.Category == fsm.Promotional && !cmd.CostBasis.IsZero():
		return nil, invalidField("cost_basis", "must be empty or 0 for a promotional grant")
	}
	if m.Priority > fsm.MaxGrantPriority {
		return nil, invalidField("priority", "must be 0 to %d", fsm.MaxGrantPriority)
	}
	if cmd.EffectiveAt, err = parseTime("effective_at", m.EffectiveAt); err != nil {
		return nil, err
	}
	if cmd.ExpiresAt, err = parseTime("expires_at", m.ExpiresAt); err != nil {
		return nil, err
	}
	if cmd.EffectiveAt != 0 && cmd.ExpiresAt != 0 && cmd.ExpiresAt <= cmd.EffectiveAt {
		return nil, invalidField("expires_at", "must be after effective_at")
	}
	if cmd.SourceKind, err = sourceKindFSM("source_kind", m.SourceKind); err != nil {
		return nil, err
	}
	var scale uint8
	if err := a.s.preRead(ctx, func(v *fsm.View) (err error) {
		scale, err = newScales(v).of("credit_type_id", m.CreditTypeId)
		return err
	}); err != nil {
		return nil, err
	}
	if cmd.Amount, err = parseAmount("amount", m.Amount, scale, false, false); err != nil {
		return nil, err
	}
	res, err := a.s.apply(ctx, cmd)
	if err != nil {
		return nil, err
	}
	return &v1.CreateGrantResponse{Grant: grantPB(*res.Value.(*fsm.Grant), scale), Duplicate: res.Duplicate}, nil
}

func (a *api) RevokeGrant(ctx context.Context, req *connect.Request[v1.RevokeGrantRequest]) (*connect.Response[v1.RevokeGrantResponse], error) {
	return handle(ctx, a.s, req, func(c *leaderClients) func(context.Context, *connect.Request[v1.RevokeGrantRequest]) (*connect.Response[v1.RevokeGrantResponse], error) {
		return c.grant.RevokeGrant
	}, func(ctx context.Context, m *v1.RevokeGrantRequest) (*v1.RevokeGrantResponse, error) {
		if err := firstError(checkGrantID("grant_id", m.GrantId), checkReason("reason", m.Reason),
			checkOptionalID("request_id", m.RequestId)); err != nil {
			return nil, err
		}
		var ctID string
		var scale uint8
		err := a.s.preRead(ctx, func(v *fsm.View) error {
			g, err := v.Grant(m.GrantId)
			if err != nil {
				if fsm.CodeOf(err) == fsm.CodeNotFound {
					return notFoundField("grant_id", "no grant %s", m.GrantId)
				}
				return err
			}
			ctID = g.CreditTypeID
			scale, err = newScales(v).of("grant_id", ctID)
			return err
		})
		if err != nil {
			return nil, err
		}
		amount, err := parseAmount("amount", m.Amount, scale, true, false)
		if err != nil {
			return nil, err
		}
		res, err := a.s.apply(ctx, fsm.RevokeGrant{GrantID: m.GrantId, Amount: amount, Reason: m.Reason, RequestID: m.RequestId})
		if err != nil {
			return nil, inCredits(err, ctID, scale)
		}
		return &v1.RevokeGrantResponse{Grant: grantPB(*res.Value.(*fsm.Grant), scale), Duplicate: res.Duplicate}, nil
	})
}

func (a *api) AdjustGrant(ctx context.Context, req *connect.Request[v1.AdjustGrantRequest]) (*connect.Response[v1.AdjustGrantResponse], error) {
	return handle(ctx, a.s, req, func(c *leaderClients) func(context.Context, *connect.Request[v1.AdjustGrantRequest]) (*connect.Response[v1.AdjustGrantResponse], error) {
		return c.grant.AdjustGrant
	}, a.adjustGrant)
}

func (a *api) adjustGrant(ctx context.Context, m *v1.AdjustGrantRequest) (*v1.AdjustGrantResponse, error) {
	if err := firstError(checkID("id", m.Id), checkGrantID("grant_id", m.GrantId), checkReason("reason", m.Reason)); err != nil {
		return nil, err
	}
	if m.Reason == "" {
		return nil, invalidField("reason", "is required: it is recorded in the ledger with the adjustment")
	}
	var scale uint8
	err := a.s.preRead(ctx, func(v *fsm.View) error {
		g, err := v.Grant(m.GrantId)
		if err != nil {
			if fsm.CodeOf(err) == fsm.CodeNotFound {
				return notFoundField("grant_id", "no grant %s", m.GrantId)
			}
			return err
		}
		scale, err = newScales(v).of("grant_id", g.CreditTypeID)
		return err
	})
	if err != nil {
		return nil, err
	}
	amount, err := parseSignedAmount("amount", m.Amount, scale)
	if err != nil {
		return nil, err
	}
	res, err := a.s.apply(ctx, fsm.Adjust{ID: m.Id, GrantID: m.GrantId, Amount: amount, Reason: m.Reason})
	if err != nil {
		return nil, a.inScale(err, m.GrantId, amount, scale)
	}
	return &v1.AdjustGrantResponse{Grant: grantPB(*res.Value.(*fsm.Grant), scale), Duplicate: res.Duplicate}, nil
}

// inScale rewrites the state machine's refusal to take a grant below zero,
// whose message counts raw units, in the credit type's scale. The
// remainder is read after the refusal, on the leader that refused, so it
// is the one the refusal saw or a later one.
func (a *api) inScale(err error, grantID string, amount int64, scale uint8) error {
	var fe *fsm.Error
	if !errors.As(err, &fe) || fe.Code != fsm.CodeFailedPrecondition || fe.Field != "amount" {
		return err
	}
	f, serr := a.s.state()
	if serr != nil {
		return err
	}
	var remaining int64
	if f.View(func(v *fsm.View) error {
		g, err := v.Grant(grantID)
		remaining = g.Remaining
		return err
	}) != nil {
		return err
	}
	return preconditionField("amount", "grant %s has %s remaining; cannot remove %s",
		grantID, units(remaining, scale), units(-amount, scale))
}

func (a *api) ListGrants(ctx context.Context, req *connect.Request[v1.ListGrantsRequest]) (*connect.Response[v1.ListGrantsResponse], error) {
	return handle(ctx, a.s, req, func(c *leaderClients) func(context.Context, *connect.Request[v1.ListGrantsRequest]) (*connect.Response[v1.ListGrantsResponse], error) {
		return c.grant.ListGrants
	}, func(ctx context.Context, m *v1.ListGrantsRequest) (*v1.ListGrantsResponse, error) {
		if err := firstError(checkOptionalID("customer_id", m.CustomerId), checkOptionalID("credit_type_id", m.CreditTypeId)); err != nil {
			return nil, err
		}
		if len(m.Statuses) > 5 {
			return nil, invalidField("statuses", "lists more than the 5 statuses there are")
		}
		f := fsm.GrantFilter{CustomerID: m.CustomerId, CreditTypeID: m.CreditTypeId}
		for i, st := range m.Statuses {
			s, err := grantStatusFSM(fmt.Sprintf("statuses[%d]", i), st)
			if err != nil {
				return nil, err
			}
			f.Status = append(f.Status, s)
		}
		var err error
		if f.Limit, err = pageSize("page_size", m.PageSize); err != nil {
			return nil, err
		}
		if f.After, err = parseGrantPageToken("page_token", m.PageToken); err != nil {
			return nil, err
		}
		stale, err := checkConsistency("consistency", m.Consistency)
		if err != nil {
			return nil, err
		}
		out := &v1.ListGrantsResponse{}
		err = a.s.read(ctx, stale, func(v *fsm.View) error {
			gs, next, err := v.ListGrants(f)
			if err != nil {
				return err
			}
			sc := newScales(v)
			out.Grants = make([]*v1.Grant, len(gs))
			for i, g := range gs {
				out.Grants[i] = grantPB(g, sc.known(g.CreditTypeID))
			}
			out.NextPageToken = grantPageToken(next)
			out.AppliedIndex = v.AppliedIndex()
			return nil
		})
		return out, err
	})
}
