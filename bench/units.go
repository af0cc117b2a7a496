package bench

import (
	"fmt"
	"math"
	"strings"
)

// parseUnits reads a decimal amount in a credit type of the given scale
// ("12.5" at scale 2 is 1250) as the server writes it. Amounts are int64
// units, as everywhere in creditd: no floats near money.
func parseUnits(s string, scale uint8) (int64, error) {
	if s == "" {
		return 0, nil
	}
	neg := false
	if s[0] == '-' {
		neg, s = true, s[1:]
	}
	whole, frac, hasDot := strings.Cut(s, ".")
	if whole == "" || (hasDot && frac == "") || len(frac) > int(scale) {
		return 0, fmt.Errorf("amount %q: not a decimal of scale %d", s, scale)
	}
	var v int64
	add := func(d byte) error {
		if d < '0' || d > '9' {
			return fmt.Errorf("amount %q: bad digit %q", s, d)
		}
		if v > (math.MaxInt64-int64(d-'0'))/10 {
			return fmt.Errorf("amount %q: overflows int64 units", s)
		}
		v = v*10 + int64(d-'0')
		return nil
	}
	for i := 0; i < len(whole); i++ {
		if err := add(whole[i]); err != nil {
			return 0, err
		}
	}
	for i := 0; i < int(scale); i++ {
		d := byte('0')
		if i < len(frac) {
			d = frac[i]
		}
		if err := add(d); err != nil {
			return 0, err
		}
	}
	if neg {
		v = -v
	}
	return v, nil
}

// formatUnits writes units of a credit type of the given scale as a decimal.
func formatUnits(v int64, scale uint8) string {
	neg := v < 0
	u := uint64(v)
	if neg {
		u = uint64(-v)
	}
	s := fmt.Sprintf("%0*d", int(scale)+1, u)
	if scale > 0 {
		s = s[:len(s)-int(scale)] + "." + s[len(s)-int(scale):]
	}
	if neg {
		s = "-" + s
	}
	return s
}
