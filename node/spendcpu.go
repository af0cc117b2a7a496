package node

import (
	"runtime"
	"time"
)

// spin does a few hundred nanoseconds of arithmetic between clock reads and
// returns its result, which the caller keeps alive so that the work is done.
func spin(x uint64) uint64 {
	x |= 1
	for range 256 {
		x ^= x << 13
		x ^= x >> 7
		x ^= x << 17
	}
	return x
}

func spendWallClock(d time.Duration) {
	var x uint64
	for start := time.Now(); time.Since(start) < d; {
		x = spin(x)
	}
	runtime.KeepAlive(x)
}
