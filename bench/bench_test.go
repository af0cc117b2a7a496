package bench_test

import (
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"math"
	"net/http"
	"strings"
	"testing"
	"time"

	"connectrpc.com/connect"

	"github.com/creditd/creditd/bench"
	"github.com/creditd/creditd/bench/local"
	v1 "github.com/creditd/creditd/gen/creditd/v1"
	"github.com/creditd/creditd/gen/creditd/v1/creditdv1connect"
)

// The benchmarks drive a 3-node cluster on loopback with fsync on, over the
// API, for -bench.duration each. Node-level benchmarks (raft and group
// commit without the API) live in package node.
//
//	go test ./bench/ -run '^$' -bench . -bench.duration 20s
var benchDuration = flag.Duration("bench.duration", 10*time.Second, "measured load of each bench benchmark")

func startCluster(tb testing.TB, nodes int, noop bool) *local.Cluster {
	tb.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 90*time.Second)
	defer cancel()
	c, err := local.Start(ctx, local.Options{Nodes: nodes, Dir: tb.TempDir(), Noop: noop})
	if err != nil {
		tb.Fatalf("start a local cluster: %v", err)
	}
	tb.Cleanup(func() {
		if err := c.Close(context.Background()); err != nil {
			tb.Errorf("stop the local cluster: %v", err)
		}
	})
	return c
}

func run(tb testing.TB, cfg bench.Config) *bench.Report {
	tb.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Minute)
	defer cancel()
	rep, err := bench.Run(ctx, cfg)
	if err != nil {
		tb.Fatalf("bench.Run: %v", err)
	}
	if err := rep.Err(); err != nil {
		tb.Fatal(err)
	}
	return rep
}

// TestSmoke runs the whole tool briefly against 3 nodes: setup, every
// operation of the mix, and the verification of burns and replicas.
func TestSmoke(t *testing.T) {
	c := startCluster(t, 3, false)
	rep := run(t, bench.Config{
		Addr: c.URLs()[0], Customers: 50, GrantsPerCustomer: 2, Zipf: 1.2, Duration: 2 * time.Second,
		Concurrency: 8, Batch: 5, Spread: true, Seed: 7, RandomIDs: true,
	})
	if !rep.RandomIDs {
		t.Errorf("the report does not say its ids were random")
	}
	if rep.Nodes != 3 {
		t.Errorf("the run saw %d nodes; want 3", rep.Nodes)
	}
	if rep.Op(bench.OpReport).Requests == 0 || rep.Total.Requests == 0 {
		t.Errorf("no report was answered: %+v", rep.Total)
	}
	if got := rep.Op(bench.OpReport).Events; got != 5*rep.Op(bench.OpReport).Requests {
		t.Errorf("report events %d; want 5 per request", got)
	}
	v := rep.Verify
	if v == nil || !v.OK || len(v.Replicas) != 3 || v.AckedBurned != v.ServerBurned || v.AckedBurned == "0.00" {
		t.Fatalf("verification: %+v", v)
	}
	// Writes (reports, grants, reservations) went through the leader: its
	// /metrics says how many entries and where their time went.
	if lw := rep.LeaderWrites; lw == nil || lw.Entries == 0 || lw.CommandsPerEntry < 1 || lw.CommitMs <= 0 || lw.ApplyMs <= 0 {
		t.Errorf("the leader's write split: %+v; want entries, at least one command each, commit and apply times", lw)
	}
	var text strings.Builder
	rep.WriteText(&text)
	for _, want := range []string{"verification: OK", "leader's writes while measured"} {
		if !strings.Contains(text.String(), want) {
			t.Errorf("the text report does not say %q:\n%s", want, text.String())
		}
	}
}

func report(b *testing.B, rep *bench.Report) {
	o := rep.Op(bench.OpReport)
	b.ReportMetric(o.EventsPerSec, "events/s")
	b.ReportMetric(o.RequestsPerSec, "req/s")
	b.ReportMetric(o.LatencyMs.P99, "p99-ms")
	b.ReportMetric(o.LatencyMs.P50, "p50-ms")
}

// loadConfig is a measured run of reports only.
func loadConfig(addr string, batch, concurrency int) bench.Config {
	return bench.Config{Addr: addr, Customers: 1000, Batch: batch, Concurrency: concurrency,
		Mix: bench.Mix{bench.OpReport: 1}, Warmup: 2 * time.Second, Duration: *benchDuration, Seed: 1}
}

// Each benchmark is one measured run, whatever b.N: the figures are rates
// and percentiles, reported as metrics.

func BenchmarkReportUsage1000EventBatches(b *testing.B) {
	c := startCluster(b, 3, false)
	for b.Loop() {
		report(b, run(b, loadConfig(c.URLs()[0], 1000, 16)))
	}
}

func BenchmarkReportUsageSingleEvents256Clients(b *testing.B) {
	c := startCluster(b, 3, false)
	for b.Loop() {
		report(b, run(b, loadConfig(c.URLs()[0], 1, 256)))
	}
}

// BenchmarkP99AtHalfPeak finds the peak with 1,000-event batches, then
// runs at half of it (open loop) and reports that run's p99.
func BenchmarkP99AtHalfPeak(b *testing.B) {
	c := startCluster(b, 3, false)
	for b.Loop() {
		peak := run(b, loadConfig(c.URLs()[0], 1000, 16)).Op(bench.OpReport)
		cfg := loadConfig(c.URLs()[0], 1000, 16)
		cfg.Rate = peak.RequestsPerSec / 2
		half := run(b, cfg).Op(bench.OpReport)
		b.ReportMetric(peak.EventsPerSec, "peak-events/s")
		b.ReportMetric(half.EventsPerSec, "half-events/s")
		b.ReportMetric(half.LatencyMs.P99, "half-p99-ms")
	}
}

// BenchmarkCeilingRatio runs the same load against creditd and against the
// same cluster with the no-op state machine.
func BenchmarkCeilingRatio(b *testing.B) {
	for _, batch := range []int{1000, 1} {
		b.Run(fmt.Sprintf("batch=%d", batch), func(b *testing.B) {
			conc := 16
			if batch == 1 {
				conc = 256
			}
			real := startCluster(b, 3, false)
			noop := startCluster(b, 3, true)
			for b.Loop() {
				got := run(b, loadConfig(real.URLs()[0], batch, conc)).Op(bench.OpReport)
				cfg := loadConfig(noop.URLs()[0], batch, conc)
				cfg.Noop = true
				ceiling := run(b, cfg).Op(bench.OpReport)
				b.ReportMetric(got.EventsPerSec, "events/s")
				b.ReportMetric(ceiling.EventsPerSec, "ceiling-events/s")
				if ceiling.EventsPerSec > 0 {
					b.ReportMetric(100*got.EventsPerSec/ceiling.EventsPerSec, "%-of-ceiling")
				}
			}
		})
	}
}

// TestVerificationCatchesCreditsTheClientsDidNotSee grants credits behind
// the bench's back between the load and the checks: the balances no longer
// equal granted − acknowledged burns, and the run must say so.
func TestVerificationCatchesCreditsTheClientsDidNotSee(t *testing.T) {
	c := startCluster(t, 1, false)
	addr := c.URLs()[0]
	var grantErr error
	cfg := bench.Config{
		Addr: addr, Customers: 5, Duration: time.Second, Concurrency: 2, Batch: 3, Seed: 3, RunID: "tamper",
		Mix: bench.Mix{bench.OpReport: 1},
		AfterLoad: func() {
			ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
			defer cancel()
			var p http.Protocols
			p.SetUnencryptedHTTP2(true)
			hc := &http.Client{Transport: &http.Transport{Protocols: &p}}
			defer hc.CloseIdleConnections()
			_, grantErr = creditdv1connect.NewGrantServiceClient(hc, addr).CreateGrant(ctx, connect.NewRequest(&v1.CreateGrantRequest{
				Id: "tamper-extra", CustomerId: "btamper-c0", CreditTypeId: "bench-credits",
				Category: v1.GrantCategory_GRANT_CATEGORY_PROMOTIONAL, Amount: "7"}))
		},
	}
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	rep, err := bench.Run(ctx, cfg)
	if err != nil {
		t.Fatalf("bench.Run: %v", err)
	}
	if grantErr != nil {
		t.Fatalf("grant behind the bench's back: %v", grantErr)
	}
	v := rep.Verify
	if v == nil || v.OK || v.BalanceMismatches != 1 || rep.Err() == nil {
		t.Fatalf("the verification missed a grant the clients did not see: %+v", v)
	}
	if !strings.Contains(rep.Err().Error(), "btamper-c0") {
		t.Errorf("the error does not name the customer: %v", rep.Err())
	}
}

// Validate's bounds say what is accepted, so values no comparison can place
// (NaN) fall outside them: rand.NewZipf takes a NaN exponent and its draws
// then never return, and a NaN rate ran closed loop and broke --json at the
// end. A rate so small that 1/rate overflows a time.Duration is refused too.
func TestValidateAcceptsOnlyFiniteZipfAndRateWithinTheirBounds(t *testing.T) {
	tests := []struct {
		name       string
		zipf, rate float64
		wantFlag   string // "" = accepted
	}{
		{"uniform customers at full speed", 0, 0, ""},
		{"the smallest and largest zipf exponents and rates", 10, bench.MinRate, ""},
		{"a mild zipf at the largest rate", 1.1, bench.MaxRate, ""},
		{"a NaN zipf exponent", math.NaN(), 0, "--zipf"},
		{"an infinite zipf exponent", math.Inf(1), 0, "--zipf"},
		{"a zipf exponent of 1", 1, 0, "--zipf"},
		{"a NaN rate", 0, math.NaN(), "--rate"},
		{"an infinite rate", 0, math.Inf(1), "--rate"},
		{"a negative rate", 0, -1, "--rate"},
		{"a rate whose interval overflows a time.Duration", 0, 1e-12, "--rate"},
		{"a rate just below the smallest", 0, bench.MinRate / 2, "--rate"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			cfg := bench.Config{Addr: "http://127.0.0.1:7420", Zipf: tt.zipf, Rate: tt.rate}
			cfg.Defaults()
			err := cfg.Validate()
			switch {
			case tt.wantFlag == "" && err != nil:
				t.Fatalf("zipf %g, rate %g refused: %v", tt.zipf, tt.rate, err)
			case tt.wantFlag != "" && (err == nil || !strings.Contains(err.Error(), tt.wantFlag)):
				t.Fatalf("zipf %g, rate %g: got %v; want it refused, naming %s", tt.zipf, tt.rate, err, tt.wantFlag)
			}
		})
	}
}

// With --rate, clients sleep until their next slot of the schedule, up to
// concurrency × interval ahead: the end of the window must wake them, or
// the run goes on that long after it (16 clients at 2 requests/s: ~8 s
// after a 1 s window).
func TestAnOpenLoopRunEndsWithItsWindow(t *testing.T) {
	c := startCluster(t, 1, true)
	t0 := time.Now()
	rep := run(t, bench.Config{Addr: c.URLs()[0], Noop: true, Customers: 10, Batch: 1, Concurrency: 16, Rate: 2,
		Duration: time.Second, RunID: "openloop", Seed: 1})
	if took := time.Since(t0); took > 4*time.Second {
		t.Fatalf("a run measuring %.1fs at --rate 2 with 16 clients took %s to return",
			rep.MeasuredSec, took.Round(100*time.Millisecond))
	}
	// The slots of a 1 s window at 2 requests/s, and none after it.
	if n := rep.Total.Requests; n < 1 || n > 3 {
		t.Errorf("%d requests measured in %.1fs at --rate 2; want 1 to 3", n, rep.MeasuredSec)
	}
}

// A cluster that dies under load leaves writes of unknown outcome, which
// the verification resends. Once the cluster does not answer, it must stop
// and fail, counting them unresolved, instead of spending every attempt on
// each in turn (≈ 5 s of backoff per write: hours after a long run).
func TestVerificationFailsPromptlyWhenTheClusterDiedUnderLoad(t *testing.T) {
	c := startCluster(t, 1, false)
	killed := make(chan error, 1)
	cfg := bench.Config{Addr: c.URLs()[0], Customers: 10, Batch: 1, Concurrency: 16, Mix: bench.Mix{bench.OpReport: 1},
		Duration: 2 * time.Second, RunID: "died", Seed: 1, RequestTimeout: time.Second,
		BeforeLoad: func() {
			time.AfterFunc(300*time.Millisecond, func() { killed <- c.Close(context.Background()) })
		}}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	type result struct {
		rep *bench.Report
		err error
	}
	done := make(chan result, 1)
	t0 := time.Now()
	go func() {
		rep, err := bench.Run(ctx, cfg)
		done <- result{rep, err}
	}()
	var res result
	select {
	case res = <-done:
	case <-time.After(60 * time.Second):
		cancel()
		<-done
		t.Fatalf("the run whose cluster died was still verifying after 60s")
	}
	if err := <-killed; err != nil {
		t.Fatalf("stop the cluster under load: %v", err)
	}
	if res.err != nil {
		t.Fatalf("bench.Run: %v", res.err)
	}
	v := res.rep.Verify
	if v == nil || v.OK || v.Unresolved == 0 {
		t.Fatalf("the verification of a dead cluster: %+v; want it failed with unresolved writes", v)
	}
	if err := res.rep.Err(); err == nil || !strings.Contains(err.Error(), fmt.Sprintf("%d of ", v.Unresolved)) {
		t.Errorf("the error does not say how many writes are unresolved (%d): %v", v.Unresolved, err)
	}
	t.Logf("the run ended %s after it started, %d writes unresolved: %v", time.Since(t0).Round(100*time.Millisecond), v.Unresolved, res.rep.Err())
}

// A run on --existing customers names the run that made them, and gives no
// grant count: its own GrantsPerCustomer is unused (the customers of
// bench/seeded-run.sh have 3 grants each; reports said 1).
func TestARunOnExistingCustomersNamesTheirRunInsteadOfAGrantCount(t *testing.T) {
	c := startCluster(t, 1, false)
	base := bench.Config{Addr: c.URLs()[0], Customers: 3, Batch: 1, Concurrency: 1, Mix: bench.Mix{bench.OpReport: 1},
		Duration: 200 * time.Millisecond, Seed: 1}
	first := base
	first.GrantsPerCustomer, first.RunID = 3, "seedrun"
	if rep := run(t, first); rep.Grants != 3 || rep.Existing != "" {
		t.Fatalf("the run that makes the customers reports grants %d, existing %q; want 3 and none", rep.Grants, rep.Existing)
	}
	second := base
	second.Existing, second.RunID = "seedrun", "loadrun"
	rep := run(t, second)
	b, err := json.Marshal(rep)
	if err != nil {
		t.Fatal(err)
	}
	var fields map[string]any
	if err := json.Unmarshal(b, &fields); err != nil {
		t.Fatal(err)
	}
	if g, ok := fields["grants_per_customer"]; ok {
		t.Errorf(`the --json report says "grants_per_customer": %v; want it left out`, g)
	}
	if e := fields["existing"]; e != "seedrun" {
		t.Errorf(`the --json report says "existing": %v; want "seedrun"`, e)
	}
	var text strings.Builder
	rep.WriteText(&text)
	header, _, _ := strings.Cut(text.String(), "\n  setup")
	if !strings.Contains(header, "3 existing customers of run seedrun") || strings.Contains(header, "grants") {
		t.Errorf("the text header does not name the existing run, or gives a grant count:\n%s", header)
	}
}
