package bench

import (
	"fmt"
	"io"
	"maps"
	"slices"
	"strings"
	"time"

	"github.com/HdrHistogram/hdrhistogram-go"
)

// Latencies are recorded in microseconds from 1 µs to 5 minutes with 3
// significant digits: about 0.1% error at any value.
const (
	histMinMicros = 1
	histMaxMicros = int64(5 * time.Minute / time.Microsecond)
	histDigits    = 3
)

// opStats is what one client measured of one operation. Each client owns
// its own, so the hot path takes no lock; Run merges them at the end.
type opStats struct {
	requests int64 // answered calls (success, or a denial that is an answer)
	events   int64 // events in answered calls (1 for calls other than reports)
	burned   int64 // events or settlements that burned credits
	denied   int64 // events, checks or holds refused for lack of credits
	rejected map[string]int64
	errors   map[string]int64 // failed attempts by Connect code
	hist     *hdrhistogram.Histogram
}

func newOpStats() *opStats {
	return &opStats{
		rejected: map[string]int64{},
		errors:   map[string]int64{},
		hist:     hdrhistogram.New(histMinMicros, histMaxMicros, histDigits),
	}
}

func (s *opStats) record(d time.Duration) {
	us := d.Microseconds()
	if us < histMinMicros {
		us = histMinMicros
	}
	if us > histMaxMicros {
		us = histMaxMicros
	}
	// In range by the clamps above, so RecordValue cannot fail.
	_ = s.hist.RecordValue(us)
}

func (s *opStats) merge(o *opStats) {
	s.requests += o.requests
	s.events += o.events
	s.burned += o.burned
	s.denied += o.denied
	for k, v := range o.rejected {
		s.rejected[k] += v
	}
	for k, v := range o.errors {
		s.errors[k] += v
	}
	s.hist.Merge(o.hist)
}

// Latency is a latency distribution in milliseconds.
type Latency struct {
	P50  float64 `json:"p50"`
	P90  float64 `json:"p90"`
	P99  float64 `json:"p99"`
	P999 float64 `json:"p99_9"`
	Max  float64 `json:"max"`
	Mean float64 `json:"mean"`
}

func latencyOf(h *hdrhistogram.Histogram) Latency {
	ms := func(us int64) float64 { return float64(us) / 1000 }
	return Latency{
		P50:  ms(h.ValueAtQuantile(50)),
		P90:  ms(h.ValueAtQuantile(90)),
		P99:  ms(h.ValueAtQuantile(99)),
		P999: ms(h.ValueAtQuantile(99.9)),
		Max:  ms(h.Max()),
		Mean: h.Mean() / 1000,
	}
}

// OpFigures is one operation's figures over the measured window.
type OpFigures struct {
	Op             Op               `json:"op"`
	Requests       int64            `json:"requests"`
	Events         int64            `json:"events"`
	RequestsPerSec float64          `json:"requests_per_sec"`
	EventsPerSec   float64          `json:"events_per_sec"`
	Burned         int64            `json:"burned"`
	Denied         int64            `json:"denied"`
	Rejected       map[string]int64 `json:"rejected,omitempty"`
	Errors         map[string]int64 `json:"errors,omitempty"`
	LatencyMs      Latency          `json:"latency_ms"`
}

// Report is the result of a run.
type Report struct {
	RunID       string    `json:"run_id"`
	Addr        string    `json:"addr"`
	Nodes       int       `json:"nodes"`
	Noop        bool      `json:"noop"`
	Customers   int       `json:"customers"`
	Existing    string    `json:"existing,omitempty"`            // the run whose customers were used (Config.Existing)
	Grants      int       `json:"grants_per_customer,omitempty"` // 0 with Existing: that run gave the grants
	Zipf        float64   `json:"zipf"`
	Concurrency int       `json:"concurrency"`
	Rate        float64   `json:"rate,omitempty"`
	Batch       int       `json:"batch"`
	Mix         string    `json:"mix"`
	Seed        uint64    `json:"seed"`
	Spread      bool      `json:"spread"`
	RandomIDs   bool      `json:"random_ids,omitempty"`
	Started     time.Time `json:"started"`
	SetupSec    float64   `json:"setup_seconds"`
	WarmupSec   float64   `json:"warmup_seconds"`
	MeasuredSec float64   `json:"measured_seconds"`
	// Total is every operation together (its latency mixes them).
	Total OpFigures   `json:"total"`
	Ops   []OpFigures `json:"ops"`
	// LeaderWrites is where the leader's writes spent their time while
	// measured, from its /metrics (absent if they could not be read).
	LeaderWrites *LeaderWrites `json:"leader_writes,omitempty"`
	Verify       *Verification `json:"verify,omitempty"`
	// Machine notes what the numbers were measured on (cmd fills it).
	Machine map[string]string `json:"machine,omitempty"`

	// NoopEventCostUs is the no-op state machine's CPU per applied event
	// (Config.NoopEventCost), in microseconds; absent when 0.
	NoopEventCostUs float64 `json:"noop_event_cost_us,omitempty"`
}

// Op returns the figures of one operation (zero if it did not run).
func (r *Report) Op(op Op) OpFigures {
	for _, o := range r.Ops {
		if o.Op == op {
			return o
		}
	}
	return OpFigures{Op: op}
}

// Err is non-nil when the verification failed (or could not run).
func (r *Report) Err() error {
	if r.Verify == nil || r.Verify.OK {
		return nil
	}
	probs := r.Verify.Problems
	more := ""
	if len(probs) > 3 {
		probs, more = probs[:3], fmt.Sprintf("; and %d more", len(r.Verify.Problems)-3)
	}
	return fmt.Errorf("bench: verification failed: %s%s", strings.Join(probs, "; "), more)
}

func opReport(op Op, s *opStats, seconds float64) OpFigures {
	o := OpFigures{
		Op: op, Requests: s.requests, Events: s.events, Burned: s.burned, Denied: s.denied,
		LatencyMs: latencyOf(s.hist),
	}
	if seconds > 0 {
		o.RequestsPerSec = float64(s.requests) / seconds
		o.EventsPerSec = float64(s.events) / seconds
	}
	if len(s.rejected) > 0 {
		o.Rejected = maps.Clone(s.rejected)
	}
	if len(s.errors) > 0 {
		o.Errors = maps.Clone(s.errors)
	}
	return o
}

// WriteText writes the report as a table for people.
func (r *Report) WriteText(w io.Writer) {
	p := func(format string, args ...any) { fmt.Fprintf(w, format, args...) }
	mode := "creditd"
	if r.Noop {
		mode = "no-op state machine (ceiling)"
		if r.NoopEventCostUs > 0 {
			mode = fmt.Sprintf("no-op state machine spending %gµs of CPU per event", r.NoopEventCostUs)
		}
	}
	p("creditd bench %s: %d node(s) at %s, %s\n", r.RunID, r.Nodes, r.Addr, mode)
	if r.Existing != "" {
		p("  %d existing customers of run %s", r.Customers, r.Existing)
	} else {
		p("  %d customers × %d grants", r.Customers, r.Grants)
	}
	p(", zipf %g, concurrency %d, batch %d, mix %s, seed %d", r.Zipf, r.Concurrency, r.Batch, r.Mix, r.Seed)
	if r.Rate > 0 {
		p(", rate %g req/s", r.Rate)
	}
	p("\n  setup %.1fs, warmup %.1fs, measured %.1fs\n\n", r.SetupSec, r.WarmupSec, r.MeasuredSec)
	p("%-8s %10s %11s %12s %8s %8s %8s %8s %8s %8s %8s\n",
		"op", "requests", "req/s", "events/s", "p50 ms", "p90 ms", "p99 ms", "p99.9 ms", "max ms", "denied", "errors")
	for _, o := range append(slices.Clone(r.Ops), r.Total) {
		name := string(o.Op)
		var errs int64
		for _, v := range o.Errors {
			errs += v
		}
		l := o.LatencyMs
		p("%-8s %10d %11.0f %12.0f %8.2f %8.2f %8.2f %8.2f %8.2f %8d %8d\n",
			name, o.Requests, o.RequestsPerSec, o.EventsPerSec, l.P50, l.P90, l.P99, l.P999, l.Max, o.Denied, errs)
	}
	if lw := r.LeaderWrites; lw != nil {
		p("\nleader's writes while measured: %d log entries, %.1f commands each; per entry %.2f ms from append to commit, %.2f ms from commit to results\n",
			lw.Entries, lw.CommandsPerEntry, lw.CommitMs, lw.ApplyMs)
	}
	for _, o := range r.Ops {
		for _, k := range slices.Sorted(maps.Keys(o.Errors)) {
			p("  %s errors %s: %d\n", o.Op, k, o.Errors[k])
		}
		for _, k := range slices.Sorted(maps.Keys(o.Rejected)) {
			p("  %s events rejected %s: %d\n", o.Op, k, o.Rejected[k])
		}
	}
	if v := r.Verify; v != nil {
		p("\nverification: ")
		if v.OK {
			p("OK")
		} else {
			p("FAILED")
		}
		p(" — %d customers; credits burned as acknowledged %s, as the leader's balances say %s; %d unresolved writes\n",
			v.Customers, v.AckedBurned, v.ServerBurned, v.Unresolved)
		for _, n := range v.Replicas {
			p("  replica %s (%s): applied index %d, %d balances differ from the leader's\n", n.Node, n.URL, n.AppliedIndex, n.Mismatches)
		}
		for _, pr := range v.Problems {
			p("  problem: %s\n", pr)
		}
	}
}
