package node

import (
	"context"
	"fmt"
	"os"
	"slices"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/creditd/creditd/fsm"
)

// BenchmarkReplicatedApply measures usage events per second through the
// leader of 3 replicas in one process over loopback TCP, raft-boltdb with
// fsync on (the state file as in production: committed without its own
// fsync, statefile.go): creditd's state machine and a no-op one
// (the ceiling of raft plus fsync), group commit on and off (one log entry
// per event), with 1, 16 and 256 concurrent writers, each writing one event
// at a time.
//
//	go test -run '^$' -bench ReplicatedApply -benchtime 3s ./node/
//
// CREDITD_BENCH_LOG_STORE=wal runs it on raft-wal instead of raft-boltdb.
func BenchmarkReplicatedApply(b *testing.B) {
	modes := []struct {
		name string
		set  func(*BatchConfig)
	}{
		// Group commit on, the defaults.
		{"group=on", func(*BatchConfig) {}},
		// --group-commit=false: one entry per event (8 entries in flight).
		{"group=off", func(c *BatchConfig) { c.Disabled = true }},
	}
	for _, sm := range []string{"fsm", "noop"} {
		for _, mode := range modes {
			b.Run("sm="+sm+"/"+mode.name, func(b *testing.B) {
				c := newTestCluster(b)
				c.startThree(func(cfg *Config) {
					mode.set(&cfg.Batch)
					cfg.LogStore = benchLogStore
					if sm == "noop" {
						cfg.StateMachine = NewNoopStateMachine()
					}
				})
				if sm == "fsm" {
					setupLedger(c)
				} else {
					c.leader()
				}
				var seq atomic.Int64
				for _, writers := range []int{1, 16, 256} {
					b.Run(fmt.Sprintf("writers=%d", writers), func(b *testing.B) {
						benchWriters(b, c, writers, &seq)
					})
				}
			})
		}
	}
}

func benchWriters(b *testing.B, c *testCluster, writers int, seq *atomic.Int64) {
	l := c.leader()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Minute)
	defer cancel()
	lat := make([][]time.Duration, writers)
	var next atomic.Int64
	var failed atomic.Int64
	var wg sync.WaitGroup
	b.ReportAllocs()
	b.ResetTimer()
	start := time.Now()
	for w := range writers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for next.Add(1) <= int64(b.N) {
				id := fmt.Sprintf("b%d", seq.Add(1))
				t0 := time.Now()
				res, err := l.Apply(ctx, burn(id))
				lat[w] = append(lat[w], time.Since(t0))
				if err != nil || res.Err != nil {
					failed.Add(1)
				}
			}
		}()
	}
	wg.Wait()
	elapsed := time.Since(start)
	b.StopTimer()
	if f := failed.Load(); f > 0 {
		b.Fatalf("%d of %d writes failed", f, b.N)
	}
	all := slices.Concat(lat...)
	slices.Sort(all)
	pct := func(p float64) float64 {
		if len(all) == 0 {
			return 0
		}
		return float64(all[min(len(all)-1, int(p*float64(len(all))))].Microseconds()) / 1000
	}
	b.ReportMetric(float64(b.N)/elapsed.Seconds(), "events/s")
	b.ReportMetric(pct(0.50), "p50_ms")
	b.ReportMetric(pct(0.99), "p99_ms")
}

var _ = fsm.Noop{}

// benchLogStore is the log store BenchmarkReplicatedApply runs on.
var benchLogStore = os.Getenv("CREDITD_BENCH_LOG_STORE")
