package main

import (
	"bytes"
	"compress/gzip"
	"os"
	"path/filepath"
	"strings"
	"testing"
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
