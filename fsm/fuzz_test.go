package fsm

import (
	"bytes"
	"errors"
	"testing"
)

// FuzzApply feeds arbitrary entries to a seeded state: decoding and apply
// must never panic, and an entry that fails to decode, or a command that
// returns an error, must leave the model exactly as it was. (A Reserve
// refused below its customer's auto top-up threshold records the top-up,
// but the seeded state has no auto top-up, and only a command that succeeds
// can turn it on.)
func FuzzApply(f *testing.F) {
	for _, e := range randomLog(5, 30) {
		f.Add(e.Data)
	}
	f.Add([]byte{1, 0, 1, byte(CmdBurnUsage), 0})
	f.Add([]byte{})
	f.Fuzz(func(t *testing.T, data []byte) {
		h := newHarness(t)
		h.seed()
		h.promo("p", 1000)
		h.paid("q", 1000, "0.25")
		before := stripMeta(h.dump())
		_, cmds, decodeErr := DecodeEntry(data)
		h.index++
		rs, err := h.f.Apply([]Entry{{Index: h.index, Data: data}})
		if err != nil {
			if !errors.Is(err, ErrUnknownVersion) {
				t.Fatalf("apply failed with a storage-level error: %v", err)
			}
			return
		}
		changed := !bytes.Equal(before, stripMeta(h.dump()))
		if decodeErr != nil {
			if changed {
				t.Fatal("an undecodable entry changed the state")
			}
			return
		}
		if len(rs[0]) != len(cmds) {
			t.Fatalf("%d results for %d commands", len(rs[0]), len(cmds))
		}
		failedAll := true
		for _, r := range rs[0] {
			if r.Err == nil {
				failedAll = false
			} else if _, ok := r.Err.(*Error); !ok {
				t.Fatalf("non-domain error %v", r.Err)
			}
		}
		if failedAll && changed {
			t.Fatal("commands that all failed changed the state")
		}
		checkInvariants(t, h.f)
	})
}
