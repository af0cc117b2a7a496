package fsm

import (
	"bytes"
	"encoding/binary"

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
// most maxPruneBatch records per Tick, oldest first.
func (a *applier) pruneIdempotency() {
	a.flushIdem() // the records stored so far belong to what is pruned
	g := a.idemGeneration(a.now)
	root := a.tx.Bucket(bIdem)
	budget := maxPruneBatch
	c := root.Cursor()
	for name, _ := c.First(); name != nil && budget > 0; name, _ = c.Next() {
		gen := binary.BigEndian.Uint64(name)
		if gen+1 >= g {
			return
		}
		b := root.Bucket(name)
		bc := b.Cursor()
		var keys [][]byte
		for k, _ := bc.First(); k != nil && len(keys) < budget; k, _ = bc.Next() {
			keys = append(keys, bytes.Clone(k))
		}
		for _, k := range keys {
			a.del(b, k)
		}
		budget -= len(keys)
		if budget > 0 { // the generation is empty
			if err := root.DeleteBucket(bytes.Clone(name)); err != nil {
				a.err = err
			}
			// Cursors are invalid after a delete: lookups open theirs
			// anew, and pruning goes on next Tick.
			a.idemOpen = false
			return
		}
	}
}
