package rpc

import (
	"fmt"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"connectrpc.com/connect"
	"google.golang.org/protobuf/proto"

	"github.com/creditd/creditd/fsm"
	v1 "github.com/creditd/creditd/gen/creditd/v1"
)

// benchClients is how many clients send at once.
const benchClients = 64

// BenchmarkReportUsage measures usage events per second through the API
// of a 3-node cluster on loopback (fsync on): 64 concurrent Connect
// clients over HTTP/2 send batches to the leader, or to the followers,
// which forward them. b.N counts requests; the events/s metric is the
// figure to compare.
//
//	go test ./rpc -run '^$' -bench BenchmarkReportUsage -benchtime 3000x
func BenchmarkReportUsage(b *testing.B) {
	nodes := startThree(b, nodeOpts{})
	admin := newClients(nodes[0].url, "")
	setupCatalog(b, admin)
	const customers = 64
	for i := range customers {
		id := fmt.Sprintf("cust-%d", i)
		call(b, admin.catalog.UpsertCustomer, &v1.UpsertCustomerRequest{Id: id})
		call(b, admin.grant.CreateGrant, &v1.CreateGrantRequest{Id: "g-" + id, CustomerId: id, CreditTypeId: "ai-credits",
			Category: v1.GrantCategory_GRANT_CATEGORY_PROMOTIONAL, Amount: "1000000000000"})
	}
	var run atomic.Int64
	for _, bc := range []struct {
		name      string
		batch     int
		followers bool
	}{
		{"batch=1/to=leader", 1, false},
		{"batch=1000/to=leader", 1000, false},
		{"batch=1/to=followers", 1, true},
		{"batch=1000/to=followers", 1000, true},
	} {
		b.Run(bc.name, func(b *testing.B) {
			b.ReportAllocs()
			prefix := fmt.Sprintf("r%d-", run.Add(1))
			targets := []*clients{newClients(nodes[0].url, "")}
			if bc.followers {
				targets = []*clients{newClients(nodes[1].url, ""), newClients(nodes[2].url, "")}
			}
			var next, denied atomic.Int64
			var firstErr atomic.Value
			var wg sync.WaitGroup
			b.ResetTimer()
			start := time.Now()
			for w := range benchClients {
				wg.Add(1)
				go func() {
					defer wg.Done()
					c := targets[w%len(targets)]
					cust := fmt.Sprintf("cust-%d", w%customers)
					for {
						n := next.Add(1)
						if n > int64(b.N) {
							return
						}
						req := &v1.ReportUsageRequest{Events: make([]*v1.UsageEvent, bc.batch)}
						for i := range req.Events {
							req.Events[i] = &v1.UsageEvent{Id: fmt.Sprintf("%s%d-%d", prefix, n, i), CustomerId: cust, FeatureId: "gpt-tokens", Quantity: 1}
						}
						res, err := c.usage.ReportUsage(ctxT(b), connect.NewRequest(req))
						if err != nil {
							firstErr.CompareAndSwap(nil, err)
							return
						}
						for _, r := range res.Msg.Results {
							if r.Status != v1.EventStatus_EVENT_STATUS_BURNED {
								denied.Add(1)
							}
						}
					}
				}()
			}
			wg.Wait()
			elapsed := time.Since(start)
			b.StopTimer()
			if err, _ := firstErr.Load().(error); err != nil {
				b.Fatalf("ReportUsage: %v", err)
			}
			if d := denied.Load(); d > 0 {
				b.Fatalf("%d events were not burned", d)
			}
			b.ReportMetric(float64(b.N*bc.batch)/elapsed.Seconds(), "events/s")
			b.ReportMetric(float64(b.N)/elapsed.Seconds(), "requests/s")
		})
	}
}

// BenchmarkUsageResults measures what a 1,000-event ReportUsage answer costs
// besides the state machine: converting the results to protobuf and
// marshaling them on the server, unmarshaling them in the client (each
// event burned from one grant, as in `creditd bench`).
//
//	go test ./rpc -run '^$' -bench BenchmarkUsageResults -benchmem
func BenchmarkUsageResults(b *testing.B) {
	results := make([]fsm.EventResult, 1000)
	for i := range results {
		results[i] = fsm.EventResult{EventID: fmt.Sprintf("e-bench-%08d", i), Status: fsm.EventBurned, CreditTypeID: "bench-credits",
			Credits: 1234, Burns: []fsm.GrantBurn{{GrantID: fmt.Sprintf("g-%d-0", i), Amount: 1234}}, BalanceAfter: 987654, AvailableAfter: 987654}
	}
	scale := func(string) uint8 { return 2 }
	b.Run("convert", func(b *testing.B) {
		for b.Loop() {
			eventResultsPB(results, scale)
		}
	})
	data, err := proto.Marshal(&v1.ReportUsageResponse{Results: eventResultsPB(results, scale)})
	if err != nil {
		b.Fatal(err)
	}
	b.Run("marshal", func(b *testing.B) {
		msg := &v1.ReportUsageResponse{Results: eventResultsPB(results, scale)}
		for b.Loop() {
			if _, err := proto.Marshal(msg); err != nil {
				b.Fatal(err)
			}
		}
		b.ReportMetric(float64(len(data)), "answer-bytes")
	})
	b.Run("unmarshal", func(b *testing.B) {
		for b.Loop() {
			var m v1.ReportUsageResponse
			if err := proto.Unmarshal(data, &m); err != nil {
				b.Fatal(err)
			}
		}
	})
}
