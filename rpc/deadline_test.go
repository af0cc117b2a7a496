package rpc

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"strings"
	"testing"
	"time"

	"connectrpc.com/connect"

	v1 "github.com/creditd/creditd/gen/creditd/v1"
	"github.com/creditd/creditd/gen/creditd/v1/creditdv1connect"
)

// TestSlowBodyIsCut: a client that sends headers and part of a body, then
// nothing, is cut off after RequestTimeout instead of holding its
// connection and handler goroutine forever (slowloris).
func TestSlowBodyIsCut(t *testing.T) {
	s := startSingle(t, nodeOpts{rpc: Options{RequestTimeout: time.Second}})
	conn, err := net.Dial("tcp", strings.TrimPrefix(s.url, "http://"))
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	fmt.Fprintf(conn, "POST /creditd.v1.UsageService/ReportUsage HTTP/1.1\r\nHost: creditd\r\n"+
		"Content-Type: application/json\r\nContent-Length: 1000\r\n\r\n{\"events\":[")
	// The bound below is not what is tested: it only keeps a broken
	// server from hanging the test. The server must answer or close well
	// before it, whatever the machine's load.
	if err := conn.SetReadDeadline(time.Now().Add(2 * time.Minute)); err != nil {
		t.Fatal(err)
	}
	res, err := http.ReadResponse(bufio.NewReader(conn), nil)
	var ne net.Error
	switch {
	case errors.As(err, &ne) && ne.Timeout():
		t.Fatalf("the server still holds a request whose body stopped coming: %v", err)
	case err != nil:
		t.Logf("the server closed the connection: %v", err)
	default:
		b, _ := io.ReadAll(res.Body)
		res.Body.Close()
		t.Logf("the server answered %s: %s", res.Status, b)
		if res.StatusCode == http.StatusOK {
			t.Fatalf("a truncated body was accepted")
		}
	}
}

// TestStreamsOutliveRequestTimeout: the deadlines a unary call sets on its
// connection do not cut a WatchEntries stream that follows it on the same
// HTTP/1.1 connection.
func TestStreamsOutliveRequestTimeout(t *testing.T) {
	const timeout = 3 * time.Second
	s := startSingle(t, nodeOpts{rpc: Options{RequestTimeout: timeout}})
	c := newClients(s.url, "")
	// Writes are idempotent: retrying one that ran out of time on a very
	// loaded machine is safe.
	retry(t, func(ctx context.Context) error {
		_, err := c.catalog.CreateCreditType(ctx, connect.NewRequest(&v1.CreateCreditTypeRequest{Id: "ai-credits", Name: "AI", Scale: 2}))
		return err
	})
	retry(t, func(ctx context.Context) error {
		_, err := c.catalog.UpsertCustomer(ctx, connect.NewRequest(&v1.UpsertCustomerRequest{Id: "acme"}))
		return err
	})
	grant := func(id string) {
		retry(t, func(ctx context.Context) error {
			_, err := c.grant.CreateGrant(ctx, connect.NewRequest(&v1.CreateGrantRequest{Id: id, CustomerId: "acme", CreditTypeId: "ai-credits",
				Category: v1.GrantCategory_GRANT_CATEGORY_PROMOTIONAL, Amount: "5"}))
			return err
		})
	}
	// A stream answers its headers with its first entries: one exists
	// before it starts.
	grant("g-early")

	// One HTTP/1.1 connection for the watcher: the stream reuses the one
	// the unary call left its deadlines on.
	var p http.Protocols
	p.SetHTTP1(true)
	hc := &http.Client{Transport: &http.Transport{Protocols: &p, MaxConnsPerHost: 1}}
	status := creditdv1connect.NewClusterServiceClient(hc, s.url)
	if _, err := status.GetStatus(ctxT(t), connect.NewRequest(&v1.GetStatusRequest{})); err != nil {
		t.Fatal(err)
	}
	stream, err := creditdv1connect.NewLedgerServiceClient(hc, s.url).WatchEntries(ctxT(t), connect.NewRequest(&v1.WatchEntriesRequest{}))
	if err != nil {
		t.Fatal(err)
	}
	defer stream.Close()
	if !stream.Receive() || stream.Msg().Entries[0].GrantId != "g-early" {
		t.Fatalf("first message %v, %v; want the grant g-early", stream.Msg(), stream.Err())
	}
	// Wait past the read and write deadlines of the unary call before the
	// first entry exists (a slower machine waits longer, which only makes
	// the test stricter).
	time.Sleep(2*timeout + time.Second)
	grant("g-late")
	if !stream.Receive() {
		t.Fatalf("the stream ended: %v", stream.Err())
	}
	if es := stream.Msg().Entries; len(es) == 0 || es[0].GrantId != "g-late" {
		t.Fatalf("entries %v, want the grant g-late", es)
	}
}

// retry runs an idempotent call until it does not run out of time.
func retry(t *testing.T, fn func(ctx context.Context) error) {
	t.Helper()
	for {
		err := fn(ctxT(t))
		if connect.CodeOf(err) == connect.CodeDeadlineExceeded {
			continue
		}
		if err != nil {
			t.Fatal(err)
		}
		return
	}
}

// TestWatchOnAQuietLedgerAnswersAtOnce: a WatchEntries call returns (its
// headers arrive) when the stream is accepted, not when the first entry
// is written, and the first message is the first entry, in each protocol.
func TestWatchOnAQuietLedgerAnswersAtOnce(t *testing.T) {
	s := startSingle(t, nodeOpts{})
	c := newClients(s.url, "")
	protocols := map[string][]connect.ClientOption{"connect": nil, "grpc": {connect.WithGRPC()}, "grpc-web": {connect.WithGRPCWeb()}}
	streams := map[string]*connect.ServerStreamForClient[v1.WatchEntriesResponse]{}
	for name, opts := range protocols {
		stream, err := newClients(s.url, "", opts...).ledger.WatchEntries(ctxT(t), connect.NewRequest(&v1.WatchEntriesRequest{}))
		if err != nil {
			t.Fatalf("%s: WatchEntries on an empty ledger: %v", name, err)
		}
		defer stream.Close()
		if stream.ResponseHeader().Get(RequestIDHeader) == "" {
			t.Fatalf("%s: no %s in the stream's headers", name, RequestIDHeader)
		}
		streams[name] = stream
	}
	setupCatalog(t, c)
	call(t, c.grant.CreateGrant, &v1.CreateGrantRequest{Id: "g-1", CustomerId: "acme", CreditTypeId: "ai-credits",
		Category: v1.GrantCategory_GRANT_CATEGORY_PROMOTIONAL, Amount: "5"})
	for name, stream := range streams {
		if !stream.Receive() || len(stream.Msg().Entries) == 0 || stream.Msg().Entries[0].GrantId != "g-1" {
			t.Fatalf("%s: first message %v, %v; want the grant g-1", name, stream.Msg(), stream.Err())
		}
	}
}

// TestSlowBodyIsCut for the gRPC health check, which needs no key: a client
// that sends part of a body and then nothing must not hold its connection
// and goroutine for ever.
func TestAHealthCheckWhoseBodyStopsComingIsCut(t *testing.T) {
	s := startSingle(t, nodeOpts{rpc: Options{RequestTimeout: time.Second}})
	// The same request with its whole body is answered.
	res, err := http.Post(s.url+"/grpc.health.v1.Health/Check", "application/json", strings.NewReader(`{}`))
	if err != nil {
		t.Fatal(err)
	}
	ok, _ := io.ReadAll(res.Body)
	res.Body.Close()
	if res.StatusCode != http.StatusOK {
		t.Fatalf("a whole health check: %s %s", res.Status, ok)
	}
	conn, err := net.Dial("tcp", strings.TrimPrefix(s.url, "http://"))
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	fmt.Fprintf(conn, "POST /grpc.health.v1.Health/Check HTTP/1.1\r\nHost: creditd\r\n"+
		"Content-Type: application/json\r\nContent-Length: 1000\r\n\r\n{\"service\":")
	// RequestTimeout is 1s; 20s is only a bound that keeps the test short.
	if err := conn.SetReadDeadline(time.Now().Add(20 * time.Second)); err != nil {
		t.Fatal(err)
	}
	res, err = http.ReadResponse(bufio.NewReader(conn), nil)
	var ne net.Error
	switch {
	case errors.As(err, &ne) && ne.Timeout():
		t.Fatalf("after 20s (RequestTimeout 1s) the server still holds a health check whose body stopped coming: %v", err)
	case err == nil:
		b, _ := io.ReadAll(res.Body)
		res.Body.Close()
		if res.StatusCode == http.StatusOK {
			t.Fatalf("a truncated body was accepted: %s", b)
		}
	}
}
