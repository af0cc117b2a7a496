package fsm

import (
	"bytes"
	"encoding/binary"
	"fmt"

	bolt "go.etcd.io/bbolt"
)

// The ledger is stored in blocks rather than one key per entry, because a
// bbolt put costs a tree search and one Apply writes thousands of entries:
//
//	ledger:          first seq (8 bytes BE) → version, count, then per entry
//	                 its length and its record, consecutive sequences
//	customer_ledger: customer 0x00 first seq → count, then per entry the
//	                 seq delta from the previous one and the credit type id
//
// A block holds at most ledgerBlockMax entries and never spans two log
// entries. Readers find the block holding a sequence by seeking to it and
// stepping back one key.
const ledgerBlockMax = 256

type custRun struct {
	customer string
	first    uint64
	last     uint64
	n        int
	buf      []byte
}

func (a *applier) appendLedger(e *LedgerEntry) {
	a.seq++
	e.Seq = a.seq
	e.Time = a.now
	if a.ledgerN == 0 {
		a.ledgerFirst = e.Seq
		a.ledgerBlock = append(a.ledgerBlock[:0], recordVersion)
	}
	a.buf.b = a.buf.b[:0]
	e.encode(&a.buf)
	a.ledgerBlock = binary.AppendUvarint(a.ledgerBlock, uint64(len(a.buf.b)))
	a.ledgerBlock = append(a.ledgerBlock, a.buf.b...)
	a.ledgerN++
	if a.ledgerN == ledgerBlockMax {
		a.flushLedgerBlock()
	}

	i, ok := a.custRunIdx[e.CustomerID]
	if !ok {
		i = len(a.custRuns)
		a.custRuns = append(a.custRuns, custRun{customer: e.CustomerID, first: e.Seq, last: e.Seq})
		a.custRunIdx[e.CustomerID] = i
	}
	r := &a.custRuns[i]
	r.buf = binary.AppendUvarint(r.buf, e.Seq-r.last)
	r.buf = binary.AppendUvarint(r.buf, uint64(len(e.CreditTypeID)))
	r.buf = append(r.buf, e.CreditTypeID...)
	r.last = e.Seq
	r.n++
	if r.n == ledgerBlockMax {
		a.flushRun(r)
		delete(a.custRunIdx, e.CustomerID)
	}
}

func (a *applier) flushLedgerBlock() {
	if a.ledgerN == 0 {
		return
	}
	v := make([]byte, 0, len(a.ledgerBlock)+binary.MaxVarintLen32)
	v = append(v, a.ledgerBlock[0])
	v = binary.AppendUvarint(v, uint64(a.ledgerN))
	v = append(v, a.ledgerBlock[1:]...)
	a.put(a.bLedger, u64key(a.ledgerFirst), v)
	a.ledgerN = 0
}

func (a *applier) flushRun(r *custRun) {
	if r.n == 0 {
		return
	}
	v := binary.AppendUvarint(make([]byte, 0, len(r.buf)+4), uint64(r.n))
	v = append(v, r.buf...)
	a.put(a.bCustLedger, custLedgerKey(r.customer, r.first), v)
	r.n = 0
}

// flushLedger writes what is left of the ledger and customer runs, in the
// order they were started so every replica writes the same keys the same way.
func (a *applier) flushLedger() {
	a.flushLedgerBlock()
	for i := range a.custRuns {
		a.flushRun(&a.custRuns[i])
	}
	a.custRuns = a.custRuns[:0]
	clear(a.custRunIdx)
}

// ---- reading ----

// ledgerBlocks decodes ledger blocks; it keeps the last one for lookups
// that land in the same block again.
type ledgerReader struct {
	c       *bolt.Cursor
	first   uint64
	entries []LedgerEntry
}

func decodeLedgerBlock(first uint64, raw []byte, out []LedgerEntry) ([]LedgerEntry, error) {
	d := dec{b: raw}
	checkVersion(&d)
	n := d.uv()
	if d.err != nil || n > ledgerBlockMax {
		return nil, fmt.Errorf("ledger block %d: bad header", first)
	}
	out = out[:0]
	for i := uint64(0); i < n; i++ {
		size := d.uv()
		if d.err != nil || size > uint64(len(d.b)) {
			return nil, fmt.Errorf("ledger block %d: truncated", first)
		}
		var e LedgerEntry
		ed := dec{b: d.b[:size]}
		e.decode(&ed)
		if ed.err != nil {
			return nil, fmt.Errorf("ledger block %d entry %d: %w", first, i, ed.err)
		}
		if e.Seq != first+i {
			return nil, fmt.Errorf("ledger block %d: entry %d has seq %d", first, i, e.Seq)
		}
		d.b = d.b[size:]
		out = append(out, e)
	}
	return out, nil
}

// seekBlock positions the reader on the block holding seq (or the first
// block after it) and returns false when there is none.
func (r *ledgerReader) seekBlock(seq uint64) (bool, error) {
	if len(r.entries) > 0 && seq >= r.first && seq < r.first+uint64(len(r.entries)) {
		return true, nil
	}
	k, v := r.c.Seek(u64key(seq))
	if k == nil || binary.BigEndian.Uint64(k) > seq {
		pk, pv := r.c.Prev()
		if pk != nil {
			first := binary.BigEndian.Uint64(pk)
			es, err := decodeLedgerBlock(first, pv, r.entries)
			if err != nil {
				return false, err
			}
			if seq < first+uint64(len(es)) {
				r.first, r.entries = first, es
				return true, nil
			}
		}
		if k == nil {
			return false, nil
		}
		r.c.Seek(k) // back to the block after seq
	}
	return r.load(k, v)
}

func (r *ledgerReader) load(k, v []byte) (bool, error) {
	first := binary.BigEndian.Uint64(k)
	es, err := decodeLedgerBlock(first, v, r.entries)
	if err != nil {
		return false, err
	}
	r.first, r.entries = first, es
	return true, nil
}

func (r *ledgerReader) next() (bool, error) {
	k, v := r.c.Next()
	if k == nil {
		return false, nil
	}
	return r.load(k, v)
}

func (v *View) ledgerReader() *ledgerReader {
	if v.lr == nil {
		v.lr = &ledgerReader{c: v.tx.Bucket(bLedger).Cursor()}
	}
	return v.lr
}

func (v *View) entry(seq uint64) (LedgerEntry, error) {
	r := v.ledgerReader()
	ok, err := r.seekBlock(seq)
	if err != nil {
		return LedgerEntry{}, err
	}
	if !ok || seq < r.first || seq >= r.first+uint64(len(r.entries)) {
		return LedgerEntry{}, notFound("seq", "no ledger entry %d", seq)
	}
	return r.entries[seq-r.first], nil
}

// ScanLedger calls fn for every entry with fromSeq ≤ seq ≤ toSeq (toSeq 0 =
// to the end) in order. fn must not keep e after it returns.
func (v *View) ScanLedger(fromSeq, toSeq uint64, fn func(e *LedgerEntry) error) error {
	r := &ledgerReader{c: v.tx.Bucket(bLedger).Cursor()}
	ok, err := r.seekBlock(fromSeq)
	for ; ok && err == nil; ok, err = r.next() {
		for i := range r.entries {
			e := &r.entries[i]
			if e.Seq < fromSeq {
				continue
			}
			if toSeq != 0 && e.Seq > toSeq {
				return nil
			}
			if err := fn(e); err != nil {
				return err
			}
		}
	}
	return err
}

type custItem struct {
	seq uint64
	ct  string
}

func decodeRun(first uint64, raw []byte, out []custItem) ([]custItem, error) {
	d := dec{b: raw}
	n := d.uv()
	if d.err != nil || n > ledgerBlockMax {
		return nil, fmt.Errorf("customer ledger run %d: bad header", first)
	}
	out = out[:0]
	seq := first
	for i := uint64(0); i < n; i++ {
		seq += d.uv()
		out = append(out, custItem{seq: seq, ct: d.str()})
	}
	if d.err != nil {
		return nil, fmt.Errorf("customer ledger run %d: %w", first, d.err)
	}
	return out, nil
}

// customerSeqs calls fn with the sequence and credit type of a customer's
// entries from fromSeq on, in order, until fn returns false.
func (v *View) customerSeqs(customerID string, fromSeq uint64, fn func(seq uint64, ct string) (bool, error)) error {
	prefix := append([]byte(customerID), 0)
	c := v.tx.Bucket(bCustLedger).Cursor()
	k, raw := c.Seek(custLedgerKey(customerID, fromSeq))
	// The run holding fromSeq may start before it.
	if pk, praw := c.Prev(); pk != nil && bytes.HasPrefix(pk, prefix) {
		k, raw = pk, praw
	} else if k != nil {
		k, raw = c.Seek(k)
	} else {
		k, raw = c.Seek(custLedgerKey(customerID, fromSeq))
	}
	var items []custItem
	for ; k != nil && bytes.HasPrefix(k, prefix); k, raw = c.Next() {
		var err error
		items, err = decodeRun(binary.BigEndian.Uint64(k[len(prefix):]), raw, items)
		if err != nil {
			return err
		}
		for _, it := range items {
			if it.seq < fromSeq {
				continue
			}
			if more, err := fn(it.seq, it.ct); err != nil || !more {
				return err
			}
		}
	}
	return nil
}

// customerSeqsBack is customerSeqs backwards from atMost down.
func (v *View) customerSeqsBack(customerID string, atMost uint64, fn func(seq uint64, ct string) (bool, error)) error {
	prefix := append([]byte(customerID), 0)
	c := v.tx.Bucket(bCustLedger).Cursor()
	var k, raw []byte
	if atMost == ^uint64(0) {
		k, raw = c.Seek(append(bytes.Clone(prefix), 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff))
	} else {
		k, raw = c.Seek(custLedgerKey(customerID, atMost+1))
	}
	if k == nil {
		k, raw = c.Last()
	} else {
		k, raw = c.Prev()
	}
	var items []custItem
	for ; k != nil && bytes.HasPrefix(k, prefix); k, raw = c.Prev() {
		var err error
		items, err = decodeRun(binary.BigEndian.Uint64(k[len(prefix):]), raw, items)
		if err != nil {
			return err
		}
		for i := len(items) - 1; i >= 0; i-- {
			if items[i].seq > atMost {
				continue
			}
			if more, err := fn(items[i].seq, items[i].ct); err != nil || !more {
				return err
			}
		}
	}
	return nil
}
