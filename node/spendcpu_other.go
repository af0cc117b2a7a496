//go:build !linux

package node

import "time"

// spendCPU keeps the calling goroutine busy for d of wall-clock time, which
// is its CPU time on a host whose cores are free (Linux counts the thread's
// own CPU time instead).
func spendCPU(d time.Duration) { spendWallClock(d) }
