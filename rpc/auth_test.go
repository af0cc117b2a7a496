package rpc

import (
	"bytes"
	"context"
	"encoding/json"
	"log/slog"
	"strings"
	"sync"
	"testing"

	"connectrpc.com/connect"

	v1 "github.com/creditd/creditd/gen/creditd/v1"
)

const (
	ingestKey = "ingest-0123456789abcdef"
	readKey   = "read-0123456789abcdef"
	adminKey  = "admin-0123456789abcdef"
)

// syncBuffer collects logs written from many goroutines.
type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

func TestAPIKeysAndScopes(t *testing.T) {
	keys, err := ParseAPIKeys(strings.NewReader("# keys\ningest:" + ingestKey + "\nread:" + readKey + ", admin:" + adminKey + "\n"))
	if err != nil {
		t.Fatal(err)
	}
	var logs syncBuffer
	logger := slog.New(slog.NewTextHandler(&logs, &slog.HandlerOptions{Level: slog.LevelDebug}))
	s := startSingle(t, nodeOpts{rpc: Options{APIKeys: keys, Logger: logger}})
	admin := newClients(s.url, adminKey)
	setupCatalog(t, admin)

	getBalance := func(ctx context.Context, c *clients) error {
		_, err := c.balance.GetBalance(ctx, connect.NewRequest(&v1.GetBalanceRequest{CustomerId: "acme", CreditTypeId: "ai-credits"}))
		return err
	}
	report := func(ctx context.Context, c *clients) error {
		_, err := c.usage.ReportUsage(ctx, connect.NewRequest(&v1.ReportUsageRequest{Events: []*v1.UsageEvent{{Id: "e", CustomerId: "acme", FeatureId: "gpt-tokens"}}}))
		return err
	}
	listGrants := func(ctx context.Context, c *clients) error {
		_, err := c.grant.ListGrants(ctx, connect.NewRequest(&v1.ListGrantsRequest{}))
		return err
	}
	createGrant := func(ctx context.Context, c *clients) error {
		_, err := c.grant.CreateGrant(ctx, connect.NewRequest(&v1.CreateGrantRequest{Id: "g", CustomerId: "acme", CreditTypeId: "ai-credits",
			Category: v1.GrantCategory_GRANT_CATEGORY_PROMOTIONAL, Amount: "1"}))
		return err
	}
	watch := func(ctx context.Context, c *clients) error {
		st, err := c.ledger.WatchEntries(ctx, connect.NewRequest(&v1.WatchEntriesRequest{}))
		if err != nil {
			return err
		}
		defer st.Close()
		if st.Receive() { // a grant or two exist: the first message proves access
			return nil
		}
		return st.Err()
	}
	transfer := func(ctx context.Context, c *clients) error {
		_, err := c.cluster.TransferLeadership(ctx, connect.NewRequest(&v1.TransferLeadershipRequest{NodeId: "n9"}))
		if connect.CodeOf(err) == connect.CodeNotFound {
			return nil // authorized; n9 does not exist
		}
		return err
	}
	call(t, admin.grant.CreateGrant, &v1.CreateGrantRequest{Id: "g0", CustomerId: "acme", CreditTypeId: "ai-credits",
		Category: v1.GrantCategory_GRANT_CATEGORY_PROMOTIONAL, Amount: "5"})

	type op = func(context.Context, *clients) error
	for _, tc := range []struct {
		name string
		key  string
		op   op
		want connect.Code // 0 = allowed
	}{
		{"no key is unauthenticated", "", getBalance, connect.CodeUnauthenticated},
		{"an unknown key is unauthenticated", "ingest-0123456789abcdeX", getBalance, connect.CodeUnauthenticated},
		{"no key on a stream is unauthenticated", "", watch, connect.CodeUnauthenticated},
		{"ingest may read balances", ingestKey, getBalance, 0},
		{"ingest may report usage", ingestKey, report, 0},
		{"ingest may not list grants", ingestKey, listGrants, connect.CodePermissionDenied},
		{"ingest may not watch the ledger", ingestKey, watch, connect.CodePermissionDenied},
		{"read may report usage", readKey, report, 0},
		{"read may list grants", readKey, listGrants, 0},
		{"read may watch the ledger", readKey, watch, 0},
		{"read may not create grants", readKey, createGrant, connect.CodePermissionDenied},
		{"read may not move leadership", readKey, transfer, connect.CodePermissionDenied},
		{"admin may create grants", adminKey, createGrant, 0},
		{"admin may move leadership", adminKey, transfer, 0},
	} {
		t.Run(tc.name, func(t *testing.T) {
			err := tc.op(ctxT(t), newClients(s.url, tc.key))
			if tc.want == 0 && err != nil {
				t.Fatalf("got %v, want success", err)
			}
			if tc.want != 0 && connect.CodeOf(err) != tc.want {
				t.Fatalf("got %v, want %v", err, tc.want)
			}
		})
	}
	// A raw header that is not a bearer token.
	req := connect.NewRequest(&v1.GetBalanceRequest{CustomerId: "acme", CreditTypeId: "ai-credits"})
	req.Header().Set("Authorization", "Basic "+adminKey)
	if _, err := newClients(s.url, "").balance.GetBalance(ctxT(t), req); connect.CodeOf(err) != connect.CodeUnauthenticated {
		t.Fatalf("Basic auth: %v, want Unauthenticated", err)
	}
	out := logs.String()
	if !strings.Contains(out, "PermissionDenied") && !strings.Contains(out, "permission_denied") {
		t.Fatalf("denials were not logged:\n%s", out)
	}
	for _, k := range []string{ingestKey, readKey, adminKey, "ingest-0123456789abcdeX"} {
		if strings.Contains(out, k) {
			t.Fatalf("a key appears in the logs")
		}
	}
}

// TestRefusalsLogWhoWasRefused: the log line of a refused request names
// the key that lacked the scope by its fingerprint, and a missing or
// unknown key as such; no token appears.
func TestRefusalsLogWhoWasRefused(t *testing.T) {
	keys := []APIKey{{Scope: ScopeRead, Key: readKey}, {Scope: ScopeAdmin, Key: adminKey}}
	var logs syncBuffer
	logger := slog.New(slog.NewJSONHandler(&logs, &slog.HandlerOptions{Level: slog.LevelDebug}))
	s := startSingle(t, nodeOpts{rpc: Options{APIKeys: keys, Logger: logger}})
	const unknownKey = "read-0123456789abcdeX"
	for _, tc := range []struct {
		rid, token    string
		code          connect.Code
		wantPrincipal string
	}{
		{"denied-1", readKey, connect.CodePermissionDenied, "key:" + keys[0].Fingerprint()},
		{"unknown-1", unknownKey, connect.CodeUnauthenticated, "unknown key"},
		{"nokey-1", "", connect.CodeUnauthenticated, "no key"},
		{"allowed-1", adminKey, connect.CodeNotFound, "key:" + keys[1].Fingerprint()},
	} {
		// CompletePurchase needs the admin scope; the purchase does not
		// exist, so the admin key gets as far as NOT_FOUND.
		req := connect.NewRequest(&v1.CompletePurchaseRequest{Id: "nope", Outcome: v1.PurchaseOutcome_PURCHASE_OUTCOME_SUCCEEDED})
		req.Header().Set(RequestIDHeader, tc.rid)
		if _, err := newClients(s.url, tc.token).purchase.CompletePurchase(ctxT(t), req); connect.CodeOf(err) != tc.code {
			t.Fatalf("%s: %v, want %v", tc.rid, err, tc.code)
		}
		var line map[string]any
		for _, l := range strings.Split(logs.String(), "\n") {
			var m map[string]any
			if json.Unmarshal([]byte(l), &m) == nil && m["msg"] == "rpc" && m["request_id"] == tc.rid {
				line = m
			}
		}
		if line == nil {
			t.Fatalf("no log line with request_id %s in:\n%s", tc.rid, logs.String())
		}
		if line["principal"] != tc.wantPrincipal {
			t.Errorf("%s: logged principal %q, want %q (line %v)", tc.rid, line["principal"], tc.wantPrincipal, line)
		}
	}
	for _, k := range []string{readKey, adminKey, unknownKey} {
		if strings.Contains(logs.String(), k) {
			t.Fatalf("a token appears in the logs")
		}
	}
}

func TestNoKeysMeansLoopbackOnly(t *testing.T) {
	a := newAuthenticator(nil)
	for _, tc := range []struct {
		peer string
		want connect.Code
	}{
		{"127.0.0.1:4000", 0},
		{"[::1]:4000", 0},
		{"[::ffff:127.0.0.1]:4000", 0},
		{"10.1.2.3:4000", connect.CodePermissionDenied},
		{"[2001:db8::1]:4000", connect.CodePermissionDenied},
		{"", connect.CodePermissionDenied},
	} {
		ctx, err := a.authorize(context.Background(), "/creditd.v1.UsageService/ReportUsage", tc.peer, "")
		if connect.CodeOf(err) != tc.want && !(tc.want == 0 && err == nil) {
			t.Errorf("peer %q: %v, want %v", tc.peer, err, tc.want)
		}
		want := "loopback"
		if tc.want != 0 {
			want = "not loopback"
		}
		if p := principalFrom(ctx); p != want {
			t.Errorf("peer %q: principal %q, want %q", tc.peer, p, want)
		}
	}
}

func TestParseAPIKeys(t *testing.T) {
	for _, tc := range []struct {
		name, in string
		n        int
		errHas   string
	}{
		{"one key per line, comments and blanks skipped", "# c\n\ningest:" + ingestKey + "\nadmin:" + adminKey + "\n", 2, ""},
		{"commas separate keys too", "read:" + readKey + ",ingest:" + ingestKey, 2, ""},
		{"a scope is known", "owner:" + adminKey, 0, "unknown scope"},
		{"a key is long enough", "admin:short", 0, "16 to 256"},
		{"a line has a scope", adminKey, 0, "want scope:key"},
		{"a key appears once", "admin:" + adminKey + "\nread:" + adminKey, 0, "twice"},
		{"a key is printable", "admin:" + adminKey + "\x01", 0, "printable"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			keys, err := ParseAPIKeys(strings.NewReader(tc.in))
			if tc.errHas != "" {
				if err == nil || !strings.Contains(err.Error(), tc.errHas) {
					t.Fatalf("err = %v, want one containing %q", err, tc.errHas)
				}
				if strings.Contains(err.Error(), adminKey) {
					t.Fatalf("the error reveals the key: %v", err)
				}
				return
			}
			if err != nil || len(keys) != tc.n {
				t.Fatalf("got %d keys, %v; want %d", len(keys), err, tc.n)
			}
		})
	}
}
