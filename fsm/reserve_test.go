package fsm

import (
	"fmt"
	"strings"
	"testing"
	"time"
)

func TestReservations(t *testing.T) {
	t.Run("twenty concurrent reservations of 75 against 500 grant exactly six", func(t *testing.T) {
		h := newHarness(t)
		h.seed()
		h.promo("p", 500)
		cmds := make([]Command, 20)
		for i := range cmds {
			cmds[i] = Reserve{ID: fmt.Sprintf("r%d", i), CustomerID: "c1", CreditTypeID: "ai", Credits: 75}
		}
		held := 0
		for _, r := range h.apply(cmds...) {
			switch {
			case r.Err == nil:
				held++
			case CodeOf(r.Err) != CodeInsufficient:
				t.Fatalf("unexpected error %v", r.Err)
			}
		}
		if held != 6 {
			t.Fatalf("%d reservations held, want 6", held)
		}
		if b := h.balance("c1", "ai"); b.Reserved != 450 || b.Available != 50 || b.Balance != 500 {
			t.Fatalf("%+v", b)
		}
	})
	t.Run("settle burns the actual amount and frees the rest", func(t *testing.T) {
		h := newHarness(t)
		h.seed()
		h.promo("p", 500)
		h.ok(Reserve{ID: "r1", CustomerID: "c1", FeatureID: "tokens", Quantity: 200}) // 2.00 credits = 200 units
		r := h.ok(Settle{ReservationID: "r1", Quantity: 150}).Value.(*Reservation)
		if r.Status != ReservationSettled || r.SettledAmount != 150 {
			t.Fatalf("%+v", r)
		}
		if b := h.balance("c1", "ai"); b.Reserved != 0 || b.Balance != 350 || b.Available != 350 {
			t.Fatalf("%+v", b)
		}
		if again := h.ok(Settle{ReservationID: "r1", Quantity: 150}); !again.Duplicate {
			t.Fatal("settling twice applied twice")
		}
		if b := h.balance("c1", "ai"); b.Balance != 350 {
			t.Fatalf("%+v", b)
		}
		h.fails(Release{ReservationID: "r1"}, CodeFailedPrecondition, "reservation_id")
	})
	t.Run("a second settle for another amount is a conflict, not a duplicate", func(t *testing.T) {
		h := newHarness(t)
		h.seed()
		h.promo("p", 500)
		h.ok(Reserve{ID: "r1", CustomerID: "c1", CreditTypeID: "ai", Credits: 400})
		h.ok(Settle{ReservationID: "r1", Credits: 100, UseCredits: true})
		e := h.fails(Settle{ReservationID: "r1", Credits: 300, UseCredits: true}, CodeConflict, "credits")
		if !strings.Contains(e.Msg, "settled for 1.00 credits; this settle asks for 3.00") {
			t.Errorf("message %q does not say both amounts", e.Msg)
		}
		if again := h.ok(Settle{ReservationID: "r1", Credits: 100, UseCredits: true}); !again.Duplicate {
			t.Error("the same settle again is not a duplicate")
		}
		h.ok(Reserve{ID: "r2", CustomerID: "c1", FeatureID: "tokens", Quantity: 50})
		h.ok(Settle{ReservationID: "r2", Quantity: 20})
		h.fails(Settle{ReservationID: "r2", Quantity: 30}, CodeConflict, "quantity")
		h.fails(Settle{ReservationID: "r2", Credits: 20, Quantity: 20, UseCredits: true}, CodeInvalid, "quantity")
		if b := h.balance("c1", "ai"); b.Balance != 380 || b.Reserved != 0 {
			t.Fatalf("refused settles changed the pool: %+v", b)
		}
	})
	t.Run("settle above the hold only if available covers the difference", func(t *testing.T) {
		h := newHarness(t)
		h.seed()
		h.promo("p", 500)
		h.ok(Reserve{ID: "r1", CustomerID: "c1", CreditTypeID: "ai", Credits: 400})
		e := h.fails(Settle{ReservationID: "r1", Credits: 501, UseCredits: true}, CodeInsufficient, "")
		if e.Available != 100 || e.Needed != 101 {
			t.Fatalf("%+v", e)
		}
		h.ok(Settle{ReservationID: "r1", Credits: 500, UseCredits: true})
		if b := h.balance("c1", "ai"); b.Balance != 0 || b.Reserved != 0 {
			t.Fatalf("%+v", b)
		}
	})
	t.Run("release frees all, twice applies once", func(t *testing.T) {
		h := newHarness(t)
		h.seed()
		h.promo("p", 500)
		h.ok(Reserve{ID: "r1", CustomerID: "c1", CreditTypeID: "ai", Credits: 400})
		h.ok(Release{ReservationID: "r1"})
		if r := h.ok(Release{ReservationID: "r1"}); !r.Duplicate {
			t.Fatal("not a duplicate")
		}
		if b := h.balance("c1", "ai"); b.Available != 500 || b.Reserved != 0 {
			t.Fatalf("%+v", b)
		}
		h.fails(Settle{ReservationID: "r1", Credits: 1, UseCredits: true}, CodeFailedPrecondition, "reservation_id")
	})
	t.Run("tick frees holds past their TTL", func(t *testing.T) {
		h := newHarness(t)
		h.seed()
		h.promo("p", 500)
		h.ok(Reserve{ID: "r1", CustomerID: "c1", CreditTypeID: "ai", Credits: 400, TTL: time.Minute})
		h.after(time.Minute)
		h.fails(Settle{ReservationID: "r1", Credits: 1, UseCredits: true}, CodeFailedPrecondition, "reservation_id")
		h.ok(Tick{})
		if b := h.balance("c1", "ai"); b.Reserved != 0 || b.Available != 500 {
			t.Fatalf("%+v", b)
		}
		var r Reservation
		h.f.View(func(v *View) (err error) { r, err = v.Reservation("r1"); return })
		if r.Status != ReservationExpired {
			t.Fatalf("%+v", r)
		}
	})
	t.Run("reserve is idempotent by id", func(t *testing.T) {
		h := newHarness(t)
		h.seed()
		h.promo("p", 500)
		c := Reserve{ID: "r1", CustomerID: "c1", CreditTypeID: "ai", Credits: 100}
		h.ok(c)
		if r := h.ok(c); !r.Duplicate {
			t.Fatal("not a duplicate")
		}
		if b := h.balance("c1", "ai"); b.Reserved != 100 {
			t.Fatalf("%+v", b)
		}
		c.Credits = 101
		h.fails(c, CodeConflict, "id")
	})
	t.Run("validation", func(t *testing.T) {
		h := newHarness(t)
		h.seed()
		h.promo("p", 500)
		h.fails(Reserve{ID: "r1", CustomerID: "c1", CreditTypeID: "ai", Credits: 100, TTL: 25 * time.Hour}, CodeInvalid, "ttl")
		h.fails(Reserve{ID: "r1", CustomerID: "c1", CreditTypeID: "ai", Credits: 0}, CodeInvalid, "credits")
		h.fails(Reserve{ID: "r1", CustomerID: "c1", FeatureID: "tokens", Quantity: 0}, CodeInvalid, "quantity")
		h.fails(Reserve{ID: "r1", CustomerID: "zz", CreditTypeID: "ai", Credits: 1}, CodeNotFound, "customer_id")
		h.fails(Reserve{ID: "r1", CustomerID: "c1", CreditTypeID: "ai", Credits: 501}, CodeInsufficient, "")
		h.fails(Settle{ReservationID: "nope"}, CodeNotFound, "reservation_id")
		h.fails(Release{ReservationID: ""}, CodeInvalid, "reservation_id")
	})
}
