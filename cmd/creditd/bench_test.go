package main

import (
	"bytes"
	"compress/gzip"
	"context"
	"net"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// A local run writes a CPU profile and an execution trace over its load,
// on a cluster that keeps its log in raft-wal when asked.
func TestBenchLocalWritesProfileAndTraceOnWAL(t *testing.T) {
	dir := t.TempDir()
	prof, trace, data := filepath.Join(dir, "cpu.prof"), filepath.Join(dir, "run.trace"), filepath.Join(dir, "data")
	err := runBench(t.Context(), []string{"--local", "1", "--customers", "10", "--batch", "10", "--concurrency", "2",
		"--mix", "report=100", "--warmup", "0s", "--duration", "300ms", "--json",
		"--log-store", "wal", "--data-dir", data, "--cpuprofile", prof, "--trace", trace})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(filepath.Join(data, "n1", "raft-wal")); err != nil {
		t.Errorf("the node did not keep its log in raft-wal: %v", err)
	}
	f, err := os.Open(prof)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	if _, err := gzip.NewReader(f); err != nil {
		t.Errorf("CPU profile is not a gzipped pprof profile: %v", err)
	}
	b, err := os.ReadFile(trace)
	if err != nil {
		t.Fatal(err)
	}
	// Execution traces open with "go 1.NN trace".
	if !bytes.HasPrefix(b, []byte("go 1.")) || !bytes.Contains(b[:min(len(b), 16)], []byte(" trace")) {
		t.Errorf("trace does not start as a Go execution trace: %q", b[:min(len(b), 16)])
	}
}

func TestBenchFlagsForALocalClusterNeedLocal(t *testing.T) {
	for _, flag := range [][]string{
		{"--trace", "x"}, {"--cpuprofile", "x"}, {"--log-store", "wal"}, {"--state-fsync"}, {"--noop"},
		{"--follower-apply-wait", "0s"}, {"--batch-max-wait", "1ms"},
	} {
		err := runBench(t.Context(), append([]string{"--addr", "http://127.0.0.1:1"}, flag...))
		if err == nil || !strings.Contains(err.Error(), flag[0]+" need --local") {
			t.Errorf("%v with --addr: got %v, want an error saying it needs --local", flag, err)
		}
	}
}

// bench.Run fills zero fields with defaults, so runBench checks the flags
// first: a 0 given for a flag bounded above zero is refused, naming the
// flag, instead of running with the default (--batch 0 ran single events,
// --duration 0 thirty seconds). So are values no bound can place (NaN).
func TestBenchRefusesFlagValuesOutsideTheirBounds(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	dead := "http://" + ln.Addr().String()
	ln.Close() // refused: a value accepted goes on to look for a leader
	for _, tt := range []struct{ flag, value string }{
		{"--batch", "0"},
		{"--customers", "0"},
		{"--duration", "0s"},
		{"--concurrency", "0"},
		{"--grants", "0"},
		{"--timeout", "0s"},
		{"--zipf", "NaN"},
		{"--rate", "NaN"},
		{"--rate", "1e-12"},
	} {
		t.Run(tt.flag+" "+tt.value, func(t *testing.T) {
			ctx, cancel := context.WithTimeout(t.Context(), 500*time.Millisecond)
			defer cancel()
			err := runBench(ctx, []string{"--addr", dead, tt.flag, tt.value})
			if err == nil || !strings.Contains(err.Error(), tt.flag) {
				t.Errorf("got %v; want it refused, naming %s", err, tt.flag)
			}
		})
	}
}
