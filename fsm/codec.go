package fsm

import (
	"encoding/binary"
	"errors"
	"fmt"
	"math"
	"strings"
)

// The encoding of commands and stored records is creditd's own: a version
// byte, then fields in a fixed order as varints and length-prefixed strings.
// It is compact, allocates little and is stable across Go versions. A
// decoder refuses a version it does not know instead of guessing.
//
// Entry layout (versions 1 to 5):
//
//	byte    version
//	varint  time (Timestamp, microseconds)
//	uvarint command count
//	per command: byte CommandType, uvarint length, body
//
// An entry's version is also the rules it is applied by. What a command
// does is changed under a new version, so an entry is applied by the rules
// of the build that proposed it, on every replica and in every replay,
// whatever build applies it; a build that does not know the version refuses
// the entry (ErrUnknownVersion) rather than apply it by other rules. In a
// rolling upgrade, replicas on the older build stop applying once an
// upgraded leader proposes, instead of drifting apart from it.
//
//	1: builds before 2026-11-27
//	2: a usage event denied while available is below the customer's auto
//	   top-up threshold starts the top-up (rulesDeniedEventTopsUp); an
//	   UpsertCustomer body ends with AutoTopUp.Own, so a customer's own
//	   settings may be all zero (auto top-up off whatever the plan says;
//	   layoutOwnAutoTopUp). A version 1 body has no Own: its settings are
//	   the customer's own iff not all zero, as they were. An entry prunes
//	   as many idempotency records no lookup sees as it stores
//	   (rulesPruneInStep, in tick.go).
//	3: a Reserve or a Settle refused for lack of credits while available
//	   is below the customer's auto top-up threshold starts the top-up, as
//	   a denied usage event does (rulesRefusalTopsUp); the command is still
//	   refused. The layout is version 2's.
//	4: a Reserve that holds credits and leaves available below the
//	   customer's auto top-up threshold starts the top-up, as a burn that
//	   leaves it there does (rulesHoldTopsUp). The layout is version 2's.
//	5: an UpsertCustomer of an existing customer after which available is
//	   below its auto top-up threshold starts the top-up, or records why
//	   not, as a burn that leaves it there does (rulesUpsertTopsUp); one
//	   that creates the customer starts nothing, as before. The purchase
//	   that settles the customer's pending automatic top-up clears an
//	   auto_top_up_last of "already pending: <its id>"
//	   (rulesSettledClearsPending). The layout is version 2's.
const (
	entryVersion    = 5 // what EncodeEntry writes
	minEntryVersion = 1

	rulesDeniedEventTopsUp    = 2
	layoutOwnAutoTopUp        = 2
	rulesRefusalTopsUp        = 3
	rulesHoldTopsUp           = 4
	rulesUpsertTopsUp         = 5
	rulesSettledClearsPending = 5
)

// recordVersion tags every stored record so that a future layout can be read
// alongside this one. Pool and customer records have versions of their own
// (poolRecordVersion, customerRecordVersion).
const recordVersion = 1

// Limits on decoded input, so a hostile entry cannot make apply allocate
// without bound.
const (
	maxStringLen     = 4096
	maxCommandsEntry = 1 << 16
)

var errTruncated = errors.New("truncated")

type enc struct {
	b []byte
	// long is the length of the first string over maxStringLen encoded,
	// which no decoder reads back (EncodeCommand refuses the command).
	long int
}

func (e *enc) u8(v uint8) { e.b = append(e.b, v) }
func (e *enc) bool(v bool) {
	if v {
		e.b = append(e.b, 1)
	} else {
		e.b = append(e.b, 0)
	}
}
func (e *enc) uv(v uint64)    { e.b = binary.AppendUvarint(e.b, v) }
func (e *enc) iv(v int64)     { e.b = binary.AppendVarint(e.b, v) }
func (e *enc) ts(v Timestamp) { e.b = binary.AppendVarint(e.b, int64(v)) }
func (e *enc) str(s string) {
	if len(s) > maxStringLen && e.long == 0 {
		e.long = len(s)
	}
	e.uv(uint64(len(s)))
	e.b = append(e.b, s...)
}
func (e *enc) dec(d Decimal) { e.iv(d.Coef); e.u8(d.Scale) }

type dec struct {
	b   []byte
	err error
}

func (d *dec) fail(err error) {
	if d.err == nil {
		d.err = err
	}
}

func (d *dec) u8() uint8 {
	if d.err != nil {
		return 0
	}
	if len(d.b) < 1 {
		d.fail(errTruncated)
		return 0
	}
	v := d.b[0]
	d.b = d.b[1:]
	return v
}

func (d *dec) bool() bool {
	v := d.u8()
	if v > 1 {
		d.fail(errors.New("bad bool"))
	}
	return v == 1
}

func (d *dec) uv() uint64 {
	if d.err != nil {
		return 0
	}
	v, n := binary.Uvarint(d.b)
	if n <= 0 {
		d.fail(errTruncated)
		return 0
	}
	d.b = d.b[n:]
	return v
}

func (d *dec) iv() int64 {
	if d.err != nil {
		return 0
	}
	v, n := binary.Varint(d.b)
	if n <= 0 {
		d.fail(errTruncated)
		return 0
	}
	d.b = d.b[n:]
	return v
}

func (d *dec) u32() uint32 {
	v := d.uv()
	if v > math.MaxUint32 {
		d.fail(errors.New("uint32 out of range"))
	}
	return uint32(v)
}

func (d *dec) ts() Timestamp { return Timestamp(d.iv()) }

func (d *dec) str() string { return string(d.strBytes()) }

// strBytes is str without the copy: the bytes stay the buffer's.
func (d *dec) strBytes() []byte {
	n := d.uv()
	if d.err != nil {
		return nil
	}
	if n > maxStringLen || n > uint64(len(d.b)) {
		d.fail(errTruncated)
		return nil
	}
	b := d.b[:n]
	d.b = d.b[n:]
	return b
}

// packStrings copies raw into one allocation and points each of out at its
// part of it.
func packStrings(raw [][]byte, out []*string) {
	total := 0
	for _, b := range raw {
		total += len(b)
	}
	var sb strings.Builder
	sb.Grow(total)
	for _, b := range raw {
		sb.Write(b)
	}
	all, at := sb.String(), 0
	for i, b := range raw {
		*out[i] = all[at : at+len(b)]
		at += len(b)
	}
}

func (d *dec) decimal() Decimal {
	// Range is checked by apply's validation, which names the field.
	return Decimal{Coef: d.iv(), Scale: d.u8()}
}

func (d *dec) dur() int64 { return d.iv() }

// EncodeCommand encodes one command (without time) for EncodeEntry. It
// refuses what DecodeEntry would (a string over maxStringLen, a batch of
// more than MaxEventsPerBatch events): an entry that does not decode is
// refused whole, with every other caller's command in it.
func EncodeCommand(c Command) ([]byte, error) {
	if c == nil {
		return nil, errors.New("encode command: nil")
	}
	if u, ok := c.(BurnUsage); ok && len(u.Events) > MaxEventsPerBatch {
		return nil, invalid("events", "at most %d per batch", MaxEventsPerBatch)
	}
	if p, ok := c.(UpsertPlan); ok && p.Plan.AutoTopUp.Own {
		// The log does not carry it: it would be dropped, not refused.
		return nil, invalid("auto_top_up.own", "is for a customer's settings; a plan's are the default")
	}
	e := enc{b: make([]byte, 0, 64)}
	e.u8(uint8(c.commandType()))
	lenAt := len(e.b)
	e.b = append(e.b, 0, 0, 0, 0, 0) // room for a uvarint length, fixed up below
	bodyAt := len(e.b)
	encodeCommandBody(&e, c)
	if e.long > 0 {
		return nil, invalid("command", "%T holds a string of %d bytes; the log carries at most %d", c, e.long, maxStringLen)
	}
	body := len(e.b) - bodyAt
	// Write the length as a padded 5-byte uvarint so the body need not move.
	putPaddedUvarint(e.b[lenAt:bodyAt], uint64(body))
	return e.b, nil
}

// putPaddedUvarint writes v as a uvarint of exactly len(dst) bytes, using
// continuation bits on leading zero groups. binary.Uvarint reads it back.
func putPaddedUvarint(dst []byte, v uint64) {
	for i := range dst {
		b := byte(v & 0x7f)
		v >>= 7
		if i < len(dst)-1 {
			b |= 0x80
		}
		dst[i] = b
	}
}

// EncodeEntry makes a log entry from already encoded commands, stamped with
// the leader's time.
func EncodeEntry(t Timestamp, cmds [][]byte) []byte {
	size := 1 + binary.MaxVarintLen64 + binary.MaxVarintLen32
	for _, c := range cmds {
		size += len(c)
	}
	e := enc{b: make([]byte, 0, size)}
	e.u8(entryVersion)
	e.ts(t)
	e.uv(uint64(len(cmds)))
	for _, c := range cmds {
		e.b = append(e.b, c...)
	}
	return e.b
}

// DecodeEntry decodes a log entry. An unknown version is ErrUnknownVersion.
func DecodeEntry(data []byte) (Timestamp, []Command, error) {
	_, t, cmds, err := decodeEntry(data)
	return t, cmds, err
}

// decodeEntry is DecodeEntry that also returns the entry's version: the
// rules it is applied by.
func decodeEntry(data []byte) (uint8, Timestamp, []Command, error) {
	d := dec{b: data}
	v := d.u8()
	if d.err == nil && (v < minEntryVersion || v > entryVersion) {
		return 0, 0, nil, fmt.Errorf("%w: %d", ErrUnknownVersion, v)
	}
	t, cmds, err := decodeEntryBody(&d, v)
	return v, t, cmds, err
}

// decodeEntryBody decodes what follows the version byte: the commands are
// laid out as entries of version v lay them out.
func decodeEntryBody(d *dec, v uint8) (Timestamp, []Command, error) {
	t := d.ts()
	n := d.uv()
	if d.err != nil {
		return 0, nil, fmt.Errorf("decode entry header: %w", d.err)
	}
	if n > maxCommandsEntry || n > uint64(len(d.b)) {
		return 0, nil, fmt.Errorf("decode entry: %d commands is too many", n)
	}
	cmds := make([]Command, 0, n)
	for i := uint64(0); i < n; i++ {
		typ := CommandType(d.u8())
		size := d.uv()
		if d.err != nil {
			return 0, nil, fmt.Errorf("decode command %d: %w", i, d.err)
		}
		if size > uint64(len(d.b)) {
			return 0, nil, fmt.Errorf("decode command %d: %w", i, errTruncated)
		}
		body := dec{b: d.b[:size]}
		d.b = d.b[size:]
		c, err := decodeCommandBody(v, typ, &body)
		if err != nil {
			return 0, nil, fmt.Errorf("decode command %d: %w", i, err)
		}
		cmds = append(cmds, c)
	}
	if len(d.b) != 0 {
		return 0, nil, errors.New("decode entry: trailing bytes")
	}
	return t, cmds, nil
}

func encodeAutoTopUp(e *enc, a AutoTopUp) {
	e.bool(a.Enabled)
	e.iv(a.ThresholdCredits)
	e.u8(uint8(a.Mode))
	e.iv(a.AmountCredits)
	e.iv(a.MonthlyCapMicros)
}

func decodeAutoTopUp(d *dec) AutoTopUp {
	return AutoTopUp{Enabled: d.bool(), ThresholdCredits: d.iv(), Mode: AutoTopUpMode(d.u8()),
		AmountCredits: d.iv(), MonthlyCapMicros: d.iv()}
}

func encodePlan(e *enc, p *Plan) {
	e.str(p.ID)
	e.str(p.Name)
	e.str(p.CreditTypeID)
	e.str(p.Currency)
	e.dec(p.PricePerCredit)
	e.iv(p.MinPurchaseCredits)
	e.iv(p.MaxPurchaseCredits)
	e.iv(int64(p.DefaultExpiry))
	e.u8(uint8(p.InvoiceGrant))
	e.u8(uint8(p.Overdraft))
	e.iv(p.OverdraftLimit)
	encodeAutoTopUp(e, p.AutoTopUp)
	e.ts(p.UpdatedAt)
}

func decodePlan(d *dec) Plan {
	return Plan{ID: d.str(), Name: d.str(), CreditTypeID: d.str(), Currency: d.str(), PricePerCredit: d.decimal(),
		MinPurchaseCredits: d.iv(), MaxPurchaseCredits: d.iv(), DefaultExpiry: durationOf(d.dur()),
		InvoiceGrant: InvoiceGrantPolicy(d.u8()), Overdraft: OverdraftPolicy(d.u8()), OverdraftLimit: d.iv(),
		AutoTopUp: decodeAutoTopUp(d), UpdatedAt: d.ts()}
}

func encodeCommandBody(e *enc, c Command) {
	switch c := c.(type) {
	case CreateCreditType:
		e.str(c.ID)
		e.str(c.Name)
		e.u8(c.Scale)
	case UpsertFeature:
		e.str(c.ID)
		e.str(c.Name)
		e.str(c.CreditTypeID)
		e.dec(c.Rate)
	case UpsertPlan:
		encodePlan(e, &c.Plan)
	case UpsertCustomer:
		e.str(c.ID)
		e.str(c.Name)
		e.str(c.BillingRef)
		e.str(c.PlanID)
		encodeAutoTopUp(e, c.AutoTopUp)
		e.bool(c.ResumeAutoTopUp)
		e.bool(c.AutoTopUp.Own) // layoutOwnAutoTopUp
	case CreateGrant:
		e.str(c.ID)
		e.str(c.CustomerID)
		e.str(c.CreditTypeID)
		e.u8(uint8(c.Category))
		e.iv(c.Amount)
		e.dec(c.CostBasis)
		e.str(c.Currency)
		e.uv(uint64(c.Priority))
		e.ts(c.EffectiveAt)
		e.ts(c.ExpiresAt)
		e.u8(uint8(c.SourceKind))
		e.str(c.SourceRef)
	case RevokeGrant:
		e.str(c.GrantID)
		e.iv(c.Amount)
		e.str(c.Reason)
		e.str(c.RequestID)
	case BurnUsage:
		e.uv(uint64(len(c.Events)))
		for i := range c.Events {
			encodeUsageEvent(e, &c.Events[i])
		}
	case Reserve:
		e.str(c.ID)
		e.str(c.CustomerID)
		e.str(c.FeatureID)
		e.iv(c.Quantity)
		e.str(c.CreditTypeID)
		e.iv(c.Credits)
		e.iv(int64(c.TTL))
	case Settle:
		e.str(c.ReservationID)
		e.iv(c.Quantity)
		e.iv(c.Credits)
		e.bool(c.UseCredits)
	case Release:
		e.str(c.ReservationID)
	case StartPurchase:
		e.str(c.ID)
		e.str(c.CustomerID)
		e.iv(c.Credits)
		e.u8(uint8(c.Flow))
	case CompletePurchase:
		e.str(c.ID)
		e.u8(uint8(c.Outcome))
		e.str(c.ProviderRef)
		e.str(c.ProviderStatus)
		e.str(c.FailureReason)
	case Tick, Noop:
	case Adjust:
		e.str(c.ID)
		e.str(c.GrantID)
		e.iv(c.Amount)
		e.str(c.Reason)
	default:
		panic(fmt.Sprintf("fsm: encode of unknown command %T", c))
	}
}

func encodeUsageEvent(e *enc, u *UsageEvent) {
	e.str(u.ID)
	e.str(u.CustomerID)
	e.str(u.FeatureID)
	e.iv(u.Quantity)
	e.str(u.CreditTypeID)
	e.iv(u.Credits)
	e.ts(u.EventTime)
}

// decodeUsageEvent copies an event's strings into one allocation rather than
// one each: a batch carries thousands of events, and their ids, customers
// and features were three of the dozen allocations apply made per event.
// (A record that keeps one of them, such as a new pool's customer id, keeps
// the event's few dozen bytes alive with it.)
func decodeUsageEvent(d *dec) UsageEvent {
	var ev UsageEvent
	id, customer, feature := d.strBytes(), d.strBytes(), d.strBytes()
	ev.Quantity = d.iv()
	creditType := d.strBytes()
	ev.Credits, ev.EventTime = d.iv(), d.ts()
	packStrings([][]byte{id, customer, feature, creditType}, []*string{&ev.ID, &ev.CustomerID, &ev.FeatureID, &ev.CreditTypeID})
	return ev
}

// decodeCommandBody decodes a command of an entry of version v.
func decodeCommandBody(v uint8, t CommandType, d *dec) (Command, error) {
	var c Command
	switch t {
	case CmdCreateCreditType:
		c = CreateCreditType{ID: d.str(), Name: d.str(), Scale: d.u8()}
	case CmdUpsertFeature:
		c = UpsertFeature{ID: d.str(), Name: d.str(), CreditTypeID: d.str(), Rate: d.decimal()}
	case CmdUpsertPlan:
		c = UpsertPlan{Plan: decodePlan(d)}
	case CmdUpsertCustomer:
		u := UpsertCustomer{ID: d.str(), Name: d.str(), BillingRef: d.str(), PlanID: d.str(),
			AutoTopUp: decodeAutoTopUp(d), ResumeAutoTopUp: d.bool()}
		if v >= layoutOwnAutoTopUp {
			u.AutoTopUp.Own = d.bool()
		}
		c = u
	case CmdCreateGrant:
		c = CreateGrant{ID: d.str(), CustomerID: d.str(), CreditTypeID: d.str(), Category: GrantCategory(d.u8()),
			Amount: d.iv(), CostBasis: d.decimal(), Currency: d.str(), Priority: d.u32(), EffectiveAt: d.ts(),
			ExpiresAt: d.ts(), SourceKind: SourceKind(d.u8()), SourceRef: d.str()}
	case CmdRevokeGrant:
		c = RevokeGrant{GrantID: d.str(), Amount: d.iv(), Reason: d.str(), RequestID: d.str()}
	case CmdBurnUsage:
		n := d.uv()
		if n > MaxEventsPerBatch || n > uint64(len(d.b)) {
			return nil, fmt.Errorf("burn usage: %d events is too many", n)
		}
		evs := make([]UsageEvent, n)
		for i := range evs {
			evs[i] = decodeUsageEvent(d)
		}
		c = BurnUsage{Events: evs}
	case CmdReserve:
		c = Reserve{ID: d.str(), CustomerID: d.str(), FeatureID: d.str(), Quantity: d.iv(), CreditTypeID: d.str(),
			Credits: d.iv(), TTL: durationOf(d.dur())}
	case CmdSettle:
		c = Settle{ReservationID: d.str(), Quantity: d.iv(), Credits: d.iv(), UseCredits: d.bool()}
	case CmdRelease:
		c = Release{ReservationID: d.str()}
	case CmdStartPurchase:
		c = StartPurchase{ID: d.str(), CustomerID: d.str(), Credits: d.iv(), Flow: PurchaseFlow(d.u8())}
	case CmdCompletePurchase:
		c = CompletePurchase{ID: d.str(), Outcome: PurchaseOutcome(d.u8()), ProviderRef: d.str(),
			ProviderStatus: d.str(), FailureReason: d.str()}
	case CmdTick:
		c = Tick{}
	case CmdNoop:
		c = Noop{}
	case CmdAdjust:
		c = Adjust{ID: d.str(), GrantID: d.str(), Amount: d.iv(), Reason: d.str()}
	default:
		return nil, fmt.Errorf("unknown command type %d", t)
	}
	if d.err != nil {
		return nil, d.err
	}
	if len(d.b) != 0 {
		return nil, errors.New("trailing bytes in command")
	}
	return c, nil
}
