package fsm

import (
	"hash/maphash"
	"testing"
)

// Records stored within an Apply are found by key even when two keys share
// a hash slot (which a 64-bit hash makes too rare to meet by chance).
func TestPendingIdempotencyRecordsAreFoundThroughSharedHashSlots(t *testing.T) {
	a := &applier{f: &FSM{}}
	a.idemStore(idemUsage, "k1", [16]byte{1}, []byte("one"))
	a.idemStore(idemUsage, "k2", [16]byte{2}, []byte("two"))
	// Make k1 share k2's slot: the slot names k2's record, chained to k1's.
	k1 := maphash.Bytes(a.idemSeed, []byte{idemUsage, 'k', '1'})
	a.idemPending[1].sameHash = a.idemLatest[k1]
	a.idemLatest[k1] = 1

	tests := []struct {
		id   string
		want string // the stored result, "" for none
	}{
		{"k1", "one"},
		{"k2", "two"},
		{"k3", ""},
	}
	for _, tt := range tests {
		p := a.pendingIdemOf(append([]byte{idemUsage}, tt.id...))
		switch {
		case p == nil && tt.want != "":
			t.Errorf("%s: not found", tt.id)
		case p != nil && string(p.val[24:]) != tt.want:
			t.Errorf("%s: found %q, want %q", tt.id, p.val[24:], tt.want)
		}
	}
}
