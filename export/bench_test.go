//go:build unix

package export

import (
	"context"
	"os"
	"path/filepath"
	"strconv"
	"syscall"
	"testing"
	"time"
)

// BenchmarkExport exports a ledger of 1 million entries (real fsm state:
// 1,000 customers' usage, one burn entry per event, ≈ 6 days of log time)
// into a fresh directory per iteration, with production's defaults.
//
//	go test -run '^$' -bench BenchmarkExport -benchtime 3x ./export/
//
// entries/cpu-s counts the CPU of the whole process (user + system, all
// threads: the garbage collector and zstd included).
func BenchmarkExport(b *testing.B) {
	const entries = 1_000_000
	g := newGen(b, 99)
	if err := g.Bulk(1000, entries); err != nil {
		b.Fatal(err)
	}
	_, _, last, err := g.Check()
	if err != nil {
		b.Fatal(err)
	}
	b.Run("entries="+strconv.FormatUint(last, 10), func(b *testing.B) {
		b.ReportAllocs()
		var bytes int64
		cpu0 := cpuTime()
		for i := 0; b.Loop(); i++ {
			dir := filepath.Join(b.TempDir(), strconv.Itoa(i))
			dst, err := OpenDestination(context.Background(), dir)
			if err != nil {
				b.Fatal(err)
			}
			e, err := New(FromFSM(g.F), dst, Options{})
			if err != nil {
				b.Fatal(err)
			}
			res, err := e.Run(context.Background())
			if err != nil {
				b.Fatal(err)
			}
			if res.Entries != int64(last) {
				b.Fatalf("exported %d entries of %d", res.Entries, last)
			}
			bytes = 0
			for _, p := range res.Parts {
				bytes += p.Bytes
			}
			dst.Close()
			os.RemoveAll(dir)
		}
		b.ReportMetric(float64(last)*float64(b.N)/b.Elapsed().Seconds(), "entries/s")
		// On a shared machine wall time says little; CPU time says what an
		// export costs.
		if cpu := cpuTime() - cpu0; cpu > 0 {
			b.ReportMetric(float64(last)*float64(b.N)/cpu.Seconds(), "entries/cpu-s")
		}
		b.ReportMetric(float64(bytes)/float64(last), "bytes/entry")
	})
}

func cpuTime() time.Duration {
	var r syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &r); err != nil {
		return 0
	}
	return time.Duration(r.Utime.Nano() + r.Stime.Nano())
}
