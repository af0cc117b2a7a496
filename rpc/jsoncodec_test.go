package rpc

import (
	"bytes"
	"compress/gzip"
	"encoding/base64"
	"errors"
	"net/http"
	"net/url"
	"strings"
	"testing"

	"connectrpc.com/connect"
	"google.golang.org/protobuf/encoding/protojson"
	"google.golang.org/protobuf/encoding/protowire"
	"google.golang.org/protobuf/proto"

	"github.com/creditd/creditd/fsm"
	v1 "github.com/creditd/creditd/gen/creditd/v1"
)

// jsonRefusal is a JSON body that must be refused with INVALID_ARGUMENT
// naming field, the message quoting reason.
type jsonRefusal struct {
	name, procedure, body, field, reason string
}

func jsonRefusals() []jsonRefusal {
	const (
		customer = "/creditd.v1.CatalogService/UpsertCustomer"
		plan     = "/creditd.v1.CatalogService/UpsertPlan"
		planHead = `{"plan":{"id":"pro","name":"Pro","creditTypeId":"ai-credits","currency":"USD","pricePerCredit":"0.01",`
	)
	return []jsonRefusal{
		// Enum names that are not the enum's: each used to be stored as the
		// enum's default.
		{"an auto top-up mode by its short name", customer,
			`{"id":"acme","planId":"pro","billingRef":"cus_123","autoTopUp":{"enabled":true,"threshold":"10","mode":"TO_TARGET","amount":"100"}}`,
			"auto_top_up.mode", `invalid value for enum field mode: "TO_TARGET"`},
		{"an overdraft policy by its short name", plan, planHead + `"overdraft":"ALLOW","overdraftLimit":"5"}}`,
			"plan.overdraft", `invalid value for enum field overdraft: "ALLOW"`},
		{"an invoice grant policy by its short name", plan, planHead + `"invoiceGrant":"ON_ISSUE"}}`,
			"plan.invoice_grant", `invalid value for enum field invoiceGrant: "ON_ISSUE"`},
		{"a plan's auto top-up mode misspelt", plan, planHead + `"autoTopUp":{"enabled":true,"threshold":"10","mode":"AUTO_TOP_UP_MODE_TO_TARGE","amount":"100"}}}`,
			"plan.auto_top_up.mode", `"AUTO_TOP_UP_MODE_TO_TARGE" (want one of AUTO_TOP_UP_MODE_FIXED, AUTO_TOP_UP_MODE_TO_TARGET, or its number)`},
		{"a consistency by its short name", "/creditd.v1.BalanceService/GetBalance",
			`{"customerId":"acme","creditTypeId":"ai-credits","consistency":"STALE"}`,
			"consistency", `invalid value for enum field consistency: "STALE"`},
		{"a grant category that does not exist", "/creditd.v1.GrantService/CreateGrant",
			`{"id":"j-grant","customerId":"acme","creditTypeId":"ai-credits","category":"GRANT_CATEGORY_FREE","amount":"1"}`,
			"category", `"GRANT_CATEGORY_FREE"`},
		// Unknown fields: each used to be dropped.
		{"a misspelt auto top-up threshold", customer,
			`{"id":"acme","planId":"pro","billingRef":"cus_123","autoTopUp":{"enabled":true,"threshhold":"10","amount":"100"}}`,
			"auto_top_up.threshhold", `unknown field "threshhold"`},
		{"a misspelt ttl", "/creditd.v1.UsageService/Reserve",
			`{"id":"j-1","customerId":"acme","featureId":"gpt-tokens","quantity":"1","tll":"600s"}`,
			"tll", `unknown field "tll"`},
		{"an unknown field of the third event", "/creditd.v1.UsageService/ReportUsage",
			`{"events":[{"id":"j-e0","customerId":"acme","featureId":"gpt-tokens","quantity":"1"},{"id":"j-e1","customerId":"acme","featureId":"gpt-tokens","quantity":"1"},{"id":"j-e2","customer":"acme","featureId":"gpt-tokens","quantity":"1"}]}`,
			"events[2].customer", `unknown field "customer"`},
		// Values that do not decode: each used to name no field.
		{"a ttl in Go's duration syntax", "/creditd.v1.UsageService/Reserve",
			`{"id":"j-1","customerId":"acme","featureId":"gpt-tokens","quantity":"1","ttl":"10m"}`,
			"ttl", `invalid google.protobuf.Duration value "10m"`},
		{"an expiry without a time of day", "/creditd.v1.GrantService/CreateGrant",
			`{"id":"j-grant","customerId":"acme","creditTypeId":"ai-credits","category":"GRANT_CATEGORY_PROMOTIONAL","amount":"1","expiresAt":"2099-01-01"}`,
			"expires_at", `invalid google.protobuf.Timestamp value "2099-01-01"`},
		{"a scale in words", "/creditd.v1.CatalogService/CreateCreditType",
			`{"id":"j-credits","name":"J","scale":"two"}`,
			"scale", `invalid value for uint32 field scale: "two"`},
		{"a rate as a JSON number", "/creditd.v1.CatalogService/UpsertFeature",
			`{"id":"j-feature","name":"J","creditTypeId":"ai-credits","rate":0.002}`,
			"rate", `invalid value for string field rate: 0.002`},
		{"a plan's price as a JSON number", plan,
			`{"plan":{"id":"pro","name":"Pro","creditTypeId":"ai-credits","currency":"USD","pricePerCredit":0.01}}`,
			"plan.price_per_credit", `invalid value for string field pricePerCredit: 0.01`},
		{"a quantity in words in the second event", "/creditd.v1.UsageService/ReportUsage",
			`{"events":[{"id":"j-e0","customerId":"acme","featureId":"gpt-tokens","quantity":"1"},{"id":"j-e1","customerId":"acme","featureId":"gpt-tokens","quantity":"lots"}]}`,
			"events[1].quantity", `invalid value for int64 field quantity: "lots"`},
		{"a bad value on the third line after non-ASCII names", customer,
			"{\n  \"id\": \"acme\", \"name\": \"Ācme ☃ 株式会社\", \"planId\": \"pro\",\n\t\"autoTopUp\": {\"enabled\": true, \"mode\": \"TARGET\"}\n}",
			"auto_top_up.mode", `invalid value for enum field mode: "TARGET"`},
		{"a field set twice", "/creditd.v1.UsageService/Reserve",
			`{"id":"j-1","customerId":"acme","featureId":"gpt-tokens","quantity":"1","ttl":"600s","ttl":"60s"}`,
			"ttl", `duplicate field "ttl"`},
	}
}

// TestJSONRequestsThatDoNotDecodeNameTheField: a JSON body with an enum name
// the enum does not have, a field the message does not have, or a value
// that does not decode is refused with INVALID_ARGUMENT, the message
// starting with the field's path and a FieldViolation naming it, as every
// other invalid argument; over HTTP/2 (Connect's JSON clients) with each
// JSON content type, and over HTTP/1.1 as curl sends it. Nothing is stored.
func TestJSONRequestsThatDoNotDecodeNameTheField(t *testing.T) {
	s := startSingle(t, nodeOpts{})
	c := newClients(s.url, "")
	setupCatalog(t, c)
	before := catalogState(t, c)
	for _, tc := range jsonRefusals() {
		t.Run(tc.name, func(t *testing.T) {
			for _, ct := range []string{"application/json", "application/json; charset=utf-8", "application/json; charset=UTF-8"} {
				err := rawPost(ctxT(t), s.url, tc.procedure, ct, []byte(tc.body), nil)
				if connect.CodeOf(err) != connect.CodeInvalidArgument || err == nil {
					t.Fatalf("%s: got %v, want InvalidArgument", ct, err)
				}
				ce := err.(*connect.Error)
				if !strings.HasPrefix(ce.Message(), tc.field+": ") || !strings.Contains(ce.Message(), tc.reason) {
					t.Errorf("%s: message %q, want it to start with %q and say %q", ct, ce.Message(), tc.field+": ", tc.reason)
				}
				if fv, derr := fieldDetail(ce); derr != nil || fv.Field != tc.field {
					t.Errorf("%s: FieldViolation = %v (%v), want field %q", ct, fv, derr, tc.field)
				}
			}
			code, out := (&curl{t: t, base: s.url}).post(tc.procedure, tc.body)
			msg, _ := out["message"].(string)
			if code != http.StatusBadRequest || out["code"] != "invalid_argument" || !strings.HasPrefix(msg, tc.field+": ") {
				t.Errorf("curl: %d %v, want 400 invalid_argument starting %q", code, out, tc.field+": ")
			}
			if d, _ := get(out, "details", "0", "type").(string); d != "creditd.v1.FieldViolation" {
				t.Errorf("curl: details %v, want a creditd.v1.FieldViolation", out["details"])
			}
		})
	}
	if after := catalogState(t, c); after != before {
		t.Errorf("refused requests changed the state:\n%s", lineDiff(before, after))
	}
}

// catalogState is what the refused requests of jsonRefusals could have
// changed, as text (there is no read of a plan).
func catalogState(t testing.TB, c *clients) string {
	t.Helper()
	var sb strings.Builder
	add := func(m proto.Message) {
		b, err := protojson.Marshal(m)
		if err != nil {
			t.Fatalf("marshal %T: %v", m, err)
		}
		sb.Write(b)
		sb.WriteByte('\n')
	}
	cu := call(t, c.catalog.GetCustomer, &v1.GetCustomerRequest{Id: "acme"})
	cu.AppliedIndex = 0
	add(cu)
	gs := call(t, c.grant.ListGrants, &v1.ListGrantsRequest{PageSize: 1000})
	gs.AppliedIndex = 0
	add(gs)
	fs := call(t, c.catalog.ListFeatures, &v1.ListFeaturesRequest{})
	fs.AppliedIndex = 0
	add(fs)
	return sb.String()
}

// TestJSONRequestsThatDecodeAreAccepted: enum values by their full names
// or numbers, fields by their JSON or proto names, are accepted and stored
// as sent, from curl, from raw HTTP/2 posts and from Connect's own JSON
// client; binary protobuf clients still have fields they do not know
// skipped, as protobuf does.
func TestJSONRequestsThatDecodeAreAccepted(t *testing.T) {
	s := startSingle(t, nodeOpts{})
	c := newClients(s.url, "")
	setupCatalog(t, c)
	cu := &curl{t: t, base: s.url}

	p := cu.ok("/creditd.v1.CatalogService/UpsertPlan", `{"plan":{"id":"pro","name":"Pro","creditTypeId":"ai-credits","currency":"USD","pricePerCredit":"0.01",`+
		`"overdraft":"OVERDRAFT_POLICY_ALLOW","overdraftLimit":"5","invoiceGrant":2,"auto_top_up":{"enabled":true,"threshold":"10","mode":2,"amount":"100"}}}`)
	if get(p, "plan", "overdraft") != "OVERDRAFT_POLICY_ALLOW" || get(p, "plan", "invoiceGrant") != "INVOICE_GRANT_POLICY_ON_ISSUE" ||
		get(p, "plan", "autoTopUp", "mode") != "AUTO_TOP_UP_MODE_TO_TARGET" {
		t.Fatalf("UpsertPlan = %v", p)
	}
	cust := `{"id":"acme","plan_id":"pro","billingRef":"cus_123","autoTopUp":{"enabled":true,"threshold":"10","mode":"AUTO_TOP_UP_MODE_TO_TARGET","amount":"100","monthly_cap":"50"}}`
	for _, ct := range []string{"application/json", "application/json; charset=utf-8"} {
		if err := rawPost(ctxT(t), s.url, "/creditd.v1.CatalogService/UpsertCustomer", ct, []byte(cust), nil); err != nil {
			t.Fatalf("UpsertCustomer as %s: %v", ct, err)
		}
	}
	got := call(t, c.catalog.GetCustomer, &v1.GetCustomerRequest{Id: "acme"}).Customer
	if got.AutoTopUp.GetMode() != v1.AutoTopUpMode_AUTO_TOP_UP_MODE_TO_TARGET || got.AutoTopUp.GetMonthlyCap() != "50.00" {
		t.Fatalf("customer = %v", got)
	}
	r := cu.ok("/creditd.v1.UsageService/Reserve", `{"id":"j-1","customerId":"acme","featureId":"gpt-tokens","quantity":"1","ttl":"600s"}`)
	if get(r, "reservation", "id") != "j-1" {
		t.Fatalf("Reserve = %v", r)
	}

	// Connect's JSON client, over HTTP/2: requests and answers both ways.
	jc := newClients(s.url, "", connect.WithProtoJSON())
	jp := call(t, jc.catalog.UpsertPlan, &v1.UpsertPlanRequest{Plan: &v1.Plan{Id: "pro", Name: "Pro", CreditTypeId: "ai-credits",
		Currency: "USD", PricePerCredit: "0.01", Overdraft: v1.OverdraftPolicy_OVERDRAFT_POLICY_DENY, InvoiceGrant: v1.InvoiceGrantPolicy_INVOICE_GRANT_POLICY_ON_PAYMENT}})
	if jp.Plan.Overdraft != v1.OverdraftPolicy_OVERDRAFT_POLICY_DENY || jp.Plan.InvoiceGrant != v1.InvoiceGrantPolicy_INVOICE_GRANT_POLICY_ON_PAYMENT {
		t.Fatalf("UpsertPlan over Connect JSON = %v", jp.Plan)
	}
	if ce := callErr(t, jc.usage.Reserve, &v1.ReserveRequest{Id: "bad id!", CustomerId: "acme", FeatureId: "gpt-tokens", Quantity: 1}); ce == nil ||
		ce.Code() != connect.CodeInvalidArgument || !strings.HasPrefix(ce.Message(), "id: ") {
		t.Fatalf("a bad id over Connect JSON: %v, want InvalidArgument naming id", ce)
	}

	// A binary client built against a newer .proto: the field this server
	// does not know is skipped, as protobuf does.
	b, err := proto.Marshal(&v1.UpsertFeatureRequest{Id: "bin-feature", Name: "Bin", CreditTypeId: "ai-credits", Rate: "1"})
	if err != nil {
		t.Fatal(err)
	}
	b = protowire.AppendTag(b, 99, protowire.BytesType)
	b = protowire.AppendString(b, "a field of a later version")
	if err := rawPost(ctxT(t), s.url, "/creditd.v1.CatalogService/UpsertFeature", "application/proto", b, nil); err != nil {
		t.Fatalf("binary UpsertFeature with an unknown field: %v", err)
	}
	feats := call(t, c.catalog.ListFeatures, &v1.ListFeaturesRequest{})
	found := false
	for _, f := range feats.Features {
		found = found || f.Id == "bin-feature"
	}
	if !found {
		t.Fatalf("the binary UpsertFeature stored nothing: %v", feats.Features)
	}
}

// fixedJSON is a client codec that sends body whatever the message, as a
// hand-written JSON client of any protocol would.
type fixedJSON struct{ body string }

func (fixedJSON) Name() string                  { return "json" }
func (c fixedJSON) Marshal(any) ([]byte, error) { return []byte(c.body), nil }
func (fixedJSON) IsBinary() bool                { return false }
func (fixedJSON) Unmarshal(b []byte, m any) error {
	return protojson.UnmarshalOptions{DiscardUnknown: true}.Unmarshal(b, m.(proto.Message))
}

// TestJSONOverEveryProtocolNamesTheField: gRPC and gRPC-Web clients
// speaking JSON, and Connect's streaming JSON (WatchEntries), have a
// message that does not decode refused the same way, over HTTP/2.
func TestJSONOverEveryProtocolNamesTheField(t *testing.T) {
	s := startSingle(t, nodeOpts{})
	c := newClients(s.url, "")
	setupCatalog(t, c)
	call(t, c.grant.CreateGrant, &v1.CreateGrantRequest{Id: "g1", CustomerId: "acme", CreditTypeId: "ai-credits",
		Category: v1.GrantCategory_GRANT_CATEGORY_PROMOTIONAL, Amount: "10"})
	check := func(t *testing.T, err error, field, reason string) {
		t.Helper()
		ce := new(connect.Error)
		if !errors.As(err, &ce) || ce.Code() != connect.CodeInvalidArgument {
			t.Fatalf("got %v, want InvalidArgument", err)
		}
		if !strings.HasPrefix(ce.Message(), field+": ") || !strings.Contains(ce.Message(), reason) {
			t.Errorf("message %q, want it to start with %q and say %q", ce.Message(), field+": ", reason)
		}
		if fv, derr := fieldDetail(ce); derr != nil || fv.Field != field {
			t.Errorf("FieldViolation = %v (%v), want field %q", fv, derr, field)
		}
	}
	for _, p := range []struct {
		name  string
		opt   connect.ClientOption
		unary bool // Connect unary JSON: TestJSONRequestsThatDoNotDecodeNameTheField
	}{
		{"grpc", connect.WithGRPC(), true},
		{"grpc-web", connect.WithGRPCWeb(), true},
		{"connect", nil, false},
	} {
		opts := func(body string) []connect.ClientOption {
			o := []connect.ClientOption{connect.WithCodec(fixedJSON{body})}
			if p.opt != nil {
				o = append(o, p.opt)
			}
			return o
		}
		t.Run(p.name+"/Reserve", func(t *testing.T) {
			if !p.unary {
				return
			}
			c := newClients(s.url, "", opts(`{"id":"j-1","customerId":"acme","featureId":"gpt-tokens","quantity":"1","ttl":"10m"}`)...)
			_, err := c.usage.Reserve(ctxT(t), connect.NewRequest(&v1.ReserveRequest{}))
			check(t, err, "ttl", `invalid google.protobuf.Duration value "10m"`)
		})
		t.Run(p.name+"/WatchEntries", func(t *testing.T) {
			c := newClients(s.url, "", opts(`{"customerId":"acme","fromSequence":"1"}`)...)
			st, err := c.ledger.WatchEntries(ctxT(t), connect.NewRequest(&v1.WatchEntriesRequest{}))
			if err == nil {
				// The ledger has an entry: a stream that was opened sends it.
				if st.Receive() {
					t.Fatalf("the stream was opened: %v", st.Msg())
				}
				err = st.Err()
				st.Close()
			}
			check(t, err, "fromSequence", `unknown field "fromSequence"`)
		})
	}
}

// TestJSONErrorsWithoutAFieldKeepProtojsonsMessage: a failure the field
// path cannot be found for (not an object, not JSON up to the failure, cut
// short) is protojson's error as before, and nothing panics.
func TestJSONErrorsWithoutAFieldKeepProtojsonsMessage(t *testing.T) {
	for _, body := range []string{
		`[]`, `"events"`, `1`, `null`, `{"events":[`, `{"events":[{"id":"e","quantity":12x}]}`, `{"events":[{"id":"e"}]} {}`,
		`{"id":`, "{\n\n", `{"events":[[1]]}`, `{"events":{"id":"e"}}`, "{\"id\":\"\xff\",\"x\":1}",
	} {
		var fe *fsm.Error
		err := decodeJSON([]byte(body), &v1.ReportUsageRequest{})
		if err == nil {
			t.Errorf("%q decoded", body)
			continue
		}
		if errors.As(err, &fe) {
			t.Logf("%q: field %q: %v", body, fe.Field, err)
			if fe.Field == "" || !strings.HasPrefix(err.Error(), fe.Field+": ") {
				t.Errorf("%q: %v names no field", body, err)
			}
		} else if !strings.HasPrefix(err.Error(), "unmarshal into *creditdv1.ReportUsageRequest: proto") {
			t.Errorf("%q: %v, want protojson's error", body, err)
		}
	}
}

// FuzzJSONFieldPath: whatever the body, decodeJSON does not panic, and an
// error naming a field starts with it.
func FuzzJSONFieldPath(f *testing.F) {
	for _, r := range jsonRefusals() {
		f.Add([]byte(r.body))
	}
	f.Add([]byte(`{"events":[{"id":"e","quantity":"1"},{"quantity":1.5}]}`))
	f.Add([]byte(`{"":`))
	f.Fuzz(func(t *testing.T, b []byte) {
		for _, m := range []proto.Message{&v1.ReportUsageRequest{}, &v1.UpsertPlanRequest{}, &v1.ReserveRequest{}} {
			err := decodeJSON(b, m)
			var fe *fsm.Error
			if errors.As(err, &fe) && (fe.Field == "" || !strings.HasPrefix(err.Error(), fe.Field+": ")) {
				t.Fatalf("%q: %v", b, err)
			}
		}
	})
}

// stableFixedJSON is fixedJSON for Connect's GET requests, which a client
// sends only with a codec that marshals stably.
type stableFixedJSON struct{ fixedJSON }

func (c stableFixedJSON) MarshalStable(m any) ([]byte, error) { return c.Marshal(m) }

// gzipped is body compressed with gzip.
func gzipped(t *testing.T, body string) []byte {
	t.Helper()
	var b bytes.Buffer
	zw := gzip.NewWriter(&b)
	if _, err := zw.Write([]byte(body)); err != nil {
		t.Fatal(err)
	}
	if err := zw.Close(); err != nil {
		t.Fatal(err)
	}
	return b.Bytes()
}

// TestCompressedAndGETJSONRequestsNameTheField: a JSON message that does
// not decode is refused with INVALID_ARGUMENT naming its field, with a
// FieldViolation, also when its body is compressed (Connect's
// Content-Encoding and Connect-Content-Encoding, gRPC's and gRPC-Web's
// grpc-encoding) and when it comes in a Connect GET's query string (the
// idempotent reads), plain, in base64 or compressed; from Connect's own
// clients over HTTP/2 and from requests built by hand, over HTTP/2 and
// HTTP/1.1. Each was refused with the codec's "unmarshal message: ..."
// and no detail.
func TestCompressedAndGETJSONRequestsNameTheField(t *testing.T) {
	s := startSingle(t, nodeOpts{})
	setupCatalog(t, newClients(s.url, ""))
	const (
		reserve      = `{"id":"j-1","customerId":"acme","featureId":"gpt-tokens","quantity":"1","ttl":"10m"}`
		balance      = `{"customerId":"acme","creditTypeId":"ai-credits","consistency":"STALE"}`
		watch        = `{"customerId":"acme","fromSequence":"1"}`
		balancePath  = "/creditd.v1.BalanceService/GetBalance"
		reservePath  = "/creditd.v1.UsageService/Reserve"
		ttlReason    = `invalid google.protobuf.Duration value "10m"`
		stale        = `invalid value for enum field consistency: "STALE"`
		fromSequence = `unknown field "fromSequence"`
	)
	var http1 http.Client // HTTP/1.1 only, as curl on http://
	defer http1.CloseIdleConnections()
	get := func(hc *http.Client, query url.Values) func(t *testing.T) error {
		return func(t *testing.T) error {
			req, err := http.NewRequestWithContext(ctxT(t), http.MethodGet, s.url+balancePath+"?"+query.Encode(), nil)
			if err != nil {
				t.Fatal(err)
			}
			return rawDo(hc, req)
		}
	}
	getQuery := func(message string, base64Encoded, compressed bool) url.Values {
		q := url.Values{"connect": {"v1"}, "encoding": {"json"}, "message": {message}}
		if compressed {
			q.Set("compression", "gzip")
		}
		if base64Encoded {
			q.Set("base64", "1")
		}
		return q
	}
	connectClient := func(body string, opts ...connect.ClientOption) *clients {
		return newClients(s.url, "", append([]connect.ClientOption{connect.WithCodec(fixedJSON{body})}, opts...)...)
	}
	for _, tc := range []struct {
		name          string
		send          func(t *testing.T) error
		field, reason string
	}{
		{"Connect unary, Content-Encoding gzip, by hand", func(t *testing.T) error {
			return rawPost(ctxT(t), s.url, reservePath, "application/json", gzipped(t, reserve), http.Header{"Content-Encoding": {"gzip"}})
		}, "ttl", ttlReason},
		{"Connect unary, Content-Encoding gzip, Connect's client", func(t *testing.T) error {
			_, err := connectClient(reserve, connect.WithSendGzip()).usage.Reserve(ctxT(t), connect.NewRequest(&v1.ReserveRequest{}))
			return err
		}, "ttl", ttlReason},
		{"gRPC, grpc-encoding gzip", func(t *testing.T) error {
			_, err := connectClient(reserve, connect.WithGRPC(), connect.WithSendGzip()).usage.Reserve(ctxT(t), connect.NewRequest(&v1.ReserveRequest{}))
			return err
		}, "ttl", ttlReason},
		{"gRPC-Web, grpc-encoding gzip", func(t *testing.T) error {
			_, err := connectClient(reserve, connect.WithGRPCWeb(), connect.WithSendGzip()).usage.Reserve(ctxT(t), connect.NewRequest(&v1.ReserveRequest{}))
			return err
		}, "ttl", ttlReason},
		{"Connect streaming, Connect-Content-Encoding gzip", func(t *testing.T) error {
			st, err := connectClient(watch, connect.WithSendGzip()).ledger.WatchEntries(ctxT(t), connect.NewRequest(&v1.WatchEntriesRequest{}))
			if err != nil {
				return err
			}
			defer st.Close()
			if st.Receive() {
				t.Fatalf("the stream was opened: %v", st.Msg())
			}
			return st.Err()
		}, "fromSequence", fromSequence},
		{"Connect GET, Connect's client", func(t *testing.T) error {
			c := newClients(s.url, "", connect.WithCodec(stableFixedJSON{fixedJSON{balance}}), connect.WithHTTPGet())
			_, err := c.balance.GetBalance(ctxT(t), connect.NewRequest(&v1.GetBalanceRequest{}))
			return err
		}, "consistency", stale},
		{"Connect GET, by hand over HTTP/2", get(h2c(), getQuery(balance, false, false)), "consistency", stale},
		{"Connect GET, by hand over HTTP/1.1", get(&http1, getQuery(balance, false, false)), "consistency", stale},
		{"Connect GET, base64", get(h2c(), getQuery(base64.RawURLEncoding.EncodeToString([]byte(balance)), true, false)), "consistency", stale},
		{"Connect GET, gzip", get(h2c(), getQuery(base64.RawURLEncoding.EncodeToString(gzipped(t, balance)), true, true)), "consistency", stale},
	} {
		t.Run(tc.name, func(t *testing.T) {
			err := tc.send(t)
			ce := new(connect.Error)
			if !errors.As(err, &ce) || ce.Code() != connect.CodeInvalidArgument {
				t.Fatalf("got %v, want InvalidArgument", err)
			}
			if !strings.HasPrefix(ce.Message(), tc.field+": ") || !strings.Contains(ce.Message(), tc.reason) {
				t.Errorf("message %q, want it to start with %q and say %q", ce.Message(), tc.field+": ", tc.reason)
			}
			if fv, derr := fieldDetail(ce); derr != nil || fv.Field != tc.field {
				t.Errorf("FieldViolation = %v (%v), want field %q", fv, derr, tc.field)
			}
		})
	}

	// The same ways with a message that decodes are answered.
	good := `{"customerId":"acme","creditTypeId":"ai-credits","consistency":"CONSISTENCY_STALE"}`
	for name, send := range map[string]func(t *testing.T) error{
		"Connect unary, Content-Encoding gzip": func(t *testing.T) error {
			return rawPost(ctxT(t), s.url, balancePath, "application/json", gzipped(t, good), http.Header{"Content-Encoding": {"gzip"}})
		},
		"gRPC, grpc-encoding gzip": func(t *testing.T) error {
			_, err := connectClient(good, connect.WithGRPC(), connect.WithSendGzip()).balance.GetBalance(ctxT(t), connect.NewRequest(&v1.GetBalanceRequest{}))
			return err
		},
		"Connect GET, Connect's client": func(t *testing.T) error {
			c := newClients(s.url, "", connect.WithProtoJSON(), connect.WithHTTPGet())
			_, err := c.balance.GetBalance(ctxT(t), connect.NewRequest(&v1.GetBalanceRequest{CustomerId: "acme", CreditTypeId: "ai-credits"}))
			return err
		},
		"Connect GET, gzip": get(h2c(), getQuery(base64.URLEncoding.EncodeToString(gzipped(t, good)), true, true)),
	} {
		if err := send(t); err != nil {
			t.Errorf("%s: %v", name, err)
		}
	}
}
