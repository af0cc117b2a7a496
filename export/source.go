package export

import (
	"github.com/creditd/creditd/fsm"
)

// Cut is a consistent read of the state: everything export reads in one run
// comes from one Cut, so the ledger range and the grants agree. *fsm.View is
// a Cut.
type Cut interface {
	// LastSeq is the sequence of the last ledger entry in the cut.
	LastSeq() uint64
	LastTime() fsm.Timestamp
	AppliedIndex() uint64
	CreditType(id string) (fsm.CreditType, error)
	Grant(id string) (fsm.Grant, error)
	// ScanLedger calls fn for fromSeq ≤ seq ≤ toSeq in order; the entry is
	// reused between calls.
	ScanLedger(fromSeq, toSeq uint64, fn func(e *fsm.LedgerEntry) error) error
	// ScanGrants calls fn for every grant in id order; the grant is reused.
	ScanGrants(fn func(g *fsm.Grant) error) error
}

// Source gives consistent cuts of a replica's applied state.
type Source interface {
	// Read runs fn on one cut; fn must not keep the cut after it returns.
	Read(fn func(c Cut) error) error
}

// FromFSM reads cuts of f through read transactions (fsm View).
func FromFSM(f *fsm.FSM) Source { return fsmSource{f} }

type fsmSource struct{ f *fsm.FSM }

func (s fsmSource) Read(fn func(c Cut) error) error {
	return s.f.View(func(v *fsm.View) error { return fn(v) })
}

// lookups caches the immutable facts export needs per entry: a credit
// type's scale and a grant's category and source. The maps are bounded:
// past maxCached entries they are dropped and refilled, so a ledger with
// millions of grants costs at most one read per grant per refill.
type lookups struct {
	cut    Cut
	scales map[string]uint8
	grants map[string]grantFacts
}

type grantFacts struct {
	category  fsm.GrantCategory
	source    fsm.SourceKind
	sourceRef string
}

const maxCached = 100_000

func newLookups(c Cut) *lookups {
	return &lookups{cut: c, scales: map[string]uint8{}, grants: map[string]grantFacts{}}
}

func (l *lookups) scale(creditTypeID string) (uint8, error) {
	if s, ok := l.scales[creditTypeID]; ok {
		return s, nil
	}
	ct, err := l.cut.CreditType(creditTypeID)
	if err != nil {
		return 0, err
	}
	if ct.Scale > fsm.MaxCreditScale {
		return 0, &FormatError{Field: "credit_type.scale", Msg: "credit type " + creditTypeID + " has a scale above 9"}
	}
	if len(l.scales) >= maxCached {
		clear(l.scales)
	}
	l.scales[creditTypeID] = ct.Scale
	return ct.Scale, nil
}

func (l *lookups) grant(id string) (grantFacts, error) {
	if f, ok := l.grants[id]; ok {
		return f, nil
	}
	g, err := l.cut.Grant(id)
	if err != nil {
		return grantFacts{}, err
	}
	if len(l.grants) >= maxCached {
		clear(l.grants)
	}
	f := grantFacts{category: g.Category, source: g.SourceKind, sourceRef: g.SourceRef}
	l.grants[id] = f
	return f, nil
}
