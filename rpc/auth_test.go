package rpc

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"os"
	"path/filepath"
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

// TestAKeyBeforeItsScopeIsNotQuoted: a line written key:scope reads the key
// as an unknown scope; the error names the line and leaves the text out.
func TestAKeyBeforeItsScopeIsNotQuoted(t *testing.T) {
	const key = "0b9e8d7c6b5a49382716f5e4d3c2b1a0"
	_, err := ParseAPIKeys(strings.NewReader("# finance\n" + key + ":read\n"))
	if err == nil {
		t.Fatal("key:scope accepted")
	}
	if strings.Contains(err.Error(), key) {
		t.Fatalf("the error quotes the key: %v", err)
	}
	if !strings.Contains(err.Error(), "line 2") || !strings.Contains(err.Error(), "unknown scope") {
		t.Fatalf("err = %v, want one naming line 2 and an unknown scope", err)
	}
}

// TestKeysFromTheFileAndTheEnvironmentAreCheckedTogether: the same key in
// the keys file and in CREDITD_API_KEYS is refused (rather than the later
// scope winning), and the limit on keys counts both.
func TestKeysFromTheFileAndTheEnvironmentAreCheckedTogether(t *testing.T) {
	const key = "6f1d0c7e1a9b44c2b3a5d8e0f2a4c6e8"
	var many strings.Builder
	for i := range maxKeys - 1 {
		fmt.Fprintf(&many, "read:file-key-%016d\n", i)
	}
	for _, tc := range []struct {
		name, file, env string
		n               int
		errHas          string
	}{
		{"distinct keys in both load together", "ingest:" + ingestKey + "\n", "admin:" + adminKey, 2, ""},
		{"the same key in both is refused", "ingest:" + key + "\n", "admin:" + key, 0, "the same key twice"},
		{"the same key in both with the same scope is refused", "admin:" + key + "\n", "admin:" + key, 0, "the same key twice"},
		{"more keys than the limit in both together are refused", many.String(), "ingest:" + ingestKey + ",admin:" + adminKey, 0,
			fmt.Sprintf("more than %d", maxKeys)},
	} {
		t.Run(tc.name, func(t *testing.T) {
			path := filepath.Join(t.TempDir(), "api-keys")
			if err := os.WriteFile(path, []byte(tc.file), 0o600); err != nil {
				t.Fatal(err)
			}
			keys, err := LoadAPIKeys(path, tc.env)
			if tc.errHas != "" {
				if err == nil || !strings.Contains(err.Error(), tc.errHas) {
					t.Fatalf("loaded %d keys, err = %v; want an error containing %q", len(keys), err, tc.errHas)
				}
				if strings.Contains(err.Error(), key) {
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

// keysFileOfSize writes a keys file of exactly size bytes that ends with
// last, padded in front with comment lines.
func keysFileOfSize(t *testing.T, size int, last string) string {
	t.Helper()
	var b bytes.Buffer
	for size-len(last)-b.Len() >= 200 {
		b.WriteString("# " + strings.Repeat("-", 97) + "\n")
	}
	b.WriteString("#" + strings.Repeat("-", size-len(last)-b.Len()-2) + "\n")
	b.WriteString(last)
	if b.Len() != size {
		t.Fatalf("built a %d-byte keys file, want %d", b.Len(), size)
	}
	path := filepath.Join(t.TempDir(), "api-keys")
	if err := os.WriteFile(path, b.Bytes(), 0o600); err != nil {
		t.Fatal(err)
	}
	return path
}

// TestAKeysFileOverTheLimitIsRefusedNotCut: a keys file larger than the
// limit is refused; it is not cut at the limit, which would make a key cut
// there a shorter key that is accepted.
func TestAKeysFileOverTheLimitIsRefusedNotCut(t *testing.T) {
	const key = "c0ffee00c0ffee00c0ffee00c0ffee00c0ffee00" // 40 characters
	const line = "admin:" + key + "\n"
	const limit = 1 << 20 // the documented limit, maxKeysFileBytes
	for _, tc := range []struct {
		name    string
		size    int
		refused bool
	}{
		{"a file of exactly the limit loads whole", limit, false},
		{"a file one byte over the limit is refused", limit + 1, true},
		{"a file the limit would cut inside a key is refused", limit - len("admin:") - 20 + len(line), true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			keys, err := LoadAPIKeys(keysFileOfSize(t, tc.size, line), "")
			if tc.refused {
				if err == nil || !strings.Contains(err.Error(), "larger than") {
					t.Fatalf("a %d-byte keys file loaded %d keys, err = %v; want it refused as too large", tc.size, len(keys), err)
				}
				return
			}
			if err != nil || len(keys) != 1 || keys[0].Key != key {
				t.Fatalf("a %d-byte keys file: %d keys, %v; want the admin key whole", tc.size, len(keys), err)
			}
		})
	}
}

// TestTheBearerSchemeIsCaseInsensitive: the auth scheme of an Authorization
// header is case-insensitive (RFC 9110 §11.1), and spaces around the token
// do not matter; some clients send "bearer".
func TestTheBearerSchemeIsCaseInsensitive(t *testing.T) {
	s := startSingle(t, nodeOpts{rpc: Options{APIKeys: []APIKey{{Scope: ScopeAdmin, Key: adminKey}}}})
	for _, tc := range []struct {
		authz string
		want  connect.Code // 0 = allowed
	}{
		{"Bearer " + adminKey, 0},
		{"bearer " + adminKey, 0},
		{"BEARER " + adminKey, 0},
		{"Bearer   " + adminKey + "  ", 0},
		{"Bearer", connect.CodeUnauthenticated},
		{"Bearer   ", connect.CodeUnauthenticated},
		{"Bearer" + adminKey, connect.CodeUnauthenticated},
		{"Basic " + adminKey, connect.CodeUnauthenticated},
		{"bearer " + readKey, connect.CodeUnauthenticated},
	} {
		err := rawPost(ctxT(t), s.url, "/creditd.v1.ClusterService/GetStatus", "application/json", []byte(`{}`),
			http.Header{"Authorization": {tc.authz}})
		if tc.want == 0 && err != nil {
			t.Errorf("GetStatus with %q: %v, want success", strings.ReplaceAll(tc.authz, adminKey, "<admin key>"), err)
		}
		if tc.want != 0 && connect.CodeOf(err) != tc.want {
			t.Errorf("GetStatus with %q: %v, want %v", strings.ReplaceAll(tc.authz, adminKey, "<admin key>"), err, tc.want)
		}
	}
}

// A request with no key, or with a key that matches none, is refused
// UNAUTHENTICATED whatever its body: the server does not read and decode
// (up to MaxMessageBytes of) an anonymous client's body first.
func TestAuthIsCheckedBeforeTheBodyIsRead(t *testing.T) {
	const limit = 64 << 10
	keys, err := ParseAPIKeys(strings.NewReader("admin:" + adminKey))
	if err != nil {
		t.Fatal(err)
	}
	s := startSingle(t, nodeOpts{rpc: Options{APIKeys: keys, MaxMessageBytes: limit}})
	proc := "/creditd.v1.UsageService/ReportUsage"

	err = rawPost(ctxT(t), s.url, proc, "application/json", []byte(`{"events":[{"id":`),
		http.Header{"Authorization": {"Bearer not-a-key-of-this-cluster"}})
	if connect.CodeOf(err) != connect.CodeUnauthenticated {
		t.Errorf("malformed body, unknown key: %v; want unauthenticated", err)
	}

	big := []byte(`{"events":[{"id":"` + strings.Repeat("x", limit) + `"}]}`)
	err = rawPost(ctxT(t), s.url, proc, "application/json", big, nil)
	if connect.CodeOf(err) != connect.CodeUnauthenticated {
		t.Errorf("body over the limit, no key: %v; want unauthenticated", err)
	}
}

// Every answer carries the request id (the client's, if it sent a valid
// one) and every call is counted in /metrics, a request whose body does
// not decode included.
func TestARequestWhoseBodyDoesNotDecodeCarriesItsIDAndIsCounted(t *testing.T) {
	s := startSingle(t, nodeOpts{})
	req, err := http.NewRequestWithContext(ctxT(t), http.MethodPost, s.url+"/creditd.v1.UsageService/ReportUsage",
		strings.NewReader(`{"events":[{"id":`))
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set(RequestIDHeader, "rid-undecodable-1")
	res, err := h2c().Do(req)
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(res.Body)
	res.Body.Close()
	if res.StatusCode == http.StatusOK {
		t.Fatalf("a truncated body was accepted: %s", body)
	}
	if got := res.Header.Get(RequestIDHeader); got != "rid-undecodable-1" {
		t.Errorf("answer %d %s carries %s %q; want the client's rid-undecodable-1", res.StatusCode, body, RequestIDHeader, got)
	}
	mres, err := http.Get(s.url + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	m, _ := io.ReadAll(mres.Body)
	mres.Body.Close()
	if !strings.Contains(string(m), `creditd_rpc_requests_total{procedure="/creditd.v1.UsageService/ReportUsage"`) {
		t.Errorf("the refused ReportUsage is not in creditd_rpc_requests_total:\n%s", m)
	}
}
