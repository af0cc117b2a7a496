package fsm

import (
	"bytes"
	"errors"
	"testing"
)

// planTopUp is plan "pro"'s default in these tests: below 300 credits, buy
// 2,000.
var planTopUp = AutoTopUp{Enabled: true, ThresholdCredits: 300, Mode: TopUpFixed, AmountCredits: 2000}

// planTopUpHarness is seed with plan "pro" enabling planTopUp, and 1,000
// paid credits for c1 (who has no settings of its own yet).
func planTopUpHarness(t *testing.T) *harness {
	t.Helper()
	h := newHarness(t)
	h.seed()
	h.ok(UpsertPlan{Plan: Plan{ID: "pro", CreditTypeID: "ai", Currency: "USD", PricePerCredit: mustDec("0.10"),
		MinPurchaseCredits: 100, MaxPurchaseCredits: 1_000_000_00, AutoTopUp: planTopUp}})
	h.paid("g", 1000, "0.10")
	return h
}

// reopen closes the state file and opens it again, so what follows reads the
// records as stored, not the applier's cache.
func (h *harness) reopen() {
	h.t.Helper()
	h.f.ap = nil
	if err := h.f.Close(); err != nil {
		h.t.Fatal(err)
	}
	f, err := Open(h.f.path, Options{NoSync: true})
	if err != nil {
		h.t.Fatal(err)
	}
	h.t.Cleanup(func() { f.Close() })
	h.f = f
}

// A customer on a plan whose auto top-up is enabled turns it off for itself
// with settings of its own that are disabled: {Own: true} and nothing else
// (what the API's "autoTopUp": {"enabled": false} is). It followed the plan
// and was topped up, since its settings equalled the zero value.
func TestACustomerTurnsOffThePlansAutoTopUpWithSettingsOfItsOwn(t *testing.T) {
	for _, tc := range []struct {
		name     string
		settings AutoTopUp
		own      bool
		topUp    bool
	}{
		{"own settings with nothing enabled turn it off", AutoTopUp{Own: true}, true, false},
		{"own disabled settings with a threshold turn it off", AutoTopUp{Own: true, ThresholdCredits: 1}, true, false},
		{"disabled settings with a threshold are its own without Own", AutoTopUp{ThresholdCredits: 1}, true, false},
		{"no settings follow the plan", AutoTopUp{}, false, true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			h := planTopUpHarness(t)
			cu := h.ok(UpsertCustomer{ID: "c1", PlanID: "pro", AutoTopUp: tc.settings}).Value.(*Customer)
			if cu.AutoTopUp.Own != tc.own {
				t.Fatalf("upsert answered %+v, want own %v", cu.AutoTopUp, tc.own)
			}
			h.reopen()
			if got := h.customer("c1").AutoTopUp; got.Own != tc.own || got.Enabled {
				t.Fatalf("stored settings %+v, want own %v and disabled", got, tc.own)
			}
			h.burnCredits("e1", 800) // 200 left: below the plan's 300
			c := h.customer("c1")
			if started := c.AutoPendingPurchase != ""; started != tc.topUp {
				t.Fatalf("top-up started %v (purchase %q, last %q), want %v", started, c.AutoPendingPurchase, c.AutoTopUpLast, tc.topUp)
			}
		})
	}
}

// An UpsertCustomer without settings clears the customer's own, as it always
// did: that is how a customer that turned auto top-up off goes back to its
// plan's.
func TestAnUpsertWithoutSettingsGoesBackToThePlans(t *testing.T) {
	h := planTopUpHarness(t)
	h.ok(UpsertCustomer{ID: "c1", PlanID: "pro", AutoTopUp: AutoTopUp{Own: true}})
	h.burnCredits("e1", 600) // 400 left
	h.ok(UpsertCustomer{ID: "c1", PlanID: "pro"})
	if got := h.customer("c1").AutoTopUp; got != (AutoTopUp{}) {
		t.Fatalf("settings %+v after an upsert without any, want none", got)
	}
	h.burnCredits("e2", 200) // 200 left
	if c := h.customer("c1"); c.AutoPendingPurchase == "" {
		t.Fatalf("the plan's top-up did not start (last %q)", c.AutoTopUpLast)
	}
}

// v1UpsertCustomer is an entry of version 1 holding one UpsertCustomer in
// the layout builds before 2026-11-27 wrote (no Own at the end), with
// extra appended to the body.
func v1UpsertCustomer(h *harness, id, plan string, s AutoTopUp, extra ...byte) Entry {
	var body enc
	body.str(id)
	body.str("")
	body.str("")
	body.str(plan)
	body.bool(s.Enabled)
	body.iv(s.ThresholdCredits)
	body.u8(uint8(s.Mode))
	body.iv(s.AmountCredits)
	body.iv(s.MonthlyCapMicros)
	body.bool(false) // resume
	body.b = append(body.b, extra...)
	var e enc
	e.u8(1)
	e.ts(h.now)
	e.uv(1)
	e.u8(uint8(CmdUpsertCustomer))
	e.uv(uint64(len(body.b)))
	e.b = append(e.b, body.b...)
	h.index++
	return Entry{Index: h.index, Data: e.b}
}

// An UpsertCustomer in an entry of version 1 has settings of its own iff
// they are not all zero, as the builds that wrote it applied it: zero
// settings follow the plan, the old workaround's turn it off.
func TestAVersion1UpsertCustomerMeansWhatItMeant(t *testing.T) {
	for _, tc := range []struct {
		name     string
		settings AutoTopUp
		topUp    bool
	}{
		{"zero settings follow the plan", AutoTopUp{}, true},
		{"disabled settings with a threshold are its own", AutoTopUp{ThresholdCredits: 1}, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			h := planTopUpHarness(t)
			rs, err := h.f.Apply([]Entry{v1UpsertCustomer(h, "c1", "pro", tc.settings)})
			if err != nil || rs[0][0].Err != nil {
				t.Fatalf("apply: %v %+v", err, rs)
			}
			if own := h.customer("c1").AutoTopUp.Own; own == tc.topUp {
				t.Fatalf("own %v, want %v", own, !tc.topUp)
			}
			h.burnCredits("e1", 800)
			if started := h.customer("c1").AutoPendingPurchase != ""; started != tc.topUp {
				t.Fatalf("top-up started %v, want %v", started, tc.topUp)
			}
		})
	}
	t.Run("a version 1 body with the version 2 flag is refused, not misread", func(t *testing.T) {
		h := planTopUpHarness(t)
		before := h.dump()
		rs, err := h.f.Apply([]Entry{v1UpsertCustomer(h, "c1", "pro", AutoTopUp{}, 1)})
		if err != nil {
			t.Fatal(err)
		}
		if e := rs[0][0].Err; CodeOf(e) != CodeInvalid {
			t.Fatalf("result %v, want the entry refused as invalid", e)
		}
		if after := h.dump(); !bytes.Equal(stripMeta(before), stripMeta(after)) {
			t.Fatal("a refused entry changed the state")
		}
	})
}

// A plan's settings are a default, never a customer's own.
func TestAPlanWithOwnSettingsIsRefused(t *testing.T) {
	_, err := EncodeCommand(UpsertPlan{Plan: Plan{ID: "p", AutoTopUp: AutoTopUp{Own: true}}})
	var fe *Error
	if !errors.As(err, &fe) || fe.Code != CodeInvalid || fe.Field != "auto_top_up.own" {
		t.Fatalf("encode: %v, want auto_top_up.own invalid", err)
	}
}

// v1CustomerRecord is a customer record as builds before 2026-11-27 stored
// it (record version 1, no Own).
func v1CustomerRecord(c *Customer) []byte {
	var e enc
	e.u8(1)
	e.str(c.ID)
	e.str(c.Name)
	e.str(c.BillingRef)
	e.str(c.PlanID)
	e.bool(c.AutoTopUp.Enabled)
	e.iv(c.AutoTopUp.ThresholdCredits)
	e.u8(uint8(c.AutoTopUp.Mode))
	e.iv(c.AutoTopUp.AmountCredits)
	e.iv(c.AutoTopUp.MonthlyCapMicros)
	e.str(c.AutoTopUpPaused)
	e.str(c.AutoTopUpLast)
	e.iv(int64(c.AutoSpendMonth))
	e.iv(c.AutoSpendMicros)
	e.str(c.AutoPendingPurchase)
	e.ts(c.CreatedAt)
	e.ts(c.UpdatedAt)
	return e.b
}

// A customer record of version 1 reads as it did: settings of its own iff
// not all zero. A customer whose settings version 1 can say is still stored
// byte for byte as version 1 (a state built from a version 1 log is the
// same as an older build's); only own settings with nothing set need
// version 2, which round-trips.
func TestCustomerRecordsOfVersion1ReadAsBefore(t *testing.T) {
	base := Customer{ID: "c1", Name: "Acme", BillingRef: "cus_1", PlanID: "pro", AutoTopUpLast: "disabled",
		AutoSpendMonth: 202601, AutoSpendMicros: 5, AutoPendingPurchase: "p", CreatedAt: 7, UpdatedAt: 9}
	for _, tc := range []struct {
		name     string
		settings AutoTopUp
		own      bool
	}{
		{"no settings", AutoTopUp{}, false},
		{"enabled settings", planTopUp, true},
		{"disabled settings with a threshold", AutoTopUp{ThresholdCredits: 1}, true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			old := base
			old.AutoTopUp = tc.settings
			raw := v1CustomerRecord(&old)
			var got Customer
			d := dec{b: raw}
			got.decode(&d)
			want := old
			want.AutoTopUp.Own = tc.own
			if d.err != nil || got != want {
				t.Fatalf("decoded %+v (%v), want %+v", got, d.err, want)
			}
			var e enc
			got.encode(&e)
			if !bytes.Equal(e.b, raw) {
				t.Fatalf("encoded again as %x, want the version 1 record %x", e.b, raw)
			}
		})
	}
	t.Run("own settings with nothing set round-trip as version 2", func(t *testing.T) {
		c := base
		c.AutoTopUp = AutoTopUp{Own: true}
		var e enc
		c.encode(&e)
		if e.b[0] != 2 {
			t.Fatalf("record version %d, want 2", e.b[0])
		}
		var got Customer
		d := dec{b: e.b}
		got.decode(&d)
		if d.err != nil || got != c {
			t.Fatalf("decoded %+v (%v), want %+v", got, d.err, c)
		}
	})
	t.Run("an unknown version is refused", func(t *testing.T) {
		raw := v1CustomerRecord(&base)
		raw[0] = 3
		var got Customer
		d := dec{b: raw}
		got.decode(&d)
		if !errors.Is(d.err, ErrUnknownVersion) {
			t.Fatalf("decode: %v, want ErrUnknownVersion", d.err)
		}
	})
}
