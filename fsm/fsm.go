package fsm

import "time"

// Options tune an FSM. The zero value is production's default.
type Options struct {
	// IdempotencyRetention is how long, in log time, idempotency records of
	// usage events, grants, purchases and reservations are kept.
	// 0 = DefaultIdempotencyRetention.
	IdempotencyRetention time.Duration
	// InitialMmapSize sizes bbolt's first memory map, so that a long read
	// (a snapshot, an export) rarely blocks a write that grows the file.
	// 0 = 1 GiB.
	InitialMmapSize int
	// NoSync skips fsync of the state file on every Apply. A process crash
	// loses nothing (the page cache holds every commit), but a power loss
	// can leave the file torn, so a caller that sets it must be able to
	// tell (package node compares the machine's boot id) and then rebuild
	// the state from a snapshot and the log. Call Sync before a clean close.
	NoSync bool
}

// Entry is one log entry to apply: its raft index and its encoded commands
// (EncodeEntry). Data may be nil for log entries that carry no command; the
// applied index still moves.
type Entry struct {
	Index uint64
	Data  []byte
}

// CheckResult answers "may this customer use this much now?".
type CheckResult struct {
	Allowed      bool
	CreditTypeID string
	Credits      int64 // needed
	Available    int64
	Floor        int64 // lowest available may go (−overdraft limit)
	Reason       string
}

// GrantFilter selects grants for ListGrants. After is the last grant id of
// the previous page.
type GrantFilter struct {
	CustomerID   string
	CreditTypeID string
	Status       []GrantStatus // empty = any
	After        string
	Limit        int
}

// LedgerFilter selects ledger entries by customer (optional), credit type
// (optional, with customer) and sequence range [FromSeq, ToSeq] (ToSeq 0 =
// open).
type LedgerFilter struct {
	CustomerID   string
	CreditTypeID string
	FromSeq      uint64
	ToSeq        uint64
	Limit        int
}

// The FSM's methods, in brief (see each for details):
//
//	Open(path, Options) (*FSM, error); (*FSM).Close() error
//	EncodeCommand(Command) ([]byte, error)           // one command, no time
//	EncodeEntry(t Timestamp, cmds [][]byte) []byte   // a log entry: time + commands
//	DecodeEntry([]byte) (Timestamp, []Command, error)
//	(*FSM).Apply([]Entry) ([][]Result, error)        // one bbolt tx; error = storage failure only
//	(*FSM).ApplyAnswering(entries, answer)           // Apply, handing out results before the commit
//	(*FSM).AppliedIndex() uint64; LastTime() Timestamp; LastSeq() uint64
//	(*FSM).View(func(*View) error) error            // consistent read transaction
//	(*FSM).ViewCommitted(func(*View) error) error   // the same, not waiting for an answered commit
//	(*View).CreditType/Feature/Plan/Customer/Grant/Reservation/Purchase(id)
//	(*View).ListFeatures(after, limit); Balance(customer, creditType); Check(customer, feature, qty, credits)
//	(*View).ListGrants(GrantFilter); Ledger(LedgerFilter); ScanLedger(from, to, fn); ScanGrants(fn)
//	(*View).BalanceAt(customer, creditType, seq); BalanceAtTime(customer, creditType, t)
//	(*View).PendingPurchases(limit); PendingPurchasesAfter(after, limit); Dump(w)
//	(*FSM).Snapshot() (*Snapshot, error); (*Snapshot).WriteTo(w); (*Snapshot).Release()
//	(*FSM).Restore(io.Reader) error; (*FSM).Dump(io.Writer) error
