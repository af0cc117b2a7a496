package rpc

import (
	"bytes"
	"context"
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
		_, err := a.authorize(context.Background(), "/creditd.v1.UsageService/ReportUsage", tc.peer, "")
		if connect.CodeOf(err) != tc.want && !(tc.want == 0 && err == nil) {
			t.Errorf("peer %q: %v, want %v", tc.peer, err, tc.want)
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
