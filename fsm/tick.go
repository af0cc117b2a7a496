package fsm

import (
	"bytes"
	"encoding/binary"
	"fmt"

	bolt "go.etcd.io/bbolt"
)

// maxTickWork bounds how many grants, reservations and idempotency records
// one Tick touches of each kind; what is left waits for the next Tick.
// Until then, reads and burns already treat an expired grant as unusable.
const maxTickWork = 10000

// dueKeys collects up to limit keys of a time-ordered index whose time is ≤ t.
func dueKeys(b *bolt.Bucket, t Timestamp, limit int) [][]byte {
	var keys [][]byte
	c := b.Cursor()
	for k, _ := c.First(); k != nil && len(keys) < limit; k, _ = c.Next() {
		if len(k) < 8 || readTS(k[:8]) > t {
			break
		}
		keys = append(keys, bytes.Clone(k))
	}
	return keys
}

func (a *applier) tick() {
	a.activateGrants()
	a.expireGrants()
	a.expireReservations()
	a.pruneIdempotency()
}

func (a *applier) activateGrants() {
	b := a.tx.Bucket(bGrantStart)
	for _, k := range dueKeys(b, a.now, maxTickWork) {
		a.del(b, k)
		g := a.grant(string(k[8:]))
		if g == nil || g.Status != GrantPending {
			continue
		}
		g.Status = GrantActive
		a.touchGrant(g)
		a.repayOverdraft(a.pool(g.CustomerID, g.CreditTypeID), g, CauseTick, "")
	}
}

func (a *applier) expireGrants() {
	b := a.tx.Bucket(bGrantExp)
	for _, k := range dueKeys(b, a.now, maxTickWork) {
		g := a.grant(string(k[8:]))
		if g == nil {
			a.del(b, k)
			continue
		}
		if g.Status == GrantPending {
			a.del(a.tx.Bucket(bGrantStart), timeIDKey(g.EffectiveAt, g.ID))
		}
		a.unindexLive(g)
		n, money := g.Remaining, -g.DeferredMicros
		g.Expired += n
		g.Remaining, g.DeferredMicros = 0, 0
		g.Status = GrantExpired
		a.touchGrant(g)
		if n == 0 {
			continue
		}
		p := a.pool(g.CustomerID, g.CreditTypeID)
		forgetUsable(p)
		p.Balance -= n
		a.touchPool(p)
		a.appendLedger(p, &LedgerEntry{CustomerID: g.CustomerID, CreditTypeID: g.CreditTypeID, GrantID: g.ID,
			Kind: EntryExpire, Amount: -n, BalanceAfter: p.Balance, CostBasis: g.CostBasis, Currency: g.Currency,
			MoneyMicros: money, CauseKind: CauseTick, SourceKind: g.SourceKind, SourceRef: g.SourceRef})
	}
}

func (a *applier) expireReservations() {
	b := a.tx.Bucket(bResvExp)
	for _, k := range dueKeys(b, a.now, maxTickWork) {
		r := a.loadReservation(string(k[8:]))
		if r == nil || r.Status != ReservationHeld {
			a.del(b, k)
			continue
		}
		a.freeHold(r)
		r.Status = ReservationExpired
		a.storeReservation(r)
	}
}

// pruneIdempotency deletes generations older than the previous one, at
// most maxPruneBatch records per Tick, oldest first, after the pruning the
// entries before it in this Apply owe (pruneInStep).
func (a *applier) pruneIdempotency() {
	a.flushIdem() // the records stored so far belong to what is pruned
	a.runPrunes()
	a.pruneGenerationsBefore(a.idemGeneration(a.now), maxPruneBatch)
}

// rulesPruneInStep is the first entry version whose entries prune as many
// old idempotency records as they store (pruneInStep).
const rulesPruneInStep = 2

// idemPrune is the pruning an entry owes: up to budget records of the
// generations before gen-1 (gen is the entry's own).
type idemPrune struct {
	gen    uint64
	budget int
}

// pruneInStep records the pruning an entry that stored n idempotency
// records owes: n records of the generations no lookup sees any more. Ticks
// alone prune at most maxPruneBatch records each (10,000 a second at the
// default tick interval, fewer at longer ones), so a cluster that stores
// more than that for a week never caught up and its state file grew
// without bound. In step, pruning keeps up with any rate: a generation
// becomes prunable a week after it began and holds a week of records, which
// the next week's records prune. The work is done in flush, after the
// answer, entry by entry as if each had pruned when it was applied (see
// runPrunes), so how raft groups entries into Apply calls changes nothing.
func (a *applier) pruneInStep(n int) {
	if n == 0 || a.rules < rulesPruneInStep {
		return
	}
	a.prunes = append(a.prunes, idemPrune{gen: a.idemGeneration(a.now), budget: n})
}

// runPrunes does the pruning entries owe, in their order. Every record
// stored in this Apply is written first (flushIdem): an entry's pruning
// covers generations before its own previous one, which records stored by
// later entries never are in, so doing it here deletes what doing it at
// the entry's end would have deleted.
func (a *applier) runPrunes() {
	for _, p := range a.prunes {
		a.pruneGenerationsBefore(p.gen, p.budget)
	}
	a.prunes = a.prunes[:0]
}

// pruneGenerationsBefore deletes up to budget records of the generations
// before g-1, oldest first; a generation found empty is deleted and ends
// the call (cursors are invalid after a bucket's delete).
func (a *applier) pruneGenerationsBefore(g uint64, budget int) {
	if a.err != nil {
		return
	}
	root := a.tx.Bucket(bIdem)
	c := root.Cursor()
	for name, _ := c.First(); name != nil && budget > 0; name, _ = c.Next() {
		gen := binary.BigEndian.Uint64(name)
		if gen+1 >= g {
			return
		}
		// One cursor deletes from the front (a Delete per key would make
		// one each); First again after each, since Next after a Delete
		// skips a key.
		bc := root.Bucket(name).Cursor()
		for k, _ := bc.First(); k != nil && budget > 0; k, _ = bc.First() {
			if err := bc.Delete(); err != nil {
				a.err = fmt.Errorf("prune idempotency generation %d: %w", gen, err)
				return
			}
			budget--
		}
		if budget > 0 { // the generation is empty
			if err := root.DeleteBucket(a.clone(name)); err != nil {
				a.err = err
			}
			// Lookups open their cursors anew; pruning goes on with the
			// next entry or Tick.
			a.idemOpen = false
			return
		}
	}
}
