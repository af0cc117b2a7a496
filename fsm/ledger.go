package fsm

import (
	"bytes"
	"encoding/binary"
	"fmt"
	"slices"

	bolt "go.etcd.io/bbolt"
)

// The ledger is stored in blocks rather than one key per entry, because a
// bbolt put costs a tree search and one Apply writes thousands of entries:
//
//	ledger:       first seq (8 bytes BE) → version, count, then per entry
//	              its length and its record, consecutive sequences
//	pool_ledger:  customer 0x00 credit type 0x00 first seq → count, then the
//	              seq delta of each later entry: a full run of one pool's
//	              sequences
//
// A block holds at most ledgerBlockMax entries and never spans two log
// entries. Readers find the block holding a sequence by seeking to it and
// stepping back one key.
//
// A pool's newest sequences (up to poolRunMax) stay in the pool record: a
// movement rewrites the pool anyway, so indexing it costs no page of its
// own. A full run moves to pool_ledger. Run boundaries depend only on the
// pool's entry count, so every replica stores the same keys.
const (
	ledgerBlockMax = 256
	poolRunMax     = 32
)

// seqRun is a run of one pool's ledger sequences, ascending.
type seqRun struct {
	first, last uint64
	n           int
	deltas      []byte // uvarint seq − previous seq, for entries 2..n
}

func (r *seqRun) add(seq uint64) {
	if r.n == 0 {
		r.first = seq
	} else {
		r.deltas = binary.AppendUvarint(r.deltas, seq-r.last)
	}
	r.last = seq
	r.n++
}

func (r *seqRun) encode(e *enc) {
	e.uv(uint64(r.n))
	if r.n > 0 {
		e.uv(r.first)
		e.uv(uint64(len(r.deltas)))
		e.b = append(e.b, r.deltas...)
	}
}

func (r *seqRun) decode(d *dec) {
	*r = seqRun{n: int(d.uv())}
	if r.n == 0 || d.err != nil {
		return
	}
	r.first = d.uv()
	size := d.uv()
	if d.err != nil || size > uint64(len(d.b)) || r.n > poolRunMax {
		d.fail(fmt.Errorf("pool ledger run: bad length"))
		return
	}
	r.deltas = append([]byte(nil), d.b[:size]...)
	d.b = d.b[size:]
	r.last = r.first
	for b := r.deltas; len(b) > 0; {
		v, k := binary.Uvarint(b)
		if k <= 0 {
			d.fail(fmt.Errorf("pool ledger run: bad delta"))
			return
		}
		r.last += v
		b = b[k:]
	}
}

// seqs appends the run's sequences to out.
func (r *seqRun) seqs(out []uint64) []uint64 {
	if r.n == 0 {
		return out
	}
	seq := r.first
	out = append(out, seq)
	for b := r.deltas; len(b) > 0; {
		v, k := binary.Uvarint(b)
		if k <= 0 {
			break
		}
		seq += v
		b = b[k:]
		out = append(out, seq)
	}
	return out
}

func (a *applier) appendLedger(p *Pool, e *LedgerEntry) {
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
		a.flushLedger()
	}

	p.run.add(e.Seq)
	if p.run.n == poolRunMax {
		v := binary.AppendUvarint(make([]byte, 0, len(p.run.deltas)+2), uint64(p.run.n))
		v = append(v, p.run.deltas...)
		a.put(a.bPoolLedger, poolRunKey(p.CustomerID, p.CreditTypeID, p.run.first), v)
		p.run = seqRun{deltas: p.run.deltas[:0]}
	}
	a.markPoolDirty(p)
}

// flushLedger writes the open ledger block.
func (a *applier) flushLedger() {
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

func decodeRun(first uint64, raw []byte, out []uint64) ([]uint64, error) {
	d := dec{b: raw}
	n := d.uv()
	if d.err != nil || n == 0 || n > poolRunMax {
		return nil, fmt.Errorf("pool ledger run %d: bad header", first)
	}
	seq := first
	out = append(out[:0], seq)
	for i := uint64(1); i < n; i++ {
		seq += d.uv()
		out = append(out, seq)
	}
	if d.err != nil {
		return nil, fmt.Errorf("pool ledger run %d: %w", first, d.err)
	}
	return out, nil
}

// poolSeqs calls fn with a pool's ledger sequences from fromSeq on, in
// order, until fn returns false.
func (v *View) poolSeqs(customerID, creditTypeID string, fromSeq uint64, fn func(seq uint64) (bool, error)) error {
	p, err := v.pool(customerID, creditTypeID)
	if err != nil {
		return err
	}
	prefix := poolRunKey(customerID, creditTypeID, 0)[:len(customerID)+len(creditTypeID)+2]
	c := v.tx.Bucket(bPoolLedger).Cursor()
	k, raw := c.Seek(poolRunKey(customerID, creditTypeID, fromSeq))
	// The run holding fromSeq may start before it.
	if pk, praw := c.Prev(); pk != nil && bytes.HasPrefix(pk, prefix) {
		k, raw = pk, praw
	} else if k != nil {
		k, raw = c.Seek(k)
	} else {
		k, raw = c.Seek(poolRunKey(customerID, creditTypeID, fromSeq))
	}
	var seqs []uint64
	for ; k != nil && bytes.HasPrefix(k, prefix); k, raw = c.Next() {
		if seqs, err = decodeRun(binary.BigEndian.Uint64(k[len(prefix):]), raw, seqs); err != nil {
			return err
		}
		for _, s := range seqs {
			if s < fromSeq {
				continue
			}
			if more, err := fn(s); err != nil || !more {
				return err
			}
		}
	}
	for _, s := range p.run.seqs(seqs[:0]) {
		if s < fromSeq {
			continue
		}
		if more, err := fn(s); err != nil || !more {
			return err
		}
	}
	return nil
}

// poolSeqsBack is poolSeqs backwards from atMost down.
func (v *View) poolSeqsBack(customerID, creditTypeID string, atMost uint64, fn func(seq uint64) (bool, error)) error {
	p, err := v.pool(customerID, creditTypeID)
	if err != nil {
		return err
	}
	seqs := p.run.seqs(nil)
	for i := len(seqs) - 1; i >= 0; i-- {
		if seqs[i] > atMost {
			continue
		}
		if more, err := fn(seqs[i]); err != nil || !more {
			return err
		}
	}
	prefix := poolRunKey(customerID, creditTypeID, 0)[:len(customerID)+len(creditTypeID)+2]
	c := v.tx.Bucket(bPoolLedger).Cursor()
	var k, raw []byte
	if atMost == ^uint64(0) {
		k, raw = c.Seek(append(bytes.Clone(prefix), 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff))
	} else {
		k, raw = c.Seek(poolRunKey(customerID, creditTypeID, atMost+1))
	}
	if k == nil {
		k, raw = c.Last()
	} else {
		k, raw = c.Prev()
	}
	for ; k != nil && bytes.HasPrefix(k, prefix); k, raw = c.Prev() {
		if seqs, err = decodeRun(binary.BigEndian.Uint64(k[len(prefix):]), raw, seqs); err != nil {
			return err
		}
		for i := len(seqs) - 1; i >= 0; i-- {
			if seqs[i] > atMost {
				continue
			}
			if more, err := fn(seqs[i]); err != nil || !more {
				return err
			}
		}
	}
	return nil
}

// customerPools lists the credit types a customer has a pool of.
func (v *View) customerPools(customerID string) []string {
	prefix := append([]byte(customerID), 0)
	var cts []string
	c := v.tx.Bucket(bPool).Cursor()
	for k, _ := c.Seek(prefix); k != nil && bytes.HasPrefix(k, prefix); k, _ = c.Next() {
		cts = append(cts, string(k[len(prefix):]))
	}
	return cts
}

// customerSeqs returns up to max of a customer's ledger sequences with
// fromSeq ≤ seq ≤ toSeq (toSeq 0 = no bound), in order, over its pools of
// creditTypeID ("" = all).
func (v *View) customerSeqs(customerID, creditTypeID string, fromSeq, toSeq uint64, max int) ([]uint64, error) {
	cts := []string{creditTypeID}
	if creditTypeID == "" {
		cts = v.customerPools(customerID)
	}
	var all []uint64
	for _, ct := range cts {
		n := 0
		err := v.poolSeqs(customerID, ct, fromSeq, func(seq uint64) (bool, error) {
			if toSeq != 0 && seq > toSeq {
				return false, nil
			}
			all = append(all, seq)
			n++
			return n < max, nil
		})
		if err != nil {
			return nil, err
		}
	}
	slices.Sort(all)
	if len(all) > max {
		all = all[:max]
	}
	return all, nil
}
