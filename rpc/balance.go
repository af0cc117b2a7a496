package rpc

import (
	"context"

	"connectrpc.com/connect"

	"github.com/creditd/creditd/fsm"
	v1 "github.com/creditd/creditd/gen/creditd/v1"
)

func (a *api) GetBalance(ctx context.Context, req *connect.Request[v1.GetBalanceRequest]) (*connect.Response[v1.GetBalanceResponse], error) {
	return handle(ctx, a.s, req, func(c *leaderClients) func(context.Context, *connect.Request[v1.GetBalanceRequest]) (*connect.Response[v1.GetBalanceResponse], error) {
		return c.balance.GetBalance
	}, func(ctx context.Context, m *v1.GetBalanceRequest) (*v1.GetBalanceResponse, error) {
		if err := firstError(checkID("customer_id", m.CustomerId), checkID("credit_type_id", m.CreditTypeId)); err != nil {
			return nil, err
		}
		stale, err := checkConsistency("consistency", m.Consistency)
		if err != nil {
			return nil, err
		}
		out := &v1.GetBalanceResponse{}
		err = a.s.read(ctx, stale, func(v *fsm.View) error {
			scale, err := newScales(v).of("credit_type_id", m.CreditTypeId)
			if err != nil {
				return err
			}
			b, err := v.Balance(m.CustomerId, m.CreditTypeId)
			if err != nil {
				return err
			}
			out.CustomerId = b.CustomerID
			out.CreditTypeId = b.CreditTypeID
			out.Balance = units(b.Balance, scale)
			out.Available = units(b.Available, scale)
			out.Reserved = units(b.Reserved, scale)
			out.Overdraft = units(b.Overdraft, scale)
			listed := b.Grants
			if len(listed) > maxBalanceGrants {
				listed, out.GrantsTruncated = listed[:maxBalanceGrants], true
			}
			out.Grants = make([]*v1.Grant, len(listed))
			for i, g := range listed {
				out.Grants[i] = grantPB(g, scale)
			}
			out.AsOf = ts(b.AsOf)
			out.AppliedIndex = v.AppliedIndex()
			return nil
		})
		return out, err
	})
}
