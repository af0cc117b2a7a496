package fsm

import (
	"errors"
	"math"
	"strconv"
	"strings"
	"testing"
)

func TestParseAndFormatUnits(t *testing.T) {
	tests := []struct {
		in      string
		scale   uint8
		want    int64
		wantErr bool
	}{
		{"12.5", 2, 1250, false},
		{"12", 2, 1200, false},
		{"0.01", 2, 1, false},
		{"-3.25", 2, -325, false},
		{"0.001", 2, 0, true},
		{"1e5", 2, 0, true},
		{"", 2, 0, true},
		{".5", 2, 0, true},
		{"5.", 2, 0, true},
		{"92233720368547758.08", 2, 0, true},
		{"92233720368547758.07", 2, math.MaxInt64, false},
	}
	for _, tt := range tests {
		got, err := ParseUnits(tt.in, tt.scale)
		if (err != nil) != tt.wantErr || got != tt.want {
			t.Errorf("ParseUnits(%q, %d) = %d, %v; want %d, err %v", tt.in, tt.scale, got, err, tt.want, tt.wantErr)
		}
		if err == nil {
			if back, _ := ParseUnits(FormatUnits(got, tt.scale), tt.scale); back != got {
				t.Errorf("FormatUnits(%d) does not round-trip", got)
			}
		}
	}
	if s := FormatUnits(5, 3); s != "0.005" {
		t.Errorf("FormatUnits(5, 3) = %q", s)
	}
	if s := FormatUnits(-1250, 2); s != "-12.50" {
		t.Errorf("FormatUnits(-1250, 2) = %q", s)
	}
}

func TestCreditsForRoundsUp(t *testing.T) {
	tests := []struct {
		name     string
		quantity int64
		rate     string
		scale    uint8
		want     int64
	}{
		{"exact", 100, "0.01", 2, 100},
		{"a fraction of the smallest unit rounds up", 1, "0.001", 2, 1},
		{"rate finer than the scale rounds up", 3, "0.333", 2, 100},
		{"scale zero", 7, "1.5", 0, 11},
		{"zero quantity costs nothing", 0, "5", 2, 0},
		{"rate coarser than the scale multiplies", 2, "3", 4, 60000},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := creditsFor(tt.quantity, mustDec(tt.rate), tt.scale)
			if err != nil || got != tt.want {
				t.Fatalf("creditsFor = %d, %v; want %d", got, err, tt.want)
			}
		})
	}
	// Splitting usage never costs less than reporting it at once.
	whole, _ := creditsFor(1000, mustDec("0.0007"), 2)
	var split int64
	for i := 0; i < 1000; i++ {
		n, _ := creditsFor(1, mustDec("0.0007"), 2)
		split += n
	}
	if split < whole {
		t.Fatalf("split %d < whole %d", split, whole)
	}
	if _, err := creditsFor(math.MaxInt64, mustDec("10"), 9); !errors.Is(err, ErrOverflow) {
		t.Fatalf("overflow not detected: %v", err)
	}
}

func TestMoneyForRoundsHalfEven(t *testing.T) {
	tests := []struct {
		credits int64
		price   string
		scale   uint8
		want    int64
	}{
		{100, "0.10", 2, 100_000},           // 1.00 credit × 0.10 = 0.10 USD
		{1, "0.0000005", 0, 0},              // 0.5 micro → even 0
		{3, "0.0000005", 0, 2},              // 1.5 micro → even 2
		{5, "0.0000005", 0, 2},              // 2.5 micro → even 2
		{7, "0.0000005", 0, 4},              // 3.5 micro → even 4
		{-3, "0.0000005", 0, -2},            // symmetric
		{1, "0.00000051", 0, 1},             // above half rounds up
		{123456789, "0.000000001", 9, 0},    // tiny
		{1_000_000_000, "1.25", 9, 1250000}, // 1 credit at scale 9
	}
	for _, tt := range tests {
		got, err := moneyFor(tt.credits, mustDec(tt.price), tt.scale)
		if err != nil || got != tt.want {
			t.Errorf("moneyFor(%d, %s, %d) = %d, %v; want %d", tt.credits, tt.price, tt.scale, got, err, tt.want)
		}
	}
	if _, err := moneyFor(math.MaxInt64, mustDec("1000000"), 0); !errors.Is(err, ErrOverflow) {
		t.Fatalf("overflow not detected: %v", err)
	}
}

func TestDecimalCmp(t *testing.T) {
	if mustDec("0.10").Cmp(mustDec("0.1")) != 0 || mustDec("0.2").Cmp(mustDec("0.19")) != 1 || mustDec("1").Cmp(mustDec("1.0001")) != -1 {
		t.Fatal("Cmp is wrong")
	}
}

// formatUnitsByConcatenation is FormatUnits as first written (string
// concatenation), kept as the reference AppendUnits must agree with.
func formatUnitsByConcatenation(units int64, scale uint8) string {
	neg := units < 0
	u := uint64(units)
	if neg {
		u = uint64(-units)
		if units == math.MinInt64 {
			u = 1 << 63
		}
	}
	digits := strconv.FormatUint(u, 10)
	if scale > 0 {
		if len(digits) <= int(scale) {
			digits = strings.Repeat("0", int(scale)-len(digits)+1) + digits
		}
		digits = digits[:len(digits)-int(scale)] + "." + digits[len(digits)-int(scale):]
	}
	if neg {
		return "-" + digits
	}
	return digits
}

func TestFormatUnitsAgreesWithConcatenation(t *testing.T) {
	values := []int64{0, 1, -1, 9, 10, 99, 100, 101, 12345, -12345, math.MaxInt64, math.MinInt64, math.MinInt64 + 1}
	for p := int64(1); p > 0 && p < math.MaxInt64/10; p *= 10 {
		values = append(values, p, p-1, p+1, -p, 1-p)
	}
	prefix := []byte("x=")
	for _, v := range values {
		for scale := uint8(0); scale <= 20; scale++ { // beyond MaxCreditScale too
			want := formatUnitsByConcatenation(v, scale)
			if got := FormatUnits(v, scale); got != want {
				t.Errorf("FormatUnits(%d, %d) = %q, want %q", v, scale, got, want)
			}
			if got := string(AppendUnits(prefix, v, scale)); got != "x="+want {
				t.Errorf("AppendUnits(\"x=\", %d, %d) = %q, want %q", v, scale, got, "x="+want)
			}
		}
	}
}

// credits × price past 2^128 micros is an overflow. moneyFor scales the
// 128-bit product up by ten per missing decimal place and checked the high
// word against MaxUint64/10 before each step, which let a high word of
// exactly MaxUint64/10 plus a carry wrap to zero: these products came out as
// a few hundred million dollars' worth of micros instead of an overflow, and
// a grant of them was stored with that deferred revenue.
func TestMoneyPastTwoToThe128MicrosIsAnOverflow(t *testing.T) {
	for _, tc := range []struct {
		credits     int64
		price       int64 // coefficient, scale 0
		creditScale uint8
	}{
		{270487209592265337, 1258034963774749, 0},
		{85788906763918592, 39665077893737148, 1},
		{319622584780621685, 106463805476855450, 2},
	} {
		got, err := moneyFor(tc.credits, Decimal{Coef: tc.price}, tc.creditScale)
		if err == nil {
			t.Errorf("moneyFor(%d, %d, scale %d) = %d micros, want an overflow", tc.credits, tc.price, tc.creditScale, got)
		}
	}
	h := newHarness(t)
	h.seed()
	h.ok(CreateCreditType{ID: "whole", Name: "whole credits", Scale: 0})
	h.fails(CreateGrant{ID: "g", CustomerID: "c1", CreditTypeID: "whole", Category: Paid, Amount: 270487209592265337,
		CostBasis: Decimal{Coef: 1258034963774749}, Currency: "USD"}, CodeInvalid, "amount")
}

// quantity × rate whose quotient is MaxUint64 with a remainder is an
// overflow: creditsFor rounded it up past MaxUint64 to zero, so such an
// event burned nothing and a Check allowed it, instead of being refused on
// quantity.
func TestUsageJustPastTwoToThe64CreditsIsAnOverflow(t *testing.T) {
	for _, tc := range []struct {
		quantity int64
		rate     Decimal
		scale    uint8
	}{
		{846180920812364753, Decimal{Coef: 218, Scale: 1}, 0},
		{1137985445632914967, Decimal{Coef: 1621, Scale: 2}, 0},
		{1152921504606486688, Decimal{Coef: 16000000000005, Scale: 12}, 0},
		{1152849451516127218, Decimal{Coef: 16001, Scale: 5}, 2},
	} {
		if n, err := creditsFor(tc.quantity, tc.rate, tc.scale); err == nil {
			t.Errorf("creditsFor(%d, %s, scale %d) = %d, want an overflow", tc.quantity, tc.rate, tc.scale, n)
		}
	}
	h := newHarness(t)
	h.seed()
	h.ok(CreateCreditType{ID: "gpu", Name: "GPU seconds", Scale: 0})
	h.ok(UpsertFeature{ID: "secs", Name: "seconds", CreditTypeID: "gpu", Rate: Decimal{Coef: 218, Scale: 1}})
	r := h.ok(BurnUsage{Events: []UsageEvent{{ID: "e1", CustomerID: "c1", FeatureID: "secs", Quantity: 846180920812364753}}})
	if ev := r.Value.([]EventResult)[0]; ev.Status != EventRejected || ev.Field != "quantity" {
		t.Errorf("event of 846180920812364753 seconds at 21.8 credits each: %+v, want rejected on quantity", ev)
	}
	if err := h.f.View(func(v *View) error {
		_, err := v.Check("c1", "secs", 846180920812364753, "", 0)
		return err
	}); CodeOf(err) != CodeInvalid {
		t.Errorf("Check of 846180920812364753 seconds at 21.8 credits each: %v, want invalid quantity", err)
	}
}

// credits × price whose quotient in micros is MaxUint64 and rounds up is an
// overflow: moneyFor rounded it past MaxUint64 to zero, so a purchase of
// that many credits was started at a total of 0.00 and a paid grant of them
// carried no deferred revenue.
func TestMoneyRoundedUpPastTwoToThe64MicrosIsAnOverflow(t *testing.T) {
	for _, tc := range []struct {
		credits int64
		price   Decimal
		scale   uint8
	}{
		{103459024530059179, Decimal{Coef: 1783, Scale: 5}, 2},
		{1133092387819997028, Decimal{Coef: 1628, Scale: 8}, 0},
		{1152273350846995541, Decimal{Coef: 16009, Scale: 9}, 0},
	} {
		if m, err := moneyFor(tc.credits, tc.price, tc.scale); err == nil {
			t.Errorf("moneyFor(%d, %s, scale %d) = %d micros, want an overflow", tc.credits, tc.price, tc.scale, m)
		}
	}
	h := newHarness(t)
	h.seed()
	h.ok(UpsertPlan{Plan: Plan{ID: "cheap", CreditTypeID: "ai", Currency: "USD", PricePerCredit: Decimal{Coef: 1783, Scale: 5}}})
	h.ok(UpsertCustomer{ID: "c1", PlanID: "cheap"})
	h.fails(StartPurchase{ID: "p1", CustomerID: "c1", Credits: 103459024530059179}, CodeInvalid, "credits")
	h.fails(CreateGrant{ID: "g1", CustomerID: "c1", CreditTypeID: "ai", Category: Paid, Amount: 103459024530059179,
		CostBasis: Decimal{Coef: 1783, Scale: 5}, Currency: "USD"}, CodeInvalid, "amount")
}
