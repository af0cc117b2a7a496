package rpc

import (
	"bytes"
	"context"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"io"
	"math"
	"net/http"
	"strings"
	"testing"
	"time"

	"connectrpc.com/connect"
	"google.golang.org/protobuf/encoding/protojson"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/durationpb"
	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/creditd/creditd/fsm"
	v1 "github.com/creditd/creditd/gen/creditd/v1"
)

// The hostile tests send what a buggy or malicious client would: every
// write method with missing, oversized, malformed, overflowing and
// contradictory input. Each must fail with the documented code and name
// the field at fault, and leave the state exactly as it was.

// maxUnits is fsm.MaxAmount written in scale 2 (ai-credits), and one unit
// more.
var (
	maxUnitsText  = fsm.FormatUnits(fsm.MaxAmount, 2)
	overUnitsText = fsm.FormatUnits(fsm.MaxAmount+1, 2)
)

// hostileCase is one request that must fail with code, naming field
// (field "" = the code is checked alone: Connect's own refusals, before
// the request reaches creditd, carry no field).
type hostileCase struct {
	name  string
	send  func(ctx context.Context) error
	code  connect.Code
	field string
}

// rawPost sends body to procedure with the Connect protocol and returns
// the error the answer carries (nil for a 200). It is for bytes a Go
// client refuses to marshal (invalid UTF-8) and for bodies built by hand.
func rawPost(ctx context.Context, url, procedure, contentType string, body []byte, header http.Header) error {
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, url+procedure, bytes.NewReader(body))
	if err != nil {
		return err
	}
	req.Header.Set("Content-Type", contentType)
	for k, vs := range header {
		for _, v := range vs {
			req.Header.Add(k, v)
		}
	}
	return rawDo(h2c(), req)
}

// rawDo sends req and returns the error its Connect unary answer carries
// (nil for a 200).
func rawDo(hc *http.Client, req *http.Request) error {
	res, err := hc.Do(req)
	if err != nil {
		return err
	}
	defer res.Body.Close()
	b, err := io.ReadAll(io.LimitReader(res.Body, 1<<20))
	if err != nil {
		return err
	}
	if res.StatusCode == http.StatusOK {
		return nil
	}
	// A Connect unary error: {"code": "invalid_argument", "message": ...,
	// "details": [...]}. Only the code, message and FieldViolation matter
	// here.
	var wire struct {
		Code    string `json:"code"`
		Message string `json:"message"`
		Details []struct {
			Type  string `json:"type"`
			Value string `json:"value"`
		} `json:"details"`
	}
	if err := json.Unmarshal(b, &wire); err != nil {
		return fmt.Errorf("HTTP %d, body %q: %w", res.StatusCode, b, err)
	}
	var code connect.Code
	if err := code.UnmarshalText([]byte(wire.Code)); err != nil {
		return fmt.Errorf("HTTP %d, code %q: %w", res.StatusCode, wire.Code, err)
	}
	ce := connect.NewWireError(code, fmt.Errorf("%s", wire.Message))
	for _, d := range wire.Details {
		if d.Type != "creditd.v1.FieldViolation" {
			continue
		}
		raw, err := decodeBase64Loose(d.Value)
		if err != nil {
			return err
		}
		fv := &v1.FieldViolation{}
		if err := proto.Unmarshal(raw, fv); err != nil {
			return err
		}
		if det, err := connect.NewErrorDetail(fv); err == nil {
			ce.AddDetail(det)
		}
	}
	return ce
}

// decodeBase64Loose decodes a Connect error detail's value, which may come
// padded or not.
func decodeBase64Loose(s string) ([]byte, error) {
	return base64.RawStdEncoding.DecodeString(strings.TrimRight(s, "="))
}

// withBadUTF8 marshals m, whose string fields hold the marker "@@@@"
// where invalid UTF-8 should go, and swaps the marker for the same number
// of bytes that are not UTF-8 (lengths in the wire format stay right).
func withBadUTF8(t testing.TB, m proto.Message) []byte {
	t.Helper()
	b, err := proto.Marshal(m)
	if err != nil {
		t.Fatalf("marshal %T: %v", m, err)
	}
	if !bytes.Contains(b, []byte("@@@@")) {
		t.Fatalf("%T has no @@@@ marker", m)
	}
	return bytes.ReplaceAll(b, []byte("@@@@"), []byte("\xff\xfe\xc0\x80"))
}

// stateOf reads everything the hostile cases could touch, with the parts
// that change on their own (applied index, read time) cleared, so that two
// reads of an unchanged state are equal.
func stateOf(t testing.TB, c *clients) string {
	t.Helper()
	var sb strings.Builder
	add := func(m proto.Message) {
		b, err := protojson.MarshalOptions{EmitUnpopulated: false}.Marshal(m)
		if err != nil {
			t.Fatalf("marshal %T: %v", m, err)
		}
		sb.Write(b)
		sb.WriteByte('\n')
	}
	for _, cust := range []string{"acme", "rich"} {
		b := call(t, c.balance.GetBalance, &v1.GetBalanceRequest{CustomerId: cust, CreditTypeId: "ai-credits"})
		b.AppliedIndex, b.AsOf = 0, nil
		add(b)
		cu := call(t, c.catalog.GetCustomer, &v1.GetCustomerRequest{Id: cust})
		cu.AppliedIndex = 0
		add(cu)
	}
	gs := call(t, c.grant.ListGrants, &v1.ListGrantsRequest{PageSize: 1000})
	gs.AppliedIndex = 0
	add(gs)
	le := call(t, c.ledger.ListEntries, &v1.ListEntriesRequest{PageSize: 1000})
	le.AppliedIndex = 0
	add(le)
	fs := call(t, c.catalog.ListFeatures, &v1.ListFeaturesRequest{})
	fs.AppliedIndex = 0
	add(fs)
	for _, id := range []string{"p-invoice", "p-card"} {
		p := call(t, c.purchase.GetPurchase, &v1.GetPurchaseRequest{Id: id})
		p.AppliedIndex = 0
		add(p)
	}
	// What the cases would create if they were wrongly accepted.
	for _, id := range []string{"h-cust", "h:cust"} {
		if ce := callErr(t, c.catalog.GetCustomer, &v1.GetCustomerRequest{Id: id}); ce == nil || ce.Code() != connect.CodeNotFound {
			fmt.Fprintf(&sb, "customer %s: %v\n", id, ce)
		}
	}
	if ce := callErr(t, c.purchase.GetPurchase, &v1.GetPurchaseRequest{Id: "h-pur"}); ce == nil || ce.Code() != connect.CodeNotFound {
		fmt.Fprintf(&sb, "purchase h-pur: %v\n", ce)
	}
	if ce := callErr(t, c.usage.Check, &v1.CheckRequest{CustomerId: "acme", CreditTypeId: "h-ct", Credits: "1"}); ce == nil || ce.Code() != connect.CodeNotFound {
		fmt.Fprintf(&sb, "credit type h-ct: %v\n", ce)
	}
	return sb.String()
}

// setupHostile builds the state the cases attack: the shared catalog, a
// second credit type, a paid grant with an adjustment, a held and a
// settled reservation, a pending invoice purchase and a pending card one,
// and a customer with a large grant.
func setupHostile(t testing.TB, c *clients) {
	t.Helper()
	setupCatalog(t, c)
	call(t, c.catalog.CreateCreditType, &v1.CreateCreditTypeRequest{Id: "other", Name: "Other", Scale: 0})
	// One credit per unit: MaxAmount units of it cost more credits than
	// fit in an amount.
	call(t, c.catalog.UpsertFeature, &v1.UpsertFeatureRequest{Id: "unit", Name: "Unit", CreditTypeId: "ai-credits", Rate: "1"})
	call(t, c.grant.CreateGrant, &v1.CreateGrantRequest{Id: "g-base", CustomerId: "acme", CreditTypeId: "ai-credits",
		Category: v1.GrantCategory_GRANT_CATEGORY_PAID, Amount: "1000", CostBasis: "0.01", Currency: "USD"})
	call(t, c.grant.AdjustGrant, &v1.AdjustGrantRequest{Id: "adj-1", GrantId: "g-base", Amount: "+1", Reason: "seed"})
	call(t, c.grant.RevokeGrant, &v1.RevokeGrantRequest{GrantId: "g-base", Amount: "1", Reason: "seed", RequestId: "rev-1"})
	call(t, c.usage.ReportUsage, &v1.ReportUsageRequest{Events: []*v1.UsageEvent{
		{Id: "ev-seed", CustomerId: "acme", FeatureId: "gpt-tokens", Quantity: 1000}}})
	call(t, c.usage.Reserve, &v1.ReserveRequest{Id: "r-held", CustomerId: "acme", CreditTypeId: "ai-credits", Credits: "10"})
	call(t, c.usage.Reserve, &v1.ReserveRequest{Id: "r-feature", CustomerId: "acme", FeatureId: "gpt-tokens", Quantity: 100})
	call(t, c.usage.Reserve, &v1.ReserveRequest{Id: "r-settled", CustomerId: "acme", CreditTypeId: "ai-credits", Credits: "5"})
	call(t, c.usage.Settle, &v1.SettleRequest{ReservationId: "r-settled", Actual: &v1.SettleRequest_Credits{Credits: "4"}})
	call(t, c.purchase.PurchaseCredits, &v1.PurchaseCreditsRequest{IdempotencyKey: "p-invoice", CustomerId: "acme", Credits: "100",
		Flow: v1.PurchaseFlow_PURCHASE_FLOW_INVOICE})
	call(t, c.purchase.PurchaseCredits, &v1.PurchaseCreditsRequest{IdempotencyKey: "p-card", CustomerId: "acme", Credits: "100",
		Flow: v1.PurchaseFlow_PURCHASE_FLOW_SELF_SERVE})
	call(t, c.catalog.UpsertCustomer, &v1.UpsertCustomerRequest{Id: "rich", Name: "Rich", PlanId: "pro"})
	call(t, c.grant.CreateGrant, &v1.CreateGrantRequest{Id: "g-max", CustomerId: "rich", CreditTypeId: "ai-credits",
		Category: v1.GrantCategory_GRANT_CATEGORY_PROMOTIONAL, Amount: maxUnitsText})
	call(t, c.grant.CreateGrant, &v1.CreateGrantRequest{Id: "g-revoked", CustomerId: "rich", CreditTypeId: "ai-credits",
		Category: v1.GrantCategory_GRANT_CATEGORY_PROMOTIONAL, Amount: "1"})
	call(t, c.grant.RevokeGrant, &v1.RevokeGrantRequest{GrantId: "g-revoked", Reason: "seed"})
	call(t, c.usage.Reserve, &v1.ReserveRequest{Id: "r-unit", CustomerId: "rich", FeatureId: "unit", Quantity: 1})
}

func hostileCases(t testing.TB, url string, c *clients) []hostileCase {
	inv, nf, ae, fp := connect.CodeInvalidArgument, connect.CodeNotFound, connect.CodeAlreadyExists, connect.CodeFailedPrecondition
	id128 := strings.Repeat("i", fsm.MaxIDLen)
	id129 := id128 + "i"

	var out []hostileCase
	add := func(name string, code connect.Code, field string, send func(ctx context.Context) error) {
		out = append(out, hostileCase{name: name, send: send, code: code, field: field})
	}
	// Each method gets a valid request, changed by one case at a time.
	ctype := func(name string, code connect.Code, field string, mod func(*v1.CreateCreditTypeRequest)) {
		m := &v1.CreateCreditTypeRequest{Id: "h-ct", Name: "Hostile", Scale: 2}
		mod(m)
		add("CreateCreditType/"+name, code, field, unaryCtx(c.catalog.CreateCreditType, m))
	}
	feature := func(name string, code connect.Code, field string, mod func(*v1.UpsertFeatureRequest)) {
		m := &v1.UpsertFeatureRequest{Id: "gpt-tokens", Name: "GPT tokens", CreditTypeId: "ai-credits", Rate: "0.002"}
		mod(m)
		add("UpsertFeature/"+name, code, field, unaryCtx(c.catalog.UpsertFeature, m))
	}
	plan := func(name string, code connect.Code, field string, mod func(*v1.Plan)) {
		p := &v1.Plan{Id: "pro", Name: "Pro", CreditTypeId: "ai-credits", Currency: "USD", PricePerCredit: "0.01",
			MinPurchase: "100", MaxPurchase: "100000", DefaultExpiry: durationpb.New(365 * 24 * time.Hour)}
		mod(p)
		add("UpsertPlan/"+name, code, field, unaryCtx(c.catalog.UpsertPlan, &v1.UpsertPlanRequest{Plan: p}))
	}
	customer := func(name string, code connect.Code, field string, mod func(*v1.UpsertCustomerRequest)) {
		m := &v1.UpsertCustomerRequest{Id: "h-cust", Name: "Hostile", PlanId: "pro"}
		mod(m)
		add("UpsertCustomer/"+name, code, field, unaryCtx(c.catalog.UpsertCustomer, m))
	}
	grant := func(name string, code connect.Code, field string, mod func(*v1.CreateGrantRequest)) {
		m := &v1.CreateGrantRequest{Id: "h-grant", CustomerId: "acme", CreditTypeId: "ai-credits",
			Category: v1.GrantCategory_GRANT_CATEGORY_PAID, Amount: "10", CostBasis: "0.01", Currency: "USD"}
		mod(m)
		add("CreateGrant/"+name, code, field, unaryCtx(c.grant.CreateGrant, m))
	}
	revoke := func(name string, code connect.Code, field string, mod func(*v1.RevokeGrantRequest)) {
		m := &v1.RevokeGrantRequest{GrantId: "g-base", Amount: "1", Reason: "hostile", RequestId: "h-rev"}
		mod(m)
		add("RevokeGrant/"+name, code, field, unaryCtx(c.grant.RevokeGrant, m))
	}
	adjust := func(name string, code connect.Code, field string, mod func(*v1.AdjustGrantRequest)) {
		m := &v1.AdjustGrantRequest{Id: "h-adj", GrantId: "g-base", Amount: "-1", Reason: "hostile"}
		mod(m)
		add("AdjustGrant/"+name, code, field, unaryCtx(c.grant.AdjustGrant, m))
	}
	// usage sends a valid event, then the changed one: the whole batch
	// must fail, the valid event included.
	usage := func(name string, code connect.Code, field string, mod func(*v1.UsageEvent)) {
		e := &v1.UsageEvent{Id: "h-ev", CustomerId: "acme", FeatureId: "gpt-tokens", Quantity: 10}
		mod(e)
		m := &v1.ReportUsageRequest{Events: []*v1.UsageEvent{{Id: "h-ok", CustomerId: "acme", FeatureId: "gpt-tokens", Quantity: 10}, e}}
		add("ReportUsage/"+name, code, field, unaryCtx(c.usage.ReportUsage, m))
	}
	reserve := func(name string, code connect.Code, field string, mod func(*v1.ReserveRequest)) {
		m := &v1.ReserveRequest{Id: "h-res", CustomerId: "acme", CreditTypeId: "ai-credits", Credits: "1"}
		mod(m)
		add("Reserve/"+name, code, field, unaryCtx(c.usage.Reserve, m))
	}
	settle := func(name string, code connect.Code, field string, m *v1.SettleRequest) {
		add("Settle/"+name, code, field, unaryCtx(c.usage.Settle, m))
	}
	purchase := func(name string, code connect.Code, field string, mod func(*v1.PurchaseCreditsRequest)) {
		m := &v1.PurchaseCreditsRequest{IdempotencyKey: "h-pur", CustomerId: "acme", Credits: "100", Flow: v1.PurchaseFlow_PURCHASE_FLOW_INVOICE}
		mod(m)
		add("PurchaseCredits/"+name, code, field, unaryCtx(c.purchase.PurchaseCredits, m))
	}
	complete := func(name string, code connect.Code, field string, mod func(*v1.CompletePurchaseRequest)) {
		m := &v1.CompletePurchaseRequest{Id: "p-invoice", Outcome: v1.PurchaseOutcome_PURCHASE_OUTCOME_PROGRESS, ProviderRef: "ref"}
		mod(m)
		add("CompletePurchase/"+name, code, field, unaryCtx(c.purchase.CompletePurchase, m))
	}
	// raw sends m with invalid UTF-8 where it holds "@@@@". The decoder
	// refuses it before creditd sees the request (Connect's
	// INVALID_ARGUMENT, no FieldViolation), but the message names the
	// field: "unmarshal message: events[0].id: is not valid UTF-8".
	raw := func(name string, code connect.Code, field, procedure string, m proto.Message) {
		body := withBadUTF8(t, m)
		add(name, code, "", func(ctx context.Context) error {
			err := rawPost(ctx, url, procedure, "application/proto", body, nil)
			if ce, ok := err.(*connect.Error); ok && !strings.Contains(ce.Message(), field+": is not valid UTF-8") {
				return fmt.Errorf("%w (the message does not name %s)", err, field)
			}
			return err
		})
	}
	rawJSON := func(name string, code connect.Code, field, procedure, body string) {
		add(name, code, field, func(ctx context.Context) error {
			return rawPost(ctx, url, procedure, "application/json", []byte(body), nil)
		})
	}

	// Ids: required, 1..128 of a charset, never control characters.
	for _, bad := range []struct{ name, id string }{
		{"empty", ""}, {"129 characters", id129}, {"a space", "a b"}, {"a NUL", "a\x00b"}, {"a newline", "a\nb"},
		{"an escape", "\x1b[2J"}, {"non-ASCII", "café"}, {"a slash", "a/b"}, {"a DEL", "a\x7fb"},
	} {
		ctype("id "+bad.name, inv, "id", func(m *v1.CreateCreditTypeRequest) { m.Id = bad.id })
		feature("credit_type_id "+bad.name, inv, "credit_type_id", func(m *v1.UpsertFeatureRequest) { m.CreditTypeId = bad.id })
		plan("id "+bad.name, inv, "plan.id", func(p *v1.Plan) { p.Id = bad.id })
		customer("id "+bad.name, inv, "id", func(m *v1.UpsertCustomerRequest) { m.Id = bad.id })
		grant("id "+bad.name, inv, "id", func(m *v1.CreateGrantRequest) { m.Id = bad.id })
		grant("customer_id "+bad.name, inv, "customer_id", func(m *v1.CreateGrantRequest) { m.CustomerId = bad.id })
		revoke("grant_id "+bad.name, inv, "grant_id", func(m *v1.RevokeGrantRequest) { m.GrantId = bad.id })
		adjust("id "+bad.name, inv, "id", func(m *v1.AdjustGrantRequest) { m.Id = bad.id })
		usage("id "+bad.name, inv, "events[1].id", func(e *v1.UsageEvent) { e.Id = bad.id })
		usage("customer_id "+bad.name, inv, "events[1].customer_id", func(e *v1.UsageEvent) { e.CustomerId = bad.id })
		reserve("id "+bad.name, inv, "id", func(m *v1.ReserveRequest) { m.Id = bad.id })
		settle("reservation_id "+bad.name, inv, "reservation_id", &v1.SettleRequest{ReservationId: bad.id, Actual: &v1.SettleRequest_Credits{Credits: "1"}})
		add("Release/reservation_id "+bad.name, inv, "reservation_id", unaryCtx(c.usage.Release, &v1.ReleaseRequest{ReservationId: bad.id}))
		purchase("idempotency_key "+bad.name, inv, "idempotency_key", func(m *v1.PurchaseCreditsRequest) { m.IdempotencyKey = bad.id })
		complete("id "+bad.name, inv, "id", func(m *v1.CompletePurchaseRequest) { m.Id = bad.id })
		if bad.id != "" {
			revoke("request_id "+bad.name, inv, "request_id", func(m *v1.RevokeGrantRequest) { m.RequestId = bad.id })
			customer("plan_id "+bad.name, inv, "plan_id", func(m *v1.UpsertCustomerRequest) { m.PlanId = bad.id })
		}
	}
	// Node ids are the operator's (--node-id): any text of 1..128 bytes
	// without control characters; one of other characters is looked up.
	for _, bad := range []struct {
		name, id string
		code     connect.Code
	}{
		{"empty", "", inv}, {"129 characters", id129, inv}, {"a NUL", "a\x00b", inv}, {"a newline", "a\nb", inv},
		{"an escape", "\x1b[2J", inv}, {"a DEL", "a\x7fb", inv}, {"a space", "a b", nf}, {"non-ASCII", "café", nf}, {"a slash", "a/b", nf},
	} {
		add("RemoveMember/node_id "+bad.name, bad.code, "node_id", unaryCtx(c.cluster.RemoveMember, &v1.RemoveMemberRequest{NodeId: bad.id}))
		if bad.id != "" {
			add("TransferLeadership/node_id "+bad.name, bad.code, "node_id", unaryCtx(c.cluster.TransferLeadership, &v1.TransferLeadershipRequest{NodeId: bad.id}))
		}
	}
	// An id of exactly 128 characters is valid: the request fails later,
	// on the id it names not existing.
	revoke("grant_id of 128 characters is looked up", nf, "grant_id", func(m *v1.RevokeGrantRequest) { m.GrantId = id128 })
	grant("customer_id of 128 characters is looked up", nf, "customer_id", func(m *v1.CreateGrantRequest) { m.CustomerId = id128 })

	// Invalid UTF-8 cannot be marshalled by a Go client; sent by hand, it is
	// refused by the decoder (Connect's INVALID_ARGUMENT, before creditd).
	raw("CreateCreditType/name not UTF-8", inv, "name", "/creditd.v1.CatalogService/CreateCreditType",
		&v1.CreateCreditTypeRequest{Id: "h-ct", Name: "x@@@@x"})
	raw("CreateGrant/id not UTF-8", inv, "id", "/creditd.v1.GrantService/CreateGrant",
		&v1.CreateGrantRequest{Id: "h@@@@", CustomerId: "acme", CreditTypeId: "ai-credits", Category: v1.GrantCategory_GRANT_CATEGORY_PROMOTIONAL, Amount: "1"})
	raw("AdjustGrant/reason not UTF-8", inv, "reason", "/creditd.v1.GrantService/AdjustGrant",
		&v1.AdjustGrantRequest{Id: "h-adj", GrantId: "g-base", Amount: "1", Reason: "@@@@"})
	raw("ReportUsage/event id not UTF-8", inv, "events[2].customer_id", "/creditd.v1.UsageService/ReportUsage",
		&v1.ReportUsageRequest{Events: []*v1.UsageEvent{
			{Id: "h-1", CustomerId: "acme", FeatureId: "gpt-tokens", Quantity: 1},
			{Id: "h-2", CustomerId: "acme", FeatureId: "gpt-tokens", Quantity: 1},
			{Id: "h-3", CustomerId: "a@@@@", FeatureId: "gpt-tokens", Quantity: 1}}})
	raw("UpsertPlan/plan name not UTF-8", inv, "plan.name", "/creditd.v1.CatalogService/UpsertPlan",
		&v1.UpsertPlanRequest{Plan: &v1.Plan{Id: "pro", Name: "@@@@", CreditTypeId: "ai-credits", Currency: "USD", PricePerCredit: "0.01"}})

	// Names and free text: bounded, and single-line names hold no control
	// characters.
	long := func(n int) string { return strings.Repeat("n", n) }
	ctype("name of 257 bytes", inv, "name", func(m *v1.CreateCreditTypeRequest) { m.Name = long(257) })
	ctype("name with a NUL", inv, "name", func(m *v1.CreateCreditTypeRequest) { m.Name = "a\x00b" })
	ctype("name with an escape sequence", inv, "name", func(m *v1.CreateCreditTypeRequest) { m.Name = "\x1b[31mred" })
	feature("name with a newline", inv, "name", func(m *v1.UpsertFeatureRequest) { m.Name = "GPT\ntokens" })
	plan("name with a NUL", inv, "plan.name", func(p *v1.Plan) { p.Name = "\x00" })
	customer("name of 257 bytes", inv, "name", func(m *v1.UpsertCustomerRequest) { m.Name = long(257) })
	customer("name with a carriage return", inv, "name", func(m *v1.UpsertCustomerRequest) { m.Name = "a\rb" })
	customer("billing_ref of 257 bytes", inv, "billing_ref", func(m *v1.UpsertCustomerRequest) { m.BillingRef = long(257) })
	customer("billing_ref with a NUL", inv, "billing_ref", func(m *v1.UpsertCustomerRequest) { m.BillingRef = "cus_\x00" })
	grant("source_ref of 257 bytes", inv, "source_ref", func(m *v1.CreateGrantRequest) { m.SourceRef = long(257) })
	grant("source_ref with a bell", inv, "source_ref", func(m *v1.CreateGrantRequest) { m.SourceRef = "\a" })
	revoke("reason of 1025 bytes", inv, "reason", func(m *v1.RevokeGrantRequest) { m.Reason = long(1025) })
	revoke("reason with a NUL", inv, "reason", func(m *v1.RevokeGrantRequest) { m.Reason = "a\x00" })
	adjust("reason of 1025 bytes", inv, "reason", func(m *v1.AdjustGrantRequest) { m.Reason = long(1025) })
	adjust("reason with an escape", inv, "reason", func(m *v1.AdjustGrantRequest) { m.Reason = "\x1b]0;pwned\a" })
	adjust("reason empty", inv, "reason", func(m *v1.AdjustGrantRequest) { m.Reason = "" })
	complete("provider_ref of 257 bytes", inv, "provider_ref", func(m *v1.CompletePurchaseRequest) { m.ProviderRef = long(257) })
	complete("provider_status with a NUL", inv, "provider_status", func(m *v1.CompletePurchaseRequest) { m.ProviderStatus = "\x00" })
	complete("failure_reason of 1025 bytes", inv, "failure_reason", func(m *v1.CompletePurchaseRequest) {
		m.Outcome, m.FailureReason = v1.PurchaseOutcome_PURCHASE_OUTCOME_FAILED, long(1025)
	})

	// Amounts in credits: decimal text in the scale, bounded, signed only
	// where the method says so.
	for _, bad := range []struct{ name, text string }{
		{"negative", "-1"}, {"over-precise", "0.001"}, {"over the maximum", overUnitsText}, {"over int64", "92233720368547758.08"},
		{"an exponent", "1e3"}, {"hex", "0x10"}, {"NaN", "NaN"}, {"Infinity", "Infinity"}, {"a leading space", " 1"},
		{"a trailing space", "1 "}, {"a trailing dot", "1."}, {"a leading dot", ".5"}, {"a comma", "1,5"},
		{"a plus sign", "+1"}, {"Arabic-Indic digits", "١٢"}, {"fullwidth digits", "１２"}, {"41 characters", strings.Repeat("1", 41)},
		{"a NUL", "1\x00"}, {"two dots", "1.2.3"},
	} {
		grant("amount "+bad.name, inv, "amount", func(m *v1.CreateGrantRequest) { m.Amount = bad.text })
		revoke("amount "+bad.name, inv, "amount", func(m *v1.RevokeGrantRequest) { m.Amount = bad.text })
		usage("credits "+bad.name, inv, "events[1].credits", func(e *v1.UsageEvent) {
			e.FeatureId, e.Quantity, e.CreditTypeId, e.Credits = "", 0, "ai-credits", bad.text
		})
		reserve("credits "+bad.name, inv, "credits", func(m *v1.ReserveRequest) { m.Credits = bad.text })
		settle("credits "+bad.name, inv, "credits", &v1.SettleRequest{ReservationId: "r-held", Actual: &v1.SettleRequest_Credits{Credits: bad.text}})
		purchase("credits "+bad.name, inv, "credits", func(m *v1.PurchaseCreditsRequest) { m.Credits = bad.text })
		plan("min_purchase "+bad.name, inv, "plan.min_purchase", func(p *v1.Plan) { p.MinPurchase = bad.text })
		plan("overdraft_limit "+bad.name, inv, "plan.overdraft_limit", func(p *v1.Plan) { p.OverdraftLimit = bad.text })
		customer("auto_top_up.threshold "+bad.name, inv, "auto_top_up.threshold", func(m *v1.UpsertCustomerRequest) {
			m.AutoTopUp = &v1.AutoTopUp{Enabled: true, Threshold: bad.text, Amount: "100"}
		})
		if bad.text != "-1" && bad.text != "+1" {
			adjust("amount "+bad.name, inv, "amount", func(m *v1.AdjustGrantRequest) { m.Amount = bad.text })
		}
	}
	grant("amount zero", inv, "amount", func(m *v1.CreateGrantRequest) { m.Amount = "0" })
	grant("amount empty", inv, "amount", func(m *v1.CreateGrantRequest) { m.Amount = "" })
	revoke("amount zero", inv, "amount", func(m *v1.RevokeGrantRequest) { m.Amount = "0" })
	purchase("credits zero", inv, "credits", func(m *v1.PurchaseCreditsRequest) { m.Credits = "0" })
	purchase("credits empty", inv, "credits", func(m *v1.PurchaseCreditsRequest) { m.Credits = "" })
	reserve("credits empty", inv, "credits", func(m *v1.ReserveRequest) { m.Credits = "" })
	usage("credits empty", inv, "events[1].credits", func(e *v1.UsageEvent) {
		e.FeatureId, e.Quantity, e.CreditTypeId, e.Credits = "", 0, "ai-credits", ""
	})
	settle("credits empty", inv, "credits", &v1.SettleRequest{ReservationId: "r-held", Actual: &v1.SettleRequest_Credits{Credits: ""}})
	for _, bad := range []struct{ name, text string }{
		{"zero", "0"}, {"minus zero", "-0"}, {"plus zero", "+0.00"}, {"a sign alone", "-"}, {"a plus alone", "+"},
		{"two minus signs", "--1"}, {"plus minus", "+-1"}, {"minus plus", "-+1"}, {"a space after the sign", "- 1"},
		{"minus over the maximum", "-" + overUnitsText}, {"minus over-precise", "-0.001"}, {"empty", ""},
	} {
		adjust("amount "+bad.name, inv, "amount", func(m *v1.AdjustGrantRequest) { m.Amount = bad.text })
	}

	// Quantities: int64 on the wire, ≥ 0 and at most fsm.MaxAmount.
	for _, q := range []int64{-1, math.MinInt64, math.MaxInt64, fsm.MaxAmount + 1} {
		name := fmt.Sprintf("quantity %d", q)
		usage(name, inv, "events[1].quantity", func(e *v1.UsageEvent) { e.Quantity = q })
		reserve(name, inv, "quantity", func(m *v1.ReserveRequest) {
			m.CreditTypeId, m.Credits, m.FeatureId, m.Quantity = "", "", "gpt-tokens", q
		})
		settle(name, inv, "quantity", &v1.SettleRequest{ReservationId: "r-feature", Actual: &v1.SettleRequest_Quantity{Quantity: q}})
		add("Check/"+name, inv, "quantity", unaryCtx(c.usage.Check, &v1.CheckRequest{CustomerId: "acme", FeatureId: "gpt-tokens", Quantity: q}))
	}
	// The feature or the credit type, never both, never neither.
	usage("feature and credit type", inv, "events[1].credit_type_id", func(e *v1.UsageEvent) { e.CreditTypeId, e.Credits = "ai-credits", "1" })
	usage("neither feature nor credit type", inv, "events[1].feature_id", func(e *v1.UsageEvent) { e.FeatureId, e.Quantity = "", 0 })
	usage("credits with a feature", inv, "events[1].credits", func(e *v1.UsageEvent) { e.Credits = "1" })
	usage("quantity with a credit type", inv, "events[1].quantity", func(e *v1.UsageEvent) { e.FeatureId, e.CreditTypeId, e.Credits = "", "ai-credits", "1" })
	// Malformed is malformed whatever the credit type: an unknown one is a
	// rejection of a well-formed event, not a pass for its amount.
	for _, bad := range []string{"abc", "-5", "1e3", overUnitsText + "0000000000"} {
		usage(fmt.Sprintf("credits %q of an unknown credit type", bad), inv, "events[1].credits", func(e *v1.UsageEvent) {
			e.FeatureId, e.Quantity, e.CreditTypeId, e.Credits = "", 0, "h-ct", bad
		})
	}
	reserve("feature and credit type", inv, "credit_type_id", func(m *v1.ReserveRequest) { m.FeatureId = "gpt-tokens" })
	settle("no actual usage", inv, "quantity", &v1.SettleRequest{ReservationId: "r-held"})
	settle("quantity of a reservation in credits", inv, "quantity", &v1.SettleRequest{ReservationId: "r-held", Actual: &v1.SettleRequest_Quantity{Quantity: 1}})

	// Rates and prices: exact non-negative decimals, at most 12 places.
	for _, bad := range []struct{ name, text string }{
		{"empty", ""}, {"negative", "-0.002"}, {"13 places", "0.0000000000001"}, {"an exponent", "2e-3"}, {"NaN", "NaN"},
		{"over the maximum", "1152921504606846977"}, {"over int64", "9223372036854775808"}, {"41 characters", "0." + strings.Repeat("0", 39)},
		{"a plus sign", "+0.002"}, {"a trailing dot", "2."}, {"a space", "0 .002"},
	} {
		feature("rate "+bad.name, inv, "rate", func(m *v1.UpsertFeatureRequest) { m.Rate = bad.text })
		plan("price_per_credit "+bad.name, inv, "plan.price_per_credit", func(p *v1.Plan) { p.PricePerCredit = bad.text })
		if bad.text != "" {
			grant("cost_basis "+bad.name, inv, "cost_basis", func(m *v1.CreateGrantRequest) { m.CostBasis = bad.text })
		}
	}
	grant("cost_basis empty for a paid grant", inv, "cost_basis", func(m *v1.CreateGrantRequest) { m.CostBasis = "" })
	grant("cost_basis on a promotional grant", inv, "cost_basis", func(m *v1.CreateGrantRequest) {
		m.Category, m.Currency = v1.GrantCategory_GRANT_CATEGORY_PROMOTIONAL, ""
	})
	grant("amount × cost_basis overflows money", inv, "amount", func(m *v1.CreateGrantRequest) {
		m.Amount, m.CostBasis = maxUnitsText, "1000000"
	})
	// Money: at most 6 places.
	customer("auto_top_up.monthly_cap 7 places", inv, "auto_top_up.monthly_cap", func(m *v1.UpsertCustomerRequest) {
		m.AutoTopUp = &v1.AutoTopUp{Enabled: true, Threshold: "10", Amount: "100", MonthlyCap: "1.0000001"}
	})
	customer("auto_top_up.monthly_cap negative", inv, "auto_top_up.monthly_cap", func(m *v1.UpsertCustomerRequest) {
		m.AutoTopUp = &v1.AutoTopUp{Enabled: true, Threshold: "10", Amount: "100", MonthlyCap: "-5"}
	})
	// Currencies.
	for _, cur := range []string{"usd", "US", "USDD", "U$D", "€€€", "\x00SD"} {
		grant("currency "+fmt.Sprintf("%q", cur), inv, "currency", func(m *v1.CreateGrantRequest) { m.Currency = cur })
		plan("currency "+fmt.Sprintf("%q", cur), inv, "plan.currency", func(p *v1.Plan) { p.Currency = cur })
	}
	grant("currency on a promotional grant", inv, "currency", func(m *v1.CreateGrantRequest) {
		m.Category, m.CostBasis = v1.GrantCategory_GRANT_CATEGORY_PROMOTIONAL, ""
	})

	// Enums: unset where required, and numbers no enum value has.
	for _, n := range []int32{-1, 42, math.MaxInt32} {
		sfx := fmt.Sprintf(" %d", n)
		grant("category"+sfx, inv, "category", func(m *v1.CreateGrantRequest) { m.Category = v1.GrantCategory(n) })
		grant("source_kind"+sfx, inv, "source_kind", func(m *v1.CreateGrantRequest) { m.SourceKind = v1.SourceKind(n) })
		purchase("flow"+sfx, inv, "flow", func(m *v1.PurchaseCreditsRequest) { m.Flow = v1.PurchaseFlow(n) })
		complete("outcome"+sfx, inv, "outcome", func(m *v1.CompletePurchaseRequest) { m.Outcome = v1.PurchaseOutcome(n) })
		plan("invoice_grant"+sfx, inv, "plan.invoice_grant", func(p *v1.Plan) { p.InvoiceGrant = v1.InvoiceGrantPolicy(n) })
		plan("overdraft"+sfx, inv, "plan.overdraft", func(p *v1.Plan) { p.Overdraft = v1.OverdraftPolicy(n) })
		plan("auto_top_up.mode"+sfx, inv, "plan.auto_top_up.mode", func(p *v1.Plan) { p.AutoTopUp = &v1.AutoTopUp{Mode: v1.AutoTopUpMode(n)} })
		customer("auto_top_up.mode"+sfx, inv, "auto_top_up.mode", func(m *v1.UpsertCustomerRequest) { m.AutoTopUp = &v1.AutoTopUp{Mode: v1.AutoTopUpMode(n)} })
		add("Check/consistency"+sfx, inv, "consistency", unaryCtx(c.usage.Check, &v1.CheckRequest{CustomerId: "acme", FeatureId: "gpt-tokens", Consistency: v1.Consistency(n)}))
	}
	grant("category unset", inv, "category", func(m *v1.CreateGrantRequest) { m.Category = 0 })
	purchase("flow unset", inv, "flow", func(m *v1.PurchaseCreditsRequest) { m.Flow = 0 })
	complete("outcome unset", inv, "outcome", func(m *v1.CompletePurchaseRequest) { m.Outcome = 0 })
	rawJSON("CreateGrant/an enum name no value has", inv, "category", "/creditd.v1.GrantService/CreateGrant",
		`{"id":"h-grant","customerId":"acme","creditTypeId":"ai-credits","category":"GRANT_CATEGORY_FREE","amount":"1"}`)
	rawJSON("ReportUsage/a quantity over int64 in JSON", inv, "", "/creditd.v1.UsageService/ReportUsage",
		`{"events":[{"id":"h-ev","customerId":"acme","featureId":"gpt-tokens","quantity":"9223372036854775808"}]}`)
	rawJSON("ReportUsage/a fractional quantity in JSON", inv, "", "/creditd.v1.UsageService/ReportUsage",
		`{"events":[{"id":"h-ev","customerId":"acme","featureId":"gpt-tokens","quantity":1.5}]}`)
	rawJSON("ReportUsage/events not a list", inv, "", "/creditd.v1.UsageService/ReportUsage", `{"events":{"id":"h-ev"}}`)
	rawJSON("ReportUsage/a null event", inv, "", "/creditd.v1.UsageService/ReportUsage", `{"events":[null]}`)
	rawJSON("ReportUsage/not JSON", inv, "", "/creditd.v1.UsageService/ReportUsage", `{"events":[`)

	// Priorities and scales: unsigned on the wire, bounded here.
	grant("priority 1001", inv, "priority", func(m *v1.CreateGrantRequest) { m.Priority = 1001 })
	grant("priority MaxUint32", inv, "priority", func(m *v1.CreateGrantRequest) { m.Priority = math.MaxUint32 })
	ctype("scale 10", inv, "scale", func(m *v1.CreateCreditTypeRequest) { m.Scale = 10 })
	ctype("scale MaxUint32", inv, "scale", func(m *v1.CreateCreditTypeRequest) { m.Scale = math.MaxUint32 })
	ctype("scale 256 (a byte would wrap to 0)", inv, "scale", func(m *v1.CreateCreditTypeRequest) { m.Scale = 256 })

	// Times: valid, 2000..9999; expiries after starts and in the future.
	for _, tc := range []struct {
		name string
		ts   *timestamppb.Timestamp
	}{
		{"year 1", timestamppb.New(time.Date(1, 1, 1, 0, 0, 0, 0, time.UTC))},
		{"1970", &timestamppb.Timestamp{}},
		{"negative seconds", &timestamppb.Timestamp{Seconds: -1}},
		{"year 10000", &timestamppb.Timestamp{Seconds: 253402300800}},
		{"seconds MaxInt64", &timestamppb.Timestamp{Seconds: math.MaxInt64}},
		{"seconds MinInt64", &timestamppb.Timestamp{Seconds: math.MinInt64}},
		{"nanos over a second", &timestamppb.Timestamp{Seconds: 1893456000, Nanos: 1e9}},
		{"negative nanos", &timestamppb.Timestamp{Seconds: 1893456000, Nanos: -1}},
	} {
		grant("effective_at "+tc.name, inv, "effective_at", func(m *v1.CreateGrantRequest) { m.EffectiveAt = tc.ts })
		grant("expires_at "+tc.name, inv, "expires_at", func(m *v1.CreateGrantRequest) { m.ExpiresAt = tc.ts })
		usage("event_time "+tc.name, inv, "events[1].event_time", func(e *v1.UsageEvent) { e.EventTime = tc.ts })
	}
	grant("expires_at in the past", inv, "expires_at", func(m *v1.CreateGrantRequest) {
		m.ExpiresAt = timestamppb.New(time.Date(2001, 1, 1, 0, 0, 0, 0, time.UTC))
	})
	grant("expires_at equal to effective_at", inv, "expires_at", func(m *v1.CreateGrantRequest) {
		at := timestamppb.New(time.Date(2090, 1, 1, 0, 0, 0, 0, time.UTC))
		m.EffectiveAt, m.ExpiresAt = at, at
	})
	// Durations: valid, not negative, bounded.
	for _, tc := range []struct {
		name string
		d    *durationpb.Duration
	}{
		{"negative", durationpb.New(-time.Second)},
		{"25 hours", durationpb.New(25 * time.Hour)},
		{"seconds MaxInt64", &durationpb.Duration{Seconds: math.MaxInt64}},
		{"mixed signs", &durationpb.Duration{Seconds: 1, Nanos: -1}},
		{"nanos over a second", &durationpb.Duration{Nanos: 2e9}},
	} {
		reserve("ttl "+tc.name, inv, "ttl", func(m *v1.ReserveRequest) { m.Ttl = tc.d })
		plan("default_expiry "+tc.name, inv, "plan.default_expiry", func(p *v1.Plan) {
			if tc.name == "25 hours" {
				p.DefaultExpiry = durationpb.New(101 * 365 * 24 * time.Hour)
				return
			}
			p.DefaultExpiry = tc.d
		})
	}

	// Batches: 1..10,000 events; the malformed one fails all of them.
	add("ReportUsage/no events", inv, "events", unaryCtx(c.usage.ReportUsage, &v1.ReportUsageRequest{}))
	tooMany := &v1.ReportUsageRequest{}
	for i := range fsm.MaxEventsPerBatch + 1 {
		tooMany.Events = append(tooMany.Events, &v1.UsageEvent{Id: fmt.Sprint("h-many-", i), CustomerId: "acme", FeatureId: "gpt-tokens", Quantity: 1})
	}
	add("ReportUsage/10,001 events", inv, "events", unaryCtx(c.usage.ReportUsage, tooMany))
	lastBad := &v1.ReportUsageRequest{}
	for i := range fsm.MaxEventsPerBatch {
		lastBad.Events = append(lastBad.Events, &v1.UsageEvent{Id: fmt.Sprint("h-last-", i), CustomerId: "acme", FeatureId: "gpt-tokens", Quantity: 1})
	}
	lastBad.Events[fsm.MaxEventsPerBatch-1].Quantity = -1
	add("ReportUsage/the 10,000th event is malformed", inv, fmt.Sprintf("events[%d].quantity", fsm.MaxEventsPerBatch-1), unaryCtx(c.usage.ReportUsage, lastBad))

	// Not found, conflicts and preconditions.
	grant("customer unknown", nf, "customer_id", func(m *v1.CreateGrantRequest) { m.CustomerId = "h:cust" })
	grant("credit type unknown", nf, "credit_type_id", func(m *v1.CreateGrantRequest) { m.CreditTypeId = "h-ct" })
	grant("id of another grant", ae, "id", func(m *v1.CreateGrantRequest) { m.Id = "g-base" })
	revoke("grant unknown", nf, "grant_id", func(m *v1.RevokeGrantRequest) { m.GrantId = "h-nope" })
	revoke("request_id reused with another amount", ae, "request_id", func(m *v1.RevokeGrantRequest) { m.RequestId = "rev-1"; m.Amount = "2" })
	revoke("a revoked grant", fp, "grant_id", func(m *v1.RevokeGrantRequest) { m.GrantId = "g-revoked" })
	adjust("a revoked grant", fp, "grant_id", func(m *v1.AdjustGrantRequest) { m.GrantId = "g-revoked" })
	adjust("grant unknown", nf, "grant_id", func(m *v1.AdjustGrantRequest) { m.GrantId = "h-nope" })
	adjust("id reused with another amount", ae, "id", func(m *v1.AdjustGrantRequest) { m.Id = "adj-1"; m.Amount = "+2"; m.Reason = "seed" })
	adjust("id reused with another reason", ae, "id", func(m *v1.AdjustGrantRequest) { m.Id = "adj-1"; m.Amount = "+1"; m.Reason = "other" })
	adjust("removing more than remains", fp, "amount", func(m *v1.AdjustGrantRequest) { m.Amount = "-100000" })
	adjust("adding past the maximum", inv, "amount", func(m *v1.AdjustGrantRequest) { m.GrantId = "g-max"; m.Amount = "+1" })
	reserve("customer unknown", nf, "customer_id", func(m *v1.ReserveRequest) { m.CustomerId = "h-cust" })
	reserve("credit type unknown", nf, "credit_type_id", func(m *v1.ReserveRequest) { m.CreditTypeId = "h-ct" })
	reserve("feature unknown", nf, "feature_id", func(m *v1.ReserveRequest) {
		m.CreditTypeId, m.Credits, m.FeatureId, m.Quantity = "", "", "h-feature", 1
	})
	reserve("id reused with another amount", ae, "id", func(m *v1.ReserveRequest) { m.Id = "r-held"; m.Credits = "11" })
	reserve("more than available", fp, "", func(m *v1.ReserveRequest) { m.Credits = "100000" })
	reserve("a quantity whose cost overflows", inv, "quantity", func(m *v1.ReserveRequest) {
		m.CreditTypeId, m.Credits, m.FeatureId, m.Quantity = "", "", "unit", fsm.MaxAmount
	})
	settle("reservation unknown", nf, "reservation_id", &v1.SettleRequest{ReservationId: "h-nope", Actual: &v1.SettleRequest_Credits{Credits: "1"}})
	settle("more than available", fp, "", &v1.SettleRequest{ReservationId: "r-held", Actual: &v1.SettleRequest_Credits{Credits: "100000"}})
	settle("a quantity whose cost overflows", inv, "quantity", &v1.SettleRequest{ReservationId: "r-unit", Actual: &v1.SettleRequest_Quantity{Quantity: fsm.MaxAmount}})
	add("Release/reservation unknown", nf, "reservation_id", unaryCtx(c.usage.Release, &v1.ReleaseRequest{ReservationId: "h-nope"}))
	purchase("customer unknown", nf, "customer_id", func(m *v1.PurchaseCreditsRequest) { m.CustomerId = "h-cust" })
	purchase("key reused with another amount", ae, "idempotency_key", func(m *v1.PurchaseCreditsRequest) { m.IdempotencyKey = "p-invoice"; m.Credits = "200" })
	purchase("idempotency_key of 120 characters (its grant id would be 129)", inv, "idempotency_key", func(m *v1.PurchaseCreditsRequest) {
		m.IdempotencyKey = strings.Repeat("k", fsm.MaxIDLen-len("purchase:")+1)
	})
	purchase("below the plan's minimum", inv, "credits", func(m *v1.PurchaseCreditsRequest) { m.Credits = "99.99" })
	purchase("above the plan's maximum", inv, "credits", func(m *v1.PurchaseCreditsRequest) { m.Credits = "100000.01" })
	purchase("the automatic flow", inv, "flow", func(m *v1.PurchaseCreditsRequest) { m.Flow = v1.PurchaseFlow_PURCHASE_FLOW_AUTO })
	complete("purchase unknown", nf, "id", func(m *v1.CompletePurchaseRequest) { m.Id = "h-pur" })
	complete("failed without a reason", inv, "failure_reason", func(m *v1.CompletePurchaseRequest) { m.Outcome = v1.PurchaseOutcome_PURCHASE_OUTCOME_FAILED })
	complete("a reason without failing", inv, "failure_reason", func(m *v1.CompletePurchaseRequest) { m.FailureReason = "why" })
	complete("an invoice outcome of a card purchase", fp, "outcome", func(m *v1.CompletePurchaseRequest) {
		m.Id, m.Outcome = "p-card", v1.PurchaseOutcome_PURCHASE_OUTCOME_INVOICE_PAID
	})
	feature("a feature changes its credit type", fp, "credit_type_id", func(m *v1.UpsertFeatureRequest) { m.CreditTypeId = "other" })
	feature("credit type unknown", nf, "credit_type_id", func(m *v1.UpsertFeatureRequest) { m.Id, m.CreditTypeId = "h-feature", "h-ct" })
	plan("a plan changes its credit type", fp, "plan.credit_type_id", func(p *v1.Plan) { p.CreditTypeId = "other" })
	plan("minimum above maximum", inv, "plan.max_purchase", func(p *v1.Plan) { p.MinPurchase, p.MaxPurchase = "1000", "10" })
	customer("plan unknown", nf, "plan_id", func(m *v1.UpsertCustomerRequest) { m.PlanId = "h-plan" })
	customer("auto top-up without a plan", inv, "auto_top_up", func(m *v1.UpsertCustomerRequest) {
		m.PlanId, m.AutoTopUp = "", &v1.AutoTopUp{Enabled: true, Threshold: "1", Amount: "100"}
	})
	ctype("an id taken with another scale", ae, "id", func(m *v1.CreateCreditTypeRequest) { m.Id, m.Name, m.Scale = "ai-credits", "AI credits", 3 })
	add("RemoveMember/unknown", nf, "node_id", unaryCtx(c.cluster.RemoveMember, &v1.RemoveMemberRequest{NodeId: "h-node"}))
	add("RemoveMember/the last voter", fp, "node_id", unaryCtx(c.cluster.RemoveMember, &v1.RemoveMemberRequest{NodeId: "n1"}))
	add("TransferLeadership/unknown", nf, "node_id", unaryCtx(c.cluster.TransferLeadership, &v1.TransferLeadershipRequest{NodeId: "h-node"}))
	return out
}

func unaryCtx[Req, Res any](fn func(context.Context, *connect.Request[Req]) (*connect.Response[Res], error), m *Req) func(context.Context) error {
	return func(ctx context.Context) error {
		_, err := fn(ctx, connect.NewRequest(m))
		return err
	}
}

// TestHostileInputs sends every hostile case to a real node and checks the
// code, the field named (FieldViolation and message prefix) and that the
// state is unchanged after each.
func TestHostileInputs(t *testing.T) {
	s := startSingle(t, nodeOpts{})
	c := newClients(s.url, "")
	setupHostile(t, c)
	runHostile(t, s.url, c, c)
}

// TestHostileInputsThroughAFollower sends the same cases to a follower:
// what it validates itself and what it forwards to the leader (a credit
// type it does not know yet, every write) must come back with the same
// code and field, and leave the state as it was.
func TestHostileInputsThroughAFollower(t *testing.T) {
	if testing.Short() {
		t.Skip("starts a 3-node cluster")
	}
	servers := startThree(t, nodeOpts{})
	leader := newClients(servers[0].url, "")
	setupHostile(t, leader)
	runHostile(t, servers[1].url, newClients(servers[1].url, ""), leader)
}

// runHostile sends every hostile case to the node at url (through c) and
// reads the state back from the leader.
func runHostile(t *testing.T, url string, c, leader *clients) {
	before := stateOf(t, leader)
	for _, tc := range hostileCases(t, url, c) {
		if tc.name == "RemoveMember/the last voter" && c != leader {
			continue // in a cluster of three, n1 is not the last
		}
		t.Run(tc.name, func(t *testing.T) {
			err := tc.send(ctxT(t))
			if after := stateOf(t, leader); after != before {
				// Later cases compare with the changed state, so that one
				// wrongly accepted request fails its own case only.
				t.Errorf("the state changed:\n%s", lineDiff(before, after))
				before = after
			}
			if connect.CodeOf(err) != tc.code || err == nil {
				t.Fatalf("got %v, want %v", err, tc.code)
			}
			ce, ok := err.(*connect.Error)
			if !ok {
				t.Fatalf("not a Connect error: %v", err)
			}
			if tc.field == "" {
				t.Logf("refused with %v", ce)
			} else {
				if !strings.HasPrefix(ce.Message(), tc.field+": ") {
					t.Errorf("message %q does not start with %q", ce.Message(), tc.field+": ")
				}
				if fv, derr := fieldDetail(ce); derr != nil || fv.Field != tc.field {
					t.Errorf("FieldViolation = %v (%v), want field %q", fv, derr, tc.field)
				}
			}
		})
	}
}

// lineDiff lists the lines of a that b lacks and those b adds.
func lineDiff(a, b string) string {
	al, bl := strings.Split(a, "\n"), strings.Split(b, "\n")
	var sb strings.Builder
	for i := range max(len(al), len(bl)) {
		var x, y string
		if i < len(al) {
			x = al[i]
		}
		if i < len(bl) {
			y = bl[i]
		}
		if x != y {
			fmt.Fprintf(&sb, "- %s\n+ %s\n", x, y)
		}
	}
	return sb.String()
}
