package fsm

import (
	"bytes"
	"fmt"
	"slices"
	"testing"
)

// checkPoolCaches holds the applier's cached pools to what is committed:
// a pool's live list, read from the burn order index once and then kept,
// names the index's grants in its order (grants no longer live may linger
// until a recount drops them), each the grant the applier caches; and a
// pool's kept sum of usable credits, while it is to be used, is what the
// list's grants hold that may burn now, and is recounted before any of
// their effective_at or expires_at comes.
func checkPoolCaches(t testing.TB, f *FSM) {
	t.Helper()
	a := f.ap
	if a == nil {
		return
	}
	now := Timestamp(f.lastTime.Load())
	err := f.View(func(v *View) error {
		keys := make([]string, 0, len(a.pools))
		for k := range a.pools {
			keys = append(keys, k)
		}
		slices.Sort(keys)
		for _, k := range keys {
			p := a.pools[k]
			if !p.liveLoaded {
				continue
			}
			var index, listed []string
			prefix := burnPrefix(p.CustomerID, p.CreditTypeID)
			c := v.tx.Bucket(bBurnOrder).Cursor()
			for k, id := c.Seek(prefix); k != nil && bytes.HasPrefix(k, prefix); k, id = c.Next() {
				index = append(index, string(id))
			}
			var usable int64
			for _, g := range p.live {
				if a.grants[g.ID] != g {
					return fmt.Errorf("pool %q lists grant %s, not the one the applier caches", k, g.ID)
				}
				if !isLive(g.Status) {
					continue
				}
				listed = append(listed, g.ID)
				stored, err := v.Grant(g.ID)
				if err != nil {
					return err
				}
				if stored.Remaining != g.Remaining || stored.Status != g.Status {
					return fmt.Errorf("grant %s cached with %d remaining, %v; committed %d, %v",
						g.ID, g.Remaining, g.Status, stored.Remaining, stored.Status)
				}
				if canBurn(g, now) {
					usable += g.Remaining
				}
				if p.usableOK && p.usableUntil > now {
					if g.EffectiveAt > now && p.usableUntil > g.EffectiveAt {
						return fmt.Errorf("pool %q keeps its sum until %d, past grant %s's effective_at %d", k, p.usableUntil, g.ID, g.EffectiveAt)
					}
					if g.ExpiresAt > now && p.usableUntil > g.ExpiresAt {
						return fmt.Errorf("pool %q keeps its sum until %d, past grant %s's expires_at %d", k, p.usableUntil, g.ID, g.ExpiresAt)
					}
				}
			}
			if !slices.Equal(index, listed) {
				return fmt.Errorf("pool %q lists live grants %v; the burn order index holds %v", k, listed, index)
			}
			if p.usableOK && p.usableUntil > now && p.usable != usable {
				return fmt.Errorf("pool %q keeps %d usable credits; its grants hold %d", k, p.usable, usable)
			}
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
}

func TestCachedPoolsMatchTheCommittedGrantsOverHarshLogs(t *testing.T) {
	for seed := uint64(1); seed <= 6; seed++ {
		for _, perApply := range []int{1, 3} {
			t.Run(fmt.Sprintf("seed %d, %d entries per Apply", seed, perApply), func(t *testing.T) {
				f := openAt(t, t.TempDir())
				log := harshLog(t, seed, 500)
				applyAll(t, f, log, perApply, func([][]Result) { checkPoolCaches(t, f) })
			})
		}
	}
}

func TestCachedPoolsMatchTheCommittedGrantsOverRandomLogs(t *testing.T) {
	for seed := uint64(1); seed <= 4; seed++ {
		t.Run(fmt.Sprintf("seed %d", seed), func(t *testing.T) {
			f := openAt(t, t.TempDir())
			applyAll(t, f, randomLog(seed, 400), 2, func([][]Result) { checkPoolCaches(t, f) })
		})
	}
}

// applyCheckingEachCommand is Apply (without answers) that checks the
// applier's cached pools after every command, against the burn order index
// as this transaction has it: a sum left stale by one command and recounted
// before the entry ends would answer wrongly however entries are grouped,
// so comparing groupings cannot see it.
func applyCheckingEachCommand(t *testing.T, f *FSM, entries []Entry) {
	t.Helper()
	tx, err := f.db.Begin(true)
	if err != nil {
		t.Fatal(err)
	}
	a := f.ap
	if a == nil {
		a = &applier{}
		f.ap = a
	}
	a.reset(f, tx)
	fail := func(format string, args ...any) {
		t.Helper()
		tx.Rollback() // or closing the state waits for this transaction
		f.ap = nil
		t.Fatalf(format, args...)
	}
	for _, e := range entries {
		if e.Index <= a.applied {
			continue
		}
		a.applied = e.Index
		rules, ts, cmds, err := decodeEntry(e.Data)
		if err != nil {
			fail("entry %d: %v", e.Index, err)
		}
		a.now, a.index, a.rules = max(ts, a.now), e.Index, rules
		stored := a.idemStored
		for j, c := range cmds {
			a.cmdPos = j
			a.apply(c)
			if a.err != nil {
				fail("entry %d command %d: %v", e.Index, j, a.err)
			}
			if err := checkPoolsInTx(a); err != nil {
				fail("entry %d, after command %d (%T): %v", e.Index, j, c, err)
			}
		}
		a.flushLedger()
		a.pruneInStep(a.idemStored - stored)
	}
	if err := a.flush(); err != nil {
		fail("flush: %v", err)
	}
	if err := tx.Commit(); err != nil {
		t.Fatal(err)
	}
	f.setPosition(position{a.applied, int64(a.now), a.seq})
	a.tx = nil
}

func checkPoolsInTx(a *applier) error {
	keys := make([]string, 0, len(a.pools))
	for k := range a.pools {
		keys = append(keys, k)
	}
	slices.Sort(keys)
	for _, k := range keys {
		p := a.pools[k]
		if !p.liveLoaded {
			continue
		}
		var index, listed []string
		prefix := burnPrefix(p.CustomerID, p.CreditTypeID)
		c := a.tx.Bucket(bBurnOrder).Cursor()
		for k, id := c.Seek(prefix); k != nil && bytes.HasPrefix(k, prefix); k, id = c.Next() {
			index = append(index, string(id))
		}
		var usable int64
		for _, g := range p.live {
			if isLive(g.Status) {
				listed = append(listed, g.ID)
			}
			if canBurn(g, a.now) {
				usable += g.Remaining
			}
		}
		if !slices.Equal(index, listed) {
			return fmt.Errorf("pool %q lists live grants %v; the burn order index holds %v", k, listed, index)
		}
		if p.usableOK && a.now < p.usableUntil && p.usable != usable {
			return fmt.Errorf("pool %q keeps %d usable credits; its grants hold %d", k, p.usable, usable)
		}
	}
	return nil
}

func TestCachedPoolsMatchTheirGrantsAfterEveryCommand(t *testing.T) {
	for seed := uint64(1); seed <= 6; seed++ {
		t.Run(fmt.Sprintf("seed %d", seed), func(t *testing.T) {
			f := openAt(t, t.TempDir())
			log := harshLog(t, seed, 500)
			for i := 0; i < len(log); i += 3 {
				applyCheckingEachCommand(t, f, log[i:min(i+3, len(log))])
			}
			g := openAt(t, t.TempDir())
			applyAll(t, g, log, 3, nil)
			if !bytes.Equal(dumpOf(t, f), dumpOf(t, g)) {
				t.Fatal("the checking Apply ends elsewhere than Apply")
			}
		})
	}
}
