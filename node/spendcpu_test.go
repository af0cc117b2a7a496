package node

import (
	"fmt"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/creditd/creditd/fsm"
)

// processCPU is the CPU time this process has used (user and system).
func processCPU(t *testing.T) time.Duration {
	t.Helper()
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		t.Fatal(err)
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

func usageEntry(t *testing.T, index uint64, events int, others int) fsm.Entry {
	t.Helper()
	evs := make([]fsm.UsageEvent, events)
	for i := range evs {
		evs[i] = fsm.UsageEvent{ID: fmt.Sprintf("e%d-%d", index, i), CustomerID: "c", FeatureID: "f", Quantity: 1}
	}
	var cmds [][]byte
	for _, c := range append([]fsm.Command{fsm.BurnUsage{Events: evs}}, make([]fsm.Command, others)...) {
		if c == nil {
			c = fsm.UpsertCustomer{ID: "c"}
		}
		b, err := fsm.EncodeCommand(c)
		if err != nil {
			t.Fatal(err)
		}
		cmds = append(cmds, b)
	}
	return fsm.Entry{Index: index, Data: fsm.EncodeEntry(1, cmds)}
}

func TestACostlyNoopSpendsItsCostPerEventInCPUTime(t *testing.T) {
	for _, tc := range []struct {
		name            string
		perEvent        time.Duration
		events, others  int
		entries         int
		wantAtLeastCost time.Duration
	}{
		{"no cost", 0, 1000, 0, 2, 0},
		{"a batch of events", 100 * time.Microsecond, 500, 0, 1, 50 * time.Millisecond},
		{"events and other commands in several entries", 200 * time.Microsecond, 100, 50, 2, 60 * time.Millisecond},
	} {
		t.Run(tc.name, func(t *testing.T) {
			sm := NewCostlyNoopStateMachine(tc.perEvent)
			var es []fsm.Entry
			for i := range tc.entries {
				es = append(es, usageEntry(t, uint64(i+1), tc.events, tc.others))
			}
			before := processCPU(t)
			rs, err := sm.Apply(es, nil)
			if err != nil {
				t.Fatal(err)
			}
			// CPU time, not wall time: a slow or busy host makes the
			// apply longer, never its CPU time shorter.
			if spent := processCPU(t) - before; spent < tc.wantAtLeastCost {
				t.Errorf("the apply used %s of CPU; want at least %s", spent, tc.wantAtLeastCost)
			}
			if len(rs) != len(es) || sm.AppliedIndex() != uint64(tc.entries) {
				t.Errorf("%d results, applied index %d; want %d and %d", len(rs), sm.AppliedIndex(), len(es), tc.entries)
			}
		})
	}
}

// An empty entry (a new leader's first) is skipped, as fsm skips it.
func TestACostlyNoopRefusesAnEntryItCannotDecodeNamingIt(t *testing.T) {
	sm := NewCostlyNoopStateMachine(time.Microsecond)
	_, err := sm.Apply([]fsm.Entry{{Index: 6}, usageEntry(t, 7, 1, 0), {Index: 8, Data: []byte{0xff, 1, 2}}}, nil)
	if err == nil || !strings.Contains(err.Error(), "entry 8") {
		t.Fatalf("err = %v; want one naming entry 8", err)
	}
	if sm.AppliedIndex() != 0 {
		t.Errorf("applied index %d after a refused apply; want 0", sm.AppliedIndex())
	}
}
