package rpc

import (
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"math/rand/v2"
	"net/http"
	"testing"

	"google.golang.org/protobuf/proto"

	v1 "github.com/creditd/creditd/gen/creditd/v1"
)

// randomJSON builds a JSON document from a seed: objects whose keys are
// mostly real field names of the two requests, with values of every JSON
// type, nested a little, sometimes huge or odd.
func randomJSON(seed uint64) []byte {
	r := rand.New(rand.NewPCG(seed, seed^0x9e3779b97f4a7c15))
	keys := []string{"id", "customerId", "customer_id", "creditTypeId", "featureId", "quantity", "credits", "amount",
		"category", "costBasis", "currency", "priority", "effectiveAt", "expiresAt", "sourceKind", "eventTime", "events", "x"}
	var value func(depth int) any
	value = func(depth int) any {
		switch r.IntN(12) {
		case 0:
			return nil
		case 1:
			return r.IntN(2) == 0
		case 2:
			return r.Int64() - r.Int64()
		case 3:
			return r.Float64() * 1e30
		case 4:
			return fmt.Sprint(r.IntN(1e6), ".", r.IntN(1e6))
		case 5:
			return []string{"", "acme", "ai-credits", "gpt-tokens", "-1", "1e9", "GRANT_CATEGORY_PAID", "2026-01-01T00:00:00Z", "USD", "\u0000\uffff"}[r.IntN(10)]
		case 6:
			return string(bytes.Repeat([]byte("9"), r.IntN(300)))
		case 7, 8:
			if depth > 2 {
				return "x"
			}
			n := r.IntN(4)
			a := make([]any, n)
			for i := range a {
				a[i] = value(depth + 1)
			}
			return a
		default:
			if depth > 2 {
				return 1
			}
			m := map[string]any{}
			for range r.IntN(8) {
				m[keys[r.IntN(len(keys))]] = value(depth + 1)
			}
			return m
		}
	}
	m := map[string]any{}
	for range 1 + r.IntN(10) {
		m[keys[r.IntN(len(keys))]] = value(0)
	}
	b, _ := json.Marshal(m)
	return b
}

// FuzzReportUsageAndCreateGrant sends random bytes (as protobuf and as
// JSON) and random JSON documents to ReportUsage and CreateGrant: every
// answer must be a well-formed response or a client error, never a
// panic (a dropped connection) or an internal error.
func FuzzReportUsageAndCreateGrant(f *testing.F) {
	s := startSingle(f, nodeOpts{})
	setupCatalog(f, newClients(s.url, ""))
	good, _ := proto.Marshal(&v1.ReportUsageRequest{Events: []*v1.UsageEvent{{Id: "e", CustomerId: "acme", FeatureId: "gpt-tokens", Quantity: 3}}})
	grant, _ := proto.Marshal(&v1.CreateGrantRequest{Id: "g", CustomerId: "acme", CreditTypeId: "ai-credits",
		Category: v1.GrantCategory_GRANT_CATEGORY_PROMOTIONAL, Amount: "5"})
	f.Add(uint8(0), good)
	f.Add(uint8(1), grant)
	f.Add(uint8(2), []byte(`{"events":[{"id":"e1","customerId":"acme","featureId":"gpt-tokens","quantity":"7"}]}`))
	f.Add(uint8(3), []byte(`{"id":"g2","customerId":"acme","creditTypeId":"ai-credits","category":"GRANT_CATEGORY_PAID","amount":"1.5","costBasis":"0.01","currency":"USD"}`))
	f.Add(uint8(2), []byte(`{"events":[{"id":"e2","customerId":"acme","creditTypeId":"ai-credits","credits":"99999999999999999999.99"}]}`))
	f.Add(uint8(3), []byte(`{"amount":1e400}`))
	f.Add(uint8(0), []byte{0x0a, 0xff, 0xff, 0xff, 0xff, 0x0f})
	for i := range 20 {
		f.Add(uint8(4+i%2), []byte(fmt.Sprint(i)))
	}
	hc := h2c()
	f.Fuzz(func(t *testing.T, mode uint8, data []byte) {
		path := "/creditd.v1.UsageService/ReportUsage"
		if mode%2 == 1 {
			path = "/creditd.v1.GrantService/CreateGrant"
		}
		ctype := "application/proto"
		switch mode % 6 {
		case 2, 3:
			ctype = "application/json"
		case 4, 5:
			ctype = "application/json"
			var seed uint64
			for _, b := range data {
				seed = seed*131 + uint64(b)
			}
			data = randomJSON(seed)
		}
		req, err := http.NewRequestWithContext(ctxT(t), http.MethodPost, s.url+path, bytes.NewReader(data))
		if err != nil {
			t.Fatal(err)
		}
		req.Header.Set("Content-Type", ctype)
		res, err := hc.Do(req)
		if err != nil {
			t.Fatalf("POST %s %q: %v (did the handler panic?)", path, data, err)
		}
		body, err := io.ReadAll(res.Body)
		res.Body.Close()
		if err != nil {
			t.Fatalf("read answer: %v", err)
		}
		if res.StatusCode >= 500 {
			t.Fatalf("POST %s %q (%s): %d %s", path, data, ctype, res.StatusCode, body)
		}
		if res.StatusCode != http.StatusOK {
			var e struct{ Code string }
			if json.Unmarshal(body, &e) != nil || e.Code == "" || e.Code == "internal" || e.Code == "unknown" {
				t.Fatalf("POST %s %q: %d %s", path, data, res.StatusCode, body)
			}
		}
	})
}
