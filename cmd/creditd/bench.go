package main

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"os"
	"runtime"
	"runtime/pprof"
	"runtime/trace"
	"strings"
	"time"

	"github.com/creditd/creditd/bench"
	"github.com/creditd/creditd/bench/local"
	"github.com/creditd/creditd/node"
	"github.com/creditd/creditd/rpc"
)

const benchHelp = `
Drives a creditd cluster with load over the API and reports, per operation,
requests/s, events/s, latency p50/p90/p99/p99.9/max, denials and errors by
code, and from the leader's /metrics where its writes spent their time
while measured (append to commit, commit to results, commands per log
entry). At the end it checks the cluster: the credits burned must equal what
the clients saw acknowledged, and every replica's balances (stale reads on
each node) must equal the leader's (linearizable reads). It exits non-zero
if not.

--addr drives a running cluster (the API key needs the admin scope for the
setup: a credit type, a feature, a plan, customers and their grants).
--local N starts N nodes in this process on loopback, data in a temporary
directory, fsync on, drives them and stops them. --noop gives those nodes a
state machine that applies nothing: the same cluster, transport, batching
and API, so a run can say creditd ÷ ceiling.

'creditd bench seed' builds a large setup offline as a snapshot file (a
million customers through the API take hours); --existing RUN_ID then runs
on those customers without creating them. See 'creditd bench seed --help'.

A live progress line goes to stderr when it is a terminal; --json prints the
report as JSON (for 'go run ./cmd/benchplot').

Examples:
  creditd bench --local 3 --batch 1000 --concurrency 16 --duration 30s --warmup 5s
  creditd bench --local 3 --batch 1 --concurrency 256 --mix report=100
  creditd bench --local 3 --batch 1000 --concurrency 16 --noop
  creditd bench --local 3 --batch 1000 --rate 50 --json > half.json
  creditd bench --addr http://127.0.0.1:7420 --api-key $KEY --customers 10000
  creditd bench --addr http://127.0.0.1:7420 --existing m1 --customers 1000000 --batch 1000`

func runBench(ctx context.Context, args []string) error {
	if len(args) > 0 && args[0] == "seed" {
		return runBenchSeed(ctx, args[1:])
	}
	var (
		cfg                      bench.Config
		mix                      string
		localN                   int
		dataDir                  string
		asJSON, noSync           bool
		cpuProfile, memProfile   string
		traceFile                string
		logLevel                 string
		batchMaxCmds, batchBytes int
		batchWait                time.Duration
		stateFsync               bool
		logStore                 string
		followerWait             time.Duration
		caCert                   string
	)
	fs := newFlagSet("bench", "bench (--addr URL | --local N) [flags] | bench seed [flags]", benchHelp)
	fs.StringVar(&cfg.Addr, "addr", "", "API address of any node of a running cluster (http://host:port, or https://host:port when it serves TLS)")
	fs.StringVar(&caCert, "ca-cert", "", "PEM `FILE` of the CA certificate(s) to trust for an https:// --addr, instead of the system's roots (a private CA)")
	fs.StringVar(&cfg.APIKey, "api-key", "", "API key (admin scope) sent as a bearer token; not needed from loopback without keys")
	fs.IntVar(&localN, "local", 0, "start this many nodes in this process on loopback instead of --addr")
	fs.StringVar(&dataDir, "data-dir", "", "with --local: directory for the nodes' data (default: a temporary one, removed after)")
	fs.BoolVar(&cfg.Noop, "noop", false, "with --local: nodes apply nothing (the ceiling of replication, fsync and the API); only reports run")
	fs.DurationVar(&cfg.NoopEventCost, "noop-event-cost", 0, "with --noop: CPU each node's no-op state machine spends per event it applies (e.g. 1us): a stand-in for an apply that costs that much, to find the cost the targets allow")
	fs.BoolVar(&noSync, "no-sync", false, "with --local: turn fsync off (not for published figures)")
	fs.IntVar(&cfg.Customers, "customers", 1000, "customers created and used")
	fs.IntVar(&cfg.GrantsPerCustomer, "grants", 1, "grants each customer starts with (1..1000)")
	fs.StringVar(&cfg.Existing, "existing", "", "skip the setup: use customers 0..--customers-1 made by an earlier run or 'creditd bench seed' with this run id (their starting balances are read first)")
	fs.Float64Var(&cfg.Zipf, "zipf", 0, "skew of customer activity: 0 uniform, or a Zipf exponent > 1 (1.1 mild, 2 strong)")
	fs.DurationVar(&cfg.Duration, "duration", 30*time.Second, "measured load")
	fs.DurationVar(&cfg.Warmup, "warmup", 5*time.Second, "load before measuring")
	fs.IntVar(&cfg.Concurrency, "concurrency", 64, "clients sending at once, each waiting for its answer")
	fs.Float64Var(&cfg.Rate, "rate", 0, "cap on requests/s over all clients (open loop; latency counts from each request's scheduled time); 0 = as fast as answered")
	fs.IntVar(&cfg.Batch, "batch", 1, "events per ReportUsage (1..10000)")
	fs.StringVar(&mix, "mix", bench.DefaultMix, "relative weights of report, check, reserve (then settle or release) and grant")
	fs.Uint64Var(&cfg.Seed, "seed", 1, "seed of the workload")
	fs.BoolVar(&cfg.Spread, "spread", false, "send to every node in turn (followers forward writes) instead of the leader")
	fs.BoolVar(&cfg.RandomIDs, "random-ids", false, "ids in random order, as UUIDv4 (default: increasing per client, as UUIDv7)")
	fs.DurationVar(&cfg.RequestTimeout, "timeout", 30*time.Second, "bound on one call")
	fs.BoolVar(&cfg.SkipVerify, "no-verify", false, "skip the end-of-run checks")
	fs.BoolVar(&asJSON, "json", false, "print the report as JSON on stdout")
	fs.StringVar(&cpuProfile, "cpuprofile", "", "with --local: write a CPU profile of the whole process (nodes and load) over warmup and load")
	fs.StringVar(&memProfile, "memprofile", "", "with --local: write a heap profile after the load")
	fs.StringVar(&traceFile, "trace", "", "with --local: write an execution trace (go tool trace) over warmup and load; keep --duration short, it grows ≈ 1 MB per second of load")
	fs.StringVar(&logLevel, "log-level", "", "with --local: the nodes' log level, logs to stderr (default: none; a no-op run would log every answer as an internal error)")
	fs.IntVar(&batchMaxCmds, "batch-max-commands", 0, "with --local: most commands per log entry (0 = the node's default)")
	fs.IntVar(&batchBytes, "batch-max-bytes", 0, "with --local: most bytes per log entry (0 = the node's default)")
	fs.DurationVar(&batchWait, "batch-max-wait", 0, "with --local: how long the leader waits to fill a log entry")
	fs.StringVar(&logStore, "log-store", "", "with --local: where the nodes keep their Raft log, "+node.LogStoreBolt+" (the default) or "+node.LogStoreWAL+", as creditd serve --log-store")
	fs.DurationVar(&followerWait, "follower-apply-wait", 20*time.Millisecond, "with --local: how long followers gather entries to apply them together, as creditd serve --follower-apply-wait (0: apply at once)")
	fs.BoolVar(&stateFsync, "state-fsync", false, "with --local: fsync each node's state file on every apply (creditd serve --state-fsync)")
	if err := parseFlags(fs, args); err != nil {
		return err
	}
	if fs.NArg() > 0 {
		return fmt.Errorf("bench: unexpected argument %q: %w", fs.Arg(0), errUsage)
	}
	m, err := bench.ParseMix(mix)
	if err != nil {
		return fmt.Errorf("--mix: %w", err)
	}
	cfg.Mix = m
	switch {
	case localN == 0 && cfg.Addr == "":
		return errors.New("bench: give --addr URL or --local N")
	case localN != 0 && cfg.Addr != "":
		return errors.New("bench: give --addr or --local, not both")
	}
	if localN == 0 {
		var set []string
		fs.Visit(func(f *flag.Flag) {
			if localOnlyBenchFlags[f.Name] {
				set = append(set, "--"+f.Name)
			}
		})
		if len(set) > 0 {
			return fmt.Errorf("bench: %s need --local (they configure the nodes it starts)", strings.Join(set, ", "))
		}
	}
	// Before bench.Run, whose Defaults would take a 0 given here for a
	// field left unset and run with the default instead.
	if err := cfg.ValidateWorkload(); err != nil {
		return err
	}
	if cfg.Addr != "" {
		if cfg.Addr, err = baseURL(cfg.Addr); err != nil {
			return err
		}
	}
	if caCert != "" {
		if !strings.HasPrefix(cfg.Addr, "https://") {
			return fmt.Errorf("bench: --ca-cert %s is for an https:// --addr", caCert)
		}
		if cfg.RootCAs, err = rpc.LoadCertPool(caCert); err != nil {
			return fmt.Errorf("bench: --ca-cert: %w", err)
		}
	}
	if terminal(os.Stderr) {
		cfg.Progress = os.Stderr
	}
	cfg.Log = os.Stderr
	// The reference machine is shared: the load before this run starts
	// says how much of it others were using.
	loadBefore := loadavg()

	if localN > 0 {
		logger := slog.New(slog.DiscardHandler)
		if logLevel != "" {
			if logger, err = newLogger(os.Stderr, "text", logLevel); err != nil {
				return err
			}
		}
		fmt.Fprintf(os.Stderr, "starting %d local node(s)…\n", localN)
		c, err := local.Start(ctx, local.Options{Nodes: localN, Dir: dataDir, Noop: cfg.Noop, NoopEventCost: cfg.NoopEventCost, NoSync: noSync, StateFsync: stateFsync, LogStore: logStore, FollowerApplyWait: followerApplyWait(followerWait), Logger: logger,
			Batch: node.BatchConfig{MaxCommands: batchMaxCmds, MaxBytes: batchBytes, MaxWait: batchWait}})
		if err != nil {
			return err
		}
		defer func() {
			if err := c.Close(context.Background()); err != nil {
				fmt.Fprintln(os.Stderr, "bench: stop the local cluster:", err)
			}
		}()
		cfg.Addr = c.URLs()[0]
	}

	// Profiles cover warmup and measured load, not setup or the
	// verification's reads.
	var recorders []loadRecorder
	if cpuProfile != "" {
		recorders = append(recorders, loadRecorder{"CPU profile", cpuProfile, pprof.StartCPUProfile, pprof.StopCPUProfile})
	}
	if traceFile != "" {
		recorders = append(recorders, loadRecorder{"execution trace", traceFile, trace.Start, trace.Stop})
	}
	for _, r := range recorders {
		f, err := os.Create(r.path)
		if err != nil {
			return fmt.Errorf("bench: create the %s: %w", r.what, err)
		}
		defer f.Close()
		var startErr error
		before, after := cfg.BeforeLoad, cfg.AfterLoad
		cfg.BeforeLoad = func() {
			if before != nil {
				before()
			}
			startErr = r.start(f)
		}
		cfg.AfterLoad = func() {
			if startErr == nil {
				r.stop()
			}
			if after != nil {
				after()
			}
		}
		defer func() {
			if startErr != nil {
				fmt.Fprintf(os.Stderr, "bench: the %s did not start: %v\n", r.what, startErr)
			}
		}()
	}
	rep, err := bench.Run(ctx, cfg)
	if err != nil {
		return err
	}
	if memProfile != "" {
		if err := writeHeapProfile(memProfile); err != nil {
			return err
		}
	}
	rep.Machine = machine()
	rep.Machine["loadavg_before"] = loadBefore
	rep.Machine["loadavg_after"] = loadavg()
	if localN > 0 {
		// Every node runs in this process: its peak resident set is the
		// whole cluster's (and the load generator's).
		rep.Machine["process_peak_rss"] = peakRSS()
	}
	if asJSON {
		enc := json.NewEncoder(os.Stdout)
		enc.SetIndent("", "  ")
		if err := enc.Encode(rep); err != nil {
			return fmt.Errorf("bench: write the report: %w", err)
		}
	} else {
		rep.WriteText(os.Stdout)
	}
	return rep.Err()
}

func writeHeapProfile(path string) error {
	f, err := os.Create(path)
	if err != nil {
		return fmt.Errorf("bench: create the heap profile: %w", err)
	}
	runtime.GC()
	if err := pprof.WriteHeapProfile(f); err != nil {
		f.Close()
		return fmt.Errorf("bench: write the heap profile: %w", err)
	}
	return f.Close()
}

// terminal says whether f is a character device (a terminal), where a
// progress line that rewrites itself belongs.
func terminal(f *os.File) bool {
	st, err := f.Stat()
	return err == nil && st.Mode()&os.ModeCharDevice != 0
}

// machine notes what the figures were measured on, load included: the
// reference machine is shared.
func machine() map[string]string {
	m := map[string]string{
		"cpus":       fmt.Sprint(runtime.NumCPU()),
		"gomaxprocs": fmt.Sprint(runtime.GOMAXPROCS(0)),
		"go":         runtime.Version(),
		"os":         runtime.GOOS + "/" + runtime.GOARCH,
	}
	return m
}

// peakRSS is this process's peak resident set ("" where unknown).
func peakRSS() string {
	b, err := os.ReadFile("/proc/self/status")
	if err != nil {
		return ""
	}
	for _, line := range strings.Split(string(b), "\n") {
		if v, ok := strings.CutPrefix(line, "VmHWM:"); ok {
			return strings.TrimSpace(v)
		}
	}
	return ""
}

// loadavg is the 1, 5 and 15 minute load averages ("" where unknown).
func loadavg() string {
	b, err := os.ReadFile("/proc/loadavg")
	if f := strings.Fields(string(b)); err == nil && len(f) >= 3 {
		return strings.Join(f[:3], " ")
	}
	return ""
}

// localOnlyBenchFlags configure the nodes of --local or profile them.
var localOnlyBenchFlags = map[string]bool{
	"noop": true, "noop-event-cost": true, "no-sync": true, "state-fsync": true, "log-store": true, "follower-apply-wait": true,
	"data-dir": true, "cpuprofile": true, "memprofile": true, "trace": true, "log-level": true,
	"batch-max-commands": true, "batch-max-bytes": true, "batch-max-wait": true,
}

// loadRecorder is a profile or trace taken over the bench's load.
type loadRecorder struct {
	what, path string
	start      func(io.Writer) error
	stop       func()
}
