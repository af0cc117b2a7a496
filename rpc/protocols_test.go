package rpc

import (
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"os"
	"slices"
	"strconv"
	"strings"
	"testing"

	"connectrpc.com/connect"
	"connectrpc.com/grpchealth"
	"connectrpc.com/grpcreflect"
	"google.golang.org/protobuf/reflect/protoreflect"

	v1 "github.com/creditd/creditd/gen/creditd/v1"
	"github.com/creditd/creditd/gen/creditd/v1/creditdv1connect"
)

// curl is what `curl -H 'Content-Type: application/json' -d BODY URL/PATH`
// does: one HTTP/1.1 POST with a JSON body.
type curl struct {
	t          testing.TB
	base       string
	key        string
	transcript *strings.Builder
}

func (c *curl) post(path, body string) (int, map[string]any) {
	c.t.Helper()
	req, err := http.NewRequestWithContext(ctxT(c.t), http.MethodPost, c.base+path, strings.NewReader(body))
	if err != nil {
		c.t.Fatal(err)
	}
	req.Header.Set("Content-Type", "application/json")
	if c.key != "" {
		req.Header.Set("Authorization", "Bearer "+c.key)
	}
	hc := &http.Client{Transport: &http.Transport{}} // HTTP/1.1 only, like curl on http://
	defer hc.CloseIdleConnections()
	res, err := hc.Do(req)
	if err != nil {
		c.t.Fatalf("POST %s: %v", path, err)
	}
	defer res.Body.Close()
	if res.ProtoMajor != 1 {
		c.t.Fatalf("POST %s went over %s, want HTTP/1.1", path, res.Proto)
	}
	raw, err := io.ReadAll(res.Body)
	if err != nil {
		c.t.Fatal(err)
	}
	var out map[string]any
	if err := json.Unmarshal(raw, &out); err != nil {
		c.t.Fatalf("POST %s: %d %q is not JSON: %v", path, res.StatusCode, raw, err)
	}
	if c.transcript != nil {
		var pretty bytes.Buffer
		_ = json.Indent(&pretty, raw, "", "  ")
		fmt.Fprintf(c.transcript, "$ curl -s -H 'Content-Type: application/json' \\\n    -d '%s' \\\n    http://127.0.0.1:7420%s\n%s\n\n", body, path, pretty.String())
	}
	return res.StatusCode, out
}

func (c *curl) ok(path, body string) map[string]any {
	c.t.Helper()
	code, out := c.post(path, body)
	if code != http.StatusOK {
		c.t.Fatalf("POST %s: %d %v", path, code, out)
	}
	return out
}

func get(m map[string]any, path ...string) any {
	var v any = m
	for _, p := range path {
		switch x := v.(type) {
		case map[string]any:
			v = x[p]
		case []any:
			var i int
			fmt.Sscan(p, &i)
			if i >= len(x) {
				return nil
			}
			v = x[i]
		default:
			return nil
		}
	}
	return v
}

// TestGoLiveWithJSONOverHTTP1 is the README's walkthrough, as curl sends
// it. With CREDITD_WALKTHROUGH=file it writes the transcript there.
func TestGoLiveWithJSONOverHTTP1(t *testing.T) {
	s := startSingle(t, nodeOpts{})
	c := &curl{t: t, base: s.url}
	if os.Getenv("CREDITD_WALKTHROUGH") != "" {
		c.transcript = &strings.Builder{}
	}
	c.ok("/creditd.v1.CatalogService/CreateCreditType", `{"id":"ai-credits","name":"AI credits","scale":2}`)
	c.ok("/creditd.v1.CatalogService/UpsertFeature", `{"id":"gpt-tokens","name":"GPT tokens","creditTypeId":"ai-credits","rate":"0.002"}`)
	c.ok("/creditd.v1.CatalogService/UpsertPlan", `{"plan":{"id":"pro","name":"Pro","creditTypeId":"ai-credits","currency":"USD","pricePerCredit":"0.01","minPurchase":"100","defaultExpiry":"31536000s"}}`)
	c.ok("/creditd.v1.CatalogService/UpsertCustomer", `{"id":"acme","name":"Acme Inc.","planId":"pro"}`)
	g := c.ok("/creditd.v1.GrantService/CreateGrant", `{"id":"acme-paid-1","customerId":"acme","creditTypeId":"ai-credits","category":"GRANT_CATEGORY_PAID","amount":"1000","costBasis":"0.01","currency":"USD"}`)
	if get(g, "grant", "remaining") != "1000.00" || get(g, "grant", "deferred") != "10.00" {
		t.Fatalf("paid grant = %v", g)
	}
	c.ok("/creditd.v1.GrantService/CreateGrant", `{"id":"acme-welcome","customerId":"acme","creditTypeId":"ai-credits","category":"GRANT_CATEGORY_PROMOTIONAL","amount":"50","expiresAt":"2099-01-01T00:00:00Z"}`)
	u := c.ok("/creditd.v1.UsageService/ReportUsage", `{"events":[{"id":"req-1","customerId":"acme","featureId":"gpt-tokens","quantity":"12000"}]}`)
	if get(u, "results", "0", "status") != "EVENT_STATUS_BURNED" || get(u, "results", "0", "credits") != "24.00" ||
		get(u, "results", "0", "burns", "0", "grantId") != "acme-welcome" || get(u, "results", "0", "balanceAfter") != "1026.00" {
		t.Fatalf("ReportUsage = %v", u)
	}
	// 1,000,000 tokens = 2,000 credits > 1,026 available. (JSON leaves
	// out false booleans.)
	ck := c.ok("/creditd.v1.UsageService/Check", `{"customerId":"acme","featureId":"gpt-tokens","quantity":"1000000"}`)
	if get(ck, "allowed") != nil || get(ck, "credits") != "2000.00" || get(ck, "available") != "1026.00" {
		t.Fatalf("Check of 2000 credits = %v, want not allowed", ck)
	}
	c.ok("/creditd.v1.UsageService/Reserve", `{"id":"job-7","customerId":"acme","featureId":"gpt-tokens","quantity":"50000","ttl":"600s"}`)
	st := c.ok("/creditd.v1.UsageService/Settle", `{"reservationId":"job-7","quantity":"41000"}`)
	if get(st, "reservation", "settledAmount") != "82.00" {
		t.Fatalf("Settle = %v", st)
	}
	rv := c.ok("/creditd.v1.GrantService/RevokeGrant", `{"grantId":"acme-paid-1","amount":"100","reason":"partial refund","requestId":"refund-1"}`)
	if get(rv, "grant", "revoked") != "100.00" {
		t.Fatalf("RevokeGrant = %v", rv)
	}
	b := c.ok("/creditd.v1.BalanceService/GetBalance", `{"customerId":"acme","creditTypeId":"ai-credits"}`)
	// 1050 granted − 24 − 82 burned − 100 revoked
	if get(b, "balance") != "844.00" || get(b, "available") != "844.00" {
		t.Fatalf("GetBalance = %v", b)
	}
	l := c.ok("/creditd.v1.LedgerService/ListEntries", `{"customerId":"acme"}`)
	if n := len(get(l, "entries").([]any)); n != 6 { // the settlement spans two grants
		t.Fatalf("ListEntries: %d entries, want 6: %v", n, l)
	}
	// An error as curl shows it: HTTP 400, a code, the field.
	code, e := c.post("/creditd.v1.UsageService/ReportUsage", `{"events":[{"id":"bad id!","customerId":"acme","featureId":"gpt-tokens","quantity":"1"}]}`)
	if code != http.StatusBadRequest || e["code"] != "invalid_argument" || !strings.HasPrefix(e["message"].(string), "events[0].id: ") {
		t.Fatalf("bad event id: %d %v", code, e)
	}
	code, e = c.post("/creditd.v1.UsageService/Reserve", `{"id":"job-8","customerId":"acme","creditTypeId":"ai-credits","credits":"5000"}`)
	if code != http.StatusBadRequest || e["code"] != "failed_precondition" {
		t.Fatalf("reserve too much: %d %v", code, e)
	}
	if path := os.Getenv("CREDITD_WALKTHROUGH"); path != "" {
		if err := os.WriteFile(path, []byte(c.transcript.String()), 0o644); err != nil {
			t.Fatal(err)
		}
	}
}

// TestReportUsageOverGRPC uses the gRPC protocol, as grpc-go clients do,
// and gRPC-Web, as browsers do, on the same port.
func TestReportUsageOverGRPC(t *testing.T) {
	s := startSingle(t, nodeOpts{})
	setupCatalog(t, newClients(s.url, ""))
	call(t, newClients(s.url, "").grant.CreateGrant, &v1.CreateGrantRequest{Id: "g1", CustomerId: "acme", CreditTypeId: "ai-credits",
		Category: v1.GrantCategory_GRANT_CATEGORY_PROMOTIONAL, Amount: "10"})
	for i, tc := range []struct {
		name     string
		protocol connect.ClientOption
		balance  string
	}{
		{"grpc", connect.WithGRPC(), "7.00"},
		{"grpc-web", connect.WithGRPCWeb(), "4.00"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c := newClients(s.url, "", tc.protocol)
			r := call(t, c.usage.ReportUsage, &v1.ReportUsageRequest{Events: []*v1.UsageEvent{
				{Id: fmt.Sprint("e", i), CustomerId: "acme", FeatureId: "gpt-tokens", Quantity: 1500},
			}})
			if e := r.Results[0]; e.Status != v1.EventStatus_EVENT_STATUS_BURNED || e.Credits != "3.00" || e.BalanceAfter != tc.balance {
				t.Fatalf("ReportUsage = %v", e)
			}
			ce := callErr(t, c.usage.ReportUsage, &v1.ReportUsageRequest{})
			if ce == nil || ce.Code() != connect.CodeInvalidArgument {
				t.Fatalf("empty batch: %v, want InvalidArgument", ce)
			}
			if fv, err := fieldDetail(ce); err != nil || fv.Field != "events" {
				t.Fatalf("empty batch detail: %v %v", fv, err)
			}
		})
	}
}

// TestHealthReflectionAndProbes covers the gRPC health check, server
// reflection (what grpcurl uses), /healthz, /readyz and /metrics.
func TestHealthReflectionAndProbes(t *testing.T) {
	s := startSingle(t, nodeOpts{})
	hc := grpchealth.NewClient(h2c(), s.url, connect.WithGRPC())
	for _, svc := range []string{"", "creditd.v1.UsageService"} {
		res, err := hc.Check(ctxT(t), &grpchealth.CheckRequest{Service: svc})
		if err != nil || res.Status != grpchealth.StatusServing {
			t.Fatalf("health check %q: %v %v", svc, res, err)
		}
	}
	if _, err := hc.Check(ctxT(t), &grpchealth.CheckRequest{Service: "no.Such"}); connect.CodeOf(err) != connect.CodeNotFound {
		t.Fatalf("health of an unknown service: %v, want NotFound", err)
	}

	rc := grpcreflect.NewClient(h2c(), s.url, connect.WithGRPC())
	stream := rc.NewStream(ctxT(t))
	defer stream.Close()
	names, err := stream.ListServices()
	if err != nil {
		t.Fatalf("reflection ListServices: %v", err)
	}
	for _, want := range serviceNames {
		if !slices.ContainsFunc(names, func(n protoreflect.FullName) bool { return string(n) == want }) {
			t.Fatalf("reflection lists %v, missing %s", names, want)
		}
	}
	files, err := stream.FileContainingSymbol("creditd.v1.UsageService")
	if err != nil || len(files) == 0 {
		t.Fatalf("reflection FileContainingSymbol: %v %v", files, err)
	}

	for path, want := range map[string]string{"/healthz": "ok", "/readyz": "ready", "/metrics": "creditd_rpc_requests_total"} {
		res, err := http.Get(s.url + path)
		if err != nil {
			t.Fatal(err)
		}
		body, _ := io.ReadAll(res.Body)
		res.Body.Close()
		if res.StatusCode != http.StatusOK || !strings.Contains(string(body), want) {
			t.Fatalf("GET %s = %d %q, want 200 containing %q", path, res.StatusCode, body, want)
		}
	}
}

// TestExtraRoutes mounts a route the way billing mounts its webhook.
func TestExtraRoutes(t *testing.T) {
	hook := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { w.WriteHeader(http.StatusAccepted) })
	s := startSingle(t, nodeOpts{rpc: Options{Extra: map[string]http.Handler{"POST /webhooks/stripe": hook}}})
	res, err := http.Post(s.url+"/webhooks/stripe", "application/json", strings.NewReader("{}"))
	if err != nil {
		t.Fatal(err)
	}
	res.Body.Close()
	if res.StatusCode != http.StatusAccepted {
		t.Fatalf("POST /webhooks/stripe = %d, want 202", res.StatusCode)
	}
}

// TestProbesSayWhyANodeIsNotReady: a node that knows no leader answers
// /readyz with 503 and the reason, NOT_SERVING over gRPC health, and the
// same reason in GetStatus.
func TestProbesSayWhyANodeIsNotReady(t *testing.T) {
	s := startServer(t, "lone", nodeOpts{}) // no bootstrap, no join: it never learns of a leader
	res, err := http.Get(s.url + "/readyz")
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(res.Body)
	res.Body.Close()
	if res.StatusCode != http.StatusServiceUnavailable || !strings.Contains(string(body), "not ready: no leader known") {
		t.Fatalf("GET /readyz = %d %q, want 503 saying no leader is known", res.StatusCode, body)
	}
	hc := grpchealth.NewClient(h2c(), s.url, connect.WithGRPC())
	hres, err := hc.Check(ctxT(t), &grpchealth.CheckRequest{})
	if err != nil || hres.Status != grpchealth.StatusNotServing {
		t.Fatalf("health check: %v %v, want NOT_SERVING", hres, err)
	}
	cc := creditdv1connect.NewClusterServiceClient(h2c(), s.url)
	st, err := cc.GetStatus(ctxT(t), connect.NewRequest(&v1.GetStatusRequest{}))
	if err != nil {
		t.Fatal(err)
	}
	if st.Msg.Ready || st.Msg.NotReadyReason != "no leader known" {
		t.Fatalf("status: ready %v, reason %q; want not ready, no leader known", st.Msg.Ready, st.Msg.NotReadyReason)
	}
}

// TestMetricsCountTheNodesWrites: /metrics carries the node's write totals,
// so a dashboard can tell time to commit from time to apply.
func TestMetricsCountTheNodesWrites(t *testing.T) {
	s := startSingle(t, nodeOpts{})
	before := s.n.WriteStats()
	c := newClients(s.url, "")
	for _, id := range []string{"ai-credits", "gpu-hours"} {
		if _, err := c.catalog.CreateCreditType(ctxT(t), connect.NewRequest(&v1.CreateCreditTypeRequest{Id: id, Name: id, Scale: 2})); err != nil {
			t.Fatal(err)
		}
	}
	res, err := http.Get(s.url + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(res.Body)
	res.Body.Close()
	values := map[string]float64{}
	for _, line := range strings.Split(string(body), "\n") {
		name, v, ok := strings.Cut(line, " ")
		if !ok || strings.HasPrefix(name, "#") || !strings.HasPrefix(name, "creditd_write_") {
			continue
		}
		f, err := strconv.ParseFloat(v, 64)
		if err != nil {
			t.Fatalf("metric line %q: %v", line, err)
		}
		values[name] = f
	}
	// Ticks are writes too, so at least the two above.
	for _, name := range []string{"creditd_write_entries_total", "creditd_write_commands_total", "creditd_write_applied_entries_total"} {
		if values[name] < float64(before.Applied)+2 {
			t.Errorf("%s = %v after %d entries and two writes; want at least %d (metrics: %v)", name, values[name], before.Applied, before.Applied+2, values)
		}
	}
	for _, name := range []string{"creditd_write_commit_seconds_sum", "creditd_write_apply_seconds_sum"} {
		if values[name] <= 0 {
			t.Errorf("%s = %v after writes; want a positive time (metrics: %v)", name, values[name], values)
		}
	}
}
