// Command benchtargets judges issue #7's performance targets from the
// reports of one bench/targets.sh window, so that the verdict is part of the
// bench output rather than something read off by hand:
//
//	bench/targets.sh /tmp/targets /tmp/creditd    (runs benchtargets at the end)
//	go run ./cmd/benchtargets [-memory DIR/rss.txt] /tmp/targets
//
// It reads the --json reports targets.sh leaves in the window's directory
// (peak1000, peak1, half1000, quarter1000, half1; creditd-N.json and
// noop-N.json in each), takes each load's median over its runs, and prints
// every target with the medians, each run's figure and whether it is met.
// With -memory it also reads the rss.txt of bench/seeded-run.sh (10⁶
// customers × 3 grants on three serve processes) for the memory target.
//
// A creditd run whose end-of-run verification failed, or a report of another
// load than its directory names, is refused: its figures would judge nothing.
package main

import (
	"bufio"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"

	"github.com/creditd/creditd/bench"
)

// The targets, as issue #7 states them.
const (
	batchTarget       = 100_000 // events/s with 1,000-event batches
	singleTarget      = 30_000  // events/s with single events at 256 clients
	p99TargetMs       = 25      // at half of peak
	ceilingShareFloor = 0.5     // creditd ÷ the no-op ceiling
	memoryTargetKB    = 2 << 20 // 2 GiB resident per node, in kB
	memoryCustomers   = 1_000_000
	memoryGrants      = 3
	targetNodes       = 3
)

const maxReportBytes = 16 << 20

func main() {
	if err := run(os.Args[1:], os.Stdout, os.Stderr); err != nil {
		fmt.Fprintln(os.Stderr, "benchtargets:", err)
		os.Exit(1)
	}
}

func run(args []string, stdout, stderr io.Writer) error {
	fs := flag.NewFlagSet("benchtargets", flag.ContinueOnError)
	fs.SetOutput(stderr)
	memory := fs.String("memory", "", "rss.txt of a bench/seeded-run.sh run, for the memory target")
	fs.Usage = func() {
		fmt.Fprintln(stderr, "Usage: benchtargets [-memory rss.txt] TARGETS_DIR")
		fs.PrintDefaults()
	}
	if err := fs.Parse(args); err != nil {
		return err
	}
	if fs.NArg() != 1 {
		fs.Usage()
		return errors.New("want one directory, the OUTDIR of bench/targets.sh")
	}
	dir := fs.Arg(0)
	var rows []verdict
	peakBatches, err := readLoad(dir, "peak1000", 1000, false, true)
	if err != nil {
		return err
	}
	peakSingles, err := readLoad(dir, "peak1", 1, false, true)
	if err != nil {
		return err
	}
	halfBatches, err := readLoad(dir, "half1000", 1000, true, false)
	if err != nil {
		return err
	}
	halfSingles, err := readLoad(dir, "half1", 1, true, false)
	if err != nil {
		return err
	}
	rows = append(rows,
		atLeast("≥ 100,000 events/s, 1,000-event batches", peakBatches.creditd, eventsPerSec, batchTarget),
		atLeast("≥ 30,000 events/s, single events, 256 clients", peakSingles.creditd, eventsPerSec, singleTarget),
		atMost(fmt.Sprintf("p99 ≤ 25 ms at half of peak, batches (%s)", halfBatches.load()), halfBatches, p99, p99TargetMs),
		atMost(fmt.Sprintf("p99 ≤ 25 ms at half of peak, single events (%s)", halfSingles.load()), halfSingles, p99, p99TargetMs),
		share("creditd ≥ 50 % of the no-op ceiling, batches", peakBatches),
		share("creditd ≥ 50 % of the no-op ceiling, single events", peakSingles),
	)
	if *memory != "" {
		v, err := memoryVerdict(*memory)
		if err != nil {
			return err
		}
		rows = append(rows, v)
	} else {
		rows = append(rows, verdict{target: "10⁶ customers × 3 grants ≤ 2 GiB per node",
			measured: "not in this window (bench/seeded-run.sh; its rss.txt with -memory, or MEMORY= for bench/targets.sh)", judged: "-"})
	}
	nodes := peakBatches.creditd[0].Nodes
	fmt.Fprintf(stdout, "Issue #7's targets from %s (%d replicas; medians over each load's runs, every run in brackets)\n\n", dir, nodes)
	if nodes != targetNodes {
		fmt.Fprintf(stdout, "note: the targets are for %d replicas; these runs had %d\n\n", targetNodes, nodes)
	}
	fmt.Fprintln(stdout, "| target | measured | |")
	fmt.Fprintln(stdout, "| --- | --- | --- |")
	for _, r := range rows {
		fmt.Fprintf(stdout, "| %s | %s | %s |\n", r.target, r.measured, r.judged)
	}
	return nil
}

// load is one load's reports: creditd's runs and, where the load has them,
// the no-op ceiling's.
type load struct {
	name          string
	creditd, noop []*bench.Report
}

func (l load) load() string {
	r := l.creditd[0]
	return fmt.Sprintf("--rate %s, %s events/s", strconv.FormatFloat(r.Rate, 'f', -1, 64),
		thousands(r.Rate*float64(r.Batch)))
}

// readLoad reads a load's reports from dir/name and checks they are the
// load the name says: batch size, a rate or none, every creditd run
// verified.
func readLoad(dir, name string, batch int, rated, needNoop bool) (load, error) {
	l := load{name: name}
	paths, err := filepath.Glob(filepath.Join(dir, name, "*.json"))
	if err != nil {
		return l, fmt.Errorf("list %s: %w", name, err)
	}
	slices.Sort(paths)
	for _, p := range paths {
		base := filepath.Base(p)
		isNoop := strings.HasPrefix(base, "noop-")
		if !isNoop && !strings.HasPrefix(base, "creditd-") {
			continue
		}
		r, err := readReport(p)
		if err != nil {
			return l, err
		}
		switch {
		case r.Noop != isNoop:
			return l, fmt.Errorf("%s: noop is %t, the file name says otherwise", p, r.Noop)
		case r.Batch != batch:
			return l, fmt.Errorf("%s: batch %d; the %s load is %d-event batches", p, r.Batch, name, batch)
		case (r.Rate > 0) != rated:
			return l, fmt.Errorf("%s: rate %v does not fit the %s load (rated: %t)", p, r.Rate, name, rated)
		case r.Op(bench.OpReport).Requests == 0:
			return l, fmt.Errorf("%s: no ReportUsage request was measured", p)
		}
		if !isNoop && r.Verify == nil {
			return l, fmt.Errorf("%s: the run was not verified (--no-verify), so its figures do not count", p)
		}
		if err := r.Err(); err != nil {
			return l, fmt.Errorf("%s: the run's figures do not count: %w", p, err)
		}
		if isNoop {
			l.noop = append(l.noop, r)
		} else {
			l.creditd = append(l.creditd, r)
		}
	}
	if len(l.creditd) == 0 {
		return l, fmt.Errorf("%s: no creditd-N.json report (is %s the OUTDIR of bench/targets.sh?)", filepath.Join(dir, name), dir)
	}
	if needNoop && len(l.noop) == 0 {
		return l, fmt.Errorf("%s: no noop-N.json report, so no ceiling to compare with", filepath.Join(dir, name))
	}
	for _, r := range append(slices.Clone(l.creditd), l.noop...) {
		if r.Nodes != l.creditd[0].Nodes {
			return l, fmt.Errorf("%s: runs of %d and %d nodes mixed", name, l.creditd[0].Nodes, r.Nodes)
		}
	}
	return l, nil
}

func readReport(path string) (*bench.Report, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, fmt.Errorf("read report: %w", err)
	}
	defer f.Close()
	var r bench.Report
	if err := json.NewDecoder(io.LimitReader(f, maxReportBytes)).Decode(&r); err != nil {
		return nil, fmt.Errorf("read report %s: %w", path, err)
	}
	return &r, nil
}

func eventsPerSec(r *bench.Report) float64 { return r.Op(bench.OpReport).EventsPerSec }
func p99(r *bench.Report) float64          { return r.Op(bench.OpReport).LatencyMs.P99 }

// figures returns fig of every run, in the order the runs were made, and
// their median.
func figures(runs []*bench.Report, fig func(*bench.Report) float64) (each []float64, median float64) {
	for _, r := range runs {
		each = append(each, fig(r))
	}
	sorted := slices.Sorted(slices.Values(each))
	n := len(sorted)
	if n%2 == 1 {
		return each, sorted[n/2]
	}
	return each, (sorted[n/2-1] + sorted[n/2]) / 2
}

type verdict struct{ target, measured, judged string }

func judged(met bool) string {
	if met {
		return "**met**"
	}
	return "not met"
}

func atLeast(target string, runs []*bench.Report, fig func(*bench.Report) float64, floor float64) verdict {
	each, m := figures(runs, fig)
	return verdict{target, fmt.Sprintf("%s events/s (%s)", thousands(m), list(each, thousands)), judged(m >= floor)}
}

// atMost judges creditd's runs of l; the no-op's runs of the same load, if
// any, are shown beside them: what the host gives without a state machine.
func atMost(target string, l load, fig func(*bench.Report) float64, ceiling float64) verdict {
	each, m := figures(l.creditd, fig)
	ms := func(v float64) string { return strconv.FormatFloat(v, 'f', 1, 64) }
	measured := fmt.Sprintf("%s ms (%s)", ms(m), list(each, ms))
	if len(l.noop) > 0 {
		each, m := figures(l.noop, fig)
		measured += fmt.Sprintf("; the no-op at the same load %s ms (%s)", ms(m), list(each, ms))
	}
	return verdict{target, measured, judged(m <= ceiling)}
}

func share(target string, l load) verdict {
	_, c := figures(l.creditd, eventsPerSec)
	_, n := figures(l.noop, eventsPerSec)
	s := c / n
	return verdict{target, fmt.Sprintf("%.0f %% (%s of %s events/s)", s*100, thousands(c), thousands(n)), judged(s >= ceilingShareFloor)}
}

func list(vs []float64, format func(float64) string) string {
	parts := make([]string, len(vs))
	for i, v := range vs {
		parts[i] = format(v)
	}
	return strings.Join(parts, ", ")
}

// thousands formats a rate rounded to a whole number, with commas.
func thousands(v float64) string {
	s := strconv.FormatFloat(v, 'f', 0, 64)
	neg := strings.HasPrefix(s, "-")
	s = strings.TrimPrefix(s, "-")
	var b strings.Builder
	for i, c := range s {
		if i > 0 && (len(s)-i)%3 == 0 {
			b.WriteByte(',')
		}
		b.WriteRune(c)
	}
	if neg {
		return "-" + b.String()
	}
	return b.String()
}

// hwmLine is a node's line in seeded-run.sh's rss.txt, seededLine the
// line that says what was seeded.
var (
	hwmLine    = regexp.MustCompile(`^(\S+) pid \d+: VmHWM: (\d+) kB`)
	seededLine = regexp.MustCompile(`seeding (\d+) customers × (\d+) grants`)
)

// memoryVerdict takes each node's highest VmHWM in an rss.txt of
// bench/seeded-run.sh (it records every node at each step; VmHWM is the
// process's peak so far).
func memoryVerdict(path string) (verdict, error) {
	f, err := os.Open(path)
	if err != nil {
		return verdict{}, fmt.Errorf("read the memory run: %w", err)
	}
	defer f.Close()
	peak := map[string]int64{}
	var nodes []string
	var customers, grants int64
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		if m := seededLine.FindStringSubmatch(sc.Text()); m != nil {
			customers, _ = strconv.ParseInt(m[1], 10, 64)
			grants, _ = strconv.ParseInt(m[2], 10, 64)
			continue
		}
		m := hwmLine.FindStringSubmatch(sc.Text())
		if m == nil {
			continue
		}
		kb, err := strconv.ParseInt(m[2], 10, 64)
		if err != nil {
			return verdict{}, fmt.Errorf("%s: VmHWM of %s: %w", path, m[1], err)
		}
		if _, seen := peak[m[1]]; !seen {
			nodes = append(nodes, m[1])
		}
		peak[m[1]] = max(peak[m[1]], kb)
	}
	if err := sc.Err(); err != nil {
		return verdict{}, fmt.Errorf("read %s: %w", path, err)
	}
	if len(nodes) == 0 {
		return verdict{}, fmt.Errorf("%s: no \"NODE pid N: VmHWM: K kB\" line (is it the rss.txt of bench/seeded-run.sh?)", path)
	}
	if customers < memoryCustomers || grants < memoryGrants {
		return verdict{}, fmt.Errorf("%s: seeded %d customers × %d grants; the target is for %d × %d (CUSTOMERS and GRANTS of seeded-run.sh)",
			path, customers, grants, memoryCustomers, memoryGrants)
	}
	met := true
	var parts []string
	for _, n := range nodes {
		parts = append(parts, fmt.Sprintf("%s %.2f GiB", n, float64(peak[n])/(1<<20)))
		met = met && peak[n] <= memoryTargetKB
	}
	return verdict{"10⁶ customers × 3 grants ≤ 2 GiB per node",
		fmt.Sprintf("VmHWM %s (%s × %d seeded)", strings.Join(parts, ", "), thousands(float64(customers)), grants), judged(met)}, nil
}
