package fsm

import (
	"bytes"
	"encoding/json"
	"fmt"
	"math/rand/v2"
	"path/filepath"
	"testing"
	"time"
)

// randomLog builds a long, valid-looking but random command log over a few
// customers, credit types and grants: most commands succeed, many fail, all
// must leave the invariants intact.
func randomLog(seed uint64, entries int) []Entry {
	rng := rand.New(rand.NewPCG(seed, seed^0x9e3779b97f4a7c15))
	customers := []string{"c0", "c1", "c2", "c3"}
	w := &logWriter{now: t0}
	enc, flush := w.add, w.endEntry
	enc(CreateCreditType{ID: "ai", Name: "AI", Scale: 2})
	enc(CreateCreditType{ID: "gpu", Name: "GPU", Scale: 0})
	enc(UpsertFeature{ID: "tokens", CreditTypeID: "ai", Rate: mustDec("0.013")})
	enc(UpsertFeature{ID: "secs", CreditTypeID: "gpu", Rate: mustDec("2")})
	enc(UpsertPlan{Plan: Plan{ID: "deny", CreditTypeID: "ai", Currency: "USD", PricePerCredit: mustDec("0.0137"),
		MinPurchaseCredits: 100, AutoTopUp: AutoTopUp{Enabled: true, ThresholdCredits: 500, AmountCredits: 3000, MonthlyCapMicros: 200_000}}})
	enc(UpsertPlan{Plan: Plan{ID: "od", CreditTypeID: "gpu", Currency: "EUR", PricePerCredit: mustDec("0.3"),
		Overdraft: OverdraftAllow, OverdraftLimit: 40}})
	for i, c := range customers {
		plan := []string{"deny", "od", "", "deny"}[i]
		enc(UpsertCustomer{ID: c, PlanID: plan})
	}
	flush()
	grants, resvs, purchases := 0, 0, 0
	pick := func(n int) int { return rng.IntN(n) }
	for len(w.log) < entries {
		w.now += Timestamp(rng.IntN(600_000_000)) // up to 10 minutes per entry
		now := w.now
		for n := 1 + pick(5); n > 0; n-- {
			cu := customers[pick(len(customers))]
			ct := []string{"ai", "gpu"}[pick(2)]
			switch k := pick(100); {
			case k < 15:
				grants++
				g := CreateGrant{ID: fmt.Sprintf("g%d", grants), CustomerID: cu, CreditTypeID: ct, Amount: int64(1 + pick(5000)),
					Priority: uint32(pick(3))}
				if pick(2) == 0 {
					g.Category, g.CostBasis, g.Currency = Paid, Decimal{Coef: int64(1 + pick(999)), Scale: uint8(pick(5))}, "USD"
				}
				if pick(3) == 0 {
					g.ExpiresAt = now + Timestamp(1+pick(7200))*1e6
				}
				if pick(5) == 0 {
					g.EffectiveAt = now + Timestamp(pick(3600))*1e6
				}
				enc(g)
			case k < 55:
				enc(randomUsage(pick, customers, ct, 20, 100000, 3000, 400))
			case k < 63:
				resvs++
				enc(Reserve{ID: fmt.Sprintf("r%d", resvs), CustomerID: cu, CreditTypeID: ct, Credits: int64(1 + pick(300)),
					TTL: time.Duration(1+pick(1800)) * time.Second})
			case k < 70:
				enc(Settle{ReservationID: fmt.Sprintf("r%d", 1+pick(resvs+1)), Credits: int64(pick(400)), UseCredits: true})
			case k < 74:
				enc(Release{ReservationID: fmt.Sprintf("r%d", 1+pick(resvs+1))})
			case k < 78:
				enc(RevokeGrant{GrantID: fmt.Sprintf("g%d", 1+pick(grants+1)), Amount: int64(pick(2) * pick(1000)), Reason: "refund"})
			case k < 82:
				enc(Adjust{ID: fmt.Sprintf("a%d", pick(1000)), GrantID: fmt.Sprintf("g%d", 1+pick(grants+1)),
					Amount: int64(pick(600) - 300), Reason: "fix"})
			case k < 86:
				purchases++
				enc(StartPurchase{ID: fmt.Sprintf("p%d", purchases), CustomerID: cu, Credits: int64(100 + pick(5000))})
			case k < 92:
				id := fmt.Sprintf("p%d", 1+pick(purchases+1))
				if pick(3) == 0 {
					id = fmt.Sprintf("auto-%d-0-%d", pick(len(w.log)+1), pick(3))
				}
				outcome := []PurchaseOutcome{OutcomeSucceeded, OutcomeFailed, OutcomeProgress}[pick(3)]
				enc(CompletePurchase{ID: id, Outcome: outcome, FailureReason: "declined"})
			case k < 97:
				enc(Tick{})
			default:
				enc(UpsertCustomer{ID: cu, PlanID: []string{"deny", "od", ""}[pick(3)], ResumeAutoTopUp: pick(2) == 0})
			}
		}
		flush()
	}
	return w.log
}

// logWriter builds a log of encoded commands, an entry at a time, at a log
// time its user moves.
type logWriter struct {
	now  Timestamp
	cmds [][]byte
	log  []Entry
}

func (w *logWriter) add(c Command) {
	b, err := EncodeCommand(c)
	if err != nil {
		panic(err)
	}
	w.cmds = append(w.cmds, b)
}

// endEntry closes the entry of the commands added since the last one.
func (w *logWriter) endEntry() {
	w.log = append(w.log, Entry{Index: uint64(len(w.log) + 1), Data: EncodeEntry(w.now, w.cmds)})
	w.cmds = nil
}

// randomUsage is a batch of 1 to maxEvents events over customers, with ids
// drawn from idSpace: each either of a feature (tokens or secs, quantity
// below maxQuantity) or in credits of ct (below maxCredits).
func randomUsage(pick func(int) int, customers []string, ct string, maxEvents, idSpace, maxQuantity, maxCredits int) BurnUsage {
	var evs []UsageEvent
	for m := 1 + pick(maxEvents); m > 0; m-- {
		ev := UsageEvent{ID: fmt.Sprintf("e%d", pick(idSpace)), CustomerID: customers[pick(len(customers))]}
		if pick(2) == 0 {
			ev.FeatureID = []string{"tokens", "secs"}[pick(2)]
			ev.Quantity = int64(pick(maxQuantity))
		} else {
			ev.CreditTypeID, ev.Credits = ct, int64(pick(maxCredits))
		}
		evs = append(evs, ev)
	}
	return BurnUsage{Events: evs}
}

func openAt(t testing.TB, dir string) *FSM {
	f, err := Open(filepath.Join(dir, "state.db"), Options{NoSync: true})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { f.Close() })
	return f
}

func applyAll(t testing.TB, f *FSM, log []Entry, batch int, check func(rs [][]Result)) {
	t.Helper()
	for i := 0; i < len(log); i += batch {
		rs, err := f.Apply(log[i:min(i+batch, len(log))])
		if err != nil {
			t.Fatal(err)
		}
		if check != nil {
			check(rs)
		}
	}
}

func dumpOf(t testing.TB, f *FSM) []byte {
	var b bytes.Buffer
	if err := f.Dump(&b); err != nil {
		t.Fatal(err)
	}
	return b.Bytes()
}

func TestInvariantsOverRandomLogs(t *testing.T) {
	for seed := uint64(1); seed <= 6; seed++ {
		t.Run(fmt.Sprintf("seed %d", seed), func(t *testing.T) {
			f := openAt(t, t.TempDir())
			log := randomLog(seed, 400)
			burned, denied := 0, 0
			applyAll(t, f, log, 1, func(rs [][]Result) {
				for _, r := range rs[0] {
					evs, ok := r.Value.([]EventResult)
					if !ok {
						continue
					}
					for _, ev := range evs {
						switch ev.Status {
						case EventBurned:
							burned++
							if ev.Duplicate {
								continue
							}
							floor := int64(0)
							if ev.CreditTypeID == "gpu" {
								floor = -40 // only the "od" plan allows overdraft
							}
							if ev.AvailableAfter < floor && ev.Credits > 0 {
								t.Fatalf("event %s left available %d below the floor %d", ev.EventID, ev.AvailableAfter, floor)
							}
						case EventDenied:
							denied++
						}
					}
				}
				checkInvariants(t, f)
			})
			if burned == 0 || denied == 0 {
				t.Fatalf("the log exercised too little: %d burned, %d denied", burned, denied)
			}
		})
	}
}

// checkInvariants verifies, for every pool: the balance equals the sum of
// its ledger, equals granted − burned − expired − revoked ± adjusted,
// equals live remaining − overdraft; no grant's remaining is outside
// [0, amount]; deferred revenue is exactly round(remaining × cost basis) and
// equals the sum of the ledger's money.
func checkInvariants(t testing.TB, f *FSM) {
	t.Helper()
	type sums struct{ ledger, byKind, money, remaining, deferred int64 }
	pools := map[string]*sums{}
	get := func(cu, ct string) *sums {
		k := cu + "/" + ct
		if pools[k] == nil {
			pools[k] = &sums{}
		}
		return pools[k]
	}
	err := f.View(func(v *View) error {
		var prev uint64
		err := v.ScanLedger(0, 0, func(e *LedgerEntry) error {
			if e.Seq != prev+1 {
				return fmt.Errorf("ledger sequence jumps from %d to %d", prev, e.Seq)
			}
			prev = e.Seq
			s := get(e.CustomerID, e.CreditTypeID)
			s.ledger += e.Amount
			switch e.Kind {
			case EntryGrant, EntryAdjust:
				s.byKind += e.Amount
			case EntryBurn, EntryExpire, EntryRevoke:
				s.byKind -= -e.Amount
			case EntryRepay:
				if e.Amount != 0 {
					return fmt.Errorf("repay entry %d moves the balance", e.Seq)
				}
			}
			s.money += e.MoneyMicros
			if s.ledger != e.BalanceAfter {
				return fmt.Errorf("entry %d: balance after %d, ledger sums to %d", e.Seq, e.BalanceAfter, s.ledger)
			}
			return nil
		})
		if err != nil {
			return err
		}
		cts := map[string]uint8{"ai": 2, "gpu": 0}
		v.tx.Bucket(bCreditType).ForEach(func(k, raw []byte) error {
			var c CreditType
			d := dec{b: raw}
			c.decode(&d)
			cts[c.ID] = c.Scale
			return nil
		})
		err = v.ScanGrants(func(g *Grant) error {
			if g.Remaining < 0 || g.Remaining > g.Amount {
				return fmt.Errorf("grant %s remaining %d outside [0, %d]", g.ID, g.Remaining, g.Amount)
			}
			want, _ := moneyFor(g.Remaining, g.CostBasis, cts[g.CreditTypeID])
			if g.Category == Promotional {
				want = 0
			}
			if g.DeferredMicros != want {
				return fmt.Errorf("grant %s deferred %d, want %d", g.ID, g.DeferredMicros, want)
			}
			if g.Amount-g.Burned-g.Expired-g.Revoked != g.Remaining {
				return fmt.Errorf("grant %s: amount %d − burned %d − expired %d − revoked %d ≠ remaining %d", g.ID,
					g.Amount, g.Burned, g.Expired, g.Revoked, g.Remaining)
			}
			s := get(g.CustomerID, g.CreditTypeID)
			if isLive(g.Status) {
				s.remaining += g.Remaining
			} else if g.Remaining != 0 {
				return fmt.Errorf("grant %s is %s with %d remaining", g.ID, g.Status, g.Remaining)
			}
			s.deferred += g.DeferredMicros
			return nil
		})
		if err != nil {
			return err
		}
		for k, s := range pools {
			var cu, ct string
			fmt.Sscanf(k, "%2s/%s", &cu, &ct)
			p, err := v.pool(cu, ct)
			if err != nil {
				return err
			}
			if p.Balance != s.ledger || s.byKind != s.ledger || p.Balance != s.remaining-p.Overdraft {
				return fmt.Errorf("pool %s: balance %d, ledger %d, by kind %d, remaining−overdraft %d", k, p.Balance, s.ledger, s.byKind, s.remaining-p.Overdraft)
			}
			if s.money != s.deferred {
				return fmt.Errorf("pool %s: ledger money %d ≠ deferred revenue %d", k, s.money, s.deferred)
			}
			if p.Reserved < 0 || p.Overdraft < 0 {
				return fmt.Errorf("pool %s: reserved %d, overdraft %d", k, p.Reserved, p.Overdraft)
			}
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
}

func TestReplicasThatApplyTheSameLogAreByteIdentical(t *testing.T) {
	log := randomLog(42, 600)
	a, b := openAt(t, t.TempDir()), openAt(t, t.TempDir())
	applyAll(t, a, log, 1, nil)
	applyAll(t, b, log, 37, nil) // batching of entries must not matter
	da, db := dumpOf(t, a), dumpOf(t, b)
	if !bytes.Equal(da, db) {
		t.Fatal("dumps differ")
	}
	// A replica that restarts often (its record cache cold each time) ends
	// the same.
	dir := t.TempDir()
	for i := 0; i < len(log); i += 50 {
		c, err := Open(filepath.Join(dir, "state.db"), Options{NoSync: true})
		if err != nil {
			t.Fatal(err)
		}
		applyAll(t, c, log[i:min(i+50, len(log))], 5, nil)
		c.Close()
	}
	c := openAt(t, dir)
	if !bytes.Equal(da, dumpOf(t, c)) {
		t.Fatal("a replica with cold caches differs")
	}
	if a.LastSeq() < 100 {
		t.Fatalf("only %d ledger entries", a.LastSeq())
	}
}

func TestSnapshotMidLogRestoresToTheSameState(t *testing.T) {
	log := randomLog(7, 500)
	never := openAt(t, t.TempDir())
	applyAll(t, never, log, 10, nil)

	first := openAt(t, t.TempDir())
	applyAll(t, first, log[:250], 10, nil)
	snap, err := first.Snapshot()
	if err != nil {
		t.Fatal(err)
	}
	var buf bytes.Buffer
	// Applies go on while the snapshot is open.
	applyAll(t, first, log[250:260], 10, nil)
	if _, err := snap.WriteTo(&buf); err != nil {
		t.Fatal(err)
	}
	if snap.AppliedIndex() != 250 {
		t.Fatalf("snapshot at %d", snap.AppliedIndex())
	}
	snap.Release()

	restored := openAt(t, t.TempDir())
	applyAll(t, restored, log[:3], 10, nil) // some unrelated state, replaced whole
	if err := restored.Restore(&buf); err != nil {
		t.Fatal(err)
	}
	if restored.AppliedIndex() != 250 {
		t.Fatalf("restored at %d", restored.AppliedIndex())
	}
	applyAll(t, restored, log[200:], 10, nil) // overlap is skipped by index
	if !bytes.Equal(dumpOf(t, never), dumpOf(t, restored)) {
		t.Fatal("restored replica differs from the one that never stopped")
	}
}

func TestRestartResumesFromTheStoredIndex(t *testing.T) {
	dir := t.TempDir()
	log := randomLog(3, 120)
	f, err := Open(filepath.Join(dir, "state.db"), Options{})
	if err != nil {
		t.Fatal(err)
	}
	applyAll(t, f, log[:60], 7, nil)
	f.Close()
	f = openAt(t, dir)
	if f.AppliedIndex() != 60 {
		t.Fatalf("reopened at %d", f.AppliedIndex())
	}
	applyAll(t, f, log, 7, nil) // raft may resend from an older index
	ref := openAt(t, t.TempDir())
	applyAll(t, ref, log, 1, nil)
	if !bytes.Equal(dumpOf(t, f), dumpOf(t, ref)) {
		t.Fatal("restart changed the outcome")
	}
}

func TestRestoreRefusesSomethingThatIsNotAState(t *testing.T) {
	f := openAt(t, t.TempDir())
	applyAll(t, f, randomLog(1, 5), 5, nil)
	before := dumpOf(t, f)
	if err := f.Restore(bytes.NewReader([]byte("not a database"))); err == nil {
		t.Fatal("restored garbage")
	}
	if !bytes.Equal(before, dumpOf(t, f)) {
		t.Fatal("a failed restore changed the state")
	}
}

// A snapshot cut short (a copy that stopped, a full disk) or damaged is
// refused, never restored and never a panic, and the state stays as it was.
func TestRestoreRefusesASnapshotCutShortOrDamaged(t *testing.T) {
	src := openAt(t, t.TempDir())
	applyAll(t, src, randomLog(3, 300), 10, nil)
	snap, err := src.Snapshot()
	if err != nil {
		t.Fatal(err)
	}
	var buf bytes.Buffer
	if _, err := snap.WriteTo(&buf); err != nil {
		t.Fatal(err)
	}
	snap.Release()
	whole := buf.Bytes()
	const page = 4096
	if len(whole) < 8*page {
		t.Fatalf("the snapshot is %d bytes: too small to cut in pages", len(whole))
	}
	damaged := bytes.Clone(whole)
	for i := 2 * page; i < len(damaged); i += page { // every page header after the metas
		damaged[i] ^= 0xff
	}
	cases := []struct {
		name string
		data []byte
	}{
		{"only the meta pages", whole[:2*page]},
		{"cut in half", whole[:len(whole)/2]},
		{"the last page missing", whole[:len(whole)-page]},
		{"one byte short", whole[:len(whole)-1]},
		{"page headers damaged", damaged},
	}
	f := openAt(t, t.TempDir())
	applyAll(t, f, randomLog(1, 5), 5, nil)
	before := dumpOf(t, f)
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			var err error
			func() {
				defer func() {
					if p := recover(); p != nil {
						t.Fatalf("restore panicked: %v", p)
					}
				}()
				err = f.Restore(bytes.NewReader(tc.data))
			}()
			if err == nil {
				t.Fatalf("restored %d of %d bytes", len(tc.data), len(whole))
			}
			if !bytes.Equal(before, dumpOf(t, f)) {
				t.Fatal("a failed restore changed the state")
			}
		})
	}
}

// idemChurnLog is a log whose ids repeat within and across entries (some
// with another payload) while idempotency generations turn over every few
// entries and Ticks prune them: what an Apply of many entries must answer
// and store exactly as one entry per Apply does.
func idemChurnLog(seed uint64, entries int) []Entry {
	rng := rand.New(rand.NewPCG(seed, seed^0x5851f42d4c957f2d))
	w := &logWriter{now: t0}
	add := func(cmds ...Command) {
		for _, c := range cmds {
			w.add(c)
		}
		w.endEntry()
	}
	add(CreateCreditType{ID: "ai", Scale: 2}, UpsertCustomer{ID: "c0"}, UpsertCustomer{ID: "c1"},
		CreateGrant{ID: "seed0", CustomerID: "c0", CreditTypeID: "ai", Amount: 1 << 40},
		CreateGrant{ID: "seed1", CustomerID: "c1", CreditTypeID: "ai", Amount: 1 << 40})
	for len(w.log) < entries {
		w.now += Timestamp(rng.IntN(15 * 60 * 1_000_000)) // up to 15 minutes
		var cmds []Command
		for n := 1 + rng.IntN(3); n > 0; n-- {
			switch k := rng.IntN(10); {
			case k < 6:
				evs := make([]UsageEvent, 1+rng.IntN(8))
				for i := range evs {
					evs[i] = UsageEvent{ID: fmt.Sprintf("e%d", rng.IntN(40)), CustomerID: fmt.Sprintf("c%d", rng.IntN(2)),
						CreditTypeID: "ai", Credits: int64(1 + rng.IntN(2))}
				}
				cmds = append(cmds, BurnUsage{Events: evs})
			case k < 8:
				cmds = append(cmds, CreateGrant{ID: fmt.Sprintf("g%d", rng.IntN(15)), CustomerID: "c0", CreditTypeID: "ai",
					Amount: int64(1 + rng.IntN(2))})
			default:
				cmds = append(cmds, Tick{})
			}
		}
		add(cmds...)
	}
	return w.log
}

func TestIdempotencyIsTheSameHoweverEntriesAreGroupedIntoApplies(t *testing.T) {
	log := idemChurnLog(7, 400)
	// 30 minutes of retention: a generation turns over every four entries
	// or so, and a record stops being visible within one Apply of 37.
	got := requireTheSameHoweverGrouped(t, log, Options{NoSync: true, IdempotencyRetention: 30 * time.Minute})
	duplicates, conflicts := 0, 0
	for _, rs := range got {
		for _, r := range rs {
			evs, _ := r.Value.([]EventResult)
			for _, ev := range evs {
				if ev.Duplicate {
					duplicates++
				}
				if ev.Code == CodeConflict {
					conflicts++
				}
			}
		}
	}
	if duplicates < 50 || conflicts < 50 {
		t.Fatalf("the log repeats too little: %d duplicates, %d conflicts", duplicates, conflicts)
	}
}

// Every kind of command, with idempotency generations turning over every
// dozen entries or so.
func TestRandomLogsAnswerTheSameHoweverGrouped(t *testing.T) {
	for seed := uint64(1); seed <= 3; seed++ {
		t.Run(fmt.Sprintf("seed %d", seed), func(t *testing.T) {
			requireTheSameHoweverGrouped(t, randomLog(seed, 400), Options{NoSync: true, IdempotencyRetention: time.Hour})
		})
	}
}

// requireTheSameHoweverGrouped applies log in Applies of 1, 2, 7, 37 and
// all entries and requires the same answers and byte-equal dumps; it
// returns the answers.
func requireTheSameHoweverGrouped(t *testing.T, log []Entry, opts Options) [][]Result {
	t.Helper()
	var want [][]Result
	var wantDump []byte
	for _, perApply := range []int{1, 2, 7, 37, len(log)} {
		f, err := Open(filepath.Join(t.TempDir(), "state.db"), opts)
		if err != nil {
			t.Fatal(err)
		}
		var got [][]Result
		applyAll(t, f, log, perApply, func(rs [][]Result) { got = append(got, rs...) })
		dump := dumpOf(t, f)
		f.Close()
		if want == nil {
			want, wantDump = got, dump
			continue
		}
		for i := range want {
			if g, w := resultsText(t, got[i]), resultsText(t, want[i]); g != w {
				t.Fatalf("%d entries per Apply: entry %d answered\n%s\nwant (one per Apply)\n%s", perApply, i+1, g, w)
			}
		}
		if !bytes.Equal(dump, wantDump) {
			t.Fatalf("%d entries per Apply: the state differs from one entry per Apply", perApply)
		}
	}
	return want
}

// resultsText shows results by their exported fields (records carry
// bookkeeping of the applier's cache that differs by grouping).
func resultsText(t *testing.T, rs []Result) string {
	b, err := json.Marshal(rs)
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}
