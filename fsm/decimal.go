package fsm

import (
	"errors"
	"math"
	"math/bits"
	"strconv"
	"strings"
)

// MoneyScale is the number of decimal places of every currency amount:
// money is int64 micros of the currency unit.
const MoneyScale = 6

// MaxDecimalScale bounds the scale of rates and prices so that every product
// fits 128-bit intermediate arithmetic.
const MaxDecimalScale = 12

// MaxCreditScale bounds a credit type's scale.
const MaxCreditScale = 9

// ErrOverflow reports an arithmetic result outside int64.
var ErrOverflow = errors.New("arithmetic overflow")

// Decimal is an exact non-negative decimal: Coef × 10^-Scale.
type Decimal struct {
	Coef  int64
	Scale uint8
}

// IsZero reports whether d is zero.
func (d Decimal) IsZero() bool { return d.Coef == 0 }

// String formats d without exponent, trimming nothing: "0.0010" keeps its scale.
func (d Decimal) String() string {
	return FormatUnits(d.Coef, d.Scale)
}

// Cmp compares two decimals exactly.
func (d Decimal) Cmp(o Decimal) int {
	a, b := d, o
	// Bring both to the larger scale in 128 bits.
	ah, al := scaleUp128(uint64(a.Coef), int(maxU8(a.Scale, b.Scale)-a.Scale))
	bh, bl := scaleUp128(uint64(b.Coef), int(maxU8(a.Scale, b.Scale)-b.Scale))
	switch {
	case ah != bh:
		if ah < bh {
			return -1
		}
		return 1
	case al < bl:
		return -1
	case al > bl:
		return 1
	}
	return 0
}

func maxU8(a, b uint8) uint8 {
	if a > b {
		return a
	}
	return b
}

var pow10 = [...]uint64{1, 10, 100, 1e3, 1e4, 1e5, 1e6, 1e7, 1e8, 1e9, 1e10, 1e11, 1e12,
	1e13, 1e14, 1e15, 1e16, 1e17, 1e18, 1e19}

func scaleUp128(v uint64, k int) (hi, lo uint64) {
	hi, lo = 0, v
	for k > 0 {
		step := k
		if step > 19 {
			step = 19
		}
		h1, l1 := bits.Mul64(lo, pow10[step])
		h2, _ := bits.Mul64(hi, pow10[step])
		hi, lo = h1+h2, l1
		k -= step
	}
	return hi, lo
}

// ParseDecimal parses a plain decimal string such as "0.0025" with at most
// maxScale fractional digits. Negative numbers, exponents and signs are refused.
func ParseDecimal(s string, maxScale uint8) (Decimal, error) {
	units, scale, err := parseUnsigned(s, maxScale)
	if err != nil {
		return Decimal{}, err
	}
	return Decimal{Coef: units, Scale: scale}, nil
}

func parseUnsigned(s string, maxScale uint8) (int64, uint8, error) {
	if s == "" {
		return 0, 0, errors.New("empty number")
	}
	if len(s) > 40 {
		return 0, 0, errors.New("number too long")
	}
	intPart, frac, hasDot := strings.Cut(s, ".")
	if intPart == "" || (hasDot && frac == "") {
		return 0, 0, errors.New("malformed number " + strconv.Quote(s))
	}
	if len(frac) > int(maxScale) {
		return 0, 0, errors.New("too many decimal places in " + strconv.Quote(s) + " (at most " + strconv.Itoa(int(maxScale)) + ")")
	}
	var v uint64
	for _, part := range []string{intPart, frac} {
		for i := 0; i < len(part); i++ {
			c := part[i]
			if c < '0' || c > '9' {
				return 0, 0, errors.New("malformed number " + strconv.Quote(s))
			}
			hi, lo := bits.Mul64(v, 10)
			lo, carry := bits.Add64(lo, uint64(c-'0'), 0)
			if hi != 0 || carry != 0 || lo > math.MaxInt64 {
				return 0, 0, ErrOverflow
			}
			v = lo
		}
	}
	return int64(v), uint8(len(frac)), nil
}

// ParseUnits parses a signed decimal amount into integer units of the given
// scale: ParseUnits("12.5", 2) = 1250. Fewer decimal places than scale are
// fine; more are an error, never rounded.
func ParseUnits(s string, scale uint8) (int64, error) {
	neg := false
	if strings.HasPrefix(s, "-") {
		neg, s = true, s[1:]
	}
	units, got, err := parseUnsigned(s, scale)
	if err != nil {
		return 0, err
	}
	hi, lo := scaleUp128(uint64(units), int(scale-got))
	if hi != 0 || lo > math.MaxInt64 {
		return 0, ErrOverflow
	}
	if neg {
		return -int64(lo), nil
	}
	return int64(lo), nil
}

// FormatUnits formats integer units of the given scale as a decimal string:
// FormatUnits(1250, 2) = "12.50".
func FormatUnits(units int64, scale uint8) string {
	var buf [24]byte
	return string(AppendUnits(buf[:0], units, scale))
}

// AppendUnits appends FormatUnits(units, scale) to b. Results carry several
// amounts per event: formatting them in place costs one allocation each
// (or none, appended to a shared buffer) where concatenation cost three.
func AppendUnits(b []byte, units int64, scale uint8) []byte {
	u := uint64(units)
	if units < 0 {
		b = append(b, '-')
		u = -u // two's complement: MinInt64 becomes 1<<63, as wanted
	}
	var digits [20]byte // MaxUint64 has 20 digits
	n := len(strconv.AppendUint(digits[:0], u, 10))
	d := digits[:n]
	if int(scale) < n {
		b = append(b, d[:n-int(scale)]...)
	} else {
		b = append(b, '0')
	}
	if scale == 0 {
		return b
	}
	b = append(b, '.')
	for i := n; i < int(scale); i++ {
		b = append(b, '0')
	}
	if int(scale) < n {
		return append(b, d[n-int(scale):]...)
	}
	return append(b, d...)
}

// creditsFor returns quantity × rate in units of a credit type of the given
// scale, rounded up: the rate is credits per unit of usage.
func creditsFor(quantity int64, rate Decimal, creditScale uint8) (int64, error) {
	if quantity < 0 {
		return 0, errors.New("negative quantity")
	}
	hi, lo := bits.Mul64(uint64(quantity), uint64(rate.Coef))
	// value in credit units = q*coef * 10^creditScale / 10^rateScale
	shift := int(creditScale) - int(rate.Scale)
	if shift >= 0 {
		for ; shift > 0; shift-- {
			h1, l1 := bits.Mul64(lo, 10)
			h2, l2 := bits.Mul64(hi, 10)
			if h2 != 0 {
				return 0, ErrOverflow
			}
			hi, lo = h1+l2, l1
			if hi < h1 {
				return 0, ErrOverflow
			}
		}
		if hi != 0 || lo > math.MaxInt64 {
			return 0, ErrOverflow
		}
		return int64(lo), nil
	}
	div := pow10[-shift]
	if hi >= div {
		return 0, ErrOverflow
	}
	q, r := bits.Div64(hi, lo, div)
	if q > math.MaxInt64 { // before rounding up: MaxUint64 + 1 is 0
		return 0, ErrOverflow
	}
	if r != 0 {
		q++
	}
	if q > math.MaxInt64 {
		return 0, ErrOverflow
	}
	return int64(q), nil
}

// moneyFor returns credits × price in money micros, rounded half-even. credits
// are units of a credit type of scale creditScale; price is per whole credit.
func moneyFor(credits int64, price Decimal, creditScale uint8) (int64, error) {
	neg := credits < 0
	c := uint64(credits)
	if neg {
		c = uint64(-credits)
	}
	hi, lo := bits.Mul64(c, uint64(price.Coef))
	// value in micros = c*coef * 10^MoneyScale / 10^(creditScale+priceScale)
	shift := MoneyScale - int(creditScale) - int(price.Scale)
	var out uint64
	if shift >= 0 {
		h, l := scaleMul(hi, lo, shift)
		if h != 0 || l > math.MaxInt64 {
			return 0, ErrOverflow
		}
		out = l
	} else {
		div := pow10[-shift]
		if hi >= div {
			return 0, ErrOverflow
		}
		q, r := bits.Div64(hi, lo, div)
		if q > math.MaxInt64 { // before rounding up: MaxUint64 + 1 is 0
			return 0, ErrOverflow
		}
		// Half-even: compare r with div−r instead of 2r with div, which
		// could overflow.
		if r > div-r || (r == div-r && q%2 == 1) {
			q++
		}
		if q > math.MaxInt64 {
			return 0, ErrOverflow
		}
		out = q
	}
	if neg {
		return -int64(out), nil
	}
	return int64(out), nil
}

// scaleMul multiplies the 128-bit hi:lo by 10^k; past 128 bits it returns
// a high word of MaxUint64, which every caller refuses.
func scaleMul(hi, lo uint64, k int) (uint64, uint64) {
	for ; k > 0; k-- {
		h1, l1 := bits.Mul64(lo, 10)
		h2, l2 := bits.Mul64(hi, 10)
		sum, carry := bits.Add64(l2, h1, 0)
		if h2 != 0 || carry != 0 {
			return math.MaxUint64, 0
		}
		hi, lo = sum, l1
	}
	return hi, lo
}

// addChecked adds two int64s and reports overflow.
func addChecked(a, b int64) (int64, error) {
	s := a + b
	if (b > 0 && s < a) || (b < 0 && s > a) {
		return 0, ErrOverflow
	}
	return s, nil
}
