// Package ledgergen builds real fsm state for export's tests and benchmarks:
// it applies a deterministic mix of commands (grants paid and promotional in
// several currencies, burns across grants, overdraft and repayment, expiry,
// revocations, adjustments, reservations) to a real fsm.FSM, moving log time
// across several UTC days.
package ledgergen

import (
	"errors"
	"fmt"
	"math/rand/v2"
	"time"

	"github.com/creditd/creditd/fsm"
)

// Start is the log time of the first command: 2026-03-01 00:00 UTC.
var Start = fsm.TimestampOf(time.Date(2026, 3, 1, 0, 0, 0, 0, time.UTC))

// Gen applies generated commands to an FSM. Not safe for concurrent use.
type Gen struct {
	F     *fsm.FSM
	Now   fsm.Timestamp
	index uint64
	rng   *rand.Rand
	n     int // ids issued
	live  []liveGrant
	pend  [][]byte
	// Rejected counts commands the FSM refused (expected: revoking a
	// depleted grant, burning more than a pool holds).
	Rejected int
}

type liveGrant struct {
	id   string
	unit int64 // one credit in units of the grant's credit type
}

// Customers and credit types of the generated world.
var (
	Customers   = []string{"acme", "globex", "initech", "umbrella", "hooli", "stark"}
	CreditTypes = []struct {
		ID    string
		Scale uint8
	}{{"ai", 2}, {"gpu", 9}, {"seat", 0}}
	currencies = []string{"USD", "EUR"}
)

// Open opens (or creates) the FSM at path without fsync and seeds the
// catalog when it is new.
func Open(path string, seed uint64) (*Gen, error) {
	f, err := fsm.Open(path, fsm.Options{NoSync: true})
	if err != nil {
		return nil, err
	}
	g := &Gen{F: f, Now: Start, index: f.AppliedIndex(), rng: rand.New(rand.NewPCG(seed, seed^0x9e3779b97f4a7c15))}
	if t := f.LastTime(); t > g.Now {
		g.Now = t
	}
	if g.index > 0 {
		g.n = int(g.index) * 1000 // fresh ids after a reopen
		return g, nil
	}
	for _, ct := range CreditTypes {
		g.add(fsm.CreateCreditType{ID: ct.ID, Name: ct.ID + " credits", Scale: ct.Scale})
	}
	for i, ct := range CreditTypes {
		cur := currencies[i%len(currencies)]
		g.add(fsm.UpsertPlan{Plan: fsm.Plan{ID: "plan-" + ct.ID, Name: ct.ID, CreditTypeID: ct.ID, Currency: cur,
			PricePerCredit: fsm.Decimal{Coef: 1234567, Scale: 7}, MinPurchaseCredits: 1, MaxPurchaseCredits: fsm.MaxAmount,
			Overdraft: fsm.OverdraftAllow, OverdraftLimit: 500 * pow10(ct.Scale)}})
	}
	for _, c := range Customers {
		// Each customer's plan allows overdraft on one credit type.
		g.add(fsm.UpsertCustomer{ID: c, Name: c, PlanID: "plan-" + CreditTypes[len(c)%len(CreditTypes)].ID})
	}
	if err := g.flush(); err != nil {
		f.Close()
		return nil, err
	}
	return g, nil
}

func pow10(s uint8) int64 {
	v := int64(1)
	for range s {
		v *= 10
	}
	return v
}

// Close closes the FSM.
func (g *Gen) Close() error { return g.F.Close() }

func (g *Gen) add(c fsm.Command) {
	b, err := fsm.EncodeCommand(c)
	if err != nil {
		panic(fmt.Sprintf("ledgergen: encode %T: %v", c, err))
	}
	g.pend = append(g.pend, b)
}

// flush applies the pending commands as one log entry at g.Now.
func (g *Gen) flush() error {
	if len(g.pend) == 0 {
		return nil
	}
	g.index++
	rs, err := g.F.Apply([]fsm.Entry{{Index: g.index, Data: fsm.EncodeEntry(g.Now, g.pend)}})
	g.pend = g.pend[:0]
	if err != nil {
		return fmt.Errorf("ledgergen: apply entry %d: %w", g.index, err)
	}
	for _, r := range rs[0] {
		if r.Err != nil {
			var e *fsm.Error
			if !errors.As(r.Err, &e) {
				return fmt.Errorf("ledgergen: entry %d: %w", g.index, r.Err)
			}
			g.Rejected++
		}
	}
	return nil
}

func (g *Gen) id(prefix string) string {
	g.n++
	return fmt.Sprintf("%s-%07d", prefix, g.n)
}

// Run applies about commands commands, in log entries of up to 50, with log
// time advancing by step between entries (so a run can span days), a Tick
// in every entry, and returns the first storage error.
func (g *Gen) Run(commands int, step time.Duration) error {
	for done := 0; done < commands; {
		g.Now += fsm.Timestamp(step.Microseconds())
		g.add(fsm.Tick{})
		per := min(50, commands-done)
		for range per {
			g.one()
		}
		done += per
		if err := g.flush(); err != nil {
			return err
		}
	}
	return nil
}

func (g *Gen) one() {
	r := g.rng
	cust := Customers[r.IntN(len(Customers))]
	ct := CreditTypes[r.IntN(len(CreditTypes))]
	unit := pow10(ct.Scale)
	switch x := r.IntN(100); {
	case x < 18: // a grant
		id := g.id("g")
		c := fsm.CreateGrant{ID: id, CustomerID: cust, CreditTypeID: ct.ID, Amount: (1 + r.Int64N(200)) * unit / 4,
			Priority: uint32(r.IntN(3)), SourceKind: fsm.SourceManual}
		if c.Amount == 0 {
			c.Amount = 1
		}
		if r.IntN(3) > 0 {
			c.Category = fsm.Paid
			c.Currency = currencies[r.IntN(len(currencies))]
			// Prices with up to 7 decimals make half-even rounding matter.
			c.CostBasis = fsm.Decimal{Coef: 1 + r.Int64N(3_000_000), Scale: 7}
			c.SourceKind = fsm.SourceKind(1 + r.IntN(3))
			c.SourceRef = g.id("ref")
		}
		switch r.IntN(4) {
		case 0:
			c.ExpiresAt = g.Now + fsm.Timestamp((time.Duration(1+r.IntN(48)) * time.Hour).Microseconds())
		case 1:
			c.EffectiveAt = g.Now + fsm.Timestamp((time.Duration(1+r.IntN(6)) * time.Hour).Microseconds())
		}
		g.add(c)
		g.live = append(g.live, liveGrant{id, unit})
	case x < 85: // usage, in credits (a fraction of a credit sometimes)
		n := 1 + r.IntN(3)
		evs := make([]fsm.UsageEvent, n)
		for i := range evs {
			evs[i] = fsm.UsageEvent{ID: g.id("ev"), CustomerID: cust, CreditTypeID: ct.ID,
				Credits: 1 + r.Int64N(40*unit)/3, EventTime: g.Now}
		}
		g.add(fsm.BurnUsage{Events: evs})
	case x < 90: // reserve and settle (or release)
		id := g.id("res")
		g.add(fsm.Reserve{ID: id, CustomerID: cust, CreditTypeID: ct.ID, Credits: 1 + r.Int64N(10*unit), TTL: time.Hour})
		if r.IntN(2) == 0 {
			g.add(fsm.Settle{ReservationID: id, Credits: 1 + r.Int64N(5*unit), UseCredits: true})
		} else {
			g.add(fsm.Release{ReservationID: id})
		}
	case x < 95: // revoke part or all of a grant (a refund)
		if len(g.live) == 0 {
			return
		}
		lg := g.live[r.IntN(len(g.live))]
		amount := int64(0)
		if r.IntN(2) == 0 {
			amount = 1 + r.Int64N(5*lg.unit)
		}
		g.add(fsm.RevokeGrant{GrantID: lg.id, Amount: amount, Reason: "refund", RequestID: g.id("rv")})
	default: // an operator's adjustment
		if len(g.live) == 0 {
			return
		}
		lg := g.live[r.IntN(len(g.live))]
		amount := 1 + r.Int64N(3*lg.unit)
		if r.IntN(2) == 0 {
			amount = -amount
		}
		g.add(fsm.Adjust{ID: g.id("adj"), GrantID: lg.id, Amount: amount, Reason: "correction"})
	}
}

// Check reads one consistent cut and returns every pool's balance and every
// grant, for tests to compare exports with.
func (g *Gen) Check() (pools map[[2]string]int64, grants []fsm.Grant, lastSeq uint64, err error) {
	pools = map[[2]string]int64{}
	err = g.F.View(func(v *fsm.View) error {
		lastSeq = v.LastSeq()
		for _, c := range Customers {
			for _, ct := range CreditTypes {
				b, err := v.Balance(c, ct.ID)
				if err != nil {
					if fsm.CodeOf(err) == fsm.CodeNotFound {
						continue
					}
					return err
				}
				pools[[2]string{c, ct.ID}] = b.Balance
			}
		}
		return v.ScanGrants(func(gr *fsm.Grant) error {
			grants = append(grants, *gr)
			return nil
		})
	})
	return pools, grants, lastSeq, err
}

// Bulk adds about entries ledger entries the way a busy production ledger
// grows: customers customers each get a paid grant, then usage events
// (one burn entry each, unique event ids) arrive in batches of 100 events
// per command and 10 commands per log entry, a few seconds of log time
// apart, so the entries spread over several days.
func (g *Gen) Bulk(customers, entries int) error {
	if customers < 1 || entries < customers {
		return fmt.Errorf("ledgergen: bulk of %d entries over %d customers", entries, customers)
	}
	ids := make([]string, customers)
	for i := range ids {
		ids[i] = fmt.Sprintf("cust-%06d", i)
		g.add(fsm.UpsertCustomer{ID: ids[i], Name: ids[i]})
		g.add(fsm.CreateGrant{ID: g.id("bulk-grant"), CustomerID: ids[i], CreditTypeID: "ai", Category: fsm.Paid,
			Amount: 1 << 50, CostBasis: fsm.Decimal{Coef: 12345, Scale: 7}, Currency: "USD", SourceKind: fsm.SourcePurchase,
			SourceRef: g.id("pi")})
		if len(g.pend) >= 1000 {
			if err := g.flush(); err != nil {
				return err
			}
		}
	}
	if err := g.flush(); err != nil {
		return err
	}
	const perCommand, perEntry = 100, 10
	batch := make([]fsm.UsageEvent, 0, perCommand)
	for done := customers; done < entries; {
		g.Now += fsm.Timestamp((5 * time.Second).Microseconds())
		for range perEntry {
			batch = batch[:0]
			for range perCommand {
				c := ids[g.rng.IntN(len(ids))]
				batch = append(batch, fsm.UsageEvent{ID: g.id("ev"), CustomerID: c, CreditTypeID: "ai",
					Credits: 1 + g.rng.Int64N(5000), EventTime: g.Now})
			}
			g.add(fsm.BurnUsage{Events: batch})
			done += perCommand
		}
		if err := g.flush(); err != nil {
			return err
		}
	}
	return nil
}
