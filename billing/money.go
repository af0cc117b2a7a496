package billing

import (
	"fmt"
	"math/big"
	"sort"
	"strings"
)

// moneyScale is fsm.MoneyScale: money is int64 micros of the currency unit.
const moneyScale = 6

// minorUnitExponent is how many decimal places a currency's smallest unit
// has at the providers (ISO 4217 minor units, as Stripe uses them). Currencies
// not listed have two.
var minorUnitExponent = map[string]int{
	// zero-decimal
	"BIF": 0, "CLP": 0, "DJF": 0, "GNF": 0, "JPY": 0, "KMF": 0, "KRW": 0, "MGA": 0,
	"PYG": 0, "RWF": 0, "UGX": 0, "VND": 0, "VUV": 0, "XAF": 0, "XOF": 0, "XPF": 0,
	// three-decimal
	"BHD": 3, "JOD": 3, "KWD": 3, "OMR": 3, "TND": 3,
}

// exponentOf returns the minor-unit exponent of a currency. It is a function
// over a map literal rather than global state that callers could change.
func exponentOf(currency string) int {
	if e, ok := minorUnitExponent[strings.ToUpper(currency)]; ok {
		return e
	}
	return 2
}

// minorUnitStep is the multiple of minor units a charge must be at Stripe,
// for the currencies where it is not 1: three-decimal amounts must end in 0,
// and ISK, two-decimal in the API, takes whole krónur only
// (https://docs.stripe.com/currencies).
func minorUnitStep(currency string) int64 {
	switch strings.ToUpper(currency) {
	case "BHD", "JOD", "KWD", "OMR", "TND":
		return 10
	case "ISK":
		return 100
	}
	return 1
}

func pow10(n int) int64 {
	p := int64(1)
	for range n {
		p *= 10
	}
	return p
}

// MicrosToMinor converts money micros to the currency's smallest unit,
// rounding half to even (the rounding fsm uses for money) to a multiple of
// the currency's step at Stripe, so 1.234567 USD is charged as 123 cents,
// 0.125 USD as 12, and 1.2345 KWD as 1230 fils.
func MicrosToMinor(micros int64, currency string) (int64, error) {
	if micros < 0 {
		return 0, fmt.Errorf("amount %d micros is negative", micros)
	}
	step := minorUnitStep(currency)
	div := pow10(moneyScale-exponentOf(currency)) * step
	q, r := micros/div, micros%div
	switch {
	case 2*r > div, 2*r == div && q%2 == 1:
		q++
	}
	return q * step, nil
}

// MinorToMicros converts an amount in the currency's smallest unit to micros.
func MinorToMicros(minor int64, currency string) (int64, error) {
	if minor < 0 {
		return 0, fmt.Errorf("amount %d is negative", minor)
	}
	mul := pow10(moneyScale - exponentOf(currency))
	if minor > (1<<63-1)/mul {
		return 0, fmt.Errorf("amount %d %s overflows micros", minor, currency)
	}
	return minor * mul, nil
}

// refundRevocation is the credits one refund revokes.
type refundRevocation struct {
	RefundID string
	Credits  int64
}

// RevocationsForRefunds decides how many credits each refund of a purchase
// revokes. A refund revokes in proportion to the money it returns:
//
//	revoked(i) = ⌊credits × min(total, H + R(i)) / total⌋ − ⌊credits × min(total, H + R(i−1)) / total⌋
//
// where R(i) is the money refunded by refund i and all refunds before it
// (ordered by creation time, then id), and H (heldMinor) the money of the
// charge's disputes that hold funds, which comes first on the running total
// (heldDisputeShares). Taking the difference of floors of the running total,
// instead of rounding each refund on its own, means partial refunds and
// disputes that add up to the whole purchase revoke exactly the whole grant,
// in whichever order they come, and each refund's share is fixed once the
// money before it is known. Refunds that do not count (failed, canceled)
// revoke nothing. totalMinor is the purchase total in the charge's minor
// units (what the provider charged).
func RevocationsForRefunds(credits, totalMinor, heldMinor int64, refunds []Refund) ([]refundRevocation, error) {
	if credits < 0 {
		return nil, fmt.Errorf("credits %d is negative", credits)
	}
	if totalMinor <= 0 {
		return nil, fmt.Errorf("purchase total %d must be positive to refund against", totalMinor)
	}
	if heldMinor < 0 {
		return nil, fmt.Errorf("disputed money %d is negative", heldMinor)
	}
	rs := append([]Refund(nil), refunds...)
	sort.Slice(rs, func(i, j int) bool {
		if rs[i].Created != rs[j].Created {
			return rs[i].Created < rs[j].Created
		}
		return rs[i].ID < rs[j].ID
	})
	share := func(refunded int64) int64 { return creditsForMinor(credits, totalMinor, refunded) }
	out := make([]refundRevocation, 0, len(rs))
	cum := min(heldMinor, totalMinor)
	for _, r := range rs {
		if r.ID == "" {
			return nil, fmt.Errorf("refund without an id")
		}
		if !r.Counts {
			continue
		}
		if r.AmountMinor < 0 {
			return nil, fmt.Errorf("refund %s: amount %d is negative", r.ID, r.AmountMinor)
		}
		before := share(cum)
		cum += r.AmountMinor
		if cum < 0 || cum > totalMinor {
			cum = totalMinor
		}
		out = append(out, refundRevocation{RefundID: r.ID, Credits: share(cum) - before})
	}
	return out, nil
}

// disputeRevocation is the credits one dispute holding funds revokes.
type disputeRevocation struct {
	DisputeID string
	Credits   int64
}

// heldDisputeShares decides the credits each dispute that holds funds
// revokes when the charge's money is counted in one order, disputes first
// (by creation time, then id), then refunds (RevocationsForRefunds with the
// disputes' money, returned as heldMinor, first):
//
//	revoked(j) = ⌊credits × min(total, D(j)) / total⌋ − ⌊credits × min(total, D(j−1)) / total⌋
//
// A dispute's first revocation is made on the money counted before it
// (DisputeShare); this order is the one every later reckoning of the charge
// uses, so that what the charge's movements revoke adds up to the whole.
func heldDisputeShares(credits, totalMinor int64, held []Dispute) (shares []disputeRevocation, heldMinor int64, err error) {
	if credits < 0 {
		return nil, 0, fmt.Errorf("credits %d is negative", credits)
	}
	if totalMinor <= 0 {
		return nil, 0, fmt.Errorf("purchase total %d must be positive to dispute against", totalMinor)
	}
	ds := append([]Dispute(nil), held...)
	sort.Slice(ds, func(i, j int) bool {
		if ds[i].Created != ds[j].Created {
			return ds[i].Created < ds[j].Created
		}
		return ds[i].ID < ds[j].ID
	})
	share := func(minor int64) int64 { return creditsForMinor(credits, totalMinor, minor) }
	for _, d := range ds {
		if d.AmountMinor < 0 {
			return nil, 0, fmt.Errorf("dispute %s: amount %d is negative", d.ID, d.AmountMinor)
		}
		before := share(heldMinor)
		heldMinor += d.AmountMinor
		if heldMinor < 0 || heldMinor > totalMinor {
			heldMinor = totalMinor
		}
		shares = append(shares, disputeRevocation{DisputeID: d.ID, Credits: share(heldMinor) - before})
	}
	return shares, heldMinor, nil
}

// DisputeShare is the credits a dispute revokes: its money's share of the
// purchase taken, like a refund's, on the running total after the charge's
// refunds, so that refunds and a dispute of the rest revoke exactly the
// whole grant:
//
//	⌊credits × min(total, refunded + disputed) / total⌋ − ⌊credits × min(total, refunded) / total⌋
//
// refundedMinor is what the charge's counting refunds returned; amounts are
// in the charge's minor units.
func DisputeShare(credits, totalMinor, refundedMinor, disputedMinor int64) (int64, error) {
	switch {
	case credits < 0:
		return 0, fmt.Errorf("credits %d is negative", credits)
	case totalMinor <= 0:
		return 0, fmt.Errorf("purchase total %d must be positive to dispute against", totalMinor)
	case refundedMinor < 0 || disputedMinor < 0:
		return 0, fmt.Errorf("refunded %d or disputed %d is negative", refundedMinor, disputedMinor)
	}
	share := func(minor int64) int64 { return creditsForMinor(credits, totalMinor, minor) }
	refunded := min(refundedMinor, totalMinor)
	after := totalMinor
	if disputedMinor < totalMinor-refunded {
		after = refunded + disputedMinor
	}
	return share(after) - share(refunded), nil
}

// creditsForMinor is ⌊credits × minor / totalMinor⌋, all of them from minor
// ≥ totalMinor on: the credits that minor units of a purchase's money paid
// for. Computed in big integers (credits × minor can pass int64); the
// result is at most credits.
func creditsForMinor(credits, totalMinor, minor int64) int64 {
	if minor >= totalMinor {
		return credits
	}
	var n big.Int
	n.Mul(big.NewInt(credits), big.NewInt(minor))
	n.Quo(&n, big.NewInt(totalMinor)) // both non-negative: Quo is floor
	return n.Int64()
}
