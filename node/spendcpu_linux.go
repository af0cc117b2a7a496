package node

import (
	"runtime"
	"time"

	"golang.org/x/sys/unix"
)

// spendCPU keeps the calling goroutine busy until its thread has used d of
// CPU time. Counting the thread's own CPU time, not the wall clock, keeps
// the cost the same however long the goroutine waits for a core: a
// state machine's apply costs CPU, and on a shared host it is the CPU that
// the other replicas' work queues behind.
func spendCPU(d time.Duration) {
	runtime.LockOSThread()
	defer runtime.UnlockOSThread()
	start, ok := threadCPU()
	if !ok {
		spendWallClock(d)
		return
	}
	var x uint64
	for {
		x = spin(x)
		if now, _ := threadCPU(); now-start >= d {
			runtime.KeepAlive(x)
			return
		}
	}
}

func threadCPU() (time.Duration, bool) {
	var ts unix.Timespec
	if err := unix.ClockGettime(unix.CLOCK_THREAD_CPUTIME_ID, &ts); err != nil {
		return 0, false
	}
	return time.Duration(ts.Nano()), true
}
