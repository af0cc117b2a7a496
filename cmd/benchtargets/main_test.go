package main

import (
	"bytes"
	"encoding/json"
	"io"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/creditd/creditd/bench"
)

// run is what one run of a load left: its events/s and p99.
type fakeRun struct {
	eventsPerSec, p99 float64
	failed            bool // its verification failed
}

// writeLoad writes the reports of one load as bench/targets.sh names them.
func writeLoad(t *testing.T, dir, load string, batch int, rate float64, creditd, noop []fakeRun) {
	t.Helper()
	write := func(name string, isNoop bool, i int, f fakeRun) {
		r := bench.Report{Nodes: 3, Noop: isNoop, Batch: batch, Rate: rate, Concurrency: 16,
			Ops: []bench.OpFigures{{Op: bench.OpReport, Requests: 100, EventsPerSec: f.eventsPerSec,
				LatencyMs: bench.Latency{P99: f.p99}}}}
		if !isNoop {
			r.Verify = &bench.Verification{OK: !f.failed}
			if f.failed {
				r.Verify.Problems = []string{"customer c1: leader balance 5 != granted − acknowledged 7"}
			}
		}
		b, err := json.Marshal(r)
		if err != nil {
			t.Fatal(err)
		}
		if err := os.MkdirAll(filepath.Join(dir, load), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(filepath.Join(dir, load, name+"-"+string(rune('1'+i))+".json"), b, 0o600); err != nil {
			t.Fatal(err)
		}
	}
	for i, f := range creditd {
		write("creditd", false, i, f)
	}
	for i, f := range noop {
		write("noop", true, i, f)
	}
}

// window writes a whole targets.sh window whose figures are those of this
// host (session 14 and window E), changing what change says.
func window(t *testing.T, change func(dir string)) string {
	dir := t.TempDir()
	writeLoad(t, dir, "peak1000", 1000, 0,
		[]fakeRun{{eventsPerSec: 104_800}, {eventsPerSec: 132_292}, {eventsPerSec: 136_063}},
		[]fakeRun{{eventsPerSec: 719_865}, {eventsPerSec: 826_121}, {eventsPerSec: 700_000}})
	writeLoad(t, dir, "peak1", 1, 0,
		[]fakeRun{{eventsPerSec: 9_440}, {eventsPerSec: 9_155}, {eventsPerSec: 9_661}},
		[]fakeRun{{eventsPerSec: 12_549}})
	writeLoad(t, dir, "half1000", 1000, 66.1,
		[]fakeRun{{p99: 25.5}, {p99: 69.0}, {p99: 24.9}}, []fakeRun{{p99: 8.8}})
	writeLoad(t, dir, "half1", 1, 4719,
		[]fakeRun{{p99: 46.5}, {p99: 20}}, nil)
	if change != nil {
		change(dir)
	}
	return dir
}

func TestJudgesEachTargetOnTheMedianOfItsRuns(t *testing.T) {
	dir := window(t, nil)
	var out bytes.Buffer
	if err := run([]string{dir}, &out, io.Discard); err != nil {
		t.Fatalf("run: %v", err)
	}
	for _, want := range []string{
		"| ≥ 100,000 events/s, 1,000-event batches | 132,292 events/s (104,800, 132,292, 136,063) | **met** |",
		"| ≥ 30,000 events/s, single events, 256 clients | 9,440 events/s (9,440, 9,155, 9,661) | not met |",
		"| p99 ≤ 25 ms at half of peak, batches (--rate 66.1, 66,100 events/s) | 25.5 ms (25.5, 69.0, 24.9); the no-op at the same load 8.8 ms (8.8) | not met |",
		// Two runs: the median is their mean.
		"| p99 ≤ 25 ms at half of peak, single events (--rate 4719, 4,719 events/s) | 33.2 ms (46.5, 20.0) | not met |",
		"| creditd ≥ 50 % of the no-op ceiling, batches | 18 % (132,292 of 719,865 events/s) | not met |",
		"| creditd ≥ 50 % of the no-op ceiling, single events | 75 % (9,440 of 12,549 events/s) | **met** |",
		"| 10⁶ customers × 3 grants ≤ 2 GiB per node | not in this window",
		"(3 replicas;",
	} {
		if !strings.Contains(out.String(), want) {
			t.Errorf("output lacks %q:\n%s", want, out.String())
		}
	}
}

func TestAP99AtTheTargetIsMet(t *testing.T) {
	dir := window(t, func(dir string) {
		os.RemoveAll(filepath.Join(dir, "half1000"))
		writeLoad(t, dir, "half1000", 1000, 66.1, []fakeRun{{p99: 25}, {p99: 69.0}, {p99: 12}}, nil)
	})
	var out bytes.Buffer
	if err := run([]string{dir}, &out, io.Discard); err != nil {
		t.Fatalf("run: %v", err)
	}
	if want := "| 25.0 ms (25.0, 69.0, 12.0) | **met** |"; !strings.Contains(out.String(), want) {
		t.Errorf("output lacks %q:\n%s", want, out.String())
	}
}

func TestRefusesWindowsWhoseFiguresJudgeNothing(t *testing.T) {
	for _, tc := range []struct {
		name   string
		change func(t *testing.T, dir string)
		want   string
	}{
		{"a creditd run failed its verification", func(t *testing.T, dir string) {
			writeLoad(t, dir, "peak1000", 1000, 0, []fakeRun{{eventsPerSec: 500_000, failed: true}}, nil)
		}, "creditd-1.json: the run's figures do not count: bench: verification failed: customer c1"},
		{"a creditd run was not verified", func(t *testing.T, dir string) {
			b, _ := json.Marshal(bench.Report{Nodes: 3, Batch: 1, Ops: []bench.OpFigures{{Op: bench.OpReport, Requests: 1, EventsPerSec: 1}}})
			os.WriteFile(filepath.Join(dir, "peak1", "creditd-9.json"), b, 0o600)
		}, "creditd-9.json: the run was not verified"},
		{"a run of another batch size", func(t *testing.T, dir string) {
			writeLoad(t, dir, "peak1", 1000, 0, []fakeRun{{eventsPerSec: 1}}, nil)
		}, "batch 1000; the peak1 load is 1-event batches"},
		{"a peak run with a rate", func(t *testing.T, dir string) {
			writeLoad(t, dir, "peak1000", 1000, 50, []fakeRun{{eventsPerSec: 1}}, nil)
		}, "does not fit the peak1000 load"},
		{"no ceiling at peak", func(t *testing.T, dir string) {
			for _, n := range []string{"noop-1.json", "noop-2.json", "noop-3.json"} {
				os.Remove(filepath.Join(dir, "peak1000", n))
			}
		}, "no noop-N.json report"},
		{"a load missing", func(t *testing.T, dir string) {
			os.RemoveAll(filepath.Join(dir, "half1"))
		}, "no creditd-N.json report"},
		{"a report that is not JSON", func(t *testing.T, dir string) {
			os.WriteFile(filepath.Join(dir, "half1", "creditd-1.json"), []byte("creditd bench: no leader"), 0o600)
		}, "read report"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			dir := window(t, func(dir string) { tc.change(t, dir) })
			err := run([]string{dir}, io.Discard, io.Discard)
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("run = %v; want an error containing %q", err, tc.want)
			}
		})
	}
	if err := run(nil, io.Discard, io.Discard); err == nil {
		t.Error("run without a directory succeeded")
	}
}

func TestJudgesTheMemoryTargetFromSeededRunsRSS(t *testing.T) {
	rss := func(t *testing.T, seeded string, hwm ...string) string {
		p := filepath.Join(t.TempDir(), "rss.txt")
		text := "== 20:30:44 load 0.56 1.31 1.41: " + seeded + "\n" +
			"a pid 12270: VmHWM: 74960 kB VmRSS: 74960 kB RssAnon: 12556 kB\n" + strings.Join(hwm, "\n") + "\n"
		if err := os.WriteFile(p, []byte(text), 0o600); err != nil {
			t.Fatal(err)
		}
		return p
	}
	for _, tc := range []struct {
		name, seeded string
		hwm          []string
		want         string
	}{
		{"met", "seeding 1000000 customers × 3 grants", []string{
			"a pid 12270: VmHWM: 1748728 kB VmRSS: 1525504 kB",
			"b pid 12322: VmHWM: 1701360 kB VmRSS: 1543360 kB",
			"c pid 12323: VmHWM: 1706352 kB VmRSS: 1559168 kB",
		}, "| VmHWM a 1.67 GiB, b 1.62 GiB, c 1.63 GiB (1,000,000 × 3 seeded) | **met** |"},
		{"one node over", "seeding 1000000 customers × 3 grants", []string{
			"a pid 12270: VmHWM: 1748728 kB",
			"b pid 12322: VmHWM: 2097153 kB",
		}, "b 2.00 GiB (1,000,000 × 3 seeded) | not met |"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var out bytes.Buffer
			if err := run([]string{"-memory", rss(t, tc.seeded, tc.hwm...), window(t, nil)}, &out, io.Discard); err != nil {
				t.Fatalf("run: %v", err)
			}
			if !strings.Contains(out.String(), tc.want) {
				t.Errorf("output lacks %q:\n%s", tc.want, out.String())
			}
		})
	}
	for _, tc := range []struct{ name, text, want string }{
		{"a smaller setup", "seeding 1000 customers × 3 grants\na pid 1: VmHWM: 74960 kB\n",
			"seeded 1000 customers × 3 grants; the target is for 1000000 × 3"},
		{"no node lines", "seeding 1000000 customers × 3 grants\n", "no \"NODE pid N: VmHWM: K kB\" line"},
		{"no such file", "", "read the memory run"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			p := filepath.Join(t.TempDir(), "rss.txt")
			if tc.text != "" {
				if err := os.WriteFile(p, []byte(tc.text), 0o600); err != nil {
					t.Fatal(err)
				}
			}
			err := run([]string{"-memory", p, window(t, nil)}, io.Discard, io.Discard)
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("run = %v; want an error containing %q", err, tc.want)
			}
		})
	}
}
