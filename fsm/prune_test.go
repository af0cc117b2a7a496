package fsm

import (
	"encoding/binary"
	"fmt"
	"path/filepath"
	"testing"
	"time"

	bolt "go.etcd.io/bbolt"
)

// idemRecords counts the stored idempotency records of each generation.
func idemRecords(t *testing.T, f *FSM) map[uint64]int {
	t.Helper()
	n := map[uint64]int{}
	err := f.db.View(func(tx *bolt.Tx) error {
		root := tx.Bucket(bIdem)
		return root.ForEachBucket(func(name []byte) error {
			n[binary.BigEndian.Uint64(name)] = root.Bucket(name).Stats().KeyN
			return nil
		})
	})
	if err != nil {
		t.Fatal(err)
	}
	return n
}

// An entry prunes as many records of the generations no lookup sees any
// more as it stores: Ticks alone prune at most maxPruneBatch each, so a
// cluster storing more than that (10,000 a second at the default tick
// interval, 2.8 at 1 h) for a week never caught up, and its state file
// grew without bound. Entries of version 1 (older builds) do not, so a log
// applies as it did; and the state is the same however entries are
// grouped into Apply calls, with or without a Tick among them.
func TestEntriesPruneAsManyOldRecordsAsTheyStore(t *testing.T) {
	const retention = time.Hour
	opts := Options{NoSync: true, IdempotencyRetention: retention}
	h := &harness{t: t, now: t0} // an encoder of entries only
	var log []Entry
	add := func(version byte, c Command) {
		e := h.entry(c)
		e.Data[0] = version
		log = append(log, e)
	}
	burns := func(from, n int) BurnUsage {
		evs := make([]UsageEvent, n)
		for i := range evs {
			evs[i] = UsageEvent{ID: fmt.Sprintf("e%06d", from+i), CustomerID: "c1", CreditTypeID: "ai", Credits: 1}
		}
		return BurnUsage{Events: evs}
	}
	for _, c := range []Command{CreateCreditType{ID: "ai", Scale: 2}, UpsertCustomer{ID: "c1"},
		CreateGrant{ID: "p", CustomerID: "c1", CreditTypeID: "ai", Category: Promotional, Amount: 1 << 40}} {
		add(entryVersion, c)
	}
	setup := len(log)
	for i := 0; i < 5; i++ { // 5,000 records in the first generation
		add(entryVersion, burns(i*1000, 1000))
	}
	// Two retention windows on, the first generation is seen by no lookup.
	h.after(2*retention + time.Minute)
	add(entryVersion, burns(10_000, 1200)) // prunes 1,200
	add(1, burns(20_000, 700))             // an older build's entry: prunes nothing
	add(entryVersion, burns(30_000, 300))  // 300
	add(entryVersion, burns(40_000, 4000)) // the 3,501 left, and the generation goes
	add(entryVersion, burns(50_000, 10))   // nothing left to prune
	// (The grant's own record is in the first generation too.)
	wantLeft := []int{1001, 2001, 3001, 4001, 5001, 3801, 3801, 3501, 0, 0}
	firstGen := uint64(int64(t0) / retention.Microseconds())

	for _, perApply := range []int{1, 3, len(log)} {
		f, err := Open(filepath.Join(t.TempDir(), "state.db"), opts)
		if err != nil {
			t.Fatal(err)
		}
		if _, err := f.Apply(log[:setup]); err != nil {
			t.Fatal(err)
		}
		for i := setup; i < len(log); i += perApply {
			end := min(i+perApply, len(log))
			rs, err := f.Apply(log[i:end])
			if err != nil {
				t.Fatal(err)
			}
			for j, r := range rs {
				if ev := r[0].Value.([]EventResult); r[0].Err != nil || ev[0].Status != EventBurned {
					t.Fatalf("%d per Apply: entry %d: %+v", perApply, i+j, r[0])
				}
			}
			if got, want := idemRecords(t, f)[firstGen], wantLeft[end-1-setup]; got != want {
				t.Fatalf("%d per Apply, after entry %d: %d records left in the first generation, want %d (%v)",
					perApply, end, got, want, idemRecords(t, f))
			}
		}
		if _, ok := idemRecords(t, f)[firstGen]; ok {
			t.Fatalf("%d per Apply: the emptied generation is still there: %v", perApply, idemRecords(t, f))
		}
		f.Close()
	}

	requireTheSameHoweverGrouped(t, log, opts)
}

// A Tick prunes after what the entries before it in its Apply owe, as if
// each entry had pruned when it was applied: with two generations to prune
// (a small one and a large one), doing the Tick's first would end its call
// at the small one and leave the entry's budget to the large one, not the
// other way round.
func TestATickPrunesAfterTheEntriesBeforeIt(t *testing.T) {
	const retention = time.Hour
	h := &harness{t: t, now: t0}
	var log []Entry
	burns := func(from, n int) Entry {
		evs := make([]UsageEvent, n)
		for i := range evs {
			evs[i] = UsageEvent{ID: fmt.Sprintf("e%06d", from+i), CustomerID: "c1", CreditTypeID: "ai", Credits: 1}
		}
		return h.entry(BurnUsage{Events: evs})
	}
	for _, c := range []Command{CreateCreditType{ID: "ai", Scale: 2}, UpsertCustomer{ID: "c1"},
		CreateGrant{ID: "p", CustomerID: "c1", CreditTypeID: "ai", Category: Promotional, Amount: 1 << 40}} {
		log = append(log, h.entry(c))
	}
	log = append(log, burns(0, 100)) // the first generation: 101 records
	h.after(retention)
	for i := 0; i < 12; i++ { // the second: 12,000
		log = append(log, burns(1000+i*1000, 1000))
	}
	h.after(2 * retention)
	log = append(log, burns(100_000, 1200), h.entry(Tick{}), burns(200_000, 10))
	requireTheSameHoweverGrouped(t, log, Options{NoSync: true, IdempotencyRetention: retention})
}
