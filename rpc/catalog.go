package rpc

import (
	"context"
	"time"

	"connectrpc.com/connect"

	"github.com/creditd/creditd/fsm"
	v1 "github.com/creditd/creditd/gen/creditd/v1"
)

// api implements every creditd.v1 service handler.
type api struct{ s *Server }

func (a *api) CreateCreditType(ctx context.Context, req *connect.Request[v1.CreateCreditTypeRequest]) (*connect.Response[v1.CreateCreditTypeResponse], error) {
	return handle(ctx, a.s, req, func(c *leaderClients) func(context.Context, *connect.Request[v1.CreateCreditTypeRequest]) (*connect.Response[v1.CreateCreditTypeResponse], error) {
		return c.catalog.CreateCreditType
	}, func(ctx context.Context, m *v1.CreateCreditTypeRequest) (*v1.CreateCreditTypeResponse, error) {
		if err := firstError(checkID("id", m.Id), checkText("name", m.Name, fsm.MaxNameLen)); err != nil {
			return nil, err
		}
		if m.Scale > fsm.MaxCreditScale {
			return nil, invalidField("scale", "must be 0 to %d", fsm.MaxCreditScale)
		}
		res, err := a.s.apply(ctx, fsm.CreateCreditType{ID: m.Id, Name: m.Name, Scale: uint8(m.Scale)})
		if err != nil {
			return nil, err
		}
		return &v1.CreateCreditTypeResponse{CreditType: creditTypePB(*res.Value.(*fsm.CreditType))}, nil
	})
}

func (a *api) UpsertFeature(ctx context.Context, req *connect.Request[v1.UpsertFeatureRequest]) (*connect.Response[v1.UpsertFeatureResponse], error) {
	return handle(ctx, a.s, req, func(c *leaderClients) func(context.Context, *connect.Request[v1.UpsertFeatureRequest]) (*connect.Response[v1.UpsertFeatureResponse], error) {
		return c.catalog.UpsertFeature
	}, func(ctx context.Context, m *v1.UpsertFeatureRequest) (*v1.UpsertFeatureResponse, error) {
		if err := firstError(checkID("id", m.Id), checkText("name", m.Name, fsm.MaxNameLen), checkID("credit_type_id", m.CreditTypeId)); err != nil {
			return nil, err
		}
		rate, err := parseDecimal("rate", m.Rate, false)
		if err != nil {
			return nil, err
		}
		res, err := a.s.apply(ctx, fsm.UpsertFeature{ID: m.Id, Name: m.Name, CreditTypeID: m.CreditTypeId, Rate: rate})
		if err != nil {
			return nil, err
		}
		return &v1.UpsertFeatureResponse{Feature: featurePB(*res.Value.(*fsm.Feature))}, nil
	})
}

// autoTopUpFSM converts auto top-up settings; amounts are in the credit
// type of the given scale. prefix names the message in field paths. A nil
// message is the zero settings; the result is never Own, which only a
// customer's settings are (UpsertCustomer sets it).
func autoTopUpFSM(prefix string, a *v1.AutoTopUp, scale uint8) (fsm.AutoTopUp, error) {
	if a == nil {
		return fsm.AutoTopUp{}, nil
	}
	out := fsm.AutoTopUp{Enabled: a.Enabled}
	switch a.Mode {
	case v1.AutoTopUpMode_AUTO_TOP_UP_MODE_UNSPECIFIED, v1.AutoTopUpMode_AUTO_TOP_UP_MODE_FIXED:
		out.Mode = fsm.TopUpFixed
	case v1.AutoTopUpMode_AUTO_TOP_UP_MODE_TO_TARGET:
		out.Mode = fsm.TopUpToTarget
	default:
		return out, invalidField(prefix+"mode", "is not an auto top-up mode")
	}
	var err error
	if out.ThresholdCredits, err = parseAmount(prefix+"threshold", a.Threshold, scale, true, true); err != nil {
		return out, err
	}
	if out.AmountCredits, err = parseAmount(prefix+"amount", a.Amount, scale, true, true); err != nil {
		return out, err
	}
	if out.MonthlyCapMicros, err = parseMoney(prefix+"monthly_cap", a.MonthlyCap); err != nil {
		return out, err
	}
	return out, nil
}

func (a *api) UpsertPlan(ctx context.Context, req *connect.Request[v1.UpsertPlanRequest]) (*connect.Response[v1.UpsertPlanResponse], error) {
	return handle(ctx, a.s, req, func(c *leaderClients) func(context.Context, *connect.Request[v1.UpsertPlanRequest]) (*connect.Response[v1.UpsertPlanResponse], error) {
		return c.catalog.UpsertPlan
	}, func(ctx context.Context, m *v1.UpsertPlanRequest) (*v1.UpsertPlanResponse, error) {
		p := m.Plan
		if p == nil {
			return nil, invalidField("plan", "is required")
		}
		if err := firstError(checkID("plan.id", p.Id), checkText("plan.name", p.Name, fsm.MaxNameLen),
			checkID("plan.credit_type_id", p.CreditTypeId), checkCurrency("plan.currency", p.Currency)); err != nil {
			return nil, err
		}
		var scale uint8
		if err := a.s.preRead(ctx, func(v *fsm.View) (err error) {
			scale, err = newScales(v).of("plan.credit_type_id", p.CreditTypeId)
			return err
		}); err != nil {
			return nil, err
		}
		plan, err := planFSM(p, scale)
		if err != nil {
			return nil, err
		}
		res, err := a.s.apply(ctx, fsm.UpsertPlan{Plan: plan})
		if err != nil {
			return nil, prefixed("plan.", err)
		}
		return &v1.UpsertPlanResponse{Plan: planPB(*res.Value.(*fsm.Plan), scale)}, nil
	})
}

func planFSM(p *v1.Plan, scale uint8) (fsm.Plan, error) {
	out := fsm.Plan{ID: p.Id, Name: p.Name, CreditTypeID: p.CreditTypeId, Currency: p.Currency}
	var err error
	if out.PricePerCredit, err = parseDecimal("plan.price_per_credit", p.PricePerCredit, false); err != nil {
		return out, err
	}
	if out.MinPurchaseCredits, err = parseAmount("plan.min_purchase", p.MinPurchase, scale, true, true); err != nil {
		return out, err
	}
	if out.MaxPurchaseCredits, err = parseAmount("plan.max_purchase", p.MaxPurchase, scale, true, true); err != nil {
		return out, err
	}
	if out.DefaultExpiry, err = parseDuration("plan.default_expiry", p.DefaultExpiry, 100*365*24*time.Hour); err != nil {
		return out, err
	}
	switch p.InvoiceGrant {
	case v1.InvoiceGrantPolicy_INVOICE_GRANT_POLICY_UNSPECIFIED, v1.InvoiceGrantPolicy_INVOICE_GRANT_POLICY_ON_PAYMENT:
		out.InvoiceGrant = fsm.GrantOnPayment
	case v1.InvoiceGrantPolicy_INVOICE_GRANT_POLICY_ON_ISSUE:
		out.InvoiceGrant = fsm.GrantOnIssue
	default:
		return out, invalidField("plan.invoice_grant", "is not an invoice grant policy")
	}
	switch p.Overdraft {
	case v1.OverdraftPolicy_OVERDRAFT_POLICY_UNSPECIFIED, v1.OverdraftPolicy_OVERDRAFT_POLICY_DENY:
		out.Overdraft = fsm.OverdraftDeny
	case v1.OverdraftPolicy_OVERDRAFT_POLICY_ALLOW:
		out.Overdraft = fsm.OverdraftAllow
	default:
		return out, invalidField("plan.overdraft", "is not an overdraft policy")
	}
	if out.OverdraftLimit, err = parseAmount("plan.overdraft_limit", p.OverdraftLimit, scale, true, true); err != nil {
		return out, err
	}
	if out.AutoTopUp, err = autoTopUpFSM("plan.auto_top_up.", p.AutoTopUp, scale); err != nil {
		return out, err
	}
	return out, nil
}

func (a *api) UpsertCustomer(ctx context.Context, req *connect.Request[v1.UpsertCustomerRequest]) (*connect.Response[v1.UpsertCustomerResponse], error) {
	return handle(ctx, a.s, req, func(c *leaderClients) func(context.Context, *connect.Request[v1.UpsertCustomerRequest]) (*connect.Response[v1.UpsertCustomerResponse], error) {
		return c.catalog.UpsertCustomer
	}, func(ctx context.Context, m *v1.UpsertCustomerRequest) (*v1.UpsertCustomerResponse, error) {
		if err := firstError(checkID("id", m.Id), checkText("name", m.Name, fsm.MaxNameLen),
			checkText("billing_ref", m.BillingRef, fsm.MaxIDLen*2), checkOptionalID("plan_id", m.PlanId)); err != nil {
			return nil, err
		}
		var scale uint8
		if m.PlanId != "" {
			if err := a.s.preRead(ctx, func(v *fsm.View) error {
				p, err := v.Plan(m.PlanId)
				if fsm.CodeOf(err) == fsm.CodeNotFound {
					return notFoundField("plan_id", "no plan %s", m.PlanId)
				}
				if err != nil {
					return err
				}
				scale, err = newScales(v).of("plan_id", p.CreditTypeID)
				return err
			}); err != nil {
				return nil, err
			}
		} else if m.AutoTopUp != nil {
			return nil, invalidField("auto_top_up", "needs plan_id: its amounts are in the plan's credit type")
		}
		atu, err := autoTopUpFSM("auto_top_up.", m.AutoTopUp, scale)
		if err != nil {
			return nil, err
		}
		// A present auto_top_up is the customer's own settings, even
		// {"enabled": false} and nothing else: the customer has turned
		// auto top-up off whatever its plan says. Absent, the customer
		// follows its plan's.
		atu.Own = m.AutoTopUp != nil
		res, err := a.s.apply(ctx, fsm.UpsertCustomer{ID: m.Id, Name: m.Name, BillingRef: m.BillingRef, PlanID: m.PlanId,
			AutoTopUp: atu, ResumeAutoTopUp: m.ResumeAutoTopUp})
		if err != nil {
			return nil, err
		}
		return &v1.UpsertCustomerResponse{Customer: customerPB(*res.Value.(*fsm.Customer), scale)}, nil
	})
}

func (a *api) GetCustomer(ctx context.Context, req *connect.Request[v1.GetCustomerRequest]) (*connect.Response[v1.GetCustomerResponse], error) {
	return handle(ctx, a.s, req, func(c *leaderClients) func(context.Context, *connect.Request[v1.GetCustomerRequest]) (*connect.Response[v1.GetCustomerResponse], error) {
		return c.catalog.GetCustomer
	}, func(ctx context.Context, m *v1.GetCustomerRequest) (*v1.GetCustomerResponse, error) {
		if err := checkID("id", m.Id); err != nil {
			return nil, err
		}
		stale, err := checkConsistency("consistency", m.Consistency)
		if err != nil {
			return nil, err
		}
		out := &v1.GetCustomerResponse{}
		err = a.s.read(ctx, stale, func(v *fsm.View) error {
			c, err := v.Customer(m.Id)
			if err != nil {
				if fsm.CodeOf(err) == fsm.CodeNotFound {
					return notFoundField("id", "no customer %s", m.Id)
				}
				return err
			}
			out.Customer = customerPB(c, customerScale(v, newScales(v), c))
			out.AppliedIndex = v.AppliedIndex()
			return nil
		})
		return out, err
	})
}

func (a *api) ListFeatures(ctx context.Context, req *connect.Request[v1.ListFeaturesRequest]) (*connect.Response[v1.ListFeaturesResponse], error) {
	return handle(ctx, a.s, req, func(c *leaderClients) func(context.Context, *connect.Request[v1.ListFeaturesRequest]) (*connect.Response[v1.ListFeaturesResponse], error) {
		return c.catalog.ListFeatures
	}, func(ctx context.Context, m *v1.ListFeaturesRequest) (*v1.ListFeaturesResponse, error) {
		stale, err := checkConsistency("consistency", m.Consistency)
		if err != nil {
			return nil, err
		}
		limit := maxPageSize // a catalog is small: one page usually holds it whole
		if m.PageSize != 0 {
			if limit, err = pageSize("page_size", m.PageSize); err != nil {
				return nil, err
			}
		}
		after, err := parseFeaturePageToken("page_token", m.PageToken)
		if err != nil {
			return nil, err
		}
		out := &v1.ListFeaturesResponse{}
		err = a.s.read(ctx, stale, func(v *fsm.View) error {
			fs, next, err := v.ListFeatures(after, limit)
			if err != nil {
				return err
			}
			out.Features = make([]*v1.Feature, len(fs))
			for i, f := range fs {
				out.Features[i] = featurePB(f)
			}
			out.NextPageToken = featurePageToken(next)
			out.AppliedIndex = v.AppliedIndex()
			return nil
		})
		return out, err
	})
}

// firstError returns the first non-nil error, so checks read as a list.
func firstError(errs ...error) error {
	for _, e := range errs {
		if e != nil {
			return e
		}
	}
	return nil
}
