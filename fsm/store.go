package fsm

import (
	"encoding/binary"
	"errors"
	"fmt"
	"sync"
	"sync/atomic"
	"time"

	bolt "go.etcd.io/bbolt"
)

// Buckets of the state file. Keys are built so that bbolt's byte order is
// the order every reader needs: ids never contain 0x00 (validation keeps
// them to [A-Za-z0-9._:-]), so 0x00 separates key parts.
var (
	bMeta       = []byte("meta")
	bCreditType = []byte("credit_types")
	bFeature    = []byte("features")
	bPlan       = []byte("plans")
	bCustomer   = []byte("customers")
	bPool       = []byte("pools")
	bGrant      = []byte("grants")
	bCustGrant  = []byte("customer_grants") // customer 0x00 grant id → nil
	bBurnOrder  = []byte("burn_order")      // pool key 0x00 burn key → grant id; live grants only
	bGrantExp   = []byte("grant_expiry")    // expires_at, grant id → nil; live grants with an expiry
	bGrantStart = []byte("grant_start")     // effective_at, grant id → nil; pending grants
	bResv       = []byte("reservations")
	bResvExp    = []byte("reservation_expiry") // expires_at, id → nil; held reservations
	bPurchase   = []byte("purchases")
	bPurPending = []byte("purchases_pending") // id → nil
	bLedger     = []byte("ledger")            // blocks of entries by first seq (ledger.go)
	bPoolLedger = []byte("pool_ledger")       // full runs of a pool's seqs (ledger.go)
	// bIdem holds one nested bucket per generation of idempotency records
	// (see idemGeneration): kind, id → time, payload hash, result.
	bIdem = []byte("idempotency")
)

var allBuckets = [][]byte{bMeta, bCreditType, bFeature, bPlan, bCustomer, bPool, bGrant, bCustGrant, bBurnOrder, bGrantExp,
	bGrantStart, bResv, bResvExp, bPurchase, bPurPending, bLedger, bPoolLedger, bIdem}

var (
	metaApplied = []byte("applied_index")
	metaTime    = []byte("last_time")
	metaSeq     = []byte("last_seq")
	metaFormat  = []byte("format")
)

// stateFormat is the layout version of the state file. 2: a pool's ledger
// index lives in its record and pool_ledger, not customer_ledger. 3: pool
// records may hold grant tallies (grantTally). A format 2 file reads as it
// is (its pool records have none) and is marked 3 when opened.
const stateFormat = 3

// readableFormat reports whether this build reads a state file of format f.
func readableFormat(f uint64) bool { return f == 2 || f == stateFormat }

// FSM is the state machine over one bbolt file. Apply, Snapshot and Restore
// are called by one goroutine at a time (raft's); reads through View may
// run concurrently with all of them.
type FSM struct {
	path string
	opts Options

	mu sync.RWMutex // guards db against Restore swapping the file
	db *bolt.DB

	applied  atomic.Uint64
	lastTime atomic.Int64
	lastSeq  atomic.Uint64

	ap *applier // reused across Apply calls

	// answered is held (locked) from the moment ApplyAnswering hands out
	// results until their transaction has committed; View takes it (read)
	// before beginning its transaction, so a read begun after an answer
	// sees the state that was answered.
	answered sync.RWMutex
}

// Open opens (or creates) the state file at path.
func Open(path string, opts Options) (*FSM, error) {
	if opts.IdempotencyRetention == 0 {
		opts.IdempotencyRetention = DefaultIdempotencyRetention
	}
	if opts.InitialMmapSize == 0 {
		opts.InitialMmapSize = 1 << 30
	}
	f := &FSM{path: path, opts: opts}
	if err := f.open(); err != nil {
		return nil, err
	}
	return f, nil
}

func (f *FSM) open() error {
	opts := &bolt.Options{
		Timeout:         5 * time.Second,
		InitialMmapSize: f.opts.InitialMmapSize,
		NoSync:          f.opts.NoSync,
		// Growing the file fsyncs it unless told not to: with commits
		// unsynced that one fsync writes back every dirty page at once
		// (70–175 ms inside Apply on the reference machine, every couple
		// of seconds under load: half the p99 at half of peak). Without
		// per-commit syncs the size has no more need to be durable than
		// the data; Sync makes both durable.
		NoGrowSync:   f.opts.NoSync,
		FreelistType: bolt.FreelistMapType,
		// The freelist is written with every commit (a page or two), not
		// rebuilt at open by reading every page of the file: that read
		// left the whole file resident in the process (1.6 GB for a
		// million customers) whatever the working set.
		NoFreelistSync: false,
	}
	db, err := bolt.Open(f.path, 0o600, opts)
	if errors.Is(err, bolt.ErrTimeout) {
		return fmt.Errorf("open state %s: another process holds its lock (is a creditd already running on this data dir?): %w", f.path, err)
	}
	if err != nil {
		return fmt.Errorf("open state %s: %w", f.path, err)
	}
	err = db.Update(func(tx *bolt.Tx) error {
		for _, name := range allBuckets {
			if _, err := tx.CreateBucketIfNotExists(name); err != nil {
				return err
			}
		}
		m := tx.Bucket(bMeta)
		if v := m.Get(metaFormat); v == nil {
			return m.Put(metaFormat, u64key(stateFormat))
		} else if !readableFormat(binary.BigEndian.Uint64(v)) {
			return fmt.Errorf("state format %d is not %d: %w", binary.BigEndian.Uint64(v), stateFormat, ErrUnknownVersion)
		}
		// A snapshot carries no freelist, so this open read every page
		// to rebuild it; this commit writes it, and the reopen below maps
		// the file afresh with none of those pages resident.
		return m.Put(metaFormat, u64key(stateFormat))
	})
	if err != nil {
		db.Close()
		return fmt.Errorf("init state %s: %w", f.path, err)
	}
	if err := db.Close(); err != nil {
		return fmt.Errorf("close state %s: %w", f.path, err)
	}
	if db, err = bolt.Open(f.path, 0o600, opts); err != nil {
		return fmt.Errorf("reopen state %s: %w", f.path, err)
	}
	f.db = db
	return db.View(func(tx *bolt.Tx) error {
		m := tx.Bucket(bMeta)
		f.applied.Store(getU64(m, metaApplied))
		f.lastTime.Store(int64(getU64(m, metaTime)))
		f.lastSeq.Store(getU64(m, metaSeq))
		return nil
	})
}

// Close closes the state file.
func (f *FSM) Close() error {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.db == nil {
		return nil
	}
	err := f.db.Close()
	f.db = nil
	return err
}

// Sync flushes every commit to disk (with Options.NoSync the commits
// themselves do not).
func (f *FSM) Sync() error {
	f.mu.RLock()
	defer f.mu.RUnlock()
	if f.db == nil {
		return errClosed
	}
	if err := f.db.Sync(); err != nil {
		return fmt.Errorf("sync state %s: %w", f.path, err)
	}
	return nil
}

// AppliedIndex is the index of the last applied entry. It, LastTime and
// LastSeq move when ApplyAnswering answers, before the commit: what they
// report is what the answered caller was told (a View begun after them
// waits for the commit).
func (f *FSM) AppliedIndex() uint64 { return f.applied.Load() }

// LastTime is the log time of the last applied entry.
func (f *FSM) LastTime() Timestamp { return Timestamp(f.lastTime.Load()) }

// LastSeq is the sequence of the last ledger entry (0 if none).
func (f *FSM) LastSeq() uint64 { return f.lastSeq.Load() }

func (f *FSM) position() position {
	return position{f.applied.Load(), f.lastTime.Load(), f.lastSeq.Load()}
}

func (f *FSM) setPosition(p position) {
	f.applied.Store(p.applied)
	f.lastTime.Store(p.lastTime)
	f.lastSeq.Store(p.lastSeq)
}

var errClosed = errors.New("fsm: closed")

// View runs fn in a read transaction; fn must not keep v after it returns.
// A View begun after ApplyAnswering handed out results sees them: it waits
// for their commit if that is still in flight.
func (f *FSM) View(fn func(v *View) error) error {
	f.answered.RLock()
	f.answered.RUnlock() // empty on purpose: it only waits for a commit in flight
	return f.ViewCommitted(fn)
}

// ViewCommitted is View on the last committed state, without waiting for a
// commit in flight: results already handed out by ApplyAnswering may be
// missing from it. It is for reads of what never changes once written (a
// credit type's scale), by a caller who falls back to View when it is not
// there.
func (f *FSM) ViewCommitted(fn func(v *View) error) error {
	f.mu.RLock()
	defer f.mu.RUnlock()
	if f.db == nil {
		return errClosed
	}
	return f.db.View(func(tx *bolt.Tx) error {
		return fn(newView(tx))
	})
}

func getU64(b *bolt.Bucket, k []byte) uint64 {
	v := b.Get(k)
	if len(v) != 8 {
		return 0
	}
	return binary.BigEndian.Uint64(v)
}

func u64key(v uint64) []byte {
	var b [8]byte
	binary.BigEndian.PutUint64(b[:], v)
	return b[:]
}

// tsKey orders signed timestamps bytewise.
func appendTS(b []byte, t Timestamp) []byte {
	return binary.BigEndian.AppendUint64(b, uint64(t)^(1<<63))
}

func readTS(b []byte) Timestamp { return Timestamp(binary.BigEndian.Uint64(b) ^ (1 << 63)) }

func poolKey(customerID, creditTypeID string) []byte {
	return appendPoolKey(make([]byte, 0, len(customerID)+len(creditTypeID)+1), customerID, creditTypeID)
}

func appendPoolKey(k []byte, customerID, creditTypeID string) []byte {
	k = append(k, customerID...)
	k = append(k, 0)
	return append(k, creditTypeID...)
}

// burnKey is the burn order of a grant within its pool (package doc).
func burnKey(g *Grant) []byte {
	k := make([]byte, 0, len(g.CustomerID)+len(g.CreditTypeID)+2+4+8+1+8+8+len(g.ID))
	k = append(k, g.CustomerID...)
	k = append(k, 0)
	k = append(k, g.CreditTypeID...)
	k = append(k, 0)
	k = binary.BigEndian.AppendUint32(k, g.Priority)
	exp := uint64(1<<64 - 1) // never expires: last
	if g.ExpiresAt != 0 {
		exp = uint64(g.ExpiresAt) ^ (1 << 63)
	}
	k = binary.BigEndian.AppendUint64(k, exp)
	k = append(k, byte(g.Category)) // Promotional (0) before Paid (1)
	k = appendTS(k, g.EffectiveAt)
	k = appendTS(k, g.CreatedAt)
	return append(k, g.ID...)
}

func burnPrefix(customerID, creditTypeID string) []byte {
	k := poolKey(customerID, creditTypeID)
	return append(k, 0)
}

func timeIDKey(t Timestamp, id string) []byte {
	k := make([]byte, 0, 8+len(id))
	k = appendTS(k, t)
	return append(k, id...)
}

func poolRunKey(customerID, creditTypeID string, first uint64) []byte {
	k := make([]byte, 0, len(customerID)+len(creditTypeID)+10)
	k = append(k, customerID...)
	k = append(k, 0)
	k = append(k, creditTypeID...)
	k = append(k, 0)
	return binary.BigEndian.AppendUint64(k, first)
}

// Idempotency kinds.
const (
	idemUsage       byte = 'u'
	idemGrant       byte = 'g'
	idemPurchase    byte = 'p'
	idemReservation byte = 'r'
	idemRevoke      byte = 'v'
	idemAdjust      byte = 'a'
)
