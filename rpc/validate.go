package rpc

import (
	"encoding/base64"
	"errors"
	"strconv"
	"strings"
	"time"
	"unicode"
	"unicode/utf8"

	"google.golang.org/protobuf/types/known/durationpb"
	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/creditd/creditd/fsm"
	v1 "github.com/creditd/creditd/gen/creditd/v1"
)

// Limits of the API beyond those fsm enforces.
const (
	// DefaultMaxMessageBytes bounds a request message: 10,000 usage events
	// of ≈ 200 bytes each fit with room to spare. A ReportUsage batch must
	// also fit in one log entry once encoded (node's Batch.MaxBytes, 1 MiB
	// by default), which is the tighter bound for long ids.
	DefaultMaxMessageBytes = 8 << 20
	defaultPageSize        = 100
	maxPageSize            = 1000
	maxAmountText          = 40 // characters of a decimal string
	// maxBalanceGrants bounds GetBalance's grant breakdown, so a pool of
	// many small grants cannot make an answer over the send limit.
	maxBalanceGrants = 1000
	// maxBurnsListed bounds the burns one ReportUsage result lists (an event
	// can burn across any number of small grants); with it, an answer of
	// MaxEventsPerBatch results with the longest ids and amounts stays
	// within minAnswerMaxBytes. The ledger has every burn.
	maxBurnsListed = 8
	// minAnswerMaxBytes is the least an answer may carry, whatever the
	// request bound: ReportUsage answers are larger than their requests.
	minAnswerMaxBytes = 16 << 20
)

// answerMaxBytes bounds what the server sends (and a follower reads back
// from the leader it forwards to).
func (o *Options) answerMaxBytes() int {
	return max(2*o.MaxMessageBytes, minAnswerMaxBytes)
}

// Times before 2000 or after 9999 are typos, not business dates; the upper
// bound also keeps unix microseconds far inside int64.
var (
	minTime = time.Date(2000, 1, 1, 0, 0, 0, 0, time.UTC)
	maxTime = time.Date(9999, 12, 31, 23, 59, 59, 0, time.UTC)
)

func checkID(field, s string) error {
	if s == "" {
		return invalidField(field, "is required")
	}
	if !fsm.ValidID(s) {
		return invalidField(field, "must be 1 to %d characters of A-Z a-z 0-9 . _ : -", fsm.MaxIDLen)
	}
	return nil
}

// checkGrantID checks a reference to an existing grant: a purchase's grant
// id ("purchase:" and the purchase's id) can be longer than other ids.
func checkGrantID(field, s string) error {
	if s == "" {
		return invalidField(field, "is required")
	}
	if !fsm.ValidGrantID(s) {
		return invalidField(field, "must be 1 to %d characters of A-Z a-z 0-9 . _ : -, or %q and a purchase's id",
			fsm.MaxIDLen, fsm.PurchaseGrantPrefix)
	}
	return nil
}

func checkOptionalID(field, s string) error {
	if s == "" {
		return nil
	}
	return checkID(field, s)
}

// checkText checks a one-line text (a name, a reference, a status): at
// most maxLen bytes of UTF-8 and no control characters. Names and
// references end up in logs, CSV and Parquet exports and terminals, where a
// NUL, a newline or an escape sequence would forge lines or corrupt output.
func checkText(field, s string, maxLen int) error {
	return checkTextAllowing(field, s, maxLen, "")
}

// checkReason checks a free text recorded in the ledger (a reason): as
// checkText, but it may span lines and hold tabs.
func checkReason(field, s string) error {
	return checkTextAllowing(field, s, fsm.MaxReasonLen, "\n\r\t")
}

func checkTextAllowing(field, s string, maxLen int, allowed string) error {
	if len(s) > maxLen {
		return invalidField(field, "is longer than %d bytes", maxLen)
	}
	if !utf8.ValidString(s) {
		return invalidField(field, "is not valid UTF-8")
	}
	for i, r := range s {
		if unicode.IsControl(r) && !strings.ContainsRune(allowed, r) {
			return invalidField(field, "holds the control character %U at byte %d", r, i)
		}
	}
	return nil
}

func checkCurrency(field, s string) error {
	if len(s) != 3 || strings.ToUpper(s) != s || strings.IndexFunc(s, func(r rune) bool { return r < 'A' || r > 'Z' }) >= 0 {
		return invalidField(field, "must be a 3-letter ISO 4217 code in upper case, like USD")
	}
	return nil
}

// parseAmount parses a non-negative credit amount in the given scale. An
// empty string is zero when optional.
func parseAmount(field, s string, scale uint8, optional, allowZero bool) (int64, error) {
	return parseUnsigned(field, s, s, scale, optional, allowZero)
}

// parseUnsigned is parseAmount of s, whose errors quote sent (s is sent
// without its sign when the caller may send one).
func parseUnsigned(field, s, sent string, scale uint8, optional, allowZero bool) (int64, error) {
	if s == "" {
		if optional {
			return 0, nil
		}
		return 0, invalidField(field, "is required")
	}
	if len(s) > maxAmountText {
		return 0, invalidField(field, "is longer than %d characters", maxAmountText)
	}
	if strings.HasPrefix(s, "-") {
		return 0, invalidField(field, "must not be negative")
	}
	v, err := fsm.ParseUnits(s, scale)
	if err != nil {
		if errors.Is(err, fsm.ErrOverflow) {
			return 0, invalidField(field, "is too large")
		}
		return 0, decimalError(field, s, sent, scale, fsm.FormatUnits(1250*pow10(scale)/100, scale))
	}
	if v > fsm.MaxAmount {
		return 0, invalidField(field, "is too large (at most %s)", fsm.FormatUnits(fsm.MaxAmount, scale))
	}
	if v == 0 && !allowZero {
		return 0, invalidField(field, "must be positive")
	}
	return v, nil
}

// checkAmountText checks an amount of credits whose scale is unknown: it
// must be one parseAmount could accept for some credit type scale.
func checkAmountText(field, s string) error {
	switch {
	case s == "":
		return invalidField(field, "is required")
	case len(s) > maxAmountText:
		return invalidField(field, "is longer than %d characters", maxAmountText)
	case strings.HasPrefix(s, "-"):
		return invalidField(field, "must not be negative")
	}
	d, err := fsm.ParseDecimal(s, fsm.MaxCreditScale)
	switch {
	case errors.Is(err, fsm.ErrOverflow):
		return invalidField(field, "is too large")
	case err != nil:
		return decimalError(field, s, s, fsm.MaxCreditScale, "12.5")
	case d.Coef > fsm.MaxAmount:
		// units ≥ coefficient in any scale that takes its decimals
		return invalidField(field, "is too large")
	}
	return nil
}

// parseSignedAmount parses a non-zero credit amount that may be negative
// ("-12.5") or carry an explicit plus sign ("+12.5").
func parseSignedAmount(field, s string, scale uint8) (int64, error) {
	sent, neg := s, false
	switch {
	case s == "-" || s == "+":
		return 0, invalidField(field, "is a sign without digits")
	case strings.HasPrefix(s, "-"):
		neg, s = true, s[1:]
	case strings.HasPrefix(s, "+"):
		s = s[1:]
	}
	if strings.HasPrefix(s, "-") || strings.HasPrefix(s, "+") {
		return 0, invalidField(field, "has two signs")
	}
	v, err := parseUnsigned(field, s, sent, scale, false, true)
	switch {
	case err != nil:
		return 0, err
	case v == 0:
		return 0, invalidField(field, "must not be zero")
	case neg:
		return -v, nil
	}
	return v, nil
}

// decimalError says in one sentence why s, which fsm's parser refused
// (not for its size), is not a decimal of at most maxScale places; it quotes
// sent, what the caller sent (s with its sign, if it had one). fsm's own
// error is not passed on: it quotes the limit in its own words, and a
// message built around it said everything twice.
func decimalError(field, s, sent string, maxScale uint8, example string) error {
	whole, frac, hasDot := strings.Cut(s, ".")
	if hasDot && len(frac) > int(maxScale) && isDigits(whole) && isDigits(frac) {
		if maxScale == 0 {
			return invalidField(field, "%q must be a whole number, without decimal places", sent)
		}
		return invalidField(field, "%q has %d decimal places, more than the %d allowed", sent, len(frac), maxScale)
	}
	return invalidField(field, "%q is not a plain decimal number like %q", sent, example)
}

// isDigits reports whether s is one or more ASCII digits.
func isDigits(s string) bool {
	return s != "" && strings.IndexFunc(s, func(r rune) bool { return r < '0' || r > '9' }) < 0
}

func pow10(n uint8) int64 {
	v := int64(1)
	for range n {
		v *= 10
	}
	return v
}

// parseMoney parses a non-negative currency amount into micros.
func parseMoney(field, s string) (int64, error) {
	return parseAmount(field, s, fsm.MoneyScale, true, true)
}

// parseDecimal parses a non-negative exact decimal (a rate or a price).
func parseDecimal(field, s string, optional bool) (fsm.Decimal, error) {
	if s == "" {
		if optional {
			return fsm.Decimal{}, nil
		}
		return fsm.Decimal{}, invalidField(field, "is required")
	}
	if len(s) > maxAmountText {
		return fsm.Decimal{}, invalidField(field, "is longer than %d characters", maxAmountText)
	}
	d, err := fsm.ParseDecimal(s, fsm.MaxDecimalScale)
	if err != nil {
		if errors.Is(err, fsm.ErrOverflow) {
			return fsm.Decimal{}, invalidField(field, "is too large")
		}
		return fsm.Decimal{}, decimalError(field, s, s, fsm.MaxDecimalScale, "0.0025")
	}
	if d.Coef > fsm.MaxAmount {
		return fsm.Decimal{}, invalidField(field, "is too large")
	}
	return d, nil
}

// parseTime converts an optional timestamp; nil is 0 ("none" or "now",
// as the field says). Precision finer than a microsecond is dropped.
func parseTime(field string, ts *timestamppb.Timestamp) (fsm.Timestamp, error) {
	if ts == nil {
		return 0, nil
	}
	if err := ts.CheckValid(); err != nil {
		return 0, invalidField(field, "is not a valid timestamp")
	}
	t := ts.AsTime()
	if t.Before(minTime) || t.After(maxTime) {
		return 0, invalidField(field, "must be between 2000-01-01 and 9999-12-31")
	}
	return fsm.TimestampOf(t), nil
}

// parseDuration converts an optional non-negative duration of at most max.
func parseDuration(field string, d *durationpb.Duration, maxDur time.Duration) (time.Duration, error) {
	if d == nil {
		return 0, nil
	}
	if err := d.CheckValid(); err != nil {
		return 0, invalidField(field, "is not a valid duration")
	}
	v := d.AsDuration()
	if v < 0 {
		return 0, invalidField(field, "must not be negative")
	}
	if maxDur > 0 && v > maxDur {
		return 0, invalidField(field, "must be at most %s", maxDur)
	}
	return v, nil
}

func checkQuantity(field string, q int64) error {
	if q < 0 {
		return invalidField(field, "must not be negative")
	}
	if q > fsm.MaxAmount {
		return invalidField(field, "is too large")
	}
	return nil
}

// pageSize turns a requested page size into a limit.
func pageSize(field string, n int32) (int, error) {
	switch {
	case n == 0:
		return defaultPageSize, nil
	case n < 0 || n > maxPageSize:
		return 0, invalidField(field, "must be 1 to %d (0 = %d)", maxPageSize, defaultPageSize)
	}
	return int(n), nil
}

// Page tokens are opaque to clients: a grant or feature id, or a ledger
// sequence, base64url-encoded with a kind prefix so one list's token is
// refused by another.
func grantPageToken(after string) string   { return idPageToken("g:", after) }
func featurePageToken(after string) string { return idPageToken("f:", after) }

func parseGrantPageToken(field, tok string) (string, error) {
	return parseIDPageToken(field, tok, "g:", "ListGrants", fsm.ValidGrantID)
}

func parseFeaturePageToken(field, tok string) (string, error) {
	return parseIDPageToken(field, tok, "f:", "ListFeatures", fsm.ValidID)
}

func idPageToken(kind, after string) string {
	if after == "" {
		return ""
	}
	return base64.RawURLEncoding.EncodeToString([]byte(kind + after))
}

func parseIDPageToken(field, tok, kind, method string, valid func(string) bool) (string, error) {
	if tok == "" {
		return "", nil
	}
	b, err := base64.RawURLEncoding.DecodeString(tok)
	id, ok := strings.CutPrefix(string(b), kind)
	if err != nil || !ok || !valid(id) {
		return "", invalidField(field, "is not a token returned by %s", method)
	}
	return id, nil
}

func ledgerPageToken(next uint64) string {
	if next == 0 {
		return ""
	}
	return base64.RawURLEncoding.EncodeToString([]byte("l:" + strconv.FormatUint(next, 10)))
}

func parseLedgerPageToken(field, tok string) (uint64, error) {
	b, err := base64.RawURLEncoding.DecodeString(tok)
	n, ok := strings.CutPrefix(string(b), "l:")
	seq, perr := strconv.ParseUint(n, 10, 64)
	if err != nil || !ok || perr != nil || seq == 0 {
		return 0, invalidField(field, "is not a token returned by ListEntries")
	}
	return seq, nil
}

func checkConsistency(field string, c v1.Consistency) (stale bool, err error) {
	switch c {
	case v1.Consistency_CONSISTENCY_UNSPECIFIED, v1.Consistency_CONSISTENCY_LINEARIZABLE:
		return false, nil
	case v1.Consistency_CONSISTENCY_STALE:
		return true, nil
	}
	return false, invalidField(field, "must be CONSISTENCY_LINEARIZABLE or CONSISTENCY_STALE")
}
