package billing

import "testing"

func TestMicrosToMinorRoundsHalfToEven(t *testing.T) {
	tests := []struct {
		name     string
		micros   int64
		currency string
		want     int64
	}{
		{"whole dollars", 12_000_000, "USD", 1200},
		{"below half a cent rounds down", 1_234_567, "USD", 123},
		{"half a cent rounds to the even cent (down)", 125_000, "USD", 12},
		{"half a cent rounds to the even cent (up)", 135_000, "USD", 14},
		{"above half a cent rounds up", 1_235_001, "USD", 124},
		{"yen have no minor unit", 1_500_000, "JPY", 2},
		{"dinars have three decimals, charged in tens of fils", 1_234_567, "KWD", 1230},
		{"half a step of ten fils rounds to the even ten", 1_235_000, "BHD", 1240},
		{"krónur are two-decimal at Stripe but whole only", 12_345_678, "ISK", 1200},
		{"half a króna rounds to the even króna", 12_500_000, "ISK", 1200},
		{"lower-case currency codes work", 2_000_000, "jpy", 2},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			got, err := MicrosToMinor(tc.micros, tc.currency)
			if err != nil || got != tc.want {
				t.Fatalf("MicrosToMinor(%d, %s) = %d, %v; want %d", tc.micros, tc.currency, got, err, tc.want)
			}
		})
	}
	if _, err := MicrosToMinor(-1, "USD"); err == nil {
		t.Fatal("negative micros accepted")
	}
	if got, _ := MinorToMicros(123, "USD"); got != 1_230_000 {
		t.Fatalf("MinorToMicros(123 USD) = %d", got)
	}
	if _, err := MinorToMicros(1<<62, "JPY"); err == nil {
		t.Fatal("overflow accepted")
	}
}

func TestRevocationsForRefunds(t *testing.T) {
	r := func(id string, amount int64, created int64) Refund {
		return Refund{ID: id, AmountMinor: amount, Counts: true, Created: created}
	}
	tests := []struct {
		name       string
		credits    int64
		totalMinor int64
		heldMinor  int64
		refunds    []Refund
		want       map[string]int64
	}{
		{"a full refund revokes the whole grant", 1000, 5000, 0, []Refund{r("re_1", 5000, 1)}, map[string]int64{"re_1": 1000}},
		{"a half refund revokes half", 1000, 5000, 0, []Refund{r("re_1", 2500, 1)}, map[string]int64{"re_1": 500}},
		{"a share that is not whole rounds down", 10, 3, 0, []Refund{r("re_1", 1, 1)}, map[string]int64{"re_1": 3}},
		{"thirds add up to the whole grant", 10, 3, 0,
			[]Refund{r("re_1", 1, 1), r("re_2", 1, 2), r("re_3", 1, 3)},
			map[string]int64{"re_1": 3, "re_2": 3, "re_3": 4}},
		{"order is by creation time, not input order", 10, 3, 0,
			[]Refund{r("re_3", 1, 3), r("re_1", 1, 1), r("re_2", 1, 2)},
			map[string]int64{"re_1": 3, "re_2": 3, "re_3": 4}},
		{"failed refunds revoke nothing", 1000, 5000, 0,
			[]Refund{{ID: "re_f", AmountMinor: 5000, Created: 1}, r("re_2", 1000, 2)},
			map[string]int64{"re_2": 200}},
		{"refunds beyond the total are capped", 1000, 5000, 0,
			[]Refund{r("re_1", 4000, 1), r("re_2", 4000, 2)}, map[string]int64{"re_1": 800, "re_2": 200}},
		{"huge products do not overflow", 1 << 60, 1 << 40, 0, []Refund{r("re_1", 1<<39, 1)},
			map[string]int64{"re_1": 1 << 59}},
		{"money a dispute holds comes first: a refund of the rest revokes the rest of the grant", 1000, 3000, 1000,
			[]Refund{r("re_1", 2000, 1)}, map[string]int64{"re_1": 667}},
		{"a dispute of the whole charge leaves refunds nothing to revoke", 1000, 3000, 3000,
			[]Refund{r("re_1", 1000, 1)}, map[string]int64{"re_1": 0}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			got, err := RevocationsForRefunds(tc.credits, tc.totalMinor, tc.heldMinor, tc.refunds)
			if err != nil {
				t.Fatal(err)
			}
			if len(got) != len(tc.want) {
				t.Fatalf("got %+v, want %v", got, tc.want)
			}
			for _, g := range got {
				if tc.want[g.RefundID] != g.Credits {
					t.Fatalf("refund %s revokes %d, want %d (all: %+v)", g.RefundID, g.Credits, tc.want[g.RefundID], got)
				}
			}
		})
	}
	if _, err := RevocationsForRefunds(10, 0, 0, nil); err == nil {
		t.Fatal("zero total accepted")
	}
}

func TestDisputeShare(t *testing.T) {
	tests := []struct {
		name                               string
		credits, total, refunded, disputed int64
		want                               int64
	}{
		{"a dispute of the whole charge revokes the whole grant", 1000, 5000, 0, 5000, 1000},
		{"a partial dispute revokes its share", 1000, 5000, 0, 1500, 300},
		{"a share that is not whole rounds down", 10, 3, 0, 1, 3},
		{"after a refund, a dispute of the rest revokes the rest: 333 refunded, then 667", 1000, 999, 333, 666, 667},
		{"a dispute larger than what refunds left is capped", 1000, 1000, 400, 1000, 600},
		{"refunds of the whole charge leave nothing to dispute", 1000, 1000, 1000, 500, 0},
		{"a dispute of nothing revokes nothing", 1000, 1000, 0, 0, 0},
		{"huge products do not overflow", 1 << 60, 1 << 40, 0, 1 << 39, 1 << 59},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			got, err := DisputeShare(tc.credits, tc.total, tc.refunded, tc.disputed)
			if err != nil || got != tc.want {
				t.Fatalf("DisputeShare(%d, %d, %d, %d) = %d, %v; want %d", tc.credits, tc.total, tc.refunded, tc.disputed, got, err, tc.want)
			}
		})
	}
	if _, err := DisputeShare(10, 0, 0, 1); err == nil {
		t.Fatal("zero total accepted")
	}
}

func TestHeldDisputeSharesComeFirstOnTheRunningTotal(t *testing.T) {
	d := func(id string, amount, created int64) Dispute {
		return Dispute{ID: id, AmountMinor: amount, Created: created, HoldsFunds: true}
	}
	shares, held, err := heldDisputeShares(1000, 3000, []Dispute{d("dp_2", 1000, 2), d("dp_1", 1000, 1)})
	if err != nil {
		t.Fatal(err)
	}
	if held != 2000 || len(shares) != 2 || shares[0] != (disputeRevocation{"dp_1", 333}) || shares[1] != (disputeRevocation{"dp_2", 333}) {
		t.Fatalf("shares %+v, held %d; want dp_1 then dp_2, 333 each, on 2000 held", shares, held)
	}
	revs, err := RevocationsForRefunds(1000, 3000, held, []Refund{{ID: "re_1", AmountMinor: 1000, Counts: true}})
	if err != nil || len(revs) != 1 || revs[0].Credits != 334 {
		t.Fatalf("refund of the rest after the disputes = %+v, %v; want 334, so the three revoke the whole 1000", revs, err)
	}
	if shares, held, err := heldDisputeShares(1000, 3000, []Dispute{d("dp_1", 5000, 1)}); err != nil || held != 3000 ||
		shares[0].Credits != 1000 {
		t.Fatalf("a dispute beyond the total = %+v, %d, %v; want capped at the whole grant", shares, held, err)
	}
}
