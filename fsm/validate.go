package fsm

import (
	"strings"
	"unicode/utf8"
)

// MaxAmount bounds any single amount of credits (in units) or money (in
// micros), so that sums of many stay far from int64's edge.
const MaxAmount = int64(1) << 60

// ValidID reports whether s is a valid id: 1..MaxIDLen of [A-Za-z0-9._:-].
func ValidID(s string) bool {
	if len(s) == 0 || len(s) > MaxIDLen {
		return false
	}
	for i := 0; i < len(s); i++ {
		c := s[i]
		switch {
		case c >= 'a' && c <= 'z', c >= 'A' && c <= 'Z', c >= '0' && c <= '9', c == '.', c == '_', c == ':', c == '-':
		default:
			return false
		}
	}
	return true
}

// PurchaseGrantPrefix starts the id of the grant a purchase creates: the
// purchase's id follows it. CreateGrant refuses ids that begin with it, or a
// grant made by hand could take a purchase's grant id before the purchase
// succeeds, and the paid purchase could then never complete.
const PurchaseGrantPrefix = "purchase:"

// AutoPurchasePrefix starts the id of a purchase an automatic top-up starts
// ("auto-<log index>-<command>-<event>"). StartPurchase refuses ids that
// begin with it: a top-up would otherwise find its id taken.
const AutoPurchasePrefix = "auto-"

// ValidGrantID reports whether s can name a grant: a valid id, or the id of
// a purchase's grant, which is longer than MaxIDLen when the purchase's id
// is within PurchaseGrantPrefix of it.
func ValidGrantID(s string) bool {
	if rest, ok := strings.CutPrefix(s, PurchaseGrantPrefix); ok && len(s) > MaxIDLen {
		return ValidID(rest)
	}
	return ValidID(s)
}

// checkGrantID checks a reference to an existing grant (ValidGrantID).
func checkGrantID(field, s string) *Error {
	switch {
	case s == "":
		return invalid(field, "is required")
	case !ValidGrantID(s):
		return invalid(field, "must be 1 to %d characters of A-Z a-z 0-9 . _ : -, or %q and a purchase's id", MaxIDLen, PurchaseGrantPrefix)
	}
	return nil
}

func checkID(field, s string) *Error {
	if s == "" {
		return invalid(field, "is required")
	}
	if !ValidID(s) {
		return invalid(field, "must be 1 to %d characters of A-Z a-z 0-9 . _ : -", MaxIDLen)
	}
	return nil
}

func checkOptionalID(field, s string) *Error {
	if s == "" {
		return nil
	}
	return checkID(field, s)
}

func checkText(field, s string, max int) *Error {
	if len(s) > max {
		return invalid(field, "is longer than %d bytes", max)
	}
	if !utf8.ValidString(s) {
		return invalid(field, "is not valid UTF-8")
	}
	return nil
}

func checkAmount(field string, v int64, allowZero bool) *Error {
	if v < 0 || (!allowZero && v == 0) {
		if allowZero {
			return invalid(field, "must not be negative")
		}
		return invalid(field, "must be positive")
	}
	if v > MaxAmount {
		return invalid(field, "is larger than %d", MaxAmount)
	}
	return nil
}

func checkCurrency(field, s string) *Error {
	if len(s) != 3 {
		return invalid(field, "must be a 3-letter ISO 4217 code in upper case")
	}
	for i := 0; i < 3; i++ {
		if s[i] < 'A' || s[i] > 'Z' {
			return invalid(field, "must be a 3-letter ISO 4217 code in upper case")
		}
	}
	return nil
}

func checkDecimal(field string, d Decimal) *Error {
	if d.Coef < 0 {
		return invalid(field, "must not be negative")
	}
	if d.Scale > MaxDecimalScale {
		return invalid(field, "has more than %d decimal places", MaxDecimalScale)
	}
	if d.Coef > MaxAmount {
		return invalid(field, "is too large")
	}
	return nil
}

// firstErr returns the first non-nil error, so checks read as a list.
func firstErr(errs ...*Error) error {
	for _, e := range errs {
		if e != nil {
			return e
		}
	}
	return nil
}
