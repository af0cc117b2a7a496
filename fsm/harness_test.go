package fsm

import (
	"bytes"
	"path/filepath"
	"testing"
	"time"
)

// t0 is the log time every test starts at: 2026-01-15 12:00 UTC.
var t0 = TimestampOf(time.Date(2026, 1, 15, 12, 0, 0, 0, time.UTC))

type harness struct {
	t     testing.TB
	f     *FSM
	index uint64
	now   Timestamp
}

func newHarness(t testing.TB) *harness {
	t.Helper()
	f, err := Open(filepath.Join(t.TempDir(), "state.db"), Options{NoSync: true})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { f.Close() })
	return &harness{t: t, f: f, now: t0}
}

// at moves log time forward by d.
func (h *harness) after(d time.Duration) *harness {
	h.now += Timestamp(d.Microseconds())
	return h
}

// entry encodes commands as one log entry at the harness's time.
func (h *harness) entry(cmds ...Command) Entry {
	h.t.Helper()
	enc := make([][]byte, len(cmds))
	for i, c := range cmds {
		b, err := EncodeCommand(c)
		if err != nil {
			h.t.Fatal(err)
		}
		enc[i] = b
	}
	h.index++
	return Entry{Index: h.index, Data: EncodeEntry(h.now, enc)}
}

// apply applies commands as one entry and returns their results.
func (h *harness) apply(cmds ...Command) []Result {
	h.t.Helper()
	rs, err := h.f.Apply([]Entry{h.entry(cmds...)})
	if err != nil {
		h.t.Fatalf("apply: %v", err)
	}
	return rs[0]
}

// ok applies one command and fails the test on a domain error.
func (h *harness) ok(c Command) Result {
	h.t.Helper()
	r := h.apply(c)[0]
	if r.Err != nil {
		h.t.Fatalf("%T: %v", c, r.Err)
	}
	return r
}

// fails applies one command, expects a domain error of code and field, and
// checks that the state did not change.
func (h *harness) fails(c Command, code Code, field string) *Error {
	h.t.Helper()
	before := h.dump()
	r := h.apply(c)[0]
	e, isDomain := r.Err.(*Error)
	if !isDomain {
		h.t.Fatalf("%T: got %v, want a %s error on %q", c, r.Err, code, field)
	}
	if e.Code != code || (field != "" && e.Field != field) {
		h.t.Fatalf("%T: got %s on %q (%v), want %s on %q", c, e.Code, e.Field, e, code, field)
	}
	after := h.dump()
	if !bytes.Equal(stripMeta(before), stripMeta(after)) {
		h.t.Fatalf("%T: a rejected command changed the state", c)
	}
	return e
}

func (h *harness) dump() []byte {
	h.t.Helper()
	var b bytes.Buffer
	if err := h.f.Dump(&b); err != nil {
		h.t.Fatal(err)
	}
	return b.Bytes()
}

// stripMeta drops the meta bucket (applied index and time move with every
// entry) so two dumps compare the model alone.
func stripMeta(d []byte) []byte {
	start := bytes.Index(d, []byte("[meta]\n"))
	end := bytes.Index(d, []byte("[credit_types]\n"))
	return append(append([]byte{}, d[:start]...), d[end:]...)
}

func (h *harness) balance(customer, ct string) Balance {
	h.t.Helper()
	var b Balance
	err := h.f.View(func(v *View) error {
		var err error
		b, err = v.Balance(customer, ct)
		return err
	})
	if err != nil {
		h.t.Fatal(err)
	}
	return b
}

func (h *harness) grant(id string) Grant {
	h.t.Helper()
	var g Grant
	if err := h.f.View(func(v *View) (err error) { g, err = v.Grant(id); return }); err != nil {
		h.t.Fatal(err)
	}
	return g
}

func (h *harness) ledger(customer string) []LedgerEntry {
	h.t.Helper()
	var es []LedgerEntry
	if err := h.f.View(func(v *View) (err error) {
		es, _, err = v.Ledger(LedgerFilter{CustomerID: customer})
		return
	}); err != nil {
		h.t.Fatal(err)
	}
	return es
}

func (h *harness) customer(id string) Customer {
	h.t.Helper()
	var c Customer
	if err := h.f.View(func(v *View) (err error) { c, err = v.Customer(id); return }); err != nil {
		h.t.Fatal(err)
	}
	return c
}

func mustDec(s string) Decimal {
	d, err := ParseDecimal(s, MaxDecimalScale)
	if err != nil {
		panic(err)
	}
	return d
}

// seed creates credit type "ai" (scale 2), feature "tokens" at 0.01
// credits per token, plan "pro" at 0.10 USD per credit, and customer "c1".
func (h *harness) seed() {
	h.ok(CreateCreditType{ID: "ai", Name: "AI credits", Scale: 2})
	h.ok(UpsertFeature{ID: "tokens", Name: "GPT tokens", CreditTypeID: "ai", Rate: mustDec("0.01")})
	h.ok(UpsertPlan{Plan: Plan{ID: "pro", CreditTypeID: "ai", Currency: "USD", PricePerCredit: mustDec("0.10"),
		MinPurchaseCredits: 100, MaxPurchaseCredits: 1_000_000_00}})
	h.ok(UpsertCustomer{ID: "c1", PlanID: "pro"})
}

func (h *harness) promo(id string, amount int64, mods ...func(*CreateGrant)) *Grant {
	h.t.Helper()
	c := CreateGrant{ID: id, CustomerID: "c1", CreditTypeID: "ai", Category: Promotional, Amount: amount}
	for _, m := range mods {
		m(&c)
	}
	return h.ok(c).Value.(*Grant)
}

func (h *harness) paid(id string, amount int64, price string, mods ...func(*CreateGrant)) *Grant {
	h.t.Helper()
	c := CreateGrant{ID: id, CustomerID: "c1", CreditTypeID: "ai", Category: Paid, Amount: amount,
		CostBasis: mustDec(price), Currency: "USD"}
	for _, m := range mods {
		m(&c)
	}
	return h.ok(c).Value.(*Grant)
}

func (h *harness) burnCredits(id string, credits int64) EventResult {
	h.t.Helper()
	r := h.ok(BurnUsage{Events: []UsageEvent{{ID: id, CustomerID: "c1", CreditTypeID: "ai", Credits: credits}}})
	return r.Value.([]EventResult)[0]
}
