package billing

import (
	"context"
	"encoding/json"
	"fmt"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"github.com/creditd/creditd/fsm"
)

// localApplier applies commands straight to an FSM, one log entry each, as
// a single-node cluster's leader would. failNext makes the next calls fail
// like a lost leader.
type localApplier struct {
	mu       sync.Mutex
	f        *fsm.FSM
	index    uint64
	now      time.Time
	failNext int
	applied  []fsm.Command
}

func newLocalFSM(t *testing.T) (*fsm.FSM, *localApplier) {
	t.Helper()
	f, err := fsm.Open(filepath.Join(t.TempDir(), "state.db"), fsm.Options{NoSync: true})
	if err != nil {
		t.Fatalf("fsm.Open: %v", err)
	}
	t.Cleanup(func() { _ = f.Close() })
	// Log time starts at the wall clock, as a leader's stamps would, so
	// ages the worker computes (the on-session TTL) are realistic.
	return f, &localApplier{f: f, now: time.Now().UTC()}
}

var errNoLeaderForTest = fmt.Errorf("no leader (test)")

func (a *localApplier) Apply(ctx context.Context, cmd fsm.Command) (fsm.Result, error) {
	a.mu.Lock()
	defer a.mu.Unlock()
	if err := ctx.Err(); err != nil {
		return fsm.Result{}, err
	}
	if a.failNext > 0 {
		a.failNext--
		return fsm.Result{}, errNoLeaderForTest
	}
	b, err := fsm.EncodeCommand(cmd)
	if err != nil {
		return fsm.Result{}, err
	}
	a.index++
	// Log time follows the wall clock and never goes back, as a leader's
	// stamps do.
	a.now = a.now.Add(time.Microsecond)
	if wall := time.Now().UTC(); wall.After(a.now) {
		a.now = wall
	}
	res, err := a.f.Apply([]fsm.Entry{{Index: a.index, Data: fsm.EncodeEntry(fsm.TimestampOf(a.now), [][]byte{b})}})
	if err != nil {
		return fsm.Result{}, err
	}
	a.applied = append(a.applied, cmd)
	return res[0][0], nil
}

func (a *localApplier) View(fn func(v *fsm.View) error) error { return a.f.View(fn) }

// must applies cmd and fails the test on any error.
func must(t *testing.T, a Applier, cmd fsm.Command) fsm.Result {
	t.Helper()
	res, err := a.Apply(context.Background(), cmd)
	if err != nil {
		t.Fatalf("apply %T: %v", cmd, err)
	}
	if res.Err != nil {
		t.Fatalf("apply %T: %v", cmd, res.Err)
	}
	return res
}

// seedCatalog creates credit type "ai" (scale 0), plan "pro" at 0.01 USD a
// credit with the given invoice policy, and customer "c1" on it.
func seedCatalog(t *testing.T, a Applier, policy fsm.InvoiceGrantPolicy, auto fsm.AutoTopUp) {
	t.Helper()
	price, err := fsm.ParseDecimal("0.01", 6)
	if err != nil {
		t.Fatal(err)
	}
	must(t, a, fsm.CreateCreditType{ID: "ai", Name: "AI credits", Scale: 0})
	must(t, a, fsm.UpsertPlan{Plan: fsm.Plan{ID: "pro", Name: "Pro", CreditTypeID: "ai", Currency: "USD",
		PricePerCredit: price, MinPurchaseCredits: 1, MaxPurchaseCredits: 1_000_000, InvoiceGrant: policy}})
	must(t, a, fsm.UpsertCustomer{ID: "c1", Name: "Acme", BillingRef: "cus_123", PlanID: "pro", AutoTopUp: auto})
}

func readPurchase(t *testing.T, s StateReader, id string) fsm.Purchase {
	t.Helper()
	var p fsm.Purchase
	if err := s.View(func(v *fsm.View) error {
		var err error
		p, err = v.Purchase(id)
		return err
	}); err != nil {
		t.Fatalf("read purchase %s: %v", id, err)
	}
	return p
}

func readGrant(t *testing.T, s StateReader, id string) fsm.Grant {
	t.Helper()
	var g fsm.Grant
	if err := s.View(func(v *fsm.View) error {
		var err error
		g, err = v.Grant(id)
		return err
	}); err != nil {
		t.Fatalf("read grant %s: %v", id, err)
	}
	return g
}

func countGrants(t *testing.T, s StateReader) int {
	t.Helper()
	n := 0
	if err := s.View(func(v *fsm.View) error {
		return v.ScanGrants(func(*fsm.Grant) error { n++; return nil })
	}); err != nil {
		t.Fatal(err)
	}
	return n
}

func mustJSON(t *testing.T, v any) []byte {
	t.Helper()
	b, err := json.Marshal(v)
	if err != nil {
		t.Fatal(err)
	}
	return b
}
