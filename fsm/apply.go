package fsm

import (
	"bytes"
	"cmp"
	"crypto/sha256"
	"encoding/binary"
	"errors"
	"fmt"
	"hash/maphash"
	"slices"

	bolt "go.etcd.io/bbolt"
)

// Apply applies entries in order in one storage transaction. results[i][j]
// is the result of command j of entries[i]. Entries at or below the applied
// index are skipped (their results are nil). The error is a storage failure
// or an entry from a newer creditd (ErrUnknownVersion); the FSM has then
// changed nothing, and the node must stop rather than go on without it.
func (f *FSM) Apply(entries []Entry) ([][]Result, error) {
	return f.ApplyAnswering(entries, nil)
}

// ApplyAnswering is Apply that hands the results to answer (if not nil) as
// soon as they are computed, before the transaction writes the state it
// changed and commits: that is about 40 % of Apply's time, which callers
// waiting for their results no longer wait for. A View begun after answer
// was called waits for the commit, so a caller that was answered and then
// reads sees its own write. answer must not call View itself (it would wait
// for the commit that waits for answer).
//
// If the transaction then fails, the error is returned as from Apply and
// the answers stand: they are what these entries yield from this state on
// every replica, and a restart re-applies them from the state's applied
// index to the same results. The results do not depend on how the state
// is stored.
func (f *FSM) ApplyAnswering(entries []Entry, answer func([][]Result)) ([][]Result, error) {
	f.mu.RLock()
	defer f.mu.RUnlock()
	if f.db == nil {
		return nil, errClosed
	}
	tx, err := f.db.Begin(true)
	if err != nil {
		return nil, fmt.Errorf("apply: begin: %w", err)
	}
	a := f.ap
	if a == nil {
		a = &applier{}
		f.ap = a
	}
	a.reset(f, tx)
	results := make([][]Result, len(entries))
	for i, e := range entries {
		if e.Index <= a.applied {
			continue
		}
		a.applied = e.Index
		if len(e.Data) == 0 {
			continue
		}
		rules, t, cmds, err := decodeEntry(e.Data)
		if errors.Is(err, ErrUnknownVersion) {
			tx.Rollback()
			f.ap = nil
			return nil, fmt.Errorf("apply entry %d: %w", e.Index, err)
		}
		if err != nil {
			// A malformed entry is refused the same way on every replica.
			results[i] = []Result{{Err: invalid("entry", "%v", err)}}
			continue
		}
		if t < a.now {
			t = a.now // time never goes backwards, whatever the leader sent
		}
		a.now = t
		a.index = e.Index
		a.rules = rules
		stored := a.idemStored
		rs := make([]Result, len(cmds))
		for j, c := range cmds {
			a.cmdPos = j
			rs[j] = a.apply(c)
			if a.err != nil {
				tx.Rollback()
				f.ap = nil
				return nil, fmt.Errorf("apply entry %d command %d: %w", e.Index, j, a.err)
			}
		}
		// Ledger blocks close with their entry, so the stored layout is a
		// function of the log alone, however raft groups entries into
		// Apply calls.
		a.flushLedger()
		a.pruneInStep(a.idemStored - stored)
		results[i] = rs
	}
	// The applied index, log time and last sequence move with the answer:
	// a caller answered and then asking for them gets this transaction's.
	before := f.position()
	if answer != nil {
		f.answered.Lock()
		defer f.answered.Unlock() // after the commit below, or its failure
		f.setPosition(position{a.applied, int64(a.now), a.seq})
		answer(results)
	}
	if err := a.flush(); err != nil {
		tx.Rollback()
		f.ap = nil
		f.setPosition(before)
		return nil, fmt.Errorf("apply: flush: %w", err)
	}
	if err := tx.Commit(); err != nil {
		f.ap = nil
		f.setPosition(before)
		return nil, fmt.Errorf("apply: commit: %w", err)
	}
	f.setPosition(position{a.applied, int64(a.now), a.seq})
	a.tx = nil
	return results, nil
}

// position is what AppliedIndex, LastTime and LastSeq report.
type position struct {
	applied  uint64
	lastTime int64
	lastSeq  uint64
}

// denseBuckets are filled to denseFill before a page splits. Not
// pool_ledger, whose new runs land all over the key space (44 % full at
// 90 %, 62 % at bbolt's default 50 %). Pools: see densePools.
var denseBuckets = [][]byte{bCustomer, bGrant, bCustGrant, bBurnOrder, bPurchase}

const denseFill = 0.9

// densePools reports whether this transaction's pool pages split full
// (denseFill) rather than at bbolt's default half. A pool record grows in
// place (its run of ledger sequences), and a page split at 90 % overflows
// again at the next growth, leaving a trail of nearly empty pages that
// updates never merge: 1,000 pools burned from sat in 112 pages at 28 % (a
// batch touching most pools rewrote all of them), in 35 when those splits
// leave half. Pools created in key order (customers loaded in bulk) still
// split full, or a million-customer state would hold its pools in
// half-empty pages (+80 MB of file and of resident memory). Only the page
// layout depends on it, never the state.
func (a *applier) densePools() bool {
	return a.poolsCreated*2 >= a.poolsWritten
}

// recordCacheMax bounds the decoded grants, pools and customers kept
// between Apply calls.
const recordCacheMax = 200_000

// applier holds one Apply call's transaction and the records it has loaded.
// Records are decoded once per call, changed in memory and written back in
// flush, in key order.
type applier struct {
	f       *FSM
	tx      *bolt.Tx
	applied uint64
	index   uint64
	cmdPos  int
	now     Timestamp
	seq     uint64
	err     error // storage failure: fatal

	customers map[string]*Customer
	pools     map[string]*Pool
	grants    map[string]*Grant
	features  map[string]*Feature
	ctypes    map[string]*CreditType
	plans     map[string]*Plan
	dirty     []dirtyRecord
	// epoch numbers Apply calls. Pools and grants, written by nearly every
	// event, remember the epoch that marked them dirty: cheaper than
	// isDirty, a map lookup per event that showed in profiles. isDirty
	// marks the rest.
	epoch   uint64
	isDirty map[any]bool
	// poolsCreated and poolsWritten count this transaction's new and
	// dirty pools (see densePools).
	poolsCreated, poolsWritten int

	buf enc
	// rules is the version of the entry being applied: the rules it is
	// applied by (see entryVersion).
	rules uint8
	// grantsSummed counts the live grants poolGrants has read (tests
	// check that a burn's work does not grow with its pool's grants).
	grantsSummed uint64
	// burnSlab is shared room for results' burns (see burnSpace).
	burnSlab []GrantBurn
	kb       []byte // scratch key for lookups
	chunk    []byte // see alloc

	bLedger, bPoolLedger, bGrant, bBurnOrder *bolt.Bucket
	// idemCur and idemPrev are the idempotency generations visible at
	// a.now; idemGen is the current one's number.
	idemCur, idemPrev *bolt.Bucket
	// Cursors on them for lookups: a cursor's Seek reuses its stack, where
	// Bucket.Get allocates a new cursor per call.
	idemCurC, idemPrevC *bolt.Cursor
	idemGen             uint64
	idemOpen            bool // idemCur, idemPrev and idemGen are set
	// idemPending are records stored in this Apply, written by flushIdem.
	// idemLatest indexes them by a hash of their key (kind, id): the newest
	// of each hash, chained to earlier ones through sameHash. The seed only
	// places keys in memory; what a lookup finds does not depend on it.
	idemPending []pendingIdem
	idemLatest  map[uint64]int32
	// idemStored counts the records stored in this Apply; prunes is the
	// pruning its entries owe (pruneInStep), done in flush.
	idemStored int
	prunes     []idemPrune
	idemSeed   maphash.Seed

	ledgerBlock []byte // entries of the open ledger block
	ledgerFirst uint64
	ledgerN     int
}

// dirtyRecord is a record to write back in flush. kind orders the buckets
// (any fixed order will do: they are separate trees), so sorting compares
// a byte before it compares keys.
type dirtyRecord struct {
	kind recordKind
	key  []byte
	rec  interface{ encode(*enc) }
	val  []byte // encoded already (grants: see touchGrant), or nil
}

// recordKind names the bucket of a cached record.
type recordKind uint8

const (
	kindCreditType recordKind = iota
	kindFeature
	kindPlan
	kindCustomer
	kindPool
	kindGrant
)

var bucketOfKind = [...][]byte{kindCreditType: bCreditType, kindFeature: bFeature, kindPlan: bPlan,
	kindCustomer: bCustomer, kindPool: bPool, kindGrant: bGrant}

func (a *applier) reset(f *FSM, tx *bolt.Tx) {
	a.f, a.tx, a.err = f, tx, nil
	a.applied = f.applied.Load()
	a.now = Timestamp(f.lastTime.Load())
	a.seq = f.lastSeq.Load()
	// Decoded records stay cached from one Apply to the next: apply is the
	// only writer, a command changes records only after all its checks
	// pass, and every change marks the record dirty, so the cache always
	// equals what was committed. Apply drops the applier on any failure and
	// Restore drops it too. The cache is bounded by recordCacheMax.
	if a.customers == nil || len(a.grants)+len(a.pools)+len(a.customers) > recordCacheMax {
		a.customers = map[string]*Customer{}
		a.pools = map[string]*Pool{}
		a.grants = map[string]*Grant{}
		a.features = map[string]*Feature{}
		a.ctypes = map[string]*CreditType{}
		a.plans = map[string]*Plan{}
		a.isDirty = map[any]bool{}
	}
	a.epoch++
	clear(a.isDirty)
	a.dirty = a.dirty[:0]
	a.poolsCreated, a.poolsWritten = 0, 0
	a.bLedger = tx.Bucket(bLedger)
	a.bLedger.FillPercent = 1.0 // keys only ever grow
	// Pages of the other buckets split fuller than bbolt's default half:
	// keys arriving in order (ids a caller numbers) would otherwise leave
	// every page half empty, doubling the file and the memory its touched
	// pages hold.
	for _, name := range denseBuckets {
		tx.Bucket(name).FillPercent = denseFill
	}
	a.ledgerN = 0
	a.bPoolLedger = tx.Bucket(bPoolLedger)
	a.idemCur, a.idemPrev, a.idemGen, a.idemOpen = nil, nil, 0, false
	a.idemCurC, a.idemPrevC = nil, nil
	a.idemPending = a.idemPending[:0]
	clear(a.idemLatest)
	a.idemStored = 0
	a.prunes = a.prunes[:0]
	a.chunk = nil
	a.bGrant = tx.Bucket(bGrant)
	a.bBurnOrder = tx.Bucket(bBurnOrder)
}

func (a *applier) flush() error {
	a.flushLedger()
	a.flushIdem()
	a.runPrunes()
	if a.err != nil {
		return a.err
	}
	if pools := a.tx.Bucket(bPool); a.densePools() {
		pools.FillPercent = denseFill
	} else {
		pools.FillPercent = bolt.DefaultFillPercent
	}
	// In key order, so consecutive puts land in the same bbolt leaf.
	slices.SortFunc(a.dirty, func(x, y dirtyRecord) int {
		if x.kind != y.kind {
			return int(x.kind) - int(y.kind)
		}
		return bytes.Compare(x.key, y.key)
	})
	var b *bolt.Bucket
	for i, d := range a.dirty {
		if i == 0 || d.kind != a.dirty[i-1].kind {
			b = a.tx.Bucket(bucketOfKind[d.kind])
		}
		v := d.val
		if v == nil {
			v = a.encodeDirty(d.rec)
		}
		if err := b.Put(d.key, v); err != nil {
			return err
		}
	}
	m := a.tx.Bucket(bMeta)
	if err := m.Put(metaApplied, u64key(a.applied)); err != nil {
		return err
	}
	if err := m.Put(metaTime, u64key(uint64(a.now))); err != nil {
		return err
	}
	return m.Put(metaSeq, u64key(a.seq))
}

// markDirty queues a record other than a pool or grant for flush.
func (a *applier) markDirty(kind recordKind, key string, rec interface{ encode(*enc) }) {
	if a.isDirty[rec] {
		return
	}
	a.isDirty[rec] = true
	a.queueDirty(kind, key, rec)
}

func (a *applier) queueDirty(kind recordKind, key string, rec interface{ encode(*enc) }) {
	k := a.alloc(len(key))
	copy(k, key)
	a.dirty = append(a.dirty, dirtyRecord{kind: kind, key: k, rec: rec})
}

// encodeDirty encodes a record into memory that lives until commit.
func (a *applier) encodeDirty(rec interface{ encode(*enc) }) []byte {
	a.buf.b = a.buf.b[:0]
	rec.encode(&a.buf)
	v := a.alloc(len(a.buf.b))
	copy(v, a.buf.b)
	return v
}

// put writes a value now (for records not cached in the applier).
func (a *applier) put(b *bolt.Bucket, key, val []byte) {
	if a.err != nil {
		return
	}
	if err := b.Put(key, val); err != nil {
		a.err = err
	}
}

func (a *applier) del(b *bolt.Bucket, key []byte) {
	if a.err != nil {
		return
	}
	if err := b.Delete(key); err != nil {
		a.err = err
	}
}

// encodeRec encodes a record into a new slice: bbolt keeps values until
// commit, so each needs its own.
func (a *applier) encodeRec(rec interface{ encode(*enc) }) []byte {
	e := enc{b: make([]byte, 0, 128)}
	rec.encode(&e)
	return e.b
}

func (a *applier) apply(c Command) Result {
	var v any
	var err error
	dup := false
	switch c := c.(type) {
	case CreateCreditType:
		v, err = a.createCreditType(c)
	case UpsertFeature:
		v, err = a.upsertFeature(c)
	case UpsertPlan:
		v, err = a.upsertPlan(c)
	case UpsertCustomer:
		v, err = a.upsertCustomer(c)
	case CreateGrant:
		v, dup, err = a.createGrant(c)
	case RevokeGrant:
		v, dup, err = a.revokeGrant(c)
	case BurnUsage:
		v, err = a.burnUsage(c)
	case Reserve:
		v, dup, err = a.reserve(c)
	case Settle:
		v, dup, err = a.settle(c)
	case Release:
		v, dup, err = a.release(c)
	case StartPurchase:
		v, dup, err = a.startPurchase(c)
	case CompletePurchase:
		v, dup, err = a.completePurchase(c)
	case Tick:
		a.tick()
	case Adjust:
		v, dup, err = a.adjust(c)
	case Noop:
	default:
		err = invalid("command", "unknown command %T", c)
	}
	if err != nil {
		return Result{Err: err}
	}
	return Result{Value: snapshotOf(v), Duplicate: dup}
}

// snapshotOf copies a record the applier caches: the caller reads a result
// after Apply returns, while later entries go on changing the cached one.
// The records hold no slices or maps, so a shallow copy is a full one.
func snapshotOf(v any) any {
	switch r := v.(type) {
	case *CreditType:
		return ptr(*r)
	case *Feature:
		return ptr(*r)
	case *Plan:
		return ptr(*r)
	case *Customer:
		return ptr(*r)
	case *Grant:
		return ptr(*r)
	case *Reservation:
		return ptr(*r)
	case *Purchase:
		return ptr(*r)
	}
	return v
}

func ptr[T any](v T) *T { return &v }

// ---- loading records ----

func loadRec[T any, P interface {
	*T
	decode(*dec)
}](a *applier, cache map[string]*T, bucket []byte, id string) *T {
	if r, ok := cache[id]; ok {
		return r
	}
	raw := a.tx.Bucket(bucket).Get([]byte(id))
	if raw == nil {
		return nil
	}
	r := new(T)
	d := dec{b: raw}
	P(r).decode(&d)
	if d.err != nil {
		a.err = fmt.Errorf("decode %s %q: %w", bucket, id, d.err)
		return nil
	}
	cache[id] = r
	return r
}

func (a *applier) creditType(id string) *CreditType {
	return loadRec(a, a.ctypes, bCreditType, id)
}
func (a *applier) feature(id string) *Feature   { return loadRec(a, a.features, bFeature, id) }
func (a *applier) plan(id string) *Plan         { return loadRec(a, a.plans, bPlan, id) }
func (a *applier) customer(id string) *Customer { return loadRec(a, a.customers, bCustomer, id) }

// grant returns a grant with its pool's tally, if any, laid over it.
func (a *applier) grant(id string) *Grant {
	if g, ok := a.grants[id]; ok {
		return g
	}
	g := loadRec(a, a.grants, bGrant, id)
	if g == nil {
		return nil
	}
	a.kb = appendPoolKey(a.kb[:0], g.CustomerID, g.CreditTypeID)
	if p := a.poolIfAny(string(a.kb)); p != nil {
		if t := p.overlay(g); t != nil {
			t.g, g.tallied = g, true
		}
	}
	return g
}
func (a *applier) poolIfAny(k string) *Pool { return loadRec(a, a.pools, bPool, k) }

// pool returns the pool, creating it in memory if new; it is stored only
// once marked dirty.
func (a *applier) pool(customerID, creditTypeID string) *Pool {
	a.kb = appendPoolKey(a.kb[:0], customerID, creditTypeID)
	if p, ok := a.pools[string(a.kb)]; ok {
		return p
	}
	k := string(a.kb)
	if p := a.poolIfAny(k); p != nil {
		return p
	}
	p := &Pool{CustomerID: customerID, CreditTypeID: creditTypeID}
	a.pools[k] = p
	a.poolsCreated++
	return p
}

func (a *applier) touchPool(p *Pool) {
	p.UpdatedAt = a.now
	a.markPoolDirty(p)
}

func (a *applier) markPoolDirty(p *Pool) {
	if p.dirtyIn != a.epoch {
		p.dirtyIn = a.epoch
		a.kb = appendPoolKey(a.kb[:0], p.CustomerID, p.CreditTypeID)
		a.queueDirty(kindPool, string(a.kb), p)
		a.poolsWritten++
	}
}

// touchGrant rewrites the grant's record, which then holds everything its
// tally did: the tally goes. The record is encoded now, not at flush: burns
// later in this Apply call go to a tally as they would had raft delivered
// them in a call of their own, so the stored bytes do not depend on how
// entries are grouped into calls.
func (a *applier) touchGrant(g *Grant) {
	g.UpdatedAt = a.now
	if g.tallied {
		g.tallied = false
		a.kb = appendPoolKey(a.kb[:0], g.CustomerID, g.CreditTypeID)
		p := a.pools[string(a.kb)] // cached: a tallied grant was linked through it
		if p == nil {
			a.err = errIndex("tallied grant " + g.ID + " has no cached pool")
			return
		}
		p.tallies = slices.DeleteFunc(p.tallies, func(t grantTally) bool { return t.g == g })
		a.markPoolDirty(p)
	}
	if g.dirtyIn != a.epoch {
		g.dirtyIn = a.epoch
		g.dirtySlot = len(a.dirty)
		a.queueDirty(kindGrant, g.ID, g)
	}
	a.dirty[g.dirtySlot].val = a.encodeDirty(g)
}

// tallyBurn records a burn that left the grant active in the pool's record
// rather than the grant's (see grantTally).
func (a *applier) tallyBurn(p *Pool, g *Grant) {
	g.UpdatedAt = a.now
	a.markPoolDirty(p)
	if g.tallied {
		return
	}
	if len(p.tallies) == maxTallies {
		// The oldest goes back to its grant record. Load it first: a
		// tally read from disk is linked to its grant only once loaded.
		id := p.tallies[0].grantID
		if oldest := a.grant(id); oldest != nil {
			a.touchGrant(oldest)
		}
		if len(p.tallies) == maxTallies && a.err == nil {
			a.err = errIndex("pool tally of grant " + id + " is not linked to the grant")
		}
		if a.err != nil {
			return
		}
	}
	p.tallies = append(p.tallies, grantTally{grantID: g.ID, g: g})
	g.tallied = true
}

func (a *applier) touchCustomer(c *Customer) {
	c.UpdatedAt = a.now
	a.markDirty(kindCustomer, c.ID, c)
}

// ---- idempotency ----

// payloadHash fingerprints a command's payload for idempotency checks.
func (a *applier) payloadHash(fill func(e *enc)) [16]byte {
	a.buf.b = a.buf.b[:0]
	fill(&a.buf)
	sum := sha256.Sum256(a.buf.b)
	var h [16]byte
	copy(h[:], sum[:16])
	return h
}

// Idempotency records live in generations of one retention window each,
// numbered by log time: generation g holds the records stored during
// [g·R, (g+1)·R). A lookup sees the current and the previous generation, so
// a record is honoured for at least R and at most 2R of log time, and
// pruning drops whole generations in key order instead of keeping a time
// index beside every record.
func (a *applier) idemGeneration(t Timestamp) uint64 {
	r := a.f.opts.IdempotencyRetention.Microseconds()
	if t < 0 || r <= 0 {
		return 0
	}
	return uint64(int64(t) / r)
}

// idemBuckets opens the generations visible at a.now (nil where one does
// not exist yet).
func (a *applier) idemBuckets() (cur, prev *bolt.Bucket) {
	g := a.idemGeneration(a.now)
	if a.idemOpen && a.idemGen == g {
		return a.idemCur, a.idemPrev
	}
	root := a.tx.Bucket(bIdem)
	cur = root.Bucket(u64key(g))
	if g > 0 {
		prev = root.Bucket(u64key(g - 1))
	}
	a.idemCur, a.idemPrev, a.idemGen, a.idemOpen = cur, prev, g, true
	a.idemCurC, a.idemPrevC = nil, nil
	if cur != nil {
		a.idemCurC = cur.Cursor()
	}
	if prev != nil {
		a.idemPrevC = prev.Cursor()
	}
	return cur, prev
}

// idemLookup returns the stored result of a key, and whether the payload
// matches. found is false if the key is new (or its generation has passed).
func (a *applier) idemLookup(kind byte, id string, h [16]byte) (result []byte, found, same bool) {
	a.kb = append(append(a.kb[:0], kind), id...)
	key := a.kb
	var v []byte
	g := a.idemGeneration(a.now)
	// A record stored earlier in this Apply is the newest one of its key.
	if p := a.pendingIdemOf(key); p != nil && (p.gen == g || p.gen+1 == g) {
		v = p.val
	}
	if v == nil {
		cur, prev := a.idemBuckets()
		if cur != nil {
			v = seekExact(a.idemCurC, cur, key)
		}
		if v == nil && prev != nil {
			v = seekExact(a.idemPrevC, prev, key)
		}
	}
	if v == nil {
		return nil, false, false
	}
	if len(v) < 8+16 {
		a.err = fmt.Errorf("idempotency record %c %q is short", kind, id)
		return nil, false, false
	}
	return v[24:], true, bytes.Equal(v[8:24], h[:])
}

// idemStore records a key's payload hash and result in the current
// generation. The record is written by flushIdem, after the answer: the
// puts were a third of the time to an answer, and nothing but idemLookup
// (which sees pending records) and pruning (which flushes them first)
// reads these buckets within an Apply.
func (a *applier) idemStore(kind byte, id string, h [16]byte, result []byte) {
	k := a.alloc(1 + len(id))
	k[0] = kind
	copy(k[1:], id)
	v := a.alloc(24 + len(result))
	binary.BigEndian.PutUint64(v, uint64(a.now)^(1<<63))
	copy(v[8:], h[:])
	copy(v[24:], result)
	if a.idemLatest == nil {
		a.idemLatest = map[uint64]int32{}
		a.idemSeed = maphash.MakeSeed()
	}
	slot := maphash.Bytes(a.idemSeed, k)
	sameHash, ok := a.idemLatest[slot]
	if !ok {
		sameHash = -1
	}
	a.idemStored++
	a.idemLatest[slot] = int32(len(a.idemPending))
	a.idemPending = append(a.idemPending, pendingIdem{gen: a.idemGeneration(a.now), key: k, val: v, sameHash: sameHash})
}

// pendingIdem is an idempotency record stored in this Apply and not yet
// written.
type pendingIdem struct {
	gen      uint64
	key, val []byte
	sameHash int32 // an earlier pending record whose key hashes alike, or -1
}

// pendingIdemOf returns the newest pending record of key, or nil.
func (a *applier) pendingIdemOf(key []byte) *pendingIdem {
	if len(a.idemLatest) == 0 {
		return nil
	}
	i, ok := a.idemLatest[maphash.Bytes(a.idemSeed, key)]
	for ok && i >= 0 {
		if p := &a.idemPending[i]; bytes.Equal(p.key, key) {
			return p
		}
		i = a.idemPending[i].sameHash
	}
	return nil
}

// flushIdem writes the pending idempotency records, each into the
// generation it was stored in, creating generations as needed. In key
// order within a generation, so consecutive puts land in the same leaf.
// What ends in the buckets is the same as if each record had been put when
// it was stored: a key is stored at most once per generation.
func (a *applier) flushIdem() {
	if len(a.idemPending) == 0 || a.err != nil {
		return
	}
	slices.SortFunc(a.idemPending, func(x, y pendingIdem) int {
		if x.gen != y.gen {
			return cmp.Compare(x.gen, y.gen)
		}
		return bytes.Compare(x.key, y.key)
	})
	root := a.tx.Bucket(bIdem)
	var b *bolt.Bucket
	for i, p := range a.idemPending {
		if i == 0 || p.gen != a.idemPending[i-1].gen {
			name := u64key(p.gen)
			if b = root.Bucket(name); b == nil {
				var err error
				if b, err = root.CreateBucket(name); err != nil {
					a.err = fmt.Errorf("create idempotency generation %d: %w", p.gen, err)
					return
				}
			}
			b.FillPercent = denseFill
		}
		a.put(b, p.key, p.val)
	}
	a.idemPending = a.idemPending[:0]
	clear(a.idemLatest)
	a.idemOpen = false // generations may have been created
}

// seekExact is Get through a reusable cursor (c is on b, or nil when b was
// only just created).
func seekExact(c *bolt.Cursor, b *bolt.Bucket, key []byte) []byte {
	if c == nil {
		return b.Get(key)
	}
	k, v := c.Seek(key)
	if !bytes.Equal(k, key) || v == nil {
		return nil
	}
	return v
}

// clone copies b into memory alloc carves: a key read through a cursor
// points into a page that deletes may rewrite.
func (a *applier) clone(b []byte) []byte {
	c := a.alloc(len(b))
	copy(c, b)
	return c
}

// chunkSize is how much memory alloc carves keys and values from.
const chunkSize = 64 << 10

// alloc returns n bytes for a key or value handed to bbolt, which keeps
// them until commit. They are carved from shared chunks (never reused
// across Apply calls) rather than allocated one by one: one Apply puts
// thousands of them.
func (a *applier) alloc(n int) []byte {
	if n > chunkSize/8 {
		return make([]byte, n)
	}
	if len(a.chunk)+n > cap(a.chunk) {
		// The first chunk of an Apply is small: most entries of a quiet
		// cluster carry a command or two.
		size := chunkSize
		if a.chunk == nil {
			size = chunkSize / 16
		}
		a.chunk = make([]byte, 0, size)
	}
	at := len(a.chunk)
	a.chunk = a.chunk[:at+n]
	return a.chunk[at : at+n : at+n]
}
