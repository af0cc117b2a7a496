package fsm

// Temporary: signatures of the FSM's API while its implementation lands.
// Replaced file by file by the real implementation.

import (
	"errors"
	"io"
)

var errPending = errors.New("fsm: implementation pending")

// FSM is the state machine over one bbolt file.
type FSM struct{}

// View is a consistent read transaction over the state.
type View struct{}

// Snapshot is a consistent copy of the whole state, taken while applies go on.
type Snapshot struct{}

// Open opens (or creates) the state file at path.
func Open(path string, opts Options) (*FSM, error) { return nil, errPending }

// Close closes the state file.
func (f *FSM) Close() error { return errPending }

// EncodeCommand encodes one command (without time) for EncodeEntry.
func EncodeCommand(c Command) ([]byte, error) { return nil, errPending }

// EncodeEntry makes a log entry from already encoded commands, stamped with
// the leader's time.
func EncodeEntry(t Timestamp, cmds [][]byte) []byte { return nil }

// DecodeEntry decodes a log entry. An unknown version is ErrUnknownVersion.
func DecodeEntry(data []byte) (Timestamp, []Command, error) { return 0, nil, errPending }

// Apply applies entries in order in one storage transaction. results[i][j]
// is the result of command j of entries[i]. Entries at or below the applied
// index are skipped (their results are nil). The error is a storage failure,
// after which the FSM must not be used.
func (f *FSM) Apply(entries []Entry) ([][]Result, error) { return nil, errPending }

// AppliedIndex is the index of the last applied entry.
func (f *FSM) AppliedIndex() uint64 { return 0 }

// LastTime is the log time of the last applied entry.
func (f *FSM) LastTime() Timestamp { return 0 }

// LastSeq is the sequence of the last ledger entry (0 if none).
func (f *FSM) LastSeq() uint64 { return 0 }

// View runs fn in a read transaction; fn must not keep v after it returns.
func (f *FSM) View(fn func(v *View) error) error { return errPending }

// Snapshot starts a consistent snapshot; call Release when done.
func (f *FSM) Snapshot() (*Snapshot, error) { return nil, errPending }

// WriteTo streams the snapshot.
func (s *Snapshot) WriteTo(w io.Writer) (int64, error) { return 0, errPending }

// Release ends the snapshot's read transaction.
func (s *Snapshot) Release() {}

// Restore replaces the whole state with a snapshot's.
func (f *FSM) Restore(r io.Reader) error { return errPending }

// Dump writes the canonical dump: every record in key order, stable encoding.
func (f *FSM) Dump(w io.Writer) error { return errPending }

func (v *View) CreditType(id string) (CreditType, error)   { return CreditType{}, errPending }
func (v *View) Feature(id string) (Feature, error)         { return Feature{}, errPending }
func (v *View) ListFeatures() ([]Feature, error)           { return nil, errPending }
func (v *View) Plan(id string) (Plan, error)               { return Plan{}, errPending }
func (v *View) Customer(id string) (Customer, error)       { return Customer{}, errPending }
func (v *View) Grant(id string) (Grant, error)             { return Grant{}, errPending }
func (v *View) Reservation(id string) (Reservation, error) { return Reservation{}, errPending }
func (v *View) Purchase(id string) (Purchase, error)       { return Purchase{}, errPending }

// Balance is a pool's balance, available, reserved and live grants in burn
// order, as of the last applied time.
func (v *View) Balance(customerID, creditTypeID string) (Balance, error) { return Balance{}, errPending }

// BalanceAt is a pool's balance right after ledger sequence seq.
func (v *View) BalanceAt(customerID, creditTypeID string, seq uint64) (int64, error) {
	return 0, errPending
}

// Check answers whether usage would be allowed now, changing nothing.
// Either featureID and quantity, or creditTypeID (in featureID's place is
// not allowed) and credits.
func (v *View) Check(customerID, featureID string, quantity int64, creditTypeID string, credits int64) (CheckResult, error) {
	return CheckResult{}, errPending
}

// ListGrants pages through grants in id order.
func (v *View) ListGrants(f GrantFilter) (grants []Grant, nextAfter string, err error) {
	return nil, "", errPending
}

// Ledger pages through ledger entries in sequence order; next is the
// FromSeq of the following page (0 when there is none).
func (v *View) Ledger(f LedgerFilter) (entries []LedgerEntry, next uint64, err error) {
	return nil, 0, errPending
}

// ScanLedger calls fn for every entry with fromSeq ≤ seq ≤ toSeq (toSeq 0 =
// to the end) in order. The entry is reused between calls.
func (v *View) ScanLedger(fromSeq, toSeq uint64, fn func(e *LedgerEntry) error) error {
	return errPending
}

// ScanGrants calls fn for every grant in id order. The grant is reused.
func (v *View) ScanGrants(fn func(g *Grant) error) error { return errPending }

// PendingPurchases lists pending purchases in id order, at most limit.
func (v *View) PendingPurchases(limit int) ([]Purchase, error) { return nil, errPending }

// AppliedIndex and LastSeq as seen by this view.
func (v *View) AppliedIndex() uint64 { return 0 }
func (v *View) LastSeq() uint64      { return 0 }
func (v *View) LastTime() Timestamp  { return 0 }
